//! Signed test events (the testkit's deterministic keys and corpus) and small helpers.

use std::collections::BTreeSet;

use grasp_sync_core::nip34::kinds;
use grasp_sync_core::RepoRef;
use grasp_sync_testkit::corpus::keys as test_keys;
pub use grasp_sync_testkit::corpus::sign;
use grasp_sync_testkit::{Corpus, CorpusSpec};
use nostr::prelude::{Event, EventId, Keys, Timestamp};

/// The base of fixed `created_at` values (events relative to now use [`now`]).
pub const T0: u64 = 1_700_000_000;

/// Deterministic keys number `n`.
pub fn keys(n: u64) -> Keys {
    test_keys(n)
}

/// A signed event.
pub fn event(keys: &Keys, kind: u16, at: u64, tags: &[&[&str]], content: &str) -> Event {
    let tags = tags
        .iter()
        .map(|t| t.iter().map(|s| (*s).to_owned()).collect())
        .collect();
    sign(keys, kind, at, tags, content)
}

/// A tag from its parts.
pub fn tag(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| (*s).to_owned()).collect()
}

/// A repository announcement of `d` listing `relay`.
pub fn announcement(keys: &Keys, at: u64, d: &str) -> Event {
    event(
        keys,
        kinds::REPO_ANNOUNCEMENT.as_u16(),
        at,
        &[&["d", d], &["relays", "wss://relay.example.com"]],
        "",
    )
}

/// The coordinate of `keys`' repository `d`.
pub fn coord(keys: &Keys, d: &str) -> RepoRef {
    RepoRef::new(keys.public_key(), d)
}

/// The wall clock, in seconds.
pub fn now() -> Timestamp {
    Timestamp::now()
}

/// Ids, in order.
pub fn ids(events: &[Event]) -> Vec<EventId> {
    events.iter().map(|e| e.id).collect()
}

/// Ids, as a set.
pub fn id_set<'a>(events: impl IntoIterator<Item = &'a Event>) -> BTreeSet<EventId> {
    events.into_iter().map(|e| e.id).collect()
}

/// A small corpus: announcements (some in several versions), state, roots, replies,
/// statuses, comments, deletions.
pub fn corpus(seed: u64, repos: usize, events_per_repo: usize) -> Corpus {
    Corpus::generate(&CorpusSpec {
        seed,
        repos,
        events_per_repo,
        ..CorpusSpec::default()
    })
}

/// The corpus events a correct sync keeps.
pub fn acceptable(corpus: &Corpus) -> Vec<Event> {
    corpus.acceptable_events()
}
