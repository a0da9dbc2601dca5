//! The machine-readable part of the reasons relays give: the prefix of an `OK`,
//! `CLOSED` or `NEG-ERR` message, the kind of a `NOTICE`, and a record cap a relay
//! names when it refuses a NIP-77 session as too large.

/// The machine-readable prefix of an OK / CLOSED / NEG-ERR message (NIP-01 "prefix: text").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReasonClass {
    /// `auth-required:` (NIP-42): authenticate, then retry.
    AuthRequired,
    /// `rate-limited:`: back off.
    RateLimited,
    /// `restricted:`: the authenticated key may not do this.
    Restricted,
    /// `blocked:`: refused by policy (or a size cap, see [`is_too_many_records`]).
    Blocked,
    /// `invalid:`: the event or request is malformed.
    Invalid,
    /// `pow:`: not enough proof of work.
    Pow,
    /// `duplicate:`: the relay already has the event.
    Duplicate,
    /// `error:`: the relay failed.
    Error,
    /// `closed:`: the relay closed the subscription or reconciliation.
    Closed,
    /// `mute:`: accepted but not stored or relayed.
    Mute,
    /// `unsupported:`: the relay does not support the request.
    Unsupported,
    /// No or an unknown prefix.
    Unknown,
}

/// Prefixes and the classes they stand for.
const REASON_PREFIXES: [(&str, ReasonClass); 11] = [
    ("auth-required", ReasonClass::AuthRequired),
    ("rate-limited", ReasonClass::RateLimited),
    ("restricted", ReasonClass::Restricted),
    ("blocked", ReasonClass::Blocked),
    ("invalid", ReasonClass::Invalid),
    ("pow", ReasonClass::Pow),
    ("duplicate", ReasonClass::Duplicate),
    ("error", ReasonClass::Error),
    ("closed", ReasonClass::Closed),
    ("mute", ReasonClass::Mute),
    ("unsupported", ReasonClass::Unsupported),
];

/// The class of a message by its prefix before the first `:`, trimmed and compared
/// case-insensitively; a message without `:` is taken whole (`"duplicate"`).
pub fn reason_class(message: &str) -> ReasonClass {
    let prefix = message
        .split_once(':')
        .map_or(message, |(prefix, _)| prefix)
        .trim();
    REASON_PREFIXES
        .iter()
        .find(|(name, _)| prefix.eq_ignore_ascii_case(name))
        .map_or(ReasonClass::Unknown, |(_, class)| *class)
}

/// What a free-text NOTICE (no subscription id) means to a syncing client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NoticeClass {
    /// The connection holds too many subscriptions; close some before opening more.
    TooManySubscriptions,
    /// The client is sending too fast.
    RateLimited,
    /// The relay does not speak NIP-77 (or failed at it); fall back to REQ.
    NegentropyUnsupported,
    /// Anything else.
    Other,
}

/// Substrings, checked in this order, and the classes they stand for.
const NOTICE_PATTERNS: [(&[&str], NoticeClass); 3] = [
    (
        &[
            "too many subscriptions",
            "too many open subscriptions",
            "too many concurrent",
            "max subscriptions",
            "maximum subscriptions",
            "subscription limit",
        ],
        NoticeClass::TooManySubscriptions,
    ),
    (
        &[
            "rate limit",
            "rate-limit",
            "slow down",
            "too fast",
            "too many requests",
        ],
        NoticeClass::RateLimited,
    ),
    (
        &[
            "negentropy",
            "neg-open",
            "neg-msg",
            "unknown cmd",
            "unknown command",
            "unknown message type",
            "invalid message type",
            "could not parse command",
            "command unrecognized",
            "unrecognized command",
            "bad message type",
            "unsupported",
            "not supported",
        ],
        NoticeClass::NegentropyUnsupported,
    ),
];

/// The class of a NOTICE by case-insensitive substrings: subscription limits first,
/// then rate limits, then anything naming negentropy or an unknown or unsupported
/// command (strfry's `ERROR: bad msg: negentropy disabled` and `unknown cmd`,
/// nostr-rs-relay's `could not parse command`).
pub fn notice_class(message: &str) -> NoticeClass {
    let lower = message.to_ascii_lowercase();
    NOTICE_PATTERNS
        .iter()
        .find(|(patterns, _)| patterns.iter().any(|p| lower.contains(p)))
        .map_or(NoticeClass::Other, |(_, class)| *class)
}

/// Whether a `blocked:` message means "too many records" (as opposed to other blocks):
/// it says "too many", "too big", "too large" or "exceed", and not about subscriptions,
/// connections or request rates.
pub fn is_too_many_records(message: &str) -> bool {
    if reason_class(message) != ReasonClass::Blocked {
        return false;
    }
    let lower = message.to_ascii_lowercase();
    let sized = ["too many", "too big", "too large", "exceed"]
        .iter()
        .any(|p| lower.contains(p));
    let other = [
        "subscription",
        "connection",
        "concurrent",
        "requests",
        "rate limit",
        "rate-limit",
        "attempts",
    ]
    .iter()
    .any(|p| lower.contains(p));
    sized && !other
}

/// The record cap a `blocked:` NEG-ERR / CLOSED states, e.g. "blocked: too many records
/// (max 100000)" or a number anywhere after "too many"; None if none is stated.
///
/// A number after `max`, `limit`, `cap`, `>` or `exceed` wins (strfry-style "matches too many
/// records (2431002 > 1000000)" states 1000000); otherwise the first number after
/// "too many". Digits may be grouped with `,` or `_`.
pub fn blocked_record_cap(message: &str) -> Option<u64> {
    if !is_too_many_records(message) {
        return None;
    }
    let lower = message.to_ascii_lowercase();
    let after = |marker: &str| {
        lower
            .split_once(marker)
            .and_then(|(_, rest)| first_number(rest))
    };
    ["max", "limit", "cap", ">", "exceed"]
        .iter()
        .filter_map(|marker| lower.find(marker).map(|at| (at, *marker)))
        .filter_map(|(at, marker)| after(marker).map(|n| (at, n)))
        .min_by_key(|(at, _)| *at)
        .map(|(_, n)| n)
        .or_else(|| after("too many"))
}

/// The first run of decimal digits in `text` (`,` and `_` allowed between digits);
/// None if there is none or it overflows.
fn first_number(text: &str) -> Option<u64> {
    let start = text.find(|c: char| c.is_ascii_digit())?;
    let mut value: u64 = 0;
    let mut chars = text.get(start..)?.chars().peekable();
    while let Some(c) = chars.next() {
        if let Some(digit) = c.to_digit(10) {
            value = value.checked_mul(10)?.checked_add(u64::from(digit))?;
        } else if (c == ',' || c == '_') && chars.peek().is_some_and(char::is_ascii_digit) {
            continue;
        } else {
            break;
        }
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_reasons() {
        use ReasonClass as R;
        let cases = [
            ("duplicate: already have this event", R::Duplicate),
            ("duplicate", R::Duplicate),
            (
                "auth-required: we only accept events from registered users",
                R::AuthRequired,
            ),
            ("rate-limited: slow down", R::RateLimited),
            ("  RATE-LIMITED : slow down", R::RateLimited),
            ("restricted: not allowed to write", R::Restricted),
            ("blocked: too many query results", R::Blocked),
            ("Blocked: you are banned", R::Blocked),
            (
                "invalid: event creation date is too far off from the current time",
                R::Invalid,
            ),
            ("pow: difficulty 25 is less than 30", R::Pow),
            ("error: could not connect to the database", R::Error),
            ("ERROR: negentropy error: too many records", R::Error),
            ("closed: relay is shutting down", R::Closed),
            (
                "mute: no one was listening to your ephemeral event",
                R::Mute,
            ),
            ("unsupported: search is not supported", R::Unsupported),
            ("", R::Unknown),
            ("no prefix here", R::Unknown),
            ("ratelimited: x", R::Unknown),
            ("blocked-ish: x", R::Unknown),
            ("wss://relay: x", R::Unknown),
            (":blocked", R::Unknown),
        ];
        for (message, want) in cases {
            assert_eq!(reason_class(message), want, "{message}");
        }
    }

    #[test]
    fn classifies_notices() {
        use NoticeClass as N;
        let cases = [
            // strfry
            (
                "ERROR: bad msg: negentropy disabled",
                N::NegentropyUnsupported,
            ),
            ("ERROR: bad msg: unknown cmd", N::NegentropyUnsupported),
            ("unknown cmd: NEG-OPEN", N::NegentropyUnsupported),
            (
                "ERROR: negentropy error: negentropy query missing elements",
                N::NegentropyUnsupported,
            ),
            (
                "ERROR: negentropy error: too many records",
                N::NegentropyUnsupported,
            ),
            ("ERROR: too many concurrent REQs", N::TooManySubscriptions),
            // nostr-rs-relay and others
            ("Unknown message type: NEG-OPEN", N::NegentropyUnsupported),
            ("could not parse command", N::NegentropyUnsupported),
            ("Command unrecognized", N::NegentropyUnsupported),
            ("bad message type", N::NegentropyUnsupported),
            ("invalid message type", N::NegentropyUnsupported),
            ("NEG-OPEN is not supported", N::NegentropyUnsupported),
            (
                "error: unsupported command NEG-MSG",
                N::NegentropyUnsupported,
            ),
            ("ERROR: too many subscriptions", N::TooManySubscriptions),
            (
                "Maximum subscriptions (20) reached",
                N::TooManySubscriptions,
            ),
            ("max subscriptions exceeded", N::TooManySubscriptions),
            (
                "subscription limit reached, close one first",
                N::TooManySubscriptions,
            ),
            ("too many concurrent NEG requests", N::TooManySubscriptions),
            ("rate-limited: slow down", N::RateLimited),
            ("You are sending events too fast", N::RateLimited),
            ("rate limit exceeded", N::RateLimited),
            ("Too Many Requests", N::RateLimited),
            ("rate limit: negentropy sessions", N::RateLimited),
            ("welcome to my relay", N::Other),
            ("invalid: event signature", N::Other),
            ("", N::Other),
        ];
        for (message, want) in cases {
            assert_eq!(notice_class(message), want, "{message}");
        }
    }

    #[test]
    fn reads_record_caps() {
        let cases = [
            (
                "blocked: too many records (max 100000)",
                true,
                Some(100_000),
            ),
            (
                "blocked: too many records (max 500000)",
                true,
                Some(500_000),
            ),
            (
                "blocked: query matches too many records (2431002 > 1000000)",
                true,
                Some(1_000_000),
            ),
            ("blocked: too many query results", true, None),
            ("blocked: this query is too big", true, None),
            (
                "blocked: too many records, limit is 500,000",
                true,
                Some(500_000),
            ),
            ("blocked: too many records: 250000", true, Some(250_000)),
            ("Blocked: Too Many Records (MAX 7)", true, Some(7)),
            (
                "blocked: query exceeds 1_000_000 events",
                true,
                Some(1_000_000),
            ),
            (
                "blocked: too many records (max 99999999999999999999999)",
                true,
                None,
            ),
            (
                "blocked: too many open subscriptions on this connection",
                false,
                None,
            ),
            ("blocked: too many requests (max 10)", false, None),
            ("blocked: you are banned", false, None),
            ("error: too many records (max 5)", false, None),
            ("ERROR: negentropy error: too many records", false, None),
            ("too many records (max 5)", false, None),
            ("", false, None),
        ];
        for (message, too_many, cap) in cases {
            assert_eq!(is_too_many_records(message), too_many, "{message}");
            assert_eq!(blocked_record_cap(message), cap, "{message}");
        }
    }
}
