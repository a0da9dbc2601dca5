//! Filter planning: which postings answer a NIP-01 filter, and the rules every backend
//! applies to what they yield (exact match, NIP-40 expiration, newest first, `limit`).
//!
//! A backend keeps postings — (created_at, id) pairs in [`Posting`] order, newest first —
//! per tag value (letter and first value of every single-letter tag), per author, per
//! kind, and one over every event, and its events by id. [`Plan::of`] picks the postings
//! that answer a filter; the backend walks them newest first and keeps the events
//! [`Plan::admits`], stopping at the limit. Because every posting list is in time order,
//! the newest `limit` come out right whatever fields the filter combines (nostr-lmdb
//! 0.45.3 walks an authors + kinds + tags intersection in id order instead, and returns
//! the wrong "newest N"). When the postings alone answer the filter
//! ([`Plan::postings_suffice`]), negentropy items need no event read.

use std::cmp::Ordering;

use grasp_sync_core::matching::event_matches;
use nostr::prelude::SingleLetterTag;
use nostr::prelude::{Event, EventId, Filter, Kind, PublicKey, Timestamp};

use crate::notes::is_live;

/// One event's (created_at, id). Ordered newest first: `created_at` descending, then id
/// ascending (NIP-01's order for `limit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Posting {
    /// When the event was created.
    pub created_at: Timestamp,
    /// Its id.
    pub id: EventId,
}

impl Posting {
    /// The posting of `event`.
    pub fn of(event: &Event) -> Self {
        Self {
            created_at: event.created_at,
            id: event.id,
        }
    }

    /// As a negentropy item.
    pub fn item(self) -> (Timestamp, EventId) {
        (self.created_at, self.id)
    }
}

impl Ord for Posting {
    fn cmp(&self, other: &Self) -> Ordering {
        newest_first(&self.item(), &other.item())
    }
}

impl PartialOrd for Posting {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// NIP-01 order of (created_at, id): `created_at` descending, then id ascending.
pub fn newest_first(a: &(Timestamp, EventId), b: &(Timestamp, EventId)) -> Ordering {
    b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1))
}

/// The postings that answer a filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Nothing matches (`limit: 0`, or a tag given with no value).
    Nothing,
    /// The events with these ids.
    Ids(Vec<EventId>),
    /// The postings of these values of one tag letter (the filter's letter with the
    /// fewest values).
    Tag(SingleLetterTag, Vec<String>),
    /// The postings of these authors.
    Authors(Vec<PublicKey>),
    /// The postings of these kinds.
    Kinds(Vec<Kind>),
    /// The postings of every event.
    All,
}

/// How to answer one filter.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The postings to walk.
    pub access: Access,
    /// Postings older than this are out of the window.
    pub since: Timestamp,
    /// Postings newer than this are out of the window.
    pub until: Timestamp,
    /// At most this many events, the newest.
    pub limit: Option<usize>,
    /// Whether every posting of [`access`](Self::access) in the window matches the
    /// filter (nothing else to check but expiration): items need no event read.
    pub postings_suffice: bool,
    filter: Filter,
}

impl Plan {
    /// The plan for `filter`: by ids when it names ids, else by the tag letter with the
    /// fewest values, else by authors, else by kinds, else every event. An empty id,
    /// author or kind set constrains nothing (NIP-01 as nostr matches it); a tag with no
    /// value matches nothing.
    pub fn of(filter: &Filter) -> Self {
        let given = |n: Option<usize>| n.is_some_and(|n| n > 0);
        let ids = given(filter.ids.as_ref().map(|s| s.len()));
        let authors = given(filter.authors.as_ref().map(|s| s.len()));
        let kinds = given(filter.kinds.as_ref().map(|s| s.len()));
        let tags = filter.generic_tags.len();
        let fields = usize::from(ids) + usize::from(authors) + usize::from(kinds) + tags;
        let access = if filter.limit == Some(0)
            || filter.generic_tags.values().any(|v| v.is_empty())
            || matches!((filter.since, filter.until), (Some(s), Some(u)) if s > u)
        {
            Access::Nothing
        } else if ids {
            Access::Ids(filter.ids.iter().flatten().copied().collect())
        } else if let Some((letter, values)) =
            filter.generic_tags.iter().min_by_key(|(_, v)| v.len())
        {
            Access::Tag(*letter, values.iter().cloned().collect())
        } else if authors {
            Access::Authors(filter.authors.iter().flatten().copied().collect())
        } else if kinds {
            Access::Kinds(filter.kinds.iter().flatten().copied().collect())
        } else {
            Access::All
        };
        Self {
            postings_suffice: fields <= 1 && filter.search.is_none(),
            access,
            since: filter.since.unwrap_or_else(Timestamp::min),
            until: filter.until.unwrap_or_else(Timestamp::max),
            limit: filter.limit,
            filter: filter.clone(),
        }
    }

    /// The filter planned for.
    pub fn filter(&self) -> &Filter {
        &self.filter
    }

    /// Whether `posting` is in the filter's time window.
    pub fn in_window(&self, posting: &Posting) -> bool {
        self.since <= posting.created_at && posting.created_at <= self.until
    }

    /// Whether `event` belongs in the answer at `now`: it matches the filter (NIP-01)
    /// and has not expired (NIP-40).
    pub fn admits(&self, event: &Event, now: Timestamp) -> bool {
        is_live(event, now) && event_matches(&self.filter, event)
    }

    /// Walks `postings` (newest first, as [`merge`] gives them), reads each event with
    /// `read`, and keeps those [`admits`](Self::admits) says, up to the limit.
    pub fn select(
        &self,
        postings: impl IntoIterator<Item = Posting>,
        mut read: impl FnMut(&EventId) -> Option<Event>,
        now: Timestamp,
    ) -> Vec<Event> {
        let limit = self.limit.unwrap_or(usize::MAX);
        let mut out = Vec::new();
        for posting in postings {
            if out.len() >= limit {
                break;
            }
            if !self.in_window(&posting) {
                continue;
            }
            if let Some(event) = read(&posting.id).filter(|e| self.admits(e, now)) {
                out.push(event);
            }
        }
        out
    }
}

/// One list of postings from several (each in any order): newest first, without
/// repeats.
pub fn merge(lists: impl IntoIterator<Item = Vec<Posting>>) -> Vec<Posting> {
    let mut all: Vec<Posting> = lists.into_iter().flatten().collect();
    all.sort_unstable();
    all.dedup();
    all
}

/// The answer to `filter` from candidate events (any order, possibly more than match):
/// those that match and have not expired at `now`, newest first, without repeats, the
/// newest `limit` of them. What every backend's answer must equal.
pub fn newest(filter: &Filter, events: Vec<Event>, now: Timestamp) -> Vec<Event> {
    let plan = Plan::of(filter);
    if plan.access == Access::Nothing {
        return Vec::new();
    }
    let mut events: Vec<Event> = events.into_iter().filter(|e| plan.admits(e, now)).collect();
    events.sort_unstable_by(|a, b| Posting::of(a).cmp(&Posting::of(b)));
    events.dedup_by_key(|e| e.id);
    events.truncate(plan.limit.unwrap_or(usize::MAX));
    events
}

/// Negentropy items (newest first) of events `filter` admits at `now`: [`newest`] as
/// (created_at, id).
pub fn items_of(filter: &Filter, events: Vec<Event>, now: Timestamp) -> Vec<(Timestamp, EventId)> {
    newest(filter, events, now)
        .iter()
        .map(|e| (e.created_at, e.id))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_access_follows_the_most_selective_field() {
        let pk = PublicKey::from_slice(&[2; 32]).expect("key");
        let id = EventId::from_slice(&[1; 32]).expect("id");
        let t = SingleLetterTag::LOWERCASE_T;
        let by_tag = Filter::new()
            .author(pk)
            .kind(Kind::from(1))
            .hashtags(["a", "b"])
            .identifier("x");
        assert_eq!(
            Plan::of(&by_tag).access,
            Access::Tag(SingleLetterTag::LOWERCASE_D, vec!["x".into()])
        );
        assert!(!Plan::of(&by_tag).postings_suffice);
        assert_eq!(
            Plan::of(&Filter::new().id(id).hashtag("a")).access,
            Access::Ids(vec![id])
        );
        let one_tag = Plan::of(&Filter::new().hashtag("a").since(Timestamp::from(3)));
        assert_eq!(one_tag.access, Access::Tag(t, vec!["a".into()]));
        assert!(one_tag.postings_suffice);
        assert_eq!(
            Plan::of(&Filter::new().kind(Kind::from(1)).limit(0)).access,
            Access::Nothing
        );
        assert_eq!(Plan::of(&Filter::new().authors([])).access, Access::All);
        assert!(Plan::of(&Filter::new().authors([])).postings_suffice);
    }
}
