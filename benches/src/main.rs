//! `webhookd-bench`: end-to-end load scenarios against a real webhookd,
//! RabbitMQ and Redis, each figure printed next to the ceiling of the same
//! machine measured in the same run. See docs/benchmarks.md.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use webhookd_bench::report::{Ceiling, Row, Target, table};
use webhookd_bench::scenarios::{self, Ceilings, DrainShape, Drained, Settings};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "End-to-end benchmarks of webhookd, next to the machine's own ceilings"
)]
struct Cli {
    /// Which scenario to run.
    #[arg(value_enum, default_value = "all")]
    scenario: Scenario,
    /// Events per drain scenario (fan-out uses a tenth, ×10 endpoints;
    /// embedded a fifth).
    #[arg(long, default_value_t = 50_000)]
    events: u64,
    /// Events per second in the latency scenario.
    #[arg(long, default_value_t = 1_000)]
    latency_rate: u32,
    /// Seconds of steady load in the latency scenario.
    #[arg(long, default_value_t = 30)]
    latency_seconds: u64,
    /// Deliveries awaiting retry in the memory scenario.
    #[arg(long, default_value_t = 100_000)]
    backlog: u64,
    /// Print the rows as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// A/B: build webhookd at this commit in a worktree and run the drain
    /// and fan-out scenarios alternately with it and with this build
    /// (docs/benchmarks.md, "A/B against an earlier commit").
    #[arg(long)]
    baseline: Option<String>,
    /// A/B: compare with this webhookd binary instead of building a commit
    /// (with `--env`: the same build with and without some settings).
    #[arg(long, conflicts_with = "baseline")]
    baseline_binary: Option<PathBuf>,
    /// `NAME=VALUE` for the webhookd of the drain-type scenarios; in an
    /// A/B, for this build's side only (e.g. the `OTEL_*` settings of
    /// tracing). Repeatable.
    #[arg(long = "env", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// A/B: runs of each scenario on each side.
    #[arg(long, default_value_t = 4)]
    rounds: usize,
    /// The webhookd binary (default: the one next to this binary, rebuilt
    /// first when run through cargo).
    #[arg(long)]
    webhookd: Option<PathBuf>,
    #[arg(
        long,
        env = "BENCH_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    amqp_url: String,
    #[arg(
        long,
        env = "BENCH_REDIS_URL",
        default_value = "redis://127.0.0.1:6379/0"
    )]
    redis_url: String,
    /// The Redis Cluster of the `cluster` scenario (`.ci/redis-cluster start`).
    #[arg(
        long,
        env = "BENCH_REDIS_CLUSTER_URL",
        default_value = "redis+cluster://127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103"
    )]
    redis_cluster_url: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Raw RabbitMQ drain and raw HTTP POST rate.
    Ceilings,
    /// N events, one endpoint each, through RabbitMQ and Redis.
    Drain,
    /// N/10 events, ten endpoints each.
    Fanout,
    /// A steady rate; publish → receipt quantiles.
    Latency,
    /// Drain with one more endpoint per event that never answers.
    Slow,
    /// HTTP ingest into the embedded SQLite store.
    Embedded,
    /// Memory with a large retry backlog.
    Backlog,
    /// 1,000 endpoints of 50 tenants, 100 of them hanging: the healthy
    /// ones' rate and p99 against the same run without the hanging ones.
    Noisy,
    /// Drain and fan-out on a Redis Cluster with 2 webhookd processes, with
    /// each Redis node's CPU (not part of `all`: it needs the cluster).
    Cluster,
    All,
}

/// `NAME=VALUE`.
fn parse_env(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!("{text:?} is not NAME=VALUE")),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings {
        webhookd: webhookd_bench::webhookd::locate(cli.webhookd.clone())?,
        amqp_url: cli.amqp_url.clone(),
        redis_url: cli.redis_url.clone(),
        redis_cluster_url: cli.redis_cluster_url.clone(),
        events: cli.events,
        latency_rate: cli.latency_rate,
        latency_duration: Duration::from_secs(cli.latency_seconds),
        backlog: cli.backlog,
        // Names live as long as the harness: leaked once.
        extra_env: cli
            .env
            .iter()
            .map(|(name, value)| (&*Box::leak(name.clone().into_boxed_str()), value.clone()))
            .collect(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let baseline = match (&cli.baseline, &cli.baseline_binary) {
        (Some(commit), _) => Some((
            webhookd_bench::ab::build_baseline(commit, &settings.webhookd)?,
            commit.clone(),
        )),
        (None, Some(binary)) => Some((binary.clone(), binary.display().to_string())),
        (None, None) => None,
    };
    if let Some((baseline, name)) = baseline {
        let compared = runtime.block_on(webhookd_bench::ab::compare(
            &settings, &baseline, cli.rounds,
        ))?;
        if cli.json {
            println!("{}", serde_json::to_string_pretty(&compared)?);
        } else {
            print!("{}", webhookd_bench::ab::table(&compared, &name));
        }
        return Ok(());
    }
    let rows = if cli.scenario == Scenario::Cluster {
        runtime.block_on(cluster_rows(&settings))?
    } else {
        runtime.block_on(run(cli.scenario, &settings))?
    };
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", table(&rows));
    }
    Ok(())
}

/// The drain, and with `ordered` the same drain with its endpoint ordered:
/// the drain's rate, and their rows.
async fn drains(
    settings: &Settings,
    pipeline: Option<Ceiling>,
    ordered: bool,
) -> anyhow::Result<(f64, Vec<Row>)> {
    let shape = DrainShape::one_process(settings.events, 1, false);
    let drained = scenarios::drain(settings, shape).await?;
    let mut rows = vec![drain_row(
        "drain: RabbitMQ → Redis → 1 endpoint",
        shape,
        &drained,
        pipeline,
        0.5,
    )];
    if ordered {
        // Its endpoint ordered with a line per event (SPEC §15): what the
        // lines' bookkeeping costs when they hold nothing back.
        let shape = DrainShape {
            ordered: true,
            ..shape
        };
        let ordered = scenarios::drain(settings, shape).await?;
        rows.push(drain_row(
            "drain, the endpoint ordered (a line per event)",
            shape,
            &ordered,
            Some(Ceiling::new("drain", drained.rate)),
            0.8,
        ));
    }
    Ok((drained.rate, rows))
}

async fn run(scenario: Scenario, settings: &Settings) -> anyhow::Result<Vec<Row>> {
    use Scenario::{All, Backlog, Drain, Embedded, Fanout, Latency, Noisy, Slow};
    let wants = |s: Scenario| scenario == s || scenario == All;
    let mut rows = Vec::new();
    let mut progress = |row: &Row| eprintln!("{}: {:.1} {}", row.scenario, row.figure, row.unit);

    let needs_ceilings = !matches!(scenario, Latency | Backlog | Noisy);
    let ceilings: Option<Ceilings> = if needs_ceilings {
        let (ceilings, ceiling_rows) = scenarios::ceilings(settings).await?;
        ceiling_rows.iter().for_each(&mut progress);
        rows.extend(ceiling_rows);
        Some(ceilings)
    } else {
        None
    };
    let pipeline = ceilings.map(|c| c.pipeline());
    let http = ceilings.map(|c| Ceiling::new("raw HTTP", c.http));

    let mut drain_rate = None;
    if wants(Drain) || wants(Slow) {
        let (rate, drain_rows) = drains(settings, pipeline, wants(Drain)).await?;
        drain_rows.iter().for_each(&mut progress);
        rows.extend(drain_rows);
        drain_rate = Some(rate);
    }
    if wants(Fanout) {
        let events = (settings.events / 10).max(1);
        let shape = DrainShape::one_process(events, 10, false);
        let drained = scenarios::drain(settings, shape).await?;
        let row = drain_row(
            "fan-out: 10 endpoints per event",
            shape,
            &drained,
            http.clone(),
            0.5,
        );
        progress(&row);
        rows.push(row);
        // The same, each endpoint with a payload filter: within 10% of the
        // run without (issue 29).
        let shape = DrainShape {
            filtered: true,
            ..shape
        };
        let filtered = scenarios::drain(settings, shape).await?;
        let row = drain_row(
            "fan-out, a payload filter on each endpoint",
            shape,
            &filtered,
            Some(Ceiling::new("fan-out", drained.rate)),
            0.9,
        );
        progress(&row);
        rows.push(row);
    }
    if wants(Latency) {
        let row = scenarios::latency(settings).await?;
        progress(&row);
        rows.push(row);
    }
    if wants(Slow) {
        let shape = DrainShape::one_process(settings.events, 1, true);
        let drained = scenarios::drain(settings, shape).await?;
        let drain = drain_rate.map(|rate| Ceiling::new("drain", rate));
        let row = drain_row(
            "slow endpoint: the healthy endpoint's rate",
            shape,
            &drained,
            drain,
            0.8,
        );
        progress(&row);
        rows.push(row);
    }
    if wants(Embedded) {
        let mut row = scenarios::embedded(settings, (settings.events / 5).max(1)).await?;
        if let Some(http) = http {
            row = row.with_ceiling(http);
        }
        progress(&row);
        rows.push(row);
    }
    if wants(Backlog) {
        for row in scenarios::backlog(settings).await? {
            progress(&row);
            rows.push(row);
        }
    }
    if wants(Noisy) {
        for row in noisy_rows(settings).await? {
            progress(&row);
            rows.push(row);
        }
    }
    Ok(rows)
}

/// Drain and fan-out on the Redis Cluster, two webhookd processes each.
async fn cluster_rows(settings: &Settings) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for (name, events, endpoints) in [
        (
            "cluster drain: 2 processes, 48 tenants, 1 endpoint each",
            settings.events,
            1,
        ),
        (
            "cluster fan-out: 2 processes, 48 tenants, 10 endpoints each",
            (settings.events / 10).max(1),
            10,
        ),
    ] {
        let shape = DrainShape {
            events,
            endpoints,
            hanging_endpoint: false,
            processes: 2,
            tenants: 48,
            filtered: false,
            ordered: false,
        };
        let drained = scenarios::drain_on(settings, &settings.redis_cluster_url, shape).await?;
        let row = drain_row(name, shape, &drained, None, 0.0);
        eprintln!("{}: {:.1} {}", row.scenario, row.figure, row.unit);
        rows.push(row);
    }
    Ok(rows)
}

/// The noisy scenario twice, without and with the hanging endpoints: the
/// healthy endpoints' rate and p99 next to the baseline's.
async fn noisy_rows(settings: &Settings) -> anyhow::Result<Vec<Row>> {
    let baseline = scenarios::noisy(settings, false).await?;
    let noisy = scenarios::noisy(settings, true).await?;
    let rate = settings.latency_rate / 10;
    Ok(vec![
        Row::rate(
            &format!("noisy baseline: {rate} ev/s × 20, 900 endpoints"),
            baseline.rate,
            "deliveries/s",
        )
        .with_usage(baseline.usage)
        .with_stack_cpu(baseline.cpu.stack_seconds, baseline.deliveries)
        .with_note(format!(
            "healthy p50 {:.1} ms, p99 {:.1} ms; {}",
            baseline.p50_ms, baseline.p99_ms, baseline.cpu
        )),
        Row::rate(
            "noisy: + 100 endpoints that hang, healthy rate",
            noisy.rate,
            "deliveries/s",
        )
        .with_ceiling(Ceiling::new("baseline", baseline.rate))
        .with_target(Target::RatioAtLeast(0.9))
        .with_usage(noisy.usage)
        .with_stack_cpu(noisy.cpu.stack_seconds, noisy.deliveries)
        .with_note(noisy.cpu.to_string()),
        Row::rate("noisy: healthy p99", noisy.p99_ms, "ms")
            .with_target(Target::AtMost(100.0))
            .with_note(format!(
                "p50 {:.1} ms (baseline p50 {:.1} ms, p99 {:.1} ms)",
                noisy.p50_ms, baseline.p50_ms, baseline.p99_ms
            )),
    ])
}

/// A drain-type row: deliveries per second against `ceiling`, which the
/// target puts a floor under.
fn drain_row(
    name: &str,
    shape: DrainShape,
    drained: &Drained,
    ceiling: Option<Ceiling>,
    least_ratio: f64,
) -> Row {
    let mut row = Row::rate(name, drained.rate, "deliveries/s")
        .with_usage(drained.usage)
        .with_stack_cpu(drained.cpu.stack_seconds, drained.deliveries)
        .with_note(format!(
            "{} events × {} endpoints{}{}{}, {} duplicates; {}",
            shape.events,
            shape.endpoints,
            if shape.filtered { " with filters" } else { "" },
            if shape.ordered {
                ", ordered (a line per event)"
            } else {
                ""
            },
            if shape.hanging_endpoint {
                " + 1 that never answers"
            } else {
                ""
            },
            drained.duplicates,
            drained.cpu
        ));
    if let Some(ceiling) = ceiling {
        row = row
            .with_ceiling(ceiling)
            .with_target(Target::RatioAtLeast(least_ratio));
    }
    row
}
