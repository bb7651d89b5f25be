//! The delivery paths inside a transaction: accepting (with the fast
//! path's leases), claiming, recording attempts, and the sweep's bounded
//! removals.

use std::collections::HashMap;

use rusqlite::{OptionalExtension, params};
use webhookd_core::quota::Quotas;
use webhookd_core::signer::Signing;
use webhookd_core::{Endpoint, Event, EventType, ids};

use super::quotas::{KeptCounts, take_event_of_the_day};
use super::rates::RateBuckets;
use super::rows::{
    DELIVERY_COLUMN_COUNT, DELIVERY_COLUMNS, DELIVERY_COLUMNS_D, ENDPOINT_COLUMNS, RawDelivery,
    RawEndpoint, previous_secret, read_delivery, read_endpoint,
};
use super::schema::sqlite_error;
use crate::filters::{FilteredEvent, ParsedFilters};
use crate::{
    Acceptance, AttemptResult, Claim, ClaimRequest, DEDUP_WINDOW_MS, Delivery, DeliveryQuery,
    DeliveryStatus, FinishedAttempt, Listing, Order, Recorded, Retention, StoreError, SweepReport,
    new_delivery,
};

/// The due time of a delivery held behind its line's head (SPEC §15):
/// never due until [`release_next_in_line`] makes it the head.
pub(super) const HELD: i64 = i64::MAX;

/// Most rows one sweep step removes per kind: one short transaction.
pub(super) const SWEEP_BATCH: usize = 1000;

/// Endpoints with a due delivery, earliest due first. A skip scan: one index
/// seek per endpoint with pending deliveries, however long its backlog.
/// ?1: now, ?2: most endpoints.
pub(super) const READY_ENDPOINTS: &str = "
    WITH RECURSIVE pending(endpoint_id) AS (
        SELECT MIN(endpoint_id) FROM deliveries WHERE status = 'pending'
        UNION ALL
        SELECT (SELECT MIN(d.endpoint_id) FROM deliveries d
                WHERE d.status = 'pending' AND d.endpoint_id > pending.endpoint_id)
        FROM pending WHERE pending.endpoint_id IS NOT NULL
    )
    SELECT endpoint_id FROM (
        SELECT endpoint_id,
               (SELECT MIN(d.next_attempt_at) FROM deliveries d
                WHERE d.status = 'pending' AND d.endpoint_id = pending.endpoint_id) AS first_due
        FROM pending WHERE endpoint_id IS NOT NULL
    )
    WHERE first_due <= ?1 ORDER BY first_due LIMIT ?2";

/// Fresh deliveries being leased as they are accepted (the fast path), as
/// [`Store::claim_due`] would lease them under `request`.
pub(super) struct Leasing<'a> {
    request: &'a ClaimRequest,
    pub(super) claims: Vec<Claim>,
    /// Room used so far per endpoint.
    taken: HashMap<String, usize>,
    /// What is left of the suspects' share.
    suspect_room: usize,
    rates: &'a RateBuckets,
    now_ms: i64,
}

impl<'a> Leasing<'a> {
    pub(super) fn new(request: &'a ClaimRequest, rates: &'a RateBuckets, now_ms: i64) -> Self {
        Leasing {
            request,
            claims: Vec::new(),
            taken: HashMap::new(),
            suspect_room: request.suspect_room,
            rates,
            now_ms,
        }
    }

    /// A lease token for a fresh delivery to `endpoint`, if there is room
    /// (and, under a rate limit, a token).
    fn lease(&mut self, endpoint: &Endpoint) -> Option<String> {
        let endpoint_id = endpoint.endpoint_id.as_str();
        let room = self
            .request
            .room
            .get(endpoint_id)
            .copied()
            .unwrap_or(self.request.per_endpoint);
        let suspect = self.request.suspects.contains(endpoint_id);
        let taken = self.taken.entry(endpoint_id.to_owned()).or_default();
        if self.claims.len() >= self.request.limit
            || *taken >= room
            || (suspect && self.suspect_room == 0)
        {
            return None;
        }
        if let Some(limit) = endpoint.rate_limit
            && self.rates.take(endpoint_id, limit, self.now_ms, 1) == 0
        {
            return None;
        }
        *taken += 1;
        if suspect {
            self.suspect_room -= 1;
        }
        Some(ids::new_lease_token())
    }
}

/// De-duplicates one event and writes its deliveries, leasing what
/// `leasing` has room for, inside the caller's transaction, within the
/// owner's `quotas` (SPEC §11), to the endpoints whose filter holds
/// (SPEC §15).
pub(super) fn accept_one(
    tx: &rusqlite::Transaction<'_>,
    event: &Event,
    now_ms: i64,
    leasing: &mut Leasing<'_>,
    (quotas, kept): (Quotas, &KeptCounts),
    filters: &ParsedFilters,
) -> Result<Acceptance, StoreError> {
    if let Some(per_day) = quotas.max_events_per_day
        && !take_event_of_the_day(tx, event, per_day, now_ms)?
    {
        return Ok(Acceptance::OverDailyQuota { per_day });
    }
    if !remember(tx, event, now_ms)? {
        return Ok(Acceptance::Duplicate);
    }
    let endpoints = enabled_endpoints(tx, &event.username)?;
    let body = event.body();
    let mut insert = tx
        .prepare_cached(
            "INSERT INTO deliveries (delivery_id, username, endpoint_id, event_id, event_type, body,
                 status, attempts, next_attempt_at, created_at, lease_owner, trace, line, line_seq)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', 0, ?7, ?8, ?9, ?10, ?11, ?12)",
        )
        .map_err(sqlite_error)?;
    let mut deliveries = Vec::new();
    let mut quota_refused = Vec::new();
    let mut filtered = FilteredEvent::new(event);
    for endpoint in endpoints.iter().filter(|endpoint| {
        endpoint.wants(&event.event_type)
            && endpoint.filter.as_deref().is_none_or(|text| {
                filters
                    .get(&endpoint.endpoint_id, text)
                    .is_none_or(|filter| filtered.passes(&filter))
            })
    }) {
        if !kept.admit(
            tx,
            &endpoint.endpoint_id,
            quotas.max_kept_deliveries_per_endpoint,
            now_ms,
        )? {
            quota_refused.push(endpoint.endpoint_id.clone());
            continue;
        }
        let mut delivery = new_delivery(
            ids::new_delivery_id(),
            event,
            &endpoint.endpoint_id,
            &body,
            now_ms,
        );
        let (line, place) = place_in_line(tx, endpoint, event, &body)?;
        delivery.ordering_key = line;
        // Behind another pending delivery of its line: it waits its turn.
        let held = place.is_some_and(|place| place > 1);
        let lease = if held { None } else { leasing.lease(endpoint) };
        let due_at = if held {
            HELD
        } else if lease.is_some() {
            leasing.request.lease_until_ms
        } else {
            now_ms
        };
        insert
            .execute(params![
                delivery.delivery_id,
                delivery.username,
                delivery.endpoint_id,
                delivery.event_id,
                delivery.event_type.as_str(),
                delivery.body,
                due_at,
                now_ms,
                lease,
                delivery.trace,
                delivery.ordering_key,
                place
            ])
            .map_err(sqlite_error)?;
        if let Some(lease) = lease {
            leasing.claims.push(Claim {
                delivery: Delivery {
                    next_attempt_at: due_at,
                    ..delivery.clone()
                },
                url: endpoint.url.clone(),
                secret: endpoint.secret.clone(),
                previous_secret: endpoint.previous_secret.clone(),
                options: endpoint.options.clone(),
                lease,
                // One process: its lanes hold the concurrency.
                slot: None,
            });
        }
        deliveries.push(delivery);
    }
    Ok(Acceptance::Accepted {
        deliveries,
        quota_refused,
    })
}

/// Remembers the event's id for the de-duplication window: false when it
/// is still remembered (a duplicate). An entry whose window has passed is
/// taken over.
fn remember(
    tx: &rusqlite::Transaction<'_>,
    event: &Event,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let fresh = tx
        .prepare_cached(
            "INSERT INTO seen_events (username, event_id, expires_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (username, event_id) DO UPDATE SET expires_at = excluded.expires_at
             WHERE seen_events.expires_at <= ?4",
        )
        .and_then(|mut insert| {
            insert.execute(params![
                event.username,
                event.event_id,
                now_ms + DEDUP_WINDOW_MS,
                now_ms
            ])
        })
        .map_err(sqlite_error)?;
    Ok(fresh > 0)
}

/// The line a delivery of `event` to `endpoint` joins (SPEC §15) and its
/// place there (1: the head); `(None, None)` at an unordered endpoint.
fn place_in_line(
    tx: &rusqlite::Transaction<'_>,
    endpoint: &Endpoint,
    event: &Event,
    body: &str,
) -> Result<(Option<String>, Option<i64>), StoreError> {
    let Some(ordering) = endpoint.ordering.as_deref() else {
        return Ok((None, None));
    };
    let line = webhookd_core::ordering::line_of(ordering, body, event.ordering_key.as_deref());
    let place = last_in_line(tx, &endpoint.endpoint_id, &line)? + 1;
    Ok((Some(line), Some(place)))
}

/// The place of the last pending delivery in an endpoint's line; 0 when
/// the line is empty.
fn last_in_line(
    tx: &rusqlite::Transaction<'_>,
    endpoint_id: &str,
    line: &str,
) -> Result<i64, StoreError> {
    tx.prepare_cached(
        "SELECT IFNULL(MAX(line_seq), 0) FROM deliveries
         WHERE endpoint_id = ?1 AND line = ?2 AND status = 'pending' AND line IS NOT NULL",
    )
    .and_then(|mut select| select.query_row(params![endpoint_id, line], |row| row.get(0)))
    .map_err(sqlite_error)
}

/// Makes the first delivery held in `line` due at `now_ms`, once the head
/// before it is delivered or dead (SPEC §15). Only a held one moves: the
/// line's head is never due twice.
fn release_next_in_line(
    tx: &rusqlite::Transaction<'_>,
    endpoint_id: &str,
    line: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "UPDATE deliveries SET next_attempt_at = ?3
         WHERE delivery_id = (
             SELECT delivery_id FROM deliveries
             WHERE endpoint_id = ?1 AND line = ?2 AND status = 'pending' AND line IS NOT NULL
             ORDER BY line_seq LIMIT 1)
           AND next_attempt_at = ?4",
    )
    .and_then(|mut update| update.execute(params![endpoint_id, line, now_ms, HELD]))
    .map_err(sqlite_error)?;
    Ok(())
}

/// The user's enabled endpoints, oldest first.
fn enabled_endpoints(
    tx: &rusqlite::Transaction<'_>,
    username: &str,
) -> Result<Vec<Endpoint>, StoreError> {
    let mut select = tx
        .prepare_cached(&format!(
            "SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE username = ?1 AND status = 'enabled' ORDER BY seq"
        ))
        .map_err(sqlite_error)?;
    select
        .query_map([username], read_endpoint)
        .map_err(sqlite_error)?
        .map(|row| row.map_err(sqlite_error).and_then(RawEndpoint::parse))
        .collect()
}

/// Records one attempt inside `tx` if its lease still holds; a finished
/// delivery is due for removal at the end of its retention.
pub(super) fn record_one_attempt(
    tx: &rusqlite::Transaction<'_>,
    retention: &Retention,
    auto_disable_after: std::time::Duration,
    FinishedAttempt {
        claim,
        record,
        result,
    }: &FinishedAttempt,
) -> Result<Recorded, StoreError> {
    let finished_ms = record
        .started_at
        .saturating_add(i64::try_from(record.duration_ms).unwrap_or(i64::MAX));
    let remove_at = retention.removal_at(finished_ms, *result, claim.delivery.test);
    let (status, next_attempt_at) = match result {
        AttemptResult::Delivered => (DeliveryStatus::Delivered, claim.delivery.next_attempt_at),
        AttemptResult::RetryAt(at) => (DeliveryStatus::Pending, *at),
        AttemptResult::Dead => (DeliveryStatus::Failed, claim.delivery.next_attempt_at),
    };
    let updated = tx
        .prepare_cached(
            // A delivered delivery is never sent again: its body goes
            // (the event's kept payload shows it, SPEC §13).
            "UPDATE deliveries SET attempts = ?5, lease_owner = NULL,
                 status = ?1, next_attempt_at = ?2, remove_at = ?6,
                 body = CASE WHEN ?1 = 'delivered' THEN '' ELSE body END,
                 last_attempt = last_attempt AND ?6 IS NULL
             WHERE delivery_id = ?3 AND lease_owner = ?4",
        )
        .and_then(|mut update| {
            update.execute(params![
                status.as_str(),
                next_attempt_at,
                claim.delivery.delivery_id,
                claim.lease,
                record.attempt,
                remove_at
            ])
        })
        .map_err(sqlite_error)?;
    if updated == 0 {
        return Ok(Recorded::Stale);
    }
    if status != DeliveryStatus::Pending
        && let Some(line) = &claim.delivery.ordering_key
    {
        release_next_in_line(tx, &claim.delivery.endpoint_id, line, finished_ms)?;
    }
    tx.prepare_cached(
        "INSERT OR REPLACE INTO attempts
             (delivery_id, attempt, started_at, duration_ms, status_code, reason, response,
              signed_at, signature_check)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )
    .and_then(|mut insert| {
        insert.execute(params![
            claim.delivery.delivery_id,
            record.attempt,
            record.started_at,
            i64::try_from(record.duration_ms).unwrap_or(i64::MAX),
            record.status_code,
            record.reason,
            record.response,
            record.signing.as_ref().map(|signing| signing.timestamp),
            record.signing.as_ref().map(|signing| &signing.check)
        ])
    })
    .map_err(sqlite_error)?;
    if !record.counts_toward_streak() {
        return Ok(Recorded::Written);
    }
    keep_failure_streak(
        tx,
        &claim.delivery.endpoint_id,
        *result,
        record.started_at.div_euclid(1000),
        auto_disable_after,
    )
}

/// An endpoint's failure streak after an attempt that started at
/// `started` (unix seconds), as `record_attempts.lua` keeps it on Redis: a
/// success ends it (and re-enables an endpoint webhookd disabled), a failure
/// starts it, and a streak as old as `auto_disable_after` (zero: never)
/// disables the endpoint.
fn keep_failure_streak(
    tx: &rusqlite::Transaction<'_>,
    endpoint_id: &str,
    result: AttemptResult,
    started: i64,
    auto_disable_after: std::time::Duration,
) -> Result<Recorded, StoreError> {
    if result == AttemptResult::Delivered {
        tx.prepare_cached(
            "UPDATE endpoints SET failing_since = NULL, quota_refused = 0,
                 status = CASE WHEN disabled_reason IS NULL THEN status ELSE 'enabled' END,
                 disabled_reason = NULL
             WHERE endpoint_id = ?1
                 AND (failing_since IS NOT NULL OR disabled_reason IS NOT NULL OR quota_refused > 0)",
        )
        .and_then(|mut update| update.execute([endpoint_id]))
        .map_err(sqlite_error)?;
        return Ok(Recorded::Written);
    }
    tx.prepare_cached(
        "UPDATE endpoints SET failing_since = ?2 WHERE endpoint_id = ?1 AND failing_since IS NULL",
    )
    .and_then(|mut update| update.execute(params![endpoint_id, started]))
    .map_err(sqlite_error)?;
    let limit = i64::try_from(auto_disable_after.as_secs()).unwrap_or(i64::MAX);
    if limit == 0 {
        return Ok(Recorded::Written);
    }
    let disabled: Option<i64> = tx
        .prepare_cached(
            "UPDATE endpoints SET status = 'disabled',
                 disabled_reason = 'no successful delivery since ' || failing_since || ' (unix seconds)'
             WHERE endpoint_id = ?1 AND status = 'enabled' AND ?2 - failing_since >= ?3
             RETURNING failing_since",
        )
        .and_then(|mut update| {
            update
                .query_row(params![endpoint_id, started, limit], |row| row.get(0))
                .optional()
        })
        .map_err(sqlite_error)?;
    Ok(disabled.map_or(Recorded::Written, |failing_since| {
        Recorded::WrittenAndDisabled { failing_since }
    }))
}

/// Leases due deliveries as `request` says, endpoint by endpoint in the
/// order of each one's earliest due delivery (see [`Store::claim_due`]):
/// each within its room, its rate limit's tokens, and — for slow and
/// failing endpoints — what is left of the suspects' share.
///
/// [`Store::claim_due`]: crate::Store::claim_due
pub(super) fn claim_due(
    tx: &rusqlite::Transaction<'_>,
    request: &ClaimRequest,
    rates: &RateBuckets,
) -> Result<Vec<Claim>, StoreError> {
    let ready: Vec<String> = {
        let mut select = tx.prepare_cached(READY_ENDPOINTS).map_err(sqlite_error)?;
        // Endpoints without room are skipped; at most `room` of them.
        let most = i64::try_from(request.limit + request.room.len()).unwrap_or(i64::MAX);
        select
            .query_map(params![request.now_ms, most], |row| row.get(0))
            .map_err(sqlite_error)?
            .collect::<Result<_, _>>()
            .map_err(sqlite_error)?
    };
    let mut claims = Vec::new();
    let mut suspect_room = request.suspect_room;
    for endpoint_id in ready {
        let suspect = request.suspects.contains(&endpoint_id);
        let mut room = request
            .room
            .get(&endpoint_id)
            .copied()
            .unwrap_or(request.per_endpoint)
            .min(request.limit.saturating_sub(claims.len()));
        if suspect {
            room = room.min(suspect_room);
        }
        if room == 0 {
            continue;
        }
        let rate_limit: Option<u32> = tx
            .prepare_cached("SELECT rate_limit FROM endpoints WHERE endpoint_id = ?1")
            .and_then(|mut select| {
                select
                    .query_row([&endpoint_id], |row| row.get(0))
                    .optional()
            })
            .map_err(sqlite_error)?
            .flatten();
        let room = rate_limit.map_or(room, |limit| {
            rates.take(&endpoint_id, limit, request.now_ms, room)
        });
        let before = claims.len();
        claim_from_endpoint(tx, request, &endpoint_id, room, &mut claims)?;
        if suspect {
            suspect_room -= claims.len() - before;
        }
        if let Some(limit) = rate_limit {
            rates.give_back(&endpoint_id, limit, room - (claims.len() - before));
        }
    }
    Ok(claims)
}

/// Leases up to `room` due deliveries of one endpoint into `claims`.
pub(super) fn claim_from_endpoint(
    tx: &rusqlite::Transaction<'_>,
    request: &ClaimRequest,
    endpoint_id: &str,
    room: usize,
    claims: &mut Vec<Claim>,
) -> Result<(), StoreError> {
    let due = {
        let mut select = tx
            .prepare_cached(&format!(
                "SELECT {DELIVERY_COLUMNS_D}, e.url, e.secret, e.status, e.previous_secret,
                     e.previous_expires_at, e.options
                 FROM deliveries d
                 LEFT JOIN endpoints e ON e.endpoint_id = d.endpoint_id AND e.username = d.username
                 WHERE d.status = 'pending' AND d.endpoint_id = ?1 AND d.next_attempt_at <= ?2
                 ORDER BY d.next_attempt_at LIMIT ?3"
            ))
            .map_err(sqlite_error)?;
        let rows = select
            .query_map(
                params![
                    endpoint_id,
                    request.now_ms,
                    i64::try_from(room).unwrap_or(i64::MAX)
                ],
                |row| {
                    const E: usize = DELIVERY_COLUMN_COUNT;
                    Ok((
                        read_delivery(row)?,
                        row.get::<_, Option<String>>(E)?,
                        row.get::<_, Option<String>>(E + 1)?,
                        row.get::<_, Option<String>>(E + 2)?,
                        previous_secret(row.get(E + 3)?, row.get(E + 4)?),
                        row.get::<_, Option<String>>(E + 5)?,
                    ))
                },
            )
            .map_err(sqlite_error)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(sqlite_error)?
    };
    for (raw, url, secret, status, previous_secret, options) in due {
        let mut delivery: Delivery = raw.parse()?;
        // A test delivery goes whatever the endpoint's status.
        let sendable = delivery.test || status.as_deref() == Some("enabled");
        match (url, secret, sendable) {
            (Some(url), Some(secret), true) => {
                let lease = ids::new_lease_token();
                tx.execute(
                    "UPDATE deliveries SET next_attempt_at = ?1, lease_owner = ?2 WHERE delivery_id = ?3",
                    params![request.lease_until_ms, lease, delivery.delivery_id],
                )
                .map_err(sqlite_error)?;
                delivery.next_attempt_at = request.lease_until_ms;
                claims.push(Claim {
                    delivery,
                    url,
                    secret,
                    previous_secret,
                    options,
                    lease,
                    slot: None,
                });
            }
            (Some(_), Some(_), false) => {
                tx.execute(
                    "UPDATE deliveries SET next_attempt_at = ?1 WHERE delivery_id = ?2",
                    params![request.park_until_ms, delivery.delivery_id],
                )
                .map_err(sqlite_error)?;
            }
            _ => delete_deliveries(tx, "delivery_id", &delivery.delivery_id)?,
        }
    }
    Ok(())
}

/// One bounded step of [`Store::sweep`]: at most [`SWEEP_BATCH`] each of
/// forgotten event ids, deliveries past retention, deliveries of a
/// deleted endpoint, and expired event bodies.
pub(super) fn sweep_step(
    tx: &rusqlite::Transaction<'_>,
    now_ms: i64,
) -> Result<SweepReport, StoreError> {
    let forgotten = tx
        .prepare_cached(
            "DELETE FROM seen_events WHERE (username, event_id) IN
                 (SELECT username, event_id FROM seen_events WHERE expires_at <= ?1 LIMIT ?2)",
        )
        .and_then(|mut delete| delete.execute(params![now_ms, SWEEP_BATCH]))
        .map_err(sqlite_error)?;
    let expired = delete_delivery_batch(
        tx,
        "SELECT delivery_id FROM deliveries WHERE remove_at <= ?1 LIMIT ?2",
        now_ms,
    )?;
    let deleted_endpoint: Option<String> = tx
        .query_row(
            "SELECT endpoint_id FROM deleted_endpoints LIMIT 1",
            [],
            |row| row.get(0),
        )
        .optional()
        .map_err(sqlite_error)?;
    let mut orphans = 0;
    if let Some(endpoint_id) = deleted_endpoint {
        orphans = delete_delivery_batch(
            tx,
            "SELECT delivery_id FROM deliveries WHERE endpoint_id = ?1 LIMIT ?2",
            &endpoint_id,
        )?;
        if orphans < SWEEP_BATCH {
            tx.execute(
                "DELETE FROM deleted_endpoints WHERE endpoint_id = ?1",
                [&endpoint_id],
            )
            .map_err(sqlite_error)?;
        }
    }
    let payloads = super::payloads::sweep(tx, now_ms, SWEEP_BATCH)?;
    let full = |n: usize| n == SWEEP_BATCH;
    Ok(SweepReport {
        removed: (expired + orphans) as u64,
        more: full(forgotten) || full(expired) || full(orphans) || full(payloads),
    })
}

/// Deletes the deliveries (and their attempts) that `select` lists for
/// `(?1 = value, ?2 = SWEEP_BATCH)`; returns how many.
pub(super) fn delete_delivery_batch(
    tx: &rusqlite::Transaction<'_>,
    select: &str,
    value: impl rusqlite::ToSql,
) -> Result<usize, StoreError> {
    let ids: Vec<String> = tx
        .prepare_cached(select)
        .and_then(|mut statement| {
            statement
                .query_map(params![value, SWEEP_BATCH], |row| row.get(0))?
                .collect()
        })
        .map_err(sqlite_error)?;
    let mut delete_attempts = tx
        .prepare_cached("DELETE FROM attempts WHERE delivery_id = ?1")
        .map_err(sqlite_error)?;
    let mut delete_delivery = tx
        .prepare_cached("DELETE FROM deliveries WHERE delivery_id = ?1")
        .map_err(sqlite_error)?;
    for id in &ids {
        delete_attempts.execute([id]).map_err(sqlite_error)?;
        delete_delivery.execute([id]).map_err(sqlite_error)?;
    }
    Ok(ids.len())
}

/// Deletes deliveries (and their attempts) whose `column` equals `value`.
pub(super) fn delete_deliveries(
    tx: &rusqlite::Transaction<'_>,
    column: &str,
    value: &str,
) -> Result<(), StoreError> {
    tx.execute(
        &format!("DELETE FROM attempts WHERE delivery_id IN (SELECT delivery_id FROM deliveries WHERE {column} = ?1)"),
        [value],
    )
    .map_err(sqlite_error)?;
    tx.execute(
        &format!("DELETE FROM deliveries WHERE {column} = ?1"),
        [value],
    )
    .map_err(sqlite_error)?;
    Ok(())
}

/// Counts for the backlog gauges at `now_ms`.
pub(super) fn delivery_stats(
    c: &rusqlite::Connection,
    now_ms: i64,
) -> Result<crate::DeliveryStats, StoreError> {
    let count = |sql: &str, now: Option<i64>| -> Result<u64, StoreError> {
        let count: i64 = match now {
            Some(now) => c.query_row(sql, [now], |row| row.get(0)),
            None => c.query_row(sql, [], |row| row.get(0)),
        }
        .map_err(sqlite_error)?;
        Ok(u64::try_from(count).unwrap_or_default())
    };
    Ok(crate::DeliveryStats {
        due: count(
            "SELECT COUNT(*) FROM deliveries WHERE status = 'pending' AND next_attempt_at <= ?1",
            Some(now_ms),
        )?,
        scheduled: count(
            "SELECT COUNT(*) FROM deliveries WHERE status = 'pending' AND next_attempt_at > ?1",
            Some(now_ms),
        )?,
        dead: count(
            "SELECT COUNT(*) FROM deliveries WHERE status = 'failed'
                 AND endpoint_id NOT IN (SELECT endpoint_id FROM deleted_endpoints)",
            None,
        )?,
    })
}

/// The attempt log of one delivery, oldest attempt first.
pub(super) fn attempts_of(
    c: &rusqlite::Connection,
    delivery_id: &str,
) -> Result<Vec<crate::AttemptRecord>, StoreError> {
    let mut select = c
        .prepare_cached(
            "SELECT attempt, started_at, duration_ms, status_code, reason, response,
                 signed_at, signature_check
             FROM attempts WHERE delivery_id = ?1 ORDER BY attempt",
        )
        .map_err(sqlite_error)?;
    select
        .query_map([delivery_id], |row| {
            Ok(crate::AttemptRecord {
                attempt: row.get(0)?,
                started_at: row.get(1)?,
                duration_ms: row.get::<_, i64>(2)?.try_into().unwrap_or_default(),
                status_code: row.get(3)?,
                reason: row.get(4)?,
                response: row.get(5)?,
                signing: match (row.get(6)?, row.get(7)?) {
                    (Some(timestamp), Some(check)) => Some(Signing { timestamp, check }),
                    _ => None,
                },
            })
        })
        .map_err(sqlite_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(sqlite_error)
}

/// One page of a delivery listing (SPEC §13). The filters are SQL; the
/// endpoint's index on `(endpoint_id, status, delivery_id)` keeps each
/// page a range scan.
pub(super) fn query(
    c: &rusqlite::Connection,
    username: &str,
    endpoint_id: &str,
    status: DeliveryStatus,
    query: &DeliveryQuery,
) -> Result<Listing, StoreError> {
    let (after, order) = match query.order {
        Order::Ascending => ("(?4 IS NULL OR delivery_id > ?4)", "ASC"),
        Order::Descending => ("(?4 IS NULL OR delivery_id < ?4)", "DESC"),
    };
    let mut statement = c
        .prepare_cached(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries
             WHERE endpoint_id = ?1 AND username = ?2 AND status = ?3 AND {after}
               AND (?6 IS NULL OR event_type = ?6) AND (?7 IS NULL OR event_id = ?7)
               AND (?8 IS NULL OR created_at >= ?8) AND (?9 IS NULL OR created_at <= ?9)
               AND EXISTS (SELECT 1 FROM endpoints WHERE endpoint_id = ?1 AND username = ?2)
             ORDER BY delivery_id {order} LIMIT ?5"
        ))
        .map_err(sqlite_error)?;
    let limit = query.page.limit;
    let deliveries = statement
        .query_map(
            params![
                endpoint_id,
                username,
                status.as_str(),
                query.page.after,
                i64::try_from(limit).unwrap_or(i64::MAX),
                query.event.as_ref().map(EventType::as_str),
                query.event_id,
                query.since_ms,
                query.until_ms,
            ],
            read_delivery,
        )
        .map_err(sqlite_error)?
        .map(|row| row.map_err(sqlite_error).and_then(RawDelivery::parse))
        .collect::<Result<Vec<_>, _>>()?;
    let next_after = (deliveries.len() == limit)
        .then(|| deliveries.last().map(|d| d.delivery_id.clone()))
        .flatten();
    Ok(Listing {
        deliveries,
        next_after,
    })
}
