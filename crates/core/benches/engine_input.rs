//! The engine's CPU per input, at 10, 100 and 1 000 connected relays.
//!
//! The world is built through the public [`Input`] API only: announcements (each
//! repository lists 5 of the relays, so every relay follows about 10 repositories) and
//! their roots arrive as [`Input::LocalEvents`]; every relay connects, has no NIP-11
//! document, answers its live REQs with EOSE and never answers the NEG-OPEN of its
//! historic jobs (the local set holds one item, so they reconcile): in steady state each
//! relay holds live subscriptions, one NIP-77 job running and the rest queued.
//!
//! Measured, each followed by draining the outputs and asking for the next deadline as
//! the driver does:
//! - `event_frame`: one EVENT frame on a live subscription of one relay, carrying a new
//!   event (a comment on a tracked repository);
//! - `stored`: the [`Input::Stored`] answering that event's store batch.
//!
//! The untimed rest of each cycle (`Verified`, the store batch) keeps the world steady.
//! Besides the criterion group, a `summary:` line gives the median ns per input per size
//! and the ratios t(100)/t(10) and t(1000)/t(10) (own measurement over many cycles).
//!
//! Run: `cargo bench -p grasp-sync-core --bench engine_input`

use std::collections::{HashMap, VecDeque};
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use grasp_sync_core::engine::{BatchId, EngineConfig, Input, Output, Phase, SyncEngine, Time};
use grasp_sync_core::{RelayId, RelayUrl};
use nostr::prelude::{Event, EventId, Keys, Kind, PublicKey, SecretKey, Signature, Tag, Timestamp};
use serde_json::Value;

const SIZES: [usize; 3] = [10, 100, 1_000];
/// Repositories per relay (each lists `RELAYS_PER_REPO` relays: ~10 followed per relay).
const REPOS_PER_RELAY: usize = 2;
const RELAYS_PER_REPO: usize = 5;
const ROOTS_PER_REPO: usize = 2;
const SUMMARY_CYCLES: usize = 300;
const START: u64 = 1_700_000_000;

/// A steady world and the relay the measured events arrive at.
struct World {
    engine: SyncEngine,
    now: Time,
    relay: RelayId,
    /// A live subscription of `relay` and the repository coordinate it asks `#a` for.
    sub: String,
    coord: String,
    author: PublicKey,
    sig: Signature,
    next: u64,
}

/// Deterministic keys: secret keys 1, 2, 3, …
fn keys(n: usize) -> Vec<Keys> {
    (1..=n as u64)
        .map(|i| {
            let mut bytes = [0u8; 32];
            bytes[24..].copy_from_slice(&i.to_be_bytes());
            Keys::new(SecretKey::from_slice(&bytes).expect("a small nonzero secret key"))
        })
        .collect()
}

fn tag(parts: &[&str]) -> Tag {
    Tag::parse(parts.iter().map(|s| s.to_string())).expect("a tag with a name")
}

fn event(id: u64, author: PublicKey, kind: u16, tags: Vec<Tag>, sig: Signature) -> Event {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&id.to_be_bytes());
    bytes[8] = kind as u8;
    Event::new(
        EventId::from_byte_array(bytes),
        author,
        Timestamp::from(START - 60),
        Kind::from(kind),
        tags,
        "",
        sig,
    )
}

/// Pops every output, as the driver's loop does, and asks for the next deadline.
fn drain(engine: &mut SyncEngine, out: &mut Vec<Output>) -> Option<Time> {
    while let Some(output) = engine.poll_output() {
        out.push(output);
    }
    engine.poll_timeout()
}

impl World {
    fn build(relays: usize) -> Self {
        let owners = keys(8);
        let sig = Signature::from_byte_array([1u8; 64]);
        let urls: Vec<String> = (0..relays)
            .map(|i| format!("wss://relay{i}.example.com"))
            .collect();
        let repos = relays * REPOS_PER_RELAY;
        let mut events = Vec::new();
        let mut next = 1u64;
        for r in 0..repos {
            let owner = owners[r % owners.len()].public_key();
            let listed: Vec<String> = (0..RELAYS_PER_REPO)
                .map(|k| urls[(r + k * relays / RELAYS_PER_REPO) % relays].clone())
                .collect();
            let d = format!("repo-{r}");
            let mut relays_tag = vec!["relays".to_owned()];
            relays_tag.extend(listed);
            let announcement = vec![
                tag(&["d", &d]),
                Tag::parse(relays_tag).expect("a relays tag"),
            ];
            events.push(event(next, owner, 30617, announcement, sig));
            next += 1;
            let coord = format!("30617:{}:{d}", owner.to_hex());
            for _ in 0..ROOTS_PER_REPO {
                events.push(event(next, owner, 1621, vec![tag(&["a", &coord])], sig));
                next += 1;
            }
        }
        let mut engine = SyncEngine::new(EngineConfig::default());
        let now = Time::from_secs(START);
        let mut inputs = VecDeque::from([Input::LocalEvents { events }]);
        // Per relay, its live subscriptions and their filters.
        let mut live: HashMap<RelayId, Vec<(String, Value)>> = HashMap::new();
        let mut handles: HashMap<RelayUrl, RelayId> = HashMap::new();
        let mut out = Vec::new();
        while let Some(input) = inputs.pop_front() {
            engine.handle_input(now, input);
            drain(&mut engine, &mut out);
            for output in out.drain(..) {
                match output {
                    Output::Connect { relay, url } => {
                        handles.insert(url, relay);
                        inputs.push_back(Input::Connected { relay });
                    }
                    Output::FetchInfo { relay, .. } => inputs.push_back(Input::InfoFetched {
                        relay,
                        document: None,
                    }),
                    Output::LoadLocalItems { request, .. } => {
                        // One stored item: the job reconciles with NIP-77.
                        let item = (
                            Timestamp::from(START - 3600),
                            EventId::from_byte_array([0u8; 32]),
                        );
                        inputs.push_back(Input::LocalItemsLoaded {
                            request,
                            items: vec![item],
                        });
                    }
                    Output::Send { relay, text } => {
                        let Ok(Value::Array(frame)) = serde_json::from_str::<Value>(&text) else {
                            continue;
                        };
                        let sub = frame.get(1).and_then(Value::as_str).unwrap_or_default();
                        match frame.first().and_then(Value::as_str) {
                            Some("REQ") => {
                                let filters = &frame[2..];
                                let is_live = filters.iter().all(|f| f["limit"] == 0);
                                if is_live {
                                    let subs = live.entry(relay).or_default();
                                    subs.push((sub.to_owned(), Value::Array(filters.to_vec())));
                                    inputs.push_back(Input::Frame {
                                        relay,
                                        text: format!(r#"["EOSE","{sub}"]"#),
                                    });
                                }
                            }
                            Some("CLOSE") => {
                                if let Some(subs) = live.get_mut(&relay) {
                                    subs.retain(|(s, _)| s != sub);
                                }
                            }
                            _ => {}
                        }
                    }
                    _ => {}
                }
            }
        }
        let open = engine.relays().filter(|r| r.1 == Phase::Open).count();
        assert_eq!(open, relays, "every relay is open");
        let url = RelayUrl::parse(&urls[0]).expect("a public relay URL");
        let (queued, running, _, _) = engine.relay_jobs(&url);
        let relay = handles[&url];
        assert!(running > 0 && queued > 0, "relay 0 holds jobs");
        let (sub, coord) = live[&relay]
            .iter()
            .find_map(|(sub, filters)| {
                let coord = filters
                    .as_array()?
                    .iter()
                    .find_map(|f| f["#a"].get(0)?.as_str())?;
                Some((sub.clone(), coord.to_owned()))
            })
            .expect("a live subscription asking for #a");
        Self {
            engine,
            now,
            relay,
            sub,
            coord,
            author: owners[0].public_key(),
            sig,
            next: 1 << 40,
        }
    }

    /// One new event through the engine: the EVENT frame, its verification and its store
    /// batch. Returns the time of the frame and of the `Stored` input (each with draining).
    fn cycle(&mut self) -> (Duration, Duration) {
        self.next += 1;
        let comment = event(
            self.next,
            self.author,
            1111,
            vec![tag(&["a", &self.coord]), tag(&["K", "30617"])],
            self.sig,
        );
        let json = serde_json::to_string(&comment).expect("an event serializes");
        let text = format!(r#"["EVENT","{}",{json}]"#, self.sub);
        let mut out = Vec::new();

        let start = Instant::now();
        self.engine.handle_input(
            self.now,
            Input::Frame {
                relay: self.relay,
                text,
            },
        );
        black_box(drain(&mut self.engine, &mut out));
        let frame = start.elapsed();

        let verify = out.iter().find_map(|o| match o {
            Output::Verify { batch, events } => Some((*batch, events.len())),
            _ => None,
        });
        let (batch, n) = verify.expect("the event goes out to be verified");
        out.clear();
        self.engine.handle_input(
            self.now,
            Input::Verified {
                batch,
                valid: vec![true; n],
            },
        );
        drain(&mut self.engine, &mut out);
        let store: BatchId = out
            .iter()
            .find_map(|o| match o {
                Output::Store { batch, .. } => Some(*batch),
                _ => None,
            })
            .expect("the event is accepted and goes out to be stored");
        out.clear();

        let start = Instant::now();
        self.engine.handle_input(
            self.now,
            Input::Stored {
                batch: store,
                result: Ok(Vec::new()),
            },
        );
        black_box(drain(&mut self.engine, &mut out));
        (frame, start.elapsed())
    }
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort_unstable();
    times[times.len() / 2]
}

fn main() {
    let started = Instant::now();
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let mut summary = Vec::new();
    {
        let mut group = c.benchmark_group("engine_input");
        for n in SIZES {
            let build = Instant::now();
            let mut world = World::build(n);
            let build = build.elapsed();
            group.bench_function(BenchmarkId::new("event_frame", n), |b| {
                b.iter_custom(|iters| (0..iters).map(|_| world.cycle().0).sum());
            });
            group.bench_function(BenchmarkId::new("stored", n), |b| {
                b.iter_custom(|iters| (0..iters).map(|_| world.cycle().1).sum());
            });
            let cycles: Vec<(Duration, Duration)> =
                (0..SUMMARY_CYCLES).map(|_| world.cycle()).collect();
            let frame = median(cycles.iter().map(|c| c.0).collect());
            let stored = median(cycles.iter().map(|c| c.1).collect());
            println!(
                "inputs N={n}: EVENT frame median {} ns, Stored median {} ns \
                 ({SUMMARY_CYCLES} cycles; setup {:.1} s)",
                frame.as_nanos(),
                stored.as_nanos(),
                build.as_secs_f64(),
            );
            summary.push((n, frame, stored));
        }
        group.finish();
    }
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    let (_, f10, s10) = summary[0];
    let line: Vec<String> = summary
        .iter()
        .map(|(n, f, s)| {
            format!(
                "N={n}: frame {} ns, stored {} ns",
                f.as_nanos(),
                s.as_nanos()
            )
        })
        .collect();
    println!(
        "summary: {}; frame ratios 100/10 {:.2}, 1000/10 {:.2}; stored ratios 100/10 {:.2}, \
         1000/10 {:.2}; total {:.0} s",
        line.join("; "),
        ratio(summary[1].1, f10),
        ratio(summary[2].1, f10),
        ratio(summary[1].2, s10),
        ratio(summary[2].2, s10),
        started.elapsed().as_secs_f64(),
    );
    c.final_summary();
}
