//! A protected site for login-flow tests: the demo app, the proxy with the demo's login wiring
//! and a manual clock, on the memory store or a private Redis; plus the independent tools that
//! play the user's phone (zbarimg for the QR code, oathtool for codes).

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use twofa_proxy::app::Running;
use twofa_proxy::clock::ManualClock;
use twofa_proxy::config::Config;

use super::agent::Agent;
use super::redis::RedisServer;
use super::{Answer, TempDir, demo_upstream, init, missing_tool};

/// The demo's login wiring, with small limits so lockouts are quick to reach.
pub const LOGIN_TOML: &str = r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
[app]
name = "DCKAP Integrator"
login_paths = ["/login", "/api/login"]
success_status = [200, 302, 303]
public_paths = ["/login", "/api/login", "/static/"]
account_settings_url = "/account"
[twofactor]
max_attempts_per_challenge = 4
lockout_threshold = 3
lockout_window = "15m"
lockout_duration = "2m"
recovery_codes = 10
[records]
path = ":memory:"

[session]
insecure_http_cookies = true
"#;

/// 32 bytes of test key; real deployments read theirs from a Secret.
pub const TEST_KEY: &str = "dGVzdC1rZXktdGVzdC1rZXktdGVzdC1rZXktMTIzNDU=";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Backend {
    Memory,
    Redis,
}

pub struct Site {
    pub proxy: Running,
    pub clock: Arc<ManualClock>,
    pub upstream: SocketAddr,
    pub redis: Option<RedisServer>,
    _stop: CancellationToken,
}

pub fn login_config(
    upstream: SocketAddr,
    redis: Option<&RedisServer>,
    overrides: &[(&str, &str)],
) -> Config {
    let mut env = vec![(
        "TWOFA_UPSTREAM__URL".to_owned(),
        format!("http://{upstream}"),
    )];
    if let Some(r) = redis {
        env.push(("TWOFA_STORE__BACKEND".into(), "redis".into()));
        env.push(("TWOFA_STORE__URL".into(), r.url()));
        env.push(("TWOFA_SECRETS__ENCRYPTION_KEY".into(), TEST_KEY.into()));
    }
    env.extend(
        overrides
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    Config::from_toml(LOGIN_TOML, env).unwrap_or_else(|e| panic!("{e}"))
}

pub async fn site(backend: Backend, overrides: &[(&str, &str)]) -> Site {
    init();
    let (upstream, stop) = demo_upstream().await;
    let redis = (backend == Backend::Redis).then(RedisServer::start);
    let clock = ManualClock::at_now();
    let config = login_config(upstream, redis.as_ref(), overrides);
    let proxy = twofa_proxy::app::start_with_clock(config, clock.clone())
        .await
        .unwrap();
    Site {
        proxy,
        clock,
        upstream,
        redis,
        _stop: stop,
    }
}

pub async fn password_login(agent: &mut Agent, user: &str, password: &str) -> Answer {
    agent
        .post_form(
            "/login",
            &[("username", user), ("password", password), ("next", "/")],
        )
        .await
}

/// [`password_login`], tried again every 100 ms while the proxy answers 503 (a store or the
/// records coming back), at most `tries` times; the last answer.
pub async fn password_login_once_served(
    agent: &mut Agent,
    user: &str,
    password: &str,
    tries: u32,
) -> Answer {
    let mut res = password_login(agent, user, password).await;
    for _ in 1..tries {
        if res.status != 503 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        res = password_login(agent, user, password).await;
    }
    res
}

/// The otpauth URI inside the page's QR code, read the way a phone would: rasterised and
/// decoded by zbar.
pub fn decode_qr(html: &str) -> String {
    let start = html.find("<svg").expect("no QR code on the page");
    let end = html[start..].find("</svg>").unwrap() + start + "</svg>".len();
    let dir = TempDir::new("qr");
    std::fs::write(dir.path("qr.svg"), &html[start..end]).unwrap();
    let png = dir.path("qr.png");
    let ok = Command::new("rsvg-convert")
        .args(["-w", "400", "-o"])
        .arg(&png)
        .arg(dir.path("qr.svg"))
        .status()
        .unwrap_or_else(|e| missing_tool("rsvg-convert", "apt-get install librsvg2-bin", e));
    assert!(ok.success());
    let out = Command::new("zbarimg")
        .args(["--raw", "-q"])
        .arg(&png)
        .output()
        .unwrap_or_else(|e| missing_tool("zbarimg", "apt-get install zbar-tools", e));
    assert!(out.status.success(), "zbarimg could not read the QR code");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

pub fn query_param(uri: &str, name: &str) -> String {
    let query = uri.split_once('?').unwrap().1;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .unwrap()
        .1
        .into_owned()
}

/// The code an authenticator app shows at `time`, from an independent implementation.
pub fn oathtool(secret_b32: &str, time: u64) -> String {
    let out = Command::new("oathtool")
        .args(["--totp", "-b", secret_b32, "-N", &format!("@{time}")])
        .output()
        .unwrap_or_else(|e| missing_tool("oathtool", "apt-get install oathtool", e));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

pub trait Now {
    fn now_secs(&self) -> u64;
}

impl Now for ManualClock {
    fn now_secs(&self) -> u64 {
        use twofa_proxy::clock::Clock;
        self.now()
    }
}

/// Enrolls the agent's signed-in user in an authenticator app over the JSON API (the key from
/// `totp/setup`, the first code from oathtool at the clock's time); returns the Base32 key.
pub async fn enroll_totp_over_api(agent: &mut Agent, clock: &ManualClock) -> String {
    let setup = agent
        .post_json("/_2fa/api/v1/totp/setup", serde_json::json!({}))
        .await;
    let secret = setup.json()["secret"].as_str().unwrap().to_owned();
    let code = oathtool(&secret, clock.now_secs());
    let done = agent
        .post_json(
            "/_2fa/api/v1/totp/confirm",
            serde_json::json!({ "code": code }),
        )
        .await;
    assert_eq!(done.status, 200, "{}", done.text());
    secret
}

/// Follows a redirect to the challenge page and answers it with the authenticator app's code
/// at the clock's time (oathtool); the proxy's answer to the code.
pub async fn answer_totp_challenge(
    agent: &mut Agent,
    challenge: &Answer,
    secret: &str,
    clock: &ManualClock,
) -> Answer {
    let page = agent.follow(challenge).await;
    let csrf = super::agent::input_value(&page.text(), "csrf");
    let code = oathtool(secret, clock.now_secs());
    agent
        .post_form("/_2fa/challenge", &[("csrf", &csrf), ("code", &code)])
        .await
}
