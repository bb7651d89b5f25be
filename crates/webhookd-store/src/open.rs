//! Opening the store a configuration names, sealed and instrumented, and
//! re-sealing its secrets — only while every running process holds the
//! sealing key ("Correctness, round 3", item 5; docs/operations.md).

use std::collections::HashMap;
use std::sync::Arc;

use webhookd_core::{Config, StoreUrl};

use crate::{
    Instrumented, Progress, RedisStore, ResealReport, Retention, Sealed, SecretBox, SqliteStore,
    Store, StoreError, sqlite,
};

/// Opens the store the configuration names, its endpoint secrets sealed
/// at rest, instrumented for the metrics.
pub async fn open(config: &Config) -> Result<Arc<dyn Store>, StoreError> {
    Ok(Arc::new(Instrumented::new(open_sealed(config).await?)))
}

/// [`open`], first sealing every stored secret not yet sealed with the
/// first key ([`Sealed::reseal`]): what `webhookd serve` does at start and
/// `webhookd keys rotate` on demand. A wrong key fails here, by name.
///
/// Unless `force`, nothing is re-sealed while a running process (see
/// [`Store::announce_process`]) does not hold the first key: it could not
/// open what this would seal ("Correctness, round 3", item 5). The report
/// names those processes ([`ResealReport::held_back_by`]); add the key to
/// every process first, then make it first (docs/operations.md).
pub async fn open_and_reseal(
    config: &Config,
    force: bool,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<(Arc<dyn Store>, ResealReport), StoreError> {
    let sealed = open_sealed(config).await?;
    let key_ids = sealed.key_ids();
    let held_back_by: Vec<String> = match key_ids.first() {
        Some(first) if !force => sealed
            .running_processes(sealed.now_ms())
            .await?
            .into_iter()
            .filter(|(_, held)| !held.split(',').any(|id| id == first))
            .map(|(process, held)| format!("{process} (keys: {held})"))
            .collect(),
        _ => Vec::new(),
    };
    let report = if held_back_by.is_empty() {
        ResealReport {
            key_ids,
            ..sealed.reseal(progress).await?
        }
    } else {
        ResealReport {
            held_back_by,
            key_ids,
            ..ResealReport::default()
        }
    };
    Ok((Arc::new(Instrumented::new(sealed)), report))
}

async fn open_sealed(config: &Config) -> Result<Arc<Sealed>, StoreError> {
    let keys = match (&config.store, config.encryption_keys.is_empty()) {
        (StoreUrl::Sqlite { path }, true) => vec![sqlite::key_file(path)?],
        (StoreUrl::Redis { .. }, true) => {
            tracing::warn!(
                "WEBHOOKD_ENCRYPTION_KEY is not set: endpoint secrets are stored in Redis \
                 unsealed (make a key with `webhookd gen-key`; docs/operations.md)"
            );
            Vec::new()
        }
        (_, false) => config.encryption_keys.clone(),
    };
    let raw = open_raw(config).await?;
    Ok(Arc::new(Sealed::new(raw, SecretBox::new(&keys))))
}

async fn open_raw(config: &Config) -> Result<Arc<dyn Store>, StoreError> {
    let retention = Retention::of(config);
    let store: Arc<dyn Store> = match &config.store {
        StoreUrl::Sqlite { path } => Arc::new(
            SqliteStore::open(path)
                .await?
                .with_retention(retention)
                .with_quotas(config.quotas)
                .with_operator_events(!config.operator_events.is_empty())
                .with_auto_disable_after(config.auto_disable_after),
        ),
        StoreUrl::Redis { url } => Arc::new(
            RedisStore::connect(url, &config.redis_prefix)
                .await?
                .with_retention(retention)
                .with_quotas(config.quotas)
                .with_operator_events(!config.operator_events.is_empty())
                .with_auto_disable_after(config.auto_disable_after)
                .with_wait_replicas(config.redis_wait_replicas),
        ),
    };
    Ok(store)
}

/// Settings named this, then a process id, are process announcements
/// ([`Store::announce_process`]): `<until ms>|<key ids>`.
pub(crate) const PROCESS_SETTING: &str = "process:";

/// The announcements among `settings` (name → value): those running at
/// `now_ms` as `(process id, key ids)`, and the names of those run out.
pub(crate) fn running_processes(
    settings: HashMap<String, String>,
    now_ms: i64,
) -> (Vec<(String, String)>, Vec<String>) {
    let mut running = Vec::new();
    let mut over = Vec::new();
    for (name, value) in settings {
        let Some(process) = name.strip_prefix(PROCESS_SETTING) else {
            continue;
        };
        let until = value
            .split_once('|')
            .and_then(|(until, keys)| Some((until.parse::<i64>().ok()?, keys)));
        match until {
            Some((until, keys)) if until >= now_ms => {
                running.push((process.to_owned(), keys.to_owned()));
            }
            _ => over.push(name),
        }
    }
    running.sort();
    (running, over)
}
