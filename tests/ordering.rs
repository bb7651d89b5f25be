//! Ordered endpoints end to end (SPEC §15), on both stores: 5,000 events
//! over 20 ordering keys to one ordered endpoint, through two webhookd
//! processes — one of them killed with SIGKILL mid-way — to a receiver that
//! fails one first attempt in ten and goes away once (every connection
//! dropped, new ones closed) and comes back. Per key the receiver sees the
//! events in the order they were accepted (a request repeating the last
//! one is the only repeat), and every event arrives.

// In tests a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use webhookd_testkit::CuttableProxy;
use webhookd_testkit::receiver::{Answer, Receiver};
use webhookd_testkit::{Service, require};

mod support;
use support::*;

const EVENTS: usize = 5_000;
const KEYS: usize = 20;
const INGEST_TOKEN: &str = "ordering-test-token";

fn server(store: &str) -> Server {
    let mut command = webhookd(store);
    command
        .env("WEBHOOKD_ALLOWED_NETWORKS", "127.0.0.0/8")
        .env("WEBHOOKD_REQUIRE_HTTPS", "false")
        .env("WEBHOOKD_INGEST_TOKEN", INGEST_TOKEN)
        // A killed process's leases run out in 4 × 2 s + 30 s.
        .env("WEBHOOKD_DELIVERY_TIMEOUT", "2s")
        // Never dead while the receiver is away: every event must arrive.
        .env("WEBHOOKD_RETRY_SCHEDULE", vec!["1s"; 20].join(","));
    Server::start_with(command)
}

/// Publishes the events of `range`, each key's one after the other (each
/// accepted before the next is sent; the keys side by side), to `bases` in
/// turn, skipping one that refuses: per key, acceptance order is `seq`
/// order.
fn publish(bases: &[String], range: std::ops::Range<usize>) {
    std::thread::scope(|scope| {
        for key in 0..KEYS {
            let range = range.clone();
            scope.spawn(move || {
                let client = reqwest::blocking::Client::new();
                for seq in range.filter(|seq| seq % KEYS == key) {
                    publish_one(bases, &client, seq);
                }
            });
        }
    });
}

fn publish_one(bases: &[String], client: &reqwest::blocking::Client, seq: usize) {
    let message = json!({
        "event": "generated_video_success",
        "username": "ordered",
        "event_id": format!("evt_{seq:05}"),
        "data": {"video_id": format!("v{:02}", seq % KEYS), "seq": seq},
    })
    .to_string();
    let accepted = (0..100).any(|attempt| {
        let base = &bases[(seq / KEYS + attempt) % bases.len()];
        let answer = client
            .post(format!("{base}/internal/events"))
            .bearer_auth(INGEST_TOKEN)
            .body(message.clone())
            .send();
        if answer.is_ok_and(|answer| answer.status() == 202) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
        false
    });
    assert!(accepted, "event {seq} was accepted");
}

/// The `seq` of each request the receiver got, in arrival order per key,
/// with whether it was answered 2xx.
fn arrivals_by_key(receiver: &Receiver) -> HashMap<usize, Vec<(usize, bool)>> {
    let mut by_key: HashMap<usize, Vec<(usize, bool)>> = HashMap::new();
    for request in receiver.received() {
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        let seq = usize::try_from(body["data"]["seq"].as_u64().unwrap()).unwrap();
        let delivered = request.answered.is_some_and(|code| code < 300);
        by_key.entry(seq % KEYS).or_default().push((seq, delivered));
    }
    by_key
}

fn delivered(receiver: &Receiver) -> HashSet<usize> {
    arrivals_by_key(receiver)
        .into_values()
        .flatten()
        .filter_map(|(seq, delivered)| delivered.then_some(seq))
        .collect()
}

fn ordered_endpoint_keeps_each_keys_order_through_faults(store: &str) {
    let key = add_user(store, "ordered");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let receiver = runtime.block_on(Receiver::start(Answer::FailFirstAttemptOneIn(10)));
    let target: std::net::SocketAddr = receiver
        .url
        .trim_start_matches("http://")
        .trim_end_matches("/webhook")
        .parse()
        .unwrap();
    let proxy = runtime.block_on(CuttableProxy::start(target));

    let first = server(store);
    let mut second = server(store);
    let created: Value = reqwest::blocking::Client::new()
        .post(format!("{}/v2/endpoint", first.base))
        .header("x-api-key", &key)
        .body(
            json!({
                "url": format!("http://{}/webhook", proxy.address),
                "events": ["generated_video_success"],
                "ordered": true,
                "ordering_key": "/data/video_id",
            })
            .to_string(),
        )
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(created["code"], 0, "{created}");
    assert_eq!(created["data"]["ordered"], true, "{created}");
    let endpoint_id = created["data"]["endpoint_id"].as_str().unwrap().to_owned();

    let both = [first.base.clone(), second.base.clone()];
    publish(&both, 0..EVENTS / 2);
    // One process dies with what it holds; the other takes its work over
    // once those leases run out.
    signal(&second, "KILL");
    wait_for_exit(&mut second, Duration::from_secs(10));
    let survivor = [first.base.clone()];
    publish(&survivor, EVENTS / 2..EVENTS * 3 / 5);
    // The receiver goes away for two seconds, mid-stream.
    proxy.cut();
    std::thread::sleep(Duration::from_secs(2));
    proxy.restore();
    publish(&survivor, EVENTS * 3 / 5..EVENTS);

    let deadline = Instant::now() + Duration::from_secs(240);
    while delivered(&receiver).len() < EVENTS && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let delivered = delivered(&receiver);
    let missing: Vec<usize> = (0..EVENTS).filter(|seq| !delivered.contains(seq)).collect();
    assert!(missing.is_empty(), "never delivered: {missing:?}");

    // Per key, never an event before one accepted earlier; a request may
    // repeat the last one (a retry, or a resend after the kill).
    let mut repeats_after_success = 0;
    for (key, arrivals) in arrivals_by_key(&receiver) {
        let mut last: Option<(usize, bool)> = None;
        for &(seq, ok) in &arrivals {
            if let Some((previous, previous_ok)) = last {
                assert!(
                    seq >= previous,
                    "key {key}: event {seq} arrived after event {previous}: {arrivals:?}"
                );
                if seq == previous && previous_ok {
                    repeats_after_success += 1;
                }
                assert!(
                    seq == previous || previous_ok,
                    "key {key}: event {seq} went before event {previous} was delivered"
                );
            }
            last = Some((seq, ok || last.is_some_and(|(s, ok)| s == seq && ok)));
        }
    }
    let requests = receiver.count();
    eprintln!(
        "{EVENTS} events over {KEYS} keys: {requests} requests, {repeats_after_success} repeats of an event already delivered"
    );
    // Only a fault repeats a delivered event: the deliveries the killed
    // process had sent but not recorded, at most one head per key.
    assert!(
        repeats_after_success <= 2 * KEYS,
        "{repeats_after_success} repeats after success"
    );

    // Nothing is left pending or dead.
    let detail: Value = reqwest::blocking::Client::new()
        .get(format!("{}/v2/endpoint/{endpoint_id}", first.base))
        .header("x-api-key", &key)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(detail["data"]["counts"]["pending"], 0, "{detail}");
    assert_eq!(detail["data"]["counts"]["failed"], 0, "{detail}");
    assert_eq!(detail["data"]["counts"]["delivered"], EVENTS, "{detail}");
}

#[test]
fn ordered_keys_keep_their_order_through_a_kill_9_on_redis() {
    let Some(redis_url) = require(Service::Redis) else {
        return;
    };
    ordered_endpoint_keeps_each_keys_order_through_faults(&redis_url);
}

#[test]
fn ordered_keys_keep_their_order_through_a_kill_9_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    ordered_endpoint_keeps_each_keys_order_through_faults(&sqlite_store(&dir));
}
