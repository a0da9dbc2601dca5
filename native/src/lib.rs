//! The native front end of grasp-sync: WebSocket transport, NIP-11 over HTTP, parallel
//! signature verification and an LMDB store, driven by the shared driver; the relay
//! daemon (`serve`) and the one-shot commands (`sync`, `status`).

pub mod api_token;
pub mod cli;
pub mod clock;
pub mod daemon;
pub mod net;
pub mod serve;
pub mod status;
pub mod store;
pub mod sync;
pub mod verify;
