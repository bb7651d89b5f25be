//! The retry schedule (SPEC §4) as pure functions.
//!
//! A retry is data: after a failed attempt the delivery engine asks
//! [`RetrySchedule::next_attempt`] when (or whether) to try again and stores
//! the answer as a due time. Randomness comes in as an argument, so the
//! function is deterministic and property-tested.

use std::fmt;
use std::time::{Duration, SystemTime};

use crate::duration::{format_duration, parse_duration};

/// Jitter applied to every scheduled delay: ±20%.
pub const JITTER: f64 = 0.2;
/// Longest wait a receiver's `Retry-After` can ask for.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);
/// Longest single delay a schedule may contain; keeps the arithmetic far from
/// overflow and catches unit slips such as `5000d`.
pub const MAX_SCHEDULED_DELAY: Duration = Duration::from_secs(30 * 24 * 3600);
/// Most delays a schedule may list.
pub const MAX_RETRIES: usize = 100;

/// Delays after each failed attempt. `n` delays mean `n + 1` attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule {
    delays: Vec<Duration>,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextAttempt {
    /// Try again once this much time has passed.
    After(Duration),
    /// The schedule is used up: the delivery is dead.
    GiveUp,
}

impl Default for RetrySchedule {
    /// SPEC §4, after the Standard Webhooks recommendation: 10 attempts over
    /// about 3.3 days.
    fn default() -> Self {
        const HOUR: u64 = 3600;
        let seconds = [
            5,
            5 * 60,
            30 * 60,
            2 * HOUR,
            5 * HOUR,
            10 * HOUR,
            14 * HOUR,
            20 * HOUR,
            24 * HOUR,
        ];
        RetrySchedule {
            delays: seconds.into_iter().map(Duration::from_secs).collect(),
        }
    }
}

impl RetrySchedule {
    /// Builds a schedule from explicit delays, checking the same limits as
    /// [`RetrySchedule::parse`].
    pub fn try_new(delays: Vec<Duration>) -> Result<Self, String> {
        if delays.is_empty() {
            return Err("must list at least one delay, e.g. \"5s,5m,2h\"".into());
        }
        if delays.len() > MAX_RETRIES {
            return Err(format!(
                "lists {} delays, at most {MAX_RETRIES} are allowed",
                delays.len()
            ));
        }
        if let Some(long) = delays.iter().find(|d| **d > MAX_SCHEDULED_DELAY) {
            return Err(format!(
                "delay {} is longer than the {} limit",
                format_duration(*long),
                format_duration(MAX_SCHEDULED_DELAY)
            ));
        }
        Ok(RetrySchedule { delays })
    }

    /// Parses a comma-separated list such as `"5s,5m,2h"`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let delays = text
            .split(',')
            .map(|part| parse_duration(part).map_err(|e| format!("delay {}: {e}", part.trim())))
            .collect::<Result<Vec<_>, _>>()?;
        Self::try_new(delays)
    }

    /// The configured delays, without jitter.
    pub fn delays(&self) -> &[Duration] {
        &self.delays
    }

    /// Attempts in all: the first one plus one per delay.
    pub fn max_attempts(&self) -> u32 {
        u32::try_from(self.delays.len() + 1).expect("at most MAX_RETRIES delays")
    }

    /// When to try again after `failed_attempts` attempts have failed
    /// (1 after the first failure).
    ///
    /// `jitter_unit` is a uniform sample from `[0, 1]` that spreads the delay
    /// over ±20%; `retry_after` is what the receiver asked for with a 429 or
    /// 503. The wait is the larger of the jittered delay and `retry_after`
    /// capped at 24 h.
    pub fn next_attempt(
        &self,
        failed_attempts: u32,
        jitter_unit: f64,
        retry_after: Option<Duration>,
    ) -> NextAttempt {
        let index = usize::try_from(failed_attempts).unwrap_or(usize::MAX);
        let Some(delay) = index.checked_sub(1).and_then(|i| self.delays.get(i)) else {
            return if failed_attempts == 0 {
                NextAttempt::After(Duration::ZERO)
            } else {
                NextAttempt::GiveUp
            };
        };
        let unit = if jitter_unit.is_finite() {
            jitter_unit.clamp(0.0, 1.0)
        } else {
            0.5
        };
        let factor = 1.0 - JITTER + 2.0 * JITTER * unit;
        let jittered = delay.mul_f64(factor);
        let requested = retry_after.map_or(Duration::ZERO, |d| d.min(MAX_RETRY_AFTER));
        NextAttempt::After(jittered.max(requested))
    }
}

impl fmt::Display for RetrySchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<_> = self.delays.iter().map(|d| format_duration(*d)).collect();
        f.write_str(&parts.join(","))
    }
}

/// Reads a `Retry-After` header value: delay-seconds or an HTTP-date
/// (RFC 9110 §10.2.3). A date in the past means "now"; garbage means no
/// request at all.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn the_default_is_the_standard_webhooks_schedule() {
        let schedule = RetrySchedule::default();
        assert_eq!(schedule.to_string(), "5s,5m,30m,2h,5h,10h,14h,20h,1d");
        assert_eq!(schedule.max_attempts(), 10);
        let total: Duration = schedule.delays().iter().sum();
        // 75h35m: SPEC §4 rounds this to "about 3.3 days".
        assert_eq!(total, Duration::from_secs(75 * 3600 + 35 * 60 + 5));
    }

    #[test]
    fn a_schedule_parses_from_its_config_form() {
        let schedule = RetrySchedule::parse("1s, 2s,4s").unwrap();
        assert_eq!(schedule.delays(), &[SECOND, 2 * SECOND, 4 * SECOND]);
        assert_eq!(schedule.max_attempts(), 4);
    }

    #[test]
    fn bad_schedules_say_which_delay_is_wrong() {
        assert!(
            RetrySchedule::parse("5s,,2h")
                .unwrap_err()
                .starts_with("delay :")
        );
        assert!(
            RetrySchedule::parse("5s,5q")
                .unwrap_err()
                .starts_with("delay 5q:")
        );
        assert!(
            RetrySchedule::parse("5s,40d")
                .unwrap_err()
                .contains("limit")
        );
        assert!(
            RetrySchedule::try_new(vec![])
                .unwrap_err()
                .contains("at least one")
        );
    }

    #[test]
    fn the_middle_of_the_jitter_range_is_the_scheduled_delay() {
        let schedule = RetrySchedule::parse("10s,20s").unwrap();
        assert_eq!(
            schedule.next_attempt(1, 0.5, None),
            NextAttempt::After(10 * SECOND)
        );
        assert_eq!(
            schedule.next_attempt(2, 0.0, None),
            NextAttempt::After(16 * SECOND)
        );
        assert_eq!(
            schedule.next_attempt(2, 1.0, None),
            NextAttempt::After(24 * SECOND)
        );
        assert_eq!(schedule.next_attempt(3, 0.5, None), NextAttempt::GiveUp);
    }

    #[test]
    fn retry_after_wins_when_longer_and_is_capped_at_a_day() {
        let schedule = RetrySchedule::parse("10s").unwrap();
        assert_eq!(
            schedule.next_attempt(1, 0.5, Some(60 * SECOND)),
            NextAttempt::After(60 * SECOND)
        );
        assert_eq!(
            schedule.next_attempt(1, 0.5, Some(SECOND)),
            NextAttempt::After(10 * SECOND)
        );
        assert_eq!(
            schedule.next_attempt(1, 0.5, Some(7 * 86_400 * SECOND)),
            NextAttempt::After(MAX_RETRY_AFTER)
        );
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(parse_retry_after("120", now), Some(120 * SECOND));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:37 GMT", now),
            Some(60 * SECOND)
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    fn schedules() -> impl Strategy<Value = RetrySchedule> {
        let max_ms = u64::try_from(MAX_SCHEDULED_DELAY.as_millis()).unwrap();
        prop::collection::vec(0..=max_ms, 1..20).prop_map(|ms| {
            RetrySchedule::try_new(ms.into_iter().map(Duration::from_millis).collect()).unwrap()
        })
    }

    proptest! {
        #[test]
        fn delays_stay_within_twenty_percent_of_the_schedule(
            schedule in schedules(),
            failed in 1u32..20,
            unit in 0.0f64..=1.0,
        ) {
            match schedule.next_attempt(failed, unit, None) {
                NextAttempt::After(delay) => {
                    let base = schedule.delays()[failed as usize - 1].as_secs_f64();
                    let got = delay.as_secs_f64();
                    prop_assert!(got >= base * 0.8 - 1e-6 && got <= base * 1.2 + 1e-6);
                }
                NextAttempt::GiveUp => prop_assert!(failed >= schedule.max_attempts()),
            }
        }

        #[test]
        fn gives_up_exactly_after_the_last_attempt(schedule in schedules(), unit in 0.0f64..=1.0) {
            let last = schedule.max_attempts();
            prop_assert!(matches!(schedule.next_attempt(last - 1, unit, None), NextAttempt::After(_)));
            prop_assert_eq!(schedule.next_attempt(last, unit, None), NextAttempt::GiveUp);
            prop_assert_eq!(schedule.next_attempt(u32::MAX, unit, None), NextAttempt::GiveUp);
        }

        #[test]
        fn retry_after_is_honoured_up_to_a_day(
            schedule in schedules(),
            failed in 1u32..20,
            unit in any::<f64>(),
            retry_after_s in 0u64..10 * 86_400,
        ) {
            let retry_after = Duration::from_secs(retry_after_s);
            if let NextAttempt::After(delay) = schedule.next_attempt(failed, unit, Some(retry_after)) {
                prop_assert!(delay >= retry_after.min(MAX_RETRY_AFTER));
                let base = schedule.delays()[failed as usize - 1];
                prop_assert!(delay <= base.mul_f64(1.2).max(MAX_RETRY_AFTER) + Duration::from_millis(1));
            }
        }

        #[test]
        fn parsing_the_display_form_gives_the_same_schedule(schedule in schedules()) {
            prop_assert_eq!(RetrySchedule::parse(&schedule.to_string()).unwrap(), schedule);
        }
    }
}
