// Starts a signature-verifying Web Worker (worker.js, beside this file) and hands it
// this page's compiled wasm module, so the worker neither downloads nor compiles it
// again. The `new Worker(new URL("./worker.js", import.meta.url), { type: "module" })`
// form is what bundlers (Vite, webpack 5, Parcel) recognise, so the worker is bundled
// with no plugin and resolves from an npm package with no file copied by hand.
import { protocol } from "./worker.js";

/** The machine's logical cores as the browser reports them (0 when it does not). */
export function hardwareConcurrency() {
  return Number(globalThis.navigator?.hardwareConcurrency) || 0;
}

/**
 * A worker that answers packed batches; `script`, when given, replaces worker.js (the
 * tests start broken workers this way). Throws when workers cannot be started here.
 */
export function spawnVerifier(module, script) {
  const worker = script
    ? new Worker(script, { type: "module" })
    : new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
  worker.postMessage({ protocol, module });
  return worker;
}
