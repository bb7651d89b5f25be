//! `webhookd serve`: open the store, start the listener and the RabbitMQ
//! consumer, wait for a signal, drain within the grace period.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use webhookd_api::event_types::REFRESH_EVERY;
use webhookd_api::{ApiSettings, AppState, ListenerLimits, PortalHeaders};
use webhookd_core::Rejection;
use webhookd_core::address::AddressPolicy;
use webhookd_core::duration::format_duration;
use webhookd_core::endpoint::UrlRules;
use webhookd_core::health::Readiness;
use webhookd_core::ids::new_ingest_token;
use webhookd_core::telemetry;
use webhookd_core::{Catalog, Config, SharedCatalog};
use webhookd_delivery::{DeliveryClient, Dispatcher, DispatcherSettings, Egress};
use webhookd_ingest::Ingest;
use webhookd_ingest::amqp::{AmqpConsumer, AmqpSettings};
use webhookd_store::{Store, refresh_catalog};

use crate::starting::Opened;

/// Store setting that holds the generated ingest token.
const INGEST_TOKEN_SETTING: &str = "ingest_token";
/// How often housekeeping (retention, deleted endpoints' deliveries,
/// de-duplication entries) looks for work.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// Pause between two sweep steps while there is more: the store serves
/// everyone else in between.
const SWEEP_PAUSE: Duration = Duration::from_millis(2);
/// How often the backlog gauges are refreshed.
const METRICS_INTERVAL: Duration = Duration::from_secs(5);
/// How often the delivery engine looks for due retries when nothing woke it.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Connections the probes' own listener holds (`health_listen`).
const HEALTH_CONNECTIONS: usize = 64;

/// How often a serving process tells the store it runs, with its keys.
const ANNOUNCE_INTERVAL: Duration = Duration::from_secs(10);
/// An announcement not renewed within this is forgotten (a killed process).
const ANNOUNCEMENT_LASTS: Duration = Duration::from_secs(30);

/// The public listener's limits: `max_connections` as far as the
/// open-file limit leaves room for outbound deliveries, and the share of
/// one client address.
fn listener_limits(config: &Config) -> ListenerLimits {
    let max_connections = webhookd_api::listener::connection_budget(
        config.max_connections as usize,
        raise_open_file_limit(),
        u64::from(config.delivery_concurrency) + RESERVED_FILES,
    );
    ListenerLimits {
        max_connections_per_ip: config.max_connections_per_ip as usize,
        ..ListenerLimits::new(max_connections)
    }
}

/// The probes' own listener (`health_listen`): `/healthz`, `/readyz` and
/// `/metrics` only, out of reach of the public listener's clients.
fn spawn_health_listener(
    tasks: &TaskTracker,
    address: std::net::SocketAddr,
    state: &AppState,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let listener = webhookd_api::listener::bind(address)
        .with_context(|| format!("cannot listen on {address} (WEBHOOKD_HEALTH_LISTEN)"))?;
    tasks.spawn(webhookd_api::serve(
        listener,
        webhookd_api::health_router(state.clone()),
        ListenerLimits::new(HEALTH_CONNECTIONS),
        Vec::new(),
        shutdown.clone(),
    ));
    tracing::info!(%address, "probes listen apart (/healthz, /readyz, /metrics)");
    Ok(())
}

/// Opens the store, first sealing what an earlier start (or an older key)
/// left unsealed — unless a running process lacks the sealing key: a
/// rolling restart that put a new key first would otherwise leave the
/// processes not yet restarted unable to open what it sealed. A wrong
/// WEBHOOKD_ENCRYPTION_KEY stops the start here, by name. Returns the
/// store and the ids of its keys.
async fn open_store(config: &Config) -> anyhow::Result<(Arc<dyn Store>, Vec<String>)> {
    let (store, resealed) = webhookd_store::open_and_reseal(config, false, &|_| ())
        .await
        .with_context(|| format!("cannot open the store {}", config.store))?;
    if !resealed.held_back_by.is_empty() {
        tracing::warn!(
            processes = %resealed.held_back_by.join(", "),
            "not sealing secrets with the first encryption key: running processes do not hold it \
             (add it to WEBHOOKD_ENCRYPTION_KEY everywhere first; docs/operations.md, key rotation)"
        );
    } else if resealed.resealed > 0 {
        tracing::info!(
            secrets = resealed.secrets,
            resealed = resealed.resealed,
            "endpoint secrets sealed with the current encryption key"
        );
    }
    Ok((store, resealed.key_ids))
}

/// The store's upkeep, until `shutdown`: the sweep, this process's
/// announcement, endpoint changes made elsewhere, and the backlog gauges.
fn spawn_housekeeping(
    tasks: &TaskTracker,
    store: &Arc<dyn Store>,
    key_ids: String,
    metrics: &PrometheusHandle,
    shutdown: &CancellationToken,
) {
    tasks.spawn(sweep_regularly(Arc::clone(store), shutdown.clone()));
    tasks.spawn(announce_regularly(
        Arc::clone(store),
        key_ids,
        shutdown.clone(),
    ));
    {
        let (store, shutdown) = (Arc::clone(store), shutdown.clone());
        tasks.spawn(async move { store.follow_endpoint_changes(shutdown).await });
    }
    tasks.spawn(refresh_metrics(
        metrics.clone(),
        Arc::clone(store),
        shutdown.clone(),
    ));
}

/// The event catalog (SPEC §12), with the admin API's changes read before
/// the first event (a type defined there must not be refused by a process
/// that just started) and again every `REFRESH_EVERY` until `shutdown`.
async fn start_catalog(
    config: &Config,
    store: &Arc<dyn Store>,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) -> anyhow::Result<SharedCatalog> {
    let catalog = load_catalog(config)?;
    if let Err(error) = refresh_catalog(store.as_ref(), &catalog).await {
        tracing::warn!(%error, "cannot read the event catalog's changes yet; retrying every {}s", REFRESH_EVERY.as_secs());
    }
    tasks.spawn(refresh_catalog_regularly(
        Arc::clone(store),
        catalog.clone(),
        shutdown.clone(),
    ));
    Ok(catalog)
}

/// The event catalog's base: `event_catalog`'s file, or the 22 JoggAI types.
fn load_catalog(config: &Config) -> anyhow::Result<SharedCatalog> {
    let Some(path) = &config.event_catalog else {
        return Ok(SharedCatalog::joggai());
    };
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).with_context(|| {
        format!("cannot read the event catalog {shown} (WEBHOOKD_EVENT_CATALOG)")
    })?;
    let catalog = Catalog::from_file(&shown, &text).context("WEBHOOKD_EVENT_CATALOG")?;
    tracing::info!(path = %shown, event_types = catalog.names().len(), "event catalog loaded");
    Ok(SharedCatalog::new(catalog))
}

/// Reads, until `shutdown`, the catalog changes other processes made
/// through the admin API.
async fn refresh_catalog_regularly(
    store: Arc<dyn Store>,
    catalog: SharedCatalog,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(REFRESH_EVERY);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = shutdown.cancelled() => break,
        }
        if let Err(error) = refresh_catalog(store.as_ref(), &catalog).await {
            tracing::debug!(%error, "could not read the event catalog's changes");
        }
    }
}

/// Tells the store, until `shutdown`, that this process runs and which
/// keys it holds (see `open_store`).
async fn announce_regularly(store: Arc<dyn Store>, key_ids: String, shutdown: CancellationToken) {
    let process_id = webhookd_core::ids::new_lease_token();
    let lasts = i64::try_from(ANNOUNCEMENT_LASTS.as_millis()).unwrap_or(i64::MAX);
    let mut ticks = tokio::time::interval(ANNOUNCE_INTERVAL);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = shutdown.cancelled() => break,
        }
        let until = store.now_ms() + lasts;
        if let Err(error) = store.announce_process(&process_id, &key_ids, until).await {
            tracing::debug!(%error, "could not announce this process to the store");
        }
    }
    // Gone at once, not in 30 s: a rotation right after a stop is not held up.
    let _ = store.announce_process(&process_id, &key_ids, 0).await;
}

/// Binds the listener, then opens the store — serving the probes while it
/// is unreachable (`starting`). `None`: a signal came before the store did.
async fn bind_and_open(config: &Config) -> anyhow::Result<Option<(Opened, SocketAddr)>> {
    let listener = webhookd_api::listener::bind(config.listen)
        .with_context(|| format!("cannot listen on {} (WEBHOOKD_LISTEN)", config.listen))?;
    // The bound address, which differs from the configured one for port 0.
    let listen = listener
        .local_addr()
        .context("reading the listener's address")?;
    let opened = crate::starting::open_when_reachable(
        config,
        listener,
        listener_limits(config),
        || open_store(config),
        shutdown_signal(),
    )
    .await?;
    let Some(opened) = opened else {
        return Ok(None);
    };
    crate::opening::check_created(config, &*opened.store, crate::opening::Opening::Create).await?;
    Ok(Some((opened, listen)))
}

/// The delivery engine, as configured.
fn dispatcher(config: &Config, store: &Arc<dyn Store>) -> anyhow::Result<Arc<Dispatcher>> {
    let egress = Egress {
        bind: config.egress_bind,
        proxy: config.egress_proxy.clone(),
    };
    let client = DeliveryClient::with_egress(
        AddressPolicy::new(config.allowed_networks.clone()),
        config.delivery_timeout,
        &egress,
    )
    .context("egress_proxy")?
    .with_user_agent(&config.user_agent)
    .context("user_agent is not a valid header value")?;
    let settings = DispatcherSettings {
        schedule: config.retry_schedule.clone(),
        timeout: config.delivery_timeout,
        max_in_flight: config.delivery_concurrency as usize,
        per_endpoint: config.endpoint_concurrency as usize,
        poll_interval: POLL_INTERVAL,
    };
    Ok(Dispatcher::new(Arc::clone(store), client, settings))
}

pub async fn run(config: Config) -> anyhow::Result<()> {
    tracing::info!(?config, "starting webhookd");
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let metrics = PrometheusBuilder::new()
        .set_buckets(telemetry::BUCKETS)
        .context("histogram buckets")?
        .install_recorder()
        .context("installing the metrics recorder")?;
    telemetry::register(env!("CARGO_PKG_VERSION"), Rejection::CODES);
    let Some((opened, listen)) = bind_and_open(&config).await? else {
        return Ok(());
    };
    let Opened {
        store,
        key_ids,
        listener,
    } = opened;

    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let readiness = Readiness::default();

    let dispatcher = dispatcher(&config, &store)?;
    let catalog = start_catalog(&config, &store, &tasks, &shutdown).await?;
    let ingest = Ingest::new(Arc::clone(&store))
        .with_catalog(catalog)
        .with_dispatcher(Arc::clone(&dispatcher))
        .with_operator_events(!config.operator_events.is_empty());
    let url_rules = UrlRules {
        allow_http: !config.require_https,
        addresses: AddressPolicy::new(config.allowed_networks.clone()),
    };
    crate::operator::start(
        &config.operator_events,
        &url_rules,
        &store,
        &dispatcher,
        (&tasks, &shutdown),
    )?;
    tasks.spawn(dispatcher.run(shutdown.clone()));

    if let Some(url) = &config.amqp_url {
        let settings = AmqpSettings {
            url: url.clone(),
            queue: config.amqp_queue.clone(),
            queue_type: config.amqp_queue_type,
            prefetch: config.amqp_prefetch,
            delivery_limit: config.amqp_delivery_limit,
            heartbeat: config.amqp_heartbeat,
            connection_name: format!("webhookd@{listen}"),
        };
        // The same ingest as HTTP's: AMQP events take the fast path too.
        let consumer = AmqpConsumer::new(settings, ingest.clone(), readiness.clone());
        tasks.spawn(consumer.run(shutdown.clone()));
    }
    spawn_housekeeping(&tasks, &store, key_ids.join(","), &metrics, &shutdown);

    let settings = ApiSettings {
        url_rules,
        rate_limit: config.api_rate_limit,
        ingest_token: ingest_token(&config, &*store).await?,
        admin_token: config.admin_token.clone(),
        portal: PortalHeaders::new(&config.portal_frame_ancestors)
            .context("portal_frame_ancestors is not a valid header value")?
            .with_product_name(&config.portal_product_name),
        readiness,
        metrics: Some(metrics),
        quotas: config.quotas,
        user_agent: config.user_agent.clone(),
    };
    let state = AppState::new(store, ingest, settings);
    if let Some(address) = config.health_listen {
        spawn_health_listener(&tasks, address, &state, &shutdown)?;
    }
    let router = webhookd_api::router(state);
    let server = tasks.spawn(webhookd_api::serve(
        listener,
        router,
        listener_limits(&config),
        config.trusted_proxies.clone(),
        shutdown.clone(),
    ));
    tracing::info!(%listen, store = %config.store, "webhookd is ready");

    tokio::select! {
        signal = shutdown_signal() => tracing::info!(signal, "shutting down"),
        result = server => {
            // The server only returns by itself on an I/O error.
            result.context("the HTTP server task failed")?.context("the HTTP server failed")?;
        }
    }
    shutdown.cancel();
    tasks.close();
    if tokio::time::timeout(config.shutdown_grace, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(grace = %format_duration(config.shutdown_grace), "work still in flight after the grace period; exiting");
    }
    tracing::info!("webhookd stopped");
    Ok(())
}

/// The configured ingest token, or the one generated at first start and
/// kept in the store (logged once, when it is generated).
async fn ingest_token(config: &Config, store: &dyn Store) -> anyhow::Result<String> {
    if let Some(token) = &config.ingest_token {
        return Ok(token.clone());
    }
    let generated = new_ingest_token();
    let token = store
        .setting_or_insert(INGEST_TOKEN_SETTING, &generated)
        .await
        .context("cannot read or store the generated ingest token")?;
    if token == generated {
        tracing::warn!(
            ingest_token = %token,
            "generated the bearer token for POST /internal/events; it is shown only this once \
             (set WEBHOOKD_INGEST_TOKEN to choose your own)"
        );
    }
    Ok(token)
}

/// Housekeeping: removes what the store no longer keeps, one bounded step
/// at a time (see `Store::sweep`), so no step stalls the store.
async fn sweep_regularly(store: Arc<dyn Store>, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(SWEEP_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = shutdown.cancelled() => return,
        }
        loop {
            match store.sweep(webhookd_core::time::unix_millis()).await {
                Ok(report) if report.more => {}
                Ok(_) => break,
                Err(error) => {
                    tracing::warn!(%error, "housekeeping failed; will retry");
                    break;
                }
            }
            tokio::select! {
                () = tokio::time::sleep(SWEEP_PAUSE) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }
}

/// Keeps the store-derived gauges (backlog, dead deliveries) current and
/// lets the exporter fold its histograms.
async fn refresh_metrics(
    handle: PrometheusHandle,
    store: Arc<dyn Store>,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(METRICS_INTERVAL);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = shutdown.cancelled() => return,
        }
        handle.run_upkeep();
        match store
            .delivery_stats(webhookd_core::time::unix_millis())
            .await
        {
            Ok(stats) => telemetry::backlog(stats.due, stats.scheduled, stats.dead),
            Err(error) => tracing::warn!(%error, "cannot read delivery counts for the metrics"),
        }
    }
}

/// File descriptors kept back from client connections, on top of one per
/// outbound delivery in flight: the store, the broker, the listener, logs,
/// DNS, pooled idle connections to receivers.
const RESERVED_FILES: u64 = 512;

/// Raises the soft open-file limit to the hard one (SPEC §7: client
/// connections must not take the descriptors outbound deliveries need) and
/// returns the limit now in force.
fn raise_open_file_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let (Some(current), hard) = (limit.current, limit.maximum) else {
        return u64::MAX;
    };
    let wanted = hard.unwrap_or(current.max(1 << 20));
    if wanted > current {
        let raised = rustix::process::Rlimit {
            current: Some(wanted),
            maximum: hard,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => {
                tracing::debug!(from = current, to = wanted, "raised the open-file limit");
                return wanted;
            }
            Err(error) => tracing::warn!(%error, current, "cannot raise the open-file limit"),
        }
    }
    current
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C) with the signal's name.
async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::warn!("cannot install signal handlers; stop webhookd with SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}
