//! Partitions, not just crashes: when the link to RabbitMQ or Redis goes
//! silent — packets dropped, no reset, as a frozen network does — webhookd
//! notices within 30 s (`/readyz` 503), loses nothing published meanwhile,
//! and flows again once the link is back.

// In tests a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use support::{Server, redis_prefix, webhookd};
use webhookd_core::EventType;
use webhookd_store::{RedisStore, Store};
use webhookd_testkit::receiver::{Answer, Receiver};
use webhookd_testkit::{
    CuttableProxy, Service, require, service_address, subscription, video_events,
};

/// SPEC §6: a silent broker link is noticed within ~3× the heartbeat (10 s
/// by default); the issue asks for 30 s.
const NOTICED_WITHIN: Duration = Duration::from_secs(30);
const PER_ROUND: usize = 100;

struct Run {
    runtime: tokio::runtime::Runtime,
    receiver: Receiver,
    amqp_url: String,
    queue: String,
    published: usize,
}

impl Run {
    fn publish_round(&mut self) {
        let first = self.published;
        self.runtime.block_on(webhookd_testkit::amqp::publish(
            &self.amqp_url,
            &self.queue,
            video_events("johndoe", first..first + PER_ROUND),
        ));
        self.published += PER_ROUND;
    }

    /// Distinct event deliveries the receiver got, waiting up to `within`
    /// for every one published so far.
    fn wait_for_all(&self, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            let distinct: HashSet<String> = self
                .receiver
                .received()
                .iter()
                .map(|r| r.headers["x-webhook-id"].to_str().unwrap().to_owned())
                .collect();
            if distinct.len() >= self.published || Instant::now() > deadline {
                return distinct.len();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn ready(server: &Server) -> Option<bool> {
    let answer = reqwest::blocking::Client::new()
        .get(format!("{}/readyz", server.base))
        // Longer than /readyz's own 2 s wait for the store.
        .timeout(Duration::from_secs(5))
        .send()
        .ok()?;
    Some(answer.status().is_success())
}

/// How long until `/readyz` says `expected`, checked every 200 ms.
fn until_ready_is(server: &Server, expected: bool, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < within {
        if ready(server) == Some(expected) {
            return Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

#[test]
fn silent_broker_and_silent_store_are_noticed_and_lose_nothing() {
    let (Some(amqp_url), Some(redis_url)) = (require(Service::RabbitMq), require(Service::Redis))
    else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let receiver = runtime.block_on(Receiver::start(Answer::Status(200)));
    let broker_link = runtime.block_on(CuttableProxy::start(service_address(Service::RabbitMq)));
    let store_link = runtime.block_on(CuttableProxy::start(service_address(Service::Redis)));
    runtime.block_on(async {
        let store = RedisStore::connect(&redis_url, &redis_prefix())
            .await
            .unwrap();
        let endpoint = subscription(
            "johndoe",
            &receiver.url,
            &[EventType::GENERATED_VIDEO_SUCCESS],
        );
        store.create_endpoint(&endpoint, 20).await.unwrap();
    });
    let mut run = Run {
        runtime,
        receiver,
        queue: webhookd_testkit::amqp::unique_queue("partition"),
        amqp_url,
        published: 0,
    };
    let mut command = webhookd(&Service::Redis.url_through(store_link.address));
    command
        .env(
            "WEBHOOKD_AMQP_URL",
            format!("amqp://guest:guest@{}/%2f", broker_link.address),
        )
        .env("WEBHOOKD_AMQP_QUEUE", &run.queue)
        .env("WEBHOOKD_ALLOWED_NETWORKS", "127.0.0.0/8");
    let server = Server::start_with(command);
    assert!(until_ready_is(&server, true, Duration::from_secs(20)).is_some());
    run.publish_round();
    assert_eq!(run.wait_for_all(Duration::from_secs(30)), run.published);

    for (name, link) in [("RabbitMQ", &broker_link), ("Redis", &store_link)] {
        link.freeze();
        run.publish_round();
        let noticed = until_ready_is(&server, false, NOTICED_WITHIN);
        println!("{name} went silent: /readyz 503 after {noticed:?}");
        assert!(
            noticed.is_some(),
            "{name}'s silence unnoticed for {NOTICED_WITHIN:?}"
        );
        link.restore();
        let back = until_ready_is(&server, true, Duration::from_secs(60));
        println!("{name} link restored: /readyz 200 after {back:?}");
        assert!(back.is_some(), "ready again once {name} answers");
        let arrived = run.wait_for_all(Duration::from_secs(60));
        println!("{arrived} of {} events arrived", run.published);
        assert_eq!(
            arrived, run.published,
            "nothing published while {name} was silent is lost"
        );
    }
    run.runtime.block_on(webhookd_testkit::amqp::delete_queues(
        &run.amqp_url,
        &[&run.queue, &format!("{}.dead", run.queue)],
    ));
}
