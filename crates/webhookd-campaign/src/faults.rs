//! The faults a campaign draws from its seed, and their windows.

use std::time::{Duration, Instant};

use rand::Rng as _;
use rand::rngs::StdRng;

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// kill -9 a webhookd, started again a little later.
    Kill,
    /// SIGSTOP a webhookd, SIGCONT a little later.
    Pause,
    /// RabbitMQ closes the process's connection (`rabbitmqctl`).
    AmqpClose,
    /// The process's link to Redis refuses and resets.
    StoreCut,
    /// The process's link to Redis goes silent (no reset).
    StoreFreeze,
    /// The process's link to Redis is cut, then the process is told to
    /// stop (SIGTERM) before the link is back, and started again.
    TermWhileStoreDown,
    /// The process runs with its wall clock an hour ahead (libfaketime),
    /// then as before.
    ClockAhead,
    /// The process runs with its wall clock an hour behind.
    ClockBehind,
    /// kill -9 of the campaign's Redis (append-only, fsync always), started
    /// again from its file.
    RedisKill,
    /// The campaign's Redis stopped (SIGSTOP) for 2.5–6 s: longer than a
    /// reply timeout.
    RedisFreeze,
}

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::Kill,
        Kind::Pause,
        Kind::AmqpClose,
        Kind::StoreCut,
        Kind::StoreFreeze,
        Kind::TermWhileStoreDown,
        Kind::ClockAhead,
        Kind::ClockBehind,
        Kind::RedisKill,
        Kind::RedisFreeze,
    ];

    /// The faults that make sense with the embedded store and HTTP ingest
    /// (one process, no broker, no link to a store).
    pub const EMBEDDED: [Kind; 4] = [Kind::Kill, Kind::Pause, Kind::ClockAhead, Kind::ClockBehind];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Kill => "kill",
            Kind::Pause => "pause",
            Kind::AmqpClose => "amqp-close",
            Kind::StoreCut => "store-cut",
            Kind::StoreFreeze => "store-freeze",
            Kind::TermWhileStoreDown => "term-store-down",
            Kind::ClockAhead => "clock-ahead",
            Kind::ClockBehind => "clock-behind",
            Kind::RedisKill => "redis-kill",
            Kind::RedisFreeze => "redis-freeze",
        }
    }

    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

/// One fault of the schedule: what, to which process, when (from the
/// start of the run) and for how long.
#[derive(Debug, Clone, Copy)]
pub struct Fault {
    pub kind: Kind,
    pub process: usize,
    pub after: Duration,
    pub lasts: Duration,
}

/// The faults of a run lasting `duration`, drawn from `random`: one every
/// 2–6 s, none in the first 2 s.
pub fn schedule(
    random: &mut StdRng,
    kinds: &[Kind],
    processes: usize,
    duration: Duration,
) -> Vec<Fault> {
    let mut faults = Vec::new();
    if kinds.is_empty() {
        return faults;
    }
    let mut at = Duration::from_secs(2);
    while at < duration {
        let kind = kinds[random.random_range(0..kinds.len())];
        let lasts = if kind == Kind::RedisFreeze {
            Duration::from_millis(random.random_range(2_500..6_000))
        } else {
            Duration::from_millis(random.random_range(500..5_000))
        };
        faults.push(Fault {
            kind,
            process: random.random_range(0..processes),
            after: at,
            lasts,
        });
        at += lasts + Duration::from_millis(random.random_range(2_000..6_000));
    }
    faults
}

/// When a fault (or a call that may repeat a delivery) was in force.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub kind: &'static str,
    pub from: Instant,
    pub until: Instant,
}
