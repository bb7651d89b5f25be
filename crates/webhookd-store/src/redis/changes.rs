//! Endpoint changes made by other processes, over Redis pub/sub.
//!
//! The update and delete scripts `PUBLISH` the endpoint id on
//! `<prefix>endpoint-changes`; every process subscribes and marks its
//! [`EndpointChanges`] fence, so its queued claims for that endpoint are
//! handed back before their next attempt. Pub/sub forgets what a
//! disconnected subscriber missed, so every (re)subscription marks
//! everything as changed: held claims are re-read once, never sent stale.
//!
//! A subscription can die silently (a link that drops packets, a NAT that
//! forgot the connection): nothing arrives, nothing fails. So every process
//! publishes a heartbeat on the channel every [`HEARTBEAT`], and a
//! subscription that hears nothing — no change, no heartbeat from anyone —
//! for [`SILENCE_LIMIT`] is taken for dead: everything is marked changed
//! and the subscription made again.

use std::time::Duration;

use futures_util::StreamExt as _;
use tokio_util::sync::CancellationToken;

use crate::EndpointChanges;

/// Wait before subscribing again after the subscription broke.
const RESUBSCRIBE_DELAY: Duration = Duration::from_secs(1);
/// How often each process publishes a heartbeat on the channel.
pub(super) const HEARTBEAT: Duration = Duration::from_secs(5);
/// A subscription that hears nothing this long is taken for dead.
pub(super) const SILENCE_LIMIT: Duration = Duration::from_secs(15);
/// The heartbeat's payload: no endpoint id looks like it.
const HEARTBEAT_PAYLOAD: &str = "~heartbeat";

/// Follows `channel` until `shutdown`, resubscribing forever — through the
/// next of `clients` each time: on a cluster every node hears every
/// `PUBLISH`, so whichever node still answers will do.
pub(super) async fn follow(
    clients: &[redis::Client],
    channel: &str,
    changes: &EndpointChanges,
    shutdown: &CancellationToken,
) {
    for client in clients.iter().cycle() {
        let following = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(channel).await?;
            changes.mark_everything();
            let mut messages = pubsub.on_message();
            loop {
                let Ok(message) = tokio::time::timeout(SILENCE_LIMIT, messages.next()).await else {
                    return Ok(Ended::Silent);
                };
                let Some(message) = message else {
                    return Ok(Ended::Closed);
                };
                match message.get_payload::<String>() {
                    Ok(payload) if payload == HEARTBEAT_PAYLOAD => {}
                    Ok(endpoint_id) => changes.mark(&endpoint_id),
                    Err(_) => changes.mark_everything(),
                }
            }
        };
        let outcome = tokio::select! {
            outcome = following => outcome,
            () = heartbeat(client, channel) => Ok(Ended::Closed),
            () = shutdown.cancelled() => return,
        };
        changes.mark_everything();
        match outcome {
            Ok(Ended::Closed) => {
                tracing::warn!("endpoint change subscription ended; resubscribing");
            }
            Ok(Ended::Silent) => tracing::warn!(
                silent_for_s = SILENCE_LIMIT.as_secs(),
                "endpoint change subscription heard nothing, not even heartbeats; resubscribing"
            ),
            Err::<_, redis::RedisError>(error) => {
                tracing::warn!(%error, "endpoint change subscription failed; resubscribing");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(RESUBSCRIBE_DELAY) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// How a subscription ended without an error.
enum Ended {
    Closed,
    Silent,
}

/// Publishes a heartbeat on `channel` every [`HEARTBEAT`], forever; a
/// failed publish is tried again at the next beat (the subscriptions'
/// silence limit notices a link that stays down).
async fn heartbeat(client: &redis::Client, channel: &str) {
    let mut beats = tokio::time::interval(HEARTBEAT);
    let mut connection = None;
    loop {
        beats.tick().await;
        if connection.is_none() {
            connection = tokio::time::timeout(HEARTBEAT, client.get_multiplexed_async_connection())
                .await
                .ok()
                .and_then(Result::ok);
        }
        if let Some(open) = connection.as_mut() {
            let published: Result<redis::RedisResult<i64>, _> = tokio::time::timeout(
                HEARTBEAT,
                redis::cmd("PUBLISH")
                    .arg(channel)
                    .arg(HEARTBEAT_PAYLOAD)
                    .query_async(open),
            )
            .await;
            if !matches!(published, Ok(Ok(_))) {
                connection = None;
            }
        }
    }
}
