//! Filters for the three layers, in live and historic form, and their packing into as
//! few REQs as a relay's [`RelayLimits`] allow.
//!
//! - L1 ([`Layer::Announcements`]): `kinds [30617, 30618]`, `authors`, `#d`. Coordinates
//!   sharing a `d` always land in the same filter, so each coordinate is covered by
//!   exactly one L1 filter.
//! - L2 ([`Layer::RepoTags`]): `#a`, `#A`, `#q` with `30617:<pubkey>:<d>` values.
//! - L3 ([`Layer::RootTags`]): `#e`, `#E`, `#q` with root event ids.
//!
//! Every value appears in exactly one filter per tag letter.

use std::collections::BTreeSet;

use nostr::prelude::{EventId, Filter, PublicKey, SingleLetterTag, Timestamp};

use crate::items::Layer;
use crate::limits::RelayLimits;
use crate::nip34::{kinds, RepoRef};

/// Longest subscription id the engine uses; REQ sizes are computed for it.
pub const MAX_SUBSCRIPTION_ID_LEN: usize = 24;

/// Bytes a filter's fixed parts may take besides its values: keys, brackets, `kinds`,
/// `since`, `until` and `limit` (added later by a paginator). An upper bound.
const FILTER_OVERHEAD: usize = 160;

/// Bytes of one hex id or public key value: 64 characters, quotes, comma.
const HEX_VALUE_BYTES: usize = 67;

/// Whether a filter asks for stored events or only for new ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// New events only: `limit: 0`.
    Live,
    /// Stored events, optionally from `since` on.
    Historic {
        /// Lower bound on `created_at`.
        since: Option<Timestamp>,
    },
}

impl Form {
    fn apply(self, filter: Filter) -> Filter {
        match self {
            Self::Live => filter.limit(0),
            Self::Historic { since: Some(since) } => filter.since(since),
            Self::Historic { since: None } => filter,
        }
    }
}

/// The items one layer's filters are built from.
#[derive(Debug, Clone, Copy)]
pub enum LayerItems<'a> {
    /// Coordinates, for L1 and L2.
    Coords(&'a [RepoRef]),
    /// Root ids, for L3.
    Roots(&'a [EventId]),
}

/// The filters of `layer` for `items`; empty when the items do not belong to the layer.
pub fn layer_filters(
    layer: Layer,
    items: LayerItems<'_>,
    form: Form,
    limits: &RelayLimits,
) -> Vec<Filter> {
    match (layer, items) {
        (Layer::Announcements, LayerItems::Coords(c)) => announcement_filters(c, form, limits),
        (Layer::RepoTags, LayerItems::Coords(c)) => repo_tag_filters(c, form, limits),
        (Layer::RootTags, LayerItems::Roots(r)) => root_tag_filters(r, form, limits),
        _ => Vec::new(),
    }
}

/// Filters that are built, sent and completed together, and the items they cover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterChunk<T> {
    /// One filter for L1; one per tag letter for L2 and L3.
    pub filters: Vec<Filter>,
    /// The coordinates or root ids the filters cover.
    pub members: Vec<T>,
}

/// L1: announcements and state by the given coordinates.
pub fn announcement_filters(coords: &[RepoRef], form: Form, limits: &RelayLimits) -> Vec<Filter> {
    flatten(announcement_chunks(coords, form, limits))
}

/// L1 in chunks with their members.
pub fn announcement_chunks(
    coords: &[RepoRef],
    form: Form,
    limits: &RelayLimits,
) -> Vec<FilterChunk<RepoRef>> {
    let mut sorted: Vec<&RepoRef> = coords.iter().collect();
    sorted.sort_by(|a, b| (&a.identifier, a.pubkey).cmp(&(&b.identifier, b.pubkey)));
    sorted.dedup();
    let budget = filter_budget(limits);
    let max_values = limits.max_values_per_filter.max(1);
    let mut chunks: Vec<L1Chunk> = Vec::new();
    let mut current = L1Chunk::default();
    for group in sorted.chunk_by(|a, b| a.identifier == b.identifier) {
        let identifier = &group[0].identifier;
        let authors: Vec<PublicKey> = group.iter().map(|c| c.pubkey).collect();
        if !current.fits(identifier, &authors, max_values, budget) {
            chunks.extend(current.take());
        }
        if current.fits(identifier, &authors, max_values, budget) {
            current.add(identifier, &authors);
            continue;
        }
        // One identifier with more authors than a filter holds: split its authors.
        for author in authors {
            if !current.fits(identifier, &[author], max_values, budget) {
                chunks.extend(current.take());
            }
            current.add(identifier, &[author]);
        }
        chunks.extend(current.take());
    }
    chunks.extend(current.take());
    chunks
        .into_iter()
        .map(|chunk| {
            let members = chunk.members();
            let filter = Filter::new()
                .kinds([kinds::REPO_ANNOUNCEMENT, kinds::REPO_STATE])
                .authors(chunk.authors)
                .identifiers(chunk.identifiers);
            FilterChunk {
                filters: vec![form.apply(filter)],
                members,
            }
        })
        .collect()
}

/// One L1 filter under construction: the coordinates it covers, by identifier.
#[derive(Default)]
struct L1Chunk {
    authors: BTreeSet<PublicKey>,
    identifiers: BTreeSet<String>,
    coords: Vec<(String, PublicKey)>,
    bytes: usize,
}

impl L1Chunk {
    fn fits(
        &self,
        identifier: &str,
        authors: &[PublicKey],
        max_values: usize,
        budget: usize,
    ) -> bool {
        let new_authors = authors.iter().filter(|a| !self.authors.contains(a)).count();
        let new_identifier = !self.identifiers.contains(identifier);
        let bytes = self.bytes
            + new_authors * HEX_VALUE_BYTES
            + if new_identifier {
                json_value_bytes(identifier)
            } else {
                0
            };
        self.authors.len() + new_authors <= max_values
            && self.identifiers.len() + usize::from(new_identifier) <= max_values
            && bytes <= budget
    }

    fn add(&mut self, identifier: &str, authors: &[PublicKey]) {
        if self.identifiers.insert(identifier.to_owned()) {
            self.bytes += json_value_bytes(identifier);
        }
        for author in authors {
            if self.authors.insert(*author) {
                self.bytes += HEX_VALUE_BYTES;
            }
            self.coords.push((identifier.to_owned(), *author));
        }
    }

    fn members(&self) -> Vec<RepoRef> {
        self.coords
            .iter()
            .map(|(d, pk)| RepoRef::new(*pk, d.clone()))
            .collect()
    }

    fn take(&mut self) -> Option<L1Chunk> {
        (!self.authors.is_empty()).then(|| std::mem::take(self))
    }
}

/// L2: events tagging the given coordinates through `#a`, `#A` and `#q`.
pub fn repo_tag_filters(coords: &[RepoRef], form: Form, limits: &RelayLimits) -> Vec<Filter> {
    flatten(repo_tag_chunks(coords, form, limits))
}

/// L2 in chunks with their members.
pub fn repo_tag_chunks(
    coords: &[RepoRef],
    form: Form,
    limits: &RelayLimits,
) -> Vec<FilterChunk<RepoRef>> {
    tag_chunks(coords, RepoRef::to_string, REPO_TAG_LETTERS, form, limits)
}

/// L3: events tagging the given roots through `#e`, `#E` and `#q`.
pub fn root_tag_filters(roots: &[EventId], form: Form, limits: &RelayLimits) -> Vec<Filter> {
    flatten(root_tag_chunks(roots, form, limits))
}

/// L3 in chunks with their members.
pub fn root_tag_chunks(
    roots: &[EventId],
    form: Form,
    limits: &RelayLimits,
) -> Vec<FilterChunk<EventId>> {
    tag_chunks(roots, EventId::to_hex, ROOT_TAG_LETTERS, form, limits)
}

/// The tag letters of L2 filters.
pub const REPO_TAG_LETTERS: [SingleLetterTag; 3] = [
    SingleLetterTag::LOWERCASE_A,
    SingleLetterTag::UPPERCASE_A,
    SingleLetterTag::LOWERCASE_Q,
];

/// The tag letters of L3 filters.
pub const ROOT_TAG_LETTERS: [SingleLetterTag; 3] = [
    SingleLetterTag::LOWERCASE_E,
    SingleLetterTag::UPPERCASE_E,
    SingleLetterTag::LOWERCASE_Q,
];

/// One filter per letter for each chunk of members' tag values.
fn tag_chunks<T: Clone>(
    members: &[T],
    value_of: impl Fn(&T) -> String,
    letters: [SingleLetterTag; 3],
    form: Form,
    limits: &RelayLimits,
) -> Vec<FilterChunk<T>> {
    let mut valued: Vec<(String, &T)> = members.iter().map(|m| (value_of(m), m)).collect();
    valued.sort_by(|a, b| a.0.cmp(&b.0));
    valued.dedup_by(|a, b| a.0 == b.0);
    let valued: Vec<&(String, &T)> = valued.iter().collect();
    chunk_values(&valued, limits, |(v, _)| json_value_bytes(v))
        .into_iter()
        .map(|chunk| FilterChunk {
            filters: letters
                .iter()
                .map(|letter| {
                    form.apply(Filter::new().custom_tags(*letter, chunk.iter().map(|(v, _)| v)))
                })
                .collect(),
            members: chunk.iter().map(|(_, m)| (*m).clone()).collect(),
        })
        .collect()
}

fn flatten<T>(chunks: Vec<FilterChunk<T>>) -> Vec<Filter> {
    chunks.into_iter().flat_map(|c| c.filters).collect()
}

/// Which announcements bootstrap relays are asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum DiscoveryScope {
    /// Every announcement (a server mirroring everything it accepts).
    #[default]
    All,
    /// Only these repositories' announcements (a one-shot sync of named repos). One
    /// filter asks for every listed author × identifier pair, so an announcement by one
    /// listed author with another's identifier is found too.
    Repos(Vec<RepoRef>),
}

/// Repository announcements (kind 30617) in `scope`: only for explicitly configured
/// bootstrap relays, never for relays found in announcements.
pub fn discovery_filter(form: Form, scope: &DiscoveryScope) -> Filter {
    let filter = Filter::new().kind(kinds::REPO_ANNOUNCEMENT);
    let filter = match scope {
        DiscoveryScope::All => filter,
        DiscoveryScope::Repos(repos) => filter
            .authors(repos.iter().map(|r| r.pubkey))
            .identifiers(repos.iter().map(|r| r.identifier.clone())),
    };
    form.apply(filter)
}

/// `ids` filters fetching the given events: never more ids per filter than the relay
/// returns for one filter, each with `limit` set to its own size.
pub fn ids_filters(ids: &[EventId], limits: &RelayLimits) -> Vec<Filter> {
    let ids: Vec<&EventId> = ids.iter().collect::<BTreeSet<_>>().into_iter().collect();
    let capped = RelayLimits {
        max_values_per_filter: limits.max_values_per_filter.min(limits.max_results),
        ..*limits
    };
    chunk_values(&ids, &capped, |_| HEX_VALUE_BYTES)
        .into_iter()
        .map(|chunk| {
            let n = chunk.len();
            Filter::new().ids(chunk.into_iter().copied()).limit(n)
        })
        .collect()
}

/// Packs filters into REQs (each a list of filters), each filter into the first REQ
/// that still has room under the relay's filter count and message size (first fit: a
/// small filter after large ones joins an earlier REQ instead of opening one, so the
/// subscriptions the set takes stay few). Filters from this module always fit alone.
pub fn pack_reqs(filters: Vec<Filter>, limits: &RelayLimits) -> Vec<Vec<Filter>> {
    let max_filters = limits.max_filters.max(1);
    let mut reqs: Vec<(Vec<Filter>, usize)> = Vec::new();
    for filter in filters {
        let len = filter.as_json().len() + 1;
        let room = reqs.iter().position(|(req, bytes)| {
            req.len() < max_filters && bytes + len <= limits.max_message_bytes
        });
        match room {
            Some(i) => {
                reqs[i].0.push(filter);
                reqs[i].1 += len;
            }
            None => reqs.push((vec![filter], req_bytes(0) + len)),
        }
    }
    reqs.into_iter().map(|(req, _)| req).collect()
}

/// The exact size of `["REQ","<id>",<filters>…]` with an id of
/// [`MAX_SUBSCRIPTION_ID_LEN`] characters, for filters totalling `filter_bytes` (each
/// counted with its separating comma).
pub fn req_bytes(filter_bytes: usize) -> usize {
    r#"["REQ","",]"#.len() - 1 + MAX_SUBSCRIPTION_ID_LEN + filter_bytes
}

/// Bytes one filter's values may take so that a REQ holding only it fits the relay.
fn filter_budget(limits: &RelayLimits) -> usize {
    limits
        .max_message_bytes
        .saturating_sub(req_bytes(1) + FILTER_OVERHEAD)
        .max(HEX_VALUE_BYTES)
}

/// Splits values into chunks under the relay's value count and the byte budget.
fn chunk_values<'a, T>(
    values: &[&'a T],
    limits: &RelayLimits,
    bytes_of: impl Fn(&T) -> usize,
) -> Vec<Vec<&'a T>>
where
    T: ?Sized,
{
    let budget = filter_budget(limits);
    let max_values = limits.max_values_per_filter.max(1);
    let mut chunks = Vec::new();
    let mut current: Vec<&T> = Vec::new();
    let mut bytes = 0;
    for value in values {
        let len = bytes_of(value);
        if !current.is_empty() && (current.len() >= max_values || bytes + len > budget) {
            chunks.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += len;
        current.push(*value);
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

/// Bytes a string takes as a JSON array element: escaped, quoted, plus a comma.
fn json_value_bytes(value: &str) -> usize {
    serde_json::to_string(value).map_or(value.len() * 6 + 2, |s| s.len()) + 1
}
