//! What a lane worker knows of its sending slot's lapse in the store
//! (SPEC §10, `endpoint_concurrency` across processes).
//!
//! A slot lapses in the store at a time (its score) unless a record or a
//! hand-back renews it; another process then frees its place and may send
//! in it. The worker passes its slot from claim to claim in memory, so it
//! must never send past the lapse the store holds — and it cannot read
//! that lapse, only infer it: a renewal landed if its store call answered
//! before the lapse known until then (the token still existed when the
//! script ran). A renewal that is late (a store stall, a batch of records
//! dropped) therefore does not count, and the worker gives the slot up
//! before it could be another's ("Correctness, round 3", item 6).

use std::time::Duration;

use tokio::sync::watch;

/// Room left for clocks that disagree between processes: a slot is taken
/// for lapsed this long before the lapse the store holds.
pub(crate) const CLOCK_MARGIN_MS: i64 = 1_000;

/// The lapse, as far as the worker knows it landed.
#[derive(Debug)]
pub(crate) struct SlotLapse {
    known: watch::Sender<i64>,
}

impl SlotLapse {
    /// A slot granted to lapse at `lapses_at` (unix ms).
    pub(crate) fn new(lapses_at: i64) -> Self {
        SlotLapse {
            known: watch::Sender::new(lapses_at),
        }
    }

    /// A store call that renewed the slot to `keep_until` answered at
    /// `answered_at`: the renewal counts if that was before the known
    /// lapse (less the clock margin).
    pub(crate) fn renewed(&self, keep_until: i64, answered_at: i64) {
        self.known.send_if_modified(|known| {
            let landed = answered_at < *known - CLOCK_MARGIN_MS && keep_until > *known;
            if landed {
                *known = keep_until;
            }
            landed
        });
    }

    /// Whether the slot is known to last `needed` past `now()` — waiting,
    /// while it has not lapsed, for a renewal on its way. `false`: the slot
    /// may lapse mid-attempt (or has), and must be given up.
    pub(crate) async fn lasts(&self, needed: Duration, now: impl Fn() -> i64) -> bool {
        let needed = i64::try_from(needed.as_millis()).unwrap_or(i64::MAX);
        let mut known = self.known.subscribe();
        loop {
            let lapses_at = *known.borrow_and_update();
            let now = now();
            if lapses_at - now > needed {
                return true;
            }
            let left = lapses_at - CLOCK_MARGIN_MS - now;
            let Ok(left) = u64::try_from(left) else {
                return false;
            };
            if left == 0 {
                return false;
            }
            let renewed = tokio::time::timeout(Duration::from_millis(left), known.changed()).await;
            if !matches!(renewed, Ok(Ok(()))) {
                return false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEEDED: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn a_slot_far_from_its_lapse_lasts() {
        let lapse = SlotLapse::new(100_000);
        assert!(lapse.lasts(NEEDED, || 50_000).await);
    }

    #[tokio::test]
    async fn a_renewal_that_answered_in_time_extends_the_slot() {
        let lapse = SlotLapse::new(20_000);
        lapse.renewed(90_000, 15_000);
        assert!(lapse.lasts(NEEDED, || 16_000).await);
    }

    #[tokio::test]
    async fn a_renewal_that_answered_after_the_lapse_does_not_count() {
        let lapse = SlotLapse::new(20_000);
        lapse.renewed(90_000, 19_500);
        assert!(!lapse.lasts(NEEDED, || 19_600).await);
    }

    #[tokio::test]
    async fn a_worker_near_the_lapse_waits_for_the_renewal_on_its_way() {
        let lapse = std::sync::Arc::new(SlotLapse::new(webhookd_core::time::unix_millis() + 3_000));
        let renewing = {
            let lapse = std::sync::Arc::clone(&lapse);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let now = webhookd_core::time::unix_millis();
                lapse.renewed(now + 60_000, now);
            })
        };
        assert!(lapse.lasts(NEEDED, webhookd_core::time::unix_millis).await);
        renewing.await.expect("the renewal ran");
    }

    #[tokio::test]
    async fn without_a_renewal_the_slot_is_given_up_before_it_lapses() {
        let lapse = SlotLapse::new(webhookd_core::time::unix_millis() + 1_300);
        assert!(!lapse.lasts(NEEDED, webhookd_core::time::unix_millis).await);
    }
}
