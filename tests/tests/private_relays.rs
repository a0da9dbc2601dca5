//! The private-address rule end to end: an announcement lists a relay under a
//! public-looking name that resolves to loopback, and `grasp-sync sync` (without
//! `--allow-private-relays`) must refuse it before opening any connection.
//!
//! The name is made to resolve to 127.0.0.1 without touching the machine's
//! `/etc/hosts`: `grasp-sync` runs under `unshare -rm` (a user and mount namespace of
//! its own) with a private hosts file bind-mounted over `/etc/hosts` for that process
//! only. A control run with `--allow-private-relays` in the same setup proves the name
//! does reach the listener.

use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use grasp_sync_tests::{corpus, grasp_sync_bin, sync_args, Nip77Relay};

/// The public-looking name the private hosts file points at 127.0.0.1.
const NAME: &str = "relay.example.com";

/// A loopback listener that counts (and drops) every connection it is offered.
async fn counting_listener() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback listener");
    let port = listener.local_addr().expect("listener address").port();
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });
    (port, seen)
}

/// Runs `grasp-sync args` with `hosts` bind-mounted over `/etc/hosts` (in namespaces of
/// its own); returns its exit code, standard output and standard error.
async fn run_with_hosts(hosts: &std::path::Path, args: &[String]) -> (Option<i32>, String, String) {
    let output = tokio::process::Command::new("unshare")
        .args([
            "-rm",
            "sh",
            "-c",
            r#"mount --bind "$0" /etc/hosts && exec "$@""#,
        ])
        .arg(hosts)
        .arg(grasp_sync_bin())
        .args(args)
        .env("RUST_LOG", "warn,grasp_sync_driver=info")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("unshare runs (util-linux)");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A 20-second deadline instead of `sync_args`' 120 s.
fn shorten(args: &mut [String]) {
    if let Some(i) = args.iter().position(|a| a == "--timeout-secs") {
        args[i + 1] = "20".into();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_name_resolving_to_loopback_is_refused_before_any_connection() {
    let (port, seen) = counting_listener().await;
    let private = format!("ws://{NAME}:{port}");
    // The announcements list a reachable relay (named on the command line, so trusted)
    // and the private one.
    let a = Nip77Relay::start(&[]).await;
    let corpus = corpus(71, 2, 10, &[a.url(), private.clone()]);
    a.add(&corpus.events).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, format!("127.0.0.1 localhost\n127.0.0.1 {NAME}\n"))
        .expect("write the private hosts file");
    let mut args = sync_args(&corpus.repos, &[a.url()], &dir.path().join("store"));
    args.retain(|a| a != "--allow-private-relays");
    shorten(&mut args);

    let (code, stdout, stderr) = run_with_hosts(&hosts, &args).await;
    let connections = seen.load(Ordering::SeqCst);
    assert_eq!(
        connections, 0,
        "the private relay saw {connections} connections\n{stdout}\n{stderr}"
    );
    let refusal = format!("refused: {NAME} resolves to a private address (127.0.0.1");
    assert!(
        stderr.contains(&refusal),
        "no refusal of {private} in the log (exit {code:?})\n{stdout}\n{stderr}"
    );
    let summary: serde_json::Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON summary\n{stdout}\n{stderr}"));
    let relays = summary["relays"].as_array().cloned().unwrap_or_default();
    let refused = relays
        .iter()
        .find(|r| r["url"] == private.as_str())
        .unwrap_or_else(|| panic!("{private} not in the summary: {summary}"));
    assert!(refused["failures"].as_u64() >= Some(1), "{refused}");
    assert_eq!(refused["bytes_in"], 0, "{refused}");
    assert_eq!(refused["bytes_out"], 0, "{refused}");
    // The trusted relay on the command line answered all the same (its announcements).
    assert!(
        summary["stored"].as_u64() > Some(0),
        "nothing stored from {}: {summary}",
        a.url()
    );

    // Control: with private relays allowed, the same name reaches the listener.
    let control_dir = tempfile::tempdir().expect("tempdir");
    let mut control = sync_args(&corpus.repos, &[a.url()], control_dir.path());
    shorten(&mut control);
    let (_, stdout, stderr) = run_with_hosts(&hosts, &control).await;
    assert!(
        seen.load(Ordering::SeqCst) > 0,
        "{NAME} did not resolve to the listener: the test proves nothing\n{stdout}\n{stderr}"
    );
}
