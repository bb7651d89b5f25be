//! W3C Trace Context (SPEC §15): the `traceparent` and `tracestate` a
//! producer sends with an event (AMQP headers, HTTP ingest headers) are
//! kept with each of its deliveries, so every attempt is a child of the
//! producer's span and the receiver continues the same trace. An event that
//! came without one gets a trace derived from its id: every delivery and
//! attempt of one event share a trace id, however many processes send
//! them.
//!
//! Parsing follows the W3C recommendation: version `00` exactly (55
//! characters), a later version by its first four fields; all-zero ids and
//! version `ff` are invalid; an invalid `traceparent` is ignored (a fresh
//! trace, as if none came) and takes its `tracestate` with it.

use std::fmt;

/// Longest `tracestate` kept (the recommendation's 32 members of at most
/// 256 bytes each could be longer; it lets a platform cut at 512).
pub const MAX_TRACESTATE_LEN: usize = 512;

/// A span's place in a trace: what `traceparent` carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    /// The span this one is a child of.
    pub parent_id: [u8; 8],
    /// The `sampled` flag: the producer recorded its span.
    pub sampled: bool,
}

impl TraceParent {
    /// Reads a `traceparent` header; `None` when it is not one.
    pub fn parse(header: &str) -> Option<TraceParent> {
        let header = header.trim();
        let version = header.get(0..2)?;
        if !is_lower_hex(version) || version == "ff" {
            return None;
        }
        // A later version may append fields after a '-'; version 00 may not.
        if header.len() < 55 || (version == "00" && header.len() != 55) {
            return None;
        }
        if header.len() > 55 && header.as_bytes()[55] != b'-' {
            return None;
        }
        let fields = header.get(..55)?;
        let bytes = fields.as_bytes();
        if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
            return None;
        }
        let trace_id: [u8; 16] = decode_hex(&fields[3..35])?;
        let parent_id: [u8; 8] = decode_hex(&fields[36..52])?;
        let [flags] = decode_hex::<1>(&fields[53..55])?;
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(TraceParent {
            trace_id,
            parent_id,
            sampled: flags & 1 == 1,
        })
    }

    /// The trace of an event that came without one: ids derived from its
    /// `event_id` (so every process derives the same), not sampled.
    pub fn derived_from(event_id: &str) -> TraceParent {
        let hash = ring::digest::digest(&ring::digest::SHA256, event_id.as_bytes());
        let hash = hash.as_ref();
        let mut trace_id = [0; 16];
        let mut parent_id = [0; 8];
        trace_id.copy_from_slice(&hash[..16]);
        parent_id.copy_from_slice(&hash[16..24]);
        // A zero id is invalid; SHA-256 giving one is not a practical case,
        // but the header must never be refused for it.
        trace_id[15] |= u8::from(trace_id == [0; 16]);
        parent_id[7] |= u8::from(parent_id == [0; 8]);
        TraceParent {
            trace_id,
            parent_id,
            sampled: false,
        }
    }

    /// The same trace, with `span_id` as the parent: what a child span
    /// sends on.
    #[must_use]
    pub fn child(&self, span_id: [u8; 8]) -> TraceParent {
        TraceParent {
            parent_id: span_id,
            ..*self
        }
    }

    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }
}

impl fmt::Display for TraceParent {
    /// The `traceparent` header, version 00.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            hex(&self.trace_id),
            hex(&self.parent_id),
            u8::from(self.sampled)
        )
    }
}

/// A producer's trace context: its `traceparent` and, when it sent one
/// alongside, its `tracestate` (passed on as it came).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    pub parent: TraceParent,
    pub state: Option<String>,
}

impl TraceContext {
    /// From the two headers; `None` unless `traceparent` is valid. A
    /// `tracestate` longer than [`MAX_TRACESTATE_LEN`] or with characters
    /// a header cannot carry is dropped.
    pub fn from_headers(traceparent: Option<&str>, tracestate: Option<&str>) -> Option<Self> {
        let parent = TraceParent::parse(traceparent?)?;
        let state = tracestate
            .map(str::trim)
            .filter(|state| {
                !state.is_empty()
                    && state.len() <= MAX_TRACESTATE_LEN
                    && state.bytes().all(|b| (b' '..=b'~').contains(&b))
            })
            .map(str::to_owned);
        Some(TraceContext { parent, state })
    }

    /// As a store keeps it: `traceparent`, then `\n` and `tracestate`.
    pub fn to_stored(&self) -> String {
        match &self.state {
            Some(state) => format!("{}\n{state}", self.parent),
            None => self.parent.to_string(),
        }
    }

    /// What [`TraceContext::to_stored`] wrote; `None` for anything else.
    pub fn from_stored(stored: &str) -> Option<Self> {
        let (parent, state) = match stored.split_once('\n') {
            Some((parent, state)) => (parent, Some(state)),
            None => (stored, None),
        };
        TraceContext::from_headers(Some(parent), state)
    }

    /// The context of an event that came without one: derived from its
    /// id ([`TraceParent::derived_from`]), no state.
    pub fn derived(event_id: &str) -> Self {
        TraceContext {
            parent: TraceParent::derived_from(event_id),
            state: None,
        }
    }
}

fn is_lower_hex(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn decode_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N || !is_lower_hex(text) {
        return None;
    }
    let mut out = [0; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_recommendations_example_reads_and_writes_back() {
        let parent = TraceParent::parse(EXAMPLE).unwrap();
        assert_eq!(parent.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(parent.sampled);
        assert_eq!(parent.to_string(), EXAMPLE);
        let child = parent.child([1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(
            child.to_string(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0102030405060708-01"
        );
    }

    #[test]
    fn invalid_headers_are_none() {
        for header in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(header), None, "{header:?}");
        }
        // A later version keeps its first four fields.
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-whatever";
        assert!(TraceParent::parse(later).is_some());
    }

    #[test]
    fn a_context_is_stored_and_read_back_with_its_state() {
        let context =
            TraceContext::from_headers(Some(EXAMPLE), Some("congo=t61rcWkgMzE, rojo=00f067aa"))
                .unwrap();
        let stored = context.to_stored();
        assert_eq!(TraceContext::from_stored(&stored), Some(context));
        let too_long = "k=".to_owned() + &"v".repeat(600);
        let kept = TraceContext::from_headers(Some(EXAMPLE), Some(&too_long)).unwrap();
        assert_eq!(kept.state, None);
        assert_eq!(TraceContext::from_headers(Some("nope"), Some("a=b")), None);
    }

    #[test]
    fn an_event_without_a_trace_gets_one_derived_from_its_id() {
        let one = TraceContext::derived("evt_1");
        assert_eq!(one, TraceContext::derived("evt_1"));
        assert_ne!(
            one.parent.trace_id,
            TraceContext::derived("evt_2").parent.trace_id
        );
        assert!(TraceParent::parse(&one.parent.to_string()).is_some());
        assert!(
            !one.parent.sampled,
            "webhookd's own trace: the sampler decides"
        );
    }
}
