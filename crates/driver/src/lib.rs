//! The async loop that runs the sans-IO
//! [`SyncEngine`](grasp_sync_core::engine::SyncEngine) against real peers, written once
//! for both front ends.
//!
//! It is generic over what a front end supplies ([`Network`], [`Store`], [`Verifier`],
//! [`Clock`]), depends on `futures` only (no runtime), and never requires `Send`: the
//! loop is one future, polled by a tokio task natively and by the browser's event loop on
//! wasm. Every socket is read all the time; a slow store never stalls reading, because
//! the engine's flow control bounds what waits to be stored.

mod driver;
mod ports;
mod restore;

pub use driver::{Command, Control, Driver, DriverStats, Exit};
pub use ports::{
    Clock, Connection, Incoming, Network, Saved, SavedState, Store, StoreError, Verifier,
};
pub use restore::tracked_events;
