//! Model-based property tests of the repo index and compute_actions.
//!
//! Random sequences of announcements (new versions, older versions, relay-list and
//! maintainer changes), root events, deletions and configuration changes are applied in
//! random batches. After every batch:
//! - the incrementally maintained targets equal the targets rebuilt from scratch, and
//!   equal an independent reference computed from all events seen so far;
//! - the batch's reported changes are exactly the difference of the targets;
//! - compute_actions never adds a key that is pending or confirmed, never removes one
//!   that is not, and after applying its actions pending ∪ confirmed = targets.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};

use common::{announcement, deletion, event, issue, pubkey};
use grasp_sync_core::items::{Item, Layer, WorkKey};
use grasp_sync_core::nip34::{self, kinds, RepoRef, Version};
use grasp_sync_core::relay_url::{RelayUrl, RelayUrlPolicy};
use grasp_sync_core::targets::{ChangeKind, TargetChange, Targets};
use grasp_sync_core::{
    compute_actions, compute_all_actions, IndexConfig, RelayId, RepoIndex, WorkState,
};
use nostr::prelude::{Event, EventId, Timestamp};
use proptest::prelude::*;

const OWNERS: u8 = 4;
const IDENTIFIERS: [&str; 3] = ["x", "y", "z"];
const RELAYS: [&str; 8] = [
    "wss://a.example.com",
    "wss://b.example.com/",
    "WSS://A.EXAMPLE.COM:443/",
    "wss://c.example.com",
    "wss://d.example.com/nostr",
    "ws://10.0.0.1:7000",
    "wss://own.example.com",
    "not a url",
];
const OWN_URL: &str = "wss://own.example.com";

#[derive(Debug, Clone)]
enum Op {
    Announce {
        owner: u8,
        d: usize,
        relays: Vec<usize>,
        maintainers: Vec<u8>,
        at: u64,
    },
    Root {
        author: u8,
        kind: u16,
        coords: Vec<(u8, usize)>,
        at: u64,
    },
    DeleteCoord {
        author: u8,
        coord: (u8, usize),
        at: u64,
    },
    DeleteEvent {
        author: u8,
        target: usize,
        at: u64,
    },
    Config {
        allow_private: bool,
        max_relays: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let coord = (0..OWNERS, 0..IDENTIFIERS.len());
    prop_oneof![
        4 => (0..OWNERS, 0..IDENTIFIERS.len(), prop::collection::vec(0..RELAYS.len(), 0..5),
              prop::collection::vec(0..OWNERS, 0..3), 1u64..30)
            .prop_map(|(owner, d, relays, maintainers, at)| Op::Announce { owner, d, relays, maintainers, at }),
        4 => (0..OWNERS, prop::sample::select(vec![1617u16, 1618, 1621, 1111]),
              prop::collection::vec(coord.clone(), 0..3), 1u64..30)
            .prop_map(|(author, kind, coords, at)| Op::Root { author, kind, coords, at }),
        1 => (0..OWNERS, coord, 1u64..30)
            .prop_map(|(author, coord, at)| Op::DeleteCoord { author, coord, at }),
        2 => (0..OWNERS, any::<usize>(), 1u64..30)
            .prop_map(|(author, target, at)| Op::DeleteEvent { author, target, at }),
        1 => (any::<bool>(), 1usize..4)
            .prop_map(|(allow_private, max_relays)| Op::Config { allow_private, max_relays }),
    ]
}

fn coord_string(owner: u8, d: usize) -> String {
    RepoRef::new(pubkey(owner), IDENTIFIERS[d]).to_string()
}

fn config(allow_private: bool, max_relays: usize) -> IndexConfig {
    IndexConfig {
        relay_policy: RelayUrlPolicy { allow_private },
        own_urls: [RelayUrl::parse(OWN_URL).expect("valid")].into(),
        max_relays_per_repo: max_relays,
        ..IndexConfig::default()
    }
}

/// Turns an op into an event (or a config change), given the events so far.
fn realise(op: &Op, seen: &[Event]) -> Result<Event, IndexConfig> {
    match op {
        Op::Announce {
            owner,
            d,
            relays,
            maintainers,
            at,
        } => {
            let relays: Vec<&str> = relays.iter().map(|i| RELAYS[*i]).collect();
            let maintainers: Vec<_> = maintainers.iter().map(|m| pubkey(*m)).collect();
            Ok(announcement(
                pubkey(*owner),
                IDENTIFIERS[*d],
                *at,
                &relays,
                &maintainers,
            ))
        }
        Op::Root {
            author,
            kind,
            coords,
            at,
        } => {
            let coords: Vec<String> = coords.iter().map(|(o, d)| coord_string(*o, *d)).collect();
            if *kind == 1621 {
                Ok(issue(pubkey(*author), *at, &coords))
            } else {
                let mut tags: Vec<Vec<String>> =
                    coords.iter().map(|c| vec!["a".into(), c.clone()]).collect();
                if *kind == 1617 {
                    tags.push(vec!["t".into(), "root".into()]);
                }
                Ok(event(pubkey(*author), *kind, *at, tags))
            }
        }
        Op::DeleteCoord { author, coord, at } => Ok(deletion(
            pubkey(*author),
            *at,
            &[coord_string(coord.0, coord.1)],
            &[],
        )),
        Op::DeleteEvent { author, target, at } => {
            let ids = if seen.is_empty() {
                vec![]
            } else {
                vec![seen[target % seen.len()].id.to_hex()]
            };
            // Half the time the deletion is by the target's author, so it takes effect.
            let author = match (seen.is_empty(), target % 2) {
                (false, 0) => seen[target % seen.len()].pubkey,
                _ => pubkey(*author),
            };
            Ok(deletion(author, *at, &[], &ids))
        }
        Op::Config {
            allow_private,
            max_relays,
        } => Err(config(*allow_private, *max_relays)),
    }
}

/// The targets the index must have after `events`, computed naively from the rules.
fn reference(events: &[Event], config: &IndexConfig) -> BTreeSet<(String, Item)> {
    let mut deleted_ids = HashSet::new();
    let mut watermark: BTreeMap<RepoRef, Timestamp> = BTreeMap::new();
    for e in events.iter().filter(|e| e.kind == kinds::DELETION) {
        for v in nip34::first_values(e, "e") {
            if let Ok(id) = EventId::from_hex(v) {
                deleted_ids.insert((id, e.pubkey));
            }
        }
        for v in nip34::first_values(e, "a") {
            if let Ok(c) = RepoRef::parse(v) {
                if c.pubkey == e.pubkey {
                    let w = watermark.entry(c).or_insert(e.created_at);
                    *w = (*w).max(e.created_at);
                }
            }
        }
    }
    let mut latest: BTreeMap<RepoRef, &Event> = BTreeMap::new();
    for e in events {
        if let Some(c) = RepoRef::of_announcement(e) {
            let newer = latest
                .get(&c)
                .is_none_or(|old| Version::of(e).replaces(&Version::of(old)));
            if newer {
                latest.insert(c, e);
            }
        }
    }
    let mut roots: BTreeMap<EventId, Vec<RepoRef>> = BTreeMap::new();
    for e in events.iter().filter(|e| nip34::is_root(e)) {
        if !deleted_ids.contains(&(e.id, e.pubkey)) {
            let mut refs = nip34::repo_refs(e);
            refs.truncate(config.max_repos_per_root);
            roots.insert(e.id, refs);
        }
    }
    let mut out = BTreeSet::new();
    for (coord, e) in &latest {
        let deleted = deleted_ids.contains(&(e.id, e.pubkey))
            || watermark.get(coord).is_some_and(|w| e.created_at <= *w);
        if deleted {
            continue;
        }
        let mut relays: Vec<RelayUrl> = Vec::new();
        for url in nip34::announced_relays(e) {
            let Ok(url) = RelayUrl::parse(url) else {
                continue;
            };
            if relays.contains(&url)
                || config.own_urls.contains(&url)
                || config.relay_policy.check(&url).is_err()
                || relays.len() >= config.max_relays_per_repo
            {
                continue;
            }
            relays.push(url);
        }
        let mut coords = vec![coord.clone()];
        coords.extend(
            nip34::announced_maintainers(e)
                .into_iter()
                .take(config.max_maintainers)
                .map(|m| coord.with_author(m)),
        );
        let mut items: Vec<Item> = coords.iter().cloned().map(Item::Coord).collect();
        for (id, refs) in &roots {
            if refs.iter().any(|r| coords.contains(r)) {
                items.push(Item::Root(*id));
            }
        }
        for relay in &relays {
            for item in &items {
                out.insert((relay.to_string(), item.clone()));
            }
        }
    }
    out
}

fn named(index: &RepoIndex, targets: &Targets) -> BTreeSet<(String, Item)> {
    let names = index.names();
    targets
        .relays()
        .flat_map(|r| {
            targets
                .items(r)
                .map(move |i| (names.relay(r).to_string(), names.item(i)))
        })
        .collect()
}

fn expanded(targets: &Targets) -> BTreeSet<(RelayId, WorkKey)> {
    let mut out = BTreeSet::new();
    for relay in targets.relays() {
        for item in targets.items(relay) {
            for layer in item.layers() {
                out.insert((
                    relay,
                    WorkKey {
                        layer: *layer,
                        item,
                    },
                ));
            }
        }
    }
    out
}

fn known(work: &WorkState) -> BTreeSet<(RelayId, WorkKey)> {
    work.relays()
        .flat_map(|relay| work.keys(relay).map(move |key| (relay, key)))
        .collect()
}

/// The system under test and everything it has been fed.
struct Model {
    index: RepoIndex,
    work: WorkState,
    seen: Vec<Event>,
    cfg: IndexConfig,
}

/// Checks one update of the index (a batch of events or a config change) and runs
/// compute_actions on it, then completes every `confirm_every`-th pending key.
fn check_update(
    model: &mut Model,
    before: &Targets,
    changes: &[TargetChange],
    confirm_every: usize,
    now: Timestamp,
) -> Result<(), TestCaseError> {
    let Model {
        index,
        work,
        seen,
        cfg,
    } = model;
    // 1. Incremental = rebuilt = reference.
    prop_assert_eq!(index.targets(), &index.rebuild_targets());
    prop_assert_eq!(named(index, index.targets()), reference(seen, cfg));

    // 2. Reported changes are the exact difference.
    for c in changes {
        let was = before.contains(c.relay, c.item);
        let is = index.targets().contains(c.relay, c.item);
        match c.kind {
            ChangeKind::Added => prop_assert!(!was && is, "{:?}", c),
            ChangeKind::Removed => prop_assert!(was && !is, "{:?}", c),
        }
    }
    let diff = named(index, before)
        .symmetric_difference(&named(index, index.targets()))
        .count();
    prop_assert_eq!(changes.len(), diff);

    // 3. Actions never re-add what is known, never remove what is not, and after
    //    applying them pending ∪ confirmed = targets.
    let actions = compute_actions(index.targets(), changes, work);
    let mut added = HashSet::new();
    for relay in &actions.relays {
        for key in &relay.add {
            prop_assert!(!work.is_known(relay.relay, *key), "re-added {:?}", key);
            prop_assert!(added.insert((relay.relay, *key)), "added twice {:?}", key);
        }
        for key in &relay.remove {
            prop_assert!(
                work.is_known(relay.relay, *key),
                "removed unknown {:?}",
                key
            );
        }
        prop_assert_eq!(
            relay.drop_relay,
            index.targets().item_count(relay.relay) == 0
        );
    }
    work.apply(&actions);
    prop_assert_eq!(known(work), expanded(index.targets()));
    prop_assert!(compute_all_actions(index.targets(), work).is_empty());

    // 4. Some pending work completes; confirmed work is never added again.
    if confirm_every > 0 {
        for relay in work.relays().collect::<Vec<_>>() {
            let mut pending: Vec<_> = work.pending(relay).collect();
            pending.sort();
            for key in pending.into_iter().step_by(confirm_every) {
                prop_assert!(work.confirm(relay, key, now));
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, .. ProptestConfig::default() })]

    #[test]
    fn incremental_targets_and_actions_match_the_model(
        batches in prop::collection::vec((prop::collection::vec(op(), 1..7), 0usize..4), 1..14),
    ) {
        let cfg = config(false, 32);
        let mut model = Model {
            index: RepoIndex::new(cfg.clone()),
            work: WorkState::default(),
            seen: Vec::new(),
            cfg,
        };
        for (step, (ops, confirm_every)) in batches.into_iter().enumerate() {
            let now = Timestamp::from(1_000 + step as u64);
            let mut batch = Vec::new();
            let mut new_config = None;
            for op in &ops {
                match realise(op, &model.seen) {
                    Ok(event) => {
                        model.seen.push(event.clone());
                        batch.push(event);
                    }
                    Err(c) => new_config = Some(c),
                }
            }
            let before = model.index.targets().clone();
            let update = model.index.apply(&batch);
            check_update(&mut model, &before, &update.changes, confirm_every, now)?;
            if let Some(c) = new_config {
                model.cfg = c.clone();
                let before = model.index.targets().clone();
                let update = model.index.set_config(c);
                check_update(&mut model, &before, &update.changes, confirm_every, now)?;
            }
        }
    }
}

#[test]
fn layers_of_items() {
    let coord = Item::Coord(RepoRef::new(pubkey(0), "x"));
    let mut index = RepoIndex::new(config(false, 32));
    index.apply([&announcement(pubkey(0), "x", 1, &[RELAYS[0]], &[])]);
    let id = index.names().item_id(&coord).expect("interned");
    assert_eq!(id.layers(), &[Layer::Announcements, Layer::RepoTags]);
}
