//! Sync state as stored: checkpoint and remembered-id records, their keys and their
//! encodings, the same in every backend.
//!
//! - A checkpoint's key is the SHA-256 of `"<relay URL>\n<scope>"` (relay URLs may be
//!   longer than a database allows in a key), its value the JSON object
//!   `{"v":1,"relay":"wss://…","scope":"…","at":<unix seconds>}`, where `scope` is
//!   `discovery`, `item <layer> coord 30617:<pubkey hex>:<d>` or
//!   `item <layer> root <event id hex>` and `<layer>` is `announcements`, `repo-tags` or
//!   `root-tags`. Saving a checkpoint of the same relay and scope replaces it.
//! - A remembered id's key is the 32-byte event id, its value the JSON object
//!   `{"v":1,"pubkey":"<hex>","kind":<u16>,"created_at":<secs>,"tags":[["e","…"],…],"expires_at":<secs>}`.
//!
//! Records of another `v`, or that do not decode, are an `Err` for the caller to skip
//! (with a warning) and leave in place.

use std::collections::HashMap;
use std::str::FromStr as _;

use bitcoin_hashes::sha256;
use grasp_sync_core::engine::{Checkpoint, Scope};
use grasp_sync_core::seen::SeenEntry;
use grasp_sync_core::{Item, Layer, RelayUrl, RepoRef};
use nostr::prelude::{EventId, Kind, PublicKey, SingleLetterTag, Timestamp};
use serde::{Deserialize, Serialize};

/// The record format this build reads and writes.
pub const STATE_FORMAT: u32 = 1;

/// The key of `checkpoint`'s record: one per relay and scope.
pub fn checkpoint_key(checkpoint: &Checkpoint) -> [u8; 32] {
    let text = format!(
        "{}\n{}",
        checkpoint.relay.as_str(),
        scope_text(&checkpoint.scope)
    );
    sha256::Hash::hash(text.as_bytes()).to_byte_array()
}

/// The record of `checkpoint`.
pub fn encode_checkpoint(checkpoint: &Checkpoint) -> Vec<u8> {
    let record = CheckpointRecord {
        v: STATE_FORMAT,
        relay: checkpoint.relay.as_str().to_owned(),
        scope: scope_text(&checkpoint.scope),
        at: checkpoint.at.as_secs(),
    };
    encode(&record)
}

/// The checkpoint a record holds.
pub fn decode_checkpoint(bytes: &[u8]) -> Result<Checkpoint, String> {
    CheckpointDecoder::default().decode(bytes)
}

/// Decodes many checkpoint records, parsing each relay's URL once (thousands of
/// records name a few relays, and parsing a URL dominated reading them at start-up).
#[derive(Debug, Default)]
pub struct CheckpointDecoder {
    relays: HashMap<String, RelayUrl>,
}

impl CheckpointDecoder {
    /// The checkpoint a record holds.
    pub fn decode(&mut self, bytes: &[u8]) -> Result<Checkpoint, String> {
        let record: CheckpointRecord = decode(bytes)?;
        let relay = match self.relays.get(&record.relay) {
            Some(relay) => relay.clone(),
            None => {
                let relay = RelayUrl::parse(&record.relay)
                    .map_err(|e| format!("relay {:?}: {e}", record.relay))?;
                self.relays.insert(record.relay, relay.clone());
                relay
            }
        };
        Ok(Checkpoint {
            relay,
            scope: parse_scope(&record.scope)?,
            at: Timestamp::from(record.at),
        })
    }
}

/// The record of a remembered id (its key is `entry.id`).
pub fn encode_seen(entry: &SeenEntry) -> Vec<u8> {
    let record = SeenRecord {
        v: STATE_FORMAT,
        pubkey: entry.pubkey.to_hex(),
        kind: entry.kind.as_u16(),
        created_at: entry.created_at.as_secs(),
        tags: entry
            .tags
            .iter()
            .map(|(letter, value)| (letter.to_string(), value.clone()))
            .collect(),
        expires_at: entry.expires_at.as_secs(),
    };
    encode(&record)
}

/// The remembered id a record under key `id` holds.
pub fn decode_seen(id: &[u8], bytes: &[u8]) -> Result<SeenEntry, String> {
    let id = EventId::from_slice(id).map_err(|e| format!("id: {e}"))?;
    let record: SeenRecord = decode(bytes)?;
    let tags = record
        .tags
        .into_iter()
        .map(|(letter, value)| {
            let letter =
                SingleLetterTag::from_str(&letter).map_err(|e| format!("tag {letter:?}: {e}"))?;
            Ok((letter, value))
        })
        .collect::<Result<Vec<(SingleLetterTag, String)>, String>>()?;
    Ok(SeenEntry {
        id,
        pubkey: PublicKey::from_hex(&record.pubkey).map_err(|e| format!("pubkey: {e}"))?,
        kind: Kind::from(record.kind),
        created_at: Timestamp::from(record.created_at),
        tags,
        expires_at: Timestamp::from(record.expires_at),
    })
}

/// A scope as a record holds it (see the module documentation).
pub fn scope_text(scope: &Scope) -> String {
    match scope {
        Scope::Discovery => "discovery".to_owned(),
        Scope::Item { layer, item } => match item {
            Item::Coord(c) => format!("item {} coord {c}", layer_name(*layer)),
            Item::Root(id) => format!("item {} root {}", layer_name(*layer), id.to_hex()),
        },
    }
}

/// The scope [`scope_text`] wrote.
pub fn parse_scope(text: &str) -> Result<Scope, String> {
    if text == "discovery" {
        return Ok(Scope::Discovery);
    }
    let bad = || format!("scope {text:?}");
    let mut parts = text.splitn(4, ' ');
    let (Some("item"), Some(layer), Some(what), Some(value)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let layer = Layer::ALL
        .into_iter()
        .find(|l| layer_name(*l) == layer)
        .ok_or_else(bad)?;
    let item = match what {
        "coord" => Item::Coord(RepoRef::parse(value).map_err(|e| format!("{}: {e}", bad()))?),
        "root" => Item::Root(EventId::from_hex(value).map_err(|e| format!("{}: {e}", bad()))?),
        _ => return Err(bad()),
    };
    Ok(Scope::Item { layer, item })
}

fn layer_name(layer: Layer) -> &'static str {
    match layer {
        Layer::Announcements => "announcements",
        Layer::RepoTags => "repo-tags",
        Layer::RootTags => "root-tags",
    }
}

/// A checkpoint as stored.
#[derive(Serialize, Deserialize)]
struct CheckpointRecord {
    v: u32,
    relay: String,
    scope: String,
    at: u64,
}

/// A remembered id as stored, less the id (the key).
#[derive(Serialize, Deserialize)]
struct SeenRecord {
    v: u32,
    pubkey: String,
    kind: u16,
    created_at: u64,
    tags: Vec<(String, String)>,
    expires_at: u64,
}

trait Versioned {
    fn version(&self) -> u32;
}

impl Versioned for CheckpointRecord {
    fn version(&self) -> u32 {
        self.v
    }
}

impl Versioned for SeenRecord {
    fn version(&self) -> u32 {
        self.v
    }
}

fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    // Strings and integers only: serialising cannot fail.
    serde_json::to_vec(record).unwrap_or_default()
}

fn decode<'a, T: Deserialize<'a> + Versioned>(bytes: &'a [u8]) -> Result<T, String> {
    let record: T = serde_json::from_slice(bytes).map_err(|e| format!("undecodable: {e}"))?;
    if record.version() != STATE_FORMAT {
        return Err(format!(
            "record version {} is not {STATE_FORMAT}",
            record.version()
        ));
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_decoder_keeps_each_records_own_relay() {
        let relays = ["wss://a.example.com", "wss://b.example.com/path"];
        let checkpoints: Vec<Checkpoint> = (0..6)
            .map(|n| Checkpoint {
                relay: RelayUrl::parse(relays[n % 2]).expect("relay url"),
                scope: Scope::Discovery,
                at: Timestamp::from(n as u64),
            })
            .collect();
        let mut decoder = CheckpointDecoder::default();
        for checkpoint in &checkpoints {
            let bytes = encode_checkpoint(checkpoint);
            assert_eq!(decoder.decode(&bytes).as_ref(), Ok(checkpoint));
        }
        assert!(decoder
            .decode(br#"{"v":1,"relay":"nope","scope":"discovery","at":5}"#)
            .is_err());
    }

    #[test]
    fn the_layout_is_the_documented_one() {
        let relay = RelayUrl::parse("wss://a.example.com").expect("relay url");
        let checkpoint = Checkpoint {
            relay,
            scope: Scope::Discovery,
            at: Timestamp::from(5),
        };
        let bytes = encode_checkpoint(&checkpoint);
        assert_eq!(
            String::from_utf8_lossy(&bytes),
            r#"{"v":1,"relay":"wss://a.example.com","scope":"discovery","at":5}"#
        );
        assert_eq!(decode_checkpoint(&bytes), Ok(checkpoint.clone()));
        // SHA-256 of "wss://a.example.com\ndiscovery".
        let want = sha256::Hash::hash(b"wss://a.example.com\ndiscovery").to_byte_array();
        assert_eq!(checkpoint_key(&checkpoint), want);
        let newer = br#"{"v":2,"relay":"wss://a.example.com","scope":"discovery","at":5}"#;
        assert!(decode_checkpoint(newer).is_err());
        assert!(parse_scope("item nowhere coord x").is_err());
    }
}
