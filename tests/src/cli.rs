//! The `grasp-sync` binary, built on first use and run as a child process (so tests can
//! `kill -9` it).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;

use grasp_sync_core::RepoRef;

/// The path of the `grasp-sync` command line as this package builds it
/// (`src/bin/grasp-sync-under-test.rs`): cargo builds a package's binaries before its
/// integration tests, next to the `deps` directory the test runs from; a binary of this
/// package (`src/bin`) finds it beside itself. `GRASP_SYNC_BIN` names another build
/// instead (the load recipe runs an older commit's daemon that way).
pub fn grasp_sync_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("GRASP_SYNC_BIN") {
            return PathBuf::from(bin);
        }
        let exe = std::env::current_exe().expect("the test knows its path");
        let name = format!("grasp-sync-under-test{}", std::env::consts::EXE_SUFFIX);
        let beside = exe.with_file_name(&name);
        if beside.exists() {
            return beside;
        }
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("tests run from target/<profile>/deps");
        let bin = profile_dir.join(name);
        assert!(
            bin.exists(),
            "no binary at {} (run the tests with cargo test -p grasp-sync-tests)",
            bin.display()
        );
        bin
    })
    .clone()
}

/// `grasp-sync sync` arguments for `repos` at `relays` into `data_dir`, with loopback
/// relays allowed, short timeouts and a JSON summary.
pub fn sync_args(repos: &[RepoRef], relays: &[String], data_dir: &Path) -> Vec<String> {
    let mut args: Vec<String> = vec!["sync".into()];
    args.extend(repos.iter().map(ToString::to_string));
    for relay in relays {
        args.push("--relay".into());
        args.push(relay.clone());
    }
    args.extend(
        [
            "--data-dir",
            &data_dir.display().to_string(),
            "--allow-private-relays",
            "--json",
            "--eose-timeout-secs",
            "3",
            "--neg-timeout-secs",
            "2",
            "--timeout-secs",
            "120",
        ]
        .map(String::from),
    );
    args
}

/// What a finished `grasp-sync sync` said.
#[derive(Debug)]
pub struct SyncRun {
    /// The exit code (`None` if killed).
    pub code: Option<i32>,
    /// The JSON summary, if it printed one.
    pub summary: Option<serde_json::Value>,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

impl SyncRun {
    /// A per-relay counter summed over every relay.
    pub fn total(&self, field: &str) -> u64 {
        self.relays()
            .iter()
            .filter_map(|r| r.get(field).and_then(serde_json::Value::as_u64))
            .sum()
    }

    /// The per-relay summaries.
    pub fn relays(&self) -> Vec<serde_json::Value> {
        self.summary
            .as_ref()
            .and_then(|s| s.get("relays"))
            .and_then(serde_json::Value::as_array)
            .cloned()
            .unwrap_or_default()
    }

    /// The summary of the relay at `url`.
    pub fn relay(&self, url: &str) -> Option<serde_json::Value> {
        self.relays()
            .into_iter()
            .find(|r| r.get("url").and_then(serde_json::Value::as_str) == Some(url))
    }
}

/// Runs `grasp-sync` with `args` to the end.
pub async fn run_grasp_sync(args: &[String]) -> SyncRun {
    let output = tokio::process::Command::new(grasp_sync_bin())
        .args(args)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .output()
        .await
        .expect("grasp-sync runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary = stdout
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str(line).ok());
    SyncRun {
        code: output.status.code(),
        summary,
        stdout: stdout.into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Starts `grasp-sync` with `args` without waiting (killed when dropped).
pub fn spawn_grasp_sync(args: &[String]) -> tokio::process::Child {
    tokio::process::Command::new(grasp_sync_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("grasp-sync starts")
}
