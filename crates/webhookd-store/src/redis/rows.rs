//! Redis answers turned into the store's types.

use std::collections::HashMap;

use webhookd_core::signer::Signing;
use webhookd_core::{Endpoint, Event, PreviousSecret};

use crate::{
    Acceptance, AttemptRecord, Claim, Delivery, DeliveryStatus, StoreError, event_type_from_str,
    events_from_json, new_delivery, status_from_str,
};

/// One event's answer from ACCEPT_EVENTS: 0 for a duplicate, -1 past the
/// owner's events per day, else {the endpoint ids that got a delivery, those
/// refused for their kept deliveries, each delivery's line}.
pub(super) fn acceptance_from_answer(
    answer: redis::Value,
    event: &Event,
    body: &str,
    id_base: &str,
    now_ms: i64,
    per_day: Option<u64>,
) -> Result<Option<Acceptance>, StoreError> {
    let corrupt = |e| StoreError::Corrupt(format!("accept answer: {e}"));
    let redis::Value::Array(lists) = answer else {
        let code: i64 = redis::from_redis_value(answer).map_err(corrupt)?;
        return Ok(match (code, per_day) {
            // The owner's filters changed since the caller's snapshot.
            (-2, _) => None,
            (-1, Some(per_day)) => Some(Acceptance::OverDailyQuota { per_day }),
            _ => Some(Acceptance::Duplicate),
        });
    };
    let (chosen, quota_refused, lines): (Vec<String>, Vec<String>, Vec<String>) =
        redis::from_redis_value(redis::Value::Array(lists)).map_err(corrupt)?;
    let deliveries = chosen
        .iter()
        .zip(lines)
        .enumerate()
        .map(|(n, (endpoint_id, line))| Delivery {
            ordering_key: line.strip_prefix('=').map(str::to_owned),
            ..new_delivery(
                format!("{id_base}{n:02x}"),
                event,
                endpoint_id,
                body,
                now_ms,
            )
        })
        .collect();
    Ok(Some(Acceptance::Accepted {
        deliveries,
        quota_refused,
    }))
}

/// An endpoint's ordering (SPEC §15) as its hash keeps it: `=` and the
/// pointer (`=` alone: by the event's key); `""`: unordered.
pub(super) fn stored_ordering(ordering: Option<&str>) -> String {
    ordering
        .map(|pointer| format!("={pointer}"))
        .unwrap_or_default()
}

/// Unavailable: Redis is away or a cluster is moving (a failover, a slot
/// on the move, a promoted replica not yet known) — retry later, `/readyz`
/// says 503. Anything else is a failure of the request itself.
pub(super) fn redis_error(error: redis::RedisError) -> StoreError {
    use redis::{ErrorKind, ServerErrorKind};
    let cluster_moving = error.is_cluster_error()
        || matches!(
            error.kind(),
            ErrorKind::Server(
                ServerErrorKind::MasterDown
                    | ServerErrorKind::ReadOnly
                    | ServerErrorKind::BusyLoading
            ) | ErrorKind::ClusterConnectionNotFound
        );
    if cluster_moving
        || error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
    {
        StoreError::Unavailable(Box::new(error))
    } else {
        StoreError::Failed(Box::new(error))
    }
}

pub(super) fn endpoint_from_fields(
    mut fields: HashMap<String, String>,
) -> Result<Endpoint, StoreError> {
    let mut take = |name: &str| {
        fields
            .remove(name)
            .ok_or_else(|| StoreError::Corrupt(format!("endpoint without {name}")))
    };
    let created_at = take("created_at")?;
    Ok(Endpoint {
        endpoint_id: take("endpoint_id")?,
        url: take("url")?,
        secret: take("secret")?,
        status: status_from_str(&take("status")?)?,
        events: events_from_json(&take("events")?)?,
        username: take("username")?,
        created_at: created_at
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("endpoint created_at {created_at:?}")))?,
        previous_secret: previous_secret(
            fields.remove("previous_secret"),
            fields.remove("previous_expires_at").as_deref(),
        ),
        failing_since: fields
            .remove("failing_since")
            .and_then(|since| since.parse().ok()),
        disabled_reason: fields.remove("disabled_reason"),
        quota_refused: fields
            .remove("quota_refused")
            .and_then(|count| count.parse().ok())
            .unwrap_or(0),
        rate_limit: fields
            .remove("rate_limit")
            .map(|limit| {
                limit
                    .parse()
                    .map_err(|_| StoreError::Corrupt(format!("endpoint rate_limit {limit:?}")))
            })
            .transpose()?,
        options: fields
            .remove("options")
            .filter(|options| !options.is_empty()),
        filter: fields.remove("filter").filter(|filter| !filter.is_empty()),
        ordering: fields
            .remove("ordering")
            .and_then(|ordering| ordering.strip_prefix('=').map(str::to_owned)),
    })
}

/// A previous secret from its stored fields (both set, the expiry a number).
pub(super) fn previous_secret(
    secret: Option<String>,
    expires_at: Option<&str>,
) -> Option<PreviousSecret> {
    Some(PreviousSecret {
        secret: secret.filter(|secret| !secret.is_empty())?,
        expires_at: expires_at?.parse().ok()?,
    })
}

/// A row of `claim_due.lua`: id, username, endpoint id, event id, event type,
/// body, attempts, created at, url, secret, lease, last attempt and test
/// (0 or 1), previous secret and its expiry (empty when none), the sending
/// slot, the delivery options, the trace context (empty when none) and
/// the line (`=` and the line; empty when none).
pub(super) fn claim_from_row(row: Vec<String>, lease_until_ms: i64) -> Result<Claim, StoreError> {
    let [
        id,
        username,
        endpoint_id,
        event_id,
        event_type,
        body,
        attempts,
        created_at,
        url,
        secret,
        lease,
        last_attempt,
        test,
        previous,
        previous_expires_at,
        slot,
        options,
        trace,
        line,
    ]: [String; 19] = row.try_into().map_err(|row: Vec<String>| {
        StoreError::Corrupt(format!("claim row of {} fields", row.len()))
    })?;
    let number = |name: &str, text: &str| {
        text.parse::<i64>()
            .map_err(|_| StoreError::Corrupt(format!("delivery {name} {text:?}")))
    };
    Ok(Claim {
        delivery: Delivery {
            delivery_id: id,
            username,
            endpoint_id,
            event_id,
            event_type: event_type_from_str(&event_type)?,
            body,
            status: DeliveryStatus::Pending,
            attempts: u32::try_from(number("attempts", &attempts)?)
                .map_err(|_| StoreError::Corrupt(format!("delivery attempts {attempts}")))?,
            next_attempt_at: lease_until_ms,
            created_at: number("created_at", &created_at)?,
            last_attempt: last_attempt == "1",
            test: test == "1",
            trace: (!trace.is_empty()).then_some(trace),
            ordering_key: line.strip_prefix('=').map(str::to_owned),
        },
        url,
        secret,
        previous_secret: previous_secret(Some(previous), Some(&previous_expires_at)),
        options: (!options.is_empty()).then_some(options),
        lease,
        slot: granted_slot(slot, lease_until_ms),
    })
}

/// A slot a claim came with: its token, or `""` for none.
pub(super) fn granted_slot(token: String, lapses_at: i64) -> Option<crate::SendingSlot> {
    (!token.is_empty()).then_some(crate::SendingSlot {
        token,
        keep_until: None,
        lapses_at,
    })
}

/// The slot a claim carries to a record or a hand-back, as the scripts
/// take it: its token and until when it is kept (`""`: none, given up).
pub(super) fn slot_arguments(claim: &Claim) -> (&str, String) {
    claim.slot.as_ref().map_or(("", String::new()), |slot| {
        (
            slot.token.as_str(),
            slot.keep_until.map(|at| at.to_string()).unwrap_or_default(),
        )
    })
}

pub(super) fn delivery_from_fields(
    delivery_id: String,
    mut fields: HashMap<String, String>,
) -> Result<Delivery, StoreError> {
    // A delivered delivery is slim: no body (it is never sent again;
    // RECORD_ATTEMPTS drops it, and the event's kept payload shows it).
    let first = fields.remove("body").unwrap_or_default();
    let body = joined_pieces(first, &mut fields, "body");
    let mut take = |name: &str| {
        fields
            .remove(name)
            .ok_or_else(|| StoreError::Corrupt(format!("delivery without {name}")))
    };
    let number = |name: &str, text: String| {
        text.parse::<i64>()
            .map_err(|_| StoreError::Corrupt(format!("delivery {name} {text:?}")))
    };
    let attempts = number("attempts", take("attempts")?)?;
    Ok(Delivery {
        username: take("username")?,
        endpoint_id: take("endpoint_id")?,
        event_id: take("event_id")?,
        event_type: event_type_from_str(&take("event_type")?)?,
        body,
        status: take("status")?.parse()?,
        attempts: u32::try_from(attempts)
            .map_err(|_| StoreError::Corrupt(format!("delivery attempts {attempts}")))?,
        next_attempt_at: number("next_attempt_at", take("next_attempt_at")?)?,
        created_at: number("created_at", take("created_at")?)?,
        last_attempt: fields.get("last_attempt").is_some_and(|flag| flag == "1"),
        test: fields.get("test").is_some_and(|flag| flag == "1"),
        trace: fields.remove("trace"),
        ordering_key: fields.remove("line"),
        delivery_id,
    })
}

/// A hash value kept in pieces (`put_pieces` in `schedule_functions.lua`:
/// `name`, `name~2`, `name~3`… so the hash stays a listpack), joined:
/// `first` is the piece under `name`; the others are taken out of `fields`.
pub(super) fn joined_pieces(
    first: String,
    fields: &mut HashMap<String, String>,
    name: &str,
) -> String {
    let mut whole = first;
    for n in 2.. {
        match fields.remove(&format!("{name}~{n}")) {
            Some(piece) => whole.push_str(&piece),
            None => break,
        }
    }
    whole
}

/// One attempt record as the delivery hash keeps it, under `attempt:<n>`
/// (the name holds the number): `<started_at>|<duration_ms>|<status
/// code>|<reason>`, then `|<response>` when there was one (last: it may
/// hold `|`). A quarter of the JSON it replaced (28 bytes against 110 for
/// a failed attempt), which keeps a waiting delivery's hash in a smaller
/// allocation. A sent request's signing follows `started_at` as
/// `@<timestamp − started_at in seconds>.<check>` (`@0.1a2b3c4d`: 11
/// bytes; records written before it have none).
pub(super) fn attempt_field(record: &AttemptRecord) -> String {
    let status_code = record
        .status_code
        .map_or_else(String::new, |code| code.to_string());
    let signing = record.signing.as_ref().map_or_else(String::new, |signing| {
        format!(
            "@{}.{}",
            signing.timestamp - record.started_at.div_euclid(1000),
            signing.check
        )
    });
    let mut field = format!(
        "{}{signing}|{}|{status_code}|{}",
        record.started_at, record.duration_ms, record.reason
    );
    if let Some(response) = &record.response {
        field.push('|');
        field.push_str(response);
    }
    field
}

/// The record of attempt `attempt` from its field: as [`attempt_field`]
/// writes it, or the JSON an older webhookd wrote.
pub(super) fn attempt_from_field(attempt: u32, field: &str) -> Result<AttemptRecord, StoreError> {
    let corrupt = || StoreError::Corrupt(format!("attempt record {attempt}: {field:?}"));
    if field.starts_with('{') {
        return serde_json::from_str(field)
            .map_err(|e| StoreError::Corrupt(format!("attempt record {attempt}: {e}")));
    }
    let mut parts = field.splitn(5, '|');
    let mut next = || parts.next().ok_or_else(corrupt);
    let first = next()?;
    let (started_at, signing) = match first.split_once('@') {
        None => (first, None),
        Some((started_at, signing)) => (started_at, Some(signing)),
    };
    let started_at: i64 = started_at.parse().map_err(|_| corrupt())?;
    let signing = match signing {
        None => None,
        Some(signing) => {
            let (offset, check) = signing.split_once('.').ok_or_else(corrupt)?;
            let offset: i64 = offset.parse().map_err(|_| corrupt())?;
            Some(Signing {
                timestamp: started_at.div_euclid(1000) + offset,
                check: check.to_owned(),
            })
        }
    };
    let duration_ms = next()?.parse().map_err(|_| corrupt())?;
    let status_code = match next()? {
        "" => None,
        code => Some(code.parse().map_err(|_| corrupt())?),
    };
    let reason = next()?.to_owned();
    let response = parts.next().map(str::to_owned);
    Ok(AttemptRecord {
        attempt,
        started_at,
        duration_ms,
        status_code,
        reason,
        response,
        signing,
    })
}

/// The (endpoint id, room, slots the caller's lane holds, '1' if suspect)
/// quads of ACCEPT_EVENTS and CLAIM_DUE.
pub(super) fn room_arguments(
    invocation: &mut redis::ScriptInvocation<'_>,
    room: &[(&String, &usize)],
    request: &crate::ClaimRequest,
) {
    for (endpoint_id, room) in room {
        let held = request.slots_held.get(*endpoint_id).copied().unwrap_or(0);
        let suspect = if request.suspects.contains(*endpoint_id) {
            "1"
        } else {
            ""
        };
        invocation
            .arg(endpoint_id.as_str())
            .arg(**room)
            .arg(held)
            .arg(suspect);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(status_code: Option<u16>, response: Option<&str>) -> AttemptRecord {
        AttemptRecord {
            attempt: 3,
            started_at: 1_796_304_240_504,
            duration_ms: 4_999,
            status_code,
            reason: "http_5xx".into(),
            response: response.map(str::to_owned),
            signing: None,
        }
    }

    fn signed(record: AttemptRecord, timestamp: i64) -> AttemptRecord {
        AttemptRecord {
            signing: Some(Signing {
                timestamp,
                check: "0a1b2c3d".into(),
            }),
            ..record
        }
    }

    #[test]
    fn attempt_records_read_back_as_written() {
        for record in [
            record(Some(500), Some("oops | not | json")),
            record(Some(503), Some("")),
            record(None, None),
            record(Some(200), None),
            signed(record(Some(200), None), 1_796_304_240),
            signed(record(Some(500), Some("a@b.c|d")), 1_796_304_239),
            signed(record(None, None), 1_796_304_242),
        ] {
            let field = attempt_field(&record);
            assert_eq!(attempt_from_field(3, &field).unwrap(), record, "{field}");
        }
        assert_eq!(
            attempt_field(&record(Some(500), None)),
            "1796304240504|4999|500|http_5xx"
        );
        assert_eq!(
            attempt_field(&signed(record(Some(200), None), 1_796_304_240)),
            "1796304240504@0.0a1b2c3d|4999|200|http_5xx"
        );
    }

    #[test]
    fn records_an_older_webhookd_wrote_as_json_still_read() {
        let json = r#"{"attempt":3,"started_at":1796304240504,"duration_ms":4999,"status_code":500,"reason":"http_5xx","response":null}"#;
        assert_eq!(
            attempt_from_field(3, json).unwrap(),
            record(Some(500), None)
        );
    }

    #[test]
    fn a_mangled_record_is_corrupt_not_a_panic() {
        for field in [
            "",
            "12@|3|500|ok",
            "12@x.ab|3|500|ok",
            "12|x|500|timeout",
            "12|3|abc|timeout",
            "12|3",
            "{nope",
        ] {
            assert!(
                matches!(attempt_from_field(1, field), Err(StoreError::Corrupt(_))),
                "{field:?}"
            );
        }
    }
}
