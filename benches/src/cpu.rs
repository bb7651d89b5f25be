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
        let mut seconds = vec![
            ("webhookd", cpu_seconds_of(webhookd_pid)),
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

    /// "webhookd 1.2 s, Redis 0.9 s, … of 6.4 core-seconds": the CPU each
    /// used since `earlier`, next to what the machine had.
    pub fn since(&self, earlier: &CpuSample) -> String {
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
