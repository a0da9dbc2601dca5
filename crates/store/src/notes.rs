//! Event notes: what a backend writes down about an event beside it, so start-up and
//! negentropy listings never read every event. A root event (a pull request, an issue, a
//! patch starting a series: `nip34::is_root`) is noted so `Store::root_events` reads
//! only roots; an event with a NIP-40 `expiration` tag is noted with that time so
//! listings from postings can leave it out once expired.

use std::collections::HashSet;

use grasp_sync_core::nip34;
use grasp_sync_core::RepoRef;
use nostr::prelude::{Event, EventId, Timestamp};

/// What is noted about a batch of events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Notes {
    /// The roots among them.
    pub roots: Vec<EventId>,
    /// Those with a NIP-40 expiration, and that time.
    pub expiring: Vec<(EventId, Timestamp)>,
}

impl Notes {
    /// The notes of `events`.
    pub fn of<'a>(events: impl IntoIterator<Item = &'a Event>) -> Self {
        let mut notes = Self::default();
        for event in events {
            if nip34::is_root(event) {
                notes.roots.push(event.id);
            }
            if let Some(at) = expiration(event) {
                notes.expiring.push((event.id, at));
            }
        }
        notes
    }

    /// Whether there is nothing to note.
    pub fn is_empty(&self) -> bool {
        self.roots.is_empty() && self.expiring.is_empty()
    }
}

/// The event's NIP-40 expiration, if it has one.
pub fn expiration(event: &Event) -> Option<Timestamp> {
    event.tags.expiration()
}

/// Whether `event` may still be served at `now` (NIP-40: not once its expiration has
/// passed).
pub fn is_live(event: &Event, now: Timestamp) -> bool {
    !event.is_expired_at(now)
}

/// An expiration time as a noted value: 8 bytes big-endian.
pub fn encode_expiration(at: Timestamp) -> [u8; 8] {
    at.as_secs().to_be_bytes()
}

/// The expiration time [`encode_expiration`] wrote; `None` if it is not one.
pub fn decode_expiration(bytes: &[u8]) -> Option<Timestamp> {
    <[u8; 8]>::try_from(bytes)
        .ok()
        .map(|b| Timestamp::from(u64::from_be_bytes(b)))
}

/// The repositories a root event names in its `a`, `A` or `q` tags (the core's
/// reading); nothing for an event that is not a root: what a backend that indexes its
/// roots by repository notes.
pub fn root_repos(event: &Event) -> Vec<RepoRef> {
    if nip34::is_root(event) {
        nip34::repo_refs(event)
    } else {
        Vec::new()
    }
}

/// Whether `event` names one of `repos` in an `a`, `A` or `q` tag (the core's reading,
/// as its index has it): what `Store::root_events` keeps of the noted roots.
pub fn names_a_repo(event: &Event, repos: &HashSet<&RepoRef>) -> bool {
    nip34::repo_refs(event).iter().any(|r| repos.contains(r))
}

#[cfg(test)]
mod tests {
    use super::*;
    use grasp_sync_testkit::corpus::{keys, sign};

    #[test]
    fn a_root_is_noted_under_its_repositories_and_a_reply_under_none() {
        let coord = format!("30617:{}:demo", keys(1).public_key().to_hex());
        let issue = sign(
            &keys(1),
            1621,
            10,
            vec![vec!["a".into(), coord.clone()]],
            "",
        );
        let reply = sign(
            &keys(1),
            1617,
            11,
            vec![
                vec!["a".into(), coord.clone()],
                vec!["e".into(), issue.id.to_hex(), String::new(), "reply".into()],
            ],
            "",
        );
        let repo = RepoRef::parse(&coord).expect("a coordinate");
        assert_eq!(root_repos(&issue), vec![repo]);
        assert!(root_repos(&reply).is_empty());
    }
}
