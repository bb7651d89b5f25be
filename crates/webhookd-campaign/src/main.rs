//! `webhookd-campaign`: from a seed, runs a real workload against real
//! webhookd processes, Redis and RabbitMQ under a schedule of faults,
//! records what happened, and checks it (docs/reliability.md).
//!
//! The same seed draws the same endpoints, receivers' tempers and fault
//! schedule, so a violation can be run again with `--seed`.

mod api;
mod checker;
mod faults;
mod producer;
mod receivers;
mod system;
mod world;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use webhookd_core::ids;
use webhookd_testkit::Service;
use webhookd_testkit::private_redis::{PrivateRedis, RedisOptions};

use crate::api::Api;
use crate::checker::Published;
use crate::faults::{Fault, Kind, Window};
use crate::receivers::{Receivers, Temper};
use crate::system::{Mode, Process, Setup};
use crate::world::{Endpoint, World};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "A seeded fault campaign against real webhookd processes, Redis and RabbitMQ (or the embedded store)"
)]
struct Cli {
    /// The seed (default: a random one, printed).
    #[arg(long)]
    seed: Option<u64>,
    /// How long faults are injected, e.g. `60s`, `2h`.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Which faults, comma-separated: kill, pause, amqp-close, store-cut,
    /// store-freeze, term-store-down, clock-ahead, clock-behind,
    /// redis-kill, redis-freeze (default: all the store allows).
    #[arg(long, value_delimiter = ',')]
    faults: Vec<String>,
    /// `redis`: processes on a Redis of the campaign's own and RabbitMQ;
    /// `sqlite`: one process on the embedded store, events over HTTP.
    #[arg(long, value_enum, default_value_t = StoreKind::Redis)]
    store: StoreKind,
    /// webhookd processes sharing the store and the queue (Redis only).
    #[arg(long, default_value_t = 2)]
    processes: usize,
    /// Events published per second.
    #[arg(long, default_value_t = 20)]
    rate: u32,
    /// The webhookd binary.
    #[arg(long, default_value = "target/debug/webhookd")]
    webhookd: PathBuf,
    /// How long the system may go without progress once the faults stop:
    /// the heal fails when this passes and the pairs still undelivered (then
    /// the deliveries still pending) have not fallen.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    heal: Duration,
    /// The longest the heal may take, progress or not.
    #[arg(long, default_value = "15m", value_parser = parse_duration)]
    heal_max: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum StoreKind {
    Redis,
    Sqlite,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    webhookd_core::duration::parse_duration(text)
}

const ENDPOINT_CONCURRENCY: usize = 2;

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
    let embedded = cli.store == StoreKind::Sqlite;
    let kinds = fault_kinds(&cli.faults, embedded)?;
    let process_count = if embedded { 1 } else { cli.processes.max(1) };
    println!(
        "campaign seed {seed}: {:?} of faults ({}) on {} process(es), {}",
        cli.duration,
        names(&kinds),
        process_count,
        if embedded {
            "SQLite + HTTP ingest"
        } else {
            "Redis + RabbitMQ"
        }
    );
    let mut random = StdRng::seed_from_u64(seed);

    let (owners, tempers) = draw_tenants(&mut random);
    let initial: usize = owners.iter().map(Vec::len).sum();
    let world = initial_world(&owners, &tempers);
    let receivers = Receivers::start(world.clone(), random.random()).await?;

    let logs = tempfile::Builder::new()
        .prefix("campaign-")
        .tempdir()?
        .keep();
    let (setup, mut redis) = system_setup(&cli, &logs, embedded)?;
    let _queues = QueuesDeleted(setup.mode.clone());
    let mut processes = Vec::new();
    for n in 0..process_count {
        processes.push(Process::start(&setup, &logs, n).await?);
    }
    let ports: Vec<u16> = processes.iter().map(|process| process.port).collect();
    let mut api = Api::new(ports.clone(), &setup.admin_token, owners.len()).await?;
    for n in 0..initial {
        api.create(&world, &receivers, n).await?;
    }

    // The workload: events published steadily, a few ids twice; the
    // operator's calls.
    let published = Arc::new(Mutex::new(Vec::<Published>::new()));
    let stop = stop_flag();
    let publisher = tokio::spawn(producer::publish(
        setup.clone(),
        ports,
        cli.rate,
        random.random(),
        Arc::clone(&published),
        Arc::clone(&stop),
    ));
    let operator = tokio::spawn(api::operate(
        api,
        world.clone(),
        receivers.clone(),
        random.random(),
        Arc::clone(&stop),
    ));

    // The faults.
    let schedule = faults::schedule(&mut random, &kinds, processes.len(), cli.duration);
    let started = Instant::now();
    let mut windows =
        inject_all(&schedule, started, &mut processes, redis.as_mut(), &setup).await?;
    tokio::time::sleep_until((started + cli.duration).into()).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let ingest_answers = publisher.await??;
    let (mut api, calls_windows) = operator.await??;
    windows.extend(calls_windows);
    let faults_over = Instant::now();

    let published = published
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let (verdict, healed_in) = heal_and_check(
        &mut api,
        &world,
        &receivers,
        &windows,
        &published,
        started,
        Heal {
            stalled_after: cli.heal,
            deadline: faults_over + cli.heal_max,
        },
    )
    .await?;
    let healed_in = healed_in.map(|at| at.saturating_duration_since(faults_over));
    drop(processes);
    drop(redis);
    let passed = report(&Report {
        seed,
        schedule: &schedule,
        published: &published,
        verdict: &verdict,
        ingest_answers: &ingest_answers,
        calls: &api.calls,
        healed_in,
        logs: &logs,
    });
    if passed {
        // Nothing to look at: leave nothing behind.
        let _ = std::fs::remove_dir_all(&logs);
    }
    Ok(passed)
}

/// The slots of a run: each with its temper, the first ones with their
/// owners (spare slots get theirs when the operator creates them).
fn initial_world(owners: &[Vec<usize>], tempers: &[Temper]) -> World {
    World::new(
        tempers
            .iter()
            .enumerate()
            .map(|(n, temper)| {
                let owner = owners
                    .iter()
                    .position(|slots| slots.contains(&n))
                    .unwrap_or(0);
                Endpoint::new(owner, *temper)
            })
            .collect(),
    )
}

/// Deletes the run's RabbitMQ queues when dropped, however the run ends
/// (after the processes, which would declare them again, have stopped).
struct QueuesDeleted(Mode);

impl Drop for QueuesDeleted {
    fn drop(&mut self) {
        let Mode::Redis {
            amqp_url, queue, ..
        } = self.0.clone()
        else {
            return;
        };
        // Drop cannot await: a thread with a runtime of its own.
        let deleting = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            let dead = format!("{queue}.dead");
            runtime.block_on(webhookd_testkit::amqp::delete_queues(
                &amqp_url,
                &[&queue, &dead],
            ));
            Some(())
        });
        let _ = deleting.join();
    }
}

fn fault_kinds(names: &[String], embedded: bool) -> anyhow::Result<Vec<Kind>> {
    let kinds = if names.is_empty() {
        if embedded {
            Kind::EMBEDDED.to_vec()
        } else {
            Kind::ALL.to_vec()
        }
    } else {
        named_kinds(names, embedded)?
    };
    // Without the library the preload is ignored (ld.so only warns): the
    // fault would be counted but never happen.
    let clock = kinds
        .iter()
        .any(|kind| matches!(kind, Kind::ClockAhead | Kind::ClockBehind));
    if clock && !std::path::Path::new(system::FAKETIME).exists() {
        anyhow::bail!(
            "the clock faults need libfaketime ({}): apt-get install faketime, or leave clock-ahead and clock-behind out of --faults",
            system::FAKETIME
        );
    }
    Ok(kinds)
}

fn named_kinds(names: &[String], embedded: bool) -> anyhow::Result<Vec<Kind>> {
    names
        .iter()
        .map(|name| {
            let kind = Kind::parse(name).with_context(|| format!("unknown fault {name:?}"))?;
            if embedded && !Kind::EMBEDDED.contains(&kind) {
                anyhow::bail!("the fault {name} needs Redis and RabbitMQ (--store redis)");
            }
            Ok(kind)
        })
        .collect()
}

/// The run's setup, and its private Redis (Redis mode).
fn system_setup(
    cli: &Cli,
    logs: &std::path::Path,
    embedded: bool,
) -> anyhow::Result<(Setup, Option<PrivateRedis>)> {
    let token = || format!("campaign-{}", ids::new_lease_token());
    if embedded {
        let setup = Setup {
            binary: cli.webhookd.clone(),
            mode: Mode::Embedded {
                store: format!("sqlite://{}/webhookd.db", logs.display()),
            },
            admin_token: token(),
            ingest_token: token(),
            endpoint_concurrency: ENDPOINT_CONCURRENCY,
        };
        return Ok((setup, None));
    }
    let amqp_url = webhookd_testkit::require(Service::RabbitMq).context("RabbitMQ is needed")?;
    let data = logs.join("redis");
    std::fs::create_dir_all(&data)?;
    let redis = PrivateRedis::start(RedisOptions {
        append_only_in: Some(data),
        ..RedisOptions::default()
    })
    .context("starting a redis-server of the campaign's own")?;
    let setup = Setup {
        binary: cli.webhookd.clone(),
        mode: Mode::Redis {
            url: redis.url(),
            address: redis.address(),
            prefix: "campaign:".to_owned(),
            amqp_url,
            queue: webhookd_testkit::amqp::unique_queue("campaign"),
        },
        admin_token: token(),
        ingest_token: token(),
        endpoint_concurrency: ENDPOINT_CONCURRENCY,
    };
    Ok((setup, Some(redis)))
}

/// How long the heal may take: a backlog that keeps falling is given time
/// (a throttled endpoint works through its retries at its own pace), one
/// that stops falling is not.
struct Heal {
    /// Gives up when what is left has not fallen for this long.
    stalled_after: Duration,
    /// Gives up at this time, progress or not.
    deadline: Instant,
}

/// Waits for every expected pair to be delivered and nothing to be pending,
/// as long as `heal` allows; then checks the history, with the dead
/// deliveries the store keeps. The verdict, and when it healed.
async fn heal_and_check(
    api: &mut Api,
    world: &World,
    receivers: &Receivers,
    windows: &[Window],
    published: &[Published],
    started: Instant,
    heal: Heal,
) -> anyhow::Result<(checker::Verdict, Option<Instant>)> {
    let endpoints = world.snapshot();
    let nothing_yet = checker::StoreSays::default();
    let mut pending = HashSet::new();
    let check = |pending: &HashSet<usize>, store: &checker::StoreSays| {
        checker::check(
            &checker::History {
                pending,
                started,
                published,
                endpoints: &endpoints,
                receivers,
                windows,
                endpoint_concurrency: ENDPOINT_CONCURRENCY,
            },
            store,
        )
    };
    let mut healed = None;
    // What is left — (undelivered pairs, endpoints pending) ordered so that
    // either falling is progress — at its lowest, and since when.
    let mut least_left = (usize::MAX, usize::MAX);
    let mut progress_at = Instant::now();
    loop {
        let verdict = check(&pending, &nothing_yet);
        let undelivered = verdict.undelivered.len();
        if undelivered <= ASK_THE_STORE_BELOW {
            pending = api.pending(world).await?.into_iter().collect();
            // Nothing pending: what is left is dead, or was read late
            // (delivered by a 2xx after the deadline) — the store says.
            if pending.is_empty()
                && (undelivered == 0
                    || check(&pending, &store_says(api, world, &verdict).await?)
                        .undelivered
                        .is_empty())
            {
                healed = Some(Instant::now());
                break;
            }
        }
        let left = (undelivered, pending.len());
        if left < least_left {
            least_left = left;
            progress_at = Instant::now();
        }
        let now = Instant::now();
        if now > heal.deadline || now.duration_since(progress_at) > heal.stalled_after {
            pending = api.pending(world).await?.into_iter().collect();
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let verdict = check(&pending, &nothing_yet);
    let mut store = store_says(api, world, &verdict).await?;
    for n in (0..endpoints.len()).filter(|n| endpoints[*n].is_live()) {
        store
            .delivered_counts
            .insert(n, api.delivered_count(world, n).await?);
    }
    let mut verdict = check(&pending, &store);
    for n in &pending {
        verdict.violations.push(format!(
            "stuck: endpoint {n} still has pending deliveries after the heal time"
        ));
    }
    Ok((verdict, healed))
}

/// Undelivered pairs few enough that the heal asks the store about them
/// once nothing is pending.
const ASK_THE_STORE_BELOW: usize = 100;

/// What the store says of the slots with pairs `verdict` found undelivered:
/// their dead deliveries and their delivered ones.
async fn store_says(
    api: &mut Api,
    world: &World,
    verdict: &checker::Verdict,
) -> anyhow::Result<checker::StoreSays> {
    let mut store = checker::StoreSays::default();
    for (_, n) in &verdict.undelivered {
        if !store.dead.contains_key(n) {
            let dead = api.events(world, *n, "failed").await?;
            let delivered = api.events(world, *n, "delivered").await?;
            store.dead.insert(*n, dead.into_iter().collect());
            store.delivered.insert(*n, delivered.into_iter().collect());
        }
    }
    Ok(store)
}

/// Endpoint slots kept for the endpoints the operator creates in place of
/// deleted ones.
const SPARE_SLOTS: usize = 4;

/// Three tenants with 1–3 endpoints each (endpoint slots, by owner), and
/// each slot's temper (spare slots included).
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
    let slots = owners.iter().map(Vec::len).sum::<usize>() + SPARE_SLOTS;
    let tempers: Vec<Temper> = (0..slots)
        .map(|_| match random.random_range(0..6) {
            0 => Temper::Flaky,
            1 => Temper::Slow,
            2 => Temper::Throttling,
            3 => Temper::Hanging,
            _ => Temper::Healthy,
        })
        .collect();
    (owners, tempers)
}

/// What a run did, for [`report`].
struct Report<'a> {
    seed: u64,
    schedule: &'a [Fault],
    published: &'a [Published],
    verdict: &'a checker::Verdict,
    /// HTTP ingest's answers by status (empty with RabbitMQ).
    ingest_answers: &'a BTreeMap<String, usize>,
    calls: &'a [api::Call],
    healed_in: Option<Duration>,
    logs: &'a std::path::Path,
}

/// Prints what the run did and broke; whether it broke nothing.
fn report(run: &Report) -> bool {
    let Report { seed, verdict, .. } = *run;
    let per_kind: Vec<String> = Kind::ALL
        .iter()
        .filter_map(|kind| {
            let count = run
                .schedule
                .iter()
                .filter(|fault| fault.kind == *kind)
                .count();
            (count > 0).then(|| format!("{} ×{count}", kind.name()))
        })
        .collect();
    let mut calls: BTreeMap<String, usize> = BTreeMap::new();
    for call in run.calls {
        // `POST /v2/endpoint/<id>/test?…` counts as `POST /v2/endpoint/{id}/test`.
        let path = call.what.split('?').next().unwrap_or_default();
        let route = path
            .split('/')
            .enumerate()
            .map(|(index, segment)| {
                if index == 3 && path.contains("/v2/endpoint/") {
                    "{id}"
                } else {
                    segment
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        let answer = call
            .status
            .map_or("none".to_owned(), |status| status.to_string());
        *calls.entry(format!("{route} {answer}")).or_default() += 1;
    }
    let mut duplicates: Vec<_> = verdict.duplicates_by_fault.iter().collect();
    duplicates.sort();
    println!(
        "seed {seed}: {} events published, {} of {} (event, endpoint) pairs delivered ({} by a 2xx read after the deadline), {} requests; {} duplicates {:?}; faults: {}; API calls {:?}; ingest answers {:?}; {}",
        run.published.len(),
        verdict.delivered_pairs,
        verdict.expected_pairs,
        verdict.read_late,
        verdict.requests,
        verdict.duplicates,
        duplicates,
        per_kind.join(", "),
        calls,
        run.ingest_answers,
        run.healed_in
            .map_or("did not heal".to_owned(), |healed| format!(
                "healed in {:.1} s",
                healed.as_secs_f64()
            )),
    );
    if verdict.violations.is_empty() {
        println!("PASS: no violation (seed {seed})");
        return true;
    }
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for violation in &verdict.violations {
        *kinds
            .entry(violation.split(':').next().unwrap_or_default())
            .or_default() += 1;
    }
    println!(
        "FAIL: {} violation(s) {kinds:?}, seed {seed}; replay with --seed {seed}; webhookd's logs in {}",
        verdict.violations.len(),
        run.logs.display()
    );
    for violation in verdict.violations.iter().take(20) {
        println!("  {violation}");
    }
    println!("fault schedule:");
    for fault in run.schedule {
        println!(
            "  +{:>6.1} s  {:<15} process {}  for {:.1} s",
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

fn stop_flag() -> Arc<AtomicBool> {
    Arc::new(AtomicBool::new(false))
}

/// Applies the faults of `schedule`, each at its time from `started`;
/// returns when each was in force.
async fn inject_all(
    schedule: &[Fault],
    started: Instant,
    processes: &mut [Process],
    mut redis: Option<&mut PrivateRedis>,
    setup: &Setup,
) -> anyhow::Result<Vec<Window>> {
    let mut windows = Vec::new();
    for fault in schedule {
        tokio::time::sleep_until((started + fault.after).into()).await;
        let from = Instant::now();
        inject(fault, processes, redis.as_deref_mut(), setup).await?;
        windows.push(Window {
            kind: fault.kind.name(),
            from,
            until: Instant::now(),
        });
    }
    Ok(windows)
}

/// Applies one fault and, after its time, undoes it.
async fn inject(
    fault: &Fault,
    processes: &mut [Process],
    redis: Option<&mut PrivateRedis>,
    setup: &Setup,
) -> anyhow::Result<()> {
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
        Kind::StoreCut | Kind::StoreFreeze | Kind::TermWhileStoreDown => {
            let link = process.store_link.as_ref().context("no link to a store")?;
            if fault.kind == Kind::StoreFreeze {
                link.freeze();
            } else {
                link.cut();
            }
            tokio::time::sleep(fault.lasts).await;
            if fault.kind == Kind::TermWhileStoreDown {
                process.terminate(Duration::from_secs(15)).await;
                process.restart(setup).await?;
            } else if let Some(link) = &process.store_link {
                link.restore();
            }
        }
        Kind::ClockAhead | Kind::ClockBehind => {
            let offset = if fault.kind == Kind::ClockAhead {
                "+1h"
            } else {
                "-1h"
            };
            process.restart_with_clock(setup, Some(offset)).await?;
            tokio::time::sleep(fault.lasts).await;
            process.restart(setup).await?;
        }
        Kind::RedisKill | Kind::RedisFreeze => {
            let redis = redis.context("no Redis of the campaign's own")?;
            if fault.kind == Kind::RedisKill {
                redis.kill();
                tokio::time::sleep(fault.lasts).await;
                tokio::task::block_in_place(|| redis.restart())?;
            } else {
                redis.signal("STOP")?;
                tokio::time::sleep(fault.lasts).await;
                redis.signal("CONT")?;
            }
        }
    }
    if !process.is_running() {
        process.restart(setup).await?;
    }
    Ok(())
}
