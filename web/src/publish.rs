//! Publishing a signed event to the relays of the repository it belongs to: one
//! WebSocket per relay, `EVENT`, and the relay's `OK` (or a time-out).

use std::time::Duration;

use futures::future::{join_all, select, Either};
use futures::StreamExt;
use grasp_sync_core::nip34::{self, kinds};
use grasp_sync_core::{RelayUrl, RelayUrlPolicy, RepoRef};
use grasp_sync_driver::Incoming;
use nostr::prelude::{Event, Filter};
use serde::Serialize;

use crate::idb::{IdbStore, StoreError};

/// How long a relay may take to answer `OK`.
const OK_TIMEOUT: Duration = Duration::from_secs(10);

/// What `publish` resolves with.
#[derive(Debug, Clone, Serialize)]
pub struct PublishResult {
    /// Whether it is in the database now.
    pub stored: bool,
    /// Relays that answered `OK true`.
    pub accepted: Vec<String>,
    /// Relays that refused it or did not answer, and why.
    pub refused: Vec<Refusal>,
}

/// A relay that did not take the event.
#[derive(Debug, Clone, Serialize)]
pub struct Refusal {
    /// The relay.
    pub relay: String,
    /// Its `OK false` message, or what went wrong.
    pub reason: String,
}

/// The relays of the repositories `event` belongs to (from the stored announcements, or
/// the event itself when it is one), held to the private-address rule; `fallback` when
/// none is known.
pub async fn relays_for(
    store: &IdbStore,
    event: &Event,
    allow_private: bool,
    fallback: &[RelayUrl],
) -> Result<Vec<RelayUrl>, StoreError> {
    let mut announcements = Vec::new();
    if event.kind.as_u16() == kinds::REPO_ANNOUNCEMENT.as_u16() {
        announcements.push(event.clone());
    }
    let mut repos: Vec<RepoRef> = nip34::repo_refs(event);
    if repos.is_empty() {
        let ids = nip34::referenced_ids(event);
        if !ids.is_empty() {
            for root in store.query_events(&Filter::new().ids(ids)).await? {
                repos.extend(nip34::repo_refs(&root));
            }
        }
    }
    for repo in &repos {
        let filter = Filter::new()
            .kind(kinds::REPO_ANNOUNCEMENT)
            .author(repo.pubkey)
            .identifier(repo.identifier.clone())
            .limit(1);
        announcements.extend(store.query_events(&filter).await?);
    }
    let policy = RelayUrlPolicy { allow_private };
    let mut relays: Vec<RelayUrl> = Vec::new();
    for a in &announcements {
        for url in nip34::announced_relays(a) {
            if let Ok(url) = RelayUrl::parse(url) {
                if policy.check(&url).is_ok() && !relays.contains(&url) {
                    relays.push(url);
                }
            }
        }
    }
    if relays.is_empty() {
        relays = fallback.to_vec();
    }
    Ok(relays)
}

/// Sends `event` to every relay at once; who accepted it, and who refused it and why.
pub async fn send_to(relays: &[RelayUrl], event: &Event) -> (Vec<String>, Vec<Refusal>) {
    let answers = join_all(relays.iter().map(|r| send_one(r, event))).await;
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    for (relay, answer) in relays.iter().zip(answers) {
        match answer {
            Ok(()) => accepted.push(relay.as_str().to_owned()),
            Err(reason) => refused.push(Refusal {
                relay: relay.as_str().to_owned(),
                reason,
            }),
        }
    }
    (accepted, refused)
}

async fn send_one(relay: &RelayUrl, event: &Event) -> Result<(), String> {
    let mut connection = crate::net::open(relay.as_str(), Duration::from_secs(10)).await?;
    let frame = format!("[\"EVENT\",{}]", event.as_json());
    (connection.send)(frame)?;
    let id = event.id.to_hex();
    let waiting = async {
        while let Some(incoming) = connection.incoming.next().await {
            let Incoming::Text(text) = incoming else {
                return Err("closed before answering".to_owned());
            };
            let Ok(serde_json::Value::Array(parts)) = serde_json::from_str(&text) else {
                continue;
            };
            if parts.first().and_then(|v| v.as_str()) != Some("OK")
                || parts.get(1).and_then(|v| v.as_str()) != Some(id.as_str())
            {
                continue;
            }
            let message = parts
                .get(3)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned();
            return match parts.get(2).and_then(serde_json::Value::as_bool) {
                Some(true) => Ok(()),
                _ => Err(message),
            };
        }
        Err("closed before answering".to_owned())
    };
    let timer = gloo_timers::future::TimeoutFuture::new(OK_TIMEOUT.as_millis() as u32);
    let result = match select(Box::pin(waiting), timer).await {
        Either::Left((answer, _)) => answer,
        Either::Right(_) => Err(format!("no OK within {OK_TIMEOUT:?}")),
    };
    (connection.close)();
    result
}
