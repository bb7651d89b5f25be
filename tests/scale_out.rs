//! SPEC §10: several webhookd processes on one store and one queue behave
//! as one — here, a receiver never sees more than `endpoint_concurrency`
//! requests at once in total, however many processes send.

// In tests a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use support::{Server, redis_prefix, webhookd};
use webhookd_core::{Endpoint, EndpointStatus, EventType, ids};
use webhookd_store::{RedisStore, Store};
use webhookd_testkit::receiver::{Answer, Receiver};
use webhookd_testkit::{Service, require};

const PROCESSES: usize = 3;
const CONCURRENCY: usize = 4;
const EVENTS: usize = 400;

#[test]
fn three_processes_never_exceed_endpoint_concurrency_at_one_receiver() {
    let (Some(amqp_url), Some(redis_url)) = (require(Service::RabbitMq), require(Service::Redis))
    else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Slow enough that every process always has more to send than the
    // limit allows.
    let receiver = runtime.block_on(Receiver::start(Answer::Slow(Duration::from_millis(40))));
    let queue = webhookd_testkit::amqp::unique_queue("concurrency");
    runtime.block_on(async {
        let store = RedisStore::connect(&redis_url, &redis_prefix()).await.unwrap();
        let endpoint = Endpoint {
            endpoint_id: ids::new_endpoint_id(),
            url: receiver.url.clone(),
            secret: ids::new_secret(),
            status: EndpointStatus::Enabled,
            events: vec![EventType::GeneratedVideoSuccess],
            username: "johndoe".into(),
            created_at: 0,
            previous_secret: None,
            failing_since: None,
            disabled_reason: None,
        };
        store.create_endpoint(&endpoint, 20).await.unwrap();
        webhookd_testkit::amqp::publish(
            &amqp_url,
            &queue,
            (0..EVENTS).map(|i| {
                format!(r#"{{"event":"generated_video_success","username":"johndoe","event_id":"evt_{i}","data":{{"n":{i}}}}}"#)
            }),
        )
        .await;
    });
    let _servers: Vec<Server> = (0..PROCESSES)
        .map(|_| {
            let mut command = webhookd(&redis_url);
            command
                .env("WEBHOOKD_AMQP_URL", &amqp_url)
                .env("WEBHOOKD_AMQP_QUEUE", &queue)
                .env("WEBHOOKD_ENDPOINT_CONCURRENCY", CONCURRENCY.to_string())
                .env("WEBHOOKD_ALLOWED_NETWORKS", "127.0.0.0/8");
            Server::start_with(command)
        })
        .collect();

    let deadline = Instant::now() + Duration::from_secs(90);
    let mut distinct = HashSet::new();
    while distinct.len() < EVENTS && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        distinct = receiver
            .received()
            .iter()
            .map(|r| r.headers["x-webhook-id"].to_str().unwrap().to_owned())
            .collect();
    }
    let most = receiver.most_in_flight();
    println!(
        "{PROCESSES} processes, endpoint_concurrency {CONCURRENCY}: {} of {EVENTS} events \
         arrived in {} requests, at most {most} at once",
        distinct.len(),
        receiver.count()
    );
    assert_eq!(distinct.len(), EVENTS, "every event arrives");
    assert!(
        most <= CONCURRENCY,
        "{most} requests at once, limit {CONCURRENCY}"
    );
    assert_eq!(most, CONCURRENCY, "the limit is used, not undershot");
    runtime.block_on(webhookd_testkit::amqp::delete_queues(
        &amqp_url,
        &[&queue, &format!("{queue}.dead")],
    ));
}
