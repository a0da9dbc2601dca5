//! NIP-42 authentication of clients: the challenge a connection is sent when it opens,
//! the check of a client's `AUTH` event, and what the configured requirement lets an
//! unauthenticated connection do.

use std::collections::BTreeSet;

use grasp_sync_core::nip34::first_value;
use grasp_sync_core::RelayUrl;
use nostr::prelude::{Event, Kind, PublicKey, Timestamp};

/// How far an `AUTH` event's `created_at` may be from now (NIP-42 suggests ~10 minutes).
pub const MAX_AUTH_SKEW_SECS: u64 = 600;

/// What needs an authenticated client (`auth_required`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AuthRequired {
    /// Nothing: `AUTH` is still verified and answered, and counts for the allow list.
    #[default]
    No,
    /// Publishing (`EVENT`).
    Writes,
    /// Publishing and reading (`EVENT`, `REQ`, `COUNT`, `NEG-OPEN`).
    All,
}

impl AuthRequired {
    /// Every name `auth_required` takes.
    pub const NAMES: [&'static str; 3] = ["no", "writes", "all"];

    /// The requirement a name stands for.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "no" => Some(Self::No),
            "writes" => Some(Self::Writes),
            "all" => Some(Self::All),
            _ => None,
        }
    }

    /// Whether publishing needs authentication.
    pub fn writes(self) -> bool {
        self != Self::No
    }

    /// Whether reading needs authentication.
    pub fn reads(self) -> bool {
        self == Self::All
    }
}

/// The relay's NIP-42 settings, shared by every connection.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// What needs an authenticated client; with [`AuthRequired::No`] no challenge is
    /// sent and `AUTH` is answered as unsupported.
    pub required: AuthRequired,
    /// This relay's URLs, one of which an `AUTH` event's `relay` tag must name.
    pub urls: BTreeSet<RelayUrl>,
    /// When set (`repos-of-allowed-authors` with authentication on writes), only
    /// clients authenticated as one of these keys may publish.
    pub writers: Option<BTreeSet<PublicKey>>,
}

impl Policy {
    /// Why a connection authenticated as `authed` may not publish, as an `OK false`
    /// message; `None` when it may.
    pub fn refuse_write(&self, authed: &BTreeSet<PublicKey>) -> Option<&'static str> {
        if !self.required.writes() {
            return None;
        }
        if authed.is_empty() {
            return Some("auth-required: this relay takes events from authenticated clients");
        }
        match &self.writers {
            Some(writers) if authed.is_disjoint(writers) => {
                Some("restricted: only the relay's allowed authors may publish here")
            }
            _ => None,
        }
    }

    /// Why a connection authenticated as `authed` may not read, as a `CLOSED` message.
    pub fn refuse_read(&self, authed: &BTreeSet<PublicKey>) -> Option<&'static str> {
        (self.required.reads() && authed.is_empty())
            .then_some("auth-required: this relay serves authenticated clients")
    }
}

/// A fresh challenge: 16 random bytes as hex; `None` when the system has no randomness
/// (then the connection is sent none, and `AUTH` is refused).
pub fn new_challenge() -> Option<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).ok()?;
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Checks a client's `AUTH` event against this connection's `challenge`, this relay's
/// `urls` and `now`: the authenticated key, or the reason (an `OK false` message).
pub fn verify(
    event: &Event,
    challenge: Option<&str>,
    urls: &BTreeSet<RelayUrl>,
    now: Timestamp,
) -> Result<PublicKey, String> {
    if event.kind != Kind::Authentication {
        return Err("invalid: an AUTH event is of kind 22242".into());
    }
    let Some(challenge) = challenge else {
        return Err("error: this connection has no challenge".into());
    };
    if first_value(event, "challenge") != Some(challenge) {
        return Err("invalid: the challenge is not this connection's".into());
    }
    let relay = first_value(event, "relay").and_then(|url| RelayUrl::parse(url).ok());
    if !relay.is_some_and(|url| urls.contains(&url)) {
        return Err("invalid: the relay tag does not name this relay".into());
    }
    let (at, now) = (event.created_at.as_secs(), now.as_secs());
    if at.abs_diff(now) > MAX_AUTH_SKEW_SECS {
        return Err("invalid: created_at is not recent".into());
    }
    if !event.verify_id() {
        return Err("invalid: the event id does not match its content".into());
    }
    if !event.verify_signature() {
        return Err("invalid: bad signature".into());
    }
    Ok(event.pubkey)
}

#[cfg(test)]
mod tests {
    use grasp_sync_testkit::corpus::{keys, sign};
    use nostr::prelude::Keys;

    use super::*;

    fn auth(keys: &Keys, relay: &str, challenge: &str, at: u64) -> Event {
        let tags = vec![
            vec!["relay".to_owned(), relay.to_owned()],
            vec!["challenge".to_owned(), challenge.to_owned()],
        ];
        sign(keys, 22242, at, tags, "")
    }

    #[test]
    fn only_a_fresh_signed_answer_to_our_challenge_for_our_url_passes() {
        let keys = keys(42);
        let urls = BTreeSet::from([RelayUrl::parse("wss://git.example.com").unwrap()]);
        let now = Timestamp::from(1_700_000_000);
        let at = now.as_secs();
        let check = |e: &Event| verify(e, Some("c1"), &urls, now);
        let good = auth(&keys, "wss://GIT.example.com/", "c1", at - 30);
        assert_eq!(check(&good), Ok(keys.public_key()));
        assert!(check(&auth(&keys, "wss://other.example.com", "c1", at)).is_err());
        assert!(check(&auth(&keys, "wss://git.example.com", "c2", at)).is_err());
        assert!(check(&auth(&keys, "wss://git.example.com", "c1", at - 3_600)).is_err());
        assert!(verify(&good, None, &urls, now).is_err());
        for name in AuthRequired::NAMES {
            assert!(AuthRequired::from_name(name).is_some());
        }
    }
}
