//! The verification floor: how long checking the signatures of a set takes, on one core
//! and on all (the rayon verifier grasp-sync itself uses).

use std::time::{Duration, Instant};

use grasp_sync::verify::ParallelVerifier;
use grasp_sync_driver::Verifier;
use nostr::prelude::Event;

/// `(one core, all cores)` to verify `events`, said on standard error after `tag` (with a
/// warning when some do not verify).
pub async fn verification_floor(events: &[Event], cores: usize, tag: &str) -> (Duration, Duration) {
    let t = Instant::now();
    let serial_ok = events.iter().filter(|e| e.verify().is_ok()).count();
    let floor_serial = t.elapsed();
    let copy = events.to_vec();
    let _ = ParallelVerifier
        .verify(events[..cores.min(events.len())].to_vec())
        .await; // warm the pool
    let t = Instant::now();
    let parallel_ok = ParallelVerifier
        .verify(copy)
        .await
        .iter()
        .filter(|ok| **ok)
        .count();
    let floor_parallel = t.elapsed();
    eprintln!(
        "{tag}: verification floor {floor_serial:.2?} on one core, {floor_parallel:.2?} on \
         {cores}"
    );
    if serial_ok != events.len() || parallel_ok != events.len() {
        eprintln!(
            "{tag}: WARNING: {serial_ok}/{parallel_ok} of {} verify",
            events.len()
        );
    }
    (floor_serial, floor_parallel)
}
