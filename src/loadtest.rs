//! The load generator behind `twofa-proxy loadtest` and the load benches: drives authenticated
//! browsing or full 2FA logins (password, TOTP code computed from the user's key, first page)
//! against a local build or a real deployment, at a fixed concurrency or a fixed rate, bounded in
//! time, and reports latency percentiles and errors.
//!
//! Fixed-rate mode corrects for coordinated omission: each request is timed from the moment it
//! was scheduled to start, so a stalled server shows up as latency, not as fewer samples.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use tokio::sync::Semaphore;

use crate::auth::totp;

/// A test account: its password and (once enrolled) its TOTP key in Base32.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub password: String,
    pub totp: Option<String>,
}

impl User {
    /// `name,password[,base32 key]` per line; `#` starts a comment.
    pub fn parse_list(text: &str) -> anyhow::Result<Vec<User>> {
        let mut users = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.split(',').map(str::trim);
            let (Some(name), Some(password)) = (parts.next(), parts.next()) else {
                anyhow::bail!("line {}: expected name,password[,totp key]", i + 1);
            };
            let totp = parts.next().filter(|s| !s.is_empty()).map(str::to_owned);
            users.push(User {
                name: name.to_owned(),
                password: password.to_owned(),
                totp,
            });
        }
        Ok(users)
    }

    pub fn to_line(&self) -> String {
        format!(
            "{},{},{}",
            self.name,
            self.password,
            self.totp.as_deref().unwrap_or("")
        )
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// This many flows in flight at all times (closed loop).
    Concurrency(usize),
    /// This many flows started per second, whatever the server does (open loop).
    Rate(f64),
}

#[derive(Debug, Clone)]
pub enum Scenario {
    /// `GET path` with the given Cookie header (an authenticated browser).
    Browse {
        path: String,
        cookie: Option<String>,
    },
    /// Password (JSON login), TOTP code, then `GET landing`: one flow per user turn.
    Login {
        login_path: String,
        landing: String,
        users: Arc<Vec<User>>,
    },
}

pub struct Plan {
    /// `http://host:port` of the proxy (or anything speaking HTTP).
    pub target: Uri,
    pub scenario: Scenario,
    pub pace: Pace,
    pub duration: Duration,
    pub warmup: Duration,
    /// Print a progress line every second (to stderr).
    pub progress: bool,
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct Report {
    pub flows: u64,
    pub errors: u64,
    pub seconds: f64,
    /// Sorted, microseconds.
    pub latencies_us: Vec<u64>,
    /// The login scenario used every user before the time was up (the run ended early).
    pub users_exhausted: bool,
}

impl Report {
    pub fn per_second(&self) -> f64 {
        self.flows as f64 / self.seconds.max(f64::EPSILON)
    }

    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_us[i] as f64 / 1000.0
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "flows": self.flows, "errors": self.errors, "per_second": self.per_second(),
            "p50_ms": self.percentile_ms(0.5), "p90_ms": self.percentile_ms(0.9),
            "p99_ms": self.percentile_ms(0.99), "max_ms": self.percentile_ms(1.0),
            "users_exhausted": self.users_exhausted,
        })
    }
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(4096)
        .build(http)
}

fn url(target: &Uri, path: &str) -> String {
    format!("{}{path}", target.to_string().trim_end_matches('/'))
}

/// Cookies from `Set-Cookie` headers merged into a `Cookie` header value.
fn merge_cookies(jar: &mut Vec<(String, String)>, res_headers: &http::HeaderMap) {
    for v in res_headers.get_all(header::SET_COOKIE) {
        let Some((name, value)) = v
            .to_str()
            .ok()
            .and_then(|s| s.split(';').next())
            .and_then(|p| p.split_once('='))
        else {
            continue;
        };
        jar.retain(|(n, _)| n != name);
        if !value.is_empty()
            && !v
                .to_str()
                .unwrap_or("")
                .to_ascii_lowercase()
                .contains("max-age=0")
        {
            jar.push((name.to_owned(), value.to_owned()));
        }
    }
}

fn cookie_header(jar: &[(String, String)]) -> String {
    jar.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

async fn send(
    client: &HttpClient,
    method: &str,
    url: &str,
    cookie: Option<&str>,
    json_body: Option<serde_json::Value>,
) -> anyhow::Result<(StatusCode, http::HeaderMap, Bytes)> {
    let mut req = Request::builder().method(method).uri(url);
    if let Some(c) = cookie.filter(|c| !c.is_empty()) {
        req = req.header(header::COOKIE, c);
    }
    let body = match json_body {
        Some(v) => {
            req = req.header(header::CONTENT_TYPE, "application/json");
            Full::new(Bytes::from(v.to_string()))
        }
        None => Full::new(Bytes::new()),
    };
    let res = client.request(req.body(body)?).await?;
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await?.to_bytes();
    Ok((parts.status, parts.headers, bytes))
}

/// Signs `user` in with the JSON login and, when it has a TOTP key, answers the challenge.
/// Returns the Cookie header of the signed-in browser.
pub async fn sign_in(
    client: &LoadClient,
    target: &Uri,
    login_path: &str,
    user: &User,
    now: u64,
) -> anyhow::Result<String> {
    let mut jar = Vec::new();
    let body = json!({ "username": user.name, "password": user.password });
    let (status, headers, _) = send(
        &client.0,
        "POST",
        &url(target, login_path),
        None,
        Some(body),
    )
    .await?;
    merge_cookies(&mut jar, &headers);
    if status == StatusCode::UNAUTHORIZED {
        let key = user
            .totp
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("{} needs a TOTP key", user.name))?;
        let secret = totp_rs::Secret::try_from_base32(key)
            .map_err(|_| anyhow::anyhow!("bad key for {}", user.name))?;
        let code = totp::code_at(secret.as_ref(), now);
        let (status, headers, _) = send(
            &client.0,
            "POST",
            &url(target, "/_2fa/api/v1/challenge"),
            Some(&cookie_header(&jar)),
            Some(json!({ "code": code })),
        )
        .await?;
        if status != StatusCode::OK {
            // Each code works once per user: a user who signed in this 30 s step (enrollment
            // included) has to wait for the next.
            anyhow::bail!(
                "challenge for {} answered {status} (code already used this step?)",
                user.name
            );
        }
        merge_cookies(&mut jar, &headers);
    } else if !status.is_success() {
        anyhow::bail!("login of {} answered {status}", user.name);
    }
    Ok(cookie_header(&jar))
}

/// A shareable HTTP client for [`sign_in`] and [`enroll`].
#[derive(Clone)]
pub struct LoadClient(HttpClient);

impl Default for LoadClient {
    fn default() -> Self {
        Self(client())
    }
}

/// Turns on TOTP for each user (through the JSON API) and returns them with their keys, ready
/// for the login scenario. Users that already have 2FA are reported as errors.
pub async fn enroll(
    target: &Uri,
    login_path: &str,
    users: Vec<User>,
    parallel: usize,
) -> anyhow::Result<Vec<User>> {
    let client = LoadClient::default();
    let target = Arc::new(target.clone());
    let gate = Arc::new(Semaphore::new(parallel.max(1)));
    let mut tasks = Vec::new();
    for user in users {
        let (client, target, gate, login_path) = (
            client.clone(),
            target.clone(),
            gate.clone(),
            login_path.to_owned(),
        );
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await?;
            let cookie = sign_in(
                &client,
                &target,
                &login_path,
                &User {
                    totp: None,
                    ..user.clone()
                },
                0,
            )
            .await?;
            let (status, _, body) = send(
                &client.0,
                "POST",
                &url(&target, "/_2fa/api/v1/totp/setup"),
                Some(&cookie),
                Some(json!({})),
            )
            .await?;
            if status != StatusCode::OK {
                anyhow::bail!("totp/setup for {} answered {status}", user.name);
            }
            let setup: serde_json::Value = serde_json::from_slice(&body)?;
            let key = setup["secret"].as_str().unwrap_or_default().to_owned();
            let secret =
                totp_rs::Secret::try_from_base32(&key).map_err(|_| anyhow::anyhow!("bad key"))?;
            let code = totp::code_at(secret.as_ref(), unix_now());
            let (status, _, _) = send(
                &client.0,
                "POST",
                &url(&target, "/_2fa/api/v1/totp/confirm"),
                Some(&cookie),
                Some(json!({ "code": code })),
            )
            .await?;
            if status != StatusCode::OK {
                anyhow::bail!("totp/confirm for {} answered {status}", user.name);
            }
            Ok(User {
                totp: Some(key),
                ..user
            })
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await??);
    }
    Ok(out)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One flow of the scenario; `turn` picks the user.
async fn flow(
    client: &LoadClient,
    target: &Uri,
    scenario: &Scenario,
    turn: u64,
) -> anyhow::Result<()> {
    match scenario {
        Scenario::Browse { path, cookie } => {
            let (status, _, _) = send(
                &client.0,
                "GET",
                &url(target, path),
                cookie.as_deref(),
                None,
            )
            .await?;
            if !status.is_success() {
                anyhow::bail!("GET {path} answered {status}");
            }
        }
        Scenario::Login {
            login_path,
            landing,
            users,
        } => {
            // Each user once: a second login in the same 30 s step would be a replayed code.
            let Some(user) = users.get(turn as usize) else {
                return Err(Exhausted.into());
            };
            let cookie = sign_in(client, target, login_path, user, unix_now()).await?;
            let (status, _, _) =
                send(&client.0, "GET", &url(target, landing), Some(&cookie), None).await?;
            if !status.is_success() {
                anyhow::bail!("GET {landing} after login answered {status}");
            }
        }
    }
    Ok(())
}

/// The login scenario ran out of users (each signs in once per run).
#[derive(Debug)]
struct Exhausted;

impl std::fmt::Display for Exhausted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("every test user has signed in; add users for longer runs")
    }
}

impl std::error::Error for Exhausted {}

struct Counters {
    started: Instant,
    measuring_from: Instant,
    end: Instant,
    done: AtomicU64,
    errors: AtomicU64,
    exhausted: std::sync::atomic::AtomicBool,
    /// When the last measured flow finished (a run that ran out of users ends early).
    last: std::sync::Mutex<Option<Instant>>,
}

/// Runs the plan; bounded by `warmup + duration` (plus the last flows in flight).
pub async fn run(plan: Plan) -> Report {
    let client = LoadClient::default();
    let now = Instant::now();
    let counters = Arc::new(Counters {
        started: now,
        measuring_from: now + plan.warmup,
        end: now + plan.warmup + plan.duration,
        done: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        exhausted: std::sync::atomic::AtomicBool::new(false),
        last: std::sync::Mutex::new(None),
    });
    let target = Arc::new(plan.target.clone());
    let scenario = Arc::new(plan.scenario.clone());
    let progress = plan.progress.then(|| {
        let c = counters.clone();
        tokio::spawn(async move {
            let mut last = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let done = c.done.load(Ordering::Relaxed);
                eprintln!(
                    "  {:>4.0}s  {:>8} flows/s  {:>8} errors",
                    c.started.elapsed().as_secs_f64(),
                    done - last,
                    c.errors.load(Ordering::Relaxed)
                );
                last = done;
                if Instant::now() >= c.end {
                    return;
                }
            }
        })
    });
    let latencies = match plan.pace {
        Pace::Concurrency(n) => closed_loop(n, &client, &target, &scenario, &counters).await,
        Pace::Rate(r) => open_loop(r, &client, &target, &scenario, &counters).await,
    };
    if let Some(p) = progress {
        p.abort();
    }
    let mut latencies = latencies;
    latencies.sort_unstable();
    let exhausted = counters.exhausted.load(Ordering::Relaxed);
    let seconds = match *counters.last.lock().unwrap_or_else(|e| e.into_inner()) {
        Some(last) if exhausted => last
            .saturating_duration_since(counters.measuring_from)
            .as_secs_f64(),
        _ => plan.duration.as_secs_f64(),
    };
    Report {
        flows: latencies.len() as u64,
        errors: counters.errors.load(Ordering::Relaxed),
        seconds,
        latencies_us: latencies,
        users_exhausted: exhausted,
    }
}

async fn closed_loop(
    n: usize,
    client: &LoadClient,
    target: &Arc<Uri>,
    scenario: &Arc<Scenario>,
    counters: &Arc<Counters>,
) -> Vec<u64> {
    let turn = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..n.max(1) {
        let (client, target, scenario, counters, turn) = (
            client.clone(),
            target.clone(),
            scenario.clone(),
            counters.clone(),
            turn.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            loop {
                let start = Instant::now();
                if start >= counters.end {
                    return samples;
                }
                match flow(
                    &client,
                    &target,
                    &scenario,
                    turn.fetch_add(1, Ordering::Relaxed),
                )
                .await
                {
                    Err(e) if e.is::<Exhausted>() => {
                        counters.exhausted.store(true, Ordering::Relaxed);
                        return samples;
                    }
                    result => record(&counters, start, result.is_ok(), &mut samples),
                }
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap_or_default());
    }
    all
}

/// Starts flow k at `start + k / rate`; latency counts from that scheduled instant. In-flight
/// flows are capped (so a dead server cannot exhaust memory); a capped start is late, and
/// the lateness is part of its latency.
async fn open_loop(
    rate: f64,
    client: &LoadClient,
    target: &Arc<Uri>,
    scenario: &Arc<Scenario>,
    counters: &Arc<Counters>,
) -> Vec<u64> {
    const MAX_IN_FLIGHT: usize = 10_000;
    let gate = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Option<u64>>();
    let mut k: u64 = 0;
    loop {
        let scheduled = counters.started + interval.mul_f64(k as f64);
        if scheduled >= counters.end {
            break;
        }
        tokio::time::sleep_until(scheduled.into()).await;
        let Ok(permit) = gate.clone().acquire_owned().await else {
            break;
        };
        let (client, target, scenario, counters, tx) = (
            client.clone(),
            target.clone(),
            scenario.clone(),
            counters.clone(),
            tx.clone(),
        );
        tokio::spawn(async move {
            let result = flow(&client, &target, &scenario, k).await;
            let mut one = Vec::new();
            match result {
                Err(e) if e.is::<Exhausted>() => counters.exhausted.store(true, Ordering::Relaxed),
                result => record(&counters, scheduled, result.is_ok(), &mut one),
            }
            let _ = tx.send(one.pop());
            drop(permit);
        });
        k += 1;
    }
    drop(tx);
    let mut all = Vec::new();
    while let Some(sample) = rx.recv().await {
        all.extend(sample);
    }
    all
}

fn record(counters: &Counters, start: Instant, ok: bool, samples: &mut Vec<u64>) {
    if start < counters.measuring_from {
        return;
    }
    if ok {
        samples.push(start.elapsed().as_micros() as u64);
        counters.done.fetch_add(1, Ordering::Relaxed);
        *counters.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    } else {
        counters.errors.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_lists() {
        let users =
            User::parse_list("# test users\nalice, wonderland\nbob,builder,GEZDGNBV\n\n").unwrap();
        assert_eq!(users.len(), 2);
        assert_eq!(users[1].totp.as_deref(), Some("GEZDGNBV"));
        assert_eq!(users[1].to_line(), "bob,builder,GEZDGNBV");
        assert!(User::parse_list("lonely").is_err());
    }

    #[test]
    fn percentiles() {
        let r = Report {
            flows: 4,
            errors: 0,
            seconds: 2.0,
            latencies_us: vec![1000, 2000, 3000, 4000],
            users_exhausted: false,
        };
        assert_eq!(r.per_second(), 2.0);
        assert_eq!(r.percentile_ms(0.0), 1.0);
        assert_eq!(r.percentile_ms(1.0), 4.0);
    }
}
