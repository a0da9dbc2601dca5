//! A relay that accepts connections and answers nothing.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::loopback_url;

/// A WebSocket server on `127.0.0.1` that completes the opening handshake, then reads
/// and discards whatever a client sends and answers nothing at all — no `EOSE`, no
/// `OK`, not even a pong — for `silence` from each connection's start, after which it
/// drops the connection (no close frame). It keeps accepting: every new connection is
/// silent again. Stops listening on drop.
///
/// [`start_without_handshake`](Self::start_without_handshake) does not even answer the
/// HTTP upgrade: a connection attempt that hangs.
#[derive(Debug)]
pub struct SilentRelay {
    port: u16,
    silence: Duration,
    stats: Arc<Stats>,
    task: JoinHandle<()>,
}

#[derive(Debug, Default)]
struct Stats {
    connections: AtomicUsize,
    bytes: AtomicU64,
}

impl SilentRelay {
    /// Starts listening on a free port; each connection is handshaken, then silent for
    /// `silence`, then dropped.
    ///
    /// # Panics
    /// When it cannot listen on 127.0.0.1.
    pub async fn start(silence: Duration) -> Self {
        Self::spawn(silence, true).await
    }

    /// As [`start`](Self::start), but the WebSocket handshake is never answered either:
    /// the TCP connection is accepted and its bytes read for `silence`, then dropped.
    ///
    /// # Panics
    /// When it cannot listen on 127.0.0.1.
    pub async fn start_without_handshake(silence: Duration) -> Self {
        Self::spawn(silence, false).await
    }

    async fn spawn(silence: Duration, handshake: bool) -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("SilentRelay: bind 127.0.0.1:0");
        let port = listener
            .local_addr()
            .expect("SilentRelay: local address")
            .port();
        let stats = Arc::new(Stats::default());
        let task = tokio::spawn(accept_loop(listener, silence, handshake, stats.clone()));
        Self {
            port,
            silence,
            stats,
            task,
        }
    }

    /// `ws://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        loopback_url(self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// How long each connection stays silent before it is dropped.
    pub fn silence(&self) -> Duration {
        self.silence
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.stats.connections.load(Ordering::SeqCst)
    }

    /// Bytes read from clients after their handshakes (WebSocket frames, unparsed), or
    /// in all without a handshake.
    pub fn bytes_received(&self) -> u64 {
        self.stats.bytes.load(Ordering::SeqCst)
    }
}

impl Drop for SilentRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, silence: Duration, handshake: bool, stats: Arc<Stats>) {
    // Connection tasks are aborted with the listener when the relay is dropped.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                stats.connections.fetch_add(1, Ordering::SeqCst);
                connections.spawn(hold(stream, silence, handshake, stats.clone()));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Handshakes (if asked), then reads and discards for `silence`, then drops the stream.
async fn hold(stream: TcpStream, silence: Duration, handshake: bool, stats: Arc<Stats>) {
    let deadline = tokio::time::Instant::now() + silence;
    let mut stream = if handshake {
        let accepted =
            tokio::time::timeout_at(deadline, tokio_tungstenite::accept_async(stream)).await;
        match accepted {
            // Take the socket back: reading it raw means tungstenite never answers pings.
            Ok(Ok(ws)) => ws.into_inner(),
            _ => return,
        }
    } else {
        stream
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
            Ok(Ok(n)) => {
                stats.bytes.fetch_add(n as u64, Ordering::SeqCst);
            }
        }
    }
}
