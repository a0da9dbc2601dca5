//! Postings as ordered byte keys, for a backend whose index is a sorted key space (LMDB,
//! IndexedDB): `prefix ‖ (u64::MAX − created_at) big-endian ‖ id`, so a key-order walk of
//! one prefix is newest first, ties by lowest id ([`Posting`] order), and a time window is
//! one key range. nostr-lmdb 0.45's tag and kind indexes use this very layout.

use nostr::prelude::{EventId, Timestamp};

use crate::plan::Posting;

/// Bytes after the prefix: reversed `created_at` and id.
pub const POSTING_SUFFIX_LEN: usize = 8 + 32;

/// The key of `posting` under `prefix`.
pub fn posting_key(prefix: &[u8], posting: &Posting) -> Vec<u8> {
    key(prefix, posting.created_at, posting.id.as_bytes())
}

/// The first and last possible keys (inclusive) under `prefix` of postings created from
/// `since` to `until`.
pub fn posting_range(prefix: &[u8], since: Timestamp, until: Timestamp) -> (Vec<u8>, Vec<u8>) {
    (
        key(prefix, until, &[0; 32]),
        key(prefix, since, &[0xff; 32]),
    )
}

/// The posting a key after a `prefix_len`-byte prefix holds; `None` if it is not one.
pub fn parse_posting_key(key: &[u8], prefix_len: usize) -> Option<Posting> {
    if key.len() != prefix_len + POSTING_SUFFIX_LEN {
        return None;
    }
    let at = <[u8; 8]>::try_from(key.get(prefix_len..prefix_len + 8)?).ok()?;
    let id = EventId::from_slice(key.get(prefix_len + 8..)?).ok()?;
    Some(Posting {
        created_at: Timestamp::from(u64::MAX - u64::from_be_bytes(at)),
        id,
    })
}

fn key(prefix: &[u8], at: Timestamp, id: &[u8; 32]) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + POSTING_SUFFIX_LEN);
    key.extend_from_slice(prefix);
    key.extend_from_slice(&(u64::MAX - at.as_secs()).to_be_bytes());
    key.extend_from_slice(id);
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_order_is_posting_order() {
        let posting = |at: u64, id: u8| Posting {
            created_at: Timestamp::from(at),
            id: EventId::from_slice(&[id; 32]).expect("id"),
        };
        let mut postings = vec![posting(5, 9), posting(7, 3), posting(5, 1), posting(0, 0)];
        let mut keys: Vec<Vec<u8>> = postings.iter().map(|p| posting_key(b"k", p)).collect();
        keys.sort();
        postings.sort();
        let parsed: Vec<Posting> = keys
            .iter()
            .filter_map(|k| parse_posting_key(k, 1))
            .collect();
        assert_eq!(parsed, postings);
        let (from, to) = posting_range(b"k", Timestamp::from(5), Timestamp::from(5));
        let inside: Vec<&Vec<u8>> = keys
            .iter()
            .filter(|k| from.as_slice() <= k.as_slice() && k.as_slice() <= to.as_slice())
            .collect();
        assert_eq!(inside.len(), 2);
        assert_eq!(parse_posting_key(b"short", 1), None);
    }
}
