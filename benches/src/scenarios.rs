//! The scenarios. Each sets up its own queue, store namespace, receiver and
//! webhookd process, measures, checks that every event arrived exactly as
//! sent (a run that lost or mis-signed anything fails), and tears down.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use webhookd_core::{Endpoint, EndpointStatus, EventType, ids};
use webhookd_store::{RedisStore, SqliteStore, Store};

use crate::broker::{Broker, per_second, unique_queue};
use crate::commandstats::CommandStats;
use crate::cpu::CpuSample;
use crate::receiver::Receiver;
use crate::report::{Ceiling, Row, Target};
use crate::webhookd::Webhookd;

/// Where the scenarios run, and how big they are.
#[derive(Debug, Clone)]
pub struct Settings {
    pub webhookd: PathBuf,
    pub amqp_url: String,
    pub redis_url: String,
    pub redis_cluster_url: String,
    /// Events per drain-type scenario.
    pub events: u64,
    pub latency_rate: u32,
    pub latency_duration: Duration,
    /// Deliveries in the retry backlog of the memory scenario.
    pub backlog: u64,
    /// More settings for the webhookd of the drain-type scenarios (`--env`:
    /// in an A/B, this build's only).
    pub extra_env: Vec<(&'static str, String)>,
}

/// How long a scenario may go without a new delivery before it is a failure.
const STALL: Duration = Duration::from_secs(30);
/// Concurrent requests of the raw HTTP ceiling.
const HTTP_CEILING_CONCURRENCY: usize = 64;
/// Concurrent producers in the embedded (HTTP ingest) scenario.
const INGEST_CONCURRENCY: usize = 32;

/// The ceilings the scenarios are compared with, measured in the same run.
#[derive(Debug, Clone, Copy)]
pub struct Ceilings {
    pub amqp_publish: f64,
    pub amqp_drain: f64,
    pub http: f64,
}

impl Ceilings {
    /// The lower of RabbitMQ drain and raw HTTP: what a single-endpoint
    /// drain could reach if webhookd cost nothing.
    pub fn pipeline(&self) -> Ceiling {
        if self.amqp_drain < self.http {
            Ceiling::new("RabbitMQ drain", self.amqp_drain)
        } else {
            Ceiling::new("raw HTTP", self.http)
        }
    }
}

pub async fn ceilings(settings: &Settings) -> anyhow::Result<(Ceilings, Vec<Row>)> {
    let broker = Broker::connect(&settings.amqp_url).await?;
    let queue = unique_queue("ceiling");
    let amqp_publish = broker.preload(&queue, 0..settings.events).await?;
    let amqp_drain = broker.drain(&queue, settings.events).await?;
    broker.delete(&[&queue]).await;

    let secret = ids::new_secret();
    let receiver = Receiver::start(vec![secret.clone()]).await?;
    let http = crate::http::post_rate(
        &receiver.endpoint_url(0),
        &secret,
        settings.events,
        HTTP_CEILING_CONCURRENCY,
    )
    .await?;
    let counts = receiver.counts();
    ensure!(
        counts.distinct as u64 == settings.events && counts.bad_signatures == 0,
        "the raw HTTP ceiling lost requests: {counts:?}"
    );
    let ceilings = Ceilings {
        amqp_publish,
        amqp_drain,
        http,
    };
    let rows = vec![
        Row::rate(
            "ceiling: RabbitMQ publish (confirms)",
            amqp_publish,
            "msg/s",
        ),
        Row::rate("ceiling: RabbitMQ drain (multi-ack)", amqp_drain, "msg/s"),
        Row::rate("ceiling: raw HTTP POST, signed", http, "req/s"),
    ];
    Ok((ceilings, rows))
}

/// A store namespace of its own for one scenario, removed afterwards.
struct Tenant {
    store: Arc<dyn Store>,
    env: Vec<(&'static str, String)>,
    redis: Option<(String, String)>,
    _sqlite_dir: Option<tempfile::TempDir>,
}

impl Tenant {
    async fn redis(redis_url: &str) -> anyhow::Result<Tenant> {
        // As long as the default `webhookd:`, so that Redis bytes per
        // delivery are what a deployment sees; the random tail of a UUIDv7
        // keeps concurrent runs apart.
        let id = uuid::Uuid::now_v7().simple().to_string();
        let prefix = format!("b{}:", &id[25..]);
        let store = RedisStore::connect(redis_url, &prefix)
            .await
            .with_context(|| format!("connecting to Redis at {redis_url}"))?;
        Ok(Tenant {
            store: Arc::new(store),
            env: vec![
                ("WEBHOOKD_STORE", redis_url.to_owned()),
                ("WEBHOOKD_REDIS_PREFIX", prefix.clone()),
            ],
            redis: Some((redis_url.to_owned(), prefix)),
            _sqlite_dir: None,
        })
    }

    async fn sqlite() -> anyhow::Result<Tenant> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("webhookd.db");
        let path = path.to_str().context("temporary path is UTF-8")?.to_owned();
        let store = SqliteStore::open(&path).await?;
        Ok(Tenant {
            store: Arc::new(store),
            env: vec![("WEBHOOKD_STORE", format!("sqlite://{path}"))],
            redis: None,
            _sqlite_dir: Some(dir),
        })
    }

    /// Subscribes a new endpoint of user `bench` at `url`.
    async fn endpoint(&self, url: String, secret: &str) -> anyhow::Result<()> {
        self.endpoint_of("bench", url, secret).await
    }

    /// Subscribes a new endpoint of `username` at `url`.
    async fn endpoint_of(&self, username: &str, url: String, secret: &str) -> anyhow::Result<()> {
        self.routed_endpoint_of(username, url, secret, None, None)
            .await
    }

    /// [`Tenant::endpoint_of`] with a payload filter and an ordering
    /// (SPEC §15).
    async fn routed_endpoint_of(
        &self,
        username: &str,
        url: String,
        secret: &str,
        filter: Option<&str>,
        ordering: Option<&str>,
    ) -> anyhow::Result<()> {
        let endpoint = Endpoint {
            ordering: ordering.map(str::to_owned),
            filter: filter.map(str::to_owned),
            endpoint_id: ids::new_endpoint_id(),
            url,
            secret: secret.to_owned(),
            status: EndpointStatus::Enabled,
            events: vec![EventType::GENERATED_VIDEO_SUCCESS],
            username: username.into(),
            created_at: 0,
            previous_secret: None,
            failing_since: None,
            quota_refused: 0,
            disabled_reason: None,
            rate_limit: None,
            options: None,
        };
        self.store.create_endpoint(&endpoint, 20).await?;
        Ok(())
    }

    /// Removes every key of this namespace (Redis; SQLite goes with its
    /// directory).
    async fn remove(self) {
        let Some((url, prefix)) = self.redis else {
            return;
        };
        let Ok(client) = redis::Client::open(url) else {
            return;
        };
        let Ok(mut connection) = client.get_multiplexed_async_connection().await else {
            return;
        };
        let mut keys: Vec<String> = Vec::new();
        if let Ok(mut scan) = redis::cmd("SCAN")
            .cursor_arg(0)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(5000)
            .clone()
            .iter_async::<String>(&mut connection)
            .await
        {
            while let Some(Ok(key)) = scan.next_item().await {
                keys.push(key);
            }
        }
        for chunk in keys.chunks(1000) {
            let _: redis::RedisResult<()> = redis::cmd("UNLINK")
                .arg(chunk)
                .query_async(&mut connection)
                .await;
        }
    }
}

/// The environment of a webhookd consuming `queue`.
fn amqp_env(settings: &Settings, tenant: &Tenant, queue: &str) -> Vec<(&'static str, String)> {
    let mut env = tenant.env.clone();
    env.push(("WEBHOOKD_AMQP_URL", settings.amqp_url.clone()));
    env.push(("WEBHOOKD_AMQP_QUEUE", queue.to_owned()));
    env.extend(settings.extra_env.iter().cloned());
    env
}

/// How a drain-type scenario is shaped.
#[derive(Debug, Clone, Copy)]
pub struct DrainShape {
    pub events: u64,
    /// Healthy endpoints per event.
    pub endpoints: usize,
    /// One more endpoint per event that never answers.
    pub hanging_endpoint: bool,
    /// webhookd processes sharing the store and the queue.
    pub processes: usize,
    /// Owners the events are spread over, each with `endpoints` endpoints
    /// of its own (on a cluster, their data spreads over the shards).
    pub tenants: usize,
    /// Every endpoint has a payload filter that every event passes
    /// ([`BENCH_FILTER`]): the filters' cost, with the same deliveries.
    pub filtered: bool,
    /// Every endpoint is ordered by [`BENCH_ORDERING`], a line per event
    /// (SPEC §15): the lines' bookkeeping, with the same deliveries.
    pub ordered: bool,
}

/// The bench events' `n` is unique: each event is a line of its own, so
/// the order holds nothing back and what is measured is its cost.
pub const BENCH_ORDERING: &str = "/data/n";

/// Three conditions over the bench events' `event` and `data` (`{"n",
/// "sent_at_us"}`), all holding: each is evaluated for each endpoint.
pub const BENCH_FILTER: &str =
    r#"{"event":"generated_video_success","data.n":{"$gte":0},"data.sent_at_us":{"$exists":true}}"#;

impl DrainShape {
    /// One webhookd process, one tenant.
    pub fn one_process(events: u64, endpoints: usize, hanging_endpoint: bool) -> DrainShape {
        DrainShape {
            events,
            endpoints,
            hanging_endpoint,
            processes: 1,
            tenants: 1,
            filtered: false,
            ordered: false,
        }
    }
}

/// What a drain-type scenario measured.
#[derive(Debug, Clone)]
pub struct Drained {
    /// Healthy deliveries per second, from webhookd's start to the last one.
    pub rate: f64,
    pub usage: crate::webhookd::Usage,
    pub duplicates: usize,
    /// Where the machine's CPU went meanwhile.
    pub cpu: crate::cpu::CpuUse,
    /// What Redis ran meanwhile (one server only).
    pub redis: Option<CommandStats>,
    /// Deliveries the figure counts (the CPU column divides by them).
    pub deliveries: usize,
}

/// Preloads the queue, starts webhookd, and times it until the receiver has
/// verified every healthy delivery.
pub async fn drain(settings: &Settings, shape: DrainShape) -> anyhow::Result<Drained> {
    drain_on(settings, &settings.redis_url, shape).await
}

/// [`drain`] on the store at `redis_url` (one server or a cluster).
pub async fn drain_on(
    settings: &Settings,
    redis_url: &str,
    shape: DrainShape,
) -> anyhow::Result<Drained> {
    let tenants = shape.tenants.max(1);
    let secrets: Vec<String> = (0..shape.endpoints * tenants)
        .map(|_| ids::new_secret())
        .collect();
    let receiver = Receiver::start(secrets.clone()).await?;
    let tenant = Tenant::redis(redis_url).await?;
    for (n, secret) in secrets.iter().enumerate() {
        let owner = if tenants == 1 {
            "bench".to_owned()
        } else {
            crate::broker::tenant_name((n / shape.endpoints) as u64)
        };
        let filter = shape.filtered.then_some(BENCH_FILTER);
        let ordering = shape.ordered.then_some(BENCH_ORDERING);
        tenant
            .routed_endpoint_of(&owner, receiver.endpoint_url(n), secret, filter, ordering)
            .await?;
    }
    if shape.hanging_endpoint {
        tenant
            .endpoint(receiver.hanging_url(), &ids::new_secret())
            .await?;
    }
    let broker = Broker::connect(&settings.amqp_url).await?;
    let queue = unique_queue("drain");
    broker
        .preload_for(&queue, 0..shape.events, tenants as u64)
        .await?;

    let expected = usize::try_from(shape.events)? * shape.endpoints;
    let mut processes = Vec::new();
    for _ in 0..shape.processes.max(1) {
        processes
            .push(Webhookd::start(&settings.webhookd, &amqp_env(settings, &tenant, &queue)).await?);
    }
    let webhookd = &processes[0];
    let pids: Vec<u32> = processes.iter().map(Webhookd::pid).collect();
    let nodes = crate::cpu::redis_nodes(redis_url).await;
    // One server: what Redis ran, per delivery (a cluster has a count per
    // node; not read).
    let one_server = nodes.is_empty();
    if one_server {
        CommandStats::reset(redis_url).await?;
    }
    let cpu_before = CpuSample::take_all(&pids);
    let nodes_before = crate::cpu::node_seconds(&nodes);
    let all_arrived = receiver
        .wait_until(|r| r.counts().distinct >= expected, STALL)
        .await;
    let mut cpu = CpuSample::take_all(&pids).since(&cpu_before);
    let redis = if one_server {
        Some(CommandStats::read(redis_url).await?)
    } else {
        None
    };
    if nodes.len() > 1 {
        cpu.summary
            .push_str(&crate::cpu::per_node(&nodes, &nodes_before));
    }
    let usage = webhookd.usage();
    let counts = receiver.counts();
    // The clock runs from webhookd's start to the last new delivery.
    let elapsed = receiver
        .last_new_at()
        .unwrap_or_else(Instant::now)
        .duration_since(webhookd.started_at);
    let log = webhookd.log_tail();
    let name = match (shape.endpoints, shape.hanging_endpoint, shape.filtered) {
        (_, true, _) => "slow",
        (1, false, _) if shape.ordered => "drain-ordered",
        (1, false, _) => "drain",
        (_, false, true) => "fanout-filtered",
        _ => "fanout",
    };
    webhookd.save_metrics(name).await;
    drop(processes);
    broker.delete(&[&queue, &format!("{queue}.dead")]).await;
    tenant.remove().await;
    all_arrived_intact(all_arrived, &counts, expected, &log)?;
    Ok(Drained {
        rate: per_second(expected as u64, elapsed),
        usage,
        duplicates: counts.duplicates,
        cpu,
        redis,
        deliveries: expected,
    })
}

/// Fails the scenario unless every one of `expected` deliveries arrived,
/// each correctly signed.
fn all_arrived_intact(
    all_arrived: bool,
    counts: &crate::receiver::Counts,
    expected: usize,
    log: &str,
) -> anyhow::Result<()> {
    ensure!(
        all_arrived && counts.bad_signatures == 0,
        "{} of {expected} deliveries arrived, {} with a bad signature{}{log}",
        counts.distinct,
        counts.bad_signatures,
        if log.is_empty() {
            ""
        } else {
            "; webhookd's log:\n"
        }
    );
    Ok(())
}

/// Steady publishing at `latency_rate` for `latency_duration`; publish →
/// verified receipt, per event.
pub async fn latency(settings: &Settings) -> anyhow::Result<Row> {
    let secret = ids::new_secret();
    let receiver = Receiver::start(vec![secret.clone()]).await?;
    let tenant = Tenant::redis(&settings.redis_url).await?;
    tenant.endpoint(receiver.endpoint_url(0), &secret).await?;
    let broker = Broker::connect(&settings.amqp_url).await?;
    let queue = unique_queue("latency");
    let webhookd =
        Webhookd::start(&settings.webhookd, &amqp_env(settings, &tenant, &queue)).await?;
    webhookd.wait_until_answering("/readyz").await?;
    let cpu_before = CpuSample::take(webhookd.pid());
    let published = broker
        .publish_steadily(&queue, settings.latency_rate, settings.latency_duration)
        .await?;
    let expected = usize::try_from(published)?;
    let all_arrived = receiver
        .wait_until(|r| r.counts().distinct >= expected, STALL)
        .await;
    let cpu = CpuSample::take(webhookd.pid()).since(&cpu_before);
    let usage = webhookd.usage();
    let counts = receiver.counts();
    webhookd.save_metrics("latency").await;
    drop(webhookd);
    broker.delete(&[&queue, &format!("{queue}.dead")]).await;
    tenant.remove().await;
    all_arrived_intact(all_arrived, &counts, expected, "")?;
    let latencies = receiver.latencies_us();
    let quantile = |q: f64| quantile_ms(&latencies, q);
    let p99 = quantile(0.99);
    Ok(Row::rate(
        &format!(
            "latency at {}/s for {} s: p99",
            settings.latency_rate,
            settings.latency_duration.as_secs()
        ),
        p99,
        "ms",
    )
    .with_target(Target::AtMost(25.0))
    .with_usage(usage)
    .with_stack_cpu(cpu.stack_seconds, expected)
    .with_note(format!(
        "p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms, {} duplicates; {cpu}",
        quantile(0.5),
        quantile(0.9),
        quantile(1.0),
        counts.duplicates
    )))
}

/// HTTP ingest into the embedded SQLite store, `events` producers' POSTs,
/// until every delivery is verified.
pub async fn embedded(settings: &Settings, events: u64) -> anyhow::Result<Row> {
    let secret = ids::new_secret();
    let receiver = Receiver::start(vec![secret.clone()]).await?;
    let tenant = Tenant::sqlite().await?;
    tenant.endpoint(receiver.endpoint_url(0), &secret).await?;
    let token = ids::new_ingest_token();
    let mut env = tenant.env.clone();
    env.push(("WEBHOOKD_INGEST_TOKEN", token.clone()));
    let webhookd = Webhookd::start(&settings.webhookd, &env).await?;
    let cpu_before = CpuSample::take(webhookd.pid());
    let started = Instant::now();
    let client = reqwest::Client::new();
    let url = format!("{}/internal/events", webhookd.base_url);
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut producers = tokio::task::JoinSet::new();
    for _ in 0..INGEST_CONCURRENCY {
        let (client, url, token, next) = (
            client.clone(),
            url.clone(),
            token.clone(),
            Arc::clone(&next),
        );
        producers.spawn(async move {
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= events {
                    return anyhow::Ok(());
                }
                let response = client
                    .post(&url)
                    .bearer_auth(&token)
                    .body(crate::broker::event_message(n, crate::unix_micros()))
                    .send()
                    .await?;
                ensure!(
                    response.status() == 202,
                    "ingest answered {}",
                    response.status()
                );
            }
        });
    }
    while let Some(producer) = producers.join_next().await {
        producer??;
    }
    let ingest_rate = per_second(events, started.elapsed());
    let expected = usize::try_from(events)?;
    let all_arrived = receiver
        .wait_until(|r| r.counts().distinct >= expected, STALL)
        .await;
    let finished = receiver.last_new_at().unwrap_or_else(Instant::now);
    let cpu = CpuSample::take(webhookd.pid()).since(&cpu_before);
    let usage = webhookd.usage();
    let counts = receiver.counts();
    drop(webhookd);
    all_arrived_intact(all_arrived, &counts, expected, "")?;
    let rate = per_second(events, finished.duration_since(started));
    Ok(Row::rate(
        "embedded: HTTP ingest → SQLite → delivered",
        rate,
        "deliveries/s",
    )
    .with_usage(usage)
    .with_stack_cpu(cpu.stack_seconds, expected)
    .with_note(format!(
        "ingest {ingest_rate:.0} events/s (202 = durable); {cpu}"
    )))
}

/// Every delivery fails (500) and waits for its retry: webhookd's memory
/// while `backlog` deliveries are scheduled in the store.
/// Rows: webhookd's peak RSS, and Redis's bytes per pending delivery.
pub async fn backlog(settings: &Settings) -> anyhow::Result<Vec<Row>> {
    let secret = ids::new_secret();
    let receiver = Receiver::start(vec![secret.clone()]).await?;
    let tenant = Tenant::redis(&settings.redis_url).await?;
    tenant.endpoint(receiver.failing_url(), &secret).await?;
    let memory_before = redis_used_memory(&settings.redis_url).await?;
    let broker = Broker::connect(&settings.amqp_url).await?;
    let queue = unique_queue("backlog");
    broker.preload(&queue, 0..settings.backlog).await?;
    let mut env = amqp_env(settings, &tenant, &queue);
    // Long enough that the whole backlog is waiting at once: a failing
    // endpoint gets the suspects' share of the workers, a few hundred
    // attempts a second here, so a 1M backlog takes most of an hour.
    let retry_in = (settings.backlog / 100).max(600);
    env.push(("WEBHOOKD_RETRY_SCHEDULE", format!("{retry_in}s")));
    // The whole backlog is one endpoint's: past the default kept-deliveries
    // quota (SPEC §11) from 100,000 on.
    env.push((
        "WEBHOOKD_MAX_KEPT_DELIVERIES_PER_ENDPOINT",
        (settings.backlog * 2).max(100_000).to_string(),
    ));
    let webhookd = Webhookd::start(&settings.webhookd, &env).await?;
    let expected = usize::try_from(settings.backlog)?;
    let all_failed_once = receiver
        .wait_until(|r| r.counts().failed_answers >= expected, STALL)
        .await;
    let stats = tenant
        .store
        .delivery_stats(webhookd_core::time::unix_millis())
        .await?;
    let memory_after = redis_used_memory(&settings.redis_url).await?;
    let usage = webhookd.usage();
    drop(webhookd);
    broker.delete(&[&queue, &format!("{queue}.dead")]).await;
    tenant.remove().await;
    ensure!(
        all_failed_once,
        "only {} of {expected} first attempts arrived",
        receiver.counts().failed_answers
    );
    if stats.scheduled < settings.backlog {
        bail!(
            "only {} of {} deliveries are scheduled for a retry",
            stats.scheduled,
            settings.backlog
        );
    }
    #[allow(clippy::cast_precision_loss)] // bytes and counts far below 2^52
    let per_delivery = memory_after.saturating_sub(memory_before) as f64 / expected as f64;
    Ok(vec![
        Row::rate(
            &format!(
                "memory with {} deliveries awaiting retry: peak RSS",
                settings.backlog
            ),
            usage.peak_rss_mb,
            "MB",
        )
        .with_target(Target::AtMost(150.0))
        .with_usage(usage),
        // A 1M-delivery outage should fit in under 1 GB of Redis.
        Row::rate(
            "Redis memory per pending delivery (1 failed attempt logged)",
            per_delivery,
            "bytes",
        )
        .with_target(Target::AtMost(800.0))
        .with_note(format!(
            "INFO used_memory {memory_before} → {memory_after} bytes for {expected} deliveries"
        )),
    ])
}

/// Redis's `used_memory` (INFO memory), in bytes.
async fn redis_used_memory(redis_url: &str) -> anyhow::Result<u64> {
    let client = redis::Client::open(redis_url)?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut connection)
        .await?;
    info.lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .and_then(|bytes| bytes.trim().parse().ok())
        .context("INFO memory has no used_memory")
}

/// Tenants of the noisy scenario, each with 20 endpoints.
const NOISY_TENANTS: u64 = 50;
const NOISY_ENDPOINTS_PER_TENANT: usize = 20;
/// The first tenants' endpoints never answer: 5 × 20 = 100 of 1,000.
const NOISY_HANGING_TENANTS: u64 = 5;

/// What the noisy scenario measured for the healthy endpoints.
#[derive(Debug, Clone)]
pub struct Noisy {
    /// Healthy deliveries per second, first publish to last receipt.
    pub rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub usage: crate::webhookd::Usage,
    pub cpu: crate::cpu::CpuUse,
    /// Healthy deliveries.
    pub deliveries: usize,
}

/// 50 tenants with 20 endpoints each; events published steadily at
/// `latency_rate / 10` a second, round-robin over the tenants, each fanning
/// out to its owner's 20 endpoints. With `hanging`, the first 5 tenants'
/// 100 endpoints never answer; without, those tenants have no endpoints —
/// the same healthy work, for comparison.
pub async fn noisy(settings: &Settings, hanging: bool) -> anyhow::Result<Noisy> {
    let healthy_tenants = NOISY_TENANTS - NOISY_HANGING_TENANTS;
    let healthy_endpoints = usize::try_from(healthy_tenants)? * NOISY_ENDPOINTS_PER_TENANT;
    let secrets: Vec<String> = (0..healthy_endpoints).map(|_| ids::new_secret()).collect();
    let receiver = Receiver::start(secrets.clone()).await?;
    let tenant = Tenant::redis(&settings.redis_url).await?;
    let mut next = 0;
    for user in 0..NOISY_TENANTS {
        let username = format!("noisy_{user}");
        for _ in 0..NOISY_ENDPOINTS_PER_TENANT {
            if user < NOISY_HANGING_TENANTS {
                if hanging {
                    let url = receiver.hanging_url();
                    tenant
                        .endpoint_of(&username, url, &ids::new_secret())
                        .await?;
                }
            } else {
                let url = receiver.endpoint_url(next);
                tenant.endpoint_of(&username, url, &secrets[next]).await?;
                next += 1;
            }
        }
    }
    let broker = Broker::connect(&settings.amqp_url).await?;
    let queue = unique_queue("noisy");
    let webhookd =
        Webhookd::start(&settings.webhookd, &amqp_env(settings, &tenant, &queue)).await?;
    webhookd.wait_until_answering("/readyz").await?;
    let cpu_before = CpuSample::take(webhookd.pid());
    let publishing_from = Instant::now();
    let rate = (settings.latency_rate / 10).max(1);
    let published = broker
        .publish_steadily_as(&queue, rate, settings.latency_duration, |n| {
            format!("noisy_{}", n % NOISY_TENANTS)
        })
        .await?;
    let healthy_events = (0..published)
        .filter(|n| n % NOISY_TENANTS >= NOISY_HANGING_TENANTS)
        .count();
    let expected = healthy_events * NOISY_ENDPOINTS_PER_TENANT;
    let all_arrived = receiver
        .wait_until(|r| r.counts().distinct >= expected, STALL)
        .await;
    let cpu = CpuSample::take(webhookd.pid()).since(&cpu_before);
    let usage = webhookd.usage();
    let counts = receiver.counts();
    let elapsed = receiver
        .last_new_at()
        .unwrap_or_else(Instant::now)
        .duration_since(publishing_from);
    let log = webhookd.log_tail();
    webhookd
        .save_metrics(if hanging { "noisy" } else { "noisy-baseline" })
        .await;
    drop(webhookd);
    broker.delete(&[&queue, &format!("{queue}.dead")]).await;
    tenant.remove().await;
    all_arrived_intact(all_arrived, &counts, expected, &log)?;
    let latencies = receiver.latencies_us();
    let quantile = |q: f64| quantile_ms(&latencies, q);
    Ok(Noisy {
        rate: per_second(expected as u64, elapsed),
        p50_ms: quantile(0.5),
        p99_ms: quantile(0.99),
        usage,
        cpu,
        deliveries: expected,
    })
}

/// The `q` quantile of sorted latencies in µs, in milliseconds.
fn quantile_ms(sorted_us: &[u64], q: f64) -> f64 {
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    let index = ((sorted_us.len() as f64 - 1.0) * q).round() as usize;
    #[allow(clippy::cast_precision_loss)]
    let micros = sorted_us.get(index).copied().unwrap_or(0) as f64;
    micros / 1000.0
}
