//! The plain REQ peer: every event at a relay downloaded over one WebSocket, paged
//! backwards, as a baseline for bytes and time.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use grasp_sync_tests::RawClient;
use nostr::prelude::{Event, EventId};
use serde_json::{json, Value};

use super::Cpu;

/// Events per page of the plain REQ download.
pub const PAGE: usize = 500;

/// What a plain REQ download took and moved.
pub struct ReqDownload {
    /// Connecting to closing.
    pub wall: Duration,
    /// CPU time of this process meanwhile (the client, and a relay running in it).
    pub cpu: Duration,
    /// Distinct events received.
    pub events: usize,
    /// Frames received (EVENTs and EOSEs).
    pub frames: usize,
    /// Frame text received.
    pub bytes_in: u64,
    /// Frame text sent.
    pub bytes_out: u64,
    /// REQs sent.
    pub round_trips: u64,
    /// Seconds asked for whole (a page that did not get past its `until`).
    pub whole_seconds: usize,
}

/// Every event at the relay over one WebSocket: `{"limit": 500, "until": T}` paged
/// backwards (`until` = the oldest `created_at` of the page, inclusive; duplicates
/// dropped). A page that does not get past its `until` (a second holding more than a
/// page) is followed by one REQ for that whole second. Events are parsed, not verified.
pub async fn req_download(url: &str) -> ReqDownload {
    let before = Cpu::now();
    let t = Instant::now();
    let mut client = RawClient::connect_within(url, Duration::from_secs(10))
        .await
        .expect("connect to the relay");
    let mut seen: HashSet<EventId> = HashSet::new();
    let mut out = ReqDownload {
        wall: Duration::ZERO,
        cpu: Duration::ZERO,
        events: 0,
        frames: 0,
        bytes_in: 0,
        bytes_out: 0,
        round_trips: 0,
        whole_seconds: 0,
    };
    let mut until: Option<u64> = None;
    let mut n = 0u64;
    loop {
        let mut filter = json!({ "limit": PAGE });
        if let Some(u) = until {
            filter["until"] = json!(u);
        }
        let page = req_page(&mut client, &mut out, &mut n, filter, &mut seen).await;
        let Some(oldest) = page.oldest else { break };
        if page.count < PAGE {
            break;
        }
        if Some(oldest) == until {
            // A full page inside one second: take the whole second, then go below it.
            out.whole_seconds += 1;
            let filter = json!({ "since": oldest, "until": oldest });
            req_page(&mut client, &mut out, &mut n, filter, &mut seen).await;
            if oldest == 0 {
                break;
            }
            until = Some(oldest - 1);
        } else {
            until = Some(oldest);
        }
    }
    client.close().await;
    out.events = seen.len();
    out.wall = t.elapsed();
    out.cpu = Cpu::now().own.saturating_sub(before.own);
    out
}

/// What one REQ brought.
struct Page {
    count: usize,
    oldest: Option<u64>,
}

/// One REQ of `filter` read to EOSE, then closed; counted into `out`, its events'
/// ids into `seen`. `n` numbers the subscriptions.
async fn req_page(
    client: &mut RawClient,
    out: &mut ReqDownload,
    n: &mut u64,
    filter: Value,
    seen: &mut HashSet<EventId>,
) -> Page {
    *n += 1;
    let sub = format!("p{n}");
    let req = json!(["REQ", sub, filter]).to_string();
    out.bytes_out += req.len() as u64;
    out.round_trips += 1;
    client.send_text(&req).await.expect("send REQ");
    let mut page = Page {
        count: 0,
        oldest: None,
    };
    loop {
        let Some(text) = client.recv_text(Duration::from_secs(60)).await else {
            panic!("REQ {filter}: no EOSE");
        };
        out.bytes_in += text.len() as u64;
        out.frames += 1;
        let mut frame: Value = serde_json::from_str(&text).expect("a JSON frame");
        match frame[0].as_str() {
            Some("EVENT") => {
                let event: Event = serde_json::from_value(frame[2].take()).expect("an event");
                page.count += 1;
                let at = event.created_at.as_secs();
                page.oldest = Some(page.oldest.map_or(at, |o| o.min(at)));
                seen.insert(event.id);
            }
            Some("EOSE") => break,
            _ => panic!("REQ {filter}: {text}"),
        }
    }
    let close = json!(["CLOSE", sub]).to_string();
    out.bytes_out += close.len() as u64;
    client.send_text(&close).await.expect("send CLOSE");
    page
}
