//! One attempt as a span of the producer's trace (SPEC §15).
//!
//! The attempt's span is a `tracing` span (target
//! [`telemetry::SPAN_TARGET`]); when the process exports traces
//! (`OTEL_EXPORTER_OTLP_ENDPOINT`, set up by the binary), the
//! `tracing-opentelemetry` layer makes it an OpenTelemetry span whose
//! parent is the producer's span, and the `traceparent` sent to the
//! receiver names that span. Without export no layer wants the span, so it
//! is never built; the receiver still gets the producer's trace id with a
//! fresh span id.
//!
//! An event without a producer trace has one derived from its id
//! ([`TraceContext::of_delivery`]): its attempts share a trace whatever
//! process sends them, and whether it is sampled is decided once per trace
//! by [`DERIVED_SAMPLING`], so an event's attempts are exported together
//! or not at all.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use webhookd_core::Event;
use webhookd_core::telemetry;
use webhookd_core::trace::{self, TraceContext};
use webhookd_store::Claim;

/// The share of derived traces (events that came without a trace) that are
/// sampled, as a threshold on the trace id's last 8 bytes: `u64::MAX`
/// samples all. The binary sets it from `OTEL_TRACES_SAMPLER`.
pub static DERIVED_SAMPLING: AtomicU64 = AtomicU64::new(u64::MAX);

/// Samples `ratio` (0…1) of the traces derived from event ids.
pub fn sample_derived_traces(ratio: f64) {
    // Truncation is the intent: a threshold in the id's 64-bit space.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let threshold = if ratio >= 1.0 {
        u64::MAX
    } else if ratio <= 0.0 {
        0
    } else {
        (ratio * u64::MAX as f64) as u64
    };
    DERIVED_SAMPLING.store(threshold, Ordering::Relaxed);
}

/// The trace of an event that came without one, sampled as
/// [`DERIVED_SAMPLING`] says for its trace id.
fn derived(event_id: &str) -> TraceContext {
    let mut derived = TraceContext::of_delivery(None, event_id);
    let mut low = [0; 8];
    low.copy_from_slice(&derived.parent.trace_id[8..]);
    derived.parent.sampled = u64::from_be_bytes(low) <= DERIVED_SAMPLING.load(Ordering::Relaxed);
    derived
}

/// An attempt's span and the trace headers it sends.
pub(crate) struct AttemptSpan {
    pub(crate) span: tracing::Span,
    /// `traceparent`: the attempt's span as the receiver's parent.
    pub(crate) traceparent: String,
    pub(crate) tracestate: Option<String>,
}

impl AttemptSpan {
    /// The span of attempt `number` of `claim`, a child of its event's trace.
    pub(crate) fn start(claim: &Claim, number: u32) -> AttemptSpan {
        let delivery = &claim.delivery;
        let producer = delivery
            .trace
            .as_deref()
            .and_then(TraceContext::from_stored)
            .unwrap_or_else(|| derived(&delivery.event_id));
        let span = tracing::info_span!(
            target: telemetry::SPAN_TARGET,
            "webhook attempt",
            otel.kind = "client",
            otel.status_code = Empty,
            endpoint_id = %delivery.endpoint_id,
            tenant = %delivery.username,
            delivery_id = %delivery.delivery_id,
            event_id = %delivery.event_id,
            event_type = delivery.event_type.as_str(),
            attempt = i64::from(number),
            http.response.status_code = Empty,
            reason = Empty,
            duration_ms = Empty,
        );
        // A disabled span (no exporter) takes no parent and has no context.
        let _ = span.set_parent(remote_parent(&producer));
        let own = span.context().span().span_context().clone();
        let sent = if own.is_valid() {
            trace::TraceParent {
                trace_id: own.trace_id().to_bytes(),
                parent_id: own.span_id().to_bytes(),
                sampled: own.is_sampled(),
            }
        } else {
            producer.parent.child(trace::new_span_id())
        };
        AttemptSpan {
            span,
            traceparent: sent.to_string(),
            tracestate: producer.state,
        }
    }

    /// Records what came of the attempt on its span.
    pub(crate) fn finish(
        &self,
        status: Option<u16>,
        reason: &str,
        delivered: bool,
        took: Duration,
    ) {
        if self.span.is_disabled() {
            return;
        }
        self.span.record("reason", reason);
        self.span.record(
            "duration_ms",
            u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
        );
        if let Some(status) = status {
            self.span.record("http.response.status_code", status);
        }
        self.span
            .record("otel.status_code", if delivered { "ok" } else { "error" });
    }
}

/// `context` as the remote parent of a span.
fn remote_parent(context: &TraceContext) -> opentelemetry::Context {
    let parent = SpanContext::new(
        TraceId::from_bytes(context.parent.trace_id),
        SpanId::from_bytes(context.parent.parent_id),
        if context.parent.sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        },
        true,
        context
            .state
            .as_deref()
            .and_then(|state| state.parse::<TraceState>().ok())
            .unwrap_or_default(),
    );
    opentelemetry::Context::new().with_remote_span_context(parent)
}

/// The span of one accept (SPEC §15): the store write that makes `events`
/// durable. One event that came with a trace (HTTP ingest) is its child; a
/// batch (AMQP) is a trace of its own, its size on the span.
pub fn accept_span(events: &[Event], source: &'static str) -> tracing::Span {
    let span = tracing::info_span!(
        target: telemetry::SPAN_TARGET,
        "ingest accept",
        otel.kind = "server",
        source,
        events = i64::try_from(events.len()).unwrap_or(i64::MAX),
        event_id = Empty,
        tenant = Empty,
    );
    if let [event] = events
        && !span.is_disabled()
    {
        span.record("event_id", event.event_id.as_str());
        span.record("tenant", event.username.as_str());
        if let Some(trace) = &event.trace {
            let _ = span.set_parent(remote_parent(trace));
        }
    }
    span
}
