//! One worker's HTTP/1.1 connections to the upstream, driven by the requests that use them.
//!
//! hyper-util's pooled client (the usual choice, and ours before) runs each connection as a task
//! of its own and talks to it over channels, so every exchange crossed two tasks; measured, that
//! cost about 1 µs of user CPU per request, an eighth of the proxy's. Here the request's own
//! task polls the connection: while waiting for the answer's head, then (through [`Lease`],
//! carried in the answer's body) while the body streams to the client. When the body has been
//! read to its end the connection goes back on the worker's list; a body dropped half-way takes
//! its connection with it, as it must.
//!
//! A request with a body is the exception: once its answer's head is in, the client may still
//! be uploading, and the upload must go on even while the answer's body waits for the client to
//! read it. That connection gets a task of its own for the rest of the exchange (hyper's usual
//! arrangement), which puts it back on the list when the exchange is over.
//!
//! Resting connections are polled every few seconds by a sweeper, which drops those the upstream
//! closed or that rested past `pool_idle_timeout`. A request that a just-closed connection could
//! not take at all is sent again on a fresh one (hyper hands it back untouched).

use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri};
use http_body::{Body as _, Frame};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::time::Instant;
use tower::ServiceExt;

use crate::body::{Body, BoxError};

/// hyper's connection future (with upgrades; its type cannot be named).
type Driver = dyn Future<Output = hyper::Result<()>> + Send;

/// Why a request did not get an answer from the upstream.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be made (refused, unreachable, TLS failed, connect timeout).
    Connect(BoxError),
    /// The exchange broke after it started.
    Http(hyper::Error),
}

pub struct Pool {
    connector: HttpsConnector<HttpConnector>,
    /// `scheme://authority/`, for the connector.
    target: Uri,
    /// Resting connections, oldest first, with the time each was put back.
    idle: Mutex<VecDeque<(Conn, Instant)>>,
    max_idle: usize,
    idle_timeout: Duration,
    sweeping: AtomicBool,
}

/// How often resting connections are checked for a close by the upstream or an expired rest.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// One upstream connection: the handle requests are sent with, and the connection future that
/// does its reading and writing.
struct Conn {
    sender: SendRequest<Body>,
    driver: Pin<Box<Driver>>,
    /// The driver has finished (closed, failed or upgraded) and must not be polled again.
    done: bool,
}

impl Conn {
    /// Lets the connection read and write whatever it can.
    fn drive(&mut self, cx: &mut Context<'_>) {
        if self.done {
            return;
        }
        if let Poll::Ready(result) = self.driver.as_mut().poll(cx) {
            self.done = true;
            if let Err(e) = result {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        }
    }
}

/// A connection on loan to one answer's body, returned to the pool when the body has been read.
pub struct Lease {
    conn: Conn,
    pool: Arc<Pool>,
}

impl Lease {
    /// The body's next frame, driving the connection that reads it.
    pub fn poll_body(
        &mut self,
        mut body: Pin<&mut Incoming>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        // Polling the body first tells the connection that data is wanted; driving it then
        // reads and hands over what has arrived, and the second poll takes it.
        if let Poll::Ready(frame) = body.as_mut().poll_frame(cx) {
            return Poll::Ready(frame);
        }
        self.conn.drive(cx);
        body.poll_frame(cx)
    }

    /// Back to the pool, for the next request.
    pub fn release(self) {
        self.pool.checkin(self.conn);
    }
}

impl Pool {
    pub fn new(
        connector: HttpsConnector<HttpConnector>,
        target: Uri,
        max_idle: usize,
        idle_timeout: Duration,
    ) -> Self {
        Self {
            connector,
            target,
            idle: Mutex::new(VecDeque::new()),
            max_idle,
            idle_timeout,
            sweeping: AtomicBool::new(false),
        }
    }

    /// Sends `req` (origin-form URI, `Host` set) and returns the answer with a body that keeps
    /// driving the connection it arrives on.
    pub async fn send(self: &Arc<Self>, req: Request<Body>) -> Result<Response<Body>, SendError> {
        let mut req = req;
        let mut fresh = false;
        let uploads = !req.body().is_end_stream();
        loop {
            let mut conn = match self.checkout().await {
                Some(conn) => conn,
                None => {
                    fresh = true;
                    self.connect().await?
                }
            };
            let sent = conn.sender.try_send_request(req);
            tokio::pin!(sent);
            let answer = poll_fn(|cx| {
                // The connection writes the request (streaming its body) and reads the answer.
                conn.drive(cx);
                sent.as_mut().poll(cx)
            })
            .await;
            match answer {
                Ok(res) if uploads => return Ok(self.hand_off(conn, res)),
                Ok(res) => return Ok(self.lend(conn, res)),
                Err(mut e) => match e.take_message() {
                    // Nothing was written: a pooled connection the upstream had just closed.
                    Some(unsent) if !fresh => req = unsent,
                    _ => return Err(SendError::Http(e.into_error())),
                },
            }
        }
    }

    /// The rest of an exchange whose request has a body, on a task of its own: the upload may
    /// still be going, and must not wait for the answer's body to be read.
    fn hand_off(self: &Arc<Self>, mut conn: Conn, res: Response<Incoming>) -> Response<Body> {
        let pool = Arc::downgrade(self);
        let upgrade = res.status() == StatusCode::SWITCHING_PROTOCOLS;
        tokio::spawn(async move {
            // Ready again once both the request and the answer are through.
            let ready = poll_fn(|cx| {
                conn.drive(cx);
                if conn.done {
                    return Poll::Ready(false);
                }
                conn.sender.poll_ready(cx).map(|r| r.is_ok())
            })
            .await;
            if ready
                && !upgrade
                && let Some(pool) = pool.upgrade()
            {
                pool.checkin(conn);
            }
        });
        res.map(Body::from)
    }

    fn lend(self: &Arc<Self>, conn: Conn, res: Response<Incoming>) -> Response<Body> {
        if res.status() == StatusCode::SWITCHING_PROTOCOLS {
            // The connection's future completes the upgrade and hands the socket to the tunnel;
            // it needs polling of its own from here on.
            if !conn.done {
                tokio::spawn(async move {
                    if let Err(e) = conn.driver.await {
                        tracing::debug!(error = %e, "upstream upgrade failed");
                    }
                });
            }
            return res.map(Body::from);
        }
        if res.body().is_end_stream() {
            // No body to read (204, 304, HEAD, empty): free at once.
            self.checkin(conn);
            return res.map(Body::from);
        }
        let lease = Lease {
            conn,
            pool: self.clone(),
        };
        res.map(|inner| Body::Upstream {
            inner,
            lease: Some(Box::new(lease)),
        })
    }

    /// The most recently used live connection, if any.
    async fn checkout(&self) -> Option<Conn> {
        loop {
            let (mut conn, rested) = self.idle.lock().ok()?.pop_back()?;
            if rested.elapsed() >= self.idle_timeout {
                // The rest are older still.
                if let Ok(mut idle) = self.idle.lock() {
                    idle.clear();
                }
                return None;
            }
            // One poll lets it notice a close and get ready for the next request.
            poll_fn(|cx| {
                conn.drive(cx);
                Poll::Ready(())
            })
            .await;
            if !conn.done && conn.sender.is_ready() {
                return Some(conn);
            }
        }
    }

    fn checkin(&self, mut conn: Conn) {
        // One more poll lets it finish the exchange's bookkeeping; a connection that is still
        // busy (an upload the answer did not wait for) is not reused but closed.
        conn.drive(&mut Context::from_waker(Waker::noop()));
        if conn.done || !conn.sender.is_ready() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            // Connections resting past the idle timeout are closed here, on the next return.
            while idle
                .front()
                .is_some_and(|(_, rested)| rested.elapsed() >= self.idle_timeout)
            {
                idle.pop_front();
            }
            if idle.len() < self.max_idle {
                idle.push_back((conn, Instant::now()));
            }
        }
    }

    /// Polls resting connections (a close by the upstream shows as `done`) and drops the closed
    /// and the expired.
    fn sweep(&self) {
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        let mut cx = Context::from_waker(Waker::noop());
        idle.retain_mut(|(conn, rested)| {
            conn.drive(&mut cx);
            !conn.done && rested.elapsed() < self.idle_timeout
        });
    }

    async fn connect(self: &Arc<Self>) -> Result<Conn, SendError> {
        if !self.sweeping.swap(true, Ordering::Relaxed) {
            // Started from a worker, on the worker's runtime; ends with the pool.
            let pool: Weak<Self> = Arc::downgrade(self);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(SWEEP_EVERY).await;
                    match pool.upgrade() {
                        Some(pool) => pool.sweep(),
                        None => return,
                    }
                }
            });
        }
        let io = self
            .connector
            .clone()
            .oneshot(self.target.clone())
            .await
            .map_err(SendError::Connect)?;
        let (sender, driver) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(SendError::Http)?;
        Ok(Conn {
            sender,
            driver: Box::pin(driver.with_upgrades()),
            done: false,
        })
    }
}
