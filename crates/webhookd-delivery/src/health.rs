//! How an endpoint answered its last attempt in this process: the circuit
//! breaker that decides how many claims its lane may hold (docs/delivery.md,
//! "Fairness between endpoints and tenants").

use std::time::Duration;

use webhookd_store::AttemptResult;

/// Claims a flowing lane may hold waiting, per sending slot: enough that a
/// fast endpoint's claims come in large batches.
const QUEUED_PER_SLOT: usize = 8;
/// An endpoint whose last attempt succeeded in less than this is flowing:
/// its lane may queue. A slower one only gets claims for its sending slots,
/// so its claims never wait long nor hold permits the others need.
const FLOWING_BELOW: Duration = Duration::from_secs(1);
/// Failures in a row that close a lane that was answering. One failure
/// among successes is noise (a receiver that times out one request in five
/// still delivers four): throttling it to one claim at a time made such an
/// endpoint fall behind its load for good (docs/reliability.md, "The
/// one-hour run"). A lane never answered closes at its first failure.
const FAILURES_TO_TRIP: u32 = 3;

/// How an endpoint answered its last attempt in this process: a circuit
/// breaker that decides how many claims its lane may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Health {
    /// Not tried yet (or idle, and so not listed in a claim request): one
    /// claim, a probe. A thousand new endpoints that hang hold one permit
    /// each for one deadline, not `per_endpoint` each wave after wave.
    #[default]
    Unknown,
    /// Succeeded quickly (see `FLOWING_BELOW`): may queue.
    Flowing,
    /// Succeeded slowly: `per_endpoint` claims, sending only.
    Slow,
    /// Failed (error, timeout, non-2xx): one claim at a time — the
    /// half-open probe; its first success opens the lane again.
    Failing,
}

impl Health {
    /// Held claims of this health count against the suspects' share.
    pub(crate) fn is_suspect(self) -> bool {
        matches!(self, Health::Slow | Health::Failing)
    }

    /// The health after an attempt that ended in `result` after `took`,
    /// with `failures_in_row` the failures before it since the last success
    /// (updated here).
    pub(crate) fn after(
        self,
        result: AttemptResult,
        took: Duration,
        failures_in_row: &mut u32,
    ) -> Health {
        match result {
            AttemptResult::Delivered => {
                *failures_in_row = 0;
                if took < FLOWING_BELOW {
                    Health::Flowing
                } else {
                    Health::Slow
                }
            }
            AttemptResult::RetryAt(_) | AttemptResult::Dead => {
                *failures_in_row = failures_in_row.saturating_add(1);
                let answering = matches!(self, Health::Flowing | Health::Slow);
                if answering && *failures_in_row < FAILURES_TO_TRIP {
                    self
                } else {
                    Health::Failing
                }
            }
        }
    }

    /// Claims a lane of this health may hold, sending or waiting.
    pub(crate) fn room(self, per_endpoint: usize) -> usize {
        match self {
            Health::Flowing => per_endpoint * (1 + QUEUED_PER_SLOT),
            Health::Slow => per_endpoint,
            Health::Unknown | Health::Failing => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUICK: Duration = Duration::from_millis(20);

    fn failed() -> AttemptResult {
        AttemptResult::RetryAt(0)
    }

    #[test]
    fn an_answering_lane_closes_only_after_failures_in_a_row() {
        let mut streak = 0;
        let mut health = Health::Unknown.after(AttemptResult::Delivered, QUICK, &mut streak);
        assert_eq!(health, Health::Flowing);
        // One receiver answer in five lost: the lane stays open.
        for _ in 0..10 {
            health = health.after(failed(), QUICK, &mut streak);
            assert_eq!(health, Health::Flowing);
            for _ in 0..4 {
                health = health.after(AttemptResult::Delivered, QUICK, &mut streak);
            }
        }
        for _ in 1..FAILURES_TO_TRIP {
            health = health.after(failed(), QUICK, &mut streak);
            assert_eq!(health, Health::Flowing);
        }
        health = health.after(failed(), QUICK, &mut streak);
        assert_eq!(health, Health::Failing);
        // The half-open probe's first success opens it again.
        assert_eq!(
            health.after(AttemptResult::Delivered, QUICK, &mut streak),
            Health::Flowing
        );
    }

    #[test]
    fn a_lane_never_answered_closes_at_its_first_failure() {
        let mut streak = 0;
        assert_eq!(
            Health::Unknown.after(failed(), QUICK, &mut streak),
            Health::Failing
        );
        assert_eq!(
            Health::Failing.after(failed(), QUICK, &mut streak),
            Health::Failing
        );
    }
}
