//! The daemon's operator API (`/api/status`, `/api/sync`) cannot be used by strangers:
//! it answers only requests carrying the token in the data directory, a request cannot
//! widen the daemon's policy (private relays, announcement acceptance), and the
//! operator's own `grasp-sync sync` / `status` still hand over to the daemon.

use std::time::Duration;

use grasp_sync_testkit::{Corpus, CorpusSpec};
use grasp_sync_tests::{
    counter_value, metric_value, run_grasp_sync, sync_args, Daemon, Nip77Relay, RawClient,
};
use nostr::prelude::Kind;
use serde_json::json;

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client")
}

/// `grasp_sync_api_requests_total{result="<result>"}` in the daemon's `/metrics`.
async fn api_requests(daemon: &Daemon, result: &str) -> u64 {
    let series = format!("grasp_sync_api_requests_total{{result=\"{result}\"}}");
    counter_value(&daemon.metrics().await, &series)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_refuses_requests_without_the_data_directory_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(&dir.path().join("store"), &[]).await;
    let client = http();
    let sync_body = json!({"repos": [], "relays": []});

    let status = client
        .get(format!("{}/api/status", daemon.http_url()))
        .send()
        .await
        .expect("answers");
    assert_eq!(status.status(), reqwest::StatusCode::UNAUTHORIZED);
    assert!(status.headers().contains_key("www-authenticate"));
    let sync = client
        .post(format!("{}/api/sync", daemon.http_url()))
        .json(&sync_body)
        .send()
        .await
        .expect("answers");
    assert_eq!(sync.status(), reqwest::StatusCode::UNAUTHORIZED);
    // A proxy's forwarded address is no credential either.
    let forwarded = client
        .get(format!("{}/api/status", daemon.http_url()))
        .header("X-Forwarded-For", "127.0.0.1")
        .send()
        .await
        .expect("answers");
    assert_eq!(forwarded.status(), reqwest::StatusCode::UNAUTHORIZED);
    let wrong = client
        .get(format!("{}/api/status", daemon.http_url()))
        .bearer_auth("0".repeat(64))
        .send()
        .await
        .expect("answers");
    assert_eq!(wrong.status(), reqwest::StatusCode::FORBIDDEN);
    assert_eq!(api_requests(&daemon, "unauthorized").await, 3);
    assert_eq!(api_requests(&daemon, "forbidden").await, 1);

    let ok = client
        .get(format!("{}/api/status", daemon.http_url()))
        .bearer_auth(daemon.api_token())
        .send()
        .await
        .expect("answers");
    assert_eq!(ok.status(), reqwest::StatusCode::OK);
    assert!(ok.text().await.expect("a body").contains("daemon: pid"));
    assert_eq!(api_requests(&daemon, "status").await, 1);

    // Even with the token, a request cannot set the daemon's own policy.
    let widen = client
        .post(format!("{}/api/sync", daemon.http_url()))
        .bearer_auth(daemon.api_token())
        .json(&json!({"repos": [], "relays": [], "allow_private_relays": true}))
        .send()
        .await
        .expect("answers");
    assert_eq!(widen.status(), reqwest::StatusCode::BAD_REQUEST);
    assert_eq!(api_requests(&daemon, "bad-request").await, 1);
}

/// A daemon that refuses private relays refuses a hand-over naming one, and never
/// connects to it: a listener on loopback sees no connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_naming_a_private_relay_is_refused_without_a_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start_strict(&dir.path().join("store"), &[]).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback listener");
    let port = listener.local_addr().expect("its address").port();
    let corpus = Corpus::generate(&CorpusSpec {
        repos: 1,
        events_per_repo: 2,
        ..CorpusSpec::default()
    });
    let repo = corpus.repos[0].to_string();

    let response = http()
        .post(format!("{}/api/sync", daemon.http_url()))
        .bearer_auth(daemon.api_token())
        .json(&json!({"repos": [repo], "relays": [format!("ws://127.0.0.1:{port}")]}))
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), reqwest::StatusCode::FORBIDDEN);
    let text = response.text().await.expect("a body");
    assert!(text.contains("private relays"), "{text}");
    assert_eq!(api_requests(&daemon, "refused").await, 1);
    assert_eq!(api_requests(&daemon, "sync").await, 0);

    // The operator's command line gets the same answer, with a non-zero exit.
    let relays = [format!("ws://127.0.0.1:{port}")];
    let args = sync_args(&corpus.repos, &relays, &dir.path().join("store"));
    let run = run_grasp_sync(&args).await;
    assert_ne!(run.code, Some(0), "{run:#?}");
    assert!(run.stderr.contains("403"), "{}", run.stderr);
    assert_eq!(api_requests(&daemon, "refused").await, 2);

    let accepted = tokio::time::timeout(Duration::from_secs(2), listener.accept()).await;
    assert!(
        accepted.is_err(),
        "the daemon connected to the private relay it was asked for"
    );
}

/// A `list-us` daemon (the default) does not start tracking a repository whose
/// announcement does not list it, even when its operator hands it over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_over_of_a_repository_that_does_not_list_the_daemon_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let daemon = Daemon::start(&store, &[]).await;
    let relay = Nip77Relay::start(&[]).await;
    let corpus = Corpus::generate(&CorpusSpec {
        seed: 71,
        repos: 2,
        events_per_repo: 10,
        relays: vec![relay.url()],
        relays_per_repo: 1,
        ..CorpusSpec::default()
    });
    relay.add(&corpus.events).await;

    let run = run_grasp_sync(&sync_args(&corpus.repos, &[relay.url()], &store)).await;
    assert!(
        run.stderr.contains("handing the repositories to it"),
        "{}",
        run.stderr
    );
    assert_ne!(run.code, Some(0), "nothing was tracked: {run:#?}");
    let summary = run.summary.as_ref().expect("a JSON summary");
    assert_eq!(summary["repos"].as_u64(), Some(0), "{summary}");
    let not_tracked: Vec<&str> = summary["not_tracked"]
        .as_array()
        .expect("not_tracked")
        .iter()
        .filter_map(serde_json::Value::as_str)
        .collect();
    let wanted: Vec<String> = corpus.repos.iter().map(ToString::to_string).collect();
    assert_eq!(not_tracked, wanted, "{summary}");
    let rejected: u64 = run
        .relays()
        .iter()
        .filter_map(|r| r["rejected"].as_object())
        .flat_map(|m| m.values().filter_map(serde_json::Value::as_u64))
        .sum();
    assert!(rejected >= 2, "the announcements were refused: {summary}");

    let page = daemon.metrics().await;
    assert_eq!(
        metric_value(&page, "grasp_sync_repositories"),
        Some(0),
        "{page}"
    );
    let mut client = RawClient::connect(&daemon.url()).await.expect("connect");
    let served = client
        .req("all", &json!({"limit": 5000}), Duration::from_secs(10))
        .await
        .expect("REQ answers");
    assert!(
        served
            .iter()
            .all(|s| corpus.events.iter().all(|e| e.id != s.id)),
        "the daemon stored events of a repository its policy refuses"
    );
    assert!(corpus
        .events
        .iter()
        .any(|e| e.kind == Kind::GitRepoAnnouncement));
}
