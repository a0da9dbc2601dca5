//! The relay wire: the JSON frames a client and a relay exchange (NIP-01, NIP-42 `AUTH`,
//! NIP-45 `COUNT`, NIP-77 `NEG-*`), parsed into typed values and serialised back, and the
//! machine-readable part of the reasons relays give when they refuse something.
//!
//! Parsing never panics, whatever the peer sends: every malformed frame is a
//! [`FrameError`], whose [`FrameError::as_str`] is a stable counter label.
//!
//! - Frames longer than the caller's byte cap are refused before any parsing.
//! - Nesting deeper than `serde_json`'s recursion limit (128) is refused as
//!   [`FrameError::NotJson`], so hostile input cannot exhaust the stack.
//! - Events are parsed for structure only: their id and signature are *not* verified
//!   here (acceptance, a later layer, does that).
//! - Relays' frames may carry trailing elements after the ones NIP-01 defines for
//!   `EVENT`, `EOSE`, `OK`, `CLOSED`, `NOTICE` and `NEG-ERR` (some relays append junk
//!   or, for `NEG-ERR`, a record cap); they are ignored. Every other frame must have
//!   exactly the elements its NIP defines.

use std::fmt;
use std::vec::IntoIter;

use nostr::prelude::{Event, EventId, Filter};
use serde_json::value::RawValue;
use serde_json::Value;

/// Largest frame parsed by default (1 MiB); larger frames are refused before parsing.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 1 << 20;

/// Longest subscription id accepted, in bytes (NIP-01).
const MAX_SUBSCRIPTION_BYTES: usize = 64;

/// Most filters parsed from one `REQ` or `COUNT`.
const MAX_FILTERS: usize = 1000;

/// Characters of an unknown message type kept in [`FrameError::UnknownType`].
const TYPE_CHARS: usize = 32;

/// Characters of a deserialisation error kept in [`FrameError::BadEvent`] and
/// [`FrameError::BadFilter`].
const DETAIL_CHARS: usize = 120;

mod reasons;

pub use reasons::{
    blocked_record_cap, is_too_many_records, notice_class, reason_class, NoticeClass, ReasonClass,
};

/// A message from a relay to a client (NIP-01, NIP-42, NIP-45, NIP-77).
#[derive(Debug, Clone, PartialEq)]
pub enum RelayFrame {
    /// `["EVENT", <sub>, <event>]`: a stored or live event. Structure parsed; id and
    /// signature not verified.
    Event {
        /// The subscription the event answers.
        subscription: String,
        /// The event.
        event: Box<Event>,
    },
    /// `["EOSE", <sub>]`: the end of stored events.
    Eose {
        /// The subscription whose stored events are complete.
        subscription: String,
    },
    /// `["OK", <event id>, <accepted>, <message>]`: the answer to a published event. A
    /// missing message reads as `""`.
    Ok {
        /// The event answered.
        event_id: EventId,
        /// Whether the relay stored (or already had) the event.
        accepted: bool,
        /// `"prefix: text"`, see [`reason_class`].
        message: String,
    },
    /// `["CLOSED", <sub>, <message>]`: the relay ended a subscription. A missing message
    /// reads as `""`.
    Closed {
        /// The subscription ended.
        subscription: String,
        /// `"prefix: text"`, see [`reason_class`].
        message: String,
    },
    /// `["NOTICE", <message>]`: free text for humans, see [`notice_class`].
    Notice {
        /// The text.
        message: String,
    },
    /// `["AUTH", <challenge>]`: a NIP-42 challenge.
    Auth {
        /// The challenge to sign.
        challenge: String,
    },
    /// `["COUNT", <sub>, {"count": <n>}]`: a NIP-45 count.
    Count {
        /// The subscription counted.
        subscription: String,
        /// The number of matching events.
        count: u64,
    },
    /// `["NEG-MSG", <sub>, <hex>]`: a NIP-77 reconciliation message.
    NegMsg {
        /// The reconciliation.
        subscription: String,
        /// The negentropy message, hex decoded.
        message: Vec<u8>,
    },
    /// `["NEG-ERR", <sub>, <reason>]`: the relay ended a reconciliation.
    NegErr {
        /// The reconciliation ended.
        subscription: String,
        /// `"prefix: text"`, see [`reason_class`] and [`blocked_record_cap`].
        message: String,
    },
}

/// A message from a client to a relay.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientFrame {
    /// `["EVENT", <event>]`: publish an event.
    Event {
        /// The event.
        event: Box<Event>,
    },
    /// `["REQ", <sub>, <filter>...]`: subscribe to stored and live events.
    Req {
        /// The subscription id.
        subscription: String,
        /// One or more filters.
        filters: Vec<Filter>,
    },
    /// `["COUNT", <sub>, <filter>...]`: count matching events (NIP-45).
    Count {
        /// The subscription id.
        subscription: String,
        /// One or more filters.
        filters: Vec<Filter>,
    },
    /// `["CLOSE", <sub>]`: end a subscription.
    Close {
        /// The subscription ended.
        subscription: String,
    },
    /// `["AUTH", <event>]`: answer a NIP-42 challenge.
    Auth {
        /// The signed kind-22242 event.
        event: Box<Event>,
    },
    /// `["NEG-OPEN", <sub>, <filter>, <hex>]`: start a NIP-77 reconciliation.
    NegOpen {
        /// The reconciliation id.
        subscription: String,
        /// The events reconciled.
        filter: Box<Filter>,
        /// The initial negentropy message, hex decoded.
        message: Vec<u8>,
    },
    /// `["NEG-MSG", <sub>, <hex>]`: continue a NIP-77 reconciliation.
    NegMsg {
        /// The reconciliation id.
        subscription: String,
        /// The negentropy message, hex decoded.
        message: Vec<u8>,
    },
    /// `["NEG-CLOSE", <sub>]`: end a NIP-77 reconciliation.
    NegClose {
        /// The reconciliation ended.
        subscription: String,
    },
}

/// Why a frame was refused. Each variant is a counter name (see [`FrameError::as_str`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The frame is longer than the byte cap.
    TooLarge {
        /// The frame's length in bytes.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// The frame is not JSON, or is nested too deeply.
    NotJson,
    /// The frame is JSON but not an array.
    NotArray,
    /// The frame is `[]`.
    EmptyArray,
    /// The message type is unknown, or not a string (then its JSON); truncated to 32
    /// characters.
    UnknownType(String),
    /// The frame has too few (or, where the NIP fixes them, too many) elements.
    Arity {
        /// The message type.
        kind: &'static str,
        /// The number of elements, the type included.
        len: usize,
    },
    /// A field has the wrong JSON type or shape.
    BadField {
        /// The message type.
        kind: &'static str,
        /// The field: `event_id`, `accepted`, `message`, `challenge` or `count`.
        field: &'static str,
    },
    /// A negentropy payload is not an even number of hex digits.
    BadHex,
    /// An event does not deserialise; the reason, truncated to 120 characters.
    BadEvent(String),
    /// A filter does not deserialise; the reason, truncated to 120 characters.
    BadFilter(String),
    /// A subscription id is not a string of 1 to 64 bytes.
    BadSubscription,
}

impl FrameError {
    /// A stable short label, for counters and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "too-large",
            Self::NotJson => "not-json",
            Self::NotArray => "not-array",
            Self::EmptyArray => "empty",
            Self::UnknownType(_) => "unknown-type",
            Self::Arity { .. } => "arity",
            Self::BadField { .. } => "bad-field",
            Self::BadHex => "bad-hex",
            Self::BadEvent(_) => "bad-event",
            Self::BadFilter(_) => "bad-filter",
            Self::BadSubscription => "bad-subscription",
        }
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge { len, max } => {
                write!(f, "frame of {len} bytes exceeds the {max}-byte cap")
            }
            Self::NotJson => f.write_str("frame is not JSON or is nested too deeply"),
            Self::NotArray => f.write_str("frame is not a JSON array"),
            Self::EmptyArray => f.write_str("frame is an empty array"),
            Self::UnknownType(kind) => write!(f, "unknown message type {kind:?}"),
            Self::Arity { kind, len } => write!(f, "{kind} frame with {len} elements"),
            Self::BadField { kind, field } => write!(f, "{kind} frame with a malformed {field}"),
            Self::BadHex => f.write_str("negentropy payload is not even-length hex"),
            Self::BadEvent(why) => write!(f, "malformed event: {why}"),
            Self::BadFilter(why) => write!(f, "malformed filter: {why}"),
            Self::BadSubscription => f.write_str("subscription id is not a string of 1-64 bytes"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Parses a frame a relay sent, refusing frames longer than `max_bytes`.
pub fn parse_relay_frame(text: &str, max_bytes: usize) -> Result<RelayFrame, FrameError> {
    let (kind, fields) = open(text, max_bytes)?;
    match kind.as_str() {
        "EVENT" => {
            let mut f = fields.arity("EVENT", 3, usize::MAX)?;
            let subscription = f.subscription()?;
            let event = f.event()?;
            Ok(RelayFrame::Event {
                subscription,
                event,
            })
        }
        "EOSE" => {
            let mut f = fields.arity("EOSE", 2, usize::MAX)?;
            let subscription = f.subscription()?;
            Ok(RelayFrame::Eose { subscription })
        }
        "OK" => {
            let mut f = fields.arity("OK", 3, usize::MAX)?;
            let event_id = f.event_id()?;
            let accepted = f.bool("accepted")?;
            let message = f.optional_string("message")?;
            Ok(RelayFrame::Ok {
                event_id,
                accepted,
                message,
            })
        }
        "CLOSED" => {
            let mut f = fields.arity("CLOSED", 2, usize::MAX)?;
            let subscription = f.subscription()?;
            let message = f.optional_string("message")?;
            Ok(RelayFrame::Closed {
                subscription,
                message,
            })
        }
        "NOTICE" => {
            let mut f = fields.arity("NOTICE", 2, usize::MAX)?;
            let message = f.string("message")?;
            Ok(RelayFrame::Notice { message })
        }
        "AUTH" => {
            let mut f = fields.arity("AUTH", 2, 2)?;
            let challenge = f.string("challenge")?;
            Ok(RelayFrame::Auth { challenge })
        }
        "COUNT" => {
            let mut f = fields.arity("COUNT", 3, 3)?;
            let subscription = f.subscription()?;
            let count = f.count()?;
            Ok(RelayFrame::Count {
                subscription,
                count,
            })
        }
        "NEG-MSG" => {
            let mut f = fields.arity("NEG-MSG", 3, 3)?;
            let subscription = f.subscription()?;
            let message = f.hex("message")?;
            Ok(RelayFrame::NegMsg {
                subscription,
                message,
            })
        }
        "NEG-ERR" => {
            let mut f = fields.arity("NEG-ERR", 3, usize::MAX)?;
            let subscription = f.subscription()?;
            let message = f.string("message")?;
            Ok(RelayFrame::NegErr {
                subscription,
                message,
            })
        }
        _ => Err(FrameError::UnknownType(truncate(&kind, TYPE_CHARS))),
    }
}

/// Parses a frame a client sent, refusing frames longer than `max_bytes`.
pub fn parse_client_frame(text: &str, max_bytes: usize) -> Result<ClientFrame, FrameError> {
    let (kind, fields) = open(text, max_bytes)?;
    match kind.as_str() {
        "EVENT" => {
            let mut f = fields.arity("EVENT", 2, 2)?;
            let event = f.event()?;
            Ok(ClientFrame::Event { event })
        }
        "REQ" => {
            let mut f = fields.arity("REQ", 3, 2 + MAX_FILTERS)?;
            let subscription = f.subscription()?;
            let filters = f.filters()?;
            Ok(ClientFrame::Req {
                subscription,
                filters,
            })
        }
        "COUNT" => {
            let mut f = fields.arity("COUNT", 3, 2 + MAX_FILTERS)?;
            let subscription = f.subscription()?;
            let filters = f.filters()?;
            Ok(ClientFrame::Count {
                subscription,
                filters,
            })
        }
        "CLOSE" => {
            let mut f = fields.arity("CLOSE", 2, 2)?;
            let subscription = f.subscription()?;
            Ok(ClientFrame::Close { subscription })
        }
        "AUTH" => {
            let mut f = fields.arity("AUTH", 2, 2)?;
            let event = f.event()?;
            Ok(ClientFrame::Auth { event })
        }
        "NEG-OPEN" => {
            let mut f = fields.arity("NEG-OPEN", 4, 4)?;
            let subscription = f.subscription()?;
            let filter = Box::new(f.filter()?);
            let message = f.hex("message")?;
            Ok(ClientFrame::NegOpen {
                subscription,
                filter,
                message,
            })
        }
        "NEG-MSG" => {
            let mut f = fields.arity("NEG-MSG", 3, 3)?;
            let subscription = f.subscription()?;
            let message = f.hex("message")?;
            Ok(ClientFrame::NegMsg {
                subscription,
                message,
            })
        }
        "NEG-CLOSE" => {
            let mut f = fields.arity("NEG-CLOSE", 2, 2)?;
            let subscription = f.subscription()?;
            Ok(ClientFrame::NegClose { subscription })
        }
        _ => Err(FrameError::UnknownType(truncate(&kind, TYPE_CHARS))),
    }
}

/// The id of the event in a client's `EVENT` frame that [`parse_client_frame`] refused,
/// when the frame is an `EVENT` whose event object has an `id` of 64 hex digits: NIP-01
/// answers such an event with `OK false`, and only a frame without a readable id with a
/// `NOTICE`.
pub fn malformed_event_id(text: &str, max_bytes: usize) -> Option<EventId> {
    let (kind, mut fields) = open(text, max_bytes).ok()?;
    if kind != "EVENT" {
        return None;
    }
    let Value::Object(event) = fields.next_value().ok()?? else {
        return None;
    };
    let Value::String(hex) = event.get("id")? else {
        return None;
    };
    let bytes: [u8; 32] = decode_hex(hex)?.try_into().ok()?;
    Some(EventId::from_byte_array(bytes))
}

impl RelayFrame {
    /// The frame as compact JSON text.
    pub fn to_json(&self) -> String {
        match self {
            Self::Event {
                subscription,
                event,
            } => frame("EVENT", [json_string(subscription), event_json(event)]),
            Self::Eose { subscription } => frame("EOSE", [json_string(subscription)]),
            Self::Ok {
                event_id,
                accepted,
                message,
            } => frame(
                "OK",
                [
                    json_string(&event_id.to_hex()),
                    accepted.to_string(),
                    json_string(message),
                ],
            ),
            Self::Closed {
                subscription,
                message,
            } => frame("CLOSED", [json_string(subscription), json_string(message)]),
            Self::Notice { message } => frame("NOTICE", [json_string(message)]),
            Self::Auth { challenge } => frame("AUTH", [json_string(challenge)]),
            Self::Count {
                subscription,
                count,
            } => frame(
                "COUNT",
                [json_string(subscription), format!("{{\"count\":{count}}}")],
            ),
            Self::NegMsg {
                subscription,
                message,
            } => frame("NEG-MSG", [json_string(subscription), hex_string(message)]),
            Self::NegErr {
                subscription,
                message,
            } => frame("NEG-ERR", [json_string(subscription), json_string(message)]),
        }
    }
}

/// `["EVENT", <sub>, <event>]` as compact JSON text, without copying the event (what
/// [`RelayFrame::Event`] serialises to).
pub fn event_frame(subscription: &str, event: &Event) -> String {
    frame("EVENT", [json_string(subscription), event_json(event)])
}

impl ClientFrame {
    /// The frame as compact JSON text.
    pub fn to_json(&self) -> String {
        match self {
            Self::Event { event } => frame("EVENT", [event_json(event)]),
            Self::Req {
                subscription,
                filters,
            } => frame(
                "REQ",
                std::iter::once(json_string(subscription)).chain(filters.iter().map(filter_json)),
            ),
            Self::Count {
                subscription,
                filters,
            } => frame(
                "COUNT",
                std::iter::once(json_string(subscription)).chain(filters.iter().map(filter_json)),
            ),
            Self::Close { subscription } => frame("CLOSE", [json_string(subscription)]),
            Self::Auth { event } => frame("AUTH", [event_json(event)]),
            Self::NegOpen {
                subscription,
                filter,
                message,
            } => frame(
                "NEG-OPEN",
                [
                    json_string(subscription),
                    filter_json(filter),
                    hex_string(message),
                ],
            ),
            Self::NegMsg {
                subscription,
                message,
            } => frame("NEG-MSG", [json_string(subscription), hex_string(message)]),
            Self::NegClose { subscription } => frame("NEG-CLOSE", [json_string(subscription)]),
        }
    }
}

/// Checks the size cap, parses the JSON and splits off the message type.
fn open(text: &str, max_bytes: usize) -> Result<(String, Fields<'_>), FrameError> {
    if text.len() > max_bytes {
        return Err(FrameError::TooLarge {
            len: text.len(),
            max: max_bytes,
        });
    }
    // The elements as slices of the text: each is parsed into what its field needs (an
    // event straight from its JSON), not through a tree of the whole frame first.
    let items: Vec<&RawValue> =
        serde_json::from_str(text).map_err(|_| match serde_json::from_str::<Value>(text) {
            Ok(_) => FrameError::NotArray,
            Err(_) => FrameError::NotJson,
        })?;
    let len = items.len();
    let mut fields = Fields {
        kind: "",
        len,
        items: items.into_iter(),
    };
    let kind = match fields.next_value()? {
        None => return Err(FrameError::EmptyArray),
        Some(Value::String(kind)) => kind,
        Some(other) => {
            let json = serde_json::to_string(&other).unwrap_or_default();
            return Err(FrameError::UnknownType(truncate(&json, TYPE_CHARS)));
        }
    };
    Ok((kind, fields))
}

/// The elements of a frame after its type, consumed in order.
struct Fields<'a> {
    /// The message type, once [`Fields::arity`] has checked the frame.
    kind: &'static str,
    /// Elements in the frame, the type included.
    len: usize,
    /// The elements not yet consumed.
    items: IntoIter<&'a RawValue>,
}

impl Fields<'_> {
    /// These fields as a `kind` frame of `min..=max` elements, the type included.
    fn arity(mut self, kind: &'static str, min: usize, max: usize) -> Result<Self, FrameError> {
        if self.len < min || self.len > max {
            return Err(FrameError::Arity {
                kind,
                len: self.len,
            });
        }
        self.kind = kind;
        Ok(self)
    }

    /// The next element, parsed. Its syntax was checked with the frame's; what can
    /// still fail is nesting deeper than serde_json's limit, which reads as not JSON.
    fn next_value(&mut self) -> Result<Option<Value>, FrameError> {
        self.items.next().map(parse_element).transpose()
    }

    /// A [`FrameError::BadField`] for `field` of this frame.
    fn bad(&self, field: &'static str) -> FrameError {
        FrameError::BadField {
            kind: self.kind,
            field,
        }
    }

    /// The next element as a subscription id of 1 to 64 bytes.
    fn subscription(&mut self) -> Result<String, FrameError> {
        match self.next_value()? {
            Some(Value::String(id)) if (1..=MAX_SUBSCRIPTION_BYTES).contains(&id.len()) => Ok(id),
            _ => Err(FrameError::BadSubscription),
        }
    }

    /// The next element as a string.
    fn string(&mut self, field: &'static str) -> Result<String, FrameError> {
        match self.next_value()? {
            Some(Value::String(s)) => Ok(s),
            _ => Err(self.bad(field)),
        }
    }

    /// A string that relays may omit: missing reads as `""`.
    fn optional_string(&mut self, field: &'static str) -> Result<String, FrameError> {
        match self.next_value()? {
            None => Ok(String::new()),
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(self.bad(field)),
        }
    }

    /// The next element as a bool.
    fn bool(&mut self, field: &'static str) -> Result<bool, FrameError> {
        match self.next_value()? {
            Some(Value::Bool(b)) => Ok(b),
            _ => Err(self.bad(field)),
        }
    }

    /// The next element as 64 hex digits of an event id.
    fn event_id(&mut self) -> Result<EventId, FrameError> {
        let bytes = match self.next_value()? {
            Some(Value::String(hex)) => decode_hex(&hex).and_then(|b| <[u8; 32]>::try_from(b).ok()),
            _ => None,
        };
        bytes
            .map(EventId::from_byte_array)
            .ok_or_else(|| self.bad("event_id"))
    }

    /// The next element as a NIP-45 `{"count": <n>}` object (other keys ignored).
    fn count(&mut self) -> Result<u64, FrameError> {
        match self.next_value()? {
            Some(Value::Object(map)) => map.get("count").and_then(Value::as_u64),
            _ => None,
        }
        .ok_or_else(|| self.bad("count"))
    }

    /// A hex payload: a string of an even number of hex digits.
    fn hex(&mut self, field: &'static str) -> Result<Vec<u8>, FrameError> {
        match self.next_value()? {
            Some(Value::String(hex)) => decode_hex(&hex).ok_or(FrameError::BadHex),
            _ => Err(self.bad(field)),
        }
    }

    /// The next element as an event, structure only.
    fn event(&mut self) -> Result<Box<Event>, FrameError> {
        let json = self.items.next().map_or("null", |raw| raw.get());
        serde_json::from_str::<Event>(json)
            .map(Box::new)
            .map_err(|e| match e.classify() {
                // Valid JSON but for its depth (see `next_value`).
                serde_json::error::Category::Syntax => FrameError::NotJson,
                _ => FrameError::BadEvent(truncate(&e.to_string(), DETAIL_CHARS)),
            })
    }

    /// The next element as a filter.
    fn filter(&mut self) -> Result<Filter, FrameError> {
        parse_filter(self.next_value()?.unwrap_or(Value::Null))
    }

    /// All remaining elements, as filters.
    fn filters(self) -> Result<Vec<Filter>, FrameError> {
        self.items
            .map(|raw| parse_filter(parse_element(raw)?))
            .collect()
    }
}

/// One element of a frame as a JSON value (see [`Fields::next_value`]).
fn parse_element(raw: &RawValue) -> Result<Value, FrameError> {
    serde_json::from_str(raw.get()).map_err(|_| FrameError::NotJson)
}

/// A filter from its JSON.
fn parse_filter(value: Value) -> Result<Filter, FrameError> {
    serde_json::from_value::<Filter>(value)
        .map_err(|e| FrameError::BadFilter(truncate(&e.to_string(), DETAIL_CHARS)))
}

/// The bytes an even-length string of hex digits (either case) stands for.
fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        char::from(c)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    }
    let pairs = hex.as_bytes().chunks_exact(2);
    if !pairs.remainder().is_empty() {
        return None;
    }
    pairs
        .map(|pair| match pair {
            [high, low] => Some((nibble(*high)? << 4) | nibble(*low)?),
            _ => None,
        })
        .collect()
}

/// `bytes` as a JSON string of lowercase hex.
fn hex_string(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().saturating_mul(2).saturating_add(2));
    out.push('"');
    for byte in bytes {
        for nibble in [byte >> 4, byte & 0x0f] {
            out.push(char::from_digit(u32::from(nibble), 16).unwrap_or('0'));
        }
    }
    out.push('"');
    out
}

/// `s` as a JSON string literal.
fn json_string(s: &str) -> String {
    // Serialising a `str` cannot fail; the fallback only avoids a panic path.
    serde_json::to_string(s).unwrap_or_else(|_| String::from("\"\""))
}

/// An event as JSON; `null` (a frame any relay refuses) if it cannot be serialised.
fn event_json(event: &Event) -> String {
    event.try_as_json().unwrap_or_else(|_| String::from("null"))
}

/// A filter as JSON; `null` (never the match-all `{}`) if it cannot be serialised.
fn filter_json(filter: &Filter) -> String {
    filter
        .try_as_json()
        .unwrap_or_else(|_| String::from("null"))
}

/// `["<kind>",<part>,...]` from already serialised parts.
fn frame(kind: &str, parts: impl IntoIterator<Item = String>) -> String {
    let mut out = String::from("[");
    out.push_str(&json_string(kind));
    for part in parts {
        out.push(',');
        out.push_str(&part);
    }
    out.push(']');
    out
}

/// The first `chars` characters of `s`.
fn truncate(s: &str, chars: usize) -> String {
    s.chars().take(chars).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    use nostr::prelude::{
        Keys, Kind, PublicKey, SecretKey, Signature, SingleLetterTag, Tag, Timestamp,
    };
    use proptest::collection::{btree_map, vec};
    use proptest::prelude::*;

    const MAX: usize = DEFAULT_MAX_FRAME_BYTES;
    const ID: &str = "2be17aa3031bdcb006f0fce80c146dea9c1c0268b0af2398bb673365c6444d45";
    const EVENT: &str = r#"{"id":"2be17aa3031bdcb006f0fce80c146dea9c1c0268b0af2398bb673365c6444d45","pubkey":"f86c44a2de95d9149b51c6a29afeabba264c18e2fa7c49de93424a0c56947785","created_at":1640839235,"kind":4,"tags":[["p","13adc511de7e1cfcf1c6b7f6365fb5a03442d7bcacf565ea57fa7770912c023d"]],"content":"uRuvYr585B80L6rSJiHocw==?iv=oh6LVqdsYYol3JfFnXTbPA==","sig":"a5d9290ef9659083c490b303eb7ee41356d8778ff19f2f91776c8dc4443388a64ffcf336e61af4c25c05ac3ae952d1ced889ed655b67790891222aaa15b99fdd"}"#;

    fn pubkey(n: u8) -> PublicKey {
        let mut bytes = [1u8; 32];
        bytes[31] = n;
        Keys::new(SecretKey::from_slice(&bytes).expect("valid secret")).public_key()
    }

    fn event(n: u8, kind: u16, tags: &[&[&str]], content: &str) -> Box<Event> {
        let tags = tags
            .iter()
            .map(|t| Tag::parse(t.iter().copied()).expect("non-empty tag"));
        Box::new(Event::new(
            EventId::from_byte_array([n; 32]),
            pubkey(n),
            Timestamp::from(1_700_000_000 + u64::from(n)),
            Kind::from(kind),
            tags,
            content,
            Signature::from_byte_array([7; 64]),
        ))
    }

    fn letter(c: char) -> SingleLetterTag {
        SingleLetterTag::from_char(c).expect("letter")
    }

    fn filter() -> Filter {
        Filter::new()
            .kinds([Kind::from(30617), Kind::from(30618)])
            .authors([pubkey(1), pubkey(2)])
            .custom_tags(letter('d'), ["repo", "other"])
            .custom_tags(letter('A'), ["30617:abc:repo"])
            .since(Timestamp::from(1_600_000_000))
            .until(Timestamp::from(1_800_000_000))
            .limit(500)
    }

    fn relay_round_trip(frame: RelayFrame) {
        let json = frame.to_json();
        assert_eq!(parse_relay_frame(&json, MAX), Ok(frame), "{json}");
    }

    fn client_round_trip(frame: ClientFrame) {
        let json = frame.to_json();
        assert_eq!(parse_client_frame(&json, MAX), Ok(frame), "{json}");
    }

    fn relay(text: &str) -> Result<RelayFrame, FrameError> {
        parse_relay_frame(text, MAX)
    }

    fn client(text: &str) -> Result<ClientFrame, FrameError> {
        parse_client_frame(text, MAX)
    }

    fn arity(kind: &'static str, len: usize) -> FrameError {
        FrameError::Arity { kind, len }
    }

    fn bad(kind: &'static str, field: &'static str) -> FrameError {
        FrameError::BadField { kind, field }
    }

    #[test]
    fn a_malformed_event_keeps_its_id_when_it_can_be_read() {
        let with = |field: &str, value: &str| {
            let mut json: Value = serde_json::from_str(EVENT).expect("JSON");
            json[field] = serde_json::from_str(value).expect("JSON value");
            format!(r#"["EVENT",{json}]"#)
        };
        let id = EventId::from_hex(ID).expect("id");
        // Before 1970, scientific notation, an empty tag: each fails to parse, and its
        // id is still read.
        for frame in [
            with("created_at", "-1"),
            with("created_at", "1.6e9"),
            with("kind", "1e0"),
            with("tags", "[[]]"),
        ] {
            assert!(client(&frame).is_err(), "{frame}");
            assert_eq!(malformed_event_id(&frame, MAX), Some(id), "{frame}");
        }
        // No readable id: a NOTICE.
        for frame in [
            r#"["EVENT",{"id":"x"}]"#.to_owned(),
            with("id", "42"),
            r#"["EVENT",[]]"#.to_owned(),
            format!(r#"["REQ","s",{EVENT}]"#),
            "not json".to_owned(),
        ] {
            assert_eq!(malformed_event_id(&frame, MAX), None, "{frame}");
        }
    }

    #[test]
    fn relay_frames_round_trip() {
        let frames = [
            RelayFrame::Event {
                subscription: "sub-1".into(),
                event: event(
                    1,
                    1617,
                    &[&["a", "30617:abc:repo"], &["t", "x"]],
                    "a \"patch\"\n",
                ),
            },
            RelayFrame::Eose {
                subscription: "x".repeat(64),
            },
            RelayFrame::Ok {
                event_id: EventId::from_byte_array([0xab; 32]),
                accepted: true,
                message: String::new(),
            },
            RelayFrame::Ok {
                event_id: EventId::from_byte_array([3; 32]),
                accepted: false,
                message: "blocked: not on my list".into(),
            },
            RelayFrame::Closed {
                subscription: "ünïcode".into(),
                message: "auth-required: please".into(),
            },
            RelayFrame::Notice {
                message: "hello \u{0} \u{1f600}".into(),
            },
            RelayFrame::Auth {
                challenge: "challenge-42".into(),
            },
            RelayFrame::Count {
                subscription: "c".into(),
                count: u64::MAX,
            },
            RelayFrame::NegMsg {
                subscription: "neg".into(),
                message: vec![0x61, 0x00, 0xff, 0x10],
            },
            RelayFrame::NegMsg {
                subscription: "neg".into(),
                message: Vec::new(),
            },
            RelayFrame::NegErr {
                subscription: "neg".into(),
                message: "blocked: too many query results".into(),
            },
        ];
        for frame in frames {
            relay_round_trip(frame);
        }
    }

    #[test]
    fn client_frames_round_trip() {
        let frames = [
            ClientFrame::Event {
                event: event(
                    2,
                    30617,
                    &[&["d", "repo"], &["clone", "https://x/y.git"]],
                    "",
                ),
            },
            ClientFrame::Req {
                subscription: "req".into(),
                filters: vec![filter(), Filter::new().limit(0), Filter::new()],
            },
            ClientFrame::Count {
                subscription: "count".into(),
                filters: vec![filter().search("needle")],
            },
            ClientFrame::Close {
                subscription: "req".into(),
            },
            ClientFrame::Auth {
                event: event(3, 22242, &[&["relay", "wss://r"], &["challenge", "c"]], ""),
            },
            ClientFrame::NegOpen {
                subscription: "neg".into(),
                filter: Box::new(filter().id(EventId::from_byte_array([9; 32]))),
                message: vec![0x61, 0x80, 0x00, 0xde, 0xad, 0xbe, 0xef],
            },
            ClientFrame::NegMsg {
                subscription: "neg".into(),
                message: (0..=255).collect(),
            },
            ClientFrame::NegClose {
                subscription: "neg".into(),
            },
        ];
        for frame in frames {
            client_round_trip(frame);
        }
    }

    #[test]
    fn parses_real_frames() {
        let text = format!(" [ \"EVENT\" , \"s\" , {EVENT} ] \n");
        let Ok(RelayFrame::Event {
            subscription,
            event,
        }) = relay(&text)
        else {
            panic!("not an event frame");
        };
        assert_eq!(subscription, "s");
        assert_eq!(event.id.to_hex(), ID);
        assert_eq!(event.kind, Kind::from(4));
        // Structure only: a wrong id and signature still parse.
        let forged = EVENT.replace("\"content\":\"u", "\"content\":\"v");
        assert!(matches!(
            relay(&format!("[\"EVENT\",\"s\",{forged}]")),
            Ok(RelayFrame::Event { .. })
        ));
        assert!(matches!(
            client(&format!("[\"EVENT\",{EVENT}]")),
            Ok(ClientFrame::Event { .. })
        ));
        let neg = client(r##"["NEG-OPEN","n",{"kinds":[1],"#t":["x"]},"6100000200"]"##);
        assert_eq!(
            neg,
            Ok(ClientFrame::NegOpen {
                subscription: "n".into(),
                filter: Box::new(
                    Filter::new()
                        .kind(Kind::from(1))
                        .custom_tag(letter('t'), "x")
                ),
                message: vec![0x61, 0, 0, 2, 0],
            })
        );
        // Upper-case hex is accepted in ids and payloads.
        let upper = format!(r#"["OK","{}",true,""]"#, ID.to_uppercase());
        assert_eq!(
            relay(&upper),
            Ok(RelayFrame::Ok {
                event_id: EventId::from_hex(ID).expect("hex"),
                accepted: true,
                message: String::new(),
            })
        );
        assert_eq!(
            relay(r#"["NEG-MSG","n","AbCd"]"#),
            Ok(RelayFrame::NegMsg {
                subscription: "n".into(),
                message: vec![0xab, 0xcd],
            })
        );
        assert_eq!(
            relay(r#"["COUNT","c",{"count":42,"approximate":true}]"#),
            Ok(RelayFrame::Count {
                subscription: "c".into(),
                count: 42,
            })
        );
    }

    #[test]
    fn tolerates_missing_messages_and_trailing_junk() {
        assert_eq!(
            relay(&format!(r#"["OK","{ID}",false]"#)),
            Ok(RelayFrame::Ok {
                event_id: EventId::from_hex(ID).expect("hex"),
                accepted: false,
                message: String::new(),
            })
        );
        assert_eq!(
            relay(r#"["CLOSED","s"]"#),
            Ok(RelayFrame::Closed {
                subscription: "s".into(),
                message: String::new(),
            })
        );
        assert!(relay(&format!(r#"["EVENT","s",{EVENT},"junk",1]"#)).is_ok());
        assert!(relay(r#"["EOSE","s",null]"#).is_ok());
        assert!(relay(&format!(r#"["OK","{ID}",true,"",{{}}]"#)).is_ok());
        assert!(relay(r#"["CLOSED","s","error: x",[]]"#).is_ok());
        assert!(relay(r#"["NOTICE","hi",2]"#).is_ok());
        assert_eq!(
            relay(r#"["NEG-ERR","n","blocked: too many query results",1000000]"#),
            Ok(RelayFrame::NegErr {
                subscription: "n".into(),
                message: "blocked: too many query results".into(),
            })
        );
    }

    #[test]
    fn refuses_too_large_before_parsing() {
        let text = r#"["EOSE","s"]"#;
        assert_eq!(
            parse_relay_frame(text, text.len() - 1),
            Err(FrameError::TooLarge {
                len: text.len(),
                max: text.len() - 1,
            })
        );
        assert!(parse_relay_frame(text, text.len()).is_ok());
        // Refused by size even though it is not JSON at all.
        assert_eq!(
            parse_client_frame("{{{{", 3),
            Err(FrameError::TooLarge { len: 4, max: 3 })
        );
    }

    #[test]
    fn refuses_deep_nesting_without_overflowing_the_stack() {
        let open = "[".repeat(100_000);
        assert_eq!(relay(&open), Err(FrameError::NotJson));
        assert_eq!(client(&open), Err(FrameError::NotJson));
        let balanced = format!("{open}{}", "]".repeat(100_000));
        assert_eq!(relay(&balanced), Err(FrameError::NotJson));
        let in_filter = format!(
            r#"["REQ","s",{{"x":{}1{}}}]"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert_eq!(client(&in_filter), Err(FrameError::NotJson));
        let objects = format!("{}{}", r#"{"a":"#.repeat(50_000), "}".repeat(50_000));
        assert_eq!(relay(&objects), Err(FrameError::NotJson));
    }

    #[test]
    fn refuses_malformed_relay_frames() {
        let long_type = format!(r#"["{}"]"#, "X".repeat(100));
        let long_sub = format!(r#"["EOSE","{}"]"#, "s".repeat(65));
        let wide_sub = format!(r#"["EOSE","{}"]"#, "é".repeat(33));
        let cases: Vec<(String, FrameError)> = vec![
            ("".into(), FrameError::NotJson),
            ("not json".into(), FrameError::NotJson),
            (r#"["EOSE","s""#.into(), FrameError::NotJson),
            (r#"["EOSE","s"] x"#.into(), FrameError::NotJson),
            (r#"["EOSE","s",]"#.into(), FrameError::NotJson),
            ("{}".into(), FrameError::NotArray),
            (r#""EOSE""#.into(), FrameError::NotArray),
            ("null".into(), FrameError::NotArray),
            ("42".into(), FrameError::NotArray),
            ("[]".into(), FrameError::EmptyArray),
            (" [ ] ".into(), FrameError::EmptyArray),
            (
                r#"["FOO","s"]"#.into(),
                FrameError::UnknownType("FOO".into()),
            ),
            (
                r#"["eose","s"]"#.into(),
                FrameError::UnknownType("eose".into()),
            ),
            (
                r#"["REQ","s",{}]"#.into(),
                FrameError::UnknownType("REQ".into()),
            ),
            (r#"[42,"s"]"#.into(), FrameError::UnknownType("42".into())),
            (r#"[null]"#.into(), FrameError::UnknownType("null".into())),
            (long_type, FrameError::UnknownType("X".repeat(32))),
            (r#"["EVENT","s"]"#.into(), arity("EVENT", 2)),
            (r#"["EOSE"]"#.into(), arity("EOSE", 1)),
            (format!(r#"["OK","{ID}"]"#), arity("OK", 2)),
            (r#"["CLOSED"]"#.into(), arity("CLOSED", 1)),
            (r#"["NOTICE"]"#.into(), arity("NOTICE", 1)),
            (r#"["AUTH"]"#.into(), arity("AUTH", 1)),
            (r#"["AUTH","c","x"]"#.into(), arity("AUTH", 3)),
            (r#"["COUNT","s"]"#.into(), arity("COUNT", 2)),
            (r#"["COUNT","s",{"count":1},1]"#.into(), arity("COUNT", 4)),
            (r#"["NEG-MSG","s"]"#.into(), arity("NEG-MSG", 2)),
            (r#"["NEG-MSG","s","00","00"]"#.into(), arity("NEG-MSG", 4)),
            (r#"["NEG-ERR","s"]"#.into(), arity("NEG-ERR", 2)),
            (r#"["OK","abc",true,""]"#.into(), bad("OK", "event_id")),
            (r#"["OK",42,true,""]"#.into(), bad("OK", "event_id")),
            (
                format!(r#"["OK","{}zz",true,""]"#, &ID[..62]),
                bad("OK", "event_id"),
            ),
            (format!(r#"["OK","{ID}00",true,""]"#), bad("OK", "event_id")),
            (format!(r#"["OK","{ID}","true",""]"#), bad("OK", "accepted")),
            (format!(r#"["OK","{ID}",1,""]"#), bad("OK", "accepted")),
            (format!(r#"["OK","{ID}",true,5]"#), bad("OK", "message")),
            (format!(r#"["OK","{ID}",true,null]"#), bad("OK", "message")),
            (r#"["CLOSED","s",null]"#.into(), bad("CLOSED", "message")),
            (r#"["NOTICE",5]"#.into(), bad("NOTICE", "message")),
            (r#"["AUTH",{}]"#.into(), bad("AUTH", "challenge")),
            (
                r#"["COUNT","s",{"count":-1}]"#.into(),
                bad("COUNT", "count"),
            ),
            (
                r#"["COUNT","s",{"count":"5"}]"#.into(),
                bad("COUNT", "count"),
            ),
            (
                r#"["COUNT","s",{"count":1.5}]"#.into(),
                bad("COUNT", "count"),
            ),
            (r#"["COUNT","s",{"n":5}]"#.into(), bad("COUNT", "count")),
            (r#"["COUNT","s",5]"#.into(), bad("COUNT", "count")),
            (r#"["NEG-MSG","s",5]"#.into(), bad("NEG-MSG", "message")),
            (r#"["NEG-ERR","s",null]"#.into(), bad("NEG-ERR", "message")),
            (r#"["NEG-MSG","s","abc"]"#.into(), FrameError::BadHex),
            (r#"["NEG-MSG","s","zz"]"#.into(), FrameError::BadHex),
            (r#"["NEG-MSG","s","0x12"]"#.into(), FrameError::BadHex),
            (r#"["NEG-MSG","s","12 34"]"#.into(), FrameError::BadHex),
            (r#"["EOSE",""]"#.into(), FrameError::BadSubscription),
            (r#"["EOSE",5]"#.into(), FrameError::BadSubscription),
            (r#"["EOSE",["s"]]"#.into(), FrameError::BadSubscription),
            (long_sub, FrameError::BadSubscription),
            (wide_sub, FrameError::BadSubscription),
            (
                format!(r#"["EVENT",null,{EVENT}]"#),
                FrameError::BadSubscription,
            ),
            (r#"["CLOSED",1,"x"]"#.into(), FrameError::BadSubscription),
            (
                r#"["COUNT","",{"count":1}]"#.into(),
                FrameError::BadSubscription,
            ),
            (r#"["NEG-ERR","","x"]"#.into(), FrameError::BadSubscription),
        ];
        for (text, want) in cases {
            assert_eq!(relay(&text), Err(want), "{text}");
        }
        for text in [
            r#"["EVENT","s",{}]"#.to_string(),
            r#"["EVENT","s",null]"#.to_string(),
            r#"["EVENT","s","event"]"#.to_string(),
            format!(r#"["EVENT","s",{}]"#, EVENT.replace("1640839235", "-1")),
            format!(
                r#"["EVENT","s",{}]"#,
                EVENT.replace("\"sig\":\"a5", "\"sig\":\"")
            ),
            format!(
                r#"["EVENT","s",{}]"#,
                EVENT.replace("\"pubkey\":\"f8", "\"pubkey\":\"zz")
            ),
            format!(r#"["EVENT","s",{}]"#, EVENT.replace(r#""kind":4,"#, "")),
        ] {
            assert!(
                matches!(relay(&text), Err(FrameError::BadEvent(why)) if !why.is_empty() && why.chars().count() <= 120),
                "{text}"
            );
        }
        // The subscription id limit is in bytes, and 64 of them are fine.
        assert!(relay(&format!(r#"["EOSE","{}"]"#, "s".repeat(64))).is_ok());
        assert!(relay(&format!(r#"["EOSE","{}"]"#, "é".repeat(32))).is_ok());
    }

    #[test]
    fn refuses_malformed_client_frames() {
        let many = |n: usize| format!(r#"["REQ","s"{}]"#, ",{}".repeat(n));
        let cases: Vec<(String, FrameError)> = vec![
            ("[1,2".into(), FrameError::NotJson),
            (r#"{"REQ":1}"#.into(), FrameError::NotArray),
            ("[]".into(), FrameError::EmptyArray),
            (
                format!(r#"["OK","{ID}",true,""]"#),
                FrameError::UnknownType("OK".into()),
            ),
            (
                r#"["NEG-ERR","s","x"]"#.into(),
                FrameError::UnknownType("NEG-ERR".into()),
            ),
            (
                r#"[["REQ"],"s"]"#.into(),
                FrameError::UnknownType(r#"["REQ"]"#.into()),
            ),
            (r#"["EVENT"]"#.into(), arity("EVENT", 1)),
            (format!(r#"["EVENT",{EVENT},"x"]"#), arity("EVENT", 3)),
            (r#"["REQ","s"]"#.into(), arity("REQ", 2)),
            (r#"["REQ"]"#.into(), arity("REQ", 1)),
            (many(1001), arity("REQ", 1003)),
            (r#"["COUNT","s"]"#.into(), arity("COUNT", 2)),
            (r#"["CLOSE"]"#.into(), arity("CLOSE", 1)),
            (r#"["CLOSE","s","x"]"#.into(), arity("CLOSE", 3)),
            (r#"["AUTH"]"#.into(), arity("AUTH", 1)),
            (r#"["NEG-OPEN","s",{}]"#.into(), arity("NEG-OPEN", 3)),
            // The pre-NIP-77 five-element form (with an id size) is not accepted.
            (
                r#"["NEG-OPEN","s",{},32,"61"]"#.into(),
                arity("NEG-OPEN", 5),
            ),
            (r#"["NEG-MSG","s"]"#.into(), arity("NEG-MSG", 2)),
            (r#"["NEG-CLOSE"]"#.into(), arity("NEG-CLOSE", 1)),
            (r#"["NEG-CLOSE","s","x"]"#.into(), arity("NEG-CLOSE", 3)),
            (r#"["NEG-MSG","s",null]"#.into(), bad("NEG-MSG", "message")),
            (
                r#"["NEG-OPEN","s",{},61]"#.into(),
                bad("NEG-OPEN", "message"),
            ),
            (r#"["NEG-OPEN","s",{},"6"]"#.into(), FrameError::BadHex),
            (r#"["NEG-MSG","s","gg"]"#.into(), FrameError::BadHex),
            (r#"["REQ","",{}]"#.into(), FrameError::BadSubscription),
            (r#"["COUNT",null,{}]"#.into(), FrameError::BadSubscription),
            (r#"["CLOSE",7]"#.into(), FrameError::BadSubscription),
            (
                r#"["NEG-OPEN","",{},"61"]"#.into(),
                FrameError::BadSubscription,
            ),
            (r#"["NEG-CLOSE",{}]"#.into(), FrameError::BadSubscription),
        ];
        for (text, want) in cases {
            assert_eq!(client(&text), Err(want), "{text}");
        }
        for text in [
            r#"["REQ","s",5]"#,
            r#"["REQ","s",{}, []]"#,
            r#"["REQ","s",{"kinds":"x"}]"#,
            r#"["REQ","s",{"limit":-1}]"#,
            r#"["REQ","s",{"ids":["zz"]}]"#,
            r#"["COUNT","s",null]"#,
            r#"["NEG-OPEN","s",[],"61"]"#,
            r#"["NEG-OPEN","s",{"since":"yesterday"},"61"]"#,
        ] {
            assert!(
                matches!(client(text), Err(FrameError::BadFilter(why)) if why.chars().count() <= 120),
                "{text}"
            );
        }
        for text in [r#"["EVENT",{}]"#, r#"["AUTH",5]"#, r#"["AUTH",null]"#] {
            assert!(
                matches!(client(text), Err(FrameError::BadEvent(_))),
                "{text}"
            );
        }
        // Exactly the cap of filters is fine.
        assert!(
            matches!(client(&many(1000)), Ok(ClientFrame::Req { filters, .. }) if filters.len() == 1000)
        );
    }

    #[test]
    fn error_labels_and_display() {
        let errors = [
            (FrameError::TooLarge { len: 2, max: 1 }, "too-large"),
            (FrameError::NotJson, "not-json"),
            (FrameError::NotArray, "not-array"),
            (FrameError::EmptyArray, "empty"),
            (FrameError::UnknownType("X".into()), "unknown-type"),
            (arity("REQ", 2), "arity"),
            (bad("OK", "accepted"), "bad-field"),
            (FrameError::BadHex, "bad-hex"),
            (FrameError::BadEvent("e".into()), "bad-event"),
            (FrameError::BadFilter("f".into()), "bad-filter"),
            (FrameError::BadSubscription, "bad-subscription"),
        ];
        for (error, label) in errors {
            assert_eq!(error.as_str(), label);
            assert!(!error.to_string().is_empty());
        }
        assert_eq!(
            bad("OK", "accepted").to_string(),
            "OK frame with a malformed accepted"
        );
    }

    // --- property tests ---

    const TYPES: [&str; 16] = [
        "EVENT",
        "EOSE",
        "OK",
        "CLOSED",
        "NOTICE",
        "AUTH",
        "COUNT",
        "NEG-MSG",
        "NEG-ERR",
        "REQ",
        "CLOSE",
        "NEG-OPEN",
        "NEG-CLOSE",
        "",
        "event",
        "X",
    ];

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "[0-9a-fA-F]{0,66}".prop_map(Value::from),
            "\\PC{0,10}".prop_map(Value::from),
            Just(Value::from(ID)),
            Just(serde_json::from_str::<Value>(EVENT).unwrap_or_default()),
        ];
        let key = prop_oneof![
            Just("ids".to_string()),
            Just("authors".to_string()),
            Just("kinds".to_string()),
            Just("#e".to_string()),
            Just("#t".to_string()),
            Just("since".to_string()),
            Just("limit".to_string()),
            Just("search".to_string()),
            Just("count".to_string()),
            Just("tags".to_string()),
            Just("content".to_string()),
            "\\PC{0,4}",
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                vec(inner.clone(), 0..6).prop_map(Value::Array),
                btree_map(key.clone(), inner, 0..6)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    /// A JSON-ish token, for byte soup.
    fn arb_token() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "[",
                "]",
                "{",
                "}",
                ",",
                ":",
                "\"",
                "\\",
                "null",
                "true",
                "-",
                "1e999",
                "0",
                "\"EVENT\"",
                "\"REQ\"",
                "\"NEG-OPEN\"",
                "\"NEG-MSG\"",
                "\"OK\"",
                "\"COUNT\"",
                "\"count\"",
                "\"s\"",
                "\"6100\"",
                "{}",
                "[]",
                " ",
                "\u{0}",
                "\u{fffd}",
            ])
            .prop_map(String::from),
            Just(format!("\"{ID}\"")),
            Just(EVENT.to_string()),
            "\\PC{0,3}",
        ]
    }

    fn arb_subscription() -> impl Strategy<Value = String> {
        prop_oneof!["[a-zA-Z0-9:_-]{1,64}", "\\PC{1,16}"]
    }

    fn arb_text() -> impl Strategy<Value = String> {
        prop_oneof!["\\PC{0,40}", any::<String>()]
    }

    fn arb_event() -> impl Strategy<Value = Box<Event>> {
        (
            any::<[u8; 32]>(),
            1..4u8,
            any::<u32>(),
            any::<u16>(),
            vec(vec("\\PC{0,8}", 1..4), 0..4),
            arb_text(),
            (any::<[u8; 32]>(), any::<[u8; 32]>()),
        )
            .prop_map(|(id, author, created_at, kind, tags, content, (s1, s2))| {
                let mut sig = [0u8; 64];
                sig[..32].copy_from_slice(&s1);
                sig[32..].copy_from_slice(&s2);
                Box::new(Event::new(
                    EventId::from_byte_array(id),
                    pubkey(author),
                    Timestamp::from(u64::from(created_at)),
                    Kind::from(kind),
                    tags.into_iter().filter_map(|t| Tag::parse(t).ok()),
                    content,
                    Signature::from_byte_array(sig),
                ))
            })
    }

    fn arb_filter() -> impl Strategy<Value = Filter> {
        (
            vec(any::<[u8; 32]>(), 0..3),
            vec(1..4u8, 0..3),
            vec(any::<u16>(), 0..4),
            (
                proptest::option::of(any::<u32>()),
                proptest::option::of(any::<u32>()),
                proptest::option::of(any::<u32>()),
            ),
            vec((prop::char::range('a', 'z'), vec(arb_text(), 1..3)), 0..3),
            proptest::option::of(arb_text()),
        )
            .prop_map(
                |(ids, authors, kinds, (since, until, limit), tags, search)| {
                    let mut filter = Filter::new();
                    if !ids.is_empty() {
                        filter = filter.ids(ids.into_iter().map(EventId::from_byte_array));
                    }
                    if !authors.is_empty() {
                        filter = filter.authors(authors.into_iter().map(pubkey));
                    }
                    if !kinds.is_empty() {
                        filter = filter.kinds(kinds.into_iter().map(Kind::from));
                    }
                    if let Some(since) = since {
                        filter = filter.since(Timestamp::from(u64::from(since)));
                    }
                    if let Some(until) = until {
                        filter = filter.until(Timestamp::from(u64::from(until)));
                    }
                    if let Some(limit) = limit {
                        filter = filter.limit(limit as usize);
                    }
                    for (c, values) in tags {
                        filter = filter.custom_tags(letter(c), values);
                    }
                    if let Some(search) = search {
                        filter = filter.search(search);
                    }
                    filter
                },
            )
    }

    fn arb_relay_frame() -> impl Strategy<Value = RelayFrame> {
        prop_oneof![
            (arb_subscription(), arb_event()).prop_map(|(subscription, event)| RelayFrame::Event {
                subscription,
                event
            }),
            arb_subscription().prop_map(|subscription| RelayFrame::Eose { subscription }),
            (any::<[u8; 32]>(), any::<bool>(), arb_text()).prop_map(|(id, accepted, message)| {
                RelayFrame::Ok {
                    event_id: EventId::from_byte_array(id),
                    accepted,
                    message,
                }
            }),
            (arb_subscription(), arb_text()).prop_map(|(subscription, message)| {
                RelayFrame::Closed {
                    subscription,
                    message,
                }
            }),
            arb_text().prop_map(|message| RelayFrame::Notice { message }),
            arb_text().prop_map(|challenge| RelayFrame::Auth { challenge }),
            (arb_subscription(), any::<u64>()).prop_map(|(subscription, count)| {
                RelayFrame::Count {
                    subscription,
                    count,
                }
            }),
            (arb_subscription(), vec(any::<u8>(), 0..200)).prop_map(|(subscription, message)| {
                RelayFrame::NegMsg {
                    subscription,
                    message,
                }
            }),
            (arb_subscription(), arb_text()).prop_map(|(subscription, message)| {
                RelayFrame::NegErr {
                    subscription,
                    message,
                }
            }),
        ]
    }

    fn arb_client_frame() -> impl Strategy<Value = ClientFrame> {
        prop_oneof![
            arb_event().prop_map(|event| ClientFrame::Event { event }),
            (arb_subscription(), vec(arb_filter(), 1..4)).prop_map(|(subscription, filters)| {
                ClientFrame::Req {
                    subscription,
                    filters,
                }
            }),
            (arb_subscription(), vec(arb_filter(), 1..4)).prop_map(|(subscription, filters)| {
                ClientFrame::Count {
                    subscription,
                    filters,
                }
            }),
            arb_subscription().prop_map(|subscription| ClientFrame::Close { subscription }),
            arb_event().prop_map(|event| ClientFrame::Auth { event }),
            (arb_subscription(), arb_filter(), vec(any::<u8>(), 0..200)).prop_map(
                |(subscription, filter, message)| ClientFrame::NegOpen {
                    subscription,
                    filter: Box::new(filter),
                    message,
                }
            ),
            (arb_subscription(), vec(any::<u8>(), 0..200)).prop_map(|(subscription, message)| {
                ClientFrame::NegMsg {
                    subscription,
                    message,
                }
            }),
            arb_subscription().prop_map(|subscription| ClientFrame::NegClose { subscription }),
        ]
    }

    /// Parses `text` both ways; whatever parses must survive its own round trip.
    fn parse_both(text: &str) -> Result<(), TestCaseError> {
        if let Ok(frame) = parse_relay_frame(text, MAX) {
            prop_assert_eq!(parse_relay_frame(&frame.to_json(), MAX), Ok(frame));
        }
        if let Ok(frame) = parse_client_frame(text, MAX) {
            prop_assert_eq!(parse_client_frame(&frame.to_json(), MAX), Ok(frame));
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_strings_never_panic(text in any::<String>(), max in 0..64usize) {
            parse_both(&text)?;
            let _ = parse_relay_frame(&text, max);
            let _ = parse_client_frame(&text, max);
        }

        #[test]
        fn byte_soup_never_panics(tokens in vec(arb_token(), 0..40)) {
            parse_both(&tokens.concat())?;
        }

        #[test]
        fn raw_bytes_never_panic(bytes in vec(any::<u8>(), 0..300)) {
            parse_both(&String::from_utf8_lossy(&bytes))?;
        }

        #[test]
        fn json_frames_never_panic(
            kind in prop::sample::select(TYPES.to_vec()),
            rest in vec(arb_json(), 0..5),
        ) {
            let mut items = vec![Value::from(kind)];
            items.extend(rest);
            parse_both(&Value::Array(items).to_string())?;
        }

        #[test]
        fn messages_never_panic(message in arb_text()) {
            let _ = reason_class(&message);
            let _ = notice_class(&message);
            let _ = blocked_record_cap(&message);
            let _ = is_too_many_records(&message);
            let blocked = format!("blocked: too many {message}");
            prop_assert!(is_too_many_records(&blocked) || blocked.to_ascii_lowercase().contains("connection")
                || blocked.to_ascii_lowercase().contains("subscription")
                || blocked.to_ascii_lowercase().contains("concurrent")
                || blocked.to_ascii_lowercase().contains("requests")
                || blocked.to_ascii_lowercase().contains("rate")
                || blocked.to_ascii_lowercase().contains("attempts"));
            let _ = blocked_record_cap(&blocked);
        }

        #[test]
        fn relay_frames_round_trip_arbitrarily(frame in arb_relay_frame()) {
            let json = frame.to_json();
            prop_assert_eq!(parse_relay_frame(&json, MAX), Ok(frame));
        }

        #[test]
        fn client_frames_round_trip_arbitrarily(frame in arb_client_frame()) {
            let json = frame.to_json();
            prop_assert_eq!(parse_client_frame(&json, MAX), Ok(frame));
        }
    }
}
