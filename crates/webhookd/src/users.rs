//! The one-shot commands: `webhookd users add|list|revoke`,
//! `webhookd portal-link`, `webhookd events publish`, `webhookd gen-key` and
//! `webhookd keys rotate`.

use std::io::Write as _;

use anyhow::{Context as _, bail};
use webhookd_core::Config;
use webhookd_core::event::is_valid_username;
use webhookd_core::ids::{hash_api_key, new_api_key};

use crate::opening::{Opening, check_created, open_store, refuse_missing_file};
use crate::progress::Meter;

/// Prints the new key, and only the key, on stdout.
pub async fn add(config: &Config, opening: Opening, username: &str) -> anyhow::Result<()> {
    if !is_valid_username(username) {
        bail!(
            "{username:?} is not a valid username: use 1-128 characters of letters, digits and . _ @ + -"
        );
    }
    let store = open_store(config, opening).await?;
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

pub async fn list(config: &Config, opening: Opening, json: bool) -> anyhow::Result<()> {
    let users = open_store(config, opening).await?.list_users().await?;
    let mut out = std::io::stdout().lock();
    if json {
        let users: Vec<_> = users
            .iter()
            .map(|user| {
                serde_json::json!({
                    "username": user.username,
                    "api_keys": user.api_keys,
                    "created_at": user.created_at,
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::Value::Array(users))?;
        return Ok(());
    }
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

pub async fn revoke(config: &Config, opening: Opening, username: &str) -> anyhow::Result<()> {
    let revoked = open_store(config, opening)
        .await?
        .revoke_api_keys(username)
        .await?;
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
    opening: Opening,
    username: &str,
    ttl: i64,
    base_url: Option<String>,
) -> anyhow::Result<()> {
    let store = open_store(config, opening).await?;
    let Some(link) = webhookd_api::admin::issue_portal_link(&*store, username, ttl).await? else {
        bail!("user {username:?} not found: create it first with `webhookd users add {username}`");
    };
    let base_url = base_url
        .or_else(|| config.public_url.clone())
        .unwrap_or_else(|| listen_url(config));
    writeln!(
        std::io::stdout(),
        "{}{}",
        base_url.trim_end_matches('/'),
        link.url
    )?;
    Ok(())
}

/// `http://<listen>`, for links when no public URL is set. An address that
/// means "every interface" (0.0.0.0, ::) is no address a browser can use:
/// this machine's loopback stands in, with a word on stderr.
fn listen_url(config: &Config) -> String {
    let mut listen = config.listen;
    if listen.ip().is_unspecified() {
        eprintln!(
            "webhookd: listening on every interface ({listen}); the link uses this machine's \
             loopback address: set WEBHOOKD_PUBLIC_URL (or pass --base-url) to the address \
             browsers reach webhookd at"
        );
        listen.set_ip(if listen.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    format!("http://{listen}")
}

/// `webhookd events publish`: checks each message's shape here (a typo is
/// named at once, not found later in `.dead`), then publishes them all.
pub async fn publish(
    config: &Config,
    message: Option<String>,
    amqp_url: Option<String>,
    queue: Option<String>,
) -> anyhow::Result<()> {
    let Some(url) = amqp_url.or_else(|| config.amqp_url.clone()) else {
        bail!("no RabbitMQ to publish to: set WEBHOOKD_AMQP_URL or pass --amqp-url");
    };
    let queue = queue.unwrap_or_else(|| config.amqp_queue.clone());
    let messages: Vec<String> = match message.as_deref() {
        Some(message) if message != "-" => vec![message.to_owned()],
        _ => std::io::stdin()
            .lines()
            .filter(|line| line.as_ref().map_or(true, |line| !line.trim().is_empty()))
            .collect::<Result<_, _>>()
            .context("reading messages from stdin")?,
    };
    if messages.is_empty() {
        bail!("no message to publish: give one as an argument, or one per line on stdin");
    }
    for (number, message) in messages.iter().enumerate() {
        webhookd_core::Event::parse(message.as_bytes(), webhookd_core::time::unix_seconds())
            .map_err(|rejection| anyhow::anyhow!("message {}: {rejection}", number + 1))?;
    }
    let bytes: Vec<Vec<u8>> = messages.into_iter().map(String::into_bytes).collect();
    webhookd_ingest::publish::publish(&url, &queue, &bytes).await?;
    writeln!(
        std::io::stdout(),
        "published {} event(s) to {queue}",
        bytes.len()
    )?;
    Ok(())
}

/// Prints a fresh key, and only the key, on stdout.
pub fn gen_key() -> anyhow::Result<()> {
    let key = webhookd_core::encryption_key::EncryptionKey::generate();
    writeln!(std::io::stdout(), "{}", key.to_base64())?;
    Ok(())
}

pub async fn rotate_keys(config: &Config, opening: Opening, force: bool) -> anyhow::Result<()> {
    if opening == Opening::Existing {
        refuse_missing_file(config)?;
    }
    let meter = Meter::on_stderr("users' endpoint secrets sealed");
    let resealed =
        webhookd_store::open_and_reseal(config, force, &|progress| meter.show(progress)).await;
    meter.finish();
    let (store, report) =
        resealed.with_context(|| format!("cannot reseal the secrets in {}", config.store))?;
    check_created(config, &*store, opening).await?;
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
