//! Logging: tracing to stderr (stdout is for command output such as a new
//! API key), human-readable on a terminal and JSON lines otherwise.

use std::io::IsTerminal as _;

use anyhow::Context as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};
use webhookd_core::{LogFormat, telemetry};

use crate::otel;

/// `RUST_LOG`, when set, wins over `default_filter` (the `log_level` setting).
/// With `export`, also sets up trace export when the `OTEL_*` variables ask
/// for it (`otel.rs`); the returned guard flushes it when dropped.
pub fn init(
    format: LogFormat,
    default_filter: &str,
    export: bool,
) -> anyhow::Result<Option<otel::Export>> {
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
    // The exported spans are not log lines: without an exporter no layer
    // wants them and they are never built.
    let filter = filter.add_directive(
        format!("{}=off", telemetry::SPAN_TARGET)
            .parse()
            .context("the span target is a filter directive")?,
    );
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Human => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let lines = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let lines = if json {
        lines
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_filter(filter)
            .boxed()
    } else {
        lines.with_filter(filter).boxed()
    };
    let (export_layer, export) = match export.then(otel::from_env).transpose()?.flatten() {
        Some((layer, export)) => (Some(layer), Some(export)),
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(lines)
        .with(export_layer)
        .try_init()
        .context("a logger was already set up")?;
    Ok(export)
}
