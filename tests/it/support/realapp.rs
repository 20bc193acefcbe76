//! Real Python app servers as the protected upstream (`realapp_flask.py`): a Flask app on
//! werkzeug's own server with the login styles real apps have, or an ASGI echo app on hypercorn.
//! Each runs as its own process on a free loopback port and is killed on drop. Also the proxy
//! wired to that app's login, and the small clients the bypass tests in `realapps.rs` need.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, header};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use twofa_proxy::app::Running;
use twofa_proxy::clock::ManualClock;
use twofa_proxy::config::Config;

use super::agent::Agent;
use super::site::{Now, oathtool};
use super::{Answer, full, init, missing_tool, send};

/// The Flask app's accounts (kept in a dict in the script).
pub const ALICE: (&str, &str) = ("alice", "wonderland");
pub const MALLORY: (&str, &str) = ("mallory", "mallory");
pub const CAROL: (&str, &str) = ("carol", "singer");

/// How the proxy is wired to the Flask app's login; small limits so lockouts are quick.
pub const REALAPP_TOML: &str = r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
[app]
name = "Flask App"
login_paths = ["/login"]
success_status = [302, 303]
success_cookie = "session"
public_paths = ["/login", "/static/"]
login_page = "/login"
account_settings_url = "/"
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

/// One `realapp_flask.py` process; killed on drop.
pub struct RealApp {
    child: Child,
    pub addr: SocketAddr,
}

impl RealApp {
    /// The Flask app on werkzeug's threaded server.
    pub fn flask() -> Self {
        Self::start(&[])
    }

    /// The ASGI echo app on hypercorn (h2c upgrades on, hypercorn's default).
    pub fn hypercorn() -> Self {
        Self::start(&["--hypercorn"])
    }

    fn start(extra: &[&str]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/it/support/realapp_flask.py"
        );
        let mut child = Command::new("python3")
            .arg(script)
            .args(["--port", &port.to_string()])
            .args(extra)
            // The script exits when stdin closes, so it never outlives the test process.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| missing_tool("python3", "apt-get install python3", e));
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
        if line.trim() != "ready" {
            let _ = child.kill();
            let _ = child.wait();
            missing_tool(
                "flask and hypercorn",
                "python3 -m pip install flask hypercorn",
                format_args!("{script} did not start: {line:?}, its error above"),
            );
        }
        Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    /// The user the app's own session cookie `value` names, asked of the app directly.
    pub async fn user_of(&self, value: &str) -> Option<String> {
        let res = super::get(
            &format!("http://{}/whoami", self.addr),
            &[("Cookie", &format!("session={value}"))],
        )
        .await;
        (res.status == 200)
            .then(|| res.json()["user"].as_str().map(str::to_owned))
            .flatten()
    }

    /// Whether any `Set-Cookie: session=...` in `answer` is an app session of `user`.
    pub async fn hands_out_session_of(&self, answer: &Answer, user: &str) -> bool {
        for value in set_cookie_values(answer, "session") {
            if self.user_of(&value).await.as_deref() == Some(user) {
                return true;
            }
        }
        false
    }
}

impl Drop for RealApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The proxy (in-process, manual clock) in front of a real Python app.
pub struct RealSite {
    pub proxy: Running,
    pub clock: Arc<ManualClock>,
    pub app: RealApp,
}

pub fn realapp_config(upstream: SocketAddr, overrides: &[(&str, &str)]) -> Config {
    let mut env = vec![(
        "TWOFA_UPSTREAM__URL".to_owned(),
        format!("http://{upstream}"),
    )];
    env.extend(
        overrides
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    Config::from_toml(REALAPP_TOML, env).unwrap_or_else(|e| panic!("{e}"))
}

pub async fn real_site(app: RealApp, overrides: &[(&str, &str)]) -> RealSite {
    init();
    let clock = ManualClock::at_now();
    let config = realapp_config(app.addr, overrides);
    let proxy = twofa_proxy::app::start_with_clock(config, clock.clone())
        .await
        .unwrap();
    RealSite { proxy, clock, app }
}

impl RealSite {
    pub fn agent(&self) -> Agent {
        Agent::new(self.proxy.addr)
    }

    /// The user the app sees behind the proxy with this agent's cookies (its `/whoami`), and
    /// the proxy's identity header it received; `None` when the request did not reach the app
    /// signed in.
    pub async fn app_user(&self, agent: &mut Agent) -> Option<(String, String)> {
        let res = agent.get("/whoami").await;
        whoami(&res)
    }
}

/// The app's `/whoami` answer: (the app's user, the proxy's identity header).
pub fn whoami(res: &Answer) -> Option<(String, String)> {
    if res.status != 200 {
        return None;
    }
    let body = res.json();
    Some((
        body["user"].as_str()?.to_owned(),
        body["identity"].as_str().unwrap_or("").to_owned(),
    ))
}

/// Posts the Flask login form.
pub async fn form_login(agent: &mut Agent, user: &str, password: &str) -> Answer {
    agent
        .post_form("/login", &[("username", user), ("password", password)])
        .await
}

/// Signs `agent` in as `user` with a password and enrolls an authenticator through the JSON API;
/// returns the Base32 key. The clock is moved on a step so the next code is fresh.
pub async fn enroll_totp(site: &RealSite, agent: &mut Agent, user: &str, password: &str) -> String {
    let res = form_login(agent, user, password).await;
    assert_eq!(
        res.header("location"),
        Some("/"),
        "{}: {}",
        res.status,
        res.text()
    );
    assert!(agent.cookies.contains_key("twofa-session"));
    let setup = agent.post_json("/_2fa/api/v1/totp/setup", json!({})).await;
    assert_eq!(setup.status, 200, "{}", setup.text());
    let secret = setup.json()["secret"].as_str().unwrap().to_owned();
    let code = oathtool(&secret, site.clock.now_secs());
    let done = agent
        .post_json("/_2fa/api/v1/totp/confirm", json!({ "code": code }))
        .await;
    assert_eq!(done.status, 200, "{}", done.text());
    site.clock.advance(30);
    secret
}

/// A full login of `user` (password, then the TOTP code at the challenge page) on a new agent.
pub async fn totp_login(site: &RealSite, user: &str, password: &str, secret: &str) -> Agent {
    let mut agent = site.agent();
    let res = form_login(&mut agent, user, password).await;
    assert_eq!(
        res.header("location"),
        Some("/_2fa/challenge"),
        "{}: {}",
        res.status,
        res.text()
    );
    let res =
        crate::support::site::answer_totp_challenge(&mut agent, &res, secret, &site.clock).await;
    // The app's own held-back answer (Flask's 302 to /) is replayed.
    assert_eq!(
        res.header("location"),
        Some("/"),
        "{}: {}",
        res.status,
        res.text()
    );
    site.clock.advance(30);
    agent
}

/// Every value a response sets for cookie `name` (expiries left out).
pub fn set_cookie_values(answer: &Answer, name: &str) -> Vec<String> {
    answer
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|text| {
            let pair = text.split(';').next()?;
            let (k, v) = pair.split_once('=')?;
            let lower = text.to_ascii_lowercase();
            let expired = lower.contains("max-age=0") || lower.contains("expires=thu, 01 jan 1970");
            (k.trim() == name && !v.trim().is_empty() && !expired).then(|| v.trim().to_owned())
        })
        .collect()
}

/// Sends a request with the agent's cookies plus `headers`, and takes in the cookies the answer
/// sets, as a browser would.
pub async fn send_as(
    agent: &mut Agent,
    method: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
    form_body: Option<&str>,
) -> Answer {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("{}{path_and_query}", agent.base))
        .header(header::ACCEPT, "text/html,*/*;q=0.8");
    if !agent.cookies.is_empty() {
        let jar: Vec<String> = agent
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        req = req.header(header::COOKIE, jar.join("; "));
    }
    if form_body.is_some() {
        req = req.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let body = Bytes::from(form_body.unwrap_or("").to_owned());
    let answer = send(req.body(full(body)).unwrap()).await;
    for text in answer
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        let pair = text.split(';').next().unwrap_or("");
        let Some((name, value)) = pair.split_once('=') else {
            continue;
        };
        let lower = text.to_ascii_lowercase();
        if value.is_empty() || lower.contains("max-age=0") {
            agent.cookies.remove(name.trim());
        } else {
            agent
                .cookies
                .insert(name.trim().to_owned(), value.trim().to_owned());
        }
    }
    answer
}

/// A GET with hand-written `Cookie` headers (each string one header line), as a client that
/// spells cookies however it likes; the answer's status and body.
pub async fn get_with_cookie_lines(addr: SocketAddr, path: &str, cookie_lines: &[&str]) -> Answer {
    let mut req = Request::get(format!("http://{addr}{path}"));
    for line in cookie_lines {
        req = req.header(header::COOKIE, *line);
    }
    send(req.body(full(Bytes::new())).unwrap()).await
}

/// The head of an HTTP/1.1 answer read from a raw socket: status and header lines, plus the
/// body when it has a `Content-Length` (bounded in time; whatever arrived by then).
pub struct RawAnswer {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

/// Writes `request` on a fresh connection to `addr` and reads one answer.
pub async fn raw_request(addr: SocketAddr, request: &[u8]) -> RawAnswer {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => panic!(
                "no complete answer head: {:?}",
                String::from_utf8_lossy(&buf)
            ),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head:?}"));
    let length = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok());
    let mut body = buf[head_end..].to_vec();
    if status != 101
        && let Some(length) = length
    {
        while body.len() < length {
            match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => body.extend_from_slice(&chunk[..n]),
                _ => break,
            }
        }
    }
    RawAnswer { status, head, body }
}
