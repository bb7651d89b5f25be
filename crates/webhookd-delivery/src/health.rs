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

    pub(crate) fn after(result: AttemptResult, took: Duration) -> Health {
        match result {
            AttemptResult::Delivered if took < FLOWING_BELOW => Health::Flowing,
            AttemptResult::Delivered => Health::Slow,
            AttemptResult::RetryAt(_) | AttemptResult::Dead => Health::Failing,
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
