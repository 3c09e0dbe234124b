// Real calls seen from the dashboard: a phone call placed by the test caller
// (`switchboard call`, a SIP user agent speaking with the Piper voice) that
// ends in a handoff, then its session played back in the Inbox; and the
// browser test call, with Chromium's fake microphone playing a question.
// Needs SIP on loopback and the offline speech models (scripts/e2e.sh).
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { api, env, launch, login, overflows, screenshots, until } from "./lib.mjs";

const run = promisify(execFile);
const AGENT = "E2E Phone";
const NUMBER = "+14155550177";
const KNOWLEDGE = [
  "You are the receptionist of Acme Dental.",
  "Opening hours: Monday to Friday, 9 am to 5 pm. Closed on weekends.",
  "Where are you? We are at 100 Main Street, Springfield, next to the library.",
  "Do you take new patients? Yes, new patients are welcome; the first visit takes about an hour.",
  "How much is a cleaning? A routine cleaning costs 90 dollars; most insurance plans cover it.",
].join("\n\n");

let browser;
let page;
let agentId;

describe("calls", { timeout: 300_000 }, () => {
  before(async () => {
    assert.ok(env.bin && env.sip, "E2E_BIN and E2E_SIP are set by scripts/e2e.sh");
    const agent = await api("POST", "/api/v1/agents", {
      name: AGENT,
      instructions: KNOWLEDGE,
      handoff_mode: "logged_escalation",
    });
    agentId = agent.id;
    await api("POST", "/api/v1/numbers", { number: NUMBER, agent: agentId });
    // Calls are taken only from a configured trunk: this machine.
    await api("POST", "/api/v1/trunks", { name: "e2e-local", host: "127.0.0.1", allowed_cidrs: ["127.0.0.1/32"] });
    const args = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
      "--autoplay-policy=no-user-gesture-required"];
    if (env.fakeMic) args.push(`--use-file-for-fake-audio-capture=${env.fakeMic}`);
    browser = await launch({ args });
    page = browser.page;
    await login(page);
  });
  after(async () => {
    await browser?.close();
  });

  test("a phone call by the test caller ends in a delivered handoff; its session plays back", async () => {
    const { stdout } = await run(env.bin, [
      "call", "--to", `sip:${NUMBER}@${env.sip}`,
      "--say", "What are your opening hours?",
      "--say", "I need to speak with a person",
      "--timeout", "90",
    ], { timeout: 120_000, maxBuffer: 1 << 20 }).catch((e) => {
      throw new Error(`switchboard call failed (${e.code}):\n${e.stdout}\n${e.stderr}`);
    });
    const report = JSON.parse(stdout);
    assert.equal(report.said.length, 2, stdout);

    // Channels → Phone lists the agent, idle again, with its Test call button.
    await page.goto(`${env.base}/channels/phone`);
    const row = page.locator("tr", { hasText: AGENT });
    await until("the agent to be idle again", async () =>
      (await row.locator("[data-live-calls]").getAttribute("data-live-calls")) === "0");
    assert.equal(await row.getByRole("link", { name: "Test call" }).count(), 1);
    await screenshots(page, "phone-agents");

    const sessions = await api("GET", `/api/v1/sessions?agent=${agentId}`);
    const id = (sessions.sessions || sessions.items || sessions)[0].id;
    await page.goto(`${env.base}/inbox/${id}`);
    const status = page.locator("#handoff-status");
    await until("the handoff to be delivered", async () =>
      (await status.count()) > 0 && (await status.getAttribute("data-status")) === "delivered",
    60_000);
    const transcript = await page.locator("#transcript").textContent();
    assert.match(transcript.toLowerCase(), /speak with a person/);

    // The recording plays: the audio element's clock advances.
    const audio = page.locator("audio#recording");
    await audio.waitFor();
    await page.evaluate(() => { const a = document.getElementById("recording"); a.muted = true; return a.play(); });
    await until("the recording to advance", async () =>
      (await page.evaluate(() => document.getElementById("recording").currentTime)) > 0.5);
    assert.ok(await page.evaluate(() => document.getElementById("recording").duration) > 3);

    // A reasoning step expands to show what the brain decided and why.
    const step = page.locator("details[id^=step-]", { hasText: "decision" }).first();
    await step.locator("summary").click();
    assert.equal(await step.getAttribute("open"), "");
    assert.ok((await step.textContent()).length > 20);
    await screenshots(page, "phone-session");
  });

  test("Settings → SIP trunks lists, validates, adds and deletes trunks", async () => {
    await page.goto(`${env.base}/settings/trunks`);
    assert.equal(await page.locator("tr[data-trunk=e2e-local]").count(), 1, "the API-made trunk is listed");
    await page.fill("#name", "carrier");
    await page.fill("#host", "sip.carrier.example");
    await page.fill("#allowed_cidrs", "203.0.113.0/33");
    await page.fill("#inbound_password", "s3cret");
    await page.selectOption("#transfer", "refer");
    await page.click("form[action='/settings/trunks'] button[type=submit]");
    await page.locator(".error[role=alert]").waitFor();
    assert.match(await page.locator("main").textContent(), /203\.0\.113\.0\/33/);
    assert.equal(await page.inputValue("#inbound_password"), "", "passwords are never echoed back");
    await page.fill("#allowed_cidrs", "203.0.113.0/24");
    await Promise.all([page.waitForURL(/\/settings\/trunks$/), page.click("form[action='/settings/trunks'] button[type=submit]")]);
    const row = page.locator("tr[data-trunk=carrier]");
    assert.match(await row.textContent(), /203\.0\.113\.0\/24.*refer/s);
    await screenshots(page, "trunks");
    page.once("dialog", (d) => d.accept());
    await Promise.all([page.waitForURL(/\/settings\/trunks$/), row.getByRole("button", { name: "Delete" }).click()]);
    assert.equal(await page.locator("tr[data-trunk=carrier]").count(), 0);
  });

  test("the browser test call answers the microphone and shows the live transcript", { skip: !env.fakeMic && "no fake microphone WAV (speech models missing)" }, async () => {
    await page.goto(`${env.base}/channels/phone/${agentId}`);
    await page.getByRole("link", { name: "Test call" }).click();
    await page.waitForURL(/\/test-call$/);
    await page.click("#call-start");
    const list = page.locator("#live-transcript");
    // The greeting, then the answer to the question the fake microphone asks.
    await until("the agent's answer in the live transcript", async () =>
      /9 ?am|nine|monday/i.test((await list.locator("li.ai").allTextContents()).join(" ")),
    60_000);
    assert.ok(await list.locator("li.caller").count() >= 1, "the caller's words are shown");
    assert.match((await list.locator("li.caller").allTextContents()).join(" ").toLowerCase(), /what are your opening/);
    await screenshots(page, "test-call");
    const session = await page.locator("section.testcall").getAttribute("data-session");
    assert.ok(session, "the page knows its session");
    await page.click("#call-hangup");
    await until("the call to end", async () =>
      (await page.locator("section.testcall").getAttribute("data-ended")) !== null);
    assert.match(await page.locator("#call-status").textContent(), /Call ended/);

    // The session is in the Inbox, from the browser, with its recording.
    await page.click("#call-session a");
    await page.waitForURL(new RegExp(`/inbox/${session}$`));
    assert.match(await page.locator("main").textContent(), /browser:admin/);
    assert.equal(await page.locator("audio#recording").count(), 1);
  });

  test("the pages seen here render without sideways scrolling at 390 px", () => {
    assert.deepEqual(overflows, []);
  });
});
