// The one setting a wasm-bindgen package needs under Vite: keep it out of the
// dependency pre-bundling in `vite dev`, so `new URL("…_bg.wasm", import.meta.url)` in
// its glue still points into the package. `vite build` needs nothing: it emits the .wasm
// as an asset and bundles the module's signature-verifying worker (started with
// `new Worker(new URL("./worker.js", import.meta.url), { type: "module" })`) as a chunk.
import { defineConfig } from "vite";

export default defineConfig({
  optimizeDeps: { exclude: ["grasp-sync-web"] },
  // Relative asset paths: the build is served from any directory.
  base: "./",
  build: { target: "es2022" },
});
