//! What the upstream sees and what the client gets back: forwarding headers, hop-by-hop removal,
//! Host, request ids, the proxy's own prefix, 502 and 504.

use std::time::{Duration, Instant};

use http::{Response, StatusCode};

use crate::support::*;

#[tokio::test]
async fn untrusted_peers_cannot_claim_a_forwarding_chain() {
    let (up, _stop) = demo_upstream().await;
    let proxy = proxy(up, &[]).await;
    let res = get(
        &format!("http://{}/debug/headers", proxy.addr),
        &[
            ("X-Forwarded-For", "1.2.3.4"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "evil.example"),
            ("X-Real-IP", "1.2.3.4"),
            ("Forwarded", "for=1.2.3.4"),
            ("X-Original-URL", "/admin"),
            ("X_Forwarded_For", "1.2.3.4"),
        ],
    )
    .await;
    assert_eq!(res.status, 200);
    let echo = res.json();
    assert_eq!(seen(&echo, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(seen(&echo, "x-forwarded-proto"), ["http"]);
    assert_eq!(seen(&echo, "x-forwarded-host"), [proxy.addr.to_string()]);
    for gone in ["x-real-ip", "forwarded", "x-original-url"] {
        assert!(seen(&echo, gone).is_empty(), "{gone} reached the upstream");
    }
}

#[tokio::test]
async fn trusted_proxies_extend_the_chain() {
    let (up, _stop) = demo_upstream().await;
    let proxy = proxy(up, &[("TWOFA_SERVER__TRUSTED_PROXIES", "127.0.0.0/8")]).await;
    let res = get(
        &format!("http://{}/debug/headers", proxy.addr),
        &[
            ("X-Forwarded-For", "203.0.113.9"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "app.example"),
        ],
    )
    .await;
    let echo = res.json();
    assert_eq!(seen(&echo, "x-forwarded-for"), ["203.0.113.9, 127.0.0.1"]);
    assert_eq!(seen(&echo, "x-forwarded-proto"), ["https"]);
    assert_eq!(seen(&echo, "x-forwarded-host"), ["app.example"]);
}

#[tokio::test]
async fn hop_by_hop_and_connection_named_headers_are_removed_both_ways() {
    let up = scripted_upstream(|req: http::Request<hyper::body::Incoming>| async move {
        let names: Vec<String> = req
            .headers()
            .keys()
            .map(|k| k.as_str().to_owned())
            .collect();
        Response::builder()
            .header("Connection", "X-Up-Hop")
            .header("X-Up-Hop", "1")
            .header("Keep-Alive", "timeout=5")
            .header("Proxy-Authenticate", "Basic")
            .header("X-Up-Kept", "1")
            .body(full(names.join(",")))
            .unwrap()
    })
    .await;
    let proxy = proxy(up, &[]).await;
    // Raw bytes: two Connection headers, the first empty (Go CVE-2021-33197), one naming
    // X-Forwarded-For, which the proxy must still set.
    let request = "GET /x HTTP/1.1\r\nHost: t\r\nConnection: \r\nConnection: close, X-Hop, X-Forwarded-For\r\n\
                   X-Hop: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: Basic eA==\r\n\
                   Proxy-Connection: keep-alive\r\nX-Kept: yes\r\n\r\n";
    let answer = raw_exchange(proxy.addr, request.as_bytes(), Duration::from_secs(5)).await;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let upstream_saw: Vec<&str> = body.trim().split(',').collect();
    for gone in [
        "x-hop",
        "keep-alive",
        "te",
        "proxy-authorization",
        "proxy-connection",
    ] {
        assert!(
            !upstream_saw.contains(&gone),
            "{gone} reached the upstream: {upstream_saw:?}"
        );
    }
    assert!(upstream_saw.contains(&"x-kept"));
    assert!(
        upstream_saw.contains(&"x-forwarded-for"),
        "proxy's own header was dropped: {upstream_saw:?}"
    );
    let head = head.to_ascii_lowercase();
    assert!(head.contains("x-up-kept: 1"), "{head}");
    for gone in ["x-up-hop", "keep-alive", "proxy-authenticate"] {
        assert!(
            !head.contains(&format!("{gone}:")),
            "{gone} reached the client: {head}"
        );
    }
}

#[tokio::test]
async fn host_is_preserved_or_replaced() {
    let (up, _stop) = demo_upstream().await;
    let kept = proxy(up, &[]).await;
    let res = get(
        &format!("http://{}/debug/headers", kept.addr),
        &[("Host", "app.example")],
    )
    .await;
    assert_eq!(seen(&res.json(), "host"), ["app.example"]);

    let replaced = proxy(up, &[("TWOFA_UPSTREAM__PRESERVE_HOST", "false")]).await;
    let res = get(
        &format!("http://{}/debug/headers", replaced.addr),
        &[("Host", "app.example")],
    )
    .await;
    assert_eq!(seen(&res.json(), "host"), [up.to_string()]);
}

#[tokio::test]
async fn request_ids_travel_both_ways() {
    let (up, _stop) = demo_upstream().await;
    let proxy = proxy(up, &[]).await;
    let res = get(&format!("http://{}/debug/headers", proxy.addr), &[]).await;
    let id = res
        .header("x-request-id")
        .expect("response carries a request id")
        .to_owned();
    assert_eq!(seen(&res.json(), "x-request-id"), [id.as_str()]);
    let next = get(&format!("http://{}/debug/headers", proxy.addr), &[]).await;
    assert_ne!(next.header("x-request-id").unwrap(), id);
}

#[tokio::test]
async fn the_proxy_prefix_is_never_forwarded() {
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = hits.clone();
    let up = scripted_upstream(move |_req| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Response::new(full("upstream"))
        }
    })
    .await;
    let proxy = proxy(up, &[]).await;
    for path in ["/_2fa", "/_2fa/", "/_2fa/anything", "/_2fa/nothing?x=1"] {
        let res = get(
            &format!("http://{}{path}", proxy.addr),
            &[("Accept", "text/html")],
        )
        .await;
        assert_eq!(res.status, StatusCode::NOT_FOUND, "{path}");
        assert!(res.text().contains("Test App"), "branded page for {path}");
        assert!(
            res.header("content-security-policy")
                .unwrap()
                .contains("frame-ancestors 'none'")
        );
    }
    let css = get(&format!("http://{}/_2fa/assets/style.css", proxy.addr), &[]).await;
    assert_eq!(css.status, 200);
    assert!(css.header("content-type").unwrap().starts_with("text/css"));
    // Look-alikes are the app's business.
    let res = get(&format!("http://{}/_2fax", proxy.addr), &[]).await;
    assert_eq!(res.text(), "upstream");
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn unreachable_upstream_is_a_branded_502() {
    let dead = closed_port().await;
    let proxy = proxy(dead, &[]).await;
    let page = get(
        &format!("http://{}/", proxy.addr),
        &[("Accept", "text/html,*/*")],
    )
    .await;
    assert_eq!(page.status, StatusCode::BAD_GATEWAY);
    assert!(page.text().contains("Test App"));
    assert!(page.text().contains("not answering"));
    assert!(page.header("retry-after").is_some());
    let api = get(
        &format!("http://{}/api/things", proxy.addr),
        &[("Accept", "application/json")],
    )
    .await;
    assert_eq!(api.status, StatusCode::BAD_GATEWAY);
    assert_eq!(api.json()["error"], "bad_gateway");
}

#[tokio::test]
async fn slow_upstream_is_a_504_after_the_response_timeout() {
    let (up, _stop) = demo_upstream().await;
    let proxy = proxy(up, &[("TWOFA_UPSTREAM__RESPONSE_TIMEOUT", "300ms")]).await;
    let started = Instant::now();
    let res = get(
        &format!("http://{}/debug/slow?ms=5000", proxy.addr),
        &[("Accept", "text/html")],
    )
    .await;
    assert_eq!(res.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(res.text().contains("took too long"));
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the timeout did not cut the wait short"
    );
    // A fast request on the same proxy is unaffected.
    let ok = get(&format!("http://{}/debug/slow?ms=10", proxy.addr), &[]).await;
    assert_eq!(ok.status, 200);
}

#[tokio::test]
async fn metrics_and_probes_on_the_admin_listener() {
    let (up, _stop) = demo_upstream().await;
    let proxy = proxy(up, &[]).await;
    get(&format!("http://{}/debug/hello", proxy.addr), &[]).await;
    get(&format!("http://{}/_2fa/nothing", proxy.addr), &[]).await;
    assert_eq!(
        get(&format!("http://{}/healthz", proxy.admin_addr), &[])
            .await
            .status,
        200
    );
    assert_eq!(
        get(&format!("http://{}/readyz", proxy.admin_addr), &[])
            .await
            .status,
        200
    );
    let metrics = get(&format!("http://{}/metrics", proxy.admin_addr), &[])
        .await
        .text();
    for needle in [
        r#"twofa_http_requests_total{class="upstream",status="200"} 1"#,
        r#"twofa_http_requests_total{class="own",status="404"} 1"#,
        "twofa_upstream_response_seconds_count 1",
        "twofa_open_connections",
    ] {
        assert!(
            metrics.contains(needle),
            "{needle} missing from:\n{metrics}"
        );
    }
    // Admin routes are not reachable on the public listener.
    let public = get(&format!("http://{}/metrics", proxy.addr), &[]).await;
    assert!(!public.text().contains("twofa_http_requests"));
}
