//! The one store contract of grasp-sync, shared by every backend (LMDB natively,
//! IndexedDB in the browser, memory in tests).
//!
//! The port itself is the driver's [`Store`](grasp_sync_driver::Store): a save puts
//! what it is handed and deletes what it is told to (the core's acceptance is
//! authoritative on replacement and deletion), queries answer NIP-01 filters newest
//! first, items list (created_at, id) for negentropy, and the sync state lives beside
//! the events. What does not depend on a database lives here, so each backend is a thin
//! mapping onto its own:
//!
//! - [`records`]: checkpoint and remembered-id records, their keys and encodings;
//! - [`notes`]: event notes (roots, NIP-40 expiration, repository references);
//! - [`plan`]: which postings answer a filter, and newest-first `limit`;
//! - [`keys`]: postings as ordered byte keys, for sorted key spaces;
//! - [`memory`]: an in-memory backend;
//! - `conformance` (feature `conformance`): the suite every backend runs.
//!
//! No I/O and no runtime: it builds for `wasm32-unknown-unknown`.

pub mod keys;
pub mod memory;
pub mod notes;
pub mod plan;
pub mod records;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use memory::{MemoryStore, MemoryStores};
pub use notes::Notes;
pub use plan::{newest, newest_first, Access, Plan, Posting};
