//! The campaign's receivers: one HTTP server, a path per endpoint slot and
//! URL version (`/e/{slot}/{version}`), each answering as its seeded
//! temper says, and keeping the history the checker reads — every request
//! as it arrived and what it was answered, whether its signature verified
//! and under which secret, and how many requests that endpoint had in
//! flight at once.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

use crate::world::World;

/// How an endpoint's receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Temper {
    /// 200 at once.
    Healthy,
    /// 500 to about a third of the requests, else 200.
    Flaky,
    /// 200 after a while (up to 600 ms).
    Slow,
    /// 429 with `Retry-After: 1` to a quarter of the requests, else 200.
    Throttling,
    /// One request in five is answered only after the attempt deadline
    /// (1.5 s): webhookd has given up on it by then.
    Hanging,
}

/// One request a receiver saw.
#[derive(Debug, Clone)]
pub struct Request {
    pub arrived: Instant,
    /// The URL version it was sent to.
    pub version: usize,
    pub event_id: String,
    /// Indexes of the endpoint's secrets its signatures verify under
    /// (empty: none does).
    pub signed_with: Vec<usize>,
    /// What it was answered and when; `None` while in flight, when
    /// webhookd went away before the answer, or when the answer came after
    /// the attempt deadline (webhookd counts that attempt failed).
    pub answered: Option<(u16, Instant)>,
    /// An answer given after the attempt deadline, and when. webhookd
    /// counts such an attempt failed — unless it was stopped or starved
    /// past the answer: then it reads the answer as any other (an answer
    /// read is an answer), and only the store can say which it was.
    pub late: Option<(u16, Instant)>,
}

impl Request {
    pub fn succeeded(&self) -> bool {
        self.answered
            .is_some_and(|(status, _)| (200..300).contains(&status))
    }

    /// Answered 2xx after the deadline: delivered if webhookd read it.
    pub fn succeeded_late(&self) -> bool {
        self.late
            .is_some_and(|(status, _)| (200..300).contains(&status))
    }
}

#[derive(Debug, Default)]
struct Slot {
    requests: Vec<Request>,
    in_flight: usize,
    most_in_flight: usize,
}

#[derive(Debug)]
struct Shared {
    slots: Vec<Mutex<Slot>>,
    world: World,
    random: Mutex<StdRng>,
}

/// The receivers of every endpoint slot.
#[derive(Debug, Clone)]
pub struct Receivers {
    shared: Arc<Shared>,
    base: String,
}

impl Receivers {
    pub async fn start(world: World, seed: u64) -> anyhow::Result<Receivers> {
        let slots = world.lock().len();
        let shared = Arc::new(Shared {
            slots: (0..slots).map(|_| Mutex::default()).collect(),
            world,
            random: Mutex::new(StdRng::seed_from_u64(seed)),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let app = axum::Router::new()
            .route("/e/{slot}/{version}", axum::routing::post(receive))
            .with_state(Arc::clone(&shared));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Receivers { shared, base })
    }

    /// The URL of slot `n` at `version`.
    pub fn url(&self, n: usize, version: usize) -> String {
        format!("{}/e/{n}/{version}", self.base)
    }

    /// Every request slot `n` saw, in order of arrival.
    pub fn requests(&self, n: usize) -> Vec<Request> {
        self.slot(n).requests.clone()
    }

    /// The most requests slot `n` had in flight at once.
    pub fn most_in_flight(&self, n: usize) -> usize {
        self.slot(n).most_in_flight
    }

    fn slot(&self, n: usize) -> std::sync::MutexGuard<'_, Slot> {
        self.shared.slots[n]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

async fn receive(
    State(shared): State<Arc<Shared>>,
    Path((n, version)): Path<(usize, usize)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(slot) = shared.slots.get(n) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let (temper, secrets) = {
        let world = shared.world.lock();
        let endpoint = &world[n];
        let secrets: Vec<String> = endpoint
            .secrets
            .iter()
            .map(|secret| secret.value.clone())
            .collect();
        (endpoint.temper, secrets)
    };
    let signed_with = signed_with(&secrets, &headers, &body);
    let event_id = headers
        .get("x-webhook-id")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let index = {
        let mut slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
        slot.in_flight += 1;
        slot.most_in_flight = slot.most_in_flight.max(slot.in_flight);
        slot.requests.push(Request {
            arrived: Instant::now(),
            version,
            event_id,
            signed_with,
            answered: None,
            late: None,
        });
        slot.requests.len() - 1
    };
    // Counted out when answered — or when webhookd goes away mid-request
    // (the handler is dropped then).
    let answering = Answering(slot);
    let (status, delay, late) = {
        let mut random = shared.random.lock().unwrap_or_else(PoisonError::into_inner);
        match temper {
            Temper::Flaky if random.random_bool(0.33) => (500, Duration::ZERO, false),
            Temper::Throttling if random.random_bool(0.25) => (429, Duration::ZERO, false),
            Temper::Hanging if random.random_bool(0.2) => (200, Duration::from_millis(1_500), true),
            Temper::Slow => (
                200,
                Duration::from_millis(random.random_range(50..600)),
                false,
            ),
            _ => (200, Duration::ZERO, false),
        }
    };
    if late {
        // webhookd gives up a second after sending; counted out a little
        // before that, so its next attempt never looks concurrent.
        tokio::time::sleep(Duration::from_millis(900)).await;
        drop(answering);
        tokio::time::sleep(delay.saturating_sub(Duration::from_millis(900))).await;
        slot.lock().unwrap_or_else(PoisonError::into_inner).requests[index].late =
            Some((status, Instant::now()));
    } else {
        tokio::time::sleep(delay).await;
        slot.lock().unwrap_or_else(PoisonError::into_inner).requests[index].answered =
            Some((status, Instant::now()));
        drop(answering);
    }
    let mut response = StatusCode::from_u16(status)
        .unwrap_or(StatusCode::OK)
        .into_response();
    if status == 429 {
        response
            .headers_mut()
            .insert("retry-after", HeaderValue::from_static("1"));
    }
    response
}

/// Which of `secrets` the request's `X-Webhook-Signature` or
/// `X-Webhook-Signature-Next` verifies under.
fn signed_with(secrets: &[String], headers: &HeaderMap, body: &[u8]) -> Vec<usize> {
    let signatures: Vec<&str> = ["x-webhook-signature", "x-webhook-signature-next"]
        .iter()
        .filter_map(|name| headers.get(*name)?.to_str().ok())
        .collect();
    secrets
        .iter()
        .enumerate()
        .filter(|(_, secret)| {
            signatures
                .iter()
                .any(|signature| webhookd_core::signer::verify(secret, body, signature))
        })
        .map(|(index, _)| index)
        .collect()
}

/// One request in flight at a slot, until dropped.
struct Answering<'a>(&'a Mutex<Slot>);

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .in_flight -= 1;
    }
}
