//! WebSockets (tokio-tungstenite, rustls with webpki roots) and NIP-11 over HTTP(S)
//! (reqwest), both refusing hosts that resolve to private addresses unless allowed.
//!
//! Each socket is owned by a tokio task that always reads: frames go to the driver
//! through a channel, frames to send come from another, and a ping every
//! [`NetConfig::ping_interval`] checks liveness (a socket silent for two intervals is
//! closed).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::LocalBoxFuture;
use futures::{FutureExt, SinkExt, StreamExt};
use grasp_sync_core::address::forbidden_ip;
use grasp_sync_core::RelayUrl;
use grasp_sync_driver::{Connection, Incoming, Network};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

/// How the network behaves.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Connect to hosts that resolve to private, loopback or link-local addresses.
    pub allow_private: bool,
    /// Relays the operator named (bootstrap relays): exempt from the private-address
    /// rule, which guards against URLs found in announcements.
    pub trusted: BTreeSet<RelayUrl>,
    /// Name resolution, TCP, TLS and the WebSocket handshake together.
    pub connect_timeout: Duration,
    /// Liveness pings; a socket that hears nothing for two intervals is closed.
    pub ping_interval: Duration,
    /// Largest incoming message.
    pub max_message_bytes: usize,
    /// NIP-11: how long the fetch may take …
    pub info_timeout: Duration,
    /// … and how large the document may be.
    pub max_info_bytes: usize,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            allow_private: false,
            trusted: BTreeSet::new(),
            connect_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(30),
            max_message_bytes: 16 << 20,
            info_timeout: Duration::from_secs(10),
            max_info_bytes: 256 << 10,
        }
    }
}

/// The native [`Network`].
#[derive(Clone)]
pub struct NativeNetwork {
    config: Arc<NetConfig>,
    /// Applies the private-address rule.
    http: reqwest::Client,
    /// For trusted relays.
    http_trusted: reqwest::Client,
}

impl NativeNetwork {
    /// A network with `config`.
    pub fn new(config: NetConfig) -> Result<Self, String> {
        let config = Arc::new(config);
        let client = |allow_private: bool| {
            reqwest::Client::builder()
                .dns_resolver(Arc::new(CheckedResolver { allow_private }))
                .timeout(config.info_timeout)
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("grasp-sync/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| format!("HTTP client: {e}"))
        };
        let http = client(config.allow_private)?;
        let http_trusted = client(true)?;
        Ok(Self {
            config,
            http,
            http_trusted,
        })
    }

    fn allows_private(&self, url: &RelayUrl) -> bool {
        self.config.allow_private || self.config.trusted.contains(url)
    }
}

impl Network for NativeNetwork {
    fn connect(&self, url: &RelayUrl) -> LocalBoxFuture<'static, Result<Connection, String>> {
        let allow_private = self.allows_private(url);
        let url = url.clone();
        let config = self.config.clone();
        async move {
            let timeout = config.connect_timeout;
            match tokio::time::timeout(timeout, open(&url, &config, allow_private)).await {
                Ok(result) => result,
                Err(_) => Err(format!("connect timeout after {timeout:?}")),
            }
        }
        .boxed_local()
    }

    fn fetch_info(&self, url: &RelayUrl) -> LocalBoxFuture<'static, Option<String>> {
        let http = if self.allows_private(url) {
            self.http_trusted.clone()
        } else {
            self.http.clone()
        };
        let max = self.config.max_info_bytes;
        let address = url.info_url();
        async move {
            match fetch_capped(&http, &address, max).await {
                Ok(text) => Some(text),
                Err(e) => {
                    tracing::debug!(url = %address, error = %e, "no NIP-11 document");
                    None
                }
            }
        }
        .boxed_local()
    }
}

async fn fetch_capped(http: &reqwest::Client, address: &str, max: usize) -> Result<String, String> {
    let response = http
        .get(address)
        .header("Accept", "application/nostr+json")
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status()));
    }
    let mut response = response;
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > max {
            return Err(format!("document larger than {max} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(|_| "document is not UTF-8".to_owned())
}

/// Resolves `host:port` and keeps only addresses the private-address rule allows.
async fn resolve(host: &str, port: u16, allow_private: bool) -> Result<Vec<SocketAddr>, String> {
    let found: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    if allow_private {
        return Ok(found);
    }
    let (allowed, refused): (Vec<SocketAddr>, Vec<SocketAddr>) = found
        .into_iter()
        .partition(|a| forbidden_ip(a.ip()).is_none());
    if allowed.is_empty() {
        return Err(match refused.first() {
            Some(a) => format!(
                "refused: {host} resolves to a private address ({}; {})",
                a.ip(),
                forbidden_ip(a.ip()).map_or("", |r| r.as_str())
            ),
            None => format!("cannot resolve {host}: no addresses"),
        });
    }
    Ok(allowed)
}

/// Opens the socket: resolve and check, TCP, then TLS and the WebSocket handshake.
async fn open(
    url: &RelayUrl,
    config: &NetConfig,
    allow_private: bool,
) -> Result<Connection, String> {
    let addresses = resolve(url.host(), url.port(), allow_private).await?;
    let mut last_error = String::from("no address");
    let mut tcp = None;
    for address in addresses {
        match TcpStream::connect(address).await {
            Ok(stream) => {
                tcp = Some(stream);
                break;
            }
            Err(e) => last_error = format!("{address}: {e}"),
        }
    }
    let tcp = tcp.ok_or(last_error)?;
    let _ = tcp.set_nodelay(true);
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(config.max_message_bytes))
        .max_frame_size(Some(config.max_message_bytes));
    let (socket, _response) =
        tokio_tungstenite::client_async_tls_with_config(url.as_str(), tcp, Some(ws_config), None)
            .await
            .map_err(|e| format!("handshake: {e}"))?;

    let (to_driver, from_socket) = mpsc::unbounded_channel::<Incoming>();
    let (to_socket, from_driver) = mpsc::unbounded_channel::<Outgoing>();
    tokio::spawn(pump(socket, to_driver, from_driver, config.ping_interval));
    let sender = to_socket.clone();
    let closer = to_socket;
    Ok(Connection {
        incoming: tokio_stream_of(from_socket),
        send: Box::new(move |text| {
            sender
                .send(Outgoing::Text(text))
                .map_err(|_| "socket closed".to_owned())
        }),
        close: Box::new(move || {
            let _ = closer.send(Outgoing::Close);
        }),
    })
}

/// What the driver asks a socket's task to do.
enum Outgoing {
    Text(String),
    Close,
}

fn tokio_stream_of(
    mut receiver: mpsc::UnboundedReceiver<Incoming>,
) -> futures::stream::LocalBoxStream<'static, Incoming> {
    futures::stream::poll_fn(move |cx| receiver.poll_recv(cx)).boxed_local()
}

/// Owns one socket: reads always, writes what the driver queues, pings for liveness.
async fn pump<S>(
    socket: tokio_tungstenite::WebSocketStream<S>,
    to_driver: mpsc::UnboundedSender<Incoming>,
    mut from_driver: mpsc::UnboundedReceiver<Outgoing>,
    ping_interval: Duration,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut sink, mut stream) = socket.split();
    let mut ping = tokio::time::interval(ping_interval);
    ping.tick().await;
    let mut heard_since_ping = true;
    let reason = loop {
        tokio::select! {
            message = stream.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    heard_since_ping = true;
                    if to_driver.send(Incoming::Text(text.as_str().to_owned())).is_err() {
                        break "driver gone".to_owned();
                    }
                }
                Some(Ok(Message::Binary(_))) => heard_since_ping = true,
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {
                    heard_since_ping = true;
                }
                Some(Ok(Message::Close(frame))) => {
                    break match frame {
                        Some(f) => format!("closed by relay: {} {}", f.code, f.reason),
                        None => "closed by relay".to_owned(),
                    };
                }
                Some(Err(e)) => break format!("read: {e}"),
                None => break "connection ended".to_owned(),
            },
            outgoing = from_driver.recv() => match outgoing {
                Some(Outgoing::Text(text)) => {
                    if let Err(e) = sink.send(Message::text(text)).await {
                        break format!("write: {e}");
                    }
                }
                Some(Outgoing::Close) | None => {
                    let _ = sink.send(Message::Close(None)).await;
                    let _ = sink.close().await;
                    return;
                }
            },
            _ = ping.tick() => {
                if !heard_since_ping {
                    break "no answer to ping".to_owned();
                }
                heard_since_ping = false;
                if let Err(e) = sink.send(Message::Ping(Vec::new().into())).await {
                    break format!("write: {e}");
                }
            }
        }
    };
    let _ = to_driver.send(Incoming::Closed(reason));
    let _ = sink.close().await;
}

/// reqwest's name resolution with the private-address rule applied.
struct CheckedResolver {
    allow_private: bool,
}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let addresses = resolve(name.as_str(), 0, allow_private)
                .await
                .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { e.into() })?;
            let addrs: reqwest::dns::Addrs = Box::new(addresses.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_url_swaps_the_scheme() {
        let url = RelayUrl::parse("wss://relay.example.com/path").expect("url");
        assert_eq!(url.info_url(), "https://relay.example.com/path");
        let url = RelayUrl::parse("ws://relay.example.com:7000").expect("url");
        assert_eq!(url.info_url(), "http://relay.example.com:7000");
    }

    #[tokio::test]
    async fn names_resolving_to_loopback_are_refused_unless_allowed() {
        let refused = resolve("localhost", 80, false).await;
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.contains("private address")),
            "{refused:?}"
        );
        let allowed = resolve("localhost", 80, true).await.expect("resolves");
        assert!(allowed.iter().all(|a| a.ip().is_loopback()));
    }

    #[tokio::test]
    async fn connecting_to_a_private_name_fails_before_any_packet() {
        // A listener where `localhost` points: it must never see a connection.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback listener");
        let port = listener.local_addr().expect("listener address").port();
        let network = NativeNetwork::new(NetConfig {
            connect_timeout: Duration::from_secs(2),
            ..NetConfig::default()
        })
        .expect("network");
        let url = RelayUrl::parse(&format!("ws://localhost:{port}")).expect("url");
        let result = network.connect(&url).await;
        // Our own refusal, not the OS's "Connection refused" nor a timeout.
        assert!(
            result
                .as_ref()
                .is_err_and(|e| e.starts_with("refused: localhost resolves to a private address")),
            "{:?}",
            result.err()
        );
        let info = network.fetch_info(&url).await;
        assert_eq!(info, None, "the NIP-11 fetch is refused too");
        let accepted = tokio::time::timeout(Duration::from_millis(300), listener.accept()).await;
        assert!(
            accepted.is_err(),
            "the listener saw a connection: {accepted:?}"
        );
    }
}
