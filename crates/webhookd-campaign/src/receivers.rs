//! The campaign's receivers: one HTTP server, one path per endpoint, each
//! answering as its seeded temper says, and keeping the history the
//! checker reads — every request, its event, its answer, and how many
//! requests that endpoint had in flight at once.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

/// How an endpoint's receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Temper {
    /// 200 at once.
    Healthy,
    /// 500 to about a third of the requests, else 200.
    Flaky,
    /// 200 after a while (up to 600 ms).
    Slow,
}

/// One request an endpoint's receiver saw.
#[derive(Debug, Clone)]
pub struct Request {
    pub at: Instant,
    pub event_id: String,
    /// What it answered.
    pub status: u16,
}

#[derive(Debug, Default)]
struct Endpoint {
    temper: Option<Temper>,
    requests: Vec<Request>,
    in_flight: usize,
    most_in_flight: usize,
}

#[derive(Debug)]
struct Shared {
    endpoints: Vec<Mutex<Endpoint>>,
    random: Mutex<StdRng>,
}

/// The receivers of every endpoint.
#[derive(Debug, Clone)]
pub struct Receivers {
    shared: Arc<Shared>,
    base: String,
}

impl Receivers {
    pub async fn start(tempers: &[Temper], seed: u64) -> anyhow::Result<Receivers> {
        let shared = Arc::new(Shared {
            endpoints: tempers
                .iter()
                .map(|temper| {
                    Mutex::new(Endpoint {
                        temper: Some(*temper),
                        ..Endpoint::default()
                    })
                })
                .collect(),
            random: Mutex::new(StdRng::seed_from_u64(seed)),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let app = axum::Router::new()
            .route("/e/{n}", axum::routing::post(receive))
            .with_state(Arc::clone(&shared));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Receivers { shared, base })
    }

    /// The URL of endpoint `n`.
    pub fn url(&self, n: usize) -> String {
        format!("{}/e/{n}", self.base)
    }

    /// Every request endpoint `n` saw, in order.
    pub fn requests(&self, n: usize) -> Vec<Request> {
        self.shared.endpoints[n]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .requests
            .clone()
    }

    /// The most requests endpoint `n` had in flight at once.
    pub fn most_in_flight(&self, n: usize) -> usize {
        self.shared.endpoints[n]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .most_in_flight
    }
}

async fn receive(
    State(shared): State<Arc<Shared>>,
    Path(n): Path<usize>,
    headers: HeaderMap,
) -> StatusCode {
    let Some(endpoint) = shared.endpoints.get(n) else {
        return StatusCode::NOT_FOUND;
    };
    let temper = {
        let mut endpoint = endpoint.lock().unwrap_or_else(PoisonError::into_inner);
        endpoint.in_flight += 1;
        endpoint.most_in_flight = endpoint.most_in_flight.max(endpoint.in_flight);
        endpoint.temper.unwrap_or(Temper::Healthy)
    };
    // Counted out when answered — or when webhookd goes away mid-request
    // (the handler is dropped then).
    let _answering = Answering(endpoint);
    let (status, delay) = {
        let mut random = shared.random.lock().unwrap_or_else(PoisonError::into_inner);
        match temper {
            Temper::Flaky if random.random_bool(0.33) => (500, Duration::ZERO),
            Temper::Healthy | Temper::Flaky => (200, Duration::ZERO),
            Temper::Slow => (200, Duration::from_millis(random.random_range(50..600))),
        }
    };
    tokio::time::sleep(delay).await;
    let event_id = headers
        .get("x-webhook-id")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut endpoint = endpoint.lock().unwrap_or_else(PoisonError::into_inner);
    endpoint.requests.push(Request {
        at: Instant::now(),
        event_id,
        status,
    });
    StatusCode::from_u16(status).unwrap_or(StatusCode::OK)
}

/// One request in flight at an endpoint, until dropped.
struct Answering<'a>(&'a Mutex<Endpoint>);

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .in_flight -= 1;
    }
}
