//! Walking an IndexedDB cursor: every step runs in the request's success handler (a
//! transaction does not stay active across an `await`), and the walk ends with one result.

use std::cell::RefCell;
use std::rc::Rc;

use wasm_bindgen::prelude::*;
use web_sys::{IdbCursor, IdbRequest};

use super::req::{js, StoreError};

/// What one step of a walk decided.
pub enum Step<T> {
    /// Move the cursor on.
    Next,
    /// Stop with this result.
    Done(Result<T, StoreError>),
}

/// Runs `step` on each position of the cursor `request` opened (`None` once it is past
/// the end) until a step returns [`Step::Done`]; a request error ends the walk with it.
pub async fn walk<T: 'static>(
    request: IdbRequest,
    mut step: impl FnMut(Option<&IdbCursor>) -> Step<T> + 'static,
) -> Result<T, StoreError> {
    let (finish, finished) = futures::channel::oneshot::channel::<Result<T, StoreError>>();
    let finish: Finish<T> = Rc::new(RefCell::new(Some(finish)));
    let (req, done) = (request.clone(), finish.clone());
    let on_success = Closure::<dyn FnMut()>::new(move || {
        let cursor = req.result().unwrap_or(JsValue::NULL);
        let cursor = (!cursor.is_null() && !cursor.is_undefined())
            .then(|| cursor.unchecked_into::<IdbCursor>());
        let result = match (step(cursor.as_ref()), cursor) {
            (Step::Done(result), _) => result,
            (Step::Next, Some(cursor)) => match cursor.continue_() {
                Ok(()) => return,
                Err(e) => Err(js(e)),
            },
            (Step::Next, None) => Err(StoreError::Other(
                "a cursor walk ended without a result".into(),
            )),
        };
        send(&done, result);
    });
    let req = request.clone();
    let on_error = Closure::<dyn FnMut()>::new(move || {
        let error = req
            .error()
            .ok()
            .flatten()
            .map_or(JsValue::NULL, JsValue::from);
        send(&finish, Err(StoreError::from_js(&error)));
    });
    request.set_onsuccess(Some(on_success.as_ref().unchecked_ref()));
    request.set_onerror(Some(on_error.as_ref().unchecked_ref()));
    let result = finished
        .await
        .unwrap_or_else(|_| Err(StoreError::Other("cursor dropped".into())));
    request.set_onsuccess(None);
    request.set_onerror(None);
    drop((on_success, on_error));
    result
}

/// Sends the walk's result, once.
fn send<T>(finish: &Finish<T>, result: Result<T, StoreError>) {
    if let Some(tx) = finish.borrow_mut().take() {
        let _ = tx.send(result);
    }
}

type Finish<T> = Rc<RefCell<Option<futures::channel::oneshot::Sender<Result<T, StoreError>>>>>;
