//! Negentropy items straight from nostr-lmdb's tag and kind indexes (see the module
//! documentation of [`super`]: "Queries and negentropy items").

use std::ops::Bound;
use std::sync::Arc;

use grasp_sync_store::keys::{parse_posting_key, posting_range};
use grasp_sync_store::plan::{Access, Plan};
use nostr::prelude::{EventId, Timestamp};

use super::{blocking, LmdbStore, StoreError, TAG_VALUE_WIDTH};

/// Which of nostr-lmdb's indexes an [`IndexScan`] walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Index {
    Tags,
    Kinds,
}

/// A filter one of nostr-lmdb's indexes answers alone, with a time window: one posting
/// list per tag value (each short enough to be whole in the index) or per kind.
#[derive(Debug)]
pub(super) struct IndexScan {
    index: Index,
    /// One key prefix per value or kind: letter and padded value, or kind big-endian.
    prefixes: Vec<Vec<u8>>,
    since: Timestamp,
    until: Timestamp,
}

impl IndexScan {
    pub(super) fn of(plan: &Plan) -> Option<Self> {
        if !plan.postings_suffice {
            return None;
        }
        let (index, prefixes) = match &plan.access {
            Access::Tag(tag, values) => {
                let letter = u8::try_from(tag.as_char()).ok()?;
                if values.iter().any(|v| v.len() > TAG_VALUE_WIDTH) {
                    return None;
                }
                let prefixes = values
                    .iter()
                    .map(|value| {
                        let mut prefix = Vec::with_capacity(1 + TAG_VALUE_WIDTH);
                        prefix.push(letter);
                        prefix.extend_from_slice(value.as_bytes());
                        prefix.resize(1 + TAG_VALUE_WIDTH, 0);
                        prefix
                    })
                    .collect();
                (Index::Tags, prefixes)
            }
            Access::Kinds(kinds) => {
                let prefixes = kinds
                    .iter()
                    .map(|k| k.as_u16().to_be_bytes().to_vec())
                    .collect();
                (Index::Kinds, prefixes)
            }
            _ => return None,
        };
        Some(Self {
            index,
            prefixes,
            since: plan.since,
            until: plan.until,
        })
    }
}

impl LmdbStore {
    /// The negentropy items of a filter that is one tag's values or some kinds (and a
    /// time window), straight from nostr-lmdb's tag or kind index, whose keys are
    /// postings: no event is read. Expired events are left out.
    pub(super) async fn items_from_index(
        &self,
        scan: IndexScan,
    ) -> Result<Vec<(Timestamp, EventId)>, StoreError> {
        let expired = self.expired_ids(Timestamp::now()).await?;
        let inner = Arc::clone(&self.inner);
        blocking(move || -> Result<Vec<(Timestamp, EventId)>, StoreError> {
            let txn = inner.events_env.read_txn().map_err(StoreError::state)?;
            let index = match scan.index {
                Index::Tags => &inner.tag_index,
                Index::Kinds => &inner.kind_index,
            };
            let mut items = Vec::new();
            for prefix in &scan.prefixes {
                let (from, to) = posting_range(prefix, scan.since, scan.until);
                let range = (Bound::Included(&from[..]), Bound::Included(&to[..]));
                for row in index.range(&txn, &range).map_err(StoreError::state)? {
                    let (key, _) = row.map_err(StoreError::state)?;
                    let Some(posting) = parse_posting_key(key, prefix.len()) else {
                        return Err(StoreError::State(format!(
                            "nostr-lmdb's index holds a key of {} bytes",
                            key.len()
                        )));
                    };
                    if !expired.contains(&posting.id) {
                        items.push(posting.item());
                    }
                }
            }
            Ok(items)
        })
        .await?
    }
}
