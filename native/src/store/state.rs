//! The sync state environment beside the events: checkpoints, remembered ids and the
//! event notes (see the module documentation of [`super`]: "Layout on disk").

use std::path::PathBuf;

use grasp_sync_driver::SavedState;
use grasp_sync_store::records::{decode_seen, CheckpointDecoder};
use heed::types::Bytes;
use heed::{Database, Env, EnvOpenOptions};
use nostr::prelude::Timestamp;

use super::{Inner, StoreError, FORMAT_KEY, STATE_FORMAT, STATE_MAP_SIZE};

/// The state environment and its databases.
pub(super) struct StateDbs {
    pub(super) env: Env,
    pub(super) meta: Database<Bytes, Bytes>,
    pub(super) checkpoints: Database<Bytes, Bytes>,
    pub(super) seen: Database<Bytes, Bytes>,
    pub(super) roots: Database<Bytes, Bytes>,
    pub(super) expiring: Database<Bytes, Bytes>,
}

pub(super) fn open_state(dir: PathBuf) -> Result<StateDbs, StoreError> {
    // SAFETY: heed's `open` is unsafe because LMDB forbids opening one environment twice
    // in a process without going through heed's registry (which heed keeps), and because
    // the files must not be changed by anything but LMDB; `dir/state` is ours alone.
    let env = unsafe {
        EnvOpenOptions::new()
            .map_size(STATE_MAP_SIZE)
            .max_dbs(8)
            .open(&dir)
    }
    .map_err(StoreError::state)?;
    let mut txn = env.write_txn().map_err(StoreError::state)?;
    let meta: Database<Bytes, Bytes> = env
        .create_database(&mut txn, Some("meta"))
        .map_err(StoreError::state)?;
    let checkpoints = env
        .create_database(&mut txn, Some("checkpoints"))
        .map_err(StoreError::state)?;
    let seen = env
        .create_database(&mut txn, Some("seen"))
        .map_err(StoreError::state)?;
    let roots = env
        .create_database(&mut txn, Some("roots"))
        .map_err(StoreError::state)?;
    let expiring = env
        .create_database(&mut txn, Some("expiring"))
        .map_err(StoreError::state)?;
    match meta.get(&txn, FORMAT_KEY).map_err(StoreError::state)? {
        None => {
            let format = STATE_FORMAT.to_string();
            meta.put(&mut txn, FORMAT_KEY, format.as_bytes())
                .map_err(StoreError::state)?;
        }
        Some(bytes) => {
            let format = std::str::from_utf8(bytes)
                .ok()
                .and_then(|s| s.parse::<u32>().ok());
            if format != Some(STATE_FORMAT) {
                return Err(StoreError::Format(format!(
                    "{} holds state format {:?}; this build reads format {STATE_FORMAT}",
                    dir.display(),
                    String::from_utf8_lossy(bytes)
                )));
            }
        }
    }
    txn.commit().map_err(StoreError::state)?;
    Ok(StateDbs {
        env,
        meta,
        checkpoints,
        seen,
        roots,
        expiring,
    })
}

pub(super) fn load_state(inner: &Inner, now: Timestamp) -> Result<SavedState, StoreError> {
    let mut txn = inner.state.env.write_txn().map_err(StoreError::state)?;
    let mut state = SavedState::default();
    let mut decoder = CheckpointDecoder::default();
    for row in inner
        .state
        .checkpoints
        .iter(&txn)
        .map_err(StoreError::state)?
    {
        let (_, value) = row.map_err(StoreError::state)?;
        match decoder.decode(value) {
            Ok(c) => state.checkpoints.push(c),
            Err(e) => tracing::warn!("skipping a stored checkpoint: {e}"),
        }
    }
    let mut expired: Vec<Vec<u8>> = Vec::new();
    for row in inner.state.seen.iter(&txn).map_err(StoreError::state)? {
        let (key, value) = row.map_err(StoreError::state)?;
        match decode_seen(key, value) {
            Ok(e) if e.expires_at < now => expired.push(key.to_vec()),
            Ok(e) => state.remembered.push(e),
            Err(e) => tracing::warn!("skipping a stored seen entry: {e}"),
        }
    }
    for key in &expired {
        inner
            .state
            .seen
            .delete(&mut txn, key)
            .map_err(StoreError::state)?;
    }
    txn.commit().map_err(StoreError::state)?;
    Ok(state)
}
