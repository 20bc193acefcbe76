//! Apps that keep their session id across logins (PHP without `session_regenerate_id`,
//! express-session without `regenerate`): a login on the app session a proxy session vouches
//! for ends that proxy session first, whatever the login looks like (a field the proxy does not
//! know, HTTP Basic), however the app cookie is spelled (quoted, percent-encoded), and on every
//! replica. Found in the third review round; each test asserts the secure outcome.

use std::time::Duration;

use http::{Request, header};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use twofa_proxy::clock::ManualClock;
use twofa_proxy::config::Config;

use crate::support::agent::Agent;
use crate::support::kept_app::*;
use crate::support::redis::RedisServer;
use crate::support::site::{TEST_KEY, enroll_totp_over_api};
use crate::support::*;

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
    enroll_totp_over_api(&mut alice, clock).await;
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
        let addr = kept_app(resend).await;
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
    let addr = kept_app(false).await;
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
        let addr = kept_app(false).await;
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
    let addr = kept_app(false).await;
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
        let addr = kept_app(false).await;
        let mut env = vec![("TWOFA_UPSTREAM__URL".to_owned(), format!("http://{addr}"))];
        if user_header {
            env.push((
                "TWOFA_APP__USER_HEADER".to_owned(),
                "X-Authenticated-User".to_owned(),
            ));
        }
        let config = Config::from_toml(KEPT_TOML, env).unwrap();
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
        enroll_totp_over_api(&mut alice, &clock).await;
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
    let addr = kept_app(true).await;
    let env = vec![("TWOFA_UPSTREAM__URL".to_owned(), format!("http://{addr}"))];
    let config = Config::from_toml(KEPT_TOML, env).unwrap();
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
    enroll_totp_over_api(&mut alice, &clock).await;
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
