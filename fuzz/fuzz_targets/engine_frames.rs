//! See [`grasp_sync_fuzz_checks::engine_frames`]: the property is checked there, so the
//! committed crash inputs replay as ordinary tests (`cargo test -p grasp-sync-fuzz-checks`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| grasp_sync_fuzz_checks::engine_frames::check(data));
