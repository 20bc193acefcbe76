//! Bypass regressions against REAL app servers: a Flask app on werkzeug and an ASGI app on
//! hypercorn (`support/realapp_flask.py`), with the proxy in front. Each test asserts the secure
//! outcome for one class of way around the second factor, using what the real server really
//! does (Flask's flash cookie, Django-style name folding, werkzeug's cookie parser, method
//! override middleware, hypercorn's h2c upgrade) rather than a scripted imitation:
//! (a) a failed login taken for a success, (b) names the app folds, (c) cookie spellings,
//! (d) logins the watcher does not see, (e) h2c upgrades.

use http::StatusCode;
use serde_json::json;

use crate::support::agent::{Agent, input_value};
use crate::support::realapp::*;
use crate::support::site::{Now, oathtool};
use crate::support::smtp::{SmtpSink, code_in};

/// The proxy identity header the app received, when the answer is the app's `/whoami`.
fn identity_seen(res: &crate::support::Answer) -> Option<String> {
    let body: serde_json::Value = serde_json::from_slice(&res.body).ok()?;
    body.get("identity")?.as_str().map(str::to_owned)
}

/// The proxy in front of Flask with alice enrolled in TOTP; returns her key.
async fn alice_with_totp(overrides: &[(&str, &str)]) -> (RealSite, String) {
    let site = real_site(RealApp::flask(), overrides).await;
    let mut agent = site.agent();
    let secret = enroll_totp(&site, &mut agent, ALICE.0, ALICE.1).await;
    (site, secret)
}

// ---- (a) a failed login taken for a success -------------------------------------------------

/// Class (a). Flask's flash-and-redirect login answers a WRONG or MISSING password with `302` and
/// `Set-Cookie: session=...` (the flashed message lives in the signed session cookie), which is
/// exactly the "success" the proxy is configured to look for (`success_status = [302, 303]` and
/// `success_cookie = "session"`). Taken for a success, anyone who knows alice's name, and not her
/// password, gets a pending login and alice's challenge to guess codes at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_password_for_a_totp_user_starts_no_challenge() {
    let (site, _secret) = alice_with_totp(&[]).await;
    let mut wrong = Vec::new();
    for (what, fields) in [
        (
            "a wrong password",
            vec![("username", "alice"), ("password", "guess")],
        ),
        ("no password at all", vec![("username", "alice")]),
    ] {
        let mut attacker = site.agent();
        let res = attacker.post_form("/login", &fields).await;
        if res.header("location") == Some("/_2fa/challenge")
            || attacker.cookies.contains_key("twofa-pending")
        {
            wrong.push(format!(
                "{what}: {} to {:?} with a twofa-pending cookie: {}",
                res.status.as_u16(),
                res.header("location"),
                attacker.cookies.contains_key("twofa-pending")
            ));
        }
        assert!(
            !site.app.hands_out_session_of(&res, "alice").await,
            "{what}: the app's session of alice was handed out"
        );
    }
    assert!(
        wrong.is_empty(),
        "the app's failed login (302 + flash cookie) was taken for a success: {wrong:?}"
    );
}

/// Class (a), email method. carol receives her codes by email; a wrong password (Flask's `302` +
/// flash cookie) taken for a success mails her a login code: anyone can spam her inbox, and each
/// mail counts against her hourly send limit, locking her out of email codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_password_for_an_email_user_sends_no_code() {
    let sink = SmtpSink::start();
    let port = sink.port.to_string();
    let site = real_site(
        RealApp::flask(),
        &[
            ("TWOFA_EMAIL__SMTP__HOST", "127.0.0.1"),
            ("TWOFA_EMAIL__SMTP__PORT", &port),
            ("TWOFA_EMAIL__SMTP__TLS", "none"),
            ("TWOFA_EMAIL__SMTP__TIMEOUT", "3s"),
        ],
    )
    .await;
    let mut carol = site.agent();
    let res = form_login(&mut carol, CAROL.0, CAROL.1).await;
    assert_eq!(res.header("location"), Some("/"));
    let res = carol
        .post_json(
            "/_2fa/api/v1/email/setup",
            json!({"address": "carol@example.com"}),
        )
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    let code = code_in(&sink.wait_for(1));
    let res = carol
        .post_json("/_2fa/api/v1/email/confirm", json!({ "code": code }))
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    // The "Two Factor Authentication is enabled" notice, sent in the background.
    sink.wait_for(2);

    let mut attacker = site.agent();
    let res = form_login(&mut attacker, CAROL.0, "guess").await;
    // The code mail is sent before the answer; give a stray background send a moment too.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let codes_mailed = sink.messages()[2..]
        .iter()
        .filter(|m| m.contains("Your code is"))
        .count();
    assert_eq!(
        codes_mailed,
        0,
        "a wrong password mailed carol a login code (answer {} to {:?})",
        res.status.as_u16(),
        res.header("location")
    );
    assert!(!attacker.cookies.contains_key("twofa-pending"));
    // The right password does mail a code: the check above can see one.
    let mut again = site.agent();
    let res = form_login(&mut again, CAROL.0, CAROL.1).await;
    assert_eq!(res.header("location"), Some("/_2fa/challenge"));
    assert!(code_in(&sink.wait_for(3)).len() == 6);
}

/// Class (a), lockout. More wrong-password posts than `lockout_threshold` (3), each followed by
/// one wrong code wherever the proxy offers a challenge, as an attacker would. If Flask's failed
/// login (`302` + flash cookie) is taken for a success, those codes count against alice and lock
/// her out of her own account with nothing but her name; closed, alice still gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_passwords_do_not_lock_the_account() {
    let (site, secret) = alice_with_totp(&[]).await;
    let mut challenged = 0;
    for i in 0..4 {
        let mut attacker = site.agent();
        let res = form_login(&mut attacker, ALICE.0, &format!("guess-{i}")).await;
        if res.header("location") == Some("/_2fa/challenge") {
            challenged += 1;
            let page = attacker.follow(&res).await;
            if let Some(csrf) = page
                .text()
                .contains("name=\"csrf\"")
                .then(|| input_value(&page.text(), "csrf"))
            {
                attacker
                    .post_form("/_2fa/challenge", &[("csrf", &csrf), ("code", "000000")])
                    .await;
            }
        }
    }
    let mut alice = site.agent();
    let res = form_login(&mut alice, ALICE.0, ALICE.1).await;
    assert_eq!(res.header("location"), Some("/_2fa/challenge"));
    let page = alice.follow(&res).await;
    let csrf = input_value(&page.text(), "csrf");
    let code = oathtool(&secret, site.clock.now_secs());
    let res = alice
        .post_form("/_2fa/challenge", &[("csrf", &csrf), ("code", &code)])
        .await;
    assert_eq!(
        res.header("location"),
        Some("/"),
        "alice's right password and code were refused after 4 wrong-password posts \
         ({challenged} of them were given a challenge): {}",
        res.status
    );
    assert_eq!(
        site.app_user(&mut alice).await.map(|(u, _)| u).as_deref(),
        Some("alice")
    );
}

/// Class (a) under `enforcement = "required"`. mallory has no 2FA; a wrong password (Flask's
/// `302` + flash cookie) taken for a success hands out an enrollment session: whoever guesses
/// the name, and not the password, can enroll THEIR authenticator on mallory's account, which
/// takes it over (her next real login asks for the attacker's code) or locks her out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_password_under_required_allows_no_enrollment() {
    let site = real_site(
        RealApp::flask(),
        &[("TWOFA_TWOFACTOR__ENFORCEMENT", "required")],
    )
    .await;
    let mut attacker = site.agent();
    let res = form_login(&mut attacker, MALLORY.0, "guess").await;
    let mut wrong = Vec::new();
    if attacker.cookies.contains_key("twofa-session") {
        wrong.push(format!(
            "a twofa-session cookie ({} to {:?})",
            res.status.as_u16(),
            res.header("location")
        ));
    }
    let page = attacker.get("/_2fa/settings/totp").await;
    if page.status == StatusCode::OK {
        wrong.push("GET /_2fa/settings/totp: 200, an enrollment page with a new key".into());
        let html = page.text();
        if html.contains("name=\"csrf\"") && html.contains("id=\"manual-key\">") {
            let secret = html
                .split("id=\"manual-key\">")
                .nth(1)
                .and_then(|s| s.split('<').next())
                .unwrap_or("")
                .replace(' ', "");
            let csrf = input_value(&html, "csrf");
            let code = oathtool(&secret, site.clock.now_secs());
            let done = attacker
                .post_form("/_2fa/settings/totp", &[("csrf", &csrf), ("code", &code)])
                .await;
            if done.status == StatusCode::OK {
                wrong.push(
                    "POST /_2fa/settings/totp: 200, the attacker's authenticator is enrolled on \
                     mallory's account"
                        .into(),
                );
            }
        }
    }
    let api = attacker
        .post_json("/_2fa/api/v1/totp/setup", json!({}))
        .await;
    if api.status == StatusCode::OK {
        wrong.push("POST /_2fa/api/v1/totp/setup: 200, a key for mallory's account".into());
    }
    assert!(
        wrong.is_empty(),
        "a wrong password under enforcement=required gave: {wrong:?}"
    );
    // The right password does lead to enrollment: the checks above can see it.
    let mut mallory = site.agent();
    let res = form_login(&mut mallory, MALLORY.0, MALLORY.1).await;
    assert_eq!(res.header("location"), Some("/_2fa/settings"));
}

/// Class (a) under `enforcement = "optional"`. mallory has no 2FA; a wrong password (Flask's
/// `302` + flash cookie) taken for a success gives a proxy session for mallory, and every request
/// then reaches the app with `X-Twofa-User: mallory`: an app that trusts the identity header
/// (that is what it is for) serves mallory's account to someone without her password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_password_under_optional_gives_no_session() {
    let site = real_site(RealApp::flask(), &[]).await;
    let mut attacker = site.agent();
    let res = form_login(&mut attacker, MALLORY.0, "guess").await;
    let behind = attacker.get("/whoami").await;
    assert!(
        !attacker.cookies.contains_key("twofa-session"),
        "a wrong password got a twofa-session cookie ({} to {:?}); the app then saw \
         X-Twofa-User: {:?}",
        res.status.as_u16(),
        res.header("location"),
        identity_seen(&behind)
    );
    assert_ne!(identity_seen(&behind).as_deref(), Some("mallory"));
}

// ---- (b) names the app folds ----------------------------------------------------------------

/// A login as `typed` with alice's password must not reach alice's account without her code:
/// either challenged as alice, or refused (4xx) with no app session of alice handed out.
async fn reaches_alice_only_through_her_challenge(
    site: &RealSite,
    typed: &str,
) -> Result<(), String> {
    let mut agent = site.agent();
    let res = form_login(&mut agent, typed, ALICE.1).await;
    if res.header("location") == Some("/_2fa/challenge") {
        let page = agent.follow(&res).await;
        return if page.text().contains("(alice)") {
            Ok(())
        } else {
            Err(format!("{typed:?}: challenged, but not as alice"))
        };
    }
    let handed_out = site.app.hands_out_session_of(&res, "alice").await;
    let status = res.status;
    let location = res.header("location").map(str::to_owned);
    let behind = site.app_user(&mut agent).await;
    if handed_out || !status.is_client_error() || behind.is_some() {
        return Err(format!(
            "{typed:?}: {} to {location:?}, alice's app session handed out: {handed_out}, then \
             the app saw (user, X-Twofa-User) = {behind:?}",
            status.as_u16()
        ));
    }
    Ok(())
}

/// Class (b), Unicode compatibility forms. The app folds typed names like Django (NFKC, then
/// casefold), so fullwidth `ａｌｉｃｅ` and mathematical bold `𝐚𝐥𝐢𝐜𝐞` sign in as alice. The proxy
/// only lowercases: to it they are other accounts without 2FA, and alice's app session is handed
/// over on her password alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b_unicode_folded_names_are_challenged_as_alice_or_refused() {
    let (site, _) = alice_with_totp(&[]).await;
    let mut wrong = Vec::new();
    for typed in [
        "\u{ff41}\u{ff4c}\u{ff49}\u{ff43}\u{ff45}",
        "\u{1d41a}\u{1d425}\u{1d422}\u{1d41c}\u{1d41e}",
        "\u{ff21}LICE",
    ] {
        if let Err(e) = reaches_alice_only_through_her_challenge(&site, typed).await {
            wrong.push(e);
        }
    }
    assert!(
        wrong.is_empty(),
        "alice reached without her code: {wrong:?}"
    );
}

/// Class (b), letter case. The app casefolds `ALICE` to alice; so does the proxy (it lowercases
/// names unless `username_case_sensitive`), so she is challenged. Pins that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b_ascii_case_variants_are_challenged_as_alice() {
    let (site, _) = alice_with_totp(&[]).await;
    for typed in ["ALICE", " Alice "] {
        reaches_alice_only_through_her_challenge(&site, typed)
            .await
            .unwrap();
    }
}

/// Class (b), parameters in a name. The app drops a `;parameters` tail from the typed name (the
/// `user;AUTH=...` convention of RFC 5092), so `alice;x=1` signs in as alice. To the proxy it
/// is another account without 2FA, and alice's app session is handed over on her password alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b_names_with_parameters_are_challenged_as_alice_or_refused() {
    let (site, _) = alice_with_totp(&[]).await;
    let mut wrong = Vec::new();
    for typed in ["alice;x=1", "alice;AUTH=*"] {
        if let Err(e) = reaches_alice_only_through_her_challenge(&site, typed).await {
            wrong.push(e);
        }
    }
    assert!(
        wrong.is_empty(),
        "alice reached without her code: {wrong:?}"
    );
}

// ---- (c) cookie spellings -------------------------------------------------------------------

/// mallory signed in (no 2FA) and alice signed in with her code, through the proxy.
struct TwoLogins {
    site: RealSite,
    /// mallory's proxy session id and her own app session.
    mallory_proxy: String,
    mallory_app: String,
    /// alice's app session (stolen, or from a login the proxy never saw).
    alice_app: String,
}

async fn two_logins() -> TwoLogins {
    let (site, secret) = alice_with_totp(&[]).await;
    let alice = totp_login(&site, ALICE.0, ALICE.1, &secret).await;
    let alice_app = alice.cookies["session"].clone();
    assert_eq!(site.app.user_of(&alice_app).await.as_deref(), Some("alice"));
    let mut mallory = site.agent();
    let res = form_login(&mut mallory, MALLORY.0, MALLORY.1).await;
    assert_eq!(res.header("location"), Some("/"));
    assert_eq!(
        site.app_user(&mut mallory).await,
        Some(("mallory".into(), "mallory".into()))
    );
    TwoLogins {
        mallory_proxy: mallory.cookies["twofa-session"].clone(),
        mallory_app: mallory.cookies["session"].clone(),
        alice_app,
        site,
    }
}

impl TwoLogins {
    /// Fills in `{M}` (mallory's proxy session), `{MA}` (her app session), `{A}` (alice's).
    fn fill(&self, line: &str) -> String {
        line.replace("{MA}", &self.mallory_app)
            .replace("{M}", &self.mallory_proxy)
            .replace("{A}", &self.alice_app)
    }

    /// Each spelling (one or more `Cookie` lines) sent to `/whoami`; the ones the app answered
    /// as alice, with what the app saw.
    async fn reaching_alice(&self, spellings: &[&[&str]]) -> Vec<String> {
        let mut leaks = Vec::new();
        for lines in spellings {
            let filled: Vec<String> = lines.iter().map(|l| self.fill(l)).collect();
            let refs: Vec<&str> = filled.iter().map(String::as_str).collect();
            let res = get_with_cookie_lines(self.site.proxy.addr, "/whoami", &refs).await;
            if let Some((user, identity)) = whoami(&res)
                && user == "alice"
            {
                leaks.push(format!(
                    "{lines:?}: the app served alice (X-Twofa-User: {identity})"
                ));
            }
        }
        leaks
    }
}

/// Class (c), names with blanks. werkzeug trims cookie NAMES (`session =V` and `session\t=V` are
/// its `session`), and of two `session` cookies Flask reads the first. The proxy matches the
/// name exactly, so it sees no app cookie (or only mallory's own) next to mallory's proxy
/// session, checks nothing, and forwards: the app serves alice's account to mallory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_cookie_names_with_blanks_carry_no_other_logins_session() {
    let logins = two_logins().await;
    let leaks = logins
        .reaching_alice(&[
            &["twofa-session={M}; session ={A}"],
            &["twofa-session={M}; session\t={A}"],
            &["twofa-session={M}; session ={A}; session={MA}"],
            &["session\t={A}; twofa-session={M}; session={MA}"],
        ])
        .await;
    assert!(
        leaks.is_empty(),
        "alice's app session rode on mallory's proxy session: {leaks:?}"
    );
}

/// Class (c), several `Cookie` headers. The proxy joins them into one line for the app, in
/// order, so a blank-named `session` in the first line is what Flask reads; a plain `session`
/// in a later line is seen by the proxy (refused; pinned here too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_split_cookie_headers_carry_no_other_logins_session() {
    let logins = two_logins().await;
    let leaks = logins
        .reaching_alice(&[
            &["session ={A}", "twofa-session={M}; session={MA}"],
            &["twofa-session={M}", "session={A}"],
            &["twofa-session={M}; session={MA}", "session={A}"],
        ])
        .await;
    assert!(
        leaks.is_empty(),
        "alice's app session rode on mallory's proxy session: {leaks:?}"
    );
}

/// Class (c), spellings the proxy already reads as werkzeug does (a leading blank, a quoted
/// value, which werkzeug unquotes): pinned, so a fix of the others keeps them closed. werkzeug
/// reads `Session` as another cookie (names are case-sensitive), so that spelling is not one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_cookie_spellings_the_proxy_already_reads_carry_no_other_logins_session() {
    let logins = two_logins().await;
    let leaks = logins
        .reaching_alice(&[
            &["twofa-session={M};\tsession={A}"],
            &["twofa-session={M};  session={A}"],
            &["twofa-session={M}; session=\"{A}\""],
            &["twofa-session={M}; session={A}; session={MA}"],
        ])
        .await;
    assert!(
        leaks.is_empty(),
        "alice's app session rode on mallory's proxy session: {leaks:?}"
    );
    // mallory's own cookies still reach mallory: the refusals above are not a broken setup.
    let res = get_with_cookie_lines(
        logins.site.proxy.addr,
        "/whoami",
        &[&logins.fill("twofa-session={M}; session={MA}")],
    )
    .await;
    assert_eq!(whoami(&res).map(|(u, _)| u).as_deref(), Some("mallory"));
}

// ---- (d) logins the watcher does not see ----------------------------------------------------

/// The Flask app's three login endpoints watched; the GET-able ones public, as a login page is.
const ALL_LOGINS: &[(&str, &str)] = &[
    (
        "TWOFA_APP__LOGIN_PATHS",
        "/login,/login-get,/login-override",
    ),
    (
        "TWOFA_APP__PUBLIC_PATHS",
        "/login,/login-get,/login-override,/static/",
    ),
];

/// After `res` (on `agent`), alice's account must not be reachable without her code: any
/// challenge is alice's, no app session of alice was handed out, and the agent's cookies do not
/// reach her account through the proxy.
async fn no_alice_without_code(
    site: &RealSite,
    what: &str,
    agent: &mut Agent,
    res: &crate::support::Answer,
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

/// mallory's proxy and app sessions, on a new agent.
async fn mallory_signed_in(site: &RealSite) -> Agent {
    let mut mallory = site.agent();
    let res = form_login(&mut mallory, MALLORY.0, MALLORY.1).await;
    assert_eq!(res.header("location"), Some("/"));
    mallory
}

/// Class (d), a login on GET. `/login-get?username=..&password=..` signs in on a GET, which the
/// watcher does not treat as a login: anonymously (the path is public, like a login page) the
/// app's session of alice goes straight to the browser; with mallory's proxy session the app's
/// new cookie is taken for a rotation of hers, so mallory's session now carries alice's account.
/// Secure: a challenge for alice, or a refusal; never alice's session without her code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d_a_login_on_get_hands_out_no_session_without_a_code() {
    let (site, _) = alice_with_totp(ALL_LOGINS).await;
    let query = "/login-get?username=alice&password=wonderland";
    let mut wrong = Vec::new();
    let mut anonymous = site.agent();
    let res = send_as(&mut anonymous, "GET", query, &[], None).await;
    wrong.extend(no_alice_without_code(&site, "anonymous GET", &mut anonymous, &res).await);
    let mut mallory = mallory_signed_in(&site).await;
    let res = send_as(&mut mallory, "GET", query, &[], None).await;
    wrong.extend(
        no_alice_without_code(&site, "GET with mallory's session", &mut mallory, &res).await,
    );
    assert!(
        wrong.is_empty(),
        "alice reached without her code: {wrong:?}"
    );
}

/// Class (d), method override to GET. `/login-override` is a POST route whose middleware honours
/// `X-HTTP-Method-Override: GET` (dropping the body) and `_method=GET`, and then signs in from
/// the QUERY string: the proxy would read the name in the body (or none) while the app logs in
/// whoever the query names. Secure: refused (4xx) or challenged as alice, never signed straight
/// in. (Today the proxy refuses a login with the account field in the query: pinned.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d_post_with_method_override_get_is_refused_or_challenged() {
    let (site, _) = alice_with_totp(ALL_LOGINS).await;
    let path = "/login-override?username=alice&password=wonderland";
    let mut wrong = Vec::new();
    for (what, headers, body) in [
        (
            "X-HTTP-Method-Override: GET",
            &[("X-HTTP-Method-Override", "GET")][..],
            "x=1",
        ),
        (
            "X-HTTP-Method-Override: GET, mallory in the body",
            &[("X-HTTP-Method-Override", "GET")][..],
            "username=mallory&password=mallory",
        ),
        ("_method=GET", &[][..], "_method=GET"),
    ] {
        let mut agent = site.agent();
        let res = send_as(&mut agent, "POST", path, headers, Some(body)).await;
        let challenged = res.header("location") == Some("/_2fa/challenge");
        if !challenged && !res.status.is_client_error() {
            wrong.push(format!(
                "{what}: {} to {:?}, neither refused nor challenged",
                res.status.as_u16(),
                res.header("location")
            ));
        }
        wrong.extend(no_alice_without_code(&site, what, &mut agent, &res).await);
    }
    assert!(wrong.is_empty(), "{wrong:?}");
}

/// Class (d), method override to POST. The override middleware (the widely copied Flask snippet)
/// honours `X-HTTP-Method-Override: POST` on a GET too, and the POST handler reads
/// `request.values` (query and form): a GET that the watcher does not see signs alice in from
/// the query. Anonymously the app's session of alice goes to the browser; with mallory's proxy
/// session it is taken for a rotation of hers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d_get_with_method_override_post_hands_out_no_session_without_a_code() {
    let (site, _) = alice_with_totp(ALL_LOGINS).await;
    let path = "/login-override?username=alice&password=wonderland";
    let over = [("X-HTTP-Method-Override", "POST")];
    let mut wrong = Vec::new();
    let mut anonymous = site.agent();
    let res = send_as(&mut anonymous, "GET", path, &over, None).await;
    wrong.extend(no_alice_without_code(&site, "anonymous GET", &mut anonymous, &res).await);
    let mut mallory = mallory_signed_in(&site).await;
    let res = send_as(&mut mallory, "GET", path, &over, None).await;
    wrong.extend(
        no_alice_without_code(&site, "GET with mallory's session", &mut mallory, &res).await,
    );
    assert!(
        wrong.is_empty(),
        "alice reached without her code: {wrong:?}"
    );
}

// ---- (e) h2c upgrade ------------------------------------------------------------------------

/// Class (e), h2c smuggling. hypercorn answers `Upgrade: h2c` on cleartext HTTP/1.1 with `101`
/// and speaks HTTP/2 on the same connection. If the proxy passes the upgrade on and splices the
/// two sockets, the client holds a raw HTTP/2 connection to the app on which every further
/// request (any path, any cookie) bypasses the proxy's gate. A public path is enough to open it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e_h2c_upgrade_never_reaches_the_app() {
    let site = real_site(
        RealApp::hypercorn(),
        &[("TWOFA_APP__PUBLIC_PATHS", "/public")],
    )
    .await;
    let request = |path: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\
             Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\
             HTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"
        )
    };
    // The app server really upgrades: asked directly, hypercorn switches to h2c.
    let direct = raw_request(site.app.addr, request("/public/direct").as_bytes()).await;
    assert_eq!(
        direct.status, 101,
        "hypercorn did not upgrade: {}",
        direct.head
    );

    let res = raw_request(site.proxy.addr, request("/public").as_bytes()).await;
    assert_ne!(
        res.status,
        101,
        "the proxy switched the client to h2c with the app: {}",
        res.head.trim()
    );
    // Whatever the proxy answered (the app's page, or a refusal), the app never saw the upgrade.
    let seen = crate::support::get(&format!("http://{}/__seen", site.app.addr), &[])
        .await
        .json();
    for request in seen.as_array().unwrap() {
        if request["path"] != "/public" {
            continue;
        }
        let names: Vec<String> = request["headers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|pair| pair[0].as_str().unwrap().to_ascii_lowercase())
            .collect();
        assert!(
            request["http_version"] == "1.1"
                && !names
                    .iter()
                    .any(|n| n == "upgrade" || n == "http2-settings"),
            "hypercorn received the upgrade request: {request}"
        );
    }
}
