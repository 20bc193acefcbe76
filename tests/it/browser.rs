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
    let shot = browser.screenshot("demo-login").await;
    eprintln!("screenshot: {}", shot.display());

    browser.fill("#username", "alice").await;
    browser.fill("#password", "wonderland").await;
    browser
        .click("form[action='/login'] button[type='submit']")
        .await;

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
    let shot = browser.screenshot("demo-dashboard").await;
    eprintln!("screenshot: {}", shot.display());

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
    let shot = browser.screenshot("demo-account").await;
    eprintln!("screenshot: {}", shot.display());

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
