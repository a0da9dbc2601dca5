//! Which index answers a NIP-01 filter: one key range per value of the most selective
//! field, each ordered by `created_at` (so a `limit` reads newest first and stops).

use nostr::prelude::{EventId, Filter};

use super::rows::tag_key;
use super::schema::{BY_AUTHOR, BY_KIND, BY_TAG, BY_TIME};

/// The first part of a compound index key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prefix {
    /// A string: a pubkey or a tag key.
    Str(String),
    /// A kind.
    Num(u16),
}

/// How to read the candidates for a filter (each is then matched against the whole
/// filter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Get these ids.
    Ids(Vec<EventId>),
    /// Read `[prefix, since..=until]` from `index` for each prefix, or `since..=until`
    /// from the time index when `prefixes` is `None`.
    Ranges {
        /// The index.
        index: &'static str,
        /// Its key prefixes; `None` for the time index.
        prefixes: Option<Vec<Prefix>>,
        /// Lowest `created_at`.
        since: u64,
        /// Highest `created_at`.
        until: u64,
    },
    /// Nothing can match (a tag with no values, or `since` after `until`).
    Empty,
}

/// The plan for `filter`: ids, else the tag with the fewest values, else authors, else
/// kinds, else the time index.
pub fn plan(filter: &Filter) -> Plan {
    let since = filter.since.map_or(0, |t| t.as_secs());
    let until = filter
        .until
        .map_or(u64::from(u32::MAX) * 4, |t| t.as_secs());
    if since > until {
        return Plan::Empty;
    }
    // An empty set of ids, authors or kinds is no constraint (as `Filter::match_event`);
    // a tag with no values matches nothing.
    if let Some(ids) = filter.ids.as_ref().filter(|s| !s.is_empty()) {
        return Plan::Ids(ids.iter().copied().collect());
    }
    let ranges = |index, prefixes: Vec<Prefix>| {
        if prefixes.is_empty() {
            Plan::Empty
        } else {
            Plan::Ranges {
                index,
                prefixes: Some(prefixes),
                since,
                until,
            }
        }
    };
    if let Some((letter, values)) = filter.generic_tags.iter().min_by_key(|(_, v)| v.len()) {
        let letter = letter.to_string();
        return ranges(
            BY_TAG,
            values
                .iter()
                .map(|v| Prefix::Str(tag_key(&letter, v)))
                .collect(),
        );
    }
    if let Some(authors) = filter.authors.as_ref().filter(|s| !s.is_empty()) {
        return ranges(
            BY_AUTHOR,
            authors.iter().map(|a| Prefix::Str(a.to_hex())).collect(),
        );
    }
    if let Some(kinds) = filter.kinds.as_ref().filter(|s| !s.is_empty()) {
        return ranges(
            BY_KIND,
            kinds.iter().map(|k| Prefix::Num(k.as_u16())).collect(),
        );
    }
    Plan::Ranges {
        index: BY_TIME,
        prefixes: None,
        since,
        until,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nostr::prelude::{Kind, SingleLetterTag, Timestamp};

    #[test]
    fn picks_the_most_selective_field() {
        let tag = |c| SingleLetterTag::from_char(c).expect("a letter");
        let f = Filter::new()
            .kind(Kind::from(1621))
            .custom_tags(tag('a'), ["x", "y"])
            .custom_tags(tag('e'), ["z"])
            .since(Timestamp::from(5));
        assert_eq!(
            plan(&f),
            Plan::Ranges {
                index: BY_TAG,
                prefixes: Some(vec![Prefix::Str("e:z".into())]),
                since: 5,
                until: u64::from(u32::MAX) * 4,
            }
        );
        let f = Filter::new()
            .kind(Kind::from(1))
            .since(Timestamp::from(9))
            .until(Timestamp::from(3));
        assert_eq!(plan(&f), Plan::Empty);
        let f = Filter::new().kind(Kind::from(7));
        assert!(matches!(plan(&f), Plan::Ranges { index: BY_KIND, .. }));
        assert!(matches!(
            plan(&Filter::new()),
            Plan::Ranges {
                index: BY_TIME,
                prefixes: None,
                ..
            }
        ));
    }
}
