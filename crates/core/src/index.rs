//! The repo index — the source of truth for what to sync from where — and the relay
//! targets derived from it.
//!
//! Each tracked repository (keyed by its announcement's coordinate) has the relays its
//! announcement lists, its coordinates (the owner's and each maintainer's
//! `30617:<pubkey>:<d>`) and, through those coordinates, its root events. An item (a
//! coordinate or a root) is a target of relay R when some repository that contains it
//! lists R. A batch of events updates the index and the targets in time proportional to
//! what it touches, and reports the net [`TargetChange`]s.

use std::collections::{BTreeSet, HashMap, HashSet};

use nostr::prelude::{Event, EventId, Timestamp};
use rustc_hash::FxHashMap;

use crate::items::{Item, ItemId, Names, RelayId};
use crate::nip34::{self, kinds, RepoRef, RootRef, Version};
use crate::relay_url::{RelayUrl, RelayUrlError, RelayUrlPolicy};
use crate::targets::{ChangeLog, TargetChange, Targets};

/// What the index accepts as relay targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexConfig {
    /// Which relay URLs may be targets (private addresses are refused by default).
    pub relay_policy: RelayUrlPolicy,
    /// Our own relay URLs: never a target.
    pub own_urls: BTreeSet<RelayUrl>,
    /// Also sync from the hosts of `clone` URLs (off by default).
    pub relays_from_clone_urls: bool,
    /// At most this many relays per repository; the rest are refused.
    pub max_relays_per_repo: usize,
    /// At most this many maintainers per repository besides the owner.
    pub max_maintainers: usize,
    /// At most this many repositories a root event can attach to.
    pub max_repos_per_root: usize,
    /// Track only announcements that list one of [`own_urls`](Self::own_urls) (or a
    /// repository already tracked): for a store that keeps announcements it does not
    /// mirror (the open acceptance mode).
    pub only_listing_us: bool,
}

impl Default for IndexConfig {
    fn default() -> Self {
        Self {
            relay_policy: RelayUrlPolicy::default(),
            own_urls: BTreeSet::new(),
            relays_from_clone_urls: false,
            max_relays_per_repo: 32,
            max_maintainers: 32,
            max_repos_per_root: 16,
            only_listing_us: false,
        }
    }
}

/// Why a relay an announcement lists is not a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefusalReason {
    /// The URL is malformed or forbidden by the relay policy.
    Url(RelayUrlError),
    /// The announcement lists more than [`IndexConfig::max_relays_per_repo`] relays.
    TooManyRelays,
}

/// A relay an announcement listed that will not be synced from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayRefusal {
    /// The repository whose announcement listed it.
    pub repo: RepoRef,
    /// The URL as listed.
    pub url: String,
    /// Why it was refused.
    pub reason: RefusalReason,
}

/// What a batch did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IndexUpdate {
    /// Net changes to the relay targets, sorted.
    pub changes: Vec<TargetChange>,
    /// Relays listed by announcements of this batch that were refused.
    pub refused: Vec<RelayRefusal>,
    /// Events that changed the index.
    pub applied: usize,
    /// Events that did not: older versions, duplicates, deleted or irrelevant kinds.
    pub ignored: usize,
}

#[derive(Debug, Clone)]
struct Repo {
    version: Version,
    /// Relays the announcement lists, normalised, before the policy is applied.
    announced: Box<[RelayId]>,
    /// Relays at the hosts of its clone URLs, before the policy is applied.
    clone_hosts: Box<[RelayId]>,
    /// Effective relays, sorted.
    relays: Box<[RelayId]>,
    /// The owner's and maintainers' coordinates, sorted.
    coords: Box<[ItemId]>,
}

#[derive(Debug, Clone)]
struct Root {
    author: [u8; 32],
    coords: Box<[ItemId]>,
}

/// Repo ref → relays, maintainers and root events; and the relay targets derived from it.
#[derive(Debug, Default, Clone)]
pub struct RepoIndex {
    config: IndexConfig,
    names: Names,
    repos: FxHashMap<ItemId, Repo>,
    coord_repos: FxHashMap<ItemId, Vec<ItemId>>,
    coord_roots: FxHashMap<ItemId, Vec<ItemId>>,
    roots: FxHashMap<ItemId, Root>,
    announcement_ids: HashMap<EventId, ItemId>,
    /// Coordinates whose newest known announcement is deleted: older ones stay ignored.
    dead: FxHashMap<ItemId, Version>,
    deleted_coords: FxHashMap<ItemId, Timestamp>,
    deleted_ids: HashSet<(EventId, [u8; 32])>,
    targets: Targets,
}

impl RepoIndex {
    /// An empty index.
    pub fn new(config: IndexConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &IndexConfig {
        &self.config
    }

    /// The interning tables that name items and relays.
    pub fn names(&self) -> &Names {
        &self.names
    }

    /// The relay targets, kept up to date by every update.
    pub fn targets(&self) -> &Targets {
        &self.targets
    }

    /// The id of a relay the engine tracks besides announced ones (bootstrap relays).
    pub(crate) fn intern_relay(&mut self, url: &RelayUrl) -> RelayId {
        self.names.intern_relay(url)
    }

    /// Number of tracked repositories.
    pub fn repo_count(&self) -> usize {
        self.repos.len()
    }

    /// Number of known root events.
    pub fn root_count(&self) -> usize {
        self.roots.len()
    }

    /// Whether `coord` is the owner's or a maintainer's coordinate of a tracked repository.
    pub fn is_tracked_coord(&self, coord: &RepoRef) -> bool {
        self.names
            .coord_id(coord)
            .is_some_and(|id| self.coord_repos.contains_key(&id))
    }

    /// Whether an announcement lists one of our own URLs.
    fn lists_us(&self, event: &Event) -> bool {
        nip34::announced_relays(event)
            .filter_map(|url| RelayUrl::parse(url).ok())
            .any(|url| self.config.own_urls.contains(&url))
    }

    /// Whether `id` is an undeleted root event of a tracked repository.
    pub fn is_tracked_root(&self, id: &EventId) -> bool {
        self.names
            .item_id(&Item::Root(*id))
            .and_then(|item| self.roots.get(&item))
            .is_some_and(|root| root.coords.iter().any(|c| self.coord_repos.contains_key(c)))
    }

    /// The tracked repositories.
    pub fn repos(&self) -> impl Iterator<Item = &RepoRef> + '_ {
        self.repos.keys().filter_map(|id| self.names.coord(*id))
    }

    /// The effective relays of a tracked repository.
    pub fn repo_relays(&self, repo: &RepoRef) -> Vec<&RelayUrl> {
        self.names
            .coord_id(repo)
            .and_then(|id| self.repos.get(&id))
            .map(|r| r.relays.iter().map(|id| self.names.relay(*id)).collect())
            .unwrap_or_default()
    }

    /// The coordinates (owner first, then maintainers) of a tracked repository.
    pub fn repo_coords(&self, repo: &RepoRef) -> Vec<&RepoRef> {
        self.names
            .coord_id(repo)
            .and_then(|id| self.repos.get(&id))
            .map(|r| {
                r.coords
                    .iter()
                    .filter_map(|c| self.names.coord(*c))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Applies a batch of events: announcements, root events and deletions; other kinds
    /// are ignored. Cost is proportional to what the batch touches, not to the index.
    pub fn apply<'a>(&mut self, events: impl IntoIterator<Item = &'a Event>) -> IndexUpdate {
        let mut log = ChangeLog::default();
        let mut update = IndexUpdate::default();
        for event in events {
            let applied = if event.kind == kinds::REPO_ANNOUNCEMENT {
                self.announcement(event, &mut log, &mut update.refused)
            } else if event.kind == kinds::DELETION {
                self.deletion(event, &mut log)
            } else if let Some(root) = RootRef::of(event) {
                self.add_root(&root, &mut log)
            } else {
                false
            };
            if applied {
                update.applied += 1;
            } else {
                update.ignored += 1;
            }
        }
        update.changes = log.finish(&self.targets);
        update
    }

    /// Replaces the configuration and re-derives every repository's relays.
    pub fn set_config(&mut self, config: IndexConfig) -> IndexUpdate {
        self.config = config;
        let mut log = ChangeLog::default();
        let mut update = IndexUpdate::default();
        let mut ids: Vec<ItemId> = self.repos.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let (Some(mut repo), Some(coord)) =
                (self.repos.get(&id).cloned(), self.names.coord(id).cloned())
            else {
                continue;
            };
            repo.relays = self.effective_relays(&coord, &repo, &mut update.refused);
            self.replace_repo(id, Some(repo), &mut log);
        }
        update.changes = log.finish(&self.targets);
        update
    }

    /// The targets rebuilt from scratch; equal to [`targets`](Self::targets) at all times.
    pub fn rebuild_targets(&self) -> Targets {
        let mut targets = Targets::default();
        for repo in self.repos.values() {
            let items = self.items_of(repo);
            for relay in repo.relays.iter() {
                for item in &items {
                    targets.insert(*relay, *item);
                }
            }
        }
        targets
    }

    fn announcement(
        &mut self,
        event: &Event,
        log: &mut ChangeLog,
        refused: &mut Vec<RelayRefusal>,
    ) -> bool {
        let Some(coord) = RepoRef::of_announcement(event) else {
            return false;
        };
        if self.config.only_listing_us && !self.is_tracked_coord(&coord) && !self.lists_us(event) {
            return false;
        }
        let version = Version::of(event);
        let id = self.names.intern_coord(&coord);
        let latest = self
            .repos
            .get(&id)
            .map(|r| r.version)
            .or_else(|| self.dead.get(&id).copied());
        if latest.is_some_and(|latest| !version.replaces(&latest)) {
            return false;
        }
        let deleted = self
            .deleted_ids
            .contains(&(event.id, event.pubkey.to_bytes()))
            || self
                .deleted_coords
                .get(&id)
                .is_some_and(|at| version.created_at <= *at);
        if deleted {
            self.kill_repo(id, version, log);
            return true;
        }
        self.dead.remove(&id);
        let listed_cap = self.config.max_relays_per_repo.saturating_mul(4);
        for url in nip34::announced_relays(event).skip(listed_cap) {
            refused.push(RelayRefusal {
                repo: coord.clone(),
                url: url.to_owned(),
                reason: RefusalReason::TooManyRelays,
            });
        }
        let announced = nip34::announced_relays(event)
            .take(listed_cap)
            .filter_map(|url| match RelayUrl::parse(url) {
                Ok(relay) => Some(self.names.intern_relay(&relay)),
                Err(e) => {
                    refused.push(RelayRefusal {
                        repo: coord.clone(),
                        url: url.to_owned(),
                        reason: RefusalReason::Url(e),
                    });
                    None
                }
            })
            .collect();
        let clone_hosts = nip34::announced_clone_urls(event)
            .take(listed_cap)
            .filter_map(|url| RelayUrl::from_clone_url(url).ok())
            .map(|relay| self.names.intern_relay(&relay))
            .collect();
        let mut coords = vec![id];
        for maintainer in nip34::announced_maintainers(event)
            .into_iter()
            .take(self.config.max_maintainers)
        {
            coords.push(self.names.intern_coord(&coord.with_author(maintainer)));
        }
        coords.sort_unstable();
        coords.dedup();
        let mut repo = Repo {
            version,
            announced: dedup_ordered(announced),
            clone_hosts: dedup_ordered(clone_hosts),
            relays: Box::default(),
            coords: coords.into(),
        };
        repo.relays = self.effective_relays(&coord, &repo, refused);
        if let Some(old) = self.repos.get(&id) {
            self.announcement_ids.remove(&old.version.id);
        }
        self.announcement_ids.insert(event.id, id);
        self.replace_repo(id, Some(repo), log);
        true
    }

    /// Root events stored earlier, as the store keeps them apart (see [`RootRef`]): as
    /// [`apply`](Self::apply) takes their events.
    pub fn apply_roots(&mut self, roots: &[RootRef]) -> IndexUpdate {
        let mut log = ChangeLog::default();
        let mut update = IndexUpdate::default();
        for root in roots {
            if self.add_root(root, &mut log) {
                update.applied += 1;
            } else {
                update.ignored += 1;
            }
        }
        update.changes = log.finish(&self.targets);
        update
    }

    fn add_root(&mut self, root: &RootRef, log: &mut ChangeLog) -> bool {
        let author = root.author.to_bytes();
        if self.deleted_ids.contains(&(root.id, author)) {
            return false;
        }
        let id = self.names.intern_root(root.id);
        if self.roots.contains_key(&id) {
            return false;
        }
        let coords: Vec<ItemId> = root
            .repos
            .iter()
            .take(self.config.max_repos_per_root)
            .map(|c| self.names.intern_coord(c))
            .collect();
        for coord in &coords {
            self.coord_roots.entry(*coord).or_default().push(id);
        }
        let held = Root {
            author,
            coords: coords.into(),
        };
        for relay in self.relays_of_root(&held) {
            log.set(&mut self.targets, relay, id, true);
        }
        self.roots.insert(id, held);
        true
    }

    fn remove_root(&mut self, id: ItemId, log: &mut ChangeLog) {
        let Some(root) = self.roots.remove(&id) else {
            return;
        };
        for coord in root.coords.iter() {
            if let Some(list) = self.coord_roots.get_mut(coord) {
                list.retain(|r| *r != id);
                if list.is_empty() {
                    self.coord_roots.remove(coord);
                }
            }
        }
        for relay in self.relays_of_root(&root) {
            log.set(&mut self.targets, relay, id, false);
        }
    }

    fn deletion(&mut self, event: &Event, log: &mut ChangeLog) -> bool {
        let author = event.pubkey.to_bytes();
        let mut applied = false;
        for value in nip34::first_values(event, "a") {
            let Ok(coord) = RepoRef::parse(value) else {
                continue;
            };
            if coord.pubkey != event.pubkey {
                continue;
            }
            applied = true;
            let id = self.names.intern_coord(&coord);
            let at = self.deleted_coords.entry(id).or_insert(event.created_at);
            *at = (*at).max(event.created_at);
            let at = *at;
            if let Some(version) = self.repos.get(&id).map(|r| r.version) {
                if version.created_at <= at {
                    self.kill_repo(id, version, log);
                }
            }
        }
        for value in nip34::first_values(event, "e") {
            let Ok(target) = EventId::from_hex(value) else {
                continue;
            };
            applied = true;
            self.deleted_ids.insert((target, author));
            if let Some(root_id) = self.names.item_id(&Item::Root(target)) {
                if self.roots.get(&root_id).is_some_and(|r| r.author == author) {
                    self.remove_root(root_id, log);
                }
            }
            if let Some(repo_id) = self.announcement_ids.get(&target).copied() {
                let version = self.repos.get(&repo_id).map(|r| r.version);
                let owned = self.names.coord(repo_id).map(|c| c.pubkey) == Some(event.pubkey);
                if let (Some(version), true) = (version, owned) {
                    self.kill_repo(repo_id, version, log);
                }
            }
        }
        applied
    }

    /// Records `version` as the newest, deleted, version of `id` and untracks the repo.
    fn kill_repo(&mut self, id: ItemId, version: Version, log: &mut ChangeLog) {
        if let Some(repo) = self.repos.get(&id) {
            self.announcement_ids.remove(&repo.version.id);
            self.replace_repo(id, None, log);
        }
        self.dead.insert(id, version);
    }

    /// Effective relays of `repo`: announced (and clone hosts when enabled), allowed by
    /// the policy, not our own, capped; sorted.
    fn effective_relays(
        &self,
        coord: &RepoRef,
        repo: &Repo,
        refused: &mut Vec<RelayRefusal>,
    ) -> Box<[RelayId]> {
        let clone_hosts: &[RelayId] = if self.config.relays_from_clone_urls {
            &repo.clone_hosts
        } else {
            &[]
        };
        let mut relays = Vec::new();
        for relay_id in repo.announced.iter().chain(clone_hosts) {
            if relays.contains(relay_id) {
                continue;
            }
            let url = self.names.relay(*relay_id);
            if self.config.own_urls.contains(url) {
                continue;
            }
            let reason = match self.config.relay_policy.check(url) {
                Err(e) => Some(RefusalReason::Url(e)),
                Ok(()) if relays.len() >= self.config.max_relays_per_repo => {
                    Some(RefusalReason::TooManyRelays)
                }
                Ok(()) => None,
            };
            match reason {
                Some(reason) => refused.push(RelayRefusal {
                    repo: coord.clone(),
                    url: url.to_string(),
                    reason,
                }),
                None => relays.push(*relay_id),
            }
        }
        relays.sort_unstable();
        relays.into()
    }

    /// Installs `new` as repository `id` (or removes it) and updates the targets by the
    /// difference between its old and new (relays × items).
    fn replace_repo(&mut self, id: ItemId, new: Option<Repo>, log: &mut ChangeLog) {
        let old = self.repos.remove(&id);
        let unchanged = match (&old, &new) {
            (Some(o), Some(n)) => o.relays == n.relays && o.coords == n.coords,
            _ => false,
        };
        if unchanged {
            if let Some(new) = new {
                self.repos.insert(id, new);
            }
            return;
        }
        let old_coords: &[ItemId] = old.as_ref().map_or(&[], |r| &r.coords);
        let new_coords: &[ItemId] = new.as_ref().map_or(&[], |r| &r.coords);
        for coord in old_coords
            .iter()
            .filter(|c| new_coords.binary_search(c).is_err())
        {
            if let Some(list) = self.coord_repos.get_mut(coord) {
                list.retain(|r| *r != id);
                if list.is_empty() {
                    self.coord_repos.remove(coord);
                }
            }
        }
        for coord in new_coords
            .iter()
            .filter(|c| old_coords.binary_search(c).is_err())
        {
            self.coord_repos.entry(*coord).or_default().push(id);
        }
        let old_relays: &[RelayId] = old.as_ref().map_or(&[], |r| &r.relays);
        let new_relays: Box<[RelayId]> =
            new.as_ref().map_or_else(Box::default, |r| r.relays.clone());
        let added_relays = sorted_difference(&new_relays, old_relays);
        let removed_relays = sorted_difference(old_relays, &new_relays);
        let kept_relays = sorted_intersection(old_relays, &new_relays);
        // Items only change when the coordinates do; otherwise one list serves both sides.
        let old_items = old.as_ref().map(|r| self.items_of(r)).unwrap_or_default();
        let new_items = match &new {
            Some(r) if *r.coords != *old_coords => self.items_of(r),
            Some(_) => old_items.clone(),
            None => Vec::new(),
        };
        let added_items = sorted_difference(&new_items, &old_items);
        let removed_items = sorted_difference(&old_items, &new_items);
        if let Some(new) = new {
            self.repos.insert(id, new);
        }
        let added = pairs(&added_relays, &new_items).chain(pairs(&kept_relays, &added_items));
        for (relay, item) in added {
            log.set(&mut self.targets, relay, item, true);
        }
        let removed = pairs(&removed_relays, &old_items).chain(pairs(&kept_relays, &removed_items));
        for (relay, item) in removed {
            let on = self.is_targeted(relay, item);
            log.set(&mut self.targets, relay, item, on);
        }
    }

    /// The items of a repository: its coordinates and their roots; sorted, deduplicated.
    fn items_of(&self, repo: &Repo) -> Vec<ItemId> {
        let mut items: Vec<ItemId> = repo.coords.to_vec();
        for coord in repo.coords.iter() {
            if let Some(roots) = self.coord_roots.get(coord) {
                items.extend_from_slice(roots);
            }
        }
        items.sort_unstable();
        items.dedup();
        items
    }

    /// Whether some repository containing `item` lists `relay`.
    fn is_targeted(&self, relay: RelayId, item: ItemId) -> bool {
        let lists_relay = |coord: &ItemId| {
            self.coord_repos
                .get(coord)
                .into_iter()
                .flatten()
                .filter_map(|id| self.repos.get(id))
                .any(|repo| repo.relays.binary_search(&relay).is_ok())
        };
        if item.is_root() {
            self.roots
                .get(&item)
                .is_some_and(|root| root.coords.iter().any(lists_relay))
        } else {
            lists_relay(&item)
        }
    }

    /// The relays of every repository a root belongs to, deduplicated.
    fn relays_of_root(&self, root: &Root) -> Vec<RelayId> {
        let mut relays: Vec<RelayId> = root
            .coords
            .iter()
            .filter_map(|c| self.coord_repos.get(c))
            .flatten()
            .filter_map(|id| self.repos.get(id))
            .flat_map(|repo| repo.relays.iter().copied())
            .collect();
        relays.sort_unstable();
        relays.dedup();
        relays
    }
}

/// Elements of sorted `a` not in sorted `b`.
fn sorted_difference<T: Ord + Copy>(a: &[T], b: &[T]) -> Vec<T> {
    a.iter()
        .filter(|x| b.binary_search(x).is_err())
        .copied()
        .collect()
}

/// Elements of sorted `a` also in sorted `b`.
fn sorted_intersection<T: Ord + Copy>(a: &[T], b: &[T]) -> Vec<T> {
    a.iter()
        .filter(|x| b.binary_search(x).is_ok())
        .copied()
        .collect()
}

/// Every (relay, item) pair.
fn pairs<'a>(
    relays: &'a [RelayId],
    items: &'a [ItemId],
) -> impl Iterator<Item = (RelayId, ItemId)> + 'a {
    relays
        .iter()
        .flat_map(move |r| items.iter().map(move |i| (*r, *i)))
}

/// Removes repeats, keeping the first occurrence's order.
fn dedup_ordered(ids: Vec<RelayId>) -> Box<[RelayId]> {
    let mut seen = rustc_hash::FxHashSet::default();
    ids.into_iter().filter(|id| seen.insert(*id)).collect()
}
