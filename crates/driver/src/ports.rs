//! What a front end supplies: a network (WebSockets and NIP-11), a store, a signature
//! verifier and a clock. Futures are `'static` and need not be `Send`.

use std::time::Duration;

use futures::future::LocalBoxFuture;
use futures::stream::LocalBoxStream;
use futures::FutureExt as _;
use grasp_sync_core::accept::Removal;
use grasp_sync_core::engine::{Checkpoint, Time};
use grasp_sync_core::nip34::{kinds, REPO_TAGS};
use grasp_sync_core::seen::SeenEntry;
use grasp_sync_core::{RelayUrl, RepoRef, RootRef};
use nostr::prelude::{Event, EventId, Filter, SingleLetterTag, Timestamp};

/// Something that arrived on a WebSocket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A text frame.
    Text(String),
    /// The socket closed (by the peer, a protocol error, or a failed liveness check).
    /// Nothing follows.
    Closed(String),
}

/// An open WebSocket to a relay.
pub struct Connection {
    /// Everything received, in order; `Closed` (or the end of the stream) ends it.
    pub incoming: LocalBoxStream<'static, Incoming>,
    /// Queues a text frame for sending without waiting; `Err` if the socket is gone.
    pub send: Box<dyn FnMut(String) -> Result<(), String>>,
    /// Closes the socket (idempotent).
    pub close: Box<dyn FnMut()>,
}

/// WebSockets and NIP-11 documents.
pub trait Network {
    /// Opens a WebSocket to `url`. The implementation applies its own connect timeout
    /// and address policy, and reports refusals as `Err` with a reason.
    fn connect(&self, url: &RelayUrl) -> LocalBoxFuture<'static, Result<Connection, String>>;

    /// Fetches the relay's NIP-11 document (`None` when it has none or the fetch failed).
    fn fetch_info(&self, url: &RelayUrl) -> LocalBoxFuture<'static, Option<String>>;
}

/// Sync state: what a store restores at start-up, and what one state write saves.
#[derive(Debug, Clone, Default)]
pub struct SavedState {
    /// Sync checkpoints.
    pub checkpoints: Vec<Checkpoint>,
    /// Ids seen and not stored, not yet expired.
    pub remembered: Vec<SeenEntry>,
}

impl SavedState {
    /// Whether there is nothing in it.
    pub fn is_empty(&self) -> bool {
        self.checkpoints.is_empty() && self.remembered.is_empty()
    }
}

/// What one [`Store::save`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Saved {
    /// The events the call removed: each was held (before the call, or put by it), a
    /// removal named its id, and its author is the removal's author. They join the
    /// engine's seen-not-stored set.
    pub removed: Vec<Event>,
    /// The ids of events handed in that the store already held (nothing was written for
    /// them): what is new is the rest, less `removed`.
    pub existed: Vec<EventId>,
}

/// Why a [`Store`] call failed, by what a user can do about it. The message is the
/// backend's own; [`StoreError::remedy`] says what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The store refused to hold more: a browser's storage quota, a full LMDB map.
    QuotaExceeded(String),
    /// A schema upgrade waits on another connection at an older version (another tab).
    UpgradeBlocked(String),
    /// The store is closed, or failed in a way that may pass.
    Unavailable(String),
    /// Anything else (a record that does not decode, a backend failure).
    Other(String),
}

impl StoreError {
    /// The backend's message.
    pub fn message(&self) -> &str {
        match self {
            Self::QuotaExceeded(m)
            | Self::UpgradeBlocked(m)
            | Self::Unavailable(m)
            | Self::Other(m) => m,
        }
    }

    /// What a user can do about it.
    pub fn remedy(&self) -> &'static str {
        match self {
            Self::QuotaExceeded(_) => {
                "free space, or let the store grow: persistent storage in a browser, a larger map (--map-size-mib) natively"
            }
            Self::UpgradeBlocked(_) => "close the other tabs using this database, then reload",
            Self::Unavailable(_) => "retry; reopen the store if it persists",
            Self::Other(_) => "report it with this message",
        }
    }
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self {
            Self::QuotaExceeded(_) => "store full",
            Self::UpgradeBlocked(_) => "store upgrade blocked",
            Self::Unavailable(_) => "store unavailable",
            Self::Other(_) => "store error",
        };
        write!(f, "{what}: {} ({})", self.message(), self.remedy())
    }
}

impl std::error::Error for StoreError {}

impl From<String> for StoreError {
    fn from(message: String) -> Self {
        Self::Other(message)
    }
}

impl From<StoreError> for String {
    fn from(e: StoreError) -> Self {
        e.to_string()
    }
}

/// The local event store, plus the sync state that lives beside it: the one store
/// contract every backend (LMDB, IndexedDB, in memory) implements and the conformance
/// suite of `grasp-sync-store` checks.
///
/// A store decides nothing about events: the core's acceptance is authoritative on
/// replacement and deletion, and a save only puts what it is handed and deletes what it
/// is told to. Calls may overlap; an implementation serialises writes itself. A write
/// completes only once it is durable (checkpoints are saved after the events they
/// cover). Events past their NIP-40 expiration are never returned.
pub trait Store {
    /// Stored events matching `filter` (all of them: `limit` is not applied by callers).
    fn query(&self, filter: Filter) -> LocalBoxFuture<'static, Result<Vec<Event>, StoreError>>;

    /// (created_at, id) of every stored event matching `filter`: a negentropy local set.
    fn items(
        &self,
        filter: Filter,
    ) -> LocalBoxFuture<'static, Result<Vec<(Timestamp, EventId)>, StoreError>>;

    /// The stored root events (pull requests, issues, patches starting a series: see
    /// `nip34::is_root`) that name one of `coords` in an `a`, `A` or `q` tag; it may
    /// return other events of those kinds as well. By default, three tag queries; a
    /// store that indexes its roots answers without reading every patch.
    fn root_events(
        &self,
        coords: Vec<RepoRef>,
    ) -> LocalBoxFuture<'static, Result<Vec<Event>, StoreError>> {
        let values: Vec<String> = coords.iter().map(ToString::to_string).collect();
        let queries: Vec<_> = REPO_TAGS
            .into_iter()
            .filter_map(|name| name.parse::<SingleLetterTag>().ok())
            .map(|tag| {
                self.query(
                    Filter::new()
                        .kinds([kinds::PATCH, kinds::PULL_REQUEST, kinds::ISSUE])
                        .custom_tags(tag, values.iter().cloned()),
                )
            })
            .collect();
        async move {
            let mut events = Vec::new();
            for query in queries {
                events.extend(query.await?);
            }
            Ok(events)
        }
        .boxed_local()
    }

    /// What [`root_events`](Self::root_events) answers, as the index keeps the roots
    /// ([`RootRef`]: id, author, repositories). By default read from those events; a
    /// store that keeps its roots apart answers without reading an event.
    fn root_refs(
        &self,
        coords: Vec<RepoRef>,
    ) -> LocalBoxFuture<'static, Result<Vec<RootRef>, StoreError>> {
        let events = self.root_events(coords);
        async move { Ok(events.await?.iter().filter_map(RootRef::of).collect()) }.boxed_local()
    }

    /// Puts every event of `events` (one already held stays as it is and is listed in
    /// [`Saved::existed`]), then deletes every held event a removal names whose author is
    /// the removal's author (an id put by this call too ends removed), and saves `state`
    /// as [`save_state`](Self::save_state) does — all in one atomic write (the
    /// checkpoints cover these events: they land with them or not at all); says what it
    /// removed. No replacement, no NIP-09, no policy: the caller hands in only what to
    /// keep and names every version it replaces.
    fn save(
        &self,
        events: Vec<Event>,
        remove: Vec<Removal>,
        state: SavedState,
    ) -> LocalBoxFuture<'static, Result<Saved, StoreError>>;

    /// Saves sync state in one durable write: the checkpoints in order (each replacing
    /// the one of the same relay and scope) and the remembered ids (ids seen and not
    /// stored, kept until each entry expires; an id already remembered is replaced).
    fn save_state(&self, state: SavedState) -> LocalBoxFuture<'static, Result<(), StoreError>>;

    /// Checkpoints and remembered ids saved earlier.
    fn load_state(&self) -> LocalBoxFuture<'static, Result<SavedState, StoreError>>;
}

/// Checks event ids and signatures, possibly in parallel.
pub trait Verifier {
    /// One flag per event, in order: whether its id and signature hold.
    fn verify(&self, events: Vec<Event>) -> LocalBoxFuture<'static, Vec<bool>>;
}

/// Wall-clock time and sleeping.
pub trait Clock {
    /// Now, as milliseconds since the UNIX epoch.
    fn now(&self) -> Time;

    /// Completes after `duration`.
    fn sleep(&self, duration: Duration) -> LocalBoxFuture<'static, ()>;

    /// Called after every input the loop handles: a future to await before the next when
    /// the loop has held the thread long enough (a browser's main thread must not be
    /// held over 50 ms). By default, never.
    fn pace(&self) -> Option<LocalBoxFuture<'static, ()>> {
        None
    }
}
