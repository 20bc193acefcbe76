//! Forwarding to the protected app: hop-by-hop headers out, X-Forwarded-* in (believed only from
//! trusted proxies), timeouts mapped to 502/504, and `Upgrade` (WebSocket) tunnels spliced once
//! both sides agreed. Connections are the worker's own (`pool.rs`).

use std::net::{IpAddr, SocketAddr};
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

mod pool;

pub use pool::Lease;
use pool::{Pool, SendError};

/// What the listener knows about the connection a request came in on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
}

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
}

impl UpstreamError {
    pub fn status(&self) -> StatusCode {
        match self {
            UpstreamError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            UpstreamError::Connect(_) | UpstreamError::Protocol(_) => StatusCode::BAD_GATEWAY,
            UpstreamError::ClientRequest(_) => StatusCode::BAD_REQUEST,
        }
    }
}

pub struct Upstream {
    pool: Arc<Pool>,
    authority: Authority,
    preserve_host: bool,
    response_timeout: Duration,
    trusted_proxies: Vec<IpNet>,
    /// Set by the gate before forwarding; kept even if the client names it in `Connection`.
    identity_header: Option<HeaderName>,
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
            metrics,
        })
    }

    /// Sends `req` upstream and returns the upstream's answer with its body still streaming.
    pub async fn forward(
        &self,
        mut req: Request<Body>,
        conn: &ConnInfo,
    ) -> Result<Response<Body>, UpstreamError> {
        let upgrade = upgrade_protocol(&req);
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

        let switching = res.status() == StatusCode::SWITCHING_PROTOCOLS;
        let accepted_protocol = res.headers().get(header::UPGRADE).cloned();
        remove_hop_by_hop(res.headers_mut());
        if let (true, Some(client_upgrade), Some(protocol)) =
            (switching, client_upgrade, accepted_protocol)
        {
            res.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            res.headers_mut().insert(header::UPGRADE, protocol);
            let upstream_upgrade = hyper::upgrade::on(&mut res);
            tokio::spawn(splice(client_upgrade, upstream_upgrade));
        }
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
            // Underscore spellings too: CGI-style upstreams read `X_Forwarded_For` as the same.
            let doomed: Vec<HeaderName> = headers
                .keys()
                .filter(|k| SPOOFABLE.iter().any(|s| same_name(k.as_str(), s)))
                .cloned()
                .collect();
            for name in doomed {
                headers.remove(name);
            }
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
    "x-forwarded-prefix",
    "x-forwarded-uri",
    "x-forwarded-server",
    "x-forwarded-ssl",
    "x-real-ip",
    "x-client-ip",
    "x-original-url",
    "x-original-uri",
    "x-rewrite-url",
    "forwarded",
];

/// Header names compared as lenient upstreams compare them: `_` and `-` alike (names are
/// already lower case).
pub fn same_name(a: &str, b: &str) -> bool {
    let fold = |c: u8| if c == b'_' { b'-' } else { c };
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| fold(x) == fold(y))
}

/// RFC 9110 7.6.1 connection-specific headers, plus the legacy `Proxy-Connection`.
const HOP_BY_HOP: &[&str] = &[
    "connection",
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

/// `Some(protocol)` for an HTTP/1.1 request asking to switch protocols (WebSocket and friends).
fn upgrade_protocol<B>(req: &Request<B>) -> Option<HeaderValue> {
    if req.version() != Version::HTTP_11 {
        return None;
    }
    if connection_names(req.headers(), "upgrade") {
        req.headers().get(header::UPGRADE).cloned()
    } else {
        None
    }
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

async fn splice(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
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
        assert!(upgrade_protocol(&req("keep-alive, Upgrade", Version::HTTP_11)).is_some());
        assert!(upgrade_protocol(&req("keep-alive", Version::HTTP_11)).is_none());
        assert!(upgrade_protocol(&req("upgrade", Version::HTTP_10)).is_none());
    }

    #[test]
    fn mapped_ipv4_peers_match_ipv4_cidrs() {
        let ip: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(canonical_ip(ip), "10.1.2.3".parse::<IpAddr>().unwrap());
    }
}
