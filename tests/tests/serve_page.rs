//! `grasp-sync serve --web-dir` serves the demo page: a browser opening the relay's
//! address is sent to the page with this relay to sync from, and only the page's and
//! the module's files are served (the browser test in web/e2e loads the page from the
//! daemon and syncs).

use std::time::Duration;

use grasp_sync_tests::Daemon;

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("an HTTP client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_serves_the_page_and_sends_browsers_to_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let web = dir.path().join("web");
    std::fs::create_dir_all(web.join("page")).expect("page dir");
    std::fs::create_dir_all(web.join("pkg/snippets/s")).expect("pkg dir");
    std::fs::write(
        web.join("page/index.html"),
        "<!doctype html><title>page</title>",
    )
    .expect("write");
    std::fs::write(web.join("pkg/grasp_sync_web_bg.wasm"), b"\0asm").expect("write");
    std::fs::write(web.join("pkg/snippets/s/worker.js"), "export {};").expect("write");
    std::fs::write(dir.path().join("secret"), "not for strangers").expect("write");
    let web_dir = web.display().to_string();
    let daemon = Daemon::start(&dir.path().join("store"), &["--web-dir", &web_dir]).await;
    let client = http();
    let get = |path: &str| client.get(format!("{}{path}", daemon.http_url())).send();

    let root = get("/").await.expect("answers");
    assert_eq!(root.status(), reqwest::StatusCode::FOUND);
    let location = root.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert_eq!(
        location,
        format!("/page/?bootstrap={}&private=1", daemon.url()),
        "the page syncs from this relay (at a loopback address, which it follows)"
    );
    let bare = get("/page").await.expect("answers");
    assert_eq!(bare.status(), reqwest::StatusCode::FOUND);
    assert_eq!(bare.headers()["location"], "/page/");
    let page = get("/page/").await.expect("answers");
    assert_eq!(page.status(), reqwest::StatusCode::OK);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    assert!(page
        .text()
        .await
        .expect("a body")
        .contains("<title>page</title>"));
    let wasm = get("/pkg/grasp_sync_web_bg.wasm").await.expect("answers");
    assert_eq!(wasm.headers()["content-type"], "application/wasm");
    assert_eq!(wasm.bytes().await.expect("a body").as_ref(), b"\0asm");
    let worker = get("/pkg/snippets/s/worker.js").await.expect("answers");
    assert_eq!(
        worker.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    for outside in [
        "/page/%2e%2e/%2e%2e/secret",
        "/pkg/missing.js",
        "/secret",
        "/pages/",
    ] {
        let response = get(outside).await.expect("answers");
        assert_eq!(
            response.status(),
            reqwest::StatusCode::NOT_FOUND,
            "{outside}"
        );
    }
    // The relay side is unchanged: NIP-11 on request.
    let nip11 = client
        .get(daemon.http_url())
        .header("Accept", "application/nostr+json")
        .send()
        .await
        .expect("answers");
    assert_eq!(nip11.headers()["content-type"], "application/nostr+json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_web_dir_no_page_is_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(&dir.path().join("store"), &[]).await;
    let client = http();
    let root = client.get(daemon.http_url()).send().await.expect("answers");
    assert_eq!(root.status(), reqwest::StatusCode::OK);
    assert!(root
        .text()
        .await
        .expect("a body")
        .contains("git-over-nostr"));
    let page = client
        .get(format!("{}/page/", daemon.http_url()))
        .send()
        .await
        .expect("answers");
    assert_eq!(page.status(), reqwest::StatusCode::NOT_FOUND);
}
