//! Builders for NIP-34 test events. Ids are real; signatures are dummies, because the
//! index and filters never verify them (acceptance, a later layer, does).

#![allow(dead_code)]

use std::sync::OnceLock;

use nostr::prelude::{
    Event, Keys, Kind, PublicKey, SecretKey, Signature, Tag, Timestamp, UnsignedEvent,
};

/// The public key of deterministic test key number `n`.
pub fn pubkey(n: u8) -> PublicKey {
    static KEYS: OnceLock<Vec<PublicKey>> = OnceLock::new();
    KEYS.get_or_init(|| {
        (0..=255u8)
            .map(|i| {
                let mut bytes = [1u8; 32];
                bytes[31] = i;
                let secret = SecretKey::from_slice(&bytes).expect("valid");
                Keys::new(secret).public_key()
            })
            .collect()
    })[usize::from(n)]
}

/// An event with a correct id and a dummy signature.
pub fn event(author: PublicKey, kind: u16, created_at: u64, tags: Vec<Vec<String>>) -> Event {
    let tags: Vec<Tag> = tags
        .into_iter()
        .map(|t| Tag::parse(t).expect("non-empty tag"))
        .collect();
    let mut unsigned = UnsignedEvent::new(
        author,
        Timestamp::from(created_at),
        Kind::from(kind),
        tags,
        "",
    );
    let id = unsigned.id();
    Event::new(
        id,
        author,
        unsigned.created_at,
        unsigned.kind,
        unsigned.tags.clone(),
        "",
        Signature::from_byte_array([7; 64]),
    )
}

fn tag(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

/// A repository announcement.
pub fn announcement(
    owner: PublicKey,
    d: &str,
    created_at: u64,
    relays: &[&str],
    maintainers: &[PublicKey],
) -> Event {
    let mut tags = vec![tag(&["d", d])];
    if !relays.is_empty() {
        let mut t = tag(&["relays"]);
        t.extend(relays.iter().map(|r| r.to_string()));
        tags.push(t);
    }
    if !maintainers.is_empty() {
        let mut t = tag(&["maintainers"]);
        t.extend(maintainers.iter().map(|m| m.to_hex()));
        tags.push(t);
    }
    event(owner, 30617, created_at, tags)
}

/// A root issue tagging the given repository coordinates.
pub fn issue(author: PublicKey, created_at: u64, repos: &[String]) -> Event {
    let tags = repos.iter().map(|r| tag(&["a", r])).collect();
    event(author, 1621, created_at, tags)
}

/// A NIP-09 deletion of coordinates (`a`) and ids (`e`).
pub fn deletion(author: PublicKey, created_at: u64, coords: &[String], ids: &[String]) -> Event {
    let mut tags: Vec<Vec<String>> = coords.iter().map(|c| tag(&["a", c])).collect();
    tags.extend(ids.iter().map(|i| tag(&["e", i])));
    event(author, 5, created_at, tags)
}
