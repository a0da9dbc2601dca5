//! NIP-01 queries and negentropy items, checked against [`plan::newest`] over what was
//! saved (NIP-01 matching as nostr does it, NIP-40, newest first, lowest id on ties).

use grasp_sync_core::filters::{discovery_filter, ids_filters, layer_filters};
use grasp_sync_core::filters::{DiscoveryScope, Form, LayerItems};
use grasp_sync_core::nip34::{self, kinds};
use grasp_sync_core::{Layer, RelayLimits};
use grasp_sync_driver::{SavedState, Store};
use nostr::prelude::{Event, EventId, Filter, Kind, SingleLetterTag, Timestamp};

use super::data::{acceptable, corpus, event, ids, keys, now, sign, tag, T0};
use super::{ensure, same, Backend, Case};
use crate::plan::{self, newest_first};

/// Checks `store`'s query and items for `filter` against `saved`.
async fn answers(store: &impl Store, saved: &[Event], filter: Filter) -> Result<(), String> {
    let now = now();
    let want = plan::newest(&filter, saved.to_vec(), now);
    let got = store.query(filter.clone()).await?;
    same(
        ids(&got),
        ids(&want),
        &format!("query {}", filter.as_json()),
    )?;
    let items = store.items(filter.clone()).await?;
    let want_items: Vec<(Timestamp, EventId)> = want.iter().map(|e| (e.created_at, e.id)).collect();
    same(items, want_items, &format!("items {}", filter.as_json()))
}

/// Every NIP-01 field alone and combined.
pub async fn filters<B: Backend>(backend: &B) -> Result<(), String> {
    let store = backend.open(Case::Filters.name()).await?;
    let authors = [keys(1), keys(2), keys(3)];
    let repo = |n: usize| format!("30617:{}:r{n}", authors[0].public_key().to_hex());
    let (r1, r2) = (repo(1), repo(2));
    let root = event(&authors[0], 1621, T0, &[&["a", &r1]], "the root");
    let root_hex = root.id.to_hex();
    let bob_hex = authors[1].public_key().to_hex();
    let mut saved = vec![root.clone()];
    for i in 0..36usize {
        let kind = [1621, 1617, 1, 1111][i % 4];
        let topic = ["x", "y"][i % 2];
        let repo = if i % 3 == 0 { &r1 } else { &r2 };
        let mut tags = vec![tag(&["t", topic]), tag(&["a", repo])];
        if i % 5 == 0 {
            tags.push(tag(&["t", "z"]));
        }
        if i % 4 == 3 {
            tags.push(tag(&["E", &root_hex]));
        }
        if i % 6 == 1 {
            tags.push(tag(&["p", &bob_hex]));
        }
        // Pairs share a second: ties go to the lowest id.
        let at = T0 + 1 + (i as u64) / 2;
        saved.push(sign(&authors[i % 3], kind, at, tags, &format!("event {i}")));
    }
    // One author's issues with one topic, one second apart: the shape where nostr-lmdb
    // 0.45.3 returns the lowest ids for a limited authors + kinds + tags filter.
    let dana = keys(4);
    for i in 0..8u64 {
        let tags = vec![tag(&["t", "w"]), tag(&["a", &r2])];
        saved.push(sign(&dana, 1621, T0 + 100 + i, tags, &format!("issue {i}")));
    }
    let stored = store
        .save(saved.clone(), Vec::new(), SavedState::default())
        .await?;
    same(stored.existed.len(), 0, "a fresh store held nothing")?;
    same(stored.removed.len(), 0, "nothing to remove")?;

    let pk = |i: usize| authors[i].public_key();
    let a = SingleLetterTag::LOWERCASE_A;
    let upper_e = SingleLetterTag::UPPERCASE_E;
    let k = |n: u16| Kind::from(n);
    let at = |s: u64| Timestamp::from(T0 + s);
    let some_ids: Vec<EventId> = [3, 7, 11, 20, 21].iter().map(|i| saved[*i].id).collect();

    // The shape nostr-lmdb 0.45.3 answers in id order: the data must tell the orders
    // apart, or the check below proves nothing.
    let tricky = Filter::new()
        .author(dana.public_key())
        .kind(k(1621))
        .hashtag("w")
        .limit(3);
    let matching = plan::newest(&tricky.clone().remove_limit(), saved.clone(), now());
    let mut by_id = ids(&matching);
    by_id.sort();
    by_id.truncate(3);
    let newest3: Vec<EventId> = ids(&matching).into_iter().take(3).collect();
    ensure(by_id != newest3, || {
        "test data: the lowest ids are the newest".into()
    })?;

    let filters = [
        Filter::new(),
        Filter::new().ids(some_ids.clone()),
        Filter::new().ids(some_ids.clone()).limit(2),
        Filter::new().author(pk(0)),
        Filter::new().authors([pk(0), pk(1)]).limit(5),
        Filter::new().kind(k(1621)),
        Filter::new()
            .kinds([k(1621), k(1617)])
            .since(at(3))
            .until(at(10)),
        Filter::new().hashtag("x"),
        Filter::new().hashtags(["x", "z"]).limit(4),
        Filter::new().custom_tag(a, r1.clone()),
        Filter::new()
            .custom_tags(a, [r1.clone(), r2.clone()])
            .limit(9),
        Filter::new().custom_tag(upper_e, root_hex.clone()),
        Filter::new().pubkey(pk(1)),
        Filter::new().since(at(10)),
        Filter::new().until(at(5)),
        Filter::new().since(at(4)).until(at(4)),
        Filter::new().since(at(9)).until(at(4)),
        Filter::new().limit(7),
        Filter::new().limit(1),
        tricky,
        Filter::new()
            .authors([pk(0), pk(1)])
            .kinds([k(1621), k(1617), k(1), k(1111)])
            .hashtag("x")
            .limit(3),
        Filter::new()
            .authors([pk(0), pk(2)])
            .kinds([k(1621), k(1)])
            .hashtags(["x", "y"])
            .limit(2),
        Filter::new().author(pk(0)).kind(k(1621)).hashtag("y"),
        Filter::new()
            .author(pk(2))
            .kind(k(1617))
            .custom_tag(a, r2.clone())
            .since(at(2))
            .until(at(15))
            .limit(2),
        Filter::new().id(saved[1].id).author(pk(2)),
        Filter::new().kind(k(1621)).limit(0),
        Filter::new().hashtag("nothing"),
        Filter::new().kind(k(7)),
    ];
    for filter in filters {
        answers(&store, &saved, filter).await?;
    }
    Ok(())
}

/// Items for the filters the core builds for every layer.
pub async fn layer_items<B: Backend>(backend: &B) -> Result<(), String> {
    let store = backend.open(Case::LayerItems.name()).await?;
    let corpus = corpus(11, 3, 30);
    let mut saved = acceptable(&corpus);
    let coords = corpus.repos.clone();
    let roots: Vec<EventId> = saved
        .iter()
        .filter(|e| nip34::is_root(e))
        .map(|e| e.id)
        .collect();
    ensure(roots.len() >= 3, || format!("only {} roots", roots.len()))?;
    // Events tagging a repository and a root that expired, expire later, and share a
    // second.
    let now_secs = now().as_secs();
    let repo = coords[0].to_string();
    let root = roots[0].to_hex();
    let (past, future) = ((now_secs - 60).to_string(), (now_secs + 3600).to_string());
    let author = keys(40);
    for (n, extra) in [Some(&past), Some(&future), None].into_iter().enumerate() {
        let mut tags = vec![tag(&["a", &repo]), tag(&["e", &root])];
        if let Some(at) = extra {
            tags.push(tag(&["expiration", at]));
        }
        saved.push(sign(
            &author,
            1111,
            now_secs - 100,
            tags,
            &format!("late {n}"),
        ));
    }
    store
        .save(saved.clone(), Vec::new(), SavedState::default())
        .await?;

    let limits = RelayLimits::default();
    let historic = Form::Historic { since: None };
    let recent = Form::Historic {
        since: Some(Timestamp::from(T0 + 15 * 24 * 3600)),
    };
    let mut filters = Vec::new();
    for form in [historic, recent] {
        filters.extend(layer_filters(
            Layer::Announcements,
            LayerItems::Coords(&coords),
            form,
            &limits,
        ));
        filters.extend(layer_filters(
            Layer::RepoTags,
            LayerItems::Coords(&coords),
            form,
            &limits,
        ));
        filters.extend(layer_filters(
            Layer::RootTags,
            LayerItems::Roots(&roots),
            form,
            &limits,
        ));
        filters.push(discovery_filter(form, &DiscoveryScope::All));
        filters.push(discovery_filter(
            form,
            &DiscoveryScope::Repos(coords[..1].to_vec()),
        ));
    }
    filters.push(Filter::new().kinds([kinds::PATCH, kinds::PULL_REQUEST, kinds::ISSUE]));
    filters.push(
        Filter::new()
            .kind(Kind::from(1111))
            .until(Timestamp::from(now_secs - 100)),
    );
    filters.extend(ids_filters(&ids(&saved[..20]), &limits));
    ensure(filters.len() > 10, || format!("{} filters", filters.len()))?;
    for filter in filters {
        answers(&store, &saved, filter).await?;
    }
    // A live filter (limit 0) lists nothing.
    for filter in layer_filters(
        Layer::RepoTags,
        LayerItems::Coords(&coords),
        Form::Live,
        &limits,
    ) {
        same(
            store.items(filter).await?,
            Vec::new(),
            "a live filter's items",
        )?;
    }
    // Sorted newest first, whatever the filter.
    let all = store.items(Filter::new()).await?;
    let mut sorted = all.clone();
    sorted.sort_by(newest_first);
    same(all, sorted, "items in NIP-01 order")
}
