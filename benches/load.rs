//! Load bench: the same GET straight to the upstream, through twofa-proxy (forwarding only, and
//! authenticated with the memory and the Redis store), and (when Debian's
//! nginx is installed) through nginx `proxy_pass` with upstream keep-alive -- all in one run on
//! this machine, reported as throughput, p50/p90/p99 latency and ratios against the direct run.
//!
//! Run:  cargo bench --bench load
//! Tune: LOAD_SECONDS (default 5), LOAD_CONNECTIONS (default 32), LOAD_PATH (default /debug/hello)
//!
//! Every process is real and on loopback: the demo app (`twofa-proxy demo-app`) as upstream,
//! the release proxy binary, nginx. The load generator below keeps one request in flight per
//! connection (closed loop), so latencies are per request, not per batch.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

const BIN: &str = env!("CARGO_BIN_EXE_twofa-proxy");

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{addr} never came up");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("twofa-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn start_upstream() -> (Process, SocketAddr) {
    let addr = free_addr();
    let child = Command::new(BIN)
        .args(["demo-app", "--listen", &addr.to_string()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(addr);
    (Process(child), addr)
}

/// The release proxy in front of `upstream`; `extra` adds config sections.
fn start_proxy(
    upstream: SocketAddr,
    dir: &std::path::Path,
    name: &str,
    extra: &str,
) -> (Process, SocketAddr) {
    let addr = free_addr();
    let admin = free_addr();
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"{addr}\"\nadmin_listen = \"{admin}\"\n[upstream]\nurl = \"http://{upstream}\"\n{extra}"
        ),
    )
    .unwrap();
    let child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(addr);
    (Process(child), addr)
}

fn start_redis() -> Option<(Process, SocketAddr)> {
    let addr = free_addr();
    let child = Command::new("redis-server")
        .args([
            "--bind",
            "127.0.0.1",
            "--port",
            &addr.port().to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()
        .ok()?;
    wait_for(addr);
    Some((Process(child), addr))
}

/// Signs in through the proxy as a demo user (no 2FA enrolled) and returns the Cookie header
/// an authenticated browser would send.
async fn sign_in(proxy: SocketAddr) -> String {
    let stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::post("/login")
        .header("host", "bench")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(http_body_util::Full::new(Bytes::from_static(
            b"username=alice&password=wonderland",
        )))
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    assert!(
        res.status().is_redirection(),
        "login failed: {}",
        res.status()
    );
    res.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok()?.split(';').next().map(str::to_owned))
        .collect::<Vec<_>>()
        .join("; ")
}

fn start_nginx(upstream: SocketAddr, dir: &std::path::Path) -> Option<(Process, SocketAddr)> {
    let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())?;
    let addr = free_addr();
    let conf = dir.join("nginx.conf");
    // As close to the proxy's work as nginx gets: HTTP/1.1 keep-alive upstream pool, no
    // buffering, no access log, one worker per core.
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nworker_processes auto;\npid {dir}/nginx.pid;\nerror_log {dir}/nginx-error.log warn;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {dir}/body;\n  proxy_temp_path {dir}/proxy;\n\
               fastcgi_temp_path {dir}/fastcgi;\n  uwsgi_temp_path {dir}/uwsgi;\n  scgi_temp_path {dir}/scgi;\n\
               upstream app {{ server {upstream}; keepalive 256; keepalive_requests 1000000; }}\n\
               keepalive_requests 1000000;\n\
               server {{\n    listen {addr};\n    location / {{\n      proxy_pass http://app;\n\
                 proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n\
                 proxy_set_header Host $host;\n      proxy_set_header X-Forwarded-For $remote_addr;\n\
                 proxy_buffering off;\n    }}\n  }}\n}}\n",
            dir = dir.display(),
        ),
    )
    .unwrap();
    let child = Command::new(nginx)
        .args(["-c"])
        .arg(&conf)
        .args(["-p"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    wait_for(addr);
    Some((Process(child), addr))
}

struct Outcome {
    requests: u64,
    errors: u64,
    seconds: f64,
    latencies_us: Vec<u32>,
}

impl Outcome {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.seconds
    }

    fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_us[i] as f64 / 1000.0
    }
}

/// Closed-loop load: `connections` keep-alive connections, one request in flight on each.
async fn load(
    addr: SocketAddr,
    cookie: Option<String>,
    path: &str,
    connections: usize,
    warmup: Duration,
    measure: Duration,
) -> Outcome {
    let start = Instant::now() + warmup;
    let end = start + measure;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let path = path.to_owned();
        let cookie = cookie.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(1 << 16);
            let mut errors = 0u64;
            'reconnect: while Instant::now() < end {
                let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
                    errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream))
                        .await
                        .unwrap();
                tokio::spawn(conn);
                loop {
                    let now = Instant::now();
                    if now >= end {
                        break 'reconnect;
                    }
                    if sender.ready().await.is_err() {
                        errors += 1;
                        continue 'reconnect;
                    }
                    let mut req = Request::get(&path).header("host", "bench");
                    if let Some(c) = &cookie {
                        req = req.header("cookie", c.as_str());
                    }
                    let req = req.body(Empty::<Bytes>::new()).unwrap();
                    let ok = match sender.send_request(req).await {
                        Ok(res) => {
                            res.status().is_success() && res.into_body().collect().await.is_ok()
                        }
                        Err(_) => false,
                    };
                    if now >= start {
                        if ok {
                            latencies.push(now.elapsed().as_micros().min(u32::MAX as u128) as u32);
                        } else {
                            errors += 1;
                        }
                    }
                    if !ok {
                        continue 'reconnect;
                    }
                }
            }
            (latencies, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (lat, err) = t.await.unwrap();
        all.extend(lat);
        errors += err;
    }
    all.sort_unstable();
    Outcome {
        requests: all.len() as u64,
        errors,
        seconds: measure.as_secs_f64(),
        latencies_us: all,
    }
}

struct Target {
    name: &'static str,
    addr: SocketAddr,
    cookie: Option<String>,
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing useful either.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let seconds: u64 = env_or("LOAD_SECONDS", 5);
    let connections: usize = env_or("LOAD_CONNECTIONS", 32);
    let path: String = env_or("LOAD_PATH", "/debug/hello".to_owned());
    let dir = scratch_dir();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();

    let (_upstream, upstream) = start_upstream();
    let nginx = start_nginx(upstream, &dir);
    // Forwarding only: the path is public, no session is checked (the nginx-equivalent work).
    let (_public, public) = start_proxy(
        upstream,
        &dir,
        "public",
        "[app]\npublic_paths = [\"/debug/\"]\n",
    );
    // Authenticated: every request's session is looked up before it is forwarded.
    let (_memory, memory) = start_proxy(upstream, &dir, "memory", "");
    let redis = start_redis();
    let redis_proxy = redis.as_ref().map(|(_, addr)| {
        let extra = format!(
            "[store]\nbackend = \"redis\"\nurl = \"redis://{addr}/0\"\n\
             [secrets]\nencryption_key = \"YmVuY2gta2V5LWJlbmNoLWtleS1iZW5jaC1rZXktMTI=\"\n"
        );
        start_proxy(upstream, &dir, "redis", &extra)
    });

    let mut targets = vec![Target {
        name: "direct",
        addr: upstream,
        cookie: None,
    }];
    if let Some((_, addr)) = &nginx {
        targets.push(Target {
            name: "nginx",
            addr: *addr,
            cookie: None,
        });
    }
    targets.push(Target {
        name: "proxy public",
        addr: public,
        cookie: None,
    });
    targets.push(Target {
        name: "proxy memory",
        addr: memory,
        cookie: Some(rt.block_on(sign_in(memory))),
    });
    if let Some((_, addr)) = &redis_proxy {
        targets.push(Target {
            name: "proxy redis",
            addr: *addr,
            cookie: Some(rt.block_on(sign_in(*addr))),
        });
    }

    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "load bench: GET {path}, {connections} connections, {seconds}s each, {cores} cores, all on loopback"
    );
    println!(
        "{:<14} {:>10} {:>9} {:>9} {:>9} {:>7}",
        "target", "req/s", "p50 ms", "p90 ms", "p99 ms", "errors"
    );
    let mut results = Vec::new();
    for t in &targets {
        let out = rt.block_on(load(
            t.addr,
            t.cookie.clone(),
            &path,
            connections,
            Duration::from_secs(1),
            Duration::from_secs(seconds),
        ));
        println!(
            "{:<14} {:>10.0} {:>9.3} {:>9.3} {:>9.3} {:>7}",
            t.name,
            out.rps(),
            out.percentile_ms(0.50),
            out.percentile_ms(0.90),
            out.percentile_ms(0.99),
            out.errors
        );
        results.push((t.name, out));
    }
    let find = |name: &str| results.iter().find(|(n, _)| *n == name).map(|(_, o)| o);
    println!();
    for base in ["direct", "nginx"] {
        let Some(b) = find(base) else {
            println!(
                "(nginx not installed: apt-get install nginx-light to add the nginx baseline)"
            );
            continue;
        };
        for proxy in ["proxy public", "proxy memory", "proxy redis"] {
            if let Some(p) = find(proxy) {
                println!(
                    "{proxy:<13} / {base:<6}: throughput {:.2}, p99 {:+.3} ms",
                    p.rps() / b.rps(),
                    p.percentile_ms(0.99) - b.percentile_ms(0.99)
                );
            }
        }
    }

    let report: Vec<serde_json::Value> = results
        .iter()
        .map(|(name, o)| {
            serde_json::json!({
                "target": name, "rps": o.rps(), "errors": o.errors,
                "p50_ms": o.percentile_ms(0.5), "p90_ms": o.percentile_ms(0.9), "p99_ms": o.percentile_ms(0.99),
            })
        })
        .collect();
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("load-report.json");
    let json = serde_json::json!({ "path": path, "connections": connections, "seconds": seconds, "cores": cores, "results": report });
    std::fs::write(&out, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    println!("report: {}", out.display());
    let _ = std::fs::remove_dir_all(&dir);
}
