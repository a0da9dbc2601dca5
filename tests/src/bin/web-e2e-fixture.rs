//! The relays of the browser end-to-end tests (web/e2e), on loopback: `grasp-sync serve`
//! (NIP-77) and `nostr-rs-relay` (no NIP-77), each preloaded with an overlapping part of
//! a generated NIP-34 corpus whose announcements list both (or the daemon alone, below).
//!
//! Prints one JSON line: the relays' URLs and, for the first repository, what a correct
//! client shows (every issue, patch and pull request with its title, status and comment
//! count). Then reads commands on standard input, one per line, and answers each with
//! one JSON line:
//!
//! - `publish [N]`: publishes N (default 1) new issues of that repository to both relays;
//! - `publish-mix [N]`: publishes N events to both relays, mixed as a repository's new
//!   activity is: of every ten, two new issues (of each repository in turn), five
//!   comments and three statuses on issues, patches and pull requests already there
//!   (comments carry no repository tag: only a client asking by root finds them);
//! - `stop`: stops both relays (their ports and data are kept);
//! - `start`: starts them again on the same ports;
//! - `quit`, or the end of input: stops everything and exits.
//!
//! `GRASP_E2E_EVENTS` sets the events per repository (default 1 000);
//! `GRASP_E2E_RELAYS=daemon` runs the daemon alone, holding every event, with
//! announcements that list only it (`nostrRsRelay` is then null);
//! `GRASP_E2E_WEB_DIR` (a directory holding `page/` and `pkg/`) has the daemon serve the
//! demo page (`--web-dir`).

use std::collections::{HashMap, HashSet};

use grasp_sync_testkit::corpus::{keys, sign};
use grasp_sync_testkit::Corpus;
use grasp_sync_tests::{corpus, publish, split, Daemon, NostrRsRelay};
use nostr::prelude::Event;
use serde_json::{json, Value};

const REPOS: usize = 2;
const STATUS_KINDS: [u16; 4] = [1630, 1631, 1632, 1633];

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let per_repo = std::env::var("GRASP_E2E_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let data = tempfile::tempdir().expect("a temporary directory");
    // Preloading from one address needs the EVENT rates raised.
    let rates = [
        "--events-per-minute",
        "100000000",
        "--events-per-minute-per-ip",
        "100000000",
    ];
    // With GRASP_E2E_WEB_DIR (page/ and pkg/), the daemon serves the demo page too.
    let web_dir = std::env::var("GRASP_E2E_WEB_DIR").ok();
    let mut args: Vec<&str> = rates.to_vec();
    if let Some(dir) = &web_dir {
        args.extend(["--web-dir", dir.as_str()]);
    }
    let daemon_alone = std::env::var("GRASP_E2E_RELAYS").is_ok_and(|v| v == "daemon");
    let mut daemon = Daemon::start(&data.path().join("daemon"), &args).await;
    let mut nrr = if daemon_alone {
        None
    } else {
        Some(NostrRsRelay::start().await)
    };
    let relays: Vec<String> = std::iter::once(daemon.url())
        .chain(nrr.as_ref().map(NostrRsRelay::url))
        .collect();
    let corpus = corpus(34, REPOS, per_repo, &relays);
    let (to_daemon, to_nrr) = match &nrr {
        None => (publish(&daemon.url(), &staged(&corpus.events)).await, None),
        Some(nrr) => {
            // Each relay gets about 60 % of the events, so only both together hold the
            // whole set; roots go to both (like announcements), since the daemon refuses
            // a reply to a root it does not hold.
            let mut parts = split(&corpus.events, 2, 60, 34);
            for part in &mut parts {
                let held: HashSet<_> = part.iter().map(|e| e.id).collect();
                let roots = corpus.events.iter().filter(|e| is_root(e));
                let missing: Vec<Event> =
                    roots.filter(|e| !held.contains(&e.id)).cloned().collect();
                part.extend(missing);
            }
            let to_daemon = publish(&daemon.url(), &staged(&parts[0])).await;
            (to_daemon, Some(nrr.publish(&parts[1]).await))
        }
    };

    if let Ok(report) = &to_daemon {
        // Older announcement versions are refused as replaced, and an event the corpus
        // deletes may be refused as deleted (the daemon's own sync can fetch the
        // deletion from nostr-rs-relay first): neither is in the expectation. Anything
        // else refused would be missing from it.
        let refused: Vec<_> = report
            .rejected
            .iter()
            .filter(|(id, why)| !why.starts_with("replaced:") && corpus.acceptable.contains(id))
            .collect();
        if !refused.is_empty() || report.unanswered > 0 {
            eprintln!(
                "web-e2e-fixture: the daemon refused {} and left {} unanswered, e.g. {:?}",
                refused.len(),
                report.unanswered,
                refused.first()
            );
            std::process::exit(1);
        }
    }
    let repo = corpus.repos[0].to_string();
    let line = json!({
        "daemon": daemon.url(),
        "daemonHttp": daemon.http_url(),
        "nostrRsRelay": nrr.as_ref().map(NostrRsRelay::url),
        "preloaded": {
            "daemon": to_daemon.as_ref().map(|r| r.accepted).unwrap_or(0),
            "nostrRsRelay": to_nrr.map(|r| r.accepted),
        },
        "repo": expectation(&corpus, 0),
        "otherRepos": corpus.repos[1..].iter().map(ToString::to_string).collect::<Vec<_>>(),
    });
    println!("{line}");

    let roots: Vec<Event> = corpus
        .events
        .iter()
        .filter(|e| is_root(e))
        .cloned()
        .collect();
    let mut published = 0;
    let mut commands = commands();
    while let Some(command) = commands.recv().await {
        let mut words = command.split_whitespace();
        let answer = match words.next().unwrap_or_default() {
            command @ ("publish" | "publish-mix") => {
                let n: u64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(1);
                let events: Vec<Event> = (0..n)
                    .map(|_| {
                        published += 1;
                        if command == "publish" {
                            new_issue(published, &repo)
                        } else {
                            new_activity(published, &corpus.repos, &roots)
                        }
                    })
                    .collect();
                let a = publish(&daemon.url(), &events).await;
                let b = match &nrr {
                    Some(nrr) => publish(&nrr.url(), &events).await.map(|r| r.accepted),
                    None => Ok(0),
                };
                let issue = events.iter().rev().find(|e| e.kind.as_u16() == 1621);
                let last = issue.map(|e| (e.id.to_hex(), first(e, "subject")));
                json!({
                    "published": last.map(|(id, title)| json!({ "id": id, "title": title })),
                    "count": events.len(),
                    "accepted": [a.map(|r| r.accepted).unwrap_or(0), b.unwrap_or(0)],
                })
            }
            "stop" => {
                daemon.stop().await;
                if let Some(nrr) = &mut nrr {
                    nrr.stop().await;
                }
                json!({ "stopped": true })
            }
            "start" => {
                daemon.restart().await;
                if let Some(nrr) = &mut nrr {
                    nrr.resume().await;
                }
                json!({ "started": true })
            }
            "quit" => break,
            other => json!({ "error": format!("unknown command {other:?}") }),
        };
        println!("{answer}");
    }
    daemon.stop().await;
    if let Some(nrr) = &mut nrr {
        nrr.stop().await;
    }
}

/// The lines of standard input, read on a thread of their own; closed at its end.
fn commands() -> tokio::sync::mpsc::UnboundedReceiver<String> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The `n`th new issue of repository `repo`, signed by a new author.
fn new_issue(n: u64, repo: &str) -> Event {
    let title = format!("a new issue from the browser test {n}");
    sign(
        &keys(900_000 + n),
        1621,
        now(),
        vec![
            vec!["a".into(), repo.to_owned()],
            vec!["subject".into(), title],
        ],
        "published while the page is open",
    )
}

/// The `n`th event of new activity (see `publish-mix`): a new issue of one of `repos`,
/// or a comment or a status on one of `roots`.
fn new_activity(n: u64, repos: &[impl ToString], roots: &[Event]) -> Event {
    let root = &roots[(n as usize * 7_919) % roots.len()];
    let (root_hex, kind) = (root.id.to_hex(), root.kind.as_u16().to_string());
    let author = keys(900_000 + n);
    match n % 10 {
        0 | 1 => new_issue(n, &repos[n as usize % repos.len()].to_string()),
        2..=6 => {
            let tags = [
                ["E", &root_hex],
                ["K", &kind],
                ["e", &root_hex],
                ["k", &kind],
            ];
            let tags = tags.iter().map(|t| t.map(String::from).to_vec()).collect();
            sign(&author, 1111, now(), tags, &format!("a new comment {n}"))
        }
        _ => {
            let coord = first(root, "a").unwrap_or_default();
            let tags = vec![
                vec!["e".into(), root_hex, String::new(), "root".into()],
                vec!["a".into(), coord],
            ];
            let status = STATUS_KINDS[n as usize % STATUS_KINDS.len()];
            sign(&author, status, now(), tags, "")
        }
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What a correct client shows for repository `index`: its coordinate, name and every
/// root (issue, patch, pull request) with title, status and comment count, as the
/// stored (acceptable: newest announcement, not deleted) events say.
fn expectation(corpus: &Corpus, index: usize) -> Value {
    let repo = &corpus.repos[index];
    let coord = repo.to_string();
    let events: Vec<&Event> = corpus
        .events
        .iter()
        .zip(&corpus.repo_of)
        .filter(|(e, &r)| r == index && corpus.acceptable.contains(&e.id))
        .map(|(e, _)| e)
        .collect();
    let announcement = events
        .iter()
        .filter(|e| e.kind.as_u16() == 30617)
        .max_by_key(|e| e.created_at);
    let mut maintainers: HashSet<String> = HashSet::from([repo.pubkey.to_hex()]);
    if let Some(a) = announcement {
        maintainers.extend(tag(a, "maintainers").into_iter().flatten().skip(1).cloned());
    }
    let name = announcement
        .and_then(|a| first(a, "name"))
        .unwrap_or_default();
    let mut comments: HashMap<String, usize> = HashMap::new();
    for e in events.iter().filter(|e| e.kind.as_u16() == 1111) {
        if let Some(root) = first(e, "E") {
            *comments.entry(root).or_default() += 1;
        }
    }
    let mut roots: Vec<&&Event> = events.iter().filter(|e| is_root(e)).collect();
    roots.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
    let items: Vec<Value> = roots
        .iter()
        .map(|root| {
            let id = root.id.to_hex();
            let kind = root.kind.as_u16();
            json!({
                "id": id,
                "type": match kind { 1621 => "issue", 1618 => "pr", _ => "patch" },
                "title": title(root),
                "status": status(root, &events, &maintainers),
                "comments": comments.get(&id).copied().unwrap_or(0),
            })
        })
        .collect();
    json!({
        "coord": coord,
        "pubkey": repo.pubkey.to_hex(),
        "d": repo.identifier,
        "name": name,
        "events": events.len(),
        "items": items,
    })
}

fn tag<'a>(event: &'a Event, name: &str) -> Option<&'a [String]> {
    event
        .tags
        .iter()
        .map(|t| t.as_slice())
        .find(|t| t.first().is_some_and(|n| n == name))
}

fn first(event: &Event, name: &str) -> Option<String> {
    tag(event, name).and_then(|t| t.get(1)).cloned()
}

fn is_root(event: &Event) -> bool {
    match event.kind.as_u16() {
        1621 | 1618 => true,
        1617 => first(event, "e").is_none(),
        _ => false,
    }
}

/// The `subject` tag, else a patch's `Subject:` line without its `[PATCH …]` prefix.
fn title(event: &Event) -> String {
    if let Some(subject) = first(event, "subject") {
        return subject.trim().to_owned();
    }
    let line = event
        .content
        .lines()
        .find_map(|l| l.strip_prefix("Subject:"))
        .unwrap_or_default()
        .trim();
    let line = match line.strip_prefix("[PATCH") {
        Some(rest) => rest.split_once(']').map_or(rest, |(_, t)| t),
        None => line,
    };
    line.trim().to_owned()
}

/// The newest status (1630–1633) naming `root` by its author or a maintainer; "open"
/// when there is none. Equal times: the smaller id.
fn status(root: &Event, events: &[&Event], maintainers: &HashSet<String>) -> &'static str {
    let id = root.id.to_hex();
    let newest = events
        .iter()
        .filter(|e| STATUS_KINDS.contains(&e.kind.as_u16()))
        .filter(|e| e.pubkey == root.pubkey || maintainers.contains(&e.pubkey.to_hex()))
        .filter(|e| {
            e.tags
                .iter()
                .any(|t| matches!(t.as_slice(), [n, v, ..] if (n == "e" || n == "E") && *v == id))
        })
        .min_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
    match newest.map(|e| e.kind.as_u16()) {
        Some(1631) => "applied",
        Some(1632) => "closed",
        Some(1633) => "draft",
        _ => "open",
    }
}

/// Announcements (oldest first), events tagging a repository, the rest, deletions: the
/// order a relay that judges each event on arrival needs.
fn staged(events: &[Event]) -> Vec<Event> {
    let stage = |e: &Event| match e.kind.as_u16() {
        30617 => 0,
        5 => 3,
        _ if tag(e, "a").is_some() || tag(e, "A").is_some() => 1,
        _ => 2,
    };
    let mut out = events.to_vec();
    out.sort_by_key(|e| {
        (
            stage(e),
            if stage(e) == 0 {
                e.created_at.as_secs()
            } else {
                0
            },
        )
    });
    out
}
