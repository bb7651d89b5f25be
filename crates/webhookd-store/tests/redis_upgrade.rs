//! A Redis an older webhookd wrote to: keys of a layout since dropped are
//! freed by the sweep, so an upgrade leaves no memory behind.

// In tests a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

use webhookd_store::{RedisStore, Store};
use webhookd_testkit::{Service, require, unique_prefix};

/// Before the backlog gauges read the endpoints' own schedules, each
/// partition kept one more schedule of every pending delivery, `<p>:due`.
#[tokio::test]
async fn the_sweep_frees_the_partition_schedule_older_versions_kept() {
    let Some(url) = require(Service::Redis) else {
        return;
    };
    let prefix = unique_prefix("upgrade");
    let store = RedisStore::connect(&url, &prefix).await.unwrap();
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    // One server has 16 partitions, tagged `p:<n>` (connection.rs).
    let old: Vec<String> = (0..16).map(|p| format!("{prefix}{{p:{p}}}:due")).collect();
    for key in &old {
        let _: i64 = redis::cmd("ZADD")
            .arg(key)
            .arg(1)
            .arg("dlv_left_by_an_older_webhookd")
            .query_async(&mut connection)
            .await
            .unwrap();
    }

    while store.sweep(0).await.unwrap().more {}

    let left: i64 = redis::cmd("EXISTS")
        .arg(&old)
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(left, 0, "the old schedules are gone");
}
