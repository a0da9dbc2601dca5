//! grasp-sync for the browser: a wasm module that keeps an IndexedDB cache of NIP-34
//! events in sync with the relays each repository lists, with the same core and driver
//! as the daemon. This crate supplies the browser's ports — WebSocket and `fetch`
//! ([`net`]), IndexedDB ([`idb`]), a verifier ([`verify`]), `Date.now`/`setTimeout`
//! ([`clock`]) — and the JavaScript API ([`api`]).

pub mod api;
pub mod clock;
pub mod error;
pub mod idb;
pub mod net;
mod outbox;
mod publish;
mod session;
mod status;
mod tabs;
#[cfg(target_arch = "wasm32")]
mod time;
pub mod verify;

pub use grasp_sync_core as core;
use wasm_bindgen::prelude::*;

/// The module's version.
#[wasm_bindgen]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}
