//! NIP-34 vocabulary: repo references, naddr, roots, and the tags that point at things.

mod common;

use common::{announcement, event, pubkey};
use grasp_sync_core::nip34::{
    announced_maintainers, is_root, referenced_ids, repo_refs, RepoRef, RepoRefError,
};
use nostr::prelude::{Coordinate, EventId, Kind, Nip19Coordinate, RelayUrl, ToBech32};

fn t(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

#[test]
fn repo_refs_round_trip_and_keep_colons_in_identifiers() {
    let repo = RepoRef::new(pubkey(1), "my:repo");
    let text = repo.to_string();
    assert_eq!(text, format!("30617:{}:my:repo", pubkey(1).to_hex()));
    assert_eq!(RepoRef::parse(&text), Ok(repo.clone()));
    assert_eq!(text.parse::<RepoRef>(), Ok(repo));
    // the empty identifier is a valid `d`
    let empty = RepoRef::new(pubkey(1), "");
    assert_eq!(RepoRef::parse(&empty.to_string()), Ok(empty));
}

#[test]
fn malformed_repo_refs_are_refused() {
    let pk = pubkey(1).to_hex();
    assert_eq!(RepoRef::parse("30617"), Err(RepoRefError::Malformed));
    assert_eq!(RepoRef::parse("x:y:z"), Err(RepoRefError::Malformed));
    assert_eq!(
        RepoRef::parse(&format!("30023:{pk}:d")),
        Err(RepoRefError::WrongKind(30023))
    );
    assert_eq!(RepoRef::parse("30617:abcd:d"), Err(RepoRefError::BadPubkey));
    assert_eq!(
        RepoRef::parse(&format!("30617:{}:d", "g".repeat(64))),
        Err(RepoRefError::BadPubkey)
    );
    assert_eq!(
        RepoRef::parse(&format!("30617:{pk}:{}", "d".repeat(257))),
        Err(RepoRefError::IdentifierTooLong)
    );
}

#[test]
fn naddr_decodes_to_the_repo_and_its_relay_hints() {
    let coordinate = Coordinate::new(Kind::from(30617u16), pubkey(2)).identifier("grasp");
    let hint = RelayUrl::parse("wss://relay.example.com").expect("url");
    let naddr = Nip19Coordinate::new(coordinate, [hint])
        .to_bech32()
        .expect("encodes");
    let (repo, hints) = RepoRef::from_naddr(&naddr).expect("decodes");
    assert_eq!(repo, RepoRef::new(pubkey(2), "grasp"));
    assert_eq!(hints.len(), 1);
    assert!(hints[0].starts_with("wss://relay.example.com"));
    assert_eq!(
        RepoRef::parse_any(&format!("nostr:{naddr}")),
        Ok(repo.clone())
    );
    assert_eq!(RepoRef::parse_any(&repo.to_string()), Ok(repo));

    let article = Coordinate::new(Kind::from(30023u16), pubkey(2)).identifier("post");
    let naddr = Nip19Coordinate::new(article, Vec::<RelayUrl>::new())
        .to_bech32()
        .expect("encodes");
    assert_eq!(
        RepoRef::from_naddr(&naddr),
        Err(RepoRefError::WrongKind(30023))
    );
    assert_eq!(
        RepoRef::parse_any("naddr1notvalid"),
        Err(RepoRefError::BadNaddr)
    );
}

#[test]
fn announcement_reference_and_maintainers() {
    let owner = pubkey(1);
    let e = announcement(owner, "r", 10, &[], &[pubkey(2), owner, pubkey(2)]);
    assert_eq!(RepoRef::of_announcement(&e), Some(RepoRef::new(owner, "r")));
    assert_eq!(announced_maintainers(&e), vec![pubkey(2)]);
    let bad = event(
        owner,
        30617,
        1,
        vec![t(&["d", "r"]), t(&["maintainers", "zz", "12"])],
    );
    assert!(announced_maintainers(&bad).is_empty());
    let not_announcement = event(owner, 30618, 1, vec![t(&["d", "r"])]);
    assert_eq!(RepoRef::of_announcement(&not_announcement), None);
}

#[test]
fn which_events_are_roots() {
    let a = pubkey(1);
    let parent = EventId::from_byte_array([9; 32]).to_hex();
    let cases = [
        (1618, vec![], true),
        (1621, vec![], true),
        (1617, vec![t(&["t", "root"])], true),
        (1617, vec![], true),
        (1617, vec![t(&["e", &parent, "", "reply"])], false),
        (1617, vec![t(&["e", &parent])], false),
        (1617, vec![t(&["e", &parent, "", "mention"])], true),
        (
            1617,
            vec![t(&["t", "root-revision"]), t(&["e", &parent, "", "reply"])],
            true,
        ),
        (1619, vec![], false),
        (1111, vec![], false),
        (1630, vec![], false),
        (30617, vec![t(&["d", "x"])], false),
    ];
    for (kind, tags, root) in cases {
        let e = event(a, kind, 1, tags.clone());
        assert_eq!(is_root(&e), root, "kind {kind} tags {tags:?}");
    }
}

#[test]
fn tags_pointing_at_repos_and_roots() {
    let r1 = RepoRef::new(pubkey(1), "one").to_string();
    let r2 = RepoRef::new(pubkey(2), "two").to_string();
    let id1 = EventId::from_byte_array([1; 32]).to_hex();
    let id2 = EventId::from_byte_array([2; 32]).to_hex();
    let e = event(
        pubkey(3),
        1111,
        1,
        vec![
            t(&["a", &r1]),
            t(&["A", &r2]),
            t(&["q", &r1]),
            t(&["a", "30023:abc:post"]),
            t(&["e", &id1]),
            t(&["E", &id2]),
            t(&["q", &id1]),
            t(&["e", "nothex"]),
            t(&["p", &pubkey(4).to_hex()]),
        ],
    );
    let refs: Vec<String> = repo_refs(&e).iter().map(ToString::to_string).collect();
    let mut expected = vec![r1, r2];
    expected.sort();
    let mut refs_sorted = refs.clone();
    refs_sorted.sort();
    assert_eq!(refs_sorted, expected);
    let ids: Vec<String> = referenced_ids(&e).iter().map(EventId::to_hex).collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&id1) && ids.contains(&id2));
}
