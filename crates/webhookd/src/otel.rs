//! OpenTelemetry trace export (SPEC §15), off unless configured: with
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`)
//! set, the spans webhookd makes (target [`telemetry::SPAN_TARGET`]: each
//! delivery attempt, each ingest accept, the store calls within them) are
//! exported over OTLP/HTTP by the SDK's batch processor. These are the
//! standard `OTEL_*` variables — the one exception to the `WEBHOOKD_*`
//! rule (docs/operations.md, "Tracing").

use anyhow::{Context as _, bail};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;
use webhookd_core::telemetry;

const SAMPLERS: &str = "always_on, always_off, traceidratio, parentbased_always_on, \
     parentbased_always_off, parentbased_traceidratio";

/// The exporter while it runs; dropping it flushes what is buffered.
pub struct Export {
    provider: SdkTracerProvider,
}

impl Drop for Export {
    fn drop(&mut self) {
        if let Err(error) = self.provider.shutdown() {
            eprintln!("webhookd: flushing the last spans failed: {error}");
        }
    }
}

/// The layer that hands webhookd's spans to the exporter.
pub type ExportLayer<S> = Box<dyn Layer<S> + Send + Sync>;

fn var(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .filter(|value| !value.trim().is_empty())
}

/// The export layer, when the environment asks for one; an error names the
/// variable at fault.
pub fn from_env<S>() -> anyhow::Result<Option<(ExportLayer<S>, Export)>>
where
    S: Subscriber + for<'span> LookupSpan<'span> + Send + Sync,
{
    if var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
        && var("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
    {
        return Ok(None);
    }
    if var("OTEL_SDK_DISABLED").is_some_and(|value| value.eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    let (sampler, parent_based, ratio) = sampler()?;
    // Spans that will not be exported are not built (webhookd-delivery's
    // `trace.rs` decides as this sampler would).
    webhookd_delivery::configure_sampling(parent_based, ratio);
    // The SDK reads the endpoint, headers and timeout from the same
    // variables; the protocol is checked here, for a clear refusal of gRPC.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(protocol()?)
        .build()
        .context("OTEL_EXPORTER_OTLP_ENDPOINT: the OTLP exporter could not be set up")?;
    let mut resource = Resource::builder();
    if var("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("webhookd");
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(sampler)
        .with_resource(resource.build())
        .build();
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("webhookd"))
        // What an operator reads on a span: its fields, not where in the
        // code or on which thread it ran.
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_filter(tracing_subscriber::filter::filter_fn(|metadata| {
            metadata.target() == telemetry::SPAN_TARGET
        }))
        .boxed();
    Ok(Some((layer, Export { provider })))
}

/// `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` / `OTEL_EXPORTER_OTLP_PROTOCOL`.
fn protocol() -> anyhow::Result<Protocol> {
    let (name, value) = match var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") {
        Some(value) => ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", value),
        None => match var("OTEL_EXPORTER_OTLP_PROTOCOL") {
            Some(value) => ("OTEL_EXPORTER_OTLP_PROTOCOL", value),
            None => return Ok(Protocol::HttpBinary),
        },
    };
    match value.trim() {
        "http/protobuf" => Ok(Protocol::HttpBinary),
        "http/json" => Ok(Protocol::HttpJson),
        other => bail!(
            "{name}: {other:?} is not supported; webhookd exports OTLP over HTTP: \
             http/protobuf (the default) or http/json, to the collector's HTTP port (4318)"
        ),
    }
}

/// `OTEL_TRACES_SAMPLER` (default `parentbased_always_on`) and
/// `OTEL_TRACES_SAMPLER_ARG`: the sampler, whether a producer's decision
/// counts, and the share of other traces sampled.
fn sampler() -> anyhow::Result<(Sampler, bool, f64)> {
    let ratio = || -> anyhow::Result<f64> {
        let Some(arg) = var("OTEL_TRACES_SAMPLER_ARG") else {
            return Ok(1.0);
        };
        match arg.trim().parse::<f64>() {
            Ok(ratio) if (0.0..=1.0).contains(&ratio) => Ok(ratio),
            _ => bail!("OTEL_TRACES_SAMPLER_ARG: {arg:?} is not a ratio from 0 to 1"),
        }
    };
    let name = var("OTEL_TRACES_SAMPLER").unwrap_or_else(|| "parentbased_always_on".into());
    Ok(match name.trim() {
        "always_on" => (Sampler::AlwaysOn, false, 1.0),
        "always_off" => (Sampler::AlwaysOff, false, 0.0),
        "traceidratio" => {
            let ratio = ratio()?;
            (Sampler::TraceIdRatioBased(ratio), false, ratio)
        }
        "parentbased_always_on" => (Sampler::ParentBased(Box::new(Sampler::AlwaysOn)), true, 1.0),
        "parentbased_always_off" => (
            Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
            true,
            0.0,
        ),
        "parentbased_traceidratio" => {
            let ratio = ratio()?;
            (
                Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio))),
                true,
                ratio,
            )
        }
        other => bail!("OTEL_TRACES_SAMPLER: {other:?} is not one of {SAMPLERS}"),
    })
}
