//! HTTPS: the rustls listener (HTTP/1.1 and HTTP/2 by ALPN), HTTP/2 without TLS (h2c), and an
//! https upstream trusted through `upstream.ca_file`.

use std::path::Path;
use std::sync::Arc;

use http::{Request, Response, Version};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::support::*;

fn tls_client(
    ca: &Path,
    http2_only: bool,
) -> Client<hyper_rustls::HttpsConnector<HttpConnector>, TestBody> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only();
    // ALPN offers exactly the protocol under test.
    let connector = if http2_only {
        builder.enable_http2().build()
    } else {
        builder.enable_http1().build()
    };
    Client::builder(TokioExecutor::new())
        .http2_only(http2_only)
        .build(connector)
}

#[tokio::test]
async fn https_listener_speaks_http1_and_http2() {
    init();
    let dir = TempDir::new("tls");
    let (cert, key) = self_signed(&dir.0);
    let (up, _stop) = demo_upstream().await;
    let cert_s = cert.display().to_string();
    let key_s = key.display().to_string();
    let proxy = proxy(
        up,
        &[
            ("TWOFA_SERVER__TLS_CERT", &cert_s),
            ("TWOFA_SERVER__TLS_KEY", &key_s),
        ],
    )
    .await;
    let url = format!("https://localhost:{}/debug/headers", proxy.addr.port());

    for (http2, version) in [(false, Version::HTTP_11), (true, Version::HTTP_2)] {
        let res = tls_client(&cert, http2)
            .request(Request::get(&url).body(full("")).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.version(), version);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(seen(&echo, "x-forwarded-proto"), ["https"]);
        // The upstream always gets HTTP/1.1, with the Host the client addressed.
        assert_eq!(echo["version"], "HTTP/1.1");
        assert_eq!(
            seen(&echo, "host"),
            [format!("localhost:{}", proxy.addr.port())]
        );
    }
}

#[tokio::test]
async fn plain_listener_accepts_http2_prior_knowledge() {
    let (up, _stop) = demo_upstream().await;
    let proxy = proxy(up, &[]).await;
    let client: Client<HttpConnector, TestBody> = h2c_client();
    let res = client
        .request(
            Request::get(format!("http://{}/debug/hello", proxy.addr))
                .body(full(""))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.version(), Version::HTTP_2);
    assert_eq!(
        res.into_body().collect().await.unwrap().to_bytes(),
        "hello\n"
    );
}

#[tokio::test]
async fn https_upstream_with_a_configured_ca() {
    init();
    let dir = TempDir::new("tls-up");
    let (cert, key) = self_signed(&dir.0);
    let certs: Vec<_> = CertificateDer::pem_file_iter(&cert)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key_der = rustls::pki_types::PrivateKeyDer::from_pem_file(&key).unwrap();
    let server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(Response::new(full("secure upstream")))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });

    let ca = cert.display().to_string();
    let url = format!("https://localhost:{}", up.port());
    let trusted = twofa_proxy::app::start(config(&url, &[("TWOFA_UPSTREAM__CA_FILE", &ca)]))
        .await
        .unwrap();
    let res = get(&format!("http://{}/", trusted.addr), &[]).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.text(), "secure upstream");

    // Without the CA the certificate is not trusted: 502, never a silent downgrade.
    let untrusted = twofa_proxy::app::start(config(&url, &[])).await.unwrap();
    let res = get(&format!("http://{}/", untrusted.addr), &[]).await;
    assert_eq!(res.status, 502);
}
