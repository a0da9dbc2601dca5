//! Raw WebSocket access to a relay: JSON frames in and out, nothing interpreted.

use std::collections::HashSet;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use nostr::prelude::{Event, EventId};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One WebSocket connection to a relay, speaking raw JSON frames: to see exactly what a
/// relay answers (`NOTICE`, `CLOSED`, `NEG-ERR`, …) without a client library in between.
pub struct RawClient {
    ws: Ws,
}

impl std::fmt::Debug for RawClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawClient").finish_non_exhaustive()
    }
}

impl RawClient {
    /// Connects to `url` (`ws://…`).
    pub async fn connect(url: &str) -> Result<Self, String> {
        let (ws, _response) = tokio_tungstenite::connect_async(url)
            .await
            .map_err(|e| format!("connect {url}: {e}"))?;
        Ok(Self { ws })
    }

    /// Connects to `url`, retrying until `timeout`; the last error on failure.
    pub async fn connect_within(url: &str, timeout: Duration) -> Result<Self, String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let attempt = tokio::time::timeout(Duration::from_secs(2), Self::connect(url)).await;
            let error = match attempt {
                Ok(Ok(client)) => return Ok(client),
                Ok(Err(e)) => e,
                Err(_) => format!("connect {url}: timed out"),
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(error);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends one text frame as is.
    pub async fn send_text(&mut self, text: &str) -> Result<(), String> {
        self.ws
            .send(Message::Text(text.into()))
            .await
            .map_err(|e| format!("send: {e}"))
    }

    /// Sends one JSON frame.
    pub async fn send(&mut self, frame: &Value) -> Result<(), String> {
        self.send_text(&frame.to_string()).await
    }

    /// Sends `["EVENT", event]`.
    pub async fn send_event(&mut self, event: &Event) -> Result<(), String> {
        self.send_text(&event_frame(event)).await
    }

    /// The next JSON frame, skipping pings and pongs; `None` when nothing came within
    /// `timeout`, or the connection closed or failed, or a text frame was not JSON.
    pub async fn recv(&mut self, timeout: Duration) -> Option<Value> {
        let text = self.recv_text(timeout).await?;
        serde_json::from_str(&text).ok()
    }

    /// The next text frame, skipping pings and pongs; `None` when nothing came within
    /// `timeout`, or the connection closed or failed.
    pub async fn recv_text(&mut self, timeout: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()??;
            match next.ok()? {
                Message::Text(text) => return Some(text.as_str().to_owned()),
                Message::Binary(bytes) => {
                    return Some(String::from_utf8_lossy(&bytes).into_owned());
                }
                Message::Close(_) => return None,
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
    }

    /// Frames until one satisfies `stop` (included), or `timeout` passes since the call
    /// (then what came so far). Use it to read a REQ up to its `EOSE`.
    pub async fn recv_until(
        &mut self,
        timeout: Duration,
        mut stop: impl FnMut(&Value) -> bool,
    ) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut frames = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(frame) = self.recv(left).await else {
                return frames;
            };
            let done = stop(&frame);
            frames.push(frame);
            if done {
                return frames;
            }
        }
    }

    /// Sends `["REQ", id, filter]` and returns the events up to `EOSE` (or the frame that
    /// ended the request: `CLOSED` or `NOTICE` are returned as the error, as is silence
    /// past `timeout`).
    pub async fn req(
        &mut self,
        id: &str,
        filter: &Value,
        timeout: Duration,
    ) -> Result<Vec<Event>, String> {
        self.send(&serde_json::json!(["REQ", id, filter])).await?;
        let mut events = Vec::new();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(frame) = self.recv(left).await else {
                return Err(format!("REQ {id}: no EOSE within {timeout:?}"));
            };
            match frame[0].as_str() {
                Some("EVENT") if frame[1] == id => {
                    let event = Event::from_json(frame[2].to_string())
                        .map_err(|e| format!("REQ {id}: bad event: {e}"))?;
                    events.push(event);
                }
                Some("EOSE") if frame[1] == id => return Ok(events),
                Some("CLOSED") if frame[1] == id => return Err(frame.to_string()),
                Some("NOTICE") => return Err(frame.to_string()),
                _ => {}
            }
        }
    }

    /// Sends a close frame and waits briefly for the relay's.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.ws.close(None)).await;
    }
}

/// `["EVENT", event]` as text.
fn event_frame(event: &Event) -> String {
    format!(r#"["EVENT",{}]"#, event.as_json())
}

/// Sends `event` over `raw` and waits (up to 10 s) for its `OK`: (accepted, message).
///
/// # Panics
/// When no `OK` for it comes in time, or the `OK` is malformed.
pub async fn publish_one(raw: &mut RawClient, event: &Event) -> (bool, String) {
    let within = Duration::from_secs(10);
    raw.send_event(event).await.expect("send EVENT");
    let id = event.id.to_hex();
    let frames = raw.recv_until(within, |f| f[0] == "OK" && f[1] == id).await;
    let ok = frames
        .last()
        .filter(|f| f[0] == "OK" && f[1] == id)
        .unwrap_or_else(|| panic!("no OK for {id} within {within:?}; got {frames:?}"));
    (
        ok[2].as_bool().expect("OK has a boolean"),
        ok[3].as_str().expect("OK has a message").to_owned(),
    )
}

/// What a relay answered to [`publish`].
#[derive(Debug, Clone, Default)]
pub struct PublishReport {
    /// Events answered `OK true` (including `duplicate:` answers).
    pub accepted: usize,
    /// Events answered `OK false`, with the relay's message.
    pub rejected: Vec<(EventId, String)>,
    /// Events that got no `OK` before the relay went quiet for the idle time-out.
    pub unanswered: usize,
    /// `NOTICE` texts received meanwhile.
    pub notices: Vec<String>,
}

/// Publishes `events` to the relay at `url` over one connection, pipelined: every
/// `EVENT` is sent without waiting, `OK`s are read as they come. Returns once every
/// event is answered, or the relay stays quiet for 30 s. Errors only when it cannot
/// connect or send.
pub async fn publish(url: &str, events: &[Event]) -> Result<PublishReport, String> {
    let client = RawClient::connect_within(url, Duration::from_secs(10)).await?;
    let (mut tx, mut rx) = client.ws.split();
    let mut waiting: HashSet<EventId> = events.iter().map(|e| e.id).collect();
    let mut report = PublishReport::default();

    let send = async {
        for event in events {
            tx.feed(Message::Text(event_frame(event).into()))
                .await
                .map_err(|e| format!("publish to {url}: {e}"))?;
        }
        tx.flush()
            .await
            .map_err(|e| format!("publish to {url}: {e}"))?;
        Ok::<_, String>(tx)
    };
    let receive = async {
        while !waiting.is_empty() {
            let next = match tokio::time::timeout(Duration::from_secs(30), rx.next()).await {
                Ok(Some(Ok(message))) => message,
                _ => break,
            };
            let Message::Text(text) = next else { continue };
            let Ok(frame) = serde_json::from_str::<Value>(text.as_str()) else {
                continue;
            };
            match frame[0].as_str() {
                Some("OK") => {
                    let Some(id) = frame[1].as_str().and_then(|s| EventId::from_hex(s).ok()) else {
                        continue;
                    };
                    if !waiting.remove(&id) {
                        continue;
                    }
                    if frame[2].as_bool() == Some(true) {
                        report.accepted += 1;
                    } else {
                        let message = frame[3].as_str().unwrap_or_default().to_owned();
                        if message.starts_with("duplicate:") {
                            report.accepted += 1;
                        } else {
                            report.rejected.push((id, message));
                        }
                    }
                }
                Some("NOTICE") => {
                    report
                        .notices
                        .push(frame[1].as_str().unwrap_or_default().to_owned());
                }
                _ => {}
            }
        }
    };
    let (sent, ()) = tokio::join!(send, receive);
    let mut tx = sent?;
    let _ = tokio::time::timeout(Duration::from_secs(1), tx.close()).await;
    report.unanswered = waiting.len();
    Ok(report)
}
