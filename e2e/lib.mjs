// Shared helpers for the end-to-end tests: the server under test (started by
// scripts/e2e.sh, which passes its addresses in the environment), Debian's
// Chromium through playwright-core, bounded waits and screenshots.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";

function required(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run the suite through scripts/e2e.sh`);
  return v;
}

export const env = {
  base: required("E2E_BASE_URL").replace(/\/$/, ""),
  /// The `switchboard` binary under test (for `switchboard call`).
  bin: process.env.E2E_BIN || "",
  /// The server's SIP address (host:port), when SIP is on.
  sip: process.env.E2E_SIP || "",
  /// A WAV that Chromium plays as its fake microphone.
  fakeMic: process.env.E2E_FAKE_MIC || "",
  sandbox: required("E2E_SANDBOX_URL").replace(/\/$/, ""),
  token: required("E2E_TOKEN"),
  password: required("E2E_PASSWORD"),
  artifacts: process.env.E2E_ARTIFACTS || path.join(os.tmpdir(), "switchboard-e2e"),
};
fs.mkdirSync(env.artifacts, { recursive: true });

/// The built-in sandbox's org and deployment (switchboard-salesforce's defaults).
export const SANDBOX_ORG_ID = "00D000000000001";
export const SANDBOX_DEPLOYMENT = "Switchboard_Sandbox";

/// Every wait is bounded by this unless a test says otherwise.
export const WAIT_MS = 15_000;

const CHROMIUM_ARGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];

/// A fresh Chromium profile (its own --user-data-dir) with one page at
/// 1280 px wide, in a time zone other than UTC so local times show.
export async function launch({ args = [] } = {}) {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "switchboard-e2e-profile-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.E2E_CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: [...CHROMIUM_ARGS, ...args],
    viewport: { width: 1280, height: 900 },
    timezoneId: "America/New_York",
    locale: "en-US",
    timeout: 30_000,
  });
  context.setDefaultTimeout(WAIT_MS);
  context.setDefaultNavigationTimeout(WAIT_MS);
  const page = context.pages()[0] || (await context.newPage());
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  return {
    context,
    page,
    errors,
    async close() {
      await context.close();
      fs.rmSync(profile, { recursive: true, force: true });
    },
  };
}

/// A JSON API call with the bearer token; throws on an unexpected status.
export async function api(method, urlPath, body, expect = [200, 201, 202, 204]) {
  const res = await fetch(env.base + urlPath, {
    method,
    headers: {
      authorization: `Bearer ${env.token}`,
      ...(body ? { "content-type": "application/json" } : {}),
    },
    body: body ? JSON.stringify(body) : undefined,
    signal: AbortSignal.timeout(WAIT_MS),
  });
  const text = await res.text();
  if (!expect.includes(res.status)) {
    throw new Error(`${method} ${urlPath}: ${res.status} ${text}`);
  }
  return text ? JSON.parse(text) : null;
}

/// Polls `check` (which returns a truthy value when done) until `timeout` ms
/// pass; returns that value or throws naming `what`.
export async function until(what, check, timeout = WAIT_MS, every = 250) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeout} ms waiting for ${what}${last ? `: ${last}` : ""}`);
    }
    await new Promise((r) => setTimeout(r, every));
  }
}

/// Pages whose 390 px layout scrolled sideways when screenshotted.
export const overflows = [];

/// Saves full-page screenshots of the current page at 1280 px and 390 px
/// wide; notes in `overflows` when the narrow layout scrolls sideways.
export async function screenshots(page, name) {
  const out = {};
  for (const [label, width] of [["1280", 1280], ["390", 390]]) {
    await page.setViewportSize({ width, height: width === 390 ? 844 : 900 });
    await page.screenshot({ path: path.join(env.artifacts, `${name}-${label}.png`), fullPage: true });
    out[label] = await page.evaluate(() => ({
      scrollWidth: document.documentElement.scrollWidth,
      innerWidth: window.innerWidth,
    }));
  }
  await page.setViewportSize({ width: 1280, height: 900 });
  if (out["390"].scrollWidth > out["390"].innerWidth) {
    overflows.push(`${name}: ${out["390"].scrollWidth} > ${out["390"].innerWidth}`);
  }
  return out;
}

/// A text call for `agent` that the test then hands off.
export async function textCall(agent, from, words) {
  const now = Date.now();
  const detail = await api("POST", "/api/v1/sessions", {
    agent,
    from,
    turns: [
      { speaker: "ai", text: "Hello, how can I help?", started_at: new Date(now - 4000).toISOString() },
      { speaker: "caller", text: words, started_at: new Date(now - 2000).toISOString() },
    ],
  });
  return detail.session.id;
}

export async function handOff(session, reason) {
  return api("POST", `/api/v1/sessions/${session}/handoff`, { reason, end_session: true });
}

/// Logs `page` in as the admin user.
export async function login(page) {
  await page.goto(`${env.base}/login`);
  await page.fill("#username", "admin");
  await page.fill("#password", env.password);
  await Promise.all([page.waitForURL((u) => !u.pathname.startsWith("/login")), page.click("button[type=submit]")]);
}
