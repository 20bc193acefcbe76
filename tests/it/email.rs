//! The email method end to end, with a real SMTP server process (aiosmtpd) on loopback: the
//! code is read from the message the server received.

use http::StatusCode;
use serde_json::json;

use crate::support::agent::{Agent, input_value};
use crate::support::site::*;
use crate::support::smtp::{SmtpSink, code_in};
use crate::support::{TempDir, self_signed};

fn smtp_overrides(sink: &SmtpSink) -> Vec<(&'static str, String)> {
    vec![
        ("TWOFA_EMAIL__SMTP__HOST", "127.0.0.1".into()),
        ("TWOFA_EMAIL__SMTP__PORT", sink.port.to_string()),
        ("TWOFA_EMAIL__SMTP__TLS", "none".into()),
        ("TWOFA_EMAIL__SMTP__TIMEOUT", "3s".into()),
    ]
}

async fn email_site(sink: &SmtpSink, extra: &[(&'static str, &str)]) -> Site {
    let owned = smtp_overrides(sink);
    let mut overrides: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    overrides.extend_from_slice(extra);
    site(Backend::Memory, &overrides).await
}

/// Enrolls `user` by email at `address`; returns the number of messages the sink holds after.
async fn enroll_by_email(site: &Site, sink: &SmtpSink, agent: &mut Agent, address: &str) -> usize {
    let before = sink.messages().len();
    let settings = agent.get("/_2fa/settings").await.text();
    assert!(
        settings.contains("Less secure than an app"),
        "email is offered, marked less secure"
    );
    let page = agent.get("/_2fa/settings/email").await;
    assert!(page.text().contains("NIST SP 800-63B"));
    let csrf = input_value(&page.text(), "csrf");
    let res = agent
        .post_form(
            "/_2fa/settings/email",
            &[("csrf", &csrf), ("action", "send"), ("address", address)],
        )
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    assert!(
        res.text().contains("We sent a 6-digit code to"),
        "{}",
        res.text()
    );
    let mail = sink.wait_for(before + 1);
    assert!(mail.contains(&format!("To: {address}")), "{mail}");
    assert!(mail.contains("Confirm your email"), "{mail}");
    let code = code_in(&mail);
    let res = agent
        .post_form(
            "/_2fa/settings/email",
            &[("csrf", &csrf), ("action", "verify"), ("code", &code)],
        )
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    assert!(res.text().contains("Save your recovery codes"));
    // The notice that 2FA is on (sent in the background).
    let notice = sink.wait_for(before + 2);
    assert!(
        notice.contains("Two Factor Authentication is enabled"),
        "{notice}"
    );
    let _ = site;
    before + 2
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "external-tools"), ignore = "needs external-tools")]
async fn enroll_by_email_then_sign_in_with_a_mailed_code() {
    let sink = SmtpSink::start();
    let site = email_site(&sink, &[]).await;
    let mut agent = Agent::new(site.proxy.addr);
    password_login(&mut agent, "alice", "wonderland").await;
    let mut count = enroll_by_email(&site, &sink, &mut agent, "alice@example.com").await;
    let settings = agent.get("/_2fa/settings").await.text();
    assert!(
        settings.contains("Enabled — email to a•••@example.com"),
        "{settings}"
    );

    let mut fresh = Agent::new(site.proxy.addr);
    let res = password_login(&mut fresh, "alice", "wonderland").await;
    assert_eq!(res.header("location"), Some("/_2fa/challenge"));
    count += 1;
    let mail = sink.wait_for(count);
    assert!(mail.contains("sign-in code"), "{mail}");
    let code = code_in(&mail);
    let page = fresh.follow(&res).await.text();
    assert!(
        page.contains("We sent a 6-digit code to a•••@example.com"),
        "{page}"
    );
    assert!(page.contains("expires in 10 minutes"));
    let csrf = input_value(&page, "csrf");
    let res = fresh
        .post_form("/_2fa/challenge", &[("csrf", &csrf), ("code", "000000")])
        .await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    let res = fresh
        .post_form("/_2fa/challenge", &[("csrf", &csrf), ("code", &code)])
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.text());
    assert!(fresh.get("/").await.text().contains("Dashboard"));

    // The code was used up.
    let mut again = Agent::new(site.proxy.addr);
    let res = password_login(&mut again, "alice", "wonderland").await;
    count += 1;
    sink.wait_for(count);
    let page = again.follow(&res).await.text();
    let csrf = input_value(&page, "csrf");
    let res = again
        .post_form("/_2fa/challenge", &[("csrf", &csrf), ("code", &code)])
        .await;
    assert_eq!(
        res.status,
        StatusCode::UNAUTHORIZED,
        "an emailed code worked twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "external-tools"), ignore = "needs external-tools")]
async fn codes_expire_resends_wait_and_replace_old_codes() {
    let sink = SmtpSink::start();
    let site = email_site(&sink, &[("TWOFA_EMAIL__MAX_SENDS_PER_HOUR", "3")]).await;
    // The cap counts per clock hour: start at the top of one so the test never straddles two.
    let now = site.clock.now_secs();
    site.clock.set(now - now % 3600 + 3600);
    let mut agent = Agent::new(site.proxy.addr);
    password_login(&mut agent, "bob", "builder").await;
    let mut count = enroll_by_email(&site, &sink, &mut agent, "bob@example.com").await;

    let mut signin = Agent::new(site.proxy.addr);
    let res = password_login(&mut signin, "bob", "builder").await;
    count += 1;
    let first = code_in(&sink.wait_for(count));
    let page = signin.follow(&res).await.text();
    let csrf = input_value(&page, "csrf");
    // Too soon for another.
    let res = signin
        .post_form("/_2fa/challenge/resend", &[("csrf", &csrf)])
        .await;
    assert!(
        res.text().contains("You can ask for a new code in"),
        "{}",
        res.text()
    );
    assert_eq!(sink.messages().len(), count);
    // After the interval a new code replaces the old.
    site.clock.advance(31);
    let res = signin
        .post_form("/_2fa/challenge/resend", &[("csrf", &csrf)])
        .await;
    assert!(res.text().contains("We sent a new code"), "{}", res.text());
    count += 1;
    let second = code_in(&sink.wait_for(count));
    let res = signin
        .post_form("/_2fa/challenge", &[("csrf", &csrf), ("code", &first)])
        .await;
    assert_eq!(
        res.status,
        StatusCode::UNAUTHORIZED,
        "the replaced code still worked"
    );
    // Expired after code_ttl (10 minutes; the challenge itself lasts 5, so start a new one).
    let mut late = Agent::new(site.proxy.addr);
    let res = password_login(&mut late, "bob", "builder").await;
    count += 1;
    let code = code_in(&sink.wait_for(count));
    let page = late.follow(&res).await.text();
    let csrf_late = input_value(&page, "csrf");
    site.clock.advance(4 * 60);
    let res = late
        .post_form("/_2fa/challenge", &[("csrf", &csrf_late), ("code", &code)])
        .await;
    assert_eq!(
        res.status,
        StatusCode::SEE_OTHER,
        "a 4-minute-old code failed: {}",
        res.text()
    );
    let _ = second;
    // The hourly cap of this client for bob (3 sends: the logins and the resend so far this
    // hour; the enrollment's code counts against the settings' own budget) refuses more.
    let mut capped = Agent::new(site.proxy.addr);
    let res = password_login(&mut capped, "bob", "builder").await;
    let page = capped.follow(&res).await.text();
    assert!(
        page.contains("could not send a code") || page.contains("many codes"),
        "{page}"
    );
    let csrf = input_value(&page, "csrf");
    let res = capped
        .post_form("/_2fa/challenge/resend", &[("csrf", &csrf)])
        .await;
    assert!(
        res.text().contains("asked for many codes"),
        "{}",
        res.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "external-tools"), ignore = "needs external-tools")]
async fn an_expired_code_is_refused() {
    let sink = SmtpSink::start();
    let site = email_site(&sink, &[("TWOFA_EMAIL__CODE_TTL", "2m")]).await;
    let mut agent = Agent::new(site.proxy.addr);
    password_login(&mut agent, "carol", "singer").await;
    let count = enroll_by_email(&site, &sink, &mut agent, "carol@example.com").await;
    let mut signin = Agent::new(site.proxy.addr);
    let res = password_login(&mut signin, "carol", "singer").await;
    let code = code_in(&sink.wait_for(count + 1));
    let page = signin.follow(&res).await.text();
    let csrf = input_value(&page, "csrf");
    site.clock.advance(121);
    let res = signin
        .post_form("/_2fa/challenge", &[("csrf", &csrf), ("code", &code)])
        .await;
    assert_eq!(
        res.status,
        StatusCode::UNAUTHORIZED,
        "an expired code worked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "external-tools"), ignore = "needs external-tools")]
async fn wrong_emailed_codes_lock_the_account() {
    let sink = SmtpSink::start();
    let site = email_site(&sink, &[]).await;
    let mut agent = Agent::new(site.proxy.addr);
    password_login(&mut agent, "alice", "wonderland").await;
    let count = enroll_by_email(&site, &sink, &mut agent, "alice@example.com").await;
    let mut signin = Agent::new(site.proxy.addr);
    let res = password_login(&mut signin, "alice", "wonderland").await;
    sink.wait_for(count + 1);
    let csrf = input_value(&signin.follow(&res).await.text(), "csrf");
    for code in ["111111", "222222"] {
        let res = signin
            .post_form("/_2fa/challenge", &[("csrf", &csrf), ("code", code)])
            .await;
        assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    }
    let res = signin
        .post_form("/_2fa/challenge", &[("csrf", &csrf), ("code", "333333")])
        .await;
    assert_eq!(res.status, StatusCode::TOO_MANY_REQUESTS);
    // The user is told.
    let notice = sink.wait_for(count + 2);
    assert!(notice.contains("Sign-in paused"), "{notice}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "external-tools"), ignore = "needs external-tools")]
async fn a_mail_server_outage_is_explained_and_a_retry_works() {
    let mut sink = SmtpSink::start();
    let site = email_site(&sink, &[]).await;
    let mut agent = Agent::new(site.proxy.addr);
    password_login(&mut agent, "alice", "wonderland").await;
    let count = enroll_by_email(&site, &sink, &mut agent, "alice@example.com").await;
    sink.stop();
    let mut signin = Agent::new(site.proxy.addr);
    let res = password_login(&mut signin, "alice", "wonderland").await;
    assert_eq!(
        res.header("location"),
        Some("/_2fa/challenge"),
        "the login was lost"
    );
    let page = signin.follow(&res).await.text();
    assert!(
        page.contains("We could not send a code to a•••@example.com"),
        "{page}"
    );
    let metrics = crate::support::get(&format!("http://{}/metrics", site.proxy.admin_addr), &[])
        .await
        .text();
    assert!(
        metrics.contains(r#"twofa_emails_total{kind="login_code",result="failed"} 1"#),
        "{metrics}"
    );
    sink.restart();
    let csrf = input_value(&page, "csrf");
    let res = signin
        .post_form("/_2fa/challenge/resend", &[("csrf", &csrf)])
        .await;
    assert!(res.text().contains("We sent a new code"), "{}", res.text());
    let code = code_in(&sink.wait_for(count + 1));
    let res = signin
        .post_form("/_2fa/challenge", &[("csrf", &csrf), ("code", &code)])
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "external-tools"), ignore = "needs external-tools")]
async fn starttls_to_a_relay_with_a_self_signed_certificate() {
    let dir = TempDir::new("smtp-tls");
    let (cert, key) = self_signed(&dir.0);
    let sink = SmtpSink::start_tls(&cert, &key);
    let ca = cert.display().to_string();
    let owned = smtp_overrides(&sink);
    let mut overrides: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    overrides.retain(|(k, _)| *k != "TWOFA_EMAIL__SMTP__TLS" && *k != "TWOFA_EMAIL__SMTP__HOST");
    overrides.push(("TWOFA_EMAIL__SMTP__TLS", "starttls"));
    overrides.push(("TWOFA_EMAIL__SMTP__HOST", "localhost"));

    // Without trusting the certificate nothing is sent.
    let untrusted = site(Backend::Memory, &overrides).await;
    let mut agent = Agent::new(untrusted.proxy.addr);
    password_login(&mut agent, "alice", "wonderland").await;
    let page = agent.get("/_2fa/settings/email").await.text();
    let csrf = input_value(&page, "csrf");
    let res = agent
        .post_form(
            "/_2fa/settings/email",
            &[
                ("csrf", &csrf),
                ("action", "send"),
                ("address", "alice@example.com"),
            ],
        )
        .await;
    assert!(res.text().contains("could not send"), "{}", res.text());
    assert!(sink.messages().is_empty());

    // Trusting it through email.smtp.ca_file, the code goes out over TLS.
    overrides.push(("TWOFA_EMAIL__SMTP__CA_FILE", &ca));
    let trusted = site(Backend::Memory, &overrides).await;
    let mut agent = Agent::new(trusted.proxy.addr);
    password_login(&mut agent, "alice", "wonderland").await;
    enroll_by_email(&trusted, &sink, &mut agent, "alice@example.com").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "external-tools"), ignore = "needs external-tools")]
async fn the_email_method_over_json() {
    let sink = SmtpSink::start();
    let site = email_site(&sink, &[]).await;
    let mut spa = Agent::new(site.proxy.addr);
    spa.json_login("alice", "wonderland").await;
    let res = spa
        .post_json(
            "/_2fa/api/v1/email/setup",
            json!({"address": "not an address"}),
        )
        .await;
    assert_eq!(res.json()["error"], "invalid_address");
    let res = spa
        .post_json(
            "/_2fa/api/v1/email/setup",
            json!({"address": "alice@example.com"}),
        )
        .await;
    assert_eq!(res.json()["sent_to"], "a•••@example.com");
    let code = code_in(&sink.wait_for(1));
    let res = spa
        .post_json("/_2fa/api/v1/email/confirm", json!({"code": code}))
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    assert_eq!(
        spa.get("/_2fa/api/v1/status").await.json()["method"],
        "email"
    );
    sink.wait_for(2);

    let mut other = Agent::new(site.proxy.addr);
    let res = other.json_login("alice", "wonderland").await;
    assert_eq!(res.json()["method"], "email");
    let first = code_in(&sink.wait_for(3));
    let res = other
        .post_json("/_2fa/api/v1/challenge/resend", json!({}))
        .await;
    assert_eq!(res.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.json()["error"], "too_soon");
    site.clock.advance(31);
    let res = other
        .post_json("/_2fa/api/v1/challenge/resend", json!({}))
        .await;
    assert_eq!(res.json()["sent_to"], "a•••@example.com");
    let second = code_in(&sink.wait_for(4));
    let res = other
        .post_json("/_2fa/api/v1/challenge", json!({"code": first}))
        .await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    let res = other
        .post_json("/_2fa/api/v1/challenge", json!({"code": second}))
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
}

/// Switching methods needs a current code of the active method: TOTP to email with an app code,
/// then back to TOTP with a code emailed for the change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "external-tools"), ignore = "needs external-tools")]
async fn switching_methods_needs_the_current_factor() {
    let sink = SmtpSink::start();
    let site = email_site(&sink, &[]).await;
    let mut spa = Agent::new(site.proxy.addr);
    spa.json_login("alice", "wonderland").await;
    let secret = spa
        .post_json("/_2fa/api/v1/totp/setup", json!({}))
        .await
        .json()["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let code = oathtool(&secret, site.clock.now_secs());
    assert_eq!(
        spa.post_json("/_2fa/api/v1/totp/confirm", json!({"code": code}))
            .await
            .status,
        StatusCode::OK
    );

    // To email: the emailed code alone is not enough.
    spa.post_json(
        "/_2fa/api/v1/email/setup",
        json!({"address": "alice@example.com"}),
    )
    .await;
    let emailed = code_in(&sink.wait_for(1));
    let res = spa
        .post_json(
            "/_2fa/api/v1/email/confirm",
            json!({"code": emailed, "current_code": "000000"}),
        )
        .await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    site.clock.advance(30);
    let current = oathtool(&secret, site.clock.now_secs());
    let res = spa
        .post_json(
            "/_2fa/api/v1/email/confirm",
            json!({"code": emailed, "current_code": current}),
        )
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    assert_eq!(
        spa.get("/_2fa/api/v1/status").await.json()["method"],
        "email"
    );
    let changed = sink.wait_for(2);
    assert!(
        changed.contains("Your Two Factor Authentication changed"),
        "{changed}"
    );

    // Back to an app: the settings page emails a code for the change.
    let page = spa.get("/_2fa/settings/totp").await.text();
    assert!(page.contains("Code we email you"), "{page}");
    let csrf = input_value(&page, "csrf");
    let res = spa
        .post_form(
            "/_2fa/settings/send-code",
            &[("csrf", &csrf), ("back", "totp")],
        )
        .await;
    assert!(res.text().contains("We sent a code"), "{}", res.text());
    let change_code = code_in(&sink.wait_for(3));
    let uri = decode_qr(&res.text());
    let new_secret = query_param(&uri, "secret");
    site.clock.advance(30);
    let app_code = oathtool(&new_secret, site.clock.now_secs());
    let csrf = input_value(&res.text(), "csrf");
    let res = spa
        .post_form(
            "/_2fa/settings/totp",
            &[
                ("csrf", &csrf),
                ("current_code", &change_code),
                ("code", &app_code),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    assert_eq!(
        spa.get("/_2fa/api/v1/status").await.json()["method"],
        "totp"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_transport_writes_eml_files() {
    let dir = TempDir::new("mailfiles");
    let path = dir.0.display().to_string();
    let site = site(
        Backend::Memory,
        &[
            ("TWOFA_EMAIL__TRANSPORT", "file"),
            ("TWOFA_EMAIL__FILE_DIR", &path),
        ],
    )
    .await;
    let mut spa = Agent::new(site.proxy.addr);
    spa.json_login("bob", "builder").await;
    let res = spa
        .post_json(
            "/_2fa/api/v1/email/setup",
            json!({"address": "bob@example.com"}),
        )
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    let files: Vec<_> = std::fs::read_dir(&dir.0)
        .unwrap()
        .filter_map(Result::ok)
        .collect();
    assert_eq!(files.len(), 1);
    let eml = std::fs::read_to_string(files[0].path()).unwrap();
    assert!(
        eml.contains("To: bob@example.com") && eml.contains("multipart/alternative"),
        "{eml}"
    );
    let code = code_in(&eml);
    let res = spa
        .post_json("/_2fa/api/v1/email/confirm", json!({"code": code}))
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_can_turn_the_email_method_off() {
    let site = site(Backend::Memory, &[("TWOFA_TWOFACTOR__METHODS", "totp")]).await;
    let mut agent = Agent::new(site.proxy.addr);
    password_login(&mut agent, "alice", "wonderland").await;
    let settings = agent.get("/_2fa/settings").await.text();
    assert!(
        settings.contains("Setup using Authentication App")
            && !settings.contains("value=\"email\"")
            && !settings.contains("settings/email"),
        "{settings}"
    );
    assert_eq!(
        agent.get("/_2fa/settings/email").await.status,
        StatusCode::NOT_FOUND
    );
    let res = agent
        .post_json(
            "/_2fa/api/v1/email/setup",
            json!({"address": "alice@example.com"}),
        )
        .await;
    assert_eq!(res.json()["error"], "method_unavailable");
}

/// Implicit TLS (`tls = "tls"`, the port-465 style) with SMTP AUTH; a wrong password sends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "external-tools"), ignore = "needs external-tools")]
async fn implicit_tls_with_smtp_auth() {
    let dir = TempDir::new("smtp-auth");
    let (cert, key) = self_signed(&dir.0);
    let sink = SmtpSink::start_implicit_tls_with_auth(&cert, &key, "twofa:s3cret");
    let ca = cert.display().to_string();
    let port = sink.port.to_string();
    let password_file = dir.path("smtp-password");
    std::fs::write(&password_file, "s3cret\n").unwrap();
    let password_path = password_file.display().to_string();
    let base = [
        ("TWOFA_EMAIL__SMTP__HOST", "localhost"),
        ("TWOFA_EMAIL__SMTP__PORT", port.as_str()),
        ("TWOFA_EMAIL__SMTP__TLS", "tls"),
        ("TWOFA_EMAIL__SMTP__CA_FILE", ca.as_str()),
        ("TWOFA_EMAIL__SMTP__USERNAME", "twofa"),
        ("TWOFA_EMAIL__SMTP__TIMEOUT", "2s"),
    ];

    let mut wrong: Vec<(&str, &str)> = base.to_vec();
    wrong.push(("TWOFA_EMAIL__SMTP__PASSWORD", "wrong"));
    let refused = site(Backend::Memory, &wrong).await;
    let mut spa = Agent::new(refused.proxy.addr);
    spa.json_login("bob", "builder").await;
    let res = spa
        .post_json(
            "/_2fa/api/v1/email/setup",
            json!({"address": "bob@example.com"}),
        )
        .await;
    assert_eq!(res.json()["error"], "send_failed", "{}", res.text());
    assert!(sink.messages().is_empty());

    // The password read from a file, as a mounted Secret would be.
    let mut right: Vec<(&str, &str)> = base.to_vec();
    right.push(("TWOFA_EMAIL__SMTP__PASSWORD_FILE", password_path.as_str()));
    let accepted = site(Backend::Memory, &right).await;
    let mut spa = Agent::new(accepted.proxy.addr);
    spa.json_login("bob", "builder").await;
    let res = spa
        .post_json(
            "/_2fa/api/v1/email/setup",
            json!({"address": "bob@example.com"}),
        )
        .await;
    assert_eq!(res.json()["sent_to"], "b•••@example.com", "{}", res.text());
    assert!(code_in(&sink.wait_for(1)).len() == 6);
}

/// `address_source = "username"`: nothing to type; the code goes to the account name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "external-tools"), ignore = "needs external-tools")]
async fn the_username_can_be_the_address() {
    let sink = SmtpSink::start();
    let site = email_site(&sink, &[("TWOFA_EMAIL__ADDRESS_SOURCE", "username")]).await;
    // The demo's users are not addresses: the page says so instead of asking.
    let mut alice = Agent::new(site.proxy.addr);
    password_login(&mut alice, "alice", "wonderland").await;
    let page = alice.get("/_2fa/settings/email").await.text();
    assert!(!page.contains("name=\"address\""), "{page}");
    let csrf = input_value(&page, "csrf");
    let res = alice
        .post_form(
            "/_2fa/settings/email",
            &[("csrf", &csrf), ("action", "send")],
        )
        .await;
    assert!(
        res.text().contains("No email address is known"),
        "{}",
        res.text()
    );
    assert!(sink.messages().is_empty());
}

/// Waits until `count` messages are in, then the newest one to `to` that has a code.
fn code_to(sink: &SmtpSink, count: usize, to: &str) -> String {
    sink.wait_for(count);
    let all = sink.messages();
    let m = all
        .iter()
        .rev()
        .find(|m| m.contains(&format!("To: {to}")) && m.contains("Your code is "))
        .unwrap_or_else(|| panic!("no code mail to {to}"));
    code_in(m)
}

/// The user moves the email factor to a new address because the old mailbox is read by someone
/// who knows the password: a sign-in that someone held back before the move, with a code mailed
/// to the old address, no longer finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "external-tools"), ignore = "needs external-tools")]
async fn a_sign_in_held_back_before_the_address_moved_takes_no_code_from_the_old_one() {
    let sink = SmtpSink::start();
    let port = sink.port.to_string();
    let site = site(
        Backend::Memory,
        &[
            ("TWOFA_EMAIL__SMTP__HOST", "127.0.0.1"),
            ("TWOFA_EMAIL__SMTP__PORT", &port),
            ("TWOFA_EMAIL__SMTP__TLS", "none"),
            ("TWOFA_EMAIL__SMTP__TIMEOUT", "3s"),
        ],
    )
    .await;

    // The victim turns on email codes to old@example.com.
    let mut victim = Agent::new(site.proxy.addr);
    victim.json_login("alice", "wonderland").await;
    victim
        .post_json(
            "/_2fa/api/v1/email/setup",
            json!({"address": "old@example.com"}),
        )
        .await;
    let code = code_to(&sink, 1, "old@example.com");
    let res = victim
        .post_json("/_2fa/api/v1/email/confirm", json!({"code": code}))
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    sink.wait_for(2); // "2FA is on" notice

    // The attacker knows the password and reads old@example.com: a sign-in is held back and its
    // code goes to the old mailbox.
    let mut attacker = Agent::new(site.proxy.addr);
    let res = attacker.json_login("alice", "wonderland").await;
    assert_eq!(res.json()["method"], "email");
    let stolen = code_to(&sink, 3, "old@example.com");

    // The victim notices and moves the factor to new@example.com (current factor: a change
    // code mailed to the old address, as the product requires).
    victim
        .post_json(
            "/_2fa/api/v1/email/setup",
            json!({"address": "new@example.com"}),
        )
        .await;
    let new_code = code_to(&sink, 4, "new@example.com");
    let page = victim.get("/_2fa/settings").await.text();
    let csrf = input_value(&page, "csrf");
    let res = victim
        .post_form("/_2fa/settings/send-code", &[("csrf", &csrf)])
        .await;
    assert!(res.text().contains("We sent a code"), "{}", res.text());
    let change_code = code_to(&sink, 5, "old@example.com");
    let res = victim
        .post_json(
            "/_2fa/api/v1/email/confirm",
            json!({"code": new_code, "current_code": change_code}),
        )
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    let status = victim.get("/_2fa/api/v1/status").await.json();
    assert_eq!(status["method"], "email");

    // The held-back sign-in still takes the code sent to the address that is no longer the factor.
    site.clock.advance(60);
    let res = attacker
        .post_json("/_2fa/api/v1/challenge", json!({"code": stolen}))
        .await;
    let in_app =
        res.status == StatusCode::OK && attacker.get("/").await.text().contains("Dashboard");
    assert!(
        !in_app,
        "the attacker reached the app as alice after the factor moved"
    );
    assert_ne!(
        res.status,
        StatusCode::OK,
        "a code mailed to the old address signed in after the factor moved: {}",
        res.text()
    );
}
