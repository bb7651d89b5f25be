//! The recorder: writes finished attempts back to the store in batches,
//! and returns their permits once written.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, mpsc};
use webhookd_core::telemetry;
use webhookd_store::{AttemptResult, FinishedAttempt, Recorded, Store};

use crate::engine::STORE_ERROR_DELAY;
use crate::slot_lapse::SlotLapse;

/// A finished attempt on its way to the store, with its claim's permit.
#[derive(Debug)]
pub(crate) struct Unrecorded {
    pub(crate) finished: FinishedAttempt,
    pub(crate) permit: OwnedSemaphorePermit,
    /// The worker's slot, when the record renews it (`finished.claim.slot`
    /// keeps it until the next claim's lease end): told when it answered.
    pub(crate) renews: Option<Arc<SlotLapse>>,
}

/// Most attempts written in one store call.
const RECORD_BATCH: usize = 512;
/// A batch of fewer attempts waits up to `RECORD_LINGER` for more before
/// it is written: permits and slot renewals come back that much later.
const RECORD_LINGER_BELOW: usize = 64;
const RECORD_LINGER: Duration = Duration::from_millis(2);

/// Writes finished attempts back in batches: whatever finished while the
/// previous write was out goes in the next one (one round trip, or one
/// commit, for many). Retries briefly while the store is down; if it stays
/// down the leases expire and the deliveries are sent again — a duplicate
/// after a fault, never a loss. Ends when every sender is gone and the last
/// batch is written. `line_moved` is called once a batch has finished the
/// head of an ordered endpoint's line (SPEC §15): the next in that line is
/// due now, and the claim loop should not sleep through it.
pub(crate) async fn record_finished(
    store: Arc<dyn Store>,
    mut finished: mpsc::UnboundedReceiver<Unrecorded>,
    line_moved: impl Fn(),
) {
    let mut batch = Vec::with_capacity(RECORD_BATCH);
    while finished.recv_many(&mut batch, RECORD_BATCH).await > 0 {
        // A small batch waits a moment for more: a script call costs Redis
        // more than the tens of records it carries (issue 26).
        let linger_until = tokio::time::Instant::now() + RECORD_LINGER;
        while batch.len() < RECORD_LINGER_BELOW {
            let room = RECORD_BATCH - batch.len();
            match tokio::time::timeout_at(linger_until, finished.recv_many(&mut batch, room)).await
            {
                Ok(received) if received > 0 => {}
                _ => break,
            }
        }
        let mut attempts = Vec::with_capacity(batch.len());
        let mut permits = Vec::with_capacity(batch.len());
        let mut renewals = Vec::with_capacity(batch.len());
        for unrecorded in batch.drain(..) {
            attempts.push(unrecorded.finished);
            permits.push(unrecorded.permit);
            renewals.push(unrecorded.renews);
        }
        let mut moved = false;
        for _ in 0..5 {
            match store.record_attempts(&attempts).await {
                Ok(recorded) => {
                    moved = attempts.iter().zip(&recorded).any(|(attempt, recorded)| {
                        *recorded != Recorded::Stale
                            && attempt.claim.delivery.ordering_key.is_some()
                            && !matches!(attempt.result, AttemptResult::RetryAt(_))
                    });
                    let answered_at = store.now_ms();
                    for (attempt, renews) in attempts.iter().zip(&renewals) {
                        let keep_until =
                            attempt.claim.slot.as_ref().and_then(|slot| slot.keep_until);
                        if let (Some(lapse), Some(keep_until)) = (renews, keep_until) {
                            lapse.renewed(keep_until, answered_at);
                        }
                    }
                    for (attempt, recorded) in attempts.iter().zip(recorded) {
                        let delivery = &attempt.claim.delivery;
                        match recorded {
                            Recorded::Written => {}
                            Recorded::Stale => {
                                tracing::warn!(delivery_id = %delivery.delivery_id, "lease expired before the attempt was recorded; another worker owns it");
                            }
                            Recorded::WrittenAndDisabled { failing_since } => {
                                telemetry::endpoint_auto_disabled();
                                tracing::warn!(
                                    endpoint_id = %delivery.endpoint_id,
                                    username = %delivery.username,
                                    failing_since,
                                    "endpoint disabled: no successful delivery since its failure streak began; its deliveries wait until it is enabled again"
                                );
                            }
                        }
                    }
                    break;
                }
                Err(error) => {
                    tracing::warn!(%error, attempts = attempts.len(), "cannot record attempts; retrying");
                    tokio::time::sleep(STORE_ERROR_DELAY).await;
                }
            }
        }
        // The claims are settled: their permits make room for new ones.
        drop(permits);
        if moved {
            line_moved();
        }
    }
}
