# Every workflow as a recipe. `just` is optional: each recipe is one plain command.

# Start the daemon on its embedded defaults.
run *ARGS:
    cargo run --release -p grasp-sync -- serve {{ARGS}}

# Install what is missing and run every check (what CI runs).
test:
    ./scripts/test.sh

# Benchmarks of the core (index update + compute_actions at 1k/10k/100k repos).
bench:
    cargo bench -p grasp-sync-core --bench index_update

# Format the workspace.
fmt:
    cargo fmt --all

# Lints, warnings as errors.
lint:
    cargo clippy --workspace --all-targets -- -D warnings

# Build the shared crates for the browser.
wasm:
    CC_wasm32_unknown_unknown=clang cargo build --target wasm32-unknown-unknown -p grasp-sync-core -p grasp-sync-web
