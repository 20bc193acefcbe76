//! The admin listener: liveness, readiness, metrics and the admin API (reset a user's 2FA), on
//! an address that is never the public one. The API needs `Authorization: Bearer <admin_token>`.

use std::convert::Infallible;
use std::sync::Arc;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::body::Body;
use crate::health::Health;
use crate::metrics::{self, Metrics};
use crate::state::Core;

/// `POST /admin/v1/users/<user>/reset-2fa`.
const RESET_PREFIX: &str = "/admin/v1/users/";
const RESET_SUFFIX: &str = "/reset-2fa";
/// `POST /admin/v1/records/confirm`: the records in use are the right ones.
const CONFIRM_RECORDS: &str = "/admin/v1/records/confirm";

pub struct AdminState {
    pub metrics: Arc<Metrics>,
    /// Readiness, and the serving core once the store is open (the API needs it).
    pub health: Arc<Health>,
    /// Serve `/metrics` here (false when `server.metrics_listen` has a listener of its own).
    pub metrics_here: bool,
}

pub async fn serve(listener: TcpListener, state: Arc<AdminState>, stop: CancellationToken) {
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    continue;
                }
            },
        };
        let state = state.clone();
        crate::listener::serve_plain(
            stream,
            hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, &req).await) }
            }),
        );
    }
}

async fn handle(state: &AdminState, req: &Request<Incoming>) -> Response<Body> {
    let path = req.uri().path();
    if let Some(user) = path
        .strip_prefix(RESET_PREFIX)
        .and_then(|r| r.strip_suffix(RESET_SUFFIX))
    {
        if req.method() != Method::POST {
            return text(StatusCode::METHOD_NOT_ALLOWED, "POST only\n");
        }
        return reset(state, req, user).await;
    }
    if path == CONFIRM_RECORDS {
        if req.method() != Method::POST {
            return text(StatusCode::METHOD_NOT_ALLOWED, "POST only\n");
        }
        return confirm_records(state, req).await;
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET here\n");
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            let readiness = state.health.readiness().await;
            text(readiness.status(), readiness.text())
        }
        "/metrics" if state.metrics_here => metrics_response(&state.metrics),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

use crate::health::text;

/// The Prometheus text exposition of every metric.
pub fn metrics_response(metrics: &Metrics) -> Response<Body> {
    let mut res = Response::new(Body::from(metrics.encode()));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(metrics::CONTENT_TYPE),
    );
    res
}

/// A listener that serves `/metrics` only (`server.metrics_listen`), so a scraper can be let in
/// without reaching the admin API.
pub async fn serve_metrics(listener: TcpListener, metrics: Arc<Metrics>, stop: CancellationToken) {
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let metrics = metrics.clone();
        crate::listener::serve_plain(
            stream,
            hyper::service::service_fn(move |req: Request<Incoming>| {
                let metrics = metrics.clone();
                async move {
                    Ok::<_, Infallible>(match (req.method(), req.uri().path()) {
                        (&Method::GET | &Method::HEAD, "/metrics") => metrics_response(&metrics),
                        _ => text(StatusCode::NOT_FOUND, "not found\n"),
                    })
                }
            }),
        );
    }
}

/// The refusal while the store has not been reached (there is no core to act with).
fn not_serving() -> Response<Body> {
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        "starting: store not reached yet\n",
    )
}

fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The admin API's bearer token check: the refusal (audited) when it fails.
fn unauthorized(
    core: &Core,
    req: &Request<Incoming>,
    action: &'static str,
) -> Option<Response<Body>> {
    let Some(token) = &core.config.secrets.admin_token else {
        return Some(text(
            StatusCode::FORBIDDEN,
            "admin API disabled: set [secrets] admin_token or admin_token_file\n",
        ));
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !crate::web::forms::token_matches(given, token.expose()) {
        tracing::warn!(target: "audit", event = "admin_denied", action);
        return Some(text(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token\n",
        ));
    }
    None
}

/// The operator confirms that the records in use are the right ones (see
/// [`crate::records::identity`]).
async fn confirm_records(state: &AdminState, req: &Request<Incoming>) -> Response<Body> {
    let Some(core) = state.health.core() else {
        return not_serving();
    };
    if let Some(refused) = unauthorized(&core, req, "confirm-records") {
        return refused;
    }
    let now = core.clock.now();
    match crate::records::identity::confirm(&core.store, &core.records, now).await {
        Ok(()) => text(StatusCode::OK, "records confirmed\n"),
        Err(e) => {
            tracing::error!(error = %e, "confirming the records failed");
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                "store or records unavailable\n",
            )
        }
    }
}

/// Removes a user's 2FA (lost phone): record, recovery codes, enrollment, lock and every session.
async fn reset(state: &AdminState, req: &Request<Incoming>, raw_user: &str) -> Response<Body> {
    let Some(core) = state.health.core() else {
        return not_serving();
    };
    let core = &core;
    if let Some(refused) = unauthorized(core, req, "reset-2fa") {
        return refused;
    }
    // A path segment: percent-decoding only (`+` and `&` are literal here).
    let decoded = percent_decode(raw_user);
    let Some(user) = core.canonical_user(&decoded) else {
        return text(StatusCode::BAD_REQUEST, "not a user name\n");
    };
    match crate::auth::reset::reset(core, &user).await {
        Ok(done) => {
            let body = serde_json::json!({ "user": user, "had_2fa": done.had_2fa, "sessions_ended": done.sessions_ended })
                .to_string();
            let mut res = Response::new(Body::from(body + "\n"));
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            res
        }
        Err(e) => {
            tracing::error!(error = %e, "admin reset failed: store unavailable");
            text(StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n")
        }
    }
}

/// `twofa-proxy admin reset USER`: asks the running proxy's admin listener to reset USER.
pub async fn reset_remote(config: &crate::config::Config, user: &str) -> anyhow::Result<()> {
    // Percent-encoding for a path segment (not form encoding: `+` would mean `+`).
    let encoded: String = user
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    post_remote(
        config,
        &format!("{RESET_PREFIX}{encoded}{RESET_SUFFIX}"),
        "reset",
    )
    .await
}

/// `twofa-proxy admin confirm-records`: tells the running proxy its records are the right ones.
pub async fn confirm_records_remote(config: &crate::config::Config) -> anyhow::Result<()> {
    post_remote(config, CONFIRM_RECORDS, "confirm-records").await
}

/// A POST to the running proxy's admin API with the configured token; prints the answer.
async fn post_remote(config: &crate::config::Config, path: &str, what: &str) -> anyhow::Result<()> {
    use http_body_util::BodyExt as _;

    let token = config.secrets.admin_token.as_ref().ok_or_else(|| {
        anyhow::anyhow!("set [secrets] admin_token or admin_token_file to use the admin API")
    })?;
    let mut addr = config.server.admin_listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the admin listener at {addr}: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = Request::post(path)
        .header(header::HOST, addr.to_string())
        .header(header::AUTHORIZATION, format!("Bearer {}", token.expose()))
        .body(http_body_util::Empty::<bytes::Bytes>::new())?;
    let res = sender.send_request(req).await?;
    let status = res.status();
    let body = res.into_body().collect().await?.to_bytes();
    let text = String::from_utf8_lossy(&body);
    if !status.is_success() {
        anyhow::bail!("{what} refused ({status}): {}", text.trim());
    }
    // The command's answer is its output.
    #[allow(clippy::print_stdout)]
    {
        println!("{}", text.trim());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn user_names_in_paths_are_percent_decoded_only() {
        assert_eq!(super::percent_decode("a%26b"), "a&b");
        assert_eq!(super::percent_decode("a+b"), "a+b");
        assert_eq!(super::percent_decode("al%69ce"), "alice");
        assert_eq!(super::percent_decode("bad%zz"), "bad%zz");
    }
}
