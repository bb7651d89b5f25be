//! SPEC §10 on a real Redis Cluster (the 3 primaries + 3 replicas of
//! `.ci/redis-cluster`): two webhookd processes share the cluster and one
//! queue; mid-stream one primary — the one holding the tenant's data —
//! and one webhookd process are killed with SIGKILL. (Killing that primary
//! wedges the redis crate's cluster client in the survivor every time;
//! it recovers by connecting afresh, see `redis/cluster.rs`.) The replica takes
//! over; every event arrives, duplicates are counted and printed, and
//! nothing is left pending afterwards. The processes run with
//! `WEBHOOKD_REDIS_WAIT_REPLICAS=1`, as docs/operations.md advises for a
//! cluster: Redis replicates asynchronously, and without it an accept the
//! killed primary acknowledged but had not yet replicated could be lost
//! with it. The killed node is started again
//! (it rejoins as a replica), so the cluster is whole for what runs next.

// In tests a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use support::{Server, redis_prefix, webhookd};
use webhookd_core::EventType;
use webhookd_store::{RedisStore, Store};
use webhookd_testkit::receiver::{Answer, Receiver};
use webhookd_testkit::{Service, require, subscription, video_events};

const EVENTS: usize = 20_000;

/// A cluster node: its address and the server process behind it.
struct Node {
    address: String,
    pid: u32,
}

/// A connection to one node of the cluster (by `host:port`), if it answers.
async fn node(address: &str) -> Option<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(format!("redis://{address}")).ok()?;
    client.get_multiplexed_async_connection().await.ok()
}

/// A node's answer to `command` (a text one: CLUSTER NODES, INFO…); empty
/// when it fails.
async fn ask(connection: &mut redis::aio::MultiplexedConnection, command: &[&str]) -> String {
    redis::cmd(command[0])
        .arg(&command[1..])
        .query_async(connection)
        .await
        .unwrap_or_default()
}

/// The first node of a `redis+cluster://` URL.
fn seed(cluster_url: &str) -> &str {
    let nodes = cluster_url.split("://").nth(1).unwrap();
    nodes.split(',').next().unwrap()
}

/// The primary holding johndoe's data under `prefix` (all of one user's
/// data is in one slot, so on one primary; other keys of the prefix — the
/// users, the settings — may be elsewhere).
async fn primary_holding(cluster_url: &str, prefix: &str) -> Node {
    let mut seed = node(seed(cluster_url)).await.unwrap();
    let nodes = ask(&mut seed, &["CLUSTER", "NODES"]).await;
    for line in nodes
        .lines()
        .filter(|line| line.contains("master") && !line.contains("fail"))
    {
        let address = line.split(' ').nth(1).unwrap().split('@').next().unwrap();
        let mut primary = node(address).await.unwrap();
        let mut found = false;
        let mut cursor = "0".to_owned();
        loop {
            let (next, keys): (String, Vec<String>) = redis::cmd("SCAN")
                .arg(&cursor)
                .arg("MATCH")
                .arg(format!("{prefix}*u:johndoe:endpoints"))
                .arg("COUNT")
                .arg(10_000)
                .query_async(&mut primary)
                .await
                .unwrap();
            found |= !keys.is_empty();
            if found || next == "0" {
                break;
            }
            cursor = next;
        }
        if !found {
            continue;
        }
        let info = ask(&mut primary, &["INFO", "server"]).await;
        let pid = info
            .lines()
            .find_map(|l| l.strip_prefix("process_id:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        return Node {
            address: address.to_owned(),
            pid,
        };
    }
    panic!("no primary holds johndoe's data under {prefix}");
}

/// Whether the other nodes see `killed` as failed and holding no slots
/// any more: its replica was promoted.
async fn failed_over(cluster_url: &str, killed: &str) -> bool {
    let nodes = cluster_url.split("://").nth(1).unwrap().split(',');
    for address in nodes.filter(|address| *address != killed) {
        let Some(mut connection) = node(address).await else {
            continue;
        };
        let view = ask(&mut connection, &["CLUSTER", "NODES"]).await;
        let Some(line) = view
            .lines()
            .find(|line| line.contains(&format!(" {killed}@")))
        else {
            continue;
        };
        let fields: Vec<&str> = line.split(' ').collect();
        let failed = fields[2].split(',').any(|flag| flag == "fail");
        // Fields past the eighth are slot ranges.
        return failed && fields.len() <= 8;
    }
    false
}

async fn cluster_is_whole(cluster_url: &str) -> bool {
    let Some(mut seed) = node(seed(cluster_url)).await else {
        return false;
    };
    let info = ask(&mut seed, &["CLUSTER", "INFO"]).await;
    let nodes = ask(&mut seed, &["CLUSTER", "NODES"]).await;
    info.contains("cluster_state:ok") && !nodes.contains("fail") && nodes.lines().count() == 6
}

/// The store, johndoe's endpoint at `receiver`, and [`EVENTS`] events in
/// `queue`.
async fn prepare(
    cluster_url: &str,
    amqp_url: &str,
    queue: &str,
    receiver: &Receiver,
) -> RedisStore {
    let store = RedisStore::connect(cluster_url, &redis_prefix())
        .await
        .unwrap();
    let endpoint = subscription(
        "johndoe",
        &receiver.url,
        &[EventType::GENERATED_VIDEO_SUCCESS],
    );
    store.create_endpoint(&endpoint, 20).await.unwrap();
    webhookd_testkit::amqp::publish(amqp_url, queue, video_events("johndoe", 0..EVENTS)).await;
    store
}

/// As an orchestrator would, starts the killed node again once its replica
/// has taken over: it rejoins as the new primary's replica. Until then the
/// new primary has no replica, so accepts waiting for one
/// (WEBHOOKD_REDIS_WAIT_REPLICAS=1) fail and are retried. Not before: the
/// nodes persist nothing, and a node back before its replica was promoted
/// would take its slots back empty.
fn restart_after_failover(
    runtime: &tokio::runtime::Runtime,
    cluster_url: &str,
    killed: &Node,
    killed_at: Instant,
) {
    let failover_by = Instant::now() + Duration::from_secs(60);
    while !runtime.block_on(failed_over(cluster_url, &killed.address)) {
        assert!(
            Instant::now() < failover_by,
            "a replica of {} took over",
            killed.address
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "a replica took over {:.1} s after the kill",
        killed_at.elapsed().as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(1));
    let port = killed.address.rsplit(':').next().unwrap();
    let status = Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../.ci/redis-cluster"
    ))
    .args(["restart", port])
    .status()
    .unwrap();
    assert!(status.success(), "the killed node restarts");
}

#[test]
fn a_primary_and_a_process_killed_mid_stream_lose_nothing() {
    let (Some(amqp_url), Some(cluster_url)) =
        (require(Service::RabbitMq), require(Service::RedisCluster))
    else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let receiver = runtime.block_on(Receiver::start(Answer::Status(200)));
    let queue = webhookd_testkit::amqp::unique_queue("failover");
    let store = runtime.block_on(prepare(&cluster_url, &amqp_url, &queue, &receiver));
    let start = || {
        let mut command = webhookd(&cluster_url);
        command
            .env("WEBHOOKD_AMQP_URL", &amqp_url)
            .env("WEBHOOKD_AMQP_QUEUE", &queue)
            .env("WEBHOOKD_REDIS_WAIT_REPLICAS", "1")
            .env("WEBHOOKD_ALLOWED_NETWORKS", "127.0.0.0/8");
        Server::start_with(command)
    };
    let mut doomed = start();
    let _survivor = start();
    let distinct = || -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for received in receiver.received() {
            let id = received.headers["x-webhook-id"]
                .to_str()
                .unwrap()
                .to_owned();
            *counts.entry(id).or_default() += 1;
        }
        counts
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while distinct().len() < EVENTS / 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let primary = runtime.block_on(primary_holding(&cluster_url, &redis_prefix()));
    let at = distinct().len();
    Command::new("kill")
        .args(["-9", &primary.pid.to_string()])
        .status()
        .unwrap();
    let killed_at = Instant::now();
    doomed.child.kill().unwrap();
    doomed.child.wait().unwrap();
    let queued = runtime.block_on(webhookd_testkit::amqp::ready_count(&amqp_url, &queue));
    println!(
        "killed primary {} and one webhookd after {at} of {EVENTS} events, {queued} still queued",
        primary.address
    );

    restart_after_failover(&runtime, &cluster_url, &primary, killed_at);

    // The killed process's leases end within 50 s; the survivor sends them.
    let deadline = Instant::now() + Duration::from_secs(180);
    while distinct().len() < EVENTS && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let counts = distinct();
    let duplicates: usize = counts.values().map(|n| n - 1).sum();
    println!(
        "{} of {EVENTS} events arrived in {} requests: {duplicates} duplicates",
        counts.len(),
        receiver.count()
    );

    let whole_by = Instant::now() + Duration::from_secs(30);
    while !runtime.block_on(cluster_is_whole(&cluster_url)) && Instant::now() < whole_by {
        std::thread::sleep(Duration::from_millis(200));
    }

    assert_eq!(counts.len(), EVENTS, "every event arrives");
    // Nothing stuck: every delivery settles. Not at once: a record the
    // killed primary took but had not replicated is lost with it (see
    // docs/operations.md), so its delivery is sent again — a duplicate —
    // when its lease ends, 50 s after it was taken. And this test's own
    // connection lived through the failover too: it may need its own fresh
    // start (after 10 s of failures) to answer.
    let settle_by = Instant::now() + Duration::from_secs(120);
    loop {
        match runtime.block_on(store.delivery_stats(i64::MAX / 2)) {
            Ok(stats) if (stats.due, stats.scheduled, stats.dead) == (0, 0, 0) => break,
            Ok(stats) => assert!(Instant::now() < settle_by, "the store settles: {stats:?}"),
            Err(error) => assert!(Instant::now() < settle_by, "the store answers: {error}"),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let settled = distinct();
    println!(
        "settled: {} requests, {} duplicates",
        receiver.count(),
        settled.values().map(|n| n - 1).sum::<usize>()
    );
    assert!(
        runtime.block_on(cluster_is_whole(&cluster_url)),
        "the cluster is whole again"
    );
    runtime.block_on(webhookd_testkit::amqp::delete_queues(
        &amqp_url,
        &[&queue, &format!("{queue}.dead")],
    ));
}
