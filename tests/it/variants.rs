//! Variants of the bypass classes a second review found (SECURITY.md), each asserting the secure
//! outcome through the real proxy: against real Flask (werkzeug), the lenient app, and a
//! scripted upstream that tracks sessions in the URL the way Tomcat does.

use bytes::Bytes;
use http::{Request, header};

use crate::support::realapp::*;
use crate::support::{Answer, full, send};

/// alice (TOTP) and mallory (no 2FA) signed in through the proxy in front of the real Flask app.
async fn alice_and_mallory() -> (RealSite, String, String, String) {
    let site = real_site(RealApp::flask(), &[]).await;
    let mut a = site.agent();
    let secret = enroll_totp(&site, &mut a, ALICE.0, ALICE.1).await;
    let alice = totp_login(&site, ALICE.0, ALICE.1, &secret).await;
    let alice_app = alice.cookies["session"].clone();
    let mut mallory = site.agent();
    form_login(&mut mallory, MALLORY.0, MALLORY.1).await;
    let m_proxy = mallory.cookies["twofa-session"].clone();
    let m_app = mallory.cookies["session"].clone();
    (site, m_proxy, m_app, alice_app)
}

async fn get_with_raw_cookie_lines(
    addr: std::net::SocketAddr,
    path: &str,
    lines: &[Vec<u8>],
) -> Answer {
    let mut req = Request::get(format!("http://{addr}{path}"));
    for line in lines {
        req = req.header(header::COOKIE, http::HeaderValue::from_bytes(line).unwrap());
    }
    send(req.body(full(Bytes::new())).unwrap()).await
}

fn line(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// WSGI hands the Cookie header to werkzeug as Latin-1 text and werkzeug strips cookie names
/// with Python's `str.strip()`, which also removes U+0085 (NEL) and U+00A0 (NBSP): the single
/// obs-text bytes 0x85 / 0xA0 around `session` still name `session` for Flask. (Django decodes
/// UTF-8 first, then `str.strip()`: there the UTF-8 forms of U+00A0, U+2000..U+200A, U+3000 do
/// it.) The proxy's `trim_ws` only trims ASCII blanks, so it sees no app cookie next to mallory's
/// proxy session, checks no binding, and forwards alice's app session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "external-tools"), ignore = "needs external-tools")]
async fn unicode_blank_cookie_names_reach_werkzeug() {
    let (site, m, ma, a) = alice_and_mallory().await;
    let (m, ma, a) = (m.as_bytes(), ma.as_bytes(), a.as_bytes());
    let mut leaks = Vec::new();
    for lines in [
        vec![line(&[b"twofa-session=", m]), line(&[b"\xa0session=", a])],
        vec![line(&[b"twofa-session=", m, b"; \xa0session=", a])],
        vec![
            line(&[b"twofa-session=", m]),
            line(&[b"session\x85=", a, b"; x=1"]),
        ],
        vec![
            line(&[b"twofa-session=", m]),
            line(&[b"\x85session=", a, b"; session=", ma]),
        ],
    ] {
        let res = get_with_raw_cookie_lines(site.proxy.addr, "/whoami", &lines).await;
        let shown: Vec<String> = lines
            .iter()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect();
        eprintln!("{shown:?} -> {} {}", res.status, res.text());
        if let Some((user, identity)) = whoami(&res)
            && user == "alice"
        {
            leaks.push(format!(
                "{shown:?}: app served alice, X-Twofa-User={identity}"
            ));
        }
    }
    assert!(leaks.is_empty(), "{leaks:#?}");
}

/// The app's login redirects to the same-site `next` after a RIGHT password (Flask-Login's
/// tutorial, Django's LoginView, Devise's stored location). `next=/login` makes that redirect
/// point at a login page, which `success::judge` calls NotAccepted, and the proxy then passes
/// the app's answer through UNCHANGED, with alice's fresh, authenticated app session cookie.
/// Combined with a cookie spelling the binding check misses (above), mallory is alice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "external-tools"), ignore = "needs external-tools")]
async fn next_to_login_page_hands_out_the_app_session() {
    let overrides = [
        ("TWOFA_APP__LOGIN_PATHS", "/login,/login-next"),
        ("TWOFA_APP__PUBLIC_PATHS", "/login,/static/"),
    ];
    let site = real_site(RealApp::flask(), &overrides).await;
    let mut a = site.agent();
    let _secret = enroll_totp(&site, &mut a, ALICE.0, ALICE.1).await;

    // Without `next`: the proxy holds the answer back and asks for alice's code.
    let mut attacker = site.agent();
    let res = attacker
        .post_form(
            "/login-next",
            &[("username", "alice"), ("password", "wonderland")],
        )
        .await;
    assert_eq!(res.header("location"), Some("/_2fa/challenge"));

    let mut leaks = Vec::new();
    for next in [
        "/login",
        "/login?x=1",
        "/LOGIN/",
        "/login.html",
        "/login-next",
    ] {
        let mut attacker = site.agent();
        let path = format!(
            "/login-next?next={}",
            next.replace('?', "%3F").replace('=', "%3D")
        );
        let res = attacker
            .post_form(&path, &[("username", "alice"), ("password", "wonderland")])
            .await;
        eprintln!(
            "{path} -> {} {:?} {:?}",
            res.status,
            res.header("location"),
            res.headers.get_all("set-cookie")
        );
        if site.app.hands_out_session_of(&res, "alice").await {
            leaks.push(path);
        }
    }

    // The whole chain: the leaked cookie ridden on mallory's own proxy session.
    let mut attacker = site.agent();
    let res = attacker
        .post_form(
            "/login-next?next=/login",
            &[("username", "alice"), ("password", "wonderland")],
        )
        .await;
    let stolen = set_cookie_values(&res, "session").pop();
    let mut mallory = site.agent();
    form_login(&mut mallory, MALLORY.0, MALLORY.1).await;
    let m = mallory.cookies["twofa-session"].clone();
    if let Some(stolen) = stolen {
        let lines = vec![
            line(&[b"twofa-session=", m.as_bytes()]),
            line(&[b"\xa0session=", stolen.as_bytes()]),
        ];
        let res = get_with_raw_cookie_lines(site.proxy.addr, "/whoami", &lines).await;
        eprintln!("chain -> {} {}", res.status, res.text());
        if whoami(&res).is_some_and(|(u, _)| u == "alice") {
            leaks.push(format!("full chain: mallory is alice: {}", res.text()));
        }
    }
    assert!(
        leaks.is_empty(),
        "alice's app session without her code: {leaks:#?}"
    );
}

/// Legacy cookie parsers split pairs at `,` as well as `;` (Rack < 2.1.4, Tomcat's
/// LegacyCookieProcessor, ASP.NET Core's CookieHeaderParserShared): `a,session=V` is cookie
/// `session`. The proxy only looks for a `,` inside a pair's VALUE, so a comma inside the NAME
/// hides alice's cookie. (ASP.NET Core also resyncs one character at a time after a malformed
/// pair, so `x=1 session=V` is `session` there too.) Shown with the lenient app, which splits at
/// both separators.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comma_inside_a_cookie_name_hides_the_app_cookie() {
    use crate::support::lenient_app::LenientApp;
    crate::support::init();
    let app = LenientApp::start().await;
    let toml = r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
[app]
login_paths = ["/login"]
success_status = [302, 303]
public_paths = ["/static/"]
[records]
path = ":memory:"

[session]
insecure_http_cookies = true
"#;
    let config = twofa_proxy::config::Config::from_toml(
        toml,
        vec![(
            "TWOFA_UPSTREAM__URL".to_owned(),
            format!("http://{}", app.addr),
        )],
    )
    .unwrap();
    let proxy = twofa_proxy::app::start(config).await.unwrap();
    let mut mallory = crate::support::agent::Agent::new(proxy.addr);
    mallory
        .post_form(
            "/login",
            &[("username", "mallory"), ("password", "mallory")],
        )
        .await;
    let m = mallory.cookies["twofa-session"].clone();
    let stolen = app.login_directly("alice");
    let mut leaks = Vec::new();
    for cookie in [
        format!("twofa-session={m}; a,session={stolen}"),
        format!("twofa-session={m}; a, session={stolen}"),
    ] {
        let req = Request::get(format!("http://{}/", proxy.addr))
            .header(header::ACCEPT, "text/html")
            .header(header::COOKIE, cookie.as_str());
        let res = send(req.body(full(Bytes::new())).unwrap()).await;
        eprintln!("{cookie} -> {} {}", res.status, res.text());
        if res.text().contains("user=alice") {
            leaks.push(format!("{cookie}: {}", res.text()));
        }
    }
    assert!(leaks.is_empty(), "{leaks:#?}");
}

/// Servlet containers (Tomcat, Jetty) track sessions in the URL too (`;jsessionid=ID`, on by
/// default: `SessionTrackingMode.URL`), used when the request has no session cookie. The proxy
/// binds only the COOKIE: mallory's proxy session with no app cookie and alice's session id as a
/// path parameter passes every check and reaches the app. The upstream here mimics Tomcat's
/// `CoyoteAdapter` (path parameter first, a cookie overrides it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_id_in_a_path_parameter_skips_the_binding() {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    crate::support::init();
    let sessions: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    sessions
        .lock()
        .unwrap()
        .insert("ALICE0001".into(), "alice".into());
    let shared = sessions.clone();
    let app = crate::support::scripted_upstream(move |req: Request<hyper::body::Incoming>| {
        let sessions = shared.clone();
        async move {
            let path = req.uri().path().to_owned();
            let from_url = path.split(';').skip(1).find_map(|p| {
                p.strip_prefix("jsessionid=")
                    .map(|v| v.split('/').next().unwrap_or(v).to_owned())
            });
            let from_cookie = req
                .headers()
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|p| p.trim().strip_prefix("JSESSIONID=").map(str::to_owned))
                .next();
            let base = path.split(';').next().unwrap_or("").to_owned();
            if base == "/login" && req.method() == http::Method::POST {
                let n = sessions.lock().unwrap().len();
                let id = format!("MALLORY{n:03}");
                sessions
                    .lock()
                    .unwrap()
                    .insert(id.clone(), "mallory".into());
                return http::Response::builder()
                    .status(302)
                    .header(header::LOCATION, "/")
                    .header(header::SET_COOKIE, format!("JSESSIONID={id}; Path=/"))
                    .body(full(""))
                    .unwrap();
            }
            let user = from_cookie
                .or(from_url)
                .and_then(|id| sessions.lock().unwrap().get(&id).cloned());
            http::Response::builder()
                .status(200)
                .body(full(format!("user={}", user.unwrap_or_default())))
                .unwrap()
        }
    })
    .await;
    let proxy = crate::support::proxy(
        app,
        &[
            ("TWOFA_APP__SUCCESS_COOKIE", "JSESSIONID"),
            ("TWOFA_APP__LOGIN_PATHS", "/login"),
            ("TWOFA_SESSION__INSECURE_HTTP_COOKIES", "true"),
        ],
    )
    .await;
    let mut mallory = crate::support::agent::Agent::new(proxy.addr);
    let res = mallory
        .post_form("/login", &[("username", "mallory"), ("password", "x")])
        .await;
    eprintln!("login: {} {:?}", res.status, mallory.cookies);
    let m = mallory.cookies["twofa-session"].clone();
    let req = Request::get(format!(
        "http://{}/account;jsessionid=ALICE0001",
        proxy.addr
    ))
    .header(header::COOKIE, format!("twofa-session={m}"));
    let res = send(req.body(full(Bytes::new())).unwrap()).await;
    eprintln!("path param -> {} {}", res.status, res.text());
    assert!(!res.text().contains("user=alice"), "{}", res.text());
}
