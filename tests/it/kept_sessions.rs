//! Apps that keep their session id across logins (PHP without `session_regenerate_id`,
//! express-session without `regenerate`): a login on the app session a proxy session vouches
//! for ends that proxy session first, whatever the login looks like (a field the proxy does not
//! know, HTTP Basic), however the app cookie is spelled (quoted, percent-encoded), and on every
//! replica. Found in the third review round; each test asserts the secure outcome.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use twofa_proxy::clock::ManualClock;
use twofa_proxy::config::Config;

use crate::support::agent::Agent;
use crate::support::redis::RedisServer;
use crate::support::site::{Now, TEST_KEY, oathtool};
use crate::support::*;

/// An app that keeps the session id the browser brought across logins (PHP without
/// `session_regenerate_id()`, express-session without `regenerate()`), and that logs in by
/// more than the one field the proxy is told of: the `username` field, an `email` field, or
/// HTTP Basic on the login path (PHP's `$_SERVER['PHP_AUTH_USER']`). Like PHP behind nginx
/// (the body is buffered before the script runs) and Django (the session is loaded lazily,
/// after CSRF middleware has read `request.POST`), it reads its session only after the body.
#[derive(Default)]
struct Kept {
    /// Set-Cookie the (same) id on every login (Flask-Session, express-session `rolling`).
    resend: bool,
    sessions: Mutex<HashMap<String, String>>,
    next: AtomicU64,
}

/// The `sid` cookie as Node's `cookie` package (express-session), Go's `net/http`, Python's
/// `http.cookies` and Tomcat read it: surrounding double quotes dropped; Node and PHP also
/// percent-decode the value.
fn sid_of(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| *k == "sid")
        .map(|(_, v)| {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned()
        })
}

const ALICE_BASIC: &str = "Basic YWxpY2U6d29uZGVybGFuZA=="; // alice:wonderland

async fn kept_handle(app: Arc<Kept>, req: Request<Incoming>) -> Response<TestBody> {
    let path = req.uri().path().to_owned();
    let basic = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let sid = sid_of(req.headers());
    // Like PHP behind nginx and Django: the body first, then the session.
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let known = sid
        .clone()
        .filter(|s| app.sessions.lock().unwrap().contains_key(s));
    if path == "/login" {
        let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
        let password = form.get("password").map(String::as_str);
        let user = if let Some(u) = form.get("username") {
            Some(u.clone())
        } else if let Some(e) = form.get("email") {
            e.strip_suffix("@example.com").map(str::to_owned)
        } else if basic.as_deref() == Some(ALICE_BASIC) {
            Some("alice".to_owned())
        } else {
            None
        };
        let ok = match (user.as_deref(), password) {
            (Some("alice"), Some("wonderland")) | (Some("mallory"), Some("mallory")) => true,
            (Some("alice"), None) => basic.as_deref() == Some(ALICE_BASIC),
            _ => false,
        };
        if !ok {
            return Response::builder()
                .status(200)
                .body(full("<form method=post>login</form>"))
                .unwrap();
        }
        let user = user.unwrap();
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
            .body(full(format!("user={u}")))
            .unwrap(),
        None => Response::builder()
            .status(302)
            .header(header::LOCATION, "/login")
            .body(full(""))
            .unwrap(),
    }
}

const KEPT_TOML: &str = r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
[app]
name = "Kept"
login_paths = ["/login"]
success_status = [302]
success_cookie = "sid"
public_paths = ["/static/"]
[session]
insecure_http_cookies = true
"#;

fn kept_config(addr: std::net::SocketAddr, extra: &[(&str, String)]) -> Config {
    let mut env = vec![("TWOFA_UPSTREAM__URL".to_owned(), format!("http://{addr}"))];
    env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    Config::from_toml(KEPT_TOML, env).unwrap()
}

/// alice enrolls TOTP through `proxy`; then mallory (no 2FA) signs in as herself.
async fn alice_enrolled_and_mallory_in(proxy: std::net::SocketAddr, clock: &ManualClock) -> Agent {
    let mut alice = Agent::new(proxy);
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

    let mut mallory = Agent::new(proxy);
    mallory
        .post_form(
            "/login",
            &[("username", "mallory"), ("password", "mallory")],
        )
        .await;
    assert!(mallory.cookies.contains_key("twofa-session"));
    assert!(mallory.cookies.contains_key("sid"));
    assert_eq!(mallory.get("/").await.text(), "user=mallory");
    mallory
}

/// The bound sessions used to end only when the proxy sees `username_field` (or, with
/// `user_header`, a non-empty body or query). A login the app accepts by other means (an
/// `email` field, HTTP Basic with an empty body) on the kept app session leaves mallory's
/// proxy session alive and vouching for what is now alice's app session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_by_any_means_end_the_sessions_on_a_kept_app_session() {
    let mut leaks = Vec::new();
    for (user_header, resend, how) in [
        (false, false, "email"),
        (false, true, "email"),
        (false, false, "basic"),
        (true, false, "basic"),
        (true, true, "basic"),
    ] {
        init();
        let app = Arc::new(Kept {
            resend,
            ..Kept::default()
        });
        let shared = app.clone();
        let addr = scripted_upstream(move |req| kept_handle(shared.clone(), req)).await;
        let mut extra = Vec::new();
        if user_header {
            extra.push(("TWOFA_APP__USER_HEADER", "X-Authenticated-User".to_owned()));
        }
        let clock = ManualClock::at_now();
        let proxy = twofa_proxy::app::start_with_clock(kept_config(addr, &extra), clock.clone())
            .await
            .unwrap();
        let mut mallory = alice_enrolled_and_mallory_in(proxy.addr, &clock).await;

        let res = match how {
            "email" => {
                mallory
                    .post_form(
                        "/login",
                        &[("email", "alice@example.com"), ("password", "wonderland")],
                    )
                    .await
            }
            _ => {
                let mut req = Request::builder()
                    .method("POST")
                    .uri(format!("{}/login", mallory.base))
                    .header(header::AUTHORIZATION, ALICE_BASIC);
                let jar = mallory
                    .cookies
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join("; ");
                req = req.header(header::COOKIE, jar);
                send(req.body(full("")).unwrap()).await
            }
        };
        let label = format!("user_header={user_header} resend={resend} {how}");
        eprintln!("{label}: login -> {}", res.status);
        let page = mallory.get("/").await;
        eprintln!("{label}: GET / -> {} {}", page.status, page.text());
        if page.text() == "user=alice" {
            leaks.push(label);
        }
    }
    assert!(
        leaks.is_empty(),
        "alice's app session without her code: {leaks:#?}"
    );
}

/// With Redis and `session.cache_ttl`, another replica could keep serving a session that the
/// login on the kept app session ended, for up to `cache_ttl` after its last read there: the
/// login waits that long once it ended a session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_session_is_over_on_every_replica_before_the_login() {
    init();
    let redis = RedisServer::start();
    let app = Arc::new(Kept::default());
    let shared = app.clone();
    let addr = scripted_upstream(move |req| kept_handle(shared.clone(), req)).await;
    let extra = [
        ("TWOFA_STORE__BACKEND", "redis".to_owned()),
        ("TWOFA_STORE__URL", redis.url()),
        ("TWOFA_SECRETS__ENCRYPTION_KEY", TEST_KEY.to_owned()),
        ("TWOFA_SESSION__CACHE_TTL", "5s".to_owned()),
    ];
    let clock = ManualClock::at_now();
    let a = twofa_proxy::app::start_with_clock(kept_config(addr, &extra), clock.clone())
        .await
        .unwrap();
    let b = twofa_proxy::app::start_with_clock(kept_config(addr, &extra), clock.clone())
        .await
        .unwrap();
    let mut on_a = alice_enrolled_and_mallory_in(a.addr, &clock).await;
    let mut on_b = Agent::new(b.addr);
    on_b.cookies = on_a.cookies.clone();
    // Replica b reads (and caches) mallory's proxy session.
    assert_eq!(on_b.get("/").await.text(), "user=mallory");
    // alice's password on replica a, on the same app cookie: challenged.
    let res = on_a
        .post_form(
            "/login",
            &[("username", "alice"), ("password", "wonderland")],
        )
        .await;
    eprintln!("login on a -> {} {:?}", res.status, res.header("location"));
    let page = on_b.get("/").await;
    eprintln!("GET / on b -> {} {}", page.status, page.text());
    assert_ne!(
        page.text(),
        "user=alice",
        "replica b served alice's app session on mallory's ended proxy session"
    );
}

/// The login ends the sessions bound to the app cookie value *as sent*, hashed
/// byte for byte, but the app reads the value unquoted and percent-decoded (Node's `cookie`,
/// PHP; quotes also Go, Python, Tomcat). mallory keeps one browser on her proxy session (bound
/// to `sid=s1`) and posts alice's password from another, without the proxy cookie, with
/// `sid="s1"` or `sid=%73%31`: nothing bound to those bytes ends, the app logs alice into s1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reading_of_the_carried_app_cookie_ends_its_sessions() {
    let mut leaks = Vec::new();
    for spelling in ["quoted", "percent"] {
        init();
        let app = Arc::new(Kept::default());
        let shared = app.clone();
        let addr = scripted_upstream(move |req| kept_handle(shared.clone(), req)).await;
        let clock = ManualClock::at_now();
        let proxy = twofa_proxy::app::start_with_clock(kept_config(addr, &[]), clock.clone())
            .await
            .unwrap();
        let mut mallory = alice_enrolled_and_mallory_in(proxy.addr, &clock).await;
        let sid = mallory.cookies["sid"].clone();
        let respelled = match spelling {
            "quoted" => format!("\"{sid}\""),
            _ => sid.bytes().map(|b| format!("%{b:02X}")).collect(),
        };
        // Another browser: only the app cookie, respelled.
        let body = "username=alice&password=wonderland";
        let req = Request::builder()
            .method("POST")
            .uri(format!("{}/login", mallory.base))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::COOKIE, format!("sid={respelled}"))
            .body(full(body))
            .unwrap();
        let res = send(req).await;
        eprintln!(
            "{spelling}: sid={respelled} login -> {} {:?}",
            res.status,
            res.header("location")
        );
        let page = mallory.get("/").await;
        eprintln!("{spelling}: GET / -> {} {}", page.status, page.text());
        if page.text() == "user=alice" {
            leaks.push(spelling);
        }
    }
    assert!(
        leaks.is_empty(),
        "alice's app session without her code: {leaks:?}"
    );
}

/// A request that passed the gate before the login is let finish first. mallory starts a POST
/// on her live proxy session and holds its body back; meanwhile she posts alice's password on
/// the same app cookie. Had the app moved the kept id to alice before the held body completed,
/// the app (reading its session after the body, like PHP behind nginx or Django) would serve
/// it as alice: the login waits for it instead (or is refused with 503 after
/// `login_body_timeout`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_finishes_before_a_login_on_its_app_session() {
    init();
    let app = Arc::new(Kept::default());
    let shared = app.clone();
    let addr = scripted_upstream(move |req| kept_handle(shared.clone(), req)).await;
    let clock = ManualClock::at_now();
    let proxy = twofa_proxy::app::start_with_clock(kept_config(addr, &[]), clock.clone())
        .await
        .unwrap();
    let mut mallory = alice_enrolled_and_mallory_in(proxy.addr, &clock).await;
    let jar = mallory
        .cookies
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ");

    // The held request: headers and half of the body.
    let mut held = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let head = format!(
        "POST /account/email HTTP/1.1\r\nHost: x\r\nCookie: {jar}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 19\r\n\r\nemail=evil@"
    );
    held.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // alice's password on the same app session, meanwhile: mallory's proxy session ends, and
    // the login waits for the held request.
    let login = tokio::spawn(async move {
        let res = mallory
            .post_form(
                "/login",
                &[("username", "alice"), ("password", "wonderland")],
            )
            .await;
        (mallory, res)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!login.is_finished(), "the login did not wait");

    held.write_all(b"mail.com").await.unwrap();
    let mut out = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), held.read(&mut out))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&out[..n]).into_owned();
    assert!(answer.contains("user=mallory"), "{answer}");
    // The login went through after it (the app kept its id and set no cookie: passed on as
    // the app's own answer), and mallory's proxy session is over.
    let (mut mallory, res) = login.await.unwrap();
    assert_eq!(res.status, 302, "{}", res.text());
    assert_ne!(mallory.get("/").await.text(), "user=alice");
    assert!(
        !answer.contains("user=alice"),
        "a request mallory started was served on alice's session: {answer}"
    );
}
