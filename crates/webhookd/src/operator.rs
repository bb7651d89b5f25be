//! Starting operator events (SPEC §15) when `operator_events` names
//! targets: their https URLs checked as endpoint URLs are (a bad one stops
//! the start), and a task that makes them the reserved user's endpoints
//! and sends the stores' outbox on to every target.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use webhookd_core::endpoint::UrlRules;
use webhookd_core::operator::OperatorTarget;
use webhookd_delivery::Dispatcher;
use webhookd_ingest::operator_events::OperatorEvents;
use webhookd_store::Store;

pub fn start(
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
    let dispatcher = Arc::downgrade(dispatcher);
    let sender = OperatorEvents::new(Arc::clone(store), targets, urls, move || {
        if let Some(dispatcher) = dispatcher.upgrade() {
            dispatcher.wake();
        }
    });
    tracing::info!(targets = targets.len(), "operator events are on");
    tasks.spawn(sender.run(shutdown.clone()));
    Ok(())
}
