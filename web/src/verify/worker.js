// The signature-verifying Web Worker of grasp-sync-web (started by spawn.js).
//
// Its first message is `{ protocol, module }`: the page's compiled WebAssembly.Module,
// instantiated here with every import stubbed, for it only calls two plain exports that
// touch no JavaScript (see src/verify/packed.rs): `grasp_sync_verify_input(len)` gives a
// buffer to fill with a packed batch, `grasp_sync_verify_run()` checks it and returns
// where the flags (one byte per event) are. Each later message `{ id, batch }` (an
// ArrayBuffer, transferred) is answered `{ id, flags }` (a Uint8Array, transferred) or
// `{ id, error }`. A failed start answers `{ error }`; the page then verifies without
// this worker. The page also imports this file (to learn `protocol`); it does nothing
// outside a worker.

/** Bumped whenever the messages change, so a stale cached worker is refused. */
export const protocol = 1;

const inWorker =
  typeof WorkerGlobalScope !== "undefined" && globalThis instanceof WorkerGlobalScope;

if (inWorker) {
  let ready = null;
  globalThis.onmessage = async ({ data }) => {
    if (ready === null) {
      ready = start(data);
      try {
        await ready;
      } catch (e) {
        globalThis.postMessage({ error: `verifier worker failed to start: ${e}` });
      }
      return;
    }
    const { id, batch } = data;
    try {
      const exports = await ready;
      const input = new Uint8Array(batch);
      const at = exports.grasp_sync_verify_input(input.length);
      new Uint8Array(exports.memory.buffer, at, input.length).set(input);
      const count = new DataView(batch).getUint32(0, true);
      const out = exports.grasp_sync_verify_run();
      const flags = new Uint8Array(exports.memory.buffer, out, count).slice();
      globalThis.postMessage({ id, flags }, [flags.buffer]);
    } catch (e) {
      globalThis.postMessage({ id, error: String(e) });
    }
  };
}

/** Instantiates the page's module with stub imports; its exports. */
async function start({ protocol: theirs, module }) {
  if (theirs !== protocol) throw new Error(`protocol ${theirs}, this worker speaks ${protocol}`);
  if (!(module instanceof WebAssembly.Module)) throw new Error("no WebAssembly.Module given");
  const imports = {};
  for (const { module: from, name, kind } of WebAssembly.Module.imports(module)) {
    if (kind !== "function") throw new Error(`cannot stub the ${kind} import ${from}.${name}`);
    imports[from] ??= {};
    imports[from][name] = () => {
      throw new Error(`${name} is not available in the verifier worker`);
    };
  }
  const instance = await WebAssembly.instantiate(module, imports);
  const { exports } = instance;
  if (typeof exports.grasp_sync_verify_run !== "function") {
    throw new Error("the module has no grasp_sync_verify_run export");
  }
  return exports;
}
