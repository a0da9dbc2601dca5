#!/usr/bin/env bash
# Builds the browser module as an npm package and packs it: `wasm-pack build --target
# web` into web/pkg, web/npm/prepare.mjs (package.json: name, version, exports, types,
# files, sideEffects), `npm pack` into target/web-pack/. Prints the tarball's path as
# its last line. Needs wasm-pack and wasm-bindgen-cli on PATH (scripts/test-web.sh
# installs them) and clang for secp256k1's C code.
#
#   scripts/pack-web.sh            # release build
#   GRASP_WEB_PROFILE=dev scripts/pack-web.sh
#   WASM_TARGET_DIR=/path scripts/pack-web.sh   # the wasm build's own target directory
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
export CC_wasm32_unknown_unknown="${CC_wasm32_unknown_unknown:-clang}"

profile="--${GRASP_WEB_PROFILE:-release}"
# The wasm build may keep a target directory of its own (WASM_TARGET_DIR), apart from
# the native one.
if [ -n "${WASM_TARGET_DIR:-}" ]; then
  export CARGO_TARGET_DIR="$WASM_TARGET_DIR"
fi
# A wasm-opt from npm's binaryen, when installed next to the packaging script, is put
# first on PATH (never Debian's, which breaks modules).
if [ -x web/npm/node_modules/.bin/wasm-opt ]; then
  export PATH="$PWD/web/npm/node_modules/.bin:$PATH"
fi
wasm-pack --log-level warn build web --target web "$profile" --mode no-install --out-dir pkg >&2
node web/npm/prepare.mjs web/pkg >&2
mkdir -p target/web-pack
rm -f target/web-pack/grasp-sync-web-*.tgz
tarball=$(cd web/pkg && npm pack --silent --pack-destination ../../target/web-pack)
echo "$PWD/target/web-pack/$tarball"
