//! Every phase of a connection ends: a TLS client silent after its handshake, an HTTP/2 (h2c or
//! TLS) connection idle after its preface or its last request, HTTP/1.1 over TLS between
//! requests. A request in flight is not cut short by the idle deadline. Timeouts are short here
//! (config overrides); each wait is bounded well above them.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::support::*;

/// Short deadlines: 300 ms for the first request, 500 ms between requests.
const SHORT: &[(&str, &str)] = &[
    ("TWOFA_SERVER__HEADER_READ_TIMEOUT", "300ms"),
    ("TWOFA_SERVER__KEEPALIVE_TIMEOUT", "500ms"),
];

/// Far above every deadline under test (and their hard-close bound): a connection still open
/// after this was never going to close.
const BOUND: Duration = Duration::from_secs(5);

struct TlsProxy {
    proxy: twofa_proxy::app::Running,
    ca: std::path::PathBuf,
    _dir: TempDir,
}

async fn tls_proxy(upstream: SocketAddr) -> TlsProxy {
    init();
    let dir = TempDir::new("deadlines");
    let (cert, key) = self_signed(&dir.0);
    let cert_s = cert.display().to_string();
    let key_s = key.display().to_string();
    let mut overrides = SHORT.to_vec();
    overrides.push(("TWOFA_SERVER__TLS_CERT", &cert_s));
    overrides.push(("TWOFA_SERVER__TLS_KEY", &key_s));
    let proxy = proxy(upstream, &overrides).await;
    TlsProxy {
        proxy,
        ca: cert,
        _dir: dir,
    }
}

async fn tls_connect(addr: SocketAddr, ca: &Path, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(addr).await.unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

/// Reads until the peer closes (EOF or a reset); everything read on the way. Fails the test if
/// the connection is still open after [`BOUND`].
async fn read_until_closed(io: &mut (impl AsyncRead + Unpin)) -> Vec<u8> {
    let mut got = Vec::new();
    let closed = tokio::time::timeout(BOUND, async {
        let mut buf = [0u8; 4096];
        for _ in 0..10_000 {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the connection is still open");
    got
}

/// The types of the HTTP/2 frames in `bytes` (a server's side of a connection).
fn frame_types(bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 9 {
        let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
        types.push(rest[3]);
        rest = &rest[(9 + len).min(rest.len())..];
    }
    types
}

const GOAWAY: u8 = 0x7;
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame.
const SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

#[tokio::test]
async fn a_tls_client_silent_after_its_handshake_is_closed() {
    let (up, _stop) = demo_upstream().await;
    let site = tls_proxy(up).await;
    // Whatever protocol ALPN chose, or none.
    for alpn in [&[][..], &[&b"http/1.1"[..]], &[&b"h2"[..]]] {
        let mut tls = tls_connect(site.proxy.addr, &site.ca, alpn).await;
        read_until_closed(&mut tls).await;
    }
}

#[tokio::test]
async fn an_h2c_connection_idle_after_its_preface_gets_goaway_and_closes() {
    let (up, _stop) = demo_upstream().await;
    let proxy = proxy(up, SHORT).await;
    let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(PREFACE).await.unwrap();
    tcp.write_all(SETTINGS).await.unwrap();
    let got = read_until_closed(&mut tcp).await;
    assert!(
        frame_types(&got).contains(&GOAWAY),
        "{:?}",
        frame_types(&got)
    );
}

#[tokio::test]
async fn an_h2_connection_idle_after_a_request_is_closed() {
    let (up, _stop) = demo_upstream().await;
    let site = tls_proxy(up).await;
    let tls = tls_connect(site.proxy.addr, &site.ca, &[b"h2"]).await;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let res = sender
        .send_request(
            Request::get(format!(
                "https://localhost:{}/debug/hello",
                site.proxy.addr.port()
            ))
            .body(full(""))
            .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.into_body().collect().await.unwrap().to_bytes(),
        "hello\n"
    );
    // The client answers the GOAWAY's PING, so the graceful end completes.
    let ended = tokio::time::timeout(BOUND, conn).await;
    assert!(ended.is_ok(), "the idle h2 connection is still open");
}

#[tokio::test]
async fn http1_over_tls_idle_after_a_request_is_closed() {
    let (up, _stop) = demo_upstream().await;
    let site = tls_proxy(up).await;
    let mut tls = tls_connect(site.proxy.addr, &site.ca, &[b"http/1.1"]).await;
    tls.write_all(b"GET /debug/hello HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let got = read_until_closed(&mut tls).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(text.ends_with("hello\n"), "{text}");
}

/// An upstream that takes 1.2 s to answer `/slow-head`, and streams `/slow-body` over 1.2 s:
/// both far longer than the short deadlines.
async fn slow_upstream() -> SocketAddr {
    scripted_upstream(|req: Request<hyper::body::Incoming>| async move {
        if req.uri().path() == "/slow-head" {
            tokio::time::sleep(Duration::from_millis(1200)).await;
            return Response::new(full("late head"));
        }
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, BoxError>>(4);
        tokio::spawn(async move {
            for i in 0..4 {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let chunk = Bytes::from(format!("part {i};"));
                if tx.send(Ok(http_body::Frame::data(chunk))).await.is_err() {
                    return;
                }
            }
        });
        let stream = tokio_stream_from(rx);
        Response::new(BodyExt::boxed(StreamBody::new(stream)))
    })
    .await
}

/// A receiver as a stream, without another dependency.
fn tokio_stream_from<T>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn requests_in_flight_on_h2_are_not_cut_by_the_idle_deadline() {
    let proxy = proxy(slow_upstream().await, SHORT).await;
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let get = |path: &'static str| {
        let mut sender = sender.clone();
        let uri = format!("http://{}{path}", proxy.addr);
        async move {
            let res = sender
                .send_request(Request::get(uri).body(full("")).unwrap())
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::OK);
            res.into_body().collect().await.unwrap().to_bytes()
        }
    };
    let (head, body) = tokio::time::timeout(BOUND, async {
        tokio::join!(get("/slow-head"), get("/slow-body"))
    })
    .await
    .unwrap();
    assert_eq!(head, "late head");
    assert_eq!(body, "part 0;part 1;part 2;part 3;");
}
