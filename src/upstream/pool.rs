//! One worker's HTTP/1.1 connections to the upstream, driven by the requests that use them.
//!
//! hyper's client runs each connection as a task of its own and talks to it over channels, so
//! every exchange crossed two tasks. Here the request's own task polls the connection: while
//! waiting for the answer's head, then (through [`Lease`], carried in the answer's body) while the
//! body streams to the client. When the body has been read to its end the connection goes back
//! on the worker's list; a body dropped half-way takes its connection with it, as it must.
//!
//! A connection resting on the list is not polled. A close by the upstream is noticed when the
//! connection is next taken (it is polled once then); a request that a just-closed connection
//! could not take at all is sent again on a fresh one (hyper hands it back untouched).

use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
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
}

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
        }
    }

    /// Sends `req` (origin-form URI, `Host` set) and returns the answer with a body that keeps
    /// driving the connection it arrives on.
    pub async fn send(self: &Arc<Self>, req: Request<Body>) -> Result<Response<Body>, SendError> {
        let mut req = req;
        let mut fresh = false;
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
                Ok(res) => return Ok(self.lend(conn, res)),
                Err(mut e) => match e.take_message() {
                    // Nothing was written: a pooled connection the upstream had just closed.
                    Some(unsent) if !fresh => req = unsent,
                    _ => return Err(SendError::Http(e.into_error())),
                },
            }
        }
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

    fn checkin(&self, conn: Conn) {
        if conn.done || conn.sender.is_closed() {
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

    async fn connect(&self) -> Result<Conn, SendError> {
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
