//! How long finished deliveries, test deliveries and events' bodies are
//! kept (SPEC §4, §11, §13), and what a sweep step reports.

use std::time::Duration;

use webhookd_core::Config;

use crate::AttemptResult;

/// How long finished deliveries are kept (SPEC §4), counted from their last
/// attempt; then [`Store::sweep`] removes them with their bodies and
/// attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub keep_delivered: Duration,
    pub keep_failed: Duration,
    /// How long an event's body is kept, once per event, for the delivery
    /// detail (SPEC §13), from its acceptance; zero keeps none.
    pub keep_payloads: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention::of(&Config::default())
    }
}

impl Retention {
    /// The retention `config` sets.
    pub fn of(config: &Config) -> Self {
        Retention {
            keep_delivered: config.keep_delivered,
            keep_failed: config.keep_failed,
            keep_payloads: config.keep_payloads,
        }
    }
}

/// How long a finished test delivery is kept, at most (SPEC §11): test
/// sends are a tool, not history, and each kept one costs the store.
pub const KEEP_TEST_DELIVERIES: Duration = Duration::from_secs(24 * 3600);

impl Retention {
    /// Unix milliseconds at which a delivery that finished at `finished_ms`
    /// with `result` is removed (`None` while it is still pending); a test
    /// delivery is kept [`KEEP_TEST_DELIVERIES`] at most.
    pub(crate) fn removal_at(
        &self,
        finished_ms: i64,
        result: AttemptResult,
        test: bool,
    ) -> Option<i64> {
        let keep = match result {
            AttemptResult::Delivered => self.keep_delivered,
            AttemptResult::Dead => self.keep_failed,
            AttemptResult::RetryAt(_) => return None,
        };
        let keep = if test {
            keep.min(KEEP_TEST_DELIVERIES)
        } else {
            keep
        };
        Some(finished_ms.saturating_add(i64::try_from(keep.as_millis()).unwrap_or(i64::MAX)))
    }
}

/// What one [`Store::sweep`] step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SweepReport {
    /// Deliveries removed (past retention, or of deleted endpoints).
    pub removed: u64,
    /// Whether more is left to remove now: call again.
    pub more: bool,
}
