//! Events that clients of our relay publish: the same acceptance as events from relays
//! (size, time, NIP-34 relevance, the announcement policy, versions, deletions), then
//! the store and the index, so an accepted announcement starts syncing its relays at
//! once.
//!
//! Clients do not always publish in causal order (events sent concurrently race; NIP-77
//! uploads go in id order): an event that references a repository or root not tracked
//! *yet* waits for the announcement or root it names, at most [`ORPHAN_WAIT`] and
//! [`MAX_ORPHANS`] of them at once; it is decided again whenever the index changes, and
//! refused as irrelevant when the wait ends. Only events waiting can help wait
//! ([`waiting_may_help`]: NIP-34 kinds that reference something); every other refusal
//! is answered at once, with its reason. The wait is short because clients cap the
//! events awaiting an `OK` (nostr-sdk: 100 in flight), so waiting ones hold back the
//! rest of an upload; a large upload in id order may take a second pass.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use nostr::prelude::{Event, EventId};

use super::{BatchId, Output, SyncEngine, Time};
use crate::accept::{Reject, Removal, Verdict};
use crate::actions::compute_actions;
use crate::nip34::{self, kinds};

/// How long a published event that references nothing tracked yet waits for it.
pub const ORPHAN_WAIT: Duration = Duration::from_secs(2);
/// Published events waiting at once; past it, such events are refused at once.
pub const MAX_ORPHANS: usize = 2_000;

/// A published event waiting for the repository or root it references.
#[derive(Debug)]
pub(super) struct Orphan {
    token: PublishId,
    event: Event,
    until: Time,
}

/// Published events waiting, oldest first.
pub(super) type Orphans = VecDeque<Orphan>;

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
    /// Had to wait for the repository or root they reference (then stored or refused).
    pub waited: u64,
}

impl SyncEngine {
    pub(super) fn on_publish(&mut self, token: PublishId, event: Event, json_bytes: usize) {
        let now = self.now.timestamp();
        let verdict = match self.acceptor.precheck(&event, json_bytes, now) {
            Ok(()) => self.acceptor.decide(&event, &self.index),
            Err(reject) => Verdict::Reject(reject),
        };
        match verdict {
            Verdict::Store { remove } => self.store_published(token, event, remove),
            Verdict::Reject(Reject::Irrelevant)
                if self.orphans.len() < MAX_ORPHANS && waiting_may_help(&event) =>
            {
                self.stats.published.waited += 1;
                let until = self.now + ORPHAN_WAIT;
                self.orphans.push_back(Orphan {
                    token,
                    event,
                    until,
                });
            }
            Verdict::Reject(reject) => self.refuse_published(token, reject),
        }
    }

    /// An accepted published event goes to the index and the store.
    fn store_published(&mut self, token: PublishId, event: Event, remove: Vec<Removal>) {
        let update = self.apply_to_index(&event);
        if !update.changes.is_empty() {
            let actions = compute_actions(self.index.targets(), &update.changes, &self.work);
            self.take_actions(&actions);
        }
        self.seen.forget(&event.id);
        let batch: BatchId = self.new_id();
        self.publishing.insert(batch, (token, event.id));
        self.outputs.push_back(Output::Store {
            batch,
            events: vec![event],
            remove,
            checkpoints: Vec::new(),
        });
        if update.applied > 0 {
            self.retry_orphans();
        }
    }

    fn refuse_published(&mut self, token: PublishId, reject: Reject) {
        // Not remembered: what a client sends says nothing about what relays hold, and
        // a flood of junk must not evict real seen-not-stored entries.
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
    }

    /// Decides the waiting published events again (the index changed).
    pub(super) fn retry_orphans(&mut self) {
        // Storing one may track what another waits for: until nothing moves.
        loop {
            let waiting = std::mem::take(&mut self.orphans);
            let before = waiting.len();
            for orphan in waiting {
                match self.acceptor.decide(&orphan.event, &self.index) {
                    Verdict::Store { remove } => {
                        self.store_published(orphan.token, orphan.event, remove);
                    }
                    Verdict::Reject(Reject::Irrelevant) => self.orphans.push_back(orphan),
                    Verdict::Reject(reject) => self.refuse_published(orphan.token, reject),
                }
            }
            if self.orphans.len() == before || self.orphans.is_empty() {
                return;
            }
        }
    }

    /// Refuses the published events whose wait is over.
    pub(super) fn expire_orphans(&mut self) {
        while self.orphans.front().is_some_and(|o| o.until <= self.now) {
            if let Some(orphan) = self.orphans.pop_front() {
                self.refuse_published(orphan.token, Reject::Irrelevant);
            }
        }
    }

    /// When the oldest waiting published event's wait ends.
    pub(super) fn orphans_deadline(&self) -> Option<Time> {
        self.orphans.front().map(|o| o.until)
    }

    pub(super) fn on_published_stored(
        &mut self,
        (token, id): (PublishId, EventId),
        result: Result<Vec<Event>, String>,
    ) {
        if result.is_ok() {
            self.acceptor.committed([&id]);
        } else {
            self.acceptor.roll_back([&id]);
        }
        let outcome = match result {
            Ok(removed) => {
                let now = self.now.timestamp();
                let mut gone_itself = None;
                for gone in removed {
                    if gone.id == id {
                        // Removed in the same write: a newer version or its deletion
                        // was accepted meanwhile, or the store held a newer version.
                        gone_itself = Some(if self.acceptor.is_deleted(&gone) {
                            Reject::Deleted
                        } else {
                            Reject::Superseded
                        });
                    }
                    let entry = self.seen.remember(&gone, now);
                    self.remembered.push(entry);
                }
                match gone_itself {
                    None => {
                        self.recent.insert(id);
                        self.stats.stored += 1;
                        self.stats.published.stored += 1;
                        PublishOutcome::Stored
                    }
                    Some(reject) => {
                        let rejected = &mut self.stats.published.rejected;
                        *rejected.entry(reject.as_str()).or_insert(0) += 1;
                        PublishOutcome::Rejected(reject)
                    }
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

/// Whether waiting can change the verdict on `event`, refused as irrelevant now: it is of
/// a NIP-34 kind that belongs to a repository or thread (not an announcement, whose
/// verdict depends on the policy alone) and names a repository (a state event by its
/// `d` tag, `a`/`A`/`q` coordinates) or an event it may belong to (`e`/`E`/`q`), which may
/// arrive meanwhile. Anything else (a kind-1 note, a reaction, …) is answered at once.
fn waiting_may_help(event: &Event) -> bool {
    let kind = event.kind;
    if kind == kinds::REPO_ANNOUNCEMENT || !kinds::ALL.contains(&kind) {
        return false;
    }
    kind == kinds::REPO_STATE
        || !nip34::repo_refs(event).is_empty()
        || !nip34::referenced_ids(event).is_empty()
}

#[cfg(test)]
mod tests {
    use nostr::prelude::{Keys, Kind, SecretKey, Signature, Tag, Timestamp};

    use super::*;

    fn keys() -> Keys {
        Keys::new(SecretKey::from_slice(&[3; 32]).expect("secret"))
    }

    /// An event of `kind` with `tags` (id and signature are not looked at).
    fn event(kind: u16, tags: &[&[&str]]) -> Event {
        let tags = tags
            .iter()
            .map(|t| Tag::parse(t.iter().copied()).expect("tag"));
        Event::new(
            EventId::from_byte_array([1; 32]),
            keys().public_key(),
            Timestamp::from(1_700_000_000),
            Kind::from(kind),
            tags,
            "",
            Signature::from_byte_array([7; 64]),
        )
    }

    #[test]
    fn only_nip34_events_that_reference_something_wait() {
        let id = "ab".repeat(32);
        let coord = format!("30617:{}:repo", keys().public_key().to_hex());
        let waits = [
            event(1111, &[&["E", &id], &["e", &id]]),
            event(1621, &[&["a", &coord]]),
            event(1630, &[&["e", &id, "", "root"]]),
            event(30618, &[&["d", "repo"]]),
            event(5, &[&["e", &id]]),
        ];
        for e in &waits {
            assert!(waiting_may_help(e), "kind {} should wait", e.kind);
        }
        let answered_at_once = [
            event(1, &[&["e", &id]]),
            event(1, &[&["a", &coord]]),
            event(7, &[&["e", &id]]),
            event(30617, &[&["d", "repo"], &["a", &coord]]),
            event(1621, &[&["t", "bug"]]),
        ];
        for e in &answered_at_once {
            assert!(!waiting_may_help(e), "kind {} should not wait", e.kind);
        }
    }
}
