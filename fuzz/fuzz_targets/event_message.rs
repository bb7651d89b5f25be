//! An event message (SPEC §5) as RabbitMQ or HTTP ingest hands it in:
//! parsing never panics, and what it accepts is an event that re-renders.
#![no_main]

use libfuzzer_sys::fuzz_target;
use webhookd_core::{Event, MissingId};

fuzz_target!(|message: &[u8]| {
    let derived = [None, Some("amqp-message-id")].map(|message_id| MissingId::Derived { message_id });
    for missing_id in [MissingId::Random, derived[0], derived[1]] {
        if let Ok(event) = Event::parse_with(message, 1_700_000_000, missing_id) {
            assert!(!event.event_id.is_empty() && event.event_id.len() <= 128);
            assert!(!event.username.is_empty());
            // The body webhookd signs is JSON a strict parser reads. One
            // exception is serde_json's own: with its `raw_value` feature
            // (on here, for webhookd-core) an object keyed by this private
            // token is read as raw JSON text by `Value` itself — a quirk
            // of the checker, not of the body (Python, Node and Go read it
            // as a plain key).
            let body = event.body();
            if !body.contains("$serde_json::private::RawValue") {
                serde_json::from_str::<serde_json::Value>(&body).expect("the rendered body is JSON");
            }
        }
    }
});
