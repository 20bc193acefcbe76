//! Load bench: the same GET straight to the upstream, through twofa-proxy (forwarding only, and
//! authenticated with the memory and the Redis store), and (when Debian's
//! nginx is installed) through nginx `proxy_pass` with upstream keep-alive -- all in one run on
//! this machine, reported as throughput, p50/p90/p99 latency and ratios against the direct run.
//!
//! Run:  cargo bench --bench load        (about 2 minutes; report in target/tmp/load-report.md)
//! Tune: LOAD_SECONDS (default 5), LOAD_CONNECTIONS (32), LOAD_IDLE_CONNECTIONS (10000),
//!       LOAD_LOGIN_USERS (20000)
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
        .args([
            "demo-app",
            "--listen",
            &addr.to_string(),
            "--load-users",
            "100000",
        ])
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
    // Records in a file, as in production, unless `extra` names others.
    let records = dir.join(format!("{name}-records.db"));
    let records = if extra.contains("[records]") {
        String::new()
    } else {
        format!("[records]\npath = {records:?}\n")
    };
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"{addr}\"\nadmin_listen = \"{admin}\"\n[upstream]\nurl = \"http://{upstream}\"\n{records}{extra}"
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

/// A port whose cluster bus port (+10000) is also free and below the ephemeral range.
fn free_low_port() -> u16 {
    (20_000..22_767)
        .find(|p| {
            TcpListener::bind(("127.0.0.1", *p)).is_ok()
                && TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok()
        })
        .unwrap()
}

/// A redis-server on `port` (no persistence) with `extra` arguments, run in `dir`.
fn redis_on(dir: &std::path::Path, port: u16, extra: &[&str]) -> Option<Process> {
    let child = Command::new("redis-server")
        .args(extra)
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no"])
        .current_dir(dir)
        .stdout(Stdio::null())
        .spawn()
        .ok()?;
    wait_for(SocketAddr::from(([127, 0, 0, 1], port)));
    Some(Process(child))
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Redis under Sentinel: a master, one replica, one sentinel (quorum 1). The store's data path
/// is the master's; the sentinel is asked at start and once a second.
fn start_sentinel(dir: &std::path::Path) -> Option<(Vec<Process>, u16)> {
    let (master, replica, sentinel) = (free_low_port(), free_addr().port(), free_addr().port());
    let mut procs = vec![redis_on(dir, master, &[])?];
    procs.push(redis_on(
        dir,
        replica,
        &["--replicaof", "127.0.0.1", &master.to_string()],
    )?);
    let conf = dir.join(format!("sentinel-{sentinel}.conf"));
    std::fs::write(
        &conf,
        format!("sentinel monitor mymaster 127.0.0.1 {master} 1\nsentinel down-after-milliseconds mymaster 5000\n"),
    )
    .ok()?;
    let child = Command::new("redis-server")
        .arg(&conf)
        .args([
            "--sentinel",
            "--bind",
            "127.0.0.1",
            "--port",
            &sentinel.to_string(),
        ])
        .stdout(Stdio::null())
        .spawn()
        .ok()?;
    wait_for(SocketAddr::from(([127, 0, 0, 1], sentinel)));
    procs.push(Process(child));
    Some((procs, sentinel))
}

/// A Cluster of 3 masters, no replicas (throughput, not failover).
fn start_cluster(dir: &std::path::Path) -> Option<(Vec<Process>, Vec<u16>)> {
    let mut procs = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..3 {
        let port = free_low_port();
        let conf = format!("nodes-{port}.conf");
        procs.push(redis_on(
            dir,
            port,
            &["--cluster-enabled", "yes", "--cluster-config-file", &conf],
        )?);
        ports.push(port);
    }
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let made = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addrs)
        .arg("--cluster-yes")
        .stdout(Stdio::null())
        .status()
        .ok()?;
    if !made.success() {
        return None;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while ports
        .iter()
        .any(|p| !redis_cli(*p, &["cluster", "info"]).contains("cluster_state:ok"))
    {
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Some((procs, ports))
}

/// A fresh database `name` on the machine's PostgreSQL (`LOAD_PG_URL`, default the local
/// server on 5432 with trust auth) for PostgreSQL records; None when there is no server.
async fn postgres_database(name: &str) -> Option<String> {
    let admin = std::env::var("LOAD_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .ok()?;
    tokio::spawn(conn);
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
        .await
        .ok()?;
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .ok()?;
    let (base, _) = admin.rsplit_once('/')?;
    Some(format!("{base}/{name}?sslmode=disable"))
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
             worker_rlimit_nofile 40000;\nevents {{ worker_connections 16384; }}\n\
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
    /// The process whose CPU time is charged to this target (with its child processes: nginx
    /// workers); none for the upstream itself.
    pid: Option<u32>,
}

/// `pid` and its direct children (nginx's workers under the master).
fn process_tree(pid: u32) -> Vec<u32> {
    let children = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&child| proc_stat(child).is_some_and(|s| s.ppid == pid));
    std::iter::once(pid).chain(children).collect()
}

struct ProcStat {
    ppid: u32,
    /// Clock ticks.
    user: u64,
    system: u64,
}

fn proc_stat(pid: u32) -> Option<ProcStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields 4, 14 and 15 of proc(5), counted after the `)` that closes the command name.
    let f: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    Some(ProcStat {
        ppid: f.get(1)?.parse().ok()?,
        user: f.get(11)?.parse().ok()?,
        system: f.get(12)?.parse().ok()?,
    })
}

/// User and system CPU seconds used so far by `pid` and its direct children.
fn cpu_seconds(pid: u32) -> (f64, f64) {
    let (user, system) = process_tree(pid)
        .into_iter()
        .filter_map(proc_stat)
        .fold((0, 0), |(u, s), p| (u + p.user, s + p.system));
    let tick = clock_ticks();
    (user as f64 / tick, system as f64 / tick)
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// One table of closed-loop results for `path` across `targets`, with ratios to `baselines`.
fn table(
    rt: &tokio::runtime::Runtime,
    title: &str,
    path: &str,
    targets: &[Target],
    connections: usize,
    seconds: u64,
    md: &mut String,
) -> Vec<serde_json::Value> {
    println!("\n{title}: GET {path}, {connections} connections, {seconds}s each");
    println!(
        "{:<14} {:>10} {:>9} {:>9} {:>9} {:>7} {:>12} {:>11}",
        "target", "req/s", "p50 ms", "p90 ms", "p99 ms", "errors", "user µs/req", "sys µs/req"
    );
    md.push_str(&format!(
        "\n### {title}\n\n`GET {path}`, {connections} connections, {seconds} s each. CPU per \
         request is the target process's own (nginx: its workers; not the upstream's, not \
         Redis's).\n\n\
         | target | req/s | p50 ms | p90 ms | p99 ms | errors | user µs/req | sys µs/req |\n\
         |---|---|---|---|---|---|---|---|\n"
    ));
    let mut results = Vec::new();
    for t in targets {
        let warmup = Duration::from_secs(1);
        let measure = Duration::from_secs(seconds);
        // CPU sampled over the measured window only, beside the load.
        let cpu = t.pid.map(|pid| {
            rt.spawn(async move {
                tokio::time::sleep(warmup).await;
                let before = cpu_seconds(pid);
                tokio::time::sleep(measure).await;
                let after = cpu_seconds(pid);
                (after.0 - before.0, after.1 - before.1)
            })
        });
        let out = rt.block_on(load(
            t.addr,
            t.cookie.clone(),
            path,
            connections,
            warmup,
            measure,
        ));
        let cpu = cpu.and_then(|h| rt.block_on(h).ok()).map(|(user, sys)| {
            let per = |s: f64| s * 1e6 / out.requests.max(1) as f64;
            (per(user), per(sys))
        });
        let row = (
            out.rps(),
            out.percentile_ms(0.50),
            out.percentile_ms(0.90),
            out.percentile_ms(0.99),
        );
        let (user, sys) = cpu.map_or(("-".to_owned(), "-".to_owned()), |(u, s)| {
            (format!("{u:.1}"), format!("{s:.1}"))
        });
        println!(
            "{:<14} {:>10.0} {:>9.3} {:>9.3} {:>9.3} {:>7} {:>12} {:>11}",
            t.name, row.0, row.1, row.2, row.3, out.errors, user, sys
        );
        md.push_str(&format!(
            "| {} | {:.0} | {:.3} | {:.3} | {:.3} | {} | {user} | {sys} |\n",
            t.name, row.0, row.1, row.2, row.3, out.errors
        ));
        results.push((t.name, out, cpu));
    }
    let find = |name: &str| results.iter().find(|(n, _, _)| *n == name);
    let mut ratios = String::new();
    for base in ["direct", "nginx"] {
        let Some((_, b, b_cpu)) = find(base) else {
            continue;
        };
        for (name, p, p_cpu) in results.iter().filter(|(n, _, _)| n.starts_with("proxy")) {
            let mut line = format!(
                "{name} / {base}: throughput {:.2}, p99 {:+.3} ms",
                p.rps() / b.rps(),
                p.percentile_ms(0.99) - b.percentile_ms(0.99)
            );
            if let (Some((bu, bs)), Some((pu, ps))) = (b_cpu, p_cpu) {
                line.push_str(&format!(", CPU per request {:.2}", (pu + ps) / (bu + bs)));
            }
            println!("{line}");
            ratios.push_str(&format!("- {line}\n"));
        }
    }
    md.push('\n');
    md.push_str(&ratios);
    results
        .iter()
        .map(|(name, o, cpu)| {
            serde_json::json!({
                "target": name, "rps": o.rps(), "errors": o.errors,
                "p50_ms": o.percentile_ms(0.5), "p90_ms": o.percentile_ms(0.9), "p99_ms": o.percentile_ms(0.99),
                "user_us_per_request": cpu.map(|c| c.0), "sys_us_per_request": cpu.map(|c| c.1),
            })
        })
        .collect()
}

/// RSS of `pid` plus its direct children (nginx's workers).
fn rss_tree_kib(pid: u32) -> u64 {
    process_tree(pid).into_iter().map(rss_kib).sum()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Start-to-ready time and idle memory of a fresh proxy process.
fn startup(upstream: SocketAddr, dir: &std::path::Path) -> (f64, u64) {
    let addr = free_addr();
    let admin = free_addr();
    let config = dir.join("startup.toml");
    let records = dir.join("startup-records.db");
    std::fs::write(
        &config,
        format!("[server]\nlisten = \"{addr}\"\nadmin_listen = \"{admin}\"\n[upstream]\nurl = \"http://{upstream}\"\n[records]\npath = {records:?}\n"),
    )
    .unwrap();
    let started = Instant::now();
    let child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let proc = Process(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(admin) {
            use std::io::{Read, Write};
            let _ = s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut buf = String::new();
            let _ = s.read_to_string(&mut buf);
            if buf.starts_with("HTTP/1.1 200") {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the proxy never became ready");
        std::thread::sleep(Duration::from_millis(1));
    }
    let ready_ms = started.elapsed().as_secs_f64() * 1000.0;
    std::thread::sleep(Duration::from_millis(300));
    let rss = rss_kib(proc.0.id());
    (ready_ms, rss)
}

/// Holds `count` keep-alive connections open (each has made one request) and reports the
/// proxy's memory before and with them.
async fn idle_connections(
    proxy: SocketAddr,
    cookie: Option<String>,
    pid: u32,
    count: usize,
) -> (u64, u64, usize) {
    let before = rss_tree_kib(pid);
    let mut held = Vec::with_capacity(count);
    for _ in 0..count {
        let Ok(stream) = tokio::net::TcpStream::connect(proxy).await else {
            break;
        };
        let Ok((mut sender, conn)) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
        else {
            break;
        };
        tokio::spawn(conn);
        let mut req = Request::get("/debug/hello").header("host", "bench");
        if let Some(c) = &cookie {
            req = req.header("cookie", c.as_str());
        }
        let Ok(res) = sender
            .send_request(req.body(Empty::<Bytes>::new()).unwrap())
            .await
        else {
            break;
        };
        let _ = res.into_body().collect().await;
        held.push(sender);
    }
    // Long enough for the proxy to park the last connections (50 ms after their request).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let with = rss_tree_kib(pid);
    (before, with, held.len())
}

/// Full 2FA logins per second through `proxy`: users are enrolled first (JSON API), then each
/// signs in once: password, TOTP code computed here, first page.
async fn logins(
    proxy: SocketAddr,
    users: usize,
    concurrency: usize,
    seconds: u64,
) -> twofa_proxy::loadtest::Report {
    use twofa_proxy::loadtest::{self, Pace, Plan, Scenario, User};
    let target: http::Uri = format!("http://{proxy}").parse().unwrap();
    let list: Vec<User> = (1..=users)
        .map(|i| User {
            name: format!("load{i}"),
            password: "load-password".into(),
            totp: None,
        })
        .collect();
    let enrolled = loadtest::enroll(&target, "/api/login", list, 32)
        .await
        .unwrap();
    // The enrollment codes claimed this TOTP step; logins start in the next one.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    tokio::time::sleep(Duration::from_secs(30 - now % 30 + 1)).await;
    loadtest::run(Plan {
        target,
        scenario: Scenario::Login {
            login_path: "/api/login".into(),
            landing: "/debug/hello".into(),
            users: enrolled.into(),
        },
        pace: Pace::Concurrency(concurrency),
        duration: Duration::from_secs(seconds),
        warmup: Duration::ZERO,
        progress: false,
    })
    .await
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing useful either.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let seconds: u64 = env_or("LOAD_SECONDS", 5);
    let connections: usize = env_or("LOAD_CONNECTIONS", 32);
    let idle: usize = env_or("LOAD_IDLE_CONNECTIONS", 10_000);
    let login_users: usize = env_or("LOAD_LOGIN_USERS", 20_000);
    // LOAD_ONLY=small,big,logins,idle runs a subset (start-up is always measured).
    let only = std::env::var("LOAD_ONLY").unwrap_or_default();
    let wanted = |part: &str| only.is_empty() || only.split(',').any(|p| p.trim() == part);
    let idle = if wanted("idle") { idle } else { 0 };
    let dir = scratch_dir();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut md = format!(
        "## Load bench results\n\nMeasured {} on this machine ({cores} cores shared by every process: \
         upstream, proxy, nginx, Redis and the load generator), all on loopback. Compare ratios \
         within a run, not absolute numbers across machines.\n",
        date()
    );

    let (_upstream, upstream) = start_upstream();
    let (ready_ms, idle_rss) = startup(upstream, &dir);
    println!(
        "start to ready: {ready_ms:.1} ms; idle RSS: {:.1} MiB",
        idle_rss as f64 / 1024.0
    );
    md.push_str(&format!(
        "\n### Start-up and memory\n\n- start to ready (process spawn to `/readyz` 200): {ready_ms:.1} ms\n\
         - idle RSS: {:.1} MiB\n",
        idle_rss as f64 / 1024.0
    ));

    let nginx = start_nginx(upstream, &dir);
    // Forwarding only: the path is public, no session is checked (the nginx-equivalent work).
    let (public_proc, public) = start_proxy(
        upstream,
        &dir,
        "public",
        "[app]\npublic_paths = [\"/debug/\"]\n",
    );
    // Authenticated: every request's session is looked up before it is forwarded.
    let login_app = "[app]\nlogin_paths = [\"/login\", \"/api/login\"]\nsuccess_status = [200, 302, 303]\n\
                     public_paths = [\"/login\", \"/api/login\", \"/static/\"]\n";
    let (memory_proc, memory) = start_proxy(upstream, &dir, "memory", login_app);
    let redis = start_redis();
    let redis_proxy = redis.as_ref().map(|(_, addr)| {
        let extra = format!(
            "{login_app}[store]\nbackend = \"redis\"\nurl = \"redis://{addr}/0\"\n\
             [secrets]\nencryption_key = \"YmVuY2gta2V5LWJlbmNoLWtleS1iZW5jaC1rZXktMTI=\"\n"
        );
        start_proxy(upstream, &dir, "redis", &extra)
    });
    // PostgreSQL records, shared as by several replicas (logins only: no forwarded request
    // reads the records).
    // One database per proxy: each enrolls the same load users.
    let postgres = wanted("logins")
        .then(|| rt.block_on(postgres_database("twofa_bench_memory")))
        .flatten();
    let postgres_2 = postgres
        .as_ref()
        .and_then(|_| rt.block_on(postgres_database("twofa_bench_redis")));
    if postgres.is_none() && wanted("logins") {
        println!("(no PostgreSQL on LOAD_PG_URL: logins with PostgreSQL records left out)");
    }
    let pg_records = |url: &str| format!("[records]\nbackend = \"postgres\"\nurl = \"{url}\"\n");
    let memory_pg = postgres.as_ref().map(|url| {
        start_proxy(
            upstream,
            &dir,
            "memory-pg",
            &format!("{login_app}{}", pg_records(url)),
        )
    });
    let redis_pg = postgres_2
        .as_ref()
        .zip(redis.as_ref())
        .map(|(url, (_, addr))| {
            let extra = format!(
                "{login_app}[store]\nbackend = \"redis\"\nurl = \"redis://{addr}/1\"\n\
             [secrets]\nencryption_key = \"YmVuY2gta2V5LWJlbmNoLWtleS1iZW5jaC1rZXktMTI=\"\n{}",
                pg_records(url)
            );
            start_proxy(upstream, &dir, "redis-pg", &extra)
        });
    let key = "[secrets]\nencryption_key = \"YmVuY2gta2V5LWJlbmNoLWtleS1iZW5jaC1rZXktMTI=\"\n";
    let sentinel = start_sentinel(&dir);
    let sentinel_proxy = sentinel.as_ref().map(|(_, port)| {
        let extra = format!(
            "{login_app}[store]\nbackend = \"redis\"\nmode = \"sentinel\"\n\
             sentinels = [\"127.0.0.1:{port}\"]\nmaster_name = \"mymaster\"\n{key}"
        );
        start_proxy(upstream, &dir, "sentinel", &extra)
    });
    let cluster = start_cluster(&dir);
    let cluster_proxy = cluster.as_ref().map(|(_, ports)| {
        let nodes: Vec<String> = ports.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
        let extra = format!(
            "{login_app}[store]\nbackend = \"redis\"\nmode = \"cluster\"\nnodes = [{}]\n{key}",
            nodes.join(", ")
        );
        start_proxy(upstream, &dir, "cluster", &extra)
    });
    if sentinel.is_none() || cluster.is_none() {
        println!("(redis-server or redis-cli missing: Sentinel or Cluster left out)");
    }
    let memory_cookie = rt.block_on(sign_in(memory));
    let mut targets = vec![Target {
        name: "direct",
        addr: upstream,
        cookie: None,
        pid: None,
    }];
    if let Some((proc, addr)) = &nginx {
        targets.push(Target {
            name: "nginx",
            addr: *addr,
            cookie: None,
            pid: Some(proc.0.id()),
        });
    } else {
        println!("(nginx not installed: apt-get install nginx-light to add the nginx baseline)");
    }
    targets.push(Target {
        name: "proxy public",
        addr: public,
        cookie: None,
        pid: Some(public_proc.0.id()),
    });
    targets.push(Target {
        name: "proxy memory",
        addr: memory,
        cookie: Some(memory_cookie.clone()),
        pid: Some(memory_proc.0.id()),
    });
    if let Some((proc, addr)) = &redis_proxy {
        targets.push(Target {
            name: "proxy redis",
            addr: *addr,
            cookie: Some(rt.block_on(sign_in(*addr))),
            pid: Some(proc.0.id()),
        });
    }

    for (name, proxy) in [
        ("proxy sentinel", &sentinel_proxy),
        ("proxy cluster", &cluster_proxy),
    ] {
        if let Some((proc, addr)) = proxy {
            targets.push(Target {
                name,
                addr: *addr,
                cookie: Some(rt.block_on(sign_in(*addr))),
                pid: Some(proc.0.id()),
            });
        }
    }

    let small = wanted("small").then(|| {
        table(
            &rt,
            "Authenticated GET, small body",
            "/debug/hello",
            &targets,
            connections,
            seconds,
            &mut md,
        )
    });
    let big_targets: Vec<Target> = targets
        .iter()
        .filter(|t| matches!(t.name, "direct" | "nginx" | "proxy memory"))
        .map(|t| Target {
            name: t.name,
            addr: t.addr,
            cookie: t.cookie.clone(),
            pid: t.pid,
        })
        .collect();
    let big = wanted("big").then(|| {
        table(
            &rt,
            "Authenticated GET, 1 MiB body",
            "/debug/bytes?n=1048576",
            &big_targets,
            8,
            seconds,
            &mut md,
        )
    });

    println!(
        "\nfull 2FA logins (password, TOTP code, first page), {login_users} users enrolled first"
    );
    md.push_str("\n### Full 2FA logins\n\nJSON password login, TOTP code computed by the load generator, \
                 first page; every user signs in once (codes cannot be replayed).\n\n\
                 | store + records | logins/s | p50 ms | p90 ms | p99 ms | errors |\n|---|---|---|---|---|---|\n");
    let mut login_json = Vec::new();
    let mut login_targets = vec![("memory+sqlite", memory)];
    if let Some((_, addr)) = &redis_proxy {
        login_targets.push(("redis+sqlite", *addr));
    }
    if let Some((_, addr)) = &sentinel_proxy {
        login_targets.push(("sentinel+sqlite", *addr));
    }
    if let Some((_, addr)) = &cluster_proxy {
        login_targets.push(("cluster+sqlite", *addr));
    }
    if let Some((_, addr)) = &memory_pg {
        login_targets.push(("memory+postgres", *addr));
    }
    if let Some((_, addr)) = &redis_pg {
        login_targets.push(("redis+postgres", *addr));
    }
    for (name, addr) in login_targets.into_iter().filter(|_| wanted("logins")) {
        let r = rt.block_on(logins(addr, login_users, 16, seconds));
        println!(
            "{name:<16} {:>8.0} logins/s  p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  errors {}{}",
            r.per_second(),
            r.percentile_ms(0.5),
            r.percentile_ms(0.9),
            r.percentile_ms(0.99),
            r.errors,
            if r.users_exhausted {
                " (all users used: shorter run)"
            } else {
                ""
            }
        );
        md.push_str(&format!(
            "| {name} | {:.0} | {:.2} | {:.2} | {:.2} | {} |\n",
            r.per_second(),
            r.percentile_ms(0.5),
            r.percentile_ms(0.9),
            r.percentile_ms(0.99),
            r.errors
        ));
        login_json.push(serde_json::json!({ "store": name, "report": r.to_json() }));
    }

    let mut idle_json = Vec::new();
    md.push_str(
        "\n### Idle connections\n\nKeep-alive connections held open, each after one request \
         (authenticated for the proxy). RSS of the process (nginx: master and workers).\n\n\
         | target | connections | RSS before MiB | RSS with them MiB | bytes per connection |\n\
         |---|---|---|---|---|\n",
    );
    // A fresh proxy: the one above now holds the logins' 20 000 users and sessions, which would
    // be counted as connection memory.
    let (idle_proc, idle_addr) = start_proxy(upstream, &dir, "idle", login_app);
    let idle_cookie = rt.block_on(sign_in(idle_addr));
    let mut idle_targets = vec![("proxy", idle_addr, Some(idle_cookie), idle_proc.0.id())];
    if let Some((proc, addr)) = &nginx {
        idle_targets.push(("nginx", *addr, None, proc.0.id()));
    }
    for (name, addr, cookie, pid) in idle_targets.into_iter().filter(|_| idle > 0) {
        let (before, with, held) = rt.block_on(idle_connections(addr, cookie, pid, idle));
        let per_conn = (with.saturating_sub(before)) as f64 * 1024.0 / held.max(1) as f64;
        println!(
            "\n{name}: {held} idle keep-alive connections, RSS {:.1} MiB -> {:.1} MiB ({per_conn:.0} bytes each)",
            before as f64 / 1024.0,
            with as f64 / 1024.0
        );
        md.push_str(&format!(
            "| {name} | {held} | {:.1} | {:.1} | {per_conn:.0} |\n",
            before as f64 / 1024.0,
            with as f64 / 1024.0
        ));
        idle_json.push(serde_json::json!({
            "target": name, "count": held, "rss_before_kib": before, "rss_with_kib": with,
            "bytes_each": per_conn,
        }));
    }

    let json = serde_json::json!({
        "date": date(), "cores": cores, "seconds": seconds, "connections": connections,
        "startup": { "ready_ms": ready_ms, "idle_rss_kib": idle_rss },
        "small_body": small, "one_mib_body": big, "logins": login_json,
        "idle_connections": idle_json,
    });
    let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::write(
        out_dir.join("load-report.json"),
        serde_json::to_string_pretty(&json).unwrap(),
    )
    .unwrap();
    std::fs::write(out_dir.join("load-report.md"), &md).unwrap();
    println!(
        "\nreport: {} (and .json)",
        out_dir.join("load-report.md").display()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn date() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}
