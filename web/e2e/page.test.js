// The demo page in headless Chromium against real relays on loopback (our daemon with
// NIP-77, nostr-rs-relay without): a repository synced and listed exactly as the corpus
// says, a new issue shown live, everything shown again from IndexedDB with the relays
// stopped, a full storage quota shown (and the sync completed once it is lifted), and the packed
// module working from a Vite build. Any uncaught page error fails the run.
//
// Environment (scripts/test-e2e.sh sets it):
//   GRASP_E2E_FIXTURE     the web-e2e-fixture binary (required)
//   GRASP_E2E_PKG         the built package directory (default web/pkg)
//   GRASP_E2E_EXAMPLE     the Vite example's dist directory (its test is skipped without)
//   GRASP_E2E_WEB_DIR     page/ and pkg/ for the daemon to serve (its test is skipped without)
//   GRASP_E2E_SCREENSHOT  where to save the synced page's screenshot
//   CHROMIUM              the browser (default /usr/bin/chromium)

import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { isDeepStrictEqual } from "node:util";
import { chromium } from "playwright-core";
import { Fixture } from "./fixture.js";
import { serve } from "./serve.js";
import { encodeNaddr } from "../page/nip19.js";

const here = dirname(fileURLToPath(import.meta.url));
const results = join(here, "results");
const SYNC_TIMEOUT = Number(process.env.GRASP_E2E_TIMEOUT_MS ?? 120_000);

describe("the demo page", { timeout: 600_000 }, () => {
  let fixture;
  let server;
  let browser;
  let context;
  let page;
  let pageUrl;
  let expected;
  const errors = [];
  const timings = {};

  before(async () => {
    assert.ok(process.env.GRASP_E2E_FIXTURE, "GRASP_E2E_FIXTURE names the fixture binary");
    mkdirSync(results, { recursive: true });
    fixture = await Fixture.start(process.env.GRASP_E2E_FIXTURE);
    expected = fixture.expected.repo;
    console.log(`fixture: ${JSON.stringify({ ...fixture.expected, repo: { ...expected, items: expected.items.length } })}`);
    const mounts = {
      "/page/": join(here, "..", "page"),
      "/pkg/": process.env.GRASP_E2E_PKG ?? join(here, "..", "pkg"),
    };
    if (process.env.GRASP_E2E_EXAMPLE) mounts["/example/"] = process.env.GRASP_E2E_EXAMPLE;
    server = await serve(mounts);
    browser = await chromium.launch({
      executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
      args: ["--no-sandbox", "--headless=new"],
    });
    context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    page = await context.newPage();
    page.on("pageerror", (e) => errors.push(e));
    page.on("console", (m) => {
      if (m.type() === "error" || m.type() === "warning") console.log(`[page ${m.type()}] ${m.text()}`);
    });
    const params = new URLSearchParams({ db: "e2e", private: "1", bootstrap: fixture.expected.daemon });
    pageUrl = `${server.url}/page/?${params}`;
  });

  after(async () => {
    writeFileSync(join(results, "timings.json"), JSON.stringify(timings, null, 2) + "\n");
    console.log(`timings: ${JSON.stringify(timings)}`);
    await browser?.close();
    await server?.close();
    await fixture?.quit();
  });

  /** Fails on any uncaught error the page threw so far. */
  function noPageErrors() {
    assert.deepEqual(errors.map((e) => e.stack ?? String(e)), [], "uncaught errors in the page");
  }

  /** What `on` (by default the page under test) shows now, for assertions and messages. */
  const shown = (on = page) => on.evaluate(() => ({
    badge: document.getElementById("connectivity").dataset.state,
    badgeText: document.getElementById("connectivity").textContent,
    relays: [...document.querySelectorAll("#relay-rows tr")].map((r) => r.innerText.replace(/\s+/g, " ")),
    items: [...document.querySelectorAll("#item-rows tr")].map((r) => ({
      id: r.dataset.id,
      type: r.dataset.type,
      title: r.querySelector(".title").textContent,
      status: r.querySelector(".status").textContent,
      comments: Number(r.querySelector(".num").textContent),
    })),
    messages: document.getElementById("messages").innerText,
  }));

  /** Waits until `on`'s badge says `state` and `rows` items are listed. */
  async function waitFor(state, rows, timeout = SYNC_TIMEOUT, on = page) {
    try {
      await on.waitForFunction(
        ([s, n]) => document.getElementById("connectivity")?.dataset.state === s &&
          document.querySelectorAll("#item-rows tr").length === n,
        [state, rows],
        { timeout, polling: 100 },
      );
    } catch (e) {
      const now = await shown(on);
      throw new Error(`waiting for "${state}" with ${rows} items: ${e.message}\n` +
        `shown: ${JSON.stringify({ ...now, items: now.items.length }, null, 1)}`);
    }
  }

  /**
   * What the page shows once it lists `expected.items`, or after `graceMs`: the list is
   * redrawn from the store at most every 250 ms after a change.
   */
  async function settled(graceMs = 2_000) {
    let now = await shown();
    const deadline = Date.now() + graceMs;
    while (!isDeepStrictEqual(now.items, expected.items) && Date.now() < deadline) {
      await page.waitForTimeout(100);
      now = await shown();
    }
    return now;
  }

  it("syncs a repository pasted as an naddr and lists exactly the corpus's items", async () => {
    const t0 = Date.now();
    await page.goto(pageUrl);
    await page.waitForSelector("html[data-ready=true]");
    const naddr = encodeNaddr({ kind: 30617, pubkey: expected.pubkey, identifier: expected.d });
    // By keyboard: the address field, then Enter.
    await page.getByLabel("Repository address").fill(naddr);
    await page.getByLabel("Repository address").press("Enter");
    await waitFor("in sync", expected.items.length);
    timings.coldToInSyncMs = Date.now() - t0;
    timings.events = expected.events;
    const now = await settled();
    timings.coldToCompleteMs = Date.now() - t0;
    assert.deepEqual(now.items.map((i) => i.title), expected.items.map((i) => i.title));
    assert.deepEqual(now.items, expected.items, "ids, types, titles, statuses and comment counts");
    assert.equal(await page.locator("#repo-heading").textContent(), expected.name);
    assert.equal(now.relays.length, 2, "one row per relay");
    console.log(`relays: ${now.relays.join(" | ")}`);
    const file = process.env.GRASP_E2E_SCREENSHOT ?? join(results, "screenshot.png");
    mkdirSync(dirname(file), { recursive: true });
    await page.screenshot({ path: file });
    noPageErrors();
  });

  it("opens a thread with its comments", async () => {
    const item = expected.items.find((i) => i.comments > 0);
    assert.ok(item, "the corpus has a commented item");
    await page.locator(`#item-rows tr[data-id="${item.id}"] a`).click();
    await page.waitForSelector("#thread:not([hidden])");
    assert.equal(await page.locator("#thread-entries li.comment").count(), item.comments);
    assert.match(await page.locator("#thread-heading").textContent(), new RegExp(item.title));
    await page.getByRole("link", { name: "Back to the list" }).click();
    await page.waitForSelector("#thread[hidden]", { state: "attached" });
    noPageErrors();
  });

  it("reopens warm: the same list from the store, in sync again", async () => {
    const t0 = Date.now();
    await page.reload();
    await waitFor("in sync", expected.items.length);
    timings.warmToInSyncMs = Date.now() - t0;
    assert.deepEqual((await settled()).items, expected.items);
    noPageErrors();
  });

  it("shows a new issue published to the relays without a reload", async () => {
    await page.evaluate(() => { window.stillTheSamePage = true; });
    const { published } = await fixture.command("publish");
    const t0 = Date.now();
    await page.locator(`#item-rows tr[data-id="${published.id}"]`).waitFor({ timeout: 60_000 });
    timings.liveMs = Date.now() - t0;
    assert.equal(await page.locator(`#item-rows tr[data-id="${published.id}"] .title`).textContent(), published.title);
    assert.equal(await page.evaluate(() => window.stillTheSamePage), true, "no reload happened");
    expected.items.unshift({ id: published.id, type: "issue", title: published.title, status: "open", comments: 0 });
    noPageErrors();
  });

  it("with the relays stopped, a reload shows the same list from IndexedDB, marked offline", async () => {
    const before = (await shown()).items;
    assert.equal(before.length, expected.items.length);
    await fixture.command("stop");
    await page.reload();
    await waitFor("offline", expected.items.length, 60_000);
    assert.deepEqual((await shown()).items, before);
    assert.match(await page.locator("#connectivity").textContent(), /offline/);
    noPageErrors();
  });

  it("catches up when the relays are back", async () => {
    await fixture.command("start");
    await waitFor("in sync", expected.items.length, SYNC_TIMEOUT);
    noPageErrors();
  });

  it("offers the other repository the bootstrap relay announces, and tracks it", async () => {
    const other = fixture.expected.otherRepos[0];
    const picker = page.getByLabel("Announced on the bootstrap relays");
    await page.locator(`#announced option[value="${other}"]`).waitFor({ state: "attached", timeout: 30_000 });
    await picker.selectOption(other);
    await page.getByRole("button", { name: "Track selected" }).click();
    await page.locator("#tracked li").nth(1).waitFor({ timeout: 30_000 });
    assert.equal(await page.locator("#tracked li").count(), 2);
    await page.waitForFunction((coord) => document.getElementById("repo").dataset.loaded === coord, other);
    await page.locator("#item-rows tr").first().waitFor({ timeout: SYNC_TIMEOUT });
    noPageErrors();
  });

  it("the daemon serves the page: its address in a browser shows a client syncing from it",
    { skip: !process.env.GRASP_E2E_WEB_DIR }, async () => {
      const own = await browser.newContext({ viewport: { width: 1280, height: 900 } });
      const served = await own.newPage();
      const servedErrors = [];
      served.on("pageerror", (e) => servedErrors.push(e));
      await served.goto(fixture.expected.daemonHttp);
      assert.match(served.url(), /\/page\/\?bootstrap=ws/, "sent to the page");
      await served.waitForSelector("html[data-ready=true]");
      // The relay announces the repository: picked from the list, it syncs.
      await served.locator(`#announced option[value="${expected.coord}"]`)
        .waitFor({ state: "attached", timeout: 30_000 });
      await served.getByLabel("Announced on the bootstrap relays").selectOption(expected.coord);
      await served.getByRole("button", { name: "Track selected" }).click();
      await waitFor("in sync", expected.items.length, SYNC_TIMEOUT, served);
      assert.deepEqual(servedErrors.map((e) => e.stack ?? String(e)), [], "uncaught errors in the page");
      await own.close();
    });

  it("says it is not saving when the browser's quota is full, and completes the sync once it is not", async () => {
    // A context of its own (its own storage), whose origin may store 300 kB: the
    // announcement and a few events fit, the repository does not.
    const own = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const full = await own.newPage();
    const fullErrors = [];
    full.on("pageerror", (e) => fullErrors.push(e));
    const cdp = await own.newCDPSession(full);
    const origin = new URL(server.url).origin;
    await cdp.send("Storage.overrideQuotaForOrigin", { origin, quotaSize: 300_000 });
    const repo = encodeNaddr({ kind: 30617, pubkey: expected.pubkey, identifier: expected.d });
    const params = new URLSearchParams({ db: "e2e-quota", private: "1", bootstrap: fixture.expected.daemon, repo });
    await full.goto(`${server.url}/page/?${params}`);
    const state = () => full.evaluate(() => ({
      badge: document.getElementById("connectivity").dataset.state,
      problems: [...document.querySelectorAll("#relay-rows tr td.problem")].map((c) => c.textContent),
      items: document.querySelectorAll("#item-rows tr").length,
    }));
    try {
      await full.waitForFunction(
        () => document.getElementById("connectivity")?.dataset.state === "not saving",
        null, { timeout: SYNC_TIMEOUT, polling: 100 },
      );
    } catch (e) {
      throw new Error(`${e.message}\nshown: ${JSON.stringify(await state())}`);
    }
    const refused = await state();
    assert.ok(refused.problems.some((p) => /not stored: (an earlier write failed: )?store full: the browser refused to store more/.test(p)), JSON.stringify(refused));
    assert.ok(refused.items < expected.items.length, "the repository did not fit");
    // Space again (the override lifted): the refused events are fetched again and the
    // sync completes, without a reload.
    await full.evaluate(() => { window.stillTheSamePage = true; });
    await cdp.send("Storage.overrideQuotaForOrigin", { origin });
    const lifted = Date.now();
    await waitFor("in sync", expected.items.length, SYNC_TIMEOUT, full);
    timings.quotaLiftedToInSyncMs = Date.now() - lifted;
    assert.equal(await full.evaluate(() => window.stillTheSamePage), true, "no reload happened");
    assert.deepEqual(fullErrors.map((e) => e.stack ?? String(e)), [], "uncaught errors in the page");
    await own.close();
  });

  it("the packed module works from a Vite build", { skip: !process.env.GRASP_E2E_EXAMPLE }, async () => {
    const example = await context.newPage();
    const exampleErrors = [];
    example.on("pageerror", (e) => exampleErrors.push(e));
    const params = new URLSearchParams({
      db: "e2e-example", private: "1", bootstrap: fixture.expected.daemon, repo: expected.coord,
    });
    await example.goto(`${server.url}/example/?${params}`);
    try {
      await example.waitForFunction(() => document.body.dataset.complete !== undefined, null, { timeout: SYNC_TIMEOUT });
    } catch (e) {
      throw new Error(`${e.message}\nshown: ${await example.locator("body").innerText()}\nerrors: ${exampleErrors}`);
    }
    assert.match(await example.locator("#version").textContent(), /^grasp-sync-web \S+/);
    assert.equal(await example.locator("#items li").count(), expected.items.length);
    assert.deepEqual(exampleErrors, []);
    await example.close();
  });
});
