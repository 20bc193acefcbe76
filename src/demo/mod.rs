//! `twofa-proxy demo`: the whole product on one machine with no other software -- the demo app
//! standing in for DCKAP Integrator, the proxy in front of it, the in-memory store.

mod app;

use std::net::SocketAddr;

pub use app::{DemoApp, LOAD_PASSWORD, SESSION_COOKIE, USERS};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigErrors};

/// The demo's configuration, before the addresses are known.
pub const DEMO_TOML: &str = include_str!("demo.toml");

/// The demo configuration pointed at an upstream, with the caller's listen addresses; process
/// env overrides still apply on top.
pub fn config(
    upstream: SocketAddr,
    listen: SocketAddr,
    admin_listen: SocketAddr,
) -> Result<Config, ConfigErrors> {
    let fixed = [
        (
            "TWOFA_UPSTREAM__URL".to_owned(),
            format!("http://{upstream}"),
        ),
        ("TWOFA_SERVER__LISTEN".to_owned(), listen.to_string()),
        (
            "TWOFA_SERVER__ADMIN_LISTEN".to_owned(),
            admin_listen.to_string(),
        ),
    ];
    Config::from_toml(DEMO_TOML, fixed.into_iter().chain(std::env::vars()))
}

/// Runs the demo until SIGINT/SIGTERM. Returns after a clean shutdown.
pub async fn run(listen: SocketAddr, admin_listen: SocketAddr) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    let upstream = DemoApp::new("/_2fa/settings")
        .spawn(SocketAddr::from(([127, 0, 0, 1], 0)), stop.clone())
        .await?;
    let config =
        config(upstream, listen, admin_listen).map_err(|e| anyhow::anyhow!("demo config:\n{e}"))?;
    tracing::warn!(
        "demo mode: plain-http cookies (session.insecure_http_cookies) and in-memory store; not for production"
    );
    let running = crate::app::start(config).await?;
    let users: Vec<String> = USERS.iter().map(|(u, p, _)| format!("{u} / {p}")).collect();
    let banner = format!(
        "\n  twofa-proxy demo is running\n\n  Open       http://{}/\n  Sign in    {}\n  Try 2FA    Account Settings -> Enable Two-Factor Authentication\n  Outbox     http://{}/_2fa/outbox (emailed codes land here)\n  Admin      http://{}/metrics\n\n  Stop with Ctrl-C.\n",
        running.addr,
        users.join("   "),
        running.addr,
        running.admin_addr,
    );
    // The banner is the demo's user interface, so it goes to stdout rather than the log.
    #[allow(clippy::print_stdout)]
    {
        println!("{banner}");
    }
    crate::app::shutdown_signal().await;
    running.shutdown();
    running.wait().await;
    stop.cancel();
    Ok(())
}

/// Runs only the demo app on `listen` until SIGINT/SIGTERM, with `load_users` extra accounts
/// (`load1` .. `loadN`, password [`LOAD_PASSWORD`]) for load tests.
pub async fn run_app(listen: SocketAddr, load_users: u32) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    let addr = DemoApp::with_load_users("/_2fa/settings", load_users)
        .spawn(listen, stop.clone())
        .await?;
    tracing::info!(%addr, "demo app listening");
    crate::app::shutdown_signal().await;
    stop.cancel();
    Ok(())
}
