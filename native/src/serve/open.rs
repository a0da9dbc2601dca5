//! What a connection does for the open acceptance mode (`accept = any-event`) before an
//! event goes to the engine: acceptance keeps the versions of replaceable and
//! addressable events in memory, and at start-up restores only those of tracked
//! repositories; so before a published version (or a deletion by address) is decided,
//! the versions the store holds at its address are handed to the engine, which then
//! decides which one wins and what to remove — the store contract stays the one place
//! that removes, on the core's word.

use nostr::prelude::{Event, Filter, Kind, PublicKey};

use super::hub::BroadcastStore;

/// Most addresses one deletion's versions are looked up for.
const MAX_ADDRESSES: usize = 64;

/// The stored versions at the address of `event` (a replaceable or addressable event)
/// or at the addresses a deletion (kind 5) names by `a` tag of its own author.
pub async fn held_versions(store: &BroadcastStore, event: &Event) -> Vec<Event> {
    let mut filters = Vec::new();
    if let Some(filter) = address_filter(event.kind, event.pubkey, first_d(event)) {
        filters.push(filter);
    }
    if event.kind == Kind::EventDeletion {
        let addresses = event
            .tags
            .iter()
            .map(|t| t.as_slice())
            .filter(|t| t.first().map(String::as_str) == Some("a"))
            .filter_map(|t| t.get(1))
            .filter_map(|a| parse_address(a))
            .filter(|(_, author, _)| *author == event.pubkey)
            .take(MAX_ADDRESSES);
        for (kind, author, d) in addresses {
            filters.extend(address_filter(kind, author, Some(d)));
        }
    }
    let mut held = Vec::new();
    for filter in filters {
        match store.inner().query(filter).await {
            Ok(events) => held.extend(events),
            Err(e) => tracing::warn!(error = %e, "reading held versions failed"),
        }
    }
    held
}

/// The first `d` tag's value.
fn first_d(event: &Event) -> Option<&str> {
    event
        .tags
        .iter()
        .map(|t| t.as_slice())
        .find(|t| t.first().map(String::as_str) == Some("d"))
        .and_then(|t| t.get(1))
        .map(String::as_str)
}

/// Every stored version at an address; `None` when `kind` has no address.
fn address_filter(kind: Kind, author: PublicKey, d: Option<&str>) -> Option<Filter> {
    let filter = Filter::new().kind(kind).author(author);
    if kind.is_addressable() {
        Some(filter.identifier(d.unwrap_or_default()))
    } else if kind.is_replaceable() {
        Some(filter)
    } else {
        None
    }
}

/// `kind:pubkey:d`.
fn parse_address(value: &str) -> Option<(Kind, PublicKey, &str)> {
    let mut parts = value.splitn(3, ':');
    let kind = Kind::from(parts.next()?.parse::<u16>().ok()?);
    let author = PublicKey::from_hex(parts.next()?).ok()?;
    Some((kind, author, parts.next().unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_and_only_replaceable_kinds_have_one() {
        let author =
            PublicKey::from_hex("79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798")
                .unwrap();
        let value = format!("30023:{}:a:b", author.to_hex());
        assert_eq!(
            parse_address(&value),
            Some((Kind::from(30023), author, "a:b"))
        );
        assert_eq!(parse_address("x:y"), None);
        assert!(address_filter(Kind::from(1), author, None).is_none());
        assert!(address_filter(Kind::from(0), author, None).is_some());
        assert!(address_filter(Kind::from(30023), author, Some("d")).is_some());
    }
}
