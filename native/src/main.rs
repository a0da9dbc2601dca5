//! `grasp-sync`: the daemon and command-line front end (see [`grasp_sync::cli`]).

fn main() -> std::process::ExitCode {
    grasp_sync::cli::main()
}
