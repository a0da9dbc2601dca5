// The browser benchmark (a recipe, not a test): in one headless Chromium, against the
// same data served by our daemon on loopback (web-e2e-fixture, two repositories of
// GRASP_BENCH_EVENTS_PER_REPO events each, default 5 000; with GRASP_BENCH_RELAYS=both
// the announcements list nostr-rs-relay beside it, each relay holding about 60 % of the
// events, so a client pages that relay with REQ too), this module's
// cold sync into IndexedDB, its warm reopen until in sync and a 1 % catch-up, side by
// side with a JavaScript peer (nostr-tools REQ, signatures verified, into nostr-idb;
// bench/peer.js) doing the same job. Prints a markdown table (also results/bench.md):
// wall time and its ratio to the peer's in the same run, bytes, round trips, the longest
// main-thread task, the .wasm gzipped. GRASP_BENCH_ROUNDS=N repeats the warm reopen and
// the catch-up (new events each round) N times and adds their medians.
//
//   cargo build --release -p grasp-sync-tests --bin web-e2e-fixture --bin grasp-sync-under-test
//   GRASP_E2E_FIXTURE=target/release/web-e2e-fixture GRASP_E2E_PKG=web/pkg node web/e2e/bench.js
// or `just bench-web` (builds what it needs). The release build runs the daemon as its
// users do (a debug build's daemon answers the same, only slower).

import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { chromium } from "playwright-core";
import { Fixture } from "./fixture.js";
import { serve } from "./serve.js";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "results");
const pkg = process.env.GRASP_E2E_PKG ?? join(here, "..", "pkg");
mkdirSync(out, { recursive: true });
await build({ entryPoints: [join(here, "bench", "peer.js")], bundle: true, format: "esm", outfile: join(out, "peer.bundle.js"), logLevel: "warning" });

const perRepo = process.env.GRASP_BENCH_EVENTS_PER_REPO ?? "5000";
const relaysAsked = process.env.GRASP_BENCH_RELAYS ?? "daemon";
const fixture = await Fixture.start(process.env.GRASP_E2E_FIXTURE, { GRASP_E2E_EVENTS: perRepo, GRASP_E2E_RELAYS: relaysAsked });
const { daemon, nostrRsRelay } = fixture.expected;
const urls = [daemon, nostrRsRelay].filter(Boolean);
const repos = [fixture.expected.repo.coord, ...fixture.expected.otherRepos];
const server = await serve({ "/bench/": join(here, "bench"), "/out/": out, "/pkg/": pkg });
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium", args: ["--no-sandbox", "--headless=new"] });
const page = await browser.newPage();
page.on("pageerror", (e) => console.error(`page error: ${e.stack ?? e}`));
await page.goto(`${server.url}/bench/blank.html`);
await page.evaluate(() => {
  window.longest = 0;
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) window.longest = Math.max(window.longest, e.duration);
  }).observe({ type: "longtask", buffered: true });
});

/** One run of our module: open, track, until synced; then closes. */
const ours = (name) => page.evaluate(async ({ name, daemon, repos }) => {
  const m = await import("/pkg/grasp_sync_web.js");
  await m.default();
  window.longest = 0;
  const t0 = performance.now();
  const sync = await m.GraspSync.open({ name, bootstrapRelays: [daemon], allowPrivateRelays: true });
  for (const repo of repos) if (!sync.repos().includes(repo)) await sync.track(repo);
  const summary = await sync.synced();
  const ms = performance.now() - t0;
  const relays = sync.status();
  await sync.close();
  await new Promise((r) => setTimeout(r, 100));
  const sum = (k) => relays.reduce((n, r) => n + r[k], 0);
  return { ms, complete: summary.complete, stored: summary.stored, bytesIn: sum("bytesIn"), bytesOut: sum("bytesOut"),
    roundTrips: sum("roundTrips"), methods: relays.map((r) => r.method).join("/"), longest: window.longest,
    checkpointsWithEvents: summary.checkpointsWithEvents, checkpointsAfterEvents: summary.checkpointsAfterEvents };
}, { name, daemon, repos });

/** One run of the JavaScript peer (see bench/peer.js for `since` and `cachedRoots`). */
const peer = (since, cachedRoots) => page.evaluate(async ({ urls, repos, since, cachedRoots }) => {
  const { syncPeer } = await import("/out/peer.bundle.js");
  window.longest = 0;
  const r = await syncPeer({ name: "bench-peer", urls, repos, since, cachedRoots });
  return { ...r, roundTrips: r.reqs, longest: window.longest };
}, { urls, repos, since, cachedRoots });

const results = [];
const row = (what, who, r) => {
  results.push({ what, who, r });
  console.error(`${what} ${who}: ${JSON.stringify(r)}`);
};
/** A result's wall time over the peer's in the same kind of run and round, when the peer ran it. */
const vsPeer = (x) => {
  const { what, who, r } = x;
  const at = results.indexOf(x);
  const theirs = results.find((y, i) => i > at && y.what === what && y.who !== "grasp-sync-web");
  return who === "grasp-sync-web" && theirs ? `${(r.ms / theirs.r.ms).toFixed(2)}x` : "—";
};
const median = (values) => {
  const v = [...values].sort((a, b) => a - b);
  return v.length % 2 ? v[(v.length - 1) / 2] : (v[v.length / 2 - 1] + v[v.length / 2]) / 2;
};
const rounds = Math.max(1, Number(process.env.GRASP_BENCH_ROUNDS ?? "1"));
try {
  row("cold", "grasp-sync-web", await ours("bench-ours"));
  row("cold", "nostr-tools + nostr-idb", await peer());
  const n = Math.max(1, Math.round(fixture.expected.repo.events * repos.length / 100));
  for (let round = 0; round < rounds; round++) {
    row("warm reopen", "grasp-sync-web", await ours("bench-ours"));
    // The peer asks from a second before this round's events were published.
    const since = Math.floor(Date.now() / 1000) - 1;
    const published = await fixture.command(`publish-mix ${n}`);
    console.error(`published ${JSON.stringify(published)}`);
    row(`catch-up (+${n})`, "grasp-sync-web", await ours("bench-ours"));
    // Each peer run asks from the same `since` into its own database; the first does the
    // whole job, the second the lighter one a peer asking only by repository tag does.
    row(`catch-up (+${n})`, "nostr-tools + nostr-idb (`since`, cached roots)", await peer(since, true));
    row(`catch-up (+${n})`, "nostr-tools + nostr-idb (`since`, new roots only)", await peer(since, false));
  }
} finally {
  await browser.close();
  await server.close();
  await fixture.quit();
}
const wasm = readFileSync(join(pkg, "grasp_sync_web_bg.wasm"));
const table = [
  `Browser benchmark: ${repos.length} repositories, ${fixture.expected.repo.events * repos.length} events, ` +
    `relays ${daemon} (grasp-sync serve)${nostrRsRelay ? ` and ${nostrRsRelay} (nostr-rs-relay)` : ""}; .wasm ${wasm.length} B, ` +
    `${gzipSync(wasm, { level: 9 }).length} B gzipped.`,
  "",
  "| run | client | wall s | vs peer | stored | MB in | kB out | round trips | longest task ms |",
  "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
  ...results.map((x) => {
    const { what, who, r } = x;
    const kbOut = r.bytesOut === undefined ? "—" : (r.bytesOut / 1e3).toFixed(1);
    return `| ${what} | ${who} | ${(r.ms / 1000).toFixed(2)} | ${vsPeer(x)} | ${r.stored ?? "—"} | ${(r.bytesIn / 1e6).toFixed(2)} | ${kbOut} | ${r.roundTrips} | ${r.longest.toFixed(0)} |`;
  }),
  "",
  "The peer's bytes are the JSON of the events it kept (no frame overhead, no duplicates); its round trips are REQs.",
  ...(rounds > 1 ? ["", `Over ${rounds} rounds (warm reopen, then a catch-up of new events), medians:`, "",
    "| run | client | median wall s | runs |", "| --- | --- | ---: | ---: |",
    ...[...new Set(results.filter((x) => x.what !== "cold").map((x) => `${x.what}\u0000${x.who}`))].map((key) => {
      const [what, who] = key.split("\u0000");
      const ms = results.filter((x) => x.what === what && x.who === who).map((x) => x.r.ms);
      return `| ${what} | ${who} | ${(median(ms) / 1000).toFixed(3)} | ${ms.length} |`;
    })] : []),
].join("\n");
writeFileSync(join(out, "bench.md"), table + "\n");
console.log(table);
