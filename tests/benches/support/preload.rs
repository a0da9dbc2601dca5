//! Preloading a `grasp-sync serve` daemon by publishing to it, as clients would.

use std::collections::BTreeMap;

use grasp_sync_tests::{publish, PublishReport};
use nostr::prelude::Event;

use super::corpus::{KIND_ANNOUNCEMENT, KIND_DELETION};

/// Connections a preload publishes over.
pub const PRELOAD_CONNECTIONS: usize = 4;

/// What the daemon answered to a staged publish.
#[derive(Default)]
pub struct Published {
    /// `OK true`.
    pub accepted: usize,
    /// `OK false`.
    pub refused: usize,
    /// Refusals by the prefix of their message.
    pub refusals: BTreeMap<String, usize>,
    /// No `OK` at all.
    pub unanswered: usize,
}

impl Published {
    fn tally(&mut self, report: &PublishReport) {
        self.accepted += report.accepted;
        self.refused += report.rejected.len();
        self.unanswered += report.unanswered;
        for (_, message) in &report.rejected {
            let reason = message.split(':').next().unwrap_or_default().to_owned();
            *self.refusals.entry(reason).or_default() += 1;
        }
    }
}

/// Publishes `events` in the order a relay that judges each event on arrival needs:
/// announcements (oldest first), events tagging a repository (roots among them), the
/// rest (replies name their root), deletions; each stage over
/// [`PRELOAD_CONNECTIONS`] connections at once.
pub async fn publish_staged(url: &str, events: &[Event]) -> Published {
    let mut out = Published::default();
    for stage in stages(events) {
        let chunk = stage.len().div_ceil(PRELOAD_CONNECTIONS).max(1);
        let parts: Vec<_> = stage
            .chunks(chunk)
            .map(|part| {
                let url = url.to_owned();
                let part = part.to_vec();
                tokio::spawn(async move { publish(&url, &part).await.expect("publish") })
            })
            .collect();
        for part in parts {
            out.tally(&part.await.expect("a publishing task"));
        }
    }
    out
}

/// Announcements (oldest first), events with an `a`/`A` tag, other events, deletions.
fn stages(events: &[Event]) -> [Vec<Event>; 4] {
    let mut stages: [Vec<Event>; 4] = Default::default();
    for e in events {
        let tags_repo = e.tags.iter().any(|t| {
            matches!(
                t.as_slice().first().map(String::as_str),
                Some("a") | Some("A")
            )
        });
        let stage = match e.kind.as_u16() {
            KIND_ANNOUNCEMENT => 0,
            KIND_DELETION => 3,
            _ if tags_repo => 1,
            _ => 2,
        };
        stages[stage].push(e.clone());
    }
    stages[0].sort_by_key(|e| e.created_at);
    stages
}
