#!/usr/bin/env bash
# Builds the browser module as an npm package and packs it: `wasm-pack build --target
# web` into web/pkg (by default with the size-first `wasm-release` Cargo profile), the
# .wasm shrunk with `wasm-opt -Oz` (one-caller inlining capped) from npm's binaryen (installed into web/npm by this
# script when missing; never Debian's binaryen, whose wasm-opt breaks modules),
# web/npm/prepare.mjs (package.json: name, version, exports, types, files, sideEffects;
# the worker script is checked to be there), `npm pack` into target/web-pack/. Prints
# the .wasm's sizes on stderr and the tarball's path as its last line. Needs wasm-pack
# and wasm-bindgen-cli on PATH (scripts/test-web.sh installs them), node and npm, and
# clang for secp256k1's C code.
#
#   scripts/pack-web.sh                            # wasm-release profile + wasm-opt -Oz
#   GRASP_WEB_PROFILE=release scripts/pack-web.sh  # Cargo's release profile (+ -Oz)
#   GRASP_WEB_PROFILE=dev scripts/pack-web.sh      # debug build, no wasm-opt
#   GRASP_WEB_WASM_OPT=0 scripts/pack-web.sh       # skip wasm-opt
#   WASM_TARGET_DIR=/path scripts/pack-web.sh      # the wasm build's own target directory
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
export CC_wasm32_unknown_unknown="${CC_wasm32_unknown_unknown:-clang}"

profile="${GRASP_WEB_PROFILE:-wasm-release}"
case "$profile" in
  dev | release | profiling) profile_flag=("--$profile") ;;
  *) profile_flag=(--profile "$profile") ;;
esac
wasm_opt="${GRASP_WEB_WASM_OPT:-1}"
[ "$profile" = dev ] && wasm_opt=0
# The wasm build may keep a target directory of its own (WASM_TARGET_DIR), apart from
# the native one.
if [ -n "${WASM_TARGET_DIR:-}" ]; then
  export CARGO_TARGET_DIR="$WASM_TARGET_DIR"
fi
wasm-pack --log-level warn build web --target web "${profile_flag[@]}" --mode no-install --out-dir pkg >&2

wasm=web/pkg/grasp_sync_web_bg.wasm
sizes() { echo "$(stat -c %s "$wasm") bytes, $(gzip -9c "$wasm" | wc -c) gzipped"; }
echo "pack-web: $wasm ($profile): $(sizes)" >&2
if [ "$wasm_opt" != 0 ]; then
  opt=web/npm/node_modules/.bin/wasm-opt
  if [ ! -x "$opt" ]; then
    (cd web/npm && npm ci --no-audit --no-fund --loglevel=error) >&2
  fi
  # -Oz also drops the name section; features are read from the module's own
  # target_features section. Inlining a function into its only caller shrinks the raw
  # module but grows the gzipped one (what a browser downloads): capped at 20 bytes,
  # -Oz gives 432 KB gzipped instead of 482 KB (no cap) or 444 KB (no wasm-opt).
  "$opt" -Oz --one-caller-inline-max-function-size=20 "$wasm" -o "$wasm.opt"
  mv "$wasm.opt" "$wasm"
  echo "pack-web: after wasm-opt -Oz: $(sizes)" >&2
fi

node web/npm/prepare.mjs web/pkg >&2
mkdir -p target/web-pack
rm -f target/web-pack/grasp-sync-web-*.tgz
tarball=$(cd web/pkg && npm pack --silent --pack-destination ../../target/web-pack)
echo "$PWD/target/web-pack/$tarball"
