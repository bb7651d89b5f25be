//! SPEC §10, several processes on one store: endpoint changes heard across
//! processes, sending slots and rate limits counted in the store, and
//! accepts that wait for replicas — on one Redis and on the local cluster.

use super::lifecycle::{accept_many, wait_until};
use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_another_process_hears_of_endpoint_changes() {
    if let Some(url) = require(Service::Redis) {
        another_process_hears_of_endpoint_changes(&url, &url).await;
    }
}

/// On a cluster the change is published on the endpoint's primary; a
/// process subscribed through another node hears it all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_another_process_hears_of_endpoint_changes() {
    let Some(url) = require(Service::RedisCluster) else {
        return;
    };
    let (scheme, nodes) = url.split_once("://").unwrap();
    let mut reversed: Vec<&str> = nodes.split(',').collect();
    reversed.reverse();
    let elsewhere = format!("{scheme}://{}", reversed.join(","));
    another_process_hears_of_endpoint_changes(&url, &elsewhere).await;
}

async fn another_process_hears_of_endpoint_changes(here: &str, there: &str) {
    let prefix = unique_prefix("fence");
    let here = RedisStore::connect(here, &prefix).await.unwrap();
    let there = Arc::new(RedisStore::connect(there, &prefix).await.unwrap());
    let target = endpoint("far", 1);
    create(&here, &target).await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let following = {
        let (there, shutdown) = (Arc::clone(&there), shutdown.clone());
        tokio::spawn(async move { there.follow_endpoint_changes(shutdown).await })
    };
    let fence = there.endpoint_changes();
    // Subscribing marks everything once.
    wait_until(|| fence.version() > 0).await;
    let before = fence.version();
    assert!(
        here.delete_endpoint("far", &target.endpoint_id)
            .await
            .unwrap()
    );
    wait_until(|| fence.changed_since(&target.endpoint_id, before)).await;
    shutdown.cancel();
    following.await.unwrap();
}

/// A subscription that dies silently (a frozen link: no reset, nothing
/// moves) is noticed by its silence — every process publishes heartbeats —
/// and taken for "everything changed", so the fence never goes blind: a
/// change made meanwhile reaches the held claims as a re-read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silently_dead_change_subscription_is_noticed() {
    let Some(url) = require(Service::Redis) else {
        return;
    };
    let prefix = unique_prefix("silent_fence");
    let link =
        webhookd_testkit::CuttableProxy::start(webhookd_testkit::service_address(Service::Redis))
            .await;
    let here = RedisStore::connect(&url, &prefix).await.unwrap();
    let there = Arc::new(
        RedisStore::connect(&Service::Redis.url_through(link.address), &prefix)
            .await
            .unwrap(),
    );
    let target = endpoint("far", 1);
    create(&here, &target).await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let following = {
        let (there, shutdown) = (Arc::clone(&there), shutdown.clone());
        tokio::spawn(async move { there.follow_endpoint_changes(shutdown).await })
    };
    let fence = there.endpoint_changes();
    wait_until(|| fence.version() > 0).await;
    let before = fence.version();
    link.freeze();
    assert!(
        here.delete_endpoint("far", &target.endpoint_id)
            .await
            .unwrap()
    );
    // The silence limit (15 s) and a margin.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(25);
    while !fence.changed_since(&target.endpoint_id, before) {
        assert!(
            std::time::Instant::now() < deadline,
            "the fence went blind with its subscription"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    link.restore();
    shutdown.cancel();
    following.await.unwrap();
}

/// SPEC §10: an endpoint's sending slots are counted in the store, so
/// several processes together never send more than the limit at once —
/// through claims and the fast path alike. A lane holding slots may queue
/// claims behind them; a slot passes from claim to claim, frees its place
/// when given up (recorded or handed back), or lapses (a crashed worker's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sending_slots_hold_across_processes() {
    if let Some(url) = require(Service::Redis) {
        sending_slots_hold_across_processes(&url).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_sending_slots_hold_across_processes() {
    if let Some(url) = require(Service::RedisCluster) {
        sending_slots_hold_across_processes(&url).await;
    }
}

async fn sending_slots_hold_across_processes(url: &str) {
    const LIMIT: usize = 3;
    let prefix = unique_prefix("slots");
    let one = RedisStore::connect(url, &prefix).await.unwrap();
    let two = RedisStore::connect(url, &prefix).await.unwrap();
    assert!(one.counts_sending_slots());
    let target = endpoint("busy", 1);
    let quiet = endpoint("calm", 1);
    create(&one, &target).await;
    create(&one, &quiet).await;
    accept_many(&one, "busy", 20).await;
    accept_many(&one, "calm", 2).await;
    let request = |now_ms, held: usize| ClaimRequest {
        endpoint_limit: LIMIT,
        room: HashMap::from([(target.endpoint_id.clone(), 10)]),
        slots_held: HashMap::from([(target.endpoint_id.clone(), held)]),
        ..claim_request(now_ms, 50)
    };
    let busy = |claims: &[Claim]| -> (usize, usize) {
        let mine: Vec<&Claim> = claims
            .iter()
            .filter(|c| c.delivery.endpoint_id == target.endpoint_id)
            .collect();
        (mine.len(), mine.iter().filter(|c| c.slot.is_some()).count())
    };

    // Ten claims, three of them with the slots; the rest queue behind.
    let first = one.claim_due(&request(NOW_MS, 0)).await.unwrap();
    assert_eq!(busy(&first), (10, LIMIT));
    // Another process gets none of the full endpoint, and it hides nobody
    // else's.
    let second = two.claim_due(&request(NOW_MS, 0)).await.unwrap();
    assert_eq!(busy(&second), (0, 0));
    assert_eq!(first.len() + second.len() - 10, 2, "calm's two");
    // The fast path counts too: a fresh event leases nothing for it there.
    let fresh = |n: u32| {
        [event(
            "busy",
            &format!("evt_fresh_{n}"),
            &EventType::GENERATED_VIDEO_SUCCESS,
        )]
    };
    let (_, fast) = two
        .accept_and_claim(&fresh(1), NOW_MS, &request(NOW_MS, 0))
        .await
        .unwrap();
    assert!(fast.is_empty(), "{fast:?}");

    let with_slot: Vec<Claim> = first.iter().filter(|c| c.slot.is_some()).cloned().collect();
    let settled = |claim: &Claim, keep_until: Option<i64>| Claim {
        slot: claim
            .slot
            .clone()
            .map(|slot| webhookd_store::SendingSlot { keep_until, ..slot }),
        ..claim.clone()
    };
    // A slot passed on to the lane's next claim stays taken…
    let kept = settled(&with_slot[0], Some(NOW_MS + LEASE_MS));
    assert!(
        one.record_attempt(
            &kept,
            &attempt(1, Some(200), "ok"),
            AttemptResult::Delivered
        )
        .await
        .unwrap()
    );
    assert_eq!(
        busy(&two.claim_due(&request(NOW_MS + 1, 0)).await.unwrap()),
        (0, 0)
    );
    // …one given up frees its place at once (not when it would lapse): the
    // other process gets it, and queues the rest behind it.
    let given_up = settled(&with_slot[1], None);
    assert!(
        one.record_attempt(
            &given_up,
            &attempt(1, Some(200), "ok"),
            AttemptResult::Delivered
        )
        .await
        .unwrap()
    );
    assert_eq!(
        busy(&two.claim_due(&request(NOW_MS + 2, 0)).await.unwrap()),
        (10, 1)
    );
    // Handing a claim back gives up the slot it carries, for the fast path.
    assert!(
        one.release(&settled(&with_slot[2], None), NOW_MS)
            .await
            .unwrap()
    );
    let (_, fast) = two
        .accept_and_claim(&fresh(2), NOW_MS + 3, &request(NOW_MS + 3, 0))
        .await
        .unwrap();
    assert_eq!((fast.len(), fast[0].slot.is_some()), (1, true));
    assert_eq!(
        busy(&two.claim_due(&request(NOW_MS + 4, 0)).await.unwrap()),
        (0, 0)
    );

    // A crashed process's slots lapse: the kept one (renewed until
    // NOW_MS + LEASE_MS) and the two granted at NOW_MS + 2 and + 3.
    let later = NOW_MS + 4 + LEASE_MS;
    assert_eq!(
        busy(&two.claim_due(&request(later, 0)).await.unwrap()).1,
        LIMIT
    );
}

/// `redis_wait_replicas`: an accepted batch counts as durable only once
/// that many replicas of its primary have it (each primary of the local
/// cluster has one), else the accept fails as unavailable, to be retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_accepts_wait_for_the_replicas_asked_for() {
    let Some(url) = require(Service::RedisCluster) else {
        return;
    };
    let prefix = unique_prefix("wait");
    let store = RedisStore::connect(&url, &prefix).await.unwrap();
    create(&store, &endpoint("waits", 1)).await;
    let replicated = store.clone().with_wait_replicas(1);
    let accepted = replicated
        .accept_events(
            &[event("waits", "evt_1", &EventType::GENERATED_VIDEO_SUCCESS)],
            NOW_MS,
        )
        .await
        .unwrap();
    assert_eq!(deliveries(accepted.into_iter().next().unwrap()).len(), 1);

    let too_many = store.with_wait_replicas(2);
    let started = std::time::Instant::now();
    let error = too_many
        .accept_events(
            &[event("waits", "evt_2", &EventType::GENERATED_VIDEO_SUCCESS)],
            NOW_MS,
        )
        .await
        .unwrap_err();
    assert!(error.is_unavailable(), "{error}");
    assert!(error.to_string().contains("1 of the 2 replicas"), "{error}");
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
}

/// SPEC §10: an endpoint's `rate_limit` caps the deliveries that start:
/// a burst of one second's worth, then the rate — for claims and the fast
/// path alike; removing it lifts the cap.
pub(crate) async fn a_rate_limit_caps_the_deliveries_that_start_each_second(store: Arc<dyn Store>) {
    let metered = Endpoint {
        rate_limit: Some(5),
        ..endpoint("metered", 1)
    };
    create(&*store, &metered).await;
    let read = store
        .get_endpoint("metered", &metered.endpoint_id)
        .await
        .unwrap();
    assert_eq!(read.unwrap().rate_limit, Some(5));
    accept_many(&*store, "metered", 20).await;

    assert_eq!(
        claim_at(&*store, NOW_MS, 50).await.len(),
        5,
        "one second's worth"
    );
    assert!(claim_at(&*store, NOW_MS + 1, 50).await.is_empty());
    // 2.5 tokens in 500 ms.
    assert_eq!(claim_at(&*store, NOW_MS + 500, 50).await.len(), 2);
    let (_, fast) = store
        .accept_and_claim(
            &[event(
                "metered",
                "evt_fast",
                &EventType::GENERATED_VIDEO_SUCCESS,
            )],
            NOW_MS + 500,
            &claim_request(NOW_MS + 500, 50),
        )
        .await
        .unwrap();
    assert!(fast.is_empty(), "no token for the fast path either");
    // Idle for long: still one second's worth, not ten.
    assert_eq!(claim_at(&*store, NOW_MS + 10_000, 50).await.len(), 5);

    let unlimited = EndpointSpec {
        ordering: None,
        filter: None,
        url: metered.url.clone(),
        status: None,
        events: metered.events.clone(),
        rate_limit: Some(None),
        options: None,
    };
    let updated = store
        .update_endpoint("metered", &metered.endpoint_id, &unlimited)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(updated.rate_limit, None);
    // The rest: 20 + 1 accepted, 12 claimed.
    assert_eq!(claim_at(&*store, NOW_MS + 10_001, 50).await.len(), 9);
}

/// On a cluster one partition that does not answer the claim probe (a
/// primary failing over; here, a partition whose ready index is not what
/// webhookd wrote) no longer stops claims everywhere: the other
/// partitions' due work is claimed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_claims_go_on_when_a_partition_does_not_answer() {
    let Some(url) = require(Service::RedisCluster) else {
        return;
    };
    let prefix = unique_prefix("probe");
    let store = RedisStore::connect(&url, &prefix).await.unwrap();
    // Users spread over partitions, each with one due delivery.
    for n in 0..24 {
        let username = format!("user{n}");
        create(&store, &endpoint(&username, 1)).await;
        accept(
            &store,
            &event(
                &username,
                &format!("evt_{n}"),
                &EventType::GENERATED_VIDEO_SUCCESS,
            ),
        )
        .await;
    }
    // Break one partition's ready index, on the node that holds it.
    let mut broken = None;
    for node in cluster_primaries(&url).await {
        let client = ::redis::Client::open(format!("redis://{node}")).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<String> = ::redis::cmd("KEYS")
            .arg(format!("{prefix}*ready"))
            .query_async(&mut connection)
            .await
            .unwrap();
        if let Some(key) = keys.first() {
            let _: () = ::redis::cmd("SET")
                .arg(key)
                .arg("not a sorted set")
                .query_async(&mut connection)
                .await
                .unwrap();
            broken = Some(key.clone());
            break;
        }
    }
    assert!(broken.is_some(), "some partition has a ready index");
    let claims = store
        .claim_due(&claim_request(NOW_MS, 100))
        .await
        .expect("the other partitions answer");
    assert!(!claims.is_empty());
    assert!(claims.len() < 24, "the broken partition's delivery waits");
}

/// `host:port` of the cluster's primaries, as its first node sees them.
async fn cluster_primaries(url: &str) -> Vec<String> {
    let seed = url
        .split_once("://")
        .and_then(|(_, nodes)| nodes.split(',').next())
        .unwrap();
    let client = ::redis::Client::open(format!("redis://{seed}")).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let nodes: String = ::redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut connection)
        .await
        .unwrap();
    nodes
        .lines()
        .filter(|line| line.contains("master") && !line.contains("fail"))
        .filter_map(|line| line.split(' ').nth(1))
        .filter_map(|address| address.split('@').next())
        .map(str::to_owned)
        .collect()
}
