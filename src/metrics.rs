//! Prometheus metrics, in one explicit registry so tests can run many proxies in one process.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Which part of the proxy answered a request.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum RouteClass {
    /// Forwarded to the upstream (whatever it answered, including our 502/504).
    Upstream,
    /// Served by the proxy itself under the 2FA prefix.
    Own,
    /// Refused before routing (malformed or smuggling-shaped requests).
    Rejected,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub class: RouteClass,
    pub status: u16,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum UpstreamFailure {
    Connect,
    Timeout,
    Protocol,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub kind: UpstreamFailure,
}

/// Label values in the lower case Prometheus users expect.
macro_rules! lowercase_label {
    ($ty:ty { $($variant:ident => $text:literal),* $(,)? }) => {
        impl EncodeLabelValue for $ty {
            fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
                use std::fmt::Write as _;
                encoder.write_str(match self { $(Self::$variant => $text),* })
            }
        }
    };
}

lowercase_label!(RouteClass { Upstream => "upstream", Own => "own", Rejected => "rejected" });
lowercase_label!(UpstreamFailure { Connect => "connect", Timeout => "timeout", Protocol => "protocol" });

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub upstream_seconds: Histogram,
    pub upstream_failures: Family<FailureLabels, Counter>,
    pub open_connections: Gauge<i64, std::sync::atomic::AtomicI64>,
    pub connections: Counter<u64, AtomicU64>,
    /// Second-factor checks by method ("totp", "recovery") and outcome ("passed", "failed", "locked").
    pub challenges: Family<Vec<(&'static str, &'static str)>, Counter>,
    pub lockouts: Counter<u64, AtomicU64>,
    /// 2FA turned on, off or reset, by method.
    pub enrollments: Family<Vec<(&'static str, &'static str)>, Counter>,
    /// Emails by kind ("login_code", "enrollment_code", "notice") and result ("sent", "failed").
    pub emails: Family<Vec<(&'static str, &'static str)>, Counter>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("twofa");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "Requests answered, by route class and status",
            requests.clone(),
        );
        // 0.5 ms .. ~16 s: loopback upstreams answer in well under a millisecond.
        let upstream_seconds = Histogram::new([
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ]);
        registry.register(
            "upstream_response_seconds",
            "Time from forwarding a request to the upstream's response head",
            upstream_seconds.clone(),
        );
        let upstream_failures = Family::<FailureLabels, Counter>::default();
        registry.register(
            "upstream_failures",
            "Upstream requests that failed, by kind",
            upstream_failures.clone(),
        );
        let open_connections = Gauge::default();
        registry.register(
            "open_connections",
            "Client connections open now",
            open_connections.clone(),
        );
        let connections = Counter::default();
        registry.register(
            "connections",
            "Client connections accepted",
            connections.clone(),
        );
        let challenges = Family::default();
        registry.register(
            "challenges",
            "Second-factor checks, by method and outcome",
            challenges.clone(),
        );
        let lockouts = Counter::default();
        registry.register(
            "lockouts",
            "Accounts locked after too many failed codes",
            lockouts.clone(),
        );
        let enrollments = Family::default();
        registry.register(
            "enrollments",
            "2FA enabled, disabled or reset, by method",
            enrollments.clone(),
        );
        let emails = Family::default();
        registry.register("emails", "Emails sent or failed, by kind", emails.clone());
        Self {
            registry,
            emails,
            requests,
            upstream_seconds,
            upstream_failures,
            open_connections,
            connections,
            challenges,
            lockouts,
            enrollments,
        }
    }

    pub fn count(&self, class: RouteClass, status: http::StatusCode) {
        self.requests
            .get_or_create(&RequestLabels {
                class,
                status: status.as_u16(),
            })
            .inc();
    }

    pub fn challenge(&self, method: &'static str, outcome: &'static str) {
        self.challenges
            .get_or_create(&vec![("method", method), ("outcome", outcome)])
            .inc();
    }

    pub fn enrollment(&self, action: &'static str, method: &'static str) {
        self.enrollments
            .get_or_create(&vec![("action", action), ("method", method)])
            .inc();
    }

    pub fn email(&self, kind: &'static str, result: &'static str) {
        self.emails
            .get_or_create(&vec![("kind", kind), ("result", result)])
            .inc();
    }

    pub fn upstream_failure(&self, kind: UpstreamFailure) {
        self.upstream_failures
            .get_or_create(&FailureLabels { kind })
            .inc();
    }

    /// OpenMetrics text, as served on the admin listener's `/metrics`.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Content type of [`Metrics::encode`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
