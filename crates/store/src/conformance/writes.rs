//! Saves: versions and deletions decided by the core, NIP-40 expiration, re-saves.

use std::collections::{BTreeSet, HashSet};

use grasp_sync_core::accept::{AcceptConfig, Acceptor, Removal, Verdict};
use grasp_sync_core::filters::DiscoveryScope;
use grasp_sync_core::nip34::{self, kinds};
use grasp_sync_core::{IndexConfig, RepoIndex, RepoRef};
use grasp_sync_driver::{tracked_events, Saved, SavedState, Store};
use nostr::prelude::{Event, EventId, Filter, Keys, Kind};

use super::data::{
    acceptable, announcement, coord, corpus, event, id_set, ids, keys, now, sign, tag, T0,
};
use super::{ensure, root_refs_agree, same, Backend, Case};
use crate::plan;

/// The core's side of a save: acceptance over a repository index.
struct Core {
    acceptor: Acceptor,
    index: RepoIndex,
}

impl Core {
    fn new() -> Self {
        Self {
            acceptor: Acceptor::new(AcceptConfig::default()),
            index: RepoIndex::new(IndexConfig::default()),
        }
    }

    /// A core that learnt what `store` holds as a restarted engine does.
    async fn restored(store: &impl Store) -> Result<Self, String> {
        let mut core = Self::new();
        let events = tracked_events(store, &DiscoveryScope::All, &IndexConfig::default()).await?;
        for event in &events {
            core.acceptor.restore(event);
        }
        core.index.apply(&events);
        Ok(core)
    }

    /// Decides about `events` in order, as one batch: what to put and what to remove.
    fn decide(&mut self, events: &[Event]) -> (Vec<Event>, Vec<Removal>) {
        let mut put = Vec::new();
        let mut remove = Vec::new();
        for event in events {
            if let Verdict::Store { remove: r } = self.acceptor.decide(event, &self.index) {
                if event.kind == kinds::REPO_ANNOUNCEMENT
                    || event.kind == kinds::DELETION
                    || nip34::is_root(event)
                {
                    self.index.apply([event]);
                }
                remove.extend(r);
                put.push(event.clone());
            }
        }
        (put, remove)
    }

    /// Decides about `events` and saves the verdicts in one call.
    async fn save(&mut self, store: &impl Store, events: &[Event]) -> Result<Saved, String> {
        let (put, remove) = self.decide(events);
        store
            .save(put, remove, SavedState::default())
            .await
            .map_err(String::from)
    }
}

/// What `store` holds at one address.
async fn at_address(
    store: &impl Store,
    kind: u16,
    keys: &Keys,
    d: Option<&str>,
) -> Result<Vec<Event>, String> {
    let mut filter = Filter::new()
        .kind(Kind::from(kind))
        .author(keys.public_key());
    if let Some(d) = d {
        filter = filter.identifier(d);
    }
    store.query(filter).await.map_err(String::from)
}

/// NIP-01's winner among versions: newest, then lowest id.
fn winner(versions: &[&Event]) -> Vec<EventId> {
    let all: Vec<Event> = versions.iter().map(|e| (*e).clone()).collect();
    plan::newest(&Filter::new().limit(1), all, now())
        .iter()
        .map(|e| e.id)
        .collect()
}

/// One offer: the event, what the store reports removed, the address (kind, `d`), what
/// it holds there after.
type Step<'a> = (
    &'a Event,
    Vec<&'a Event>,
    u16,
    Option<&'a str>,
    Vec<&'a Event>,
);

/// Replaceable and addressable versions, one at a time, in one save, and after a reopen.
pub async fn versions<B: Backend>(backend: &B) -> Result<(), String> {
    let owner = keys(5);
    let repo = coord(&owner, "repo").to_string();
    let state = |at: u64, content: &str| event(&owner, 30618, at, &[&["d", "repo"]], content);
    let list = |at: u64| event(&owner, 10317, at, &[&["a", &repo]], "");
    let (a100, a200, a150) = (
        announcement(&owner, T0 + 100, "repo"),
        announcement(&owner, T0 + 200, "repo"),
        announcement(&owner, T0 + 150, "repo"),
    );
    // Two versions in the same second: the lower id wins whichever comes first.
    let mut tie = [
        event(
            &owner,
            30617,
            T0 + 300,
            &[&["d", "repo"], &["name", "one"]],
            "",
        ),
        event(
            &owner,
            30617,
            T0 + 300,
            &[&["d", "repo"], &["name", "two"]],
            "",
        ),
    ];
    tie.sort_by_key(|e| std::cmp::Reverse(e.id));
    let (s100, s200) = (state(T0 + 100, "a"), state(T0 + 200, "b"));
    let (l100, l200) = (list(T0 + 100), list(T0 + 200));
    {
        let store = backend.open(Case::Versions.name()).await?;
        let mut core = Core::new();
        // (offered, what the store reports removed, the address, what it holds after)
        let steps: [Step; 9] = [
            (&a100, vec![], 30617, Some("repo"), vec![&a100]),
            (&a200, vec![&a100], 30617, Some("repo"), vec![&a200]),
            (&a150, vec![], 30617, Some("repo"), vec![&a200]),
            (&tie[0], vec![&a200], 30617, Some("repo"), vec![&tie[0]]),
            (&tie[1], vec![&tie[0]], 30617, Some("repo"), vec![&tie[1]]),
            (&s100, vec![], 30618, Some("repo"), vec![&s100]),
            (&s200, vec![&s100], 30618, Some("repo"), vec![&s200]),
            (&l200, vec![], 10317, None, vec![&l200]),
            (&l100, vec![], 10317, None, vec![&l200]),
        ];
        same(
            winner(&[&tie[0], &tie[1]]),
            vec![tie[1].id],
            "the tie goes to the lower id",
        )?;
        for (offered, removed, kind, d, held) in steps {
            let saved = core.save(&store, std::slice::from_ref(offered)).await?;
            let what = format!("after offering {kind} at {}", offered.created_at);
            same(
                id_set(&saved.removed),
                id_set(removed),
                &format!("removed {what}"),
            )?;
            let got = at_address(&store, kind, &owner, d).await?;
            same(
                ids(&got),
                ids(&held.into_iter().cloned().collect::<Vec<_>>()),
                &format!("held {what}"),
            )?;
        }
        // Three versions in one save: the newest stays, the others are reported.
        let batch = [
            announcement(&owner, T0 + 100, "batch"),
            announcement(&owner, T0 + 300, "batch"),
            announcement(&owner, T0 + 200, "batch"),
        ];
        let saved = core.save(&store, &batch).await?;
        same(
            id_set(&saved.removed),
            id_set([&batch[0]]),
            "removed by a batch",
        )?;
        let got = at_address(&store, 30617, &owner, Some("batch")).await?;
        same(ids(&got), vec![batch[1].id], "held after a batch")?;
    }
    // Reopened, a restored core knows the held state version: an older one is refused,
    // a newer one replaces it.
    let store = backend.open(Case::Versions.name()).await?;
    let mut core = Core::restored(&store).await?;
    let (s150, s400) = (state(T0 + 150, "c"), state(T0 + 400, "d"));
    let saved = core.save(&store, &[s150]).await?;
    same(saved, Saved::default(), "an older state after a reopen")?;
    let saved = core.save(&store, std::slice::from_ref(&s400)).await?;
    same(
        id_set(&saved.removed),
        id_set([&s200]),
        "a newer state after a reopen",
    )?;
    let got = at_address(&store, 30618, &owner, Some("repo")).await?;
    same(ids(&got), vec![s400.id], "state held after a reopen")?;
    let a400 = announcement(&owner, T0 + 400, "repo");
    let saved = core.save(&store, std::slice::from_ref(&a400)).await?;
    same(
        id_set(&saved.removed),
        id_set([&tie[1]]),
        "a newer announcement after a reopen",
    )
}

/// Removals by the author only; NIP-09 through acceptance.
pub async fn deletions<B: Backend>(backend: &B) -> Result<(), String> {
    let store = backend.open(Case::Deletions.name()).await?;
    let (alice, bob) = (keys(21), keys(22));
    let repo = coord(&alice, "repo").to_string();
    let issue = |k: &Keys, at: u64, text: &str| event(k, 1621, at, &[&["a", &repo]], text);
    let (e1, e2, e3, e4) = (
        issue(&alice, T0 + 1, "one"),
        issue(&alice, T0 + 2, "two"),
        issue(&bob, T0 + 3, "three"),
        issue(&alice, T0 + 4, "four"),
    );
    let removal = |e: &Event, by: &Keys| Removal {
        id: e.id,
        author: by.public_key(),
    };
    store
        .save(
            vec![e1.clone(), e2.clone(), e3.clone()],
            Vec::new(),
            SavedState::default(),
        )
        .await?;
    let removing = |removals| store.save(Vec::new(), removals, SavedState::default());
    let saved = removing(vec![removal(&e1, &bob)]).await?;
    same(saved.removed, Vec::new(), "a removal by someone else")?;
    let saved = removing(vec![removal(&e1, &alice)]).await?;
    same(ids(&saved.removed), vec![e1.id], "a removal by the author")?;
    let saved = removing(vec![removal(&e1, &alice)]).await?;
    same(saved.removed, Vec::new(), "removing what is gone")?;
    let saved = store
        .save(
            vec![e4.clone()],
            vec![removal(&e4, &alice), removal(&e3, &bob)],
            SavedState::default(),
        )
        .await?;
    same(
        id_set(&saved.removed),
        id_set([&e4, &e3]),
        "put and removed in one call",
    )?;
    let held = store.query(Filter::new()).await?;
    same(ids(&held), vec![e2.id], "held after removals")?;
    let refs =
        root_refs_agree(&store, &[RepoRef::parse(&repo).map_err(|e| e.to_string())?]).await?;
    same(
        refs.into_iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![e2.id],
        "root references after removals",
    )?;
    same(
        store.items(Filter::new()).await?,
        vec![(e2.created_at, e2.id)],
        "items after removals",
    )?;

    // Kind 5 through acceptance: by someone else it removes nothing, by the author it
    // does, and the deleted event is refused afterwards; an address deletion removes
    // the held version.
    let mut core = Core::new();
    let ann = announcement(&alice, T0, "repo");
    let gone = announcement(&alice, T0, "gone");
    core.save(&store, &[ann.clone(), gone.clone(), e2.clone()])
        .await?;
    let e2_hex = e2.id.to_hex();
    let by_bob = event(&bob, 5, T0 + 10, &[&["e", &e2_hex]], "");
    let saved = core.save(&store, std::slice::from_ref(&by_bob)).await?;
    same(saved.removed, Vec::new(), "a deletion by someone else")?;
    let gone_address = format!("30617:{}:gone", alice.public_key().to_hex());
    let by_alice = event(
        &alice,
        5,
        T0 + 11,
        &[&["e", &e2_hex], &["a", &gone_address]],
        "",
    );
    let saved = core.save(&store, std::slice::from_ref(&by_alice)).await?;
    same(
        id_set(&saved.removed),
        id_set([&e2, &gone]),
        "a deletion by the author",
    )?;
    let (put, _) = core.decide(std::slice::from_ref(&e2));
    same(put, Vec::new(), "a deleted event offered again")?;
    let held = id_set(&store.query(Filter::new()).await?);
    same(
        held,
        id_set([&ann, &by_bob, &by_alice]),
        "held after deletions",
    )
}

/// NIP-40: expired events are not served, whatever asks.
pub async fn expiration<B: Backend>(backend: &B) -> Result<(), String> {
    let owner = keys(31);
    let repo = coord(&owner, "repo");
    let repo_text = repo.to_string();
    let now = now().as_secs();
    let (past, future) = ((now - 30).to_string(), (now + 3600).to_string());
    let issue = |at: u64, expiry: Option<&str>, text: &str| {
        let mut tags = vec![tag(&["a", &repo_text])];
        if let Some(expiry) = expiry {
            tags.push(tag(&["expiration", expiry]));
        }
        sign(&owner, 1621, at, tags, text)
    };
    let expired = issue(now - 100, Some(&past), "expired");
    let later = issue(now - 100, Some(&future), "expires later");
    let plain = issue(now - 100, None, "plain");
    let saved = vec![expired.clone(), later.clone(), plain.clone()];
    {
        let store = backend.open(Case::Expiration.name()).await?;
        store
            .save(saved.clone(), Vec::new(), SavedState::default())
            .await?;
        check_expiration(&store, &saved, &expired, &repo).await?;
    }
    let store = backend.open(Case::Expiration.name()).await?;
    check_expiration(&store, &saved, &expired, &repo).await
}

async fn check_expiration(
    store: &impl Store,
    saved: &[Event],
    expired: &Event,
    repo: &RepoRef,
) -> Result<(), String> {
    let live: BTreeSet<EventId> = id_set(saved.iter().filter(|e| e.id != expired.id));
    let filters = [
        Filter::new(),
        Filter::new().kind(Kind::from(1621)),
        Filter::new().custom_tag(
            nostr::prelude::SingleLetterTag::LOWERCASE_A,
            repo.to_string(),
        ),
        Filter::new().ids(ids(saved)),
        Filter::new().author(repo.pubkey).limit(5),
    ];
    for filter in filters {
        let what = filter.as_json();
        same(
            id_set(&store.query(filter.clone()).await?),
            live.clone(),
            &format!("query {what}"),
        )?;
        let items: BTreeSet<EventId> = store
            .items(filter)
            .await?
            .into_iter()
            .map(|(_, id)| id)
            .collect();
        same(items, live.clone(), &format!("items {what}"))?;
    }
    let roots: Vec<Event> = store.root_events(vec![repo.clone()]).await?;
    let wanted: HashSet<&RepoRef> = [repo].into_iter().collect();
    let roots = id_set(
        roots
            .iter()
            .filter(|e| nip34::is_root(e) && crate::notes::names_a_repo(e, &wanted)),
    );
    let refs = root_refs_agree(store, std::slice::from_ref(repo)).await?;
    same(
        refs.iter().map(|r| r.id).collect(),
        roots.clone(),
        "root references",
    )?;
    same(roots, live, "root events")
}

/// Saving the same events again.
pub async fn resave<B: Backend>(backend: &B) -> Result<(), String> {
    let store = backend.open(Case::Resave.name()).await?;
    let corpus = corpus(13, 2, 20);
    let events = acceptable(&corpus);
    ensure(events.len() > 20, || format!("{} events", events.len()))?;
    let (first, rest) = events.split_at(events.len() / 2);
    let saved = store
        .save(first.to_vec(), Vec::new(), SavedState::default())
        .await?;
    same(saved, Saved::default(), "a first save")?;
    let all = store.query(Filter::new()).await?;
    let items = store.items(Filter::new()).await?;
    let saved = store
        .save(first.to_vec(), Vec::new(), SavedState::default())
        .await?;
    same(
        id_set(&saved.removed),
        BTreeSet::new(),
        "removed by a re-save",
    )?;
    same(
        saved.existed.iter().copied().collect::<BTreeSet<_>>(),
        id_set(first),
        "existed in a re-save",
    )?;
    same(
        ids(&store.query(Filter::new()).await?),
        ids(&all),
        "events after a re-save",
    )?;
    same(
        store.items(Filter::new()).await?,
        items,
        "items after a re-save",
    )?;
    // Half old, half new: only the old ones existed.
    let mut mixed = rest.to_vec();
    mixed.extend_from_slice(&first[..3]);
    let saved = store.save(mixed, Vec::new(), SavedState::default()).await?;
    same(
        saved.existed.iter().copied().collect::<BTreeSet<_>>(),
        id_set(&first[..3]),
        "existed in a mixed save",
    )?;
    let want = plan::newest(&Filter::new(), events.clone(), now());
    same(
        ids(&store.query(Filter::new()).await?),
        ids(&want),
        "every event once",
    )
}
