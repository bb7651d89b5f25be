//! Reading deliveries on Redis (SPEC §13): listings — the endpoint's
//! per-status index walked by id, in either order, within the time
//! window's id range, each delivery read and kept if it passes the filters
//! — one delivery with its attempt log, an event's kept body, and an
//! endpoint's counts by status.

use std::collections::HashMap;

use redis::AsyncCommands as _;

use super::RedisStore;
use super::rows::{attempt_from_field, delivery_from_fields, joined_pieces, redis_error};
use crate::listing::IdRange;
use crate::{
    AttemptRecord, Delivery, DeliveryCounts, DeliveryQuery, DeliveryStatus, Listing, MAX_SCANNED,
    Order, StoreError,
};

/// One page of `query` over `username`'s deliveries to `endpoint_id`.
pub(super) async fn query(
    store: &RedisStore,
    username: &str,
    endpoint_id: &str,
    status: DeliveryStatus,
    query: &DeliveryQuery,
) -> Result<Listing, StoreError> {
    let mut connection = store.connection();
    let index = format!(
        "{}ep:{endpoint_id}:{}",
        store.user_prefix(username),
        status.as_str()
    );
    let limit = query.page.limit;
    let mut range = IdRange::of(query);
    let mut listing = Listing::default();
    let budget = if query.filters() {
        MAX_SCANNED
    } else {
        usize::MAX
    };
    let mut scanned = 0;
    // An id whose delivery is gone (removed between two calls, or left
    // by an older webhookd whose deliveries expired on their own) is
    // skipped and dropped from the index; the page is still filled.
    while listing.deliveries.len() < limit && scanned < budget {
        let wanted = (limit - listing.deliveries.len()).min(budget - scanned);
        let (command, from, to) = match query.order {
            Order::Ascending => ("ZRANGEBYLEX", range.low(), range.high()),
            Order::Descending => ("ZREVRANGEBYLEX", range.high(), range.low()),
        };
        let ids: Vec<String> = redis::cmd(command)
            .arg(&index)
            .arg(from)
            .arg(to)
            .arg("LIMIT")
            .arg(0)
            .arg(wanted)
            .query_async(&mut connection)
            .await
            .map_err(redis_error)?;
        if ids.is_empty() {
            return Ok(listing);
        }
        scanned += ids.len();
        let index_ends = ids.len() < wanted;
        let mut pipeline = redis::pipe();
        for id in &ids {
            pipeline.hgetall(format!("{}dlv:{id}", store.partition_prefix(username)));
        }
        let rows: Vec<HashMap<String, String>> = pipeline
            .query_async(&mut connection)
            .await
            .map_err(redis_error)?;
        let mut gone = Vec::new();
        for (id, fields) in ids.into_iter().zip(rows) {
            range.passed(query.order, &id);
            if fields.is_empty() {
                gone.push(id);
                continue;
            }
            let delivery = delivery_from_fields(id, fields)?;
            if query.keeps(&delivery) {
                listing.deliveries.push(delivery);
            }
        }
        if !gone.is_empty() {
            let _: i64 = connection.zrem(&index, gone).await.map_err(redis_error)?;
        }
        if index_ends {
            return Ok(listing);
        }
    }
    listing.next_after = range.cursor();
    Ok(listing)
}

/// One delivery of the user's endpoint, with its attempt log, oldest first.
pub(super) async fn one(
    store: &RedisStore,
    username: &str,
    endpoint_id: &str,
    delivery_id: &str,
) -> Result<Option<(Delivery, Vec<AttemptRecord>)>, StoreError> {
    let key = format!("{}dlv:{delivery_id}", store.partition_prefix(username));
    let mut fields: HashMap<String, String> = store
        .connection()
        .hgetall(&key)
        .await
        .map_err(redis_error)?;
    if fields.is_empty() {
        return Ok(None);
    }
    // The attempt log is kept in the delivery's hash, `attempt:<n>` (in
    // pieces when long: `attempt:<n>~2`…).
    let names: Vec<String> = fields
        .keys()
        .filter(|name| name.starts_with("attempt:") && !name.contains('~'))
        .cloned()
        .collect();
    let mut attempts: Vec<AttemptRecord> = names
        .iter()
        .map(|name| {
            let first = fields.remove(name).unwrap_or_default();
            let text = joined_pieces(first, &mut fields, name);
            let number = name["attempt:".len()..]
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("attempt field {name}")))?;
            attempt_from_field(number, &text)
        })
        .collect::<Result<_, _>>()?;
    attempts.sort_by_key(|attempt| attempt.attempt);
    let delivery = delivery_from_fields(delivery_id.to_owned(), fields)?;
    if delivery.username != username || delivery.endpoint_id != endpoint_id {
        return Ok(None);
    }
    Ok(Some((delivery, attempts)))
}

/// The body of `delivery`'s event while Redis keeps it (its key expires
/// after `keep_payloads`).
pub(super) async fn kept_payload(
    store: &RedisStore,
    delivery: &Delivery,
) -> Result<Option<String>, StoreError> {
    let key = format!(
        "{}payload:{}:{}",
        store.user_prefix(&delivery.username),
        delivery.event_id,
        delivery.created_at
    );
    store.connection().get(key).await.map_err(redis_error)
}

/// The endpoint's deliveries by status; `None` when it does not exist.
pub(super) async fn counts(
    store: &RedisStore,
    username: &str,
    endpoint_id: &str,
) -> Result<Option<DeliveryCounts>, StoreError> {
    let index = |status: DeliveryStatus| {
        format!(
            "{}ep:{endpoint_id}:{}",
            store.user_prefix(username),
            status.as_str()
        )
    };
    let (exists, pending, delivered, failed): (bool, u64, u64, u64) = redis::pipe()
        .exists(store.endpoint_key(username, endpoint_id))
        .zcard(index(DeliveryStatus::Pending))
        .zcard(index(DeliveryStatus::Delivered))
        .zcard(index(DeliveryStatus::Failed))
        .query_async(&mut store.connection())
        .await
        .map_err(redis_error)?;
    Ok(exists.then_some(DeliveryCounts {
        pending,
        delivered,
        failed,
    }))
}
