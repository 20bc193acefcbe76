//! Bad input gets a clear answer and never reaches the upstream: malformed requests, oversized
//! headers, and request-smuggling shapes (RFC 9112 6.1/6.3).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::Response;

use crate::support::*;

fn status_line(answer: &str) -> &str {
    answer.lines().next().unwrap_or("")
}

#[tokio::test]
async fn malformed_requests_get_400() {
    let (up, _stop) = demo_upstream().await;
    let proxy = proxy(up, &[]).await;
    for request in [
        "GARBAGE\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: t\r\nNo colon here\r\n\r\n",
        "GET /\x01 HTTP/1.1\r\nHost: t\r\n\r\n",
        "GET / HTTP/9.9\r\nHost: t\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: t\r\nBad Name: x\r\n\r\n",
    ] {
        let answer = raw_exchange(proxy.addr, request.as_bytes(), Duration::from_secs(5)).await;
        let line = status_line(&answer);
        assert!(
            line.starts_with("HTTP/1.1 400") || line.starts_with("HTTP/1.1 505"),
            "{request:?} -> {line:?}"
        );
    }
}

#[tokio::test]
async fn oversized_headers_get_431() {
    let (up, _stop) = demo_upstream().await;
    let proxy = proxy(up, &[]).await;
    let big = "a".repeat(64 * 1024);
    let request = format!("GET / HTTP/1.1\r\nHost: t\r\nX-Big: {big}\r\n\r\n");
    let answer = raw_exchange(proxy.addr, request.as_bytes(), Duration::from_secs(5)).await;
    assert!(
        status_line(&answer).starts_with("HTTP/1.1 431"),
        "{}",
        status_line(&answer)
    );
    // Many small headers add up the same way.
    let many: String = (0..2000)
        .map(|i| format!("X-H{i}: {}\r\n", "b".repeat(30)))
        .collect();
    let request = format!("GET / HTTP/1.1\r\nHost: t\r\n{many}\r\n");
    let answer = raw_exchange(proxy.addr, request.as_bytes(), Duration::from_secs(5)).await;
    assert!(
        status_line(&answer).starts_with("HTTP/1.1 431"),
        "{}",
        status_line(&answer)
    );
}

#[tokio::test]
async fn smuggling_shapes_are_refused_and_nothing_is_forwarded() {
    let paths = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let log = paths.clone();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let up = scripted_upstream(move |req: http::Request<hyper::body::Incoming>| {
        let log = log.clone();
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            log.lock().unwrap().push(req.uri().path().to_owned());
            Response::new(full("ok"))
        }
    })
    .await;
    let proxy = proxy(up, &[]).await;
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n";
    // Both Content-Length and chunked: RFC 9112 6.3 lets an intermediary forward the message
    // as chunked with Content-Length removed, and requires the connection closed afterwards.
    // Whatever follows on that connection (the smuggled request) is never read.
    for request in [
        format!(
            "POST /cl-te HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
        ),
        format!(
            "POST /te-cl HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n{smuggled}"
        ),
        format!(
            "POST /te-cl HTTP/1.1\r\nHost: t\r\ntRANSFER-ENCODING: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n{smuggled}"
        ),
    ] {
        let answer = raw_exchange(proxy.addr, request.as_bytes(), Duration::from_secs(5)).await;
        assert_eq!(
            answer.matches("HTTP/1.1 ").count(),
            1,
            "{request:?} -> {answer}"
        );
        assert!(
            answer.to_ascii_lowercase().contains("connection: close"),
            "{answer}"
        );
    }
    let forwarded = paths.lock().unwrap().clone();
    assert_eq!(forwarded.len(), 3, "{forwarded:?}");
    assert!(!forwarded.iter().any(|p| p == "/smuggled"), "{forwarded:?}");
    hits.store(0, Ordering::SeqCst);

    // Everything else ambiguous is refused outright.
    let vectors = [
        format!(
            "POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nabcd{smuggled}"
        ),
        format!("POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: +4\r\n\r\nabcd{smuggled}"),
        format!(
            "POST /a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n{smuggled}"
        ),
        format!(
            "POST /a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{smuggled}"
        ),
    ];
    for request in &vectors {
        let answer = raw_exchange(proxy.addr, request.as_bytes(), Duration::from_secs(5)).await;
        assert!(
            status_line(&answer).starts_with("HTTP/1.1 400"),
            "{request:?} -> {:?}",
            status_line(&answer)
        );
        // One answer, then the connection is closed: no second response for the smuggled request.
        assert_eq!(
            answer.matches("HTTP/1.1 ").count(),
            1,
            "{request:?} -> {answer}"
        );
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "forwarded: {:?}",
        paths.lock().unwrap()
    );

    // A broken chunked body is only found while streaming, after the head went upstream: the
    // client still gets 400 (its fault), the connection closes, and nothing after it is read.
    let request = format!(
        "POST /chunks HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\nx\r\n0\r\n\r\n{smuggled}"
    );
    let answer = raw_exchange(proxy.addr, request.as_bytes(), Duration::from_secs(5)).await;
    assert!(
        status_line(&answer).starts_with("HTTP/1.1 400"),
        "{:?}",
        status_line(&answer)
    );
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
    assert!(!paths.lock().unwrap().iter().any(|p| p == "/smuggled"));
}
