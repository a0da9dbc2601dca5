//! The daemon's configuration: built-in defaults, then a TOML file, then
//! `GRASP_SYNC_*` environment variables, then command-line flags (each overrides the
//! one before). Everything is checked once, at start-up, into a [`Settings`].

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use grasp_sync_core::accept::AnnouncementPolicy;
use grasp_sync_core::RelayUrl;
use nostr::prelude::PublicKey;
use serde::Deserialize;

pub use super::auth::AuthRequired;

/// Where a missing `--config` is looked for.
pub const DEFAULT_CONFIG_FILE: &str = "grasp-sync.toml";

/// The configuration file, field for field (every field optional; unknown fields are
/// an error, so a typo does not go unnoticed).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    /// `host:port` to listen on (HTTP and WebSocket on one port).
    pub listen: Option<SocketAddr>,
    /// Where the store lives.
    pub data_dir: Option<PathBuf>,
    /// LMDB map size in MiB.
    pub map_size_mib: Option<usize>,
    /// This relay's public URLs (`wss://…`), as announcements list it.
    pub public_urls: Option<Vec<String>>,
    /// Relays asked for every announcement (discovery).
    pub bootstrap_relays: Option<Vec<String>>,
    /// The acceptance mode, see [`AcceptMode`]: `repos-listing-us` (default),
    /// `repos-from-anyone`, `repos-of-allowed-authors` or `any-event` (old names
    /// `list-us`, `all`, `allow-list` still work).
    pub accept: Option<String>,
    /// Authors whose announcements `repos-of-allowed-authors` accepts (hex or npub).
    pub allow_authors: Option<Vec<String>>,
    /// NIP-42: what needs an authenticated client, `no` (default), `writes` or `all`.
    pub auth_required: Option<String>,
    /// Follow relays at private or loopback addresses that announcements list.
    pub allow_private_relays: Option<bool>,
    /// Take the client address from `X-Forwarded-For` (behind a reverse proxy).
    pub trust_forwarded_for: Option<bool>,
    /// Serve the demo page from this directory (holding `page/` and `pkg/`), with `/`
    /// in a browser redirected to it.
    pub web_dir: Option<PathBuf>,
    /// NIP-11 fields.
    pub info: InfoConfig,
    /// Limits on clients.
    pub limits: LimitsConfig,
    /// Outgoing sync.
    pub sync: SyncConfig,
}

/// NIP-11 document fields an operator sets.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct InfoConfig {
    /// `name`.
    pub name: Option<String>,
    /// `description`.
    pub description: Option<String>,
    /// `pubkey` of the operator (hex).
    pub pubkey: Option<String>,
    /// `contact`.
    pub contact: Option<String>,
}

/// Limits on clients, as the file spells them.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest incoming WebSocket message, bytes.
    pub max_message_bytes: Option<usize>,
    /// Largest event, bytes of JSON.
    pub max_event_bytes: Option<usize>,
    /// Most tags on one event.
    pub max_event_tags: Option<usize>,
    /// Subscriptions open at once on one connection.
    pub max_subscriptions: Option<usize>,
    /// Filters in one REQ.
    pub max_filters: Option<usize>,
    /// Most events one filter returns.
    pub max_limit: Option<usize>,
    /// Longest subscription id.
    pub max_subid_length: Option<usize>,
    /// EVENT messages per minute on one connection.
    pub events_per_minute: Option<u32>,
    /// EVENT messages per minute from one client address.
    pub events_per_minute_per_ip: Option<u32>,
    /// Connections at once from one client address.
    pub connections_per_ip: Option<usize>,
    /// Connections at once in all.
    pub max_connections: Option<usize>,
    /// NIP-77 sessions at once on one connection.
    pub neg_sessions: Option<usize>,
    /// Items in one NIP-77 session.
    pub neg_max_items: Option<usize>,
    /// Seconds a write to a client may take before the connection is dropped.
    pub write_timeout_secs: Option<u64>,
    /// Seconds a connection may stay silent (no frame, no pong) before it is dropped.
    pub idle_timeout_secs: Option<u64>,
}

/// Outgoing sync settings, as the file spells them.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct SyncConfig {
    /// First retry delay after a relay failed, seconds (doubles each failure).
    pub backoff_base_secs: Option<u64>,
    /// Longest retry delay, seconds.
    pub backoff_cap_secs: Option<u64>,
    /// Seconds a REQ may go without EOSE.
    pub eose_timeout_secs: Option<u64>,
    /// Seconds a NEG-OPEN may go unanswered before falling back to REQ.
    pub neg_timeout_secs: Option<u64>,
}

impl FileConfig {
    /// Reads and parses a TOML file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("config {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("config {}: {e}", path.display()))
    }
}

/// Limits on clients of the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientLimits {
    /// Largest incoming WebSocket message, bytes.
    pub max_message_bytes: usize,
    /// Largest event, bytes of JSON.
    pub max_event_bytes: usize,
    /// Most tags on one event.
    pub max_event_tags: usize,
    /// Subscriptions open at once on one connection.
    pub max_subscriptions: usize,
    /// Filters in one REQ.
    pub max_filters: usize,
    /// Most events one filter returns (a larger or missing `limit` is lowered to it).
    pub max_limit: usize,
    /// Longest subscription id.
    pub max_subid_length: usize,
    /// EVENT messages per minute on one connection.
    pub events_per_minute: u32,
    /// EVENT messages per minute from one client address.
    pub events_per_minute_per_ip: u32,
    /// Connections at once from one client address.
    pub connections_per_ip: usize,
    /// Connections at once in all.
    pub max_connections: usize,
    /// NIP-77 sessions at once on one connection.
    pub neg_sessions: usize,
    /// Items in one NIP-77 session.
    pub neg_max_items: usize,
    /// How long a write to a client may take before the connection is dropped.
    pub write_timeout: Duration,
    /// How long a connection may stay silent before it is dropped (a ping is sent at
    /// half of it).
    pub idle_timeout: Duration,
}

impl Default for ClientLimits {
    fn default() -> Self {
        Self {
            max_message_bytes: 1 << 20,
            max_event_bytes: 512 << 10,
            max_event_tags: 2_000,
            max_subscriptions: 32,
            max_filters: 16,
            max_limit: 5_000,
            max_subid_length: 64,
            events_per_minute: 600,
            events_per_minute_per_ip: 3_000,
            connections_per_ip: 64,
            max_connections: 4_096,
            neg_sessions: 8,
            neg_max_items: 500_000,
            write_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
        }
    }
}

/// The checked configuration the daemon runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where HTTP and WebSocket listen.
    pub listen: SocketAddr,
    /// Where the store lives.
    pub data_dir: PathBuf,
    /// LMDB map size in bytes.
    pub map_size: usize,
    /// This relay's public URLs.
    pub public_urls: BTreeSet<RelayUrl>,
    /// Whether the public URLs were derived from the listen address (not configured).
    pub public_urls_derived: bool,
    /// Relays asked for every announcement.
    pub bootstrap_relays: Vec<RelayUrl>,
    /// What the relay stores.
    pub mode: AcceptMode,
    /// NIP-42: what needs an authenticated client.
    pub auth_required: AuthRequired,
    /// Which announcements clients and relays may bring in (and, in
    /// [`AcceptMode::AnyEvent`], which repositories are mirrored).
    pub announcements: AnnouncementPolicy,
    /// Follow relays at private or loopback addresses.
    pub allow_private_relays: bool,
    /// Take the client address from `X-Forwarded-For`.
    pub trust_forwarded_for: bool,
    /// The demo page's directory, when served.
    pub web_dir: Option<PathBuf>,
    /// NIP-11 fields.
    pub info: InfoConfig,
    /// Limits on clients.
    pub limits: ClientLimits,
    /// First retry delay after a relay failed.
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_cap: Duration,
    /// How long a REQ may go without EOSE.
    pub eose_timeout: Duration,
    /// How long a NEG-OPEN may go unanswered.
    pub neg_timeout: Duration,
}

/// What the relay accepts from clients and stores (`accept`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptMode {
    /// GRASP (the default): repositories whose announcement lists this relay, and the
    /// NIP-34 events of those repositories. Old name `list-us`.
    ReposListingUs,
    /// GRASP: every repository announced to it, and their NIP-34 events. Old name `all`.
    ReposFromAnyone,
    /// GRASP: repositories announced by the allowed authors, and their NIP-34 events.
    /// Old name `allow-list`.
    ReposOfAllowedAuthors,
    /// A general relay: any valid event within the limits, with NIP-01 replaceable and
    /// addressable versions, NIP-09 deletions and NIP-40 expiration; ephemeral events
    /// are delivered live and never stored. Repositories whose announcement lists this
    /// relay are mirrored, as in [`ReposListingUs`](Self::ReposListingUs).
    AnyEvent,
}

impl AcceptMode {
    /// Every name `accept` takes: the modes, then the old names kept as aliases.
    pub const NAMES: [&'static str; 7] = [
        "repos-listing-us",
        "repos-from-anyone",
        "repos-of-allowed-authors",
        "any-event",
        "list-us",
        "all",
        "allow-list",
    ];

    /// The mode a name (or an old alias) stands for.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "repos-listing-us" | "list-us" => Self::ReposListingUs,
            "repos-from-anyone" | "all" => Self::ReposFromAnyone,
            "repos-of-allowed-authors" | "allow-list" => Self::ReposOfAllowedAuthors,
            "any-event" => Self::AnyEvent,
            _ => return None,
        })
    }

    /// The mode's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::ReposListingUs => "repos-listing-us",
            Self::ReposFromAnyone => "repos-from-anyone",
            Self::ReposOfAllowedAuthors => "repos-of-allowed-authors",
            Self::AnyEvent => "any-event",
        }
    }
}

/// Defaults of the top-level settings.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7400";
/// See [`DEFAULT_LISTEN`].
pub const DEFAULT_DATA_DIR: &str = "./data";
/// See [`DEFAULT_LISTEN`].
pub const DEFAULT_MAP_SIZE_MIB: usize = 16 * 1024;

impl FileConfig {
    /// Checks every value and fills in the defaults.
    pub fn settle(self) -> Result<Settings, String> {
        let listen = match self.listen {
            Some(addr) => addr,
            None => DEFAULT_LISTEN.parse().map_err(|e| format!("listen: {e}"))?,
        };
        let mut public_urls = BTreeSet::new();
        for url in self.public_urls.unwrap_or_default() {
            public_urls
                .insert(RelayUrl::parse(&url).map_err(|e| format!("public URL `{url}`: {e}"))?);
        }
        let public_urls_derived = public_urls.is_empty();
        if public_urls_derived {
            let derived = format!("ws://{listen}");
            public_urls.insert(
                RelayUrl::parse(&derived).map_err(|e| format!("public URL `{derived}`: {e}"))?,
            );
        }
        let mut bootstrap_relays = Vec::new();
        for url in self.bootstrap_relays.unwrap_or_default() {
            let parsed =
                RelayUrl::parse(&url).map_err(|e| format!("bootstrap relay `{url}`: {e}"))?;
            if !public_urls.contains(&parsed) && !bootstrap_relays.contains(&parsed) {
                bootstrap_relays.push(parsed);
            }
        }
        let mut allowed = BTreeSet::new();
        for author in self.allow_authors.unwrap_or_default() {
            allowed.insert(
                PublicKey::parse(author.trim())
                    .map_err(|e| format!("allow-list author `{author}`: {e}"))?,
            );
        }
        let mode = match self.accept.as_deref() {
            None => AcceptMode::ReposListingUs,
            Some(name) => AcceptMode::from_name(name).ok_or_else(|| {
                format!(
                    "accept `{name}`: expected one of {}",
                    AcceptMode::NAMES.join(", ")
                )
            })?,
        };
        let auth_required = match self.auth_required.as_deref() {
            None => AuthRequired::No,
            Some(name) => AuthRequired::from_name(name).ok_or_else(|| {
                format!(
                    "auth_required `{name}`: expected one of {}",
                    AuthRequired::NAMES.join(", ")
                )
            })?,
        };
        let announcements = match mode {
            AcceptMode::ReposListingUs | AcceptMode::AnyEvent => AnnouncementPolicy::ListUs,
            AcceptMode::ReposFromAnyone => AnnouncementPolicy::All,
            AcceptMode::ReposOfAllowedAuthors if allowed.is_empty() => {
                return Err(format!(
                    "accept = {} needs at least one allowed author",
                    mode.name()
                ))
            }
            AcceptMode::ReposOfAllowedAuthors => AnnouncementPolicy::AllowList(allowed),
        };
        if let Some(pubkey) = &self.info.pubkey {
            PublicKey::parse(pubkey).map_err(|e| format!("info.pubkey `{pubkey}`: {e}"))?;
        }
        let d = ClientLimits::default();
        let l = self.limits;
        let limits = ClientLimits {
            max_message_bytes: at_least(l.max_message_bytes, d.max_message_bytes, 1024),
            max_event_bytes: at_least(l.max_event_bytes, d.max_event_bytes, 1024),
            max_event_tags: at_least(l.max_event_tags, d.max_event_tags, 1),
            max_subscriptions: at_least(l.max_subscriptions, d.max_subscriptions, 1),
            max_filters: at_least(l.max_filters, d.max_filters, 1),
            max_limit: at_least(l.max_limit, d.max_limit, 1),
            max_subid_length: at_least(l.max_subid_length, d.max_subid_length, 1),
            events_per_minute: l.events_per_minute.unwrap_or(d.events_per_minute).max(1),
            events_per_minute_per_ip: l
                .events_per_minute_per_ip
                .unwrap_or(d.events_per_minute_per_ip)
                .max(1),
            connections_per_ip: at_least(l.connections_per_ip, d.connections_per_ip, 1),
            max_connections: at_least(l.max_connections, d.max_connections, 1),
            neg_sessions: at_least(l.neg_sessions, d.neg_sessions, 1),
            neg_max_items: at_least(l.neg_max_items, d.neg_max_items, 1),
            write_timeout: l
                .write_timeout_secs
                .map_or(d.write_timeout, |s| Duration::from_secs(s.max(1))),
            idle_timeout: l
                .idle_timeout_secs
                .map_or(d.idle_timeout, |s| Duration::from_secs(s.max(2))),
        };
        if limits.max_event_bytes > limits.max_message_bytes {
            return Err(format!(
                "limits: max_event_bytes ({}) exceeds max_message_bytes ({})",
                limits.max_event_bytes, limits.max_message_bytes
            ));
        }
        let timing = grasp_sync_core::engine::Timing::default();
        let secs = |v: Option<u64>, default: Duration| v.map_or(default, Duration::from_secs);
        let backoff_base = secs(self.sync.backoff_base_secs, timing.backoff_base);
        let backoff_cap = secs(self.sync.backoff_cap_secs, timing.backoff_cap);
        if backoff_base.is_zero() || backoff_cap < backoff_base {
            return Err("sync: backoff_base_secs must be > 0 and <= backoff_cap_secs".into());
        }
        Ok(Settings {
            listen,
            data_dir: self
                .data_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            map_size: self
                .map_size_mib
                .unwrap_or(DEFAULT_MAP_SIZE_MIB)
                .max(1)
                .saturating_mul(1 << 20),
            public_urls,
            public_urls_derived,
            bootstrap_relays,
            mode,
            auth_required,
            announcements,
            allow_private_relays: self.allow_private_relays.unwrap_or(false),
            trust_forwarded_for: self.trust_forwarded_for.unwrap_or(false),
            web_dir: self.web_dir,
            info: self.info,
            limits,
            backoff_base,
            backoff_cap,
            eose_timeout: secs(self.sync.eose_timeout_secs, timing.eose_timeout)
                .max(Duration::from_secs(1)),
            neg_timeout: secs(self.sync.neg_timeout_secs, timing.neg_first_frame_timeout)
                .max(Duration::from_secs(1)),
        })
    }
}

fn at_least(value: Option<usize>, default: usize, min: usize) -> usize {
    value.unwrap_or(default).max(min)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_work_without_a_file() {
        let s = FileConfig::default().settle().unwrap();
        assert_eq!(s.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(s.data_dir, PathBuf::from("./data"));
        assert!(s.public_urls_derived);
        assert_eq!(
            s.public_urls
                .iter()
                .map(RelayUrl::as_str)
                .collect::<Vec<_>>(),
            vec!["ws://127.0.0.1:7400"]
        );
        assert_eq!(s.announcements, AnnouncementPolicy::ListUs);
        assert_eq!(s.limits, ClientLimits::default());
    }

    #[test]
    fn modes_have_names_that_say_what_they_do_and_old_names_still_work() {
        let settle = |name: &str| {
            let file: FileConfig = toml::from_str(&format!(
                "accept = \"{name}\"\nallow_authors = \
                 [\"79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798\"]"
            ))
            .unwrap();
            file.settle().unwrap()
        };
        for (old, new) in [
            ("list-us", "repos-listing-us"),
            ("all", "repos-from-anyone"),
            ("allow-list", "repos-of-allowed-authors"),
        ] {
            assert_eq!(settle(old).mode, settle(new).mode);
            assert_eq!(settle(old).mode.name(), new);
        }
        let open = settle("any-event");
        assert_eq!(open.mode, AcceptMode::AnyEvent);
        assert_eq!(open.announcements, AnnouncementPolicy::ListUs);
        for name in AcceptMode::NAMES {
            assert!(AcceptMode::from_name(name).is_some(), "{name}");
        }
    }

    #[test]
    fn a_file_sets_everything_and_typos_are_errors() {
        let text = r#"
            listen = "0.0.0.0:9000"
            data_dir = "/var/lib/grasp-sync"
            public_urls = ["wss://git.example.com"]
            bootstrap_relays = ["wss://relay.example.org", "wss://git.example.com"]
            accept = "allow-list"
            allow_authors = ["79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"]
            [limits]
            max_subscriptions = 5
            events_per_minute = 10
            [sync]
            backoff_base_secs = 5
            [info]
            name = "example"
        "#;
        let file: FileConfig = toml::from_str(text).unwrap();
        let s = file.settle().unwrap();
        assert_eq!(s.listen.port(), 9000);
        assert!(!s.public_urls_derived);
        // Our own URL is never a bootstrap relay.
        assert_eq!(s.bootstrap_relays.len(), 1);
        assert!(matches!(s.announcements, AnnouncementPolicy::AllowList(ref a) if a.len() == 1));
        assert_eq!(s.limits.max_subscriptions, 5);
        assert_eq!(s.limits.events_per_minute, 10);
        assert_eq!(s.backoff_base, Duration::from_secs(5));
        assert_eq!(s.info.name.as_deref(), Some("example"));

        let typo = toml::from_str::<FileConfig>("[limits]\nmax_subscription = 5\n");
        assert!(typo.is_err());
    }

    #[test]
    fn bad_values_are_refused_with_their_name() {
        let bad = |text: &str| {
            toml::from_str::<FileConfig>(text)
                .map_err(|e| e.to_string())
                .and_then(FileConfig::settle)
                .unwrap_err()
        };
        assert!(bad("accept = \"everything\"").contains("accept"));
        assert!(bad("accept = \"allow-list\"").contains("allowed author"));
        assert!(bad("accept = \"repos-of-allowed-authors\"").contains("allowed author"));
        assert!(bad("public_urls = [\"http://x\"]").contains("public URL"));
        assert!(bad("[limits]\nmax_event_bytes = 9000000").contains("max_event_bytes"));
    }
}
