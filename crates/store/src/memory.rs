//! An in-memory backend of the store contract: events by id, postings per tag value,
//! author and kind and over every event, the event notes, and the sync state as the
//! shared records. What the conformance suite runs natively without a database, and
//! what a test needs when it wants a real store and no disk.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::rc::Rc;

use futures::future::{ready, LocalBoxFuture};
use futures::FutureExt as _;
use grasp_sync_core::accept::Removal;
use grasp_sync_core::RepoRef;
use grasp_sync_driver::{Saved, SavedState, Store, StoreError};
use nostr::prelude::{Event, EventId, Filter, Kind, PublicKey, SingleLetterTag, Timestamp};

use crate::notes::{is_live, names_a_repo, Notes};
use crate::plan::{merge, Access, Plan, Posting};
use crate::records::{
    checkpoint_key, decode_checkpoint, decode_seen, encode_checkpoint, encode_seen,
};

/// Named in-memory databases, which outlive the stores opened on them: opening a name
/// again sees what was saved under it (a reopen).
#[derive(Clone)]
pub struct MemoryStores {
    dbs: Rc<RefCell<HashMap<String, Rc<RefCell<Db>>>>>,
    now: fn() -> Timestamp,
}

impl Default for MemoryStores {
    fn default() -> Self {
        Self::with_clock(Timestamp::now)
    }
}

impl MemoryStores {
    /// Databases whose stores read the wall clock for NIP-40 expiration and remembered
    /// ids' expiry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Databases whose stores read the time from `now`.
    pub fn with_clock(now: fn() -> Timestamp) -> Self {
        Self {
            dbs: Rc::default(),
            now,
        }
    }

    /// The store on database `name`, created empty on first use.
    pub fn open(&self, name: &str) -> MemoryStore {
        let db = Rc::clone(self.dbs.borrow_mut().entry(name.to_owned()).or_default());
        MemoryStore { db, now: self.now }
    }
}

/// A store in memory (see the module documentation). Cheap to clone: clones share one
/// database.
#[derive(Clone)]
pub struct MemoryStore {
    db: Rc<RefCell<Db>>,
    now: fn() -> Timestamp,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStores::new().open("")
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("events", &self.db.borrow().events.len())
            .finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// A store of its own, empty.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stored events matching `filter`, newest first, the newest `limit` of them.
    pub fn query_now(&self, filter: &Filter) -> Vec<Event> {
        let db = self.db.borrow();
        let plan = Plan::of(filter);
        plan.select(
            db.postings(&plan),
            |id| db.events.get(id).cloned(),
            (self.now)(),
        )
    }

    /// (created_at, id) of stored events matching `filter`, newest first; from the
    /// postings alone when they answer the filter.
    pub fn items_now(&self, filter: &Filter) -> Vec<(Timestamp, EventId)> {
        let db = self.db.borrow();
        let plan = Plan::of(filter);
        let now = (self.now)();
        if !plan.postings_suffice {
            let events = plan.select(db.postings(&plan), |id| db.events.get(id).cloned(), now);
            return events.iter().map(|e| (e.created_at, e.id)).collect();
        }
        let expired = |id: &EventId| db.expiring.get(id).is_some_and(|at| *at < now);
        db.postings(&plan)
            .into_iter()
            .filter(|p| plan.in_window(p) && !expired(&p.id))
            .take(plan.limit.unwrap_or(usize::MAX))
            .map(Posting::item)
            .collect()
    }

    /// Puts, then removes (see [`Store::save`]).
    pub fn save_now(&self, events: Vec<Event>, remove: &[Removal]) -> Saved {
        let mut db = self.db.borrow_mut();
        let mut saved = Saved::default();
        for event in events {
            if db.events.contains_key(&event.id) {
                saved.existed.push(event.id);
            } else {
                db.insert(event);
            }
        }
        for removal in remove {
            let authored = db
                .events
                .get(&removal.id)
                .is_some_and(|e| e.pubkey == removal.author);
            if authored {
                saved.removed.extend(db.remove(&removal.id));
            }
        }
        saved
    }

    /// Saves checkpoints and remembered ids as their records.
    pub fn save_state_now(&self, state: &SavedState) {
        let mut db = self.db.borrow_mut();
        for checkpoint in &state.checkpoints {
            db.checkpoints
                .insert(checkpoint_key(checkpoint), encode_checkpoint(checkpoint));
        }
        for entry in &state.remembered {
            db.seen.insert(entry.id, encode_seen(entry));
        }
    }

    /// The checkpoints and the remembered ids not expired; expired ones are deleted.
    pub fn load_state_now(&self) -> SavedState {
        let mut db = self.db.borrow_mut();
        let now = (self.now)();
        let mut state = SavedState {
            checkpoints: db
                .checkpoints
                .values()
                .filter_map(|bytes| decode_checkpoint(bytes).ok())
                .collect(),
            remembered: Vec::new(),
        };
        let mut expired = Vec::new();
        for (id, bytes) in &db.seen {
            match decode_seen(id.as_bytes(), bytes) {
                Ok(entry) if entry.expires_at < now => expired.push(*id),
                Ok(entry) => state.remembered.push(entry),
                Err(_) => {}
            }
        }
        for id in expired {
            db.seen.remove(&id);
        }
        state
    }

    /// The stored, unexpired roots naming one of `coords`, read through the noted roots.
    pub fn root_events_now(&self, coords: &[RepoRef]) -> Vec<Event> {
        let db = self.db.borrow();
        let wanted: HashSet<&RepoRef> = coords.iter().collect();
        let now = (self.now)();
        db.roots
            .iter()
            .filter_map(|id| db.events.get(id))
            .filter(|e| is_live(e, now) && names_a_repo(e, &wanted))
            .cloned()
            .collect()
    }
}

impl Store for MemoryStore {
    fn query(&self, filter: Filter) -> LocalBoxFuture<'static, Result<Vec<Event>, StoreError>> {
        ready(Ok(self.query_now(&filter))).boxed_local()
    }

    fn items(
        &self,
        filter: Filter,
    ) -> LocalBoxFuture<'static, Result<Vec<(Timestamp, EventId)>, StoreError>> {
        ready(Ok(self.items_now(&filter))).boxed_local()
    }

    fn root_events(
        &self,
        coords: Vec<RepoRef>,
    ) -> LocalBoxFuture<'static, Result<Vec<Event>, StoreError>> {
        ready(Ok(self.root_events_now(&coords))).boxed_local()
    }

    fn save(
        &self,
        events: Vec<Event>,
        remove: Vec<Removal>,
        state: SavedState,
    ) -> LocalBoxFuture<'static, Result<Saved, StoreError>> {
        let saved = self.save_now(events, &remove);
        self.save_state_now(&state);
        ready(Ok(saved)).boxed_local()
    }

    fn save_state(&self, state: SavedState) -> LocalBoxFuture<'static, Result<(), StoreError>> {
        self.save_state_now(&state);
        ready(Ok(())).boxed_local()
    }

    fn load_state(&self) -> LocalBoxFuture<'static, Result<SavedState, StoreError>> {
        ready(Ok(self.load_state_now())).boxed_local()
    }
}

/// One database.
#[derive(Default)]
struct Db {
    events: HashMap<EventId, Event>,
    all: BTreeSet<Posting>,
    by_tag: HashMap<(SingleLetterTag, String), BTreeSet<Posting>>,
    by_author: HashMap<PublicKey, BTreeSet<Posting>>,
    by_kind: HashMap<Kind, BTreeSet<Posting>>,
    roots: BTreeSet<EventId>,
    expiring: HashMap<EventId, Timestamp>,
    checkpoints: BTreeMap<[u8; 32], Vec<u8>>,
    seen: BTreeMap<EventId, Vec<u8>>,
}

impl Db {
    fn insert(&mut self, event: Event) {
        let posting = Posting::of(&event);
        self.all.insert(posting);
        for key in tag_keys(&event) {
            self.by_tag.entry(key).or_default().insert(posting);
        }
        self.by_author
            .entry(event.pubkey)
            .or_default()
            .insert(posting);
        self.by_kind.entry(event.kind).or_default().insert(posting);
        let notes = Notes::of([&event]);
        self.roots.extend(notes.roots);
        self.expiring.extend(notes.expiring);
        self.events.insert(event.id, event);
    }

    fn remove(&mut self, id: &EventId) -> Option<Event> {
        let event = self.events.remove(id)?;
        let posting = Posting::of(&event);
        self.all.remove(&posting);
        for key in tag_keys(&event) {
            unpost(&mut self.by_tag, &key, &posting);
        }
        unpost(&mut self.by_author, &event.pubkey, &posting);
        unpost(&mut self.by_kind, &event.kind, &posting);
        self.roots.remove(id);
        self.expiring.remove(id);
        Some(event)
    }

    /// The postings `plan` walks, newest first.
    fn postings(&self, plan: &Plan) -> Vec<Posting> {
        let window = |set: &BTreeSet<Posting>| -> Vec<Posting> {
            let from = Posting {
                created_at: plan.until,
                id: EventId::from_byte_array([0; 32]),
            };
            let to = Posting {
                created_at: plan.since,
                id: EventId::from_byte_array([0xff; 32]),
            };
            if from > to {
                return Vec::new();
            }
            set.range(from..=to).copied().collect()
        };
        let lists: Vec<Vec<Posting>> = match &plan.access {
            Access::Nothing => Vec::new(),
            Access::Ids(ids) => vec![ids
                .iter()
                .filter_map(|id| self.events.get(id))
                .map(Posting::of)
                .collect()],
            Access::Tag(letter, values) => values
                .iter()
                .filter_map(|v| self.by_tag.get(&(*letter, v.clone())))
                .map(window)
                .collect(),
            Access::Authors(authors) => authors
                .iter()
                .filter_map(|a| self.by_author.get(a))
                .map(window)
                .collect(),
            Access::Kinds(kinds) => kinds
                .iter()
                .filter_map(|k| self.by_kind.get(k))
                .map(window)
                .collect(),
            Access::All => vec![window(&self.all)],
        };
        merge(lists)
    }
}

/// (letter, first value) of every single-letter tag: what a `#x` filter matches.
fn tag_keys(event: &Event) -> BTreeSet<(SingleLetterTag, String)> {
    event
        .tags
        .iter()
        .filter_map(|t| Some((t.single_letter_tag()?, t.content()?.to_owned())))
        .collect()
}

fn unpost<K: std::hash::Hash + Eq + Clone>(
    map: &mut HashMap<K, BTreeSet<Posting>>,
    key: &K,
    posting: &Posting,
) {
    if let Some(set) = map.get_mut(key) {
        set.remove(posting);
        if set.is_empty() {
            map.remove(key);
        }
    }
}
