//! The HTTP listener, safe to expose (SPEC §7): a cap on open connections,
//! a deadline for each request head, an idle limit for keep-alive
//! connections, request bodies that must keep moving, a bound on head size,
//! and the JSON envelope on the errors hyper itself answers (400, 414, 431).
//!
//! axum's own `serve` has none of these limits, so connections are served
//! here with hyper directly: one task per connection, holding a permit of
//! the connection cap, watched by a deadline that follows what the
//! connection is doing.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;
use webhookd_core::telemetry::ListenerRefusal;

mod clients;
mod framing;

/// What the listener allows a client.
#[derive(Debug, Clone, Copy)]
pub struct ListenerLimits {
    /// Connections held open at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// From a request's first byte to its last header byte.
    pub head_timeout: Duration,
    /// A keep-alive connection with no request, or a connection making no
    /// progress at all, is closed after this.
    pub idle_timeout: Duration,
    /// Longest gap between two pieces of a request body.
    pub body_gap: Duration,
    /// Longest a whole request body may take.
    pub body_timeout: Duration,
    /// Largest request head (request line and headers); more is a 431.
    pub max_head_bytes: usize,
    /// Connections one client address may hold (requests in flight, for
    /// a client behind a trusted proxy).
    pub max_connections_per_ip: usize,
}

impl ListenerLimits {
    /// SPEC §7's values, with `max_connections` from the configuration.
    pub fn new(max_connections: usize) -> Self {
        ListenerLimits {
            max_connections,
            head_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_gap: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_head_bytes: 16 * 1024,
            max_connections_per_ip: 256,
        }
    }
}

/// Connections the kernel completes and queues before webhookd accepts
/// them (capped by `net.core.somaxconn`). std's 128 drops the SYNs of a
/// burst, and each dropped one costs its client a second.
const LISTEN_BACKLOG: u32 = 4096;

/// A listening socket on `address` with a backlog for bursts.
pub fn bind(address: std::net::SocketAddr) -> io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Wait before accepting again after `accept` failed (out of file
/// descriptors, say): the failure would otherwise spin.
const ACCEPT_ERROR_DELAY: Duration = Duration::from_millis(100);

/// Serves `router` on `listener` until `shutdown` is cancelled, then lets
/// the requests in progress finish. Peers in `trusted_proxies` are load
/// balancers: their connections are not capped per address, their
/// requests are, by the client `X-Forwarded-For` names.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ListenerLimits,
    trusted_proxies: Vec<ipnet::IpNet>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let clients = clients::Clients::new(limits.max_connections_per_ip, trusted_proxies);
    let connections = TaskTracker::new();
    loop {
        // Near the cap, the idlest keep-alive connection makes room: an
        // idle connection must not keep out one with a request to make.
        if permits.available_permits() <= limits.max_connections / 16 {
            clients.evict_idlest();
        }
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => permit,
            () = shutdown.cancelled() => break,
        };
        let Ok(permit) = permit else { break };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "cannot accept a connection; retrying");
                tokio::time::sleep(ACCEPT_ERROR_DELAY).await;
                continue;
            }
        };
        let peer = peer.ip().to_canonical();
        let proxied = clients.is_trusted(peer);
        let held = if proxied {
            None
        } else if let Some(held) = clients.hold(peer) {
            Some(held)
        } else {
            // Answered without a task or a wait: what fits the socket's
            // buffer now (all of it: a few hundred bytes), then closed.
            let _ = stream.try_write(&clients::too_many_answer(
                peer,
                limits.max_connections_per_ip,
            ));
            clients.refused(ListenerRefusal::PerIp, peer);
            continue;
        };
        let _ = stream.set_nodelay(true);
        connections.spawn(serve_connection(
            stream,
            router.clone(),
            Connection {
                limits,
                clients: Arc::clone(&clients),
                proxied,
                _held: held,
                _permit: permit,
            },
            shutdown.clone(),
        ));
    }
    connections.close();
    connections.wait().await;
    Ok(())
}

/// What a connection holds while it is open.
struct Connection {
    limits: ListenerLimits,
    clients: Arc<clients::Clients>,
    /// From a trusted proxy: requests are held per forwarded client.
    proxied: bool,
    /// Its place among its address's connections (not behind a proxy).
    _held: Option<clients::Held>,
    /// Its place under `max_connections`.
    _permit: OwnedSemaphorePermit,
}

async fn serve_connection(
    stream: TcpStream,
    router: Router,
    connection: Connection,
    shutdown: CancellationToken,
) {
    let limits = connection.limits;
    let activity = Arc::new(Activity::new());
    let close = CancellationToken::new();
    let _registered = connection
        .clients
        .register(Arc::clone(&activity), close.clone());
    let service = {
        let activity = Arc::clone(&activity);
        let (clients, proxied) = (Arc::clone(&connection.clients), connection.proxied);
        hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            activity.request_started();
            // Behind a trusted proxy, the forwarded client's share.
            let client = proxied
                .then(|| clients.forwarded_client(request.headers()))
                .flatten();
            let held = client.map(|client| (client, clients.hold(client)));
            let request = request.map(|body| {
                axum::body::Body::new(MovingBody::new(body, limits.body_gap, limits.body_timeout))
            });
            let response = router.clone().oneshot(request);
            let (activity, clients) = (Arc::clone(&activity), Arc::clone(&clients));
            async move {
                if let Some((client, None)) = held {
                    clients.refused(ListenerRefusal::PerIp, client);
                    activity.touch();
                    return Ok(too_many_requests(client, limits.max_connections_per_ip));
                }
                let response = response.await;
                activity.touch();
                response
            }
        })
    };
    let io = TokioIo::new(Watched {
        stream,
        activity: Arc::clone(&activity),
        replacement: None,
        framing: framing::Framing::default(),
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .keep_alive(true)
        // hyper's own head timer would also close idle keep-alives at 10 s;
        // the watchdog below tells the two apart.
        .header_read_timeout(None)
        .max_buf_size(limits.max_head_bytes.max(8192));
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let mut draining = false;
    loop {
        tokio::select! {
            _ = connection.as_mut() => return,
            () = activity.expired(&limits) => return,
            () = close.cancelled() => return,
            () = shutdown.cancelled(), if !draining => {
                connection.as_mut().graceful_shutdown();
                draining = true;
            }
        }
    }
}

/// What a connection is doing, for its deadlines.
#[derive(Debug)]
struct Activity {
    opened: Instant,
    /// Milliseconds since `opened` of the last byte read or written.
    last_progress: AtomicU64,
    /// Milliseconds since `opened` (plus one) of the first byte of a request
    /// head being read; 0 while none is.
    head_started: AtomicU64,
    /// Requests handed to the router whose response head is not written.
    responses_owed: AtomicUsize,
}

impl Activity {
    /// A new connection owes its first head within the head timeout.
    fn new() -> Self {
        Activity {
            opened: Instant::now(),
            last_progress: AtomicU64::new(0),
            head_started: AtomicU64::new(1),
            responses_owed: AtomicUsize::new(0),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn touch(&self) {
        self.last_progress.store(self.now(), Ordering::Relaxed);
    }

    /// Bytes arrived: between requests, they start a head.
    fn read_some(&self) {
        let now = self.now();
        self.last_progress.store(now, Ordering::Relaxed);
        if self.responses_owed.load(Ordering::Relaxed) == 0 {
            let _ = self.head_started.compare_exchange(
                0,
                now + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// hyper parsed a whole head and called the router.
    fn request_started(&self) {
        self.head_started.store(0, Ordering::Relaxed);
        self.responses_owed.fetch_add(1, Ordering::Relaxed);
        self.touch();
    }

    /// A response head is being written: true if the router owed it, false
    /// if hyper answers an unparseable request by itself. When it was the
    /// last one owed and the start of a next head already came (read
    /// together with this request), that head's deadline runs from then.
    fn response_head_written(&self, head_waiting_since: Option<u64>) -> bool {
        let owed = self
            .responses_owed
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |owed| {
                owed.checked_sub(1)
            });
        if let (Ok(1), Some(since)) = (owed, head_waiting_since) {
            let _ = self.head_started.compare_exchange(
                0,
                since + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
        owed.is_ok()
    }

    /// Since when (its milliseconds) the connection has been idle: no
    /// request in progress and no head started; `None` while busy.
    fn idle_since(&self) -> Option<u64> {
        (self.responses_owed.load(Ordering::Relaxed) == 0
            && self.head_started.load(Ordering::Relaxed) == 0)
            .then(|| self.last_progress.load(Ordering::Relaxed))
    }

    /// When the connection must be closed, as things stand now.
    fn deadline(&self, limits: &ListenerLimits) -> Instant {
        let at = |millis: u64, limit: Duration| self.opened + Duration::from_millis(millis) + limit;
        let head_started = self.head_started.load(Ordering::Relaxed);
        let idle = at(
            self.last_progress.load(Ordering::Relaxed),
            limits.idle_timeout,
        );
        if head_started == 0 {
            idle
        } else {
            idle.min(at(head_started - 1, limits.head_timeout))
        }
    }

    /// Resolves once the connection is past its deadline.
    async fn expired(&self, limits: &ListenerLimits) {
        loop {
            let deadline = self.deadline(limits);
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline.into()).await;
        }
    }
}

/// The client's socket, telling [`Activity`] what moves through it, and
/// giving hyper's own error answers the JSON envelope.
struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
    /// An enveloped answer being written in place of hyper's, and how much
    /// of it is written.
    replacement: Option<(Vec<u8>, usize)>,
    /// Where the requests read so far end.
    framing: framing::Framing,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let result = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.read_some();
            this.framing
                .feed(&buf.filled()[before..], this.activity.now());
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        // A response head (informational ones aside, e.g. 100 Continue) the
        // router did not produce is hyper refusing an unparseable request.
        let final_head = buf.starts_with(b"HTTP/1.") && buf.get(9) != Some(&b'1');
        if this.replacement.is_none()
            && final_head
            && !this
                .activity
                .response_head_written(this.framing.head_waiting_since())
        {
            this.replacement = Some((enveloped_error(buf), 0));
        }
        if let Some((bytes, written)) = &mut this.replacement {
            while *written < bytes.len() {
                let n = ready!(Pin::new(&mut this.stream).poll_write(cx, &bytes[*written..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                *written += n;
                this.activity.touch();
            }
            // hyper closes the connection after its error answer; whatever
            // else it writes is dropped.
            return Poll::Ready(Ok(buf.len()));
        }
        let result = Pin::new(&mut this.stream).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The answer to a request from a client (behind a trusted proxy) that has
/// all its share in flight.
fn too_many_requests(client: std::net::IpAddr, per_ip: usize) -> axum::response::Response {
    let body = clients::over_share_body(client, per_ip, "requests in flight");
    axum::response::Response::builder()
        .status(503)
        .header("content-type", "application/json")
        .header("retry-after", "1")
        .body(axum::body::Body::from(body))
        .unwrap_or_default()
}

/// The answer hyper wrote for a request it could not take (its status is in
/// `head`), as `{"code":40000,"msg":…}` with `Connection: close`.
fn enveloped_error(head: &[u8]) -> Vec<u8> {
    let status = head
        .get(9..12)
        .and_then(|code| std::str::from_utf8(code).ok())
        .and_then(|code| code.parse::<u16>().ok())
        .unwrap_or(400);
    let (reason, msg) = match status {
        414 => ("URI Too Long", "the request URI is too long"),
        431 => (
            "Request Header Fields Too Large",
            "the request line and headers are too large (the limit is 16 KiB)",
        ),
        408 => ("Request Timeout", "the request head did not arrive in time"),
        _ => ("Bad Request", "the request is not valid HTTP/1.1"),
    };
    let status = if matches!(status, 408 | 414 | 431) {
        status
    } else {
        400
    };
    let body = serde_json::json!({"code": 40000, "msg": msg}).to_string();
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A request body that must keep moving: each piece within `gap` of the
/// last, the whole within `total`; else it ends in an error (the handler
/// answers 40000, and the connection is closed).
struct MovingBody {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
    gap: Duration,
    ends_by: tokio::time::Instant,
}

impl MovingBody {
    fn new(inner: Incoming, gap: Duration, total: Duration) -> Self {
        let now = tokio::time::Instant::now();
        MovingBody {
            inner,
            deadline: Box::pin(tokio::time::sleep_until(now + gap.min(total))),
            gap,
            ends_by: now + total,
        }
    }
}

/// Why a request body was cut off.
#[derive(Debug, thiserror::Error)]
#[error("the request body stopped arriving (or came too slowly)")]
struct BodyTooSlow;

impl HttpBody for MovingBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let next = (tokio::time::Instant::now() + this.gap).min(this.ends_by);
                this.deadline.as_mut().reset(next);
                Poll::Ready(frame.map(|frame| frame.map_err(Into::into)))
            }
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTooSlow)))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Connections the listener may hold, leaving file descriptors for what
/// webhookd needs itself: `reserved` for outbound deliveries, the store and
/// the broker. Logged when it is lower than configured.
pub fn connection_budget(configured: usize, open_files: u64, reserved: u64) -> usize {
    let available = usize::try_from(open_files.saturating_sub(reserved)).unwrap_or(usize::MAX);
    let budget = configured.min(available).max(1);
    if budget < configured {
        tracing::warn!(
            configured,
            budget,
            open_files,
            reserved,
            "the open-file limit leaves room for fewer client connections than max_connections"
        );
    }
    budget
}
