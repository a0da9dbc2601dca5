//! NIP-34 vocabulary: event kinds, repository references (`30617:<pubkey>:<d>`),
//! which events are roots, and which tags point at repositories and at roots.

use std::fmt;
use std::str::FromStr;

use nostr::prelude::{Event, EventId, PublicKey};
use nostr::prelude::{FromBech32, Nip19Coordinate};

/// The event kinds grasp-sync knows about.
pub mod kinds {
    use nostr::prelude::Kind;

    /// Repository announcement (addressable).
    pub const REPO_ANNOUNCEMENT: Kind = Kind::from_u16(30617);
    /// Repository state: branch and tag heads (addressable).
    pub const REPO_STATE: Kind = Kind::from_u16(30618);
    /// A patch; a root when it starts a series.
    pub const PATCH: Kind = Kind::from_u16(1617);
    /// A pull request (always a root).
    pub const PULL_REQUEST: Kind = Kind::from_u16(1618);
    /// An update to a pull request.
    pub const PULL_REQUEST_UPDATE: Kind = Kind::from_u16(1619);
    /// An issue (always a root).
    pub const ISSUE: Kind = Kind::from_u16(1621);
    /// A NIP-22 comment.
    pub const COMMENT: Kind = Kind::from_u16(1111);
    /// Status: open.
    pub const STATUS_OPEN: Kind = Kind::from_u16(1630);
    /// Status: applied / merged / resolved.
    pub const STATUS_APPLIED: Kind = Kind::from_u16(1631);
    /// Status: closed.
    pub const STATUS_CLOSED: Kind = Kind::from_u16(1632);
    /// Status: draft.
    pub const STATUS_DRAFT: Kind = Kind::from_u16(1633);
    /// A user's list of grasp servers (replaceable).
    pub const USER_GRASP_LIST: Kind = Kind::from_u16(10317);
    /// NIP-09 deletion request.
    pub const DELETION: Kind = Kind::from_u16(5);

    /// Every kind in the NIP-34 family that grasp-sync stores.
    pub const ALL: [Kind; 13] = [
        REPO_ANNOUNCEMENT,
        REPO_STATE,
        PATCH,
        PULL_REQUEST,
        PULL_REQUEST_UPDATE,
        ISSUE,
        COMMENT,
        STATUS_OPEN,
        STATUS_APPLIED,
        STATUS_CLOSED,
        STATUS_DRAFT,
        USER_GRASP_LIST,
        DELETION,
    ];

    /// Whether a status kind (1630–1633).
    pub fn is_status(kind: Kind) -> bool {
        (1630..=1633).contains(&kind.as_u16())
    }
}

/// Longest `d` identifier accepted in a repo reference.
pub const MAX_IDENTIFIER_LEN: usize = 256;

/// A reference to a repository: the address `30617:<pubkey hex>:<d>` of its announcement.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoRef {
    /// The announcement's author.
    pub pubkey: PublicKey,
    /// The announcement's `d` identifier.
    pub identifier: String,
}

/// Why a string is not a repo reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoRefError {
    /// Not of the form `30617:<64 hex>:<d>`.
    Malformed,
    /// The kind is not 30617.
    WrongKind(u16),
    /// The public key does not parse.
    BadPubkey,
    /// The identifier is longer than [`MAX_IDENTIFIER_LEN`].
    IdentifierTooLong,
    /// The `naddr` does not decode.
    BadNaddr,
}

impl fmt::Display for RepoRefError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed => f.write_str("not of the form 30617:<pubkey hex>:<d>"),
            Self::WrongKind(k) => write!(f, "kind {k} is not a repository announcement (30617)"),
            Self::BadPubkey => f.write_str("invalid public key"),
            Self::IdentifierTooLong => write!(f, "identifier longer than {MAX_IDENTIFIER_LEN}"),
            Self::BadNaddr => f.write_str("invalid naddr"),
        }
    }
}

impl std::error::Error for RepoRefError {}

impl RepoRef {
    /// A reference from its parts.
    pub fn new(pubkey: PublicKey, identifier: impl Into<String>) -> Self {
        Self {
            pubkey,
            identifier: identifier.into(),
        }
    }

    /// Parses `30617:<pubkey hex>:<d>`; the identifier may contain `:`.
    pub fn parse(s: &str) -> Result<Self, RepoRefError> {
        let mut parts = s.splitn(3, ':');
        let (Some(kind), Some(pubkey), Some(identifier)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(RepoRefError::Malformed);
        };
        let kind: u16 = kind.parse().map_err(|_| RepoRefError::Malformed)?;
        if kind != kinds::REPO_ANNOUNCEMENT.as_u16() {
            return Err(RepoRefError::WrongKind(kind));
        }
        if pubkey.len() != 64 {
            return Err(RepoRefError::BadPubkey);
        }
        let pubkey = PublicKey::from_hex(pubkey).map_err(|_| RepoRefError::BadPubkey)?;
        Self::checked(pubkey, identifier)
    }

    /// Decodes an `naddr` (with or without `nostr:`), returning the reference and its relay hints.
    pub fn from_naddr(s: &str) -> Result<(Self, Vec<String>), RepoRefError> {
        let s = s.strip_prefix("nostr:").unwrap_or(s);
        let decoded = Nip19Coordinate::from_bech32(s).map_err(|_| RepoRefError::BadNaddr)?;
        let coordinate = decoded.coordinate;
        if coordinate.kind != kinds::REPO_ANNOUNCEMENT {
            return Err(RepoRefError::WrongKind(coordinate.kind.as_u16()));
        }
        let repo = Self::checked(coordinate.public_key, &coordinate.identifier)?;
        let hints = decoded.relays.iter().map(|r| r.to_string()).collect();
        Ok((repo, hints))
    }

    /// Parses either form: `30617:…` or `naddr1…`; relay hints of an `naddr` are dropped.
    pub fn parse_any(s: &str) -> Result<Self, RepoRefError> {
        let s = s.trim();
        if s.starts_with("naddr1") || s.starts_with("nostr:naddr1") {
            Self::from_naddr(s).map(|(repo, _)| repo)
        } else {
            Self::parse(s)
        }
    }

    /// The reference of an announcement event (kind 30617 with a `d` tag).
    pub fn of_announcement(event: &Event) -> Option<Self> {
        if event.kind != kinds::REPO_ANNOUNCEMENT {
            return None;
        }
        let identifier = first_value(event, "d").unwrap_or_default();
        Self::checked(event.pubkey, identifier).ok()
    }

    /// The same `d` identifier under another author (a maintainer's coordinate).
    pub fn with_author(&self, pubkey: PublicKey) -> Self {
        Self::new(pubkey, self.identifier.clone())
    }

    fn checked(pubkey: PublicKey, identifier: &str) -> Result<Self, RepoRefError> {
        if identifier.len() > MAX_IDENTIFIER_LEN {
            return Err(RepoRefError::IdentifierTooLong);
        }
        Ok(Self::new(pubkey, identifier))
    }
}

impl fmt::Display for RepoRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}",
            kinds::REPO_ANNOUNCEMENT.as_u16(),
            self.pubkey.to_hex(),
            self.identifier
        )
    }
}

impl FromStr for RepoRef {
    type Err = RepoRefError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_any(s)
    }
}

/// The first value of the first tag named `name`.
pub fn first_value<'a>(event: &'a Event, name: &str) -> Option<&'a str> {
    event
        .tags
        .iter()
        .map(|t| t.as_slice())
        .find(|t| t.first().map(String::as_str) == Some(name))
        .and_then(|t| t.get(1))
        .map(String::as_str)
}

/// All values (after the name) of every tag named `name`, in order.
pub fn tag_values<'a>(event: &'a Event, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    event
        .tags
        .iter()
        .map(|t| t.as_slice())
        .filter(move |t| t.first().map(String::as_str) == Some(name))
        .flat_map(|t| t.iter().skip(1).map(String::as_str))
}

/// The first value of every tag named `name`, in order.
pub fn first_values<'a>(event: &'a Event, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    event
        .tags
        .iter()
        .map(|t| t.as_slice())
        .filter(move |t| t.first().map(String::as_str) == Some(name))
        .filter_map(|t| t.get(1).map(String::as_str))
}

/// Tag names whose values reference a repository (`a`, `A`, `q` holding `30617:…`).
pub const REPO_TAGS: [&str; 3] = ["a", "A", "q"];
/// Tag names whose values reference a root event (`e`, `E`, `q` holding an id).
pub const ROOT_TAGS: [&str; 3] = ["e", "E", "q"];

/// The repositories an event references through `a`, `A` or `q` tags, deduplicated.
pub fn repo_refs(event: &Event) -> Vec<RepoRef> {
    let mut out: Vec<RepoRef> = REPO_TAGS
        .iter()
        .flat_map(|name| first_values(event, name))
        .filter_map(|v| RepoRef::parse(v).ok())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The event ids an event references through `e`, `E` or `q` tags, deduplicated.
pub fn referenced_ids(event: &Event) -> Vec<EventId> {
    let mut out: Vec<EventId> = ROOT_TAGS
        .iter()
        .flat_map(|name| first_values(event, name))
        .filter(|v| v.len() == 64)
        .filter_map(|v| EventId::from_hex(v).ok())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// What the index keeps of a root event (see [`is_root`]): its id, its author (whose
/// deletion removes it) and the repositories it names. A store that keeps these apart
/// restores its roots without reading the events.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RootRef {
    /// The root event's id.
    pub id: EventId,
    /// Its author.
    pub author: PublicKey,
    /// The repositories it names ([`repo_refs`]).
    pub repos: Vec<RepoRef>,
}

impl RootRef {
    /// `event`'s reference, when it is a root.
    pub fn of(event: &Event) -> Option<Self> {
        is_root(event).then(|| Self {
            id: event.id,
            author: event.pubkey,
            repos: repo_refs(event),
        })
    }
}

/// Whether an event starts a thread that later events reference by id: a pull request,
/// an issue, or a patch marked `t root` / `t root-revision`, or carrying no reply `e` tag.
pub fn is_root(event: &Event) -> bool {
    match event.kind {
        k if k == kinds::PULL_REQUEST || k == kinds::ISSUE => true,
        k if k == kinds::PATCH => {
            if first_values(event, "t").any(|t| t == "root" || t == "root-revision") {
                return true;
            }
            !event.tags.iter().map(|t| t.as_slice()).any(|t| {
                t.first().map(String::as_str) == Some("e")
                    && !matches!(t.get(3).map(String::as_str), Some("mention"))
            })
        }
        _ => false,
    }
}

/// The relay URLs an announcement lists in its `relays` tags (unnormalised, in order).
pub fn announced_relays(event: &Event) -> impl Iterator<Item = &str> {
    tag_values(event, "relays")
}

/// The git clone URLs an announcement lists in its `clone` tags (unnormalised, in order).
pub fn announced_clone_urls(event: &Event) -> impl Iterator<Item = &str> {
    tag_values(event, "clone")
}

/// The maintainers an announcement lists, without the owner; invalid keys are skipped.
pub fn announced_maintainers(event: &Event) -> Vec<PublicKey> {
    let mut out: Vec<PublicKey> = tag_values(event, "maintainers")
        .filter(|v| v.len() == 64)
        .filter_map(|v| PublicKey::from_hex(v).ok())
        .filter(|pk| *pk != event.pubkey)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The version of a replaceable or addressable event: newer `created_at` wins, ties go
/// to the lowest id (NIP-01).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Version {
    /// When the version was created.
    pub created_at: nostr::prelude::Timestamp,
    /// Its id, the tie-breaker.
    pub id: EventId,
}

impl Version {
    /// The version of `event`.
    pub fn of(event: &Event) -> Self {
        Self {
            created_at: event.created_at,
            id: event.id,
        }
    }

    /// Whether this version replaces `other`.
    pub fn replaces(&self, other: &Version) -> bool {
        self.created_at > other.created_at
            || (self.created_at == other.created_at && self.id < other.id)
    }
}
