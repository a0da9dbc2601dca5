//! Acceptance: what a received event does to the store, and the seen-not-stored set.

mod common;

use common::{announcement, deletion, event, issue, pubkey};
use grasp_sync_core::accept::{
    AcceptConfig, Acceptor, AnnouncementPolicy, Reject, Removal, Verdict,
};
use grasp_sync_core::filters::{repo_tag_filters, Form};
use grasp_sync_core::seen::SeenSet;
use grasp_sync_core::{RelayLimits, RelayUrl, RepoIndex, RepoRef};
use nostr::prelude::{Event, Filter, Kind, Timestamp};

const RELAY: &str = "wss://relay.example.com";

fn repo_ref(owner: u8, d: &str) -> String {
    RepoRef::new(pubkey(owner), d).to_string()
}

/// An index tracking repo (1, "r") listed at RELAY, with one root issue.
fn tracked() -> (RepoIndex, Event) {
    let mut index = RepoIndex::default();
    let root = issue(pubkey(3), 10, &[repo_ref(1, "r")]);
    index.apply([
        &announcement(pubkey(1), "r", 5, &[RELAY], &[pubkey(2)]),
        &root,
    ]);
    (index, root)
}

fn store() -> Verdict {
    Verdict::Store { remove: vec![] }
}

fn t(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

#[test]
fn precheck_refuses_oversized_overtagged_and_future_events() {
    let acceptor = Acceptor::new(AcceptConfig {
        max_event_bytes: 1_000,
        max_tags: 3,
        ..AcceptConfig::default()
    });
    let now = Timestamp::from(1_000_000);
    let small = issue(pubkey(3), 999_000, &[repo_ref(1, "r")]);
    assert_eq!(acceptor.precheck(&small, 900, now), Ok(()));
    assert_eq!(acceptor.precheck(&small, 1_001, now), Err(Reject::TooLarge));
    let tags: Vec<String> = (0..4).map(|i| repo_ref(1, &i.to_string())).collect();
    let many = issue(pubkey(3), 999_000, &tags);
    assert_eq!(acceptor.precheck(&many, 10, now), Err(Reject::TooManyTags));
    let future = issue(pubkey(3), 1_000_000 + 15 * 60 + 1, &[]);
    assert_eq!(
        acceptor.precheck(&future, 10, now),
        Err(Reject::FromTheFuture)
    );
    let near = issue(pubkey(3), 1_000_000 + 15 * 60, &[]);
    assert_eq!(acceptor.precheck(&near, 10, now), Ok(()));
}

#[test]
fn events_must_reference_a_tracked_repository_or_root() {
    let (index, root) = tracked();
    let mut acceptor = Acceptor::default();
    // to the owner's and to the maintainer's coordinate
    assert_eq!(
        acceptor.decide(&issue(pubkey(4), 11, &[repo_ref(1, "r")]), &index),
        store()
    );
    assert_eq!(
        acceptor.decide(&issue(pubkey(4), 11, &[repo_ref(2, "r")]), &index),
        store()
    );
    assert_eq!(
        acceptor.decide(&issue(pubkey(4), 11, &[repo_ref(9, "r")]), &index),
        Verdict::Reject(Reject::Irrelevant)
    );
    let comment = event(pubkey(4), 1111, 12, vec![t(&["E", &root.id.to_hex()])]);
    assert_eq!(acceptor.decide(&comment, &index), store());
    let status = event(pubkey(1), 1631, 12, vec![t(&["e", &root.id.to_hex()])]);
    assert_eq!(acceptor.decide(&status, &index), store());
    let stray = event(pubkey(4), 1111, 12, vec![t(&["E", &"ab".repeat(32)])]);
    assert_eq!(
        acceptor.decide(&stray, &index),
        Verdict::Reject(Reject::Irrelevant)
    );
    let state = event(pubkey(2), 30618, 12, vec![t(&["d", "r"])]);
    assert_eq!(acceptor.decide(&state, &index), store());
    let other_state = event(pubkey(9), 30618, 12, vec![t(&["d", "r"])]);
    assert_eq!(
        acceptor.decide(&other_state, &index),
        Verdict::Reject(Reject::Irrelevant)
    );
}

#[test]
fn announcement_policies() {
    let index = RepoIndex::default();
    let us = "wss://us.example.com";
    let listing_us = announcement(pubkey(5), "x", 1, &["WSS://US.example.com:443/"], &[]);
    let elsewhere = announcement(pubkey(6), "y", 1, &[RELAY], &[]);

    let mut all = Acceptor::default();
    assert_eq!(all.decide(&elsewhere, &index), store());

    let mut list_us = Acceptor::new(AcceptConfig {
        announcements: AnnouncementPolicy::ListUs,
        own_urls: [RelayUrl::parse(us).expect("url")].into(),
        ..AcceptConfig::default()
    });
    assert_eq!(list_us.decide(&listing_us, &index), store());
    assert_eq!(
        list_us.decide(&elsewhere, &index),
        Verdict::Reject(Reject::NotListingUs)
    );
    // a maintainer's announcement of a tracked repository is accepted under any policy
    let (tracked_index, _) = tracked();
    let maintainers = announcement(pubkey(2), "r", 6, &[RELAY], &[pubkey(1)]);
    assert_eq!(list_us.decide(&maintainers, &tracked_index), store());

    let mut allow = Acceptor::new(AcceptConfig {
        announcements: AnnouncementPolicy::AllowList([pubkey(6)].into()),
        ..AcceptConfig::default()
    });
    assert_eq!(allow.decide(&elsewhere, &index), store());
    assert_eq!(
        allow.decide(&listing_us, &index),
        Verdict::Reject(Reject::NotAllowed)
    );
}

#[test]
fn newer_versions_replace_older_ones_and_ties_go_to_the_lowest_id() {
    let index = RepoIndex::default();
    let mut acceptor = Acceptor::default();
    let v1 = announcement(pubkey(1), "r", 10, &[RELAY], &[]);
    let v2 = announcement(pubkey(1), "r", 20, &[RELAY], &[pubkey(2)]);
    assert_eq!(acceptor.decide(&v1, &index), store());
    assert_eq!(
        acceptor.decide(&v1, &index),
        Verdict::Reject(Reject::Duplicate)
    );
    assert_eq!(
        acceptor.decide(&v2, &index),
        Verdict::Store {
            remove: vec![Removal {
                id: v1.id,
                author: pubkey(1)
            }]
        }
    );
    assert_eq!(
        acceptor.decide(&v1, &index),
        Verdict::Reject(Reject::Superseded)
    );

    let a = announcement(pubkey(1), "r", 30, &["wss://a.example.com"], &[]);
    let b = announcement(pubkey(1), "r", 30, &["wss://b.example.com"], &[]);
    let (low, high) = if a.id < b.id { (a, b) } else { (b, a) };
    assert!(matches!(
        acceptor.decide(&high, &index),
        Verdict::Store { .. }
    ));
    assert!(matches!(
        acceptor.decide(&low, &index),
        Verdict::Store { .. }
    ));
    assert_eq!(
        acceptor.decide(&high, &index),
        Verdict::Reject(Reject::Superseded)
    );
}

#[test]
fn deletions_by_the_author_remove_and_stay_deleted() {
    let (index, _) = tracked();
    let mut acceptor = Acceptor::default();
    let target = issue(pubkey(4), 11, &[repo_ref(1, "r")]);
    assert_eq!(acceptor.decide(&target, &index), store());

    // a forged deletion is stored (it tags a tracked repo) but binds nobody else
    let forged = event(
        pubkey(9),
        5,
        12,
        vec![t(&["e", &target.id.to_hex()]), t(&["a", &repo_ref(1, "r")])],
    );
    let Verdict::Store { remove } = acceptor.decide(&forged, &index) else {
        panic!("forged deletion tagging a tracked repo is stored");
    };
    assert_eq!(
        remove,
        vec![Removal {
            id: target.id,
            author: pubkey(9)
        }],
        "the store removes only events written by the deletion's author"
    );
    // …so the target is still accepted (the store deduplicates by id)
    assert_eq!(acceptor.decide(&target, &index), store());
    assert!(!acceptor.is_deleted(&target));

    let real = event(
        pubkey(4),
        5,
        13,
        vec![t(&["e", &target.id.to_hex()]), t(&["a", &repo_ref(1, "r")])],
    );
    assert!(matches!(
        acceptor.decide(&real, &index),
        Verdict::Store { .. }
    ));
    assert_eq!(
        acceptor.decide(&target, &index),
        Verdict::Reject(Reject::Deleted)
    );
    assert!(acceptor.is_deleted(&target));

    // deleting an address removes the held version and every version up to the deletion
    let v1 = announcement(pubkey(1), "r", 20, &[RELAY], &[]);
    assert_eq!(acceptor.decide(&v1, &index), store());
    let del = deletion(pubkey(1), 25, &[repo_ref(1, "r")], &[]);
    assert_eq!(
        acceptor.decide(&del, &index),
        Verdict::Store {
            remove: vec![Removal {
                id: v1.id,
                author: pubkey(1)
            }]
        }
    );
    assert!(acceptor.is_deleted(&v1));
    let v_old = announcement(pubkey(1), "r", 25, &[RELAY], &[]);
    assert_eq!(
        acceptor.decide(&v_old, &index),
        Verdict::Reject(Reject::Deleted)
    );
    let v_new = announcement(pubkey(1), "r", 26, &[RELAY], &[]);
    assert!(!acceptor.is_deleted(&v_new));
    assert_eq!(acceptor.decide(&v_new, &index), store());
}

/// A verdict whose write failed is undone: the next copy is judged as the first was (a
/// newer version replaces the older one again, a deletion removes again); a verdict
/// decided since is kept; a committed one stays.
#[test]
fn a_failed_write_rolls_its_verdicts_back() {
    let (index, _) = tracked();
    let mut acceptor = Acceptor::default();
    let v1 = announcement(pubkey(1), "r", 10, &[RELAY], &[]);
    let v2 = announcement(pubkey(1), "r", 20, &[RELAY], &[pubkey(2)]);
    let replaces_v1 = Verdict::Store {
        remove: vec![Removal {
            id: v1.id,
            author: pubkey(1),
        }],
    };
    assert_eq!(acceptor.decide(&v1, &index), store());
    acceptor.committed([&v1.id]);
    assert_eq!(acceptor.decide(&v2, &index), replaces_v1);
    acceptor.roll_back([&v2.id]);
    assert_eq!(
        acceptor.decide(&v1, &index),
        Verdict::Reject(Reject::Duplicate)
    );
    assert_eq!(acceptor.decide(&v2, &index), replaces_v1);

    // A later version decided meanwhile stays when an earlier write fails.
    let v3 = announcement(pubkey(1), "r", 30, &[RELAY], &[]);
    assert!(matches!(
        acceptor.decide(&v3, &index),
        Verdict::Store { .. }
    ));
    acceptor.roll_back([&v2.id]);
    acceptor.committed([&v3.id]);
    assert_eq!(
        acceptor.decide(&v2, &index),
        Verdict::Reject(Reject::Superseded)
    );

    // A deletion whose write failed deletes nothing: its target is accepted, and the
    // deletion fetched again removes it again.
    let target = issue(pubkey(4), 11, &[repo_ref(1, "r")]);
    assert_eq!(acceptor.decide(&target, &index), store());
    acceptor.committed([&target.id]);
    let del = event(
        pubkey(4),
        5,
        13,
        vec![t(&["e", &target.id.to_hex()]), t(&["a", &repo_ref(1, "r")])],
    );
    let removes_target = Verdict::Store {
        remove: vec![Removal {
            id: target.id,
            author: pubkey(4),
        }],
    };
    assert_eq!(acceptor.decide(&del, &index), removes_target);
    acceptor.roll_back([&del.id]);
    assert!(!acceptor.is_deleted(&target));
    assert_eq!(acceptor.decide(&target, &index), store());
    assert_eq!(acceptor.decide(&del, &index), removes_target);
    acceptor.committed([&del.id]);
    assert_eq!(
        acceptor.decide(&target, &index),
        Verdict::Reject(Reject::Deleted)
    );
}

#[test]
fn restored_versions_and_deletions_are_remembered() {
    let index = RepoIndex::default();
    let v2 = announcement(pubkey(1), "r", 20, &[RELAY], &[]);
    let v1 = announcement(pubkey(1), "r", 10, &[RELAY], &[]);
    let mut acceptor = Acceptor::default();
    acceptor.restore(&v2);
    assert_eq!(
        acceptor.decide(&v1, &index),
        Verdict::Reject(Reject::Superseded)
    );
    let gone = issue(pubkey(3), 5, &[]);
    acceptor.restore(&deletion(pubkey(3), 6, &[], &[gone.id.to_hex()]));
    assert_eq!(
        acceptor.decide(&gone, &index),
        Verdict::Reject(Reject::Deleted)
    );
}

#[test]
fn only_content_reasons_are_remembered() {
    for r in [
        Reject::BadId,
        Reject::BadSignature,
        Reject::NotRequested,
        Reject::FromTheFuture,
        Reject::Duplicate,
    ] {
        assert!(!r.remembered(), "{r}");
    }
    for r in [
        Reject::Irrelevant,
        Reject::Superseded,
        Reject::Deleted,
        Reject::TooLarge,
        Reject::NotListingUs,
    ] {
        assert!(r.remembered(), "{r}");
    }
}

#[test]
fn seen_ids_join_exactly_the_filters_their_event_matches() {
    let mut seen = SeenSet::new(100, 3600);
    let now = Timestamp::from(1_000);
    let e = issue(pubkey(3), 900, &[repo_ref(1, "r")]);
    seen.remember(&e, now);
    let limits = RelayLimits::default();
    let ours = repo_tag_filters(
        &[RepoRef::new(pubkey(1), "r")],
        Form::Historic { since: None },
        &limits,
    );
    let theirs = repo_tag_filters(
        &[RepoRef::new(pubkey(2), "r")],
        Form::Historic { since: None },
        &limits,
    );
    assert_eq!(seen.items_matching(&ours[0]).count(), 1, "#a matches");
    assert_eq!(seen.items_matching(&ours[1]).count(), 0, "#A does not");
    assert_eq!(seen.items_matching(&theirs[0]).count(), 0);
    let since_later = ours[0].clone().since(Timestamp::from(901));
    assert_eq!(seen.items_matching(&since_later).count(), 0);
    let by_kind = Filter::new().kind(Kind::from(1621u16)).author(pubkey(3));
    assert_eq!(
        seen.items_matching(&by_kind).collect::<Vec<_>>(),
        vec![(e.created_at, e.id)]
    );
}

#[test]
fn the_seen_set_is_bounded_and_expires() {
    let mut seen = SeenSet::new(3, 100);
    let events: Vec<Event> = (0..5).map(|i| issue(pubkey(3), i, &[])).collect();
    for (i, e) in events.iter().enumerate() {
        seen.remember(e, Timestamp::from(i as u64));
    }
    assert_eq!(seen.len(), 3);
    assert!(!seen.contains(&events[0].id) && !seen.contains(&events[1].id));
    assert!(seen.contains(&events[4].id));
    seen.expire(Timestamp::from(102));
    assert_eq!(seen.len(), 2, "the entry remembered at 2 expired at 102");
    seen.forget(&events[4].id);
    assert_eq!(seen.len(), 1);
}

#[test]
fn the_open_mode_stores_any_valid_event_with_nip01_semantics() {
    let index = RepoIndex::default();
    let mut grasp = Acceptor::default();
    let mut open = Acceptor::new(AcceptConfig {
        any_event: true,
        ..AcceptConfig::default()
    });
    let note = event(pubkey(4), 1, 10, vec![]);
    assert_eq!(
        grasp.decide(&note, &index),
        Verdict::Reject(Reject::Irrelevant)
    );
    assert_eq!(open.decide(&note, &index), store());

    // Replaceable (kind 0) and addressable (kind 30023) versions: newer wins.
    let profile_1 = event(pubkey(4), 0, 10, vec![]);
    let profile_2 = event(pubkey(4), 0, 20, vec![]);
    assert_eq!(open.decide(&profile_1, &index), store());
    assert_eq!(
        open.decide(&profile_2, &index),
        Verdict::Store {
            remove: vec![Removal {
                id: profile_1.id,
                author: pubkey(4)
            }]
        }
    );
    assert_eq!(
        open.decide(&profile_1, &index),
        Verdict::Reject(Reject::Superseded)
    );
    let article = event(pubkey(4), 30023, 10, vec![t(&["d", "post"])]);
    assert_eq!(open.decide(&article, &index), store());

    // Deletion by `a` up to its created_at removes the held version; an older or equal
    // version is deleted, a newer one is not.
    let address = format!("30023:{}:post", pubkey(4).to_hex());
    let by_a = event(pubkey(4), 5, 15, vec![t(&["a", &address])]);
    assert_eq!(
        open.decide(&by_a, &index),
        Verdict::Store {
            remove: vec![Removal {
                id: article.id,
                author: pubkey(4)
            }]
        }
    );
    assert_eq!(
        open.decide(&article, &index),
        Verdict::Reject(Reject::Deleted)
    );
    let later = event(pubkey(4), 30023, 16, vec![t(&["d", "post"])]);
    assert_eq!(open.decide(&later, &index), store());

    // Deletion by `e`; the deleted event is not accepted again.
    let doomed = event(pubkey(4), 1, 30, vec![]);
    assert_eq!(open.decide(&doomed, &index), store());
    let by_e = event(pubkey(4), 5, 31, vec![t(&["e", &doomed.id.to_hex()])]);
    assert!(matches!(open.decide(&by_e, &index), Verdict::Store { remove } if remove.len() == 1));
    assert_eq!(
        open.decide(&doomed, &index),
        Verdict::Reject(Reject::Deleted)
    );

    // Ephemeral kinds are never stored, in either mode.
    let ephemeral = event(pubkey(4), 20001, 10, vec![]);
    assert_eq!(
        open.decide(&ephemeral, &index),
        Verdict::Reject(Reject::Ephemeral)
    );
    assert_eq!(
        grasp.decide(&ephemeral, &index),
        Verdict::Reject(Reject::Ephemeral)
    );
}

#[test]
fn expired_events_are_refused_before_verification() {
    let acceptor = Acceptor::default();
    let now = Timestamp::from(1_000_000);
    let expired = event(pubkey(3), 1, 999_000, vec![t(&["expiration", "999999"])]);
    let alive = event(pubkey(3), 1, 999_000, vec![t(&["expiration", "1000001"])]);
    assert_eq!(acceptor.precheck(&expired, 10, now), Err(Reject::Expired));
    assert_eq!(acceptor.precheck(&alive, 10, now), Ok(()));
    assert!(Reject::Expired.remembered());
}
