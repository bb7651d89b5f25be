//! Logging: tracing to stderr (stdout is for command output such as a new
//! API key), human-readable on a terminal and JSON lines otherwise.

use std::io::IsTerminal as _;

use anyhow::Context as _;
use tracing_subscriber::EnvFilter;
use webhookd_core::LogFormat;

/// `RUST_LOG`, when set, wins over `default_filter` (the `log_level` setting).
pub fn init(format: LogFormat, default_filter: &str) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => {
            // Checked as log_level is: tracing takes a bare word such as
            // `verbose` for a target and would silence every line.
            if !webhookd_core::config::is_log_filter(&directives) {
                anyhow::bail!("RUST_LOG: {directives:?} is not a log filter (e.g. info or webhookd=debug,info)");
            }
            EnvFilter::try_new(&directives).with_context(|| format!("RUST_LOG: {directives:?} is not a log filter"))?
        }
        _ => EnvFilter::try_new(default_filter).with_context(|| {
            format!("log_level: {default_filter:?} is not a log filter (e.g. info or webhookd=debug,info)")
        })?,
    };
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Human => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init();
    } else {
        builder.init();
    }
    Ok(())
}
