//! The login flow end to end, through the proxy in front of the demo app, on both stores:
//! enrolling an authenticator app from the QR code (decoded with zbarimg, codes computed with
//! oathtool), the challenge, replay and lockout rules, recovery codes, disabling, the required
//! policy, session fixation, fail-closed on a store outage, and two replicas sharing Redis.

use http::StatusCode;

use crate::support::agent::{Agent, input_value};
use crate::support::site::*;
use crate::support::*;

/// Enrolls the agent's user from the settings page; returns the Base32 key and recovery codes.
async fn enroll(site: &Site, agent: &mut Agent) -> (String, Vec<String>) {
    let settings = agent.get("/_2fa/settings").await;
    assert_eq!(settings.status, 200, "{}", settings.text());
    let page = settings.text();
    for seed in [
        "Enable Two-Factor Authentication",
        "Method 1 (Recommended): Setup using Authentication App",
        "Method 2: Setup using Email",
        ">Next<",
    ] {
        assert!(page.contains(seed), "{seed:?} missing:\n{page}");
    }
    // "Next" with the app chosen leads to its setup.
    let next = agent.get("/_2fa/settings/enable?method=totp").await;
    assert_eq!(next.status, 303);
    assert_eq!(next.header("location"), Some("/_2fa/settings/totp"));
    let setup = agent.get("/_2fa/settings/totp").await;
    assert_eq!(setup.status, 200);
    assert_eq!(setup.header("cache-control"), Some("no-store"));
    let html = setup.text();
    let uri = decode_qr(&html);
    assert!(
        uri.starts_with("otpauth://totp/DCKAP%20Integrator:"),
        "{uri}"
    );
    assert_eq!(query_param(&uri, "issuer"), "DCKAP Integrator");
    let secret = query_param(&uri, "secret");
    assert_eq!(secret.len(), 32, "160-bit key");
    // The manual key on the page is the same key.
    let manual = html
        .split("id=\"manual-key\">")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap()
        .replace(' ', "");
    assert_eq!(manual, secret);
    let csrf = input_value(&html, "csrf");
    let code = oathtool(&secret, site.clock.now_secs());
    let done = agent
        .post_form("/_2fa/settings/totp", &[("csrf", &csrf), ("code", &code)])
        .await;
    assert_eq!(done.status, 200, "{}", done.text());
    let page = done.text();
    assert!(page.contains("Save your recovery codes"));
    let codes: Vec<String> = page
        .split("<li><code>")
        .skip(1)
        .map(|s| s.split('<').next().unwrap().to_owned())
        .collect();
    assert_eq!(codes.len(), 10);
    (secret, codes)
}

async fn enable_then_log_in(backend: Backend) {
    let site = site(backend, &[]).await;
    let mut agent = Agent::new(site.proxy.addr);

    // Without a session the app is out of reach.
    let res = agent.get("/").await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    assert_eq!(res.header("location"), Some("/login?next=%2F"));

    // No 2FA yet (optional policy): the password is enough.
    let res = password_login(&mut agent, "alice", "wonderland").await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    assert!(agent.cookies.contains_key("session") && agent.cookies.contains_key("twofa-session"));
    assert!(agent.get("/").await.text().contains("Dashboard"));

    let (secret, _codes) = enroll(&site, &mut agent).await;
    let enrollment_code = oathtool(&secret, site.clock.now_secs());

    // Log out: both sessions end.
    let res = agent.post_form("/logout", &[]).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    assert!(!agent.cookies.contains_key("twofa-session"));
    assert_eq!(agent.get("/").await.status, StatusCode::SEE_OTHER);

    // The password now leads to the challenge; the app's cookie is held back.
    let res = password_login(&mut agent, "alice", "wonderland").await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    assert_eq!(res.header("location"), Some("/_2fa/challenge"));
    assert!(
        !agent.cookies.contains_key("session"),
        "the app's session leaked before the second factor"
    );
    let page = agent.follow(&res).await;
    assert!(
        page.text()
            .contains("authenticator app for DCKAP Integrator (alice)")
    );
    assert!(page.text().contains("autocomplete=\"one-time-code\""));
    let csrf = input_value(&page.text(), "csrf");

    // The enrollment code was claimed: it cannot log in.
    let res = agent
        .post_form(
            "/_2fa/challenge",
            &[("csrf", &csrf), ("code", &enrollment_code)],
        )
        .await;
    assert_eq!(
        res.status,
        StatusCode::UNAUTHORIZED,
        "enrollment code replayed at login"
    );
    assert!(res.text().contains("did not work"));

    // The next step's code works, and the app's own answer arrives.
    site.clock.advance(30);
    let code = oathtool(&secret, site.clock.now_secs());
    let res = agent
        .post_form("/_2fa/challenge", &[("csrf", &csrf), ("code", &code)])
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.text());
    assert_eq!(res.header("location"), Some("/"));
    assert!(agent.cookies.contains_key("session") && agent.cookies.contains_key("twofa-session"));
    assert!(!agent.cookies.contains_key("twofa-pending"));
    assert!(agent.get("/").await.text().contains("Dashboard"));

    // The same code again, on a fresh login: refused (each step once).
    let mut other = Agent::new(site.proxy.addr);
    let res = password_login(&mut other, "alice", "wonderland").await;
    let page = other.follow(&res).await;
    let csrf = input_value(&page.text(), "csrf");
    let res = other
        .post_form("/_2fa/challenge", &[("csrf", &csrf), ("code", &code)])
        .await;
    assert_eq!(
        res.status,
        StatusCode::UNAUTHORIZED,
        "a code was accepted twice"
    );

    // Case does not get around 2FA.
    let mut shouting = Agent::new(site.proxy.addr);
    let res = password_login(&mut shouting, " ALICE ", "wonderland").await;
    assert_eq!(res.header("location"), Some("/_2fa/challenge"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "external-tools"), ignore = "needs external-tools")]
async fn enable_totp_then_log_in_with_a_code_memory() {
    enable_then_log_in(Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "external-tools"), ignore = "needs external-tools")]
async fn enable_totp_then_log_in_with_a_code_redis() {
    enable_then_log_in(Backend::Redis).await;
}

/// Logs `user` in with a password and 2FA enrolled; returns the key, codes and a logged-out agent
/// standing on the challenge page (with its CSRF token).
async fn enrolled_at_challenge(
    site: &Site,
    user: &str,
    password: &str,
) -> (String, Vec<String>, Agent, String) {
    let mut agent = Agent::new(site.proxy.addr);
    password_login(&mut agent, user, password).await;
    let (secret, codes) = enroll(site, &mut agent).await;
    site.clock.advance(30);
    let mut fresh = Agent::new(site.proxy.addr);
    let res = password_login(&mut fresh, user, password).await;
    assert_eq!(res.header("location"), Some("/_2fa/challenge"));
    let page = fresh.follow(&res).await;
    let csrf = input_value(&page.text(), "csrf");
    (secret, codes, fresh, csrf)
}

async fn lockout(backend: Backend) {
    let site = site(backend, &[]).await;
    let (secret, _, mut agent, csrf) = enrolled_at_challenge(&site, "bob", "builder").await;
    let res = agent
        .post_form("/_2fa/challenge", &[("csrf", &csrf), ("code", "000000")])
        .await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    assert!(res.text().contains("2 tries left"), "{}", res.text());
    agent
        .post_form("/_2fa/challenge", &[("csrf", &csrf), ("code", "111111")])
        .await;
    let res = agent
        .post_form("/_2fa/challenge", &[("csrf", &csrf), ("code", "222222")])
        .await;
    assert_eq!(res.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.header("retry-after"), Some("120"));
    // Locked: even the right code is refused, on any sign-in.
    let code = oathtool(&secret, site.clock.now_secs());
    let mut again = Agent::new(site.proxy.addr);
    let res = password_login(&mut again, "bob", "builder").await;
    let page = again.follow(&res).await;
    let csrf2 = input_value(&page.text(), "csrf");
    let res = again
        .post_form("/_2fa/challenge", &[("csrf", &csrf2), ("code", &code)])
        .await;
    assert_eq!(res.status, StatusCode::TOO_MANY_REQUESTS);
    // After the lock ends, the right code works.
    site.clock.advance(121);
    let code = oathtool(&secret, site.clock.now_secs());
    let res = again
        .post_form("/_2fa/challenge", &[("csrf", &csrf2), ("code", &code)])
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.text());
    // The lock is counted and audited in metrics.
    let metrics = get(&format!("http://{}/metrics", site.proxy.admin_addr), &[])
        .await
        .text();
    assert!(metrics.contains("twofa_lockouts_total 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "external-tools"), ignore = "needs external-tools")]
async fn wrong_codes_lock_the_account_until_it_expires_memory() {
    lockout(Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "external-tools"), ignore = "needs external-tools")]
async fn wrong_codes_lock_the_account_until_it_expires_redis() {
    lockout(Backend::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "external-tools"), ignore = "needs external-tools")]
async fn recovery_codes_work_once_and_2fa_can_be_disabled() {
    let site = site(Backend::Memory, &[]).await;
    let (secret, codes, mut agent, csrf) = enrolled_at_challenge(&site, "carol", "singer").await;
    let res = agent
        .post_form(
            "/_2fa/challenge/recovery",
            &[("csrf", &csrf), ("code", &codes[0].to_uppercase())],
        )
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.text());
    assert!(agent.get("/").await.text().contains("Dashboard"));
    let settings = agent.get("/_2fa/settings").await.text();
    assert!(settings.contains("Recovery codes left: 9"), "{settings}");

    // The used code is spent.
    let mut other = Agent::new(site.proxy.addr);
    let res = password_login(&mut other, "carol", "singer").await;
    let page = other.follow(&res).await;
    let csrf2 = input_value(&page.text(), "csrf");
    let res = other
        .post_form(
            "/_2fa/challenge/recovery",
            &[("csrf", &csrf2), ("code", &codes[0])],
        )
        .await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);

    // Disabling needs a current code; a wrong one changes nothing.
    let settings = agent.get("/_2fa/settings").await.text();
    let csrf = input_value(&settings, "csrf");
    let res = agent
        .post_form(
            "/_2fa/settings/disable",
            &[("csrf", &csrf), ("code", "123456")],
        )
        .await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    site.clock.advance(30);
    let code = oathtool(&secret, site.clock.now_secs());
    let res = agent
        .post_form(
            "/_2fa/settings/disable",
            &[("csrf", &csrf), ("code", &code)],
        )
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.text());
    assert!(
        agent
            .follow(&res)
            .await
            .text()
            .contains("Two Factor Authentication is disabled.")
    );
    // The other browser's sessions ended; the password alone works again.
    let mut after = Agent::new(site.proxy.addr);
    let res = password_login(&mut after, "carol", "singer").await;
    assert_eq!(res.header("location"), Some("/"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "external-tools"), ignore = "needs external-tools")]
async fn required_policy_forces_enrollment_then_hands_over_the_login() {
    let site = site(
        Backend::Memory,
        &[("TWOFA_TWOFACTOR__ENFORCEMENT", "required")],
    )
    .await;
    let mut agent = Agent::new(site.proxy.addr);
    let res = password_login(&mut agent, "alice", "wonderland").await;
    assert_eq!(res.header("location"), Some("/_2fa/settings"));
    assert!(
        !agent.cookies.contains_key("session"),
        "the app's session was handed over before enrollment"
    );
    // Nothing of the app is reachable until then.
    let res = agent.get("/").await;
    assert_eq!(res.header("location"), Some("/_2fa/settings"));
    let settings = agent.get("/_2fa/settings").await.text();
    assert!(settings.contains("requires Two Factor Authentication"));
    assert!(!settings.contains("settings/disable"));
    let (_, _) = enroll(&site, &mut agent).await;
    let res = agent.get("/_2fa/settings/continue").await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    assert_eq!(res.header("location"), Some("/"));
    assert!(agent.cookies.contains_key("session"));
    assert!(agent.get("/").await.text().contains("Dashboard"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_ids_never_survive_a_login() {
    let site = site(Backend::Memory, &[]).await;
    let mut agent = Agent::new(site.proxy.addr);
    agent
        .cookies
        .insert("twofa-session".into(), "attacker-chosen-id".into());
    password_login(&mut agent, "alice", "wonderland").await;
    let issued = agent.cookies.get("twofa-session").cloned().unwrap();
    assert_ne!(issued, "attacker-chosen-id");
    assert!(issued.len() >= 22, "session ids carry at least 128 bits");
    // Logging in again replaces the id and ends the old one.
    password_login(&mut agent, "alice", "wonderland").await;
    let second = agent.cookies.get("twofa-session").cloned().unwrap();
    assert_ne!(second, issued);
    let mut thief = Agent::new(site.proxy.addr);
    thief.cookies.insert("twofa-session".into(), issued);
    assert_eq!(
        thief.get("/").await.status,
        StatusCode::SEE_OTHER,
        "an old session id still works"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_sets_identity_and_strips_forgeries() {
    let site = site(
        Backend::Memory,
        &[("TWOFA_APP__PUBLIC_PATHS", "/login,/api/login,/static/")],
    )
    .await;
    let mut agent = Agent::new(site.proxy.addr);
    password_login(&mut agent, "alice", "wonderland").await;
    let cookie = agent
        .cookies
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ");
    let echo = get(
        &format!("http://{}/debug/headers", site.proxy.addr),
        &[
            ("Cookie", &cookie),
            ("X-Twofa-User", "mallory"),
            ("X_Twofa_User", "mallory"),
            ("x-twofa_user", "mallory"),
        ],
    )
    .await
    .json();
    assert_eq!(seen(&echo, "x-twofa-user"), ["alice"]);
    assert!(seen(&echo, "x_twofa_user").is_empty() && seen(&echo, "x-twofa_user").is_empty());
    // The proxy's own cookies never reach the app.
    let cookies = seen(&echo, "cookie").join("; ");
    assert!(!cookies.contains("twofa-"), "{cookies}");
    // Without a session: APIs get 401, and a stale app cookie is expired in the browser.
    let res = get(
        &format!("http://{}/api/me", site.proxy.addr),
        &[
            ("Accept", "application/json"),
            ("Cookie", "session=stale"),
            ("X-Twofa-User", "alice"),
        ],
    )
    .await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    assert!(
        res.header("set-cookie")
            .unwrap()
            .starts_with("session=; Path=/; Max-Age=0")
    );
    // Ambiguous paths are refused, not guessed at.
    let res = get(
        &format!("http://{}/static/..%2f..%2fdebug/headers", site.proxy.addr),
        &[],
    )
    .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    let res = get(
        &format!("http://{}/static/../debug/headers", site.proxy.addr),
        &[],
    )
    .await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "external-tools"), ignore = "needs external-tools")]
async fn json_logins_get_a_json_challenge() {
    let site = site(Backend::Memory, &[]).await;
    enrolled_at_challenge(&site, "alice", "wonderland").await;
    let mut api = Agent::new(site.proxy.addr);
    let res = api
        .post_json(
            "/api/login",
            serde_json::json!({"username": "alice", "password": "wonderland"}),
        )
        .await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    let body = res.json();
    assert_eq!(body["error"], "second_factor_required");
    assert_eq!(body["method"], "totp");
    assert_eq!(body["challenge"], "/_2fa/api/v1/challenge");
    assert!(!api.cookies.contains_key("session"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_time_out() {
    let site = site(Backend::Memory, &[("TWOFA_SESSION__IDLE_TIMEOUT", "10m")]).await;
    let mut agent = Agent::new(site.proxy.addr);
    password_login(&mut agent, "alice", "wonderland").await;
    site.clock.advance(9 * 60);
    assert_eq!(agent.get("/").await.status, StatusCode::OK);
    site.clock.advance(9 * 60);
    assert_eq!(
        agent.get("/").await.status,
        StatusCode::OK,
        "activity did not extend the session"
    );
    site.clock.advance(11 * 60);
    assert_eq!(
        agent.get("/").await.status,
        StatusCode::SEE_OTHER,
        "an idle session lived on"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "external-tools"), ignore = "needs external-tools")]
async fn redis_outage_fails_closed_then_recovers() {
    let mut site = site(Backend::Redis, &[("TWOFA_SESSION__CACHE_TTL", "1s")]).await;
    let mut agent = Agent::new(site.proxy.addr);
    password_login(&mut agent, "alice", "wonderland").await;
    assert_eq!(agent.get("/").await.status, StatusCode::OK);
    site.redis.as_mut().unwrap().stop();
    // A session read within the cache TTL may still be served; after it, nothing is.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let res = agent.get("/").await;
    assert_eq!(
        res.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        res.text()
    );
    let ready = get(&format!("http://{}/readyz", site.proxy.admin_addr), &[]).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    site.redis.as_mut().unwrap().restart();
    let mut back = false;
    for _ in 0..50 {
        // The restarted Redis kept nothing: the session is gone, so the answer is "sign in".
        if agent.get("/").await.status == StatusCode::SEE_OTHER {
            back = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(back, "the proxy did not recover when Redis came back");
    let _ = site.upstream;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "external-tools"), ignore = "needs external-tools")]
async fn two_replicas_on_one_redis_behave_as_one() {
    // One records file for both, as two processes on one host can share it (SQLite locks it).
    let dir = TempDir::new("replicas");
    let records = dir.path("records.db");
    let shared = [("TWOFA_RECORDS__PATH", records.to_str().unwrap())];
    let a = site(Backend::Redis, &shared).await;
    let redis = a.redis.as_ref().unwrap();
    let b_config = login_config(a.upstream, Some(redis), &shared);
    let b = twofa_proxy::app::start_with_clock(b_config, a.clock.clone())
        .await
        .unwrap();

    let (secret, _, mut on_a, csrf) = enrolled_at_challenge(&a, "alice", "wonderland").await;
    // The challenge begun on A is answered on B.
    let mut on_b = Agent::new(b.addr);
    on_b.cookies = on_a.cookies.clone();
    let code = oathtool(&secret, a.clock.now_secs());
    let res = on_b
        .post_form("/_2fa/challenge", &[("csrf", &csrf), ("code", &code)])
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.text());
    // The session works on both.
    on_a.cookies = on_b.cookies.clone();
    assert!(on_a.get("/").await.text().contains("Dashboard"));
    assert!(on_b.get("/").await.text().contains("Dashboard"));
    // The code just used on B is refused on A.
    let mut again = Agent::new(a.proxy.addr);
    let res = password_login(&mut again, "alice", "wonderland").await;
    let page = again.follow(&res).await;
    let csrf = input_value(&page.text(), "csrf");
    let res = again
        .post_form("/_2fa/challenge", &[("csrf", &csrf), ("code", &code)])
        .await;
    assert_eq!(
        res.status,
        StatusCode::UNAUTHORIZED,
        "replayed across replicas"
    );
    // Failures on A and B count towards one lockout (threshold 3: one failure above, two here).
    let mut on_b2 = Agent::new(b.addr);
    on_b2.cookies = again.cookies.clone();
    on_b2
        .post_form("/_2fa/challenge", &[("csrf", &csrf), ("code", "000000")])
        .await;
    let res = again
        .post_form("/_2fa/challenge", &[("csrf", &csrf), ("code", "000001")])
        .await;
    assert_eq!(res.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "external-tools"), ignore = "needs external-tools")]
async fn a_logout_on_one_replica_reaches_the_other_within_the_cache_ttl() {
    let overrides = [("TWOFA_SESSION__CACHE_TTL", "1s")];
    let a = site(Backend::Redis, &overrides).await;
    let b_config = login_config(a.upstream, a.redis.as_ref(), &overrides);
    let b = twofa_proxy::app::start_with_clock(b_config, a.clock.clone())
        .await
        .unwrap();
    let mut on_a = Agent::new(a.proxy.addr);
    password_login(&mut on_a, "alice", "wonderland").await;
    let mut on_b = Agent::new(b.addr);
    on_b.cookies = on_a.cookies.clone();
    assert_eq!(on_a.get("/").await.status, StatusCode::OK);
    assert_eq!(on_b.get("/").await.status, StatusCode::OK);
    on_b.post_form("/logout", &[]).await;
    assert_eq!(
        on_b.get("/").await.status,
        StatusCode::SEE_OTHER,
        "logout not immediate where it happened"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    assert_eq!(
        on_a.get("/").await.status,
        StatusCode::SEE_OTHER,
        "revocation did not reach the other replica"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_timeout_ends_even_a_busy_session() {
    let site = site(
        Backend::Memory,
        &[
            ("TWOFA_SESSION__IDLE_TIMEOUT", "10m"),
            ("TWOFA_SESSION__ABSOLUTE_TIMEOUT", "1h"),
        ],
    )
    .await;
    let mut agent = Agent::new(site.proxy.addr);
    password_login(&mut agent, "alice", "wonderland").await;
    for _ in 0..6 {
        site.clock.advance(9 * 60);
        assert_eq!(agent.get("/").await.status, StatusCode::OK);
    }
    site.clock.advance(9 * 60);
    assert_eq!(
        agent.get("/").await.status,
        StatusCode::SEE_OTHER,
        "lived past the absolute timeout"
    );
}

/// With case-sensitive names a typed `ALICE` is another account; the app's own word on who logged
/// in (`user_header`) keeps that from being a way around alice's 2FA, and never reaches the browser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "external-tools"), ignore = "needs external-tools")]
async fn the_apps_user_header_names_the_account() {
    let site = site(
        Backend::Memory,
        &[
            ("TWOFA_APP__USERNAME_CASE_SENSITIVE", "true"),
            ("TWOFA_APP__USER_HEADER", "X-Demo-User"),
        ],
    )
    .await;
    enrolled_at_challenge(&site, "alice", "wonderland").await;
    let mut shouting = Agent::new(site.proxy.addr);
    let res = password_login(&mut shouting, "ALICE", "wonderland").await;
    assert_eq!(res.header("location"), Some("/_2fa/challenge"));
    assert!(
        res.header("x-demo-user").is_none(),
        "the app's user header leaked to the browser"
    );
    let page = shouting.follow(&res).await;
    assert!(page.text().contains("(alice)"));
}

/// Bodies that some app could read as one account and the proxy as another never let a login
/// through unchallenged (the proxy would challenge the wrong user).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "external-tools"), ignore = "needs external-tools")]
async fn ambiguous_login_bodies_cannot_pick_the_challenged_user() {
    let site = site(Backend::Memory, &[]).await;
    enrolled_at_challenge(&site, "alice", "wonderland").await;
    let mut attacker = Agent::new(site.proxy.addr);
    // JSON with a media type in capitals; the value contains something form-shaped.
    let body = r#"{"username":"alice","password":"wonderland","x":"&username=nobody&"}"#;
    let res = attacker
        .request("POST", "/api/login", Some("Application/JSON"), body.into())
        .await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED, "{}", res.text());
    assert_eq!(res.json()["error"], "second_factor_required");
    assert!(!attacker.cookies.contains_key("session"));
    // Two names in one form, and a multipart body: refused outright.
    let res = attacker
        .post_form(
            "/login",
            &[
                ("username", "nobody"),
                ("username", "alice"),
                ("password", "wonderland"),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    let multipart =
        "--b\r\nContent-Disposition: form-data; name=\"username\"\r\n\r\nalice\r\n--b--\r\n";
    let res = attacker
        .request(
            "POST",
            "/login",
            Some("multipart/form-data; boundary=b"),
            multipart.into(),
        )
        .await;
    assert_eq!(res.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(
        !attacker.cookies.contains_key("session")
            && !attacker.cookies.contains_key("twofa-session")
    );
}

/// A proxy session only vouches for the app session of its own login: another account's app
/// cookie (from a login the proxy never saw) next to it is refused. (That every spelling of a
/// login path is watched is in the gate's unit tests.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "external-tools"), ignore = "needs external-tools")]
async fn a_session_cannot_carry_another_logins_app_cookie() {
    let site = site(Backend::Memory, &[]).await;
    enrolled_at_challenge(&site, "alice", "wonderland").await;
    // The attacker signs in as bob (no 2FA) and holds a valid proxy session.
    let mut attacker = Agent::new(site.proxy.addr);
    password_login(&mut attacker, "bob", "builder").await;
    assert!(attacker.get("/").await.text().contains("Welcome back, bob"));
    // Alice's app session obtained behind the proxy's back (straight from the app here).
    let direct = format!("http://{}/login", site.upstream);
    let res = crate::support::send(
        http::Request::post(&direct)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(crate::support::full("username=alice&password=wonderland"))
            .unwrap(),
    )
    .await;
    let alice_cookie = res
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1
        .to_owned();
    attacker.cookies.insert("session".into(), alice_cookie);
    let res = attacker.get("/").await;
    assert_eq!(
        res.status,
        StatusCode::SEE_OTHER,
        "alice's app session was served to bob's proxy session"
    );
    assert!(
        res.header("set-cookie")
            .unwrap()
            .starts_with("session=; Path=/; Max-Age=0")
    );
}

/// Moving to a new authenticator app: the old app's code and the new app's first code, in the
/// same 30 s window, as a person would type them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "external-tools"), ignore = "needs external-tools")]
async fn moving_to_a_new_authenticator_app() {
    let site = site(Backend::Memory, &[]).await;
    let mut agent = Agent::new(site.proxy.addr);
    password_login(&mut agent, "carol", "singer").await;
    let (old_secret, _) = enroll(&site, &mut agent).await;
    site.clock.advance(30);
    let page = agent.get("/_2fa/settings/totp").await.text();
    let new_secret = query_param(&decode_qr(&page), "secret");
    assert_ne!(new_secret, old_secret);
    let csrf = input_value(&page, "csrf");
    let now = site.clock.now_secs();
    // A mistyped new code does not spend the old one.
    let res = agent
        .post_form(
            "/_2fa/settings/totp",
            &[
                ("csrf", &csrf),
                ("current_code", &oathtool(&old_secret, now)),
                ("code", "000000"),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    let res = agent
        .post_form(
            "/_2fa/settings/totp",
            &[
                ("csrf", &csrf),
                ("current_code", &oathtool(&old_secret, now)),
                ("code", &oathtool(&new_secret, now)),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    assert!(res.text().contains("Save your recovery codes"));
    // The new app's codes now sign in; the old app's do not.
    site.clock.advance(30);
    let mut fresh = Agent::new(site.proxy.addr);
    let res = password_login(&mut fresh, "carol", "singer").await;
    let csrf = input_value(&fresh.follow(&res).await.text(), "csrf");
    let now = site.clock.now_secs();
    let res = fresh
        .post_form(
            "/_2fa/challenge",
            &[("csrf", &csrf), ("code", &oathtool(&old_secret, now))],
        )
        .await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    let res = fresh
        .post_form(
            "/_2fa/challenge",
            &[("csrf", &csrf), ("code", &oathtool(&new_secret, now))],
        )
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.text());
}

/// Guesses sent in parallel from many sign-ins cannot get more checks than the lockout allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "external-tools"), ignore = "needs external-tools")]
async fn parallel_guesses_stop_at_the_threshold() {
    // Six sign-ins held back at once: above the default cap of five.
    let site = site(
        Backend::Memory,
        &[("TWOFA_TWOFACTOR__MAX_PENDING_LOGINS", "10")],
    )
    .await;
    enrolled_at_challenge(&site, "alice", "wonderland").await;
    let mut attempts = Vec::new();
    for i in 0..5 {
        let mut agent = Agent::new(site.proxy.addr);
        let res = password_login(&mut agent, "alice", "wonderland").await;
        let csrf = input_value(&agent.follow(&res).await.text(), "csrf");
        for j in 0..4 {
            let code = format!("{:06}", 100_000 + i * 10 + j);
            let mut a = Agent::new(site.proxy.addr);
            a.cookies = agent.cookies.clone();
            let csrf = csrf.clone();
            attempts.push(tokio::spawn(async move {
                a.post_form("/_2fa/challenge", &[("csrf", &csrf), ("code", &code)])
                    .await
                    .status
            }));
        }
    }
    let mut checked = 0;
    for a in attempts {
        if a.await.unwrap() == StatusCode::UNAUTHORIZED {
            checked += 1;
        }
    }
    // lockout_threshold = 3 in this config: at most three guesses were actually checked.
    assert!(checked <= 3, "{checked} guesses were checked");
}
