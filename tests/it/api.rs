//! The JSON API (`/_2fa/api/v1`), driven like a single-page app would.

use http::StatusCode;
use serde_json::json;

use crate::support::agent::Agent;
use crate::support::site::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "external-tools"), ignore = "needs external-tools")]
async fn the_whole_flow_over_json() {
    let site = site(Backend::Memory, &[]).await;
    let mut spa = Agent::new(site.proxy.addr);
    let res = spa.json_login("alice", "wonderland").await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());

    let status = spa.get("/_2fa/api/v1/status").await.json();
    assert_eq!(
        status,
        json!({"user": "alice", "enabled": false, "method": null, "recovery_codes_left": 0, "must_enroll": false})
    );

    let setup = spa.post_json("/_2fa/api/v1/totp/setup", json!({})).await;
    assert_eq!(setup.status, StatusCode::OK);
    assert_eq!(setup.header("cache-control"), Some("no-store"));
    let setup = setup.json();
    let secret = setup["secret"].as_str().unwrap().to_owned();
    assert!(
        setup["otpauth_uri"]
            .as_str()
            .unwrap()
            .contains(&format!("secret={secret}"))
    );
    assert!(setup["qr_svg"].as_str().unwrap().starts_with("<svg"));

    let res = spa
        .post_json("/_2fa/api/v1/totp/confirm", json!({"code": "000000"}))
        .await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    assert_eq!(res.json()["error"], "invalid_code");
    let code = oathtool(&secret, site.clock.now_secs());
    let res = spa
        .post_json("/_2fa/api/v1/totp/confirm", json!({"code": code}))
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    let body = res.json();
    assert_eq!(body["enabled"], true);
    assert_eq!(body["recovery_codes"].as_array().unwrap().len(), 10);
    let status = spa.get("/_2fa/api/v1/status").await.json();
    assert_eq!(status["method"], "totp");
    assert_eq!(status["recovery_codes_left"], 10);

    // A new JSON login must answer the challenge.
    let mut other = Agent::new(site.proxy.addr);
    let res = other.json_login("alice", "wonderland").await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    assert_eq!(res.json()["challenge"], "/_2fa/api/v1/challenge");
    assert_eq!(
        other.get("/api/me").await.status,
        StatusCode::SEE_OTHER,
        "the app is closed until the code"
    );
    let res = other
        .post_json(
            "/_2fa/api/v1/challenge",
            json!({"code": ["111111", "222222"]}),
        )
        .await;
    assert_eq!(
        res.status,
        StatusCode::BAD_REQUEST,
        "several codes in one request"
    );
    let res = other
        .request(
            "POST",
            "/_2fa/api/v1/challenge",
            Some("text/plain"),
            "{\"code\":\"1\"}".into(),
        )
        .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST, "non-JSON content type");
    let res = other
        .post_json("/_2fa/api/v1/challenge", json!({"code": "123456"}))
        .await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    assert!(res.json()["tries_left"].as_u64().unwrap() > 0);
    site.clock.advance(30);
    let code = oathtool(&secret, site.clock.now_secs());
    let res = other
        .post_json("/_2fa/api/v1/challenge", json!({"code": code}))
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    assert_eq!(res.json()["redirect"], "/");
    assert!(other.cookies.contains_key("session") && other.cookies.contains_key("twofa-session"));
    assert_eq!(other.get("/api/me").await.json()["user"], "alice");

    // Turning it off needs a code; then the status says so.
    site.clock.advance(30);
    let code = oathtool(&secret, site.clock.now_secs());
    let res = other
        .post_json("/_2fa/api/v1/disable", json!({"code": code}))
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    assert_eq!(
        other.get("/_2fa/api/v1/status").await.json()["enabled"],
        false
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_refuses_strangers_and_other_sites() {
    let site = site(Backend::Memory, &[]).await;
    let mut anon = Agent::new(site.proxy.addr);
    let res = anon.get("/_2fa/api/v1/status").await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    assert_eq!(res.json()["error"], "unauthenticated");
    let res = anon
        .post_json("/_2fa/api/v1/challenge", json!({"code": "123456"}))
        .await;
    assert_eq!(res.json()["error"], "challenge_expired");

    let mut spa = Agent::new(site.proxy.addr);
    spa.json_login("bob", "builder").await;
    let cookie = spa
        .cookies
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ");
    let req = http::Request::post(format!("http://{}/_2fa/api/v1/totp/setup", site.proxy.addr))
        .header("content-type", "application/json")
        .header("origin", "https://evil.example")
        .header("cookie", cookie)
        .body(crate::support::full("{}"))
        .unwrap();
    let res = crate::support::send(req).await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    assert_eq!(res.json()["error"], "cross_origin");
}
