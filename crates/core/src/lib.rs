//! grasp-sync core: the sans-IO part of a sync engine for git-over-nostr (NIP-34).
//!
//! No sockets, no clock, no async runtime: everything here is plain data and functions,
//! so it builds for `wasm32-unknown-unknown` as well as natively. This crate decides
//! *what* to sync from *which* relay:
//!
//! - [`nip34`]: kinds, repository references, roots and the tags that point at them;
//! - [`relay_url`] and [`address`]: one relay URL normalisation and the private-address rule;
//! - [`index`]: the repo index and its incrementally maintained relay [`targets`];
//! - [`actions`]: `compute_actions` = targets − pending − confirmed;
//! - [`filters`] and [`limits`]: the L1/L2/L3 filters packed under a relay's limits;
//! - [`accept`] and [`seen`]: what a received event does to the store, and the ids seen
//!   but not stored.

pub mod accept;
pub mod actions;
pub mod address;
pub mod engine;
pub mod filters;
pub mod index;
pub mod items;
pub mod limits;
pub mod matching;
pub mod neg;
pub mod nip34;
pub mod relay_url;
pub mod seen;
pub mod targets;
pub mod wire;

pub use actions::{compute_actions, compute_all_actions, Actions, RelayActions, WorkState};
pub use index::{IndexConfig, IndexUpdate, RepoIndex};
pub use items::{Item, ItemId, Layer, RelayId, WorkKey};
pub use limits::RelayLimits;
pub use nip34::{RepoRef, RootRef};
pub use relay_url::{RelayUrl, RelayUrlPolicy};
pub use targets::{ChangeKind, TargetChange, Targets};
