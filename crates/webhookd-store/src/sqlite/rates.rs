//! Endpoints' rate limits on the embedded store (SPEC §10): token buckets
//! in memory, enough for a store that one process serves. (The Redis store
//! keeps them in Redis, shared by every process: `schedule_functions.lua`.)

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

/// Buckets kept before full ones (the same as none) are dropped.
const KEEP_BUCKETS: usize = 10_000;

#[derive(Debug, Default)]
pub(super) struct RateBuckets {
    buckets: Mutex<HashMap<String, Bucket>>,
}

/// `limit` tokens a second, at most one second's worth saved.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at_ms: i64,
}

impl Bucket {
    fn refilled(self, limit: f64, now_ms: i64) -> f64 {
        #[allow(clippy::cast_precision_loss)] // milliseconds since the last take
        let elapsed = now_ms.saturating_sub(self.at_ms).max(0) as f64;
        (self.tokens + elapsed * limit / 1000.0).min(limit)
    }
}

impl RateBuckets {
    /// Takes up to `wanted` whole tokens from the endpoint's bucket at
    /// `now_ms`: how many deliveries may start.
    pub(super) fn take(&self, endpoint_id: &str, limit: u32, now_ms: i64, wanted: usize) -> usize {
        let limit = f64::from(limit);
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() > KEEP_BUCKETS {
            buckets.retain(|_, bucket| bucket.refilled(limit, now_ms) < limit);
        }
        let bucket = buckets.entry(endpoint_id.to_owned()).or_insert(Bucket {
            tokens: limit,
            at_ms: now_ms,
        });
        let tokens = bucket.refilled(limit, now_ms);
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // 0..=limit
        let taken = (tokens.floor() as usize).min(wanted);
        #[allow(clippy::cast_precision_loss)] // at most the limit
        let spent = taken as f64;
        *bucket = Bucket {
            tokens: tokens - spent,
            at_ms: now_ms,
        };
        taken
    }

    /// Returns tokens taken and not used.
    pub(super) fn give_back(&self, endpoint_id: &str, limit: u32, unused: usize) {
        if unused == 0 {
            return;
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(bucket) = buckets.get_mut(endpoint_id) {
            #[allow(clippy::cast_precision_loss)] // at most the limit
            let unused = unused as f64;
            bucket.tokens = (bucket.tokens + unused).min(f64::from(limit));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_holds_one_second_and_refills_at_its_rate() {
        let buckets = RateBuckets::default();
        assert_eq!(buckets.take("e", 10, 0, 100), 10, "a full second's worth");
        assert_eq!(buckets.take("e", 10, 0, 100), 0);
        assert_eq!(buckets.take("e", 10, 250, 100), 2, "2.5 tokens in 250 ms");
        buckets.give_back("e", 10, 1);
        assert_eq!(buckets.take("e", 10, 250, 100), 1);
        assert_eq!(
            buckets.take("e", 10, 10_000, 100),
            10,
            "never more than a second's worth"
        );
        assert_eq!(
            buckets.take("other", 10, 10_000, 3),
            3,
            "each endpoint its own"
        );
    }
}
