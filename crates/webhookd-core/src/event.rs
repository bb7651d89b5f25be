//! The event message producers send (SPEC §5) and the body receivers get
//! (SPEC §3).
//!
//! Parsing is strict and every rejection is a [`Rejection`] with a bounded
//! [`Rejection::code`] (for the dead-letter header and metric labels) and a
//! readable message that names the field. The producer's `data` object is
//! kept as the exact JSON text it sent, only with insignificant whitespace
//! removed, so numbers, key order and escapes reach the receiver unchanged.

use std::fmt;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::catalog::EventType;
use crate::ids::{derived_event_id, new_event_id};
use crate::ordering::MAX_ORDERING_KEY_LEN;
use crate::trace::TraceContext;

/// Largest event message accepted on any ingest path.
pub const MAX_EVENT_BYTES: usize = 256 * 1024;
/// Longest `event_id` a producer may give.
pub const MAX_EVENT_ID_LEN: usize = 128;
/// Longest username.
pub const MAX_USERNAME_LEN: usize = 128;
/// Deepest nesting of objects and arrays in a message (the message object
/// itself is level 1; SPEC §5).
pub const MAX_NESTING: usize = 64;
/// Latest accepted timestamp (9999-12-31T23:59:59Z): guards against
/// milliseconds sent where seconds are expected.
pub const MAX_TIMESTAMP: i64 = 253_402_300_799;

/// A validated event, ready to fan out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The producer's `event_id`, or one webhookd assigned.
    pub event_id: String,
    pub event_type: EventType,
    /// Owner of the endpoints this event goes to.
    pub username: String,
    /// Unix seconds of the event (the producer's, or arrival time).
    pub timestamp: i64,
    /// The producer's `data` object as compact JSON text.
    pub data: String,
    /// The producer's trace context (SPEC §15), from the message's or the
    /// request's `traceparent` / `tracestate` headers.
    pub trace: Option<TraceContext>,
    /// The producer's `ordering_key` (SPEC §15): the line of its deliveries
    /// to an ordered endpoint that names no pointer of its own.
    pub ordering_key: Option<String>,
}

/// Why an event message was refused. Each variant is a reason an operator
/// can act on; [`Rejection::code`] is its stable, bounded name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    TooLarge {
        bytes: usize,
    },
    NotJson {
        detail: String,
    },
    NotAnObject,
    MissingField {
        field: &'static str,
    },
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    UnknownEventType {
        name: String,
    },
    /// `data` does not match the JSON Schema of its event type (SPEC §12).
    SchemaMismatch {
        event: String,
        /// Where in the message, e.g. `data/amount`.
        path: String,
        reason: String,
    },
    InvalidUsername,
    InvalidEventId,
    InvalidTimestamp,
    /// The message nests objects and arrays deeper than [`MAX_NESTING`].
    TooDeep,
}

impl Rejection {
    /// Every [`Rejection::code`], for metrics that list reasons up front.
    pub const CODES: &'static [&'static str] = &[
        "too_large",
        "not_json",
        "not_an_object",
        "missing_field",
        "wrong_type",
        "unknown_event_type",
        "schema_mismatch",
        "invalid_username",
        "invalid_event_id",
        "invalid_timestamp",
        "too_deep",
    ];

    /// A short, stable name for this reason: the `x-webhookd-error` header
    /// starts with it and metrics use it as a label.
    pub const fn code(&self) -> &'static str {
        match self {
            Rejection::TooLarge { .. } => "too_large",
            Rejection::NotJson { .. } => "not_json",
            Rejection::NotAnObject => "not_an_object",
            Rejection::MissingField { .. } => "missing_field",
            Rejection::WrongType { .. } => "wrong_type",
            Rejection::UnknownEventType { .. } => "unknown_event_type",
            Rejection::SchemaMismatch { .. } => "schema_mismatch",
            Rejection::InvalidUsername => "invalid_username",
            Rejection::InvalidEventId => "invalid_event_id",
            Rejection::InvalidTimestamp => "invalid_timestamp",
            Rejection::TooDeep => "too_deep",
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::TooLarge { bytes } => {
                write!(
                    f,
                    "message is {bytes} bytes, the limit is {MAX_EVENT_BYTES}"
                )
            }
            Rejection::NotJson { detail } => write!(f, "message is not valid JSON: {detail}"),
            Rejection::NotAnObject => f.write_str("message must be a JSON object"),
            Rejection::MissingField { field } => write!(f, "{field} is required"),
            Rejection::WrongType { field, expected } => write!(f, "{field} must be {expected}"),
            Rejection::UnknownEventType { name } => {
                write!(
                    f,
                    "event {name:?} is not a known event type (see GET /v2/events)"
                )
            }
            Rejection::SchemaMismatch {
                event,
                path,
                reason,
            } => write!(
                f,
                "{path} does not match the schema of event type {event:?}: {reason}"
            ),
            Rejection::InvalidUsername => write!(
                f,
                "username must be 1-{MAX_USERNAME_LEN} characters of letters, digits and . _ @ + -"
            ),
            Rejection::InvalidEventId => write!(
                f,
                "event_id must be 1-{MAX_EVENT_ID_LEN} characters of letters, digits, _ and -"
            ),
            Rejection::InvalidTimestamp => {
                write!(
                    f,
                    "timestamp must be whole unix seconds between 0 and {MAX_TIMESTAMP}"
                )
            }
            Rejection::TooDeep => write!(
                f,
                "message nests objects and arrays more than {MAX_NESTING} levels deep: most \
                 receivers could not parse it"
            ),
        }
    }
}

impl std::error::Error for Rejection {}

/// The message as it arrives: every field optional and untyped, so that a
/// missing or mistyped field gets its own precise rejection.
#[derive(Deserialize)]
struct WireMessage<'a> {
    #[serde(borrow)]
    event: Option<&'a RawValue>,
    #[serde(borrow)]
    username: Option<&'a RawValue>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    #[serde(borrow)]
    event_id: Option<&'a RawValue>,
    #[serde(borrow)]
    timestamp: Option<&'a RawValue>,
    #[serde(borrow)]
    ordering_key: Option<&'a RawValue>,
}

/// Where the id of an event that came without `event_id` comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingId<'a> {
    /// A fresh random id: the message is handed over once (HTTP, whose
    /// producer sees the id in the answer).
    Random,
    /// An id derived from the message itself, the same on every redelivery
    /// (RabbitMQ, SPEC §5): its `message_id` property when the producer set
    /// one, else its body.
    Derived { message_id: Option<&'a str> },
}

impl Event {
    /// Parses and validates one event message. `now` (unix seconds) becomes
    /// the timestamp when the message has none; an event without an id
    /// gets a random one.
    pub fn parse(message: &[u8], now: i64) -> Result<Event, Rejection> {
        Event::parse_with(message, now, MissingId::Random)
    }

    /// [`Event::parse`], with the id of an event without `event_id` taken
    /// from `missing_id`.
    pub fn parse_with(
        message: &[u8],
        now: i64,
        missing_id: MissingId<'_>,
    ) -> Result<Event, Rejection> {
        if message.len() > MAX_EVENT_BYTES {
            return Err(Rejection::TooLarge {
                bytes: message.len(),
            });
        }
        let text = std::str::from_utf8(message).map_err(|e| Rejection::NotJson {
            detail: e.to_string(),
        })?;
        // Before any parser recurses into it.
        if nesting_depth(text) > MAX_NESTING {
            return Err(Rejection::TooDeep);
        }
        // serde would happily read a struct from a JSON array; refuse that
        // (and scalars) before deserializing.
        let first = text.trim_start().chars().next();
        let wire: WireMessage<'_> = serde_json::from_str(text).map_err(|e| {
            if first.is_some_and(|c| c != '{') && !e.is_syntax() && !e.is_eof() {
                Rejection::NotAnObject
            } else {
                Rejection::NotJson {
                    detail: e.to_string(),
                }
            }
        })?;
        if first != Some('{') {
            return Err(Rejection::NotAnObject);
        }

        let event_name = required_string(wire.event, "event")?;
        // Only the name's syntax here; whether the catalog knows it (and its
        // schema) is the catalog's check, made by ingest.
        let event_type = EventType::new(&event_name).map_err(|_| Rejection::UnknownEventType {
            name: event_name.chars().take(64).collect(),
        })?;

        let username = required_string(wire.username, "username")?;
        if !is_valid_username(&username) {
            return Err(Rejection::InvalidUsername);
        }

        let data = wire.data.ok_or(Rejection::MissingField { field: "data" })?;
        if !data.get().starts_with('{') {
            return Err(Rejection::WrongType {
                field: "data",
                expected: "a JSON object",
            });
        }

        if let Some(escape) = lone_surrogate(data.get()) {
            return Err(Rejection::NotJson {
                detail: format!(
                    "data holds {escape}, half of a UTF-16 pair with no other half: \
                     not a character, and strict JSON parsers refuse it"
                ),
            });
        }

        if let Some(number) = out_of_range_number(data.get()) {
            return Err(Rejection::NotJson {
                detail: format!(
                    "data holds the number {}, beyond what a 64-bit float holds: strict \
                     JSON parsers (Go, serde_json) refuse it",
                    number.chars().take(32).collect::<String>()
                ),
            });
        }

        let event_id = match optional(wire.event_id) {
            None => match missing_id {
                MissingId::Random => new_event_id(),
                // A valid message_id is the producer's own name for the
                // event; any other is hashed into the id format.
                MissingId::Derived {
                    message_id: Some(id),
                } if is_valid_event_id(id) => id.to_owned(),
                MissingId::Derived {
                    message_id: Some(id),
                } => derived_event_id(id.as_bytes()),
                MissingId::Derived { message_id: None } => derived_event_id(message),
            },
            Some(raw) => {
                let id: String =
                    serde_json::from_str(raw.get()).map_err(|_| Rejection::WrongType {
                        field: "event_id",
                        expected: "a string",
                    })?;
                if !is_valid_event_id(&id) {
                    return Err(Rejection::InvalidEventId);
                }
                id
            }
        };

        let timestamp = match optional(wire.timestamp) {
            None => now,
            Some(raw) => {
                let seconds: i64 =
                    serde_json::from_str(raw.get()).map_err(|_| Rejection::InvalidTimestamp)?;
                if !(0..=MAX_TIMESTAMP).contains(&seconds) {
                    return Err(Rejection::InvalidTimestamp);
                }
                seconds
            }
        };

        Ok(Event {
            event_id,
            event_type,
            username,
            timestamp,
            data: compact_json(data.get()),
            trace: None,
            ordering_key: ordering_key(wire.ordering_key)?,
        })
    }

    /// The synthetic event of a test delivery (SPEC §8): a fresh id, `now`
    /// as its time, and `data` = `{"test":true}`.
    pub fn test(username: &str, event_type: EventType, now: i64) -> Event {
        Event {
            event_id: new_event_id(),
            event_type,
            username: username.to_owned(),
            timestamp: now,
            data: r#"{"test":true}"#.to_owned(),
            trace: None,
            ordering_key: None,
        }
    }

    /// The event with the producer's trace context.
    #[must_use]
    pub fn with_trace(self, trace: Option<TraceContext>) -> Event {
        Event { trace, ..self }
    }

    /// The exact bytes every attempt POSTs (SPEC §3): compact JSON with the
    /// keys in the order `event_id`, `event`, `timestamp`, `data` — or, for
    /// the operator's own events (SPEC §15), `type`, `timestamp`, `data`.
    pub fn body(&self) -> String {
        if self.username == crate::operator::OPERATOR_USERNAME {
            return format!(
                "{{\"type\":\"{}\",\"timestamp\":{},\"data\":{}}}",
                self.event_type.as_str(),
                self.timestamp,
                self.data
            );
        }
        let event_id = serde_json::to_string(&self.event_id).expect("a string always serializes");
        let event = self.event_type.as_str();
        let mut body = String::with_capacity(64 + event_id.len() + event.len() + self.data.len());
        body.push_str("{\"event_id\":");
        body.push_str(&event_id);
        body.push_str(",\"event\":\"");
        body.push_str(event);
        body.push_str("\",\"timestamp\":");
        body.push_str(&self.timestamp.to_string());
        body.push_str(",\"data\":");
        body.push_str(&self.data);
        body.push('}');
        body
    }
}

/// A JSON `null` counts as absent for the optional fields.
fn optional(raw: Option<&RawValue>) -> Option<&RawValue> {
    raw.filter(|raw| raw.get() != "null")
}

/// An event's own `ordering_key` (SPEC §15): absent, or a string of
/// 1–[`MAX_ORDERING_KEY_LEN`] characters.
fn ordering_key(raw: Option<&RawValue>) -> Result<Option<String>, Rejection> {
    let Some(raw) = optional(raw) else {
        return Ok(None);
    };
    match serde_json::from_str::<String>(raw.get()) {
        Ok(key) if (1..=MAX_ORDERING_KEY_LEN).contains(&key.chars().count()) => Ok(Some(key)),
        _ => Err(Rejection::WrongType {
            field: "ordering_key",
            // MAX_ORDERING_KEY_LEN (a &'static str cannot be formatted).
            expected: "a string of 1-256 characters",
        }),
    }
}

fn required_string(raw: Option<&RawValue>, field: &'static str) -> Result<String, Rejection> {
    let raw = optional(raw).ok_or(Rejection::MissingField { field })?;
    let value: String = serde_json::from_str(raw.get()).map_err(|_| Rejection::WrongType {
        field,
        expected: "a string",
    })?;
    if value.is_empty() {
        return Err(Rejection::MissingField { field });
    }
    Ok(value)
}

/// Usernames are the owner key everywhere (API keys, endpoints, store keys),
/// so they are restricted to characters that are safe in all of them.
pub fn is_valid_username(name: &str) -> bool {
    (1..=MAX_USERNAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@+-".contains(&b))
}

/// Event ids: 1-128 characters of letters, digits, `_` and `-`.
pub fn is_valid_event_id(id: &str) -> bool {
    (1..=MAX_EVENT_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// How deep objects and arrays nest in `json`: brackets outside strings,
/// counted without recursion (the text may not be valid JSON yet).
fn nesting_depth(json: &str) -> usize {
    let (mut depth, mut deepest) = (0_usize, 0_usize);
    let (mut in_string, mut escaped) = (false, false);
    for byte in json.bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Removes the whitespace between tokens of valid JSON text, leaving strings
/// (and so every escape and number) byte-for-byte as they were.
/// The first `\uXXXX` escape in `json` that is a UTF-16 surrogate without
/// its other half. JSON's grammar allows one, but it encodes no character:
/// serde_json, Go and Java refuse such a body, so a receiver could never
/// read the delivery (found by fuzzing). `json` is valid JSON, so every
/// backslash is inside a string and starts an escape.
fn lone_surrogate(json: &str) -> Option<&str> {
    let bytes = json.as_bytes();
    let unit_at = |at: usize| -> Option<u16> {
        let hex = json.get(at + 2..at + 6)?;
        (bytes.get(at..at + 2) == Some(b"\\u".as_slice()))
            .then(|| u16::from_str_radix(hex, 16).ok())
            .flatten()
    };
    let mut at = 0;
    // `get`: a backslash ending the text (never in valid JSON) ends the scan.
    while let Some(offset) = bytes
        .get(at..)
        .and_then(|rest| rest.iter().position(|&b| b == b'\\'))
    {
        at += offset;
        match unit_at(at) {
            Some(0xD800..=0xDBFF) if matches!(unit_at(at + 6), Some(0xDC00..=0xDFFF)) => at += 12,
            Some(0xD800..=0xDFFF) => return json.get(at..at + 6),
            Some(_) => at += 6,
            None => at += 2,
        }
    }
    None
}

/// The first number in `json` (valid JSON) too large for a 64-bit float,
/// such as `1e400`: JSON's grammar allows it, but serde_json and Go refuse
/// the body, so a receiver could never read the delivery (found by
/// fuzzing). Only a number with an exponent or over 300 digits can be.
fn out_of_range_number(json: &str) -> Option<&str> {
    let bytes = json.as_bytes();
    let (mut at, mut in_string, mut escaped) = (0, false, false);
    while let Some(&byte) = bytes.get(at) {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            at += 1;
        } else if byte == b'"' {
            in_string = true;
            at += 1;
        } else if byte == b'-' || byte.is_ascii_digit() {
            let end = bytes[at..]
                .iter()
                .position(|b| !matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
                .map_or(bytes.len(), |length| at + length);
            let number = json.get(at..end)?;
            let suspect = number.len() > 300 || number.contains(['e', 'E']);
            if suspect && number.parse::<f64>().is_ok_and(f64::is_infinite) {
                return Some(number);
            }
            at = end;
        } else {
            at += 1;
        }
    }
    None
}

fn compact_json(json: &str) -> String {
    if !json
        .bytes()
        .any(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
    {
        return json.to_owned();
    }
    let mut out = String::with_capacity(json.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in json.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests;
