//! One port for HTTP and WebSocket (hyper): the relay's WebSocket and NIP-11 document
//! on `/`, `/health`, `/metrics` (Prometheus), the daemon's own API for the command
//! line (`/api/status`, `/api/sync`), answered only to requests that present the token
//! in the data directory (see [`crate::api_token`]), and with `--web-dir` the demo page
//! (see [`files`]).

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

use super::conn::{self, Shared};
use super::files;
use super::limits::{IpRegistry, Refusal};
use super::metrics::{self, names, SyncSnapshot};

/// Bytes read from a client socket at once.
const READ_BUFFER_BYTES: usize = 8 << 10;
/// Largest body `/api/sync` reads.
const MAX_API_BODY: usize = 1 << 20;
/// How long the daemon's loop thread may take to answer `/health`.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

/// A request the HTTP side hands to the daemon's loop (which owns the non-`Send` parts).
pub enum ApiRequest {
    /// `/health`: answered as soon as the loop's thread gets to it.
    Ping(oneshot::Sender<()>),
    /// `/api/status`: the status text.
    Status(oneshot::Sender<String>),
    /// `/api/sync`: run a one-shot sync of these repositories; the JSON report.
    Sync(
        serde_json::Value,
        oneshot::Sender<Result<serde_json::Value, ApiError>>,
    ),
}

/// Why the daemon's loop did not run an API request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// The request is malformed (400).
    BadRequest(String),
    /// The request asks for what the daemon's policy does not allow, e.g. a relay at a
    /// private address (403).
    Refused(String),
}

/// What the HTTP side shares.
pub struct Http {
    /// The relay's connections.
    pub shared: Arc<Shared>,
    /// Connections per address.
    pub registry: IpRegistry,
    /// The NIP-11 document.
    pub nip11: String,
    /// The engine as its loop last saw it.
    pub snapshot: Arc<Mutex<SyncSnapshot>>,
    /// Requests for the daemon's loop.
    pub api: mpsc::Sender<ApiRequest>,
    /// Take the client address from `X-Forwarded-For`.
    pub trust_forwarded_for: bool,
    /// The operator API's token.
    pub api_token: String,
    /// The demo page's files, when served (`--web-dir`).
    pub web: Option<WebFiles>,
}

/// The demo page served by the relay: `/page/` and `/pkg/` from `dir`, and `/` in a
/// browser redirected to `location` (the page, with this relay to sync from).
pub struct WebFiles {
    /// Holds `page/` and `pkg/`.
    pub dir: std::path::PathBuf,
    /// Where `/` redirects.
    pub location: String,
}

type Body = Full<Bytes>;

/// Accepts connections until `shutdown` turns true.
pub async fn accept_loop(
    listener: TcpListener,
    http: Arc<Http>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and the like: wait a little, keep serving.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let http = Arc::clone(&http);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let http = Arc::clone(&http);
                async move { Ok::<_, Infallible>(route(&http, req, peer).await) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(20))
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
        });
    }
}

async fn route(http: &Arc<Http>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let path = req.uri().path().to_owned();
    match (req.method().clone(), path.as_str()) {
        (Method::GET, "/") if is_websocket_upgrade(req.headers()) => upgrade(http, req, peer),
        (Method::GET | Method::HEAD, "/") if wants_nip11(req.headers()) => with_cors(respond(
            StatusCode::OK,
            "application/nostr+json",
            http.nip11.clone(),
        )),
        (Method::OPTIONS, _) => {
            with_cors(respond(StatusCode::NO_CONTENT, "text/plain", String::new()))
        }
        (Method::GET | Method::HEAD, "/") if http.web.is_some() => {
            files::redirect(http.web.as_ref().map_or("/", |w| w.location.as_str()))
        }
        (Method::GET | Method::HEAD, path) if files::is_served(path) => match &http.web {
            Some(web) => files::serve(&web.dir, path).await,
            None => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
        },
        (Method::GET | Method::HEAD, "/") => respond(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            "grasp-sync: a git-over-nostr (NIP-34) relay. Connect a nostr client over \
             WebSocket here; /metrics and /health are for operators.\n"
                .into(),
        ),
        (Method::GET, "/health") => health(http).await,
        (Method::GET, "/metrics") => {
            let page = {
                let snapshot = http.snapshot.lock().unwrap_or_else(PoisonError::into_inner);
                metrics::render(&http.shared.metrics, http.registry.connections(), &snapshot)
            };
            respond(StatusCode::OK, "text/plain; version=0.0.4", page)
        }
        (_, path) if path.starts_with("/api/") && !authorized(http, req.headers()) => {
            let presented = req.headers().contains_key(header::AUTHORIZATION);
            let (result, status) = if presented {
                ("forbidden", StatusCode::FORBIDDEN)
            } else {
                ("unauthorized", StatusCode::UNAUTHORIZED)
            };
            http.shared
                .metrics
                .inc(names::API_REQUESTS, ("result", result));
            let mut response = respond(
                status,
                "text/plain",
                "the operator API takes the token in the daemon's data directory \
                 (Authorization: Bearer <token>)\n"
                    .into(),
            );
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"grasp-sync operator API\""),
            );
            response
        }
        (Method::GET, "/api/status") => {
            http.shared
                .metrics
                .inc(names::API_REQUESTS, ("result", "status"));
            let (reply, answer) = oneshot::channel();
            if http.api.send(ApiRequest::Status(reply)).await.is_err() {
                return unavailable();
            }
            match answer.await {
                Ok(text) => respond(StatusCode::OK, "text/plain; charset=utf-8", text),
                Err(_) => unavailable(),
            }
        }
        (Method::POST, "/api/sync") => api_sync(http, req).await,
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

/// Whether the request presents the operator API's token.
fn authorized(http: &Http, headers: &HeaderMap) -> bool {
    let header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    crate::api_token::authorizes(header, &http.api_token)
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn unavailable() -> Response<Body> {
    respond(
        StatusCode::SERVICE_UNAVAILABLE,
        "text/plain",
        "the daemon is shutting down\n".into(),
    )
}

fn with_cors(mut response: Response<Body>) -> Response<Body> {
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, OPTIONS"),
    );
    response
}

fn header_has(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    header_has(headers, header::CONNECTION, "upgrade")
        && header_has(headers, header::UPGRADE, "websocket")
}

fn wants_nip11(headers: &HeaderMap) -> bool {
    headers.get_all(header::ACCEPT).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.contains("application/nostr+json"))
    })
}

/// The client's address: the peer, or behind a trusted proxy the last address in
/// `X-Forwarded-For` (the one the proxy saw).
fn client_ip(headers: &HeaderMap, peer: SocketAddr, trust_forwarded_for: bool) -> IpAddr {
    if trust_forwarded_for {
        let forwarded = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|a| a.trim().parse::<IpAddr>().ok())
            .next_back();
        if let Some(ip) = forwarded {
            return ip;
        }
    }
    peer.ip()
}

fn upgrade(http: &Arc<Http>, mut req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let headers = req.headers();
    let version_ok = headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v.as_bytes() == b"13");
    let Some(key) = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|_| version_ok)
    else {
        return respond(
            StatusCode::BAD_REQUEST,
            "text/plain",
            "a WebSocket upgrade needs Sec-WebSocket-Version 13 and a key\n".into(),
        );
    };
    let accept = derive_accept_key(key.as_bytes());
    let ip = client_ip(headers, peer, http.trust_forwarded_for);
    let slot = match http.registry.admit(ip) {
        Ok(slot) => slot,
        Err(refusal) => {
            let (status, reason, text) = match refusal {
                Refusal::Full => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "full",
                    "the relay holds its maximum of connections\n",
                ),
                Refusal::TooManyFromAddress => (
                    StatusCode::TOO_MANY_REQUESTS,
                    "per-address",
                    "too many connections from your address\n",
                ),
            };
            http.shared.metrics.inc(names::REFUSED, ("reason", reason));
            return respond(status, "text/plain", text.into());
        }
    };
    let shared = Arc::clone(&http.shared);
    let limits = &shared.limits;
    // A small read buffer: tungstenite zero-fills it before every read attempt, and
    // every connection with a subscription is polled for each committed batch.
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(Some(limits.max_message_bytes))
        .max_frame_size(Some(limits.max_message_bytes))
        .max_write_buffer_size((8 << 20).max(2 * limits.max_message_bytes));
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                conn::serve(ws, slot, shared).await;
            }
            Err(e) => tracing::debug!(%peer, error = %e, "WebSocket upgrade failed"),
        }
    });
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(value) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, value);
    }
    response
}

/// 200 when the daemon's loop thread answers in time (503 otherwise), with a summary.
async fn health(http: &Http) -> Response<Body> {
    let (reply, answer) = oneshot::channel();
    let alive = http.api.send(ApiRequest::Ping(reply)).await.is_ok()
        && matches!(
            tokio::time::timeout(HEALTH_TIMEOUT, answer).await,
            Ok(Ok(()))
        );
    let snapshot = http
        .snapshot
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let connected = snapshot
        .relays
        .iter()
        .filter(|r| r.phase == grasp_sync_core::engine::Phase::Open)
        .count();
    let body = serde_json::json!({
        "status": if alive { "ok" } else { "unresponsive" },
        "repositories": snapshot.repos,
        "relays": snapshot.relays.len(),
        "relays_connected": connected,
        "clients": http.registry.connections(),
        "settled": snapshot.settled,
    });
    let status = if alive {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    respond(status, "application/json", body.to_string())
}

async fn api_sync(http: &Http, req: Request<Incoming>) -> Response<Body> {
    let body = match Limited::new(req.into_body(), MAX_API_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => {
            return respond(
                StatusCode::BAD_REQUEST,
                "text/plain",
                format!("cannot read the body: {e}\n"),
            )
        }
    };
    let request: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return respond(
                StatusCode::BAD_REQUEST,
                "text/plain",
                format!("the body is not JSON: {e}\n"),
            )
        }
    };
    let (reply, answer) = oneshot::channel();
    if http
        .api
        .send(ApiRequest::Sync(request, reply))
        .await
        .is_err()
    {
        return unavailable();
    }
    let metrics = &http.shared.metrics;
    match answer.await {
        Ok(Ok(report)) => {
            metrics.inc(names::API_REQUESTS, ("result", "sync"));
            respond(StatusCode::OK, "application/json", report.to_string())
        }
        Ok(Err(ApiError::BadRequest(e))) => {
            metrics.inc(names::API_REQUESTS, ("result", "bad-request"));
            respond(StatusCode::BAD_REQUEST, "text/plain", format!("{e}\n"))
        }
        Ok(Err(ApiError::Refused(e))) => {
            metrics.inc(names::API_REQUESTS, ("result", "refused"));
            respond(StatusCode::FORBIDDEN, "text/plain", format!("{e}\n"))
        }
        Err(_) => unavailable(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_address_comes_from_the_proxy_only_when_trusted() {
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.9, 198.51.100.7"),
        );
        assert_eq!(client_ip(&headers, peer, false), peer.ip());
        assert_eq!(
            client_ip(&headers, peer, true),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(&HeaderMap::new(), peer, true), peer.ip());
    }

    #[test]
    fn upgrade_and_nip11_requests_are_recognised() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        headers.insert(header::UPGRADE, HeaderValue::from_static("WebSocket"));
        assert!(is_websocket_upgrade(&headers));
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/nostr+json"),
        );
        assert!(wants_nip11(&headers));
        assert!(!is_websocket_upgrade(&headers));
    }
}
