//! `grasp-sync`: the daemon and command-line front end (see [`grasp_sync::cli`]).

/// mimalloc rather than the system allocator (see Cargo.toml).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    grasp_sync::cli::main()
}
