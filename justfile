# Every workflow as a recipe. `just` is optional: each recipe is one plain command.

# Start the daemon on its embedded defaults.
run *ARGS:
    cargo run --release -p grasp-sync -- serve {{ARGS}}

# Install what is missing and run every check (what CI runs).
test:
    ./scripts/test.sh

# The deterministic simulation over N seeds (CI runs 1000).
sim seeds="1000":
    GRASP_SIM_SEEDS={{seeds}} cargo test --release -p grasp-sync-testkit -- --nocapture

# The simulation over 100 000 seeds (hours; not in CI).
soak:
    GRASP_SIM_SEEDS=100000 cargo test --release -p grasp-sync-testkit --test seeds -- --nocapture

# Replay one simulation seed, with its failure report.
replay seed:
    GRASP_SIM_SEED={{seed}} cargo test --release -p grasp-sync-testkit --test seeds -- --nocapture

# Benchmarks of the core (index update + compute_actions at 1k/10k/100k repos).
bench:
    cargo bench -p grasp-sync-core --bench index_update

# The engine's CPU per input (an EVENT frame, a Stored) at 10 / 100 / 1 000 relays.
bench-engine:
    cargo bench -p grasp-sync-core --bench engine_input

# Format the workspace.
fmt:
    cargo fmt --all

# Lints, warnings as errors.
lint:
    cargo clippy --workspace --all-targets -- -D warnings

# Build the shared crates for the browser.
wasm:
    CC_wasm32_unknown_unknown=clang cargo build --target wasm32-unknown-unknown -p grasp-sync-core -p grasp-sync-driver -p grasp-sync-web

# Fuzz one target (relay_frame, neg_initiator, neg_responder, engine_frames) for `secs`
# seconds with cargo-fuzz on nightly (`cargo install cargo-fuzz`). Seeds in fuzz/seeds,
# the growing corpus in fuzz/corpus, crashes in fuzz/artifacts (commit a fixed crash's
# input there: `cargo test -p grasp-sync-fuzz-checks` replays it with every seed).
# GRASP_FUZZ_SKIP_KNOWN=1 skips the checks for known unfixed findings (see each target).
fuzz target="relay_frame" secs="600":
    cd fuzz && mkdir -p corpus/{{target}} && cargo +nightly fuzz run {{target}} corpus/{{target}} seeds/{{target}} -- -max_total_time={{secs}} -dict=dicts/frames.dict

# The issue-4 benchmark: `grasp-sync sync` on loopback against a LocalRelay holding
# `events` NIP-34 events (cold sync, in-sync re-run, 1 % catch-up, verification floor,
# plain REQ download); prints a markdown table. A few minutes.
bench-sync events="100000":
    GRASP_BENCH_EVENTS={{events}} cargo bench -p grasp-sync-tests --bench sync_loopback

# Load recipe for the daemon: `clients` WebSocket clients (default 1 000; `just load 10000
# 30` for ten thousand) each holding a REQ open, a tenth of them publishing for `secs`
# seconds (default 60), and a burst of 10 000 events none of them matches, against one
# `grasp-sync serve`; latencies, errors, the daemon's CPU (per published event, per burst
# event beside a burst with no clients) and memory as a markdown table. The open-file
# limit is raised to the hard limit (each client is one descriptor in each process).
load clients="1000" secs="60":
    ulimit -n "$(ulimit -Hn)" && GRASP_LOAD_CLIENTS={{clients}} GRASP_LOAD_SECS={{secs}} cargo bench -p grasp-sync-tests --bench serve_load

# Sync benchmark against our own relay: `grasp-sync serve` holding `events` NIP-34
# events, synced by `grasp-sync sync`, by nostr-sdk's NIP-77 sync into nostr-lmdb and by
# a plain REQ download (cold, in sync, 1 % catch-up; verification floor); markdown tables.
bench-serve events="100000":
    GRASP_BENCH_EVENTS={{events}} cargo bench -p grasp-sync-tests --bench serve_sync

# The demo page at http://127.0.0.1:<port>/page/ (builds the module into web/pkg first).
# Add ?bootstrap=ws://…&private=1 to the address to use relays on this machine.
page port="8080":
    ./scripts/pack-web.sh >/dev/null && node web/e2e/serve.js {{port}} /page/=web/page /pkg/=web/pkg

# The browser end-to-end tests: the npm package, the Vite example, and the demo page in
# headless Chromium against grasp-sync serve and nostr-rs-relay on loopback.
test-e2e:
    ./scripts/test-e2e.sh

# Browser benchmark (a recipe, not a test): grasp-sync-web against a JavaScript peer
# (nostr-tools REQ into nostr-idb) in headless Chromium, 2 x `per_repo` events served
# on loopback by grasp-sync serve (`relays=both`: and nostr-rs-relay, each holding about
# 60 %); a markdown table.
bench-web per_repo="5000" relays="daemon":
    ./scripts/pack-web.sh >/dev/null
    cargo build --release -p grasp-sync-tests --bin web-e2e-fixture --bin grasp-sync-under-test
    cd web/e2e && npm ci --no-audit --no-fund --loglevel=error
    GRASP_BENCH_RELAYS={{relays}} GRASP_BENCH_EVENTS_PER_REPO={{per_repo}} GRASP_E2E_FIXTURE="${CARGO_TARGET_DIR:-target}/release/web-e2e-fixture" node web/e2e/bench.js
