// Makes the output of `wasm-pack build --target web` npm-ready: writes its package.json
// from package.template.json (name, exports, types, sideEffects) with the crate's
// version, and lists in `files` everything the module loads at run time — the JS glue,
// the .wasm, the .d.ts files and any worker script or wasm-bindgen snippet, all of which
// the glue resolves with `new URL(…, import.meta.url)`.
//
//   node web/npm/prepare.mjs [pkg dir, default web/pkg]
//
// Fails (exit 1) when a file the package points at is missing.

import { readFileSync, readdirSync, statSync, writeFileSync, existsSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const pkgDir = process.argv[2] ?? join(here, "..", "pkg");
const template = JSON.parse(readFileSync(join(here, "package.template.json"), "utf8"));
const built = JSON.parse(readFileSync(join(pkgDir, "package.json"), "utf8"));

/** Every file under `dir`, relative to it, without wasm-pack's own leftovers. */
function walk(dir, base = dir) {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return walk(path, base);
    return [relative(base, path)];
  });
}

const skip = new Set(["package.json", ".gitignore"]);
const files = walk(pkgDir).filter((f) => !skip.has(f) && !f.endsWith(".tgz")).sort();

const pkg = {
  name: template.name,
  version: built.version,
  license: built.license ?? "MIT",
  ...template,
  ...(built.repository ? { repository: built.repository } : {}),
  // Top-level files by name; snippets (worker scripts among them) as a directory.
  files: [...new Set(files.map((f) => (f.startsWith("snippets/") ? "snippets/" : f)))],
};

// The verifying Web Worker: spawn.js starts worker.js beside it, both under snippets/.
const workers = files.filter((f) => /^snippets\/[^/]+\/src\/verify\/(spawn|worker)\.js$/.test(f));
if (workers.length !== 2) {
  console.error(`prepare: ${pkgDir} lacks the worker scripts (snippets/*/src/verify/{spawn,worker}.js)`);
  process.exit(1);
}

const wanted = [pkg.types, pkg.exports["."].default, pkg.exports["./grasp_sync_web_bg.wasm"]];
const missing = wanted.filter((f) => !existsSync(join(pkgDir, f)));
if (missing.length) {
  console.error(`prepare: ${pkgDir} lacks ${missing.join(", ")} (was it built with --target web?)`);
  process.exit(1);
}
writeFileSync(join(pkgDir, "package.json"), JSON.stringify(pkg, null, 2) + "\n");
console.log(`prepare: ${pkg.name}@${pkg.version}, ${pkg.files.length} entries: ${pkg.files.join(" ")}`);
