//! A NIP-77 responder (relay side) under a client's arbitrary NEG-OPEN / NEG-MSG /
//! NEG-CLOSE sequence: it never panics, never holds more than `max_sessions` sessions,
//! keeps exactly the sessions its documented rules say it keeps, takes at most
//! `max_items + 1` items (none when it refuses before building), and gives NEG-ERR
//! reasons with a machine-readable prefix.
//!
//! Input: a frame-limit selector, then operations: a byte (`% 4`: 0 and 3 open, 1
//! message, 2 close; `/ 4 % 5`: the subscription), for open an item count (mod 128) and
//! a seed, and for open and message a payload (big-endian u16 length and bytes).
use std::cell::Cell;
use std::collections::BTreeSet;

use crate::common::{frame_limit, items, Reader};
use grasp_sync_core::neg::{NegReply, NegResponder, ResponderLimits};

const MAX_SESSIONS: usize = 3;
const MAX_ITEMS: usize = 100;
const SUBSCRIPTIONS: [&str; 5] = ["a", "b", "c", "gs2", "a-much-longer-subscription-id"];

fn check_reason(reply: &NegReply) {
    if let NegReply::Err(reason) = reply {
        assert!(
            ["invalid: ", "error: ", "blocked: ", "closed: "]
                .iter()
                .any(|prefix| reason.starts_with(prefix)),
            "NEG-ERR reason without a prefix: {reason:?}"
        );
    }
}

/// One fuzz input: panics when the property above does not hold.
pub fn check(data: &[u8]) {
    let mut input = Reader(data);
    let limits = ResponderLimits {
        max_sessions: MAX_SESSIONS,
        max_items: MAX_ITEMS,
        frame_limit: frame_limit(input.byte()),
    };
    let mut responder = NegResponder::new(limits);
    // The sessions the responder should hold.
    let mut model: BTreeSet<&str> = BTreeSet::new();
    while !input.is_empty() {
        let op = input.byte();
        let sub = SUBSCRIPTIONS[usize::from(op / 4) % SUBSCRIPTIONS.len()];
        match op % 4 {
            0 | 3 => {
                let count = usize::from(input.byte() % 128);
                let set = items(count, input.byte(), 1 << (op % 8));
                let message = input.payload();
                let taken = Cell::new(0usize);
                let reply = responder.open(
                    sub,
                    set.into_iter().inspect(|_| taken.set(taken.get() + 1)),
                    message,
                );
                check_reason(&reply);
                assert!(taken.get() <= MAX_ITEMS + 1, "took {} items", taken.get());
                match &reply {
                    NegReply::Msg(_) => {
                        model.insert(sub);
                    }
                    NegReply::Err(reason) => {
                        model.remove(sub);
                        if reason.starts_with("blocked: too many negentropy sessions")
                            || reason.starts_with("invalid: ")
                        {
                            assert_eq!(taken.get(), 0, "items read for a refused open");
                        }
                        if reason.starts_with("blocked: too many negentropy sessions") {
                            assert!(model.len() >= MAX_SESSIONS);
                        }
                        if reason.starts_with("blocked: too many records") {
                            assert!(count > MAX_ITEMS);
                        }
                    }
                }
            }
            1 => {
                let message = input.payload();
                let reply = responder.message(sub, message);
                check_reason(&reply);
                match &reply {
                    NegReply::Msg(_) => assert!(model.contains(sub), "reply without a session"),
                    NegReply::Err(reason) => {
                        let known = model.remove(sub);
                        assert_eq!(
                            !known,
                            reason.as_str() == "closed: unknown subscription",
                            "unknown-session answer mismatch: {reason:?}"
                        );
                    }
                }
            }
            _ => {
                let existed = responder.close(sub);
                assert_eq!(existed, model.remove(sub), "close disagrees");
            }
        }
        assert!(
            responder.session_count() <= MAX_SESSIONS,
            "too many sessions"
        );
        assert_eq!(
            responder.session_count(),
            model.len(),
            "session count drifted"
        );
    }
}
