//! `grasp-sync`: the daemon and command-line front end.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use grasp_sync::status::{print_status, StatusOptions};
use grasp_sync::sync::{run_sync, SyncError, SyncOptions};
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

fn main() -> ExitCode {
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
    match cli.command {
        Commands::Sync {
            repos,
            relays,
            data_dir,
            map_size_mib,
            allow_private_relays,
            timeout_secs,
            attempts,
            quiet,
        } => {
            let options = SyncOptions {
                repos,
                relays,
                data_dir,
                map_size: map_size_mib.saturating_mul(1 << 20),
                allow_private_relays,
                timeout: Duration::from_secs(timeout_secs),
                attempts,
                progress: !quiet,
            };
            match local.block_on(&runtime, run_sync(&options)) {
                Ok(report) => {
                    print!("{}", report.table());
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
            match local.block_on(&runtime, print_status(&StatusOptions { data_dir })) {
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
