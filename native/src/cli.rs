//! The `grasp-sync` command line: `sync`, `status`, `serve`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::status::{print_status, StatusOptions};
use crate::sync::{run_sync, SyncError, SyncOptions};
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

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
        /// Give up after this many seconds.
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
    /// Show tracked repositories, known relays and their checkpoints, from the store.
    Status {
        /// Where the store lives.
        #[arg(long, env = "GRASP_SYNC_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
    },
    /// Run the relay daemon (not yet implemented).
    Serve,
}

/// Runs the command line with the process's arguments.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
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
            let result = local.block_on(runtime, run_sync(&options));
            tracing::debug!("sync returned");
            match result {
                Ok(report) => {
                    if json {
                        println!("{}", report.json());
                    } else {
                        print!("{}", report.table());
                    }
                    if report.nothing_synced() {
                        eprintln!("grasp-sync: nothing could be synced: no relay answered");
                        ExitCode::FAILURE
                    } else if report.repos == 0 {
                        eprintln!(
                            "grasp-sync: no announcement of these repositories was found at \
                             the relays asked"
                        );
                        ExitCode::FAILURE
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
        Commands::Serve => {
            eprintln!(
                "grasp-sync {}: `serve` is not yet implemented; `grasp-sync sync` mirrors \
                 repositories into the store.",
                env!("CARGO_PKG_VERSION")
            );
            ExitCode::SUCCESS
        }
    }
}
