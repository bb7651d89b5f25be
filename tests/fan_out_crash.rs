//! Fan-out through crashes, and producers' duplicates: the real binary on
//! Redis, fed by RabbitMQ, SIGKILLed mid-way.
//!
//! - A fan-out-10 stream killed with about half its (event, endpoint)
//!   pairs delivered: after a restart every pair arrives, and the
//!   duplicates the crash caused are counted (at-least-once: only the
//!   attempts in flight at the kill may come twice).
//! - The same `event_id` published twice, 1 ms apart, fans out once — with
//!   the process running throughout, and with a kill -9 between the copies.

// In tests a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use webhookd_core::EventType;
use webhookd_store::{RedisStore, Store};
use webhookd_testkit::receiver::{Answer, Receiver};
use webhookd_testkit::{Service, require, subscription, unique_prefix};

mod support;
use support::*;

const ENDPOINTS: usize = 10;

/// A user with ten endpoints at one receiver (`/ep<n>` each), a queue, and a
/// Redis prefix of its own.
struct FanOut {
    runtime: tokio::runtime::Runtime,
    receiver: Receiver,
    store: RedisStore,
    amqp_url: String,
    redis_url: String,
    prefix: String,
    queue: String,
}

impl FanOut {
    fn prepare(test: &str) -> Option<FanOut> {
        let amqp_url = require(Service::RabbitMq)?;
        let redis_url = require(Service::Redis)?;
        // A multi-thread runtime keeps the receiver answering between calls.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let receiver = runtime.block_on(Receiver::start(Answer::Status(200)));
        let prefix = unique_prefix(test);
        let store = runtime
            .block_on(RedisStore::connect(&redis_url, &prefix))
            .unwrap();
        for n in 0..ENDPOINTS {
            let url = format!("{}/ep{n}", receiver.url);
            let endpoint = subscription("johndoe", &url, &[EventType::GENERATED_VIDEO_SUCCESS]);
            runtime
                .block_on(store.create_endpoint(&endpoint, 20))
                .unwrap();
        }
        Some(FanOut {
            queue: webhookd_testkit::amqp::unique_queue(test),
            runtime,
            receiver,
            store,
            amqp_url,
            redis_url,
            prefix,
        })
    }

    fn server(&self) -> Server {
        amqp_server(&self.redis_url, &self.prefix, &self.amqp_url, &self.queue)
    }

    fn publish(&self, range: std::ops::Range<usize>) {
        self.runtime.block_on(webhookd_testkit::amqp::publish(
            &self.amqp_url,
            &self.queue,
            webhookd_testkit::video_events("johndoe", range),
        ));
    }

    /// How often each (event id, endpoint path) pair arrived.
    fn arrivals(&self) -> HashMap<(String, String), usize> {
        let mut arrivals = HashMap::new();
        for request in self.receiver.received() {
            let event_id = request.headers["webhook-id"].to_str().unwrap().to_owned();
            *arrivals.entry((event_id, request.path)).or_default() += 1;
        }
        arrivals
    }

    /// Waits until `pairs` distinct pairs arrived, then returns how often
    /// each did.
    fn wait_for_pairs(&self, pairs: usize, within: Duration) -> HashMap<(String, String), usize> {
        let deadline = Instant::now() + within;
        loop {
            let arrivals = self.arrivals();
            if arrivals.len() >= pairs || Instant::now() > deadline {
                return arrivals;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn queue_drained(&self) -> bool {
        queue_drained(
            &self.runtime,
            &self.amqp_url,
            &self.queue,
            Duration::from_secs(30),
        )
    }

    /// Nothing due, scheduled or dead is left in the store.
    fn assert_store_settled(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let stats = self
                .runtime
                .block_on(
                    self.store
                        .delivery_stats(webhookd_core::time::unix_millis()),
                )
                .unwrap();
            if stats.due + stats.scheduled + stats.dead == 0 {
                return;
            }
            assert!(Instant::now() < deadline, "the store settles: {stats:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every event of `events` made exactly one delivery per endpoint.
    /// Deliveries sent before they were written are in the store once
    /// recorded — for those a kill -9 cut short, once their event is taken
    /// over after the lease (50 s) — so this waits for every event to show
    /// a whole fan-out first.
    fn assert_one_fan_out_each(&self, events: usize) {
        let deadline = Instant::now() + Duration::from_secs(120);
        let deliveries = loop {
            let deliveries = self
                .runtime
                .block_on(deliveries_by_event(&self.redis_url, &self.prefix));
            let whole = deliveries.values().filter(|&&n| n >= ENDPOINTS).count();
            if whole == events || Instant::now() > deadline {
                break deliveries;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        // One delivery per endpoint is one fan-out.
        assert_eq!(deliveries.len(), events, "every event was fanned out");
        let doubled: Vec<_> = deliveries
            .iter()
            .filter(|(_, n)| **n != ENDPOINTS)
            .collect();
        assert!(
            doubled.is_empty(),
            "events without exactly one delivery per endpoint: {doubled:?}"
        );
    }
}

impl Drop for FanOut {
    fn drop(&mut self) {
        let dead = format!("{}.dead", self.queue);
        self.runtime.block_on(webhookd_testkit::amqp::delete_queues(
            &self.amqp_url,
            &[&self.queue, &dead],
        ));
    }
}

#[test]
fn kill_9_with_a_fan_out_10_half_delivered_loses_no_pair() {
    const EVENTS: usize = 2_000;
    let Some(run) = FanOut::prepare("fanout-kill9") else {
        return;
    };
    run.publish(0..EVENTS);
    let pairs = EVENTS * ENDPOINTS;
    let server = run.server();
    let before_kill = run.wait_for_pairs(pairs / 2, Duration::from_secs(60)).len();
    signal(&server, "KILL");
    drop(server);
    assert!(
        (pairs / 4..pairs).contains(&before_kill),
        "killed mid-way ({before_kill} of {pairs} pairs delivered)"
    );

    let _restarted = run.server();
    // Attempts in flight at the kill come due again when their lease ends
    // (50 s by default).
    let arrivals = run.wait_for_pairs(pairs, Duration::from_secs(150));
    assert_eq!(
        arrivals.len(),
        pairs,
        "every (event, endpoint) pair arrived"
    );
    let duplicates: usize = arrivals.values().map(|n| n - 1).sum();
    eprintln!(
        "kill -9 at {before_kill} of {pairs} pairs: every pair arrived, {duplicates} duplicate requests"
    );
    // At-least-once: only attempts in flight or not yet recorded at the kill
    // may be sent again — far fewer than the pairs still to go.
    assert!(
        duplicates < pairs / 4,
        "{duplicates} duplicates: more than the attempts a kill can interrupt"
    );
    assert!(run.queue_drained(), "the queue drains");
    run.assert_one_fan_out_each(EVENTS);
    run.assert_store_settled();
}

/// Publishes evt_i, then 1 ms later evt_i again, for each i in `range`.
fn publish_twice_1ms_apart(run: &FanOut, range: std::ops::Range<usize>) {
    for i in range {
        run.publish(i..i + 1);
        std::thread::sleep(Duration::from_millis(1));
        run.publish(i..i + 1);
    }
}

#[test]
fn the_same_event_id_twice_1ms_apart_fans_out_once() {
    const EVENTS: usize = 100;
    let Some(run) = FanOut::prepare("twice") else {
        return;
    };
    let _server = run.server();
    publish_twice_1ms_apart(&run, 0..EVENTS);
    let arrivals = run.wait_for_pairs(EVENTS * ENDPOINTS, Duration::from_secs(60));
    assert!(run.queue_drained(), "the queue drains");
    // Whatever the second copies would send has had time to arrive.
    std::thread::sleep(Duration::from_millis(500));
    let arrivals_after = run.arrivals();
    assert_eq!(arrivals.len(), EVENTS * ENDPOINTS, "every pair arrived");
    assert!(
        arrivals_after.values().all(|&n| n == 1),
        "no pair arrived twice without a fault: {:?}",
        arrivals_after
            .iter()
            .filter(|(_, n)| **n > 1)
            .collect::<Vec<_>>()
    );
    run.assert_one_fan_out_each(EVENTS);
}

#[test]
fn the_same_event_id_twice_with_kill_9_between_fans_out_once() {
    const EVENTS: usize = 40;
    let Some(run) = FanOut::prepare("twice-kill9") else {
        return;
    };
    let server = run.server();
    publish_twice_1ms_apart(&run, 0..EVENTS / 2);
    // The first copy of the middle event, 1 ms, a kill -9, then its second
    // copy while no webhookd runs: whatever the first copy got to (taken,
    // accepted, partly sent), the second must not fan out again.
    let middle = EVENTS / 2;
    run.publish(middle..middle + 1);
    std::thread::sleep(Duration::from_millis(1));
    signal(&server, "KILL");
    drop(server);
    run.publish(middle..middle + 1);
    let _restarted = run.server();
    publish_twice_1ms_apart(&run, middle + 1..EVENTS);

    let pairs = EVENTS * ENDPOINTS;
    let arrivals = run.wait_for_pairs(pairs, Duration::from_secs(150));
    assert_eq!(
        arrivals.len(),
        pairs,
        "every (event, endpoint) pair arrived"
    );
    assert!(run.queue_drained(), "the queue drains");
    run.assert_one_fan_out_each(EVENTS);
    // A duplicate request after the kill is allowed (at-least-once), but
    // only for pairs sent before it: each at most once more.
    let duplicates: usize = run.arrivals().values().map(|n| n - 1).sum();
    eprintln!("kill -9 between two copies: one fan-out each, {duplicates} duplicate requests");
    assert!(
        duplicates <= (middle + 1) * ENDPOINTS,
        "{duplicates} duplicates: more than the pairs sent before the kill"
    );
}

/// "Correctness, round 3", item 3: kill -9 while an event's delivery is in
/// flight, and the endpoint is disabled before the delivery comes due
/// again. It must wait while the endpoint is disabled (SPEC §8) and go
/// once it is enabled — not be dropped because the endpoint was disabled
/// when the event was looked at again.
#[test]
fn a_delivery_in_flight_at_a_kill_waits_for_an_endpoint_disabled_meanwhile() {
    let Some(amqp_url) = require(Service::RabbitMq) else {
        return;
    };
    let Some(redis_url) = require(Service::Redis) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    // The first answer is quick (the endpoint flows), the second hangs.
    let receiver = runtime.block_on(Receiver::scripted(vec![Answer::Status(200)], Answer::Hang));
    let prefix = unique_prefix("disabled-takeover");
    let queue = webhookd_testkit::amqp::unique_queue("disabled-takeover");
    let store = runtime
        .block_on(RedisStore::connect(&redis_url, &prefix))
        .unwrap();
    let endpoint = subscription(
        "johndoe",
        &receiver.url,
        &[EventType::GENERATED_VIDEO_SUCCESS],
    );
    runtime
        .block_on(store.create_endpoint(&endpoint, 20))
        .unwrap();
    let server = || {
        let mut command = amqp_command(&redis_url, &prefix, &amqp_url, &queue);
        // A lease of 4 × 1 s + 30 s.
        command.env("WEBHOOKD_DELIVERY_TIMEOUT", "1s");
        Server::start_with(command)
    };
    let publish = |range| {
        runtime.block_on(webhookd_testkit::amqp::publish(
            &amqp_url,
            &queue,
            webhookd_testkit::video_events("johndoe", range),
        ));
    };
    let wait_for = |n: usize, within: Duration| {
        let deadline = Instant::now() + within;
        while receiver.count() < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        receiver.count()
    };
    let first = server();
    publish(0..1);
    assert_eq!(wait_for(1, Duration::from_secs(30)), 1);
    publish(1..2);
    assert_eq!(wait_for(2, Duration::from_secs(30)), 2, "in flight");
    signal(&first, "KILL");
    drop(first);
    let disabled = webhookd_core::EndpointSpec {
        ordering: None,
        filter: None,
        url: endpoint.url.clone(),
        events: endpoint.events.clone(),
        status: Some(webhookd_core::EndpointStatus::Disabled),
        rate_limit: None,
        options: None,
    };
    runtime
        .block_on(store.update_endpoint("johndoe", &endpoint.endpoint_id, &disabled))
        .unwrap()
        .unwrap();
    let restarted = server();
    // Past the killed attempt's lease (34 s), with the endpoint disabled:
    // nothing is sent.
    std::thread::sleep(Duration::from_secs(40));
    assert_eq!(receiver.count(), 2, "nothing is sent while disabled");
    receiver.answer_from_now(Answer::Status(200));
    let enabled = webhookd_core::EndpointSpec {
        status: Some(webhookd_core::EndpointStatus::Enabled),
        ..disabled
    };
    runtime
        .block_on(store.update_endpoint("johndoe", &endpoint.endpoint_id, &enabled))
        .unwrap()
        .unwrap();
    // A parked delivery is looked at again within a minute.
    assert_eq!(
        wait_for(3, Duration::from_secs(90)),
        3,
        "the delivery waited, and went once the endpoint was enabled"
    );
    let last = &receiver.received()[2];
    assert_eq!(last.headers["webhook-id"].to_str().unwrap(), "evt_1");
    // Stopped first: a running consumer would declare the queues again.
    drop(restarted);
    runtime.block_on(webhookd_testkit::amqp::delete_queues(
        &amqp_url,
        &[&queue, &format!("{queue}.dead")],
    ));
}
