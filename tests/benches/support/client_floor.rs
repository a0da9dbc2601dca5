//! The rest of a client's floor besides verification: parsing the set from JSON and
//! writing it into a fresh store (grasp-sync's, on nostr-lmdb), each measured alone in
//! the same run, so a cold sync's time can be set against what its parser and store
//! cost at the least.

use std::time::{Duration, Instant};

use grasp_sync::store::LmdbStore;
use nostr::prelude::Event;

/// Events per save (`GRASP_BENCH_STORE_BATCH`, default: the whole set in one save, the
/// store's cheapest: LMDB writes each touched B-tree page once per transaction).
fn batch_size(events: usize) -> usize {
    super::env_usize("GRASP_BENCH_STORE_BATCH", events).max(1)
}

/// `(parse, store, events per save)`: one core parsing every event's JSON; grasp-sync's
/// store (nostr-lmdb, one writer, and its own notes) saving them all in batches of
/// [`batch_size`] into a fresh database. Said on standard error after `tag`.
pub async fn client_floor(events: &[Event], tag: &str) -> (Duration, Duration, usize) {
    let batch_len = batch_size(events.len());
    let json: Vec<String> = events.iter().map(|e| e.as_json()).collect();
    let t = Instant::now();
    let parsed = json
        .iter()
        .filter(|j| Event::from_json(j.as_str()).is_ok())
        .count();
    let parse = t.elapsed();

    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = LmdbStore::open(dir.path(), 16 << 30)
        .await
        .expect("the store opens");
    let t = Instant::now();
    for batch in events.chunks(batch_len) {
        db.save(batch.to_vec(), Vec::new())
            .await
            .expect("the store saves");
    }
    let store = t.elapsed();
    eprintln!("{tag}: parse floor {parse:.2?} (one core), store floor {store:.2?}");
    if parsed != events.len() {
        eprintln!("{tag}: WARNING: {parsed} of {} parsed", events.len());
    }
    (parse, store, batch_len)
}
