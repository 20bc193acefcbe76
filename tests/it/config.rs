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

/// `check-config` with extra environment variables and arguments: exit code and stderr.
fn check_config_with(toml: &str, env: &[(&str, &str)], args: &[&str]) -> (i32, String) {
    let dir = TempDir::new("check");
    let path = dir.path("c.toml");
    std::fs::write(&path, toml).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_twofa-proxy"));
    command
        .args(args)
        .args(["check-config", "--config"])
        .arg(&path)
        .env_remove("TWOFA_CONFIG")
        .env_remove("TWOFA_LOG_FORMAT");
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// One `check-config` case: config, environment, arguments, exit code, a line of stderr.
type Case<'a> = (
    &'a str,
    &'a [(&'a str, &'a str)],
    &'a [&'a str],
    i32,
    &'a str,
);

/// What takes a site down or turns the second factor off is refused (exit 2); risky choices
/// load with a warning (exit 0). Each case: the config, its environment, the exit code, and a
/// line the operator must read.
#[test]
fn check_config_catches_what_takes_a_site_down_or_turns_2fa_off() {
    let remote_smtp = "[email.smtp]\nhost = \"smtp.example.com\"\ntls = \"none\"\n";
    let cases: &[Case] = &[
        (
            "[app]\nlogin_page = \"/signin\"\n",
            &[],
            &[],
            2,
            "app.login_page: \"/signin\" is neither in app.public_paths nor in app.login_paths",
        ),
        (
            "[app]\nlogin_page = \"/signin?from=proxy\"\npublic_paths = [\"/signin\"]\n",
            &[],
            &[],
            0,
            "ok",
        ),
        (
            "[twofactor]\nprefix = \"/static\"\n",
            &[],
            &[],
            2,
            "twofactor.prefix: \"/static\" shadows app.public_paths \"/static/\"",
        ),
        (
            "[twofactor]\nprefix = \"/login\"\n",
            &[],
            &[],
            2,
            "twofactor.prefix: \"/login\" shadows app.login_page \"/login\"",
        ),
        (
            "[app]\npublic_paths = [\"/login\", \"/\"]\n",
            &[],
            &[],
            2,
            "app.public_paths: \"/\" makes every path public",
        ),
        (
            "[session]\ninsecure_http_cookies = true\n",
            &[],
            &[],
            2,
            "session.insecure_http_cookies: cookies without Secure on 0.0.0.0:8080",
        ),
        (
            "[server]\nlisten = \"127.0.0.1:8080\"\n[session]\ninsecure_http_cookies = true\n",
            &[],
            &[],
            0,
            "warning: session.insecure_http_cookies: cookies are sent without Secure",
        ),
        (
            &format!("{remote_smtp}password = \"relay-password\"\n"),
            &[],
            &[],
            2,
            "email.smtp.tls: \"none\" to smtp.example.com with a password",
        ),
        (
            remote_smtp,
            &[],
            &[],
            0,
            "warning: email.smtp.tls: \"none\" to smtp.example.com: codes cross the network",
        ),
        (
            "[email.smtp]\ntls = \"none\"\npassword = \"local\"\n",
            &[],
            &[],
            0,
            "ok",
        ),
        (
            "[server]\nadmin_listen = \"0.0.0.0:9090\"\n",
            &[],
            &[],
            0,
            "warning: server.admin_listen: 0.0.0.0:9090 is reachable from other hosts",
        ),
        (
            "",
            &[("TWOFA_SERVER_LISTEN", "0.0.0.0:8081")],
            &[],
            2,
            "TWOFA_SERVER_LISTEN: not an override (one underscore): did you mean TWOFA_SERVER__LISTEN?",
        ),
        (
            "",
            &[("TWOFA_TWOFACTOR_ENFORCEMENT", "required")],
            &[],
            2,
            "did you mean TWOFA_TWOFACTOR__ENFORCEMENT?",
        ),
        (
            "",
            &[("TWOFA_SERVER__LISTN", "0.0.0.0:8081")],
            &[],
            2,
            "server.listn (from TWOFA_SERVER__LISTN): unknown key",
        ),
        (
            "",
            &[("TWOFA_SERVICE_HOST", "10.0.0.7")],
            &[],
            0,
            "warning: TWOFA_SERVICE_HOST: starts with TWOFA_ but is not an override",
        ),
        (
            "",
            &[],
            &["--log-format", "yaml"],
            2,
            "invalid value 'yaml'",
        ),
        (
            "",
            &[("TWOFA_LOG_FORMAT", "xml")],
            &[],
            2,
            "invalid value 'xml'",
        ),
        ("", &[("TWOFA_LOG_FORMAT", "text")], &[], 0, "ok"),
    ];
    let mut failed = Vec::new();
    for (toml, env, args, code, line) in cases {
        let (got, stderr) = check_config_with(toml, env, args);
        let warned = stderr.contains("warning:");
        let expect_warning = line.starts_with("warning:");
        if got != *code || !stderr.contains(line) || warned != expect_warning {
            failed.push(format!(
                "{toml:?} {env:?} {args:?}: exit {got} (want {code}), want {line:?}:\n{stderr}"
            ));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
fn version_names_the_commit_and_the_build_date() {
    let out = Command::new(env!("CARGO_BIN_EXE_twofa-proxy"))
        .arg("--version")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    let expected = format!(
        "twofa-proxy {} (commit {}, built {})\n",
        env!("CARGO_PKG_VERSION"),
        option_env!("TWOFA_BUILD_COMMIT").unwrap_or("unknown"),
        option_env!("TWOFA_BUILD_DATE").unwrap_or("unknown"),
    );
    assert_eq!(text, expected);
}
