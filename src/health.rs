//! Liveness and readiness, one answer for every place that asks: the admin listener's
//! `/healthz` and `/readyz`, and the same two under the proxy's prefix on the main listener
//! (`/_2fa/healthz`, `/_2fa/readyz`), which a kubelet can reach on the pod IP without the admin
//! API being exposed. The probe routes are answered before the router: never forwarded, never
//! needing a session.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use http::{HeaderValue, StatusCode, header};

use crate::body::Body;
use crate::records::Records;
use crate::state::Core;
use crate::store::Store;

/// Probe paths under the prefix on the main listener.
pub const LIVE_SUFFIX: &str = "/healthz";
pub const READY_SUFFIX: &str = "/readyz";

/// What the process can do right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// The store has not been reached since the start: every protected request answers 503.
    Starting,
    /// A shutdown began: readiness fails so endpoints are removed, requests are still served.
    Draining,
    StoreDown,
    RecordsDown,
    /// Records that may have been replaced (see [`crate::records::identity`]).
    RecordsUnconfirmed,
}

impl Readiness {
    pub fn status(&self) -> StatusCode {
        match self {
            Readiness::Ready => StatusCode::OK,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The probe's body: what an operator reading `curl` output needs, nothing more.
    pub fn text(&self) -> &'static str {
        match self {
            Readiness::Ready => "ready\n",
            Readiness::Starting => "starting: store not reached yet\n",
            Readiness::Draining => "draining\n",
            Readiness::StoreDown => "store unavailable\n",
            Readiness::RecordsDown => "records unavailable\n",
            Readiness::RecordsUnconfirmed => {
                "records not confirmed: twofa-proxy admin confirm-records\n"
            }
        }
    }
}

/// Shared by both listeners: the serving [`Core`] once the store is open (swapped on reload),
/// and whether a shutdown began.
#[derive(Default)]
pub struct Health {
    core: RwLock<Option<Arc<Core>>>,
    draining: AtomicBool,
}

impl Health {
    /// The core requests are served with; `None` while the store has not been reached.
    pub fn core(&self) -> Option<Arc<Core>> {
        self.core.read().ok().and_then(|c| c.clone())
    }

    pub(crate) fn set_core(&self, core: Arc<Core>) {
        if let Ok(mut slot) = self.core.write() {
            *slot = Some(core);
        }
    }

    pub(crate) fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Asks the store and the records (a round trip each when they are remote).
    pub async fn readiness(&self) -> Readiness {
        if self.draining() {
            return Readiness::Draining;
        }
        let Some(core) = self.core() else {
            return Readiness::Starting;
        };
        // Without the store or the records every protected request is refused, so the proxy
        // is not ready.
        match (core.store.ping().await, core.records.ping().await) {
            (Err(_), _) => Readiness::StoreDown,
            (_, Err(_)) => Readiness::RecordsDown,
            _ if !core.records.trusted() => Readiness::RecordsUnconfirmed,
            _ => Readiness::Ready,
        }
    }
}

/// A small plain-text answer (probes, the admin listener, the not-yet-started proxy).
pub fn text(status: StatusCode, body: &'static str) -> http::Response<Body> {
    let mut res = http::Response::new(Body::from(body));
    *res.status_mut() = status;
    let headers = res.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    // A cached "ready" would hide an outage.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// `twofa-proxy health`: asks a running proxy's readiness route on the main listener (plain
/// HTTP or TLS), for an image's exec-form HEALTHCHECK where there is no shell or curl.
/// Errors when the answer is not 200.
pub async fn probe(config: &crate::config::Config, live_only: bool) -> anyhow::Result<String> {
    use http_body_util::BodyExt as _;

    let mut addr = config.server.listen;
    if addr.ip().is_unspecified() {
        // 0.0.0.0 / [::] listen on loopback too; ask there.
        addr.set_ip(match addr.ip() {
            std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let suffix = if live_only { LIVE_SUFFIX } else { READY_SUFFIX };
    let path = format!("{}{suffix}", config.twofactor.prefix);
    let connect = tokio::net::TcpStream::connect(addr);
    let stream = tokio::time::timeout(std::time::Duration::from_secs(5), connect)
        .await
        .map_err(|_| anyhow::anyhow!("{addr}: no answer within 5 s"))?
        .map_err(|e| anyhow::anyhow!("cannot reach {addr}: {e}"))?;
    let req = http::Request::get(&path)
        .header(header::HOST, addr.to_string())
        .body(http_body_util::Empty::<bytes::Bytes>::new())?;
    let exchange = async {
        let res = if config.server.tls.is_some() {
            let tls = probe_tls(stream).await?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
            tokio::spawn(conn);
            sender.send_request(req).await?
        } else {
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            sender.send_request(req).await?
        };
        let status = res.status();
        let body = res.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, String::from_utf8_lossy(&body).trim().to_owned()))
    };
    let (status, body) = tokio::time::timeout(std::time::Duration::from_secs(5), exchange)
        .await
        .map_err(|_| anyhow::anyhow!("{addr}{path}: no answer within 5 s"))??;
    if status != StatusCode::OK {
        anyhow::bail!("{addr}{path}: {status}: {body}");
    }
    Ok(body)
}

/// The probe talks to its own process: the certificate is the one this config names, so
/// checking it against a CA would only fail for self-signed ones. The answer carries no secret.
async fn probe_tls(
    stream: tokio::net::TcpStream,
) -> anyhow::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    crate::app::install_crypto_provider();
    let config = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate))
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost")?;
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, stream)
        .await?)
}

#[derive(Debug)]
struct AnyCertificate;

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &supported_schemes())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &supported_schemes())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        supported_schemes().supported_schemes()
    }
}

fn supported_schemes() -> rustls::crypto::WebPkiSupportedAlgorithms {
    rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms
}
