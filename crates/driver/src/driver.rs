//! The loop: feeds the engine what the ports report and executes what the engine asks.
//!
//! Everything runs in one future. Sockets are streams merged into one [`SelectAll`];
//! connection attempts, NIP-11 fetches, store answers and verification batches are
//! futures in one [`FuturesUnordered`]; persisting checkpoints and remembered ids is a
//! single lane, so a later checkpoint never lands before an earlier one.

use std::collections::HashMap;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use futures::channel::oneshot;
use futures::future::{poll_fn, LocalBoxFuture};
use futures::stream::{self, FuturesUnordered, LocalBoxStream, SelectAll};
use futures::{FutureExt, Stream, StreamExt};
use grasp_sync_core::accept::Removal;
use grasp_sync_core::engine::{
    BatchId, Checkpoint, Input, Output, Phase, PublishId, PublishOutcome, RequestId, SyncEngine,
    Time,
};
use grasp_sync_core::filters::DiscoveryScope;
use grasp_sync_core::seen::SeenEntry;
use grasp_sync_core::{RelayId, RelayUrl};
use nostr::prelude::{Event, EventId, Timestamp};

use crate::ports::{Clock, Connection, Incoming, Network, SavedState, Store, Verifier};
use crate::restore::{held_ids, tracked_announcements, tracked_root_refs};

/// Most items taken from one source before the others get a turn.
const BURST: usize = 256;
/// Most checkpoints and remembered ids in one state write: a store may do a write's
/// puts in one task (a browser's main thread must not be held over 50 ms), and a
/// quick catch-up confirms every key of every relay at once.
const PERSIST_CHUNK: usize = 256;
/// How long a shutdown waits for in-flight writes.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What the driver's owner may tell a running loop.
#[derive(Debug)]
pub enum Command {
    /// Events stored by someone else: they feed the index at once, so a new
    /// announcement starts syncing its relays.
    LocalEvents(Vec<Event>),
    /// An event a client of our relay published, id and signature already verified: it
    /// goes through the engine's acceptance to the store; `reply` gets the outcome
    /// (dropped unanswered if the loop stops first).
    Publish {
        /// The event.
        event: Event,
        /// Bytes of its JSON.
        json_bytes: usize,
        /// Where the outcome goes.
        reply: oneshot::Sender<PublishOutcome>,
    },
    /// What the store holds that the engine must know (see [`tracked_events`](crate::tracked_events)) and
    /// the ids seen and not stored, after someone else wrote to the store (a one-shot
    /// sync run beside the loop): the ids first, then the events.
    Restore {
        /// Stored events to know.
        events: Vec<Event>,
        /// Ids seen and not stored.
        remembered: Vec<SeenEntry>,
    },
    /// Nothing: the loop takes a step, so the observer sees the engine (a periodic
    /// refresh of what it reports).
    Observe,
    /// Finish in-flight writes, close every connection and return.
    Stop,
}

/// Why [`Driver::run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The observer asked to stop.
    Observer,
    /// A [`Command::Stop`] arrived.
    Stopped,
    /// The command stream ended.
    CommandsClosed,
}

/// What the observer passed to [`Driver::run`] decides after each step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Keep going.
    Continue,
    /// Finish in-flight writes and return.
    Stop,
}

/// The driver's own counters (the engine counts per relay).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DriverStats {
    /// Connection attempts.
    pub connects: u64,
    /// Attempts that failed.
    pub connect_failures: u64,
    /// Frames that could not be queued because the socket was gone.
    pub send_failures: u64,
    /// Store operations that failed (saves, loads).
    pub store_failures: u64,
    /// Checkpoint or remembered-id writes that failed.
    pub persist_failures: u64,
    /// Events loaded from the store at start-up.
    pub loaded_events: u64,
}

/// A socket the loop owns: its generation tells its frames from a replaced one's.
struct Socket {
    generation: u64,
    connection: Option<Connection>,
}

/// A finished asynchronous operation.
enum Done {
    Connected(RelayId, u64, Result<Connection, String>),
    Info(RelayId, Option<String>),
    Items(RequestId, Result<Vec<(Timestamp, EventId)>, String>),
    /// One verifier call for several engine batches (id and length of each, in order).
    Verified(Vec<(BatchId, usize)>, Vec<bool>),
    /// One store write for several engine batches, and the remembered ids it carried
    /// (queued again if it failed).
    Stored(Vec<BatchId>, Result<Vec<Event>, String>, Vec<SeenEntry>),
    Persisted(Result<(), String>),
}

/// Something that happened while the loop waited.
enum Happened {
    Frame(RelayId, u64, Incoming),
    Done(Done),
    Command(Option<Command>),
    Timeout,
}

type Task = LocalBoxFuture<'static, Done>;
type Frames = LocalBoxStream<'static, (RelayId, u64, Incoming)>;

/// A store batch waiting for the next write.
struct ToSave {
    batch: BatchId,
    events: Vec<Event>,
    remove: Vec<Removal>,
    /// Checkpoints the batch carries (see [`Output::Store`]).
    checkpoints: Vec<Checkpoint>,
}

/// Runs a [`SyncEngine`] over a front end's ports.
pub struct Driver<N, S, V, C> {
    engine: SyncEngine,
    network: N,
    store: S,
    verifier: V,
    clock: C,
    sockets: HashMap<RelayId, Socket>,
    next_generation: u64,
    tasks: FuturesUnordered<Task>,
    frames: SelectAll<Frames>,
    /// Checkpoints and remembered ids waiting for the next state write.
    to_persist: SavedState,
    persisting: bool,
    /// Verify batches of the current step, sent as one call when the step ends.
    to_verify: Vec<(BatchId, Vec<Event>)>,
    /// Store batches waiting for the write in flight: they go together as the next one
    /// (group commit — a store pays per transaction, not per event).
    to_save: Vec<ToSave>,
    /// Whether a write is in flight.
    saving: bool,
    /// Inputs produced while executing outputs (a failed send closes its socket).
    deferred: Vec<Input>,
    /// Published events waiting for their outcome.
    publishing: HashMap<PublishId, oneshot::Sender<PublishOutcome>>,
    next_publish: PublishId,
    stats: DriverStats,
}

impl<N, S, V, C> Driver<N, S, V, C>
where
    N: Network,
    S: Store,
    V: Verifier,
    C: Clock,
{
    /// A driver for `engine`; nothing happens until [`start`](Self::start).
    pub fn new(engine: SyncEngine, network: N, store: S, verifier: V, clock: C) -> Self {
        Self {
            engine,
            network,
            store,
            verifier,
            clock,
            sockets: HashMap::new(),
            next_generation: 1,
            tasks: FuturesUnordered::new(),
            frames: SelectAll::new(),
            to_persist: SavedState::default(),
            persisting: false,
            to_verify: Vec::new(),
            to_save: Vec::new(),
            saving: false,
            deferred: Vec::new(),
            publishing: HashMap::new(),
            next_publish: 1,
            stats: DriverStats::default(),
        }
    }

    /// The engine, for status and progress.
    pub fn engine(&self) -> &SyncEngine {
        &self.engine
    }

    /// The driver's counters.
    pub fn stats(&self) -> &DriverStats {
        &self.stats
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Restores what the store knows: announcements in `scope` (and their maintainers'),
    /// the root events of the tracked repositories, stored deletions, then checkpoints
    /// and remembered ids, and with a restart catch-up window the ids it holds within
    /// reach of one — so a restart behaves like a quick reconnect, not a first sync.
    pub async fn start(&mut self, scope: &DiscoveryScope) -> Result<(), String> {
        let config = self.engine.index().config().clone();
        // The announcements first: the relays they list start connecting (and their
        // NIP-11 documents loading) while the roots and the sync state are read. A
        // connection is handed to the engine only once `run` polls it, after all of it.
        let (announcements, coords) = tracked_announcements(&self.store, scope, &config).await?;
        self.feed_local(announcements);
        self.execute_outputs();
        let held_since = self.engine.restart_window_start(self.clock.now());
        let (roots, state, held) = futures::join!(
            tracked_root_refs(&self.store, coords),
            self.store.load_state(),
            held_ids(&self.store, held_since)
        );
        let (roots, deletions) = roots?;
        if !roots.is_empty() {
            self.stats.loaded_events += roots.len() as u64;
            let now = self.clock.now();
            self.engine.handle_input(now, Input::LocalRoots { roots });
        }
        self.feed_local(deletions);
        let state = state?;
        let now = self.clock.now();
        match held {
            Ok(ids) if !ids.is_empty() => self.engine.handle_input(now, Input::HeldIds { ids }),
            Ok(_) => {}
            // Only a saving: what comes again is then verified and written again.
            Err(e) => tracing::warn!(error = %e, "the held ids could not be read"),
        }
        self.engine.handle_input(
            now,
            Input::Checkpoints {
                checkpoints: state.checkpoints,
            },
        );
        self.engine.handle_input(
            now,
            Input::Remembered {
                entries: state.remembered,
            },
        );
        Ok(())
    }

    fn feed_local(&mut self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        self.stats.loaded_events += events.len() as u64;
        let now = self.clock.now();
        self.engine.handle_input(now, Input::LocalEvents { events });
    }

    /// Runs until `observe` says stop, a [`Command::Stop`] arrives or `commands` ends;
    /// then finishes in-flight writes (for at most a few seconds) and closes every
    /// socket. `observe` sees the engine after every step.
    pub async fn run<Cmds>(
        &mut self,
        mut commands: Cmds,
        mut observe: impl FnMut(&SyncEngine, Time) -> Control,
    ) -> Exit
    where
        Cmds: Stream<Item = Command> + Unpin,
    {
        let mut timer: Option<(Time, LocalBoxFuture<'static, ()>)> = None;
        let mut just_timed_out = false;
        let exit = loop {
            self.execute_outputs();
            let now = self.clock.now();
            if observe(&self.engine, now) == Control::Stop {
                break Exit::Observer;
            }
            match self.engine.poll_timeout() {
                Some(at) if at <= now && !just_timed_out => {
                    self.engine.handle_timeout(now);
                    just_timed_out = true;
                    continue;
                }
                Some(at) => {
                    // A deadline that stays due right after handling it must not spin
                    // the loop: it waits a little.
                    let at = if just_timed_out {
                        at.max(now + Duration::from_millis(5))
                    } else {
                        at
                    };
                    if timer.as_ref().is_none_or(|(t, _)| *t != at) {
                        tracing::trace!(
                            wait_ms = at.since(now).as_millis() as u64,
                            "next deadline"
                        );
                        timer = Some((at, self.clock.sleep(at.since(now))));
                    }
                }
                None => timer = None,
            }
            just_timed_out = false;
            let happened = self.wait(&mut commands, &mut timer).await;
            let mut stop = None;
            for event in happened {
                match event {
                    Happened::Frame(relay, generation, incoming) => {
                        self.on_incoming(relay, generation, incoming)
                    }
                    Happened::Done(done) => self.on_done(done),
                    Happened::Command(Some(Command::LocalEvents(events))) => {
                        let now = self.clock.now();
                        self.engine.handle_input(now, Input::LocalEvents { events });
                    }
                    Happened::Command(Some(Command::Publish {
                        event,
                        json_bytes,
                        reply,
                    })) => {
                        let token = self.next_publish;
                        self.next_publish += 1;
                        self.publishing.insert(token, reply);
                        let now = self.clock.now();
                        self.engine.handle_input(
                            now,
                            Input::Publish {
                                token,
                                event,
                                json_bytes,
                            },
                        );
                    }
                    Happened::Command(Some(Command::Restore { events, remembered })) => {
                        let now = self.clock.now();
                        self.engine.handle_input(
                            now,
                            Input::Remembered {
                                entries: remembered,
                            },
                        );
                        self.engine.handle_input(now, Input::LocalEvents { events });
                    }
                    Happened::Command(Some(Command::Observe)) => {}
                    Happened::Command(Some(Command::Stop)) => stop = Some(Exit::Stopped),
                    Happened::Command(None) => stop = stop.or(Some(Exit::CommandsClosed)),
                    Happened::Timeout => {
                        timer = None;
                        let now = self.clock.now();
                        self.engine.handle_timeout(now);
                        just_timed_out = true;
                    }
                }
                // A burst is many inputs: the page gets its turn between them.
                if let Some(pause) = self.clock.pace() {
                    pause.await;
                }
            }
            if let Some(exit) = stop {
                break exit;
            }
            if let Some(pause) = self.clock.pace() {
                pause.await;
            }
        };
        self.shutdown().await;
        exit
    }

    /// Waits until something happens; takes whatever else is ready too (bounded per
    /// source, so a busy socket cannot starve the store or the timer).
    async fn wait<Cmds>(
        &mut self,
        commands: &mut Cmds,
        timer: &mut Option<(Time, LocalBoxFuture<'static, ()>)>,
    ) -> Vec<Happened>
    where
        Cmds: Stream<Item = Command> + Unpin,
    {
        let frames = &mut self.frames;
        let tasks = &mut self.tasks;
        let mut commands_done = false;
        poll_fn(|cx| {
            let mut out = Vec::new();
            for _ in 0..BURST {
                match Pin::new(&mut *tasks).poll_next(cx) {
                    Poll::Ready(Some(done)) => out.push(Happened::Done(done)),
                    _ => break,
                }
            }
            for _ in 0..BURST {
                match Pin::new(&mut *frames).poll_next(cx) {
                    Poll::Ready(Some((relay, generation, incoming))) => {
                        out.push(Happened::Frame(relay, generation, incoming));
                    }
                    _ => break,
                }
            }
            if !commands_done {
                for _ in 0..BURST {
                    match Pin::new(&mut *commands).poll_next(cx) {
                        Poll::Ready(Some(command)) => out.push(Happened::Command(Some(command))),
                        Poll::Ready(None) => {
                            commands_done = true;
                            out.push(Happened::Command(None));
                            break;
                        }
                        Poll::Pending => break,
                    }
                }
            }
            if let Some((_, sleep)) = timer.as_mut() {
                if sleep.as_mut().poll(cx).is_ready() {
                    out.push(Happened::Timeout);
                }
            }
            if out.is_empty() {
                Poll::Pending
            } else {
                Poll::Ready(out)
            }
        })
        .await
    }

    fn on_incoming(&mut self, relay: RelayId, generation: u64, incoming: Incoming) {
        let current = self
            .sockets
            .get(&relay)
            .is_some_and(|s| s.generation == generation && s.connection.is_some());
        if !current {
            return;
        }
        let now = self.clock.now();
        match incoming {
            Incoming::Text(text) => self.engine.handle_input(now, Input::Frame { relay, text }),
            Incoming::Closed(reason) => {
                self.sockets.remove(&relay);
                tracing::debug!(relay = self.relay_name(relay), %reason, "closed");
                self.engine
                    .handle_input(now, Input::Disconnected { relay, reason });
            }
        }
    }

    fn on_done(&mut self, done: Done) {
        let now = self.clock.now();
        match done {
            Done::Connected(relay, generation, result) => {
                let wanted = self
                    .sockets
                    .get(&relay)
                    .is_some_and(|s| s.generation == generation && s.connection.is_none());
                match result {
                    Ok(mut connection) if wanted => {
                        let incoming = std::mem::replace(
                            &mut connection.incoming,
                            stream::empty().boxed_local(),
                        );
                        let closed =
                            stream::once(async { Incoming::Closed("stream ended".into()) });
                        self.frames.push(
                            incoming
                                .chain(closed)
                                .map(move |i| (relay, generation, i))
                                .boxed_local(),
                        );
                        if let Some(socket) = self.sockets.get_mut(&relay) {
                            socket.connection = Some(connection);
                        }
                        tracing::debug!(relay = self.relay_name(relay), "connected");
                        self.engine.handle_input(now, Input::Connected { relay });
                    }
                    Ok(mut stale) => (stale.close)(),
                    Err(reason) if wanted => {
                        self.stats.connect_failures += 1;
                        self.sockets.remove(&relay);
                        let url = self.relay_name(relay);
                        tracing::info!(relay = url, %reason, "connection failed");
                        self.engine
                            .handle_input(now, Input::Disconnected { relay, reason });
                    }
                    Err(_) => {}
                }
            }
            Done::Info(relay, document) => self
                .engine
                .handle_input(now, Input::InfoFetched { relay, document }),
            Done::Items(request, result) => {
                let items = result.unwrap_or_else(|e| {
                    // An unreadable local set reads as empty: the job pages instead.
                    self.stats.store_failures += 1;
                    tracing::warn!(error = %e, "loading negentropy items failed");
                    Vec::new()
                });
                self.engine
                    .handle_input(now, Input::LocalItemsLoaded { request, items });
            }
            Done::Verified(batches, valid) => {
                let mut flags = valid.into_iter();
                for (batch, len) in batches {
                    let valid: Vec<bool> = flags.by_ref().take(len).collect();
                    self.engine
                        .handle_input(now, Input::Verified { batch, valid });
                }
            }
            Done::Stored(batches, result, mut remembered) => {
                self.saving = false;
                tracing::trace!(batches = batches.len(), "saved");
                if let Err(e) = &result {
                    self.stats.store_failures += 1;
                    tracing::error!(error = %e, "saving events failed");
                    // The ids it carried go on the state lane, ahead of later ones.
                    remembered.append(&mut self.to_persist.remembered);
                    self.to_persist.remembered = remembered;
                    self.next_persist();
                }
                // Removed events are reported once, with the first batch.
                let failed = result.as_ref().err().cloned();
                let mut first = Some(result);
                for batch in batches {
                    let result = first
                        .take()
                        .unwrap_or_else(|| failed.clone().map_or(Ok(Vec::new()), Err));
                    self.engine
                        .handle_input(now, Input::Stored { batch, result });
                }
                if let Some(e) = failed {
                    // The batches handed out while it was written may carry checkpoints
                    // that count on its events: they fail too, unwritten.
                    let behind = std::mem::take(&mut self.to_save);
                    for waiting in behind {
                        let result = Err(format!("an earlier write failed: {e}"));
                        let batch = waiting.batch;
                        self.engine
                            .handle_input(now, Input::Stored { batch, result });
                    }
                }
                self.next_save();
            }
            Done::Persisted(result) => {
                self.persisting = false;
                if let Err(e) = result {
                    self.stats.persist_failures += 1;
                    tracing::error!(error = %e, "saving sync state failed");
                }
                self.next_persist();
            }
        }
    }

    /// Executes every output the engine has (and the inputs that produces).
    fn execute_outputs(&mut self) {
        loop {
            while let Some(output) = self.engine.poll_output() {
                self.execute(output);
            }
            if self.deferred.is_empty() {
                break;
            }
            let now = self.clock.now();
            for input in std::mem::take(&mut self.deferred) {
                self.engine.handle_input(now, input);
            }
        }
        self.flush_verify();
        self.next_save();
    }

    /// Sends this step's verify batches as one call.
    fn flush_verify(&mut self) {
        if self.to_verify.is_empty() {
            return;
        }
        let mut batches = Vec::new();
        let mut events = Vec::new();
        for (batch, mut these) in self.to_verify.drain(..) {
            batches.push((batch, these.len()));
            events.append(&mut these);
        }
        let verifying = self.verifier.verify(events);
        self.tasks.push(
            verifying
                .map(move |v| Done::Verified(batches, v))
                .boxed_local(),
        );
    }

    /// Starts the next write, merging every store batch waiting, unless one is in flight.
    /// It carries the batches' checkpoints and the remembered ids queued on the state
    /// lane (a checkpoint never lands before the ids it relies on).
    fn next_save(&mut self) {
        if self.saving || self.to_save.is_empty() {
            return;
        }
        let mut batches = Vec::new();
        let mut events = Vec::new();
        let mut remove = Vec::new();
        let mut state = SavedState {
            checkpoints: Vec::new(),
            remembered: std::mem::take(&mut self.to_persist.remembered),
        };
        for mut waiting in self.to_save.drain(..) {
            batches.push(waiting.batch);
            events.append(&mut waiting.events);
            remove.append(&mut waiting.remove);
            state.checkpoints.append(&mut waiting.checkpoints);
        }
        self.saving = true;
        tracing::trace!(batches = batches.len(), events = events.len(), "saving");
        let remembered = state.remembered.clone();
        let saving = self.store.save(events, remove, state);
        self.tasks.push(
            saving
                .map(move |r| {
                    let result = r.map(|s| s.removed).map_err(String::from);
                    Done::Stored(batches, result, remembered)
                })
                .boxed_local(),
        );
    }

    /// A relay's address for logs.
    fn relay_name(&self, relay: RelayId) -> &str {
        self.engine.relay_url(relay).map_or("?", RelayUrl::as_str)
    }

    fn execute(&mut self, output: Output) {
        match output {
            Output::Connect { relay, url } => {
                if let Some(mut old) = self.sockets.remove(&relay) {
                    if let Some(c) = old.connection.as_mut() {
                        (c.close)();
                    }
                }
                let generation = self.next_generation;
                self.next_generation += 1;
                self.stats.connects += 1;
                let connecting = self.network.connect(&url);
                self.sockets.insert(
                    relay,
                    Socket {
                        generation,
                        connection: None,
                    },
                );
                self.tasks.push(
                    connecting
                        .map(move |r| Done::Connected(relay, generation, r))
                        .boxed_local(),
                );
            }
            Output::FetchInfo { relay, url } => {
                let fetching = self.network.fetch_info(&url);
                self.tasks
                    .push(fetching.map(move |d| Done::Info(relay, d)).boxed_local());
            }
            Output::Send { relay, text } => {
                if tracing::enabled!(tracing::Level::TRACE) {
                    let head: String = text.chars().take(60).collect();
                    let url = self.relay_name(relay);
                    tracing::trace!(relay = url, bytes = text.len(), %head, "send");
                }
                let sent = self
                    .sockets
                    .get_mut(&relay)
                    .and_then(|s| s.connection.as_mut())
                    .map(|c| (c.send)(text));
                match sent {
                    Some(Ok(())) => {}
                    Some(Err(reason)) => {
                        self.stats.send_failures += 1;
                        if let Some(mut socket) = self.sockets.remove(&relay) {
                            if let Some(c) = socket.connection.as_mut() {
                                (c.close)();
                            }
                        }
                        self.deferred.push(Input::Disconnected { relay, reason });
                    }
                    // Not connected (yet or any more): the engine hears of it through
                    // the connection's own outcome.
                    None => self.stats.send_failures += 1,
                }
            }
            Output::Close { relay } => {
                if let Some(mut socket) = self.sockets.remove(&relay) {
                    if let Some(c) = socket.connection.as_mut() {
                        (c.close)();
                    }
                }
            }
            Output::LoadLocalItems { request, filter } => {
                let loading = self.store.items(filter);
                self.tasks.push(
                    loading
                        .map(move |r| Done::Items(request, r.map_err(String::from)))
                        .boxed_local(),
                );
            }
            Output::Verify { batch, events } => self.to_verify.push((batch, events)),
            Output::Store {
                batch,
                events,
                remove,
                checkpoints,
            } => self.to_save.push(ToSave {
                batch,
                events,
                remove,
                checkpoints,
            }),
            Output::Checkpoint(checkpoint) => {
                self.to_persist.checkpoints.push(checkpoint);
                self.next_persist();
            }
            Output::Remember(mut entries) => {
                self.to_persist.remembered.append(&mut entries);
                self.next_persist();
            }
            Output::Published { token, outcome } => {
                if let Some(reply) = self.publishing.remove(&token) {
                    // The publisher may have gone away meanwhile.
                    let _ = reply.send(outcome);
                }
            }
            Output::Status {
                relay,
                phase,
                error,
            } => match phase {
                Phase::Backoff { .. } | Phase::Dead { .. } => {
                    let url = self.relay_name(relay);
                    tracing::info!(relay = url, ?phase, ?error, "relay failing");
                }
                _ => tracing::debug!(relay = self.relay_name(relay), ?phase, "relay phase"),
            },
        }
    }

    /// Starts the next write on the persistence lane: what is queued since the last
    /// one, up to [`PERSIST_CHUNK`] entries, in one store write (entries keep their
    /// order).
    fn next_persist(&mut self) {
        if self.persisting || self.to_persist.is_empty() {
            return;
        }
        // Remembered ids first: a checkpoint never lands before the ids it relies on.
        let queued = &mut self.to_persist;
        let remembered = queued.remembered.len().min(PERSIST_CHUNK);
        let checkpoints = queued.checkpoints.len().min(PERSIST_CHUNK - remembered);
        let chunk = SavedState {
            checkpoints: queued.checkpoints.drain(..checkpoints).collect(),
            remembered: queued.remembered.drain(..remembered).collect(),
        };
        let writing = self.store.save_state(chunk);
        self.persisting = true;
        self.tasks.push(
            writing
                .map(|r| Done::Persisted(r.map_err(String::from)))
                .boxed_local(),
        );
    }

    /// Lets in-flight saves and state writes finish (feeding their results to the
    /// engine, which may checkpoint them), then closes every socket.
    async fn shutdown(&mut self) {
        let deadline = self.clock.now() + SHUTDOWN_GRACE;
        let mut grace = self.clock.sleep(SHUTDOWN_GRACE);
        self.next_save();
        while self.saving || self.persisting || !self.to_persist.is_empty() {
            if self.clock.now() >= deadline {
                tracing::warn!("shutdown: gave up waiting for in-flight writes");
                break;
            }
            let next = poll_fn(|cx| match Pin::new(&mut self.tasks).poll_next(cx) {
                Poll::Ready(done) => Poll::Ready(done),
                Poll::Pending => match grace.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(None),
                    Poll::Pending => Poll::Pending,
                },
            })
            .await;
            let Some(done) = next else { break };
            match done {
                Done::Stored(..) | Done::Persisted(..) => {
                    self.on_done(done);
                    // Drain checkpoints, remembered ids and publish outcomes; ignore new
                    // network work.
                    while let Some(output) = self.engine.poll_output() {
                        match output {
                            Output::Checkpoint(_)
                            | Output::Remember(_)
                            | Output::Published { .. } => self.execute(output),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        for (_, mut socket) in self.sockets.drain() {
            if let Some(c) = socket.connection.as_mut() {
                (c.close)();
            }
        }
    }
}
