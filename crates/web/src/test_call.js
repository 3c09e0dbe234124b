// Browser test call: microphone → worklet (8 kHz, 20 ms frames) → WebSocket
// → the voice engine; the agent's voice comes back on the same socket and
// the transcript arrives as the engine writes it.
(() => {
  const box = document.querySelector("section.testcall");
  if (!box) return;
  const startBtn = document.getElementById("call-start");
  const hangupBtn = document.getElementById("call-hangup");
  const status = document.getElementById("call-status");
  const list = document.getElementById("live-transcript");
  const sessionP = document.getElementById("call-session");
  const keys = Array.from(box.querySelectorAll("button[data-digit]"));
  let ws = null, ctx = null, stream = null, node = null, framesOut = 0, framesIn = 0;

  const setStatus = (t) => { status.textContent = t; };
  const live = (on) => {
    startBtn.disabled = on;
    hangupBtn.disabled = !on;
    for (const k of keys) k.disabled = !on;
    box.dataset.live = on ? "1" : "";
  };
  const label = { caller: "You", ai: "Agent", rep: "Rep", system: "System" };

  function addTurn(t) {
    const li = document.createElement("li");
    li.className = "turn " + t.speaker;
    li.dataset.speaker = t.speaker;
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = (label[t.speaker] || t.speaker) + ": ";
    const time = document.createElement("time");
    time.dateTime = t.started_at;
    time.title = t.started_at + " UTC";
    const d = new Date(t.started_at);
    time.textContent = isNaN(d) ? t.started_at : d.toLocaleTimeString();
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = t.text;
    li.append(time, " ", who, text);
    list.append(li);
    list.scrollTop = list.scrollHeight;
  }

  function stopAudio() {
    if (stream) for (const t of stream.getTracks()) t.stop();
    if (ctx) ctx.close().catch(() => {});
    stream = null; ctx = null; node = null;
  }

  async function start() {
    live(true);
    list.replaceChildren();
    sessionP.hidden = true;
    setStatus("Asking for the microphone…");
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
      });
      ctx = new AudioContext();
      await ctx.audioWorklet.addModule("/assets/test-call-worklet.js");
      node = new AudioWorkletNode(ctx, "test-call", { numberOfInputs: 1, numberOfOutputs: 1, outputChannelCount: [1] });
      ctx.createMediaStreamSource(stream).connect(node);
      node.connect(ctx.destination);
      if (ctx.state === "suspended") await ctx.resume();
    } catch (e) {
      stopAudio();
      live(false);
      setStatus("No microphone: " + (e && e.message ? e.message : e) + " (the page needs HTTPS or localhost)");
      return;
    }
    const url = new URL(box.dataset.ws, location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    url.searchParams.set("csrf", box.dataset.csrf);
    setStatus("Connecting…");
    ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    node.port.onmessage = (e) => {
      if (ws && ws.readyState === WebSocket.OPEN) { ws.send(e.data); framesOut++; }
    };
    ws.onmessage = (e) => {
      if (typeof e.data !== "string") {
        framesIn++;
        if (node) node.port.postMessage(e.data, [e.data]);
        return;
      }
      let m;
      try { m = JSON.parse(e.data); } catch { return; }
      if (m.type === "started") {
        setStatus("Connected: speak now");
        box.dataset.session = m.session_id;
        const a = sessionP.querySelector("a");
        a.href = m.inbox;
        a.textContent = m.session_id;
        sessionP.hidden = false;
      } else if (m.type === "turn") {
        addTurn(m);
      } else if (m.type === "ended") {
        setStatus("Call ended: " + m.reason + (m.outcome ? " (" + m.outcome.replace("_", " ") + ")" : ""));
        box.dataset.ended = m.outcome || "ended";
      } else if (m.type === "error") {
        setStatus("Cannot start the call: " + m.message);
      }
    };
    ws.onclose = () => {
      ws = null;
      stopAudio();
      live(false);
      if (!box.dataset.ended && status.textContent.startsWith("Connected")) setStatus("Disconnected");
    };
  }

  startBtn.addEventListener("click", () => { delete box.dataset.ended; start(); });
  hangupBtn.addEventListener("click", () => {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "hangup" }));
    setStatus("Hanging up…");
  });
  for (const k of keys) {
    k.addEventListener("click", () => {
      if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "dtmf", digit: k.dataset.digit }));
    });
  }
  window.addEventListener("pagehide", () => { if (ws) ws.close(); });
  // For tests and the curious: frame counters.
  box.stats = () => ({ framesOut, framesIn });
})();
