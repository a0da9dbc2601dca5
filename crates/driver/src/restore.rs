//! What the store already holds that the engine must know before it syncs: the
//! announcements of the repositories in scope (and those of their maintainers), their
//! state (30618) versions, their root events and the stored deletions, so tracking
//! resumes where it was, a deleted event that comes again is refused, and acceptance
//! knows every held announcement and state version it may replace (the store replaces
//! nothing itself); and the ids of the events held from where a restart's catch-up
//! windows may start, so what they bring again is not verified and written again.

use futures::future::LocalBoxFuture;
use grasp_sync_core::filters::{discovery_filter, DiscoveryScope, Form};
use grasp_sync_core::nip34::kinds;
use grasp_sync_core::{IndexConfig, RepoIndex, RepoRef, RootRef};
use nostr::prelude::{Event, EventId, Filter, Timestamp};

use crate::ports::{Store, StoreError};

/// The stored announcements in `scope`, the maintainers' announcements and the state
/// events (30618) of those repositories, the root events (patches, PRs, issues) that tag
/// any of them, and every stored deletion, in that order (feed them to the engine as [`Input::LocalEvents`]).
///
/// [`Input::LocalEvents`]: grasp_sync_core::engine::Input::LocalEvents
pub async fn tracked_events<S: Store>(
    store: &S,
    scope: &DiscoveryScope,
    config: &IndexConfig,
) -> Result<Vec<Event>, String> {
    let (mut events, coords) = tracked_announcements(store, scope, config).await?;
    events.extend(tracked_roots(store, coords).await?);
    Ok(events)
}

/// The first part of [`tracked_events`] — the announcements and state events, which name
/// the relays to connect to — and the coordinates of the tracked repositories.
pub async fn tracked_announcements<S: Store>(
    store: &S,
    scope: &DiscoveryScope,
    config: &IndexConfig,
) -> Result<(Vec<Event>, Vec<RepoRef>), String> {
    let mut events = store
        .query(discovery_filter(Form::Historic { since: None }, scope))
        .await?;
    let mut index = RepoIndex::new(config.clone());
    index.apply(&events);
    let coords: Vec<RepoRef> = index
        .repos()
        .flat_map(|r| index.repo_coords(r))
        .cloned()
        .collect();
    if coords.is_empty() {
        return Ok((events, coords));
    }
    // Maintainers' announcements add relays; the state versions are what a newer state
    // replaces.
    let filter = Filter::new()
        .kinds([kinds::REPO_ANNOUNCEMENT, kinds::REPO_STATE])
        .authors(coords.iter().map(|c| c.pubkey))
        .identifiers(coords.iter().map(|c| c.identifier.clone()));
    let known: std::collections::HashSet<_> = events.iter().map(|e| e.id).collect();
    let more = store.query(filter).await?;
    events.extend(more.into_iter().filter(|e| !known.contains(&e.id)));
    Ok((events, coords))
}

/// The rest of [`tracked_events`]: the root events of `coords`, then every stored
/// deletion.
pub async fn tracked_roots<S: Store>(
    store: &S,
    coords: Vec<RepoRef>,
) -> Result<Vec<Event>, String> {
    let (mut events, deletions) = roots_and_deletions(store, coords, S::root_events).await?;
    events.extend(deletions);
    Ok(events)
}

/// What [`tracked_roots`] reads, the roots as the store keeps them apart
/// ([`Store::root_refs`]: feed them to the engine as [`Input::LocalRoots`]), and every
/// stored deletion (as [`Input::LocalEvents`], after the roots).
///
/// [`Input::LocalRoots`]: grasp_sync_core::engine::Input::LocalRoots
/// [`Input::LocalEvents`]: grasp_sync_core::engine::Input::LocalEvents
pub async fn tracked_root_refs<S: Store>(
    store: &S,
    coords: Vec<RepoRef>,
) -> Result<(Vec<RootRef>, Vec<Event>), String> {
    roots_and_deletions(store, coords, S::root_refs).await
}

/// The roots of `coords` as `read` gives them (none asked for no coordinate), and every
/// stored deletion, both read at once.
async fn roots_and_deletions<S: Store, T>(
    store: &S,
    coords: Vec<RepoRef>,
    read: impl FnOnce(&S, Vec<RepoRef>) -> LocalBoxFuture<'static, Result<Vec<T>, StoreError>>,
) -> Result<(Vec<T>, Vec<Event>), String> {
    // A future starts when first polled: both reads run side by side.
    let deletions = store.query(Filter::new().kind(kinds::DELETION));
    let roots = async {
        if coords.is_empty() {
            Ok(Vec::new())
        } else {
            read(store, coords).await
        }
    };
    let (roots, deletions) = futures::join!(roots, deletions);
    Ok((roots?, deletions?))
}

/// The ids of the stored events created at `since` or later (from the store's index keys:
/// no event is read); none without a `since` (see
/// [`SyncEngine::restart_window_start`](grasp_sync_core::engine::SyncEngine::restart_window_start)).
pub async fn held_ids<S: Store>(
    store: &S,
    since: Option<Timestamp>,
) -> Result<Vec<EventId>, String> {
    let Some(since) = since else {
        return Ok(Vec::new());
    };
    let items = store.items(Filter::new().since(since)).await?;
    Ok(items.into_iter().map(|(_, id)| id).collect())
}
