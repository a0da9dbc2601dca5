//! The `grasp-sync` command line, built as part of this package so integration tests run
//! it as a process (`CARGO_BIN_EXE_grasp-sync-under-test`) with the same dependency
//! features as themselves — no second build of the workspace.

fn main() -> std::process::ExitCode {
    grasp_sync::cli::main()
}
