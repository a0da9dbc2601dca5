// Signature checks per event (a recipe, not a test), in Node's V8 (the engine Chromium
// runs the workers' WebAssembly with): the verifying workers' code of the packed .wasm
// (grasp_sync_verify_input / grasp_sync_verify_run, src/verify/packed.rs), instantiated
// as worker.js does, against nostr-tools' verifyEvent (JavaScript) on the same events,
// in the same run. Both hash the id preimage and check the Schnorr signature. Prints
// microseconds per event and the ratio.
//
//   ./scripts/pack-web.sh && node web/e2e/verify-bench.js [web/pkg/grasp_sync_web_bg.wasm]

import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { finalizeEvent, generateSecretKey, verifyEvent } from "nostr-tools/pure";

const here = dirname(fileURLToPath(import.meta.url));
const wasmPath = process.argv[2] ?? join(here, "..", "pkg", "grasp_sync_web_bg.wasm");
const count = Number(process.env.GRASP_VERIFY_EVENTS ?? "2000");
const rounds = 5;

const secret = generateSecretKey();
const events = Array.from({ length: count }, (_, i) =>
  finalizeEvent(
    {
      kind: 1111,
      created_at: 1_700_000_000 + i,
      tags: [["E", "ab".repeat(32)], ["e", "cd".repeat(32)], ["K", "1621"]],
      content: `a comment of a few words, number ${i}`.repeat(8),
    },
    secret,
  ),
);

/** The batch as the page packs it for a worker (see packed.rs). */
function pack(events) {
  const bytes = (hex) => Uint8Array.from(hex.match(/../g), (b) => parseInt(b, 16));
  const utf8 = new TextEncoder();
  const parts = events.map((e) => [
    bytes(e.id), bytes(e.pubkey), bytes(e.sig),
    utf8.encode(JSON.stringify([0, e.pubkey, e.created_at, e.kind, e.tags, e.content])),
  ]);
  const out = new Uint8Array(4 + parts.reduce((n, p) => n + 132 + p[3].length, 0));
  const view = new DataView(out.buffer);
  view.setUint32(0, events.length, true);
  let at = 4;
  for (const [id, pubkey, sig, preimage] of parts) {
    out.set(id, at);
    out.set(pubkey, at + 32);
    out.set(sig, at + 64);
    view.setUint32(at + 128, preimage.length, true);
    out.set(preimage, at + 132);
    at += 132 + preimage.length;
  }
  return out;
}

/** The module's worker exports, every other import stubbed (as worker.js does). */
function workerExports(path) {
  const module = new WebAssembly.Module(readFileSync(path));
  const imports = {};
  for (const { module: from, name } of WebAssembly.Module.imports(module)) {
    imports[from] ??= {};
    imports[from][name] = () => { throw new Error(`${name} is not available here`); };
  }
  return new WebAssembly.Instance(module, imports).exports;
}

/** The fastest of `rounds` runs of `run`, in microseconds per event. */
function best(run) {
  let fastest = Infinity;
  for (let r = 0; r < rounds; r++) {
    const t0 = performance.now();
    run();
    fastest = Math.min(fastest, performance.now() - t0);
  }
  return (fastest * 1000) / count;
}

const batch = pack(events);
const exports = workerExports(wasmPath);
const ours = best(() => {
  const at = exports.grasp_sync_verify_input(batch.length);
  new Uint8Array(exports.memory.buffer, at, batch.length).set(batch);
  const flags = new Uint8Array(exports.memory.buffer, exports.grasp_sync_verify_run(), count);
  if (flags.some((f) => f !== 1)) throw new Error("the module refused a valid event");
});
const theirs = best(() => {
  // A fresh copy each round: verifyEvent caches its verdict on the object (under a
  // symbol, which a spread would copy too).
  for (const { id, pubkey, created_at, kind, tags, content, sig } of events) {
    if (!verifyEvent({ id, pubkey, created_at, kind, tags, content, sig })) throw new Error("nostr-tools refused a valid event");
  }
});
console.log(
  `verifying ${count} events, best of ${rounds}: grasp-sync-web's worker code ${ours.toFixed(0)} µs/event, ` +
    `nostr-tools verifyEvent ${theirs.toFixed(0)} µs/event (${(ours / theirs).toFixed(2)}x)`,
);
