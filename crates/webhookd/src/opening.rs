//! Which store a command opens (SPEC §6): only `serve`, or a command given
//! `--create`, makes one; every other command must find the store the
//! server uses, or fail naming where it looked — never quietly make a new,
//! empty one whose API keys the server would reject.

use std::sync::Arc;

use anyhow::{Context as _, bail};
use webhookd_core::{Config, StoreUrl};
use webhookd_store::Store;

/// The setting `serve` (at every start) and `--create` write: what tells a
/// Redis prefix webhookd uses from an empty one.
pub const CREATED_SETTING: &str = "store_created";

/// Whether a one-shot command may make a new store (`--create`), or must
/// find the one `serve` uses (SPEC §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    Existing,
    Create,
}

/// Opens the store for a one-shot command. Without `--create` a store that
/// does not exist is an error naming where it was looked for — not a new,
/// empty one whose keys the server would reject (a newcomer's try, issue 27).
pub async fn open_store(config: &Config, opening: Opening) -> anyhow::Result<Arc<dyn Store>> {
    if opening == Opening::Existing {
        refuse_missing_file(config)?;
    }
    let store = webhookd_store::open(config)
        .await
        .with_context(|| format!("cannot open the store {}", config.store))?;
    check_created(config, &*store, opening).await?;
    Ok(store)
}

/// A SQLite store is its file: look before opening creates it (and its
/// folders).
pub fn refuse_missing_file(config: &Config) -> anyhow::Result<()> {
    match &config.store {
        StoreUrl::Sqlite { path } if !std::path::Path::new(path).exists() => bail!(
            "no webhookd store at {path} (WEBHOOKD_STORE={}, looked for from {}): run this \
             command with the server's settings (WEBHOOKD_STORE or --config), after `webhookd \
             serve` has started once, or pass --create to make a new store",
            config.store,
            std::env::current_dir().map_or_else(|_| "?".into(), |dir| dir.display().to_string()),
        ),
        _ => Ok(()),
    }
}

/// Marks the store created (`--create`), or checks that it was: on Redis
/// the URL always answers, so the mark is what says webhookd uses it.
pub async fn check_created(
    config: &Config,
    store: &dyn Store,
    opening: Opening,
) -> anyhow::Result<()> {
    let now = webhookd_core::time::unix_seconds().to_string();
    match (opening, &config.store) {
        (Opening::Create, _) => {
            store.setting_or_insert(CREATED_SETTING, &now).await?;
        }
        (Opening::Existing, StoreUrl::Redis { .. }) => {
            if store.setting(CREATED_SETTING).await?.is_none() {
                bail!(
                    "no webhookd store at {} under the key prefix {:?} (WEBHOOKD_REDIS_PREFIX): \
                     run this command with the server's settings, after `webhookd serve` has \
                     started once, or pass --create to make a new store",
                    config.store,
                    config.redis_prefix
                );
            }
        }
        (Opening::Existing, StoreUrl::Sqlite { .. }) => {}
    }
    Ok(())
}
