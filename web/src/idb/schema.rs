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
//!
//! Version 3 adds the multi-entry index `root` over `rc`, the repositories a root event
//! (pull request, issue, patch starting a series) names: a restart reads the tracked
//! repositories' roots, not every event that tags them. The upgrade notes the rows
//! already stored.
//!
//! Version 4 adds the object store `roots`: one entry per root and repository it names
//! (key `[coord, id]`, value what the index keeps of the root: id, author, repositories,
//! and its expiration), written and deleted with the event's row. A restart reads the
//! tracked repositories' roots from it without reading their events: small entries read
//! two to three times faster than the `root` index's whole rows (1 000 roots: 9–14 ms
//! against 25–35 ms in headless Chromium), and need no parsing. The upgrade enters the
//! roots already stored.

use std::cell::RefCell;
use std::rc::Rc;

use futures::future::{select, Either};
use indexed_db_futures::database::Database;
use indexed_db_futures::internals::SystemRepr;
use indexed_db_futures::prelude::*;
use indexed_db_futures::KeyPath;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

use super::error::StoreError;

/// The schema version this module writes.
pub const VERSION: u32 = 4;
/// Object stores.
pub const EVENTS: &str = "events";
/// See [`EVENTS`].
pub const CHECKPOINTS: &str = "checkpoints";
/// See [`EVENTS`].
pub const SEEN: &str = "seen";
/// See [`EVENTS`].
pub const META: &str = "meta";
/// See [`EVENTS`] (version 4).
pub const ROOTS: &str = "roots";
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
/// See [`BY_TIME`] (version 3).
pub const BY_ROOT: &str = "root";

/// An open database. It closes when another tab asks to upgrade it (later calls fail
/// with "closed"); that watch ends when this is dropped.
pub struct Connection {
    /// The connection.
    pub db: Database,
    _watch: futures::channel::oneshot::Sender<()>,
}

/// Opens (creating or upgrading) database `name`. A connection another tab keeps open
/// at an older version blocks the upgrade: that is [`StoreError::UpgradeBlocked`].
pub async fn open(name: &str) -> Result<Connection, StoreError> {
    // The upgrade step to version 2 needs the open request's version-change transaction,
    // which indexed_db_futures 0.6 does not hand to the upgrade callback
    // (Alorel/rust-indexed-db#66): the callback reads it from the web-sys request.
    let request: Rc<RefCell<Option<web_sys::IdbOpenDbRequest>>> = Rc::default();
    let (blocked_tx, blocked_rx) = futures::channel::oneshot::channel::<()>();
    let opening = Database::open(name)
        .with_version(VERSION)
        .with_on_blocked(move |_| {
            let _ = blocked_tx.send(());
            Ok(())
        })
        .with_on_upgrade_needed({
            let request = request.clone();
            move |event, db| {
                let tx = request.borrow().as_ref().and_then(|r| r.transaction());
                let result = upgrade(&db, tx, event.old_version() as u32);
                if let Err(e) = &result {
                    tracing::error!(error = %e, "schema upgrade failed");
                }
                result
            }
        })
        .build()?;
    *request.borrow_mut() = Some(opening.as_sys().clone());
    let db = match select(opening, blocked_rx).await {
        Either::Left((result, _)) => result?,
        Either::Right((_, opening)) => {
            // The request stays pending until the other tab closes; it then upgrades
            // with this schema (dropping it would leave the upgrade to no handler: a
            // database at this version without its indexes), and the connection closes.
            wasm_bindgen_futures::spawn_local(async move {
                if let Ok(db) = opening.await {
                    db.close();
                }
            });
            return Err(StoreError::UpgradeBlocked(format!(
                "database {name:?} is open in another tab at an older version: close that tab and reload"
            )));
        }
    };
    // Another tab upgrading: let it, and fail from here on with "closed".
    let mut changes = db.version_changes()?;
    let closing = db.clone();
    let (watch, dropped) = futures::channel::oneshot::channel::<()>();
    wasm_bindgen_futures::spawn_local(async move {
        let change = std::pin::pin!(changes.recv());
        if let Either::Left((Some(_), _)) = select(change, dropped).await {
            closing.close();
        }
    });
    Ok(Connection { db, _watch: watch })
}

/// Deletes database `name` (tests).
pub async fn delete(name: &str) -> Result<(), StoreError> {
    Ok(Database::delete_by_name(name)?.await?)
}

/// Brings a database at `old` (0: new) to [`VERSION`]; `tx` is the version-change
/// transaction. Each step builds on the one before; a later version adds a step here
/// and never edits an earlier one.
fn upgrade(
    db: &Database,
    tx: Option<web_sys::IdbTransaction>,
    old: u32,
) -> indexed_db_futures::Result<()> {
    if old < 1 {
        let events = db
            .create_object_store(EVENTS)
            .with_key_path(KeyPath::One("id"))
            .build()?;
        events.create_index(BY_TIME, KeyPath::One("ca")).build()?;
        events
            .create_index(BY_KIND, KeyPath::from(["kind", "ca"]))
            .build()?;
        events
            .create_index(BY_AUTHOR, KeyPath::from(["pk", "ca"]))
            .build()?;
        events
            .create_index(BY_TAG, KeyPath::One("tk"))
            .with_multi_entry(true)
            .build()?;
        db.create_object_store(CHECKPOINTS).build()?;
        db.create_object_store(SEEN).build()?;
        db.create_object_store(META).build()?;
    }
    if old < 2 {
        // web-sys: an existing store is reached through the version-change transaction
        // (see `open`).
        let tx = tx
            .as_ref()
            .ok_or_else(|| js_sys::Error::new("no version-change transaction"))?;
        tx.object_store(EVENTS)?
            .create_index_with_str(BY_EXPIRATION, "exp")?;
    }
    if old < 3 {
        let tx = tx
            .as_ref()
            .ok_or_else(|| js_sys::Error::new("no version-change transaction"))?;
        let events = tx.object_store(EVENTS)?;
        let multi = web_sys::IdbIndexParameters::new();
        multi.set_multi_entry(true);
        events.create_index_with_str_and_optional_parameters(BY_ROOT, "rc", &multi)?;
        if old >= 1 {
            note_stored_roots(&events)?;
        }
    }
    if old < 4 {
        let roots = db.create_object_store(ROOTS).build()?;
        if old >= 1 {
            let tx = tx
                .as_ref()
                .ok_or_else(|| js_sys::Error::new("no version-change transaction"))?;
            let events = tx.object_store(EVENTS)?;
            // Before version 3 no row has `rc` yet (the walk above adds it): every row
            // is read; from version 3 on, the `root` index lists the roots.
            let request = if old < 3 {
                events.open_cursor()?
            } else {
                events.index(BY_ROOT)?.open_cursor()?
            };
            enter_stored_roots(request, roots.as_sys().clone());
        }
    }
    Ok(())
}

/// Walks the rows `request`'s cursor goes over in the version-change transaction and
/// writes the `roots` entries of the roots among them (a root under several repositories
/// comes once per repository from the `root` index: its entries are written again, the
/// same). A row that cannot be read is left out, as a restart would leave it.
fn enter_stored_roots(request: web_sys::IdbRequest, roots: web_sys::IdbObjectStore) {
    let walking = request.clone();
    let on_row = Closure::<dyn FnMut()>::new(move || {
        let Ok(result) = walking.result() else {
            return;
        };
        let Ok(cursor) = result.dyn_into::<web_sys::IdbCursorWithValue>() else {
            return; // the end
        };
        if let Ok(row) = cursor.value() {
            let coords = super::rows::root_coords_of_row(&row);
            match (coords, super::rows::id_of(&row)) {
                (Ok(coords), Some(id)) => {
                    let entry = super::rows::root_entry(&row, &coords);
                    for coord in coords {
                        let key = super::rows::root_entry_key(&coord, &id);
                        if let Err(e) = roots.put_with_key(&entry, &key) {
                            tracing::warn!(error = ?e, "a root could not be entered");
                        }
                    }
                }
                (Err(e), _) => tracing::warn!(error = %e, "an unreadable row left out"),
                (_, None) => tracing::warn!("a row without its id left out"),
            }
        }
        let _ = cursor.continue_();
    });
    request.set_onsuccess(Some(on_row.as_ref().unchecked_ref()));
    on_row.forget();
}

/// Walks every stored row in the version-change transaction and writes the `rc` field
/// of the roots among them (each row is a callback of its own, so the page keeps its
/// turns; the database opens once the walk is done). A row that cannot be read is left
/// as it is.
fn note_stored_roots(events: &web_sys::IdbObjectStore) -> Result<(), JsValue> {
    let request = events.open_cursor()?;
    let walking = request.clone();
    // Called once per row and once at the end; it lives as long as the page (one small
    // closure per upgrade).
    let on_row = Closure::<dyn FnMut()>::new(move || {
        let Ok(result) = walking.result() else {
            return;
        };
        let Ok(cursor) = result.dyn_into::<web_sys::IdbCursorWithValue>() else {
            return; // the end of the store
        };
        if let Ok(row) = cursor.value() {
            match super::rows::note_root(&row) {
                Ok(true) => {
                    if let Err(e) = cursor.update(&row) {
                        tracing::warn!(error = ?e, "a root row could not be noted");
                    }
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "an unreadable row left as it is"),
            }
        }
        let _ = cursor.continue_();
    });
    request.set_onsuccess(Some(on_row.as_ref().unchecked_ref()));
    on_row.forget();
    Ok(())
}
