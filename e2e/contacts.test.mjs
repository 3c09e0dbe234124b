// The Contacts page end to end: add a contact, edit it on its own page,
// import a CSV file (read by the page into the text box) with one bad row
// and see the report name it, find an imported contact by search, delete one.
// Self-contained: its own browser and login; its numbers are +1 415 555 02xx.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { api, env, launch, login, screenshots } from "./lib.mjs";

const CSV = [
  "Name,PHONE,email",
  "E2E Grace Hopper,+1 415 555 0202,grace@example.com",
  "E2E Bad Row,not a number,",
  "\"E2E Turing, Alan\",4155550203,",
  "",
].join("\r\n");

let browser;
let page;

/// The contacts API's matches for `search`.
async function find(search) {
  return api("GET", `/api/v1/contacts?search=${encodeURIComponent(search)}`);
}

describe("contacts", { timeout: 120_000 }, () => {
  before(async () => {
    browser = await launch();
    page = browser.page;
    await login(page);
  });
  after(async () => {
    await browser?.close();
  });

  test("a contact is added, then renamed on its own page", async () => {
    await page.goto(`${env.base}/contacts`);
    await page.fill("#phone", "+14155550201");
    await page.fill("#name", "E2E Ada");
    await Promise.all([page.waitForURL(/\/contacts$/), page.click("button:has-text('Add contact')")]);
    const link = page.locator("table.contacts a", { hasText: "E2E Ada" });
    await link.waitFor();
    await Promise.all([page.waitForURL(/\/contacts\/[0-9a-f-]{36}$/), link.click()]);
    assert.equal(await page.inputValue("#phone"), "+14155550201");

    // A bad email is shown next to the field; nothing is saved.
    await page.fill("#email", "ada-at-example");
    await page.click("button:has-text('Save')");
    await page.locator("#email-error").waitFor();
    assert.equal(await page.inputValue("#email"), "ada-at-example", "the typed value is kept");

    await page.fill("#email", "ada@example.com");
    await page.fill("#name", "E2E Ada Lovelace");
    await Promise.all([page.waitForURL(/\?saved=true$/), page.click("button:has-text('Save')")]);
    await page.locator(".notice[role=status]", { hasText: "Saved." }).waitFor();
    assert.equal(await page.locator("h1").textContent(), "E2E Ada Lovelace");
    await screenshots(page, "contact-edit");
    const [ada] = await find("lovelace");
    assert.equal(ada.email, "ada@example.com");
  });

  test("a CSV import reports the row it rejected", async () => {
    await page.goto(`${env.base}/contacts`);
    await page.setInputFiles("#csv-file", { name: "contacts.csv", mimeType: "text/csv", buffer: Buffer.from(CSV) });
    // The page reads the file into the text box before anything is sent.
    await page.waitForFunction(() => document.getElementById("csv").value.includes("E2E Grace Hopper"));
    await Promise.all([page.waitForURL(/\/contacts\/import$/), page.click("button:has-text('Import')")]);
    const report = page.locator("#import-report");
    await report.waitFor();
    const counts = await report.locator("ul.counts").innerText();
    assert.match(counts, /2 imported as new contacts/);
    assert.match(counts, /0 updated existing contacts/);
    assert.match(counts, /1 rejected/);
    const rows = report.locator("table.rejected tbody tr");
    assert.equal(await rows.count(), 1);
    const cells = await rows.first().locator("td").allInnerTexts();
    assert.equal(cells[0], "3", "the bad row is named by its line in the file");
    assert.equal(cells[1], "E2E Bad Row,not a number,");
    assert.match(cells[2], /^phone: /);
    const shot = await screenshots(page, "contacts-import");
    assert.ok(shot["390"].scrollWidth <= shot["390"].innerWidth, "the report fits 390 px without sideways scrolling");
    assert.equal((await find("hopper")).length, 1);
    assert.equal((await find("not a number")).length, 0, "the bad row is not imported");
  });

  test("search finds an imported contact", async () => {
    await page.fill("#q", "hopper");
    await Promise.all([page.waitForURL(/\/contacts\?q=hopper$/), page.click("form[role=search] button")]);
    const names = await page.locator("table.contacts tbody td[data-label=Name]").allInnerTexts();
    assert.deepEqual(names, ["E2E Grace Hopper"]);
    assert.equal(await page.locator("table.contacts", { hasText: "+14155550202" }).count(), 1);
  });

  test("a contact is deleted after confirming", async () => {
    await page.goto(`${env.base}/contacts?q=turing`);
    await Promise.all([
      page.waitForURL(/\/contacts\/[0-9a-f-]{36}$/),
      page.click("table.contacts a:has-text('E2E Turing, Alan')"),
    ]);
    // Declining the confirmation keeps the contact.
    page.once("dialog", (d) => d.dismiss());
    await page.click("button:has-text('Delete contact')");
    assert.equal((await find("turing")).length, 1);
    page.once("dialog", (d) => {
      assert.match(d.message(), /Delete contact E2E Turing, Alan\?/);
      d.accept();
    });
    await Promise.all([page.waitForURL(/\/contacts$/), page.click("button:has-text('Delete contact')")]);
    assert.equal(await page.locator("table.contacts", { hasText: "E2E Turing" }).count(), 0);
    assert.equal((await find("turing")).length, 0);
    assert.deepEqual(browser.errors, [], "no script errors");
  });
});
