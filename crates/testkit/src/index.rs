//! An in-memory event set with the indexes a relay uses, so simulated relays and the
//! simulated store answer filters without scanning everything.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use grasp_sync_core::seen::SeenEntry;
use nostr::prelude::{Event, EventId, Filter, SingleLetterTag, Timestamp};

/// Events by id, with postings by single-letter tag value.
#[derive(Debug, Default, Clone)]
pub struct EventIndex {
    events: BTreeMap<EventId, (Event, SeenEntry)>,
    by_tag: HashMap<(SingleLetterTag, String), BTreeSet<EventId>>,
}

impl EventIndex {
    /// Adds an event (replacing one with the same id).
    pub fn insert(&mut self, event: Event) {
        let entry = SeenEntry::of(&event, Timestamp::from(0));
        for (letter, value) in &entry.tags {
            self.by_tag
                .entry((*letter, value.clone()))
                .or_default()
                .insert(event.id);
        }
        self.events.insert(event.id, (event, entry));
    }

    /// Removes an event; returns it.
    pub fn remove(&mut self, id: &EventId) -> Option<Event> {
        let (event, entry) = self.events.remove(id)?;
        for (letter, value) in entry.tags {
            if let Some(ids) = self.by_tag.get_mut(&(letter, value.clone())) {
                ids.remove(id);
                if ids.is_empty() {
                    self.by_tag.remove(&(letter, value));
                }
            }
        }
        Some(event)
    }

    /// The event with this id.
    pub fn get(&self, id: &EventId) -> Option<&Event> {
        self.events.get(id).map(|(e, _)| e)
    }

    /// Every event, by id.
    pub fn iter(&self) -> impl Iterator<Item = &Event> {
        self.events.values().map(|(e, _)| e)
    }

    /// Every id, in order.
    pub fn ids(&self) -> impl Iterator<Item = EventId> + '_ {
        self.events.keys().copied()
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The events matching `filter` (NIP-01 rules), in id order.
    pub fn matching<'a>(&'a self, filter: &'a Filter) -> Vec<&'a Event> {
        let candidates: Box<dyn Iterator<Item = &(Event, SeenEntry)>> =
            if let Some(ids) = &filter.ids {
                Box::new(ids.iter().filter_map(|id| self.events.get(id)))
            } else if let Some((letter, values)) = filter.generic_tags.iter().next() {
                let mut ids: BTreeSet<&EventId> = BTreeSet::new();
                for value in values {
                    if let Some(posting) = self.by_tag.get(&(*letter, value.clone())) {
                        ids.extend(posting);
                    }
                }
                Box::new(ids.into_iter().filter_map(|id| self.events.get(id)))
            } else {
                Box::new(self.events.values())
            };
        candidates
            .filter(|(_, entry)| entry.matches(filter))
            .map(|(event, _)| event)
            .collect()
    }
}
