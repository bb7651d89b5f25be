//! Starting before the store answers (SPEC §6): webhookd binds its
//! listener, and while Redis is unreachable it answers `/healthz` 200 and
//! `/readyz` 503 and retries, so an orchestrator may start webhookd and
//! its store in any order. RabbitMQ down at start was already handled the
//! same way by the consumer's supervisor.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use webhookd_core::Config;
use webhookd_store::{Store, StoreError};

/// The first wait between two tries; doubled up to [`MOST_BETWEEN_TRIES`].
const FIRST_RETRY: Duration = Duration::from_millis(500);
const MOST_BETWEEN_TRIES: Duration = Duration::from_secs(10);

/// The opened store, the ids of its sealing keys, and the listener to
/// serve on.
pub struct Opened {
    pub store: Arc<dyn Store>,
    pub key_ids: Vec<String>,
    pub listener: TcpListener,
}

/// Opens the store with `open`, retrying while it is unreachable and
/// serving the probes on `listener` meanwhile; `None` when `stop` (a
/// signal) comes first. Any other failure (a wrong encryption key, a store
/// newer than this webhookd) ends the start.
pub async fn open_when_reachable<F, Fut>(
    config: &Config,
    listener: TcpListener,
    limits: webhookd_api::ListenerLimits,
    open: F,
    stop: impl std::future::Future<Output = &'static str>,
) -> anyhow::Result<Option<Opened>>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<(Arc<dyn Store>, Vec<String>)>>,
{
    let first = open().await;
    let error = match first {
        Ok((store, key_ids)) => {
            return Ok(Some(Opened {
                store,
                key_ids,
                listener,
            }));
        }
        Err(error) if unreachable(&error) => error,
        Err(error) => return Err(error),
    };
    // The probes are served from a second handle on the same socket; what
    // arrives once they stop waits in the backlog for the real server.
    let listen = listener.local_addr()?;
    let socket = listener.into_std()?;
    let probes_socket = TcpListener::from_std(socket.try_clone()?)?;
    let listener = TcpListener::from_std(socket)?;
    let probes_done = CancellationToken::new();
    let probes = tokio::spawn(webhookd_api::serve(
        probes_socket,
        webhookd_api::starting_router(),
        limits,
        config.trusted_proxies.clone(),
        probes_done.clone(),
    ));
    tracing::warn!(
        %listen, store = %config.store, error = format!("{error:#}"),
        "the store is unreachable; webhookd waits for it (/healthz 200, /readyz 503) and retries"
    );
    tokio::pin!(stop);
    let mut wait = FIRST_RETRY;
    let outcome = loop {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            signal = &mut stop => {
                tracing::info!(signal, "stopping before the store was reachable");
                break Ok(None);
            }
        }
        match open().await {
            Ok((store, key_ids)) => break Ok(Some((store, key_ids))),
            Err(error) if unreachable(&error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    retry_in_ms = wait.as_millis(),
                    "the store is still unreachable"
                );
                wait = (wait * 2).min(MOST_BETWEEN_TRIES);
            }
            Err(error) => break Err(error),
        }
    };
    probes_done.cancel();
    let _ = probes.await;
    Ok(outcome?.map(|(store, key_ids)| Opened {
        store,
        key_ids,
        listener,
    }))
}

fn unreachable(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<StoreError>()
            .is_some_and(StoreError::is_unavailable)
    })
}
