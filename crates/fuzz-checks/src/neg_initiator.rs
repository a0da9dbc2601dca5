//! A NIP-77 initiator fed whatever a relay may send: it never panics, reports each id at
//! most once (ours in `have`, theirs in `need`), and a finished session stays finished.
//!
//! Input: `count` (items: 0-128 exactly, then steps of 8 up to 1016), `seed`, `shape` (frame limit in the low bits, timestamp
//! spread in the high ones), then the relay's messages, each a big-endian u16 length and
//! that many bytes.
//!
//! `GRASP_FUZZ_SKIP_KNOWN=1` skips the "`need` holds no id of ours" check (known finding).
use std::collections::HashSet;

use crate::common::{frame_limit, items, skip_known, Reader};
use grasp_sync_core::neg::{NegError, NegInitiator};

/// One fuzz input: panics when the property above does not hold.
pub fn check(data: &[u8]) {
    let mut input = Reader(data);
    let count = match usize::from(input.byte()) {
        n @ 0..=128 => n,
        n => (n - 128) * 8,
    };
    let seed = input.byte();
    let shape = input.byte();
    let local = items(count, seed, 1 << (shape >> 4));
    let ours: HashSet<[u8; 32]> = local.iter().map(|(_, id)| *id).collect();

    let Ok((mut initiator, first)) = NegInitiator::new(local, frame_limit(shape)) else {
        panic!("building an initiator from {count} items failed");
    };
    assert!(!first.is_empty(), "empty first message");

    let mut reported = HashSet::new();
    let mut finished = false;
    let mut steps = 0u32;
    while !input.is_empty() {
        let message = input.payload();
        let result = initiator.step(message);
        if !finished {
            // A finished session refuses messages without counting them.
            steps += 1;
        }
        assert_eq!(initiator.rounds(), steps);
        if finished {
            assert_eq!(result, Err(NegError::Closed), "a finished session went on");
            continue;
        }
        match result {
            Ok(progress) => {
                for id in &progress.have {
                    assert!(ours.contains(id), "`have` reports an id we do not hold");
                    assert!(reported.insert(*id), "an id was reported twice");
                }
                for id in &progress.need {
                    // Known: an IdList whose range excludes our copy of an id makes the
                    // library report it as needed (skipped by GRASP_FUZZ_SKIP_KNOWN=1).
                    assert!(
                        skip_known() || !ours.contains(id),
                        "`need` reports an id we hold"
                    );
                    assert!(reported.insert(*id), "an id was reported twice");
                }
                if progress.next.is_none() {
                    assert!(initiator.is_complete());
                    finished = true;
                } else {
                    assert!(!initiator.is_complete());
                }
            }
            Err(NegError::Closed) => panic!("Closed from a running session"),
            Err(_) => {
                assert!(!initiator.is_complete());
                finished = true;
            }
        }
    }
}
