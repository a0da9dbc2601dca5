//! IndexedDB failures as typed errors, by what a user can do about them.

use indexed_db_futures::error::{Error, OpenDbError};
use indexed_db_futures::internals::SystemRepr;
use indexed_db_futures::transaction::Transaction;
use wasm_bindgen::prelude::*;

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

    /// What happened, for people.
    pub fn message(&self) -> &str {
        match self {
            Self::Quota(m)
            | Self::UpgradeBlocked(m)
            | Self::Closed(m)
            | Self::Corrupt(m)
            | Self::Other(m) => m,
        }
    }

    /// From a `DOMException` (or anything else thrown).
    pub fn from_js(value: &JsValue) -> Self {
        let (name, message) = match value.dyn_ref::<web_sys::DomException>() {
            Some(e) => (e.name(), e.message()),
            None => (String::new(), crate::net::js_text(value)),
        };
        match name.as_str() {
            // What to do about it is the driver's remedy (see its `StoreError`).
            "QuotaExceededError" if message.is_empty() => {
                Self::Quota("the browser refused to store more".into())
            }
            "QuotaExceededError" => {
                Self::Quota(format!("the browser refused to store more ({message})"))
            }
            "InvalidStateError" => Self::Closed(format!("database closed ({message})")),
            "" => Self::Other(message),
            _ => Self::Other(format!("{name}: {message}")),
        }
    }
}

impl From<Error> for StoreError {
    fn from(e: Error) -> Self {
        match e {
            Error::DomException(d) => Self::from_js(d.as_ref()),
            Error::Serialisation(e) => Self::Corrupt(e.to_string()),
            Error::MissingData(e) => Self::Other(e.to_string()),
            Error::Unknown(e) => Self::Other(e.to_string()),
        }
    }
}

impl From<OpenDbError> for StoreError {
    fn from(e: OpenDbError) -> Self {
        match e {
            OpenDbError::Base(e) => e.into(),
            other => Self::Other(format!("IndexedDB is not available here ({other})")),
        }
    }
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code(), self.message())
    }
}

impl std::error::Error for StoreError {}

impl From<StoreError> for crate::error::WebError {
    fn from(e: StoreError) -> Self {
        Self::new(e.code(), e.message())
    }
}

impl From<StoreError> for grasp_sync_driver::StoreError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Quota(m) => Self::QuotaExceeded(m),
            StoreError::UpgradeBlocked(m) => Self::UpgradeBlocked(m),
            StoreError::Closed(m) | StoreError::Other(m) => Self::Unavailable(m),
            StoreError::Corrupt(m) => Self::Other(m),
        }
    }
}

/// Commits `tx` and waits until it completes; its error (a quota refusal, a failed
/// request) if it aborts.
pub async fn commit(tx: Transaction<'_>) -> Result<(), StoreError> {
    // indexed_db_futures reports an abort without its cause: the cause (e.g.
    // QuotaExceededError) is read from web-sys's `IDBTransaction.error`.
    let raw = tx.as_sys().clone();
    match tx.commit().await {
        Ok(()) => Ok(()),
        Err(e) => Err(match raw.error() {
            Some(cause) => StoreError::from_js(&cause.into()),
            None => e.into(),
        }),
    }
}
