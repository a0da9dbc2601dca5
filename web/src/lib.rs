//! grasp-sync for the browser: a wasm module that keeps an IndexedDB cache of NIP-34
//! events in sync with the relays each repository lists, using the same core as the
//! daemon. The WebSocket transport, IndexedDB store and JavaScript API land with the web
//! issue; today this crate proves the core builds and links for `wasm32-unknown-unknown`.

pub use grasp_sync_core as core;
