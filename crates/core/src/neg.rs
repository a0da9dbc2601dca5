//! NIP-77 negentropy set reconciliation, sans IO: an initiator (client) session and a
//! responder (relay) session manager around the `negentropy` crate.
//!
//! Messages here are the *binary* negentropy frames; the caller hex-encodes them into
//! `["NEG-OPEN", sub, filter, hex]`, `["NEG-MSG", sub, hex]` or `["NEG-ERR", sub, reason]`
//! and hex-decodes what it receives.
//!
//! Peer input never panics: every frame is checked by a strict structural parser
//! before `negentropy` sees it, so truncated varints, oversized bounds,
//! unknown modes and id lists longer than the frame are refused as
//! [`NegError::Decode`] without reaching the library. Frame limits we pass to the
//! library are clamped to `[MIN_FRAME_LIMIT, u32::MAX]`, which keeps its
//! `frame_size_limit as usize - 200` exact on 32-bit targets such as wasm32.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use negentropy::{Error as LibError, Id, Negentropy, NegentropyStorageVector, FINGERPRINT_SIZE};

use crate::limits::RelayLimits;

/// Default frame size limit (bytes of binary message; hex doubles it): fits strfry's 128 KiB.
pub const DEFAULT_FRAME_LIMIT: u64 = 60_000;

/// The smallest frame size limit `negentropy` accepts (`Negentropy::new` refuses
/// anything below 4096 except 0, which it reads as "unlimited").
pub const MIN_FRAME_LIMIT: u64 = 4_096;

/// The largest frame size limit passed on, so `u64 as usize` is exact on 32-bit targets.
const MAX_FRAME_LIMIT: u64 = u32::MAX as u64;

/// Bytes a relay's message limit must leave for the JSON around the hex payload.
const ENVELOPE_BYTES: usize = 200;

/// The negentropy protocol version we speak (V1).
const PROTOCOL_VERSION: u8 = 0x61;

/// Bytes of one id in a frame.
const ID_SIZE: usize = 32;

/// Frame size limit for a relay, beside a filter of `filter_bytes` (a NEG-OPEN carries
/// both): `min(DEFAULT_FRAME_LIMIT, (max_message_bytes - 200 - filter_bytes) / 2)`, but
/// at least [`MIN_FRAME_LIMIT`].
pub fn frame_limit(limits: &RelayLimits, filter_bytes: usize) -> u64 {
    let room = limits
        .max_message_bytes
        .saturating_sub(ENVELOPE_BYTES + filter_bytes);
    let fits = room / 2;
    u64::try_from(fits)
        .unwrap_or(u64::MAX)
        .clamp(MIN_FRAME_LIMIT, DEFAULT_FRAME_LIMIT)
}

/// One item of a local set: (created_at seconds, 32-byte event id).
pub type NegItem = (u64, [u8; 32]);

/// Why a reconciliation step failed. `Display` gives a NIP-01 style machine-readable
/// reason (`invalid: …`, `blocked: …`, `closed: …`, `error: …`), suitable for NEG-ERR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NegError {
    /// The peer's frame is malformed.
    Decode(String),
    /// The frame is well-formed but cannot be processed (e.g. an unsupported protocol
    /// version offered to the initiator).
    Protocol(String),
    /// The set to reconcile is larger than allowed. `items` is how many were counted
    /// before giving up (`max + 1`: counting stops there).
    TooManyItems {
        /// Items counted.
        items: usize,
        /// The limit.
        max: usize,
    },
    /// The connection already has the maximum number of sessions.
    TooManySessions {
        /// The limit.
        max: usize,
    },
    /// No session has this subscription id.
    UnknownSession,
    /// The session is finished (complete or failed) and takes no more messages.
    Closed,
}

impl fmt::Display for NegError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Decode(why) => write!(f, "invalid: {why}"),
            Self::Protocol(why) => write!(f, "error: {why}"),
            Self::TooManyItems { max, .. } => write!(f, "blocked: too many records (max {max})"),
            Self::TooManySessions { max } => {
                write!(f, "blocked: too many negentropy sessions (max {max})")
            }
            Self::UnknownSession => write!(f, "closed: unknown subscription"),
            Self::Closed => write!(f, "closed: reconciliation finished"),
        }
    }
}

impl std::error::Error for NegError {}

/// Maps a library error: malformed input is `Decode`, the rest `Protocol`.
fn lib_error(error: LibError) -> NegError {
    match error {
        LibError::ParseEndsPrematurely
        | LibError::UnexpectedMode(_)
        | LibError::ProtocolVersionNotFound
        | LibError::InvalidProtocolVersion
        | LibError::IdTooBig
        | LibError::InvalidIdSize
        | LibError::TryFromSlice => NegError::Decode(error.to_string()),
        other => NegError::Protocol(other.to_string()),
    }
}

fn decode(why: impl Into<String>) -> NegError {
    NegError::Decode(why.into())
}

/// Reads one negentropy varint (big-endian base-128, high bit = more bytes), refusing
/// truncated and overflowing ones (the library silently accepts both).
fn read_varint(input: &mut &[u8]) -> Result<u64, NegError> {
    let mut value: u64 = 0;
    while let Some((&byte, rest)) = input.split_first() {
        *input = rest;
        if value > u64::MAX >> 7 {
            return Err(decode("varint overflows 64 bits"));
        }
        value = (value << 7) | u64::from(byte & 0x7f);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(decode("truncated varint"))
}

/// Skips `n` bytes, refusing to run past the end.
fn skip(input: &mut &[u8], n: u64, what: &str) -> Result<(), NegError> {
    match usize::try_from(n).ok().and_then(|n| input.get(n..)) {
        Some(rest) => {
            *input = rest;
            Ok(())
        }
        None => Err(decode(format!("truncated {what}"))),
    }
}

/// Checks a frame's structure exactly as `negentropy` will parse it: the version byte,
/// then ranges of (timestamp varint, id length varint ≤ 32, id prefix, mode varint,
/// payload: nothing for Skip, a 16-byte fingerprint, or a count and that many ids).
///
/// A version byte in `0x60..=0x6f` other than ours is passed through unparsed: the
/// library answers it with version negotiation (responder) or an error (initiator)
/// without reading the rest.
fn validate(message: &[u8]) -> Result<(), NegError> {
    let (&version, mut rest) = message
        .split_first()
        .ok_or_else(|| decode("empty negentropy message"))?;
    if !(0x60..=0x6f).contains(&version) {
        return Err(decode(format!(
            "not a negentropy message (version byte 0x{version:02x})"
        )));
    }
    if version != PROTOCOL_VERSION {
        return Ok(());
    }
    while !rest.is_empty() {
        read_varint(&mut rest)?; // timestamp delta
        let id_len = read_varint(&mut rest)?;
        if id_len > ID_SIZE as u64 {
            return Err(decode(format!("bound id of {id_len} bytes")));
        }
        skip(&mut rest, id_len, "bound id")?;
        match read_varint(&mut rest)? {
            0 => {}
            1 => skip(&mut rest, FINGERPRINT_SIZE as u64, "fingerprint")?,
            2 => {
                let count = read_varint(&mut rest)?;
                if count > (rest.len() / ID_SIZE) as u64 {
                    return Err(decode(format!("id list of {count} ids is truncated")));
                }
                skip(&mut rest, count * ID_SIZE as u64, "id list")?;
            }
            mode => return Err(decode(format!("unknown range mode {mode}"))),
        }
    }
    Ok(())
}

/// A library session owning its sealed storage.
type Session = Negentropy<'static, NegentropyStorageVector>;

/// Sorted, deduplicated storage from items in any order, refusing more than `max`
/// items: counting stops at `max + 1`, so a huge source is not drained.
fn build_storage(
    items: impl IntoIterator<Item = NegItem>,
    max: usize,
) -> Result<NegentropyStorageVector, NegError> {
    let mut storage = NegentropyStorageVector::new();
    let mut counted = 0usize;
    for (created_at, id) in items {
        counted += 1;
        if counted > max {
            return Err(NegError::TooManyItems {
                items: counted,
                max,
            });
        }
        storage
            .insert(created_at, Id::from_byte_array(id))
            .map_err(lib_error)?;
    }
    storage.seal().map_err(lib_error)?;
    Ok(storage)
}

fn new_session(storage: NegentropyStorageVector, frame_limit: u64) -> Result<Session, NegError> {
    Negentropy::owned(storage, frame_limit.clamp(MIN_FRAME_LIMIT, MAX_FRAME_LIMIT))
        .map_err(lib_error)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Running,
    Complete,
    Failed,
}

/// The initiator side of one reconciliation (one filter = one session).
///
/// A step that fails (malformed or unsupported frame) ends the session: later steps
/// return [`NegError::Closed`], and the caller should send NEG-CLOSE.
///
/// Each id is reported at most once per session, in `have` or `need`: `negentropy`
/// 0.5.3 re-sends ids in a later round after the relay cuts a frame at its size
/// limit, and a hostile relay could repeat them on purpose. The reported ids are kept
/// for the session's life and a hostile relay can keep sending new ones, so callers
/// should cap [`rounds`](Self::rounds).
pub struct NegInitiator {
    session: Session,
    rounds: u32,
    state: State,
    reported: HashSet<[u8; 32]>,
    /// Our own ids: a relay can make negentropy list them as needed (found by fuzzing:
    /// an id list for a range that does not match our items), and we never fetch what
    /// we hold.
    local: HashSet<[u8; 32]>,
}

impl fmt::Debug for NegInitiator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NegInitiator")
            .field("rounds", &self.rounds)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// What one step of reconciliation produced.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NegProgress {
    /// The next frame to send as NEG-MSG; `None`: reconciliation complete.
    pub next: Option<Vec<u8>>,
    /// Ids we hold that the peer lacks, first found in this step.
    pub have: Vec<[u8; 32]>,
    /// Ids the peer holds that we lack, first found in this step.
    pub need: Vec<[u8; 32]>,
}

impl NegInitiator {
    /// Builds the session from the local items (any order, duplicates allowed) and
    /// returns it with the first message (for NEG-OPEN).
    ///
    /// `frame_limit` bounds every frame we send; it is raised to [`MIN_FRAME_LIMIT`]
    /// if smaller (0 included: unlimited frames are never wanted with a relay).
    pub fn new(
        items: impl IntoIterator<Item = NegItem>,
        frame_limit: u64,
    ) -> Result<(Self, Vec<u8>), NegError> {
        let items: Vec<NegItem> = items.into_iter().collect();
        let local = items.iter().map(|(_, id)| *id).collect();
        let mut session = new_session(build_storage(items, usize::MAX)?, frame_limit)?;
        let first = session.initiate().map_err(lib_error)?;
        let initiator = Self {
            session,
            rounds: 0,
            state: State::Running,
            reported: HashSet::new(),
            local,
        };
        Ok((initiator, first))
    }

    /// Processes a NEG-MSG from the relay.
    pub fn step(&mut self, message: &[u8]) -> Result<NegProgress, NegError> {
        if self.state != State::Running {
            return Err(NegError::Closed);
        }
        self.rounds = self.rounds.saturating_add(1);
        let mut have = Vec::new();
        let mut need = Vec::new();
        let result = validate(message).and_then(|()| {
            self.session
                .reconcile_with_ids(message, &mut have, &mut need)
                .map_err(lib_error)
        });
        match result {
            Ok(next) => {
                if next.is_none() {
                    self.state = State::Complete;
                }
                let mut fresh = |ids: Vec<Id>| -> Vec<[u8; 32]> {
                    ids.into_iter()
                        .map(Id::to_bytes)
                        .filter(|id| self.reported.insert(*id))
                        .collect()
                };
                let have = fresh(have);
                let need = fresh(need)
                    .into_iter()
                    .filter(|id| !self.local.contains(id))
                    .collect();
                Ok(NegProgress { next, have, need })
            }
            Err(error) => {
                self.state = State::Failed;
                Err(error)
            }
        }
    }

    /// Messages processed so far (including one that failed).
    pub fn rounds(&self) -> u32 {
        self.rounds
    }

    /// Whether reconciliation finished successfully (the last step returned `next: None`).
    pub fn is_complete(&self) -> bool {
        self.state == State::Complete
    }
}

/// Responder limits: sessions per connection and items per session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponderLimits {
    /// Concurrent sessions on one connection.
    pub max_sessions: usize,
    /// Items in one session's set.
    pub max_items: usize,
    /// Bound on the frames we send (raised to [`MIN_FRAME_LIMIT`] if smaller).
    pub frame_limit: u64,
}

impl Default for ResponderLimits {
    /// 8 sessions of at most 500 000 items, [`DEFAULT_FRAME_LIMIT`] frames.
    fn default() -> Self {
        Self {
            max_sessions: 8,
            max_items: 500_000,
            frame_limit: DEFAULT_FRAME_LIMIT,
        }
    }
}

/// A relay's NIP-77 sessions on one connection, keyed by subscription id.
pub struct NegResponder {
    limits: ResponderLimits,
    sessions: BTreeMap<String, Session>,
}

impl fmt::Debug for NegResponder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NegResponder")
            .field("limits", &self.limits)
            .field("sessions", &self.sessions.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The frame to send back (the caller serialises it as `["NEG-MSG", sub, hex]` or
/// `["NEG-ERR", sub, reason]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NegReply {
    /// A binary negentropy frame for NEG-MSG.
    Msg(Vec<u8>),
    /// A reason for NEG-ERR; the session no longer exists.
    Err(String),
}

impl From<Result<Vec<u8>, NegError>> for NegReply {
    fn from(result: Result<Vec<u8>, NegError>) -> Self {
        match result {
            Ok(frame) => Self::Msg(frame),
            Err(error) => Self::Err(error.to_string()),
        }
    }
}

impl NegResponder {
    /// An empty session manager.
    pub fn new(limits: ResponderLimits) -> Self {
        Self {
            limits,
            sessions: BTreeMap::new(),
        }
    }

    /// NEG-OPEN with the items of the store matching its filter. A NEG-OPEN for an
    /// existing id replaces it (NIP-77). Over `max_items` → `Err("blocked: too many
    /// records (max N)")` and no session; over `max_sessions` → `Err("blocked: too many
    /// negentropy sessions (max N)")`; a message that does not decode → `Err("invalid: …")`
    /// and no session.
    ///
    /// `items` is only iterated once the session count and the message are known to be
    /// acceptable, and at most `max_items + 1` of them are taken.
    pub fn open(
        &mut self,
        subscription: &str,
        items: impl IntoIterator<Item = NegItem>,
        message: &[u8],
    ) -> NegReply {
        self.sessions.remove(subscription);
        self.try_open(subscription, items, message).into()
    }

    fn try_open(
        &mut self,
        subscription: &str,
        items: impl IntoIterator<Item = NegItem>,
        message: &[u8],
    ) -> Result<Vec<u8>, NegError> {
        let max_sessions = self.limits.max_sessions;
        if self.sessions.len() >= max_sessions {
            return Err(NegError::TooManySessions { max: max_sessions });
        }
        validate(message)?;
        let storage = build_storage(items, self.limits.max_items)?;
        let mut session = new_session(storage, self.limits.frame_limit)?;
        let reply = session.reconcile(message).map_err(lib_error)?;
        self.sessions.insert(subscription.to_owned(), session);
        Ok(reply)
    }

    /// NEG-MSG; unknown id → `Err("closed: unknown subscription")`; decode failure →
    /// `Err("invalid: …")` and the session is removed.
    pub fn message(&mut self, subscription: &str, message: &[u8]) -> NegReply {
        let Some(session) = self.sessions.get_mut(subscription) else {
            return Err(NegError::UnknownSession).into();
        };
        let result = validate(message).and_then(|()| session.reconcile(message).map_err(lib_error));
        if result.is_err() {
            self.sessions.remove(subscription);
        }
        result.into()
    }

    /// NEG-CLOSE: forget the session. Returns whether it existed.
    pub fn close(&mut self, subscription: &str) -> bool {
        self.sessions.remove(subscription).is_some()
    }

    /// Whether a session of this id is open.
    pub fn has_session(&self, subscription: &str) -> bool {
        self.sessions.contains_key(subscription)
    }

    /// Open sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    /// splitmix64: a tiny deterministic generator for building sets from a seed.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn id(&mut self) -> [u8; 32] {
            let mut id = [0u8; 32];
            for chunk in id.chunks_mut(8) {
                chunk.copy_from_slice(&self.next().to_le_bytes());
            }
            id
        }

        fn shuffle<T>(&mut self, items: &mut [T]) {
            for i in (1..items.len()).rev() {
                items.swap(i, self.below(i + 1));
            }
        }
    }

    /// `n` distinct items with timestamps in `[base, base + spread)`.
    fn universe(rng: &mut Rng, n: usize, spread: u64) -> Vec<NegItem> {
        (0..n)
            .map(|_| (1_700_000_000 + rng.next() % spread.max(1), rng.id()))
            .collect()
    }

    fn ids(items: &[NegItem]) -> BTreeSet<[u8; 32]> {
        items.iter().map(|(_, id)| *id).collect()
    }

    #[derive(Debug, Default)]
    struct Outcome {
        have: Vec<[u8; 32]>,
        need: Vec<[u8; 32]>,
        rounds: u32,
        bytes_up: usize,
        bytes_down: usize,
        max_up: usize,
        max_down: usize,
    }

    /// Drives an initiator holding `a` against a responder holding `b` to completion.
    fn reconcile(a: &[NegItem], b: &[NegItem], limit: u64) -> Outcome {
        let (mut initiator, first) = NegInitiator::new(a.iter().copied(), limit).unwrap();
        let mut responder = NegResponder::new(ResponderLimits {
            frame_limit: limit,
            ..ResponderLimits::default()
        });
        let mut out = Outcome::default();
        let mut up = first;
        let mut reply = responder.open("sub", b.iter().copied(), &up);
        loop {
            out.bytes_up += up.len();
            out.max_up = out.max_up.max(up.len());
            let NegReply::Msg(down) = reply else {
                panic!("responder refused: {reply:?}");
            };
            out.bytes_down += down.len();
            out.max_down = out.max_down.max(down.len());
            let progress = initiator.step(&down).unwrap();
            out.have.extend(progress.have);
            out.need.extend(progress.need);
            match progress.next {
                Some(next) => {
                    assert!(initiator.rounds() < 100, "reconciliation does not end");
                    up = next;
                    reply = responder.message("sub", &up);
                }
                None => break,
            }
        }
        assert!(initiator.is_complete());
        assert_eq!(initiator.step(&[PROTOCOL_VERSION]), Err(NegError::Closed));
        out.rounds = initiator.rounds();
        out
    }

    fn assert_exact(out: &Outcome, a: &[NegItem], b: &[NegItem]) {
        let (a, b) = (ids(a), ids(b));
        let need: BTreeSet<_> = out.need.iter().copied().collect();
        let have: BTreeSet<_> = out.have.iter().copied().collect();
        assert_eq!(need, &b - &a);
        assert_eq!(have, &a - &b);
        assert_eq!(need.len(), out.need.len(), "an id was needed twice");
        assert_eq!(
            have.len(),
            out.have.len(),
            "an id was reported as had twice"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        #[test]
        fn reconciles_exactly_within_frame_limits(
            seed in any::<u64>(),
            size_a in 0usize..3000,
            size_b in 0usize..3000,
            extra in 0usize..400,
            spread in prop_oneof![1u64..50, 1u64..1_000_000],
            limit in 4096u64..=100_000,
            duplicates in 0usize..40,
        ) {
            let mut rng = Rng(seed);
            let all = universe(&mut rng, size_a.max(size_b) + extra, spread);
            let mut pick = |n: usize| {
                let mut set = all.clone();
                rng.shuffle(&mut set);
                set.truncate(n);
                set
            };
            let a = pick(size_a);
            let b = pick(size_b);
            // Unsorted input with duplicates must not matter.
            let mut a_input = a.clone();
            a_input.extend(a.iter().take(duplicates).copied());
            let out = reconcile(&a_input, &b, limit);
            assert_exact(&out, &a, &b);
            let limit = usize::try_from(limit).unwrap();
            prop_assert!(out.max_up <= limit, "sent {} > {limit}", out.max_up);
            prop_assert!(out.max_down <= limit, "received {} > {limit}", out.max_down);
            // A flat 20 cannot hold at small frame limits: 3000 needed ids are 96 000
            // bytes, at least 25 frames of 4096. Bound the rounds by the frames the
            // union's ids fill; that is at most 20 once they fit in 8 frames (a frame
            // limit ≥ 14 000 for these sizes).
            let union = ids(&a).union(&ids(&b)).count();
            let frames = u32::try_from((union * ID_SIZE).div_ceil(limit - 200)).unwrap();
            let bound = 2 * frames + 4;
            prop_assert!(out.rounds <= bound, "{} rounds for {frames} frames", out.rounds);
            if limit >= 14_000 {
                prop_assert!(out.rounds <= 20, "{} rounds", out.rounds);
            }
        }
    }

    #[test]
    fn identical_sets_complete_in_one_round_trip() {
        let mut rng = Rng(1);
        let items = universe(&mut rng, 5_000, 86_400);
        let (mut initiator, first) =
            NegInitiator::new(items.iter().copied(), DEFAULT_FRAME_LIMIT).unwrap();
        let mut responder = NegResponder::new(ResponderLimits::default());
        let NegReply::Msg(reply) = responder.open("s", items.iter().copied(), &first) else {
            panic!("refused");
        };
        let progress = initiator.step(&reply).unwrap();
        assert_eq!(progress, NegProgress::default());
        assert!(initiator.is_complete());
        assert_eq!(initiator.rounds(), 1);
    }

    #[test]
    fn empty_initiator_needs_everything() {
        let mut rng = Rng(2);
        let items = universe(&mut rng, 10_000, 10_000_000);
        let out = reconcile(&[], &items, DEFAULT_FRAME_LIMIT);
        assert_eq!(out.need.len(), 10_000);
        assert_exact(&out, &[], &items);
        // And the other way round: everything is "have".
        let out = reconcile(&items, &[], DEFAULT_FRAME_LIMIT);
        assert_eq!(out.have.len(), 10_000);
        assert!(out.need.is_empty());
    }

    #[test]
    fn frame_limit_follows_relay_limits() {
        let mut limits = RelayLimits::default();
        assert_eq!(frame_limit(&limits, 0), (65_536 - 200) / 2);
        assert_eq!(frame_limit(&limits, 20_000), (65_536 - 200 - 20_000) / 2);
        limits.max_message_bytes = 131_072;
        assert_eq!(frame_limit(&limits, 0), DEFAULT_FRAME_LIMIT);
        limits.max_message_bytes = 4_096;
        assert_eq!(frame_limit(&limits, 0), MIN_FRAME_LIMIT);
        limits.max_message_bytes = 0;
        assert_eq!(frame_limit(&limits, 0), MIN_FRAME_LIMIT);
        // Hex doubles the frame; the default still fits strfry's 128 KiB.
        const { assert!(2 * DEFAULT_FRAME_LIMIT + 200 <= 128 * 1024) };
    }

    #[test]
    fn small_frame_limits_are_raised_to_the_minimum() {
        let mut rng = Rng(3);
        let items = universe(&mut rng, 3_000, 100);
        for limit in [0, 1, 4_095] {
            let out = reconcile(&[], &items, limit);
            assert_eq!(out.need.len(), 3_000);
            assert!(out.max_down <= MIN_FRAME_LIMIT as usize);
        }
    }

    fn first_message(n: usize, seed: u64) -> Vec<u8> {
        let mut rng = Rng(seed);
        NegInitiator::new(universe(&mut rng, n, 1_000), DEFAULT_FRAME_LIMIT)
            .unwrap()
            .1
    }

    #[test]
    fn responder_refuses_too_many_items_without_draining_the_store() {
        let mut responder = NegResponder::new(ResponderLimits {
            max_items: 100,
            ..ResponderLimits::default()
        });
        let mut pulled = 0usize;
        let store = (0..10_000_000u64).map(|i| {
            pulled += 1;
            (i, [0u8; 32])
        });
        let reply = responder.open("s", store, &first_message(10, 4));
        assert_eq!(
            reply,
            NegReply::Err("blocked: too many records (max 100)".into())
        );
        assert_eq!(pulled, 101);
        assert_eq!(responder.session_count(), 0);
        // Exactly the maximum is fine.
        let reply = responder.open(
            "s",
            (0..100u64).map(|i| (i, [1u8; 32])),
            &first_message(10, 4),
        );
        assert!(matches!(reply, NegReply::Msg(_)));
    }

    #[test]
    fn responder_caps_sessions_and_tracks_them() {
        let mut responder = NegResponder::new(ResponderLimits::default());
        let message = first_message(50, 5);
        for i in 0..8 {
            let reply = responder.open(&format!("s{i}"), [], &message);
            assert!(matches!(reply, NegReply::Msg(_)), "{reply:?}");
        }
        assert_eq!(responder.session_count(), 8);
        assert_eq!(
            responder.open("s8", [], &message),
            NegReply::Err("blocked: too many negentropy sessions (max 8)".into())
        );
        // Re-opening an existing id at the cap replaces it rather than being refused.
        assert!(matches!(
            responder.open("s3", [], &message),
            NegReply::Msg(_)
        ));
        assert_eq!(responder.session_count(), 8);
        assert!(responder.close("s3"));
        assert!(!responder.close("s3"));
        assert_eq!(
            responder.message("s3", &message),
            NegReply::Err("closed: unknown subscription".into())
        );
        assert!(matches!(
            responder.open("s8", [], &message),
            NegReply::Msg(_)
        ));
        assert_eq!(responder.session_count(), 8);
    }

    #[test]
    fn responder_reopen_replaces_the_session() {
        let mut rng = Rng(6);
        let first_store = universe(&mut rng, 2_000, 500);
        let second_store = universe(&mut rng, 3_000, 500);
        let mut responder = NegResponder::new(ResponderLimits::default());
        let (_, opening) = NegInitiator::new([], DEFAULT_FRAME_LIMIT).unwrap();
        assert!(matches!(
            responder.open("s", first_store.iter().copied(), &opening),
            NegReply::Msg(_)
        ));
        // A second NEG-OPEN on "s" reconciles against the second store only.
        let ours = &second_store[..1_000];
        let (mut initiator, opening) =
            NegInitiator::new(ours.iter().copied(), DEFAULT_FRAME_LIMIT).unwrap();
        let mut reply = responder.open("s", second_store.iter().copied(), &opening);
        assert_eq!(responder.session_count(), 1);
        let mut need = BTreeSet::new();
        loop {
            let NegReply::Msg(frame) = reply else {
                panic!("{reply:?}")
            };
            let progress = initiator.step(&frame).unwrap();
            assert!(progress.have.is_empty());
            need.extend(progress.need);
            match progress.next {
                Some(next) => reply = responder.message("s", &next),
                None => break,
            }
        }
        assert_eq!(need, &ids(&second_store) - &ids(ours));
    }

    #[test]
    fn responder_drops_a_session_on_a_bad_message() {
        let mut responder = NegResponder::new(ResponderLimits::default());
        let message = first_message(50, 7);
        assert!(matches!(
            responder.open("s", [], &message),
            NegReply::Msg(_)
        ));
        let reply = responder.message("s", &[PROTOCOL_VERSION, 0, 0, 7]);
        assert_eq!(reply, NegReply::Err("invalid: unknown range mode 7".into()));
        assert_eq!(responder.session_count(), 0);
        // A bad NEG-OPEN creates no session, and replaces none either.
        assert!(matches!(
            responder.open("s", [], &message),
            NegReply::Msg(_)
        ));
        let reply = responder.open("s", [], b"");
        assert!(matches!(&reply, NegReply::Err(r) if r.starts_with("invalid: ")));
        assert_eq!(responder.session_count(), 0);
    }

    #[test]
    fn other_protocol_versions() {
        let mut responder = NegResponder::new(ResponderLimits::default());
        // A future version gets version negotiation (our version alone) from the relay.
        assert_eq!(
            responder.open("s", [], &[0x62, 1, 2, 3]),
            NegReply::Msg(vec![PROTOCOL_VERSION])
        );
        let (mut initiator, _) = NegInitiator::new([], DEFAULT_FRAME_LIMIT).unwrap();
        assert!(matches!(
            initiator.step(&[0x62]),
            Err(NegError::Protocol(_))
        ));
        assert_eq!(initiator.step(&[PROTOCOL_VERSION]), Err(NegError::Closed));
        assert!(!initiator.is_complete());
        assert_eq!(initiator.rounds(), 1);
    }

    #[test]
    fn validator_accepts_what_the_library_sends() {
        let mut rng = Rng(8);
        let a = universe(&mut rng, 2_000, 30);
        let b = universe(&mut rng, 2_000, 30);
        let (mut initiator, mut up) = NegInitiator::new(a.iter().copied(), 4_096).unwrap();
        let mut responder = NegResponder::new(ResponderLimits {
            frame_limit: 4_096,
            ..ResponderLimits::default()
        });
        let mut reply = responder.open("s", b.iter().copied(), &up);
        loop {
            assert_eq!(validate(&up), Ok(()));
            let NegReply::Msg(down) = reply else {
                panic!("{reply:?}")
            };
            assert_eq!(validate(&down), Ok(()));
            match initiator.step(&down).unwrap().next {
                Some(next) => up = next,
                None => break,
            }
            reply = responder.message("s", &up);
        }
    }

    #[test]
    fn validator_refuses_malformed_frames() {
        let v = PROTOCOL_VERSION;
        for (frame, why) in [
            (vec![], "empty"),
            (vec![0x00], "not a negentropy"),
            (vec![v, 0x80], "truncated varint"),
            (
                vec![
                    v, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
                ],
                "overflows",
            ),
            (vec![v, 0, 33], "33 bytes"),
            (vec![v, 0, 2, 1], "truncated bound"),
            (vec![v, 0, 0, 1, 1, 2], "truncated fingerprint"),
            (vec![v, 0, 0, 2, 0xc0, 0x80, 0x80, 0x80, 0], "truncated"),
            (vec![v, 0, 0, 3], "mode 3"),
        ] {
            let error = validate(&frame).unwrap_err().to_string();
            assert!(
                error.starts_with("invalid: ") && error.contains(why),
                "{error}"
            );
        }
    }

    #[test]
    fn errors_display_as_nip01_reasons() {
        assert_eq!(
            NegError::TooManyItems { items: 6, max: 5 }.to_string(),
            "blocked: too many records (max 5)"
        );
        assert_eq!(NegError::Decode("x".into()).to_string(), "invalid: x");
        assert_eq!(NegError::Protocol("x".into()).to_string(), "error: x");
    }

    /// Valid frames of a small reconciliation, to mutate: the initiator's first frame,
    /// the responder's reply (fingerprints and id lists), and the initiator's next frame.
    fn sample_frames() -> (Vec<NegItem>, Vec<NegItem>, Vec<Vec<u8>>) {
        let mut rng = Rng(9);
        let all = universe(&mut rng, 400, 40);
        let a: Vec<_> = all.iter().copied().filter(|_| rng.below(4) != 0).collect();
        let b: Vec<_> = all.iter().copied().filter(|_| rng.below(4) != 0).collect();
        let mut frames = Vec::new();
        let (mut initiator, mut up) = NegInitiator::new(a.iter().copied(), 4_096).unwrap();
        let mut responder = NegResponder::new(ResponderLimits::default());
        let mut reply = responder.open("s", b.iter().copied(), &up);
        while let NegReply::Msg(down) = reply {
            frames.push(up);
            frames.push(down.clone());
            match initiator.step(&down).unwrap().next {
                Some(next) => up = next,
                None => break,
            }
            reply = responder.message("s", &up);
        }
        (a, b, frames)
    }

    #[derive(Debug, Clone)]
    enum Mutation {
        Truncate(usize),
        Flip(usize, u8),
        Insert(usize, u8),
        Remove(usize),
        Splice(usize, Vec<u8>),
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            any::<usize>().prop_map(Mutation::Truncate),
            (any::<usize>(), 1u8..=255).prop_map(|(i, x)| Mutation::Flip(i, x)),
            (any::<usize>(), any::<u8>()).prop_map(|(i, x)| Mutation::Insert(i, x)),
            any::<usize>().prop_map(Mutation::Remove),
            (
                any::<usize>(),
                proptest::collection::vec(any::<u8>(), 1..12)
            )
                .prop_map(|(i, bytes)| Mutation::Splice(i, bytes)),
        ]
    }

    fn mutate(frame: &mut Vec<u8>, mutation: &Mutation) {
        let at = |i: usize, len: usize| if len == 0 { 0 } else { i % len };
        match mutation {
            Mutation::Truncate(i) => frame.truncate(at(*i, frame.len())),
            Mutation::Flip(i, x) if !frame.is_empty() => {
                let i = at(*i, frame.len());
                frame[i] ^= x;
            }
            Mutation::Insert(i, x) => frame.insert(at(*i, frame.len() + 1), *x),
            Mutation::Remove(i) if !frame.is_empty() => {
                frame.remove(at(*i, frame.len()));
            }
            Mutation::Splice(i, bytes) => {
                let i = at(*i, frame.len() + 1);
                let end = (i + bytes.len()).min(frame.len());
                frame.splice(i..end, bytes.iter().copied());
            }
            _ => {}
        }
    }

    /// Feeds one (possibly malformed) frame to every entry point; none may panic.
    fn feed_everywhere(a: &[NegItem], b: &[NegItem], frame: &[u8]) {
        let (mut initiator, opening) = NegInitiator::new(a.iter().copied(), 4_096).unwrap();
        let _ = initiator.step(frame);
        let _ = initiator.step(frame);
        let mut responder = NegResponder::new(ResponderLimits {
            frame_limit: 4_096,
            ..ResponderLimits::default()
        });
        let _ = responder.open("x", b.iter().copied(), frame);
        let _ = responder.open("s", b.iter().copied(), &opening);
        let _ = responder.message("s", frame);
    }

    /// The same frame straight into `negentropy`, bypassing our validator, to learn
    /// whether the library itself panics on malformed input.
    fn feed_library(a: &[NegItem], b: &[NegItem], frame: &[u8]) {
        for limit in [0, 4_096] {
            let mut initiator =
                new_session(build_storage(a.iter().copied(), usize::MAX).unwrap(), limit).unwrap();
            initiator.initiate().unwrap();
            let _ = initiator.reconcile_with_ids(frame, &mut Vec::new(), &mut Vec::new());
            let mut responder =
                new_session(build_storage(b.iter().copied(), usize::MAX).unwrap(), limit).unwrap();
            let _ = responder.reconcile(frame);
        }
    }

    fn garbage() -> impl Strategy<Value = Vec<u8>> {
        (
            any::<bool>(),
            proptest::collection::vec(any::<u8>(), 0..700),
        )
            .prop_map(|(versioned, mut bytes)| {
                if versioned {
                    bytes.insert(0, PROTOCOL_VERSION);
                }
                bytes
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn random_bytes_never_panic(frame in garbage()) {
            let (a, b, _) = sample_frames();
            feed_everywhere(&a, &b, &frame);
            feed_library(&a, &b, &frame);
        }

        #[test]
        fn mutated_frames_never_panic(
            pick in any::<usize>(),
            mutations in proptest::collection::vec(mutation(), 1..5),
        ) {
            let (a, b, frames) = sample_frames();
            let mut frame = frames[pick % frames.len()].clone();
            for m in &mutations {
                mutate(&mut frame, m);
            }
            feed_everywhere(&a, &b, &frame);
            feed_library(&a, &b, &frame);
        }
    }

    fn report(name: &str, out: &Outcome) {
        println!(
            "{name}: {} rounds; initiator→relay {} B binary ({} B hex), relay→initiator {} B \
             binary ({} B hex); largest frames {} / {} B; need {}, have {}",
            out.rounds,
            out.bytes_up,
            2 * out.bytes_up,
            out.bytes_down,
            2 * out.bytes_down,
            out.max_up,
            out.max_down,
            out.need.len(),
            out.have.len(),
        );
    }

    #[test]
    #[ignore = "prints the cost of reconciling 100 000 items; run with --ignored --nocapture"]
    fn cost_of_100k_items() {
        let mut rng = Rng(10);
        // A year of events.
        let relay = universe(&mut rng, 100_000, 365 * 86_400);
        let out = reconcile(&relay, &relay, DEFAULT_FRAME_LIMIT);
        report("identical 100k", &out);

        let mut shuffled = relay.clone();
        rng.shuffle(&mut shuffled);
        let missing_random = &shuffled[1_000..];
        let out = reconcile(missing_random, &relay, DEFAULT_FRAME_LIMIT);
        assert_exact(&out, missing_random, &relay);
        report("relay 100k, we lack 1000 at random", &out);

        let mut newest_first = relay.clone();
        newest_first.sort_unstable_by(|x, y| y.cmp(x));
        let missing_newest = &newest_first[1_000..];
        let out = reconcile(missing_newest, &relay, DEFAULT_FRAME_LIMIT);
        assert_exact(&out, missing_newest, &relay);
        report("relay 100k, we lack the newest 1000", &out);

        let mut ours = missing_random.to_vec();
        ours.extend(universe(&mut rng, 1_000, 365 * 86_400));
        let out = reconcile(&ours, &relay, DEFAULT_FRAME_LIMIT);
        assert_exact(&out, &ours, &relay);
        report("100k each, 1000 only on each side", &out);
    }
}
