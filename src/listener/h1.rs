//! Plain-TCP HTTP/1.1 connections that hold no hyper state between requests.
//!
//! hyper keeps an 8 KiB read buffer and an 8 KiB write buffer for the whole life of a
//! connection, so 10 000 idle keep-alive clients would pin about 160 MiB. Instead, once hyper has
//! answered and has waited [`PARK_AFTER`] for the client with nothing in hand, its connection is
//! ended without closing the socket and the connection *parks*, holding only the socket, until
//! the client's next bytes arrive (or `keepalive_timeout` passes). A busy connection keeps its
//! hyper connection: making one per request cost about 5% of throughput.
//!
//! Ending hyper's connection uses its own graceful shutdown, which only closes an idle connection
//! at once; bytes it had read ahead (pipelined requests) come back in `Parts::read_buf` and are
//! replayed to the next one. Upgraded connections (WebSocket) leave hyper for good and never park.
//!
//! Parking must never skip a close hyper would make or lose bytes, so a connection does not park
//! while a response is under way (counted until its body is dropped), while hyper has unflushed
//! output (it decides between keep-alive and close after a flush), when the exchange does not
//! allow keep-alive (HTTP/1.0 rules, `Connection: close` either way), or after a request whose
//! body hyper may still be reading: until whoever reads it reports the end ([`BodyRead`]: the
//! forwarded body, the proxy's own form reader) or the next request proves it read.
//!
//! [`BodyRead`]: crate::body::BodyRead

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::body::Body;
use crate::upstream::connection_names;

/// What the request path and the socket tell the connection loop about hyper's progress.
/// Everything stays on one worker thread; the atomics only make the state `Send`.
#[derive(Default)]
pub(super) struct Activity {
    /// Requests whose response (head and body) is not yet through.
    in_flight: AtomicUsize,
    /// The latest exchange allows the connection to stay open (HTTP/1.1 without `close`, or 1.0
    /// asking for keep-alive, and an answer without `close`). Otherwise hyper closes it after
    /// the answer, and parking would skip that close.
    keep_alive: AtomicBool,
    /// The latest request has a body, which hyper may still be reading after the response: such
    /// a connection is not parked until the body's reader reports its end ([`Activity::body_read`],
    /// through `BodyRead`) or the next request shows it is behind. A report that comes from
    /// another task (an upload finishing after the answer) does not wake this connection; it then
    /// parks at its next request, or hyper's header timer closes it.
    body: AtomicBool,
    /// hyper has read bytes it has not yet turned into a request (a partial head).
    unparsed: AtomicBool,
    /// hyper has written bytes it has not yet flushed to the socket. It decides whether to keep
    /// the connection or close it only once an answer is flushed.
    unflushed: AtomicBool,
    /// hyper wanted the client's next bytes with nothing else to do, and none came since.
    idle: AtomicBool,
    /// Requests started so far.
    requests: AtomicUsize,
    /// Set just before hyper's connection is ended for parking: its shutdown must leave the
    /// socket open.
    parking: AtomicBool,
}

impl Activity {
    /// Returns the request's number on this connection.
    pub(super) fn request_started(&self, has_body: bool, keep_alive: bool) -> usize {
        self.in_flight.fetch_add(1, Relaxed);
        self.keep_alive.store(keep_alive, Relaxed);
        let number = self.requests.fetch_add(1, Relaxed) + 1;
        self.body.store(has_body, Relaxed);
        self.unparsed.store(false, Relaxed);
        self.idle.store(false, Relaxed);
        number
    }

    /// Request `number`'s body has been read to its end: no body bytes are left on the socket,
    /// and bytes read since belong to the next request (replayed if the connection parks).
    pub(super) fn body_read(&self, number: usize) {
        if self.requests.load(Relaxed) == number {
            self.body.store(false, Relaxed);
            self.unparsed.store(false, Relaxed);
        }
    }

    /// Requests started so far, and how many of them are not yet answered to the end: what the
    /// idle deadline of connections that never park (TLS, h2c) watches.
    pub(super) fn progress(&self) -> (usize, usize) {
        (self.requests.load(Relaxed), self.in_flight.load(Relaxed))
    }

    fn bytes_arrived(&self) {
        self.unparsed.store(true, Relaxed);
        self.idle.store(false, Relaxed);
    }

    /// Nothing stands in the way of parking once the client is quiet: no exchange under way,
    /// keep-alive allowed, no request body that hyper may still be reading.
    fn parkable(&self) -> bool {
        self.in_flight.load(Relaxed) == 0
            && self.keep_alive.load(Relaxed)
            && !self.body.load(Relaxed)
    }

    fn waiting_for_client(&self) {
        if self.parkable() && !self.unparsed.load(Relaxed) && !self.unflushed.load(Relaxed) {
            self.idle.store(true, Relaxed);
        }
    }
}

pin_project! {
    /// The service's future; its request stays counted as in flight until the response body
    /// it yields has been sent (hyper drops it then) or dropped.
    pub(super) struct Counted<F> {
        #[pin]
        inner: F,
        in_flight: Option<InFlight>,
        http10: bool,
    }
}

impl<F> Counted<F> {
    pub(super) fn new(inner: F, activity: Option<Arc<Activity>>, http10: bool) -> Self {
        Self {
            inner,
            in_flight: activity.map(InFlight),
            http10,
        }
    }
}

impl<F, E> Future for Counted<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = Result<Response<Tracked>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = ready!(this.inner.poll(cx));
        let in_flight = this.in_flight.take();
        let http10 = *this.http10;
        Poll::Ready(out.map(|res| {
            // hyper's own reasons to close after this answer: `close` in it, or an HTTP/1.0
            // client with a body of unknown length (ended by the close) or a 1.0 answer.
            let closing = closes(res.headers())
                || (http10
                    && (http_body::Body::size_hint(res.body()).exact().is_none()
                        || res.version() == http::Version::HTTP_10));
            if let Some(guard) = &in_flight
                && closing
            {
                guard.0.keep_alive.store(false, Relaxed);
            }
            res.map(|inner| Tracked {
                inner,
                _in_flight: in_flight,
            })
        }))
    }
}

/// Whether a `Connection` header asks for the connection to close.
pub(super) fn closes(headers: &http::HeaderMap) -> bool {
    connection_names(headers, "close")
}

pin_project! {
    /// A response body that keeps its request counted as in flight for as long as it lives.
    pub(super) struct Tracked {
        #[pin]
        inner: Body,
        _in_flight: Option<InFlight>,
    }
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = crate::body::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// One request in flight; dropping it (answered, or abandoned when the client left) ends it.
pub(super) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

/// The socket as hyper sees it: replays bytes a previous hyper connection had read ahead, reports
/// when hyper waits for the client, and leaves the socket open when hyper ends to park.
struct Socket {
    stream: TcpStream,
    replay: Bytes,
    activity: Arc<Activity>,
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.replay.is_empty() {
            let n = this.replay.len().min(buf.remaining());
            buf.put_slice(&this.replay.split_to(n));
            this.activity.bytes_arrived();
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Pending => {
                this.activity.waiting_for_client();
                Poll::Pending
            }
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                this.activity.bytes_arrived();
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.activity.unflushed.store(true, Relaxed);
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.activity.unflushed.store(true, Relaxed);
        Pin::new(&mut this.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // hyper calls this only once its own buffer is all written.
        let this = self.get_mut();
        let flushed = Pin::new(&mut this.stream).poll_flush(cx);
        if let Poll::Ready(Ok(())) = flushed {
            this.activity.unflushed.store(false, Relaxed);
        }
        flushed
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.activity.parking.load(Relaxed) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_shutdown(cx)
    }
}

/// How one hyper connection ended.
enum Ended {
    /// Parked: the socket (and any bytes read ahead) for the next request.
    Parked(TcpStream, Bytes),
    /// Closed, upgraded or failed: nothing left to do.
    Done,
}

/// How long hyper waits for a client's next request before the connection parks.
pub(super) const PARK_AFTER: Duration = Duration::from_millis(50);

/// Serves HTTP/1.1 on `stream` until the client leaves, stays idle for `keepalive`, or
/// `shutdown` fires (in-flight requests finish first).
pub(super) async fn serve<S>(
    builder: &http1::Builder,
    mut stream: TcpStream,
    service: S,
    activity: Arc<Activity>,
    keepalive: Duration,
    shutdown: &CancellationToken,
) where
    S: hyper::service::Service<Request<Incoming>, Response = Response<Tracked>> + Clone + Unpin,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: Unpin,
{
    // Registered once per connection, not per request.
    let drain = shutdown.cancelled();
    tokio::pin!(drain);
    // One timer, re-armed lazily: the keep-alive expiry while parked, the parking check while
    // hyper serves. When it fires early it is moved on, so busy connections touch the timer
    // wheel a few times a second rather than on every request.
    let timer = tokio::time::sleep(keepalive);
    tokio::pin!(timer);
    let mut replay = Bytes::new();
    loop {
        if replay.is_empty() {
            // Parked: nothing but the socket is held while the client thinks.
            let expiry = Instant::now() + keepalive;
            let woke = poll_fn(|cx| {
                if drain.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(false);
                }
                if let Poll::Ready(ready) = stream.poll_read_ready(cx) {
                    return Poll::Ready(ready.is_ok());
                }
                while timer.as_mut().poll(cx).is_ready() {
                    if timer.deadline() >= expiry {
                        return Poll::Ready(false);
                    }
                    timer.as_mut().reset(expiry);
                }
                Poll::Pending
            })
            .await;
            if !woke {
                return;
            }
        }
        activity.parking.store(false, Relaxed);
        activity.idle.store(false, Relaxed);
        let socket = Socket {
            stream,
            replay,
            activity: activity.clone(),
        };
        // Boxed so that a parked connection's task does not carry hyper's state inline.
        let conn = Box::new(
            builder
                .serve_connection(TokioIo::new(socket), service.clone())
                .with_upgrades(),
        );
        match drive(conn, &activity, drain.as_mut(), timer.as_mut()).await {
            Ended::Parked(s, bytes) => (stream, replay) = (s, bytes),
            Ended::Done => return,
        }
    }
}

/// Polls hyper's connection until it ends: by itself, for a drain, or to park once it has sat
/// idle through a whole `tick`.
async fn drive<S>(
    mut conn: Box<http1::UpgradeableConnection<TokioIo<Socket>, S>>,
    activity: &Activity,
    mut drain: Pin<&mut WaitForCancellationFuture<'_>>,
    mut tick: Pin<&mut Sleep>,
) -> Ended
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<Tracked>> + Unpin,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: Unpin,
{
    let mut draining = false;
    let mut parking = false;
    // The tick runs only while the connection could park: not during a long answer (a stream
    // may last minutes), not after a request whose body may be unread, not when keep-alive is
    // off. Every change of those follows hyper's own progress, which this future polls.
    let mut armed = false;
    let mut requests = 0;
    let result = poll_fn(|cx| {
        loop {
            if !draining && drain.as_mut().poll(cx).is_ready() {
                draining = true;
                Pin::new(&mut *conn).graceful_shutdown();
            }
            if let Poll::Ready(result) = Pin::new(&mut *conn).poll(cx) {
                return Poll::Ready(result);
            }
            if draining || parking {
                return Poll::Pending;
            }
            let parkable = activity.parkable();
            if armed && tick.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let now = activity.requests.load(Relaxed);
            if armed && parkable && activity.idle.load(Relaxed) && now == requests {
                // Quiet through a whole tick: park.
                parking = true;
                activity.parking.store(true, Relaxed);
                Pin::new(&mut *conn).graceful_shutdown();
                continue;
            }
            armed = parkable;
            if armed {
                requests = now;
                tick.as_mut().reset(Instant::now() + PARK_AFTER);
                // Registers the waker for the new deadline.
                let _ = tick.as_mut().poll(cx);
            }
            return Poll::Pending;
        }
    })
    .await;
    if let Err(e) = result {
        // Clients vanishing mid-request is ordinary; nothing to act on.
        tracing::debug!(error = %e, "connection ended with an error");
        return Ended::Done;
    }
    // `None`: upgraded, the socket now belongs to the tunnel.
    let Some(parts) = conn.into_parts() else {
        return Ended::Done;
    };
    let Socket {
        mut stream, replay, ..
    } = parts.io.into_inner();
    if parking && !draining {
        // Copied, never kept: `read_buf` shares hyper's whole 8 KiB read buffer, even when empty.
        let rest = if parts.read_buf.is_empty() && replay.is_empty() {
            Bytes::new()
        } else {
            Bytes::from([&parts.read_buf[..], &replay[..]].concat())
        };
        return Ended::Parked(stream, rest);
    }
    // hyper's own shutdown already ran (the socket only skips it while parking).
    if parking {
        let _ = stream.shutdown().await;
    }
    Ended::Done
}
