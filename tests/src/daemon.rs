//! `grasp-sync serve` as a child process on a loopback port, with its HTTP side
//! (`/health`, `/metrics`) and the signals an operator sends it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::cli::grasp_sync_bin;
use crate::{free_port, loopback_url, wait_port_free, RawClient};

/// A running `grasp-sync serve`. Killed when dropped.
pub struct Daemon {
    child: Option<tokio::process::Child>,
    port: u16,
    data_dir: PathBuf,
    extra: Vec<String>,
    allow_private: bool,
    log: PathBuf,
    http: reqwest::Client,
}

/// A [`Daemon`] with its store in a temporary directory of its own (the daemon is
/// dropped, and so killed, before the directory).
pub struct TempDaemon {
    daemon: Daemon,
    _dir: tempfile::TempDir,
}

impl TempDaemon {
    /// [`Daemon::start`] with `extra` flags, its store in a new temporary directory.
    ///
    /// # Panics
    /// When the directory cannot be made or the daemon does not start.
    pub async fn start(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let daemon = Daemon::start(&dir.path().join("store"), extra).await;
        Self { daemon, _dir: dir }
    }
}

impl std::ops::Deref for TempDaemon {
    type Target = Daemon;
    fn deref(&self) -> &Daemon {
        &self.daemon
    }
}

impl std::ops::DerefMut for TempDaemon {
    fn deref_mut(&mut self) -> &mut Daemon {
        &mut self.daemon
    }
}

impl Daemon {
    /// A raw WebSocket client connected to this daemon (within 10 s).
    ///
    /// # Panics
    /// When it cannot connect.
    pub async fn raw_client(&self) -> RawClient {
        RawClient::connect_within(&self.url(), Duration::from_secs(10))
            .await
            .expect("connect to the daemon")
    }

    /// Starts `grasp-sync serve` on a free loopback port with its store in `data_dir`,
    /// relays at loopback addresses allowed, short sync timeouts, and `extra` flags;
    /// waits (up to 30 s) until `/health` answers.
    ///
    /// # Panics
    /// When it does not start.
    pub async fn start(data_dir: &Path, extra: &[&str]) -> Self {
        Self::start_with(data_dir, extra, true).await
    }

    /// As [`start`](Self::start), but relays at private and loopback addresses are
    /// refused as on a daemon on the internet (no `--allow-private-relays`).
    ///
    /// # Panics
    /// When it does not start.
    pub async fn start_strict(data_dir: &Path, extra: &[&str]) -> Self {
        Self::start_with(data_dir, extra, false).await
    }

    async fn start_with(data_dir: &Path, extra: &[&str], allow_private: bool) -> Self {
        let mut daemon = Self {
            child: None,
            port: free_port(),
            data_dir: data_dir.to_owned(),
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            allow_private,
            log: data_dir.with_extension("serve.log"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("an HTTP client"),
        };
        daemon.launch().await;
        daemon
    }

    async fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("the daemon's log file opens");
        let mut args: Vec<String> = [
            "serve",
            "--listen",
            &format!("127.0.0.1:{}", self.port),
            "--data-dir",
            &self.data_dir.display().to_string(),
            "--map-size-mib",
            "1024",
            "--backoff-base-secs",
            "1",
            "--backoff-cap-secs",
            "5",
        ]
        .map(String::from)
        .to_vec();
        if self.allow_private {
            args.push("--allow-private-relays".into());
        }
        args.extend(self.extra.iter().cloned());
        let child = tokio::process::Command::new(grasp_sync_bin())
            .args(&args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            // No config file from the working directory.
            .env("GRASP_SYNC_CONFIG", "/dev/null")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("grasp-sync serve starts");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if self.health().await.is_some() {
                return;
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("grasp-sync serve exited with {status}:\n{}", self.log());
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "grasp-sync serve did not answer /health within 30 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `ws://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        loopback_url(self.port)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(tokio::process::Child::id)
    }

    /// Everything the daemon logged so far (all its runs).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `/health` as JSON, if it answers 200.
    pub async fn health(&self) -> Option<serde_json::Value> {
        let response = self
            .http
            .get(format!("{}/health", self.http_url()))
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.json().await.ok()
    }

    /// The `/metrics` page.
    ///
    /// # Panics
    /// When it does not answer.
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.http_url()))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .expect("/metrics answers")
            .text()
            .await
            .expect("/metrics has a body")
    }

    /// The value of the series `series` (name with its labels, as printed) in
    /// `/metrics`.
    ///
    /// # Panics
    /// When `/metrics` has no such series (see [`metric_value`]).
    pub async fn metric(&self, series: &str) -> u64 {
        let page = self.metrics().await;
        metric_value(&page, series)
            .unwrap_or_else(|| panic!("/metrics has no series {series}:\n{page}"))
    }

    /// A labelled counter printed only once counted, 0 before (see [`counter_value`]).
    pub async fn counter(&self, series: &str) -> u64 {
        counter_value(&self.metrics().await, series)
    }

    /// The operator API token the daemon wrote into its data directory.
    ///
    /// # Panics
    /// When it cannot be read.
    pub fn api_token(&self) -> String {
        grasp_sync::api_token::read(&self.data_dir).expect("the daemon wrote its API token")
    }

    /// The NIP-11 document.
    ///
    /// # Panics
    /// When it does not answer with JSON.
    pub async fn nip11(&self) -> serde_json::Value {
        self.http
            .get(self.http_url())
            .header("Accept", "application/nostr+json")
            .send()
            .await
            .expect("NIP-11 answers")
            .json()
            .await
            .expect("NIP-11 is JSON")
    }

    /// SIGTERM, then waits (up to 30 s) for the exit; returns the exit code.
    ///
    /// # Panics
    /// When it does not exit in time.
    pub async fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        if let Some(pid) = child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .unwrap_or_else(|_| panic!("grasp-sync serve ignored SIGTERM:\n{}", self.log()))
            .expect("waiting for grasp-sync serve");
        assert!(
            wait_port_free(self.port, Duration::from_secs(10)).await,
            "port {} still taken after the daemon exited",
            self.port
        );
        status.code()
    }

    /// SIGKILL (`kill -9`): no chance to finish anything.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
        wait_port_free(self.port, Duration::from_secs(10)).await;
    }

    /// Starts again with the same port, store and flags (after `stop` or `kill`).
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "restart a stopped daemon");
        self.launch().await;
    }
}

/// The value of `series` (name with its labels, as printed) in a Prometheus text page,
/// `None` when the page has no such series: a renamed or missing series never reads as 0.
pub fn metric_value(page: &str, series: &str) -> Option<u64> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.trim().parse::<f64>().ok())?
        })
        .map(|v| v as u64)
}

/// The value of a labelled counter that is printed only once counted (the server's
/// `…{reason="…"}` counters): 0 when that label has not been counted yet.
///
/// # Panics
/// When the page does not declare the counter at all (`# TYPE <name> counter`): a
/// renamed or removed counter fails the test instead of reading as 0.
pub fn counter_value(page: &str, series: &str) -> u64 {
    let family = series.split_once('{').map_or(series, |(name, _)| name);
    let declared = format!("# TYPE {family} counter");
    assert!(
        page.lines().any(|l| l == declared),
        "/metrics has no counter {family}:\n{page}"
    );
    metric_value(page, series).unwrap_or(0)
}
