//! Acceptance: the one store-independent step that decides what a received event does
//! to the store. Every front end uses it, for events from relays and from clients alike.
//!
//! In two stages, so signature verification can happen in between, in parallel batches,
//! wherever the driver likes:
//! 1. [`Acceptor::precheck`] — cheap checks on the frame: size, tag count, timestamp.
//! 2. [`Acceptor::decide`] — after the id and signature were verified: NIP-34 relevance
//!    (references a tracked repository or root), the announcement policy (GRASP-01:
//!    `all`, `list-us`, `allow-list`), replaceable and addressable versions (newer wins,
//!    ties to the lowest id) and NIP-09 deletions by the author.
//!
//! Rejections are typed and counted by the caller; [`Reject::remembered`] says whether
//! the id joins the seen-not-stored set. Forgery-like rejections (bad id or signature,
//! an event we did not ask for) are never remembered: a lying relay must not be able to
//! make us skip the genuine event with that id.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;

use nostr::prelude::{Event, EventId, Kind, PublicKey, Timestamp};

use crate::index::RepoIndex;
use crate::nip34::{self, kinds, RepoRef, Version};
use crate::relay_url::RelayUrl;

/// Which repository announcements a store accepts (GRASP-01).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AnnouncementPolicy {
    /// Every announcement (a client's cache).
    #[default]
    All,
    /// Announcements that list one of our own relay URLs (a GRASP server's default).
    ListUs,
    /// Announcements by these authors.
    AllowList(BTreeSet<PublicKey>),
}

/// What acceptance enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptConfig {
    /// Largest event, in bytes of its JSON.
    pub max_event_bytes: usize,
    /// Most tags on one event.
    pub max_tags: usize,
    /// How far in the future `created_at` may be.
    pub max_future_secs: u64,
    /// Which announcements are accepted.
    pub announcements: AnnouncementPolicy,
    /// Our own relay URLs, for [`AnnouncementPolicy::ListUs`].
    pub own_urls: BTreeSet<RelayUrl>,
    /// The open mode: every valid event within the limits is stored, not only NIP-34
    /// events of tracked repositories (a general relay that also mirrors repositories;
    /// which repositories are mirrored is the index's business). Ephemeral kinds are
    /// never stored, in any mode.
    pub any_event: bool,
}

impl Default for AcceptConfig {
    fn default() -> Self {
        Self {
            max_event_bytes: 512 * 1024,
            max_tags: 2_000,
            max_future_secs: 15 * 60,
            announcements: AnnouncementPolicy::All,
            own_urls: BTreeSet::new(),
            any_event: false,
        }
    }
}

/// Why an event is not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reject {
    /// Its JSON exceeds the size limit.
    TooLarge,
    /// It has too many tags.
    TooManyTags,
    /// Its `created_at` is too far in the future.
    FromTheFuture,
    /// Its NIP-40 `expiration` has passed.
    Expired,
    /// An ephemeral kind (20000–29999): delivered live, never stored.
    Ephemeral,
    /// Its id does not match its content.
    BadId,
    /// Its signature does not verify.
    BadSignature,
    /// It does not match any filter we asked that relay for.
    NotRequested,
    /// It references no tracked repository or root.
    Irrelevant,
    /// An announcement that does not list our relay (policy `list-us`).
    NotListingUs,
    /// An announcement by an author not on the allow list.
    NotAllowed,
    /// An older version of a replaceable or addressable event we hold a newer one of.
    Superseded,
    /// Deleted by its author (NIP-09).
    Deleted,
    /// The very version we already hold.
    Duplicate,
}

impl Reject {
    /// A stable label, for counters and `OK false` messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TooLarge => "too-large",
            Self::TooManyTags => "too-many-tags",
            Self::FromTheFuture => "from-the-future",
            Self::Expired => "expired",
            Self::Ephemeral => "ephemeral",
            Self::BadId => "bad-id",
            Self::BadSignature => "bad-signature",
            Self::NotRequested => "not-requested",
            Self::Irrelevant => "irrelevant",
            Self::NotListingUs => "not-listing-us",
            Self::NotAllowed => "not-allowed",
            Self::Superseded => "superseded",
            Self::Deleted => "deleted",
            Self::Duplicate => "duplicate",
        }
    }

    /// Whether the id joins the seen-not-stored set: only for reasons that follow from
    /// the content the id commits to, never for forgeries or transport problems.
    pub fn remembered(self) -> bool {
        matches!(
            self,
            Self::TooLarge
                | Self::TooManyTags
                | Self::Expired
                | Self::Ephemeral
                | Self::Irrelevant
                | Self::NotListingUs
                | Self::NotAllowed
                | Self::Superseded
                | Self::Deleted
        )
    }
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event the store must remove, if it holds it and `author` wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Removal {
    /// The event to remove.
    pub id: EventId,
    /// Its author; a store removes nothing written by someone else.
    pub author: PublicKey,
}

/// What to do with an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Store it, and remove these (older versions, deleted events).
    Store {
        /// Events to remove from the store.
        remove: Vec<Removal>,
    },
    /// Do not store it.
    Reject(Reject),
}

/// `kind:pubkey:d` of a replaceable or addressable event.
type Address = (u16, [u8; 32], String);

/// Acceptance state: the newest version per address, and NIP-09 deletions.
#[derive(Debug, Default, Clone)]
pub struct Acceptor {
    config: AcceptConfig,
    versions: HashMap<Address, Version>,
    deleted_ids: HashSet<(EventId, [u8; 32])>,
    deleted_addresses: HashMap<Address, Timestamp>,
    /// What each `Store` verdict not yet [committed](Self::committed) changed, to be
    /// [rolled back](Self::roll_back) if its write fails.
    undo: HashMap<EventId, Vec<Undo>>,
}

/// One change a `Store` verdict made, and what was there before.
#[derive(Debug, Clone)]
enum Undo {
    /// The version held at an address: what it was (`None`: none), and the id the
    /// verdict left there (`None`: it removed it).
    Version {
        address: Address,
        before: Option<Version>,
        after: Option<EventId>,
    },
    /// An id recorded deleted that was not before.
    DeletedId((EventId, [u8; 32])),
    /// The deletion time of an address (`None`: none).
    DeletedAddress(Address, Option<Timestamp>),
}

impl Acceptor {
    /// An acceptor with no history.
    pub fn new(config: AcceptConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &AcceptConfig {
        &self.config
    }

    /// Replaces the configuration.
    pub fn set_config(&mut self, config: AcceptConfig) {
        self.config = config;
    }

    /// Cheap checks before verification: size of the event's JSON, tag count, a
    /// `created_at` not too far after `now`, and a NIP-40 `expiration` not passed.
    pub fn precheck(&self, event: &Event, json_bytes: usize, now: Timestamp) -> Result<(), Reject> {
        if json_bytes > self.config.max_event_bytes {
            return Err(Reject::TooLarge);
        }
        if event.tags.len() > self.config.max_tags {
            return Err(Reject::TooManyTags);
        }
        if event.created_at.as_secs() > now.as_secs().saturating_add(self.config.max_future_secs) {
            return Err(Reject::FromTheFuture);
        }
        if event.is_expired_at(now) {
            return Err(Reject::Expired);
        }
        Ok(())
    }

    /// The store committed the events of these `Store` verdicts: they are final.
    pub fn committed<'a>(&mut self, ids: impl IntoIterator<Item = &'a EventId>) {
        for id in ids {
            self.undo.remove(id);
        }
    }

    /// The store failed to write the events of these `Store` verdicts: what each
    /// recorded is undone (the last decided first), where nothing decided since changed
    /// it again, so a copy fetched again is judged as the first was.
    pub fn roll_back<'a>(&mut self, ids: impl IntoIterator<Item = &'a EventId>) {
        let ids: Vec<&EventId> = ids.into_iter().collect();
        for id in ids.into_iter().rev() {
            let Some(changes) = self.undo.remove(id) else {
                continue;
            };
            for change in changes.into_iter().rev() {
                self.undo_one(change);
            }
        }
    }

    fn undo_one(&mut self, change: Undo) {
        match change {
            Undo::Version {
                address,
                before,
                after,
            } => {
                // Only where nothing decided since changed it again.
                if self.versions.get(&address).map(|v| v.id) == after {
                    match before {
                        Some(version) => self.versions.insert(address, version),
                        None => self.versions.remove(&address),
                    };
                }
            }
            Undo::DeletedId(key) => {
                self.deleted_ids.remove(&key);
            }
            Undo::DeletedAddress(address, previous) => match previous {
                Some(at) => {
                    self.deleted_addresses.insert(address, at);
                }
                None => {
                    self.deleted_addresses.remove(&address);
                }
            },
        }
    }

    /// Decides about an event whose id and signature were verified. A `Store` verdict
    /// also records the event (its version, its deletions) as if stored; the caller
    /// says once its write [committed](Self::committed) or [failed](Self::roll_back).
    pub fn decide(&mut self, event: &Event, index: &RepoIndex) -> Verdict {
        let author = event.pubkey.to_bytes();
        if self.deleted_ids.contains(&(event.id, author)) {
            return Verdict::Reject(Reject::Deleted);
        }
        if let Err(reject) = self.relevant(event, index) {
            return Verdict::Reject(reject);
        }
        let mut remove = Vec::new();
        let mut changes = Vec::new();
        if let Some(address) = address_of(event) {
            if self
                .deleted_addresses
                .get(&address)
                .is_some_and(|at| event.created_at <= *at)
            {
                return Verdict::Reject(Reject::Deleted);
            }
            let version = Version::of(event);
            match self.versions.get(&address) {
                Some(held) if held.id == version.id => return Verdict::Reject(Reject::Duplicate),
                Some(held) if !version.replaces(held) => {
                    return Verdict::Reject(Reject::Superseded)
                }
                Some(held) => remove.push(Removal {
                    id: held.id,
                    author: event.pubkey,
                }),
                None => {}
            }
            let before = self.versions.insert(address.clone(), version);
            changes.push(Undo::Version {
                address,
                before,
                after: Some(event.id),
            });
        }
        if event.kind == kinds::DELETION {
            remove.extend(self.record_deletion(event, &mut changes));
        }
        if !changes.is_empty() {
            self.undo.insert(event.id, changes);
        }
        Verdict::Store { remove }
    }

    /// Whether its author deleted `event` (NIP-09, by id or by address).
    pub fn is_deleted(&self, event: &Event) -> bool {
        self.deleted_ids
            .contains(&(event.id, event.pubkey.to_bytes()))
            || address_of(event).is_some_and(|address| {
                self.deleted_addresses
                    .get(&address)
                    .is_some_and(|at| event.created_at <= *at)
            })
    }

    /// Records an event loaded from the store at start-up, without judging it; for a
    /// deletion, the removals it makes (to apply again: a store need not have written
    /// them in the transaction that stored the deletion).
    pub fn restore(&mut self, event: &Event) -> Vec<Removal> {
        if let Some(address) = address_of(event) {
            let version = Version::of(event);
            let newer = self
                .versions
                .get(&address)
                .is_none_or(|held| version.replaces(held));
            if newer {
                self.versions.insert(address, version);
            }
        }
        if event.kind == kinds::DELETION {
            return self.record_deletion(event, &mut Vec::new());
        }
        Vec::new()
    }

    /// Whether the event belongs in a store of tracked repositories.
    fn relevant(&self, event: &Event, index: &RepoIndex) -> Result<(), Reject> {
        if event.kind.is_ephemeral() {
            return Err(Reject::Ephemeral);
        }
        if self.config.any_event {
            return Ok(());
        }
        if event.kind == kinds::REPO_ANNOUNCEMENT {
            return self.announcement_allowed(event, index);
        }
        if event.kind == kinds::REPO_STATE {
            let coord = nip34::first_value(event, "d").map(|d| RepoRef::new(event.pubkey, d));
            return match coord {
                Some(coord) if index.is_tracked_coord(&coord) => Ok(()),
                _ => Err(Reject::Irrelevant),
            };
        }
        let tracks_repo = nip34::repo_refs(event)
            .iter()
            .any(|r| index.is_tracked_coord(r));
        let tracks_root = || {
            nip34::referenced_ids(event)
                .iter()
                .any(|id| index.is_tracked_root(id))
        };
        if tracks_repo || tracks_root() {
            Ok(())
        } else {
            Err(Reject::Irrelevant)
        }
    }

    fn announcement_allowed(&self, event: &Event, index: &RepoIndex) -> Result<(), Reject> {
        let Some(coord) = RepoRef::of_announcement(event) else {
            return Err(Reject::Irrelevant);
        };
        // A maintainer's announcement of a tracked repository is part of that repository.
        if index.is_tracked_coord(&coord) {
            return Ok(());
        }
        match &self.config.announcements {
            AnnouncementPolicy::All => Ok(()),
            AnnouncementPolicy::ListUs => {
                let lists_us = nip34::announced_relays(event)
                    .filter_map(|url| RelayUrl::parse(url).ok())
                    .any(|url| self.config.own_urls.contains(&url));
                lists_us.then_some(()).ok_or(Reject::NotListingUs)
            }
            AnnouncementPolicy::AllowList(authors) => authors
                .contains(&event.pubkey)
                .then_some(())
                .ok_or(Reject::NotAllowed),
        }
    }

    /// Records a deletion's targets; returns the held versions it removes.
    fn record_deletion(&mut self, event: &Event, changes: &mut Vec<Undo>) -> Vec<Removal> {
        let author = event.pubkey.to_bytes();
        let mut remove = Vec::new();
        for value in nip34::first_values(event, "e") {
            if let Ok(id) = EventId::from_hex(value) {
                if self.deleted_ids.insert((id, author)) {
                    changes.push(Undo::DeletedId((id, author)));
                }
                remove.push(Removal {
                    id,
                    author: event.pubkey,
                });
            }
        }
        for value in nip34::first_values(event, "a") {
            let Some(address) = parse_address(value).filter(|a| a.1 == author) else {
                continue;
            };
            if let Some(held) = self.versions.get(&address) {
                if held.created_at <= event.created_at {
                    remove.push(Removal {
                        id: held.id,
                        author: event.pubkey,
                    });
                    let before = self.versions.remove(&address);
                    changes.push(Undo::Version {
                        address: address.clone(),
                        before,
                        after: None,
                    });
                }
            }
            let before = self.deleted_addresses.get(&address).copied();
            changes.push(Undo::DeletedAddress(address.clone(), before));
            let at = self
                .deleted_addresses
                .entry(address)
                .or_insert(event.created_at);
            *at = (*at).max(event.created_at);
        }
        // A held version deleted by id is no longer held.
        let deleted: Vec<Address> = self
            .versions
            .iter()
            .filter(|(_, v)| remove.iter().any(|r| r.id == v.id))
            .map(|(address, _)| address.clone())
            .collect();
        for address in deleted {
            let before = self.versions.remove(&address);
            changes.push(Undo::Version {
                address,
                before,
                after: None,
            });
        }
        remove.sort_unstable();
        remove.dedup();
        remove
    }
}

/// The address of a replaceable (10000–19999, 0, 3) or addressable (30000–39999) event.
fn address_of(event: &Event) -> Option<Address> {
    let kind = event.kind;
    let d = if kind.is_addressable() {
        nip34::first_value(event, "d")
            .unwrap_or_default()
            .to_owned()
    } else if kind.is_replaceable() {
        String::new()
    } else {
        return None;
    };
    Some((kind.as_u16(), event.pubkey.to_bytes(), d))
}

/// Parses `kind:pubkey:d`.
fn parse_address(value: &str) -> Option<Address> {
    let mut parts = value.splitn(3, ':');
    let kind: u16 = parts.next()?.parse().ok()?;
    let pubkey = PublicKey::from_hex(parts.next()?).ok()?;
    let d = parts.next().unwrap_or_default().to_owned();
    let kind = Kind::from(kind);
    (kind.is_addressable() || kind.is_replaceable()).then(|| (kind.as_u16(), pubkey.to_bytes(), d))
}
