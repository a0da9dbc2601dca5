//! Sync state records: checkpoints and remembered ids, as JSON strings (the same fields
//! as the native store's records).

use std::str::FromStr;

use grasp_sync_core::engine::{Checkpoint, Scope};
use grasp_sync_core::seen::SeenEntry;
use grasp_sync_core::{Item, Layer};
use grasp_sync_core::{RelayUrl, RepoRef};
use nostr::prelude::{EventId, Kind, PublicKey, SingleLetterTag, Timestamp};
use serde::{Deserialize, Serialize};

/// The record format written.
const FORMAT: u32 = 1;

/// A checkpoint's key: one per relay and scope.
pub fn checkpoint_key(c: &Checkpoint) -> String {
    format!("{}\n{}", c.relay.as_str(), scope_text(&c.scope))
}

#[derive(Serialize, Deserialize)]
struct CheckpointRecord {
    v: u32,
    relay: String,
    scope: String,
    at: u64,
}

/// A checkpoint as stored.
pub fn encode_checkpoint(c: &Checkpoint) -> String {
    let record = CheckpointRecord {
        v: FORMAT,
        relay: c.relay.as_str().to_owned(),
        scope: scope_text(&c.scope),
        at: c.at.as_secs(),
    };
    serde_json::to_string(&record).unwrap_or_default()
}

/// A stored checkpoint.
pub fn decode_checkpoint(text: &str) -> Result<Checkpoint, String> {
    let r: CheckpointRecord = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if r.v != FORMAT {
        return Err(format!("checkpoint format {}", r.v));
    }
    Ok(Checkpoint {
        relay: RelayUrl::parse(&r.relay).map_err(|e| format!("relay {:?}: {e}", r.relay))?,
        scope: parse_scope(&r.scope)?,
        at: Timestamp::from(r.at),
    })
}

#[derive(Serialize, Deserialize)]
struct SeenRecord {
    v: u32,
    pubkey: String,
    kind: u16,
    created_at: u64,
    tags: Vec<(String, String)>,
    expires_at: u64,
}

/// A remembered id as stored (its key is the id).
pub fn encode_seen(e: &SeenEntry) -> String {
    let record = SeenRecord {
        v: FORMAT,
        pubkey: e.pubkey.to_hex(),
        kind: e.kind.as_u16(),
        created_at: e.created_at.as_secs(),
        tags: e
            .tags
            .iter()
            .map(|(letter, value)| (letter.to_string(), value.clone()))
            .collect(),
        expires_at: e.expires_at.as_secs(),
    };
    serde_json::to_string(&record).unwrap_or_default()
}

/// A stored remembered id.
pub fn decode_seen(id: &str, text: &str) -> Result<SeenEntry, String> {
    let r: SeenRecord = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if r.v != FORMAT {
        return Err(format!("seen format {}", r.v));
    }
    let tags = r
        .tags
        .into_iter()
        .map(|(letter, value)| {
            SingleLetterTag::from_str(&letter)
                .map(|l| (l, value))
                .map_err(|e| format!("tag {letter:?}: {e}"))
        })
        .collect::<Result<_, _>>()?;
    Ok(SeenEntry {
        id: EventId::from_hex(id).map_err(|e| format!("id: {e}"))?,
        pubkey: PublicKey::from_hex(&r.pubkey).map_err(|e| format!("pubkey: {e}"))?,
        kind: Kind::from(r.kind),
        created_at: Timestamp::from(r.created_at),
        tags,
        expires_at: Timestamp::from(r.expires_at),
    })
}

fn layer_name(layer: Layer) -> &'static str {
    match layer {
        Layer::Announcements => "announcements",
        Layer::RepoTags => "repo-tags",
        Layer::RootTags => "root-tags",
    }
}

fn scope_text(scope: &Scope) -> String {
    match scope {
        Scope::Discovery => "discovery".to_owned(),
        Scope::Item { layer, item } => match item {
            Item::Coord(c) => format!("item {} coord {c}", layer_name(*layer)),
            Item::Root(id) => format!("item {} root {}", layer_name(*layer), id.to_hex()),
        },
    }
}

fn parse_scope(text: &str) -> Result<Scope, String> {
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
