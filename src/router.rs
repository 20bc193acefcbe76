//! The proxy's own service: serves its own prefix (`/_2fa`) and forwards everything else
//! upstream. Errors become responses here and only here.
//!
//! Message framing (RFC 9112 6.1/6.3, request smuggling) is hyper's: it rejects invalid or
//! conflicting `Content-Length`/`Transfer-Encoding`, drops `Content-Length` when chunked
//! encoding is present and closes that connection after answering. `tests/it/malformed.rs`
//! pins that behaviour for the hyper version in Cargo.toml.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use crate::body::Body;
use crate::metrics::{Metrics, RouteClass};
use crate::pages::{self, Brand};
use crate::upstream::{ConnInfo, Upstream, UpstreamError};

pub struct Router {
    upstream: Upstream,
    brand: Brand,
    /// `/_2fa` by default; nothing under it ever reaches the upstream.
    prefix: String,
    metrics: Arc<Metrics>,
}

impl Router {
    pub fn new(upstream: Upstream, brand: Brand, prefix: String, metrics: Arc<Metrics>) -> Self {
        Self {
            upstream,
            brand,
            prefix,
            metrics,
        }
    }

    pub async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let started = Instant::now();
        let conn = req.extensions().get::<ConnInfo>().copied();
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let (class, res) = self.route(req, conn).await;
        self.metrics.count(class, res.status());
        // Paths only: query strings may carry codes or tokens.
        tracing::debug!(
            target: "twofa_proxy::access",
            %method,
            path,
            status = res.status().as_u16(),
            micros = started.elapsed().as_micros() as u64,
            peer = conn.map(|c| c.peer.ip().to_string()),
        );
        res
    }

    async fn route(
        &self,
        req: Request<Incoming>,
        conn: Option<ConnInfo>,
    ) -> (RouteClass, Response<Body>) {
        if self.is_own(req.uri().path()) {
            return (RouteClass::Own, self.own(&req));
        }
        let Some(conn) = conn else {
            // The listener always inserts ConnInfo; without it we cannot set X-Forwarded-For honestly.
            tracing::error!("request without connection info");
            return (
                RouteClass::Rejected,
                pages::error(&self.brand, StatusCode::INTERNAL_SERVER_ERROR, false),
            );
        };
        let wants_html = pages::wants_html(req.headers());
        match self.upstream.forward(req.map(Body::from), &conn).await {
            Ok(res) => (RouteClass::Upstream, res),
            Err(e) => (RouteClass::Upstream, self.upstream_error(&e, wants_html)),
        }
    }

    fn is_own(&self, path: &str) -> bool {
        path.strip_prefix(self.prefix.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    fn own(&self, req: &Request<Incoming>) -> Response<Body> {
        let rest = &req.uri().path()[self.prefix.len()..];
        match (req.method(), rest) {
            (&Method::GET | &Method::HEAD, "/assets/style.css") => pages::stylesheet(),
            _ => pages::error(
                &self.brand,
                StatusCode::NOT_FOUND,
                pages::wants_html(req.headers()),
            ),
        }
    }

    fn upstream_error(&self, e: &UpstreamError, wants_html: bool) -> Response<Body> {
        let status = e.status();
        if status.is_client_error() {
            tracing::debug!(error = %e, "client request failed while forwarding");
        } else {
            tracing::warn!(error = %e, status = status.as_u16(), "upstream request failed");
        }
        let mut res = pages::error(&self.brand, status, wants_html);
        match status {
            StatusCode::GATEWAY_TIMEOUT | StatusCode::BAD_GATEWAY => {
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
            }
            // The client's request broke mid-stream; this connection's framing is not to be trusted.
            _ => {
                res.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
        }
        res
    }
}

/// tower glue: the router is shared by every connection; each call clones an `Arc`.
#[derive(Clone)]
pub struct RouterService(pub Arc<Router>);

impl tower::Service<Request<Incoming>> for RouterService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let router = self.0.clone();
        Box::pin(async move { Ok(router.handle(req).await) })
    }
}
