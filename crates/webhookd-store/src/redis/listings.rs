//! Delivery listings on Redis (SPEC §13): the endpoint's per-status index
//! walked by id, in either order, within the time window's id range; each
//! delivery read and kept if it passes the filters.

use std::collections::HashMap;

use redis::AsyncCommands as _;

use super::RedisStore;
use super::rows::{delivery_from_fields, redis_error};
use crate::listing::IdRange;
use crate::{DeliveryQuery, DeliveryStatus, Listing, MAX_SCANNED, Order, StoreError};

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
