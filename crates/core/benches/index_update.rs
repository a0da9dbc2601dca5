//! Index update + `compute_actions` for one 100-event batch, at 1k, 10k and 100k
//! repositories (10 roots each, 5–20 relays per repository).
//!
//! The per-batch time should stay flat as the index grows. Besides the criterion group
//! `index_update_100_events`, this prints the live memory of the index and of the work
//! state per size, and a `summary:` line with the median per-batch time per size and the
//! ratios t(10k)/t(1k) and t(100k)/t(1k) (own measurement over 200 batches).
//!
//! Each timed batch adds roots and repositories, so the measured index would grow with
//! the number of iterations. To keep every size at its nominal size, the working copy is
//! reset (untimed) from a snapshot whenever the batches since the last reset have added
//! 5% of the snapshot's roots.
//!
//! Run: `cargo bench -p grasp-sync-core --bench index_update`

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use grasp_sync_core::{compute_actions, compute_all_actions, IndexConfig, RepoIndex, WorkState};
use nostr::prelude::{Event, EventId, Keys, Kind, PublicKey, SecretKey, Signature, Tag, Timestamp};

// ---------------------------------------------------------------------------------------
// Live-bytes counting allocator.

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to `System` unchanged; only the counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            LIVE.fetch_add(new_size, Ordering::Relaxed);
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

// ---------------------------------------------------------------------------------------
// Deterministic data.

const SIZES: [usize; 3] = [1_000, 10_000, 100_000];
const ROOTS_PER_REPO: usize = 10;
const KEY_POOL: usize = 2_000;
const RELAY_POOL: usize = 500;
const BUILD_CHUNK: usize = 10_000;
/// Reset the working copy once the batches since the last reset added this share of roots.
const GROWTH_BUDGET: f64 = 0.05;
const SUMMARY_BATCHES: usize = 200;

/// splitmix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next()) * n as u128) >> 64) as usize
    }

    /// Uniform in `lo..=hi`.
    fn between(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    fn bytes32(&mut self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for chunk in out.chunks_mut(8) {
            chunk.copy_from_slice(&self.next().to_le_bytes());
        }
        out
    }
}

struct Pool {
    keys: Vec<PublicKey>,
    key_hex: Vec<String>,
    relays: Vec<String>,
    sig: Signature,
}

impl Pool {
    fn new(rng: &mut Rng) -> Self {
        let keys: Vec<PublicKey> = (0..KEY_POOL)
            .map(|_| loop {
                if let Ok(sk) = SecretKey::from_slice(&rng.bytes32()) {
                    break Keys::new(sk).public_key();
                }
            })
            .collect();
        let key_hex = keys.iter().map(PublicKey::to_hex).collect();
        let relays = (0..RELAY_POOL)
            .map(|i| format!("wss://relay{i}.example.com"))
            .collect();
        Self {
            keys,
            key_hex,
            relays,
            sig: Signature::from_byte_array([1u8; 64]),
        }
    }
}

/// What the generator knows of a repository.
#[derive(Clone)]
struct RepoSpec {
    owner: u16,
    name: u32,
    relays: Vec<u16>,
    maintainers: Vec<u16>,
}

struct Gen {
    rng: Rng,
    pool: Pool,
    /// The repositories in the snapshot.
    repos: Vec<RepoSpec>,
    /// Repositories announced since the last reset.
    new_repos: Vec<RepoSpec>,
    /// Relays of snapshot repositories re-announced since the last reset.
    changed: HashMap<usize, Vec<u16>>,
    next_name: u32,
    clock: u64,
}

impl Gen {
    fn new(seed: u64, repos: usize) -> Self {
        let mut rng = Rng(seed);
        let pool = Pool::new(&mut rng);
        let mut gen = Self {
            rng,
            pool,
            repos: Vec::with_capacity(repos),
            new_repos: Vec::new(),
            changed: HashMap::new(),
            next_name: 0,
            clock: 1_700_000_000,
        };
        for _ in 0..repos {
            let spec = gen.spec();
            gen.repos.push(spec);
        }
        gen
    }

    /// Forgets what was generated since the snapshot.
    fn reset(&mut self) {
        self.new_repos.clear();
        self.changed.clear();
    }

    fn spec(&mut self) -> RepoSpec {
        let owner = self.rng.below(KEY_POOL) as u16;
        let mut relays = Vec::new();
        let want = self.rng.between(5, 20);
        while relays.len() < want {
            let r = self.rng.below(RELAY_POOL) as u16;
            if !relays.contains(&r) {
                relays.push(r);
            }
        }
        let maintainers = (0..self.rng.between(0, 2))
            .map(|_| self.rng.below(KEY_POOL) as u16)
            .collect();
        let name = self.next_name;
        self.next_name += 1;
        RepoSpec {
            owner,
            name,
            relays,
            maintainers,
        }
    }

    fn tick(&mut self) -> Timestamp {
        self.clock += 1;
        Timestamp::from(self.clock)
    }

    fn event(&mut self, author: u16, kind: u16, tags: Vec<Tag>) -> Event {
        let id = EventId::from_byte_array(self.rng.bytes32());
        let created_at = self.tick();
        Event::new(
            id,
            self.pool.keys[author as usize],
            created_at,
            Kind::from(kind),
            tags,
            "",
            self.pool.sig,
        )
    }

    fn coordinate(&self, spec: &RepoSpec) -> String {
        format!(
            "30617:{}:repo-{}",
            self.pool.key_hex[spec.owner as usize], spec.name
        )
    }

    fn announcement(&mut self, spec: &RepoSpec, relays: &[u16]) -> Event {
        let mut tags = vec![
            Tag::parse(["d".to_owned(), format!("repo-{}", spec.name)]).unwrap(),
            Tag::parse(["name".to_owned(), format!("repo {}", spec.name)]).unwrap(),
            Tag::parse(
                std::iter::once("relays".to_owned())
                    .chain(relays.iter().map(|r| self.pool.relays[*r as usize].clone())),
            )
            .unwrap(),
        ];
        if !spec.maintainers.is_empty() {
            tags.push(
                Tag::parse(
                    std::iter::once("maintainers".to_owned()).chain(
                        spec.maintainers
                            .iter()
                            .map(|m| self.pool.key_hex[*m as usize].clone()),
                    ),
                )
                .unwrap(),
            );
        }
        self.event(spec.owner, 30617, tags)
    }

    fn root(&mut self, spec: &RepoSpec) -> Event {
        let author = self.rng.below(KEY_POOL) as u16;
        let mut tags = vec![
            Tag::parse(["a".to_owned(), self.coordinate(spec)]).unwrap(),
            Tag::parse(["subject".to_owned(), "something".to_owned()]).unwrap(),
        ];
        let kind = match self.rng.below(3) {
            0 => 1621,
            1 => 1618,
            _ => {
                tags.push(Tag::parse(["t", "root"]).unwrap());
                1617
            }
        };
        self.event(author, kind, tags)
    }

    fn comment(&mut self) -> Event {
        let author = self.rng.below(KEY_POOL) as u16;
        let target = EventId::from_byte_array(self.rng.bytes32()).to_hex();
        let tags = vec![
            Tag::parse(["E".to_owned(), target.clone()]).unwrap(),
            Tag::parse(["K", "1621"]).unwrap(),
            Tag::parse(["e".to_owned(), target]).unwrap(),
            Tag::parse(["k", "1621"]).unwrap(),
        ];
        self.event(author, 1111, tags)
    }

    /// Announcements of every snapshot repository, then their roots, in chunks.
    fn build_chunks(&mut self, mut sink: impl FnMut(Vec<Event>)) {
        let repos = std::mem::take(&mut self.repos);
        for part in repos.chunks(BUILD_CHUNK) {
            let events: Vec<Event> = part
                .iter()
                .map(|spec| self.announcement(spec, &spec.relays))
                .collect();
            sink(events);
        }
        for part in repos.chunks(BUILD_CHUNK / ROOTS_PER_REPO) {
            let mut events = Vec::with_capacity(part.len() * ROOTS_PER_REPO);
            for spec in part {
                for _ in 0..ROOTS_PER_REPO {
                    events.push(self.root(spec));
                }
            }
            sink(events);
        }
        self.repos = repos;
    }

    fn any_repo(&mut self) -> RepoSpec {
        let i = self.rng.below(self.repos.len() + self.new_repos.len());
        match self.repos.get(i) {
            Some(spec) => spec.clone(),
            None => self.new_repos[i - self.repos.len()].clone(),
        }
    }

    /// ~60 roots, ~20 re-announcements changing 1–3 relays, ~10 new repositories and
    /// ~10 comments, shuffled.
    fn batch(&mut self) -> Vec<Event> {
        let mut events = Vec::with_capacity(100);
        for _ in 0..60 {
            let spec = self.any_repo();
            events.push(self.root(&spec));
        }
        for _ in 0..20 {
            let i = self.rng.below(self.repos.len());
            let spec = self.repos[i].clone();
            let mut relays = self
                .changed
                .get(&i)
                .cloned()
                .unwrap_or_else(|| spec.relays.clone());
            for _ in 0..self.rng.between(1, 3) {
                let r = loop {
                    let r = self.rng.below(RELAY_POOL) as u16;
                    if !relays.contains(&r) {
                        break r;
                    }
                };
                let at = self.rng.below(relays.len());
                relays[at] = r;
            }
            events.push(self.announcement(&spec, &relays));
            self.changed.insert(i, relays);
        }
        for _ in 0..10 {
            let spec = self.spec();
            events.push(self.announcement(&spec, &spec.relays));
            self.new_repos.push(spec);
        }
        for _ in 0..10 {
            events.push(self.comment());
        }
        for i in (1..events.len()).rev() {
            let j = self.rng.below(i + 1);
            events.swap(i, j);
        }
        events
    }
}

// ---------------------------------------------------------------------------------------
// The fixture: a snapshot at size N and a working copy the batches are applied to.

struct Fixture {
    n: usize,
    base_index: RepoIndex,
    base_work: WorkState,
    index: RepoIndex,
    work: WorkState,
    gen: Gen,
    since_reset: usize,
    reset_every: usize,
    resets: usize,
    changes: usize,
    added: usize,
    batches: usize,
}

impl Fixture {
    fn build(n: usize) -> Self {
        let mut gen = Gen::new(0x5EED ^ n as u64, n);
        let before = live();
        let mut index = RepoIndex::new(IndexConfig::default());
        gen.build_chunks(|events| {
            let update = index.apply(&events);
            assert_eq!(update.ignored, 0);
        });
        assert_eq!(index.repo_count(), n);
        assert_eq!(index.root_count(), n * ROOTS_PER_REPO);
        let index_bytes = live() - before;

        let before = live();
        let mut work = WorkState::default();
        let actions = compute_all_actions(index.targets(), &work);
        work.apply(&actions);
        let at = Timestamp::from(1_700_000_000);
        for relay in &actions.relays {
            for key in &relay.add {
                assert!(work.confirm(relay.relay, *key, at));
            }
        }
        let keys = actions.added();
        // The same confirmed keys restored from checkpoints (no pending sets grown first).
        let restored_bytes = {
            let before = live();
            let mut restored = WorkState::default();
            for relay in &actions.relays {
                for key in &relay.add {
                    restored.restore(relay.relay, *key, at);
                }
            }
            assert_eq!(restored, work);
            live() - before
        };
        drop(actions);
        let work_bytes = live() - before;
        let roots = index.root_count();
        println!(
            "memory N={n}: index+targets {:.1} MiB, work state {:.1} MiB, {} bytes per root event \
             (total live / roots; {roots} roots, {} target pairs, {keys} confirmed keys; \
             work state restored from checkpoints instead: {:.1} MiB, {} bytes per root event)",
            mib(index_bytes),
            mib(work_bytes),
            (index_bytes + work_bytes) / roots,
            index.targets().len(),
            mib(restored_bytes),
            (index_bytes + restored_bytes) / roots,
        );

        let reset_every = ((roots as f64 * GROWTH_BUDGET / 60.0) as usize).max(1);
        Self {
            n,
            base_index: index.clone(),
            base_work: work.clone(),
            index,
            work,
            gen,
            since_reset: 0,
            reset_every,
            resets: 0,
            changes: 0,
            added: 0,
            batches: 0,
        }
    }

    fn reset(&mut self) {
        self.index = self.base_index.clone();
        self.work = self.base_work.clone();
        self.gen.reset();
        self.since_reset = 0;
        self.resets += 1;
    }

    /// One batch; returns the time of index update + compute_actions + work.apply only.
    fn step(&mut self) -> Duration {
        self.step_phases().iter().sum()
    }

    /// One batch; the times of index update, compute_actions and work.apply.
    fn step_phases(&mut self) -> [Duration; 3] {
        if self.since_reset >= self.reset_every {
            self.reset();
        }
        let batch = self.gen.batch();
        let start = Instant::now();
        let update = self.index.apply(&batch);
        let applied = Instant::now();
        let actions = compute_actions(self.index.targets(), &update.changes, &self.work);
        let computed = Instant::now();
        self.work.apply(&actions);
        let end = Instant::now();
        black_box((&update, &actions));
        self.since_reset += 1;
        self.batches += 1;
        self.changes += update.changes.len();
        self.added += actions.added();
        [applied - start, computed - applied, end - computed]
    }
}

struct Stats {
    median: Duration,
    mean: Duration,
    p99: Duration,
    max: Duration,
}

fn stats(mut times: Vec<Duration>) -> Stats {
    times.sort_unstable();
    let total: Duration = times.iter().sum();
    Stats {
        median: times[times.len() / 2],
        mean: total / times.len() as u32,
        p99: times[(times.len() * 99 / 100).min(times.len() - 1)],
        max: times[times.len() - 1],
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Incremental targets equal targets rebuilt from scratch after some batches (small N only).
fn check_consistency(fixture: &mut Fixture) {
    fixture.reset();
    for _ in 0..fixture.reset_every {
        fixture.step();
    }
    assert_eq!(&fixture.index.rebuild_targets(), fixture.index.targets());
    let fresh = compute_all_actions(fixture.index.targets(), &fixture.work);
    assert!(fresh.is_empty(), "work state diverged from targets");
}

fn main() {
    let started = Instant::now();
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let mut summary = Vec::new();
    {
        let mut group = c.benchmark_group("index_update_100_events");
        for n in SIZES {
            let build = Instant::now();
            let mut fixture = Fixture::build(n);
            let build = build.elapsed();
            group.bench_function(BenchmarkId::from_parameter(n), |b| {
                b.iter_custom(|iters| (0..iters).map(|_| fixture.step()).sum());
            });
            fixture.reset();
            let phases: Vec<[Duration; 3]> = (0..SUMMARY_BATCHES)
                .map(|_| fixture.step_phases())
                .collect();
            let s = stats(phases.iter().map(|p| p.iter().sum()).collect());
            let phase = |i: usize| us(stats(phases.iter().map(|p| p[i]).collect()).median);
            println!(
                "batches N={n}: median {:.1} µs (index.apply {:.1}, compute_actions {:.1}, \
                 work.apply {:.1}), mean {:.1} µs, p99 {:.1} µs, max {:.1} µs; \
                 {:.0} target changes and {:.0} keys added per batch; {} batches, {} resets \
                 (every {} batches); setup {:.1} s",
                us(s.median),
                phase(0),
                phase(1),
                phase(2),
                us(s.mean),
                us(s.p99),
                us(s.max),
                fixture.changes as f64 / fixture.batches as f64,
                fixture.added as f64 / fixture.batches as f64,
                fixture.batches,
                fixture.resets,
                fixture.reset_every,
                build.as_secs_f64(),
            );
            if n == SIZES[0] {
                check_consistency(&mut fixture);
            }
            summary.push((fixture.n, s.median));
        }
        group.finish();
    }
    c.final_summary();

    let base = summary[0].1.as_secs_f64();
    let parts: Vec<String> = summary
        .iter()
        .map(|(n, t)| format!("t({n})={:.1} µs", us(*t)))
        .collect();
    let ratios: Vec<String> = summary[1..]
        .iter()
        .map(|(n, t)| format!("t({n})/t({})={:.2}", summary[0].0, t.as_secs_f64() / base))
        .collect();
    println!(
        "summary: median per 100-event batch {}; {}; total run {:.0} s",
        parts.join(", "),
        ratios.join(", "),
        started.elapsed().as_secs_f64()
    );
}
