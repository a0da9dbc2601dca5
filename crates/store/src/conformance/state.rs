//! Sync state round trips, and a reopen restoring the same start-up state.

use std::collections::{BTreeSet, HashSet};

use grasp_sync_core::engine::{Checkpoint, Scope};
use grasp_sync_core::filters::DiscoveryScope;
use grasp_sync_core::nip34::{self, kinds};
use grasp_sync_core::seen::SeenEntry;
use grasp_sync_core::{IndexConfig, Item, Layer, RelayUrl, RepoRef, RootRef};
use grasp_sync_driver::{tracked_events, SavedState, Store};
use nostr::prelude::{EventId, Filter, Timestamp};

use super::data::{acceptable, corpus, id_set, ids, now};
use super::{ensure, root_refs_agree, same, Backend, Case};
use crate::notes::names_a_repo;
use crate::records::scope_text;

/// Checkpoints as comparable rows, sorted.
fn rows(checkpoints: &[Checkpoint]) -> Vec<(String, String, u64)> {
    let mut rows: Vec<_> = checkpoints
        .iter()
        .map(|c| (c.relay.to_string(), scope_text(&c.scope), c.at.as_secs()))
        .collect();
    rows.sort();
    rows
}

/// Remembered entries, sorted by id.
fn sorted(mut entries: Vec<SeenEntry>) -> Vec<SeenEntry> {
    entries.sort_by_key(|e| e.id);
    entries
}

fn relay(url: &str) -> Result<RelayUrl, String> {
    RelayUrl::parse(url).map_err(|e| format!("{url}: {e}"))
}

/// Checkpoints and remembered ids, saved alone and with events: replaced, expired, and
/// the same after a reopen.
pub async fn state<B: Backend>(backend: &B) -> Result<(), String> {
    let corpus = corpus(15, 2, 6);
    let (a, b) = (relay("wss://a.example.com")?, relay("wss://b.example.com")?);
    let long = relay(&format!("wss://relay.example.com/{}", "p".repeat(1500)))?;
    let coord = Scope::Item {
        layer: Layer::RepoTags,
        item: Item::Coord(corpus.repos[0].clone()),
    };
    let root = Scope::Item {
        layer: Layer::RootTags,
        item: Item::Root(corpus.events[0].id),
    };
    let announcements = Scope::Item {
        layer: Layer::Announcements,
        item: Item::Coord(corpus.repos[1].clone()),
    };
    let checkpoint = |relay: &RelayUrl, scope: &Scope, at: u64| Checkpoint {
        relay: relay.clone(),
        scope: scope.clone(),
        at: Timestamp::from(at),
    };
    let first = checkpoint(&a, &coord, 10);
    let together = vec![
        checkpoint(&a, &root, 3),
        checkpoint(&a, &coord, 20),
        checkpoint(&a, &Scope::Discovery, 5),
        checkpoint(&b, &root, 7),
        checkpoint(&b, &coord, 8),
        checkpoint(&b, &announcements, 9),
        checkpoint(&b, &coord, 11),
        checkpoint(&long, &Scope::Discovery, 1),
    ];
    // The second write replaces the first's checkpoint, and one of its own.
    let want_rows = rows(&[
        together[0].clone(),
        together[1].clone(),
        together[2].clone(),
        together[3].clone(),
        together[5].clone(),
        together[6].clone(),
        together[7].clone(),
    ]);

    let now = now().as_secs();
    let (later, earlier) = (Timestamp::from(now + 3600), Timestamp::from(now - 10));
    let keep: Vec<SeenEntry> = corpus.events[..3]
        .iter()
        .map(|e| SeenEntry::of(e, later))
        .collect();
    let forget: Vec<SeenEntry> = corpus.events[3..5]
        .iter()
        .map(|e| SeenEntry::of(e, earlier))
        .collect();
    ensure(keep.iter().any(|e| !e.tags.is_empty()), || {
        "no tags to round-trip".into()
    })?;
    let renewed = corpus.events[5].clone();
    let mut want_seen = keep.clone();
    want_seen.push(SeenEntry::of(&renewed, later));
    let want_seen = sorted(want_seen);
    {
        let store = backend.open(Case::State.name()).await?;
        same(
            rows(&store.load_state().await?.checkpoints),
            Vec::new(),
            "a fresh store's checkpoints",
        )?;
        store.save_state(SavedState::default()).await?;
        store
            .save_state(SavedState {
                checkpoints: vec![first],
                remembered: keep.iter().chain(&forget).cloned().collect(),
            })
            .await?;
        // State a save carries lands with its events.
        let covered = corpus.events[6..9].to_vec();
        store
            .save(
                covered.clone(),
                Vec::new(),
                SavedState {
                    checkpoints: together,
                    remembered: vec![SeenEntry::of(&renewed, earlier)],
                },
            )
            .await?;
        same(
            id_set(&store.query(Filter::new().ids(ids(&covered))).await?),
            id_set(&covered),
            "the events of a save that carried state",
        )?;
        store
            .save_state(SavedState {
                checkpoints: Vec::new(),
                remembered: vec![SeenEntry::of(&renewed, later)],
            })
            .await?;
        let state = store.load_state().await?;
        same(rows(&state.checkpoints), want_rows.clone(), "checkpoints")?;
        same(
            sorted(state.remembered),
            want_seen.clone(),
            "remembered ids",
        )?;
    }
    let store = backend.open(Case::State.name()).await?;
    let state = store.load_state().await?;
    same(
        rows(&state.checkpoints),
        want_rows,
        "checkpoints after a reopen",
    )?;
    same(
        sorted(state.remembered),
        want_seen,
        "remembered ids after a reopen",
    )
}

/// What a restart reads from a store.
#[derive(Debug, PartialEq)]
struct StartUp {
    tracked: BTreeSet<EventId>,
    roots: BTreeSet<EventId>,
    root_refs: BTreeSet<RootRef>,
    checkpoints: Vec<(String, String, u64)>,
    remembered: Vec<SeenEntry>,
    events: Vec<EventId>,
    items: Vec<(Timestamp, EventId)>,
}

async fn start_up(store: &impl Store, coords: &[RepoRef]) -> Result<StartUp, String> {
    let tracked = tracked_events(store, &DiscoveryScope::All, &IndexConfig::default()).await?;
    let wanted: HashSet<&RepoRef> = coords.iter().collect();
    let roots = store.root_events(coords.to_vec()).await?;
    let root_refs = root_refs_agree(store, coords).await?;
    let state = store.load_state().await?;
    Ok(StartUp {
        tracked: id_set(&tracked),
        roots: id_set(
            roots
                .iter()
                .filter(|e| nip34::is_root(e) && names_a_repo(e, &wanted)),
        ),
        root_refs,
        checkpoints: rows(&state.checkpoints),
        remembered: sorted(state.remembered),
        events: ids(&store.query(Filter::new()).await?),
        items: store.items(Filter::new()).await?,
    })
}

/// A reopened store gives a restart what the open one gave.
pub async fn reopen<B: Backend>(backend: &B) -> Result<(), String> {
    let corpus = corpus(17, 3, 25);
    let saved = acceptable(&corpus);
    let coords = corpus.repos.clone();
    let relay = relay("wss://a.example.com")?;
    let state = SavedState {
        checkpoints: coords
            .iter()
            .map(|c| Checkpoint {
                relay: relay.clone(),
                scope: Scope::Item {
                    layer: Layer::RepoTags,
                    item: Item::Coord(c.clone()),
                },
                at: Timestamp::from(1_700_000_000),
            })
            .collect(),
        remembered: corpus
            .events
            .iter()
            .filter(|e| !corpus.acceptable.contains(&e.id))
            .map(|e| SeenEntry::of(e, Timestamp::from(now().as_secs() + 3600)))
            .collect(),
    };
    let before = {
        let store = backend.open(Case::Reopen.name()).await?;
        let fresh = start_up(&store, &coords).await?;
        same(
            fresh.events.len() + fresh.tracked.len(),
            0,
            "a fresh store holds nothing",
        )?;
        store
            .save(saved.clone(), Vec::new(), SavedState::default())
            .await?;
        store.save_state(state).await?;
        start_up(&store, &coords).await?
    };
    // Not vacuous: announcements, state, roots and deletions are all restored.
    let tracked_kinds: BTreeSet<u16> = saved
        .iter()
        .filter(|e| before.tracked.contains(&e.id))
        .map(|e| e.kind.as_u16())
        .collect();
    for kind in [kinds::REPO_ANNOUNCEMENT, kinds::REPO_STATE, kinds::DELETION] {
        ensure(tracked_kinds.contains(&kind.as_u16()), || {
            format!("the restore holds no kind {kind}: {tracked_kinds:?}")
        })?;
    }
    let want_roots = id_set(
        saved
            .iter()
            .filter(|e| nip34::is_root(e) && names_a_repo(e, &coords.iter().collect())),
    );
    ensure(want_roots.len() >= 3, || {
        format!("{} roots", want_roots.len())
    })?;
    same(before.roots.clone(), want_roots, "root events")?;
    ensure(!before.remembered.is_empty(), || {
        "nothing remembered".into()
    })?;
    same(before.events.len(), saved.len(), "every event stored")?;

    let store = backend.open(Case::Reopen.name()).await?;
    let after = start_up(&store, &coords).await?;
    same(after, before, "the start-up state after a reopen")
}
