//! Variants the second review round found: a JSON body labelled as a form, and Devise's JSON
//! sign-in (which must keep working). (The app that keeps its session id across logins is in
//! `kept_sessions.rs`.) Each asserts the secure (or working)
//! outcome through the real proxy, against scripted upstreams that behave as those frameworks do.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use http::{Request, Response, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::json;
use twofa_proxy::clock::ManualClock;
use twofa_proxy::config::Config;

use crate::support::agent::Agent;
use crate::support::site::{Now, enroll_totp_over_api, oathtool};
use crate::support::*;

/// A JSON login the way Go (`json.NewDecoder(r.Body).Decode(&creds)`) and PHP
/// (`json_decode(file_get_contents('php://input'))`) handlers are usually written: the body is
/// decoded as JSON whatever its `Content-Type`. Sessions in an opaque `session` cookie.
async fn any_type_json_app() -> std::net::SocketAddr {
    let sessions: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let next = Arc::new(AtomicU64::new(0));
    scripted_upstream(move |req: Request<Incoming>| {
        let sessions = sessions.clone();
        let next = next.clone();
        async move {
            let path = req.uri().path().to_owned();
            let identity = req
                .headers()
                .get("x-twofa-user")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_owned();
            let sid = req
                .headers()
                .get(header::COOKIE)
                .and_then(|v| v.to_str().ok())
                .and_then(|c| c.split(';').find_map(|p| p.trim().strip_prefix("session=")))
                .map(str::to_owned);
            if path == "/api/login" {
                let body = req.into_body().collect().await.unwrap().to_bytes();
                let creds: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                let ok = matches!(
                    (creds["username"].as_str(), creds["password"].as_str()),
                    (Some("alice"), Some("wonderland"))
                );
                if !ok {
                    return Response::builder()
                        .status(401)
                        .body(full(r#"{"ok":false}"#))
                        .unwrap();
                }
                let id = format!("g{}", next.fetch_add(1, Ordering::Relaxed));
                sessions.lock().unwrap().insert(id.clone(), "alice".into());
                return Response::builder()
                    .status(200)
                    .header(header::SET_COOKIE, format!("session={id}; Path=/"))
                    .body(full(r#"{"ok":true}"#))
                    .unwrap();
            }
            let user = sid.and_then(|s| sessions.lock().unwrap().get(&s).cloned());
            match user {
                Some(u) => Response::builder()
                    .status(200)
                    .body(full(format!("user={u} identity={identity}")))
                    .unwrap(),
                None => Response::builder().status(401).body(full("")).unwrap(),
            }
        }
    })
    .await
}

const JSON_TOML: &str = r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
[app]
name = "Go JSON"
login_paths = ["/api/login"]
success_status = [200]
success_cookie = "session"
public_paths = ["/static/"]
[records]
path = ":memory:"

[session]
insecure_http_cookies = true
"#;

/// The proxy reads a body labelled urlencoded as a form; the app reads it as JSON. A valid JSON
/// object whose form reading holds `username=nobody` (inside a JSON string) is keyed on
/// `nobody` (no 2FA: a session under `optional`, an enrollment under `required`) while the app
/// signs in alice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "external-tools"), ignore = "needs external-tools")]
async fn a_json_body_labelled_as_a_form_names_another_account() {
    let mut leaks = Vec::new();
    for enforcement in ["optional", "required"] {
        init();
        let addr = any_type_json_app().await;
        let env = vec![
            ("TWOFA_UPSTREAM__URL".to_owned(), format!("http://{addr}")),
            (
                "TWOFA_TWOFACTOR__ENFORCEMENT".to_owned(),
                enforcement.to_owned(),
            ),
        ];
        let config = Config::from_toml(JSON_TOML, env).unwrap();
        let clock = ManualClock::at_now();
        let proxy = twofa_proxy::app::start_with_clock(config, clock.clone())
            .await
            .unwrap();
        // alice enrolls TOTP (under `required` she is sent to enroll at her first login).
        let mut alice = Agent::new(proxy.addr);
        let res = alice
            .post_json(
                "/api/login",
                json!({"username": "alice", "password": "wonderland"}),
            )
            .await;
        assert!(
            alice.cookies.contains_key("twofa-session"),
            "{}",
            res.text()
        );
        enroll_totp_over_api(&mut alice, &clock).await;
        clock.advance(30);
        // Sanity: alice's plain JSON login is challenged.
        let mut check = Agent::new(proxy.addr);
        let res = check
            .post_json(
                "/api/login",
                json!({"username": "alice", "password": "wonderland"}),
            )
            .await;
        assert_eq!(res.status, 401, "{}", res.text());
        assert_eq!(res.json()["error"], "second_factor_required");

        let body = r#"{"username":"alice","password":"wonderland","x":"&username=nobody&"}"#;
        let mut attacker = Agent::new(proxy.addr);
        let res = attacker
            .request(
                "POST",
                "/api/login",
                Some("application/x-www-form-urlencoded"),
                bytes::Bytes::from(body),
            )
            .await;
        eprintln!("{enforcement}: login -> {} {}", res.status, res.text());
        if enforcement == "required" && attacker.cookies.contains_key("twofa-session") {
            // Enroll an authenticator for "nobody", then take the held-back answer.
            let setup = attacker
                .post_json("/_2fa/api/v1/totp/setup", json!({}))
                .await;
            let secret = setup.json()["secret"].as_str().unwrap().to_owned();
            let code = oathtool(&secret, clock.now_secs());
            let done = attacker
                .post_json("/_2fa/api/v1/totp/confirm", json!({ "code": code }))
                .await;
            eprintln!(
                "{enforcement}: enroll nobody -> {} {}",
                done.status,
                done.text()
            );
            let cont = attacker.get("/_2fa/settings/continue").await;
            eprintln!("{enforcement}: continue -> {}", cont.status);
        }
        let page = attacker.get("/me").await;
        eprintln!("{enforcement}: GET /me -> {} {}", page.status, page.text());
        if page.text().starts_with("user=alice") {
            leaks.push(format!("{enforcement}: {}", page.text()));
        }
    }
    assert!(
        leaks.is_empty(),
        "alice's app session without her code: {leaks:#?}"
    );
}

/// Regression: Devise (Rails) signs in JSON clients with `{"user":{"email":..,"password":..}}`
/// at the same path as its form (`user[email]=..`). With `username_field = "user[email]"` the
/// form works but the JSON login is refused: the nested name counts as "the field's name below
/// the top level".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devise_json_sign_in_keeps_working() {
    init();
    let addr = scripted_upstream(|_req: Request<Incoming>| async move {
        Response::builder()
            .status(401)
            .body(full("app saw it"))
            .unwrap()
    })
    .await;
    let env = vec![
        ("TWOFA_UPSTREAM__URL".to_owned(), format!("http://{addr}")),
        (
            "TWOFA_APP__LOGIN_PATHS".to_owned(),
            "/users/sign_in".to_owned(),
        ),
        (
            "TWOFA_APP__USERNAME_FIELD".to_owned(),
            "user[email]".to_owned(),
        ),
    ];
    let config = Config::from_toml(JSON_TOML, env).unwrap();
    let proxy = twofa_proxy::app::start(config).await.unwrap();
    let mut a = Agent::new(proxy.addr);
    let form = a
        .post_form(
            "/users/sign_in",
            &[
                ("user[email]", "alice@example.com"),
                ("user[password]", "x"),
            ],
        )
        .await;
    let json = a
        .post_json(
            "/users/sign_in.json",
            json!({"user": {"email": "alice@example.com", "password": "x"}}),
        )
        .await;
    eprintln!(
        "form -> {} {}; json -> {} {}",
        form.status,
        form.text(),
        json.status,
        json.text()
    );
    assert_eq!(form.text(), "app saw it");
    assert_eq!(
        json.text(),
        "app saw it",
        "Devise's JSON sign-in refused: {}",
        json.status
    );
}
