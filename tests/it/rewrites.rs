//! Headers that could make the app route on another path or host than the gate decided on:
//! path-rewriting headers, dropped from every peer (trusted proxies too), and a `Host` that
//! disagrees with the request's `:authority` (HTTP/2) or absolute-form target (HTTP/1.1).

use http::{Request, StatusCode, Version};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;

use crate::support::*;

/// Every header name the app saw, `_` folded to `-`, lower case.
fn names_seen(echo: &serde_json::Value) -> Vec<String> {
    echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| {
            pair[0]
                .as_str()
                .unwrap()
                .to_ascii_lowercase()
                .replace('_', "-")
        })
        .collect()
}

#[tokio::test]
async fn path_rewriting_headers_never_reach_the_app() {
    let (up, _stop) = demo_upstream().await;
    let rewrites = [
        ("X-Original-URL", "/admin"),
        ("X-Original-URI", "/admin"),
        ("X-Original-Path", "/admin"),
        ("X-Rewrite-URL", "/admin"),
        ("X-Forwarded-Prefix", "/admin"),
        ("X-Forwarded-Uri", "/admin"),
        ("X-Forwarded-Path", "/admin"),
        ("X-Envoy-Original-Path", "/admin"),
        ("X-Script-Name", "/admin"),
        ("x_original_url", "/admin"),
        ("X_Forwarded_Prefix", "/admin"),
    ];
    let mut headers = rewrites.to_vec();
    headers.push(("X-Forwarded-For", "203.0.113.9"));
    // From a trusted proxy (loopback is ours here), then from anyone.
    for trusted in [true, false] {
        let overrides: &[(&str, &str)] = if trusted {
            &[("TWOFA_SERVER__TRUSTED_PROXIES", "127.0.0.1")]
        } else {
            &[]
        };
        let proxy = proxy(up, overrides).await;
        let res = get(&format!("http://{}/debug/headers", proxy.addr), &headers).await;
        assert_eq!(res.status, 200);
        let echo = res.json();
        let names = names_seen(&echo);
        for (name, _) in rewrites {
            let folded = name.to_ascii_lowercase().replace('_', "-");
            assert!(
                !names.contains(&folded),
                "{name} reached the app (trusted: {trusted})"
            );
        }
        // The trusted proxy's chain is still believed: only the rewriting headers go.
        let chain = seen(&echo, "x-forwarded-for");
        if trusted {
            assert_eq!(chain, ["203.0.113.9, 127.0.0.1"]);
        } else {
            assert_eq!(chain, ["127.0.0.1"]);
        }
    }
}

#[tokio::test]
async fn host_must_match_the_authority() {
    let (up, _stop) = demo_upstream().await;
    let proxy = proxy(up, &[]).await;
    let h2: Client<HttpConnector, TestBody> = h2c_client();
    let url = format!("http://{}/debug/hello", proxy.addr);
    let upper = proxy.addr.to_string().to_ascii_uppercase();
    for (host, status) in [
        (None, StatusCode::OK),
        (Some(upper.as_str()), StatusCode::OK),
        (Some("other.example"), StatusCode::BAD_REQUEST),
        (Some("127.0.0.1"), StatusCode::BAD_REQUEST),
    ] {
        let mut req = Request::get(&url);
        if let Some(h) = host {
            req = req.header("host", h);
        }
        let res = h2.request(req.body(full("")).unwrap()).await.unwrap();
        assert_eq!(res.version(), Version::HTTP_2);
        assert_eq!(res.status(), status, "Host: {host:?}");
        let _ = res.into_body().collect().await;
    }

    // HTTP/1.1: an absolute-form target naming another host than Host, or two Hosts.
    let wait = std::time::Duration::from_secs(5);
    for request in [
        "GET http://other.example/debug/hello HTTP/1.1\r\nHost: app.example\r\nConnection: close\r\n\r\n",
        "GET /debug/hello HTTP/1.1\r\nHost: app.example\r\nHost: other.example\r\nConnection: close\r\n\r\n",
    ] {
        let answer = raw_exchange(proxy.addr, request.as_bytes(), wait).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{request}\n{answer}");
    }
    let same = "GET http://app.example/debug/hello HTTP/1.1\r\nHost: APP.example\r\nConnection: close\r\n\r\n";
    let answer = raw_exchange(proxy.addr, same.as_bytes(), wait).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
