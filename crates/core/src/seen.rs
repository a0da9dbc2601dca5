//! Ids seen but not stored (rejected as irrelevant, superseded, deleted…), remembered
//! with an expiry and joined to the local negentropy set, so a reconciliation never asks
//! again for what we chose not to keep.
//!
//! Each entry keeps what filter matching needs (kind, author, `created_at` and the
//! single-letter tags) but not content or signature, so it can join exactly the local
//! sets of the filters the event matches. The set is bounded: when full, the entry that
//! expires first is dropped.

use std::collections::{BTreeSet, HashMap};

use nostr::prelude::{Event, EventId, Filter, Kind, PublicKey, SingleLetterTag, Timestamp};

/// How long a seen id is remembered by default (30 days).
pub const DEFAULT_TTL_SECS: u64 = 30 * 24 * 3600;
/// How many seen ids are remembered by default.
pub const DEFAULT_CAPACITY: usize = 200_000;
/// At most this many single-letter tag values are kept per entry.
const MAX_TAGS_PER_ENTRY: usize = 64;

/// What is remembered of an event that was not stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenEntry {
    /// The event id.
    pub id: EventId,
    /// Its author.
    pub pubkey: PublicKey,
    /// Its kind.
    pub kind: Kind,
    /// Its creation time.
    pub created_at: Timestamp,
    /// Its single-letter tags (letter, first value), bounded.
    pub tags: Vec<(SingleLetterTag, String)>,
    /// When it is forgotten.
    pub expires_at: Timestamp,
}

impl SeenEntry {
    /// The entry for `event`, forgotten at `expires_at`.
    pub fn of(event: &Event, expires_at: Timestamp) -> Self {
        let tags = event
            .tags
            .iter()
            .filter_map(|t| {
                let letter = t.single_letter_tag()?;
                let value = t.content()?;
                Some((letter, value.to_owned()))
            })
            .take(MAX_TAGS_PER_ENTRY)
            .collect();
        Self {
            id: event.id,
            pubkey: event.pubkey,
            kind: event.kind,
            created_at: event.created_at,
            tags,
            expires_at,
        }
    }

    /// Whether the event this entry stands for matches `filter` (NIP-01 rules; `search`
    /// cannot be checked without content and counts as a match).
    pub fn matches(&self, filter: &Filter) -> bool {
        set_allows(&filter.ids, &self.id)
            && set_allows(&filter.authors, &self.pubkey)
            && set_allows(&filter.kinds, &self.kind)
            && filter.since.is_none_or(|s| self.created_at >= s)
            && filter.until.is_none_or(|u| self.created_at <= u)
            && filter.generic_tags.iter().all(|(letter, values)| {
                self.tags
                    .iter()
                    .any(|(l, v)| l == letter && values.contains(v))
            })
    }
}

/// Whether an optional filter field allows `value` (absent or empty allows everything).
fn set_allows<T: Ord>(set: &Option<BTreeSet<T>>, value: &T) -> bool {
    set.as_ref()
        .is_none_or(|s| s.is_empty() || s.contains(value))
}

/// The bounded set of seen-not-stored events.
#[derive(Debug, Clone)]
pub struct SeenSet {
    entries: HashMap<EventId, SeenEntry>,
    by_expiry: BTreeSet<(Timestamp, EventId)>,
    capacity: usize,
    ttl: u64,
}

impl Default for SeenSet {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY, DEFAULT_TTL_SECS)
    }
}

impl SeenSet {
    /// An empty set holding at most `capacity` entries for `ttl_secs` each.
    pub fn new(capacity: usize, ttl_secs: u64) -> Self {
        Self {
            entries: HashMap::new(),
            by_expiry: BTreeSet::new(),
            capacity: capacity.max(1),
            ttl: ttl_secs,
        }
    }

    /// Remembers `event` as seen and not stored, from `now` on.
    /// Returns the entry, for persisting.
    pub fn remember(&mut self, event: &Event, now: Timestamp) -> SeenEntry {
        let expires_at = Timestamp::from(now.as_secs().saturating_add(self.ttl));
        let entry = SeenEntry::of(event, expires_at);
        self.insert(entry.clone());
        entry
    }

    /// Adds an entry (e.g. restored from the store); the one expiring first makes room.
    pub fn insert(&mut self, entry: SeenEntry) {
        if let Some(old) = self.entries.remove(&entry.id) {
            self.by_expiry.remove(&(old.expires_at, old.id));
        }
        while self.entries.len() >= self.capacity {
            let Some(first) = self.by_expiry.pop_first() else {
                break;
            };
            self.entries.remove(&first.1);
        }
        self.by_expiry.insert((entry.expires_at, entry.id));
        self.entries.insert(entry.id, entry);
    }

    /// Forgets an id (it was stored after all).
    pub fn forget(&mut self, id: &EventId) {
        if let Some(old) = self.entries.remove(id) {
            self.by_expiry.remove(&(old.expires_at, old.id));
        }
    }

    /// Drops entries that expired at or before `now`.
    pub fn expire(&mut self, now: Timestamp) {
        while let Some(first) = self.by_expiry.first().copied() {
            if first.0 > now {
                break;
            }
            self.by_expiry.pop_first();
            self.entries.remove(&first.1);
        }
    }

    /// Whether `id` is remembered.
    pub fn contains(&self, id: &EventId) -> bool {
        self.entries.contains_key(id)
    }

    /// The (created_at, id) items of entries matching `filter`, for a negentropy set.
    pub fn items_matching<'a>(
        &'a self,
        filter: &'a Filter,
    ) -> impl Iterator<Item = (Timestamp, EventId)> + 'a {
        self.entries
            .values()
            .filter(|e| e.matches(filter))
            .map(|e| (e.created_at, e.id))
    }

    /// Every entry, for persisting.
    pub fn entries(&self) -> impl Iterator<Item = &SeenEntry> {
        self.entries.values()
    }

    /// Number of remembered ids.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
