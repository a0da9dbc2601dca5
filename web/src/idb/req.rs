//! IndexedDB requests as futures, and IndexedDB failures as typed errors.

use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{IdbRequest, IdbTransaction};

/// A store failure, by what a user can do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The browser refused to store more (quota): free space or grant persistence.
    Quota(String),
    /// Another tab holds the database open at an older schema: close it.
    UpgradeBlocked(String),
    /// The database connection was closed (by this module, or for another tab's
    /// upgrade).
    Closed(String),
    /// A stored record did not decode.
    Corrupt(String),
    /// Any other IndexedDB failure (often transient).
    Other(String),
}

impl StoreError {
    /// The stable code of the JavaScript API.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Quota(_) => "quota-exceeded",
            Self::UpgradeBlocked(_) => "upgrade-blocked",
            Self::Closed(_) => "closed",
            Self::Corrupt(_) | Self::Other(_) => "store",
        }
    }

    /// From a `DOMException` (or anything else thrown).
    pub fn from_js(value: &JsValue) -> Self {
        let (name, message) = match value.dyn_ref::<web_sys::DomException>() {
            Some(e) => (e.name(), e.message()),
            None => (String::new(), crate::net::js_text(value)),
        };
        match name.as_str() {
            "QuotaExceededError" => Self::Quota(format!(
                "the browser refused to store more ({message}); free space or allow persistent storage"
            )),
            "InvalidStateError" => Self::Closed(format!("database closed ({message})")),
            "" => Self::Other(message),
            _ => Self::Other(format!("{name}: {message}")),
        }
    }
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let message = match self {
            Self::Quota(m)
            | Self::UpgradeBlocked(m)
            | Self::Closed(m)
            | Self::Corrupt(m)
            | Self::Other(m) => m,
        };
        write!(f, "{}: {message}", self.code())
    }
}

impl std::error::Error for StoreError {}

impl From<StoreError> for crate::error::WebError {
    fn from(e: StoreError) -> Self {
        let code = e.code();
        let message = match e {
            StoreError::Quota(m)
            | StoreError::UpgradeBlocked(m)
            | StoreError::Closed(m)
            | StoreError::Corrupt(m)
            | StoreError::Other(m) => m,
        };
        Self::new(code, message)
    }
}

/// What a request or transaction failed with.
fn failure(error: Option<web_sys::DomException>, fallback: &str) -> JsValue {
    error.map_or_else(|| JsValue::from_str(fallback), JsValue::from)
}

/// The result of `request` once it succeeds.
pub async fn done(request: &IdbRequest) -> Result<JsValue, StoreError> {
    let promise = js_sys::Promise::new(&mut |resolve, reject| {
        let req = request.clone();
        let on_success = Closure::once_into_js(move || {
            let value = req.result().unwrap_or(JsValue::UNDEFINED);
            let _ = resolve.call1(&JsValue::NULL, &value);
        });
        let req = request.clone();
        let on_error = Closure::once_into_js(move || {
            let error = failure(req.error().ok().flatten(), "request failed");
            let _ = reject.call1(&JsValue::NULL, &error);
        });
        request.set_onsuccess(Some(on_success.unchecked_ref()));
        request.set_onerror(Some(on_error.unchecked_ref()));
    });
    JsFuture::from(promise)
        .await
        .map_err(|e| StoreError::from_js(&e))
}

/// Waits until `tx` commits; its error (a quota refusal, a failed request) if it aborts.
pub async fn committed(tx: &IdbTransaction) -> Result<(), StoreError> {
    let promise = js_sys::Promise::new(&mut |resolve, reject| {
        let on_complete = Closure::once_into_js(move || {
            let _ = resolve.call0(&JsValue::NULL);
        });
        let t = tx.clone();
        let reject_abort = reject.clone();
        let on_abort = Closure::once_into_js(move || {
            let error = failure(t.error(), "transaction aborted");
            let _ = reject_abort.call1(&JsValue::NULL, &error);
        });
        let t = tx.clone();
        let on_error = Closure::once_into_js(move || {
            let error = failure(t.error(), "transaction failed");
            let _ = reject.call1(&JsValue::NULL, &error);
        });
        tx.set_oncomplete(Some(on_complete.unchecked_ref()));
        tx.set_onabort(Some(on_abort.unchecked_ref()));
        tx.set_onerror(Some(on_error.unchecked_ref()));
    });
    JsFuture::from(promise)
        .await
        .map(|_| ())
        .map_err(|e| StoreError::from_js(&e))
}

/// A thrown exception as a store error.
pub fn js(e: JsValue) -> StoreError {
    StoreError::from_js(&e)
}
