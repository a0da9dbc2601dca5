//! One client connection of the relay: NIP-01 (EVENT/OK, REQ/EVENT/EOSE, CLOSE/CLOSED,
//! NOTICE), NIP-45 COUNT and the NIP-77 responder from the core, under the configured
//! limits.
//!
//! A connection is one task. It reads frames and answers them in order, except
//! published events: those wait for the sync engine's acceptance and the store (up to
//! [`PUBLISHES_IN_FLIGHT`] at once), and their `OK`s go out as they are decided, so a
//! client may pipeline. Events committed to the store (by sync or by any client) reach
//! the live subscriptions through the [`fanout`](super::fanout), which matches each
//! batch once against an index of every subscription and fills a bounded mailbox per
//! connection with what it matched; a connection that falls behind has its
//! subscriptions closed with a reason. Every write has a deadline: a client
//! that stops reading is dropped, never buffered for without bound.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::channel::{mpsc, oneshot};
use futures::stream::{FuturesUnordered, SplitSink};
use futures::{SinkExt, StreamExt};
use grasp_sync_core::accept::Reject;
use grasp_sync_core::engine::PublishOutcome;
use grasp_sync_core::neg::{NegReply, NegResponder, ResponderLimits, DEFAULT_FRAME_LIMIT};
use grasp_sync_core::wire::{
    event_frame, malformed_event_id, parse_client_frame, ClientFrame, RelayFrame,
};
use grasp_sync_driver::Command;
use nostr::prelude::{Event, EventId, Filter, PublicKey, Timestamp};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{watch, Semaphore};
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::auth::{self, AuthRequired};
use super::config::ClientLimits;
use super::fanout::{Subscriber, Taken};
use super::hub::BroadcastStore;
use super::limits::{Slot, TokenBucket};
use super::metrics::{names, ServerMetrics};
use super::open;
use super::subindex::SubId;

/// Published events of one connection waiting for their outcome at once; past it the
/// connection stops reading until one is decided.
pub const PUBLISHES_IN_FLIGHT: usize = 64;
/// Bytes of `["EVENT",` and `]` around an event's JSON in a compact frame.
const EVENT_ENVELOPE_BYTES: usize = 10;
/// How long a published event may wait for acceptance and the store.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(30);

/// What every connection shares.
pub struct Shared {
    /// The store (queries, negentropy items, and the broadcast of commits).
    pub store: BroadcastStore,
    /// Commands to the sync engine's loop (published events).
    pub commands: mpsc::Sender<Command>,
    /// Limits on clients.
    pub limits: ClientLimits,
    /// Counters.
    pub metrics: Arc<ServerMetrics>,
    /// Store loads (REQ, COUNT, NEG-OPEN) running at once over all connections.
    pub loads: Semaphore,
    /// The open acceptance mode (`any-event`): ephemeral events are delivered live, and
    /// versions held at a published event's address are handed to the engine first.
    pub any_event: bool,
    /// NIP-42: what needs an authenticated client.
    pub auth: auth::Policy,
    /// Turns true when the daemon stops.
    pub shutdown: watch::Receiver<bool>,
}

/// Why a connection ended.
type Ended = &'static str;

type PendingPublish = Pin<Box<dyn Future<Output = (EventId, Option<PublishOutcome>)> + Send>>;

struct Conn<S> {
    shared: Arc<Shared>,
    slot: Slot,
    sink: SplitSink<WebSocketStream<S>, Message>,
    /// Open subscriptions (past their EOSE) and their registrations in the fan-out.
    subs: HashMap<String, SubId>,
    /// The subscriptions' filters in the fan-out, and the mailbox of what they matched.
    live: Subscriber,
    neg: NegResponder,
    events: TokenBucket,
    publishes: FuturesUnordered<PendingPublish>,
    /// The NIP-42 challenge sent to this connection (when authentication is on).
    challenge: Option<String>,
    /// The keys this connection authenticated as.
    authed: BTreeSet<PublicKey>,
}

/// Serves one upgraded WebSocket until it closes, fails, idles out or the daemon stops.
pub async fn serve<S>(ws: WebSocketStream<S>, slot: Slot, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sink, mut stream) = ws.split();
    let limits = &shared.limits;
    let neg = NegResponder::new(ResponderLimits {
        max_sessions: limits.neg_sessions,
        max_items: limits.neg_max_items,
        frame_limit: DEFAULT_FRAME_LIMIT,
    });
    let idle_timeout = limits.idle_timeout;
    let mut conn = Conn {
        events: TokenBucket::per_minute(limits.events_per_minute, Instant::now()),
        shared: Arc::clone(&shared),
        slot,
        sink,
        subs: HashMap::new(),
        live: shared.store.fanout().connect(),
        neg,
        publishes: FuturesUnordered::new(),
        challenge: (shared.auth.required != AuthRequired::No)
            .then(auth::new_challenge)
            .flatten(),
        authed: BTreeSet::new(),
    };
    if let Some(challenge) = conn.challenge.clone() {
        if conn.reply(RelayFrame::Auth { challenge }).await.is_err() {
            return;
        }
    }
    shared.metrics.inc_plain(names::CONNECTIONS);
    let mut shutdown = shared.shutdown.clone();
    let mut ping = tokio::time::interval(idle_timeout / 2);
    ping.tick().await;
    let mut last_heard = Instant::now();
    let ended: Ended = loop {
        let reading = conn.publishes.len() < PUBLISHES_IN_FLIGHT;
        let result = tokio::select! {
            _ = shutdown.changed() => Err("shutdown"),
            Some((id, outcome)) = conn.publishes.next(), if !conn.publishes.is_empty() => {
                conn.answer_publish(id, outcome).await
            }
            frame = stream.next(), if reading => match frame {
                None => Err("closed"),
                Some(Err(e)) => Err(read_error(&e)),
                Some(Ok(message)) => {
                    last_heard = Instant::now();
                    conn.on_message(message).await
                }
            },
            _ = conn.live.ready() => conn.on_live().await,
            _ = ping.tick() => {
                if last_heard.elapsed() >= idle_timeout {
                    Err("idle")
                } else {
                    conn.write(Message::Ping(Vec::new().into())).await
                }
            }
        };
        if let Err(ended) = result {
            break ended;
        }
    };
    shared.metrics.inc(names::DISCONNECTS, ("reason", ended));
    tracing::debug!(client = %conn.slot.ip(), reason = ended, "client connection ended");
    let metrics = &shared.metrics;
    metrics
        .subscriptions
        .fetch_sub(conn.subs.len() as u64, Ordering::Relaxed);
    metrics
        .neg_sessions
        .fetch_sub(conn.neg.session_count() as u64, Ordering::Relaxed);
    if ended == "shutdown" {
        let _ = tokio::time::timeout(Duration::from_secs(1), conn.sink.send(Message::Close(None)))
            .await;
    } else {
        let _ = tokio::time::timeout(Duration::from_secs(1), conn.sink.close()).await;
    }
}

/// A short label for a read error.
fn read_error(error: &WsError) -> Ended {
    match error {
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => "message-too-large",
        WsError::Capacity(_) => "frame-too-large",
        WsError::Protocol(_) => "protocol-error",
        WsError::Utf8(_) => "bad-utf8",
        WsError::ConnectionClosed | WsError::AlreadyClosed => "closed",
        _ => "read-error",
    }
}

impl<S> Conn<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    fn limits(&self) -> &ClientLimits {
        &self.shared.limits
    }

    fn metrics(&self) -> &ServerMetrics {
        &self.shared.metrics
    }

    /// Queues a message, waiting at most the write timeout for room.
    async fn feed(&mut self, message: Message) -> Result<(), Ended> {
        let timeout = self.limits().write_timeout;
        if let Message::Text(text) = &message {
            self.metrics()
                .bytes_out
                .fetch_add(text.len() as u64, Ordering::Relaxed);
        }
        match tokio::time::timeout(timeout, self.sink.feed(message)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err("write-failed"),
            Err(_) => Err("slow-reader"),
        }
    }

    async fn flush(&mut self) -> Result<(), Ended> {
        let timeout = self.limits().write_timeout;
        match tokio::time::timeout(timeout, self.sink.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err("write-failed"),
            Err(_) => Err("slow-reader"),
        }
    }

    async fn write(&mut self, message: Message) -> Result<(), Ended> {
        self.feed(message).await?;
        self.flush().await
    }

    async fn reply(&mut self, frame: RelayFrame) -> Result<(), Ended> {
        self.write(Message::text(frame.to_json())).await
    }

    async fn notice(&mut self, message: String) -> Result<(), Ended> {
        self.reply(RelayFrame::Notice { message }).await
    }

    async fn closed(&mut self, subscription: String, message: String) -> Result<(), Ended> {
        self.reply(RelayFrame::Closed {
            subscription,
            message,
        })
        .await
    }

    fn refused(&self, reason: &'static str) {
        self.metrics().inc(names::REFUSALS, ("reason", reason));
    }

    async fn on_message(&mut self, message: Message) -> Result<(), Ended> {
        match message {
            Message::Text(text) => {
                self.metrics()
                    .bytes_in
                    .fetch_add(text.len() as u64, Ordering::Relaxed);
                self.on_text(text.as_str()).await
            }
            Message::Binary(_) => {
                self.metrics().inc(names::BAD_FRAMES, ("reason", "binary"));
                self.notice("invalid: binary messages are not supported".into())
                    .await
            }
            Message::Close(_) => Err("closed"),
            // Pings are answered by the WebSocket layer; pongs only prove liveness.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => Ok(()),
        }
    }

    async fn on_text(&mut self, text: &str) -> Result<(), Ended> {
        let frame = match parse_client_frame(text, self.limits().max_message_bytes) {
            Ok(frame) => frame,
            Err(e) => {
                self.metrics()
                    .inc(names::BAD_FRAMES, ("reason", e.as_str()));
                // NIP-01: an EVENT is answered with OK whenever its id can be read.
                let max = self.limits().max_message_bytes;
                if let Some(id) = malformed_event_id(text, max) {
                    return self.ok(id, false, format!("invalid: {e}")).await;
                }
                return self.notice(format!("invalid: {e}")).await;
            }
        };
        self.metrics()
            .inc(names::FRAMES, ("type", frame_type(&frame)));
        match frame {
            ClientFrame::Event { event } => self.on_event(*event, text.len()).await,
            ClientFrame::Req {
                subscription,
                filters,
            } => self.on_req(subscription, filters).await,
            ClientFrame::Count {
                subscription,
                filters,
            } => self.on_count(subscription, filters).await,
            ClientFrame::Close { subscription } => {
                self.live.unsubscribe(&subscription);
                if self.subs.remove(&subscription).is_some() {
                    self.metrics().subscriptions.fetch_sub(1, Ordering::Relaxed);
                }
                Ok(())
            }
            ClientFrame::Auth { event } => self.on_auth(*event).await,
            ClientFrame::NegOpen {
                subscription,
                filter,
                message,
            } => self.on_neg_open(subscription, *filter, message).await,
            ClientFrame::NegMsg {
                subscription,
                message,
            } => {
                let before = self.neg.session_count();
                let reply = self.neg.message(&subscription, &message);
                self.count_neg_sessions(before);
                self.neg_reply(subscription, reply).await
            }
            ClientFrame::NegClose { subscription } => {
                let before = self.neg.session_count();
                self.neg.close(&subscription);
                self.count_neg_sessions(before);
                Ok(())
            }
        }
    }

    // ---------------------------------------------------------------------------------
    // EVENT

    async fn on_event(&mut self, event: Event, frame_bytes: usize) -> Result<(), Ended> {
        let id = event.id;
        if let Some(reason) = self.shared.auth.refuse_write(&self.authed) {
            self.refused("auth");
            return self.ok(id, false, reason.into()).await;
        }
        // The event's JSON: the frame less `["EVENT",` and `]`.
        let json_bytes = frame_bytes.saturating_sub(EVENT_ENVELOPE_BYTES);
        if !self.events.take(Instant::now()) || !self.slot.take_event() {
            self.refused("event-rate");
            return self
                .ok(id, false, "rate-limited: slow down, too many events".into())
                .await;
        }
        if json_bytes > self.limits().max_event_bytes {
            self.metrics()
                .inc(names::PUBLISHED, ("result", Reject::TooLarge.as_str()));
            return self
                .ok(
                    id,
                    false,
                    format!(
                        "invalid: event too large (max {} bytes)",
                        self.limits().max_event_bytes
                    ),
                )
                .await;
        }
        if !event.verify_id() {
            self.metrics()
                .inc(names::PUBLISHED, ("result", Reject::BadId.as_str()));
            return self
                .ok(
                    id,
                    false,
                    "invalid: the event id does not match its content".into(),
                )
                .await;
        }
        if !event.verify_signature() {
            self.metrics()
                .inc(names::PUBLISHED, ("result", Reject::BadSignature.as_str()));
            return self.ok(id, false, "invalid: bad signature".into()).await;
        }
        match self.shared.store.inner().query(Filter::new().id(id)).await {
            Ok(held) if !held.is_empty() => {
                self.metrics()
                    .inc(names::PUBLISHED, ("result", Reject::Duplicate.as_str()));
                return self
                    .ok(id, true, "duplicate: already have this event".into())
                    .await;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "duplicate check failed"),
        }
        if self.shared.any_event {
            if event.kind.is_ephemeral() {
                // NIP-01: delivered to who listens now, never stored.
                self.metrics()
                    .inc(names::PUBLISHED, ("result", Reject::Ephemeral.as_str()));
                self.shared.store.fanout().deliver(Arc::from(vec![event]));
                return self.ok(id, true, String::new()).await;
            }
            let held = open::held_versions(&self.shared.store, &event).await;
            if !held.is_empty() {
                let restore = Command::Restore {
                    events: held,
                    remembered: Vec::new(),
                };
                let mut commands = self.shared.commands.clone();
                if commands.send(restore).await.is_err() {
                    return self
                        .ok(id, false, "error: the relay is shutting down".into())
                        .await;
                }
            }
        }
        let (reply, outcome) = oneshot::channel();
        let command = Command::Publish {
            event,
            json_bytes,
            reply,
        };
        let mut commands = self.shared.commands.clone();
        match tokio::time::timeout(PUBLISH_TIMEOUT, commands.send(command)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => {
                return self
                    .ok(id, false, "error: the relay is shutting down".into())
                    .await
            }
        }
        self.publishes.push(Box::pin(async move {
            let outcome = tokio::time::timeout(PUBLISH_TIMEOUT, outcome)
                .await
                .ok()
                .and_then(Result::ok);
            (id, outcome)
        }));
        Ok(())
    }

    async fn answer_publish(
        &mut self,
        id: EventId,
        outcome: Option<PublishOutcome>,
    ) -> Result<(), Ended> {
        let (accepted, label, message) = match outcome {
            Some(PublishOutcome::Stored) => (true, "stored", String::new()),
            Some(PublishOutcome::Rejected(reject)) => {
                let (accepted, message) = rejection(reject);
                (accepted, reject.as_str(), message)
            }
            Some(PublishOutcome::Failed(e)) => {
                tracing::error!(error = %e, "storing a published event failed");
                (
                    false,
                    "store-failed",
                    "error: the event could not be stored".into(),
                )
            }
            None => (
                false,
                "unanswered",
                "error: the event was not decided in time (try again)".into(),
            ),
        };
        self.metrics().inc(names::PUBLISHED, ("result", label));
        self.ok(id, accepted, message).await
    }

    async fn ok(
        &mut self,
        event_id: EventId,
        accepted: bool,
        message: String,
    ) -> Result<(), Ended> {
        self.reply(RelayFrame::Ok {
            event_id,
            accepted,
            message,
        })
        .await
    }

    // ---------------------------------------------------------------------------------
    // AUTH (NIP-42)

    async fn on_auth(&mut self, event: Event) -> Result<(), Ended> {
        let id = event.id;
        if self.shared.auth.required == AuthRequired::No {
            return self
                .ok(
                    id,
                    false,
                    "unsupported: this relay does not ask for authentication".into(),
                )
                .await;
        }
        let checked = auth::verify(
            &event,
            self.challenge.as_deref(),
            &self.shared.auth.urls,
            Timestamp::now(),
        );
        match checked {
            Ok(pubkey) => {
                self.authed.insert(pubkey);
                self.ok(id, true, String::new()).await
            }
            Err(reason) => {
                self.refused("auth-failed");
                self.ok(id, false, reason).await
            }
        }
    }

    // ---------------------------------------------------------------------------------
    // REQ and COUNT

    /// Checks a REQ's or COUNT's shape against the limits; `Some(reason)` refuses it.
    fn check_request(&self, subscription: &str, filters: &[Filter]) -> Option<String> {
        if let Some(reason) = self.shared.auth.refuse_read(&self.authed) {
            self.refused("auth");
            return Some(reason.into());
        }
        let limits = self.limits();
        if subscription.len() > limits.max_subid_length {
            self.refused("subscription-id");
            return Some(format!(
                "invalid: subscription id longer than {} characters",
                limits.max_subid_length
            ));
        }
        if filters.len() > limits.max_filters {
            self.refused("filters");
            return Some(format!(
                "invalid: too many filters (max {})",
                limits.max_filters
            ));
        }
        None
    }

    async fn on_req(&mut self, subscription: String, filters: Vec<Filter>) -> Result<(), Ended> {
        if let Some(reason) = self.check_request(&subscription, &filters) {
            return self.closed(subscription, reason).await;
        }
        let max_subscriptions = self.limits().max_subscriptions;
        if !self.subs.contains_key(&subscription) && self.subs.len() >= max_subscriptions {
            self.refused("subscriptions");
            return self
                .closed(
                    subscription,
                    format!("blocked: too many subscriptions (max {max_subscriptions})"),
                )
                .await;
        }
        // Listen before querying, so nothing committed meanwhile is missed (it is read
        // from the mailbox after the EOSE); this replaces a subscription of that id.
        let registration = self.live.subscribe(&subscription, filters.clone());
        if self.subs.remove(&subscription).is_some() {
            self.metrics().subscriptions.fetch_sub(1, Ordering::Relaxed);
        }
        let max_limit = self.limits().max_limit;
        let mut sent: HashSet<EventId> = HashSet::new();
        let mut found: Vec<Event> = Vec::new();
        for filter in &filters {
            let limit = filter.limit.map_or(max_limit, |l| l.min(max_limit));
            if limit == 0 {
                continue;
            }
            let events = {
                let _permit = self.shared.loads.acquire().await;
                self.shared
                    .store
                    .inner()
                    .query(filter.clone().limit(limit))
                    .await
            };
            let events = match events {
                Ok(events) => events,
                Err(e) => {
                    tracing::error!(error = %e, "a REQ's query failed");
                    self.live.unsubscribe(&subscription);
                    return self
                        .closed(subscription, "error: the store could not be read".into())
                        .await;
                }
            };
            found.extend(events.into_iter().filter(|e| sent.insert(e.id)));
        }
        // NIP-01: newest first over all the filters (ties: lowest id first).
        found.sort_unstable_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        self.metrics()
            .events_sent
            .fetch_add(found.len() as u64, Ordering::Relaxed);
        for event in &found {
            self.feed(Message::text(event_frame(&subscription, event)))
                .await?;
        }
        self.feed(Message::text(
            RelayFrame::Eose {
                subscription: subscription.clone(),
            }
            .to_json(),
        ))
        .await?;
        self.flush().await?;
        self.subs.insert(subscription, registration);
        self.metrics().subscriptions.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn on_count(&mut self, subscription: String, filters: Vec<Filter>) -> Result<(), Ended> {
        if let Some(reason) = self.check_request(&subscription, &filters) {
            return self.closed(subscription, reason).await;
        }
        let mut ids: HashSet<EventId> = HashSet::new();
        for filter in filters {
            let items = {
                let _permit = self.shared.loads.acquire().await;
                self.shared.store.inner().items(filter).await
            };
            match items {
                Ok(items) => ids.extend(items.into_iter().map(|(_, id)| id)),
                Err(e) => {
                    tracing::error!(error = %e, "a COUNT's query failed");
                    return self
                        .closed(subscription, "error: the store could not be read".into())
                        .await;
                }
            }
        }
        self.reply(RelayFrame::Count {
            subscription,
            count: ids.len() as u64,
        })
        .await
    }

    /// Sends what the fan-out matched for this connection's subscriptions, in commit
    /// order; after a lag, closes every subscription instead.
    async fn on_live(&mut self) -> Result<(), Ended> {
        let Taken { deliveries, lagged } = self.live.take();
        if lagged {
            // What was missed is unknown: every subscription ends, with a reason.
            tracing::info!(client = %self.slot.ip(), "client fell behind live events");
            self.refused("live-lagged");
            self.live.unsubscribe_all();
            let subs: Vec<String> = self.subs.drain().map(|(s, _)| s).collect();
            self.metrics()
                .subscriptions
                .fetch_sub(subs.len() as u64, Ordering::Relaxed);
            for sub in subs {
                self.feed(Message::text(
                    RelayFrame::Closed {
                        subscription: sub,
                        message: "error: too slow for live events; subscribe again".into(),
                    }
                    .to_json(),
                ))
                .await?;
            }
            return self.flush().await;
        }
        let mut frames = Vec::new();
        for delivery in &deliveries {
            for (event, hit) in delivery.events() {
                // Only for the registration still open under that id.
                if self.subs.get(&*hit.name) == Some(&hit.sub) {
                    frames.push(event_frame(&hit.name, event));
                }
            }
        }
        if frames.is_empty() {
            return Ok(());
        }
        self.metrics()
            .events_sent
            .fetch_add(frames.len() as u64, Ordering::Relaxed);
        for frame in frames {
            self.feed(Message::text(frame)).await?;
        }
        self.flush().await
    }

    // ---------------------------------------------------------------------------------
    // NIP-77

    async fn on_neg_open(
        &mut self,
        subscription: String,
        filter: Filter,
        message: Vec<u8>,
    ) -> Result<(), Ended> {
        if let Some(reason) = self.shared.auth.refuse_read(&self.authed) {
            self.refused("auth");
            return self
                .neg_reply(subscription, NegReply::Err(reason.into()))
                .await;
        }
        let limits = self.limits();
        let (max_sessions, max_items) = (limits.neg_sessions, limits.neg_max_items);
        if subscription.len() > limits.max_subid_length {
            self.refused("subscription-id");
            return self
                .neg_reply(
                    subscription,
                    NegReply::Err("invalid: subscription id too long".into()),
                )
                .await;
        }
        if !self.neg.has_session(&subscription) && self.neg.session_count() >= max_sessions {
            self.refused("neg-sessions");
            return self
                .neg_reply(
                    subscription,
                    NegReply::Err(format!(
                        "blocked: too many negentropy sessions (max {max_sessions})"
                    )),
                )
                .await;
        }
        let items = {
            let _permit = self.shared.loads.acquire().await;
            // One more than allowed is enough to refuse the session.
            self.shared
                .store
                .inner()
                .items(filter.limit(max_items.saturating_add(1)))
                .await
        };
        let items = match items {
            Ok(items) => items,
            Err(e) => {
                tracing::error!(error = %e, "a NEG-OPEN's query failed");
                return self
                    .neg_reply(
                        subscription,
                        NegReply::Err("error: the store could not be read".into()),
                    )
                    .await;
            }
        };
        let before = self.neg.session_count();
        let reply = self.neg.open(
            &subscription,
            items
                .into_iter()
                .map(|(at, id)| (at.as_secs(), id.to_bytes())),
            &message,
        );
        self.count_neg_sessions(before);
        if matches!(reply, NegReply::Err(_)) {
            self.refused("neg-open");
        }
        self.neg_reply(subscription, reply).await
    }

    /// Moves the open-sessions gauge by how the responder's count changed from `before`.
    fn count_neg_sessions(&self, before: usize) {
        let after = self.neg.session_count();
        let gauge = &self.metrics().neg_sessions;
        if after > before {
            gauge.fetch_add((after - before) as u64, Ordering::Relaxed);
        } else {
            gauge.fetch_sub((before - after) as u64, Ordering::Relaxed);
        }
    }

    /// Sends a responder's answer.
    async fn neg_reply(&mut self, subscription: String, reply: NegReply) -> Result<(), Ended> {
        let frame = match reply {
            NegReply::Msg(message) => RelayFrame::NegMsg {
                subscription,
                message,
            },
            NegReply::Err(message) => RelayFrame::NegErr {
                subscription,
                message,
            },
        };
        self.reply(frame).await
    }
}

/// `OK` for a rejection: (accepted, message in the NIP-01 prefix style).
fn rejection(reject: Reject) -> (bool, String) {
    let message = match reject {
        Reject::Duplicate => return (true, "duplicate: already have this event".into()),
        Reject::TooLarge => "invalid: event too large",
        Reject::TooManyTags => "invalid: too many tags",
        Reject::FromTheFuture => "invalid: created_at is too far in the future",
        Reject::Expired => "invalid: the event has expired (NIP-40)",
        Reject::Ephemeral => "blocked: ephemeral events are not relayed here",
        Reject::BadId => "invalid: the event id does not match its content",
        Reject::BadSignature => "invalid: bad signature",
        Reject::NotRequested | Reject::Irrelevant => {
            "blocked: not a NIP-34 event of a repository this relay tracks"
        }
        Reject::NotListingUs => "blocked: the announcement does not list this relay",
        Reject::NotAllowed => "blocked: the author is not on this relay's allow list",
        Reject::Superseded => "replaced: a newer version is stored",
        Reject::Deleted => "blocked: deleted by its author",
    };
    (false, message.into())
}

fn frame_type(frame: &ClientFrame) -> &'static str {
    match frame {
        ClientFrame::Event { .. } => "EVENT",
        ClientFrame::Req { .. } => "REQ",
        ClientFrame::Count { .. } => "COUNT",
        ClientFrame::Close { .. } => "CLOSE",
        ClientFrame::Auth { .. } => "AUTH",
        ClientFrame::NegOpen { .. } => "NEG-OPEN",
        ClientFrame::NegMsg { .. } => "NEG-MSG",
        ClientFrame::NegClose { .. } => "NEG-CLOSE",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejections_use_nip01_prefixes() {
        use grasp_sync_core::wire::{reason_class, ReasonClass};
        for reject in [
            Reject::TooLarge,
            Reject::TooManyTags,
            Reject::FromTheFuture,
            Reject::BadId,
            Reject::BadSignature,
        ] {
            assert_eq!(reason_class(&rejection(reject).1), ReasonClass::Invalid);
        }
        for reject in [
            Reject::Irrelevant,
            Reject::NotListingUs,
            Reject::NotAllowed,
            Reject::Deleted,
        ] {
            assert_eq!(reason_class(&rejection(reject).1), ReasonClass::Blocked);
        }
        assert_eq!(
            rejection(Reject::Duplicate),
            (true, "duplicate: already have this event".into())
        );
    }
}
