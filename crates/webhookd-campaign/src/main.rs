//! `webhookd-campaign`: from a seed, runs a real workload against real
//! webhookd processes, Redis and RabbitMQ under a schedule of faults,
//! records what happened, and checks it (docs/reliability.md).
//!
//! The same seed draws the same endpoints, receivers' tempers and fault
//! schedule, so a violation can be run again with `--seed`.

mod checker;
mod faults;
mod receivers;
mod system;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use webhookd_core::{EventType, ids};
use webhookd_store::{RedisStore, Store};
use webhookd_testkit::{Service, subscription};

use crate::checker::Published;
use crate::faults::{Fault, Kind, Window};
use crate::receivers::{Receivers, Temper};
use crate::system::{Process, Setup};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "A seeded fault campaign against real webhookd processes, Redis and RabbitMQ"
)]
struct Cli {
    /// The seed (default: a random one, printed).
    #[arg(long)]
    seed: Option<u64>,
    /// How long faults are injected, e.g. `60s`, `2h`.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Which faults, comma-separated: kill, pause, amqp-close, store-cut,
    /// store-freeze (default: all).
    #[arg(long, value_delimiter = ',')]
    faults: Vec<String>,
    /// webhookd processes sharing the store and the queue.
    #[arg(long, default_value_t = 2)]
    processes: usize,
    /// Events published per second.
    #[arg(long, default_value_t = 20)]
    rate: u32,
    /// The webhookd binary.
    #[arg(long, default_value = "target/debug/webhookd")]
    webhookd: PathBuf,
    /// How long the system may take to heal once the faults stop.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    heal: Duration,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    webhookd_core::duration::parse_duration(text)
}

const ENDPOINT_CONCURRENCY: usize = 2;
/// Events are published in bursts, as producers do: several messages reach
/// a consumer in one batch.
const BURST: u32 = 8;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("the campaign could not run: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// One campaign; `Ok(false)` when it found a violation.
async fn run(cli: Cli) -> anyhow::Result<bool> {
    let seed = cli.seed.unwrap_or_else(rand::random);
    let kinds: Vec<Kind> = if cli.faults.is_empty() {
        Kind::ALL.to_vec()
    } else {
        cli.faults
            .iter()
            .map(|name| Kind::parse(name).with_context(|| format!("unknown fault {name:?}")))
            .collect::<anyhow::Result<_>>()?
    };
    println!(
        "campaign seed {seed}, {:?} of faults ({})",
        cli.duration,
        names(&kinds)
    );
    let mut random = StdRng::seed_from_u64(seed);

    let (owners, tempers) = draw_tenants(&mut random);
    let receivers = Receivers::start(&tempers, random.random()).await?;

    let redis_url = webhookd_testkit::require(Service::Redis).context("Redis is needed")?;
    let amqp_url = webhookd_testkit::require(Service::RabbitMq).context("RabbitMQ is needed")?;
    let setup = Setup {
        binary: cli.webhookd.clone(),
        redis_address: webhookd_testkit::service_address(Service::Redis),
        redis_url: redis_url.clone(),
        prefix: webhookd_testkit::unique_prefix("campaign"),
        amqp_url: amqp_url.clone(),
        queue: webhookd_testkit::amqp::unique_queue("campaign"),
        endpoint_concurrency: ENDPOINT_CONCURRENCY,
    };
    let store = RedisStore::connect(&redis_url, &setup.prefix).await?;
    for (owner, endpoints) in owners.iter().enumerate() {
        for &n in endpoints {
            let endpoint = subscription(
                &tenant(owner),
                &receivers.url(n),
                &[EventType::GeneratedVideoSuccess],
            );
            store.create_endpoint(&endpoint, 20).await?;
        }
    }
    let logs = tempfile::Builder::new()
        .prefix("campaign-")
        .tempdir()?
        .keep();
    let mut processes = Vec::new();
    for n in 0..cli.processes {
        processes.push(Process::start(&setup, &logs, n).await?);
    }

    // The workload: events published steadily, a few ids twice.
    let published = Arc::new(Mutex::new(Vec::<Published>::new()));
    let stop_publishing = stop_flag();
    let publisher = tokio::spawn(publish(
        setup.clone(),
        cli.rate,
        random.random(),
        Arc::clone(&published),
        Arc::clone(&stop_publishing),
    ));

    // The faults.
    let schedule = faults::schedule(&mut random, &kinds, processes.len(), cli.duration);
    let started = Instant::now();
    let windows = inject_all(&schedule, started, &mut processes, &setup).await?;
    tokio::time::sleep_until((started + cli.duration).into()).await;
    stop_publishing.store(true, std::sync::atomic::Ordering::Relaxed);
    publisher.await??;
    let faults_over = Instant::now();

    // Heal: every expected pair delivered, or the heal time is up.
    let published = published
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let deadline = faults_over + cli.heal;
    let mut verdict = checker::check(
        &published,
        &owners,
        &receivers,
        &windows,
        ENDPOINT_CONCURRENCY,
    );
    while verdict.delivered_pairs < verdict.expected_pairs && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        verdict = checker::check(
            &published,
            &owners,
            &receivers,
            &windows,
            ENDPOINT_CONCURRENCY,
        );
    }
    let healed_in = faults_over.elapsed();
    drop(processes);
    webhookd_testkit::amqp::delete_queues(
        &amqp_url,
        &[&setup.queue, &format!("{}.dead", setup.queue)],
    )
    .await;

    Ok(report(
        seed, &schedule, &published, &verdict, healed_in, &logs,
    ))
}

/// Three tenants with 1–3 endpoints each (endpoint numbers, by owner), and
/// each endpoint's temper.
fn draw_tenants(random: &mut StdRng) -> (Vec<Vec<usize>>, Vec<Temper>) {
    let owners: Vec<Vec<usize>> = {
        let mut next = 0;
        (0..3)
            .map(|_| {
                let count = random.random_range(1..=3);
                let endpoints = (next..next + count).collect();
                next += count;
                endpoints
            })
            .collect()
    };
    let endpoint_count = owners.iter().map(Vec::len).sum();
    let tempers: Vec<Temper> = (0..endpoint_count)
        .map(|_| match random.random_range(0..4) {
            0 => Temper::Flaky,
            1 => Temper::Slow,
            _ => Temper::Healthy,
        })
        .collect();
    (owners, tempers)
}

/// Prints what the run did and broke; whether it broke nothing.
fn report(
    seed: u64,
    schedule: &[Fault],
    published: &[Published],
    verdict: &checker::Verdict,
    healed_in: Duration,
    logs: &std::path::Path,
) -> bool {
    let mut per_kind: Vec<(Kind, usize)> = Kind::ALL
        .iter()
        .map(|kind| {
            (
                *kind,
                schedule.iter().filter(|fault| fault.kind == *kind).count(),
            )
        })
        .collect();
    per_kind.retain(|(_, count)| *count > 0);
    println!(
        "seed {seed}: {} events published, {} of {} (event, endpoint) pairs delivered, {} duplicates {:?}; faults: {}; healed in {:.1} s; logs in {}",
        published.len(),
        verdict.delivered_pairs,
        verdict.expected_pairs,
        verdict.duplicates,
        verdict.duplicates_by_fault,
        per_kind
            .iter()
            .map(|(kind, count)| format!("{} ×{count}", kind.name()))
            .collect::<Vec<_>>()
            .join(", "),
        healed_in.as_secs_f64(),
        logs.display()
    );
    if verdict.violations.is_empty() {
        println!("PASS: no violation (seed {seed})");
        return true;
    }
    println!(
        "FAIL: {} violation(s), seed {seed}; replay with --seed {seed}",
        verdict.violations.len()
    );
    for violation in verdict.violations.iter().take(20) {
        println!("  {violation}");
    }
    println!("fault schedule:");
    for fault in schedule {
        println!(
            "  +{:>6.1} s  {:<12} process {}  for {:.1} s",
            fault.after.as_secs_f64(),
            fault.kind.name(),
            fault.process,
            fault.lasts.as_secs_f64()
        );
    }
    false
}

fn names(kinds: &[Kind]) -> String {
    kinds
        .iter()
        .map(|kind| kind.name())
        .collect::<Vec<_>>()
        .join(", ")
}

fn tenant(owner: usize) -> String {
    format!("tenant{owner}")
}

fn stop_flag() -> Arc<std::sync::atomic::AtomicBool> {
    Arc::new(std::sync::atomic::AtomicBool::new(false))
}

/// Applies the faults of `schedule`, each at its time from `started`;
/// returns when each was in force.
async fn inject_all(
    schedule: &[Fault],
    started: Instant,
    processes: &mut [Process],
    setup: &Setup,
) -> anyhow::Result<Vec<Window>> {
    let mut windows = Vec::new();
    for fault in schedule {
        tokio::time::sleep_until((started + fault.after).into()).await;
        let from = Instant::now();
        inject(fault, processes, setup).await?;
        windows.push(Window {
            kind: fault.kind,
            from,
            until: Instant::now(),
        });
    }
    Ok(windows)
}

/// Applies one fault and, after its time, undoes it.
async fn inject(fault: &Fault, processes: &mut [Process], setup: &Setup) -> anyhow::Result<()> {
    let process = &mut processes[fault.process];
    match fault.kind {
        Kind::Kill => {
            process.kill();
            tokio::time::sleep(fault.lasts).await;
            process.restart(setup).await?;
        }
        Kind::Pause => {
            process.freeze(true);
            tokio::time::sleep(fault.lasts).await;
            process.freeze(false);
        }
        Kind::AmqpClose => {
            let name = process.connection_name();
            tokio::task::spawn_blocking(move || {
                webhookd_testkit::amqp::close_connections_named(&name)
            })
            .await?;
            tokio::time::sleep(fault.lasts).await;
        }
        Kind::StoreCut => {
            process.store_link.cut();
            tokio::time::sleep(fault.lasts).await;
            process.store_link.restore();
        }
        Kind::StoreFreeze => {
            process.store_link.freeze();
            tokio::time::sleep(fault.lasts).await;
            process.store_link.restore();
        }
        Kind::ClockAhead => {
            process.restart_with_clock(setup, Some("+1h")).await?;
            tokio::time::sleep(fault.lasts).await;
            process.restart(setup).await?;
        }
        Kind::TermWhileStoreDown => {
            process.store_link.cut();
            tokio::time::sleep(fault.lasts).await;
            process.terminate(Duration::from_secs(15)).await;
            process.restart(setup).await?;
        }
    }
    if !process.is_running() {
        process.restart(setup).await?;
    }
    Ok(())
}

/// Publishes `rate` events a second (persistent, confirmed) until `stop`;
/// about one in twenty reuses an earlier event id, as a producer retrying
/// would, and one in ten is not JSON at all (it must go to `.dead`,
/// never take a valid neighbour with it). Only confirmed publishes of
/// valid events go into `published`.
async fn publish(
    setup: Setup,
    rate: u32,
    seed: u64,
    published: Arc<Mutex<Vec<Published>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<()> {
    let mut random = StdRng::seed_from_u64(seed);
    let connection = Connection::connect(&setup.amqp_url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    channel
        .queue_declare(
            setup.queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    let interval = Duration::from_secs(1) * BURST / rate.max(1);
    let mut ticks = tokio::time::interval(interval);
    let mut n = 0_u64;
    let mut in_burst = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        if in_burst == 0 {
            ticks.tick().await;
            in_burst = BURST;
        }
        in_burst -= 1;
        let earlier = {
            let published = published.lock().unwrap_or_else(PoisonError::into_inner);
            (!published.is_empty() && random.random_bool(0.05))
                .then(|| published[random.random_range(0..published.len())].clone())
        };
        let event = earlier.unwrap_or_else(|| {
            n += 1;
            Published {
                event_id: format!("evt_{n}_{}", ids::new_lease_token()),
                owner: random.random_range(0..3),
            }
        });
        let invalid = random.random_bool(0.1);
        let message = if invalid {
            "not json".to_owned()
        } else {
            format!(
                r#"{{"event":"generated_video_success","username":"{}","event_id":"{}","data":{{"n":{n}}}}}"#,
                tenant(event.owner),
                event.event_id
            )
        };
        let confirmed = channel
            .basic_publish(
                "".into(),
                setup.queue.as_str().into(),
                BasicPublishOptions::default(),
                message.as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await?
            .await?;
        if confirmed.is_ack() && !invalid {
            published
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(event);
        }
    }
    let _ = connection.close(200, "done".into()).await;
    Ok(())
}
