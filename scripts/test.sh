#!/usr/bin/env bash
# The test command: installs what the checks need on a fresh Debian machine, then runs
# formatting, lints, every test (the browser module's tests build core, driver and web
# for wasm32), and the end-to-end browser checks.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

step "toolchain"
if command -v rustup >/dev/null 2>&1; then
  for component in rustfmt clippy; do
    rustup component list --installed | grep -q "^$component" || rustup component add "$component"
  done
  rustup target list --installed | grep -qx wasm32-unknown-unknown ||
    rustup target add wasm32-unknown-unknown
fi
# secp256k1's C code is compiled for wasm32 by clang.
if ! command -v clang >/dev/null 2>&1; then
  as_root apt-get update -qq
  as_root apt-get install -y -qq clang >/dev/null
fi
export CC_wasm32_unknown_unknown="${CC_wasm32_unknown_unknown:-clang}"
# Every build here starts cold on CI: incremental state would only cost disk and time.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
cargo --version

step "real relays for the integration tests"
./scripts/install-test-peers.sh
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
test_log=$(mktemp)
trap 'rm -f "$test_log"' EXIT
cargo test --workspace --locked --exclude grasp-sync-testkit 2>&1 | tee "$test_log"

# Always the full seed count: a GRASP_SIM_SEED / GRASP_SIM_SEEDS left over in the
# environment (from `just replay` / `just sim`) must not shrink the check to one seed.
step "deterministic simulation (release build; 1000 seeds)"
env -u GRASP_SIM_SEED GRASP_SIM_SEEDS=1000 \
  cargo test --locked --release -p grasp-sync-testkit -- --nocapture 2>&1 | tee -a "$test_log"

step "browser module: wasm-pack tests in headless Chromium against real relays"
./scripts/test-web.sh 2>&1 | tee -a "$test_log"

step "browser end to end: the page's model, the npm package, the Vite example, the page in headless Chromium"
./scripts/test-e2e.sh 2>&1 | tee -a "$test_log"

step "all checks passed"
# One closing line with the totals over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$test_log"
