//! Whether an event matches a NIP-01 filter: [`Filter::match_event`]'s answer (every
//! field checked), in time that grows with the event's tags rather than the filter's
//! values. nostr 0.45 walks every value of a tag in the filter and looks each up among
//! the event's: the engine's layer filters name thousands of root ids, and every
//! received event was checked against them that way.

use nostr::prelude::{Event, Filter};

/// Whether `event` matches `filter` (ids, authors, kinds, `since`, `until`, tags and
/// NIP-50 search: what `filter.match_event(event, MatchEventOptions::new())` says).
pub fn event_matches(filter: &Filter, event: &Event) -> bool {
    filter
        .ids
        .as_ref()
        .is_none_or(|ids| ids.is_empty() || ids.contains(&event.id))
        && filter
            .authors
            .as_ref()
            .is_none_or(|authors| authors.is_empty() || authors.contains(&event.pubkey))
        && filter
            .kinds
            .as_ref()
            .is_none_or(|kinds| kinds.is_empty() || kinds.contains(&event.kind))
        && filter.since.is_none_or(|t| event.created_at >= t)
        && filter.until.is_none_or(|t| event.created_at <= t)
        && tags_match(filter, event)
        && search_matches(filter, event)
}

/// Every tag letter of the filter is among the event's tags with one of its values:
/// one pass over the event's tags, each looked up in the filter's set of that letter.
fn tags_match(filter: &Filter, event: &Event) -> bool {
    if filter.generic_tags.is_empty() {
        return true;
    }
    // One bit per letter: a-z, then A-Z.
    let bit = |byte: u8| match byte {
        b'a'..=b'z' => 1u64 << (byte - b'a'),
        b'A'..=b'Z' => 1u64 << (26 + byte - b'A'),
        _ => 0,
    };
    let mut found = 0u64;
    for tag in event.tags.iter() {
        let (Some(letter), Some(value)) = (tag.single_letter_tag(), tag.content()) else {
            continue;
        };
        if filter
            .generic_tags
            .get(&letter)
            .is_some_and(|values| values.contains(value))
        {
            found |= bit(letter.as_byte());
        }
    }
    filter
        .generic_tags
        .keys()
        .all(|letter| found & bit(letter.as_byte()) != 0)
}

/// NIP-50: the content holds the query, ASCII case aside (an empty query matches).
fn search_matches(filter: &Filter, event: &Event) -> bool {
    match &filter.search {
        Some(query) if query.is_empty() => true,
        Some(query) => event
            .content
            .as_bytes()
            .windows(query.len())
            .any(|window| window.eq_ignore_ascii_case(query.as_bytes())),
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use nostr::prelude::*;
    use proptest::prelude::*;

    use super::event_matches;

    fn pubkey(n: u8) -> PublicKey {
        let mut secret = [1u8; 32];
        secret[31] = n;
        Keys::new(SecretKey::from_slice(&secret).expect("a valid secret key")).public_key()
    }

    /// An unsigned event (matching reads no signature) with these fields.
    fn unsigned(id: u8, author: u8, kind: u16, at: u64, tags: Vec<Tag>, content: &str) -> Event {
        Event::new(
            EventId::from_byte_array([id; 32]),
            pubkey(author),
            Timestamp::from(at),
            Kind::from(kind),
            tags,
            content,
            Signature::from_byte_array([7; 64]),
        )
    }

    /// An event by one of three authors, of one of three kinds, with tags drawn from a
    /// small alphabet so filters hit and miss.
    fn event(author: u8, kind: u16, at: u64, tags: Vec<(char, u8)>, content: &str) -> Event {
        let tags = tags
            .into_iter()
            .map(|(letter, v)| Tag::parse([letter.to_string(), format!("v{v}")]).expect("a tag"))
            .collect();
        unsigned(1, author, kind, at, tags, content)
    }

    fn letter(c: char) -> SingleLetterTag {
        SingleLetterTag::from_char(c).expect("a letter")
    }

    fn filter(
        authors: Option<Vec<u8>>,
        kinds: Option<Vec<u16>>,
        since: Option<u64>,
        until: Option<u64>,
        tags: Vec<(char, Vec<u8>)>,
        search: Option<String>,
    ) -> Filter {
        let mut f = Filter::new();
        if let Some(a) = authors {
            f = f.authors(a.into_iter().map(pubkey));
        }
        if let Some(k) = kinds {
            f = f.kinds(k.into_iter().map(Kind::from));
        }
        if let Some(s) = since {
            f = f.since(Timestamp::from(s));
        }
        if let Some(u) = until {
            f = f.until(Timestamp::from(u));
        }
        for (l, values) in tags {
            f = f.custom_tags(letter(l), values.into_iter().map(|v| format!("v{v}")));
        }
        if let Some(q) = search {
            f = f.search(q);
        }
        f
    }

    fn letters() -> impl Strategy<Value = char> {
        prop::sample::select(vec!['e', 'E', 'q', 'a'])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever the filter and the event, the answer is nostr's.
        #[test]
        fn agrees_with_nostr(
            author in 0u8..3,
            kind in prop::sample::select(vec![1u16, 1621, 1111]),
            at in 0u64..10,
            event_tags in prop::collection::vec((letters(), 0u8..6), 0..5),
            content in "[a-cA-C ]{0,6}",
            authors in prop::option::of(prop::collection::vec(0u8..3, 0..3)),
            kinds in prop::option::of(prop::collection::vec(
                prop::sample::select(vec![1u16, 1621, 1111]), 0..3)),
            since in prop::option::of(0u64..10),
            until in prop::option::of(0u64..10),
            filter_tags in prop::collection::vec(
                (letters(), prop::collection::vec(0u8..6, 0..4)), 0..3),
            search in prop::option::of("[a-cA-C]{0,2}"),
            ids in prop::option::of(any::<bool>()),
        ) {
            let e = event(author, kind, at, event_tags, &content);
            let mut f = filter(authors, kinds, since, until, filter_tags, search);
            match ids {
                Some(true) => f = f.id(e.id),
                Some(false) => f = f.id(EventId::from_byte_array([0; 32])),
                None => {}
            }
            prop_assert_eq!(event_matches(&f, &e), f.match_event(&e, MatchEventOptions::new()));
        }
    }

    /// A filter naming thousands of roots matches an event tagging one of them, and
    /// not one tagging none, and needs every letter it names.
    #[test]
    fn large_tag_sets() {
        let roots: Vec<String> = (0..5000).map(|n| format!("{n:064x}")).collect();
        let f = Filter::new()
            .custom_tags(letter('e'), roots.clone())
            .kind(Kind::from(1111));
        let tagged = |value: &str, letter: &str| {
            let tag = Tag::parse([letter, value]).expect("a tag");
            unsigned(2, 0, 1111, 1_700_000_000, vec![tag], "")
        };
        assert!(event_matches(&f, &tagged(&roots[4321], "e")));
        assert!(!event_matches(&f, &tagged(&format!("{:064x}", 9999), "e")));
        assert!(
            !event_matches(&f, &tagged(&roots[1], "E")),
            "another letter"
        );
        let both = f.custom_tags(letter('p'), ["x"]);
        assert!(
            !event_matches(&both, &tagged(&roots[1], "e")),
            "every letter named"
        );
    }
}
