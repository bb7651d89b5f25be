//! SPEC §10: several webhookd processes on one store and one queue behave
//! as one — here, a receiver never sees more than `endpoint_concurrency`
//! requests at once in total, nor more than its endpoint's `rate_limit`
//! a second, however many processes send.

// In tests a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use support::{Server, redis_prefix, webhookd, webhookd_with_clock};
use webhookd_core::{Endpoint, EventType};
use webhookd_store::{RedisStore, Store};
use webhookd_testkit::receiver::{Answer, Receiver};
use webhookd_testkit::{Service, require, subscription, video_events};

const PROCESSES: usize = 3;
const CONCURRENCY: usize = 4;
const EVENTS: usize = 400;
#[allow(clippy::cast_possible_truncation)] // 400
const EVENTS_U32: u32 = EVENTS as u32;

/// A receiver answering `answer`, johndoe's endpoint at it (with
/// `rate_limit`), [`EVENTS`] events in a fresh queue, and `PROCESSES`
/// webhookd processes consuming it.
struct Run {
    runtime: tokio::runtime::Runtime,
    receiver: Receiver,
    amqp_url: String,
    queue: String,
    servers: Vec<Server>,
}

impl Run {
    fn start(name: &str, answer: Answer, rate_limit: Option<u32>) -> Option<Run> {
        Run::start_skewed(name, answer, rate_limit, None)
    }

    /// [`Run::start`], the last process's wall clock moved by `skew`.
    fn start_skewed(
        name: &str,
        answer: Answer,
        rate_limit: Option<u32>,
        skew: Option<&str>,
    ) -> Option<Run> {
        let (Some(amqp_url), Some(redis_url)) =
            (require(Service::RabbitMq), require(Service::Redis))
        else {
            return None;
        };
        let mut commands = Vec::new();
        for n in 0..PROCESSES {
            commands.push(match skew {
                Some(offset) if n == PROCESSES - 1 => webhookd_with_clock(&redis_url, offset)?,
                _ => webhookd(&redis_url),
            });
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let receiver = runtime.block_on(Receiver::start(answer));
        let queue = webhookd_testkit::amqp::unique_queue(name);
        runtime.block_on(prepare(
            &redis_url, &amqp_url, &queue, &receiver, rate_limit,
        ));
        let servers = commands
            .into_iter()
            .map(|mut command| {
                command
                    .env("WEBHOOKD_AMQP_URL", &amqp_url)
                    .env("WEBHOOKD_AMQP_QUEUE", &queue)
                    .env("WEBHOOKD_ENDPOINT_CONCURRENCY", CONCURRENCY.to_string())
                    .env("WEBHOOKD_ALLOWED_NETWORKS", "127.0.0.0/8");
                Server::start_with(command)
            })
            .collect();
        Some(Run {
            runtime,
            receiver,
            amqp_url,
            queue,
            servers,
        })
    }

    /// Distinct events received, waiting up to 90 s for all of them.
    fn wait_for_every_event(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut distinct = HashSet::new();
        while distinct.len() < EVENTS && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            distinct = self
                .receiver
                .received()
                .iter()
                .map(|r| r.headers["x-webhook-id"].to_str().unwrap().to_owned())
                .collect();
        }
        distinct.len()
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        // Stopped first: a running consumer would declare the queues again.
        self.servers.clear();
        self.runtime.block_on(webhookd_testkit::amqp::delete_queues(
            &self.amqp_url,
            &[&self.queue, &format!("{}.dead", self.queue)],
        ));
    }
}

async fn prepare(
    redis_url: &str,
    amqp_url: &str,
    queue: &str,
    receiver: &Receiver,
    rate_limit: Option<u32>,
) {
    let store = RedisStore::connect(redis_url, &redis_prefix())
        .await
        .unwrap();
    let endpoint = Endpoint {
        rate_limit,
        ..subscription(
            "johndoe",
            &receiver.url,
            &[EventType::GENERATED_VIDEO_SUCCESS],
        )
    };
    store.create_endpoint(&endpoint, 20).await.unwrap();
    webhookd_testkit::amqp::publish(amqp_url, queue, video_events("johndoe", 0..EVENTS)).await;
}

#[test]
fn three_processes_never_exceed_endpoint_concurrency_at_one_receiver() {
    // Slow enough that every process always has more to send than the
    // limit allows.
    let Some(run) = Run::start("concurrency", Answer::Slow(Duration::from_millis(40)), None) else {
        return;
    };
    let arrived = run.wait_for_every_event();
    let receiver = &run.receiver;
    let most = receiver.most_in_flight();
    println!(
        "{PROCESSES} processes, endpoint_concurrency {CONCURRENCY}: {} of {EVENTS} events \
         arrived in {} requests, at most {most} at once",
        arrived,
        receiver.count()
    );
    assert_eq!(arrived, EVENTS, "every event arrives");
    assert!(
        most <= CONCURRENCY,
        "{most} requests at once, limit {CONCURRENCY}"
    );
    assert_eq!(most, CONCURRENCY, "the limit is used, not undershot");
}

/// The bucket holds one second's worth and refills at the rate, so no
/// second sees more than twice the rate (plus what a lane had claimed and
/// not yet sent), and all of them take at least (events − rate) ÷ rate.
#[test]
fn three_processes_together_keep_an_endpoints_rate_limit() {
    const RATE: u32 = 40;
    let Some(run) = Run::start("rate", Answer::Status(200), Some(RATE)) else {
        return;
    };
    let arrived = run.wait_for_every_event();
    let mut times: Vec<Instant> = run.receiver.received().iter().map(|r| r.at).collect();
    times.sort();
    let busiest = times
        .iter()
        .map(|start| {
            times
                .iter()
                .filter(|at| **at >= *start && at.duration_since(*start) < Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap_or(0);
    let took = times.last().unwrap().duration_since(times[0]);
    println!(
        "rate_limit {RATE}/s over {PROCESSES} processes: {arrived} of {EVENTS} events in {took:?}, \
         at most {busiest} in one second"
    );
    assert_eq!(arrived, EVENTS, "every event arrives");
    let allowed = 2 * RATE as usize + CONCURRENCY;
    assert!(
        busiest <= allowed,
        "{busiest} in one second, at most {allowed} allowed"
    );
    let least = Duration::from_secs_f64(f64::from(EVENTS_U32 - RATE) / f64::from(RATE));
    assert!(
        took >= least.mul_f64(0.95),
        "{took:?} is faster than the rate allows ({least:?})"
    );
}

/// A process whose wall clock runs an hour ahead takes no live work:
/// leases, due times and sending slots are reckoned in Redis's clock.
/// ("Correctness, round 3": before, it found every lease the others held
/// over by its clock and took their deliveries — duplicates — and lapsed
/// their slots: more than `endpoint_concurrency` at once.)
#[test]
fn a_process_whose_clock_runs_an_hour_ahead_takes_no_live_work() {
    let Some(run) = Run::start_skewed(
        "skew",
        Answer::Slow(Duration::from_millis(100)),
        None,
        Some("+1h"),
    ) else {
        return;
    };
    let arrived = run.wait_for_every_event();
    let receiver = &run.receiver;
    assert_eq!(arrived, EVENTS, "every event arrives");
    assert_eq!(
        receiver.count(),
        EVENTS,
        "no event was sent twice: no lease was taken over"
    );
    assert!(
        receiver.most_in_flight() <= CONCURRENCY,
        "at most {CONCURRENCY} at once, got {}",
        receiver.most_in_flight()
    );
}

/// Found by the fault campaign (seed 2026, one hour): a test send answered
/// by a process whose wall clock ran an hour ahead was due an hour later —
/// the API wrote its own clock's time where the store's belongs (also for
/// a re-send, recover, the test-send window and a rotation's grace).
#[test]
fn a_test_send_through_a_process_an_hour_ahead_is_sent_at_once() {
    let Some(redis_url) = require(Service::Redis) else {
        return;
    };
    let Some(mut command) = webhookd_with_clock(&redis_url, "+1h") else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let receiver = runtime.block_on(Receiver::start(Answer::Status(200)));
    let api_key = webhookd_core::ids::new_api_key();
    let endpoint = subscription(
        "skewed",
        &receiver.url,
        &[EventType::GENERATED_VIDEO_SUCCESS],
    );
    runtime.block_on(async {
        let store = RedisStore::connect(&redis_url, &redis_prefix())
            .await
            .unwrap();
        store
            .add_api_key("skewed", &webhookd_core::ids::hash_api_key(&api_key), 0)
            .await
            .unwrap();
        store.create_endpoint(&endpoint, 20).await.unwrap();
    });
    command.env("WEBHOOKD_ALLOWED_NETWORKS", "127.0.0.0/8");
    let server = Server::start_with(command);
    let answer = reqwest::blocking::Client::new()
        .post(format!(
            "{}/v2/endpoint/{}/test",
            server.base, endpoint.endpoint_id
        ))
        .header("x-api-key", &api_key)
        .send()
        .unwrap();
    assert_eq!(answer.status(), 200, "{:?}", answer.text());
    let deadline = Instant::now() + Duration::from_secs(20);
    while receiver.count() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(receiver.count(), 1, "the test event arrives at once");
}
