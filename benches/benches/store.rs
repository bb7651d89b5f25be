//! Micro-benchmarks of the store operations on the delivery path, on both
//! stores: fanning one event out to 20 endpoints, claiming a batch of 100
//! due deliveries, and recording 100 attempts. Redis runs at
//! `BENCH_REDIS_URL` (default the local server) under a key prefix of its
//! own; it is skipped, with a note, when Redis is not there.

use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use tokio::runtime::Runtime;
use webhookd_core::{Endpoint, EndpointStatus, Event, EventType, ids};
use webhookd_store::{
    AttemptRecord, AttemptResult, Claim, ClaimRequest, FinishedAttempt, RedisStore, SqliteStore,
    Store,
};

const BATCH: usize = 100;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// What a benchmark leaves behind: the SQLite directory, removed on drop,
/// and the Redis keys under its prefix, removed by [`Leftovers::remove`].
struct Leftovers {
    _dir: tempfile::TempDir,
    redis: Option<(String, String)>,
}

impl Leftovers {
    fn remove(self, runtime: &Runtime) {
        let Some((url, prefix)) = self.redis else {
            return;
        };
        runtime.block_on(async {
            let Ok(client) = redis::Client::open(url) else {
                return;
            };
            let Ok(mut connection) = client.get_multiplexed_async_connection().await else {
                return;
            };
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{prefix}*"))
                .query_async(&mut connection)
                .await
                .unwrap_or_default();
            for chunk in keys.chunks(1000) {
                let _: redis::RedisResult<()> = redis::cmd("UNLINK")
                    .arg(chunk)
                    .query_async(&mut connection)
                    .await;
            }
        });
    }
}

/// A store to measure, by name.
type Named = (&'static str, Arc<dyn Store>);

/// The stores to measure: SQLite in a temporary directory, and Redis if it
/// answers.
fn stores(runtime: &Runtime) -> (Vec<Named>, Leftovers) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("bench.db");
    let sqlite = runtime
        .block_on(SqliteStore::open(path.to_str().expect("UTF-8 path")))
        .expect("SQLite opens");
    let mut stores: Vec<Named> = vec![("sqlite", Arc::new(sqlite))];
    let mut leftovers = Leftovers {
        _dir: dir,
        redis: None,
    };
    let url =
        std::env::var("BENCH_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into());
    let prefix = format!("bench:criterion:{}:", uuid::Uuid::now_v7().simple());
    match runtime.block_on(RedisStore::connect(&url, &prefix)) {
        Ok(redis) if runtime.block_on(redis.ping()).is_ok() => {
            stores.push(("redis", Arc::new(redis)));
            leftovers.redis = Some((url, prefix));
        }
        _ => eprintln!("Redis at {url} does not answer: its store benchmarks are skipped"),
    }
    (stores, leftovers)
}

/// A user `username` with `count` endpoints subscribed to video events.
fn subscribe(runtime: &Runtime, store: &dyn Store, username: &str, count: usize) {
    for n in 0..count {
        let endpoint = Endpoint {
            ordering: None,
            filter: None,
            endpoint_id: ids::new_endpoint_id(),
            url: format!("https://example.com/{username}/{n}"),
            secret: ids::new_secret(),
            status: EndpointStatus::Enabled,
            events: vec![EventType::GENERATED_VIDEO_SUCCESS],
            username: username.to_owned(),
            created_at: 0,
            previous_secret: None,
            failing_since: None,
            quota_refused: 0,
            disabled_reason: None,
            rate_limit: None,
            options: None,
        };
        runtime
            .block_on(store.create_endpoint(&endpoint, 20))
            .expect("endpoint created");
    }
}

fn events(username: &str, count: usize) -> Vec<Event> {
    (0..count)
        .map(|_| {
            let message = format!(
                r#"{{"event":"generated_video_success","username":"{username}","event_id":"{}","data":{{"video_id":"v1","duration":30}}}}"#,
                ids::new_event_id()
            );
            Event::parse(message.as_bytes(), 0).expect("a valid event")
        })
        .collect()
}

fn claim_everything(runtime: &Runtime, store: &dyn Store) -> Vec<Claim> {
    let now = webhookd_core::time::unix_millis();
    let request = ClaimRequest {
        now_ms: now,
        lease_until_ms: now + 60_000,
        park_until_ms: now + 60_000,
        limit: BATCH,
        per_endpoint: BATCH,
        ..ClaimRequest::default()
    };
    runtime
        .block_on(store.claim_due(&request))
        .expect("claimed")
}

fn fan_out(c: &mut Criterion) {
    let runtime = runtime();
    let (stores, leftovers) = stores(&runtime);
    let mut group = c.benchmark_group("store/fan_out_one_event_to_20_endpoints");
    group.throughput(Throughput::Elements(20));
    for (name, store) in &stores {
        subscribe(&runtime, &**store, "fanout", 20);
        group.bench_function(*name, |b| {
            b.iter_batched(
                || events("fanout", 1),
                |events| {
                    runtime
                        .block_on(store.accept_events(&events, webhookd_core::time::unix_millis()))
                        .expect("accepted")
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
    leftovers.remove(&runtime);
}

fn claim_and_record(c: &mut Criterion) {
    let runtime = runtime();
    let (stores, leftovers) = stores(&runtime);
    let mut claiming = c.benchmark_group("store/claim_100_due");
    claiming.throughput(Throughput::Elements(BATCH as u64));
    for (name, store) in &stores {
        subscribe(&runtime, &**store, "claims", 1);
        claiming.bench_function(*name, |b| {
            b.iter_batched(
                || {
                    let now = webhookd_core::time::unix_millis() - 1;
                    runtime
                        .block_on(store.accept_events(&events("claims", BATCH), now))
                        .expect("accepted");
                },
                |()| assert_eq!(claim_everything(&runtime, &**store).len(), BATCH),
                BatchSize::PerIteration,
            );
        });
    }
    claiming.finish();

    let mut recording = c.benchmark_group("store/record_100_attempts");
    recording.throughput(Throughput::Elements(BATCH as u64));
    for (name, store) in &stores {
        subscribe(&runtime, &**store, "records", 1);
        recording.bench_function(*name, |b| {
            b.iter_batched(
                || {
                    let now = webhookd_core::time::unix_millis() - 1;
                    runtime
                        .block_on(store.accept_events(&events("records", BATCH), now))
                        .expect("accepted");
                    claim_everything(&runtime, &**store)
                        .into_iter()
                        .map(|claim| FinishedAttempt {
                            record: AttemptRecord {
                                attempt: 1,
                                started_at: 0,
                                duration_ms: 3,
                                status_code: Some(200),
                                reason: "ok".into(),
                                response: None,
                                signing: None,
                            },
                            result: AttemptResult::Delivered,
                            claim,
                        })
                        .collect::<Vec<_>>()
                },
                |finished| {
                    runtime
                        .block_on(store.record_attempts(&finished))
                        .expect("recorded")
                },
                BatchSize::PerIteration,
            );
        });
    }
    recording.finish();
    leftovers.remove(&runtime);
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = fan_out, claim_and_record
}
criterion_main!(benches);
