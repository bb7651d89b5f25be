//! A webhook receiver for tests: a real HTTP server on a free loopback port
//! that records every request, verifies its signature with the endpoint's
//! secret, and answers as the test tells it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

/// How the receiver answers one request.
#[derive(Debug, Clone)]
pub enum Answer {
    Status(u16),
    /// This status with a `Retry-After` header (seconds).
    StatusRetryAfter(u16, u64),
    /// A redirect elsewhere, which must not be followed.
    Redirect,
    /// Never answers (until the test ends).
    Hang,
    /// 200 after this long.
    Slow(Duration),
    /// This status after this long.
    SlowStatus(Duration, u16),
    /// 500 to the first request of about one delivery in `n` (its
    /// `webhook-id` hashes to 0 modulo `n`; every later request of it, and
    /// every other delivery, 200): a receiver that fails some first
    /// attempts, the same ones on every run.
    FailFirstAttemptOneIn(u64),
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    /// The request's path: endpoints of one receiver can tell themselves
    /// apart by it (`<url>/<anything>`).
    pub path: String,
    pub body: Bytes,
    pub headers: HeaderMap,
    pub at: Instant,
    /// The status it was answered (`None`: never answered, [`Answer::Hang`]).
    pub answered: Option<u16>,
}

#[derive(Debug)]
struct Inner {
    received: Vec<Received>,
    script: VecDeque<Answer>,
    default: Answer,
    /// Requests being answered now, and the most there ever were at once.
    in_flight: usize,
    most_in_flight: usize,
    /// Every `webhook-id` seen, for [`Answer::FailFirstAttemptOneIn`].
    seen: std::collections::HashSet<String>,
}

/// A running receiver.
#[derive(Debug, Clone)]
pub struct Receiver {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

impl Receiver {
    /// Answers `default` to every request.
    pub async fn start(default: Answer) -> Receiver {
        Receiver::scripted(Vec::new(), default).await
    }

    /// Answers `script` in order, then `default`.
    pub async fn scripted(script: Vec<Answer>, default: Answer) -> Receiver {
        let inner = Arc::new(Mutex::new(Inner {
            received: Vec::new(),
            script: script.into(),
            default,
            in_flight: 0,
            most_in_flight: 0,
            seen: std::collections::HashSet::new(),
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let url = format!("http://{}/webhook", listener.local_addr().expect("address"));
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(Arc::clone(&inner));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { url, inner }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn received(&self) -> Vec<Received> {
        self.lock().received.clone()
    }

    /// Answers `answer` to every request from now on.
    pub fn answer_from_now(&self, answer: Answer) {
        let mut inner = self.lock();
        inner.script.clear();
        inner.default = answer;
    }

    pub fn count(&self) -> usize {
        self.lock().received.len()
    }

    /// The most requests this receiver was answering at one moment.
    pub fn most_in_flight(&self) -> usize {
        self.lock().most_in_flight
    }

    /// Waits until at least `n` requests arrived, or `within` passed.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        while self.count() < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.received()
    }
}

async fn receive(
    State(inner): State<Arc<Mutex<Inner>>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let _answering = Answering::begin(&inner);
    let answer = {
        let mut inner = inner.lock().unwrap_or_else(PoisonError::into_inner);
        let default = inner.default.clone();
        let mut answer = inner.script.pop_front().unwrap_or(default);
        if let Answer::FailFirstAttemptOneIn(n) = answer {
            let id = headers
                .get("webhook-id")
                .and_then(|id| id.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let first = inner.seen.insert(id.clone());
            let chosen = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
                (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
            }) % n.max(1)
                == 0;
            answer = Answer::Status(if first && chosen { 500 } else { 200 });
        }
        inner.received.push(Received {
            path: uri.path().to_owned(),
            body,
            headers,
            at: Instant::now(),
            answered: match &answer {
                Answer::Status(code)
                | Answer::StatusRetryAfter(code, _)
                | Answer::SlowStatus(_, code) => Some(*code),
                Answer::Slow(_) => Some(200),
                Answer::Redirect => Some(302),
                Answer::Hang | Answer::FailFirstAttemptOneIn(_) => None,
            },
        });
        answer
    };
    match answer {
        Answer::Status(code) => status(code).into_response(),
        Answer::StatusRetryAfter(code, seconds) => {
            (status(code), [("retry-after", seconds.to_string())]).into_response()
        }
        Answer::Redirect => (
            StatusCode::FOUND,
            [("location", "http://127.0.0.1:9/elsewhere")],
        )
            .into_response(),
        Answer::Hang => {
            std::future::pending::<()>().await;
            unreachable!("pending never resolves")
        }
        Answer::Slow(delay) => {
            tokio::time::sleep(delay).await;
            StatusCode::OK.into_response()
        }
        Answer::SlowStatus(delay, code) => {
            tokio::time::sleep(delay).await;
            status(code).into_response()
        }
        Answer::FailFirstAttemptOneIn(_) => unreachable!("decided above"),
    }
}

/// Counts a request in flight until it is answered or its connection
/// drops (which drops the handler).
struct Answering(Arc<Mutex<Inner>>);

impl Answering {
    fn begin(inner: &Arc<Mutex<Inner>>) -> Answering {
        let mut locked = inner.lock().unwrap_or_else(PoisonError::into_inner);
        locked.in_flight += 1;
        locked.most_in_flight = locked.most_in_flight.max(locked.in_flight);
        Answering(Arc::clone(inner))
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .in_flight -= 1;
    }
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).expect("tests use valid status codes")
}

/// Checks a received request the way the JoggAI snippets do.
pub fn signature_is_valid(received: &Received, secret: &str) -> bool {
    received
        .headers
        .get("x-webhook-signature")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|signature| webhookd_core::signer::verify(secret, &received.body, signature))
}
