//! `WEBHOOKD_REDIS_WAIT_REPLICAS` (SPEC §10, docs/operations.md): what a
//! RabbitMQ message's acknowledgement stands on survives losing the Redis
//! primary before it replicated anything written after the ack.
//!
//! "Correctness, round 3", item 2: a delivery sent before it was written
//! had its attempt's record (written without `WAIT`) as its only copy; its
//! message was acknowledged as soon as the primary answered. A failover
//! before that record replicated lost the delivery. Here a private
//! primary/replica pair runs beside the shared Redis, replicating through a
//! link the test controls: the link freezes while the attempt is on the
//! wire, the primary is killed once its record landed, the replica
//! promoted — and the delivery must be in it.

// In tests a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use support::{Server, amqp_command, deliveries_by_event, redis_prefix};
use webhookd_core::EventType;
use webhookd_store::{RedisStore, Store};
use webhookd_testkit::private_redis::{PrivateRedis, RedisOptions};
use webhookd_testkit::receiver::{Answer, Receiver};
use webhookd_testkit::{CuttableProxy, Service, require, subscription, video_events};

#[test]
fn a_failover_after_an_ack_loses_no_delivery() {
    let (Some(amqp_url), Some(_)) = (require(Service::RabbitMq), require(Service::Redis)) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut primary = PrivateRedis::start(RedisOptions::default()).expect("redis-server runs");
    let link = runtime.block_on(CuttableProxy::start(primary.address()));
    let replica = PrivateRedis::start(RedisOptions {
        replica_of: Some(link.address),
        ..RedisOptions::default()
    })
    .expect("redis-server runs");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !replica
        .query(&["INFO", "replication"])
        .is_some_and(|info| info.contains("master_link_status:up"))
    {
        assert!(Instant::now() < deadline, "the replica never synced");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The first answer is quick (the endpoint flows); the second fails, late
    // enough to freeze the replica while it is on the wire.
    let receiver = runtime.block_on(Receiver::scripted(
        vec![Answer::Status(200)],
        Answer::SlowStatus(Duration::from_secs(2), 500),
    ));
    let prefix = redis_prefix();
    let store = runtime
        .block_on(RedisStore::connect(&primary.url(), &prefix))
        .unwrap();
    let endpoint = subscription(
        "johndoe",
        &receiver.url,
        &[EventType::GENERATED_VIDEO_SUCCESS],
    );
    runtime
        .block_on(store.create_endpoint(&endpoint, 20))
        .unwrap();
    let queue = webhookd_testkit::amqp::unique_queue("failover");
    let mut command = amqp_command(&primary.url(), &prefix, &amqp_url, &queue);
    command
        .env("WEBHOOKD_REDIS_WAIT_REPLICAS", "1")
        .env("WEBHOOKD_RETRY_SCHEDULE", "1h");
    let server = Server::start_with(command);
    let publish = |range| {
        runtime.block_on(webhookd_testkit::amqp::publish(
            &amqp_url,
            &queue,
            video_events("johndoe", range),
        ));
    };
    let wait_for = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while receiver.count() < n {
            assert!(Instant::now() < deadline, "request {n} never came");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    publish(0..1);
    wait_for(1);
    publish(1..2);
    wait_for(2);
    // The attempt is on the wire: the replica stops hearing anything (a
    // frozen link: nothing written from now on reaches it).
    link.freeze();
    // The receiver answers 500; the attempt is recorded on the primary and
    // the message acknowledged.
    let drained = support::queue_drained(&runtime, &amqp_url, &queue, Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(3));
    // The primary dies before replicating that; the replica takes over.
    support::signal(&server, "KILL");
    drop(server);
    primary.kill();
    assert!(
        replica.query(&["REPLICAOF", "NO", "ONE"]).is_some(),
        "the replica is promoted"
    );
    assert!(drained, "the messages were taken from the queue");
    let deliveries = runtime.block_on(deliveries_by_event(&replica.url(), &prefix));
    assert_eq!(
        deliveries.get("evt_1"),
        Some(&1),
        "the delivery whose message was acknowledged is in the promoted replica: {deliveries:?}"
    );
    runtime.block_on(webhookd_testkit::amqp::delete_queues(
        &amqp_url,
        &[&queue, &format!("{queue}.dead")],
    ));
}
