//! What the driver and the engine tell each other: [`Input`]s fed to
//! [`SyncEngine::handle_input`](super::SyncEngine::handle_input), [`Output`]s drained
//! from [`SyncEngine::poll_output`](super::SyncEngine::poll_output), and the checkpoints
//! both carry.

use nostr::prelude::{Event, EventId, Filter, Timestamp};

use super::{Phase, PublishId, PublishOutcome};
use crate::accept::Removal;
use crate::items::{Item, Layer, RelayId};
use crate::relay_url::RelayUrl;
use crate::seen::SeenEntry;

/// Identifies a request to the store for local items.
pub type RequestId = u64;

/// Identifies a batch of events handed out for verification or storage.
pub type BatchId = u64;

/// A sync checkpoint: what at `relay` was fully synced up to `at`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Checkpoint {
    /// The relay.
    pub relay: RelayUrl,
    /// What was synced.
    pub scope: Scope,
    /// Everything before this was received and stored.
    pub at: Timestamp,
}

/// What a checkpoint covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// One item in one filter layer.
    Item {
        /// The filter layer.
        layer: Layer,
        /// The coordinate or root.
        item: Item,
    },
    /// Discovery: every announcement at a bootstrap relay.
    Discovery,
}

/// What the driver tells the engine.
#[derive(Debug, Clone)]
pub enum Input {
    /// The WebSocket to `relay` is open.
    Connected {
        /// The relay (the handle its [`Output::Connect`] named).
        relay: RelayId,
    },
    /// The WebSocket to `relay` closed or could not open.
    Disconnected {
        /// The relay.
        relay: RelayId,
        /// Why, for logs.
        reason: String,
    },
    /// A text frame from `relay`.
    Frame {
        /// The relay.
        relay: RelayId,
        /// The frame.
        text: String,
    },
    /// The relay's NIP-11 document (answers [`Output::FetchInfo`]), or `None` if it has
    /// none.
    InfoFetched {
        /// The relay.
        relay: RelayId,
        /// The document's text.
        document: Option<String>,
    },
    /// The store's items matching a [`Output::LoadLocalItems`] filter.
    LocalItemsLoaded {
        /// The request answered.
        request: RequestId,
        /// (created_at, id) of every stored event matching the filter.
        items: Vec<(Timestamp, EventId)>,
    },
    /// Results of an [`Output::Verify`]: whether each event's id and signature hold.
    Verified {
        /// The batch.
        batch: BatchId,
        /// One flag per event, in order.
        valid: Vec<bool>,
    },
    /// The store committed (or failed to commit) an [`Output::Store`] batch.
    Stored {
        /// The batch.
        batch: BatchId,
        /// The events the store removed (they join the seen-not-stored set), or `Err`
        /// with a message if nothing of the batch was committed.
        result: Result<Vec<Event>, String>,
    },
    /// Events stored by someone else (a client of our relay) or loaded at start-up:
    /// they feed the index at once (discovery is immediate).
    LocalEvents {
        /// The events.
        events: Vec<Event>,
    },
    /// Root events held in the store, loaded at start-up as the store keeps them apart
    /// (see [`RootRef`](crate::RootRef)): as [`Input::LocalEvents`] with their events.
    LocalRoots {
        /// The roots.
        roots: Vec<crate::RootRef>,
    },
    /// Checkpoints restored from the store at start-up.
    Checkpoints {
        /// The checkpoints.
        checkpoints: Vec<Checkpoint>,
    },
    /// Seen-not-stored entries restored from the store at start-up (see
    /// [`Output::Remember`]).
    Remembered {
        /// The entries.
        entries: Vec<SeenEntry>,
    },
    /// Ids of events the store holds, loaded at start-up: those a restart's catch-up
    /// windows may bring again (see [`SyncEngine::restart_window_start`]). A copy that
    /// comes again is neither verified nor written again.
    ///
    /// [`SyncEngine::restart_window_start`]: super::SyncEngine::restart_window_start
    HeldIds {
        /// The ids.
        ids: Vec<EventId>,
    },
    /// An event a client of our relay published, its id and signature already verified
    /// by the caller: it goes through acceptance (with the configured announcement
    /// policy) and, when accepted, to the store and the index; answered with
    /// [`Output::Published`].
    Publish {
        /// Names the answer.
        token: PublishId,
        /// The event.
        event: Event,
        /// Bytes of its JSON, for the size limit.
        json_bytes: usize,
    },
}

/// What the engine asks the driver to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Open a WebSocket to the relay; answer with [`Input::Connected`] or
    /// [`Input::Disconnected`], and name it by `relay` in every input about it.
    Connect {
        /// The relay's handle.
        relay: RelayId,
        /// Its address.
        url: RelayUrl,
    },
    /// Fetch the relay's NIP-11 document and answer with [`Input::InfoFetched`].
    FetchInfo {
        /// The relay's handle.
        relay: RelayId,
        /// Its address.
        url: RelayUrl,
    },
    /// Send a text frame.
    Send {
        /// The relay.
        relay: RelayId,
        /// The frame.
        text: String,
    },
    /// Close the WebSocket.
    Close {
        /// The relay.
        relay: RelayId,
    },
    /// Answer with [`Input::LocalItemsLoaded`]: (created_at, id) of stored events matching.
    LoadLocalItems {
        /// The request.
        request: RequestId,
        /// The filter.
        filter: Filter,
    },
    /// Verify ids and signatures; answer with [`Input::Verified`].
    Verify {
        /// The batch.
        batch: BatchId,
        /// The events.
        events: Vec<Event>,
    },
    /// Store these events, remove those and persist these checkpoints, in one atomic
    /// write; answer with [`Input::Stored`].
    Store {
        /// The batch.
        batch: BatchId,
        /// Events to store.
        events: Vec<Event>,
        /// Events to remove (if the store holds them and the author matches).
        remove: Vec<Removal>,
        /// Checkpoints that hold once this batch and those handed out before it are
        /// stored (the jobs whose last events they hold): written with it, or not at
        /// all if it fails. Batches are written in the order they are handed out, and
        /// when one fails, those handed out before its answer fail unwritten. Ids seen
        /// and not stored ([`Output::Remember`]) emitted before it should land no later.
        checkpoints: Vec<Checkpoint>,
    },
    /// Persist this checkpoint (one whose events are already stored).
    Checkpoint(Checkpoint),
    /// Persist these ids seen and not stored (rejected, superseded, deleted) until they
    /// expire; restore them with [`Input::Remembered`], so a restarted reconciliation
    /// does not ask for them again.
    Remember(Vec<SeenEntry>),
    /// A relay changed phase.
    Status {
        /// The relay.
        relay: RelayId,
        /// Its new phase.
        phase: Phase,
        /// Why it failed, when it enters Backoff or Dead: the transport's reason for the
        /// disconnection, or a connect timeout.
        error: Option<String>,
    },
    /// What became of an [`Input::Publish`].
    Published {
        /// The token it came with.
        token: PublishId,
        /// Stored, rejected, or the store failed.
        outcome: PublishOutcome,
    },
}
