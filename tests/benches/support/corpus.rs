//! The benchmarks' corpus: the testkit's generator topped up with larger patch replies.
//! The generator alone makes events of about 0.7 KB with comments the most common kind,
//! so patch replies (`a` + `e` reply tags, like the generator's own) of the size that
//! brings the mean to what is asked are added to its roots; 1 % of the replies are held
//! back for a catch-up.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use grasp_sync_core::RepoRef;
use grasp_sync_testkit::corpus::{keys, sign};
use grasp_sync_testkit::{Corpus, CorpusSpec, Rng};
use nostr::prelude::{Event, EventId, Keys};

use super::pct;

/// NIP-34 kinds (and NIP-09 deletions).
pub const KIND_PATCH: u16 = 1617;
pub const KIND_PULL_REQUEST: u16 = 1618;
pub const KIND_ISSUE: u16 = 1621;
pub const KIND_DELETION: u16 = 5;
pub const KIND_ANNOUNCEMENT: u16 = 30617;
pub const KIND_STATE: u16 = 30618;

/// Repositories in the generated corpus (before the top-up).
const REPOS: usize = 600;
/// Events per repository the generator is asked for (it adds announcements and
/// deletions).
const EVENTS_PER_REPO: usize = 100;
/// Share of the cold-sync set the generator makes; patches top it up to the size.
const GENERATED_PCT: usize = 62;

/// What [`generate`] made.
pub struct Generated {
    /// The repositories, as `grasp-sync sync` names them.
    pub repos: Vec<RepoRef>,
    /// Preloaded into the relay: the cold sync's set.
    pub preload: Vec<Event>,
    /// 1 % of the preload, added before the catch-up.
    pub held_back: Vec<Event>,
    /// Events the testkit generator made.
    pub generated: usize,
    /// Patch replies added to reach the mean size.
    pub added_patches: usize,
}

impl Generated {
    /// Says on standard error, after `tag`, what was made and in how long.
    pub fn log(&self, tag: &str, took: Duration) {
        eprintln!(
            "{tag}: generated {} events ({} by the testkit, {} patches added) in {took:.1?}; \
             holding back {}",
            self.preload.len() + self.held_back.len(),
            self.generated,
            self.added_patches,
            self.held_back.len()
        );
    }
}

/// About `target` events to preload plus 1 % to hold back, of mean size `mean_bytes`.
pub fn generate(url: &str, target: usize, mean_bytes: usize) -> Generated {
    let total = target + target / 100;
    let scale = total as f64 / 101_000.0;
    let repos = ((REPOS as f64 * scale).round() as usize).max(2);
    let spec = CorpusSpec {
        seed: 4,
        repos,
        events_per_repo: EVENTS_PER_REPO,
        relays: vec![url.to_owned()],
        relays_per_repo: 1,
        ..CorpusSpec::default()
    };
    // Shrink the generated part until it leaves room for the patches.
    let mut corpus = Corpus::generate(&spec);
    let want = total * GENERATED_PCT / 100;
    if corpus.events.len() > want {
        let epr = (EVENTS_PER_REPO * want / corpus.events.len()).max(12);
        corpus = Corpus::generate(&CorpusSpec {
            events_per_repo: epr,
            ..spec.clone()
        });
    }
    let generated = corpus.events.len();
    let generated_bytes: usize = corpus.events.iter().map(json_len).sum();
    let to_add = total.saturating_sub(generated);

    // Patch replies to the generator's roots, sized so the whole set averages
    // `mean_bytes`.
    let roots = roots_by_repo(&corpus);
    let end = spec.start + spec.span_secs;
    let authors: Vec<Keys> = (0..64).map(|i| keys(4_000_000 + i)).collect();
    let mut rng = Rng::new(0xbe4c_5eed);
    let mut events = corpus.events.clone();
    let wanted_bytes = (mean_bytes * total).saturating_sub(generated_bytes);
    if let Some(per_patch) = wanted_bytes.checked_div(to_add) {
        let probe = patch_reply(&authors[0], &corpus.repos[0], &roots[0][0], end, "");
        let overhead = json_len(&probe);
        let body = per_patch.saturating_sub(overhead).max(200);
        for n in 0..to_add {
            let r = rng.below(corpus.repos.len() as u64) as usize;
            let Some(root) = pick(&mut rng, &roots[r]) else {
                continue;
            };
            let at = (root.1 + 1 + rng.below(end.saturating_sub(root.1).max(1))).min(end);
            let size = body / 2 + rng.below(body as u64 + 1) as usize;
            let content = patch_text(&mut rng, n, size);
            let author = &authors[rng.below(authors.len() as u64) as usize];
            events.push(patch_reply(author, &corpus.repos[r], root, at, &content));
        }
    }
    let added_patches = events.len() - generated;

    // Hold back 1 % of the replies (never a root, announcement, state, deletion or
    // deleted event, so the catch-up needs exactly these).
    let deleted: HashSet<String> = events
        .iter()
        .filter(|e| e.kind.as_u16() == KIND_DELETION)
        .flat_map(|e| tag_values(e, "e"))
        .collect();
    let eligible: Vec<usize> = (0..events.len())
        .filter(|&i| {
            let e = &events[i];
            !matches!(
                e.kind.as_u16(),
                KIND_ANNOUNCEMENT | KIND_STATE | KIND_DELETION | KIND_ISSUE | KIND_PULL_REQUEST
            ) && !is_root(e)
                && !deleted.contains(&e.id.to_hex())
        })
        .collect();
    let hold = (events.len() / 101).min(eligible.len());
    let stride = eligible.len() / hold.max(1);
    let held: HashSet<usize> = eligible
        .iter()
        .step_by(stride.max(1))
        .take(hold)
        .copied()
        .collect();
    let mut preload = Vec::with_capacity(events.len());
    let mut held_back = Vec::with_capacity(hold);
    for (i, event) in events.into_iter().enumerate() {
        if held.contains(&i) {
            held_back.push(event);
        } else {
            preload.push(event);
        }
    }
    Generated {
        repos: corpus.repos,
        preload,
        held_back,
        generated,
        added_patches,
    }
}

/// Each repository's roots (issues, pull requests, root patches) and their times.
pub fn roots_by_repo(corpus: &Corpus) -> Vec<Vec<(EventId, u64)>> {
    let mut roots = vec![Vec::new(); corpus.repos.len()];
    for (event, &repo) in corpus.events.iter().zip(&corpus.repo_of) {
        if is_root(event) {
            roots[repo].push((event.id, event.created_at.as_secs()));
        }
    }
    roots
}

/// An issue, a pull request or a patch that replies to nothing.
fn is_root(event: &Event) -> bool {
    match event.kind.as_u16() {
        KIND_ISSUE | KIND_PULL_REQUEST => true,
        KIND_PATCH => tag_values(event, "e").next().is_none(),
        _ => false,
    }
}

/// The values of `event`'s tags named `name`.
fn tag_values<'a>(event: &'a Event, name: &'a str) -> impl Iterator<Item = String> + 'a {
    event.tags.iter().filter_map(move |t| match t.as_slice() {
        [n, v, ..] if n == name => Some(v.clone()),
        _ => None,
    })
}

/// One of `items` at random (`None` when there are none).
fn pick<'a, T>(rng: &mut Rng, items: &'a [T]) -> Option<&'a T> {
    (!items.is_empty()).then(|| &items[rng.below(items.len() as u64) as usize])
}

/// A patch by `author` at `at` replying to `root` in `repo`.
fn patch_reply(
    author: &Keys,
    repo: &RepoRef,
    root: &(EventId, u64),
    at: u64,
    content: &str,
) -> Event {
    let tags = vec![
        vec!["a".to_owned(), repo.to_string()],
        vec![
            "e".to_owned(),
            root.0.to_hex(),
            String::new(),
            "reply".to_owned(),
        ],
    ];
    sign(author, KIND_PATCH, at, tags, content)
}

/// A `git format-patch`-like text whose JSON string is about `size` bytes.
fn patch_text(rng: &mut Rng, n: usize, size: usize) -> String {
    let mut text = format!(
        "From {:040x} Mon Sep 17 00:00:00 2001\nSubject: [PATCH v2] revise change {n}\n\n\
         ---\n src/lib.rs | 12 ++++++------\n\ndiff --git a/src/lib.rs b/src/lib.rs\n",
        rng.next_u64()
    );
    // A newline costs two bytes in JSON.
    let mut escaped = text.len() + text.matches('\n').count();
    while escaped < size {
        let line = format!("+    let v{:016x} = w.step();\n", rng.next_u64());
        escaped += line.len() + 1;
        text.push_str(&line);
    }
    text
}

/// The size of `event` as JSON.
pub fn json_len(event: &Event) -> usize {
    event.as_json().len()
}

/// Composition of the relay's set.
#[derive(Default)]
pub struct CorpusStats {
    /// kind → (events, JSON bytes).
    pub kinds: BTreeMap<u16, (usize, usize)>,
}

impl CorpusStats {
    /// Of `events`.
    pub fn of(events: &[Event]) -> Self {
        let mut stats = Self::default();
        for e in events {
            let entry = stats.kinds.entry(e.kind.as_u16()).or_default();
            entry.0 += 1;
            entry.1 += json_len(e);
        }
        stats
    }

    /// Each kind's share of the events and of the bytes, and its mean size, most
    /// common first.
    pub fn line(&self) -> String {
        let total: usize = self.kinds.values().map(|k| k.0).sum();
        let bytes: usize = self.kinds.values().map(|k| k.1).sum();
        let mut by_count: Vec<_> = self.kinds.iter().collect();
        by_count.sort_by_key(|(_, (n, _))| std::cmp::Reverse(*n));
        by_count
            .iter()
            .map(|(kind, (n, b))| {
                format!(
                    "{kind}: {:.0} % of events, {:.0} % of bytes, {} B mean",
                    pct(*n as f64, total as f64),
                    pct(*b as f64, bytes as f64),
                    b / n.max(&1)
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// The most events sharing one `created_at` second.
pub fn largest_second(events: &[Event]) -> (usize, u64) {
    let mut seconds: BTreeMap<u64, usize> = BTreeMap::new();
    for e in events {
        *seconds.entry(e.created_at.as_secs()).or_default() += 1;
    }
    seconds
        .into_iter()
        .map(|(s, n)| (n, s))
        .max()
        .unwrap_or_default()
}
