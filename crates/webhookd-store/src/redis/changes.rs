//! Endpoint changes made by other processes, over Redis pub/sub.
//!
//! The update and delete scripts `PUBLISH` the endpoint id on
//! `<prefix>endpoint-changes`; every process subscribes and marks its
//! [`EndpointChanges`] fence, so its queued claims for that endpoint are
//! handed back before their next attempt. Pub/sub forgets what a
//! disconnected subscriber missed, so every (re)subscription marks
//! everything as changed: held claims are re-read once, never sent stale.

use std::time::Duration;

use futures_util::StreamExt as _;
use tokio_util::sync::CancellationToken;

use crate::EndpointChanges;

/// Wait before subscribing again after the subscription broke.
const RESUBSCRIBE_DELAY: Duration = Duration::from_secs(1);

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
            while let Some(message) = messages.next().await {
                match message.get_payload::<String>() {
                    Ok(endpoint_id) => changes.mark(&endpoint_id),
                    Err(_) => changes.mark_everything(),
                }
            }
            Ok::<(), redis::RedisError>(())
        };
        let outcome = tokio::select! {
            outcome = following => outcome,
            () = shutdown.cancelled() => return,
        };
        changes.mark_everything();
        match outcome {
            Ok(()) => tracing::warn!("endpoint change subscription ended; resubscribing"),
            Err(error) => {
                tracing::warn!(%error, "endpoint change subscription failed; resubscribing");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(RESUBSCRIBE_DELAY) => {}
            () = shutdown.cancelled() => return,
        }
    }
}
