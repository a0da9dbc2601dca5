//! rust-nostr's `LocalRelay` (NIP-77) in process, over an in-memory database that
//! outlives its restarts.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use nostr::prelude::Event;
use nostr_memory::MemoryDatabase;
use nostr_sdk::prelude::{Filter, LocalRelay, NostrDatabase, RateLimit};

use crate::{launch_on_a_free_port, loopback_url, port_is_free, wait_port_free};

/// The limits a [`Nip77Relay`] enforces. [`Default`] is [`generous`](Self::generous);
/// [`relay_defaults`](Self::relay_defaults) are `LocalRelay`'s own, as a public relay
/// built on it would have. Each field is one `LocalRelayBuilder` setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nip77Limits {
    /// Events one REQ returns in all (`max_query_results`).
    pub max_query_results: usize,
    /// A filter's `limit` is lowered to this (`max_filter_limit`).
    pub max_filter_limit: usize,
    /// The `limit` of a filter that names none and no ids (`default_filter_limit`).
    pub default_filter_limit: usize,
    /// Items one connection's open negentropy sessions may hold; past it `NEG-OPEN` gets
    /// `NEG-ERR "rate-limited: too many negentropy items"` (`max_negentropy_items`).
    pub max_negentropy_items: usize,
    /// Open negentropy sessions per connection (`max_negentropy_subscriptions`).
    pub max_negentropy_subscriptions: usize,
    /// `EVENT`s accepted per minute per connection (`RateLimit::notes_per_minute`).
    pub events_per_minute: u32,
    /// Open REQs per connection (`RateLimit::max_reqs`).
    pub max_reqs: usize,
    /// `REQ`/`COUNT`/`NEG-OPEN` per minute per connection, and as many `NEG-MSG`
    /// (`queries_per_minute`).
    pub queries_per_minute: u32,
    /// Frames of any kind per minute per connection (`messages_per_minute`).
    pub messages_per_minute: u32,
    /// Filters in one REQ (`max_filters_per_req`).
    pub max_filters_per_req: usize,
    /// Bytes of filters a connection's open REQs may hold (`max_subscription_bytes`).
    pub max_subscription_bytes: usize,
    /// Bytes of one event (`max_event_size`).
    pub max_event_size: usize,
    /// Bytes of one WebSocket message (`max_websocket_message_size`).
    pub max_websocket_message_size: usize,
}

impl Nip77Limits {
    /// Limits far above anything a test sends: whole corpora in one REQ or one
    /// negentropy session, no rate limiting in practice.
    pub fn generous() -> Self {
        Self {
            max_query_results: 10_000_000,
            max_filter_limit: 10_000_000,
            default_filter_limit: 10_000_000,
            max_negentropy_items: 10_000_000,
            max_negentropy_subscriptions: 1_000,
            events_per_minute: 100_000_000,
            max_reqs: 10_000,
            queries_per_minute: 100_000_000,
            messages_per_minute: 100_000_000,
            max_filters_per_req: 1_000,
            max_subscription_bytes: 256 * 1024 * 1024,
            max_event_size: 16 * 1024 * 1024,
            max_websocket_message_size: 64 * 1024 * 1024,
        }
    }

    /// `LocalRelay`'s own defaults (nostr-sdk 0.45.5): 500 events per REQ and per
    /// filter, 50 000 negentropy items and 10 sessions per connection, 60 `EVENT`s,
    /// 1 200 queries and 6 000 frames per minute, 500 open REQs, 20 filters per REQ,
    /// 1 MiB of open filters, 64 KiB events, 5 MiB messages.
    pub fn relay_defaults() -> Self {
        Self {
            max_query_results: 500,
            max_filter_limit: 500,
            default_filter_limit: 500,
            max_negentropy_items: 50_000,
            max_negentropy_subscriptions: 10,
            events_per_minute: 60,
            max_reqs: 500,
            queries_per_minute: 1_200,
            messages_per_minute: 6_000,
            max_filters_per_req: 20,
            max_subscription_bytes: 1024 * 1024,
            max_event_size: 64 * 1024,
            max_websocket_message_size: 5 * 1024 * 1024,
        }
    }
}

impl Default for Nip77Limits {
    fn default() -> Self {
        Self::generous()
    }
}

/// rust-nostr's `LocalRelay` (nostr-sdk 0.45.5, NIP-77) on `127.0.0.1`, in this
/// process, over an in-memory database kept across [`stop`](Self::stop) and
/// [`resume`](Self::resume). Shut down on drop.
///
/// Relay behaviour to know: a REQ whose filters name ids gets `CLOSED` (empty message)
/// right after `EOSE` when every id was found; the database applies NIP-09 deletions and
/// keeps only the newest replaceable or addressable version; live events reach
/// subscribers through a 1 024-event buffer, and a connection that falls behind gets
/// `CLOSED "error: live event buffer overflow; …"` for its open REQs.
#[derive(Debug)]
pub struct Nip77Relay {
    port: u16,
    limits: Nip77Limits,
    database: Arc<MemoryDatabase>,
    relay: Option<LocalRelay>,
}

impl Nip77Relay {
    /// Starts a relay with [generous limits](Nip77Limits::generous) on a free port,
    /// its database preloaded with `events` (written directly, not published: ten
    /// thousand events take well under a second).
    ///
    /// # Panics
    /// When it cannot listen, or an event fails to verify.
    pub async fn start(events: &[Event]) -> Self {
        Self::start_with(events, Nip77Limits::generous()).await
    }

    /// As [`start`](Self::start), with the given limits.
    ///
    /// # Panics
    /// When it cannot listen, or an event fails to verify.
    pub async fn start_with(events: &[Event], limits: Nip77Limits) -> Self {
        let database = Arc::new(MemoryDatabase::unbounded());
        for event in events {
            event
                .verify()
                .unwrap_or_else(|e| panic!("preloading event {}: {e}", event.id));
            database
                .save_event(event)
                .await
                .unwrap_or_else(|e| panic!("preloading event {}: {e}", event.id));
        }
        let mut relay = Self {
            port: 0,
            limits,
            database,
            relay: None,
        };
        launch_on_a_free_port(&mut relay, "LocalRelay").await;
        relay
    }

    /// `ws://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        loopback_url(self.port)
    }

    /// The port it listens on (the same across [`stop`](Self::stop) and
    /// [`resume`](Self::resume)).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The limits it enforces.
    pub fn limits(&self) -> &Nip77Limits {
        &self.limits
    }

    /// True while it listens.
    pub fn is_running(&self) -> bool {
        self.relay.is_some()
    }

    /// Stores `events` and, while it runs, sends them to matching open subscriptions
    /// (live events), as if they had been published. Returns how many it stored
    /// (deleted, replaced or already present events are not). More than about a
    /// thousand at once can overflow a slow subscriber's live buffer (see the type's
    /// doc).
    ///
    /// # Panics
    /// When an event fails to verify.
    pub async fn add(&self, events: &[Event]) -> usize {
        let mut stored = 0;
        for event in events {
            let status = match &self.relay {
                Some(relay) => relay
                    .add_event(event.clone())
                    .await
                    .unwrap_or_else(|e| panic!("adding event {}: {e}", event.id)),
                None => {
                    event
                        .verify()
                        .unwrap_or_else(|e| panic!("adding event {}: {e}", event.id));
                    self.database
                        .save_event(event)
                        .await
                        .unwrap_or_else(|e| panic!("adding event {}: {e}", event.id))
                }
            };
            if status.is_success() {
                stored += 1;
            }
            tokio::task::yield_now().await;
        }
        stored
    }

    /// Every event it holds, oldest first.
    pub async fn events(&self) -> Vec<Event> {
        let held = self
            .database
            .query(Filter::new())
            .await
            .expect("query the in-memory database");
        let mut events: Vec<Event> = held.into_iter().collect();
        events.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        events
    }

    /// How many events it holds.
    pub async fn len(&self) -> usize {
        self.database
            .count(Filter::new())
            .await
            .expect("count the in-memory database")
    }

    /// True when it holds no event.
    pub async fn is_empty(&self) -> bool {
        self.len().await == 0
    }

    /// Stops listening and ends its connections (a no-op when stopped); its events
    /// stay for [`resume`](Self::resume).
    pub async fn stop(&mut self) {
        let Some(relay) = self.relay.take() else {
            return;
        };
        // `shutdown` wakes the tasks waiting at that moment (the listener and idle
        // connections): repeat it so a connection busy with a message also ends.
        for _ in 0..5 {
            relay.shutdown();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(relay);
        if !wait_port_free(self.port, Duration::from_secs(10)).await {
            panic!("LocalRelay still listens on port {} after stop", self.port);
        }
    }

    /// Listens again on the same port with the same events (a no-op while it runs).
    ///
    /// # Panics
    /// When it cannot listen there.
    pub async fn resume(&mut self) {
        if self.relay.is_some() {
            return;
        }
        if let Err(e) = self.launch().await {
            panic!("LocalRelay did not restart on port {}: {e}", self.port);
        }
    }

    /// [`stop`](Self::stop) then [`resume`](Self::resume).
    pub async fn restart(&mut self) {
        self.stop().await;
        self.resume().await;
    }

    async fn launch(&mut self) -> Result<(), String> {
        let l = &self.limits;
        let relay = LocalRelay::builder()
            .addr(IpAddr::V4(Ipv4Addr::LOCALHOST))
            .port(self.port)
            .database(self.database.clone())
            .rate_limit(RateLimit {
                max_reqs: l.max_reqs,
                notes_per_minute: l.events_per_minute,
            })
            .queries_per_minute(l.queries_per_minute)
            .messages_per_minute(l.messages_per_minute)
            .max_query_results(l.max_query_results)
            .max_filter_limit(l.max_filter_limit)
            .default_filter_limit(l.default_filter_limit)
            .max_negentropy_items(l.max_negentropy_items)
            .max_negentropy_subscriptions(l.max_negentropy_subscriptions)
            .max_filters_per_req(l.max_filters_per_req)
            .max_subscription_bytes(l.max_subscription_bytes)
            .max_event_size(l.max_event_size)
            .max_websocket_message_size(l.max_websocket_message_size)
            .build();
        relay
            .run()
            .await
            .map_err(|e| format!("listen on 127.0.0.1:{}: {e}", self.port))?;
        if port_is_free(self.port) {
            return Err(format!("nothing listens on 127.0.0.1:{}", self.port));
        }
        self.relay = Some(relay);
        Ok(())
    }
}

impl Drop for Nip77Relay {
    fn drop(&mut self) {
        if let Some(relay) = self.relay.take() {
            relay.shutdown();
        }
    }
}

impl crate::Launch for Nip77Relay {
    fn set_port(&mut self, port: u16) {
        self.port = port;
    }

    async fn launch(&mut self) -> Result<(), String> {
        Nip77Relay::launch(self).await
    }
}
