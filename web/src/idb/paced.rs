//! One transaction's requests placed without holding the page's thread. A transaction
//! cannot wait for a timer (it commits once no request is pending), and a Rust
//! continuation after an awaited request runs too late to place more on it; so past a
//! slice, the rest is placed from the success callback of the last request. That answer
//! is a task of its own (the page gets a turn before it), and the transaction is active
//! inside it. Driven with web-sys, like the key cursors.

use std::cell::RefCell;
use std::rc::Rc;

use futures::channel::oneshot;
use wasm_bindgen::prelude::*;
use web_sys::{IdbDatabase, IdbObjectStore, IdbRequest, IdbTransaction, IdbTransactionMode};

use super::error::StoreError;
use crate::clock::Stretch;

/// One request on the transaction's first object store, or (`Put`, `DeleteIn`) on
/// another.
pub enum Request {
    /// Add this row unless its key is held: a held key is not an error (the transaction
    /// goes on), and its answer is `undefined`.
    Add(JsValue),
    /// Delete the row with this key.
    Delete(JsValue),
    /// Read the row with this key.
    Get(JsValue),
    /// Put `value` under `key` in the object store `store` (one of the transaction's).
    Put {
        store: &'static str,
        key: JsValue,
        value: JsValue,
    },
    /// Delete what `key` names in the object store `store` (one of the transaction's).
    DeleteIn { store: &'static str, key: JsValue },
}

/// Places `requests` on one transaction over `stores` (the first is the one `Add`,
/// `Delete` and `Get` address), a slice at a time, and resolves once it completed with
/// their answers (`undefined` where nothing is held, or where an add found its key
/// held) — or with its error (a quota refusal, a failed request) if it aborted.
pub async fn run(
    db: &IdbDatabase,
    stores: &[&str],
    mode: IdbTransactionMode,
    requests: Vec<Request>,
) -> Result<Vec<JsValue>, StoreError> {
    let first = stores
        .first()
        .ok_or_else(|| StoreError::Other("a transaction over no object store".into()))?;
    let names = js_sys::Array::new();
    for store in stores {
        names.push(&JsValue::from_str(store));
    }
    let tx = db
        .transaction_with_str_sequence_and_mode(&names, mode)
        .map_err(|e| StoreError::from_js(&e))?;
    let objects = tx
        .object_store(first)
        .map_err(|e| StoreError::from_js(&e))?;
    let (done, finished) = oneshot::channel();
    let state = Rc::new(RefCell::new(State {
        requests: requests.into_iter(),
        placed: Vec::new(),
        done: Some(done),
        callbacks: Vec::new(),
    }));
    let on_complete = {
        let state = Rc::clone(&state);
        Closure::<dyn FnMut()>::new(move || {
            let mut s = state.borrow_mut();
            let answers = s
                .placed
                .iter()
                .map(|r| r.result().unwrap_or(JsValue::UNDEFINED))
                .collect();
            s.finish(Ok(answers));
        })
    };
    let on_abort = {
        let (state, tx) = (Rc::clone(&state), tx.clone());
        Closure::<dyn FnMut()>::new(move || {
            let error = tx.error().map_or_else(
                || StoreError::Other("the transaction was aborted".into()),
                |cause| StoreError::from_js(&cause.into()),
            );
            state.borrow_mut().finish(Err(error));
        })
    };
    // An add whose key is held fails its request with a ConstraintError, which aborts
    // the transaction unless its default is prevented (the store's one such case: it
    // has no unique index).
    let on_error = Closure::<dyn FnMut(web_sys::Event)>::new(|event: web_sys::Event| {
        let held = event
            .target()
            .and_then(|t| t.dyn_into::<IdbRequest>().ok())
            .and_then(|r| r.error().ok().flatten())
            .is_some_and(|e| e.name() == "ConstraintError");
        if held {
            event.prevent_default();
        }
    });
    tx.set_oncomplete(Some(on_complete.as_ref().unchecked_ref()));
    tx.set_onabort(Some(on_abort.as_ref().unchecked_ref()));
    tx.set_onerror(Some(on_error.as_ref().unchecked_ref()));
    place(&state, &tx, &objects);
    let result = finished
        .await
        .unwrap_or_else(|_| Err(StoreError::Other("transaction dropped".into())));
    tx.set_oncomplete(None);
    tx.set_onabort(None);
    tx.set_onerror(None);
    // The callbacks hold the state: break the cycle (none of them is running now).
    state.borrow_mut().callbacks.clear();
    result
}

struct State {
    requests: std::vec::IntoIter<Request>,
    placed: Vec<IdbRequest>,
    done: Option<oneshot::Sender<Result<Vec<JsValue>, StoreError>>>,
    /// The success callbacks set so far (each runs once; kept until the end).
    callbacks: Vec<Closure<dyn FnMut()>>,
}

impl State {
    fn finish(&mut self, result: Result<Vec<JsValue>, StoreError>) {
        if let Some(done) = self.done.take() {
            let _ = done.send(result);
        }
    }
}

/// Places requests for one slice; if some remain, the last one's answer places the next.
fn place(state: &Rc<RefCell<State>>, tx: &IdbTransaction, objects: &IdbObjectStore) {
    let mut stretch = Stretch::start();
    loop {
        let next = state.borrow_mut().requests.next();
        let Some(request) = next else {
            // Everything placed: the transaction completes once they are answered.
            return;
        };
        let placed = match request {
            Request::Add(row) => objects.add(&row),
            Request::Delete(key) => objects.delete(&key),
            Request::Get(key) => objects.get(&key),
            Request::Put { store, key, value } => tx
                .object_store(store)
                .and_then(|other| other.put_with_key(&value, &key)),
            Request::DeleteIn { store, key } => {
                tx.object_store(store).and_then(|other| other.delete(&key))
            }
        };
        let request = match placed {
            Ok(request) => request,
            Err(e) => {
                // Nothing of the transaction is written.
                let _ = tx.abort();
                return state.borrow_mut().finish(Err(StoreError::from_js(&e)));
            }
        };
        state.borrow_mut().placed.push(request.clone());
        if state.borrow().requests.len() == 0 || !stretch.used() {
            continue;
        }
        let (next, tx, objects) = (Rc::clone(state), tx.clone(), objects.clone());
        let on_success = Closure::<dyn FnMut()>::new(move || place(&next, &tx, &objects));
        request.set_onsuccess(Some(on_success.as_ref().unchecked_ref()));
        state.borrow_mut().callbacks.push(on_success);
        return;
    }
}
