//! Bypass regressions against a REAL Django app (`support/realapp_django.py`: Django's own WSGI
//! server, signed-cookie sessions, CSRF middleware on), with the proxy in front. Each test first
//! shows that Django really reads the request the dangerous way (asked directly), then asserts
//! the secure outcome through the proxy: (a) names Django folds (NFKC), (b) cookie names that
//! Django's `parse_cookie` strips of Unicode blanks, (c) a right password redirected to
//! `next=/accounts/login/`, (d) a wrong password that Django answers with the form and 200.

use crate::support::agent::Agent;
use crate::support::realapp::{get_with_cookie_lines, set_cookie_values, whoami};
use crate::support::realapp2::*;
use crate::support::{Answer, full, send};

use bytes::Bytes;
use http::{Request, header};

/// The proxy in front of Django with alice enrolled in TOTP; returns her key.
async fn django_with_alice(overrides: &[(&str, &str)]) -> (Site, String) {
    let site = site(AppServer::django(), overrides).await;
    let secret = site.enroll_totp(ALICE.0, ALICE.1).await;
    (site, secret)
}

// ---- (a) names Django folds -------------------------------------------------------------------

/// Names that Django's `AbstractBaseUser.normalize_username` (NFKC) plus a case-insensitive
/// lookup turn into `alice`: fullwidth, fullwidth capitals, mathematical bold, circled letters.
const FOLDED_ALICE: &[&str] = &[
    "\u{ff41}\u{ff4c}\u{ff49}\u{ff43}\u{ff45}",
    "\u{ff21}\u{ff2c}\u{ff29}\u{ff23}\u{ff25}",
    "\u{ff21}lice",
    "\u{1d41a}\u{1d425}\u{1d422}\u{1d41c}\u{1d41e}",
    "\u{24b6}\u{24db}\u{24d8}\u{24d2}\u{24d4}",
];

/// Class 3 on Django. Every name in `FOLDED_ALICE` signs in as alice at Django itself (asked
/// directly). Through the proxy, by default (ASCII names only) each is refused with 400 and
/// nothing of alice's is handed out; with `app.username_unicode = true` each is challenged as
/// alice. Never alice's account on her password alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realapps2_django_nfkc_names_reach_alice_only_through_her_code() {
    let (site, _) = django_with_alice(&[]).await;
    for typed in FOLDED_ALICE {
        let stolen = site.app.session_of(typed, ALICE.1).await;
        assert_eq!(
            site.app.user_of(&stolen).await.as_deref(),
            Some("alice"),
            "Django does not sign {typed:?} in as alice"
        );
    }
    let mut wrong = Vec::new();
    for typed in FOLDED_ALICE {
        match alice_only_through_her_challenge(&site, typed).await {
            Ok((false, 400)) => {}
            Ok((challenged, status)) => wrong.push(format!(
                "{typed:?}: {status}, challenged: {challenged} (expected a 400 refusal)"
            )),
            Err(e) => wrong.push(e),
        }
    }
    assert!(wrong.is_empty(), "default (ASCII names): {wrong:#?}");

    let (site, _) = django_with_alice(&[("TWOFA_APP__USERNAME_UNICODE", "true")]).await;
    let mut wrong = Vec::new();
    for typed in FOLDED_ALICE {
        match alice_only_through_her_challenge(&site, typed).await {
            Ok((true, _)) => {}
            Ok((false, status)) => wrong.push(format!(
                "{typed:?}: refused with {status} (expected alice's challenge)"
            )),
            Err(e) => wrong.push(e),
        }
    }
    assert!(wrong.is_empty(), "username_unicode = true: {wrong:#?}");
}

// ---- (b) cookie names with Unicode blanks -----------------------------------------------------

/// alice signed in with her code and mallory without 2FA, both through the proxy.
struct TwoLogins {
    site: Site,
    /// mallory's proxy session and her own app session.
    mallory_proxy: String,
    mallory_app: String,
    /// alice's app session (stolen, or from a login the proxy never saw).
    alice_app: String,
}

async fn two_logins() -> TwoLogins {
    let (site, secret) = django_with_alice(&[]).await;
    let alice = site.totp_login(ALICE.0, ALICE.1, &secret).await;
    let alice_app = alice.cookies["sessionid"].clone();
    assert_eq!(site.app.user_of(&alice_app).await.as_deref(), Some("alice"));
    let mallory = site.mallory().await;
    TwoLogins {
        mallory_proxy: mallory.cookies["twofa-session"].clone(),
        mallory_app: mallory.cookies["sessionid"].clone(),
        alice_app,
        site,
    }
}

impl TwoLogins {
    /// Fills in `{M}` (mallory's proxy session), `{MA}` (her app session), `{A}` (alice's).
    fn fill(&self, line: &[u8]) -> Vec<u8> {
        // Placeholders are ASCII; the bytes around them are kept as they are.
        let mut out = Vec::new();
        let mut rest = line;
        while !rest.is_empty() {
            if let Some(tail) = rest.strip_prefix(b"{MA}") {
                out.extend_from_slice(self.mallory_app.as_bytes());
                rest = tail;
            } else if let Some(tail) = rest.strip_prefix(b"{M}") {
                out.extend_from_slice(self.mallory_proxy.as_bytes());
                rest = tail;
            } else if let Some(tail) = rest.strip_prefix(b"{A}") {
                out.extend_from_slice(self.alice_app.as_bytes());
                rest = tail;
            } else {
                out.push(rest[0]);
                rest = &rest[1..];
            }
        }
        out
    }
}

/// A GET with hand-written `Cookie` header lines as raw bytes (obs-text allowed).
async fn get_with_raw_cookies(addr: std::net::SocketAddr, path: &str, lines: &[Vec<u8>]) -> Answer {
    let mut req = Request::get(format!("http://{addr}{path}"));
    for line in lines {
        req = req.header(header::COOKIE, http::HeaderValue::from_bytes(line).unwrap());
    }
    send(req.body(full(Bytes::new())).unwrap()).await
}

fn shown(lines: &[Vec<u8>]) -> Vec<String> {
    lines
        .iter()
        .map(|l| String::from_utf8_lossy(l).escape_debug().to_string())
        .collect()
}

/// Class 5 on Django. Django decodes the `Cookie` header as UTF-8 and `parse_cookie` strips each
/// name and value with `str.strip()`, which removes Unicode blanks: U+00A0 (no-break space),
/// U+3000 (ideographic space), U+2003 (em space), U+0085, U+2028, U+1680; and of two equal
/// names the LAST wins. So `\xc2\xa0sessionid=A` is Django's `sessionid`. Each spelling below
/// reaches alice at Django itself (asked directly, alone); through the proxy, next to mallory's
/// proxy session, none reaches the app as alice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realapps2_django_unicode_blank_cookie_names_never_reach_alice() {
    let logins = two_logins().await;
    let spellings: &[&[&[u8]]] = &[
        &[b"\xc2\xa0sessionid={A}"],
        &[b"sessionid\xc2\xa0={A}"],
        &[b"\xe3\x80\x80sessionid={A}"],
        &[b"sessionid\xe3\x80\x80={A}"],
        &[b"\xe2\x80\x83sessionid={A}"],
        &[b"sessionid\xe2\x80\x83={A}"],
        &[b"\xc2\x85sessionid={A}"],
        &[b"\xe2\x80\xa8sessionid={A}"],
        &[b"\xe1\x9a\x80sessionid={A}"],
        &[b"\xa0sessionid={A}"],
        &[b"sessionid=\xc2\xa0{A}"],
        &[b"sessionid={A}\xe3\x80\x80"],
        &[b"x=1; \xc2\xa0sessionid={A}"],
    ];
    // Django really reads each as alice's session (alone, straight at the app).
    for lines in spellings {
        let filled: Vec<Vec<u8>> = lines.iter().map(|l| logins.fill(l)).collect();
        let res = get_with_raw_cookies(logins.site.app.addr, "/whoami", &filled).await;
        assert_eq!(
            whoami(&res).map(|(u, _)| u).as_deref(),
            Some("alice"),
            "Django does not read {:?} as alice's session: {}",
            shown(&filled),
            res.text()
        );
    }
    let mut leaks = Vec::new();
    let mut outcomes = Outcomes::default();
    for lines in spellings {
        let spelled = logins.fill(lines[0]);
        let m = logins.fill(b"twofa-session={M}");
        let ma = logins.fill(b"twofa-session={M}; sessionid={MA}");
        // Next to mallory's proxy session: in one line, in two, after her own app cookie (the
        // last one wins at Django), and before it.
        let joined = [&m[..], b"; ", &spelled[..]].concat();
        let after_own = [&ma[..], b"; ", &spelled[..]].concat();
        let before_own = [&spelled[..], b"; ", &ma[..]].concat();
        for filled in [
            vec![joined],
            vec![m.clone(), spelled.clone()],
            vec![after_own],
            vec![before_own],
            vec![ma.clone(), spelled.clone()],
        ] {
            let res = get_with_raw_cookies(logins.site.proxy.addr, "/whoami", &filled).await;
            outcomes.add(&res);
            if let Some((user, identity)) = whoami(&res)
                && user == "alice"
            {
                leaks.push(format!(
                    "{:?}: Django served alice (X-Twofa-User: {identity})",
                    shown(&filled)
                ));
            }
        }
    }
    eprintln!("through the proxy: {outcomes:#?}");
    assert!(
        leaks.is_empty(),
        "alice's app session rode on mallory's proxy session: {leaks:#?}"
    );
    // mallory's own cookies still reach mallory: the refusals are not a broken setup.
    let res = get_with_cookie_lines(
        logins.site.proxy.addr,
        "/whoami",
        &[&String::from_utf8(logins.fill(b"twofa-session={M}; sessionid={MA}")).unwrap()],
    )
    .await;
    assert_eq!(whoami(&res).map(|(u, _)| u).as_deref(), Some("mallory"));
}

// ---- (c) a right password redirected to the login page ----------------------------------------

/// After `res` on `agent`, alice's account must not be reachable without her code: a challenge
/// is alice's, no app session of alice was handed out, the agent's cookies do not reach her.
async fn no_alice_without_code(
    site: &Site,
    what: &str,
    agent: &mut Agent,
    res: &Answer,
) -> Option<String> {
    if res.header("location") == Some("/_2fa/challenge") {
        let page = agent.follow(res).await;
        return (!page.text().contains("(alice)"))
            .then(|| format!("{what}: challenged, but not as alice"));
    }
    let handed_out = site.app.hands_out_session_of(res, "alice").await;
    let behind = site.app_user(agent).await;
    let reached = behind.as_ref().is_some_and(|(u, _)| u == "alice");
    (handed_out || reached).then(|| {
        format!(
            "{what}: {} to {:?}, alice's app session handed out: {handed_out}; then the app saw \
             (user, X-Twofa-User) = {behind:?}",
            res.status.as_u16(),
            res.header("location")
        )
    })
}

/// Class 2 on Django. Django's login redirects to the same-site `next` after a RIGHT password
/// (LoginView's `url_has_allowed_host_and_scheme`), so `next=/accounts/login/` makes alice's
/// successful login look like the failure a redirect back to the login page usually is. Asked
/// directly, Django answers it with 302 to `/accounts/login/` and alice's fresh `sessionid`.
/// Through the proxy that cookie must not reach the browser without her code (the login is
/// either challenged as alice or the cookie withheld), and it must not ride on mallory's proxy
/// session either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realapps2_django_next_to_the_login_page_hands_out_no_session() {
    let (site, _) = django_with_alice(&[]).await;
    let nexts = [
        "?next=/accounts/login/",
        "?next=/accounts/login/%3Fnext%3D/",
        "?next=/accounts/login",
        "?next=/ACCOUNTS/LOGIN/",
        "?next=http://127.0.0.1/accounts/login/",
    ];
    // Django really does it, asked directly.
    let mut direct = Agent::new(site.app.addr);
    let res = app_login(Kind::Django, &mut direct, ALICE.0, ALICE.1, nexts[0]).await;
    assert_eq!(
        (res.status.as_u16(), res.header("location")),
        (302, Some("/accounts/login/"))
    );
    assert!(site.app.hands_out_session_of(&res, "alice").await);

    let mut wrong = Vec::new();
    let mut stolen = Vec::new();
    for next in nexts {
        let mut attacker = site.agent();
        let res = app_login(Kind::Django, &mut attacker, ALICE.0, ALICE.1, next).await;
        eprintln!(
            "{next} -> {} {:?} {:?}",
            res.status,
            res.header("location"),
            res.headers.get_all("set-cookie")
        );
        stolen.extend(set_cookie_values(&res, "sessionid"));
        wrong.extend(no_alice_without_code(&site, next, &mut attacker, &res).await);
    }
    // `next` in the form body, where LoginView looks first.
    let mut attacker = site.agent();
    let res = app_login_with(
        Kind::Django,
        &mut attacker,
        &[
            ("username", ALICE.0),
            ("password", ALICE.1),
            ("next", "/accounts/login/"),
        ],
        "",
    )
    .await;
    stolen.extend(set_cookie_values(&res, "sessionid"));
    wrong.extend(no_alice_without_code(&site, "next in the body", &mut attacker, &res).await);

    // The whole chain: whatever cookie came back, ridden on mallory's own proxy session.
    let mallory = site.mallory().await;
    let m = &mallory.cookies["twofa-session"];
    for value in stolen {
        for line in [
            format!("twofa-session={m}; sessionid={value}"),
            format!("twofa-session={m}; sessionid ={value}"),
        ] {
            let res = get_with_cookie_lines(site.proxy.addr, "/whoami", &[&line]).await;
            if whoami(&res).is_some_and(|(u, _)| u == "alice") {
                wrong.push(format!("chain {line:?}: mallory is alice: {}", res.text()));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "alice's app session without her code: {wrong:#?}"
    );
}

// ---- (d) a wrong password ---------------------------------------------------------------------

/// Class 2, the plain case on Django: a wrong password is answered by Django with the form again
/// and 200 (plus a fresh `csrftoken` cookie). It starts nothing: no `twofa-pending` (no challenge
/// for alice, who has TOTP), no `twofa-session` (mallory, without 2FA, under `optional`; and under
/// `required`, no enrollment session), and Django's page reaches the browser as Django sent it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realapps2_django_a_wrong_password_starts_nothing() {
    let (site, _) = django_with_alice(&[]).await;
    let mut wrong = Vec::new();
    for (user, password) in [
        (ALICE.0, "guess"),
        (ALICE.0, ""),
        (MALLORY.0, "guess"),
        ("nobody", "guess"),
    ] {
        let mut attacker = site.agent();
        let res = site.login(&mut attacker, user, password).await;
        let what = format!("{user}/{password:?}");
        if res.status != 200 || !res.text().contains("Please enter a correct username") {
            wrong.push(format!(
                "{what}: not Django's form again: {} {:?}",
                res.status,
                res.header("location")
            ));
        }
        for cookie in ["twofa-pending", "twofa-session"] {
            if attacker.cookies.contains_key(cookie) {
                wrong.push(format!("{what}: a {cookie} cookie"));
            }
        }
        let behind = site.app_user(&mut attacker).await;
        if behind.is_some() {
            wrong.push(format!("{what}: then the app saw {behind:?}"));
        }
    }
    let required = site_with_required().await;
    let mut attacker = required.agent();
    let res = required.login(&mut attacker, MALLORY.0, "guess").await;
    if attacker.cookies.contains_key("twofa-session") || res.status != 200 {
        wrong.push(format!(
            "required, mallory/guess: {} with cookies {:?}",
            res.status,
            attacker.cookies.keys().collect::<Vec<_>>()
        ));
    }
    let page = attacker.get("/_2fa/settings/totp").await;
    if page.status == 200 {
        wrong.push("required, mallory/guess: an enrollment page".into());
    }
    assert!(
        wrong.is_empty(),
        "a wrong password started something: {wrong:#?}"
    );
    // The right password does start a challenge: the checks above can see one.
    let mut alice = site.agent();
    let res = site.login(&mut alice, ALICE.0, ALICE.1).await;
    assert_eq!(res.header("location"), Some("/_2fa/challenge"));
    assert!(alice.cookies.contains_key("twofa-pending"));
}

async fn site_with_required() -> Site {
    site(
        AppServer::django(),
        &[("TWOFA_TWOFACTOR__ENFORCEMENT", "required")],
    )
    .await
}
