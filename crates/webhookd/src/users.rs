//! The one-shot commands: `webhookd users add|list|revoke`,
//! `webhookd portal-link`, `webhookd gen-key` and `webhookd keys rotate`.

use std::io::Write as _;

use anyhow::{Context as _, bail};
use webhookd_core::Config;
use webhookd_core::event::is_valid_username;
use webhookd_core::ids::{hash_api_key, new_api_key};

async fn open_store(config: &Config) -> anyhow::Result<std::sync::Arc<dyn webhookd_store::Store>> {
    webhookd_store::open(config)
        .await
        .with_context(|| format!("cannot open the store {}", config.store))
}

/// Prints the new key, and only the key, on stdout.
pub async fn add(config: &Config, username: &str) -> anyhow::Result<()> {
    if !is_valid_username(username) {
        bail!(
            "{username:?} is not a valid username: use 1-128 characters of letters, digits and . _ @ + -"
        );
    }
    let store = open_store(config).await?;
    let key = new_api_key();
    store
        .add_api_key(
            username,
            &hash_api_key(&key),
            webhookd_core::time::unix_seconds(),
        )
        .await?;
    tracing::info!(username, "API key added");
    writeln!(std::io::stdout(), "{key}")?;
    Ok(())
}

pub async fn list(config: &Config) -> anyhow::Result<()> {
    let users = open_store(config).await?.list_users().await?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<32} {:>8} {:>12}",
        "USERNAME", "API KEYS", "CREATED"
    )?;
    for user in users {
        writeln!(
            out,
            "{:<32} {:>8} {:>12}",
            user.username, user.api_keys, user.created_at
        )?;
    }
    Ok(())
}

pub async fn revoke(config: &Config, username: &str) -> anyhow::Result<()> {
    let revoked = open_store(config).await?.revoke_api_keys(username).await?;
    if revoked == 0 {
        bail!("user {username:?} has no API keys");
    }
    tracing::info!(username, revoked, "API keys revoked");
    writeln!(
        std::io::stdout(),
        "revoked {revoked} API key(s) of {username}"
    )?;
    Ok(())
}

/// Prints the link, and only the link, on stdout.
pub async fn portal_link(
    config: &Config,
    username: &str,
    ttl: i64,
    base_url: Option<String>,
) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    let Some(link) = webhookd_api::admin::issue_portal_link(&*store, username, ttl).await? else {
        bail!("user {username:?} not found: create it first with `webhookd users add {username}`");
    };
    let base_url = base_url.unwrap_or_else(|| format!("http://{}", config.listen));
    writeln!(
        std::io::stdout(),
        "{}{}",
        base_url.trim_end_matches('/'),
        link.url
    )?;
    Ok(())
}

/// Prints a fresh key, and only the key, on stdout.
pub fn gen_key() -> anyhow::Result<()> {
    let key = webhookd_core::encryption_key::EncryptionKey::generate();
    writeln!(std::io::stdout(), "{}", key.to_base64())?;
    Ok(())
}

pub async fn rotate_keys(config: &Config, force: bool) -> anyhow::Result<()> {
    let (_, report) = webhookd_store::open_and_reseal(config, force)
        .await
        .with_context(|| format!("cannot reseal the secrets in {}", config.store))?;
    if !report.held_back_by.is_empty() {
        anyhow::bail!(
            "refusing to seal with key {}: running webhookd processes do not hold it and could \
             not open what it seals: {}. Add the key to WEBHOOKD_ENCRYPTION_KEY on every process \
             (after the current one) and restart them first, then put it first \
             (docs/operations.md, key rotation); --force seals anyway",
            report.key_ids.first().map_or("", String::as_str),
            report.held_back_by.join(", ")
        );
    }
    writeln!(
        std::io::stdout(),
        "{} of {} endpoint secret(s) sealed anew with the first key",
        report.resealed,
        report.secrets
    )?;
    Ok(())
}
