//! The database layout, its version and the upgrade path.
//!
//! Version 1:
//! - `events` (key `id`): one row per event (see `rows.rs`), with indexes `time`
//!   (`ca`), `kind` (`[kind, ca]`), `author` (`[pk, ca]`) and `tag` (multi-entry over
//!   `tk`, one `["<letter>:<value>", ca]` per single-letter tag): every NIP-01 filter
//!   and every layer filter is answered from one index range per value, newest first;
//! - `checkpoints` (key `relay\nscope`), `seen` (key: id hex): sync state;
//! - `meta`: small records (tracked repositories).
//!
//! Version 2 adds the index `exp` on `events` (only rows with a NIP-40 expiration are
//! in it), so negentropy items are listed from index keys alone and the expired ids
//! left out without reading a row.

use wasm_bindgen::prelude::*;
use web_sys::{IdbDatabase, IdbIndexParameters, IdbObjectStoreParameters, IdbOpenDbRequest};

use super::req::{js, StoreError};

/// The schema version this module writes.
pub const VERSION: u32 = 2;
/// Object stores.
pub const EVENTS: &str = "events";
/// See [`EVENTS`].
pub const CHECKPOINTS: &str = "checkpoints";
/// See [`EVENTS`].
pub const SEEN: &str = "seen";
/// See [`EVENTS`].
pub const META: &str = "meta";
/// Indexes of [`EVENTS`].
pub const BY_TIME: &str = "time";
/// See [`BY_TIME`].
pub const BY_KIND: &str = "kind";
/// See [`BY_TIME`].
pub const BY_AUTHOR: &str = "author";
/// See [`BY_TIME`].
pub const BY_TAG: &str = "tag";
/// See [`BY_TIME`] (version 2).
pub const BY_EXPIRATION: &str = "exp";

/// Opens (creating or upgrading) database `name`. A connection another tab keeps open
/// at an older version blocks the upgrade: that is [`StoreError::UpgradeBlocked`].
pub async fn open(name: &str) -> Result<IdbDatabase, StoreError> {
    let factory = factory()?;
    let request = factory.open_with_u32(name, VERSION).map_err(js)?;
    let on_upgrade = Closure::<dyn FnMut(web_sys::IdbVersionChangeEvent)>::new(
        move |event: web_sys::IdbVersionChangeEvent| {
            let Some(target) = event.target() else { return };
            let Ok(request) = target.dyn_into::<IdbOpenDbRequest>() else {
                return;
            };
            let Ok(db) = request.result().and_then(|r| r.dyn_into::<IdbDatabase>()) else {
                return;
            };
            let Some(tx) = request.transaction() else {
                return;
            };
            if let Err(e) = upgrade(&db, &tx, event.old_version() as u32) {
                tracing::error!(error = %crate::net::js_text(&e), "schema upgrade failed");
                let _ = tx.abort();
            }
        },
    );
    request.set_onupgradeneeded(Some(on_upgrade.as_ref().unchecked_ref()));
    let (blocked_tx, blocked_rx) = futures::channel::oneshot::channel::<()>();
    let mut blocked_tx = Some(blocked_tx);
    let on_blocked = Closure::<dyn FnMut()>::new(move || {
        if let Some(tx) = blocked_tx.take() {
            let _ = tx.send(());
        }
    });
    request.set_onblocked(Some(on_blocked.as_ref().unchecked_ref()));
    let opening = super::req::done(&request);
    futures::pin_mut!(opening);
    let result = match futures::future::select(opening, blocked_rx).await {
        futures::future::Either::Left((result, _)) => result,
        futures::future::Either::Right(_) => Err(StoreError::UpgradeBlocked(format!(
            "database {name:?} is open in another tab at an older version: close that tab and reload"
        ))),
    };
    request.set_onupgradeneeded(None);
    request.set_onblocked(None);
    drop((on_upgrade, on_blocked));
    let db: IdbDatabase = result?.dyn_into().map_err(js)?;
    // Another tab upgrading: let it, and fail from here on with "closed".
    let closing = db.clone();
    let on_version_change = Closure::<dyn FnMut()>::new(move || closing.close());
    db.set_onversionchange(Some(on_version_change.as_ref().unchecked_ref()));
    on_version_change.forget();
    Ok(db)
}

/// Deletes database `name` (tests).
pub async fn delete(name: &str) -> Result<(), StoreError> {
    let request = factory()?.delete_database(name).map_err(js)?;
    super::req::done(&request).await.map(|_| ())
}

fn factory() -> Result<web_sys::IdbFactory, StoreError> {
    let global = js_sys::global();
    js_sys::Reflect::get(&global, &"indexedDB".into())
        .ok()
        .and_then(|f| f.dyn_into::<web_sys::IdbFactory>().ok())
        .ok_or_else(|| StoreError::Other("IndexedDB is not available here".into()))
}

/// Brings a database at `old` (0: new) to [`VERSION`]. Each step builds on the one
/// before; a later version adds a step here and never edits an earlier one.
fn upgrade(db: &IdbDatabase, tx: &web_sys::IdbTransaction, old: u32) -> Result<(), JsValue> {
    if old < 1 {
        let params = IdbObjectStoreParameters::new();
        params.set_key_path(&"id".into());
        let events = db.create_object_store_with_optional_parameters(EVENTS, &params)?;
        events.create_index_with_str(BY_TIME, "ca")?;
        let pair = |a: &str, b: &str| js_sys::Array::of2(&a.into(), &b.into());
        events.create_index_with_str_sequence(BY_KIND, &pair("kind", "ca"))?;
        events.create_index_with_str_sequence(BY_AUTHOR, &pair("pk", "ca"))?;
        let multi = IdbIndexParameters::new();
        multi.set_multi_entry(true);
        events.create_index_with_str_and_optional_parameters(BY_TAG, "tk", &multi)?;
        db.create_object_store(CHECKPOINTS)?;
        db.create_object_store(SEEN)?;
        db.create_object_store(META)?;
    }
    if old < 2 {
        let events = tx.object_store(EVENTS)?;
        events.create_index_with_str(BY_EXPIRATION, "exp")?;
    }
    Ok(())
}
