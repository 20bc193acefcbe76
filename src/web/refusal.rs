//! Every way the proxy says no, and the one place that turns a refusal into a response: its
//! status, `Retry-After`, `Connection: close`, an HTML page or a JSON error, and its log line.
//! Handlers on every path (own pages, the JSON API, the login watcher, the gate) return a
//! [`Refusal`]; store and body errors convert with `?`.

use http::{HeaderValue, Response, StatusCode, header};

use crate::body::Body;
use crate::state::Core;
use crate::store::StoreError;
use crate::upstream::UpstreamError;
use crate::web::forms::FormError;
use crate::web::pages::{self, Frame};
use crate::words::Words;

/// Seconds a client should wait after the store failed: long enough for a failover.
const STORE_RETRY: u64 = 10;
/// Seconds a client should wait after the app did not answer.
const UPSTREAM_RETRY: u64 = 30;

#[derive(Debug)]
pub enum Refusal {
    /// The store cannot be reached: nothing can be checked, so nothing goes through (503).
    StoreDown(StoreError),
    /// The app did not answer, or the client's request broke while it was being forwarded.
    Upstream(UpstreamError),
    /// The request body was too large, malformed, cross-site or late.
    Body(FormError),
    /// A form without the session's (or the sign-in's) CSRF token.
    Forged,
    /// Too many wrong codes: the account is locked for this many seconds.
    Locked { retry_after: u64 },
    /// Too many sign-ins or code emails: try again in this many seconds (429).
    Throttled { retry_after: u64 },
    /// Work that must finish first (requests on the same app session): 503, soon.
    Busy { retry_after: u64 },
    /// Refused with this status and its generic words: a request the proxy will not read one
    /// way while the app might read it another.
    Status(StatusCode),
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        Refusal::StoreDown(e)
    }
}

impl From<FormError> for Refusal {
    fn from(e: FormError) -> Self {
        Refusal::Body(e)
    }
}

impl From<UpstreamError> for Refusal {
    fn from(e: UpstreamError) -> Self {
        Refusal::Upstream(e)
    }
}

/// How the answer is written — a branded page, or `{"error": "<code>", "message": "..."}` —
/// and in which words.
#[derive(Clone, Copy)]
pub enum Reply {
    Html(&'static Words),
    Json(&'static Words),
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::StoreDown(_) => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::Upstream(e) => e.status(),
            Refusal::Body(e) => match e {
                FormError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
                FormError::CrossOrigin => StatusCode::FORBIDDEN,
                FormError::Malformed | FormError::Repeated => StatusCode::BAD_REQUEST,
                FormError::TimedOut => StatusCode::REQUEST_TIMEOUT,
            },
            Refusal::Forged => StatusCode::FORBIDDEN,
            Refusal::Locked { .. } | Refusal::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
            Refusal::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::Status(s) => *s,
        }
    }

    /// The JSON error code: specific where a client can act on it, else the status's name.
    fn code(&self) -> String {
        let named = match self {
            Refusal::Body(FormError::TooLarge) => "too_large",
            Refusal::Body(FormError::CrossOrigin) => "cross_origin",
            Refusal::Body(FormError::Malformed | FormError::Repeated) => "bad_request",
            Refusal::Body(FormError::TimedOut) => "timeout",
            Refusal::Locked { .. } => "locked",
            _ => "",
        };
        if !named.is_empty() {
            return named.to_owned();
        }
        self.status()
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase()
            .replace(' ', "_")
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            Refusal::StoreDown(_) => Some(STORE_RETRY),
            Refusal::Upstream(e) => matches!(
                e.status(),
                StatusCode::BAD_GATEWAY | StatusCode::GATEWAY_TIMEOUT
            )
            .then_some(UPSTREAM_RETRY),
            Refusal::Locked { retry_after }
            | Refusal::Throttled { retry_after }
            | Refusal::Busy { retry_after } => Some(*retry_after),
            _ => None,
        }
    }

    /// Whether the connection must close: the rest of a request body may still be on its way
    /// (a late body, or a client request that broke mid-stream), so its framing is not to be
    /// trusted for another request.
    fn closes(&self) -> bool {
        match self {
            Refusal::Body(FormError::TimedOut) => true,
            Refusal::Upstream(e) => e.status().is_client_error(),
            _ => false,
        }
    }

    fn log(&self) {
        match self {
            Refusal::StoreDown(e) => {
                tracing::error!(error = %e, "store unavailable; refusing the request");
            }
            Refusal::Upstream(e) if e.status().is_client_error() => {
                tracing::debug!(error = %e, "client request failed while forwarding");
            }
            Refusal::Upstream(e) => {
                tracing::warn!(error = %e, status = e.status().as_u16(), "upstream request failed");
            }
            other => tracing::debug!(status = other.status().as_u16(), "request refused"),
        }
    }

    /// The response, logged once.
    pub fn respond(self, core: &Core, reply: Reply) -> Response<Body> {
        self.log();
        let status = self.status();
        let mut res = match (&self, reply) {
            (Refusal::Locked { retry_after }, Reply::Html(w)) => {
                pages::locked_page(&Frame::new(core, w, ""), *retry_after)
            }
            (_, Reply::Html(w)) => pages::error(&Frame::new(core, w, ""), status, true),
            (_, Reply::Json(w)) => pages::json_error(status, &self.code(), &self.message(core, w)),
        };
        let h = res.headers_mut();
        if let Some(seconds) = self.retry_after() {
            h.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.closes() {
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        res
    }

    fn message(&self, core: &Core, w: &Words) -> String {
        match self {
            Refusal::Body(FormError::TooLarge) => w.body_too_large.to_owned(),
            Refusal::Body(FormError::CrossOrigin) => w.body_cross_site.to_owned(),
            Refusal::Body(FormError::Malformed | FormError::Repeated) => {
                w.body_unreadable.to_owned()
            }
            Refusal::Body(FormError::TimedOut) => w.body_late.to_owned(),
            Refusal::Locked { retry_after } => (w.try_again_in)(*retry_after),
            _ => pages::error_message(self.status(), w, &core.brand.app_name),
        }
    }
}
