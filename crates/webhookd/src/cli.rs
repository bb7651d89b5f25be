//! The command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use webhookd_core::LogFormat;

/// webhookd — a reliable webhook dispatcher.
///
/// Takes "something finished" events from RabbitMQ or HTTP, signs each one
/// with HMAC-SHA256 and POSTs it to every endpoint its owner subscribed,
/// retrying with backoff until the receiver answers 2xx. Users manage their
/// endpoints through a JoggAI v2 compatible API.
///
/// Configuration: an optional TOML file (--config), overridden by WEBHOOKD_*
/// environment variables; see deploy/webhookd.example.toml for every
/// setting. With none set, webhookd listens on 127.0.0.1:8080 and keeps its
/// state in the embedded SQLite file webhookd-data/webhookd.db.
#[derive(Debug, Parser)]
#[command(name = "webhookd", version, max_term_width = 100)]
pub struct Cli {
    /// TOML configuration file; WEBHOOKD_* environment variables override it.
    #[arg(long, short, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Log format: human lines or JSON (default: human on a terminal, JSON
    /// otherwise). Overrides the log_format setting.
    #[arg(long, global = true, value_name = "FORMAT", value_parser = parse_log_format)]
    pub log_format: Option<LogFormat>,

    /// Let a one-shot command (users, portal-link, keys) create the store
    /// when it does not exist; without it they fail naming where they
    /// looked. `serve` always creates it.
    #[arg(long, global = true)]
    pub create: bool,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the dispatcher: the API, ingest and deliveries (the default).
    ///
    /// Stops cleanly on SIGTERM or SIGINT: no new work is taken, work in
    /// flight finishes within shutdown_grace, nothing accepted is lost.
    Serve,
    /// Manage users and their API keys.
    Users {
        #[command(subcommand)]
        action: UsersCommand,
    },
    /// Hand webhookd events the way producers do.
    Events {
        #[command(subcommand)]
        action: EventsCommand,
    },
    /// Print a fresh encryption key (base64 of 32 random bytes) for
    /// WEBHOOKD_ENCRYPTION_KEY.
    GenKey,
    /// Manage the keys that seal endpoint secrets at rest.
    Keys {
        #[command(subcommand)]
        action: KeysCommand,
    },
    /// Print a short-lived sign-in link to USERNAME's portal (SPEC §9).
    ///
    /// The link signs in to that user's endpoints only, until it expires;
    /// hand it to the user instead of an API key. The user must exist
    /// (`webhookd users add`).
    PortalLink {
        /// The user the link signs in as.
        username: String,
        /// Seconds the link signs in for, 1 to 86400.
        #[arg(
            long,
            default_value_t = webhookd_api::admin::DEFAULT_LINK_TTL,
            value_parser = clap::value_parser!(i64).range(1..=webhookd_api::admin::MAX_LINK_TTL)
        )]
        ttl: i64,
        /// Where browsers reach webhookd (default: the public_url setting,
        /// else http://<listen>).
        #[arg(long, value_name = "URL")]
        base_url: Option<String>,
    },
    /// Give every dead delivery of one endpoint whose event came in a
    /// window one more attempt, oldest first (SPEC §8; what
    /// `POST /v2/endpoint/{id}/recover` does), showing progress on a
    /// terminal. A running webhookd sends them.
    Recover {
        /// The endpoint's owner.
        username: String,
        /// The endpoint (`wh_…`).
        endpoint_id: String,
        /// The window's start: unix seconds.
        #[arg(long, value_parser = clap::value_parser!(i64).range(0..=webhookd_core::event::MAX_TIMESTAMP))]
        since: i64,
        /// The window's end, included: unix seconds (default: now).
        #[arg(long, value_parser = clap::value_parser!(i64).range(0..=webhookd_core::event::MAX_TIMESTAMP))]
        until: Option<i64>,
    },
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Publish events to RabbitMQ as a producer would (SPEC §5): persistent
    /// JSON messages to the queue webhookd consumes, each confirmed by the
    /// broker before this returns.
    ///
    /// Example: webhookd events publish '{"event": "generated_video_success",
    /// "username": "johndoe", "data": {"video_id": "v1"}}'
    Publish {
        /// One event message as JSON; `-` (or nothing) reads one message
        /// per line from stdin.
        message: Option<String>,
        /// RabbitMQ to publish to (default: the amqp_url setting).
        #[arg(long, value_name = "URL")]
        amqp_url: Option<String>,
        /// Queue to publish to (default: the amqp_queue setting,
        /// webhook.events).
        #[arg(long, value_name = "NAME")]
        queue: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Seal every stored endpoint secret with the first key of
    /// WEBHOOKD_ENCRYPTION_KEY (what each start also does), so an older key
    /// can then be dropped from the list.
    ///
    /// Refused while a running webhookd does not hold that key (it could not
    /// open what this seals): add the key everywhere first.
    Rotate {
        /// Seal even though running processes do not hold the key.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create an API key for USERNAME and print it (the key alone, on stdout).
    ///
    /// Creates the user if new; a user may hold several keys. The key is
    /// shown only this once: webhookd keeps only its hash.
    Add {
        /// 1-128 characters: letters, digits and . _ @ + -
        username: String,
    },
    /// List users and how many API keys each holds.
    List {
        /// One JSON array of {"username", "api_keys", "created_at"} instead
        /// of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke every API key of USERNAME. Their endpoints keep receiving
    /// deliveries; only API access ends.
    Revoke {
        /// The user whose keys (and portal links) end.
        username: String,
    },
}

fn parse_log_format(text: &str) -> Result<LogFormat, String> {
    match text.parse()? {
        LogFormat::Auto => Err("use human or json".into()),
        format => Ok(format),
    }
}
