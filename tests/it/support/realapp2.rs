//! Two more real app servers as the protected upstream, for the bypass classes where they read
//! requests differently from Flask: a Django app on Django's own WSGI server
//! (`realapp_django.py`), and JSPs on Tomcat 10.1 (Debian's `tomcat10-common`) with a
//! CATALINA_BASE of its own (`tomcat/`). Each runs as its own process on a free loopback port and
//! is killed on drop. Also the proxy wired to each app's login, and small helpers for the tests
//! in `realapps2_django.rs` and `realapps2_tomcat.rs`.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use serde_json::json;
use twofa_proxy::app::Running;
use twofa_proxy::clock::ManualClock;
use twofa_proxy::config::Config;

use super::agent::{Agent, input_value};
use super::realapp::{set_cookie_values, whoami};
use super::site::{Now, oathtool};
use super::{Answer, TempDir, init, missing_tool};

/// The accounts both apps know.
pub const ALICE: (&str, &str) = ("alice", "wonderland");
pub const MALLORY: (&str, &str) = ("mallory", "mallory");

/// Where Debian's tomcat10-common puts Tomcat (CATALINA_HOME).
pub const CATALINA_HOME: &str = "/usr/share/tomcat10";

/// Which real server is upstream, and how the proxy is wired to its login.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Django,
    Tomcat,
}

impl Kind {
    /// The app's session cookie (`app.success_cookie`).
    pub fn cookie(self) -> &'static str {
        match self {
            Kind::Django => "sessionid",
            Kind::Tomcat => "JSESSIONID",
        }
    }

    pub fn login_path(self) -> &'static str {
        match self {
            Kind::Django => "/accounts/login/",
            Kind::Tomcat => "/app/login",
        }
    }

    /// JSON `{"user", "identity", ...}`; 401 without a signed-in user.
    pub fn whoami_path(self) -> &'static str {
        match self {
            Kind::Django => "/whoami",
            Kind::Tomcat => "/app/whoami",
        }
    }

    fn toml(self) -> String {
        let (name, cookie, login, public) = match self {
            Kind::Django => (
                "Django App",
                "sessionid",
                "/accounts/login/",
                r#"["/accounts/login/", "/static/"]"#,
            ),
            Kind::Tomcat => (
                "Tomcat App",
                "JSESSIONID",
                "/app/login",
                r#"["/app/login"]"#,
            ),
        };
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
[app]
name = "{name}"
login_paths = ["{login}"]
success_status = [302, 303]
success_cookie = "{cookie}"
public_paths = {public}
login_page = "{login}"
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
"#
        )
    }
}

/// One app server process; killed on drop.
pub struct AppServer {
    pub kind: Kind,
    pub addr: SocketAddr,
    child: Child,
    /// Tomcat runs under `sh`, which kills the JVM when this closes (the test process went
    /// away without dropping us); the JVM's own pid, to kill it at once on drop.
    stdin: Option<ChildStdin>,
    jvm_pid: Option<u32>,
    /// Tomcat's CATALINA_BASE.
    _base: Option<TempDir>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The first line `child` prints, within `wait`.
fn first_line(child: &mut Child, wait: Duration) -> String {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    rx.recv_timeout(wait).unwrap_or_default()
}

impl AppServer {
    /// `realapp_django.py` on Django's threaded WSGI server.
    pub fn django() -> Self {
        let port = free_port();
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/it/support/realapp_django.py"
        );
        let mut child = Command::new("python3")
            .arg(script)
            .args(["--port", &port.to_string()])
            // The script exits when stdin closes, so it never outlives the test process.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| missing_tool("python3", "apt-get install python3", e));
        let line = first_line(&mut child, Duration::from_secs(20));
        if line.trim() != "ready" {
            let _ = child.kill();
            let _ = child.wait();
            missing_tool(
                "django",
                "python3 -m pip install django",
                format_args!("{script} did not start: {line:?}, its error above"),
            );
        }
        Self {
            kind: Kind::Django,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
            stdin: None,
            jvm_pid: None,
            _base: None,
        }
    }

    /// Tomcat with `tomcat/webapp` at `/app`, in a fresh CATALINA_BASE; returns once the JSPs
    /// answer (Jasper compiles each at its first request, so they are all asked once here).
    pub fn tomcat() -> Self {
        let bootstrap = format!("{CATALINA_HOME}/bin/bootstrap.jar");
        if !Path::new(&bootstrap).exists() {
            missing_tool(
                "Tomcat 10",
                "apt-get install tomcat10-common",
                format_args!("no {bootstrap}"),
            );
        }
        if let Err(e) = Command::new("java").arg("-version").output() {
            missing_tool("java", "apt-get install default-jre-headless", e);
        }
        let port = free_port();
        let base = TempDir::new("tomcat");
        let support = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/support/tomcat");
        for dir in ["conf", "logs", "temp", "work", "webapps"] {
            std::fs::create_dir_all(base.path(dir)).unwrap();
        }
        let server_xml = std::fs::read_to_string(format!("{support}/conf/server.xml"))
            .unwrap()
            .replace("@PORT@", &port.to_string())
            .replace("@WEBAPP@", &format!("{support}/webapp"));
        std::fs::write(base.path("conf/server.xml"), server_xml).unwrap();
        std::fs::copy(format!("{support}/conf/web.xml"), base.path("conf/web.xml")).unwrap();
        let log = base.path("logs/catalina.out");
        let mut child = Command::new("sh")
            .arg("-c")
            // The JVM in the background, its pid on stdout; when stdin closes, it is killed.
            .arg(r#"java "$@" </dev/null >"$TOMCAT_LOG" 2>&1 & echo "$!"; cat >/dev/null; kill -9 "$!" 2>/dev/null; wait"#)
            .arg("sh")
            .args([
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
                "-Xmx256m",
                "-Djava.security.egd=file:/dev/./urandom",
                // No jar holds TLDs here: skip scanning them at start.
                "-Dtomcat.util.scan.StandardJarScanFilter.jarsToSkip=*.jar",
            ])
            .arg(format!("-Dcatalina.home={CATALINA_HOME}"))
            .arg(format!("-Dcatalina.base={}", base.0.display()))
            .arg(format!("-Djava.io.tmpdir={}", base.path("temp").display()))
            .arg("-cp")
            .arg(format!(
                "{CATALINA_HOME}/bin/bootstrap.jar:{CATALINA_HOME}/bin/tomcat-juli.jar"
            ))
            .args(["org.apache.catalina.startup.Bootstrap", "start"])
            .env("TOMCAT_LOG", &log)
            .current_dir(&base.0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start sh for Tomcat: {e}"));
        let stdin = child.stdin.take();
        let jvm_pid = first_line(&mut child, Duration::from_secs(5))
            .trim()
            .parse()
            .ok();
        let mut server = Self {
            kind: Kind::Tomcat,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
            stdin,
            jvm_pid,
            _base: Some(base),
        };
        let started = Instant::now();
        let deadline = started + Duration::from_secs(30);
        // A 200 from the login JSP means Tomcat is up and Jasper compiles; then the others.
        for (path, status) in [
            ("/app/login", 200),
            ("/app/whoami", 401),
            ("/app/account", 302),
        ] {
            if let Err(last) = server.wait_for(path, status, deadline) {
                let mut out = String::new();
                let _ = std::fs::File::open(&log).and_then(|mut f| f.read_to_string(&mut out));
                server.stop();
                panic!(
                    "Tomcat did not answer {path} with {status} within 30 s ({last}); \
                     its log:\n{out}"
                );
            }
        }
        eprintln!("Tomcat ready in {:?}", started.elapsed());
        server
    }

    /// Asks `path` (plain blocking HTTP/1.1) until it answers `status` or `deadline` passes.
    fn wait_for(&mut self, path: &str, status: u16, deadline: Instant) -> Result<(), String> {
        use std::io::Write;
        let mut last = String::from("no answer");
        while Instant::now() < deadline {
            if let Ok(Some(exit)) = self.child.try_wait() {
                return Err(format!("the process ended: {exit}"));
            }
            if let Ok(mut stream) = std::net::TcpStream::connect(self.addr) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
                let request =
                    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
                if stream.write_all(request.as_bytes()).is_ok() {
                    let mut answer = String::new();
                    let _ = BufReader::new(stream).read_line(&mut answer);
                    if answer.split(' ').nth(1) == Some(&status.to_string()) {
                        return Ok(());
                    }
                    last = answer.trim().to_owned();
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(last)
    }

    fn stop(&mut self) {
        if let Some(pid) = self.jvm_pid.take() {
            let _ = Command::new("kill")
                .args(["-9", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Tomcat's access log from byte `from` on (`%r %s [Content-Type] [Cookie]` a line): every
    /// request Tomcat received. A request straight at Tomcat marks the end, and the log is read
    /// once that mark is in it, so every request answered before is in too.
    pub async fn access_log_since(&self, from: usize) -> String {
        let base = self
            ._base
            .as_ref()
            .expect("only Tomcat keeps an access log");
        let mark = format!("/app/login?mark={from}-{}", super::rand_u64());
        let res = super::get(&format!("{}{mark}", self.base()), &[]).await;
        assert_eq!(res.status, 200);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = std::fs::read_to_string(base.path("logs/access.log")).unwrap_or_default();
            if log.contains(&mark) {
                return log.get(from..).unwrap_or("").to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no {mark} in Tomcat's access log"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The user the app's own session cookie `value` names, asked of the app directly.
    pub async fn user_of(&self, value: &str) -> Option<String> {
        let res = super::get(
            &format!("{}{}", self.base(), self.kind.whoami_path()),
            &[("Cookie", &format!("{}={value}", self.kind.cookie()))],
        )
        .await;
        whoami(&res).map(|(user, _)| user)
    }

    /// Whether any `Set-Cookie` of the app's session cookie in `answer` is a session of `user`.
    pub async fn hands_out_session_of(&self, answer: &Answer, user: &str) -> bool {
        for value in set_cookie_values(answer, self.kind.cookie()) {
            if self.user_of(&value).await.as_deref() == Some(user) {
                return true;
            }
        }
        false
    }

    /// A login straight at the app (no proxy): the app's session cookie for `user`.
    pub async fn session_of(&self, user: &str, password: &str) -> String {
        let mut agent = Agent::new(self.addr);
        let res = app_login(self.kind, &mut agent, user, password, "").await;
        assert_eq!(res.status, 302, "direct login of {user}: {}", res.text());
        agent.cookies[self.kind.cookie()].clone()
    }
}

impl Drop for AppServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The app's login form posted on `agent` (through the proxy or straight at the app), with
/// `query` after the login path. Django's form needs its CSRF token first: the login page is
/// fetched for it (a public path behind the proxy).
pub async fn app_login(
    kind: Kind,
    agent: &mut Agent,
    user: &str,
    password: &str,
    query: &str,
) -> Answer {
    app_login_with(
        kind,
        agent,
        &[("username", user), ("password", password)],
        query,
    )
    .await
}

/// The app's login form with any `fields` (Django's CSRF token added).
pub async fn app_login_with(
    kind: Kind,
    agent: &mut Agent,
    fields: &[(&str, &str)],
    query: &str,
) -> Answer {
    let path = format!("{}{query}", kind.login_path());
    match kind {
        Kind::Django => {
            let page = agent.get(kind.login_path()).await;
            assert_eq!(page.status, 200, "the Django login page: {}", page.text());
            let csrf = input_value(&page.text(), "csrfmiddlewaretoken");
            let mut all = vec![("csrfmiddlewaretoken", csrf.as_str())];
            all.extend_from_slice(fields);
            agent.post_form(&path, &all).await
        }
        Kind::Tomcat => agent.post_form(&path, fields).await,
    }
}

/// Whether `res` is the app's own answer to a right password: a redirect away from the login.
pub fn app_success(kind: Kind, res: &Answer) -> bool {
    let location = res.header("location").unwrap_or("");
    res.status == 302
        && match kind {
            Kind::Django => location == "/",
            // encodeRedirectURL: the session id rides in the URL until a cookie comes back.
            Kind::Tomcat => location.starts_with("/app/account"),
        }
}

/// The proxy (in-process, manual clock) in front of a real app server.
pub struct Site {
    pub proxy: Running,
    pub clock: Arc<ManualClock>,
    pub app: AppServer,
}

pub fn site_config(kind: Kind, upstream: SocketAddr, overrides: &[(&str, &str)]) -> Config {
    let mut env = vec![(
        "TWOFA_UPSTREAM__URL".to_owned(),
        format!("http://{upstream}"),
    )];
    env.extend(
        overrides
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    Config::from_toml(&kind.toml(), env).unwrap_or_else(|e| panic!("{e}"))
}

pub async fn site(app: AppServer, overrides: &[(&str, &str)]) -> Site {
    init();
    let clock = ManualClock::at_now();
    let config = site_config(app.kind, app.addr, overrides);
    let proxy = twofa_proxy::app::start_with_clock(config, clock.clone())
        .await
        .unwrap();
    Site { proxy, clock, app }
}

impl Site {
    pub fn kind(&self) -> Kind {
        self.app.kind
    }

    pub fn agent(&self) -> Agent {
        Agent::new(self.proxy.addr)
    }

    /// The user the app sees behind the proxy with this agent's cookies, and the proxy's
    /// identity header it received; `None` when the request did not reach the app signed in.
    pub async fn app_user(&self, agent: &mut Agent) -> Option<(String, String)> {
        let res = agent.get(self.kind().whoami_path()).await;
        whoami(&res)
    }

    /// The app's login through the proxy.
    pub async fn login(&self, agent: &mut Agent, user: &str, password: &str) -> Answer {
        app_login(self.kind(), agent, user, password, "").await
    }

    /// Signs a new agent in as `user` (no 2FA yet) and enrolls an authenticator through the
    /// JSON API; returns the Base32 key. The clock moves on a step so the next code is fresh.
    pub async fn enroll_totp(&self, user: &str, password: &str) -> String {
        let mut agent = self.agent();
        let res = self.login(&mut agent, user, password).await;
        assert!(
            app_success(self.kind(), &res),
            "{user}'s password login: {} to {:?}: {}",
            res.status,
            res.header("location"),
            res.text()
        );
        assert!(agent.cookies.contains_key("twofa-session"));
        let setup = agent.post_json("/_2fa/api/v1/totp/setup", json!({})).await;
        assert_eq!(setup.status, 200, "{}", setup.text());
        let secret = setup.json()["secret"].as_str().unwrap().to_owned();
        let code = oathtool(&secret, self.clock.now_secs());
        let done = agent
            .post_json("/_2fa/api/v1/totp/confirm", json!({ "code": code }))
            .await;
        assert_eq!(done.status, 200, "{}", done.text());
        self.clock.advance(30);
        secret
    }

    /// A full login of `user` (password, then the TOTP code at the challenge page) on a new
    /// agent; the app's held-back answer is replayed.
    pub async fn totp_login(&self, user: &str, password: &str, secret: &str) -> Agent {
        let mut agent = self.agent();
        let res = self.login(&mut agent, user, password).await;
        assert_eq!(
            res.header("location"),
            Some("/_2fa/challenge"),
            "{}: {}",
            res.status,
            res.text()
        );
        let res =
            crate::support::site::answer_totp_challenge(&mut agent, &res, secret, &self.clock)
                .await;
        assert!(
            app_success(self.kind(), &res),
            "the replayed answer after {user}'s code: {} to {:?}: {}",
            res.status,
            res.header("location"),
            res.text()
        );
        self.clock.advance(30);
        agent
    }

    /// mallory signed in through the proxy (no 2FA: a proxy session after her password).
    pub async fn mallory(&self) -> Agent {
        let mut mallory = self.agent();
        let res = self.login(&mut mallory, MALLORY.0, MALLORY.1).await;
        assert!(app_success(self.kind(), &res), "{}", res.status);
        assert_eq!(
            self.app_user(&mut mallory).await,
            Some(("mallory".into(), "mallory".into()))
        );
        mallory
    }
}

/// A login as `typed` (with alice's password) must not reach alice's account without her code:
/// challenged as alice, or refused with no app session of alice handed out and nothing of hers
/// reachable afterwards. `Ok(true)` when challenged, `Ok(false)` when refused.
pub async fn alice_only_through_her_challenge(
    site: &Site,
    typed: &str,
) -> Result<(bool, u16), String> {
    let mut agent = site.agent();
    let res = site.login(&mut agent, typed, ALICE.1).await;
    let status = res.status.as_u16();
    if res.header("location") == Some("/_2fa/challenge") {
        let page = agent.follow(&res).await;
        return if page.text().contains("(alice)") {
            Ok((true, status))
        } else {
            Err(format!("{typed:?}: challenged, but not as alice"))
        };
    }
    let handed_out = site.app.hands_out_session_of(&res, "alice").await;
    let location = res.header("location").map(str::to_owned);
    let behind = site.app_user(&mut agent).await;
    if handed_out || !res.status.is_client_error() || behind.is_some() {
        return Err(format!(
            "{typed:?}: {status} to {location:?}, alice's app session handed out: {handed_out}, \
             then the app saw (user, X-Twofa-User) = {behind:?}"
        ));
    }
    Ok((false, status))
}

/// Who answered a request to the app's `/whoami` through the proxy, in a few words: the app
/// with the user it saw, the app without one, or the proxy's own refusal.
pub fn outcome(res: &Answer) -> String {
    let status = res.status.as_u16();
    if let Some((user, identity)) = whoami(res) {
        return format!("{status} from the app as {user} (X-Twofa-User: {identity})");
    }
    match serde_json::from_slice::<serde_json::Value>(&res.body) {
        Ok(body) if body.get("error").is_some() => format!("{status} from the proxy: {body}"),
        Ok(body) if body.get("user").is_some() => format!("{status} from the app, signed out"),
        _ => format!("{status}"),
    }
}

/// Counts of `outcome`s, for the test log.
#[derive(Default)]
pub struct Outcomes(std::collections::BTreeMap<String, usize>);

impl Outcomes {
    pub fn add(&mut self, res: &Answer) {
        *self.0.entry(outcome(res)).or_default() += 1;
    }
}

impl std::fmt::Debug for Outcomes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.0.iter()).finish()
    }
}
