//! What is synced from a relay, named compactly.
//!
//! An [`Item`] is either a repository coordinate (`30617:<pubkey>:<d>`, the owner's or a
//! maintainer's) or a root event id. Items and relay URLs are interned to `u32` ids so
//! that per-relay sets cost a few bytes an entry, whatever the size of what they name.

use std::collections::HashMap;
use std::fmt;

use nostr::prelude::EventId;

use crate::nip34::RepoRef;
use crate::relay_url::RelayUrl;

/// A synced thing: a repository coordinate or a root event.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Item {
    /// Announcements/state by this author with this `d` (L1), and events tagging it (L2).
    Coord(RepoRef),
    /// Events tagging this root event (L3).
    Root(EventId),
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Coord(c) => c.fmt(f),
            Self::Root(id) => id.fmt(f),
        }
    }
}

const ROOT_BIT: u32 = 1 << 31;

/// An interned [`Item`]; the high bit tells roots from coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ItemId(u32);

impl ItemId {
    fn coord(index: u32) -> Self {
        Self(index)
    }
    fn root(index: u32) -> Self {
        Self(index | ROOT_BIT)
    }
    /// Whether this names a root event.
    pub fn is_root(self) -> bool {
        self.0 & ROOT_BIT != 0
    }
    fn index(self) -> usize {
        (self.0 & !ROOT_BIT) as usize
    }
    /// The sync layers this item takes part in.
    pub fn layers(self) -> &'static [Layer] {
        if self.is_root() {
            &[Layer::RootTags]
        } else {
            &[Layer::Announcements, Layer::RepoTags]
        }
    }
}

/// An interned [`RelayUrl`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelayId(u32);

/// The filter layers of DESIGN.md §3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Layer {
    /// L1: announcements (30617) and state (30618) by tracked coordinates.
    Announcements,
    /// L2: events tagging tracked repositories (`#a`, `#A`, `#q`).
    RepoTags,
    /// L3: events tagging root events (`#e`, `#E`, `#q`).
    RootTags,
}

impl Layer {
    /// All layers, in sync order.
    pub const ALL: [Layer; 3] = [Layer::Announcements, Layer::RepoTags, Layer::RootTags];
}

/// One unit of sync work at a relay, and the key of its checkpoint: (layer, item).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkKey {
    /// The filter layer.
    pub layer: Layer,
    /// The item the filter is about.
    pub item: ItemId,
}

/// The interning tables for items and relays. Entries are never freed: ids stay valid.
#[derive(Debug, Default, Clone)]
pub struct Names {
    coords: Vec<RepoRef>,
    coord_ids: HashMap<RepoRef, ItemId>,
    roots: Vec<EventId>,
    root_ids: HashMap<EventId, ItemId>,
    relays: Vec<RelayUrl>,
    relay_ids: HashMap<RelayUrl, RelayId>,
}

impl Names {
    /// The id of a coordinate, interning it.
    pub fn intern_coord(&mut self, coord: &RepoRef) -> ItemId {
        if let Some(id) = self.coord_ids.get(coord) {
            return *id;
        }
        let id = ItemId::coord(index_u32(self.coords.len()));
        self.coords.push(coord.clone());
        self.coord_ids.insert(coord.clone(), id);
        id
    }

    /// The id of a root event, interning it.
    pub fn intern_root(&mut self, root: EventId) -> ItemId {
        *self.root_ids.entry(root).or_insert_with(|| {
            let id = ItemId::root(index_u32(self.roots.len()));
            self.roots.push(root);
            id
        })
    }

    /// The id of a relay, interning it.
    pub fn intern_relay(&mut self, relay: &RelayUrl) -> RelayId {
        if let Some(id) = self.relay_ids.get(relay) {
            return *id;
        }
        let id = RelayId(index_u32(self.relays.len()));
        self.relays.push(relay.clone());
        self.relay_ids.insert(relay.clone(), id);
        id
    }

    /// The id of an item, if interned.
    pub fn item_id(&self, item: &Item) -> Option<ItemId> {
        match item {
            Item::Coord(c) => self.coord_ids.get(c).copied(),
            Item::Root(id) => self.root_ids.get(id).copied(),
        }
    }

    /// The id of a coordinate, if interned.
    pub fn coord_id(&self, coord: &RepoRef) -> Option<ItemId> {
        self.coord_ids.get(coord).copied()
    }

    /// The id of a relay, if interned.
    pub fn relay_id(&self, relay: &RelayUrl) -> Option<RelayId> {
        self.relay_ids.get(relay).copied()
    }

    /// The item an id names.
    pub fn item(&self, id: ItemId) -> Item {
        if id.is_root() {
            Item::Root(self.roots[id.index()])
        } else {
            Item::Coord(self.coords[id.index()].clone())
        }
    }

    /// The coordinate an id names, if it names one.
    pub fn coord(&self, id: ItemId) -> Option<&RepoRef> {
        (!id.is_root()).then(|| &self.coords[id.index()])
    }

    /// The root event an id names, if it names one.
    pub fn root(&self, id: ItemId) -> Option<EventId> {
        id.is_root().then(|| self.roots[id.index()])
    }

    /// The coordinates and the root events among `items`, in order.
    pub fn split(&self, items: &[ItemId]) -> (Vec<RepoRef>, Vec<EventId>) {
        let coords = items
            .iter()
            .filter_map(|i| self.coord(*i).cloned())
            .collect();
        let roots = items.iter().filter_map(|i| self.root(*i)).collect();
        (coords, roots)
    }

    /// The URL a relay id names.
    pub fn relay(&self, id: RelayId) -> &RelayUrl {
        &self.relays[id.0 as usize]
    }
}

/// Converts a table length to an id; the tables hold far fewer than 2^31 entries.
fn index_u32(len: usize) -> u32 {
    u32::try_from(len)
        .ok()
        .filter(|n| n & ROOT_BIT == 0)
        .unwrap_or_else(|| panic!("more than 2^31 interned names"))
}
