#!/usr/bin/env bash
# Installs the real relays the integration tests (`tests/`, package grasp-sync-tests)
# run against, when they are missing. Idempotent: does nothing when they are on PATH.
#
# - nostr-rs-relay: a relay without NIP-77 (it answers NEG-OPEN with a NOTICE), built
#   from crates.io with `cargo install`; it needs `protoc` (Debian: protobuf-compiler).
#   The harness finds it through $NOSTR_RS_RELAY, else PATH.
#
# rust-nostr's LocalRelay (NIP-77) needs no install: it is a dependency of the tests.
set -euo pipefail

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# cargo install puts binaries here; make them visible to the check below.
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

if [ -n "${NOSTR_RS_RELAY:-}" ] && [ -x "$NOSTR_RS_RELAY" ]; then
  echo "nostr-rs-relay: $NOSTR_RS_RELAY (from NOSTR_RS_RELAY)"
elif command -v nostr-rs-relay >/dev/null 2>&1; then
  echo "nostr-rs-relay: $(command -v nostr-rs-relay)"
else
  if ! command -v protoc >/dev/null 2>&1; then
    echo "installing protobuf-compiler (protoc, needed to build nostr-rs-relay)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-compiler >/dev/null
  fi
  # Not --locked: the crate's own lock file pins `time` 0.3.25, which no longer builds
  # with current Rust.
  echo "installing nostr-rs-relay with cargo install (takes several minutes)"
  cargo install nostr-rs-relay
  echo "nostr-rs-relay: $(command -v nostr-rs-relay)"
fi
