//! Knowing whether a request went out on a reused connection.
//!
//! A receiver may close an idle keep-alive connection without saying so
//! (no `Connection: close`); a request the pool sends on it just then fails
//! before any byte of an answer, through no fault of the receiver. Such a
//! failure is not an attempt: the client sends the request again at once on
//! a fresh connection. To tell it apart from a receiver that fails a fresh
//! connection, every connection carries a count of the answers it has
//! brought ([`Uses`]), which hyper-util hands back on the response and on
//! the error.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};

/// Answers received on one connection so far.
#[derive(Debug, Clone, Default)]
pub struct Uses(Arc<AtomicUsize>);

impl Uses {
    /// Counts an answer received on the connection.
    pub fn answered(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether the connection had served a request before.
    pub fn reused(&self) -> bool {
        self.0.load(Ordering::Relaxed) > 0
    }

    /// The connection's count, from a response's or an error's extensions.
    pub fn of(extensions: &http::Extensions) -> Option<&Uses> {
        extensions.get::<Uses>()
    }
}

/// Wraps a connector so each connection it makes carries [`Uses`].
#[derive(Debug, Clone)]
pub struct Counting<C>(pub C);

impl<C> tower_service::Service<Uri> for Counting<C>
where
    C: tower_service::Service<Uri>,
    C::Future: Send + 'static,
{
    type Response = Counted<C::Response>;
    type Error = C::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.0.call(uri);
        Box::pin(async move {
            Ok(Counted {
                io: connecting.await?,
                uses: Uses::default(),
            })
        })
    }
}

/// A connection and its [`Uses`].
#[derive(Debug)]
pub struct Counted<T> {
    io: T,
    uses: Uses,
}

impl<T: Connection> Connection for Counted<T> {
    fn connected(&self) -> Connected {
        self.io.connected().extra(self.uses.clone())
    }
}

impl<T: Read + Unpin> Read for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: Write + Unpin> Write for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}
