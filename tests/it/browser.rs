//! A real browser through the proxy: headless Chromium signs in to the demo app, opens Account
//! Settings and logs out, with screenshots of each page under `<target dir>/screenshots/`.

use crate::support::browser::{Browser, url_path};
use crate::support::*;

#[tokio::test]
async fn demo_login_through_the_proxy_in_a_browser() {
    let (up, stop_demo) = demo_upstream().await;
    let proxy = proxy(up, &[]).await;
    let base = format!("http://127.0.0.1:{}", proxy.addr.port());
    let browser = Browser::start().await;

    // Not signed in: the demo app sends the browser to its login page.
    browser.goto(&format!("{base}/")).await;
    let url = browser.wait_for_path("/login").await;
    assert!(
        url.starts_with(&format!("{base}/login")),
        "left the proxy: {url}"
    );
    assert_eq!(browser.text("h1").await, "Sign in");
    browser
        .wait_for("form[action='/login'] input#username")
        .await;
    browser
        .wait_for("form[action='/login'] input#password")
        .await;
    browser.shot("demo-login").await;

    browser.sign_in("alice", "wonderland").await;

    // Signed in: the dashboard, greeting alice, served through the proxy.
    browser.wait_for_path("/").await;
    browser.wait_for_text("h1", "Dashboard").await;
    let body = browser.wait_for_text("main", "Welcome back, alice.").await;
    assert!(body.contains("Integrations"), "dashboard body: {body}");
    assert!(
        browser.text("nav.top a.user").await.contains("alice"),
        "the top bar should name the signed-in user"
    );
    let url = browser.current_url().await;
    assert!(url.starts_with(&base), "left the proxy: {url}");
    browser.shot("demo-dashboard").await;

    // Account Settings, with the link to the proxy's 2FA settings.
    browser.click_link("Account Settings").await;
    browser.wait_for_path("/account").await;
    browser.wait_for_text("h1", "Account Settings").await;
    assert_eq!(
        browser.text("#two-factor h2").await,
        "Two Factor Authentication"
    );
    assert_eq!(
        browser.text("#two-factor a.button").await,
        "Enable Two-Factor Authentication"
    );
    assert_eq!(
        browser
            .attr("#two-factor a.button", "href")
            .await
            .as_deref(),
        Some("/_2fa/settings")
    );
    let profile = browser.text("main dl").await;
    assert!(
        profile.contains("alice") && profile.contains("alice@example.com"),
        "profile: {profile}"
    );
    browser.shot("demo-account").await;

    // Log out: back on the login page, and the dashboard is closed again.
    browser.click("form[action='/logout'] button").await;
    browser.wait_for_path("/login").await;
    browser.wait_for_text("h1", "Sign in").await;
    browser.goto(&format!("{base}/")).await;
    let url = browser.wait_for_path("/login").await;
    assert_eq!(url_path(&url), "/login");
    assert_eq!(browser.text("h1").await, "Sign in");

    browser.close().await;
    proxy.shutdown();
    proxy.wait().await;
    stop_demo.cancel();
}

/// The seed's steps in a real browser: Account Settings → Two Factor Authentication → Enable →
/// authenticator app → read the key → verify → save recovery codes → log out → log in → code →
/// dashboard. Screenshots of every proxy page land in `<target dir>/screenshots/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enable_totp_and_log_in_with_it_in_a_browser() {
    use crate::support::site::{Backend, Now, oathtool, site};

    let site = site(Backend::Memory, &[]).await;
    let base = format!("http://127.0.0.1:{}", site.proxy.addr.port());
    let browser = Browser::start().await;

    browser.goto(&format!("{base}/")).await;
    browser.wait_for_path("/login").await;
    browser.sign_in("alice", "wonderland").await;
    browser.wait_for_text("h1", "Dashboard").await;

    browser.click_link("Account Settings").await;
    browser.wait_for_text("h1", "Account Settings").await;
    browser.click("#two-factor a.button").await;
    browser.wait_for_path("/_2fa/settings").await;
    browser
        .wait_for_text("h1", "Two Factor Authentication")
        .await;
    assert!(browser.text("main").await.contains("Recommended"));
    browser.shot("2fa-settings-off").await;

    // The seed's choice: the authenticator app is picked already; "Next" goes on to it.
    browser
        .click("form[action='/_2fa/settings/enable'] button[type='submit']")
        .await;
    browser.wait_for_path("/_2fa/settings/totp").await;
    browser.wait_for("figure.qr svg").await;
    browser.shot("2fa-totp-setup").await;
    browser.click("details summary").await;
    let key = browser
        .wait_for_text("#manual-key", "")
        .await
        .replace(' ', "");
    assert_eq!(key.len(), 32, "manual key: {key:?}");
    let code = oathtool(&key, site.clock.now_secs());
    browser.fill("#code", &code).await;
    browser
        .click("form[action='/_2fa/settings/totp'] button[type='submit']")
        .await;
    browser
        .wait_for_text("h1", "Save your recovery codes")
        .await;
    assert_eq!(
        browser
            .client()
            .find_all(fantoccini::Locator::Css("#recovery-codes li"))
            .await
            .unwrap()
            .len(),
        10
    );
    browser.shot("2fa-recovery-codes").await;
    browser.click("#saved").await;
    browser
        .wait_for_text("main", "Enabled — authenticator app")
        .await;
    browser.shot("2fa-settings-on").await;

    // Log out, then in again: now the code is asked for.
    browser.goto(&format!("{base}/account")).await;
    browser.click("form[action='/logout'] button").await;
    browser.wait_for_path("/login").await;
    browser.sign_in("alice", "wonderland").await;
    browser.wait_for_path("/_2fa/challenge").await;
    browser
        .wait_for_text("main", "authenticator app for DCKAP Integrator (alice)")
        .await;
    browser.shot("2fa-challenge").await;

    browser.fill("#code", "000000").await;
    browser
        .click("form[action='/_2fa/challenge'] button[type='submit']")
        .await;
    browser.wait_for_text(".error", "did not work").await;
    browser.shot("2fa-challenge-error").await;

    site.clock.advance(30);
    let code = oathtool(&key, site.clock.now_secs());
    browser.fill("#code", &code).await;
    browser
        .click("form[action='/_2fa/challenge'] button[type='submit']")
        .await;
    browser.wait_for_text("h1", "Dashboard").await;
    browser.close().await;
}

/// The seed's Method 2 in a real browser: enable email codes (the code read from what a real SMTP
/// server received), log out, log in with a freshly mailed code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enable_email_codes_and_log_in_with_one_in_a_browser() {
    use crate::support::site::{Backend, site};
    use crate::support::smtp::{SmtpSink, code_in};

    let sink = SmtpSink::start();
    let port = sink.port.to_string();
    let site = site(
        Backend::Memory,
        &[
            ("TWOFA_EMAIL__SMTP__HOST", "127.0.0.1"),
            ("TWOFA_EMAIL__SMTP__PORT", &port),
            ("TWOFA_EMAIL__SMTP__TLS", "none"),
        ],
    )
    .await;
    let base = format!("http://127.0.0.1:{}", site.proxy.addr.port());
    let browser = Browser::start().await;
    browser.goto(&format!("{base}/")).await;
    browser.wait_for_path("/login").await;
    browser.sign_in("carol", "singer").await;
    browser.wait_for_text("h1", "Dashboard").await;
    browser.click_link("Account Settings").await;
    browser.click("#two-factor a.button").await;
    browser.wait_for_path("/_2fa/settings").await;
    browser.click("input[name='method'][value='email']").await;
    browser
        .click("form[action='/_2fa/settings/enable'] button[type='submit']")
        .await;
    browser.wait_for_path("/_2fa/settings/email").await;
    browser.shot("2fa-email-address").await;
    browser.fill("#address", "carol@example.com").await;
    browser
        .click("form[action='/_2fa/settings/email'] button[type='submit']")
        .await;
    browser
        .wait_for_text("main", "We sent a 6-digit code to c•••@example.com")
        .await;
    browser.shot("2fa-email-verify").await;
    let code = code_in(&sink.wait_for(1));
    browser.fill("#code", &code).await;
    browser
        .click("form[action='/_2fa/settings/email'] button[type='submit']")
        .await;
    browser
        .wait_for_text("h1", "Save your recovery codes")
        .await;
    browser.click("#saved").await;
    browser
        .wait_for_text("main", "Enabled — email to c•••@example.com")
        .await;
    browser.shot("2fa-settings-email-on").await;

    browser.goto(&format!("{base}/account")).await;
    browser.click("form[action='/logout'] button").await;
    browser.wait_for_path("/login").await;
    browser.sign_in("carol", "singer").await;
    browser.wait_for_path("/_2fa/challenge").await;
    browser.wait_for_text("h1", "Check your email").await;
    browser.shot("2fa-email-challenge").await;
    // Mail 2 is the "Two Factor Authentication is enabled" notice; 3 is the sign-in code.
    let code = code_in(&sink.wait_for(3));
    browser.fill("#code", &code).await;
    browser
        .click("form[action='/_2fa/challenge'] button[type='submit']")
        .await;
    browser.wait_for_text("h1", "Dashboard").await;
    browser.close().await;
}
