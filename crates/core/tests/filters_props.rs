//! Property tests of filter building and REQ packing: every REQ respects every field of
//! `RelayLimits`, every repo and root appears in exactly one filter per tag letter, and
//! filters are packed into as few REQs as the limits allow.

mod common;

use std::collections::BTreeMap;

use common::pubkey;
use grasp_sync_core::filters::{
    announcement_chunks, announcement_filters, discovery_filter, ids_filters, pack_reqs,
    repo_tag_chunks, repo_tag_filters, root_tag_chunks, root_tag_filters, DiscoveryScope, Form,
    MAX_SUBSCRIPTION_ID_LEN, REPO_TAG_LETTERS, ROOT_TAG_LETTERS,
};
use grasp_sync_core::nip34::{kinds, RepoRef};
use grasp_sync_core::RelayLimits;
use nostr::prelude::{EventId, Filter, SingleLetterTag, Timestamp};
use proptest::prelude::*;

fn limits() -> impl Strategy<Value = RelayLimits> {
    (
        1usize..30,
        1usize..12,
        1usize..300,
        4_096usize..70_000,
        10usize..600,
    )
        .prop_map(
            |(
                max_subscriptions,
                max_filters,
                max_values_per_filter,
                max_message_bytes,
                max_results,
            )| {
                RelayLimits {
                    max_subscriptions,
                    max_filters,
                    max_values_per_filter,
                    max_message_bytes,
                    max_results,
                    max_subid_len: 64,
                }
            },
        )
}

fn identifier() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9-]{1,12}",
        // quotes, backslashes, control characters and non-ASCII need escaping in JSON
        "[\"\\\\\u{1}\u{7f}é漢a-z]{1,40}",
        "[a-z]{200,256}",
    ]
}

fn coords() -> impl Strategy<Value = Vec<RepoRef>> {
    prop::collection::vec((0u8..40, identifier()), 0..400).prop_map(|v| {
        v.into_iter()
            .map(|(k, d)| RepoRef::new(pubkey(k), d))
            .collect()
    })
}

fn ids(max: usize) -> impl Strategy<Value = Vec<EventId>> {
    prop::collection::vec(any::<[u8; 32]>(), 0..max)
        .prop_map(|v| v.into_iter().map(EventId::from_byte_array).collect())
}

fn form() -> impl Strategy<Value = Form> {
    prop_oneof![
        Just(Form::Live),
        Just(Form::Historic { since: None }),
        (0u64..4_000_000_000).prop_map(|s| Form::Historic {
            since: Some(Timestamp::from(s))
        }),
    ]
}

fn req_json(filters: &[Filter]) -> String {
    let id = "s".repeat(MAX_SUBSCRIPTION_ID_LEN);
    let mut out = format!(r#"["REQ","{id}""#);
    for f in filters {
        out.push(',');
        out.push_str(&f.as_json());
    }
    out.push(']');
    out
}

fn tag_values(filter: &Filter, letter: SingleLetterTag) -> Vec<String> {
    filter
        .generic_tags
        .get(&letter)
        .map(|set| set.iter().cloned().collect())
        .unwrap_or_default()
}

/// Every field of the limits holds for every REQ.
fn assert_respects(reqs: &[Vec<Filter>], limits: &RelayLimits) -> Result<(), TestCaseError> {
    for req in reqs {
        prop_assert!(!req.is_empty());
        prop_assert!(req.len() <= limits.max_filters, "{} filters", req.len());
        let bytes = req_json(req).len();
        prop_assert!(
            bytes <= limits.max_message_bytes,
            "{bytes} > {}",
            limits.max_message_bytes
        );
        for f in req {
            let counts = [
                f.ids.as_ref().map_or(0, |s| s.len()),
                f.authors.as_ref().map_or(0, |s| s.len()),
            ]
            .into_iter()
            .chain(f.generic_tags.values().map(|s| s.len()));
            for n in counts {
                prop_assert!(n <= limits.max_values_per_filter, "{n} values");
            }
            if let Some(ids) = &f.ids {
                prop_assert!(ids.len() <= limits.max_results);
                prop_assert!(f.limit.is_some_and(|l| l <= limits.max_results));
            }
        }
    }
    Ok(())
}

/// Packing is first fit: a filter opens a REQ only when it would break the filter count
/// or the message size of every earlier one.
fn assert_tight(reqs: &[Vec<Filter>], limits: &RelayLimits) -> Result<(), TestCaseError> {
    // First fit: no filter of a later REQ would have fitted into an earlier one.
    // Joined, a REQ's text grows by a comma and the filter.
    let sizes: Vec<usize> = reqs.iter().map(|r| req_json(r).len()).collect();
    for (j, later) in reqs.iter().enumerate() {
        for filter in later {
            let len = filter.as_json().len() + 1;
            for (earlier, size) in reqs[..j].iter().zip(&sizes) {
                let fits =
                    earlier.len() < limits.max_filters && size + len <= limits.max_message_bytes;
                prop_assert!(!fits, "a filter opened a REQ while an earlier one had room");
            }
        }
    }
    Ok(())
}

/// How many filters with `letter` contain each value.
fn coverage(filters: &[Filter], letter: SingleLetterTag) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for f in filters {
        for v in tag_values(f, letter) {
            *out.entry(v).or_insert(0) += 1;
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn announcement_filters_cover_each_coordinate_once(coords in coords(), limits in limits(), form in form()) {
        let filters = announcement_filters(&coords, form, &limits);
        for coord in &coords {
            let covering = filters
                .iter()
                .filter(|f| {
                    f.authors.as_ref().is_some_and(|a| a.contains(&coord.pubkey))
                        && tag_values(f, SingleLetterTag::LOWERCASE_D).contains(&coord.identifier)
                })
                .count();
            prop_assert_eq!(covering, 1, "{}", coord);
        }
        for f in &filters {
            prop_assert_eq!(f.kinds.as_ref().map(|k| k.len()), Some(2));
            prop_assert!(f.kinds.as_ref().is_some_and(|k| k.contains(&kinds::REPO_ANNOUNCEMENT)));
            prop_assert_eq!(f.limit, (form == Form::Live).then_some(0));
        }
        let reqs = pack_reqs(filters, &limits);
        assert_respects(&reqs, &limits)?;
        assert_tight(&reqs, &limits)?;
    }

    #[test]
    fn repo_tag_filters_hold_each_coordinate_once_per_letter(coords in coords(), limits in limits(), form in form()) {
        let filters = repo_tag_filters(&coords, form, &limits);
        for letter in REPO_TAG_LETTERS {
            let cov = coverage(&filters, letter);
            for coord in &coords {
                prop_assert_eq!(cov.get(&coord.to_string()).copied(), Some(1), "{} {}", letter, coord);
            }
            prop_assert!(cov.values().all(|n| *n == 1));
        }
        let reqs = pack_reqs(filters, &limits);
        assert_respects(&reqs, &limits)?;
        assert_tight(&reqs, &limits)?;
    }

    #[test]
    fn root_tag_filters_hold_each_root_once_per_letter(roots in ids(3_000), limits in limits(), form in form()) {
        let filters = root_tag_filters(&roots, form, &limits);
        for letter in ROOT_TAG_LETTERS {
            let cov = coverage(&filters, letter);
            for root in &roots {
                prop_assert_eq!(cov.get(&root.to_hex()).copied(), Some(1));
            }
        }
        if let Form::Historic { since } = form {
            prop_assert!(filters.iter().all(|f| f.since == since && f.limit.is_none()));
        }
        let reqs = pack_reqs(filters, &limits);
        assert_respects(&reqs, &limits)?;
        assert_tight(&reqs, &limits)?;
    }

    #[test]
    fn ids_filters_never_exceed_the_result_limit(ids in ids(3_000), limits in limits()) {
        let filters = ids_filters(&ids, &limits);
        let mut count = BTreeMap::new();
        for f in &filters {
            for id in f.ids.iter().flatten() {
                *count.entry(*id).or_insert(0) += 1;
            }
            prop_assert_eq!(f.limit, f.ids.as_ref().map(|s| s.len()));
        }
        for id in &ids {
            prop_assert_eq!(count.get(id).copied(), Some(1));
        }
        let reqs = pack_reqs(filters, &limits);
        assert_respects(&reqs, &limits)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, .. ProptestConfig::default() })]

    #[test]
    fn chunk_members_are_exactly_what_their_filters_cover(
        coords in coords(), roots in ids(1_500), limits in limits(),
    ) {
        let form = Form::Historic { since: None };
        let mut all: Vec<RepoRef> = Vec::new();
        for chunk in announcement_chunks(&coords, form, &limits) {
            prop_assert_eq!(chunk.filters.len(), 1);
            let f = &chunk.filters[0];
            for m in &chunk.members {
                prop_assert!(f.authors.as_ref().is_some_and(|a| a.contains(&m.pubkey)));
                prop_assert!(tag_values(f, SingleLetterTag::LOWERCASE_D).contains(&m.identifier));
            }
            all.extend(chunk.members);
        }
        let mut expected = coords.clone();
        expected.sort();
        expected.dedup();
        all.sort();
        prop_assert_eq!(&all, &expected);

        let mut all: Vec<RepoRef> = Vec::new();
        for chunk in repo_tag_chunks(&coords, form, &limits) {
            let mut members: Vec<String> = chunk.members.iter().map(ToString::to_string).collect();
            members.sort();
            for (f, letter) in chunk.filters.iter().zip(REPO_TAG_LETTERS) {
                prop_assert_eq!(&tag_values(f, letter), &members);
            }
            all.extend(chunk.members);
        }
        all.sort();
        prop_assert_eq!(all, expected);

        let mut all: Vec<EventId> = Vec::new();
        for chunk in root_tag_chunks(&roots, form, &limits) {
            let mut members: Vec<String> = chunk.members.iter().map(EventId::to_hex).collect();
            members.sort();
            for (f, letter) in chunk.filters.iter().zip(ROOT_TAG_LETTERS) {
                prop_assert_eq!(&tag_values(f, letter), &members);
            }
            all.extend(chunk.members);
        }
        let mut expected = roots.clone();
        expected.sort();
        expected.dedup();
        all.sort();
        prop_assert_eq!(all, expected);
    }
}

#[test]
fn small_sets_fit_one_req_under_default_limits() {
    let limits = RelayLimits::default();
    let coords: Vec<RepoRef> = (0..20).map(|k| RepoRef::new(pubkey(k), "repo")).collect();
    let roots: Vec<EventId> = (0..200u8)
        .map(|i| EventId::from_byte_array([i; 32]))
        .collect();
    let mut filters = announcement_filters(&coords, Form::Live, &limits);
    filters.extend(repo_tag_filters(&coords, Form::Live, &limits));
    filters.extend(root_tag_filters(&roots, Form::Live, &limits));
    assert_eq!(filters.len(), 7, "one L1 filter, three L2, three L3");
    let reqs = pack_reqs(filters, &limits);
    assert_eq!(reqs.len(), 1);
    assert!(reqs.len() <= limits.max_subscriptions);
}

#[test]
fn a_small_filter_after_a_large_one_joins_an_earlier_req() {
    // A live set as a relay with default limits gets it: repository filters, then one
    // full chunk of roots, then the last roots' small chunk. In order, that was three
    // REQs (three subscriptions of a budget of ten); the small chunk fits beside the
    // repository filters.
    let limits = RelayLimits::default();
    let coords: Vec<RepoRef> = (0..2).map(|k| RepoRef::new(pubkey(k), "repo")).collect();
    let mut filters = repo_tag_filters(&coords, Form::Live, &limits);
    let roots: Vec<EventId> = (0..1_050u32)
        .map(|i| {
            let mut bytes = [0u8; 32];
            bytes[..4].copy_from_slice(&i.to_be_bytes());
            EventId::from_byte_array(bytes)
        })
        .collect();
    let e = SingleLetterTag::LOWERCASE_E;
    let full = Filter::new()
        .custom_tags(e, roots[..1_000].iter().map(|r| r.to_hex()))
        .limit(0);
    let small = Filter::new()
        .custom_tags(e, roots[1_000..].iter().map(|r| r.to_hex()))
        .limit(0);
    filters.push(full.clone());
    filters.push(small.clone());
    let reqs = pack_reqs(filters, &limits);
    assert_eq!(reqs.len(), 2, "the small chunk joins the first REQ");
    assert!(reqs[0].contains(&small));
    assert_eq!(reqs[1], vec![full]);
}

#[test]
fn the_same_identifier_under_many_authors_stays_in_one_filter() {
    let limits = RelayLimits::default();
    let coords: Vec<RepoRef> = (0..10).map(|k| RepoRef::new(pubkey(k), "shared")).collect();
    let filters = announcement_filters(&coords, Form::Historic { since: None }, &limits);
    assert_eq!(filters.len(), 1);
    assert_eq!(filters[0].authors.as_ref().map(|a| a.len()), Some(10));
}

#[test]
fn discovery_asks_for_every_announcement() {
    let live = discovery_filter(Form::Live, &DiscoveryScope::All);
    assert_eq!(live.limit, Some(0));
    assert_eq!(
        live.kinds
            .as_ref()
            .map(|k| k.iter().copied().collect::<Vec<_>>()),
        Some(vec![kinds::REPO_ANNOUNCEMENT])
    );
    assert!(live.authors.is_none() && live.generic_tags.is_empty());
}
