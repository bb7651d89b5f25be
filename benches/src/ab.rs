//! A/B against an earlier commit, in one run (issue 26): the commit's
//! webhookd is built in a worktree of its own, and the drain and fan-out
//! scenarios run alternately with it and with this build, so both meet the
//! same machine. Each figure is the median of the rounds, per delivery:
//! CPU per process (webhookd, Redis, RabbitMQ, and the three together) and
//! what Redis ran (`INFO commandstats`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use serde::Serialize;

use crate::commandstats::per;
use crate::scenarios::{self, DrainShape, Drained, Settings};

/// Builds webhookd at `commit` (in `<target>/ab/<commit>`, compiled into
/// `<target>/ab/target`, the profile of `current`) and returns its binary.
/// Built once: a second run reuses it.
pub fn build_baseline(commit: &str, current: &Path) -> anyhow::Result<PathBuf> {
    let profile_dir = current
        .parent()
        .context("the webhookd binary has a directory")?;
    let release = profile_dir.ends_with("release");
    let target = profile_dir
        .parent()
        .context("the profile directory is in a target directory")?;
    let rev = git(&["rev-parse", "--short=12", commit])?;
    let tree = target.join("ab").join(&rev);
    if !tree.exists() {
        let tree_arg = tree.to_str().context("a UTF-8 target path")?;
        git(&["worktree", "add", "--force", "--detach", tree_arg, &rev])?;
    }
    let ab_target = target.join("ab").join("target");
    eprintln!("building webhookd at {rev} in {}", tree.display());
    let mut build = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    build
        .current_dir(&tree)
        .env("CARGO_TARGET_DIR", &ab_target)
        .args([
            "build", "--quiet", "--locked", "-p", "webhookd", "--bin", "webhookd",
        ]);
    if release {
        build.arg("--release");
    }
    if !build.status()?.success() {
        bail!("building webhookd at {rev} failed");
    }
    Ok(ab_target
        .join(if release { "release" } else { "debug" })
        .join("webhookd"))
}

fn git(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("git").args(args).output()?;
    if !output.status.success() {
        bail!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// One scenario's figures per delivery, from one run.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct PerDelivery {
    pub webhookd_us: f64,
    pub redis_us: f64,
    pub rabbitmq_us: f64,
    pub stack_us: f64,
    pub script_calls: f64,
    pub script_us: f64,
    pub redis_commands: f64,
    pub deliveries_per_second: f64,
}

impl PerDelivery {
    fn of(drained: &Drained) -> PerDelivery {
        let deliveries = u64::try_from(drained.deliveries).unwrap_or(u64::MAX);
        #[allow(clippy::cast_precision_loss)]
        let us = |seconds: f64| seconds * 1e6 / deliveries.max(1) as f64;
        let redis = drained.redis.clone().unwrap_or_default();
        PerDelivery {
            webhookd_us: us(drained.cpu.of("webhookd")),
            redis_us: us(drained.cpu.of("Redis")),
            rabbitmq_us: us(drained.cpu.of("RabbitMQ")),
            stack_us: us(drained.cpu.stack_seconds),
            script_calls: per(redis.script_calls(), deliveries),
            script_us: per(redis.script_usec(), deliveries),
            redis_commands: per(redis.commands(), deliveries),
            deliveries_per_second: drained.rate,
        }
    }

    /// The figures by name, in the table's order.
    fn figures(&self) -> [(&'static str, f64); 8] {
        [
            ("deliveries/s", self.deliveries_per_second),
            ("webhookd µs CPU / delivery", self.webhookd_us),
            ("Redis µs CPU / delivery", self.redis_us),
            ("RabbitMQ µs CPU / delivery", self.rabbitmq_us),
            ("whole stack µs CPU / delivery", self.stack_us),
            ("Redis µs in scripts / delivery", self.script_us),
            ("Redis script calls / delivery", self.script_calls),
            ("Redis commands / delivery", self.redis_commands),
        ]
    }
}

/// A scenario run `rounds` times on each side.
#[derive(Debug, Clone, Serialize)]
pub struct Compared {
    pub scenario: String,
    pub baseline: Vec<PerDelivery>,
    pub current: Vec<PerDelivery>,
    /// This build's most run Redis commands per delivery, from its last run.
    pub current_commands: String,
}

/// Runs the drain and the fan-out scenario `rounds` times with each
/// binary, alternating which goes first.
pub async fn compare(
    settings: &Settings,
    baseline: &Path,
    rounds: usize,
) -> anyhow::Result<Vec<Compared>> {
    let events = settings.events;
    let shapes = [
        (
            "drain: RabbitMQ → Redis → 1 endpoint",
            DrainShape::one_process(events, 1, false),
        ),
        (
            "fan-out: 10 endpoints per event",
            DrainShape::one_process((events / 10).max(1), 10, false),
        ),
    ];
    let baseline_settings = Settings {
        webhookd: baseline.to_owned(),
        extra_env: Vec::new(),
        ..settings.clone()
    };
    let mut compared = Vec::new();
    for (name, shape) in shapes {
        let mut result = Compared {
            scenario: name.to_owned(),
            baseline: Vec::new(),
            current: Vec::new(),
            current_commands: String::new(),
        };
        for round in 0..rounds {
            for baseline_turn in [round % 2 == 0, round % 2 == 1] {
                let side = if baseline_turn {
                    &baseline_settings
                } else {
                    settings
                };
                let drained = scenarios::drain(side, shape).await?;
                let figures = PerDelivery::of(&drained);
                eprintln!(
                    "{name}, round {}, {}: {:.0} deliveries/s, stack {:.1} µs/delivery",
                    round + 1,
                    if baseline_turn { "baseline" } else { "current" },
                    figures.deliveries_per_second,
                    figures.stack_us
                );
                if baseline_turn {
                    result.baseline.push(figures);
                } else {
                    if let Some(redis) = &drained.redis {
                        result.current_commands =
                            redis.top(u64::try_from(drained.deliveries).unwrap_or(u64::MAX), 8);
                    }
                    result.current.push(figures);
                }
            }
        }
        compared.push(result);
    }
    Ok(compared)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => f64::midpoint(values[n / 2 - 1], values[n / 2]),
    }
}

/// The comparison as a Markdown table: medians, and this build ÷ the
/// baseline.
pub fn table(compared: &[Compared], baseline_name: &str) -> String {
    let mut out = String::new();
    for scenario in compared {
        let rounds = scenario.current.len();
        let _ = writeln!(
            out,
            "\n| {} (median of {rounds}) | `{baseline_name}` | this build | ratio |\n|---|---|---|---|",
            scenario.scenario
        );
        let names = PerDelivery::default().figures().map(|(name, _)| name);
        for (i, name) in names.iter().enumerate() {
            let of =
                |runs: &[PerDelivery]| median(runs.iter().map(|run| run.figures()[i].1).collect());
            let (before, now) = (of(&scenario.baseline), of(&scenario.current));
            let ratio = if before > 0.0 {
                format!("{:.2}×", now / before)
            } else {
                "—".to_owned()
            };
            let _ = writeln!(out, "| {name} | {before:.2} | {now:.2} | {ratio} |");
        }
        if !scenario.current_commands.is_empty() {
            let _ = writeln!(
                out,
                "\nThis build's commands per delivery: {}",
                scenario.current_commands
            );
        }
    }
    out
}
