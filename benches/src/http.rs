//! The raw HTTP ceiling: signed POSTs into the receiver, with the same client
//! stack webhookd uses (hyper-util's pooled client, keep-alive), and nothing
//! else in between.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// POSTs events `0..count` to `url`, signed with `secret`, from
/// `concurrency` tasks. Returns requests per second.
pub async fn post_rate(
    url: &str,
    secret: &str,
    count: u64,
    concurrency: usize,
) -> anyhow::Result<f64> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let uri: hyper::Uri = url.parse()?;
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, uri, next, secret) = (
            client.clone(),
            uri.clone(),
            Arc::clone(&next),
            secret.to_owned(),
        );
        tasks.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count {
                    return anyhow::Ok(());
                }
                let body = format!(
                    r#"{{"event_id":"evt_{n}","event":"generated_video_success","timestamp":0,"data":{{"n":{n}}}}}"#
                );
                let signature = webhookd_core::signer::sign(&secret, body.as_bytes());
                let request = hyper::Request::post(uri.clone())
                    .header("content-type", "application/json")
                    .header("x-webhook-signature", signature)
                    .body(Full::new(Bytes::from(body)))?;
                let response = client.request(request).await?;
                anyhow::ensure!(
                    response.status().is_success(),
                    "the receiver answered {}",
                    response.status()
                );
                response.into_body().collect().await?;
            }
        });
    }
    while let Some(task) = tasks.join_next().await {
        task??;
    }
    Ok(crate::broker::per_second(count, started.elapsed()))
}
