//! Deterministic simulation for grasp-sync (dev-only): a signed NIP-34 corpus
//! generator, simulated relays with the quirks of real ones, and a simulated world that
//! drives the sans-IO engine on a simulated clock with injected faults.

pub mod corpus;
pub mod index;
pub mod relay;
pub mod rng;
pub mod world;

pub use corpus::{Corpus, CorpusSpec};
pub use index::EventIndex;
pub use relay::{ReqStats, SimRelay, SimRelayConfig};
pub use rng::Rng;
pub use world::{Downloads, Durable, Faults, Via, World};
