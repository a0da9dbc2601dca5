//! The conformance suite: one generic test every [`Store`] backend runs.
//!
//! A backend implements [`Backend`] (open a named store; opening a name again after its
//! stores were dropped is a reopen) and calls [`run_all`], or [`run`] per [`Case`]. The
//! suite is async and runtime-free (no tokio, no files, no clock but
//! `Timestamp::now()`): natively a `#[tokio::test]` awaits it, in a browser a
//! `#[wasm_bindgen_test]` does (the module must define nostr's time provider, as it
//! must anyway). Signed events come from the testkit's deterministic keys and corpus.
//!
//! Each case opens its own store, named after the case (with the backend's prefix, if
//! any): a name not opened before must be an empty store.

mod data;
mod queries;
mod state;
mod writes;

use std::collections::{BTreeSet, HashSet};
use std::fmt::Debug;

use futures::future::LocalBoxFuture;
use grasp_sync_core::{RepoRef, RootRef};
use grasp_sync_driver::Store;

/// A store backend under test.
pub trait Backend {
    /// Its store.
    type Store: Store + 'static;

    /// Opens (creating it empty on first use) the store named `name`. Opening a name
    /// again once every store opened on it was dropped must see what they saved.
    fn open<'a>(&'a self, name: &'a str) -> LocalBoxFuture<'a, Result<Self::Store, String>>;
}

/// One case of the suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    /// Every NIP-01 filter field (ids, authors, kinds, `#` tags, since, until, limit)
    /// alone and combined, `limit` newest first with ties to the lowest id, including
    /// authors + kinds + tags + limit.
    Filters,
    /// Negentropy items (and queries) for every layer's filters as the core builds them,
    /// discovery, kinds alone and `ids` fetches.
    LayerItems,
    /// Replaceable and addressable versions decided by the core's acceptance (newer
    /// wins, ties to the lowest id), one at a time and in one save; the store keeps
    /// exactly the winner and reports the replaced versions.
    Versions,
    /// Removals by the author only, NIP-09 deletions through acceptance, an id put and
    /// removed in one call.
    Deletions,
    /// NIP-40: expired events are neither queried, listed, nor returned as roots.
    Expiration,
    /// Checkpoints and remembered ids, written alone and by a save with its events,
    /// round-trip, replace, and expire.
    State,
    /// Saving the same events again changes nothing and reports them as existing.
    Resave,
    /// A reopened store gives the same start-up state: tracked events (announcements,
    /// state, roots, deletions), root events, checkpoints, remembered ids, every event.
    Reopen,
}

impl Case {
    /// Every case, in the order [`run_all`] runs them.
    pub const ALL: [Case; 8] = [
        Case::Filters,
        Case::LayerItems,
        Case::Versions,
        Case::Deletions,
        Case::Expiration,
        Case::State,
        Case::Resave,
        Case::Reopen,
    ];

    /// Its name, which is also the name of the store it opens.
    pub fn name(self) -> &'static str {
        match self {
            Case::Filters => "filters",
            Case::LayerItems => "layer-items",
            Case::Versions => "versions",
            Case::Deletions => "deletions",
            Case::Expiration => "expiration",
            Case::State => "state",
            Case::Resave => "resave",
            Case::Reopen => "reopen",
        }
    }
}

/// Runs one case against `backend`: `Err` says what did not hold.
pub async fn run<B: Backend>(backend: &B, case: Case) -> Result<(), String> {
    let result = match case {
        Case::Filters => queries::filters(backend).await,
        Case::LayerItems => queries::layer_items(backend).await,
        Case::Versions => writes::versions(backend).await,
        Case::Deletions => writes::deletions(backend).await,
        Case::Expiration => writes::expiration(backend).await,
        Case::State => state::state(backend).await,
        Case::Resave => writes::resave(backend).await,
        Case::Reopen => state::reopen(backend).await,
    };
    result.map_err(|e| format!("{}: {e}", case.name()))
}

/// Runs every case against `backend`, each on its own store; `Err` lists every case that
/// failed and why.
pub async fn run_all<B: Backend>(backend: &B) -> Result<(), String> {
    let mut failures = Vec::new();
    for case in Case::ALL {
        if let Err(e) = run(backend, case).await {
            failures.push(e);
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} of {} cases failed:\n{}",
            failures.len(),
            Case::ALL.len(),
            failures.join("\n")
        ))
    }
}

/// `Err` with `what` unless `got == want`.
fn same<T: PartialEq + Debug>(got: T, want: T, what: &str) -> Result<(), String> {
    if got == want {
        return Ok(());
    }
    let cut = |text: String| match text.char_indices().nth(600) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text,
    };
    Err(format!(
        "{what}:\n  got  {}\n  want {}",
        cut(format!("{got:?}")),
        cut(format!("{want:?}"))
    ))
}

/// `Err` with `what` unless `holds`.
fn ensure(holds: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if holds {
        Ok(())
    } else {
        Err(what())
    }
}

/// The roots a restart reads for `coords` that name one of them, as
/// [`Store::root_refs`] gives them; `Err` unless they are what
/// [`Store::root_events`] gives, as references (a store keeping its roots apart keeps
/// them in step with its events).
async fn root_refs_agree(
    store: &impl Store,
    coords: &[RepoRef],
) -> Result<BTreeSet<RootRef>, String> {
    let wanted: HashSet<&RepoRef> = coords.iter().collect();
    let naming = |r: &RootRef| r.repos.iter().any(|c| wanted.contains(c));
    let from_events: BTreeSet<RootRef> = store
        .root_events(coords.to_vec())
        .await?
        .iter()
        .filter_map(RootRef::of)
        .filter(|r| naming(r))
        .collect();
    let refs: BTreeSet<RootRef> = store
        .root_refs(coords.to_vec())
        .await?
        .into_iter()
        .filter(|r| naming(r))
        .map(|mut r| {
            r.repos.sort();
            r
        })
        .collect();
    same(
        refs.clone(),
        from_events,
        "root references against root events",
    )?;
    Ok(refs)
}
