//! Ways past the second factor, one test per class (SECURITY.md lists them), each through the
//! real proxy in front of an app that reads requests as permissively as real frameworks do
//! (`support::lenient_app`). Every assertion is the secure outcome; each test failed on the
//! proxy before the class was closed.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use serde_json::json;
use twofa_proxy::app::Running;
use twofa_proxy::clock::ManualClock;
use twofa_proxy::config::Config;

use crate::support::agent::Agent;
use crate::support::lenient_app::LenientApp;
use crate::support::site::{Now, enroll_totp_over_api, oathtool};
use crate::support::*;

const LENIENT_TOML: &str = r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
[app]
name = "Lenient"
login_paths = ["/login", "/login-get", "/api/login"]
success_status = [200, 302, 303]
public_paths = ["/static/"]
[twofactor]
max_attempts_per_challenge = 4
lockout_threshold = 3
lockout_duration = "2m"
[records]
path = ":memory:"

[session]
insecure_http_cookies = true
"#;

struct Lenient {
    proxy: Running,
    clock: Arc<ManualClock>,
    app: LenientApp,
}

async fn lenient_site(overrides: &[(&str, &str)]) -> Lenient {
    init();
    let app = LenientApp::start().await;
    let mut env = vec![(
        "TWOFA_UPSTREAM__URL".to_owned(),
        format!("http://{}", app.addr),
    )];
    env.extend(overrides.iter().map(|(k, v)| ((*k).into(), (*v).into())));
    let config = Config::from_toml(LENIENT_TOML, env).unwrap();
    let clock = ManualClock::at_now();
    let proxy = twofa_proxy::app::start_with_clock(config, clock.clone())
        .await
        .unwrap();
    Lenient { proxy, clock, app }
}

impl Lenient {
    fn agent(&self) -> Agent {
        Agent::new(self.proxy.addr)
    }

    /// Signs `user` in with the password alone (no 2FA yet) and enrolls an authenticator app
    /// over the JSON API; returns the key. The clock then moves past the enrollment's step.
    async fn enroll_totp(&self, user: &str, password: &str) -> String {
        let mut a = self.agent();
        let res = a
            .post_form("/login", &[("username", user), ("password", password)])
            .await;
        assert_eq!(res.status, 302, "{}", res.text());
        assert!(a.cookies.contains_key("twofa-session"));
        let secret = enroll_totp_over_api(&mut a, &self.clock).await;
        self.clock.advance(30);
        secret
    }
}

fn challenged(res: &Answer) -> bool {
    res.header("location") == Some("/_2fa/challenge")
}

/// Class 2: a failed login taken for a success. The app answers a wrong password with a
/// redirect to its form and a session cookie; that starts nothing at the proxy: no pending
/// login, no challenge, no lockout count, no session, no enrollment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "external-tools"), ignore = "needs external-tools")]
async fn failed_logins_start_nothing() {
    let site = lenient_site(&[]).await;
    let secret = site.enroll_totp("alice", "wonderland").await;

    for fields in [
        &[("username", "alice"), ("password", "wrong")][..],
        &[("username", "alice")],
        &[("username", "alice"), ("password", "")],
        &[("username", "alice"), ("password", "nope"), ("next", "/")],
    ] {
        let mut attacker = site.agent();
        let res = attacker.post_form("/login", fields).await;
        assert_eq!(res.status, 302);
        assert_eq!(res.header("location"), Some("/login?error=1"), "{fields:?}");
        assert!(
            !attacker.cookies.contains_key("twofa-pending"),
            "{fields:?}"
        );
        assert!(
            !attacker.cookies.contains_key("twofa-session"),
            "{fields:?}"
        );
        let challenge = attacker.get("/_2fa/challenge").await;
        assert_ne!(challenge.status, 200, "no challenge for {fields:?}");
        // With no sign-in held back, wrong codes have nothing to count against.
        let guess = attacker
            .post_json("/_2fa/api/v1/challenge", json!({ "code": "000000" }))
            .await;
        assert_eq!(guess.status, 401, "{fields:?}");
        assert_eq!(guess.json()["error"], "challenge_expired", "{fields:?}");
    }
    // Four failures would have locked alice (threshold 3) had they counted: she still gets in.
    let mut alice = site.agent();
    let res = alice
        .post_form(
            "/login",
            &[("username", "alice"), ("password", "wonderland")],
        )
        .await;
    assert!(challenged(&res), "{:?}", res.headers);
    let code = oathtool(&secret, site.clock.now_secs());
    let res = alice
        .post_json("/_2fa/api/v1/challenge", json!({ "code": code }))
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert!(alice.get("/").await.text().starts_with("user=alice"));

    // No 2FA (optional policy): a wrong password gives no proxy session.
    let mut attacker = site.agent();
    attacker
        .post_form("/login", &[("username", "mallory"), ("password", "x")])
        .await;
    assert!(!attacker.cookies.contains_key("twofa-session"));
    // A JSON login the app refuses (401 with a cookie) is not a success either.
    let res = attacker
        .post_json(
            "/api/login",
            json!({"username": "mallory", "password": "x"}),
        )
        .await;
    assert_eq!(res.status, 401);
    assert!(!attacker.cookies.contains_key("twofa-session"));
}

/// Class 2 under `enforcement = "required"`: without the password nobody may enroll their own
/// authenticator on someone else's account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_login_cannot_enroll_anyone() {
    let site = lenient_site(&[("TWOFA_TWOFACTOR__ENFORCEMENT", "required")]).await;
    let mut attacker = site.agent();
    let res = attacker
        .post_form("/login", &[("username", "carol"), ("password", "guess")])
        .await;
    assert_eq!(res.header("location"), Some("/login?error=1"));
    assert!(!attacker.cookies.contains_key("twofa-session"));
    let setup = attacker
        .post_json("/_2fa/api/v1/totp/setup", json!({}))
        .await;
    assert_eq!(setup.status, StatusCode::UNAUTHORIZED, "{}", setup.text());
    let page = attacker.get("/_2fa/settings/totp").await;
    assert_ne!(page.status, 200);
}

/// Class 3: names the app folds. The app applies NFKC and lower-cases (as Django and most
/// apps do): `ａｌｉｃｅ` is alice to it. By default such names are refused before the app sees
/// them; in Unicode mode they key alice's account and are challenged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "external-tools"), ignore = "needs external-tools")]
async fn names_the_app_folds_never_skip_the_code() {
    for unicode in [false, true] {
        let mode = if unicode { "true" } else { "false" };
        let site = lenient_site(&[("TWOFA_APP__USERNAME_UNICODE", mode)]).await;
        site.enroll_totp("alice", "wonderland").await;
        for name in [
            "ALICE",
            " Alice ",
            "ａｌｉｃｅ",
            "Ａｌｉｃｅ",
            "alice\u{200B}",
            "alice;x=1",
        ] {
            let mut a = site.agent();
            let res = a
                .post_form("/login", &[("username", name), ("password", "wonderland")])
                .await;
            // Never the app's session without a code.
            assert!(
                !a.cookies.contains_key("session"),
                "{name:?} unicode={unicode}"
            );
            let separator = name.contains(';') || name.contains('\u{200B}');
            let folds = !separator && (name.is_ascii() || unicode);
            if folds {
                assert!(
                    challenged(&res),
                    "{name:?} unicode={unicode}: {}",
                    res.status
                );
            } else {
                assert_eq!(res.status, 400, "{name:?} unicode={unicode}");
            }
        }
    }
}

/// Class 4: body encodings. A charset an app could decode differently (Tomcat reads
/// `charset =ibm037` as EBCDIC) is refused before anything reaches the app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_encodings_the_proxy_could_misread_are_refused() {
    let site = lenient_site(&[]).await;
    let mut a = site.agent();
    for content_type in [
        "application/x-www-form-urlencoded; charset =ibm037",
        "application/x-www-form-urlencoded; charset=ibm037",
        "application/x-www-form-urlencoded; CHARSET=\"IBM037\"",
        "application/x-www-form-urlencoded; charset=utf-8; charset=ibm037",
        "application/x-www-form-urlencoded; charset=utf-16",
        "multipart/form-data; boundary=x",
        "text/plain",
    ] {
        let res = a
            .request(
                "POST",
                "/login",
                Some(content_type),
                Bytes::from_static(b"username=nobody&password=wonderland"),
            )
            .await;
        assert_eq!(res.status, 415, "{content_type}");
    }
    assert_eq!(site.app.state.logins_seen.load(Ordering::Relaxed), 0);
}

/// Class 5: cookie spellings. mallory's proxy session with alice's app cookie spelled so that
/// Python, Go, Node or Tomcat still read it as the app's cookie never reaches the app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_spelling_of_the_app_cookie_must_match_the_binding() {
    let site = lenient_site(&[]).await;
    let mut mallory = site.agent();
    mallory
        .post_form(
            "/login",
            &[("username", "mallory"), ("password", "mallory")],
        )
        .await;
    assert!(mallory.get("/").await.text().starts_with("user=mallory"));
    let proxy_session = mallory.cookies["twofa-session"].clone();
    let own = mallory.cookies["session"].clone();
    let stolen = site.app.login_directly("alice");

    for cookies in [
        vec![format!(
            "twofa-session={proxy_session}; session={own}; session ={stolen}"
        )],
        vec![format!(
            "twofa-session={proxy_session}; session={own}; SESSION={stolen}"
        )],
        vec![format!(
            "twofa-session={proxy_session}; session={own};\tsession\t={stolen}"
        )],
        vec![format!(
            "twofa-session={proxy_session}; session={own}, session={stolen}"
        )],
        vec![format!(
            "twofa-session={proxy_session}; session={own}; sess%69on={stolen}"
        )],
        vec![format!("twofa-session={proxy_session}; session={stolen}")],
        vec![
            format!("twofa-session={proxy_session}; session={own}"),
            format!("session={stolen}"),
        ],
        vec![format!(
            "twofa-session={proxy_session}; x=\u{ff}; session={stolen}"
        )],
    ] {
        let mut req = Request::get(format!("http://{}/", site.proxy.addr))
            .header(header::ACCEPT, "text/html");
        for c in &cookies {
            req = req.header(
                header::COOKIE,
                http::HeaderValue::from_bytes(c.as_bytes()).unwrap(),
            );
        }
        let res = send(req.body(full(Bytes::new())).unwrap()).await;
        assert!(!res.text().contains("user=alice"), "{cookies:?}");
        assert!(res.status.is_redirection(), "{cookies:?}: {}", res.status);
    }
    // The binding itself still works.
    assert!(mallory.get("/").await.text().starts_with("user=mallory"));
}

/// Class 6: a session issued through a forced enrollment vouches only for the app session of
/// its own login, also before the held-back answer was handed over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "external-tools"), ignore = "needs external-tools")]
async fn sessions_never_vouch_for_a_cookie_they_did_not_see() {
    let site = lenient_site(&[("TWOFA_TWOFACTOR__ENFORCEMENT", "required")]).await;
    let mut carol = site.agent();
    let res = carol
        .post_form("/login", &[("username", "carol"), ("password", "singer")])
        .await;
    assert_eq!(res.header("location"), Some("/_2fa/settings"));
    enroll_totp_over_api(&mut carol, &site.clock).await;
    // Enrolled, the app's answer not yet handed over: carol's session with alice's cookie.
    let stolen = site.app.login_directly("alice");
    carol.cookies.insert("session".into(), stolen);
    let res = carol.get("/").await;
    assert!(!res.text().contains("user=alice"), "{}", res.text());
    assert!(res.status.is_redirection());
}

/// Class 7: logins the watcher did not see. Every method on a login path is watched, in every
/// spelling of the path, and method overrides are refused there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "external-tools"), ignore = "needs external-tools")]
async fn logins_on_any_method_are_watched() {
    let site = lenient_site(&[]).await;
    site.enroll_totp("alice", "wonderland").await;
    for (method, path) in [
        ("GET", "/login-get?username=alice&password=wonderland"),
        ("GET", "/LOGIN-GET/?username=alice&password=wonderland"),
        ("DELETE", "/login?username=alice&password=wonderland"),
        ("POST", "/login?username=alice&password=wonderland"),
        ("POST", "/LOGIN.json?username=alice&password=wonderland"),
    ] {
        let mut a = site.agent();
        let res = a.request(method, path, None, Bytes::new()).await;
        assert!(!a.cookies.contains_key("session"), "{method} {path}");
        assert!(challenged(&res), "{method} {path}: {}", res.status);
    }
    let mut a = site.agent();
    for (path, header, body) in [
        (
            "/login",
            Some(("X-HTTP-Method-Override", "GET")),
            "username=alice&password=wonderland",
        ),
        (
            "/login",
            Some(("x_http_method", "PUT")),
            "username=alice&password=wonderland",
        ),
        (
            "/login?_method=GET",
            None,
            "username=alice&password=wonderland",
        ),
        (
            "/login",
            None,
            "username=alice&password=wonderland&_method=GET",
        ),
    ] {
        let mut req = Request::post(format!("http://{}{path}", site.proxy.addr))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some((k, v)) = header {
            req = req.header(k, v);
        }
        let res = send(req.body(full(body)).unwrap()).await;
        assert_eq!(res.status, 400, "{path} {header:?} {body}");
    }
    // A name in both the query and the body: frameworks differ in which one they take.
    let res = a
        .request(
            "POST",
            "/login?username=mallory",
            Some("application/x-www-form-urlencoded"),
            Bytes::from_static(b"username=alice&password=wonderland"),
        )
        .await;
    assert_eq!(res.status, 400);
}

/// Class 9: pending logins per account are capped (each holds the app's answer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "external-tools"), ignore = "needs external-tools")]
async fn pending_logins_per_account_are_capped() {
    let site = lenient_site(&[("TWOFA_TWOFACTOR__MAX_PENDING_LOGINS", "3")]).await;
    site.enroll_totp("alice", "wonderland").await;
    for i in 0..3 {
        let res = site
            .agent()
            .post_form(
                "/login",
                &[("username", "alice"), ("password", "wonderland")],
            )
            .await;
        assert!(challenged(&res), "login {i}: {}", res.status);
    }
    let res = site
        .agent()
        .post_form(
            "/login",
            &[("username", "alice"), ("password", "wonderland")],
        )
        .await;
    assert_eq!(res.status, 429);
    assert!(res.header("retry-after").is_some());
    // Another account is not affected.
    let res = site
        .agent()
        .post_form(
            "/login",
            &[("username", "mallory"), ("password", "mallory")],
        )
        .await;
    assert_eq!(res.header("location"), Some("/"));
}

/// Class 10: the demo app, like the product, only follows same-origin `next` targets.
#[tokio::test]
async fn the_demo_login_refuses_open_redirects() {
    let (demo, _stop) = demo_upstream().await;
    for next in [
        "/\t/evil.com",
        "//evil.com",
        "/\\evil.com",
        "https://evil.com/",
    ] {
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs([
                ("username", "alice"),
                ("password", "wonderland"),
                ("next", next),
            ])
            .finish();
        let req = Request::post(format!("http://{demo}/login"))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(full(body))
            .unwrap();
        let res = send(req).await;
        assert_eq!(res.status, StatusCode::SEE_OTHER, "{next:?}");
        assert_eq!(res.header("location"), Some("/"), "{next:?}");
    }
}

/// Class 10: someone who knows the password cannot spend the user's code emails. Each client
/// has its own hourly budget per account (clients told apart through a trusted proxy's
/// `X-Forwarded-For`), and each sign-in its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attacker_cannot_spend_the_users_code_emails() {
    let dir = TempDir::new("budget");
    let outbox = dir.0.to_str().unwrap().to_owned();
    let site = lenient_site(&[
        ("TWOFA_EMAIL__TRANSPORT", "file"),
        ("TWOFA_EMAIL__FILE_DIR", &outbox),
        ("TWOFA_EMAIL__MAX_SENDS_PER_HOUR", "2"),
        ("TWOFA_EMAIL__MAX_SENDS_PER_LOGIN", "2"),
        ("TWOFA_TWOFACTOR__MAX_PENDING_LOGINS", "20"),
        ("TWOFA_SERVER__TRUSTED_PROXIES", "127.0.0.1"),
    ])
    .await;
    // Code emails only (notices of the change go out on their own).
    let sent = || {
        std::fs::read_dir(&dir.0)
            .unwrap()
            .filter(|e| {
                let text = std::fs::read_to_string(e.as_ref().unwrap().path()).unwrap();
                text.contains("Your code is ")
            })
            .count()
    };
    let newest = || {
        let mut files: Vec<_> = std::fs::read_dir(&dir.0)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap());
        files
            .iter()
            .rev()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .find(|text| text.contains("Your code is "))
            .unwrap()
    };
    // The hourly budgets count per clock hour: start at the top of one.
    let now = site.clock.now_secs();
    site.clock.set(now - now % 3600 + 3600);

    let mut alice = site.agent();
    alice
        .post_form(
            "/login",
            &[("username", "alice"), ("password", "wonderland")],
        )
        .await;
    let res = alice
        .post_json(
            "/_2fa/api/v1/email/setup",
            json!({"address": "alice@example.com"}),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let code = crate::support::smtp::code_in(&newest());
    let res = alice
        .post_json("/_2fa/api/v1/email/confirm", json!({ "code": code }))
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let enrolled = sent();

    let login_from = |client: &'static str| {
        let addr = site.proxy.addr;
        async move {
            let req = Request::post(format!("http://{addr}/login"))
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header("x-forwarded-for", client)
                .body(full("username=alice&password=wonderland"))
                .unwrap();
            send(req).await
        }
    };
    // The attacker's sign-ins: two codes, then its budget for alice is spent.
    for _ in 0..4 {
        let res = login_from("203.0.113.66").await;
        assert_eq!(res.header("location"), Some("/_2fa/challenge"));
    }
    assert_eq!(sent(), enrolled + 2);
    // Alice, from her own address, still gets her code.
    let res = login_from("198.51.100.7").await;
    assert_eq!(res.header("location"), Some("/_2fa/challenge"));
    assert_eq!(sent(), enrolled + 3, "the user's own code was not sent");
}

/// Class 5, HTTP/2: cookie crumbs (RFC 9113 8.2.3) reach the app as one `Cookie` header, the
/// proxy's own cookie taken out.
#[tokio::test]
async fn http2_cookie_crumbs_are_joined() {
    let (up, _stop) = demo_upstream().await;
    let proxy = proxy(up, &[]).await;
    let client = h2c_client();
    for crumbs in [["a=1", "b=2"], ["a=1", "twofa-session=x; b=2"]] {
        let mut req = Request::get(format!("http://{}/debug/headers", proxy.addr));
        for c in crumbs {
            req = req.header(header::COOKIE, c);
        }
        let res = client.request(req.body(full("")).unwrap()).await.unwrap();
        let body = http_body_util::BodyExt::collect(res.into_body())
            .await
            .unwrap()
            .to_bytes();
        let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(seen(&echo, "cookie"), ["a=1; b=2"], "{crumbs:?}");
    }
}
