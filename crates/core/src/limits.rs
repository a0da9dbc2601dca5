//! What a relay accepts: conservative defaults, overridden by its NIP-11 `limitation`.

use serde_json::Value;

/// The limits requests to one relay must respect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayLimits {
    /// Concurrent subscriptions (REQs) per connection.
    pub max_subscriptions: usize,
    /// Filters in one REQ.
    pub max_filters: usize,
    /// Values in one filter field (`ids`, `authors`, or one tag's values). NIP-11 has no
    /// field for it; with the default message size, the bytes bind first (about 950 ids).
    pub max_values_per_filter: usize,
    /// Bytes in one message we send.
    pub max_message_bytes: usize,
    /// Events a relay returns for one filter (its result limit).
    pub max_results: usize,
    /// Characters in a subscription id.
    pub max_subid_len: usize,
}

impl Default for RelayLimits {
    /// Conservative values that common relays (strfry, nostr-rs-relay, khatru) accept;
    /// nostream, the one that caps values per filter, allows 2 500.
    fn default() -> Self {
        Self {
            max_subscriptions: 10,
            max_filters: 10,
            max_values_per_filter: 1_000,
            max_message_bytes: 65_536,
            max_results: 500,
            max_subid_len: 64,
        }
    }
}

/// Bounds a relay's published numbers are clamped to, so a lying document cannot make
/// us send huge messages or page by one event.
const MESSAGE_BYTES: (u64, u64) = (4_096, 16 * 1024 * 1024);
const SUBSCRIPTIONS: (u64, u64) = (1, 1_000);
const FILTERS: (u64, u64) = (1, 1_000);
const RESULTS: (u64, u64) = (10, 10_000);
const SUBID_LEN: (u64, u64) = (8, 256);

impl RelayLimits {
    /// The defaults overridden by a NIP-11 document's `limitation` object. A document
    /// that is not JSON, or fields that are missing, of the wrong type or zero, leave the
    /// defaults in place; other values are clamped to sane bounds.
    pub fn from_nip11(document: &str) -> Self {
        let limitation = serde_json::from_str::<Value>(document)
            .ok()
            .and_then(|doc| doc.get("limitation").cloned());
        match limitation {
            Some(limitation) => Self::default().with_limitation(&limitation),
            None => Self::default(),
        }
    }

    /// Whether a request cut under `cut_under` may break these limits: a smaller message,
    /// fewer filters per REQ, fewer values per filter or a shorter subscription id.
    /// (Fewer subscriptions or results are learned from the relay's answers.)
    pub fn tighter_than(&self, cut_under: &Self) -> bool {
        self.max_message_bytes < cut_under.max_message_bytes
            || self.max_filters < cut_under.max_filters
            || self.max_values_per_filter < cut_under.max_values_per_filter
            || self.max_subid_len < cut_under.max_subid_len
    }

    /// These limits overridden by a NIP-11 `limitation` object.
    pub fn with_limitation(mut self, limitation: &Value) -> Self {
        let field = |name: &str, (lo, hi): (u64, u64)| {
            limitation
                .get(name)
                .and_then(Value::as_u64)
                .filter(|v| *v > 0)
                .map(|v| usize::try_from(v.clamp(lo, hi)).unwrap_or(usize::MAX))
        };
        if let Some(v) = field("max_message_length", MESSAGE_BYTES) {
            self.max_message_bytes = v;
        }
        if let Some(v) = field("max_subscriptions", SUBSCRIPTIONS) {
            self.max_subscriptions = v;
        }
        if let Some(v) = field("max_filters", FILTERS) {
            self.max_filters = v;
        }
        if let Some(v) = field("max_limit", RESULTS) {
            self.max_results = v;
        }
        if let Some(v) = field("max_subid_length", SUBID_LEN) {
            self.max_subid_len = v;
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nip11_limitation_overrides_defaults() {
        let doc = r#"{"name":"r","limitation":{"max_message_length":131072,
            "max_subscriptions":20,"max_filters":100,"max_limit":5000,"max_subid_length":71}}"#;
        let limits = RelayLimits::from_nip11(doc);
        assert_eq!(limits.max_message_bytes, 131_072);
        assert_eq!(limits.max_subscriptions, 20);
        assert_eq!(limits.max_filters, 100);
        assert_eq!(limits.max_results, 5000);
        assert_eq!(limits.max_subid_len, 71);
        assert_eq!(
            limits.max_values_per_filter,
            RelayLimits::default().max_values_per_filter
        );
    }

    #[test]
    fn bad_documents_keep_defaults() {
        for doc in [
            "",
            "not json",
            "[]",
            r#"{"limitation":"x"}"#,
            r#"{"limitation":{"max_limit":-5,"max_filters":"10","max_subscriptions":0}}"#,
            r#"{"limitation":{"max_message_length":1.5e3}}"#,
        ] {
            assert_eq!(
                RelayLimits::from_nip11(doc),
                RelayLimits::default(),
                "{doc}"
            );
        }
    }

    #[test]
    fn tighter_means_some_request_may_be_refused() {
        let defaults = RelayLimits::default();
        assert!(!defaults.tighter_than(&defaults));
        let strict = RelayLimits::from_nip11(r#"{"limitation":{"max_filters":2}}"#);
        assert!(strict.tighter_than(&defaults));
        assert!(!defaults.tighter_than(&strict));
        // Fewer results or subscriptions are learned from answers, not refused requests.
        let few =
            RelayLimits::from_nip11(r#"{"limitation":{"max_limit":40,"max_subscriptions":2}}"#);
        assert!(!few.tighter_than(&defaults));
    }

    #[test]
    fn absurd_values_are_clamped() {
        let doc = r#"{"limitation":{"max_message_length":99999999999,"max_limit":1,
            "max_subscriptions":1000000}}"#;
        let limits = RelayLimits::from_nip11(doc);
        assert_eq!(limits.max_message_bytes, 16 * 1024 * 1024);
        assert_eq!(limits.max_results, 10);
        assert_eq!(limits.max_subscriptions, 1_000);
    }
}
