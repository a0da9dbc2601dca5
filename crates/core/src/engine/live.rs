//! Live subscriptions (`limit: 0`): sent for every target at session start, new items
//! merged into the newest REQ while it is small and fits, consolidated when the relay's
//! budget is exceeded; a replaced subscription's events count until its successor's
//! EOSE.

use nostr::prelude::Filter;

use super::relay::{self, Sub};
use super::sub_id::SubId;
use super::SyncEngine;
use crate::filters::{
    announcement_chunks, discovery_filter, pack_reqs, repo_tag_chunks, root_tag_chunks, Form,
};
use crate::items::{ItemId, RelayId};
use crate::limits::RelayLimits;
use crate::nip34::kinds;
use crate::wire::ClientFrame;

/// A live REQ naming more items than this takes no more: new items go out as a REQ of
/// their own rather than re-sending it whole (a session's set of a thousand roots is a
/// REQ of 200 KB).
const MERGE_MAX_ITEMS: usize = 100;

impl SyncEngine {
    /// Sends live subscriptions: all targets at session start; then items added since
    /// are merged into the newest live REQ (re-issued under a new id, the old one closed
    /// after it) while it names at most [`MERGE_MAX_ITEMS`] and still fits one REQ, so
    /// an event matching an old and a new item arrives on one subscription only; past
    /// that they go out as extra REQs (such an event may then arrive twice), and when
    /// those would exceed the relay's budget everything is consolidated again.
    pub(super) fn refresh_live(&mut self, id: RelayId) {
        let now = self.now;
        let interval = self.config.timing.live_update_interval;
        let Some(relay) = self.relays.get(&id) else {
            return;
        };
        if !relay.live_dirty && relay.live_new.is_empty() {
            return;
        }
        // A session's whole set goes out now; the first update after it is not held to
        // the interval (see `RelayState::live_set_fresh`), nor, in a one-shot sync, is
        // one at a relay with no job left (nothing is sent live, and nothing is left
        // to batch the new jobs with).
        let session_start = relay.live_dirty;
        let idle_one_shot = self.config.one_shot && relay.jobs.is_empty();
        let gated = relay.live_interval_ends(interval).is_some_and(|t| now < t);
        if !relay.live_dirty && !idle_one_shot && gated {
            return;
        }
        // Events still to be verified may name more new items (new roots verified in
        // two batches): they join the same update, held for at most a quarter interval
        // after the first new item.
        let hold = relay.live_new_since.map(|t| t + interval / 4);
        if !relay.live_dirty && self.pipeline.verifying_any() && hold.is_some_and(|h| now < h) {
            if relay.live_held_until.is_none() {
                if let Some(relay) = self.relays.get_mut(&id) {
                    relay.live_held_until = hold;
                }
                self.relays.touch(id);
            }
            return;
        }
        if self.config.one_shot {
            // No live REQ, but new items are taken up on the same schedule, so a burst
            // of discoveries becomes a few large historic jobs, not many small ones.
            self.live_sent(id, None, session_start);
            if let Some(relay) = self.relays.get_mut(&id) {
                relay.live_dirty = false;
            }
            return;
        }
        if relay.quiet_until.is_some_and(|t| now < t) {
            return;
        }
        let limits = relay.limits;
        let bootstrap = relay.bootstrap;
        let budget = limits
            .max_subscriptions
            .saturating_sub(self.config.flow.jobs_per_relay + 1)
            .max(1);
        let live_subs = relay.live_subs();
        if !relay.live_dirty {
            let new: Vec<ItemId> = relay.live_new.iter().copied().collect();
            let tail = relay
                .live_tail
                .as_ref()
                .and_then(|sub| match relay.subs.get(sub) {
                    Some(Sub::Live(live)) => live
                        .items
                        .as_ref()
                        .filter(|items| items.len() <= MERGE_MAX_ITEMS)
                        .map(|items| (sub.clone(), items.clone(), live.discovery)),
                    _ => None,
                });
            // The replacement is opened before the old one is closed (nothing published
            // in between is missed), so it needs a free subscription slot.
            let slot = relay.subs.len() < limits.max_subscriptions;
            if let (Some((old, mut items, discovery)), true) = (tail, slot) {
                items.extend(new.iter().copied());
                items.sort_unstable();
                items.dedup();
                let mut reqs = pack_reqs(self.live_filters(&items, discovery, &limits), &limits);
                if let (1, Some(filters)) = (reqs.len(), reqs.pop()) {
                    let sub = self.send_live(id, filters, Some(items), discovery);
                    self.retire_live(id, &old, sub.as_ref());
                    self.live_sent(id, sub, false);
                    return;
                }
            }
            let reqs = pack_reqs(self.live_filters(&new, false, &limits), &limits);
            if live_subs.len() + reqs.len() <= budget {
                let single = reqs.len() == 1;
                let mut last = None;
                for filters in reqs {
                    let items = single.then(|| new.clone());
                    last = self.send_live(id, filters, items, false);
                }
                self.live_sent(id, last.filter(|_| single), false);
                return;
            }
        }
        let items: Vec<ItemId> = self.index.targets().items(id).collect();
        let mut reqs = pack_reqs(self.live_filters(&items, bootstrap, &limits), &limits);
        let catch_all = reqs.len() > budget;
        if catch_all {
            reqs = vec![vec![Filter::new().kinds(kinds::ALL).limit(0)]];
        }
        for sub in &live_subs {
            self.retire_live(id, sub, None);
        }
        let single = reqs.len() == 1 && !catch_all;
        let mut last = None;
        for filters in reqs {
            let covered = single.then(|| items.clone());
            last = self.send_live(id, filters, covered, bootstrap);
        }
        // What the closed subscriptions sent before the relay saw the new ones still
        // counts: the last new REQ's EOSE ends the grace.
        if let Some(successor) = &last {
            let until = now + self.config.timing.eose_timeout;
            if let Some(relay) = self.relays.get_mut(&id) {
                for (_, closing) in relay.closing_live.iter_mut() {
                    if closing.successor.is_none() {
                        closing.successor = Some(successor.clone());
                        closing.until = until;
                    }
                }
            }
        }
        self.live_sent(id, last.filter(|_| single), session_start);
        if let Some(relay) = self.relays.get_mut(&id) {
            relay.live_dirty = false;
        }
    }

    /// Closes a live subscription that `successor` replaces; events on it still count
    /// until the successor's EOSE (see [`relay::Closing`]); a missing `successor` is set
    /// by the caller once the replacement is sent.
    fn retire_live(&mut self, id: RelayId, old: &SubId, successor: Option<&SubId>) {
        let until = self.now + self.config.timing.eose_timeout;
        let Some(relay) = self.relays.get_mut(&id) else {
            return;
        };
        if let Some(Sub::Live(live)) = relay.subs.remove(old) {
            relay.closing_live.insert(
                old.clone(),
                relay::Closing {
                    filters: live.filters,
                    successor: successor.cloned(),
                    until,
                },
            );
            self.send(
                id,
                &ClientFrame::Close {
                    subscription: old.to_string(),
                },
            );
        }
    }

    /// Live subscriptions were sent (`whole`: every target, as at a session's start):
    /// `tail` is the one to merge new items into.
    fn live_sent(&mut self, id: RelayId, tail: Option<SubId>, whole: bool) {
        if let Some(relay) = self.relays.get_mut(&id) {
            relay.live_set_fresh = whole;
            relay.live_new.clear();
            relay.live_new_since = None;
            relay.live_held_until = None;
            relay.live_sent_at = Some(self.now);
            relay.live_tail = tail;
        }
    }

    /// Nothing is on its way to the store any more: held live updates go out.
    pub(super) fn release_held_live(&mut self) {
        let held: Vec<RelayId> = self
            .relays
            .iter()
            .filter(|(_, r)| r.live_held_until.is_some())
            .map(|(id, _)| *id)
            .collect();
        for id in held {
            self.relays.mark(id);
        }
    }

    /// Live filters for `items` (and discovery on a bootstrap relay).
    fn live_filters(&self, items: &[ItemId], discovery: bool, limits: &RelayLimits) -> Vec<Filter> {
        let (coords, roots) = self.index.names().split(items);
        let mut filters: Vec<Filter> = Vec::new();
        for chunk in announcement_chunks(&coords, Form::Live, limits) {
            filters.extend(chunk.filters);
        }
        for chunk in repo_tag_chunks(&coords, Form::Live, limits) {
            filters.extend(chunk.filters);
        }
        for chunk in root_tag_chunks(&roots, Form::Live, limits) {
            filters.extend(chunk.filters);
        }
        if discovery {
            filters.push(discovery_filter(Form::Live, &self.config.discovery));
        }
        filters
    }

    /// Opens one live REQ; returns its subscription id.
    fn send_live(
        &mut self,
        id: RelayId,
        filters: Vec<Filter>,
        items: Option<Vec<ItemId>>,
        discovery: bool,
    ) -> Option<SubId> {
        let live = relay::Live {
            filters,
            items,
            discovery,
        };
        let sub = self.relays.get_mut(&id).map(|r| r.open_live(live));
        self.flush_sends(id);
        sub
    }
}
