//! Telling a full LMDB map from other failed writes (see the module documentation of
//! [`super`]: "A full map").

use std::sync::Arc;

use heed::types::Bytes;
use heed::{Database, Env, MdbError};
use nostr::prelude::Event;

use super::{blocking, LmdbStore, StoreError, EVENTS_DIR};

/// What nostr-lmdb 0.45.3 answers for every operation of an aborted write transaction.
const BATCH_FAILED_TEXT: &str = "Batched transaction failed";
/// The scratch database of the map-full probe (created and dropped in an aborted
/// transaction, so never on disk).
pub(super) const PROBE_DB: &str = "grasp-sync-map-probe";
/// The most pages the map-full probe allocates (LMDB caps a transaction's dirty pages).
const PROBE_MAX_PAGES: usize = 16_384;
/// Pages the probe adds for the B-tree paths a write copies (nostr-lmdb writes to nine
/// databases a few levels deep).
const PROBE_BASE_PAGES: usize = 48;

impl LmdbStore {
    /// Turns nostr-lmdb's "batched transaction failed" into [`StoreError::MapFull`] when
    /// the map cannot hold what the failed call could have needed (see the module
    /// documentation).
    pub(super) async fn diagnose(
        &self,
        error: StoreError,
        events: &[Event],
        removals: usize,
    ) -> StoreError {
        let StoreError::Events(text) = &error else {
            return error;
        };
        if !text.contains(BATCH_FAILED_TEXT) {
            return error;
        }
        let pages = estimate_pages(events, removals);
        let inner = Arc::clone(&self.inner);
        match blocking(move || map_cannot_hold(&inner.events_env, pages)).await {
            Ok(Ok(true)) => StoreError::MapFull {
                environment: EVENTS_DIR,
                map_size: self.inner.events_map_size,
            },
            Ok(Ok(false)) => StoreError::Events(format!(
                "{text} (nostr-lmdb aborted the write and logged the cause; the map has room)"
            )),
            Ok(Err(probe)) | Err(probe) => {
                tracing::warn!("map-full probe failed: {probe}");
                error
            }
        }
    }
}

/// Keeps a map-full error over any other (a failed batch reports the others as plain
/// "batched transaction failed"), else the first.
pub(super) fn pick_error(current: Option<StoreError>, new: StoreError) -> StoreError {
    match current {
        Some(e @ StoreError::MapFull { .. }) => e,
        Some(_) if matches!(new, StoreError::MapFull { .. }) => new,
        Some(e) => e,
        None => new,
    }
}

/// Pages a save of `events` and `removals` removals could need, generously: per event
/// its overflow pages, a leaf page for its record and each index entry (four, plus three
/// per tag), and the paths every write copies.
fn estimate_pages(events: &[Event], removals: usize) -> usize {
    const PAGE: usize = 4096;
    let per_event: usize = events
        .iter()
        .map(|e| {
            let tag_bytes: usize = e
                .tags
                .iter()
                .map(|t| t.as_slice().iter().map(|v| v.len() + 4).sum::<usize>())
                .sum();
            (e.content.len() + tag_bytes + 200).div_ceil(PAGE) + 5 + 3 * e.tags.len()
        })
        .sum();
    (PROBE_BASE_PAGES + per_event + 8 * removals).min(PROBE_MAX_PAGES)
}

/// Whether LMDB refuses to allocate `pages` more pages in `env` (`MDB_MAP_FULL`): fills
/// a scratch database with one-page values in a write transaction that it aborts.
pub(super) fn map_cannot_hold(env: &Env, pages: usize) -> Result<bool, StoreError> {
    let mut txn = env.write_txn().map_err(StoreError::state)?;
    let probe: Database<Bytes, Bytes> = match env.create_database(&mut txn, Some(PROBE_DB)) {
        Ok(db) => db,
        Err(heed::Error::Mdb(MdbError::MapFull)) => return Ok(true),
        Err(e) => return Err(StoreError::state(e)),
    };
    let page_size = probe.stat(&txn).map_err(StoreError::state)?.page_size as usize;
    // A value this size fills exactly one overflow page (16-byte page header).
    let value = vec![0u8; page_size.saturating_sub(64).max(1)];
    for i in 0..pages {
        match probe.put(&mut txn, &(i as u64).to_be_bytes(), &value) {
            Ok(()) => {}
            Err(heed::Error::Mdb(MdbError::MapFull)) => return Ok(true),
            Err(e) => return Err(StoreError::state(e)),
        }
    }
    txn.abort();
    Ok(false)
}
