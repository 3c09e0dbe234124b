// Times: shown in the viewer's time zone, with the UTC value on hover (the
// server renders the title).
function localTimes(root) {
  for (const t of root.querySelectorAll("time[datetime]")) {
    const d = new Date(t.getAttribute("datetime"));
    if (!isNaN(d)) t.textContent = d.toLocaleString();
  }
}
localTimes(document);
// Destructive forms ask first.
for (const f of document.querySelectorAll("form[data-confirm]")) {
  f.addEventListener("submit", (e) => { if (!confirm(f.dataset.confirm)) e.preventDefault(); });
}
// Session detail: the transcript follows the recording; a click on a turn seeks to it.
function wireTranscript() {
  const audio = document.getElementById("recording");
  const list = document.querySelector("ol.transcript[data-seekable]");
  if (!audio || !list) return;
  const turns = Array.from(list.querySelectorAll("li[data-offset]"));
  for (const li of turns) {
    li.tabIndex = 0;
    li.setAttribute("role", "button");
    const seek = () => { audio.currentTime = parseFloat(li.dataset.offset) || 0; audio.play().catch(() => {}); };
    li.addEventListener("click", seek);
    li.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); seek(); } });
  }
  audio.ontimeupdate = () => {
    const t = audio.currentTime;
    for (const li of turns) {
      const on = t >= parseFloat(li.dataset.offset) && t < Math.max(parseFloat(li.dataset.end), parseFloat(li.dataset.offset) + 0.5);
      li.classList.toggle("playing", on);
    }
  };
}
wireTranscript();
// Inbox filters: the date range in the viewer's time zone, sent as UTC ms
// (without this script the server reads the days as UTC days).
for (const f of document.querySelectorAll("form.filters")) {
  f.addEventListener("submit", () => {
    const ms = (name, days) => {
      const v = f.elements[name].value;
      if (!v) return "";
      const [y, m, d] = v.split("-").map(Number);
      return String(new Date(y, m - 1, d + days).getTime());
    };
    f.elements.from_ms.value = ms("from", 0);
    f.elements.to_ms.value = ms("to", 1);
  });
}
// Live updates: the server says when what this page shows changed
// (server-sent events); the page then re-fetches itself and swaps the parts
// marked data-live, keeping open trace steps open.
(function () {
  const note = document.getElementById("live-note");
  if (!note || !note.dataset.events || !window.EventSource) return;
  let since = note.dataset.version || "";
  let source = null, busy = false, again = false;
  const refresh = async () => {
    if (busy) { again = true; return; }
    busy = true;
    try {
      const res = await fetch(location.href, { headers: { "Accept": "text/html" }, credentials: "same-origin" });
      if (!res.ok) return;
      const doc = new DOMParser().parseFromString(await res.text(), "text/html");
      const open = new Set(Array.from(document.querySelectorAll("details[open][id]"), (d) => d.id));
      for (const fresh of doc.querySelectorAll("[data-live][id]")) {
        const old = document.getElementById(fresh.id);
        if (!old) continue;
        for (const d of fresh.querySelectorAll("details[id]")) if (open.has(d.id)) d.open = true;
        old.replaceWith(document.importNode(fresh, true));
      }
      localTimes(document);
      wireTranscript();
      const freshNote = doc.getElementById("live-note");
      if (freshNote && !freshNote.dataset.events) { // the call and its handoff are over
        if (source) source.close();
        note.textContent = "";
        delete note.dataset.events;
      }
    } catch (e) {
      // The next change event tries again.
    } finally {
      busy = false;
      if (again) { again = false; refresh(); }
    }
  };
  const connect = () => {
    if (!note.dataset.events) return;
    const url = note.dataset.events + (note.dataset.events.includes("?") ? "&" : "?") + "since=" + encodeURIComponent(since);
    source = new EventSource(url);
    source.onopen = () => { note.textContent = "Live: this page updates as things happen."; };
    source.addEventListener("change", (e) => { since = e.data; refresh(); });
    source.onerror = () => {
      // The server ends each stream after a while; reconnect with the latest
      // version so nothing is missed and nothing refreshes twice.
      source.close();
      note.textContent = "Reconnecting…";
      setTimeout(connect, 3000);
    };
  };
  connect();
})();
