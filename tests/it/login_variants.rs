//! Variants the second review round found: an app that keeps its session id across logins (the
//! proxy sessions vouching for it end before a new login on it), a JSON body labelled as a form,
//! and Devise's JSON sign-in (which must keep working). Each asserts the secure (or working)
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
use crate::support::site::{Now, oathtool};
use crate::support::*;

/// An app whose login keeps the session id the browser brought (express-session with
/// `req.session.user = ...` and no `regenerate()`, PHP without `session_regenerate_id()`):
/// a new id (and `Set-Cookie`) only when the request had no known session.
#[derive(Default)]
struct Sticky {
    /// Set-Cookie the (same) id on every login, as Flask-Session or express-session with
    /// `rolling: true` do.
    resend: bool,
    sessions: Mutex<HashMap<String, String>>,
    next: AtomicU64,
}

fn sid_of(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| *k == "sid")
        .map(|(_, v)| v.to_owned())
}

async fn sticky_handle(app: Arc<Sticky>, req: Request<Incoming>) -> Response<TestBody> {
    let path = req.uri().path().to_owned();
    let identity = req
        .headers()
        .get("x-twofa-user")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    let sid = sid_of(req.headers());
    let known = sid
        .clone()
        .filter(|s| app.sessions.lock().unwrap().contains_key(s));
    if path == "/login" {
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
        let ok = matches!(
            (
                form.get("username").map(String::as_str),
                form.get("password").map(String::as_str)
            ),
            (Some("alice"), Some("wonderland")) | (Some("mallory"), Some("mallory"))
        );
        if !ok {
            return Response::builder()
                .status(200)
                .body(full("<form method=post>login</form>"))
                .unwrap();
        }
        let user = form["username"].clone();
        let mut res = Response::builder()
            .status(302)
            .header(header::LOCATION, "/")
            .header("x-authenticated-user", user.as_str());
        let id = match known {
            Some(id) if app.resend => {
                res = res.header(header::SET_COOKIE, format!("sid={id}; Path=/; HttpOnly"));
                id
            }
            Some(id) => id,
            None => {
                let id = format!("s{}", app.next.fetch_add(1, Ordering::Relaxed));
                res = res.header(header::SET_COOKIE, format!("sid={id}; Path=/; HttpOnly"));
                id
            }
        };
        app.sessions.lock().unwrap().insert(id, user);
        return res.body(full("")).unwrap();
    }
    let user = known.and_then(|id| app.sessions.lock().unwrap().get(&id).cloned());
    match user {
        Some(u) => Response::builder()
            .status(200)
            .body(full(format!("user={u} identity={identity}")))
            .unwrap(),
        None => Response::builder()
            .status(302)
            .header(header::LOCATION, "/login")
            .body(full(""))
            .unwrap(),
    }
}

const STICKY_TOML: &str = r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
[app]
name = "Sticky"
login_paths = ["/login"]
success_status = [302]
success_cookie = "sid"
public_paths = ["/static/"]
[session]
insecure_http_cookies = true
"#;

/// A password-only attacker with any account of their own: sign in as yourself (your proxy
/// session is bound to your app session id), then post the victim's password to the watched
/// login *with that same app cookie*. An app that does not rotate its session id on login
/// (express-session without regenerate, PHP without session_regenerate_id) answers 302 without
/// Set-Cookie; the proxy sees no success, passes it through and keeps the attacker's proxy
/// session, which still vouches for the (now victim's) app session id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relogin_on_a_kept_app_session_skips_the_code() {
    let mut leaks = Vec::new();
    for user_header in [false, true] {
        init();
        let app = Arc::new(Sticky::default());
        let shared = app.clone();
        let addr = scripted_upstream(move |req| sticky_handle(shared.clone(), req)).await;
        let mut env = vec![("TWOFA_UPSTREAM__URL".to_owned(), format!("http://{addr}"))];
        if user_header {
            env.push((
                "TWOFA_APP__USER_HEADER".to_owned(),
                "X-Authenticated-User".to_owned(),
            ));
        }
        let config = Config::from_toml(STICKY_TOML, env).unwrap();
        let clock = ManualClock::at_now();
        let proxy = twofa_proxy::app::start_with_clock(config, clock.clone())
            .await
            .unwrap();

        // alice enrolls TOTP.
        let mut alice = Agent::new(proxy.addr);
        let res = alice
            .post_form(
                "/login",
                &[("username", "alice"), ("password", "wonderland")],
            )
            .await;
        assert_eq!(res.status, 302, "{}", res.text());
        let setup = alice.post_json("/_2fa/api/v1/totp/setup", json!({})).await;
        let secret = setup.json()["secret"].as_str().unwrap().to_owned();
        let code = oathtool(&secret, clock.now_secs());
        let done = alice
            .post_json("/_2fa/api/v1/totp/confirm", json!({ "code": code }))
            .await;
        assert_eq!(done.status, 200, "{}", done.text());
        clock.advance(30);

        // mallory (no 2FA) signs in as herself, then posts alice's password on the same cookies.
        let mut mallory = Agent::new(proxy.addr);
        mallory
            .post_form(
                "/login",
                &[("username", "mallory"), ("password", "mallory")],
            )
            .await;
        assert!(mallory.cookies.contains_key("twofa-session"));
        assert!(mallory.cookies.contains_key("sid"));
        let res = mallory
            .post_form(
                "/login",
                &[("username", "alice"), ("password", "wonderland")],
            )
            .await;
        eprintln!(
            "user_header={user_header}: relogin -> {} {:?}",
            res.status,
            res.header("location")
        );
        let page = mallory.get("/").await;
        eprintln!(
            "user_header={user_header}: GET / -> {} {}",
            page.status,
            page.text()
        );
        if page.text().starts_with("user=alice") {
            leaks.push(format!("user_header={user_header}: {}", page.text()));
        }
    }
    assert!(
        leaks.is_empty(),
        "alice's app session without her code: {leaks:#?}"
    );
}

/// Same app, but it re-sends its (unchanged) session id on every login. Ending the proxy
/// session a login request carries is not enough: mallory holds two proxy sessions bound to the
/// same app id (the second from signing in again with the cookie but without the proxy cookie),
/// spends one on alice's login (challenged, that one ended) and keeps the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_proxy_sessions_on_one_kept_app_session() {
    init();
    let app = Arc::new(Sticky {
        resend: true,
        ..Sticky::default()
    });
    let shared = app.clone();
    let addr = scripted_upstream(move |req| sticky_handle(shared.clone(), req)).await;
    let env = vec![("TWOFA_UPSTREAM__URL".to_owned(), format!("http://{addr}"))];
    let config = Config::from_toml(STICKY_TOML, env).unwrap();
    let clock = ManualClock::at_now();
    let proxy = twofa_proxy::app::start_with_clock(config, clock.clone())
        .await
        .unwrap();
    let mut alice = Agent::new(proxy.addr);
    alice
        .post_form(
            "/login",
            &[("username", "alice"), ("password", "wonderland")],
        )
        .await;
    let setup = alice.post_json("/_2fa/api/v1/totp/setup", json!({})).await;
    let secret = setup.json()["secret"].as_str().unwrap().to_owned();
    let code = oathtool(&secret, clock.now_secs());
    let done = alice
        .post_json("/_2fa/api/v1/totp/confirm", json!({ "code": code }))
        .await;
    assert_eq!(done.status, 200, "{}", done.text());
    clock.advance(30);

    let mut m1 = Agent::new(proxy.addr);
    m1.post_form(
        "/login",
        &[("username", "mallory"), ("password", "mallory")],
    )
    .await;
    let sid = m1.cookies["sid"].clone();
    // A second browser with only the app cookie: signs in as mallory again on the same id.
    let mut m2 = Agent::new(proxy.addr);
    m2.cookies.insert("sid".into(), sid.clone());
    m2.post_form(
        "/login",
        &[("username", "mallory"), ("password", "mallory")],
    )
    .await;
    assert!(m2.cookies.contains_key("twofa-session"));
    assert_eq!(m2.cookies["sid"], sid);
    // alice's password on that id: challenged (m2's proxy session ends), but the app already
    // moved the id to alice.
    let res = m2
        .post_form(
            "/login",
            &[("username", "alice"), ("password", "wonderland")],
        )
        .await;
    eprintln!("relogin -> {} {:?}", res.status, res.header("location"));
    let page = m1.get("/").await;
    eprintln!("m1 GET / -> {} {}", page.status, page.text());
    assert!(
        !page.text().starts_with("user=alice"),
        "alice's app session without her code: {}",
        page.text()
    );
}

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
[session]
insecure_http_cookies = true
"#;

/// The proxy reads a body labelled urlencoded as a form; the app reads it as JSON. A valid JSON
/// object whose form reading holds `username=nobody` (inside a JSON string) is keyed on
/// `nobody` (no 2FA: a session under `optional`, an enrollment under `required`) while the app
/// signs in alice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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
        let setup = alice.post_json("/_2fa/api/v1/totp/setup", json!({})).await;
        let secret = setup.json()["secret"].as_str().unwrap().to_owned();
        let code = oathtool(&secret, clock.now_secs());
        let done = alice
            .post_json("/_2fa/api/v1/totp/confirm", json!({ "code": code }))
            .await;
        assert_eq!(done.status, 200, "{}", done.text());
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
