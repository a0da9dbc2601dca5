//! Events that clients of our relay publish: the same acceptance as events from relays
//! (size, time, NIP-34 relevance, the announcement policy, versions, deletions), then
//! the store and the index, so an accepted announcement starts syncing its relays at
//! once.

use std::collections::BTreeMap;

use nostr::prelude::{Event, EventId};

use super::{BatchId, Output, SyncEngine};
use crate::accept::{Reject, Verdict};
use crate::actions::compute_actions;

/// Names an [`Input::Publish`](super::Input::Publish) and its answer.
pub type PublishId = u64;

/// What became of a published event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishOutcome {
    /// Accepted and committed to the store.
    Stored,
    /// Not accepted ([`Reject::Duplicate`]: this very version is already held).
    Rejected(Reject),
    /// Accepted, but the store failed to commit it.
    Failed(String),
}

/// Counters of published events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishStats {
    /// Accepted and committed.
    pub stored: u64,
    /// Refused, by reason label.
    pub rejected: BTreeMap<&'static str, u64>,
    /// Accepted but not committed (store errors).
    pub failed: u64,
}

impl SyncEngine {
    pub(super) fn on_publish(&mut self, token: PublishId, event: Event, json_bytes: usize) {
        let now = self.now.timestamp();
        let verdict = match self.acceptor.precheck(&event, json_bytes, now) {
            Ok(()) => self.acceptor.decide(&event, &self.index),
            Err(reject) => Verdict::Reject(reject),
        };
        let remove = match verdict {
            Verdict::Store { remove } => remove,
            Verdict::Reject(reject) => {
                // Not remembered: what a client sends says nothing about what relays
                // hold, and a flood of junk must not evict real seen-not-stored entries.
                *self
                    .stats
                    .published
                    .rejected
                    .entry(reject.as_str())
                    .or_insert(0) += 1;
                self.outputs.push_back(Output::Published {
                    token,
                    outcome: PublishOutcome::Rejected(reject),
                });
                return;
            }
        };
        let changes = self.index_changes(&event);
        if !changes.is_empty() {
            let actions = compute_actions(self.index.targets(), &changes, &self.work);
            self.take_actions(&actions);
        }
        self.seen.forget(&event.id);
        let batch: BatchId = self.new_id();
        self.publishing.insert(batch, (token, event.id));
        self.outputs.push_back(Output::Store {
            batch,
            events: vec![event],
            remove,
        });
    }

    pub(super) fn on_published_stored(
        &mut self,
        (token, id): (PublishId, EventId),
        result: Result<Vec<Event>, String>,
    ) {
        let outcome = match result {
            Ok(removed) => {
                let now = self.now.timestamp();
                let mut kept = true;
                for gone in removed {
                    // The store held a newer version than acceptance knew of.
                    kept &= gone.id != id;
                    let entry = self.seen.remember(&gone, now);
                    self.remembered.push(entry);
                }
                if kept {
                    self.recent.insert(id);
                    self.stats.stored += 1;
                    self.stats.published.stored += 1;
                    PublishOutcome::Stored
                } else {
                    let reject = Reject::Superseded;
                    *self
                        .stats
                        .published
                        .rejected
                        .entry(reject.as_str())
                        .or_insert(0) += 1;
                    PublishOutcome::Rejected(reject)
                }
            }
            Err(e) => {
                self.stats.store_failures += 1;
                self.stats.published.failed += 1;
                PublishOutcome::Failed(e)
            }
        };
        self.outputs.push_back(Output::Published { token, outcome });
    }
}
