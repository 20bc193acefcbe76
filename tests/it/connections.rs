//! Keep-alive connections: between requests a plain HTTP/1.1 connection parks (hyper's state is
//! dropped, only the socket kept). Whatever the client does around those pauses must still work:
//! pauses, pipelining, a head split across packets, bodies, the keep-alive timeout and draining.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// Long enough for the proxy to have parked the connection in between.
const PAUSE: Duration = Duration::from_millis(150);

/// Reads one response (Content-Length or chunked) from `stream`: status line and body.
async fn response(stream: &mut TcpStream, pending: &mut Vec<u8>) -> (String, Vec<u8>) {
    let head_end = loop {
        if let Some(i) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        read_more(stream, pending).await;
    };
    let head = String::from_utf8_lossy(&pending[..head_end]).into_owned();
    pending.drain(..head_end);
    let status = head.lines().next().unwrap_or_default().to_owned();
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    };
    let body = if let Some(len) = header("content-length") {
        let len: usize = len.parse().unwrap();
        while pending.len() < len {
            read_more(stream, pending).await;
        }
        pending.drain(..len).collect()
    } else if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = pending.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                read_more(stream, pending).await;
            };
            let size =
                usize::from_str_radix(String::from_utf8_lossy(&pending[..line_end]).trim(), 16)
                    .unwrap();
            while pending.len() < line_end + 2 + size + 2 {
                read_more(stream, pending).await;
            }
            body.extend_from_slice(&pending[line_end + 2..line_end + 2 + size]);
            pending.drain(..line_end + 2 + size + 2);
            if size == 0 {
                break body;
            }
        }
    } else {
        Vec::new()
    };
    (status, body)
}

async fn read_more(stream: &mut TcpStream, pending: &mut Vec<u8>) {
    let mut buf = [0u8; 16 * 1024];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
        .await
        .expect("no answer within 10 s")
        .unwrap();
    assert!(n > 0, "connection closed mid-answer");
    pending.extend_from_slice(&buf[..n]);
}

fn hello() -> &'static [u8] {
    b"GET /debug/hello HTTP/1.1\r\nHost: t\r\n\r\n"
}

/// Asserts the proxy closes `stream` within `within`, reading off anything before it.
async fn closed_within(stream: &mut TcpStream, within: Duration) {
    let mut rest = Vec::new();
    let read = tokio::time::timeout(within, stream.read_to_end(&mut rest)).await;
    // EOF, or a reset when the proxy closed with the client's bytes unread.
    assert!(read.is_ok(), "connection still open after {within:?}");
}

async fn connect(addr: SocketAddr) -> (TcpStream, Vec<u8>) {
    (TcpStream::connect(addr).await.unwrap(), Vec::new())
}

#[tokio::test]
async fn a_connection_keeps_serving_across_pauses_pipelining_and_split_heads() {
    let (up, _stop) = demo_upstream().await;
    let proxy = proxy(up, &[]).await;
    let (mut s, mut pending) = connect(proxy.addr).await;

    // Requests separated by pauses, each after the connection parked.
    for _ in 0..3 {
        s.write_all(hello()).await.unwrap();
        let (status, body) = response(&mut s, &mut pending).await;
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        assert_eq!(body, b"hello\n");
        tokio::time::sleep(PAUSE).await;
    }

    // Three pipelined requests in one write: three answers, in order.
    let three = [
        &b"GET /debug/bytes?n=3 HTTP/1.1\r\nHost: t\r\n\r\n"[..],
        hello(),
        b"GET /debug/bytes?n=5 HTTP/1.1\r\nHost: t\r\n\r\n",
    ]
    .concat();
    s.write_all(&three).await.unwrap();
    for want in [&b"xxx"[..], b"hello\n", b"xxxxx"] {
        let (status, body) = response(&mut s, &mut pending).await;
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        assert_eq!(body, want);
    }

    // A head split across a pause: the first part must not be lost when the connection parks.
    s.write_all(b"GET /debug/hello HTTP/1.1\r\nHo")
        .await
        .unwrap();
    tokio::time::sleep(PAUSE).await;
    s.write_all(b"st: t\r\n\r\n").await.unwrap();
    let (status, body) = response(&mut s, &mut pending).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(body, b"hello\n");

    // One request and half of the next in one write, the rest after a pause.
    let mut both = hello().to_vec();
    both.extend_from_slice(b"GET /debug/hel");
    s.write_all(&both).await.unwrap();
    let (status, _) = response(&mut s, &mut pending).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    tokio::time::sleep(PAUSE).await;
    s.write_all(b"lo HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let (status, body) = response(&mut s, &mut pending).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(body, b"hello\n");

    // A body sent slowly, in two parts with a pause: it all reaches the app, and the
    // connection goes on.
    s.write_all(b"POST /debug/upload HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n01234")
        .await
        .unwrap();
    tokio::time::sleep(PAUSE).await;
    s.write_all(b"56789").await.unwrap();
    let (status, body) = response(&mut s, &mut pending).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()["bytes"],
        10
    );
    tokio::time::sleep(PAUSE).await;
    s.write_all(hello()).await.unwrap();
    let (status, _) = response(&mut s, &mut pending).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");

    // A slow answer (longer than a pause) keeps the connection too.
    s.write_all(b"GET /debug/slow?ms=400 HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let (status, body) = response(&mut s, &mut pending).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(body, b"slept 400 ms\n");
    s.write_all(hello()).await.unwrap();
    let (status, _) = response(&mut s, &mut pending).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");

    // `Connection: close` still closes after the answer.
    s.write_all(b"GET /debug/hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (status, _) = response(&mut s, &mut pending).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    closed_within(&mut s, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn idle_connections_close_after_the_keepalive_timeout() {
    let (up, _stop) = demo_upstream().await;
    let proxy = proxy(up, &[("TWOFA_SERVER__KEEPALIVE_TIMEOUT", "300ms")]).await;

    // After an answer.
    let (mut s, mut pending) = connect(proxy.addr).await;
    s.write_all(hello()).await.unwrap();
    let (status, _) = response(&mut s, &mut pending).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    closed_within(&mut s, Duration::from_secs(5)).await;

    // A client that connects and never speaks.
    let (mut silent, _) = connect(proxy.addr).await;
    closed_within(&mut silent, Duration::from_secs(5)).await;

    // A connection that keeps asking stays open past the timeout.
    let (mut busy, mut pending) = connect(proxy.addr).await;
    for _ in 0..4 {
        busy.write_all(hello()).await.unwrap();
        let (status, _) = response(&mut busy, &mut pending).await;
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

#[tokio::test]
async fn shutdown_closes_idle_connections_at_once_and_finishes_busy_ones() {
    let (up, _stop) = demo_upstream().await;
    // The grace period is far longer than the waits below: closing must not wait for it.
    let proxy = proxy(up, &[("TWOFA_SERVER__SHUTDOWN_GRACE", "30s")]).await;
    let (mut idle, mut pending) = connect(proxy.addr).await;
    idle.write_all(hello()).await.unwrap();
    response(&mut idle, &mut pending).await;
    let (mut busy, mut busy_pending) = connect(proxy.addr).await;
    busy.write_all(b"GET /debug/slow?ms=600 HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    proxy.shutdown();
    closed_within(&mut idle, Duration::from_secs(5)).await;
    let (status, body) = response(&mut busy, &mut busy_pending).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(body, b"slept 600 ms\n");
    closed_within(&mut busy, Duration::from_secs(5)).await;
    tokio::time::timeout(Duration::from_secs(10), proxy.wait())
        .await
        .expect("the drain waited for the grace period");
}

/// An upstream that counts the connections it accepts; `/big` answers 256 KiB, `/empty` 204,
/// `/head-ok` anything else a short text.
async fn counting_upstream() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let accepted = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req: http::Request<_>| async move {
                    let res = match req.uri().path() {
                        "/big" => http::Response::new(full(vec![b'b'; 256 * 1024])),
                        "/empty" => http::Response::builder()
                            .status(204)
                            .body(full(bytes::Bytes::new()))
                            .unwrap(),
                        _ => http::Response::new(full("ok")),
                    };
                    Ok::<_, std::convert::Infallible>(res)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn upstream_connections_are_reused_once_an_answer_is_read() {
    use std::sync::atomic::Ordering;
    let (up, accepted) = counting_upstream().await;
    let proxy = proxy(up, &[]).await;
    let (mut s, mut pending) = connect(proxy.addr).await;
    for (path, status, len) in [
        ("/small", "200", 2),
        ("/big", "200", 256 * 1024),
        ("/empty", "204", 0),
        ("/small", "200", 2),
        ("/big", "200", 256 * 1024),
        ("/big", "200", 256 * 1024),
        ("/empty", "204", 0),
        ("/small", "200", 2),
    ] {
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let (line, body) = response(&mut s, &mut pending).await;
        assert!(line.contains(status), "{path}: {line}");
        assert_eq!(body.len(), len, "{path}");
    }
    // Each answer was read to its end before the next request: one upstream connection did all.
    assert_eq!(accepted.load(Ordering::SeqCst), 1);

    // An answer abandoned half-way cannot leave its connection for the next request.
    let (mut quitter, _) = connect(proxy.addr).await;
    quitter
        .write_all(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 1024];
    let _ = quitter.read(&mut first).await.unwrap();
    drop(quitter);
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..3 {
        s.write_all(b"GET /small HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let (line, body) = response(&mut s, &mut pending).await;
        assert!(line.contains("200"), "{line}");
        assert_eq!(body, b"ok");
    }
}

/// An upstream whose answers stream slowly and with no length: two parts 300 ms apart.
async fn slow_stream_upstream() -> SocketAddr {
    scripted_upstream(|_req| async move {
        let (mut tx, body) = http_body_util::channel::Channel::<bytes::Bytes, BoxError>::new(2);
        tokio::spawn(async move {
            let _ = tx.send_data(bytes::Bytes::from_static(b"first ")).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            let _ = tx.send_data(bytes::Bytes::from_static(b"second")).await;
        });
        http::Response::new(http_body_util::BodyExt::boxed(body))
    })
    .await
}

#[tokio::test]
async fn connections_without_keep_alive_still_close_after_a_slow_answer() {
    let up = slow_stream_upstream().await;
    let proxy = proxy(up, &[]).await;
    // HTTP/1.0 without keep-alive: the answer is delimited by the close itself, so a connection
    // parked instead of closed would leave the client waiting for the keep-alive timeout.
    for request in [
        "GET /stream HTTP/1.0\r\nHost: t\r\n\r\n",
        // A 1.0 client cannot take chunked encoding: an answer of unknown length ends with the
        // close whatever it asked for.
        "GET /stream HTTP/1.0\r\nHost: t\r\nConnection: keep-alive\r\n\r\n",
        "GET /stream HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        "GET /stream HTTP/1.1\r\nHost: t\r\nConnection: keep-alive, close\r\n\r\n",
    ] {
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        let answer = String::from_utf8_lossy(&out);
        assert!(
            matches!(closed, Ok(Ok(_))),
            "{request:?}: still open 5 s after {answer:?}"
        );
        assert!(answer.starts_with("HTTP/1."), "{request:?} -> {answer:?}");
        assert!(answer.contains("first"), "{answer:?}");
        assert!(
            answer.contains("second"),
            "{request:?}: answer cut short: {answer:?}"
        );
    }
}

/// A header-read timeout far shorter than the keep-alive timeout, so that which of the two
/// closed a connection tells whether it was parked.
const SHORT_HEADER_TIMEOUT: &[(&str, &str)] = &[
    ("TWOFA_SERVER__HEADER_READ_TIMEOUT", "300ms"),
    ("TWOFA_SERVER__KEEPALIVE_TIMEOUT", "60s"),
];

#[tokio::test]
async fn slow_or_silent_clients_get_the_header_read_timeout() {
    let (up, _stop) = demo_upstream().await;
    let proxy = proxy(up, SHORT_HEADER_TIMEOUT).await;
    // Silent from the start, the first byte of the HTTP/2 preface, part of an HTTP/1 head, and
    // a head trickled after an answer: each is closed long before the keep-alive timeout.
    for opening in [
        &b""[..],
        b"P",
        b"PRI * HTTP/2.0\r\n",
        b"GET /debug/hello HT",
    ] {
        let (mut s, _) = connect(proxy.addr).await;
        s.write_all(opening).await.unwrap();
        closed_within(&mut s, Duration::from_secs(5)).await;
    }
    let (mut s, mut pending) = connect(proxy.addr).await;
    s.write_all(hello()).await.unwrap();
    let (status, _) = response(&mut s, &mut pending).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    tokio::time::sleep(PAUSE).await;
    s.write_all(b"GET /debug/hello HTTP/1.1\r\nHo")
        .await
        .unwrap();
    closed_within(&mut s, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn connections_park_after_requests_with_bodies_too() {
    let (up, _stop) = demo_upstream().await;
    // An idle connection still held by hyper is closed by its header-read timer; a parked one
    // waits for the keep-alive timeout. Surviving a pause longer than the first shows parking.
    let proxy = proxy(up, SHORT_HEADER_TIMEOUT).await;
    let (mut s, mut pending) = connect(proxy.addr).await;
    for request in [
        &b"GET /debug/hello HTTP/1.1\r\nHost: t\r\n\r\n"[..],
        b"POST /debug/upload HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
        b"POST /debug/upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ] {
        s.write_all(request).await.unwrap();
        let (status, _) = response(&mut s, &mut pending).await;
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
    s.write_all(hello()).await.unwrap();
    let (status, body) = response(&mut s, &mut pending).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(body, b"hello\n");
    // A body and the next request (and part of a third) in one write: the bytes after the body
    // belong to the next requests, kept across the park that follows.
    s.write_all(
        b"POST /debug/upload HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhelloGET /debug/hello HTTP/1.1\r\nHost: t\r\n\r\nGET /debug/he",
    )
    .await
    .unwrap();
    for want in [&b"{\"bytes\":5}"[..], b"hello\n"] {
        let (status, body) = response(&mut s, &mut pending).await;
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        assert_eq!(body, want);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.write_all(b"llo HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let (status, body) = response(&mut s, &mut pending).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(body, b"hello\n");
}
