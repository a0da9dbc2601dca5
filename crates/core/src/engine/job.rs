//! Historic sync jobs: one filter each, run by paginated REQ or by a NIP-77 session.

use std::collections::{BTreeSet, HashSet};

use nostr::prelude::{EventId, Filter, Timestamp};

use super::messages::Checkpoint;
use super::sub_id::SubId;
use super::time::Time;
use crate::items::WorkKey;
use crate::neg::NegInitiator;

/// Identifies a job within the engine: a type apart from subscription, request and
/// batch ids, though all are drawn from one counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct JobId(pub u64);

/// One historic filter at one relay, and the keys it completes.
pub(crate) struct Job {
    pub id: JobId,
    /// Keys confirmed when every job holding them completes.
    pub keys: Vec<WorkKey>,
    /// The historic filter (with `since` when catching up).
    pub filter: Filter,
    /// When the job was (re)started: the checkpoint it confirms.
    pub started_at: Time,
    pub attempts: u32,
    pub state: JobState,
    /// Events of this job not yet stored, and ids not yet fetched.
    pub outstanding: usize,
    /// While draining: when the wait for outstanding events counts as stalled (moved on
    /// by each one that settles), so no job waits forever.
    pub drain_deadline: Option<Time>,
    /// Events were dropped (ingest queue full): run again instead of confirming.
    pub lossy: bool,
    /// Whether this job is a relay's one NIP-77 probe.
    pub probe: bool,
    /// When paged instead of reconciled, page only from here: keys already confirmed
    /// need no full re-download from a relay without NIP-77.
    pub paging_since: Option<Timestamp>,
    /// Not started again before this (after a lossy run).
    pub not_before: Option<Time>,
    /// Lossy runs so far: each doubles the delay before the next.
    pub lossy_runs: u32,
    /// Set when the job covers one second that held more than a page.
    pub narrow: Option<Narrow>,
    /// Whether the running job holds its keys' leases (see `SyncEngine::leases`).
    pub leased: bool,
    /// Planned by a quick session: everything from its `since` on.
    pub catch_up: bool,
    /// Checkpoints a store batch carries for this run (see
    /// `SyncEngine::carried_checkpoints`): not emitted again when it completes.
    pub carried: Vec<Checkpoint>,
}

impl Job {
    /// A queued job for `keys` by `filter`, started at `now`.
    pub fn new(
        id: JobId,
        keys: Vec<WorkKey>,
        filter: Filter,
        now: Time,
        paging_since: Option<Timestamp>,
    ) -> Self {
        Self {
            id,
            keys,
            filter,
            started_at: now,
            attempts: 0,
            state: JobState::Queued,
            outstanding: 0,
            drain_deadline: None,
            lossy: false,
            probe: false,
            paging_since,
            not_before: None,
            lossy_runs: 0,
            narrow: None,
            leased: false,
            catch_up: false,
            carried: Vec::new(),
        }
    }

    /// A quick session's catch-up window (not a narrowed second): it holds few events,
    /// so it is paged with one REQ — NIP-77 would first read the window's local set
    /// from the store (one index range per filter value) and take two round trips —
    /// and runs at every relay at once (a REQ downloads the window whatever another
    /// relay stored).
    pub fn is_window(&self) -> bool {
        self.catch_up && self.narrow.is_none()
    }
}

/// A job narrowing one second (`since = until = second`) that held more than a page:
/// with NIP-77, reconciled (whatever the local set); without, its filter is halved
/// (by item values, then authors, then kinds) and each half paged within the second,
/// down to filters that cannot be halved, whose overflow is reported as incomplete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Narrow {
    /// The second.
    pub second: Timestamp,
    /// Results a page held at the relay when the second overflowed: a page this full
    /// overflows too.
    pub cap: usize,
    /// Already known to overflow (the whole filter's page was full): halved at once
    /// when paged, not asked again.
    pub overflowed: bool,
}

/// Halves a filter along the dimension with the most values (a tag's values, then
/// authors, then kinds, then ids); `None` when every dimension holds at most one value.
pub(crate) fn halve(filter: &Filter) -> Option<(Filter, Filter)> {
    fn split<T: Ord + Clone>(values: &BTreeSet<T>) -> (BTreeSet<T>, BTreeSet<T>) {
        let mid = values.len() / 2;
        let first: BTreeSet<T> = values.iter().take(mid).cloned().collect();
        let second: BTreeSet<T> = values.iter().skip(mid).cloned().collect();
        (first, second)
    }
    let (mut a, mut b) = (filter.clone(), filter.clone());
    let widest_tag = filter
        .generic_tags
        .iter()
        .filter(|(_, values)| values.len() > 1)
        .max_by_key(|(_, values)| values.len());
    if let Some((tag, values)) = widest_tag {
        let (x, y) = split(values);
        a.generic_tags.insert(*tag, x);
        b.generic_tags.insert(*tag, y);
    } else if let Some(authors) = filter.authors.as_ref().filter(|v| v.len() > 1) {
        let (x, y) = split(authors);
        (a.authors, b.authors) = (Some(x), Some(y));
    } else if let Some(kinds) = filter.kinds.as_ref().filter(|v| v.len() > 1) {
        let (x, y) = split(kinds);
        (a.kinds, b.kinds) = (Some(x), Some(y));
    } else if let Some(ids) = filter.ids.as_ref().filter(|v| v.len() > 1) {
        let (x, y) = split(ids);
        (a.ids, b.ids) = (Some(x), Some(y));
    } else {
        return None;
    }
    Some((a, b))
}

/// Where a job is.
pub(crate) enum JobState {
    /// Waiting for a slot.
    Queued,
    /// Waiting for the store's local items for the filter.
    Loading { request: u64 },
    /// Paginated REQ.
    Paging(Pager),
    /// NIP-77 reconciliation.
    Neg(NegRun),
    /// Nothing more to receive; waiting for outstanding events to be stored.
    Draining,
}

impl JobState {
    /// The subscription id the job has open at the relay, if any.
    pub fn subscription(&self) -> Option<&SubId> {
        match self {
            Self::Paging(p) if !p.parked => Some(&p.sub),
            Self::Paging(_) => None,
            Self::Neg(n) => Some(&n.sub),
            _ => None,
        }
    }
}

/// A NIP-77 session in progress.
pub(crate) struct NegRun {
    pub sub: SubId,
    pub initiator: NegInitiator,
    pub deadline: Time,
    /// Whether the relay answered at all (before that, a NOTICE or silence means
    /// "no NIP-77").
    pub answered: bool,
}

/// What an EOSE means for a paginated job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PageOutcome {
    /// Ask for the next page, older than before.
    Next,
    /// Everything was received.
    Done,
    /// One second held at least a full page: its remainder cannot be paged by `until`.
    /// Paging goes on below it; the second is narrowed by a job of its own. For a
    /// one-second walk (see [`Pager::one_second`]): its only page was full.
    StuckSecond(Timestamp),
}

/// Paginated REQ: walks `until` backwards; stops on an empty page or one with nothing
/// new; never loops, because each page either brings new ids (a finite set) or ends
/// the walk or moves `until` strictly back. A second holding a full page is skipped
/// (`StuckSecond`) for a one-second walk of its own, which has a single page.
pub(crate) struct Pager {
    pub sub: SubId,
    pub deadline: Time,
    /// Between pages, waiting for the ingest queue to have room for the next one (no
    /// subscription open, no deadline).
    pub parked: bool,
    until: Option<Timestamp>,
    seen: HashSet<EventId>,
    page_count: usize,
    page_new: usize,
    page_min: Option<Timestamp>,
    page_max: Option<Timestamp>,
    /// The `limit` asked for.
    limit: usize,
    /// Size of the last page that brought something new.
    last_new_page: Option<usize>,
    /// A page size the relay evidently caps at below `limit` (a page of this size was
    /// followed by more): relays lower `limit` silently.
    observed_cap: Option<usize>,
    /// A walk of one second whose pages hold this many: one page, which either holds
    /// everything or overflows.
    one_second: Option<usize>,
}

impl Pager {
    pub fn new(sub: SubId, deadline: Time, limit: usize) -> Self {
        Self {
            sub,
            deadline,
            parked: false,
            until: None,
            seen: HashSet::new(),
            page_count: 0,
            page_new: 0,
            page_min: None,
            page_max: None,
            limit: limit.max(1),
            last_new_page: None,
            observed_cap: None,
            one_second: None,
        }
    }

    /// The page size asked for.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// A walk of one second (the filter has `since = until`) at a relay whose pages
    /// hold `cap` results: a page that full overflowed.
    pub fn one_second(sub: SubId, deadline: Time, limit: usize, cap: usize) -> Self {
        Self {
            one_second: Some(cap.max(1)),
            ..Self::new(sub, deadline, limit)
        }
    }

    /// The page size the relay evidently caps at, when a short page was followed by
    /// more.
    pub fn observed_cap(&self) -> Option<usize> {
        self.observed_cap
    }

    /// How many results a full page holds, as far as this walk knows.
    pub fn full(&self) -> usize {
        self.one_second
            .unwrap_or_else(|| self.observed_cap.unwrap_or(self.limit))
    }

    /// The filter of the next page.
    pub fn page_filter(&self, base: &Filter) -> Filter {
        let filter = base.clone().limit(self.limit);
        match self.until {
            Some(until) => filter.until(until),
            None => filter,
        }
    }

    /// Records an event of the current page; whether it is new to this walk.
    ///
    /// A new event within the page's `limit` moves the deadline to `patience`: the
    /// page times out after a silence, not after a total (a relay that repeats events,
    /// or sends more than asked, gains no time).
    pub fn on_event(&mut self, id: EventId, created_at: Timestamp, patience: Time) -> bool {
        self.page_count += 1;
        self.page_min = Some(self.page_min.map_or(created_at, |m| m.min(created_at)));
        self.page_max = Some(self.page_max.map_or(created_at, |m| m.max(created_at)));
        let new = self.seen.insert(id);
        if new {
            self.page_new += 1;
            if self.page_count <= self.limit {
                self.deadline = self.deadline.max(patience);
            }
        }
        new
    }

    /// The current page ended (EOSE): what next.
    pub fn on_eose(&mut self) -> PageOutcome {
        let (count, new) = (self.page_count, self.page_new);
        let (min, max) = (self.page_min.take(), self.page_max.take());
        self.page_count = 0;
        self.page_new = 0;
        let (Some(min), Some(max)) = (min, max) else {
            return PageOutcome::Done;
        };
        if let Some(cap) = self.one_second {
            return if count >= cap {
                PageOutcome::StuckSecond(min)
            } else {
                PageOutcome::Done
            };
        }
        if new > 0 {
            // A short page followed by more means the relay caps pages at that size.
            if let Some(previous) = self.last_new_page.filter(|p| *p < self.limit) {
                self.observed_cap = Some(self.observed_cap.map_or(previous, |c| c.max(previous)));
            }
            self.last_new_page = Some(count);
            // Inclusive: more events may share the oldest second of this page.
            self.until = Some(min);
            return PageOutcome::Next;
        }
        // Nothing new: either everything was received, or one second holds a full page
        // and `until` cannot get past it.
        let full = self.observed_cap.unwrap_or(self.limit);
        if min == max && count >= full {
            let Some(before) = min.as_secs().checked_sub(1) else {
                return PageOutcome::Done;
            };
            self.until = Some(Timestamp::from(before));
            return PageOutcome::StuckSecond(min);
        }
        PageOutcome::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> EventId {
        let mut b = [0u8; 32];
        b[..4].copy_from_slice(&n.to_be_bytes());
        EventId::from_byte_array(b)
    }

    /// A relay holding `events` (id, created_at) that returns the newest `limit` at or
    /// before `until`, newest first, ties by id (like strfry).
    fn page(events: &[(u32, u64)], until: Option<Timestamp>, limit: usize) -> Vec<(u32, u64)> {
        let mut v: Vec<(u32, u64)> = events
            .iter()
            .copied()
            .filter(|(_, t)| until.is_none_or(|u| *t <= u.as_secs()))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(limit);
        v
    }

    fn walk(events: &[(u32, u64)], limit: usize) -> (HashSet<u32>, Vec<Timestamp>, usize) {
        let mut pager = Pager::new(SubId::new(1), Time::default(), limit);
        let mut got = HashSet::new();
        let mut stuck = Vec::new();
        for pages in 1..10_000 {
            for (n, t) in page(events, pager.until, limit) {
                pager.on_event(id(n), Timestamp::from(t), Time::default());
                got.insert(n);
            }
            match pager.on_eose() {
                PageOutcome::Next => {}
                PageOutcome::Done => return (got, stuck, pages),
                PageOutcome::StuckSecond(s) => stuck.push(s),
            }
        }
        panic!("pagination did not terminate");
    }

    #[test]
    fn pages_through_everything_including_shared_seconds() {
        // 1 000 events over 50 seconds: 20 per second, pages of 30 (pages overlap at
        // their oldest second, which is asked for again)
        let events: Vec<(u32, u64)> = (0..1000).map(|n| (n, 1_000 + u64::from(n % 50))).collect();
        let (got, stuck, pages) = walk(&events, 30);
        assert_eq!(got.len(), 1000);
        assert!(stuck.is_empty());
        assert!(pages <= 1000 / 10 + 2, "{pages} pages");
        // pages of 7 cannot get past a second holding 20: every second is reported
        let (_, stuck, _) = walk(&events, 7);
        assert_eq!(stuck.len(), 50);
    }

    #[test]
    fn a_second_holding_more_than_a_page_is_reported_not_looped_on() {
        let mut events: Vec<(u32, u64)> = (0..30).map(|n| (n, 500)).collect();
        events.extend((30..40).map(|n| (n, 400 + u64::from(n))));
        let (got, stuck, _) = walk(&events, 10);
        assert_eq!(stuck, vec![Timestamp::from(500)]);
        // the older events below the stuck second are still all received
        assert!((30..40).all(|n| got.contains(&n)));
    }

    #[test]
    fn a_last_page_seen_again_is_the_end_not_a_stuck_second() {
        // 3 events; pages of 2: the last page repeats the event at the oldest second
        let events = [(1, 300), (2, 200), (3, 100)];
        let (got, stuck, _) = walk(&events, 2);
        assert_eq!(got.len(), 3);
        assert!(stuck.is_empty());
        // a relay that silently caps at 100 while we ask for 500, with 250 events in
        // one second: the stuck second is still recognised
        let mut events: Vec<(u32, u64)> = (0..250).map(|n| (n, 900)).collect();
        events.extend((250..600).map(|n| (n, 1_000 + u64::from(n))));
        let mut pager = Pager::new(SubId::new(1), Time::default(), 500);
        let mut stuck = Vec::new();
        for _ in 0..100 {
            for (n, t) in page(&events, pager.until, 100) {
                pager.on_event(id(n), Timestamp::from(t), Time::default());
            }
            match pager.on_eose() {
                PageOutcome::Next => {}
                PageOutcome::Done => break,
                PageOutcome::StuckSecond(s) => stuck.push(s),
            }
        }
        assert_eq!(stuck, vec![Timestamp::from(900)]);
    }

    #[test]
    fn a_one_second_walk_is_one_page_that_holds_everything_or_overflows() {
        let events: Vec<(u32, u64)> = (0..30).map(|n| (n, 500)).collect();
        for (cap, overflows) in [(20, true), (30, true), (31, false)] {
            let mut pager = Pager::one_second(SubId::new(1), Time::default(), 500, cap);
            for (n, t) in page(&events, None, cap.min(30)) {
                pager.on_event(id(n), Timestamp::from(t), Time::default());
            }
            let want = if overflows {
                PageOutcome::StuckSecond(Timestamp::from(500))
            } else {
                PageOutcome::Done
            };
            assert_eq!(pager.on_eose(), want, "cap {cap}");
        }
        // an empty second is done
        let mut pager = Pager::one_second(SubId::new(1), Time::default(), 500, 20);
        assert_eq!(pager.on_eose(), PageOutcome::Done);
    }

    #[test]
    fn halving_narrows_the_widest_dimension_down_to_single_values() {
        use nostr::prelude::{Kind, SingleLetterTag};
        let e = SingleLetterTag::LOWERCASE_E;
        let filter = Filter::new()
            .kinds([Kind::from(1u16), Kind::from(2u16)])
            .custom_tags(e, ["a", "b", "c"]);
        let (a, b) = halve(&filter).expect("three values halve");
        let values = |f: &Filter| f.generic_tags.get(&e).map_or(0, |v| v.len());
        assert_eq!((values(&a), values(&b)), (1, 2));
        assert_eq!(a.kinds, filter.kinds);
        // then kinds, once every tag holds one value
        let (x, y) = halve(&a).expect("two kinds halve");
        assert_eq!(
            (
                x.kinds.as_ref().map(|k| k.len()),
                y.kinds.as_ref().map(|k| k.len())
            ),
            (Some(1), Some(1))
        );
        assert!(halve(&x).is_none(), "one value everywhere");
        // every value ends up in exactly one half
        let (c, d) = halve(&b).expect("two values halve");
        let mut all: Vec<String> = [a, c, d]
            .iter()
            .flat_map(|f| f.generic_tags.get(&e).cloned().unwrap_or_default())
            .collect();
        all.sort();
        assert_eq!(all, ["a", "b", "c"]);
    }

    #[test]
    fn an_empty_relay_is_one_page() {
        let (got, stuck, pages) = walk(&[], 500);
        assert!(got.is_empty() && stuck.is_empty());
        assert_eq!(pages, 1);
    }

    #[test]
    fn a_relay_that_lowers_the_limit_silently_is_still_paged_fully() {
        let events: Vec<(u32, u64)> = (0..300).map(|n| (n, 10_000 - u64::from(n))).collect();
        // we ask for 500, the relay returns 100 a page
        let mut pager = Pager::new(SubId::new(1), Time::default(), 500);
        let mut got = HashSet::new();
        loop {
            for (n, t) in page(&events, pager.until, 100) {
                pager.on_event(id(n), Timestamp::from(t), Time::default());
                got.insert(n);
            }
            if pager.on_eose() == PageOutcome::Done {
                break;
            }
        }
        assert_eq!(got.len(), 300);
    }
}
