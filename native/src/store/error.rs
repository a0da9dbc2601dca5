//! Why a store operation failed.

use std::fmt;

use grasp_sync_driver::StoreError as PortError;
use heed::MdbError;

use super::{EVENTS_DIR, MAP_FULL_TEXT, STATE_DIR, STATE_MAP_SIZE};

/// Why a store operation failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// An LMDB map is full (`MDB_MAP_FULL`): the environment needs a larger map size.
    MapFull {
        /// `events` or `state`.
        environment: &'static str,
        /// The map size in force, in bytes.
        map_size: usize,
    },
    /// A file-system error (creating the directories).
    Io(std::io::Error),
    /// nostr-lmdb reported an error.
    Events(String),
    /// The state environment reported an error.
    State(String),
    /// The state was written in a format this build does not read.
    Format(String),
    /// A blocking task panicked or was cancelled.
    Task(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MapFull {
                environment,
                map_size,
            } => write!(
                f,
                "the LMDB {environment} map is full ({map_size} bytes, MDB_MAP_FULL): \
                 raise the store's map size"
            ),
            Self::Io(e) => write!(f, "store directory: {e}"),
            Self::Events(e) => write!(f, "event store: {e}"),
            Self::State(e) => write!(f, "state store: {e}"),
            Self::Format(e) => write!(f, "state store format: {e}"),
            Self::Task(e) => write!(f, "store task: {e}"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<StoreError> for PortError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::MapFull { .. } => Self::QuotaExceeded(e.to_string()),
            StoreError::Task(_) => Self::Unavailable(e.to_string()),
            _ => Self::Other(e.to_string()),
        }
    }
}

impl StoreError {
    pub(super) fn events(error: nostr_database::error::Error, map_size: usize) -> Self {
        let text = error.to_string();
        if text.contains(MAP_FULL_TEXT) {
            Self::MapFull {
                environment: EVENTS_DIR,
                map_size,
            }
        } else {
            Self::Events(text)
        }
    }

    pub(super) fn state(error: heed::Error) -> Self {
        match error {
            heed::Error::Mdb(MdbError::MapFull) => Self::MapFull {
                environment: STATE_DIR,
                map_size: STATE_MAP_SIZE,
            },
            e => Self::State(e.to_string()),
        }
    }
}
