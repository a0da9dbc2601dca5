//! A deterministic, signed NIP-34 corpus: announcements listing relays and maintainers
//! (some with newer versions), repository state, roots (issues, pull requests, patch
//! series), replies, statuses, comments, and deletions by authors.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use grasp_sync_core::RepoRef;
use nostr::prelude::{Event, EventId, Keys, Kind, SecretKey, Tag, Timestamp, UnsignedEvent};
use secp256k1::{All, Secp256k1};

use crate::rng::Rng;

/// What to generate.
#[derive(Debug, Clone)]
pub struct CorpusSpec {
    /// Everything follows from the seed.
    pub seed: u64,
    /// Number of repositories.
    pub repos: usize,
    /// Events per repository besides its announcement (roughly).
    pub events_per_repo: usize,
    /// Relay URLs announcements may list.
    pub relays: Vec<String>,
    /// How many of them each announcement lists (at least 1).
    pub relays_per_repo: usize,
    /// The earliest `created_at`.
    pub start: u64,
    /// Events spread over this many seconds.
    pub span_secs: u64,
    /// Percent of replies, statuses and comments created later, in `live_window`
    /// (start, seconds): published while a sync runs.
    pub live_pct: u64,
    /// See [`live_pct`](Self::live_pct).
    pub live_window: (u64, u64),
}

impl Default for CorpusSpec {
    fn default() -> Self {
        Self {
            seed: 1,
            repos: 20,
            events_per_repo: 100,
            relays: vec![
                "wss://relay-a.example.com".into(),
                "wss://relay-b.example.com".into(),
                "wss://relay-c.example.com".into(),
            ],
            relays_per_repo: 2,
            start: 1_700_000_000,
            span_secs: 30 * 24 * 3600,
            live_pct: 0,
            live_window: (1_700_000_000 + 30 * 24 * 3600 + 3600, 540),
        }
    }
}

/// A generated corpus.
#[derive(Debug, Clone)]
pub struct Corpus {
    /// Every event, in generation order.
    pub events: Vec<Event>,
    /// The index (into `repos`) of the repository each event belongs to.
    pub repo_of: Vec<usize>,
    /// The repositories.
    pub repos: Vec<RepoRef>,
    /// The relays each repository's newest announcement lists, by repository index.
    pub repo_relays: Vec<Vec<String>>,
    /// Events created in the live window, to publish while a sync runs.
    pub live: BTreeSet<EventId>,
    /// Ids a correct sync ends up storing: newest announcement versions, and nothing
    /// deleted by its author.
    pub acceptable: BTreeSet<EventId>,
}

fn secp() -> &'static Secp256k1<All> {
    static SECP: OnceLock<Secp256k1<All>> = OnceLock::new();
    SECP.get_or_init(Secp256k1::new)
}

/// Deterministic keys: number `n` of the test key space.
pub fn keys(n: u64) -> Keys {
    let mut bytes = [0x11u8; 32];
    bytes[..8].copy_from_slice(&n.wrapping_add(1).to_be_bytes());
    match SecretKey::from_slice(&bytes) {
        Ok(secret) => Keys::new(secret),
        Err(_) => unreachable!("0x00..01 1111… is below the curve order"),
    }
}

/// Builds and signs an event (deterministic signature: auxiliary randomness is the id).
pub fn sign(
    keys: &Keys,
    kind: u16,
    created_at: u64,
    tags: Vec<Vec<String>>,
    content: &str,
) -> Event {
    let tags: Vec<Tag> = tags
        .into_iter()
        .filter_map(|t| Tag::parse(t).ok())
        .collect();
    let mut unsigned = UnsignedEvent::new(
        keys.public_key(),
        Timestamp::from(created_at),
        Kind::from(kind),
        tags,
        content,
    );
    let id = unsigned.id();
    let sig = keys.sign_schnorr_with_aux_rand(secp(), id.as_bytes(), id.as_bytes());
    Event::new(
        id,
        keys.public_key(),
        unsigned.created_at,
        unsigned.kind,
        unsigned.tags.clone(),
        unsigned.content.clone(),
        sig,
    )
}

/// A tag from its parts: `tag(&["e", id])`.
pub fn tag(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| (*s).to_owned()).collect()
}

impl Corpus {
    /// The events a correct sync ends up storing ([`acceptable`](Self::acceptable)), in
    /// corpus order.
    pub fn acceptable_events(&self) -> Vec<Event> {
        self.events
            .iter()
            .filter(|e| self.acceptable.contains(&e.id))
            .cloned()
            .collect()
    }

    /// Generates the corpus `spec` describes.
    pub fn generate(spec: &CorpusSpec) -> Self {
        let mut rng = Rng::new(spec.seed);
        let people: Vec<Keys> = (0..(spec.repos as u64 * 2).max(4))
            .map(|i| keys(spec.seed.wrapping_mul(1_000_003).wrapping_add(i)))
            .collect();
        let mut corpus = Corpus {
            events: Vec::new(),
            repo_of: Vec::new(),
            repos: Vec::new(),
            repo_relays: Vec::new(),
            live: BTreeSet::new(),
            acceptable: BTreeSet::new(),
        };
        for i in 0..spec.repos {
            corpus.repo(spec, &mut rng, &people, i);
        }
        corpus
    }

    fn push(&mut self, event: Event, acceptable: bool) -> Event {
        if acceptable {
            self.acceptable.insert(event.id);
        }
        self.events.push(event.clone());
        self.repo_of.push(self.repos.len().saturating_sub(1));
        event
    }

    fn repo(&mut self, spec: &CorpusSpec, rng: &mut Rng, people: &[Keys], i: usize) {
        let owner = &people[i % people.len()];
        let maintainer =
            &people[(i + 1 + rng.below(people.len() as u64 - 1) as usize) % people.len()];
        let d = format!("repo-{i}");
        let coord = RepoRef::new(owner.public_key(), d.clone());
        let coord_s = coord.to_string();
        self.repos.push(coord);
        let t0 = spec.start + rng.below(spec.span_secs / 4 + 1);
        let end = spec.start + spec.span_secs;
        let pick_relays = |rng: &mut Rng| {
            let n = spec.relays_per_repo.clamp(1, spec.relays.len().max(1));
            let mut chosen: Vec<String> = Vec::new();
            while chosen.len() < n && !spec.relays.is_empty() {
                let r = spec.relays[rng.below(spec.relays.len() as u64) as usize].clone();
                if !chosen.contains(&r) {
                    chosen.push(r);
                }
            }
            chosen
        };
        let announcement = |relays: &[String], maintainers: &[&Keys], at: u64| {
            let mut r = tag(&["relays"]);
            r.extend(relays.iter().cloned());
            let mut tags = vec![tag(&["d", &d]), tag(&["name", &d]), r];
            if !maintainers.is_empty() {
                let mut m = tag(&["maintainers"]);
                m.extend(maintainers.iter().map(|k| k.public_key().to_hex()));
                tags.push(m);
            }
            sign(owner, 30617, at, tags, "")
        };
        let relays = pick_relays(rng);
        let newer = rng.chance(30);
        let first = announcement(&relays, &[], t0);
        self.push(first, !newer);
        let relays = if newer {
            let relays = pick_relays(rng);
            let second = announcement(&relays, &[maintainer], t0 + 1 + rng.below(3600));
            self.push(second, true);
            relays
        } else {
            relays
        };
        self.repo_relays.push(relays);
        let state = sign(
            owner,
            30618,
            t0 + 10,
            vec![tag(&["d", &d]), tag(&["refs/heads/main", &"ab".repeat(20)])],
            "",
        );
        self.push(state, true);

        let roots_n = (spec.events_per_repo / 10).max(1);
        let mut roots: Vec<(Event, u64)> = Vec::new();
        for r in 0..roots_n {
            let author = &people[rng.below(people.len() as u64) as usize];
            let at = (t0 + 60 + rng.below(spec.span_secs / 2 + 1)).min(end);
            let event = match rng.below(3) {
                0 => sign(
                    author,
                    1621,
                    at,
                    vec![
                        tag(&["a", &coord_s]),
                        tag(&["subject", &format!("issue {r}")]),
                    ],
                    "an issue",
                ),
                1 => sign(
                    author,
                    1618,
                    at,
                    vec![tag(&["a", &coord_s]), tag(&["subject", &format!("pr {r}")])],
                    "a pull request",
                ),
                _ => sign(
                    author,
                    1617,
                    at,
                    vec![tag(&["a", &coord_s]), tag(&["t", "root"])],
                    &patch_body(rng, r),
                ),
            };
            roots.push((self.push(event, true), at));
        }
        let rest = spec.events_per_repo.saturating_sub(roots_n + 2);
        for n in 0..rest {
            let (root, root_at) = roots[rng.below(roots.len() as u64) as usize].clone();
            let root_hex = root.id.to_hex();
            let author = &people[rng.below(people.len() as u64) as usize];
            let live = rng.chance(spec.live_pct);
            let at = if live {
                spec.live_window.0 + rng.below(spec.live_window.1 + 1)
            } else {
                (root_at + 1 + rng.below(spec.span_secs / 2 + 1)).min(end)
            };
            let event = match rng.below(10) {
                0..=4 => sign(
                    author,
                    1111,
                    at,
                    vec![
                        tag(&["E", &root_hex]),
                        tag(&["K", &root.kind.as_u16().to_string()]),
                        tag(&["e", &root_hex]),
                        tag(&["k", &root.kind.as_u16().to_string()]),
                    ],
                    &format!("comment {n}"),
                ),
                5 | 6 => sign(
                    owner,
                    1630 + rng.below(4) as u16,
                    at,
                    vec![tag(&["e", &root_hex, "", "root"]), tag(&["a", &coord_s])],
                    "",
                ),
                7 | 8 => sign(
                    author,
                    1617,
                    at,
                    vec![tag(&["a", &coord_s]), tag(&["e", &root_hex, "", "reply"])],
                    &patch_body(rng, n),
                ),
                _ => sign(
                    author,
                    1619,
                    at,
                    vec![tag(&["E", &root_hex]), tag(&["a", &coord_s])],
                    "",
                ),
            };
            let deleted = event.kind.as_u16() == 1111 && rng.chance(5);
            let event = self.push(event, !deleted);
            if live {
                self.live.insert(event.id);
            }
            if deleted {
                let deletion = sign(
                    &people
                        .iter()
                        .find(|k| k.public_key() == event.pubkey)
                        .cloned()
                        .unwrap_or_else(|| author.clone()),
                    5,
                    if live { at + 5 } else { (at + 5).min(end) },
                    vec![
                        tag(&["e", &event.id.to_hex()]),
                        tag(&["E", &root_hex]),
                        tag(&["k", "1111"]),
                    ],
                    "",
                );
                let deletion = self.push(deletion, true);
                if live {
                    self.live.insert(deletion.id);
                }
            }
        }
    }
}

/// A patch of about a kilobyte, like a small `git format-patch`.
fn patch_body(rng: &mut Rng, n: usize) -> String {
    let mut body = format!(
        "From {:040x} Mon Sep 17 00:00:00 2001\nSubject: [PATCH] change {n}\n\n",
        rng.next_u64()
    );
    while body.len() < 900 {
        body.push_str(&format!("+line {:016x}\n", rng.next_u64()));
    }
    body
}
