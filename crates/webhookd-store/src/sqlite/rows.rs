//! Rows as they come out of SQLite, before their enums are parsed.

use rusqlite::{Connection, OptionalExtension, params};
use webhookd_core::{Endpoint, PreviousSecret};

use super::schema::sqlite_error;
use crate::{Delivery, StoreError, event_type_from_str, events_from_json, status_from_str};

/// [`DELIVERY_COLUMNS`] qualified with the `d` alias, for joins.
pub(super) const DELIVERY_COLUMNS_D: &str = "d.delivery_id, d.username, d.endpoint_id, d.event_id, d.event_type, \
     d.body, d.status, d.attempts, d.next_attempt_at, d.created_at, d.last_attempt, d.test, d.trace, d.line";

pub(super) const DELIVERY_COLUMNS: &str = "delivery_id, username, endpoint_id, event_id, event_type, body, \
     status, attempts, next_attempt_at, created_at, last_attempt, test, trace, line";

/// How many columns [`DELIVERY_COLUMNS`] names: a join's own columns
/// follow at this index.
pub(super) const DELIVERY_COLUMN_COUNT: usize = 14;

/// A delivery row before its enums are parsed.
pub(super) struct RawDelivery {
    delivery_id: String,
    username: String,
    endpoint_id: String,
    event_id: String,
    event_type: String,
    body: String,
    status: String,
    attempts: u32,
    next_attempt_at: i64,
    created_at: i64,
    last_attempt: bool,
    test: bool,
    trace: Option<String>,
    line: Option<String>,
}

pub(super) fn read_delivery(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawDelivery> {
    Ok(RawDelivery {
        delivery_id: row.get(0)?,
        username: row.get(1)?,
        endpoint_id: row.get(2)?,
        event_id: row.get(3)?,
        event_type: row.get(4)?,
        body: row.get(5)?,
        status: row.get(6)?,
        attempts: row.get(7)?,
        next_attempt_at: row.get(8)?,
        created_at: row.get(9)?,
        last_attempt: row.get(10)?,
        test: row.get(11)?,
        trace: row.get(12)?,
        line: row.get(13)?,
    })
}

impl RawDelivery {
    pub(super) fn parse(self) -> Result<Delivery, StoreError> {
        Ok(Delivery {
            event_type: event_type_from_str(&self.event_type)?,
            status: self.status.parse()?,
            delivery_id: self.delivery_id,
            username: self.username,
            endpoint_id: self.endpoint_id,
            event_id: self.event_id,
            body: self.body,
            attempts: self.attempts,
            next_attempt_at: if self.next_attempt_at == super::deliveries::HELD {
                0
            } else {
                self.next_attempt_at
            },
            created_at: self.created_at,
            last_attempt: self.last_attempt,
            test: self.test,
            trace: self.trace,
            ordering_key: self.line,
        })
    }
}

pub(super) const ENDPOINT_COLUMNS: &str = "endpoint_id, url, secret, status, events, username, \
     created_at, previous_secret, previous_expires_at, failing_since, disabled_reason, rate_limit, quota_refused, options, filter, ordering";

pub(super) fn read_endpoint(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawEndpoint> {
    Ok(RawEndpoint {
        endpoint_id: row.get(0)?,
        url: row.get(1)?,
        secret: row.get(2)?,
        status: row.get(3)?,
        events: row.get(4)?,
        username: row.get(5)?,
        created_at: row.get(6)?,
        previous_secret: row.get(7)?,
        previous_expires_at: row.get(8)?,
        failing_since: row.get(9)?,
        disabled_reason: row.get(10)?,
        rate_limit: row.get(11)?,
        quota_refused: row.get(12)?,
        options: row.get(13)?,
        filter: row.get(14)?,
        ordering: row.get(15)?,
    })
}

/// A row before its status and events are parsed.
pub(super) struct RawEndpoint {
    endpoint_id: String,
    url: String,
    secret: String,
    status: String,
    events: String,
    username: String,
    created_at: i64,
    previous_secret: Option<String>,
    previous_expires_at: Option<i64>,
    failing_since: Option<i64>,
    disabled_reason: Option<String>,
    rate_limit: Option<u32>,
    quota_refused: i64,
    options: Option<String>,
    filter: Option<String>,
    ordering: Option<String>,
}

impl RawEndpoint {
    pub(super) fn parse(self) -> Result<Endpoint, StoreError> {
        Ok(Endpoint {
            status: status_from_str(&self.status)?,
            events: events_from_json(&self.events)?,
            endpoint_id: self.endpoint_id,
            url: self.url,
            secret: self.secret,
            username: self.username,
            created_at: self.created_at,
            previous_secret: previous_secret(self.previous_secret, self.previous_expires_at),
            failing_since: self.failing_since,
            disabled_reason: self.disabled_reason,
            rate_limit: self.rate_limit,
            quota_refused: u64::try_from(self.quota_refused).unwrap_or(0),
            options: self.options,
            filter: self.filter,
            ordering: self.ordering,
        })
    }
}

/// The stored previous secret and its expiry, when both are there.
pub(super) fn previous_secret(
    secret: Option<String>,
    expires_at: Option<i64>,
) -> Option<PreviousSecret> {
    Some(PreviousSecret {
        secret: secret?,
        expires_at: expires_at?,
    })
}

pub(super) fn select_endpoint(
    connection: &Connection,
    username: &str,
    endpoint_id: &str,
) -> Result<Option<Endpoint>, StoreError> {
    connection
        .query_row(
            &format!(
                "SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE username = ?1 AND endpoint_id = ?2"
            ),
            params![username, endpoint_id],
            read_endpoint,
        )
        .optional()
        .map_err(sqlite_error)?
        .map(RawEndpoint::parse)
        .transpose()
}
