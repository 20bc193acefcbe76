//! Forwarding to the protected app: hop-by-hop headers out, X-Forwarded-* in (believed only from
//! trusted proxies), path-rewriting headers out, timeouts mapped to 502/504, and `Upgrade`
//! (WebSocket) tunnels spliced once both sides agreed. Connections are the worker's own
//! (`pool.rs`).
//!
//! A tunnel is a socket the gate no longer sees, so it is opened only where the caller says a
//! tunnel may live ([`Tunnel`]), only for `websocket` or a protocol the operator listed (never
//! one that carries HTTP requests, such as `h2c`), and only when the upstream switched to exactly
//! the protocol asked for.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use ipnet::IpNet;

use crate::body::{Body, BoxError};
use crate::config::{UpstreamConfig, UpstreamScheme};
use crate::metrics::{Metrics, UpstreamFailure};

pub mod headers;
mod pool;

pub use pool::Lease;

use crate::listener::ConnInfo;
use pool::{Pool, SendError};

/// Why a request could not be forwarded; the router maps it to a status ([`Self::status`]).
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream refused or unreachable: {0}")]
    Connect(#[source] BoxError),
    #[error("upstream did not answer within {0:?}")]
    Timeout(Duration),
    #[error("upstream broke the exchange: {0}")]
    Protocol(#[source] hyper::Error),
    /// The client's own request (usually its body) broke while it was being forwarded.
    #[error("client request broke while forwarding: {0}")]
    ClientRequest(#[source] hyper::Error),
    /// The upstream switched protocols when it was not asked to, or to another protocol than
    /// the one asked for: no tunnel is made from that.
    #[error("upstream answered 101 without a matching upgrade request")]
    UnrequestedUpgrade,
}

impl UpstreamError {
    pub fn status(&self) -> StatusCode {
        match self {
            UpstreamError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            UpstreamError::Connect(_)
            | UpstreamError::Protocol(_)
            | UpstreamError::UnrequestedUpgrade => StatusCode::BAD_GATEWAY,
            UpstreamError::ClientRequest(_) => StatusCode::BAD_REQUEST,
        }
    }
}

/// Resolves when a tunnel must close (its session ended); made by the router, so this module
/// knows nothing of sessions.
pub type TunnelEnd = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Whether a request may become a tunnel (`Upgrade`), and what ends it. Where none may live, an
/// upgrade request goes upstream as a plain request (RFC 9110 7.8 lets a server ignore
/// `Upgrade`), and a 101 answer is refused.
pub enum Tunnel {
    /// No tunnel: the watched login, logout, anything that is not plain forwarding.
    Never,
    /// Until either side closes it: public paths, which carry no identity.
    UntilClosed,
    /// Until either side closes it or the future resolves (the session behind it ended).
    UntilEnded(TunnelEnd),
}

pub struct Upstream {
    pool: Arc<Pool>,
    authority: Authority,
    preserve_host: bool,
    response_timeout: Duration,
    trusted_proxies: Vec<IpNet>,
    /// Set by the gate before forwarding; kept even if the client names it in `Connection`.
    identity_header: Option<HeaderName>,
    /// Protocols besides `websocket` that may be tunnelled, lower case.
    upgrade_protocols: Vec<String>,
    metrics: Arc<Metrics>,
}

impl Upstream {
    pub fn new(
        config: &UpstreamConfig,
        trusted_proxies: Vec<IpNet>,
        identity_header: Option<HeaderName>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(config.connect_timeout));
        http.set_nodelay(true);
        // The connector also dials plain http; https is refused on an http upstream and vice versa.
        http.enforce_http(false);
        let tls = upstream_tls(config)?;
        let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls);
        let builder = match config.scheme {
            UpstreamScheme::Https => builder.https_only(),
            UpstreamScheme::Http => builder.https_or_http(),
        };
        let connector = builder.enable_http1().wrap_connector(http);
        let target = Uri::builder()
            .scheme(match config.scheme {
                UpstreamScheme::Http => Scheme::HTTP,
                UpstreamScheme::Https => Scheme::HTTPS,
            })
            .authority(config.authority.clone())
            .path_and_query("/")
            .build()?;
        Ok(Self {
            pool: Arc::new(Pool::new(
                connector,
                target,
                config.pool_max_idle_per_host,
                config.pool_idle_timeout,
            )),
            authority: config.authority.clone(),
            preserve_host: config.preserve_host,
            response_timeout: config.response_timeout,
            trusted_proxies,
            identity_header,
            upgrade_protocols: config.upgrade_protocols.clone(),
            metrics,
        })
    }

    /// Whether `req` asks for an upgrade this proxy would tunnel; the router builds a
    /// [`Tunnel::UntilEnded`] only then.
    pub fn would_tunnel<B>(&self, req: &Request<B>) -> bool {
        upgrade_protocol(req, &self.upgrade_protocols).is_some()
    }

    /// Sends `req` upstream as a plain request (never a tunnel) and returns the upstream's
    /// answer with its body still streaming.
    pub async fn forward(
        &self,
        req: Request<Body>,
        conn: &ConnInfo,
    ) -> Result<Response<Body>, UpstreamError> {
        self.forward_with(req, conn, Tunnel::Never).await
    }

    /// [`Self::forward`], letting a WebSocket (or allowed) upgrade become a tunnel as `tunnel`
    /// says.
    pub async fn forward_with(
        &self,
        mut req: Request<Body>,
        conn: &ConnInfo,
        tunnel: Tunnel,
    ) -> Result<Response<Body>, UpstreamError> {
        let upgrade = match tunnel {
            Tunnel::Never => None,
            Tunnel::UntilClosed | Tunnel::UntilEnded(_) => {
                upgrade_protocol(&req, &self.upgrade_protocols)
            }
        };
        let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
        let client_host = client_host(&req);

        let headers = req.headers_mut();
        // A client may name the identity header in `Connection`; the proxy's own value stays.
        let identity = self
            .identity_header
            .as_ref()
            .and_then(|h| Some((h.clone(), headers.get(h)?.clone())));
        remove_hop_by_hop(headers);
        if let Some((name, value)) = identity {
            headers.insert(name, value);
        }
        self.set_forwarded(headers, conn, client_host.as_ref());
        if let Some(protocol) = &upgrade {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, protocol.clone());
        }
        let host = match (&client_host, self.preserve_host) {
            (Some(h), true) => h.clone(),
            _ => HeaderValue::from_str(self.authority.as_str())
                .unwrap_or(HeaderValue::from_static("localhost")),
        };
        headers.insert(header::HOST, host);

        // Origin form (the Host header names the target); the upstream is spoken to in HTTP/1.1.
        let path = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        *req.uri_mut() = Uri::from(path);
        *req.version_mut() = Version::HTTP_11;

        let started = Instant::now();
        let result = tokio::time::timeout(self.response_timeout, self.pool.send(req)).await;
        let mut res = match result {
            Err(_) => {
                self.metrics.upstream_failure(UpstreamFailure::Timeout);
                return Err(UpstreamError::Timeout(self.response_timeout));
            }
            Ok(Err(SendError::Connect(e))) => {
                self.metrics.upstream_failure(UpstreamFailure::Connect);
                return Err(UpstreamError::Connect(e));
            }
            // hyper reports a request body that broke (a client's malformed chunked encoding,
            // a client gone mid-upload) as a "user" error: our side of the exchange.
            Ok(Err(SendError::Http(e))) if e.is_user() => {
                return Err(UpstreamError::ClientRequest(e));
            }
            Ok(Err(SendError::Http(e))) => {
                self.metrics.upstream_failure(UpstreamFailure::Protocol);
                return Err(UpstreamError::Protocol(e));
            }
            Ok(Ok(res)) => res,
        };
        self.metrics
            .upstream_seconds
            .observe(started.elapsed().as_secs_f64());

        if res.status() != StatusCode::SWITCHING_PROTOCOLS {
            remove_hop_by_hop(res.headers_mut());
            return Ok(res);
        }
        // A switch is only accepted to exactly the protocol asked for; anything else would be a
        // socket the gate never agreed to (dropping the answer closes that upstream connection).
        let (Some(client_upgrade), Some(protocol)) = (client_upgrade, upgrade) else {
            self.metrics.upstream_failure(UpstreamFailure::Protocol);
            return Err(UpstreamError::UnrequestedUpgrade);
        };
        let agreed = single_token(res.headers(), header::UPGRADE)
            .is_some_and(|answer| answer.as_bytes().eq_ignore_ascii_case(protocol.as_bytes()));
        if !agreed {
            self.metrics.upstream_failure(UpstreamFailure::Protocol);
            return Err(UpstreamError::UnrequestedUpgrade);
        }
        remove_hop_by_hop(res.headers_mut());
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        res.headers_mut().insert(header::UPGRADE, protocol);
        let upstream_upgrade = hyper::upgrade::on(&mut res);
        let end = match tunnel {
            Tunnel::UntilEnded(end) => Some(end),
            Tunnel::Never | Tunnel::UntilClosed => None,
        };
        tokio::spawn(splice(client_upgrade, upstream_upgrade, end));
        Ok(res)
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }

    fn set_forwarded(
        &self,
        headers: &mut HeaderMap,
        conn: &ConnInfo,
        client_host: Option<&HeaderValue>,
    ) {
        remove_named(headers, PATH_OVERRIDES);
        let peer = canonical_ip(conn.peer.ip());
        let peer_text =
            HeaderValue::from_str(&peer.to_string()).unwrap_or(HeaderValue::from_static("unknown"));
        let proto = HeaderValue::from_static(if conn.tls { "https" } else { "http" });
        if self.is_trusted(peer) {
            // Extend the chain the trusted proxy started; keep what it said about proto and host.
            let chain = headers
                .get_all(X_FORWARDED_FOR)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect::<Vec<_>>()
                .join(", ");
            let value = if chain.is_empty() {
                peer.to_string()
            } else {
                format!("{chain}, {peer}")
            };
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(X_FORWARDED_FOR, v);
            }
            if !headers.contains_key(X_FORWARDED_PROTO) {
                headers.insert(X_FORWARDED_PROTO, proto);
            }
            if !headers.contains_key(X_FORWARDED_HOST)
                && let Some(h) = client_host
            {
                headers.insert(X_FORWARDED_HOST, h.clone());
            }
        } else {
            // A client may not tell the app who it is or how it connected (ASVS 5.0 4.1.3).
            remove_named(headers, SPOOFABLE);
            headers.insert(X_FORWARDED_FOR, peer_text);
            headers.insert(X_FORWARDED_PROTO, proto);
            if let Some(h) = client_host {
                headers.insert(X_FORWARDED_HOST, h.clone());
            }
        }
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Headers through which a client could pose as a proxy hop; dropped from untrusted peers.
const SPOOFABLE: &[&str] = &[
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-server",
    "x-forwarded-ssl",
    "x-real-ip",
    "x-client-ip",
    "forwarded",
];

/// Headers with which frameworks let a proxy replace or prefix the request's path (IIS and
/// Symfony, Spring and ASP.NET, Traefik, Envoy, WSGI recipes). The gate decided on the request
/// line's path; the app must route on that same path, so these are dropped from every peer,
/// trusted proxies included.
const PATH_OVERRIDES: &[&str] = &[
    "x-original-url",
    "x-original-uri",
    "x-original-path",
    "x-rewrite-url",
    "x-forwarded-prefix",
    "x-forwarded-uri",
    "x-forwarded-path",
    "x-envoy-original-path",
    "x-script-name",
];

/// Removes every header named in `names`, in any spelling a lenient upstream treats as the
/// same: CGI-style upstreams read `X_Forwarded_For` as `X-Forwarded-For`.
fn remove_named(headers: &mut HeaderMap, names: &[&str]) {
    if !headers
        .keys()
        .any(|k| names.iter().any(|n| same_name(k.as_str(), n)))
    {
        return;
    }
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|k| names.iter().any(|n| same_name(k.as_str(), n)))
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(name);
    }
}

/// Header names compared as lenient upstreams compare them: `_` and `-` alike (names are
/// already lower case).
pub fn same_name(a: &str, b: &str) -> bool {
    let fold = |c: u8| if c == b'_' { b'-' } else { c };
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| fold(x) == fold(y))
}

/// RFC 9110 7.6.1 connection-specific headers, plus the legacy `Proxy-Connection` and h2c's
/// `HTTP2-Settings` (RFC 7540 3.2.1: it only ever describes this one connection).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "http2-settings",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Removes the connection-specific headers and every header the `Connection` header names.
/// The caller sets its own forwarding headers afterwards, so naming `X-Forwarded-For` in
/// `Connection` cannot remove what the proxy adds.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none of them: one pass over the names instead of a hash lookup per
    // hop-by-hop name (this runs twice on every forwarded request).
    if !headers.keys().any(|k| HOP_BY_HOP.contains(&k.as_str())) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    for name in &named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

/// `Some(protocol)` for an HTTP/1.1 request asking to switch to exactly one protocol that may
/// be tunnelled: `websocket` or one of `allowed` (lower case), compared case-insensitively. A
/// list (`websocket, h2c`, or two `Upgrade` fields) is not an upgrade we make: the upstream
/// would choose, and could choose the one we refuse.
fn upgrade_protocol<B>(req: &Request<B>, allowed: &[String]) -> Option<HeaderValue> {
    if req.version() != Version::HTTP_11 || !connection_names(req.headers(), "upgrade") {
        return None;
    }
    let protocol = single_token(req.headers(), header::UPGRADE)?;
    let wanted = protocol.eq_ignore_ascii_case(WEBSOCKET)
        || allowed.iter().any(|a| a.eq_ignore_ascii_case(protocol));
    // Sent upstream in the one spelling the answer is checked against.
    wanted.then(|| HeaderValue::from_str(protocol).ok())?
}

const WEBSOCKET: &str = "websocket";

/// The value of `name` if the message has exactly one such field holding exactly one token.
fn single_token(headers: &HeaderMap, name: HeaderName) -> Option<&str> {
    let mut values = headers.get_all(name).iter();
    let value = values.next()?.to_str().ok()?.trim();
    if values.next().is_some() || value.is_empty() || value.contains([',', ' ', '\t']) {
        return None;
    }
    Some(value)
}

/// Upgrade protocols an operator may not allow: each carries HTTP requests of its own, which
/// would reach the app past the gate on an already-approved connection.
pub fn carries_http(protocol: &str) -> bool {
    let p = protocol.to_ascii_lowercase();
    p == "h2c" || p == "h2" || p.starts_with("http/") || p.starts_with("h3")
}

/// Whether any `Connection` header lists `token` (RFC 9110 7.6.1: a comma-separated list,
/// case-insensitive).
pub fn connection_names(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The host the client addressed: `Host` in HTTP/1.1, the `:authority` in HTTP/2.
pub fn client_host<B>(req: &Request<B>) -> Option<HeaderValue> {
    req.headers().get(header::HOST).cloned().or_else(|| {
        req.uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    })
}

/// IPv4 peers on a dual-stack socket show up as `::ffff:a.b.c.d`; CIDRs are written as IPv4.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// Copies both ways until either side closes or `end` resolves; then both sockets are dropped,
/// which closes them.
async fn splice(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    end: Option<TunnelEnd>,
) {
    let tunnel = async move {
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(both) => both,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade did not complete");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            tracing::debug!(error = %e, "upgraded connection ended with an error");
        }
    };
    match end {
        None => tunnel.await,
        Some(end) => {
            tokio::select! {
                () = tunnel => {}
                () = end => tracing::debug!("tunnel closed: its session ended"),
            }
        }
    }
}

fn upstream_tls(config: &UpstreamConfig) -> anyhow::Result<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let mut roots = rustls::RootCertStore::empty();
    // The OS store may be missing in a slim image; an explicit ca_file is then enough.
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = &config.ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| anyhow::anyhow!("upstream.ca_file {}: {e}", path.display()))?;
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| anyhow::anyhow!("upstream.ca_file {}: {e}", path.display()))?;
        }
    }
    Ok(rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, HeaderValue::from_static(""));
        h.append(
            header::CONNECTION,
            HeaderValue::from_static("close, X-Secret , keep-alive"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(
            header::PROXY_AUTHORIZATION,
            HeaderValue::from_static("Basic x"),
        );
        h.insert("x-kept", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn upgrade_needs_both_headers_and_http11() {
        let req = |conn: &str, version| {
            Request::builder()
                .version(version)
                .header(header::CONNECTION, conn)
                .header(header::UPGRADE, "websocket")
                .body(())
                .unwrap()
        };
        assert!(upgrade_protocol(&req("keep-alive, Upgrade", Version::HTTP_11), &[]).is_some());
        assert!(upgrade_protocol(&req("keep-alive", Version::HTTP_11), &[]).is_none());
        assert!(upgrade_protocol(&req("upgrade", Version::HTTP_10), &[]).is_none());
    }

    #[test]
    fn only_one_allowed_protocol_is_an_upgrade() {
        let req = |upgrades: &[&str]| {
            let mut b = Request::builder().header(header::CONNECTION, "Upgrade");
            for u in upgrades {
                b = b.header(header::UPGRADE, *u);
            }
            b.body(()).unwrap()
        };
        let allowed = ["tls/1.0".to_owned()];
        let asked = |u: &[&str]| upgrade_protocol(&req(u), &allowed).map(|v| v.to_owned());
        assert_eq!(asked(&["WebSocket"]).unwrap(), "WebSocket");
        assert_eq!(asked(&[" websocket "]).unwrap(), "websocket");
        assert_eq!(asked(&["TLS/1.0"]).unwrap(), "TLS/1.0");
        for refused in [
            &["h2c"][..],
            &["websocket, h2c"],
            &["h2c,websocket"],
            &["websocket", "h2c"],
            &["websocket", "websocket"],
            &["websocket h2c"],
            &["websocket/13"],
            &[""],
            &[],
        ] {
            assert!(asked(refused).is_none(), "{refused:?}");
        }
    }

    #[test]
    fn protocols_that_carry_http_are_never_allowed() {
        for p in ["h2c", "H2C", "h2", "HTTP/2.0", "http/1.1", "h3"] {
            assert!(carries_http(p), "{p}");
        }
        assert!(!carries_http("websocket"));
        assert!(!carries_http("tls/1.0"));
    }

    #[test]
    fn http2_settings_never_goes_upstream() {
        let mut h = HeaderMap::new();
        h.insert(
            "http2-settings",
            HeaderValue::from_static("AAMAAABkAAQAoAAAAAIAAAAA"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        remove_hop_by_hop(&mut h);
        assert!(h.is_empty(), "{h:?}");
    }

    #[test]
    fn mapped_ipv4_peers_match_ipv4_cidrs() {
        let ip: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(canonical_ip(ip), "10.1.2.3".parse::<IpAddr>().unwrap());
    }
}
