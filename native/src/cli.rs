//! The `grasp-sync` command line: `sync`, `status`, `serve`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use crate::daemon::{LockError, Owner, StoreLock};
use crate::serve::config::{FileConfig, DEFAULT_CONFIG_FILE};
use crate::status::{print_status, StatusOptions};
use crate::sync::{run_sync, SyncError, SyncOptions, SyncReport};
use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// `grasp-sync sync`'s exit status when the timeout passed with relays not in sync.
const SYNC_TIMED_OUT: u8 = 3;
/// `sync`'s exit status when it settled with a relay that left a gap.
const SYNC_GAPS: u8 = 4;

/// A sync engine for git-over-nostr (NIP-34).
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Mirror repositories into the store once: follows the relays their announcements
    /// list, syncs every layer, exits when every relay is in sync or has failed.
    ///
    /// Exit status: 0 when every relay is in sync or has failed; 3 when --timeout-secs
    /// passed first, with relays not in sync (what was synced is kept); 1 when nothing
    /// could be synced, no announcement was found, or on an error; 2 on a usage error.
    Sync {
        /// Repository references: `30617:<pubkey hex>:<identifier>` or `naddr1…`.
        #[arg(required = true)]
        repos: Vec<String>,
        /// A relay to ask for the announcements (repeatable); `naddr` relay hints count too.
        #[arg(long = "relay", value_name = "URL")]
        relays: Vec<String>,
        /// Where the store lives.
        #[arg(long, env = "GRASP_SYNC_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        /// LMDB map size in MiB (the largest the store may grow).
        #[arg(long, env = "GRASP_SYNC_MAP_SIZE_MIB", default_value_t = 16 * 1024)]
        map_size_mib: usize,
        /// Follow relays at private, loopback or link-local addresses.
        #[arg(long, env = "GRASP_SYNC_ALLOW_PRIVATE_RELAYS")]
        allow_private_relays: bool,
        /// Give up after this many seconds (exit status 3 if relays are not in sync).
        #[arg(long, default_value_t = 600)]
        timeout_secs: u64,
        /// Connection attempts per relay before it counts as failed.
        #[arg(long, default_value_t = 3)]
        attempts: u64,
        /// No progress bars.
        #[arg(long, short)]
        quiet: bool,
        /// Print the summary as JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Seconds a REQ may go without EOSE.
        #[arg(long, default_value_t = 30)]
        eose_timeout_secs: u64,
        /// Seconds a NEG-OPEN may go unanswered before falling back to REQ.
        #[arg(long, default_value_t = 10)]
        neg_timeout_secs: u64,
    },
    /// Show tracked repositories, known relays and their checkpoints: from the running
    /// daemon when one uses the store, else from the store itself.
    Status {
        /// Where the store lives.
        #[arg(long, env = "GRASP_SYNC_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
    },
    /// Run the relay daemon: a nostr relay (NIP-01, 11, 45, 77) that mirrors every
    /// repository it tracks from the relays their announcements list.
    Serve(Box<ServeArgs>),
}

/// `grasp-sync serve` flags; each overrides the configuration file, and each has a
/// `GRASP_SYNC_*` environment variable (lists: comma-separated).
#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    /// A TOML configuration file (default: ./grasp-sync.toml when it exists).
    #[arg(long, env = "GRASP_SYNC_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address for HTTP and WebSocket [default: 127.0.0.1:7400].
    #[arg(long, env = "GRASP_SYNC_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Where the store lives [default: ./data].
    #[arg(long, env = "GRASP_SYNC_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// LMDB map size in MiB, the largest the store may grow [default: 16384].
    #[arg(long, env = "GRASP_SYNC_MAP_SIZE_MIB")]
    pub map_size_mib: Option<usize>,
    /// This relay's public URL as announcements list it (repeatable) [default:
    /// ws://<listen>].
    #[arg(
        long = "public-url",
        env = "GRASP_SYNC_PUBLIC_URLS",
        value_delimiter = ','
    )]
    pub public_urls: Vec<String>,
    /// A relay asked for every announcement (repeatable).
    #[arg(
        long = "bootstrap-relay",
        env = "GRASP_SYNC_BOOTSTRAP_RELAYS",
        value_delimiter = ','
    )]
    pub bootstrap_relays: Vec<String>,
    /// What the relay accepts and stores [default: repos-listing-us]: repos-listing-us,
    /// repos-from-anyone or repos-of-allowed-authors (GRASP: repositories and their
    /// NIP-34 events), any-event (a general relay that also mirrors the repositories
    /// listing it). Old names list-us, all, allow-list still work.
    #[arg(long, env = "GRASP_SYNC_ACCEPT", value_parser = crate::serve::config::AcceptMode::NAMES)]
    pub accept: Option<String>,
    /// An author whose announcements `repos-of-allowed-authors` accepts (repeatable; hex
    /// or npub).
    #[arg(
        long = "allow-author",
        env = "GRASP_SYNC_ALLOW_AUTHORS",
        value_delimiter = ','
    )]
    pub allow_authors: Vec<String>,
    /// NIP-42: what needs an authenticated client [default: no]: no, writes (EVENT), or
    /// all (EVENT, REQ, COUNT, NEG-OPEN). With repos-of-allowed-authors, writes then
    /// need a client authenticated as one of the allowed authors.
    #[arg(long, env = "GRASP_SYNC_AUTH_REQUIRED", value_parser = crate::serve::auth::AuthRequired::NAMES)]
    pub auth_required: Option<String>,
    /// Follow relays at private or loopback addresses that announcements list.
    #[arg(long, env = "GRASP_SYNC_ALLOW_PRIVATE_RELAYS", num_args = 0..=1, default_missing_value = "true")]
    pub allow_private_relays: Option<bool>,
    /// Take the client address from X-Forwarded-For (behind a reverse proxy).
    #[arg(long, env = "GRASP_SYNC_TRUST_FORWARDED_FOR", num_args = 0..=1, default_missing_value = "true")]
    pub trust_forwarded_for: Option<bool>,
    /// Serve the demo page from this directory (holding page/ and pkg/, as web/ after
    /// scripts/pack-web.sh): a browser opening this relay's address is sent to it.
    #[arg(long, env = "GRASP_SYNC_WEB_DIR")]
    pub web_dir: Option<PathBuf>,
    /// Connections at once in all.
    #[arg(long, env = "GRASP_SYNC_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Connections at once from one address.
    #[arg(long, env = "GRASP_SYNC_CONNECTIONS_PER_IP")]
    pub connections_per_ip: Option<usize>,
    /// EVENT messages per minute on one connection.
    #[arg(long, env = "GRASP_SYNC_EVENTS_PER_MINUTE")]
    pub events_per_minute: Option<u32>,
    /// EVENT messages per minute from one address.
    #[arg(long, env = "GRASP_SYNC_EVENTS_PER_MINUTE_PER_IP")]
    pub events_per_minute_per_ip: Option<u32>,
    /// Subscriptions at once on one connection.
    #[arg(long, env = "GRASP_SYNC_MAX_SUBSCRIPTIONS")]
    pub max_subscriptions: Option<usize>,
    /// Largest incoming message, bytes.
    #[arg(long, env = "GRASP_SYNC_MAX_MESSAGE_BYTES")]
    pub max_message_bytes: Option<usize>,
    /// Largest event, bytes of JSON.
    #[arg(long, env = "GRASP_SYNC_MAX_EVENT_BYTES")]
    pub max_event_bytes: Option<usize>,
    /// Most events one filter returns.
    #[arg(long, env = "GRASP_SYNC_MAX_LIMIT")]
    pub max_limit: Option<usize>,
    /// Items in one NIP-77 session.
    #[arg(long, env = "GRASP_SYNC_NEG_MAX_ITEMS")]
    pub neg_max_items: Option<usize>,
    /// First retry delay after a relay failed, seconds (doubles with each failure).
    #[arg(long, env = "GRASP_SYNC_BACKOFF_BASE_SECS")]
    pub backoff_base_secs: Option<u64>,
    /// Longest retry delay, seconds.
    #[arg(long, env = "GRASP_SYNC_BACKOFF_CAP_SECS")]
    pub backoff_cap_secs: Option<u64>,
}

impl ServeArgs {
    /// The configuration: the file (if any), overridden by these flags.
    pub fn config(self) -> Result<FileConfig, String> {
        let mut file = match &self.config {
            Some(path) => FileConfig::load(path)?,
            None if Path::new(DEFAULT_CONFIG_FILE).exists() => {
                FileConfig::load(Path::new(DEFAULT_CONFIG_FILE))?
            }
            None => FileConfig::default(),
        };
        fn set<T>(target: &mut Option<T>, value: Option<T>) {
            if value.is_some() {
                *target = value;
            }
        }
        fn set_list(target: &mut Option<Vec<String>>, values: Vec<String>) {
            if !values.is_empty() {
                *target = Some(values);
            }
        }
        set(&mut file.listen, self.listen);
        set(&mut file.data_dir, self.data_dir);
        set(&mut file.map_size_mib, self.map_size_mib);
        set_list(&mut file.public_urls, self.public_urls);
        set_list(&mut file.bootstrap_relays, self.bootstrap_relays);
        set(&mut file.accept, self.accept);
        set_list(&mut file.allow_authors, self.allow_authors);
        set(&mut file.auth_required, self.auth_required);
        set(&mut file.allow_private_relays, self.allow_private_relays);
        set(&mut file.trust_forwarded_for, self.trust_forwarded_for);
        set(&mut file.web_dir, self.web_dir);
        let limits = &mut file.limits;
        set(&mut limits.max_connections, self.max_connections);
        set(&mut limits.connections_per_ip, self.connections_per_ip);
        set(&mut limits.events_per_minute, self.events_per_minute);
        set(
            &mut limits.events_per_minute_per_ip,
            self.events_per_minute_per_ip,
        );
        set(&mut limits.max_subscriptions, self.max_subscriptions);
        set(&mut limits.max_message_bytes, self.max_message_bytes);
        set(&mut limits.max_event_bytes, self.max_event_bytes);
        set(&mut limits.max_limit, self.max_limit);
        set(&mut limits.neg_max_items, self.neg_max_items);
        set(&mut file.sync.backoff_base_secs, self.backoff_base_secs);
        set(&mut file.sync.backoff_cap_secs, self.backoff_cap_secs);
        Ok(file)
    }
}

/// The log filter: `RUST_LOG`, else `default_level`. nostr-lmdb (pinned at 0.45.3) logs
/// at `info` that it migrates "from version 0 to 2" and processes its events whenever it
/// opens a database without a version record, which is every brand-new data directory:
/// noise on an empty store, so its `info` lines are off unless `RUST_LOG` names it.
fn log_filter(default_level: &str) -> EnvFilter {
    let from_env = std::env::var("RUST_LOG").ok();
    let filter = from_env
        .as_deref()
        .and_then(|spec| EnvFilter::try_new(spec).ok())
        .unwrap_or_else(|| EnvFilter::new(default_level));
    if from_env.is_some_and(|spec| spec.contains("nostr_lmdb")) {
        return filter;
    }
    match "nostr_lmdb=warn".parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    }
}

/// Runs the command line with the process's arguments.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The daemon says what it does; the one-shot commands only what goes wrong.
    let default_level = if matches!(cli.command, Commands::Serve(_)) {
        "info"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(log_filter(default_level))
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("grasp-sync: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let local = tokio::task::LocalSet::new();
    let code = run(cli.command, &runtime, &local);
    drop(local);
    tracing::debug!("dropping runtime");
    // Sockets' tasks are cancelled; nothing blocking is left worth waiting long for.
    runtime.shutdown_timeout(Duration::from_secs(5));
    tracing::debug!("runtime down");
    code
}

fn run(
    command: Commands,
    runtime: &tokio::runtime::Runtime,
    local: &tokio::task::LocalSet,
) -> ExitCode {
    match command {
        Commands::Sync {
            repos,
            relays,
            data_dir,
            map_size_mib,
            allow_private_relays,
            timeout_secs,
            attempts,
            quiet,
            json,
            eose_timeout_secs,
            neg_timeout_secs,
        } => {
            let options = SyncOptions {
                map_size: map_size_mib.saturating_mul(1 << 20),
                allow_private_relays,
                timeout: Duration::from_secs(timeout_secs),
                attempts,
                progress: !quiet && !json,
                eose_timeout: Duration::from_secs(eose_timeout_secs),
                neg_timeout: Duration::from_secs(neg_timeout_secs),
                ..SyncOptions::new(repos, relays, data_dir)
            };
            let lock = StoreLock::acquire(
                &options.data_dir,
                &Owner {
                    pid: std::process::id(),
                    command: "sync".into(),
                    http: None,
                },
            );
            let result = match lock {
                Ok(_lock) => local
                    .block_on(runtime, run_sync(&options))
                    .map(Outcome::Local),
                Err(LockError::Held(Some(owner))) if owner.command == "serve" => {
                    match owner.base_url() {
                        Some(base) => {
                            eprintln!(
                                "grasp-sync: a daemon (pid {}) uses the store at {}: handing \
                                 the repositories to it at {base}",
                                owner.pid,
                                options.data_dir.display()
                            );
                            local
                                .block_on(runtime, hand_over(&base, &options))
                                .map(Outcome::Daemon)
                        }
                        None => Err(SyncError::Other(format!(
                            "a daemon (pid {}) is starting on the store at {}; try again \
                             in a moment",
                            owner.pid,
                            options.data_dir.display()
                        ))),
                    }
                }
                Err(e @ LockError::Held(_)) => Err(SyncError::Store(format!(
                    "{e} at {}: wait for it to finish, or pass another --data-dir",
                    options.data_dir.display()
                ))),
                Err(LockError::Io(e)) => {
                    Err(SyncError::Store(format!("cannot lock the store: {e}")))
                }
            };
            tracing::debug!("sync returned");
            match result {
                Ok(outcome) => {
                    let (text, nothing_synced, repos) = match &outcome {
                        Outcome::Local(report) => (
                            if json {
                                report.json().to_string() + "\n"
                            } else {
                                report.table()
                            },
                            report.nothing_synced(),
                            report.repos,
                        ),
                        Outcome::Daemon(value) => daemon_summary(value, json),
                    };
                    let timed_out = matches!(&outcome, Outcome::Local(r) if !r.settled);
                    let gaps = match &outcome {
                        Outcome::Local(r) => r.relays_with_gaps(),
                        Outcome::Daemon(value) => value
                            .get("relays")
                            .and_then(serde_json::Value::as_array)
                            .into_iter()
                            .flatten()
                            .filter(|r| r.get("state").and_then(|s| s.as_str()) == Some("gaps"))
                            .count(),
                    };
                    print!("{text}");
                    if nothing_synced {
                        eprintln!("grasp-sync: nothing could be synced: no relay answered");
                        ExitCode::FAILURE
                    } else if repos == 0 {
                        eprintln!(
                            "grasp-sync: no announcement of these repositories was found at \
                             the relays asked"
                        );
                        ExitCode::FAILURE
                    } else if timed_out {
                        eprintln!(
                            "grasp-sync: timed out after {timeout_secs} s with relays not in \
                             sync; what was synced is kept"
                        );
                        ExitCode::from(SYNC_TIMED_OUT)
                    } else if gaps > 0 {
                        eprintln!(
                            "grasp-sync: {gaps} relay(s) left gaps (state \"gaps\": a job \
                             abandoned, an incomplete window or ids never delivered); the \
                             next fresh start tries them again"
                        );
                        ExitCode::from(SYNC_GAPS)
                    } else {
                        ExitCode::SUCCESS
                    }
                }
                Err(e @ SyncError::Usage(_)) => {
                    eprintln!("grasp-sync: {e}");
                    ExitCode::from(2)
                }
                Err(e) => {
                    eprintln!("grasp-sync: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Commands::Status { data_dir } => {
            if let Ok(Some(owner)) = crate::daemon::current_owner(&data_dir) {
                if let Some(base) = owner.base_url().filter(|_| owner.command == "serve") {
                    match local.block_on(runtime, daemon_status(&base, &data_dir)) {
                        Ok(text) => {
                            print!("{text}");
                            return ExitCode::SUCCESS;
                        }
                        Err(e) => eprintln!(
                            "grasp-sync: the daemon (pid {}) does not answer at {base} ({e}); \
                             reading the store directly",
                            owner.pid
                        ),
                    }
                }
            }
            match local.block_on(runtime, print_status(&StatusOptions { data_dir })) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("grasp-sync: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Commands::Serve(args) => {
            let settings = match args.config().and_then(FileConfig::settle) {
                Ok(settings) => settings,
                Err(e) => {
                    eprintln!("grasp-sync: {e}");
                    return ExitCode::from(2);
                }
            };
            match local.block_on(runtime, crate::serve::run(settings)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("grasp-sync: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Where a sync ran.
enum Outcome {
    /// In this process.
    Local(SyncReport),
    /// In the daemon that uses the store: its JSON report.
    Daemon(serde_json::Value),
}

/// Hands a sync to the daemon at `base` and waits for its report. The request carries
/// the operator API token the daemon wrote into the data directory; the daemon applies
/// its own relay and acceptance policy.
async fn hand_over(base: &str, options: &SyncOptions) -> Result<serde_json::Value, SyncError> {
    let token = crate::api_token::read(&options.data_dir).map_err(|e| {
        SyncError::Other(format!(
            "cannot read the daemon's operator API token ({e}): run as the daemon's user"
        ))
    })?;
    if options.allow_private_relays {
        eprintln!(
            "grasp-sync: --allow-private-relays does not carry over to the daemon: it \
             follows its own allow_private_relays setting"
        );
    }
    let body = serde_json::json!({
        "repos": options.repos,
        "relays": options.relays,
        "timeout_secs": options.timeout.as_secs(),
        "attempts": options.attempts,
        "eose_timeout_secs": options.eose_timeout.as_secs(),
        "neg_timeout_secs": options.neg_timeout.as_secs(),
    });
    let client = reqwest::Client::builder()
        .timeout(options.timeout + Duration::from_secs(30))
        .build()
        .map_err(|e| SyncError::Other(format!("HTTP client: {e}")))?;
    let response = client
        .post(format!("{base}/api/sync"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .map_err(|e| SyncError::Other(format!("the daemon at {base} does not answer: {e}")))?;
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|e| SyncError::Other(format!("the daemon's answer: {e}")))?;
    if status == reqwest::StatusCode::BAD_REQUEST {
        return Err(SyncError::Usage(text.trim().to_owned()));
    }
    if !status.is_success() {
        return Err(SyncError::Other(format!(
            "the daemon refused the sync ({status}): {}",
            text.trim()
        )));
    }
    serde_json::from_str(&text)
        .map_err(|e| SyncError::Other(format!("the daemon's report is not JSON: {e}")))
}

/// (text to print, nothing synced, repositories) of a daemon's report.
fn daemon_summary(report: &serde_json::Value, json: bool) -> (String, bool, usize) {
    let nothing = report
        .get("nothing_synced")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    let repos = report
        .get("repos")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0) as usize;
    let text = if json {
        let mut plain = report.clone();
        if let serde_json::Value::Object(map) = &mut plain {
            map.remove("table");
            map.remove("nothing_synced");
        }
        plain.to_string() + "\n"
    } else {
        let mut text = report
            .get("table")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let not_tracked: Vec<&str> = report
            .get("not_tracked")
            .and_then(serde_json::Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(serde_json::Value::as_str)
            .collect();
        if !not_tracked.is_empty() {
            text.push_str(&format!(
                "not tracked by the daemon (no announcement its policy accepts was found): {}\n",
                not_tracked.join(" ")
            ));
        }
        text
    };
    (text, nothing, repos)
}

/// The running daemon's status text (the token from `data_dir` authorises the request).
async fn daemon_status(base: &str, data_dir: &std::path::Path) -> Result<String, String> {
    let token = crate::api_token::read(data_dir).map_err(|e| e.to_string())?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;
    let response = client
        .get(format!("{base}/api/status"))
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status()));
    }
    response.text().await.map_err(|e| e.to_string())
}
