//! The demo page, served by the relay itself when `--web-dir` names a directory holding
//! `page/` (web/page) and `pkg/` (the browser module as `scripts/pack-web.sh` builds
//! it): `/` in a browser redirects to the page with this relay as its bootstrap relay,
//! so a relay's address shows a client syncing from it. Only files under those two
//! directories are served.

use std::path::{Component, Path, PathBuf};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

/// The top-level directories served.
const SERVED: [&str; 2] = ["page", "pkg"];
/// Largest file served (the `.wasm` is about 1.2 MB).
const MAX_FILE_BYTES: u64 = 32 << 20;

type Body = Full<Bytes>;

/// Where `/` sends a browser: the page, with `relay` as its bootstrap relay (and relays
/// at private addresses allowed when the daemon follows them too).
pub fn page_location(relay: &str, allow_private: bool) -> String {
    let mut location = format!("/page/?bootstrap={}", query_value(relay));
    if allow_private {
        location.push_str("&private=1");
    }
    location
}

/// A redirect to `location`.
pub fn redirect(location: &str) -> Response<Body> {
    let mut response = Response::new(Body::default());
    *response.status_mut() = StatusCode::FOUND;
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// Whether `path` (a request path) is one this module serves.
pub fn is_served(path: &str) -> bool {
    SERVED.iter().any(|dir| {
        path.strip_prefix('/')
            .and_then(|p| p.strip_prefix(dir))
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

/// The file at request path `path` under `root`, or 404 (a path outside the served
/// directories, a missing or oversized file); a directory is its `index.html`.
pub async fn serve(root: &Path, path: &str) -> Response<Body> {
    let Some(file) = resolve(root, path) else {
        return not_found();
    };
    let file = match tokio::fs::metadata(&file).await {
        // Relative links in a directory's index resolve against a trailing slash.
        Ok(meta) if meta.is_dir() && !path.ends_with('/') => return redirect(&format!("{path}/")),
        Ok(meta) if meta.is_dir() => file.join("index.html"),
        Ok(_) => file,
        Err(_) => return not_found(),
    };
    match tokio::fs::metadata(&file).await {
        Ok(meta) if meta.is_file() && meta.len() <= MAX_FILE_BYTES => {}
        _ => return not_found(),
    }
    match tokio::fs::read(&file).await {
        Ok(bytes) => {
            let mut response = Response::new(Full::new(Bytes::from(bytes)));
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(content_type(&file)),
            );
            // The page and module change with the daemon's files: always revalidated.
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            response
        }
        Err(_) => not_found(),
    }
}

/// `root` joined with the request path's segments, when they stay inside one of the
/// served directories (no `..`, no absolute or empty segments but a trailing one).
fn resolve(root: &Path, path: &str) -> Option<PathBuf> {
    if !is_served(path) {
        return None;
    }
    let relative = path.trim_start_matches('/');
    let mut out = root.to_path_buf();
    for segment in relative.split('/').filter(|s| !s.is_empty()) {
        if segment.contains(['\\', '\0', '%']) {
            return None;
        }
        let mut components = Path::new(segment).components();
        match (components.next(), components.next()) {
            (Some(Component::Normal(name)), None) => out.push(name),
            _ => return None,
        }
    }
    Some(out)
}

fn content_type(file: &Path) -> &'static str {
    match file.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ts" | "md" | "txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn not_found() -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(b"not found\n")));
    *response.status_mut() = StatusCode::NOT_FOUND;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// `value` for a URL query: unreserved characters, `:` and `/` as they are, the rest
/// percent-encoded.
fn query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b':' | b'/' => {
                out.push(byte as char);
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_files_under_page_and_pkg_resolve() {
        let root = Path::new("/srv/web");
        assert_eq!(resolve(root, "/page/"), Some(root.join("page")));
        assert_eq!(
            resolve(root, "/page/app.js"),
            Some(root.join("page/app.js"))
        );
        assert_eq!(
            resolve(root, "/pkg/snippets/x/worker.js"),
            Some(root.join("pkg/snippets/x/worker.js"))
        );
        for outside in [
            "/",
            "/pages/app.js",
            "/page/../secret",
            "/pkg/./x",
            "/page/..%2fsecret",
            "/page/a\\b",
            "/etc/passwd",
        ] {
            assert_eq!(resolve(root, outside), None, "{outside}");
        }
    }

    #[test]
    fn the_page_gets_this_relay_as_its_bootstrap_relay() {
        assert_eq!(
            page_location("wss://relay.example.com/", false),
            "/page/?bootstrap=wss://relay.example.com/"
        );
        assert_eq!(
            page_location("ws://127.0.0.1:7400/a b&c", true),
            "/page/?bootstrap=ws://127.0.0.1:7400/a%20b%26c&private=1"
        );
    }
}
