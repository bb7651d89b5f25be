//! W3C Trace Context end to end (SPEC §15): a producer's `traceparent` and
//! `tracestate` — on the HTTP ingest request or the AMQP message — travel
//! with the event through the store, and every attempt carries them on to
//! the receiver as a child of the producer's span; an event without one
//! gets a trace of its own, the same for all its attempts.

// In tests a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::{Value, json};
use webhookd_core::trace::TraceParent;
use webhookd_testkit::receiver::{Answer, Received, Receiver};
use webhookd_testkit::{Service, require};

mod support;
use support::*;

const PRODUCER: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
const STATE: &str = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE";
const INGEST_TOKEN: &str = "whi_tracing_test_token_0123456789";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// A webhookd on `store` that takes HTTP ingest and may send to loopback.
fn server(store: &str, extra: &[(&str, &str)]) -> Server {
    let mut command = webhookd(store);
    command
        .env("WEBHOOKD_INGEST_TOKEN", INGEST_TOKEN)
        .env("WEBHOOKD_REQUIRE_HTTPS", "false")
        .env("WEBHOOKD_ALLOWED_NETWORKS", "127.0.0.0/8")
        .env("WEBHOOKD_RETRY_SCHEDULE", "1s");
    for (name, value) in extra {
        command.env(name, value);
    }
    Server::start_with(command)
}

fn ingest(server: &Server, event_id: &str, trace: Option<(&str, &str)>) {
    let mut request = reqwest::blocking::Client::new()
        .post(format!("{}/internal/events", server.base))
        .bearer_auth(INGEST_TOKEN)
        .body(
            json!({"event": "generated_video_success", "username": "tracer",
                   "event_id": event_id, "data": {}})
            .to_string(),
        );
    if let Some((parent, state)) = trace {
        request = request
            .header("traceparent", parent)
            .header("tracestate", state);
    }
    assert_eq!(request.send().unwrap().status(), 202);
}

fn traceparent(received: &Received) -> TraceParent {
    let header = received
        .headers
        .get("traceparent")
        .unwrap()
        .to_str()
        .unwrap();
    TraceParent::parse(header).unwrap_or_else(|| panic!("not a traceparent: {header:?}"))
}

fn event_id(received: &Received) -> String {
    let body: Value = serde_json::from_slice(&received.body).unwrap();
    body["event_id"].as_str().unwrap().to_owned()
}

/// The producer's trace reaches every attempt — the first, refused, and
/// its retry — each a new child span; an event without one gets one trace
/// for all its attempts.
fn the_producers_trace_reaches_every_attempt(store: &str) {
    let runtime = runtime();
    let receiver = runtime.block_on(Receiver::scripted(
        vec![Answer::Status(503), Answer::Status(503)],
        Answer::Status(200),
    ));
    let key = add_user(store, "tracer");
    let server = server(store, &[]);
    create_endpoint(&server, &key, &receiver.url);
    ingest(&server, "evt_traced", Some((PRODUCER, STATE)));
    ingest(&server, "evt_untraced", None);
    let arrived = runtime.block_on(receiver.wait_for(4, Duration::from_secs(20)));
    assert_eq!(arrived.len(), 4, "{}", server.log());

    let producer = TraceParent::parse(PRODUCER).unwrap();
    let traced: Vec<&Received> = arrived
        .iter()
        .filter(|r| event_id(r) == "evt_traced")
        .collect();
    assert_eq!(traced.len(), 2, "first attempt refused, then its retry");
    for received in &traced {
        let sent = traceparent(received);
        assert_eq!(sent.trace_id, producer.trace_id);
        assert_ne!(sent.parent_id, producer.parent_id, "the attempt's own span");
        assert!(sent.sampled, "the producer's sampling decision is kept");
        assert_eq!(received.headers.get("tracestate").unwrap(), STATE);
    }
    assert_ne!(
        traceparent(traced[0]).parent_id,
        traceparent(traced[1]).parent_id
    );

    let untraced: Vec<TraceParent> = arrived
        .iter()
        .filter(|r| event_id(r) == "evt_untraced")
        .map(traceparent)
        .collect();
    assert_eq!(untraced.len(), 2);
    assert_eq!(untraced[0].trace_id, untraced[1].trace_id);
    assert_ne!(untraced[0].trace_id, producer.trace_id);
    assert!(
        arrived
            .iter()
            .filter(|r| event_id(r) == "evt_untraced")
            .all(|r| r.headers.get("tracestate").is_none())
    );
}

#[test]
fn sqlite_the_producers_trace_reaches_every_attempt() {
    let dir = tempfile::tempdir().unwrap();
    the_producers_trace_reaches_every_attempt(&sqlite_store(&dir));
}

#[test]
fn redis_the_producers_trace_reaches_every_attempt() {
    let Some(url) = require(Service::Redis) else {
        return;
    };
    the_producers_trace_reaches_every_attempt(&url);
}

/// Every span in the OTLP/JSON export requests `collector` received.
fn exported_spans(collector: &Receiver) -> Vec<Value> {
    collector
        .received()
        .iter()
        .filter_map(|request| serde_json::from_slice::<Value>(&request.body).ok())
        .flat_map(|export| {
            let mut spans = Vec::new();
            for resource in export["resourceSpans"].as_array().into_iter().flatten() {
                for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                    spans.extend(scope["spans"].as_array().into_iter().flatten().cloned());
                }
            }
            spans
        })
        .collect()
}

/// An attribute's value as text (OTLP/JSON writes integers as strings too).
fn attribute(span: &Value, key: &str) -> Option<String> {
    let value = &span["attributes"]
        .as_array()?
        .iter()
        .find(|attribute| attribute["key"] == key)?["value"];
    ["stringValue", "intValue"]
        .iter()
        .find_map(|kind| value[kind].as_str())
        .map(str::to_owned)
}

/// A webhookd on SQLite exporting its spans (OTLP/HTTP-JSON, every 100 ms)
/// to `collector`, with one endpoint at `receiver`.
struct Exporting {
    runtime: tokio::runtime::Runtime,
    receiver: Receiver,
    collector: Receiver,
    server: Server,
    _dir: tempfile::TempDir,
}

impl Exporting {
    fn start() -> Exporting {
        let runtime = runtime();
        let receiver = runtime.block_on(Receiver::start(Answer::Status(204)));
        let collector = runtime.block_on(Receiver::start(Answer::Status(200)));
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite_store(&dir);
        let key = add_user(&store, "tracer");
        let traces = collector.url.replace("/webhook", "/v1/traces");
        let server = server(
            &store,
            &[
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", traces.as_str()),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
                ("OTEL_BSP_SCHEDULE_DELAY", "100"),
                ("OTEL_SERVICE_NAME", "webhookd-under-test"),
            ],
        );
        create_endpoint(&server, &key, &receiver.url);
        Exporting {
            runtime,
            receiver,
            collector,
            server,
            _dir: dir,
        }
    }
}

/// SPEC §15: with `OTEL_EXPORTER_OTLP_*` set, the spans of one event
/// published with a `traceparent` reach an OTLP/HTTP collector: the
/// attempt's span is a child of the producer's and is the parent the
/// receiver was told of; the accept, with its store call under it, is in
/// the same trace.
#[test]
fn spans_are_exported_over_otlp_with_the_producer_as_parent() {
    let Exporting {
        runtime,
        receiver,
        collector,
        server,
        _dir,
    } = Exporting::start();
    ingest(&server, "evt_exported", Some((PRODUCER, STATE)));
    let arrived = runtime.block_on(receiver.wait_for(1, Duration::from_secs(10)));
    assert_eq!(arrived.len(), 1, "{}", server.log());
    let sent = traceparent(&arrived[0]);

    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let named =
        |spans: &[Value], name: &str| spans.iter().find(|span| span["name"] == name).cloned();
    let spans = loop {
        let spans = exported_spans(&collector);
        if named(&spans, "webhook attempt").is_some() && named(&spans, "ingest accept").is_some() {
            break spans;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no attempt and accept spans reached the collector; it got {} requests: {:?}\n{}",
            collector.count(),
            spans,
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let producer_trace = "0af7651916cd43dd8448eb211c80319c";
    let producer_span = "b7ad6b7169203331";

    let attempt = named(&spans, "webhook attempt").unwrap();
    assert_eq!(attempt["traceId"], producer_trace, "{attempt}");
    assert_eq!(attempt["parentSpanId"], producer_span, "{attempt}");
    // traceparent = 00-<trace id>-<parent id>-<flags>.
    let sent_parent = &sent.to_string()[36..52];
    assert_eq!(
        attempt["spanId"], sent_parent,
        "the receiver's parent is the attempt"
    );
    assert_eq!(
        sent.trace_id,
        TraceParent::parse(PRODUCER).unwrap().trace_id
    );
    assert_eq!(attempt["kind"], 3, "a client span: {attempt}");
    assert_eq!(
        attribute(&attempt, "http.response.status_code").as_deref(),
        Some("204"),
        "{attempt}"
    );
    assert_eq!(attribute(&attempt, "tenant").as_deref(), Some("tracer"));
    assert_eq!(attribute(&attempt, "reason").as_deref(), Some("ok"));
    assert!(attribute(&attempt, "endpoint_id").is_some(), "{attempt}");

    let accept = named(&spans, "ingest accept").unwrap();
    assert_eq!(accept["traceId"], producer_trace, "{accept}");
    assert_eq!(accept["parentSpanId"], producer_span, "{accept}");
    let store_calls: Vec<&Value> = spans
        .iter()
        .filter(|span| span["parentSpanId"] == accept["spanId"])
        .collect();
    assert!(
        store_calls
            .iter()
            .any(|span| span["name"] == "accept_and_claim" || span["name"] == "accept_events"),
        "the accept's store call is its child: {spans:?}"
    );
    let resource = collector
        .received()
        .iter()
        .filter_map(|request| serde_json::from_slice::<Value>(&request.body).ok())
        .map(|export| export["resourceSpans"][0]["resource"].to_string())
        .next()
        .unwrap();
    assert!(resource.contains("webhookd-under-test"), "{resource}");
}

/// A bad `OTEL_*` setting stops `serve` at start with exit 2 and a message
/// naming it, as a bad `WEBHOOKD_*` one does.
#[test]
fn a_bad_otel_setting_stops_the_start_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(&dir);
    add_user(&store, "tracer");
    for (name, value, words) in [
        (
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "grpc",
            "OTEL_EXPORTER_OTLP_PROTOCOL: \"grpc\" is not supported",
        ),
        (
            "OTEL_TRACES_SAMPLER",
            "sometimes",
            "OTEL_TRACES_SAMPLER: \"sometimes\" is not one of",
        ),
        (
            "OTEL_TRACES_SAMPLER_ARG",
            "2",
            "OTEL_TRACES_SAMPLER_ARG: \"2\" is not a ratio",
        ),
    ] {
        let mut command = webhookd(&store);
        command
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
            .env("OTEL_TRACES_SAMPLER", "traceidratio")
            .env(name, value)
            .arg("serve");
        let output = run(command);
        assert_eq!(output.status.code(), Some(2), "{name}={value}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(words), "{name}={value}: {stderr}");
    }
}

/// A producer that did not sample its trace is followed by the default
/// (`parentbased_*`) sampler: no attempt span is exported and the receiver
/// is told the trace is not sampled; one it did sample is exported.
#[test]
fn a_producers_sampling_decision_is_followed() {
    let Exporting {
        runtime,
        receiver,
        collector,
        server,
        _dir,
    } = Exporting::start();
    let unsampled = "00-1af7651916cd43dd8448eb211c80319c-c7ad6b7169203331-00";
    ingest(&server, "evt_unsampled", Some((unsampled, STATE)));
    ingest(&server, "evt_sampled", Some((PRODUCER, STATE)));
    let arrived = runtime.block_on(receiver.wait_for(2, Duration::from_secs(10)));
    assert_eq!(arrived.len(), 2, "{}", server.log());
    for received in &arrived {
        let sent = traceparent(received);
        assert_eq!(sent.sampled, event_id(received) == "evt_sampled", "{sent}");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let attempts = loop {
        let attempts: Vec<Value> = exported_spans(&collector)
            .into_iter()
            .filter(|span| span["name"] == "webhook attempt")
            .collect();
        if !attempts.is_empty() || std::time::Instant::now() > deadline {
            break attempts;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!attempts.is_empty(), "the sampled attempt was not exported");
    // A few more export intervals: the unsampled attempt never comes.
    std::thread::sleep(Duration::from_millis(500));
    let attempts: Vec<Value> = exported_spans(&collector)
        .into_iter()
        .filter(|span| span["name"] == "webhook attempt")
        .collect();
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!(attempts[0]["traceId"], "0af7651916cd43dd8448eb211c80319c");
}
