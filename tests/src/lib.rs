//! Integration and end-to-end tests across crates, against real relays on loopback.
//! The core's own unit and property tests live in `crates/core/tests`.
//!
//! This library is the harness those tests use:
//!
//! - [`NostrRsRelay`]: the `nostr-rs-relay` binary as a child process (SQLite, no
//!   NIP-77: it answers `NEG-OPEN` with a `NOTICE`); install it with
//!   `scripts/install-test-peers.sh`.
//! - [`Nip77Relay`]: rust-nostr's in-process `LocalRelay` (NIP-77), preloaded straight
//!   into its in-memory database, limits raised ([`Nip77Limits`]).
//! - [`SilentRelay`]: accepts WebSocket connections and answers nothing.
//! - [`Daemon`]: `grasp-sync serve` as a child process (SIGTERM, `kill -9`, restart on
//!   the same port and store), with `/health`, `/metrics` and NIP-11.
//! - [`RawClient`]: one WebSocket connection speaking raw JSON frames, to see exactly
//!   what a relay answers; [`publish`] pipelines many `EVENT`s over one.
//! - [`client`]: a connected nostr-sdk `Client`.
//! - [`corpus`] and [`split`]: a signed NIP-34 corpus from the testkit, and a way to
//!   spread it over several relays with overlap.
//!
//! Everything binds `127.0.0.1` only. The relays are `async` (tokio): use them from
//! `#[tokio::test]`s, preferably `flavor = "multi_thread"`.

#![warn(missing_docs)]

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use grasp_sync_testkit::{Corpus, CorpusSpec, Rng};
use nostr::prelude::Event;

mod cli;
mod daemon;
mod nip77_relay;
mod nostr_rs_relay;
mod raw;
mod silent_relay;

pub use cli::{grasp_sync_bin, run_grasp_sync, spawn_grasp_sync, sync_args, SyncRun};
pub use daemon::{counter_value, metric_value, Daemon, TempDaemon};
pub use nip77_relay::{Nip77Limits, Nip77Relay};
pub use nostr_rs_relay::NostrRsRelay;
pub use raw::{publish, publish_one, PublishReport, RawClient};
pub use silent_relay::SilentRelay;

/// Re-exported so tests use the exact nostr-sdk the harness was built with.
pub use nostr_sdk;

/// The kind of a NIP-34 repository announcement, put on every relay by [`split`].
pub const ANNOUNCEMENT_KIND: u16 = 30617;

/// A relay that listens on the port it is given.
trait Launch {
    /// Uses `port` from now on.
    fn set_port(&mut self, port: u16);
    /// Starts listening; `Err` with the reason when it could not.
    async fn launch(&mut self) -> Result<(), String>;
}

/// Launches `relay` on a free port. A port found free may be taken before the relay
/// binds it: three ports are tried.
///
/// # Panics
/// When all three fail (the message names `what` and the last error).
async fn launch_on_a_free_port(relay: &mut impl Launch, what: &str) {
    let mut last_error = String::new();
    for _ in 0..3 {
        relay.set_port(free_port());
        match relay.launch().await {
            Ok(()) => return,
            Err(e) => last_error = e,
        }
    }
    panic!("{what} did not start: {last_error}");
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then released).
///
/// Another process may take it before it is used again; the relays here retry with a
/// fresh port when their first bind fails.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .expect("bind 127.0.0.1:0 to find a free port");
    listener
        .local_addr()
        .expect("local address of a bound listener")
        .port()
}

/// A nostr-sdk `Client` over an unbounded in-memory database (what it fetches or syncs
/// is kept there; its default database keeps nothing), with the relay at `url` added
/// (its client-side size limits off) and connected: waits up to 10 s for the connection.
///
/// # Panics
/// When `url` is not a relay URL.
pub async fn client(url: &str) -> nostr_sdk::client::Client {
    let client = nostr_sdk::client::Client::builder()
        .database(nostr_memory::MemoryDatabase::unbounded())
        .build();
    client
        .add_relay(url)
        .limits(nostr_sdk::prelude::RelayLimits::disable())
        .await
        .unwrap_or_else(|e| panic!("add relay {url}: {e}"));
    client.connect().and_wait(Duration::from_secs(10)).await;
    client
}

/// Every id a `grasp-sync` store in `dir` holds (no process may be writing it), after
/// checking each stored event's id and signature and that none is stored twice.
///
/// # Panics
/// When the store does not open or read, or holds a forged or doubled event.
pub async fn stored_ids(
    dir: &std::path::Path,
) -> std::collections::BTreeSet<nostr::prelude::EventId> {
    use grasp_sync_driver::Store;
    let store = grasp_sync::store::LmdbStore::open(dir, 1 << 30)
        .await
        .expect("store opens");
    let events = Store::query(&store, nostr::prelude::Filter::new())
        .await
        .expect("query");
    let ids: std::collections::BTreeSet<_> = events.iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), events.len(), "an event stored twice");
    assert!(
        events.iter().all(|e| e.verify().is_ok()),
        "a forged event stored"
    );
    ids
}

/// `ws://127.0.0.1:PORT`.
pub fn loopback_url(port: u16) -> String {
    format!("ws://127.0.0.1:{port}")
}

/// True when nothing listens on `127.0.0.1:port` (a listener could be bound there with
/// `SO_REUSEADDR`, as tokio's and the relays' listeners are).
pub(crate) fn port_is_free(port: u16) -> bool {
    let Ok(socket) = tokio::net::TcpSocket::new_v4() else {
        return false;
    };
    if socket.set_reuseaddr(true).is_err() {
        return false;
    }
    socket
        .bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        .and_then(|()| socket.listen(1))
        .is_ok()
}

/// Waits (up to `timeout`) until `port` is free; false on time-out.
pub(crate) async fn wait_port_free(port: u16, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if port_is_free(port) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A signed NIP-34 corpus (see [`grasp_sync_testkit::corpus`]): `repos` repositories of
/// about `events_per_repo` events each (plus announcements), every announcement listing
/// all of `relays`, spread over 30 days from 2023-11-14, nothing in the live window.
///
/// Use [`Corpus::generate`] directly for other shapes (relays per repository, live
/// events).
pub fn corpus(seed: u64, repos: usize, events_per_repo: usize, relays: &[String]) -> Corpus {
    Corpus::generate(&CorpusSpec {
        seed,
        repos,
        events_per_repo,
        relays: relays.to_vec(),
        relays_per_repo: relays.len().max(1),
        ..CorpusSpec::default()
    })
}

/// Spreads `events` over `relays` relays with overlap: each event goes to relay `i` with
/// probability `percent` %, independently, and to one relay picked at random when that
/// chose none, so every event is on at least one relay. Announcements (kind 30617) go to
/// every relay. Deterministic in `seed`; the order of `events` is kept on each relay.
///
/// `split(events, 3, 50, seed)` puts each event on about half the relays.
pub fn split(events: &[Event], relays: usize, percent: u64, seed: u64) -> Vec<Vec<Event>> {
    let mut out: Vec<Vec<Event>> = vec![Vec::new(); relays];
    if relays == 0 {
        return out;
    }
    let mut rng = Rng::new(seed ^ SPLIT_SALT);
    for event in events {
        if event.kind.as_u16() == ANNOUNCEMENT_KIND {
            for relay in out.iter_mut() {
                relay.push(event.clone());
            }
            continue;
        }
        let mut placed = false;
        for relay in out.iter_mut() {
            if rng.chance(percent) {
                relay.push(event.clone());
                placed = true;
            }
        }
        if !placed {
            out[rng.below(relays as u64) as usize].push(event.clone());
        }
    }
    out
}

/// Mixed into [`split`]'s seed so it does not replay the corpus' own draws.
const SPLIT_SALT: u64 = 0x5eed_0000_5b1a_7000;
