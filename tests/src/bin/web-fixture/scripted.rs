//! A scripted relay for the browser tests: it serves a fixed set of events for each REQ
//! (no NIP-77: `NEG-OPEN` gets `NEG-ERR`), and can misbehave — forged copies and
//! malformed frames beside the real events, or a connection that dies mid-answer after
//! which it stops listening.

use std::net::Ipv4Addr;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use nostr::prelude::{Event, EventId, Filter, MatchEventOptions};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;

/// How a scripted relay misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Script {
    /// Each answer also holds forged copies (valid id, wrong signature; and a wrong id)
    /// of the first events and [`MALFORMED`] frames.
    Forger,
    /// The first connection that asks for events gets half of them, then the TCP
    /// connection is dropped and the relay stops listening.
    Dies,
}

/// Malformed frames a [`Script::Forger`] relay sends with each answer.
pub const MALFORMED: [&str; 3] = [
    "this is not json",
    r#"["EVENT"]"#,
    r#"["EVENT","x",{"id":"zz","kind":"one"}]"#,
];
/// Forged copies a [`Script::Forger`] relay sends with each answer (two per event for
/// the first `FORGED_PER_ANSWER / 2` matches).
pub const FORGED_PER_ANSWER: usize = 4;

/// A listening socket on a free loopback port, and its URL (known before the corpus
/// that names it is generated).
pub async fn bind() -> (TcpListener, String) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind 127.0.0.1:0");
    let port = listener.local_addr().expect("local address").port();
    (listener, format!("ws://127.0.0.1:{port}"))
}

/// Serves `events` on `listener` as `script` says, in a task of its own.
pub fn serve_on(listener: TcpListener, events: Vec<Event>, script: Script) {
    let events = Arc::new(events);
    let died = Arc::new(Notify::new());
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = died.notified() => return,
            };
            let Ok((stream, _)) = accepted else { continue };
            let events = events.clone();
            let died = died.clone();
            tokio::spawn(async move {
                let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                serve(ws, &events, script, &died).await;
            });
        }
    });
}

async fn serve(
    ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    events: &[Event],
    script: Script,
    died: &Notify,
) {
    let (mut tx, mut rx) = ws.split();
    while let Some(Ok(message)) = rx.next().await {
        let Message::Text(text) = message else {
            continue;
        };
        let Ok(Value::Array(frame)) = serde_json::from_str::<Value>(text.as_str()) else {
            continue;
        };
        let sub = frame
            .get(1)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        match frame.first().and_then(Value::as_str) {
            Some("NEG-OPEN") => {
                let answer = serde_json::json!(["NEG-ERR", sub, "blocked: no negentropy here"]);
                let _ = tx.send(Message::Text(answer.to_string().into())).await;
            }
            Some("REQ") => {
                let filters: Vec<Filter> = frame[2..]
                    .iter()
                    .filter_map(|f| Filter::from_json(f.to_string()).ok())
                    .collect();
                let matching: Vec<&Event> = events
                    .iter()
                    .filter(|e| {
                        filters
                            .iter()
                            .any(|f| f.match_event(e, MatchEventOptions::new()))
                    })
                    .collect();
                let mut frames: Vec<String> = Vec::new();
                let take = if script == Script::Dies {
                    matching.len() / 2
                } else {
                    matching.len()
                };
                for e in matching.iter().take(take) {
                    frames.push(format!(
                        "[\"EVENT\",{},{}]",
                        Value::from(sub.clone()),
                        e.as_json()
                    ));
                }
                if script == Script::Forger && !matching.is_empty() {
                    for e in matching.iter().take(FORGED_PER_ANSWER / 2) {
                        for forged in forge(e) {
                            frames
                                .push(format!("[\"EVENT\",{},{forged}]", Value::from(sub.clone())));
                        }
                    }
                    frames.extend(MALFORMED.iter().map(|m| (*m).to_owned()));
                }
                for f in frames {
                    if tx.send(Message::Text(f.into())).await.is_err() {
                        return;
                    }
                }
                if script == Script::Dies && !matching.is_empty() {
                    // Drop the TCP connection without a close frame; listen no more.
                    died.notify_one();
                    return;
                }
                let eose = serde_json::json!(["EOSE", sub]);
                let _ = tx.send(Message::Text(eose.to_string().into())).await;
            }
            _ => {}
        }
    }
}

/// Two forgeries of `e`: new content with a correct id but `e`'s signature, and `e`
/// with a changed `created_at` (its id no longer matches).
fn forge(e: &Event) -> [String; 2] {
    let content = format!("{} (forged)", e.content);
    let id = EventId::compute(&e.pubkey, &e.created_at, &e.kind, &e.tags, &content);
    let mut signed = e.clone();
    signed.id = id;
    signed.content = content;
    let mut json: Value = serde_json::from_str(&e.as_json()).unwrap_or(Value::Null);
    json["created_at"] = Value::from(e.created_at.as_secs() + 1);
    [signed.as_json(), json.to_string()]
}
