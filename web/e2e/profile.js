// Where the browser benchmark's time goes (a recipe, not a test): the same runs as
// bench.js (our module's cold sync, warm reopen, 1 % catch-up), each recorded through
// Chromium's DevTools protocol — every WebSocket frame and HTTP request with its
// timestamp, long tasks, and a CPU profile — and summarised per run: a timeline of
// frames (relative ms, direction, relay, head of the frame), the gaps in it, and the
// functions with the most self time. Raw data goes to results/profile-<run>.json and
// .cpuprofile (open those in Chromium's DevTools).
//
//   GRASP_E2E_FIXTURE=target/release/web-e2e-fixture GRASP_E2E_PKG=web/pkg node web/e2e/profile.js
// (the fixture built as for bench.js; GRASP_BENCH_RELAYS=both as there).

import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { Fixture } from "./fixture.js";
import { serve } from "./serve.js";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "results");
const pkg = process.env.GRASP_E2E_PKG ?? join(here, "..", "pkg");
mkdirSync(out, { recursive: true });
const perRepo = process.env.GRASP_BENCH_EVENTS_PER_REPO ?? "5000";
const runs = (process.env.GRASP_PROFILE_RUNS ?? "warm,catch-up").split(",");
const frameLines = Number(process.env.GRASP_PROFILE_FRAMES ?? "200");

const fixture = await Fixture.start(process.env.GRASP_E2E_FIXTURE, { GRASP_E2E_EVENTS: perRepo, GRASP_E2E_RELAYS: process.env.GRASP_BENCH_RELAYS ?? "daemon" });
const { daemon, nostrRsRelay } = fixture.expected;
const repos = [fixture.expected.repo.coord, ...fixture.expected.otherRepos];
const relayName = (url) => (url.includes(new URL(daemon).port) ? "D" : nostrRsRelay && url.includes(new URL(nostrRsRelay).port) ? "R" : url);
const server = await serve({ "/bench/": join(here, "bench"), "/pkg/": pkg });
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium", args: ["--no-sandbox", "--headless=new"] });
const page = await browser.newPage();
page.on("pageerror", (e) => console.error(`page error: ${e.stack ?? e}`));
page.on("console", (m) => { if (process.env.GRASP_PROFILE_CONSOLE) console.error(`console: ${m.text()}`); });
await page.goto(`${server.url}/bench/blank.html`);
const cdp = await page.context().newCDPSession(page);
await cdp.send("Network.enable");
await cdp.send("Profiler.enable");
await cdp.send("Profiler.setSamplingInterval", { interval: 200 });
let log = [];
const sockets = new Map();
const at = (p) => p.timestamp * 1000;
cdp.on("Network.webSocketCreated", (p) => { sockets.set(p.requestId, relayName(p.url)); log.push({ t: null, kind: "ws-create", relay: relayName(p.url) }); });
cdp.on("Network.webSocketWillSendHandshakeRequest", (p) => log.push({ t: at(p), kind: "ws-handshake", relay: sockets.get(p.requestId) }));
cdp.on("Network.webSocketHandshakeResponseReceived", (p) => log.push({ t: at(p), kind: "ws-open", relay: sockets.get(p.requestId) }));
cdp.on("Network.webSocketFrameSent", (p) => log.push({ t: at(p), kind: ">", relay: sockets.get(p.requestId), len: p.response.payloadData.length, head: p.response.payloadData.slice(0, 90), ...(process.env.GRASP_PROFILE_FULL_SENT ? { full: p.response.payloadData } : {}) }));
cdp.on("Network.webSocketFrameReceived", (p) => log.push({ t: at(p), kind: "<", relay: sockets.get(p.requestId), len: p.response.payloadData.length, head: p.response.payloadData.slice(0, 90) }));
cdp.on("Network.webSocketClosed", (p) => log.push({ t: at(p), kind: "ws-closed", relay: sockets.get(p.requestId) }));
cdp.on("Network.requestWillBeSent", (p) => { if (!p.request.url.includes("/pkg/") && !p.request.url.includes("/bench/")) log.push({ t: at(p), kind: "http>", head: p.request.url }); });
cdp.on("Network.loadingFinished", (p) => log.push({ t: at(p), kind: "http-done", head: p.requestId }));
cdp.on("Network.loadingFailed", (p) => log.push({ t: at(p), kind: "http-failed", head: `${p.requestId} ${p.errorText}` }));

await page.evaluate(() => {
  window.longtasks = [];
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) window.longtasks.push({ start: e.startTime, ms: e.duration });
  }).observe({ type: "longtask", buffered: true });
});

/** One run of our module, with marks; returns its timings (monotonic ms of the page). */
const ours = (name) => page.evaluate(async ({ name, daemon, repos }) => {
  const m = await import("/pkg/grasp_sync_web.js");
  await m.default();
  window.longtasks = [];
  const marks = {};
  const t0 = performance.now();
  marks.timeOrigin = performance.timeOrigin;
  marks.t0 = t0;
  const sync = await m.GraspSync.open({ name, bootstrapRelays: [daemon], allowPrivateRelays: true });
  marks.opened = performance.now() - t0;
  for (const repo of repos) if (!sync.repos().includes(repo)) await sync.track(repo);
  marks.tracked = performance.now() - t0;
  const statuses = [];
  sync.onStatus((relays) => statuses.push({ t: performance.now() - t0, relays: relays.map((r) => `${r.url.slice(-5)} ${r.state} ${r.method} rt=${r.roundTrips} in=${r.bytesIn} out=${r.bytesOut}`) }));
  const summary = await sync.synced();
  marks.synced = performance.now() - t0;
  const relays = sync.status();
  await sync.close();
  marks.closed = performance.now() - t0;
  await new Promise((r) => setTimeout(r, 100));
  return { marks, complete: summary.complete, relays, statuses, longtasks: window.longtasks.map((l) => ({ start: l.start - t0, ms: l.ms })) };
}, { name, daemon, repos });

/** Self time per function of a CPU profile, top `n`. */
function hot(profile, n = 25) {
  const self = new Map();
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const dt = profile.timeDeltas;
  for (let i = 0; i < profile.samples.length; i++) {
    const node = byId.get(profile.samples[i]);
    const f = node.callFrame;
    const key = `${f.functionName || "(anon)"} ${f.url.split("/").pop()}:${f.lineNumber}`;
    self.set(key, (self.get(key) ?? 0) + (dt[i] ?? 0) / 1000);
  }
  const total = [...self.values()].reduce((a, b) => a + b, 0);
  return { total, top: [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, n) };
}

/** The longest stretches of the profile without an idle sample (a long task's worth of
 *  main-thread work), each with the functions most often on its stack. */
function busyStretches(profile, n = 3, minMs = 50) {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const parent = new Map();
  for (const node of profile.nodes) for (const c of node.children ?? []) parent.set(c, node.id);
  const name = (node) => `${node.callFrame.functionName || "(anon)"} ${node.callFrame.url.split("/").pop()}:${node.callFrame.lineNumber}`;
  const stretches = [];
  let cur = null;
  let t = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    t += (profile.timeDeltas[i] ?? 0) / 1000;
    const node = byId.get(profile.samples[i]);
    if (node.callFrame.functionName === "(idle)") {
      if (cur) stretches.push(cur);
      cur = null;
      continue;
    }
    cur ??= { start: t, end: t, samples: [] };
    cur.end = t;
    cur.samples.push(profile.samples[i]);
  }
  if (cur) stretches.push(cur);
  return stretches
    .filter((s) => s.end - s.start >= minMs)
    .sort((a, b) => (b.end - b.start) - (a.end - a.start))
    .slice(0, n)
    .map((s) => {
      const inclusive = new Map();
      const self = new Map();
      for (const id of s.samples) {
        self.set(name(byId.get(id)), (self.get(name(byId.get(id))) ?? 0) + 1);
        const onStack = new Set();
        for (let k = id; k !== undefined; k = parent.get(k)) onStack.add(name(byId.get(k)));
        for (const f of onStack) inclusive.set(f, (inclusive.get(f) ?? 0) + 1);
      }
      const top = (m, k) => [...m.entries()].sort((a, b) => b[1] - a[1]).slice(0, k).map(([f, c]) => `${(100 * c / s.samples.length).toFixed(0)}% ${f}`);
      return { ms: s.end - s.start, at: s.start, self: top(self, 8), inclusive: top(inclusive, 25) };
    });
}

async function profiled(label, name) {
  log = [];
  await cdp.send("Profiler.start");
  const r = await ours(name);
  const { profile } = await cdp.send("Profiler.stop");
  writeFileSync(join(out, `profile-${label}.cpuprofile`), JSON.stringify(profile));
  writeFileSync(join(out, `profile-${label}.json`), JSON.stringify({ r, log }, null, 1));
  // Frame timestamps are monotonic seconds (the same clock as performance.now() + timeOrigin
  // is not guaranteed): align on the first event after t0 instead, printing relative times.
  const t0 = log.find((e) => e.t !== null)?.t ?? 0;
  console.log(`\n## ${label}: open ${r.marks.opened.toFixed(0)} ms, tracked ${r.marks.tracked.toFixed(0)} ms, synced ${r.marks.synced.toFixed(0)} ms, closed ${r.marks.closed.toFixed(0)} ms; complete ${r.complete}`);
  for (const s of r.relays) console.log(`  ${s.url} ${s.state} ${s.method} rt=${s.roundTrips} in=${s.bytesIn} out=${s.bytesOut} received=${s.received} stored=${s.stored}`);
  console.log(`  long tasks (ms after open): ${r.longtasks.map((l) => `${l.start.toFixed(0)}+${l.ms.toFixed(0)}`).join(" ")}`);
  console.log(`  statuses: ${r.statuses.map((s) => `${s.t.toFixed(0)}: ${s.relays.join(" | ")}`).join("\n            ")}`);
  console.log(`  frames (ms from first network event):`);
  let prev = t0;
  let shown = 0;
  for (const e of log) {
    if (e.t === null) continue;
    const gap = e.t - prev;
    prev = e.t;
    if (shown++ < frameLines || gap > 50) {
      console.log(`  ${(e.t - t0).toFixed(1).padStart(8)} ${gap > 50 ? `(+${gap.toFixed(0)})` : "      "} ${e.kind} ${e.relay ?? ""} ${e.len ?? ""} ${e.head ?? ""}`);
    }
  }
  const h = hot(profile);
  console.log(`  CPU profile: ${h.total.toFixed(0)} ms sampled; top self time:`);
  for (const [k, v] of h.top) console.log(`    ${v.toFixed(1).padStart(8)} ms  ${k}`);
  for (const b of busyStretches(profile)) {
    console.log(`  busy stretch of ${b.ms.toFixed(0)} ms at ${b.at.toFixed(0)} ms of the profile; self: ${b.self.join(", ")}`);
    console.log(`    on the stack: ${b.inclusive.join("\n                  ")}`);
  }
}

/** Raw IndexedDB costs on the module's database (`name`, closed): what reading the
 *  negentropy items of one repository tag (`#a`) and its root events costs by each API. */
const idbProbe = (name, coord) => page.evaluate(async ({ name, coord }) => {
  const db = await new Promise((ok, fail) => { const r = indexedDB.open(name); r.onsuccess = () => ok(r.result); r.onerror = () => fail(r.error); });
  const range = IDBKeyRange.bound([`a:${coord}`, 0], [`a:${coord}`, Number.MAX_SAFE_INTEGER]);
  const index = () => db.transaction("events").objectStore("events").index("tag");
  const req = (r) => new Promise((ok, fail) => { r.onsuccess = () => ok(r.result); r.onerror = () => fail(r.error); });
  const out = {};
  let t = performance.now();
  const keys = await new Promise((ok, fail) => {
    const items = [];
    const r = index().openKeyCursor(range);
    r.onsuccess = () => { const c = r.result; if (!c) return ok(items); items.push([c.key[1], c.primaryKey]); c.continue(); };
    r.onerror = () => fail(r.error);
  });
  out.keyCursor = { n: keys.length, ms: performance.now() - t };
  t = performance.now();
  const pks = await req(index().getAllKeys(range));
  out.getAllKeys = { n: pks.length, ms: performance.now() - t };
  if (index().getAllRecords) {
    t = performance.now();
    const recs = await req(index().getAllRecords({ query: range }));
    out.getAllRecords = { n: recs.length, ms: performance.now() - t };
  }
  t = performance.now();
  const rows = await req(index().getAll(range));
  out.getAll = { n: rows.length, ms: performance.now() - t, jsonBytes: rows.reduce((n, r) => n + r.json.length, 0) };
  t = performance.now();
  const roots = rows.filter((r) => [1617, 1618, 1621].includes(r.kind)).map((r) => JSON.parse(r.json));
  out.rootsParsedInJs = { n: roots.length, ms: performance.now() - t };
  db.close();
  return out;
}, { name, coord });

try {
  if (runs.includes("cold")) await profiled("cold", "bench-ours");
  else {
    const t = Date.now();
    await ours("bench-ours");
    console.log(`cold (not profiled): ${Date.now() - t} ms`);
  }
  if (runs.includes("warm")) await profiled("warm", "bench-ours");
  if (runs.includes("catch-up")) {
    const n = Math.max(1, Math.round(fixture.expected.repo.events * repos.length / 100));
    await fixture.command(`publish-mix ${n}`);
    await profiled("catch-up", "bench-ours");
  }
  if (runs.includes("idb")) console.log(`\n## raw IndexedDB on the bench database: ${JSON.stringify(await idbProbe("bench-ours", repos[0]), null, 1)}`);
} finally {
  await browser.close();
  await server.close();
  await fixture.quit();
}
