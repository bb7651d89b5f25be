//! The operator events' outbox on SQLite (SPEC §15): a table the accept
//! and record transactions add to, in the commit that makes an event true.

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::json;
use webhookd_core::Event;
use webhookd_core::operator::{OPERATOR_USERNAME, OperatorEvent, OperatorEventKind};

use super::schema::sqlite_error;
use super::settings::take_in_window_within;
use crate::{Acceptance, AttemptResult, FinishedAttempt, OutboxEntry, Recorded, StoreError};

pub(super) fn add(tx: &rusqlite::Transaction<'_>, record: &str) -> Result<(), StoreError> {
    tx.prepare_cached("INSERT INTO operator_outbox (record) VALUES (?1)")
        .and_then(|mut insert| insert.execute([record]))
        .map_err(sqlite_error)?;
    Ok(())
}

pub(super) fn take(connection: &Connection, most: usize) -> Result<Vec<OutboxEntry>, StoreError> {
    let mut select = connection
        .prepare_cached("SELECT seq, record FROM operator_outbox ORDER BY seq LIMIT ?1")
        .map_err(sqlite_error)?;
    select
        .query_map([i64::try_from(most).unwrap_or(i64::MAX)], |row| {
            Ok(OutboxEntry {
                place: row.get(0)?,
                record: row.get(1)?,
            })
        })
        .map_err(sqlite_error)?
        .map(|row| row.map_err(sqlite_error))
        .collect()
}

pub(super) fn remove(
    tx: &rusqlite::Transaction<'_>,
    entries: &[OutboxEntry],
) -> Result<(), StoreError> {
    let mut delete = tx
        .prepare_cached("DELETE FROM operator_outbox WHERE seq = ?1")
        .map_err(sqlite_error)?;
    for entry in entries {
        delete.execute([entry.place]).map_err(sqlite_error)?;
    }
    Ok(())
}

/// What one recorded attempt tells the operator: its delivery dead, its
/// endpoint disabled.
pub(super) fn after_record(
    tx: &rusqlite::Transaction<'_>,
    attempt: &FinishedAttempt,
    recorded: Recorded,
) -> Result<(), StoreError> {
    let delivery = &attempt.claim.delivery;
    // The operator's own deliveries tell nothing: a target that is down
    // would tell itself forever.
    if delivery.username == OPERATOR_USERNAME {
        return Ok(());
    }
    let record = &attempt.record;
    let finished_s = record
        .started_at
        .saturating_add(i64::try_from(record.duration_ms).unwrap_or(0))
        .div_euclid(1000);
    if recorded.is_written() && attempt.result == AttemptResult::Dead {
        let event = OperatorEvent::new(
            format!("op_dead_{}_{}", delivery.delivery_id, record.attempt),
            OperatorEventKind::DeliveryDead,
            finished_s,
            json!({"delivery_id": delivery.delivery_id, "endpoint_id": delivery.endpoint_id,
                   "username": delivery.username, "event_id": delivery.event_id,
                   "event": delivery.event_type.as_str(), "attempts": record.attempt}),
        );
        add(tx, &event.to_record())?;
    }
    if let Recorded::WrittenAndDisabled { failing_since } = recorded {
        let reason: Option<String> = tx
            .query_row(
                "SELECT disabled_reason FROM endpoints WHERE endpoint_id = ?1",
                [&delivery.endpoint_id],
                |row| row.get(0),
            )
            .optional()
            .map_err(sqlite_error)?
            .flatten();
        let event = OperatorEvent::new(
            format!("op_disabled_{}_{failing_since}", delivery.endpoint_id),
            OperatorEventKind::EndpointDisabled,
            finished_s,
            json!({"endpoint_id": delivery.endpoint_id, "username": delivery.username,
                   "failing_since": failing_since, "reason": reason}),
        );
        add(tx, &event.to_record())?;
    }
    Ok(())
}

/// What one accepted event tells the operator: a quota reached — an
/// endpoint's first refusal for its kept deliveries since its last success,
/// the user's first event refused for its daily quota that day.
pub(super) fn after_accept(
    tx: &rusqlite::Transaction<'_>,
    event: &Event,
    outcome: &Acceptance,
    kept_limit: u64,
    now_ms: i64,
) -> Result<(), StoreError> {
    let now_s = now_ms.div_euclid(1000);
    match outcome {
        Acceptance::OverDailyQuota { per_day } => {
            let day = crate::day_of(now_ms);
            let mark = format!("quota_reached:{}", event.username);
            if take_in_window_within(tx, &mark, day, 1)? {
                let reached = OperatorEvent::new(
                    format!("op_quota_day_{}_{day}", short_digest(&event.username)),
                    OperatorEventKind::QuotaReached,
                    now_s,
                    json!({"quota": "max_events_per_day", "username": event.username,
                           "limit": per_day}),
                );
                add(tx, &reached.to_record())?;
            }
        }
        Acceptance::Accepted { quota_refused, .. } => {
            for endpoint_id in quota_refused {
                let refusals: i64 = tx
                    .query_row(
                        "SELECT quota_refused FROM endpoints WHERE endpoint_id = ?1",
                        params![endpoint_id],
                        |row| row.get(0),
                    )
                    .map_err(sqlite_error)?;
                if refusals == 1 {
                    let reached = OperatorEvent::new(
                        format!("op_quota_{endpoint_id}_{now_ms}"),
                        OperatorEventKind::QuotaReached,
                        now_s,
                        json!({"quota": "max_kept_deliveries_per_endpoint",
                               "username": event.username, "endpoint_id": endpoint_id,
                               "limit": kept_limit}),
                    );
                    add(tx, &reached.to_record())?;
                }
            }
        }
        Acceptance::Duplicate => {}
    }
    Ok(())
}

/// A username as an id part: usernames may hold `.`, `@` and `+`.
fn short_digest(text: &str) -> String {
    crate::filters::digest(text)[..16].to_owned()
}
