//! The network port: the browser's WebSocket for relays and `fetch` for NIP-11.
//!
//! No pings (a page cannot send them; the core detects silent connections). Sending
//! never queues without bound: a frame is refused, and the connection closed by the
//! driver, once the socket's own `bufferedAmount` passes [`MAX_BUFFERED`].
//! The socket is web-sys's `WebSocket`, not gloo-net's: gloo-net does not expose
//! `bufferedAmount`, the back-pressure signal.

use std::future::Future;
use std::time::Duration;

use futures::channel::{mpsc, oneshot};
use futures::future::{select, Either, LocalBoxFuture};
use futures::{FutureExt, StreamExt};
use grasp_sync_core::RelayUrl;
use grasp_sync_driver::{Connection, Incoming, Network};
use wasm_bindgen::prelude::*;
use web_sys::{BinaryType, CloseEvent, MessageEvent, WebSocket};

/// Bytes a socket may hold unsent before a send is refused.
pub const MAX_BUFFERED: u32 = 4 << 20;
/// Largest NIP-11 document read.
pub const MAX_INFO_BYTES: usize = 64 << 10;

/// Timeouts of the network port.
#[derive(Debug, Clone, Copy)]
pub struct BrowserNetwork {
    /// How long opening a WebSocket may take.
    pub connect_timeout: Duration,
    /// How long a NIP-11 fetch may take.
    pub info_timeout: Duration,
}

impl Default for BrowserNetwork {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            info_timeout: Duration::from_secs(5),
        }
    }
}

/// Both start at once (the socket opens, the request goes out) — not when the future is
/// first polled — so a connection is set up while the caller does other work.
impl Network for BrowserNetwork {
    fn connect(&self, url: &RelayUrl) -> LocalBoxFuture<'static, Result<Connection, String>> {
        let opening = Opening::start(url.as_str());
        let timeout = self.connect_timeout;
        async move { opening?.finish(timeout).await }.boxed_local()
    }

    fn fetch_info(&self, url: &RelayUrl) -> LocalBoxFuture<'static, Option<String>> {
        fetch_info(&url.info_url(), self.info_timeout)
    }
}

/// A WebSocket's handlers, kept alive while the connection is; detached and the socket
/// closed when dropped.
struct Socket {
    ws: WebSocket,
    _on_open: Closure<dyn FnMut()>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut(CloseEvent)>,
    _on_error: Closure<dyn FnMut()>,
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.ws.set_onopen(None);
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
        self.ws.set_onerror(None);
        let _ = self.ws.close();
    }
}

/// Frames received on a socket; owns the socket's handlers.
struct Frames {
    frames: mpsc::UnboundedReceiver<Incoming>,
    _socket: Socket,
}

impl futures::Stream for Frames {
    type Item = Incoming;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Incoming>> {
        self.frames.poll_next_unpin(cx)
    }
}

/// Opens a WebSocket to `url` and waits (up to `timeout`) until it is open.
pub async fn open(url: &str, timeout: Duration) -> Result<Connection, String> {
    Opening::start(url)?.finish(timeout).await
}

/// A WebSocket being opened: created, its handlers set.
struct Opening {
    ws: WebSocket,
    socket: Socket,
    incoming: mpsc::UnboundedReceiver<Incoming>,
    opened: oneshot::Receiver<Result<(), String>>,
}

impl Opening {
    /// Creates the socket (the browser starts connecting at once).
    fn start(url: &str) -> Result<Self, String> {
        let ws = WebSocket::new(url).map_err(|e| js_text(&e))?;
        ws.set_binary_type(BinaryType::Arraybuffer);
        let (frames, incoming) = mpsc::unbounded::<Incoming>();
        let (opened_tx, opened) = oneshot::channel::<Result<(), String>>();
        let opened_tx = std::rc::Rc::new(std::cell::RefCell::new(Some(opened_tx)));

        let tell = opened_tx.clone();
        let on_open = Closure::<dyn FnMut()>::new(move || {
            if let Some(tx) = tell.borrow_mut().take() {
                let _ = tx.send(Ok(()));
            }
        });
        let to_engine = frames.clone();
        let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
            let data = event.data();
            let text = match data.as_string() {
                Some(text) => text,
                // Relays speak text; a binary frame is passed on as (lossy) text for the
                // engine to count as a bad frame.
                None => {
                    String::from_utf8_lossy(&js_sys::Uint8Array::new(&data).to_vec()).into_owned()
                }
            };
            let _ = to_engine.unbounded_send(Incoming::Text(text));
        });
        let tell = opened_tx.clone();
        let on_close = Closure::<dyn FnMut(CloseEvent)>::new(move |event: CloseEvent| {
            let reason = format!("closed ({}) {}", event.code(), event.reason());
            if let Some(tx) = tell.borrow_mut().take() {
                let _ = tx.send(Err(reason.clone()));
            }
            let _ = frames.unbounded_send(Incoming::Closed(reason));
            frames.close_channel();
        });
        let tell = opened_tx;
        let on_error = Closure::<dyn FnMut()>::new(move || {
            if let Some(tx) = tell.borrow_mut().take() {
                let _ = tx.send(Err("connection failed".into()));
            }
        });
        ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        ws.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        let socket = Socket {
            ws: ws.clone(),
            _on_open: on_open,
            _on_message: on_message,
            _on_close: on_close,
            _on_error: on_error,
        };
        Ok(Self {
            ws,
            socket,
            incoming,
            opened,
        })
    }

    /// Waits (up to `timeout`) until the socket is open. Dropped unfinished, the socket
    /// closes.
    async fn finish(self, timeout: Duration) -> Result<Connection, String> {
        let Self {
            ws,
            socket,
            incoming,
            opened,
        } = self;
        let millis = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
        let timer = gloo_timers::future::TimeoutFuture::new(millis);
        match select(opened, timer).await {
            Either::Left((Ok(Ok(())), _)) => {}
            Either::Left((Ok(Err(reason)), _)) => return Err(reason),
            Either::Left((Err(_), _)) => return Err("connection failed".into()),
            Either::Right(_) => return Err(format!("no connection within {timeout:?}")),
        }

        // The stream owns the handlers: dropping it detaches them and closes the socket.
        let incoming = Frames {
            frames: incoming,
            _socket: socket,
        };
        let sender = ws.clone();
        Ok(Connection {
            incoming: incoming.boxed_local(),
            send: Box::new(move |text: String| send(&sender, &text)),
            close: Box::new(move || {
                let _ = ws.close();
            }),
        })
    }
}

/// Queues `text` on `ws` unless its send buffer is already over [`MAX_BUFFERED`].
fn send(ws: &WebSocket, text: &str) -> Result<(), String> {
    if ws.ready_state() != WebSocket::OPEN {
        return Err("socket not open".into());
    }
    let queued = ws.buffered_amount();
    if queued > MAX_BUFFERED {
        return Err(format!("send buffer full ({queued} bytes unsent)"));
    }
    ws.send_with_str(text).map_err(|e| js_text(&e))
}

/// The relay's NIP-11 document, or `None` (no document, an error, a CORS refusal, too
/// large, or no answer within `timeout`). The request goes out at once.
fn fetch_info(url: &str, timeout: Duration) -> LocalBoxFuture<'static, Option<String>> {
    let Some(abort) = web_sys::AbortController::new().ok() else {
        return futures::future::ready(None).boxed_local();
    };
    let request = gloo_net::http::Request::get(url)
        .header("Accept", "application/nostr+json")
        .abort_signal(Some(&abort.signal()));
    // `send` is an async fn: polling it once issues the request.
    let mut sending = Box::pin(request.send());
    let waker = futures::task::noop_waker();
    let early = sending
        .as_mut()
        .poll(&mut std::task::Context::from_waker(&waker));
    let millis = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
    async move {
        let reading = async move {
            let response = match early {
                std::task::Poll::Ready(response) => response,
                std::task::Poll::Pending => sending.await,
            }
            .ok()?;
            if !response.ok() {
                return None;
            }
            let declared = response
                .headers()
                .get("content-length")
                .and_then(|n| n.parse::<usize>().ok());
            if declared.is_some_and(|n| n > MAX_INFO_BYTES) {
                return None;
            }
            let text = response.text().await.ok()?;
            (text.len() <= MAX_INFO_BYTES).then_some(text)
        };
        let timer = gloo_timers::future::TimeoutFuture::new(millis);
        match select(Box::pin(reading), timer).await {
            Either::Left((document, _)) => document,
            Either::Right(_) => {
                abort.abort();
                None
            }
        }
    }
    .boxed_local()
}

/// A JS exception as text.
pub fn js_text(value: &JsValue) -> String {
    if let Some(error) = value.dyn_ref::<js_sys::Error>() {
        return String::from(error.message());
    }
    value.as_string().unwrap_or_else(|| format!("{value:?}"))
}
