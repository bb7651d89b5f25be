//! The `webhookd` binary: parse the command line, load the configuration,
//! set up logging, run the command. Everything else lives in the crates.

mod cli;
mod logging;
mod opening;
mod operator;
mod otel;
mod progress;
mod recover;
mod serve;
mod starting;
mod users;

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use webhookd_core::Config;

use cli::{Cli, Command, EventsCommand, KeysCommand, UsersCommand};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match load_config(&cli) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("webhookd: configuration error: {error:#}");
            return ExitCode::from(2);
        }
    };
    let command = cli.command.unwrap_or(Command::Serve);
    let serving = matches!(command, Command::Serve);
    let opening = if cli.create {
        opening::Opening::Create
    } else {
        opening::Opening::Existing
    };
    // One-shot commands stay quiet unless something goes wrong.
    let default_level = match command {
        Command::Serve => config.log_level.clone(),
        Command::Users { .. }
        | Command::Events { .. }
        | Command::PortalLink { .. }
        | Command::GenKey
        | Command::Keys { .. }
        | Command::Recover { .. } => "warn".to_owned(),
    };
    // Spans are exported by `serve` only (one-shot commands make none).
    let _export = match logging::init(
        cli.log_format.unwrap_or(config.log_format),
        &default_level,
        serving,
    ) {
        Ok(export) => export,
        Err(error) => {
            eprintln!("webhookd: configuration error: {error:#}");
            return ExitCode::from(2);
        }
    };
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
        .and_then(|runtime| {
            runtime.block_on(async {
                match command {
                    Command::Serve => serve::run(config).await,
                    Command::Users { action } => match action {
                        UsersCommand::Add { username } => {
                            users::add(&config, opening, &username).await
                        }
                        UsersCommand::List { json } => users::list(&config, opening, json).await,
                        UsersCommand::Revoke { username } => {
                            users::revoke(&config, opening, &username).await
                        }
                    },
                    Command::Events {
                        action:
                            EventsCommand::Publish {
                                message,
                                amqp_url,
                                queue,
                            },
                    } => users::publish(&config, message, amqp_url, queue).await,
                    Command::GenKey => users::gen_key(),
                    Command::Keys {
                        action: KeysCommand::Rotate { force },
                    } => users::rotate_keys(&config, opening, force).await,
                    Command::PortalLink {
                        username,
                        ttl,
                        base_url,
                    } => users::portal_link(&config, opening, &username, ttl, base_url).await,
                    Command::Recover {
                        username,
                        endpoint_id,
                        since,
                        until,
                    } => {
                        recover::run(&config, opening, &username, &endpoint_id, since, until).await
                    }
                }
            })
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            if serving {
                // Also into the structured log, where operators look first.
                tracing::error!(error = format!("{error:#}"), "webhookd failed");
            }
            eprintln!("webhookd: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The file named by `--config` (if any), then `WEBHOOKD_*` variables.
fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let file = match &cli.config {
        Some(path) => Some((
            path.display().to_string(),
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config file {}", path.display()))?,
        )),
        None => None,
    };
    let env = std::env::vars_os()
        .filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)));
    Ok(Config::load(
        file.as_ref()
            .map(|(name, text)| (name.as_str(), text.as_str())),
        env,
    )?)
}
