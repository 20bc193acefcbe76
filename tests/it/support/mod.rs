//! Test harness: the demo app and scripted upstreams on 127.0.0.1:0, the proxy in-process or as
//! the real binary, and small HTTP clients (pooled, raw TCP).

// A harness: not every run uses every helper (tier 1 leaves some of the tier-2 ones unused).
#![allow(dead_code)]

pub mod agent;
pub mod lenient_app;
pub mod postgres;
pub mod realapp;
pub mod redis;
pub mod redis_ha;
pub mod site;
pub mod smtp;
pub mod under_load;

// Only the tier-2 files use these (tests/it/main.rs).
#[cfg(feature = "external-tools")]
pub mod browser;
#[cfg(feature = "external-tools")]
pub mod kept_app;
#[cfg(feature = "external-tools")]
pub mod realapp2;

use std::convert::Infallible;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use twofa_proxy::app::Running;
use twofa_proxy::config::Config;
use twofa_proxy::demo::DemoApp;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type TestBody = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// The base config every test proxy starts from; tests change it with env-style overrides.
pub const BASE_TOML: &str = r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
shutdown_grace = "5s"
[app]
name = "Test App"
# Forwarding tests exercise the proxy path without signing in: everything is public here.
# Tests of the gate and the login flow start from LOGIN_TOML instead.
public_paths = ["/"]
[records]
path = ":memory:"

[session]
insecure_http_cookies = true
"#;

/// Fails the test that needs the outside program `tool`, naming the command that installs it:
/// a tier-2 test (`--features external-tools`) never skips because a tool is missing.
#[track_caller]
pub fn missing_tool(tool: &str, install: &str, problem: impl std::fmt::Display) -> ! {
    panic!(
        "this test needs {tool} ({problem}): install it with `{install}`, or run scripts/test \
         as root, which installs every tool of `--features external-tools`"
    )
}

pub fn init() {
    twofa_proxy::app::install_crypto_provider();
}

/// A fresh temporary folder, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let n: u64 = rand_u64();
        let path =
            std::env::temp_dir().join(format!("twofa-test-{tag}-{}-{n:x}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id() as u64);
    h.finish()
}

/// Starts the demo app on a free loopback port; it stops when the returned token is cancelled.
pub async fn demo_upstream() -> (SocketAddr, CancellationToken) {
    let stop = CancellationToken::new();
    let addr = DemoApp::new("/_2fa/settings")
        .spawn("127.0.0.1:0".parse().unwrap(), stop.clone())
        .await
        .unwrap();
    (addr, stop)
}

/// A config pointed at `upstream`, with overrides given as `TWOFA_...` pairs.
pub fn config(upstream: &str, overrides: &[(&str, &str)]) -> Config {
    let mut env = vec![("TWOFA_UPSTREAM__URL".to_owned(), upstream.to_owned())];
    env.extend(
        overrides
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    Config::from_toml(BASE_TOML, env).unwrap_or_else(|e| panic!("test config: {e}"))
}

/// The proxy in this process, in front of `upstream`.
pub async fn proxy(upstream: SocketAddr, overrides: &[(&str, &str)]) -> Running {
    init();
    twofa_proxy::app::start(config(&format!("http://{upstream}"), overrides))
        .await
        .unwrap()
}

/// An upstream whose every answer comes from `handler`.
pub async fn scripted_upstream<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<TestBody>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

pub fn full(bytes: impl Into<Bytes>) -> TestBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

pub fn http_client() -> Client<HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// A client speaking HTTP/2 without TLS (prior knowledge).
pub fn h2c_client() -> Client<HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(HttpConnector::new())
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// GET `url` with extra headers; the whole answer collected.
pub async fn get(url: &str, headers: &[(&str, &str)]) -> Answer {
    let mut req = Request::get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(req.body(full(Bytes::new())).unwrap()).await
}

pub async fn send(req: Request<TestBody>) -> Answer {
    let res = tokio::time::timeout(Duration::from_secs(20), http_client().request(req))
        .await
        .expect("request timed out")
        .expect("request failed");
    let (parts, body) = res.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// The headers an echoing upstream (`/debug/headers`) saw: all values of `name`.
pub fn seen(echo: &serde_json::Value, name: &str) -> Vec<String> {
    echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|pair| pair[0].as_str().unwrap().eq_ignore_ascii_case(name))
        .map(|pair| pair[1].as_str().unwrap().to_owned())
        .collect()
}

/// Writes raw bytes to `addr` and reads until the server closes or `wait` passes.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8], wait: Duration) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A port nothing listens on (bound, then released).
pub async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// The real `twofa-proxy` binary, started with a config file; killed on drop.
pub struct ProxyProcess {
    pub child: Child,
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub stderr: mpsc::Receiver<String>,
    _dir: TempDir,
}

impl ProxyProcess {
    pub fn start(toml: &str) -> Self {
        let dir = TempDir::new("proc");
        let path = dir.path("config.toml");
        // Records in a file of the process's own, as in production, unless the test says.
        let toml = if toml.contains("[records]") {
            toml.to_owned()
        } else {
            format!("{toml}\n[records]\npath = {:?}\n", dir.path("records.db"))
        };
        std::fs::write(&path, toml).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_twofa-proxy"))
            .args(["run", "--config"])
            .arg(&path)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("proxy did not start"));
            let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if event["message"] == "twofa-proxy listening" {
                let addr = event["addr"].as_str().unwrap().parse().unwrap();
                let admin_addr = event["admin_addr"].as_str().unwrap().parse().unwrap();
                return Self {
                    child,
                    addr,
                    admin_addr,
                    stderr: rx,
                    _dir: dir,
                };
            }
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self._dir.path("config.toml")
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Peak resident memory of the process so far (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        status_field(self.child.id(), "VmHWM:")
    }

    pub fn rss_kib(&self) -> u64 {
        status_field(self.child.id(), "VmRSS:")
    }

    /// Sends a signal by name (`TERM`, `INT`) with the shell's own `kill`, so these tests need no
    /// procps (Debian's kill(1); minimal installs and slim images have sh but not procps).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("sh")
            .args([
                "-c",
                r#"kill -s "$0" "$1""#,
                signal,
                &self.pid().to_string(),
            ])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn status_field(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap()
}

/// A self-signed certificate for `localhost` and 127.0.0.1, written as PEM files.
pub fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    (cert_path, key_path)
}
