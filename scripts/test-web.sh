#!/usr/bin/env bash
# The browser module's tests (web/): installs what they need when missing, starts real
# relays on loopback (web-fixture: grasp-sync serve, nostr-rs-relay, scripted relays),
# runs them in headless Chromium with wasm-pack, and stops the relays on exit.
# Called by scripts/test.sh; extra arguments go to wasm-pack test (e.g. `-- --test sync`).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

step "web: toolchain (installed only when missing)"
rustup target list --installed | grep -qx wasm32-unknown-unknown ||
  rustup target add wasm32-unknown-unknown
missing=()
command -v clang >/dev/null 2>&1 || missing+=(clang)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
if [ ${#missing[@]} -gt 0 ]; then
  as_root apt-get update -qq
  as_root apt-get install -y -qq "${missing[@]}" >/dev/null
fi
export CC_wasm32_unknown_unknown="${CC_wasm32_unknown_unknown:-clang}"
# The CLI must be exactly the wasm-bindgen version in Cargo.lock (not --locked: see
# shared/WEB-TOOLCHAIN.md).
bindgen_version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$bindgen_version" ]; then
  cargo install wasm-bindgen-cli --version "$bindgen_version"
fi
command -v wasm-pack >/dev/null 2>&1 || cargo install wasm-pack --locked
./scripts/install-test-peers.sh

step "web: relays on loopback"
# Built as scripts/test.sh's `cargo test` builds them (same packages, so the same
# features): a narrower `cargo build -p` resolves other features and compiles a second
# copy of the dependency tree. After the test step this is a no-op.
cargo test --locked --workspace --exclude grasp-sync-testkit --no-run
target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
fixture_json=$(mktemp --suffix=.json)
rm -f "$fixture_json"
# The fixture serves until its standard input closes: this script holds it open.
coproc FIXTURE { "$target_dir/debug/web-fixture" "$fixture_json"; }
fixture_pid=$FIXTURE_PID
stop_relays() {
  exec {FIXTURE[1]}>&- 2>/dev/null || true
  wait "$fixture_pid" 2>/dev/null || true
  rm -f "$fixture_json"
}
trap stop_relays EXIT
for _ in $(seq 1 600); do
  [ -s "$fixture_json" ] && break
  kill -0 "$fixture_pid" 2>/dev/null || { echo "web-fixture exited early" >&2; exit 1; }
  sleep 0.2
done
[ -s "$fixture_json" ] || { echo "web-fixture did not start within 120 s" >&2; exit 1; }

step "web: wasm-pack test --headless --chrome"
cd web
GRASP_WEB_FIXTURE="$fixture_json" \
WASM_BINDGEN_TEST_TIMEOUT="${WASM_BINDGEN_TEST_TIMEOUT:-240}" \
  wasm-pack test --headless --chrome --mode no-install "$@"
