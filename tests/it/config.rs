//! The shipped example config, env overrides, and `check-config` as operators run it.

use std::process::Command;

use twofa_proxy::config::Config;

use crate::support::TempDir;

const EXAMPLE: &str = include_str!("../../config/example.toml");

#[test]
fn example_config_parses_and_documents_every_key() {
    let config =
        Config::from_toml(EXAMPLE, Vec::new()).unwrap_or_else(|e| panic!("example.toml:\n{e}"));
    assert_eq!(config.app.name, "DCKAP Integrator");
    let missing: Vec<String> = Config::known_keys()
        .into_iter()
        .filter(|key| {
            let (_, name) = key.rsplit_once('.').unwrap();
            let section = key.rsplit_once('.').unwrap().0;
            // The key must appear (set or commented out) under its own section header.
            let Some(start) = EXAMPLE.find(&format!("[{section}]\n")) else {
                return true;
            };
            let body = &EXAMPLE[start..];
            let end = body[1..].find("\n[").map_or(body.len(), |i| i + 1);
            !body[..end].lines().any(|l| {
                let l = l.trim_start_matches(['#', ' ']);
                l.starts_with(&format!("{name} =")) || l.starts_with(&format!("{name}="))
            })
        })
        .collect();
    assert!(
        missing.is_empty(),
        "undocumented in config/example.toml: {missing:?}"
    );
}

fn check_config(toml: &str) -> (i32, String) {
    let dir = TempDir::new("check");
    let path = dir.path("c.toml");
    std::fs::write(&path, toml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_twofa-proxy"))
        .args(["check-config", "--config"])
        .arg(&path)
        .env_remove("TWOFA_CONFIG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_accepts_the_example() {
    let (code, stderr) = check_config(EXAMPLE);
    assert_eq!(code, 0, "{stderr}");
}

/// A configuration that cannot tell a failed login from a successful one loads, but says so.
#[test]
fn check_config_warns_when_success_cannot_be_told_from_failure() {
    let (code, stderr) = check_config("[app]\nsuccess_status = [200, 302]\n");
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("warning: app.success_status: 200 is not a redirect"),
        "{stderr}"
    );
    let (code, stderr) = check_config("[app]\nsuccess_status = [200]\nuser_header = \"X-User\"\n");
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
    let (_, stderr) = check_config(EXAMPLE);
    assert!(!stderr.contains("warning"), "the example is safe: {stderr}");
}

#[test]
fn check_config_lists_every_problem_and_exits_2() {
    let (code, stderr) = check_config(
        r#"
        [server]
        listen = "everywhere"
        shutdown_grace = "a while"
        [upstream]
        url = "gopher://old"
        [twofactor]
        methods = ["totp", "sms"]
        [sesion]
        idle_timeout = "5m"
        "#,
    );
    assert_eq!(code, 2, "{stderr}");
    for key in [
        "server.listen",
        "server.shutdown_grace",
        "upstream.url",
        "twofactor.methods",
        "sesion",
    ] {
        assert!(stderr.contains(key), "{key} not reported:\n{stderr}");
    }
    assert!(stderr.contains("5 problem(s)"), "{stderr}");
}

#[test]
fn check_config_loads_the_files_it_names() {
    let (code, stderr) = check_config(
        "[server]\ntls_cert = \"/nonexistent/c.pem\"\ntls_key = \"/nonexistent/k.pem\"\n",
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("server.tls_cert"), "{stderr}");
}

#[test]
fn invalid_toml_is_one_clear_problem() {
    let (code, stderr) = check_config("[server\nlisten = 1");
    assert_eq!(code, 2);
    assert!(stderr.contains("not valid TOML"), "{stderr}");
}

#[test]
fn the_log_mail_transport_is_for_the_demo_only() {
    let (code, stderr) = check_config("[email]\ntransport = \"log\"\n");
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("email.transport") && stderr.contains("demo"),
        "{stderr}"
    );
}
