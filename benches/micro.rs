//! Micro benches of what every request or login pays for: TOTP checks (with the replay claim),
//! session lookups in each store, sealing, the gate, cookie parsing.
//!
//! Run: cargo bench --bench micro            (the Redis rows need `redis-server` on PATH)
//! Criterion prints each as time per iteration; compare rows within one run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method, header};
use twofa_proxy::auth::totp::{self, TotpCode};
use twofa_proxy::clock::{Clock, ManualClock, SharedClock};
use twofa_proxy::config::Config;
use twofa_proxy::login::gate::{self, PathRules, SessionState};
use twofa_proxy::secrets::Sealer;
use twofa_proxy::session::{Sessions, cookie};
use twofa_proxy::store::memory::MemoryStore;
use twofa_proxy::store::redis::RedisStore;
use twofa_proxy::store::{AnyStore, Store};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn totp_benches(c: &mut Criterion) {
    let secret = totp::new_secret();
    let clock = ManualClock::at_now();
    let now = clock.now();
    let code = TotpCode::parse(&totp::code_at(&secret, now)).unwrap();
    c.bench_function("totp/check (3 HMAC-SHA1, skew 1)", |b| {
        b.iter(|| totp::check(black_box(&secret), black_box(&code), now, 1))
    });
    // Each iteration claims a later step, as a successful login does.
    let store = MemoryStore::new(clock.clone());
    let rt = rt();
    let mut step = now / 30;
    c.bench_function("totp/check + claim step (memory store)", |b| {
        b.iter(|| {
            step += 1;
            let matched = totp::check(&secret, &code, now, 1).unwrap();
            rt.block_on(store.claim_totp_step(
                "alice",
                black_box(matched.max(step)),
                Duration::from_secs(120),
            ))
            .unwrap()
        })
    });
}

struct RedisProcess(Child, String);

impl Drop for RedisProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn redis() -> Option<RedisProcess> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let child = Command::new("redis-server")
        .args([
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()
        .ok()?;
    let addr = format!("127.0.0.1:{port}");
    for _ in 0..200 {
        if std::net::TcpStream::connect(&addr).is_ok() {
            return Some(RedisProcess(child, format!("redis://{addr}/0")));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

fn session_benches(c: &mut Criterion) {
    let rt = rt();
    let cached = Config::from_toml("", Vec::new()).unwrap();
    let uncached = Config::from_toml("[session]\ncache_ttl = \"0s\"\n", Vec::new()).unwrap();
    let clock: SharedClock = ManualClock::at_now();
    let server = redis();
    let mut stores = vec![(
        "memory store",
        AnyStore::Memory(Box::new(MemoryStore::new(clock.clone()))),
        &cached,
    )];
    match &server {
        Some(server) => {
            for (name, config) in [
                ("redis store, no cache", &uncached),
                ("redis store, 2 s cache", &cached),
            ] {
                let store = rt
                    .block_on(RedisStore::connect(&server.1, "bench:"))
                    .unwrap();
                stores.push((name, AnyStore::Redis(Box::new(store)), config));
            }
        }
        None => eprintln!("redis-server not found: skipping the Redis session lookups"),
    }
    for (name, store, config) in stores {
        let sessions = Sessions::new(Arc::new(store), clock.clone(), &config.session);
        let current = rt
            .block_on(sessions.create("alice", false, None, None, None))
            .unwrap();
        let mut headers = HeaderMap::new();
        let cookie = format!("app=1; {}={}", sessions.names.session, current.id);
        headers.insert(header::COOKIE, HeaderValue::from_str(&cookie).unwrap());
        c.bench_function(&format!("session/load ({name})"), |b| {
            b.iter(|| {
                rt.block_on(sessions.load(black_box(&headers)))
                    .unwrap()
                    .unwrap()
            })
        });
    }
}

fn crypto_and_gate_benches(c: &mut Criterion) {
    let sealer = Sealer::random();
    let secret = [7u8; 20];
    let sealed = sealer.seal("totp", "alice", &secret);
    c.bench_function("sealer/seal 20 bytes (AES-256-GCM)", |b| {
        b.iter(|| sealer.seal("totp", "alice", black_box(&secret)))
    });
    c.bench_function("sealer/open 20 bytes", |b| {
        b.iter(|| sealer.open("totp", "alice", black_box(&sealed)).unwrap())
    });

    let rules = PathRules::new(
        "/_2fa".into(),
        vec!["/login".into()],
        vec!["/logout".into()],
        vec!["/login".into(), "/static/".into()],
        "/login".into(),
    );
    c.bench_function("gate/normalize + decide (clean path)", |b| {
        b.iter(|| {
            let p = gate::normalize_path(black_box("/integrations/42/runs")).unwrap();
            gate::decide(&rules, &Method::GET, &p, true, true, SessionState::Valid)
        })
    });
    c.bench_function("gate/normalize + decide (dot segments, escapes)", |b| {
        b.iter(|| {
            let p =
                gate::normalize_path(black_box("/static/../integrations/%34%32//runs")).unwrap();
            gate::decide(&rules, &Method::GET, &p, true, true, SessionState::Valid)
        })
    });

    let mut headers = HeaderMap::new();
    headers.insert(
        header::COOKIE,
        HeaderValue::from_static("_ga=GA1.2.3; theme=dark; session=abc; __Host-twofa-session=0123456789abcdef0123456789abcdef0123456789a"),
    );
    c.bench_function("cookie/find session cookie", |b| {
        b.iter(|| cookie::find(black_box(&headers), "__Host-twofa-session").unwrap())
    });
    c.bench_function("cookie/app cookie in every spelling", |b| {
        b.iter(|| {
            cookie::app_cookies(black_box(&headers), "session")
                .values
                .len()
        })
    });
    c.bench_function("gate/session id in the URL (none)", |b| {
        b.iter(|| {
            gate::strip_session_params(black_box("/integrations/42/runs"), "session").is_none()
                && !gate::carries_session_id(
                    black_box("/integrations/42/runs"),
                    Some(black_box("page=2&sort=name")),
                )
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    targets = totp_benches, session_benches, crypto_and_gate_benches
}
criterion_main!(benches);
