//! `twofa-proxy admin reset USER` against a running proxy (the real binary), and the admin
//! API's token check.

use std::process::Command;

use http::StatusCode;
use serde_json::json;

use crate::support::agent::Agent;
use crate::support::site::{LOGIN_TOML, oathtool};
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_reset_removes_2fa_and_ends_sessions() {
    let (up, _stop) = demo_upstream().await;
    // The command finds the admin listener through the config, so it needs a fixed port.
    let admin = closed_port().await;
    let toml = format!(
        "{}\n[upstream]\nurl = \"http://{up}\"\n[secrets]\nadmin_token = \"test-admin-token-with-32-or-more-chars\"\n",
        LOGIN_TOML.replace(
            "admin_listen = \"127.0.0.1:0\"",
            &format!("admin_listen = \"{admin}\"")
        )
    );
    let proxy = ProxyProcess::start(&toml);

    let mut alice = Agent::new(proxy.addr);
    alice.json_login("alice", "wonderland").await;
    let secret = alice
        .post_json("/_2fa/api/v1/totp/setup", json!({}))
        .await
        .json()["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let res = alice
        .post_json(
            "/_2fa/api/v1/totp/confirm",
            json!({"code": oathtool(&secret, now)}),
        )
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    assert_eq!(
        alice.get("/_2fa/api/v1/status").await.json()["enabled"],
        true
    );

    // A wrong token is refused and changes nothing.
    let denied = send(
        http::Request::post(format!(
            "http://{}/admin/v1/users/alice/reset-2fa",
            proxy.admin_addr
        ))
        .header("authorization", "Bearer wrong")
        .body(full(""))
        .unwrap(),
    )
    .await;
    assert_eq!(denied.status, StatusCode::UNAUTHORIZED);

    let out = Command::new(env!("CARGO_BIN_EXE_twofa-proxy"))
        .args(["admin", "reset", "ALICE", "--config"])
        .arg(proxy.config_path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        answer,
        json!({"user": "alice", "had_2fa": true, "sessions_ended": 1})
    );

    // Her session ended, and the password alone works again.
    assert_eq!(alice.get("/").await.status, StatusCode::SEE_OTHER);
    let mut again = Agent::new(proxy.addr);
    let res = again
        .post_form(
            "/login",
            &[
                ("username", "alice"),
                ("password", "wonderland"),
                ("next", "/"),
            ],
        )
        .await;
    assert_eq!(res.header("location"), Some("/"));
}
