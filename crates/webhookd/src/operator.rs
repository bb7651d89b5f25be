//! Starting operator events (SPEC §15) when `operator_events` names
//! targets: the https ones become the endpoints of the reserved user, and
//! a task sends the stores' outbox on to every target.

use std::sync::Arc;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use webhookd_core::endpoint::UrlRules;
use webhookd_core::operator::OperatorTarget;
use webhookd_delivery::Dispatcher;
use webhookd_ingest::operator_events::{OperatorEvents, sync_webhook_targets};
use webhookd_store::Store;

pub async fn start(
    targets: &[OperatorTarget],
    url_rules: &UrlRules,
    store: &Arc<dyn Store>,
    dispatcher: &Arc<Dispatcher>,
    (tasks, shutdown): (&TaskTracker, &CancellationToken),
) -> anyhow::Result<()> {
    if targets.is_empty() {
        return Ok(());
    }
    let urls = targets
        .iter()
        .filter_map(|target| match target {
            OperatorTarget::Webhook { url } => Some(url_rules.normalise(url).map_err(|error| {
                anyhow::anyhow!(
                    "operator_events: {}: {}",
                    webhookd_core::config::redact_url(url),
                    error.message
                )
            })),
            OperatorTarget::Amqp { .. } => None,
        })
        .collect::<anyhow::Result<Vec<String>>>()?;
    sync_webhook_targets(&**store, &urls)
        .await
        .context("cannot set up the https operator event targets")?;
    let dispatcher = Arc::downgrade(dispatcher);
    let sender = OperatorEvents::new(Arc::clone(store), targets, move || {
        if let Some(dispatcher) = dispatcher.upgrade() {
            dispatcher.wake();
        }
    });
    tracing::info!(targets = targets.len(), "operator events are on");
    tasks.spawn(sender.run(shutdown.clone()));
    Ok(())
}
