//! `grasp-sync serve`: the daemon. A nostr relay (NIP-01, NIP-11, NIP-45, NIP-77) over
//! the LMDB store, which at the same time mirrors every tracked repository from the
//! relays its announcement lists, with the shared driver and engine.
//!
//! Threads: the sync engine's loop, the API requests that need it and one-shot syncs
//! handed over by `grasp-sync sync` run on the `LocalSet` of the calling thread (the
//! driver is not `Send`); HTTP and client connections are tasks on the multi-threaded
//! runtime. They meet in three places: a command channel into the engine (published
//! events), the store's broadcast of commits (live subscriptions), and a snapshot of
//! the engine the loop refreshes for `/metrics` and `/health`.

pub mod auth;
pub mod config;
pub mod conn;
pub mod fanout;
pub mod files;
pub mod http;
pub mod hub;
pub mod limits;
pub mod metrics;
pub mod nip11;
pub mod open;
pub mod subindex;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::channel::mpsc as fmpsc;
use futures::SinkExt;
use grasp_sync_core::accept::AnnouncementPolicy;
use grasp_sync_core::engine::{EngineConfig, SyncEngine, Time};
use grasp_sync_core::filters::DiscoveryScope;
use grasp_sync_core::nip34::kinds;
use grasp_sync_core::{RelayUrl, RepoRef};
use grasp_sync_driver::{tracked_events, Command, Control, Driver, Store};
use nostr::prelude::Filter;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};

use crate::clock::SystemClock;
use crate::daemon::{LockError, Owner, StoreLock};
use crate::net::{NativeNetwork, NetConfig};
use crate::status::store_status;
use crate::store::LmdbStore;
use crate::sync::{method_name, relay_reports, state_name, sync_into, sync_targets, SyncOptions};
use crate::verify::ParallelVerifier;
use config::Settings;
use conn::Shared;
use http::{ApiError, ApiRequest, Http};
use hub::BroadcastStore;
use limits::IpRegistry;
use metrics::{ServerMetrics, SyncSnapshot};

/// Commands waiting for the engine's loop before publishers wait.
const COMMAND_QUEUE: usize = 1_024;
/// Store loads (REQ, COUNT, NEG-OPEN) at once over all client connections.
const CONCURRENT_LOADS: usize = 8;
/// How often the loop refreshes the snapshot `/metrics` reads.
const SNAPSHOT_INTERVAL: Duration = Duration::from_millis(500);
/// Connections waiting to be accepted.
const LISTEN_BACKLOG: u32 = 1_024;
/// How long client connections get to close after the loop stopped.
const CLIENT_GRACE: Duration = Duration::from_secs(2);

/// Runs the daemon until SIGINT or SIGTERM. Must run inside a tokio `LocalSet`.
pub async fn run(mut settings: Settings) -> Result<(), String> {
    let mut lock = StoreLock::acquire(
        &settings.data_dir,
        &Owner {
            pid: std::process::id(),
            command: "serve".into(),
            http: None,
        },
    )
    .map_err(|e| match e {
        LockError::Held(_) => format!(
            "{e} at {}: stop it first, or give this daemon another --data-dir",
            settings.data_dir.display()
        ),
        LockError::Io(e) => format!("cannot lock the store: {e}"),
    })?;
    let listener = listen(settings.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", settings.listen))?;
    let local_addr = listener
        .local_addr()
        .map_err(|e| format!("cannot read the listening address: {e}"))?;
    if settings.public_urls_derived {
        // Derived from where we really listen (port 0 picks one).
        let derived = grasp_sync_core::RelayUrl::parse(&format!("ws://{local_addr}"))
            .map_err(|e| format!("public URL: {e}"))?;
        settings.public_urls = BTreeSet::from([derived]);
        tracing::warn!(
            url = %local_addr,
            "no public URL is configured: announcements must list ws://{local_addr} to be \
             accepted (set public_urls in the config or --public-url)"
        );
    }
    let store = LmdbStore::open(&settings.data_dir, settings.map_size)
        .await
        .map_err(|e| e.to_string())?;
    let api_token = crate::api_token::create(&settings.data_dir)
        .map_err(|e| format!("cannot write the operator API token: {e}"))?;
    let hub = BroadcastStore::new(store.clone());

    let mut driver = Driver::new(
        SyncEngine::new(engine_config(&settings)),
        NativeNetwork::new(NetConfig {
            allow_private: settings.allow_private_relays,
            trusted: settings.bootstrap_relays.iter().cloned().collect(),
            ..NetConfig::default()
        })?,
        hub.clone(),
        ParallelVerifier,
        SystemClock,
    );
    driver.start(&DiscoveryScope::All).await?;
    tracing::info!(
        repositories = driver.engine().index().repo_count(),
        loaded = driver.stats().loaded_events,
        "store restored"
    );

    let (commands, commands_rx) = fmpsc::channel::<Command>(COMMAND_QUEUE);
    let (shutdown_tx, shutdown) = watch::channel(false);
    let (api, api_rx) = mpsc::channel::<ApiRequest>(64);
    let server_metrics = Arc::new(ServerMetrics::default());
    let registry = IpRegistry::new(
        settings.limits.max_connections,
        settings.limits.connections_per_ip,
        settings.limits.events_per_minute_per_ip,
    );
    let snapshot = Arc::new(Mutex::new(SyncSnapshot::default()));
    let http = Arc::new(Http {
        shared: Arc::new(Shared {
            store: hub.clone(),
            commands: commands.clone(),
            limits: settings.limits.clone(),
            metrics: Arc::clone(&server_metrics),
            loads: Semaphore::new(CONCURRENT_LOADS),
            any_event: settings.mode == config::AcceptMode::AnyEvent,
            auth: auth::Policy {
                required: settings.auth_required,
                urls: settings.public_urls.clone(),
                writers: match (&settings.announcements, settings.auth_required.writes()) {
                    (AnnouncementPolicy::AllowList(authors), true) => Some(authors.clone()),
                    _ => None,
                },
            },
            shutdown: shutdown.clone(),
        }),
        registry: registry.clone(),
        nip11: nip11::document(&settings).to_string(),
        snapshot: Arc::clone(&snapshot),
        api,
        trust_forwarded_for: settings.trust_forwarded_for,
        api_token,
        web: settings.web_dir.clone().map(|dir| http::WebFiles {
            dir,
            location: files::page_location(
                settings
                    .public_urls
                    .iter()
                    .next()
                    .map_or("", |u| u.as_str()),
                settings.allow_private_relays,
            ),
        }),
    });
    let accepting = tokio::spawn(http::accept_loop(listener, http, shutdown.clone()));
    tokio::task::spawn_local(serve_api(
        api_rx,
        store,
        hub,
        commands.clone(),
        Arc::clone(&snapshot),
        settings.clone(),
    ));
    tokio::spawn(stop_on_signal(shutdown_tx.clone(), commands.clone()));
    lock.record(&Owner {
        pid: std::process::id(),
        command: "serve".into(),
        http: Some(local_addr),
    })
    .map_err(|e| format!("cannot write the lock file: {e}"))?;
    tracing::info!(
        listen = %local_addr,
        public = ?settings.public_urls.iter().map(|u| u.as_str()).collect::<Vec<_>>(),
        data_dir = %settings.data_dir.display(),
        "grasp-sync relay listening"
    );
    eprintln!(
        "grasp-sync {}: relay listening on ws://{local_addr} (HTTP: /metrics, /health), \
         store in {}",
        env!("CARGO_PKG_VERSION"),
        settings.data_dir.display()
    );

    // A step at least every snapshot interval, so what /metrics reports catches up with
    // the loop's last step even when nothing else happens.
    let ticks = futures::stream::unfold((), |()| async {
        tokio::time::sleep(SNAPSHOT_INTERVAL).await;
        Some((Command::Observe, ()))
    });
    let commands_rx = futures::stream::select(commands_rx, Box::pin(ticks));
    let mut last_snapshot = Time::default();
    let exit = driver
        .run(commands_rx, |engine, now| {
            if now.since(last_snapshot) >= SNAPSHOT_INTERVAL {
                last_snapshot = now;
                *snapshot.lock().unwrap_or_else(PoisonError::into_inner) =
                    take_snapshot(engine, now);
            }
            Control::Continue
        })
        .await;
    let _ = shutdown_tx.send(true);
    tracing::info!(?exit, "sync loop stopped; in-flight writes finished");
    let deadline = Instant::now() + CLIENT_GRACE;
    while registry.connections() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    accepting.abort();
    drop(lock);
    Ok(())
}

/// A listener with a backlog for bursts of connections (the default, 128, overflows
/// when a thousand clients connect at once).
fn listen(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The engine's configuration for the daemon.
fn engine_config(settings: &Settings) -> EngineConfig {
    let mut config = EngineConfig {
        bootstrap_relays: settings.bootstrap_relays.clone(),
        discovery: DiscoveryScope::All,
        seed: std::process::id().into(),
        ..EngineConfig::default()
    };
    config.index.relay_policy.allow_private = settings.allow_private_relays;
    // Our own URLs are never a relay to sync from.
    config.index.own_urls = settings.public_urls.clone();
    config.accept.announcements = settings.announcements.clone();
    config.accept.own_urls = settings.public_urls.clone();
    // The open mode stores what it does not mirror: announcements are tracked (and
    // their relays synced) only when they list us.
    let any_event = settings.mode == config::AcceptMode::AnyEvent;
    config.accept.any_event = any_event;
    config.index.only_listing_us = any_event;
    config.accept.max_event_bytes = settings.limits.max_event_bytes;
    config.accept.max_tags = settings.limits.max_event_tags;
    config.timing.backoff_base = settings.backoff_base;
    config.timing.backoff_cap = settings.backoff_cap;
    config.timing.eose_timeout = settings.eose_timeout;
    config.timing.neg_idle_timeout = settings.eose_timeout;
    config.timing.neg_first_frame_timeout = settings.neg_timeout;
    config
}

fn take_snapshot(engine: &SyncEngine, now: Time) -> SyncSnapshot {
    SyncSnapshot {
        relays: relay_reports(engine),
        repos: engine.index().repo_count(),
        roots: engine.index().root_count(),
        engine: engine.stats().clone(),
        settled: engine.is_settled(),
        at: now,
    }
}

/// SIGINT or SIGTERM: stop accepting, tell the loop to finish its writes.
async fn stop_on_signal(shutdown: watch::Sender<bool>, mut commands: fmpsc::Sender<Command>) {
    wait_for_signal().await;
    tracing::info!("stopping: finishing in-flight writes");
    let _ = shutdown.send(true);
    let _ = commands.send(Command::Stop).await;
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

/// Answers API requests that need the loop's thread: the status text, and one-shot
/// syncs handed over by `grasp-sync sync`.
async fn serve_api(
    mut requests: mpsc::Receiver<ApiRequest>,
    store: LmdbStore,
    hub: BroadcastStore,
    commands: fmpsc::Sender<Command>,
    snapshot: Arc<Mutex<SyncSnapshot>>,
    settings: Settings,
) {
    while let Some(request) = requests.recv().await {
        match request {
            ApiRequest::Ping(reply) => {
                let _ = reply.send(());
            }
            ApiRequest::Status(reply) => {
                let mut text = store_status(&store, &settings.data_dir)
                    .await
                    .unwrap_or_else(|e| format!("the store could not be read: {e}\n"));
                let snap = snapshot
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                text.push_str(&live_status(&snap, &settings));
                let _ = reply.send(text);
            }
            ApiRequest::Sync(body, reply) => {
                let handoff = match handoff_request(&body, &settings) {
                    Ok(handoff) => handoff,
                    Err(e) => {
                        let _ = reply.send(Err(e));
                        continue;
                    }
                };
                let hub = hub.clone();
                let mut commands = commands.clone();
                let index_config = engine_config(&settings).index;
                tokio::task::spawn_local(async move {
                    let result = handoff_sync(handoff, hub.clone()).await;
                    if let Ok((_, repos)) = &result {
                        // The repositories the daemon's policy took (announcements and
                        // roots) join its own engine, which keeps them in sync from now
                        // on. Deletions and ids it saw and did not keep go along, so the
                        // engine does not take in again what the sync refused.
                        let scope = DiscoveryScope::Repos(repos.clone());
                        let restored = match tracked_events(&hub, &scope, &index_config).await {
                            Ok(events) => Store::load_state(&hub)
                                .await
                                .map(|state| (events, state.remembered))
                                .map_err(String::from),
                            Err(e) => Err(e),
                        };
                        match restored {
                            Ok((events, remembered)) => {
                                let restore = Command::Restore { events, remembered };
                                let _ = commands.send(restore).await;
                            }
                            Err(e) => tracing::warn!(error = %e, "handed-over repositories"),
                        }
                    }
                    let _ = reply.send(result.map(|(report, _)| report));
                });
            }
        }
    }
}

/// A sync handed over by `grasp-sync sync`, checked against the daemon's policy.
struct Handoff {
    options: SyncOptions,
    repos: Vec<RepoRef>,
    relays: BTreeSet<RelayUrl>,
}

/// Runs a handed-over sync into the daemon's store; the JSON report and the
/// repositories the daemon now tracks (those whose announcement its policy accepted).
async fn handoff_sync(
    handoff: Handoff,
    store: BroadcastStore,
) -> Result<(serde_json::Value, Vec<RepoRef>), ApiError> {
    let Handoff {
        options,
        repos,
        relays,
    } = handoff;
    let report = sync_into(&options, store.clone(), repos.clone(), relays)
        .await
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let mut tracked = Vec::new();
    let mut not_tracked = Vec::new();
    for repo in repos {
        let filter = Filter::new()
            .kind(kinds::REPO_ANNOUNCEMENT)
            .author(repo.pubkey)
            .identifier(repo.identifier.clone());
        match Store::query(&store, filter).await {
            Ok(found) if !found.is_empty() => tracked.push(repo),
            Ok(_) => not_tracked.push(repo.to_string()),
            Err(e) => return Err(ApiError::BadRequest(format!("the store: {e}"))),
        }
    }
    let mut json = report.json();
    if let serde_json::Value::Object(map) = &mut json {
        map.insert("table".into(), report.table().into());
        map.insert("nothing_synced".into(), report.nothing_synced().into());
        map.insert("not_tracked".into(), not_tracked.into());
    }
    Ok((json, tracked))
}

/// The sync a request `{"repos": [...], "relays": [...], …}` asks for. A request never
/// widens policy: the relays it names are checked like any other (unless the daemon's
/// own configuration allows private relays), and acceptance is the daemon's.
fn handoff_request(body: &serde_json::Value, settings: &Settings) -> Result<Handoff, ApiError> {
    let bad = ApiError::BadRequest;
    let strings = |name: &str| -> Result<Vec<String>, ApiError> {
        match body.get(name) {
            None => Ok(Vec::new()),
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| bad(format!("`{name}` must hold strings")))
                })
                .collect(),
            Some(_) => Err(bad(format!("`{name}` must be an array of strings"))),
        }
    };
    if body.get("allow_private_relays").is_some() {
        return Err(bad(
            "`allow_private_relays` is the daemon's own setting; a request cannot set it".into(),
        ));
    }
    let number = |name: &str| body.get(name).and_then(serde_json::Value::as_u64);
    let mut options = SyncOptions::new(
        strings("repos")?,
        strings("relays")?,
        settings.data_dir.clone(),
    );
    let engine = engine_config(settings);
    options.own_urls = settings.public_urls.clone();
    options.allow_private_relays = settings.allow_private_relays;
    options.trust_named_relays = false;
    options.accept = engine.accept;
    if let Some(secs) = number("timeout_secs") {
        options.timeout = Duration::from_secs(secs.max(1));
    }
    if let Some(n) = number("attempts") {
        options.attempts = n.max(1);
    }
    if let Some(secs) = number("eose_timeout_secs") {
        options.eose_timeout = Duration::from_secs(secs.max(1));
    }
    if let Some(secs) = number("neg_timeout_secs") {
        options.neg_timeout = Duration::from_secs(secs.max(1));
    }
    let (repos, relays) = sync_targets(&options).map_err(|e| bad(e.to_string()))?;
    for relay in &relays {
        if let Err(e) = engine.index.relay_policy.check(relay) {
            return Err(ApiError::Refused(format!(
                "relay {relay}: {e} (the daemon's configuration does not allow private relays)"
            )));
        }
    }
    Ok(Handoff {
        options,
        repos,
        relays,
    })
}

/// The daemon's live view of its relays, appended to the store's status.
fn live_status(snapshot: &SyncSnapshot, settings: &Settings) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\ndaemon: pid {}, public URL(s) {}",
        std::process::id(),
        settings
            .public_urls
            .iter()
            .map(|u| u.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let _ = writeln!(
        out,
        "{} repositories and {} roots tracked, {} events stored since start ({} published by clients){}",
        snapshot.repos,
        snapshot.roots,
        snapshot.engine.stored,
        snapshot.engine.published.stored,
        if snapshot.settled { ", every relay in sync or failing" } else { ", syncing" }
    );
    for r in &snapshot.relays {
        let rejected: u64 = r.stats.events_rejected.values().sum();
        let _ = writeln!(
            out,
            "  {:<40} {:<8} {:<7} {} received, {} stored, {} rejected, {} failures",
            r.url.as_str(),
            state_name(r.phase, &r.stats),
            method_name(r.method),
            r.stats.events_received,
            r.stats.events_accepted,
            rejected,
            r.stats.failures
        );
    }
    out
}
