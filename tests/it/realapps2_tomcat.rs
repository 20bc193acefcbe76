//! Bypass regressions against REAL Tomcat 10.1 (`support/tomcat/`: JSPs compiled by Tomcat's
//! Jasper, sessions in the JSESSIONID cookie and in the URL), with the proxy in front. Each test
//! first shows that Tomcat really reads the request the dangerous way (asked directly), then
//! asserts the secure outcome through the proxy: (a) a login body in EBCDIC (`charset=ibm037`),
//! (b) a session id in the URL (`;jsessionid=`), (c) JSESSIONID cookie spellings that Tomcat's
//! Rfc6265CookieProcessor reads, and its first-valid-of-two rule.

use bytes::Bytes;
use http::{Request, header};

use crate::support::realapp::{get_with_cookie_lines, whoami};
use crate::support::realapp2::*;
use crate::support::{Answer, full, send};

/// The proxy in front of Tomcat with alice enrolled in TOTP; returns her key.
async fn tomcat_with_alice() -> (Site, String) {
    let site = site(AppServer::tomcat(), &[]).await;
    let secret = site.enroll_totp(ALICE.0, ALICE.1).await;
    (site, secret)
}

/// `text` in EBCDIC (IBM037; the characters used here are all in it).
fn ebcdic(text: &str) -> Vec<u8> {
    text.chars()
        .map(|c| match c {
            'a'..='i' => 0x81 + (c as u8 - b'a'),
            'j'..='r' => 0x91 + (c as u8 - b'j'),
            's'..='z' => 0xa2 + (c as u8 - b's'),
            '=' => 0x7e,
            '&' => 0x50,
            other => panic!("no EBCDIC here for {other:?}"),
        })
        .collect()
}

/// A POST of `body` to the login with `content_type` and extra `Cookie` line(s).
async fn post_login(
    addr: std::net::SocketAddr,
    content_type: &str,
    body: Vec<u8>,
    cookie: Option<&str>,
) -> Answer {
    let mut req = Request::post(format!("http://{addr}/app/login"))
        .header(header::ACCEPT, "text/html")
        .header(header::CONTENT_TYPE, content_type);
    if let Some(cookie) = cookie {
        req = req.header(header::COOKIE, cookie);
    }
    send(req.body(full(Bytes::from(body))).unwrap()).await
}

/// A line of Tomcat's access log (`%r %s [Content-Type] [Cookie]`): the request line with the
/// status, and the content type.
fn access_line(line: &str) -> (&str, &str) {
    let mut parts = line.splitn(3, " [");
    let request = parts.next().unwrap_or("");
    let content_type = parts.next().unwrap_or("").trim_end_matches(']');
    (request, content_type)
}

// ---- (a) EBCDIC login bodies ----------------------------------------------------------------

/// Class 4 on Tomcat. Tomcat decodes form parameters by the charset of the request's
/// `Content-Type`, `charset=ibm037` (EBCDIC) included, and its media-type parser allows blanks
/// around the parameter's `=` (`charset =ibm037`). It splits the body at the ASCII bytes `&` and
/// `=` first and decodes each name and value after, so a body of EBCDIC names and values with
/// ASCII separators is `username=alice&password=wonderland` to `request.getParameter` (shown
/// directly: 302 and alice's session). A proxy reading the same bytes as UTF-8 sees no
/// `username` field at all, or, in the mixed body, mallory's. Through the proxy each is refused
/// with 415 and never reaches Tomcat (its access log shows none of them; no JSESSIONID of
/// alice's comes back, no challenge).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realapps2_tomcat_ebcdic_login_bodies_are_refused() {
    let (site, _) = tomcat_with_alice().await;
    let tomcat_form = [
        ebcdic("username"),
        b"=".to_vec(),
        ebcdic("alice"),
        b"&".to_vec(),
        ebcdic("password"),
        b"=".to_vec(),
        ebcdic("wonderland"),
    ]
    .concat();
    // What a UTF-8 reader takes for mallory's login, and Tomcat for alice's.
    let mixed = [
        b"username=mallory&password=mallory&".to_vec(),
        tomcat_form.clone(),
    ]
    .concat();
    // The whole text in EBCDIC, separators too (Tomcat then finds no fields: pinned anyway).
    let all_ebcdic = ebcdic("username=alice&password=wonderland");
    let types = [
        "application/x-www-form-urlencoded; charset=ibm037",
        "application/x-www-form-urlencoded; charset =ibm037",
        "application/x-www-form-urlencoded; charset = IBM037",
        "application/x-www-form-urlencoded;charset=\"ibm037\"",
        "application/x-www-form-urlencoded; charset=cp037",
    ];
    // Tomcat really signs alice in from the EBCDIC bodies, asked directly.
    for content_type in types {
        for body in [&tomcat_form, &mixed] {
            let res = post_login(site.app.addr, content_type, body.clone(), None).await;
            assert!(
                site.app.hands_out_session_of(&res, "alice").await,
                "Tomcat did not sign alice in from {content_type:?}: {} {:?}",
                res.status,
                res.header("location")
            );
        }
    }
    let mallory = site.mallory().await;
    let m = format!("twofa-session={}", mallory.cookies["twofa-session"]);
    // The access log shows the EBCDIC posts above: the check at the end can see one.
    let ebcdic_post = |line: &&str| {
        let content_type = access_line(line).1.to_ascii_lowercase();
        content_type.contains("ibm037") || content_type.contains("cp037")
    };
    let log = site.app.access_log_since(0).await;
    assert_eq!(log.lines().filter(ebcdic_post).count(), 10, "{log}");
    let logged = log.len();
    let mut wrong = Vec::new();
    for content_type in types {
        for (what, body) in [
            ("Tomcat's form", &tomcat_form),
            ("mixed", &mixed),
            ("all EBCDIC", &all_ebcdic),
        ] {
            for cookie in [None, Some(m.as_str())] {
                let res = post_login(site.proxy.addr, content_type, body.clone(), cookie).await;
                let handed_out = site.app.hands_out_session_of(&res, "alice").await;
                if res.status != 415 || handed_out {
                    wrong.push(format!(
                        "{content_type:?}, {what}, with mallory's session: {}: {} to {:?}, \
                         alice's session handed out: {handed_out}",
                        cookie.is_some(),
                        res.status.as_u16(),
                        res.header("location")
                    ));
                }
            }
        }
    }
    // Tomcat never received any of them.
    let seen = site.app.access_log_since(logged).await;
    wrong.extend(
        seen.lines()
            .filter(ebcdic_post)
            .map(|line| format!("Tomcat received: {line}")),
    );
    assert!(wrong.is_empty(), "EBCDIC logins not refused: {wrong:#?}");
}

// ---- (b) session ids in the URL ---------------------------------------------------------------

/// alice signed in with her code and mallory without 2FA, both through the proxy.
struct TwoLogins {
    site: Site,
    mallory_proxy: String,
    mallory_app: String,
    alice_app: String,
}

async fn two_logins() -> TwoLogins {
    let (site, secret) = tomcat_with_alice().await;
    let alice = site.totp_login(ALICE.0, ALICE.1, &secret).await;
    let alice_app = alice.cookies["JSESSIONID"].clone();
    assert_eq!(site.app.user_of(&alice_app).await.as_deref(), Some("alice"));
    let mallory = site.mallory().await;
    TwoLogins {
        mallory_proxy: mallory.cookies["twofa-session"].clone(),
        mallory_app: mallory.cookies["JSESSIONID"].clone(),
        alice_app,
        site,
    }
}

impl TwoLogins {
    /// Fills in `{M}` (mallory's proxy session), `{MA}` (her app session), `{A}` (alice's).
    fn fill(&self, text: &str) -> String {
        text.replace("{MA}", &self.mallory_app)
            .replace("{M}", &self.mallory_proxy)
            .replace("{A}", &self.alice_app)
    }

    /// GET `path` with `lines` as `Cookie` headers (filled in) at `addr`.
    async fn get(&self, addr: std::net::SocketAddr, path: &str, lines: &[&str]) -> Answer {
        let filled: Vec<String> = lines.iter().map(|l| self.fill(l)).collect();
        let refs: Vec<&str> = filled.iter().map(String::as_str).collect();
        get_with_cookie_lines(addr, &self.fill(path), &refs).await
    }
}

fn user(res: &Answer) -> Option<String> {
    whoami(res).map(|(u, _)| u)
}

/// Class 5, session ids outside cookies, on Tomcat. Tomcat tracks sessions in the URL too
/// (`;jsessionid=ID` as a path parameter on any segment, the default `SessionTrackingMode.URL`)
/// when no valid session cookie comes with the request: shown directly, alice's id in the URL
/// alone is alice. Through the proxy the parameter is dropped: mallory's proxy session (with or
/// without her own JSESSIONID cookie) and alice's id in the URL is never alice, and Tomcat never
/// sees the id (its access log shows none of them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realapps2_tomcat_session_ids_in_the_url_never_reach_tomcat() {
    let logins = two_logins().await;
    let paths = [
        "/app/account;jsessionid={A}",
        "/app/whoami;jsessionid={A}",
        "/app;jsessionid={A}/whoami",
        "/app/whoami;x=1;jsessionid={A}",
        "/app/whoami;jsessionid={A};x=1",
        "/app/whoami;jsessionid={A}?x=1",
    ];
    for path in &paths[1..] {
        let res = logins.get(logins.site.app.addr, path, &[]).await;
        assert_eq!(
            user(&res).as_deref(),
            Some("alice"),
            "Tomcat does not read {path}: {}",
            res.text()
        );
    }
    let direct = logins.get(logins.site.app.addr, paths[0], &[]).await;
    assert!(
        direct.status == 200 && direct.text().contains("Hello alice"),
        "Tomcat's account page with alice's id in the URL: {} {}",
        direct.status,
        direct.text()
    );
    // The access log shows the requests above: the check at the end can see one.
    let id_in_url = |line: &&str| access_line(line).0.contains(";jsessionid=");
    // Tomcat writes a line once the answer is sent, so a line can land after a later request's
    // (the mark's): read until every request is there, for a bounded time.
    let mut log = logins.site.app.access_log_since(0).await;
    for _ in 0..50 {
        if log.lines().filter(id_in_url).count() >= paths.len() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        log = logins.site.app.access_log_since(0).await;
    }
    assert_eq!(log.lines().filter(id_in_url).count(), paths.len(), "{log}");
    let logged = log.len();
    let mut wrong = Vec::new();
    for path in paths {
        for cookies in [
            &["twofa-session={M}"][..],
            &["twofa-session={M}; JSESSIONID={MA}"][..],
        ] {
            let res = logins.get(logins.site.proxy.addr, path, cookies).await;
            if res.text().contains("alice") {
                wrong.push(format!(
                    "{path} with {cookies:?}: {} {}",
                    res.status.as_u16(),
                    res.text().chars().take(200).collect::<String>()
                ));
            }
        }
        // Without any proxy session it is not alice either.
        let res = logins.get(logins.site.proxy.addr, path, &[]).await;
        if res.text().contains("alice") {
            wrong.push(format!("{path}, anonymous: {} {}", res.status, res.text()));
        }
    }
    // Tomcat never received any of them.
    let seen = logins.site.app.access_log_since(logged).await;
    wrong.extend(
        seen.lines()
            .filter(id_in_url)
            .map(|line| format!("Tomcat received: {line}")),
    );
    assert!(
        wrong.is_empty(),
        "alice's session id in the URL: {wrong:#?}"
    );
}

// ---- (c) JSESSIONID cookie spellings ---------------------------------------------------------

/// Spellings Tomcat's Rfc6265CookieProcessor reads as the JSESSIONID cookie (names are compared
/// case-sensitively, so `jsessionid` is not one; a `,` ends its parse, so no comma spellings).
const TOMCAT_SPELLINGS: &[&[&str]] = &[
    &[" JSESSIONID={A}"],
    &["JSESSIONID ={A}"],
    &["\tJSESSIONID\t=\t{A}"],
    &["JSESSIONID= {A}"],
    &["JSESSIONID=\"{A}\""],
    &["$Version=1; JSESSIONID={A}"],
    &["$Version=\"1\"; JSESSIONID={A}; $Path=/app"],
    &["x; JSESSIONID={A}"],
    &["a=b=c; JSESSIONID={A}"],
    &["a=\"x\"; JSESSIONID={A}"],
    // Tomcat takes the first JSESSIONID that names a live session.
    &["JSESSIONID=0000; JSESSIONID={A}"],
    &["a=1", "JSESSIONID ={A}"],
];

/// Class 5 on Tomcat. Each spelling in `TOMCAT_SPELLINGS` is alice's session to Tomcat (shown
/// directly, alone). Next to mallory's proxy session, in the same `Cookie` line or another one,
/// and after her own JSESSIONID, none reaches Tomcat as alice through the proxy. Also Tomcat's
/// first-live-session rule: after mallory ends her app session (the app's own logout, which
/// the proxy does not watch), `JSESSIONID=<hers>; JSESSIONID=<alice's>` is alice to Tomcat, and
/// must not be through the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realapps2_tomcat_jsessionid_spellings_never_reach_alice() {
    let logins = two_logins().await;
    let app = logins.site.app.addr;
    let proxy = logins.site.proxy.addr;
    for lines in TOMCAT_SPELLINGS {
        let res = logins.get(app, "/app/whoami", lines).await;
        assert_eq!(
            user(&res).as_deref(),
            Some("alice"),
            "Tomcat does not read {lines:?} as alice's session: {}",
            res.text()
        );
    }
    let mut leaks = Vec::new();
    let mut outcomes = Outcomes::default();
    let mut check = |what: String, res: &Answer| {
        outcomes.add(res);
        if user(res).as_deref() == Some("alice") {
            leaks.push(format!("{what}: Tomcat served alice: {}", res.text()));
        }
    };
    for lines in TOMCAT_SPELLINGS {
        let mut variants: Vec<Vec<String>> = vec![
            [
                vec!["twofa-session={M}".to_owned()],
                lines.iter().map(|l| (*l).to_owned()).collect(),
            ]
            .concat(),
            vec![format!("twofa-session={{M}}; {}", lines.join("; "))],
            vec![format!(
                "twofa-session={{M}}; JSESSIONID={{MA}}; {}",
                lines.join("; ")
            )],
        ];
        variants.push(vec![format!("{}; twofa-session={{M}}", lines.join("; "))]);
        for variant in variants {
            let refs: Vec<&str> = variant.iter().map(String::as_str).collect();
            let res = logins.get(proxy, "/app/whoami", &refs).await;
            check(format!("{variant:?}"), &res);
        }
    }
    // mallory's own cookies reach mallory: the refusals are not a broken setup.
    let res = logins
        .get(
            proxy,
            "/app/whoami",
            &["twofa-session={M}; JSESSIONID={MA}"],
        )
        .await;
    assert_eq!(user(&res).as_deref(), Some("mallory"), "{}", res.text());

    // mallory logs out of the app (not of the proxy); her JSESSIONID now names no session, and
    // Tomcat moves on to the next JSESSIONID.
    let res = logins
        .get(
            proxy,
            "/app/logout",
            &["twofa-session={M}; JSESSIONID={MA}"],
        )
        .await;
    assert_eq!(res.status, 302, "mallory's app logout: {}", res.text());
    let direct = logins
        .get(app, "/app/whoami", &["JSESSIONID={MA}; JSESSIONID={A}"])
        .await;
    assert_eq!(user(&direct).as_deref(), Some("alice"), "{}", direct.text());
    for lines in [
        &["twofa-session={M}; JSESSIONID={MA}; JSESSIONID={A}"][..],
        &["twofa-session={M}; JSESSIONID={MA}", "JSESSIONID={A}"][..],
        &["twofa-session={M}; JSESSIONID={MA}; JSESSIONID ={A}"][..],
    ] {
        let res = logins.get(proxy, "/app/whoami", lines).await;
        check(format!("after mallory's app logout: {lines:?}"), &res);
    }
    eprintln!("through the proxy: {outcomes:#?}");
    assert!(
        leaks.is_empty(),
        "alice's app session rode on mallory's proxy session: {leaks:#?}"
    );
}

// ---- the real login flow ------------------------------------------------------------------------

/// Pins the login flow through the proxy against real Tomcat: a right password is held back for
/// alice's code, and Tomcat's own answer (302, JSESSIONID) is replayed after it; a wrong one
/// (Tomcat shows the form again with 200) starts nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realapps2_tomcat_login_is_held_for_the_code() {
    let (site, secret) = tomcat_with_alice().await;
    let mut attacker = site.agent();
    let res = site.login(&mut attacker, ALICE.0, "guess").await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert!(res.text().contains("Wrong name or password"));
    assert!(!attacker.cookies.contains_key("twofa-pending"));
    assert!(!attacker.cookies.contains_key("twofa-session"));
    let res = site.login(&mut attacker, ALICE.0, ALICE.1).await;
    assert_eq!(res.header("location"), Some("/_2fa/challenge"));
    assert!(!site.app.hands_out_session_of(&res, "alice").await);
    let mut alice = site.totp_login(ALICE.0, ALICE.1, &secret).await;
    assert_eq!(
        site.app_user(&mut alice).await,
        Some(("alice".into(), "alice".into()))
    );
    // Tomcat sends a new session's browser to `/app/account;jsessionid=<id>`: followed through
    // the proxy (which drops the parameter; the cookie carries the session) it is the account.
    let mut again = site.agent();
    let res = site.login(&mut again, ALICE.0, ALICE.1).await;
    let res =
        crate::support::site::answer_totp_challenge(&mut again, &res, &secret, &site.clock).await;
    let location = res.header("location").unwrap_or_default().to_owned();
    assert!(location.contains(";jsessionid="), "{location}");
    let account = again.follow(&res).await;
    assert_eq!(account.status, 200, "{location}: {}", account.text());
    assert!(account.text().contains("Hello alice"), "{}", account.text());
}
