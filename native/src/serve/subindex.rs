//! The live subscriptions of every client connection, indexed so that a committed event
//! meets only the subscriptions that can match it (as strfry keeps its live
//! subscriptions), instead of every filter of every connection.
//!
//! Each filter of a subscription is *posted* under one field, the most selective one it
//! has: its `ids`, else one of its tag fields (the one with the fewest values), else its
//! `authors`, else its `kinds`; a filter with none of these (only `since`, `until`,
//! `search`, or nothing) goes on a short scan list. An event's candidates are the filters
//! posted under its id, its author, its kind, each of its single-letter tag values, and
//! the scan list; only those get the full NIP-01 match ([`Filter::match_event`]).
//!
//! Invariants (checked by the property test below):
//! - **Complete.** A filter that matches an event has every value set of its posting
//!   field satisfied by the event (an empty `ids`/`authors`/`kinds` set matches anything,
//!   so such a field is never chosen; an empty tag set matches nothing, and posts
//!   nowhere), so it is among the event's candidates: no delivery is ever missed.
//! - **Removed means gone.** A subscription's filters and every posting of them leave
//!   the index with it (CLOSE, replacement of its id by a new REQ, disconnect), and a
//!   registration's [`SubId`] is never reused: a removed subscription is never returned.
//! - **Bounded.** One entry per filter and one posting per value of its posting field:
//!   what the connection limits (subscriptions per connection, filters per REQ, message
//!   size) already bound. Empty posting sets are dropped.
//! - A subscription's filters get consecutive slot numbers, so its candidates are adjacent
//!   once sorted, and it is reported once per event however many of its filters match.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::Arc;

use grasp_sync_core::matching::event_matches;
use nostr::prelude::{Event, EventId, Filter, Kind, PublicKey, SingleLetterTag};

/// A client connection, as the index knows it.
pub type ConnId = u64;

/// One registration of a subscription (a REQ); never reused, so a replaced or closed
/// subscription's deliveries can be told from its successor's.
pub type SubId = u64;

/// One filter of a subscription.
type Slot = u64;

/// Filters posted under one value.
type Postings = HashSet<Slot>;

/// The field a filter is posted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Ids,
    Tag(SingleLetterTag),
    Authors,
    Kinds,
    Scan,
}

impl Field {
    /// The most selective field of `filter`.
    fn of(filter: &Filter) -> Self {
        let given = |set: Option<usize>| set.is_some_and(|n| n > 0);
        if given(filter.ids.as_ref().map(|s| s.len())) {
            return Self::Ids;
        }
        if let Some((letter, _)) = filter.generic_tags.iter().min_by_key(|(_, v)| v.len()) {
            return Self::Tag(*letter);
        }
        if given(filter.authors.as_ref().map(|s| s.len())) {
            return Self::Authors;
        }
        if given(filter.kinds.as_ref().map(|s| s.len())) {
            return Self::Kinds;
        }
        Self::Scan
    }
}

struct Posted {
    sub: SubId,
    field: Field,
    filter: Filter,
}

struct Sub {
    conn: ConnId,
    name: Arc<str>,
    slots: Vec<Slot>,
}

/// A subscription an event matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    /// Its connection.
    pub conn: ConnId,
    /// Its registration.
    pub sub: SubId,
    /// Its subscription id on the wire.
    pub name: Arc<str>,
}

/// Live subscriptions by connection and subscription id, with their filters posted
/// under their most selective field.
#[derive(Default)]
pub struct SubIndex {
    next: u64,
    conns: HashMap<ConnId, HashMap<Arc<str>, SubId>>,
    subs: HashMap<SubId, Sub>,
    filters: HashMap<Slot, Posted>,
    ids: HashMap<EventId, Postings>,
    tags: HashMap<SingleLetterTag, HashMap<String, Postings>>,
    authors: HashMap<PublicKey, Postings>,
    kinds: HashMap<Kind, Postings>,
    scan: Postings,
}

impl SubIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Subscriptions held.
    pub fn subscriptions(&self) -> usize {
        self.subs.len()
    }

    /// Filters held.
    pub fn filters(&self) -> usize {
        self.filters.len()
    }

    /// Whether no subscription is held.
    pub fn is_empty(&self) -> bool {
        self.subs.is_empty()
    }

    /// Registers subscription `name` of `conn` with `filters`, replacing one of the same
    /// name; returns the new registration.
    pub fn insert(&mut self, conn: ConnId, name: &str, filters: Vec<Filter>) -> SubId {
        self.remove(conn, name);
        let sub = self.take_number();
        let mut slots = Vec::with_capacity(filters.len());
        for filter in filters {
            let slot = self.take_number();
            let field = Field::of(&filter);
            self.post(slot, field, &filter);
            self.filters.insert(slot, Posted { sub, field, filter });
            slots.push(slot);
        }
        let name: Arc<str> = name.into();
        self.conns
            .entry(conn)
            .or_default()
            .insert(Arc::clone(&name), sub);
        self.subs.insert(sub, Sub { conn, name, slots });
        sub
    }

    /// Removes subscription `name` of `conn`; whether it was held.
    pub fn remove(&mut self, conn: ConnId, name: &str) -> bool {
        let Some(subs) = self.conns.get_mut(&conn) else {
            return false;
        };
        let Some(sub) = subs.remove(name) else {
            return false;
        };
        if subs.is_empty() {
            self.conns.remove(&conn);
        }
        self.drop_sub(sub);
        true
    }

    /// Removes every subscription of `conn`; how many it held.
    pub fn remove_conn(&mut self, conn: ConnId) -> usize {
        let Some(subs) = self.conns.remove(&conn) else {
            return 0;
        };
        let n = subs.len();
        for sub in subs.into_values() {
            self.drop_sub(sub);
        }
        n
    }

    /// Calls `found` once for every subscription `event` matches (any of its filters,
    /// NIP-01), trying only the event's candidates.
    pub fn for_each_match(&self, event: &Event, mut found: impl FnMut(Match)) {
        let mut last = None;
        for slot in self.candidates(event) {
            let Some(posted) = self.filters.get(&slot) else {
                continue;
            };
            if last == Some(posted.sub) || !event_matches(&posted.filter, event) {
                continue;
            }
            last = Some(posted.sub);
            if let Some(sub) = self.subs.get(&posted.sub) {
                found(Match {
                    conn: sub.conn,
                    sub: posted.sub,
                    name: Arc::clone(&sub.name),
                });
            }
        }
    }

    /// The filters posted under a key `event` has, and the scan list: sorted, each once.
    fn candidates(&self, event: &Event) -> Vec<Slot> {
        let mut out: Vec<Slot> = Vec::new();
        let mut add = |postings: Option<&Postings>| {
            if let Some(postings) = postings {
                out.extend(postings.iter().copied());
            }
        };
        add(self.ids.get(&event.id));
        add(self.authors.get(&event.pubkey));
        add(self.kinds.get(&event.kind));
        if !self.tags.is_empty() {
            for tag in event.tags.iter() {
                if let (Some(letter), Some(value)) = (tag.single_letter_tag(), tag.content()) {
                    add(self.tags.get(&letter).and_then(|values| values.get(value)));
                }
            }
        }
        add(Some(&self.scan));
        out.sort_unstable();
        out.dedup();
        out
    }

    fn take_number(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    fn drop_sub(&mut self, sub: SubId) {
        let Some(held) = self.subs.remove(&sub) else {
            return;
        };
        for slot in held.slots {
            if let Some(posted) = self.filters.remove(&slot) {
                self.unpost(slot, posted.field, &posted.filter);
            }
        }
    }

    fn post(&mut self, slot: Slot, field: Field, filter: &Filter) {
        match field {
            Field::Ids => add_all(&mut self.ids, filter.ids.iter().flatten(), slot),
            Field::Authors => add_all(&mut self.authors, filter.authors.iter().flatten(), slot),
            Field::Kinds => add_all(&mut self.kinds, filter.kinds.iter().flatten(), slot),
            Field::Tag(letter) => {
                if let Some(values) = filter.generic_tags.get(&letter) {
                    add_all(self.tags.entry(letter).or_default(), values.iter(), slot);
                }
            }
            Field::Scan => {
                self.scan.insert(slot);
            }
        }
    }

    fn unpost(&mut self, slot: Slot, field: Field, filter: &Filter) {
        match field {
            Field::Ids => remove_all(&mut self.ids, filter.ids.iter().flatten(), slot),
            Field::Authors => remove_all(&mut self.authors, filter.authors.iter().flatten(), slot),
            Field::Kinds => remove_all(&mut self.kinds, filter.kinds.iter().flatten(), slot),
            Field::Tag(letter) => {
                if let (Some(values), Entry::Occupied(mut by_value)) =
                    (filter.generic_tags.get(&letter), self.tags.entry(letter))
                {
                    remove_all(by_value.get_mut(), values.iter(), slot);
                    if by_value.get().is_empty() {
                        by_value.remove();
                    }
                }
            }
            Field::Scan => {
                self.scan.remove(&slot);
            }
        }
    }
}

fn add_all<'a, K: Hash + Eq + Clone + 'a>(
    map: &mut HashMap<K, Postings>,
    keys: impl Iterator<Item = &'a K>,
    slot: Slot,
) {
    for key in keys {
        map.entry(key.clone()).or_default().insert(slot);
    }
}

fn remove_all<'a, K: Hash + Eq + 'a>(
    map: &mut HashMap<K, Postings>,
    keys: impl Iterator<Item = &'a K>,
    slot: Slot,
) {
    for key in keys {
        if let Some(postings) = map.get_mut(key) {
            postings.remove(&slot);
            if postings.is_empty() {
                map.remove(key);
            }
        }
    }
}

#[cfg(test)]
impl SubIndex {
    /// Postings held, over every field (each value of each posted filter once).
    fn postings(&self) -> usize {
        fn total<K>(map: &HashMap<K, Postings>) -> usize {
            map.values().map(HashSet::len).sum()
        }
        total(&self.ids)
            + total(&self.authors)
            + total(&self.kinds)
            + self.tags.values().map(total).sum::<usize>()
            + self.scan.len()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use grasp_sync_testkit::corpus::{keys, sign};
    use nostr::prelude::Timestamp;
    use proptest::prelude::*;

    use super::*;

    const KINDS: [u16; 4] = [1, 1617, 1621, 30617];
    const LETTERS: [char; 4] = ['a', 'e', 'A', 'p'];
    const VALUES: [&str; 3] = ["x", "y", "z"];
    const AUTHORS: u64 = 3;

    /// An event: author, kind, created_at, tags as (letter index, value index).
    type EventSpec = (u64, usize, u64, Vec<(usize, usize)>, bool);

    fn event_spec() -> impl Strategy<Value = EventSpec> {
        (
            0..AUTHORS,
            0..KINDS.len(),
            0u64..6,
            prop::collection::vec((0..LETTERS.len(), 0..VALUES.len()), 0..4),
            any::<bool>(),
        )
    }

    fn build(spec: &EventSpec) -> Event {
        let (author, kind, at, tags, odd_tags) = spec;
        let mut tags: Vec<Vec<String>> = tags
            .iter()
            .map(|(l, v)| vec![LETTERS[*l].to_string(), VALUES[*v].to_owned()])
            .collect();
        if *odd_tags {
            // A tag without a value and a multi-letter one: neither is a tag value.
            tags.push(vec!["a".into()]);
            tags.push(vec!["clone".into(), "x".into()]);
        }
        sign(&keys(*author), KINDS[*kind], 1_000 + at, tags, "hello")
    }

    /// A filter over the events' ids, authors, kinds, tags and times, each field
    /// absent, empty or a subset.
    #[derive(Debug, Clone)]
    struct FilterSpec {
        ids: Option<Vec<usize>>,
        authors: Option<Vec<u64>>,
        kinds: Option<Vec<usize>>,
        tags: Vec<(usize, Vec<usize>)>,
        since: Option<u64>,
        until: Option<u64>,
        search: Option<bool>,
    }

    fn filter_spec() -> impl Strategy<Value = FilterSpec> {
        let subset = |n: usize| prop::collection::vec(0..n, 0..3);
        (
            prop::option::weighted(0.3, subset(8)),
            prop::option::weighted(0.4, prop::collection::vec(0..AUTHORS, 0..3)),
            prop::option::weighted(0.4, subset(KINDS.len())),
            prop::collection::vec((0..LETTERS.len(), subset(VALUES.len())), 0..3),
            prop::option::weighted(0.2, 0u64..6),
            prop::option::weighted(0.2, 0u64..6),
            prop::option::weighted(0.1, any::<bool>()),
        )
            .prop_map(
                |(ids, authors, kinds, tags, since, until, search)| FilterSpec {
                    ids,
                    authors,
                    kinds,
                    tags,
                    since,
                    until,
                    search,
                },
            )
    }

    fn filter(spec: &FilterSpec, events: &[Event]) -> Filter {
        let mut generic_tags: BTreeMap<SingleLetterTag, BTreeSet<String>> = BTreeMap::new();
        for (letter, values) in &spec.tags {
            let letter = SingleLetterTag::from_char(LETTERS[*letter]).expect("a letter");
            generic_tags
                .entry(letter)
                .or_default()
                .extend(values.iter().map(|v| VALUES[*v].to_owned()));
        }
        Filter {
            // Index 7 is nobody's id: a filter for an event not among these.
            ids: spec.ids.as_ref().map(|ids| {
                ids.iter()
                    .map(|i| {
                        events
                            .get(*i)
                            .map_or(EventId::from_byte_array([0; 32]), |e| e.id)
                    })
                    .collect()
            }),
            authors: spec
                .authors
                .as_ref()
                .map(|a| a.iter().map(|n| keys(*n).public_key()).collect()),
            kinds: spec
                .kinds
                .as_ref()
                .map(|k| k.iter().map(|i| Kind::from(KINDS[*i])).collect()),
            search: spec
                .search
                .map(|hit| if hit { "HELL".into() } else { "bye".into() }),
            since: spec.since.map(|t| Timestamp::from(1_000 + t)),
            until: spec.until.map(|t| Timestamp::from(1_000 + t)),
            limit: None,
            generic_tags,
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// REQ (new or replacing): connection, subscription name, filters.
        Req(u64, usize, Vec<FilterSpec>),
        /// CLOSE.
        Close(u64, usize),
        /// Disconnect.
        Gone(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0u64..3, 0usize..3, prop::collection::vec(filter_spec(), 1..4))
                .prop_map(|(c, n, f)| Op::Req(c, n, f)),
            2 => (0u64..3, 0usize..3).prop_map(|(c, n)| Op::Close(c, n)),
            1 => (0u64..3).prop_map(Op::Gone),
        ]
    }

    /// The subscriptions the model holds that `event` matches, by brute force.
    fn model_matches(
        model: &HashMap<(u64, usize), (SubId, Vec<Filter>)>,
        event: &Event,
    ) -> BTreeSet<SubId> {
        model
            .values()
            .filter(|(_, filters)| {
                filters
                    .iter()
                    .any(|f| f.match_event(event, nostr::prelude::MatchEventOptions::default()))
            })
            .map(|(sub, _)| *sub)
            .collect()
    }

    /// Checks the index against the model for every event.
    fn check(
        index: &SubIndex,
        model: &HashMap<(u64, usize), (SubId, Vec<Filter>)>,
        removed: &HashSet<SubId>,
        events: &[Event],
    ) -> Result<(), TestCaseError> {
        let live: BTreeSet<SubId> = model.values().map(|(s, _)| *s).collect();
        prop_assert_eq!(index.subscriptions(), model.len());
        for event in events {
            let wanted = model_matches(model, event);
            // Candidates: every matching subscription, and nothing removed.
            let candidates: BTreeSet<SubId> = index
                .candidates(event)
                .iter()
                .map(|slot| {
                    index
                        .filters
                        .get(slot)
                        .map(|p| p.sub)
                        .ok_or_else(|| TestCaseError::fail("a posting of a removed filter"))
                })
                .collect::<Result<_, _>>()?;
            prop_assert!(
                candidates.is_superset(&wanted),
                "missed: {:?}",
                wanted.difference(&candidates).collect::<Vec<_>>()
            );
            prop_assert!(
                candidates.is_subset(&live),
                "a removed subscription is a candidate"
            );
            prop_assert!(candidates.iter().all(|s| !removed.contains(s)));
            // Matches: exactly the matching subscriptions, each once, named as registered.
            let mut found = Vec::new();
            index.for_each_match(event, |m| found.push(m));
            let subs: BTreeSet<SubId> = found.iter().map(|m| m.sub).collect();
            prop_assert_eq!(subs.len(), found.len(), "a subscription reported twice");
            prop_assert_eq!(&subs, &wanted);
            for m in &found {
                let named = model.iter().any(|((c, n), (s, _))| {
                    *s == m.sub && *c == m.conn && *m.name == *n.to_string()
                });
                prop_assert!(named, "wrong connection or name for {:?}", m);
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// For random REQ/CLOSE/disconnect sequences over random filters and events: the
        /// candidates include every matching subscription, removed subscriptions never
        /// come back, the matches are exactly NIP-01's, and everything removed leaves no
        /// posting behind.
        #[test]
        fn candidates_cover_matches_and_removed_never_return(
            specs in prop::collection::vec(event_spec(), 1..8),
            ops in prop::collection::vec(op(), 1..24),
        ) {
            let events: Vec<Event> = specs.iter().map(build).collect();
            let mut index = SubIndex::new();
            let mut model: HashMap<(u64, usize), (SubId, Vec<Filter>)> = HashMap::new();
            let mut removed: HashSet<SubId> = HashSet::new();
            for op in ops {
                match op {
                    Op::Req(conn, name, specs) => {
                        let filters: Vec<Filter> = specs.iter().map(|s| filter(s, &events)).collect();
                        let sub = index.insert(conn, &name.to_string(), filters.clone());
                        if let Some((old, _)) = model.insert((conn, name), (sub, filters)) {
                            removed.insert(old);
                        }
                    }
                    Op::Close(conn, name) => {
                        let held = index.remove(conn, &name.to_string());
                        let old = model.remove(&(conn, name));
                        prop_assert_eq!(held, old.is_some());
                        removed.extend(old.map(|(s, _)| s));
                    }
                    Op::Gone(conn) => {
                        let keys: Vec<_> = model.keys().filter(|(c, _)| *c == conn).copied().collect();
                        prop_assert_eq!(index.remove_conn(conn), keys.len());
                        for key in keys {
                            removed.extend(model.remove(&key).map(|(s, _)| s));
                        }
                    }
                }
                check(&index, &model, &removed, &events)?;
            }
            for conn in 0..3 {
                index.remove_conn(conn);
            }
            prop_assert_eq!(index.filters(), 0);
            prop_assert_eq!(index.postings(), 0);
            prop_assert!(index.ids.is_empty() && index.authors.is_empty() && index.kinds.is_empty());
            prop_assert!(index.tags.is_empty() && index.conns.is_empty());
        }
    }

    #[test]
    fn a_filter_is_posted_under_its_most_selective_field() {
        let e = build(&(0, 1, 0, vec![(0, 0)], false));
        let tag = |l: char, v: &[&str]| {
            let mut t = BTreeMap::new();
            t.insert(
                SingleLetterTag::from_char(l).expect("a letter"),
                v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>(),
            );
            t
        };
        let by_ids = Filter::new().id(e.id).kind(Kind::from(1617));
        assert_eq!(Field::of(&by_ids), Field::Ids);
        let mut by_tag = Filter::new().author(e.pubkey).kind(Kind::from(1617));
        by_tag.generic_tags = tag('a', &["x", "y"]);
        assert!(matches!(Field::of(&by_tag), Field::Tag(_)));
        assert_eq!(
            Field::of(&Filter::new().author(e.pubkey).kind(Kind::from(1))),
            Field::Authors
        );
        assert_eq!(Field::of(&Filter::new().kind(Kind::from(1))), Field::Kinds);
        // Empty sets match anything: not a posting field.
        let mut empty = Filter::new();
        empty.ids = Some(BTreeSet::new());
        empty.authors = Some(BTreeSet::new());
        assert_eq!(Field::of(&empty), Field::Scan);
        assert_eq!(
            Field::of(&Filter::new().since(Timestamp::from(5))),
            Field::Scan
        );
    }
}
