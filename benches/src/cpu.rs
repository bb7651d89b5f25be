//! Where the machine's CPU went during a measured phase: webhookd, Redis,
//! RabbitMQ and this harness (the receiver and publishers), read from /proc.
//! On a 2-core machine this is the profile that says what bounds a figure.

use std::time::Instant;

/// The processes watched, by their /proc `comm` name ("webhookd" is matched
/// by pid, the harness is this process).
const SERVICES: [(&str, &str); 2] = [("Redis", "redis-server"), ("RabbitMQ", "beam.smp")];

/// CPU seconds of a set of processes at one moment.
#[derive(Debug, Clone)]
pub struct CpuSample {
    at: Instant,
    seconds: Vec<(&'static str, f64)>,
}

impl CpuSample {
    /// Samples the services, this harness, and webhookd (`pid`).
    pub fn take(webhookd_pid: u32) -> CpuSample {
        CpuSample::take_all(&[webhookd_pid])
    }

    /// [`CpuSample::take`] with several webhookd processes, summed.
    pub fn take_all(webhookd_pids: &[u32]) -> CpuSample {
        let mut seconds = vec![
            (
                "webhookd",
                webhookd_pids.iter().copied().map(cpu_seconds_of).sum(),
            ),
            ("harness", cpu_seconds_of(std::process::id())),
        ];
        for (name, comm) in SERVICES {
            let total = pids_named(comm).into_iter().map(cpu_seconds_of).sum();
            seconds.push((name, total));
        }
        CpuSample {
            at: Instant::now(),
            seconds,
        }
    }

    /// What each process used since `earlier`: the summary for the note,
    /// and the whole stack's seconds (webhookd, Redis, RabbitMQ — not the
    /// harness) for the CPU-per-delivery column.
    pub fn since(&self, earlier: &CpuSample) -> CpuUse {
        let stack_seconds = self
            .seconds
            .iter()
            .zip(&earlier.seconds)
            .filter(|((name, _), _)| *name != "harness")
            .map(|((_, now), (_, before))| now - before)
            .sum();
        CpuUse {
            summary: self.summary_since(earlier),
            stack_seconds,
            per_process: self
                .seconds
                .iter()
                .zip(&earlier.seconds)
                .map(|((name, now), (_, before))| (*name, now - before))
                .collect(),
        }
    }

    /// "webhookd 1.2 s, Redis 0.9 s, … of 6.4 core-seconds": the CPU each
    /// used since `earlier`, next to what the machine had.
    fn summary_since(&self, earlier: &CpuSample) -> String {
        let wall = self.at.duration_since(earlier.at);
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let used: Vec<String> = self
            .seconds
            .iter()
            .zip(&earlier.seconds)
            .map(|((name, now), (_, before))| format!("{name} {:.1}", now - before))
            .collect();
        #[allow(clippy::cast_precision_loss)]
        let available = wall.as_secs_f64() * cores as f64;
        format!(
            "CPU s: {} of {available:.1} ({cores} cores × {:.1} s)",
            used.join(", "),
            wall.as_secs_f64()
        )
    }
}

/// CPU a measured phase used: see [`CpuSample::since`].
#[derive(Debug, Clone)]
pub struct CpuUse {
    pub summary: String,
    pub stack_seconds: f64,
    /// CPU seconds of each process watched: webhookd, the harness, Redis,
    /// RabbitMQ.
    pub per_process: Vec<(&'static str, f64)>,
}

impl CpuUse {
    /// The seconds of the process named `name` (0 if not watched).
    pub fn of(&self, name: &str) -> f64 {
        self.per_process
            .iter()
            .find(|(watched, _)| *watched == name)
            .map_or(0.0, |(_, seconds)| *seconds)
    }
}

impl std::fmt::Display for CpuUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.summary)
    }
}

fn pids_named(comm: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|name| name.trim() == comm)
        })
        .collect()
}

/// User + system CPU seconds of `pid` so far (0 if it is gone). Clock ticks
/// are USER_HZ, 100 on Linux.
pub fn cpu_seconds_of(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields overall.
    let ticks: f64 = stat.rsplit_once(')').map_or(0.0, |(_, rest)| {
        rest.split_whitespace()
            .skip(11)
            .take(2)
            .filter_map(|t| t.parse::<f64>().ok())
            .sum()
    });
    ticks / 100.0
}

/// A Redis Cluster node: its address, whether it is a primary, its pid.
#[derive(Debug, Clone)]
pub struct Node {
    pub address: String,
    pub primary: bool,
    pub pid: u32,
}

/// The nodes of the cluster `url` names (`redis+cluster://…`), read with
/// CLUSTER NODES and INFO; none for one server.
pub async fn redis_nodes(url: &str) -> Vec<Node> {
    let Some(seed) = url
        .strip_prefix("redis+cluster://")
        .and_then(|rest| rest.split(',').next())
    else {
        return Vec::new();
    };
    let query = |address: String, command: Vec<&'static str>| async move {
        let client = redis::Client::open(format!("redis://{address}")).ok()?;
        let mut connection = client.get_multiplexed_async_connection().await.ok()?;
        let mut cmd = redis::cmd(command[0]);
        cmd.arg(&command[1..]);
        cmd.query_async::<String>(&mut connection).await.ok()
    };
    let listing = query(seed.to_owned(), vec!["CLUSTER", "NODES"])
        .await
        .unwrap_or_default();
    let mut nodes = Vec::new();
    for line in listing.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let (Some(address), Some(flags)) = (fields.get(1), fields.get(2)) else {
            continue;
        };
        let address = address.split('@').next().unwrap_or(address).to_owned();
        let info = query(address.clone(), vec!["INFO", "server"])
            .await
            .unwrap_or_default();
        let Some(pid) = info
            .lines()
            .find_map(|l| l.strip_prefix("process_id:"))
            .and_then(|pid| pid.trim().parse().ok())
        else {
            continue;
        };
        nodes.push(Node {
            primary: flags.contains("master"),
            address,
            pid,
        });
    }
    nodes.sort_by(|a, b| a.address.cmp(&b.address));
    nodes
}

/// CPU seconds of each node so far.
pub fn node_seconds(nodes: &[Node]) -> Vec<f64> {
    nodes.iter().map(|node| cpu_seconds_of(node.pid)).collect()
}

/// "; per Redis node: 7101 (primary) 1.2, …": what each node used since
/// `before`, so the spread across shards shows.
pub fn per_node(nodes: &[Node], before: &[f64]) -> String {
    let used: Vec<String> = nodes
        .iter()
        .zip(node_seconds(nodes).iter().zip(before))
        .map(|(node, (now, then))| {
            let port = node.address.rsplit(':').next().unwrap_or(&node.address);
            let role = if node.primary { "primary" } else { "replica" };
            format!("{port} ({role}) {:.1}", now - then)
        })
        .collect();
    format!("; CPU s per Redis node: {}", used.join(", "))
}
