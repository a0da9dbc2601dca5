#!/usr/bin/env bash
# The browser end-to-end check: the demo page's model tests (node --test), the npm
# package built and packed (scripts/pack-web.sh), the Vite example built against the
# tarball, then web/e2e in headless Chromium (playwright-core driving /usr/bin/chromium)
# against real relays on loopback — `grasp-sync serve` and nostr-rs-relay, preloaded by
# tests/src/bin/web-e2e-fixture.rs — with the page and the packed module served on
# 127.0.0.1. Everything it starts is stopped on exit.
#
# Installs what is missing (Debian): node and npm, chromium, nostr-rs-relay
# (scripts/install-test-peers.sh), wasm-pack and the wasm-bindgen CLI of the version in
# Cargo.lock. npm packages come from the npm registry; no browser is downloaded.
#
#   scripts/test-e2e.sh
#   GRASP_E2E_SCREENSHOT=docs/screenshot.png scripts/test-e2e.sh   # refresh the README's
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

step() { printf '\n==> %s\n' "$*"; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
export CC_wasm32_unknown_unknown="${CC_wasm32_unknown_unknown:-clang}"
export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"

step "tools for the browser tests"
missing=()
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
[ -x "$CHROMIUM" ] || missing+=(chromium)
command -v clang >/dev/null 2>&1 || missing+=(clang)
if [ ${#missing[@]} -gt 0 ]; then
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown ||
  rustup target add wasm32-unknown-unknown
bindgen_version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/"/, "", $3); print $3; exit }' Cargo.lock)
if [ -n "$bindgen_version" ] &&
  ! wasm-bindgen --version 2>/dev/null | grep -qx "wasm-bindgen $bindgen_version"; then
  # Not --locked: its lock file pins a version missing from the index.
  cargo install wasm-bindgen-cli --version "$bindgen_version"
fi
command -v wasm-pack >/dev/null 2>&1 || cargo install wasm-pack --locked
./scripts/install-test-peers.sh
node --version

step "the page's model (node --test)"
node --test web/page/test/

step "the npm package (wasm-pack build --target web, prepare, npm pack)"
tarball=$(./scripts/pack-web.sh | tail -n 1)
wasm=web/pkg/grasp_sync_web_bg.wasm
echo "tarball: $tarball ($(stat -c %s "$tarball") bytes)"
echo "wasm: $(stat -c %s "$wasm") bytes, $(gzip -9c "$wasm" | wc -c) gzipped"

step "the Vite example, installed from the tarball"
(
  cd web/examples/vite
  npm ci --no-audit --no-fund --loglevel=error
  npm install --no-save --no-audit --no-fund --loglevel=error "$tarball"
  npm run build
)

step "the relays' fixture (grasp-sync serve, nostr-rs-relay)"
# Built as scripts/test.sh's `cargo test` builds them (same packages, so the same
# features): a narrower `cargo build -p` resolves other features and compiles a second
# copy of the dependency tree. After the test step this is a no-op.
cargo test --locked --workspace --exclude grasp-sync-testkit --no-run
target_dir=$(cargo metadata --format-version 1 --no-deps |
  node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).target_directory))')

step "end-to-end tests in headless Chromium"
(cd web/e2e && npm ci --no-audit --no-fund --loglevel=error)
export GRASP_E2E_FIXTURE="$target_dir/debug/web-e2e-fixture"
# The page loads the module as the tarball installed it, so the packed files are tested.
export GRASP_E2E_PKG="$root/web/examples/vite/node_modules/grasp-sync-web"
export GRASP_E2E_EXAMPLE="$root/web/examples/vite/dist"
# The daemon serves the same page and package too (`grasp-sync serve --web-dir`).
web_dir="$root/target/e2e-web-dir"
rm -rf "$web_dir" && mkdir -p "$web_dir"
ln -s "$root/web/page" "$web_dir/page"
ln -s "$GRASP_E2E_PKG" "$web_dir/pkg"
export GRASP_E2E_WEB_DIR="$web_dir"
if [ -n "${GRASP_E2E_SCREENSHOT:-}" ]; then
  GRASP_E2E_SCREENSHOT=$(realpath -m "$GRASP_E2E_SCREENSHOT")
  export GRASP_E2E_SCREENSHOT
fi

# The tests, the fixture and the relays it starts run in a process group of their own,
# ended on exit whatever happens.
set -m
node --test --test-concurrency=1 web/e2e/ &
tests=$!
set +m
trap 'kill -TERM -- "-$tests" 2>/dev/null || true' EXIT INT TERM
wait "$tests"
