//! `grasp-sync`: the daemon and command-line front end.
//!
//! `grasp-sync serve` will run a nostr relay that proactively mirrors every tracked
//! repository (issues 4 and 5); until then it says so and exits.

use std::process::ExitCode;

const USAGE: &str = "\
usage: grasp-sync <command>

commands:
  serve       run the relay daemon (not yet implemented)
  help        print this message
  version     print the version";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") => {
            eprintln!(
                "grasp-sync {}: `serve` is not yet implemented: the sync core is in place \
                 (repo index, relay targets, compute_actions, filters); the relay daemon \
                 lands with the native driver and server issues.",
                env!("CARGO_PKG_VERSION")
            );
            ExitCode::SUCCESS
        }
        Some("version" | "--version" | "-V") => {
            println!("grasp-sync {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some("help" | "--help" | "-h") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("grasp-sync: unknown command `{other}`\n\n{USAGE}");
            ExitCode::from(2)
        }
        None => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}
