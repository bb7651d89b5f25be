//! The receiver every scenario delivers to: a lean hyper server that checks
//! each signature with the endpoint's secret (as a real receiver must), counts
//! distinct and duplicate deliveries, and keeps the publish→receipt latency
//! the events carry in `data.sent_at_us`.
//!
//! Paths: `/e/<n>` is endpoint `n` and answers 200; `/fail` answers 500;
//! `/hang` never answers.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;

/// What a receiver saw.
#[derive(Debug)]
struct Tally {
    /// `(endpoint, event number)` of every delivery seen at least once.
    seen: HashSet<(usize, u64)>,
    /// Publish→receipt of each first receipt that carried a publish time, µs.
    latencies_us: Vec<u64>,
    /// When the last new delivery arrived.
    last_new_at: Option<Instant>,
    /// New deliveries per endpoint.
    per_endpoint: Vec<usize>,
}

#[derive(Debug)]
struct Shared {
    secrets: Vec<String>,
    tally: Mutex<Tally>,
    duplicates: AtomicUsize,
    bad_signatures: AtomicUsize,
    failed_answers: AtomicUsize,
}

/// A running receiver; it stops with the runtime that started it.
#[derive(Debug, Clone)]
pub struct Receiver {
    pub address: SocketAddr,
    shared: Arc<Shared>,
}

/// The counts at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counts {
    /// Deliveries seen at least once, by (endpoint, event).
    pub distinct: usize,
    /// Repeats of a delivery already seen.
    pub duplicates: usize,
    /// Requests whose signature did not verify, or whose body was not a
    /// delivered event.
    pub bad_signatures: usize,
    /// Requests answered 500 on `/fail`.
    pub failed_answers: usize,
}

impl Receiver {
    /// Starts a receiver for endpoints `0..secrets.len()`, endpoint `n`
    /// signing with `secrets[n]`.
    pub async fn start(secrets: Vec<String>) -> anyhow::Result<Receiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let shared = Arc::new(Shared {
            tally: Mutex::new(Tally {
                seen: HashSet::new(),
                latencies_us: Vec::new(),
                last_new_at: None,
                per_endpoint: vec![0; secrets.len()],
            }),
            secrets,
            duplicates: AtomicUsize::new(0),
            bad_signatures: AtomicUsize::new(0),
            failed_answers: AtomicUsize::new(0),
        });
        let accepting = Arc::clone(&shared);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let shared = Arc::clone(&accepting);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        receive(Arc::clone(&shared), request)
                    });
                    // A connection ending (the sender timing out) is normal.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Receiver { address, shared })
    }

    /// The URL of endpoint `n`.
    pub fn endpoint_url(&self, n: usize) -> String {
        format!("http://{}/e/{n}", self.address)
    }

    pub fn failing_url(&self) -> String {
        format!("http://{}/fail", self.address)
    }

    pub fn hanging_url(&self) -> String {
        format!("http://{}/hang", self.address)
    }

    fn tally(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.shared
            .tally
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub fn counts(&self) -> Counts {
        Counts {
            distinct: self.tally().seen.len(),
            duplicates: self.shared.duplicates.load(Ordering::Relaxed),
            bad_signatures: self.shared.bad_signatures.load(Ordering::Relaxed),
            failed_answers: self.shared.failed_answers.load(Ordering::Relaxed),
        }
    }

    /// New deliveries endpoint `n` got.
    pub fn distinct_for(&self, endpoint: usize) -> usize {
        self.tally().per_endpoint[endpoint]
    }

    /// When the last new delivery arrived.
    pub fn last_new_at(&self) -> Option<Instant> {
        self.tally().last_new_at
    }

    /// Publish→receipt latencies of first receipts, µs, sorted.
    pub fn latencies_us(&self) -> Vec<u64> {
        let mut latencies = self.tally().latencies_us.clone();
        latencies.sort_unstable();
        latencies
    }

    /// Waits until `done` holds or nothing new arrived for `quiet`. True if
    /// `done` held.
    pub async fn wait_until(&self, done: impl Fn(&Receiver) -> bool, quiet: Duration) -> bool {
        let mut last_progress = Instant::now();
        let mut last_counts = self.counts();
        loop {
            if done(self) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
            let counts = self.counts();
            if counts == last_counts {
                if last_progress.elapsed() > quiet {
                    return false;
                }
            } else {
                last_counts = counts;
                last_progress = Instant::now();
            }
        }
    }
}

/// The fields of the delivered body (SPEC §3) the receiver reads.
#[derive(Deserialize)]
struct Delivered<'a> {
    event_id: &'a str,
    data: Data,
}

#[derive(Deserialize)]
struct Data {
    sent_at_us: Option<u64>,
}

async fn receive(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let path = request.uri().path().to_owned();
    if path == "/hang" {
        std::future::pending::<()>().await;
    }
    let signature = request
        .headers()
        .get("x-webhook-signature")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let body = request.into_body().collect().await?.to_bytes();
    if path == "/fail" {
        shared.failed_answers.fetch_add(1, Ordering::Relaxed);
        return Ok(answer(StatusCode::INTERNAL_SERVER_ERROR));
    }
    let endpoint = path
        .strip_prefix("/e/")
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|n| *n < shared.secrets.len());
    let Some(endpoint) = endpoint else {
        return Ok(answer(StatusCode::NOT_FOUND));
    };
    let signed = signature.is_some_and(|signature| {
        webhookd_core::signer::verify(&shared.secrets[endpoint], &body, &signature)
    });
    let delivered = serde_json::from_slice::<Delivered>(&body).ok();
    let number = delivered
        .as_ref()
        .and_then(|d| d.event_id.strip_prefix("evt_"))
        .and_then(|n| n.parse::<u64>().ok());
    let (true, Some(delivered), Some(number)) = (signed, delivered, number) else {
        shared.bad_signatures.fetch_add(1, Ordering::Relaxed);
        return Ok(answer(StatusCode::BAD_REQUEST));
    };
    let now_us = crate::unix_micros();
    let mut tally = shared.tally.lock().unwrap_or_else(PoisonError::into_inner);
    if tally.seen.insert((endpoint, number)) {
        tally.per_endpoint[endpoint] += 1;
        tally.last_new_at = Some(Instant::now());
        if let Some(sent_at) = delivered.data.sent_at_us {
            tally.latencies_us.push(now_us.saturating_sub(sent_at));
        }
    } else {
        shared.duplicates.fetch_add(1, Ordering::Relaxed);
    }
    Ok(answer(StatusCode::OK))
}

fn answer(status: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}
