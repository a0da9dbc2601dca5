//! Every committed fuzz input, replayed through its target's check: the crash inputs
//! under `fuzz/artifacts/<target>/` (each a fixed finding that must stay fixed) and the
//! seeds under `fuzz/seeds/<target>/`. New files there are picked up without editing
//! this test.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use grasp_sync_fuzz_checks::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// The files in `dir` (none when it does not exist), sorted.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs every input of `kind` (`artifacts` or `seeds`) through its check; returns how
/// many ran, and fails naming each input whose check panicked.
fn replay(kind: &str) -> usize {
    let mut ran = 0;
    let mut failed = Vec::new();
    for (target, check) in TARGETS {
        for file in inputs(&fuzz_dir().join(kind).join(target)) {
            let data =
                std::fs::read(&file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
            ran += 1;
            if catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
                failed.push(format!("{target}: {}", file.display()));
            }
        }
    }
    assert!(
        failed.is_empty(),
        "fuzz {kind} failing again:\n{}",
        failed.join("\n")
    );
    ran
}

#[test]
fn committed_crash_inputs_stay_fixed() {
    let ran = replay("artifacts");
    assert!(
        ran >= 3,
        "only {ran} crash inputs found under fuzz/artifacts"
    );
}

#[test]
fn seeds_pass() {
    let ran = replay("seeds");
    assert!(ran > 0, "no seeds found under fuzz/seeds");
}
