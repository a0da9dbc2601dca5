//! The repo index and compute_actions in named scenarios, one behaviour each.

mod common;

use common::{announcement, deletion, issue, pubkey};
use grasp_sync_core::address::ForbiddenReason;
use grasp_sync_core::index::RefusalReason;
use grasp_sync_core::items::{Item, Layer};
use grasp_sync_core::relay_url::{RelayUrlError, RelayUrlPolicy};
use grasp_sync_core::{
    compute_actions, ChangeKind, IndexConfig, RelayUrl, RepoIndex, RepoRef, WorkState,
};
use nostr::prelude::Event;

const A: &str = "wss://a.example.com";
const B: &str = "wss://b.example.com";
const C: &str = "wss://c.example.com";

fn url(s: &str) -> RelayUrl {
    RelayUrl::parse(s).expect("valid url")
}

/// The items targeted at `relay`, by name.
fn items_at(index: &RepoIndex, relay: &str) -> Vec<Item> {
    let names = index.names();
    let Some(id) = names.relay_id(&url(relay)) else {
        return vec![];
    };
    let mut items: Vec<Item> = index.targets().items(id).map(|i| names.item(i)).collect();
    items.sort();
    items
}

fn coord(owner: u8, d: &str) -> Item {
    Item::Coord(RepoRef::new(pubkey(owner), d))
}

fn repo_ref(owner: u8, d: &str) -> String {
    RepoRef::new(pubkey(owner), d).to_string()
}

#[test]
fn an_announcement_targets_its_relays_with_its_coordinates() {
    let mut index = RepoIndex::default();
    let update = index.apply([&announcement(pubkey(1), "r", 10, &[A, B], &[pubkey(2)])]);
    assert_eq!(update.applied, 1);
    // 2 relays × (owner + maintainer coordinate)
    assert_eq!(update.changes.len(), 4);
    assert!(update.changes.iter().all(|c| c.kind == ChangeKind::Added));
    let mut expected = vec![coord(1, "r"), coord(2, "r")];
    expected.sort();
    assert_eq!(items_at(&index, A), expected);
    assert_eq!(items_at(&index, B), expected);
}

#[test]
fn refused_relays_are_reported_not_silent() {
    let mut index = RepoIndex::new(IndexConfig {
        own_urls: [url("wss://us.example.com")].into(),
        ..IndexConfig::default()
    });
    let update = index.apply([&announcement(
        pubkey(1),
        "r",
        10,
        &[
            A,
            "ws://127.0.0.1:7000",
            "wss://192.168.1.9",
            "ftp://x.example.com",
            "wss://US.example.com/",
        ],
        &[],
    )]);
    let reasons: Vec<(String, RefusalReason)> = update
        .refused
        .into_iter()
        .map(|r| (r.url, r.reason))
        .collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(reasons.iter().any(|(u, r)| u.contains("127.0.0.1")
        && *r == RefusalReason::Url(RelayUrlError::Forbidden(ForbiddenReason::Loopback))));
    assert!(reasons.iter().any(|(u, r)| u.contains("192.168")
        && *r == RefusalReason::Url(RelayUrlError::Forbidden(ForbiddenReason::Private))));
    assert!(reasons.iter().any(|(u, r)| u.starts_with("ftp")
        && matches!(r, RefusalReason::Url(RelayUrlError::UnsupportedScheme(_)))));
    // our own URL is neither a target nor a refusal
    assert_eq!(index.targets().relays().count(), 1);
    assert_eq!(items_at(&index, A), vec![coord(1, "r")]);
}

#[test]
fn private_relays_can_be_allowed_for_tests() {
    let mut index = RepoIndex::new(IndexConfig {
        relay_policy: RelayUrlPolicy {
            allow_private: true,
        },
        ..IndexConfig::default()
    });
    let update = index.apply([&announcement(
        pubkey(1),
        "r",
        1,
        &["ws://127.0.0.1:7000"],
        &[],
    )]);
    assert!(update.refused.is_empty());
    assert_eq!(items_at(&index, "ws://127.0.0.1:7000"), vec![coord(1, "r")]);
}

#[test]
fn too_many_relays_are_capped_and_reported() {
    let relays: Vec<String> = (0..40).map(|i| format!("wss://r{i}.example.com")).collect();
    let relays: Vec<&str> = relays.iter().map(String::as_str).collect();
    let mut index = RepoIndex::default();
    let update = index.apply([&announcement(pubkey(1), "r", 1, &relays, &[])]);
    assert_eq!(index.targets().relays().count(), 32);
    assert_eq!(
        update
            .refused
            .iter()
            .filter(|r| r.reason == RefusalReason::TooManyRelays)
            .count(),
        8
    );
}

#[test]
fn a_changed_relay_list_removes_what_it_no_longer_lists() {
    let mut index = RepoIndex::default();
    let mut work = WorkState::default();
    let first = index.apply([&announcement(pubkey(1), "r", 10, &[A, B], &[])]);
    let actions = compute_actions(index.targets(), &first.changes, &work);
    assert_eq!(actions.added(), 4, "2 relays × L1 and L2 of one coordinate");
    work.apply(&actions);

    let second = index.apply([&announcement(pubkey(1), "r", 20, &[A, C], &[])]);
    let actions = compute_actions(index.targets(), &second.changes, &work);
    let b = index.names().relay_id(&url(B)).expect("known");
    let c = index.names().relay_id(&url(C)).expect("known");
    let at_b = actions.relays.iter().find(|r| r.relay == b).expect("B");
    assert_eq!(at_b.remove.len(), 2);
    assert!(at_b.drop_relay, "B has nothing left to sync");
    let at_c = actions.relays.iter().find(|r| r.relay == c).expect("C");
    assert_eq!(at_c.add.len(), 2);
    assert!(actions.relays.iter().all(|r| r.relay == b || r.relay == c));
    work.apply(&actions);
    assert_eq!(work.relays().count(), 2);
}

#[test]
fn older_versions_never_override_newer_ones_and_ties_go_to_the_lowest_id() {
    let mut index = RepoIndex::default();
    index.apply([&announcement(pubkey(1), "r", 20, &[A], &[])]);
    let older = index.apply([&announcement(pubkey(1), "r", 10, &[B], &[])]);
    assert_eq!((older.applied, older.ignored), (0, 1));
    assert!(older.changes.is_empty());
    assert_eq!(items_at(&index, A), vec![coord(1, "r")]);

    // two versions with the same created_at: the lower id wins, in either order
    let x = announcement(pubkey(1), "r", 30, &[B], &[]);
    let y = announcement(pubkey(1), "r", 30, &[C], &[]);
    let (low, high) = if x.id < y.id { (x, y) } else { (y, x) };
    let mut one = RepoIndex::default();
    one.apply([&low, &high]);
    let mut two = RepoIndex::default();
    two.apply([&high, &low]);
    let winner = low
        .tags
        .iter()
        .find(|t| t.kind() == "relays")
        .expect("relays")
        .as_slice()[1]
        .clone();
    assert_eq!(items_at(&one, &winner), vec![coord(1, "r")]);
    assert_eq!(items_at(&two, &winner), vec![coord(1, "r")]);
}

#[test]
fn roots_seen_before_their_repository_attach_when_it_arrives() {
    let mut index = RepoIndex::default();
    let root = issue(pubkey(3), 5, &[repo_ref(1, "r")]);
    let early = index.apply([&root]);
    assert!(early.changes.is_empty());
    index.apply([&announcement(pubkey(1), "r", 10, &[A], &[])]);
    assert!(items_at(&index, A).contains(&Item::Root(root.id)));
}

#[test]
fn roots_tagging_a_maintainer_coordinate_sync_from_the_owner_relays() {
    let mut index = RepoIndex::default();
    index.apply([&announcement(pubkey(1), "r", 10, &[A], &[pubkey(2)])]);
    let root = issue(pubkey(3), 11, &[repo_ref(2, "r")]);
    let update = index.apply([&root]);
    assert_eq!(update.changes.len(), 1);
    assert!(items_at(&index, A).contains(&Item::Root(root.id)));
    // dropping the maintainer drops the maintainer's coordinate and its roots
    let update = index.apply([&announcement(pubkey(1), "r", 20, &[A], &[])]);
    assert_eq!(update.changes.len(), 2);
    assert_eq!(items_at(&index, A), vec![coord(1, "r")]);
}

#[test]
fn a_root_shared_by_two_repositories_stays_while_one_still_lists_the_relay() {
    let mut index = RepoIndex::default();
    index.apply([
        &announcement(pubkey(1), "r", 10, &[A], &[]),
        &announcement(pubkey(2), "s", 10, &[A, B], &[]),
    ]);
    let root = issue(pubkey(3), 11, &[repo_ref(1, "r"), repo_ref(2, "s")]);
    index.apply([&root]);
    let update = index.apply([&announcement(pubkey(1), "r", 20, &[B], &[])]);
    assert!(items_at(&index, A).contains(&Item::Root(root.id)));
    assert!(items_at(&index, B).contains(&Item::Root(root.id)));
    // only r's coordinate moved from A to B; the root stayed at A (s lists it) and was
    // already at B
    assert_eq!(update.changes.len(), 2);
}

#[test]
fn deletions_by_the_author_remove_and_others_are_ignored() {
    let mut index = RepoIndex::default();
    let repo = announcement(pubkey(1), "r", 10, &[A], &[]);
    let root = issue(pubkey(3), 11, &[repo_ref(1, "r")]);
    index.apply([&repo, &root]);

    let forged = index.apply([&deletion(
        pubkey(9),
        12,
        &[repo_ref(1, "r")],
        &[root.id.to_hex()],
    )]);
    assert!(forged.changes.is_empty());

    let root_gone = index.apply([&deletion(pubkey(3), 12, &[], &[root.id.to_hex()])]);
    assert_eq!(root_gone.changes.len(), 1);
    assert_eq!(items_at(&index, A), vec![coord(1, "r")]);
    // a deleted root that is seen again stays deleted
    assert!(index.apply([&root]).changes.is_empty());

    let repo_gone = index.apply([&deletion(pubkey(1), 12, &[repo_ref(1, "r")], &[])]);
    assert_eq!(repo_gone.changes.len(), 1);
    assert!(index.targets().is_empty());
    // versions up to the deletion stay deleted; a newer one brings the repo back
    assert!(index
        .apply([&announcement(pubkey(1), "r", 12, &[A], &[])])
        .changes
        .is_empty());
    assert_eq!(
        index
            .apply([&announcement(pubkey(1), "r", 13, &[A], &[])])
            .changes
            .len(),
        1
    );
}

#[test]
fn clone_url_hosts_are_relays_only_behind_the_switch() {
    let owner = pubkey(1);
    let e = common::event(
        owner,
        30617,
        1,
        vec![
            vec!["d".into(), "r".into()],
            vec![
                "clone".into(),
                "https://git.example.com/npub/r.git".into(),
                "git@other.example.com:r.git".into(),
            ],
        ],
    );
    let mut index = RepoIndex::default();
    index.apply([&e]);
    assert!(index.targets().is_empty());
    let update = index.set_config(IndexConfig {
        relays_from_clone_urls: true,
        ..IndexConfig::default()
    });
    assert_eq!(update.changes.len(), 1);
    assert_eq!(
        items_at(&index, "wss://git.example.com"),
        vec![coord(1, "r")]
    );
}

#[test]
fn config_changes_rederive_relays() {
    let mut index = RepoIndex::default();
    index.apply([&announcement(pubkey(1), "r", 1, &[A, "ws://10.1.2.3"], &[])]);
    assert_eq!(index.targets().relays().count(), 1);
    let update = index.set_config(IndexConfig {
        relay_policy: RelayUrlPolicy {
            allow_private: true,
        },
        own_urls: [url(A)].into(),
        ..IndexConfig::default()
    });
    assert_eq!(update.changes.len(), 2, "A removed, 10.1.2.3 added");
    assert_eq!(items_at(&index, "ws://10.1.2.3"), vec![coord(1, "r")]);
    assert!(items_at(&index, A).is_empty());
}

#[test]
fn work_keys_follow_layers() {
    let mut index = RepoIndex::default();
    let root = issue(pubkey(3), 2, &[repo_ref(1, "r")]);
    let batch: Vec<&Event> = vec![];
    index.apply(batch);
    let update = index.apply([&announcement(pubkey(1), "r", 1, &[A], &[]), &root]);
    let actions = compute_actions(index.targets(), &update.changes, &WorkState::default());
    let layers: Vec<Layer> = actions.relays[0].add.iter().map(|k| k.layer).collect();
    assert_eq!(layers.len(), 3);
    for layer in Layer::ALL {
        assert!(layers.contains(&layer));
    }
}

#[test]
fn a_store_of_any_event_tracks_only_announcements_listing_it() {
    let mut index = RepoIndex::new(IndexConfig {
        own_urls: [url(A)].into(),
        only_listing_us: true,
        ..IndexConfig::default()
    });
    let elsewhere = announcement(pubkey(1), "r", 5, &[B], &[]);
    let update = index.apply([&elsewhere]);
    assert_eq!(update.applied, 0);
    assert!(!index.is_tracked_coord(&RepoRef::new(pubkey(1), "r")));
    let listing_us = announcement(pubkey(2), "s", 5, &[A, B], &[]);
    assert_eq!(index.apply([&listing_us]).applied, 1);
    assert!(index.is_tracked_coord(&RepoRef::new(pubkey(2), "s")));
    // A newer version of a tracked repository stays tracked wherever it points.
    let moved = announcement(pubkey(2), "s", 6, &[C], &[]);
    assert_eq!(index.apply([&moved]).applied, 1);
    assert!(index.is_tracked_coord(&RepoRef::new(pubkey(2), "s")));
}
