//! One writer per database across tabs: a Web Lock held while a tab syncs into the
//! database, and a BroadcastChannel on which the writer tells the others what changed.

use std::cell::RefCell;
use std::rc::Rc;

use futures::channel::oneshot;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

/// A held writer lock; released by [`release`](Self::release) or when dropped.
pub struct WriterLock {
    release: Option<js_sys::Function>,
}

impl WriterLock {
    /// Releases the lock (another tab waiting for it takes over).
    pub fn release(&mut self) {
        if let Some(f) = self.release.take() {
            let _ = f.call0(&JsValue::NULL);
        }
    }
}

impl Drop for WriterLock {
    fn drop(&mut self) {
        self.release();
    }
}

/// The lock name for database `db`.
fn lock_name(db: &str) -> String {
    format!("grasp-sync:{db}")
}

/// `navigator.locks`, where the browser has it.
fn locks() -> Option<JsValue> {
    let navigator = js_sys::Reflect::get(&js_sys::global(), &"navigator".into()).ok()?;
    let locks = js_sys::Reflect::get(&navigator, &"locks".into()).ok()?;
    (!locks.is_undefined() && !locks.is_null()).then_some(locks)
}

/// Requests the writer lock of `db`. With `if_available`, answers at once (`None`: another
/// tab holds it); otherwise `on_granted` is called whenever it is granted, until
/// `abort` is signalled. Without Web Locks (old browsers), every tab is a writer.
fn request(
    db: &str,
    if_available: bool,
    abort: Option<&web_sys::AbortSignal>,
    on_granted: impl FnOnce(Option<WriterLock>) + 'static,
) -> Result<(), JsValue> {
    let Some(locks) = locks() else {
        on_granted(Some(WriterLock { release: None }));
        return Ok(());
    };
    let options = js_sys::Object::new();
    js_sys::Reflect::set(&options, &"ifAvailable".into(), &if_available.into())?;
    if let Some(signal) = abort {
        js_sys::Reflect::set(&options, &"signal".into(), signal)?;
    }
    let callback = Closure::once_into_js(move |lock: JsValue| -> JsValue {
        if lock.is_null() {
            on_granted(None);
            return JsValue::NULL;
        }
        let release = Rc::new(RefCell::new(None));
        let keep = release.clone();
        let held = js_sys::Promise::new(&mut |resolve, _| {
            *keep.borrow_mut() = Some(resolve);
        });
        on_granted(Some(WriterLock {
            release: release.borrow_mut().take(),
        }));
        held.into()
    });
    let request: js_sys::Function = js_sys::Reflect::get(&locks, &"request".into())?.dyn_into()?;
    let promise: js_sys::Promise = request
        .call3(&locks, &lock_name(db).into(), &options, &callback)?
        .dyn_into()?;
    // An aborted wait rejects: expected, not an unhandled rejection.
    let ignore = Closure::<dyn FnMut(JsValue)>::new(|_: JsValue| {});
    let _ = promise.catch(&ignore);
    ignore.forget();
    Ok(())
}

/// Takes the writer lock of `db` if no other tab holds it.
pub async fn try_lock(db: &str) -> Result<Option<WriterLock>, JsValue> {
    let (tx, rx) = oneshot::channel();
    request(db, true, None, move |lock| {
        let _ = tx.send(lock);
    })?;
    Ok(rx.await.ok().flatten())
}

/// Calls `on_granted` once the writer lock of `db` is free and taken (the writer tab
/// closed), unless aborted first.
pub fn wait_for_lock(
    db: &str,
    on_granted: impl FnOnce(WriterLock) + 'static,
) -> Result<web_sys::AbortController, JsValue> {
    let abort = web_sys::AbortController::new()?;
    request(db, false, Some(&abort.signal()), move |lock| {
        if let Some(lock) = lock {
            on_granted(lock);
        }
    })?;
    Ok(abort)
}

/// Asks the browser to keep this origin's storage (no eviction under pressure);
/// whether it agreed (false where it cannot be asked).
pub async fn request_persistence() -> bool {
    let Ok(navigator) = js_sys::Reflect::get(&js_sys::global(), &"navigator".into()) else {
        return false;
    };
    let Ok(storage) = js_sys::Reflect::get(&navigator, &"storage".into()) else {
        return false;
    };
    let Ok(persist) = js_sys::Reflect::get(&storage, &"persist".into())
        .and_then(|f| f.dyn_into::<js_sys::Function>())
    else {
        return false;
    };
    let Ok(promise) = persist
        .call0(&storage)
        .and_then(|p| p.dyn_into::<js_sys::Promise>())
    else {
        return false;
    };
    JsFuture::from(promise)
        .await
        .ok()
        .and_then(|v| v.as_bool())
        .unwrap_or(false)
}

/// The channel on which tabs of database `db` hear of changes.
pub fn channel(db: &str) -> Option<web_sys::BroadcastChannel> {
    web_sys::BroadcastChannel::new(&lock_name(db)).ok()
}
