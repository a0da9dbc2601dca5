//! `nostr-rs-relay` as a child process: SQLite in a temporary directory, limits raised,
//! no NIP-77.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nostr::prelude::Event;
use tempfile::TempDir;

use crate::raw::{publish, PublishReport, RawClient};
use crate::{launch_on_a_free_port, loopback_url, wait_port_free};

/// The environment variable naming the `nostr-rs-relay` binary (else it is looked up on
/// `PATH`).
pub const NOSTR_RS_RELAY_ENV: &str = "NOSTR_RS_RELAY";

/// How long a start may take before it is reported as failed.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running (or stopped) `nostr-rs-relay` on `127.0.0.1`: a child process with its own
/// port, temporary data directory and generated `config.toml`. Killed on drop.
///
/// It does not speak NIP-77: it answers `NEG-OPEN` with
/// `["NOTICE","could not parse command"]`. It allows 32 subscriptions per connection
/// (fixed in its code), serves every matching stored event when a filter has no `limit`,
/// applies NIP-09 deletions and replaceable-event rules. Writes go to SQLite one event
/// at a time: publishing ten thousand events takes a few seconds.
#[derive(Debug)]
pub struct NostrRsRelay {
    binary: PathBuf,
    port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl NostrRsRelay {
    /// Starts a relay on a free port with an empty database, and waits until it accepts
    /// WebSocket connections.
    ///
    /// # Panics
    /// When the binary is missing (the message names `scripts/install-test-peers.sh`),
    /// or the relay does not come up within 30 s (the message holds its log).
    pub async fn start() -> Self {
        let binary = find_binary().unwrap_or_else(|message| panic!("{message}"));
        let dir = tempfile::Builder::new()
            .prefix("nostr-rs-relay-")
            .tempdir()
            .expect("create a temporary directory for nostr-rs-relay");
        let mut relay = Self {
            binary,
            port: 0,
            dir,
            child: None,
        };
        launch_on_a_free_port(&mut relay, "nostr-rs-relay").await;
        relay
    }

    /// Starts a relay (see [`start`](Self::start)) and publishes `events` to it.
    ///
    /// # Panics
    /// As [`start`](Self::start), and when the relay does not accept every event
    /// (except NIP-09-deleted or replaced ones, which it refuses or hides as it does).
    pub async fn start_with(events: &[Event]) -> Self {
        let relay = Self::start().await;
        let report = relay.publish(events).await;
        assert!(
            report.unanswered == 0,
            "nostr-rs-relay left {} of {} events unanswered: {report:?}",
            report.unanswered,
            events.len()
        );
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

    /// The data directory (SQLite files, `config.toml`, `relay.log`).
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// What the relay has logged (stdout and stderr) since its last start.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("relay.log")).unwrap_or_default()
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Publishes `events` over one connection (see [`publish`]).
    ///
    /// # Panics
    /// When it cannot connect.
    pub async fn publish(&self, events: &[Event]) -> PublishReport {
        publish(&self.url(), events)
            .await
            .unwrap_or_else(|e| panic!("publish to nostr-rs-relay: {e}"))
    }

    /// Kills the process and waits for it (and for its port to be free). Its data
    /// directory stays: [`resume`](Self::resume) starts it again with its events.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = tokio::task::spawn_blocking(move || child.wait()).await;
        }
        wait_port_free(self.port, Duration::from_secs(10)).await;
    }

    /// Starts the relay again on the same port and data directory (a no-op while it
    /// runs), and waits until it accepts connections. A restart keeps its events.
    ///
    /// # Panics
    /// When it does not come up within 30 s.
    pub async fn resume(&mut self) {
        if self.is_running() {
            return;
        }
        self.child = None;
        if let Err(e) = self.launch().await {
            panic!("nostr-rs-relay did not restart on port {}: {e}", self.port);
        }
    }

    /// [`stop`](Self::stop) then [`resume`](Self::resume).
    pub async fn restart(&mut self) {
        self.stop().await;
        self.resume().await;
    }

    /// Writes the config, spawns the process, waits until it answers a WebSocket
    /// handshake. On failure the process is gone and the error holds its log.
    async fn launch(&mut self) -> Result<(), String> {
        let dir = self.dir.path();
        let config = dir.join("config.toml");
        std::fs::write(&config, config_toml(self.port, dir))
            .map_err(|e| format!("write {}: {e}", config.display()))?;
        let log = File::create(dir.join("relay.log")).map_err(|e| format!("relay.log: {e}"))?;
        let log_err = log.try_clone().map_err(|e| format!("relay.log: {e}"))?;
        let child = Command::new(&self.binary)
            .arg("--config")
            .arg(&config)
            .arg("--db")
            .arg(dir)
            .current_dir(dir)
            .env(
                "RUST_LOG",
                std::env::var("NOSTR_RS_RELAY_LOG").unwrap_or("warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", self.binary.display()))?;
        self.child = Some(child);

        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if !self.is_running() {
                self.child = None;
                return Err(format!("it exited; its log:\n{}", self.log()));
            }
            let attempt =
                tokio::time::timeout(Duration::from_secs(2), RawClient::connect(&self.url())).await;
            if let Ok(Ok(client)) = attempt {
                client.close().await;
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                if let Some(mut child) = self.child.take() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                return Err(format!(
                    "no WebSocket handshake within {START_TIMEOUT:?}; its log:\n{}",
                    self.log()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for NostrRsRelay {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The binary: `$NOSTR_RS_RELAY`, else `nostr-rs-relay` on `PATH` or in `~/.cargo/bin`.
fn find_binary() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(NOSTR_RS_RELAY_ENV) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "{NOSTR_RS_RELAY_ENV}={} is not a file; run scripts/install-test-peers.sh \
                 to install nostr-rs-relay",
                path.display()
            ))
        };
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    if let Some(home) = cargo_home {
        dirs.push(home.join("bin"));
    }
    dirs.into_iter()
        .map(|dir| dir.join("nostr-rs-relay"))
        .find(|path| path.is_file())
        .ok_or_else(|| {
            "nostr-rs-relay not found (neither $NOSTR_RS_RELAY nor on PATH): run \
             scripts/install-test-peers.sh to install it"
                .to_owned()
        })
}

/// The relay's configuration: loopback, no authentication, no whitelist, no payment,
/// limits off or far above what tests send.
fn config_toml(port: u16, dir: &Path) -> String {
    // TOML basic strings: escape backslashes and quotes in the path.
    let dir = dir
        .display()
        .to_string()
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    format!(
        r#"# Generated by grasp-sync-tests for one test relay.
[info]
relay_url = "ws://127.0.0.1:{port}/"
name = "grasp-sync test nostr-rs-relay"
description = "A throw-away relay for integration tests."

[database]
engine = "sqlite"
data_directory = "{dir}"
in_memory = false
min_conn = 1
max_conn = 4

[network]
address = "127.0.0.1"
port = {port}
ping_interval_seconds = 300

[options]
# Accept events whatever their created_at (the corpus dates from 2023).

[limits]
# Unset rates are unlimited; sizes far above any NIP-34 event.
messages_per_sec = 0
subscriptions_per_min = 0
max_blocking_threads = 16
max_event_bytes = 16777216
max_ws_message_bytes = 67108864
max_ws_frame_bytes = 67108864
broadcast_buffer = 65536
event_persist_buffer = 16384

[authorization]
nip42_auth = false
nip42_dms = false

[verified_users]
mode = "disabled"

[pay_to_relay]
enabled = false

[retention]
"#
    )
}

impl crate::Launch for NostrRsRelay {
    fn set_port(&mut self, port: u16) {
        self.port = port;
    }

    async fn launch(&mut self) -> Result<(), String> {
        NostrRsRelay::launch(self).await
    }
}
