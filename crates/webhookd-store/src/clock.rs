//! The store's clock, for leases, due times and sending slots.
//!
//! Every process sharing a store must agree on "now": a process whose
//! wall clock runs ahead would find live leases over and take their work
//! (a duplicate), and lapse other processes' sending slots (too many
//! requests at once); one stepped back would keep slots past their lapse.
//! So times written to a shared store come from the store's clock, not the
//! process's: Redis `TIME`, read with every claim probe, carried forward
//! between readings by the process's *monotonic* clock — which no wall
//! clock step or skew moves. SQLite, on the machine's own disk, shares the
//! machine's clock with every process using the file: its clock is the
//! wall clock.

use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use webhookd_core::time::unix_millis;

/// A reading of the store's clock, and when (monotonically) it was taken.
#[derive(Debug)]
pub(crate) struct StoreClock {
    reading: Mutex<(Instant, i64)>,
}

impl StoreClock {
    /// Until the first reading: the wall clock.
    pub(crate) fn new() -> Self {
        StoreClock {
            reading: Mutex::new((Instant::now(), unix_millis())),
        }
    }

    /// The store's time now, unix milliseconds.
    pub(crate) fn now_ms(&self) -> i64 {
        let (at, store_ms) = *self.reading.lock().unwrap_or_else(PoisonError::into_inner);
        store_ms.saturating_add(i64::try_from(at.elapsed().as_millis()).unwrap_or(i64::MAX))
    }

    /// The store said `store_ms` in an answer that came at `at`.
    pub(crate) fn read(&self, store_ms: i64, at: Instant) {
        *self.reading.lock().unwrap_or_else(PoisonError::into_inner) = (at, store_ms);
    }

    /// Redis `TIME` (seconds, microseconds) in unix milliseconds.
    pub(crate) fn from_redis_time(time: &[String]) -> Option<i64> {
        let seconds: i64 = time.first()?.parse().ok()?;
        let micros: i64 = time.get(1)?.parse().ok()?;
        Some(seconds * 1000 + micros / 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_runs_on_from_its_last_reading() {
        let clock = StoreClock::new();
        let taken = Instant::now();
        clock.read(1_000_000, taken);
        let now = clock.now_ms();
        assert!((1_000_000..1_000_000 + 1_000).contains(&now), "{now}");
    }

    #[test]
    fn redis_time_reads_as_milliseconds() {
        let time = ["1732806631".to_owned(), "250999".to_owned()];
        assert_eq!(StoreClock::from_redis_time(&time), Some(1_732_806_631_250));
        assert_eq!(StoreClock::from_redis_time(&["x".to_owned()]), None);
    }
}
