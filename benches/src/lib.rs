//! webhookd's benchmarks. The criterion micro-benchmarks live in `benches/`;
//! this library is the end-to-end load harness behind the `webhookd-bench`
//! binary: a signature-checking receiver, RabbitMQ and raw-HTTP ceilings, a
//! real webhookd process per scenario, and the report.

pub mod ab;
pub mod broker;
pub mod commandstats;
pub mod cpu;
pub mod http;
pub mod receiver;
pub mod report;
pub mod scenarios;
pub mod webhookd;

/// Now, in microseconds since the Unix epoch: the clock publish times and
/// receipt times share across processes on one machine.
pub fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
        })
}
