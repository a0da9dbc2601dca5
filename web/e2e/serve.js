// A static file server on 127.0.0.1 for the page and the module: URL prefixes mapped to
// directories (e.g. /page/ → web/page, /pkg/ → the built package), with the MIME types
// the browser insists on (application/wasm for instantiateStreaming, text/javascript
// for modules). Usable from the tests (`serve(...)`) and from a shell:
//   node web/e2e/serve.js [port] /page/=web/page /pkg/=web/pkg

import { createServer } from "node:http";
import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import { extname, join, normalize, resolve, sep } from "node:path";

const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json",
  ".wasm": "application/wasm",
  ".png": "image/png",
  ".svg": "image/svg+xml",
  ".ts": "text/plain; charset=utf-8",
};

/** Resolves `urlPath` under the mounted directories; null when outside them. */
function locate(mounts, urlPath) {
  for (const [prefix, dir] of mounts) {
    if (!urlPath.startsWith(prefix)) continue;
    const root = resolve(dir);
    const file = resolve(join(root, normalize(decodeURIComponent(urlPath.slice(prefix.length)))));
    if (file !== root && !file.startsWith(root + sep)) return null;
    return file;
  }
  return null;
}

/**
 * Serves `mounts` ({ "/page/": dir, … }) on 127.0.0.1:`port` (0: any free port);
 * resolves to `{ url, close }` once listening.
 */
export function serve(mounts, port = 0) {
  const table = Object.entries(mounts).sort((a, b) => b[0].length - a[0].length);
  const server = createServer(async (req, res) => {
    const path = new URL(req.url, "http://127.0.0.1").pathname;
    let file = locate(table, path);
    try {
      if (file && (await stat(file)).isDirectory()) file = join(file, "index.html");
      if (!file || !(await stat(file)).isFile()) throw new Error("not found");
    } catch {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
      return;
    }
    res.writeHead(200, {
      "content-type": TYPES[extname(file)] ?? "application/octet-stream",
      "cache-control": "no-store",
    });
    createReadStream(file).pipe(res);
  });
  return new Promise((ok, fail) => {
    server.once("error", fail);
    server.listen(port, "127.0.0.1", () => {
      const { port: bound } = server.address();
      ok({ url: `http://127.0.0.1:${bound}`, close: () => new Promise((done) => server.close(done)) });
    });
  });
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const [portArg, ...pairs] = process.argv.slice(2);
  const mounts = Object.fromEntries(pairs.map((p) => p.split("=")));
  const { url } = await serve(mounts, Number(portArg ?? 0));
  console.log(`serving ${Object.keys(mounts).join(", ")} at ${url}`);
}
