//! One attempt as a span of the producer's trace (SPEC §15).
//!
//! The attempt's span is a `tracing` span (target
//! [`telemetry::SPAN_TARGET`]); when the process exports traces
//! (`OTEL_EXPORTER_OTLP_ENDPOINT`, set up by the binary), the
//! `tracing-opentelemetry` layer makes it an OpenTelemetry span whose
//! parent is the producer's span, and the `traceparent` sent to the
//! receiver names that span. The sampling decision is taken here, before
//! the span is built, with the sampler the binary configured
//! ([`configure_sampling`]): a span that will not be exported is never
//! built, so 1% sampling costs about 1% of the spans. Without export no
//! span is built at all; the receiver still gets the producer's trace id
//! with a fresh span id.
//!
//! An event without a producer trace has one derived from its id
//! ([`TraceContext::derived`]): its attempts share a trace whatever
//! process sends them, and the sampler's ratio decides once per trace, so
//! an event's attempts are exported together or not at all.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use webhookd_core::Event;
use webhookd_core::telemetry;
use webhookd_core::trace::{TraceContext, TraceParent};
use webhookd_store::Claim;

/// How this process samples: off (no exporter) until the binary says.
struct Sampling {
    exporting: AtomicBool,
    /// A producer's sampled flag decides (the `parentbased_*` samplers).
    parent_based: AtomicBool,
    /// The share of other traces sampled, as a threshold on the trace id's
    /// last 8 bytes (`u64::MAX`: all).
    threshold: AtomicU64,
}

static SAMPLING: Sampling = Sampling {
    exporting: AtomicBool::new(false),
    parent_based: AtomicBool::new(true),
    threshold: AtomicU64::new(u64::MAX),
};

/// Spans are exported, sampled as `OTEL_TRACES_SAMPLER` says: a
/// producer's decision when `parent_based`, else (and for traces of
/// webhookd's own) `ratio` (0…1) of trace ids.
pub fn configure_sampling(parent_based: bool, ratio: f64) {
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
    SAMPLING.parent_based.store(parent_based, Ordering::Relaxed);
    SAMPLING.threshold.store(threshold, Ordering::Relaxed);
    SAMPLING.exporting.store(true, Ordering::Release);
}

/// Whether a trace of this id falls in the sampled share.
fn in_ratio(trace_id: &[u8; 16]) -> bool {
    let mut low = [0; 8];
    low.copy_from_slice(&trace_id[8..]);
    u64::from_be_bytes(low) <= SAMPLING.threshold.load(Ordering::Relaxed)
}

/// Whether a span in `context`'s trace is exported: `from_producer` says
/// the context came with the event (its flag is the producer's decision).
fn sampled(context: &TraceContext, from_producer: bool) -> bool {
    if !SAMPLING.exporting.load(Ordering::Acquire) {
        return false;
    }
    if from_producer && SAMPLING.parent_based.load(Ordering::Relaxed) {
        context.parent.sampled
    } else {
        in_ratio(&context.parent.trace_id)
    }
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
        let stored = delivery
            .trace
            .as_deref()
            .and_then(TraceContext::from_stored);
        let from_producer = stored.is_some();
        let mut producer = stored.unwrap_or_else(|| TraceContext::derived(&delivery.event_id));
        let record = sampled(&producer, from_producer);
        // An exporting process passes on its own decision; one that is not
        // passes on the producer's.
        if SAMPLING.exporting.load(Ordering::Acquire) {
            producer.parent.sampled = record;
        }
        let span = if record {
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
            let _ = span.set_parent(remote_parent(&producer));
            span
        } else {
            tracing::Span::none()
        };
        let own = if record {
            span.context().span().span_context().clone()
        } else {
            SpanContext::empty_context()
        };
        let sent = if own.is_valid() {
            TraceParent {
                trace_id: own.trace_id().to_bytes(),
                parent_id: own.span_id().to_bytes(),
                sampled: own.is_sampled(),
            }
        } else {
            // Not a secret: the thread's generator, no system call per attempt.
            producer
                .parent
                .child(rand::random::<u64>().max(1).to_be_bytes())
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
            i64::try_from(took.as_millis()).unwrap_or(i64::MAX),
        );
        if let Some(status) = status {
            self.span
                .record("http.response.status_code", i64::from(status));
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
    let traced = match events {
        [event] => event.trace.as_ref(),
        _ => None,
    };
    // A trace of webhookd's own (a batch, an untraced event) is sampled by
    // the SDK's root sampler; a producer's as the producer decided.
    let wanted = match traced {
        Some(trace) => sampled(trace, true),
        None => SAMPLING.exporting.load(Ordering::Acquire),
    };
    if !wanted {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        target: telemetry::SPAN_TARGET,
        "ingest accept",
        otel.kind = "server",
        source,
        events = i64::try_from(events.len()).unwrap_or(i64::MAX),
        event_id = Empty,
        tenant = Empty,
    );
    if let [event] = events {
        span.record("event_id", event.event_id.as_str());
        span.record("tenant", event.username.as_str());
    }
    if let Some(trace) = traced {
        let _ = span.set_parent(remote_parent(trace));
    }
    span
}
