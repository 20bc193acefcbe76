//! Records in PostgreSQL, on a private server these tests start and stop (Debian's
//! `postgres`, as the `postgres` user when run as root): the records contract; every earlier
//! schema version migrated; a newer one refused; a server restart ridden through; and end to
//! end, a proxy whose PostgreSQL stops refuses sign-ins (503, not ready) and recovers, and two
//! replicas sharing PostgreSQL and Redis act as one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;
use twofa_proxy::auth::SecondFactor;
use twofa_proxy::records::postgres::{MIGRATIONS, PostgresRecords, SCHEMA_VERSION};
use twofa_proxy::records::{Records, TwoFactorRecord};

use crate::records::contract;
use crate::support::agent::{Agent, input_value};
use crate::support::postgres::PostgresServer;
use crate::support::redis::RedisServer;
use crate::support::site::*;
use crate::support::*;

fn record(enabled_at: u64) -> TwoFactorRecord {
    TwoFactorRecord {
        method: SecondFactor::Totp,
        totp_secret: Some("sealed".into()),
        email: None,
        enabled_at,
        language: None,
    }
}

/// A plain client for what the tests do behind the proxy's back.
async fn psql(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "external-tools"), ignore = "needs external-tools")]
async fn postgres_keeps_the_contract() {
    init();
    let server = PostgresServer::start();
    let records = PostgresRecords::open(&server.url("contract"), None).unwrap();
    records.identity().await.unwrap();
    contract(Arc::new(records), "pg").await;
}

/// Each earlier schema version, with a record written the way that version wrote it, is
/// brought to the current one by opening it, and the record reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "external-tools"), ignore = "needs external-tools")]
async fn every_earlier_postgres_schema_is_migrated_and_a_newer_one_refused() {
    init();
    let server = PostgresServer::start();
    for version in 0..SCHEMA_VERSION {
        let url = server.url(&format!("from_v{version}"));
        let c = psql(&url).await;
        if version > 0 {
            c.batch_execute("CREATE TABLE twofa_schema (version integer NOT NULL)")
                .await
                .unwrap();
            for step in &MIGRATIONS[..version as usize] {
                c.batch_execute(step).await.unwrap();
            }
            c.execute("INSERT INTO twofa_schema VALUES ($1)", &[&version])
                .await
                .unwrap();
            // Version 1's columns (every later step must keep this row readable).
            c.batch_execute(
                "INSERT INTO twofa_two_factor (user_name, method, totp_secret, enabled_at)
                 VALUES ('old', 'totp', 'sealed', 7);
                 INSERT INTO twofa_recovery_code VALUES ('old', 'h1');",
            )
            .await
            .unwrap();
        }
        let records = PostgresRecords::open(&url, None).unwrap();
        records.identity().await.unwrap();
        let now: i32 = c
            .query_one("SELECT version FROM twofa_schema", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(now, SCHEMA_VERSION, "from version {version}");
        if version > 0 {
            assert_eq!(records.two_factor("old").await.unwrap(), Some(record(7)));
            assert_eq!(records.recovery_codes_left("old").await.unwrap(), 1);
        }
        // Opening again changes nothing, identity included.
        let again = PostgresRecords::open(&url, None).unwrap();
        assert_eq!(
            again.identity().await.unwrap(),
            records.identity().await.unwrap()
        );
    }

    // A database a newer proxy has migrated further is refused, not guessed at.
    let url = server.url("newer");
    PostgresRecords::open(&url, None)
        .unwrap()
        .identity()
        .await
        .unwrap();
    psql(&url)
        .await
        .execute(
            "UPDATE twofa_schema SET version = $1",
            &[&(SCHEMA_VERSION + 1)],
        )
        .await
        .unwrap();
    let refused = PostgresRecords::open(&url, None).unwrap();
    let err = refused.identity().await.unwrap_err().to_string();
    assert!(err.contains("newer"), "{err}");
    assert!(refused.two_factor("old").await.is_err());
}

/// Replicas starting together: every one migrates or waits, none fails, and all share one
/// identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "external-tools"), ignore = "needs external-tools")]
async fn replicas_migrating_at_once_agree_on_one_identity() {
    init();
    let server = PostgresServer::start();
    let url = server.url("together");
    let starts: Vec<_> = (0..6)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                PostgresRecords::open(&url, None)
                    .unwrap()
                    .identity()
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut ids = Vec::new();
    for s in starts {
        ids.push(s.await.unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
}

/// A stopped server fails calls within the call timeout (an error, never "no 2FA"); after a
/// restart the pool replaces its closed connections and the records are all there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "external-tools"), ignore = "needs external-tools")]
async fn a_postgres_restart_is_ridden_through() {
    init();
    let mut server = PostgresServer::start();
    let records = PostgresRecords::open(&server.url("restart"), None).unwrap();
    records.save_two_factor("carol", &record(9)).await.unwrap();
    records
        .set_recovery_codes("carol", &["r1".into(), "r2".into()])
        .await
        .unwrap();

    server.stop();
    let asked = Instant::now();
    assert!(records.two_factor("carol").await.is_err());
    let failed_in = asked.elapsed();
    assert!(failed_in < Duration::from_secs(6), "{failed_in:?}");

    server.restart();
    // The pool's connections were closed by the shutdown: the first call finds out and tries a
    // fresh one, so no call after the restart fails.
    let back = Instant::now();
    assert_eq!(records.two_factor("carol").await.unwrap(), Some(record(9)));
    eprintln!(
        "postgres stopped: a call failed in {failed_in:?}; after the restart the first call \
         answered in {:?}",
        back.elapsed()
    );
    assert_eq!(records.recovery_codes_left("carol").await.unwrap(), 2);
}

fn pg_overrides(url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("TWOFA_RECORDS__BACKEND", "postgres".into()),
        ("TWOFA_RECORDS__URL", url.to_owned()),
    ]
}

async fn start_replica(
    upstream: std::net::SocketAddr,
    redis: &RedisServer,
    url: &str,
    clock: &Arc<twofa_proxy::clock::ManualClock>,
) -> twofa_proxy::app::Running {
    start_replica_with(upstream, redis, url, clock, &[]).await
}

async fn start_replica_with(
    upstream: std::net::SocketAddr,
    redis: &RedisServer,
    url: &str,
    clock: &Arc<twofa_proxy::clock::ManualClock>,
    more: &[(&'static str, String)],
) -> twofa_proxy::app::Running {
    let mut overrides = pg_overrides(url);
    overrides.extend(more.iter().cloned());
    let overrides: Vec<(&str, &str)> = overrides.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let config = login_config(upstream, Some(redis), &overrides);
    twofa_proxy::app::start_with_clock(config, clock.clone())
        .await
        .unwrap()
}

/// End to end: PostgreSQL stopped → sign-ins answer 503 and the proxy is not ready, nothing is
/// forwarded; it comes back → the enrolled user is challenged again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "external-tools"), ignore = "needs external-tools")]
async fn postgres_stopped_refuses_sign_in_then_recovers() {
    init();
    let mut pg = PostgresServer::start();
    let url = pg.url("proxy");
    let redis = RedisServer::start();
    let (upstream, _stop) = demo_upstream().await;
    let clock = twofa_proxy::clock::ManualClock::at_now();
    let proxy = start_replica(upstream, &redis, &url, &clock).await;
    let ready = format!("http://{}/readyz", proxy.admin_addr);
    assert_eq!(get(&ready, &[]).await.status, 200);
    let mut agent = Agent::new(proxy.addr);
    password_login(&mut agent, "alice", "wonderland").await;
    let secret = enroll_totp_over_api(&mut agent, &clock).await;

    pg.stop();
    let mut fresh = Agent::new(proxy.addr);
    let res = password_login(&mut fresh, "alice", "wonderland").await;
    assert_eq!(res.status, 503, "{}", res.text());
    assert_ne!(fresh.get("/").await.status, 200);
    assert_eq!(get(&ready, &[]).await.status, 503);

    pg.restart();
    let back = Instant::now();
    let res = password_login_once_served(&mut fresh, "alice", "wonderland", 100).await;
    eprintln!(
        "postgres back: sign-ins served again after {:?}",
        back.elapsed()
    );
    assert_eq!(
        res.header("location"),
        Some("/_2fa/challenge"),
        "{}",
        res.text()
    );
    assert_eq!(get(&ready, &[]).await.status, 200);
    clock.advance(30);
    let passed = answer_totp_challenge(&mut fresh, &res, &secret, &clock).await;
    assert_eq!(passed.status, 303, "{}", passed.text());
    assert_eq!(fresh.get("/").await.status, 200);
}

/// Two replicas on one PostgreSQL and one Redis are one site: enrolled on A, challenged on B;
/// a code used on A is refused on B; wrong codes on both add up to one lockout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "external-tools"), ignore = "needs external-tools")]
async fn two_replicas_sharing_postgres_and_redis_act_as_one() {
    init();
    let pg = PostgresServer::start();
    let url = pg.url("replicas");
    let redis = RedisServer::start();
    let (upstream, _stop) = demo_upstream().await;
    let clock = twofa_proxy::clock::ManualClock::at_now();
    let a = start_replica(upstream, &redis, &url, &clock).await;
    let b = start_replica(upstream, &redis, &url, &clock).await;
    let on = |agent: &mut Agent, replica: &twofa_proxy::app::Running| {
        agent.base = format!("http://{}", replica.addr);
    };

    let mut agent = Agent::new(a.addr);
    password_login(&mut agent, "alice", "wonderland").await;
    let secret = enroll_totp_over_api(&mut agent, &clock).await;
    clock.advance(30);

    // The password on A, the code on B.
    let mut user = Agent::new(a.addr);
    let res = password_login(&mut user, "alice", "wonderland").await;
    assert_eq!(res.header("location"), Some("/_2fa/challenge"));
    on(&mut user, &b);
    let passed = answer_totp_challenge(&mut user, &res, &secret, &clock).await;
    assert_eq!(passed.status, 303, "{}", passed.text());
    assert_eq!(user.get("/").await.status, 200);
    on(&mut user, &a);
    assert_eq!(user.get("/").await.status, 200, "the session is A's too");

    // The same code again, now on A: refused (the step was claimed through the shared store).
    let code = oathtool(&secret, clock.now_secs());
    let mut replay = Agent::new(a.addr);
    let res = password_login(&mut replay, "alice", "wonderland").await;
    let page = replay.follow(&res).await;
    let csrf = input_value(&page.text(), "csrf");
    let res = replay
        .post_form("/_2fa/challenge", &[("csrf", &csrf), ("code", &code)])
        .await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED, "{}", res.text());

    // Wrong codes spread over both replicas lock the account on both (threshold 3: the replay
    // above was the first failure).
    on(&mut replay, &b);
    replay
        .post_form("/_2fa/challenge", &[("csrf", &csrf), ("code", "000000")])
        .await;
    on(&mut replay, &a);
    let res = replay
        .post_form("/_2fa/challenge", &[("csrf", &csrf), ("code", "111111")])
        .await;
    assert_eq!(res.status, StatusCode::TOO_MANY_REQUESTS, "{}", res.text());
    clock.advance(30);
    let mut locked = Agent::new(b.addr);
    let res = password_login(&mut locked, "alice", "wonderland").await;
    let good = answer_totp_challenge(&mut locked, &res, &secret, &clock).await;
    assert_eq!(
        good.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        good.text()
    );
}

/// A proxy started while PostgreSQL is down starts (no crash loop), is not ready and refuses
/// sign-ins; once the server is up it serves within about the retry pause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "external-tools"), ignore = "needs external-tools")]
async fn the_proxy_starts_with_postgres_down_and_serves_once_it_is_up() {
    init();
    let mut pg = PostgresServer::start();
    let url = pg.url("late");
    pg.stop();
    let redis = RedisServer::start();
    let (upstream, _stop) = demo_upstream().await;
    let clock = twofa_proxy::clock::ManualClock::at_now();
    let proxy = start_replica(upstream, &redis, &url, &clock).await;
    let ready = format!("http://{}/readyz", proxy.admin_addr);
    assert_eq!(get(&ready, &[]).await.status, 503);
    let mut agent = Agent::new(proxy.addr);
    let res = password_login(&mut agent, "alice", "wonderland").await;
    assert_eq!(res.status, 503, "{}", res.text());

    pg.restart();
    let up = Instant::now();
    let mut status = get(&ready, &[]).await.status;
    for _ in 0..100 {
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        status = get(&ready, &[]).await.status;
    }
    eprintln!(
        "postgres up after the proxy: ready after {:?}",
        up.elapsed()
    );
    assert_eq!(status, 200);
    let res = password_login(&mut agent, "alice", "wonderland").await;
    assert_eq!(res.status, 303, "{}", res.text());
}

/// Moving backends: the SQLite records of a running site are exported, imported into an empty
/// PostgreSQL database, and a proxy on PostgreSQL (same store) serves them at once — the import
/// took the identity over, so no confirm-records is needed — with 2FA on for the user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "external-tools"), ignore = "needs external-tools")]
async fn records_move_from_sqlite_to_postgres_by_export_and_import() {
    use twofa_proxy::records::transfer;

    init();
    let dir = TempDir::new("records-move");
    let path = dir.path("records.db");
    let sqlite = [("TWOFA_RECORDS__PATH", path.to_str().unwrap())];
    let first = site(Backend::Redis, &sqlite).await;
    let mut agent = Agent::new(first.proxy.addr);
    password_login(&mut agent, "alice", "wonderland").await;
    let secret = enroll_totp_over_api(&mut agent, &first.clock).await;
    let Site {
        proxy,
        clock,
        upstream,
        redis,
        ..
    } = first;
    proxy.shutdown();
    proxy.wait().await;
    let redis = redis.unwrap();

    let export = dir.path("export.json");
    let from = login_config(upstream, Some(&redis), &sqlite);
    transfer::export_command(&from, &export, 1).await.unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&export).unwrap().permissions().mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "the export holds email addresses and sealed keys"
    );
    assert!(
        transfer::export_command(&from, &export, 1).await.is_err(),
        "an export never overwrites a file"
    );
    let text = std::fs::read_to_string(&export).unwrap();
    assert!(text.contains("\"alice\""), "{text}");
    assert!(!text.contains(&secret), "the TOTP key stays sealed");

    let pg = PostgresServer::start();
    let url = pg.url("moved");
    let to_env = pg_overrides(&url);
    let to_env: Vec<(&str, &str)> = to_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let to = login_config(upstream, Some(&redis), &to_env);
    transfer::import_command(&to, &export, false).await.unwrap();
    let again = transfer::import_command(&to, &export, false).await;
    assert!(
        again.is_err(),
        "an import into records with users needs --merge"
    );
    transfer::import_command(&to, &export, true).await.unwrap();
    let records = twofa_proxy::records::AnyRecords::open(&to.records)
        .await
        .unwrap();
    let doc = transfer::read_file(&export).unwrap();
    let merged = records.import(&doc, true).await.unwrap();
    assert_eq!(
        (merged.users, merged.skipped),
        (0, 1),
        "a merge adds nobody twice"
    );

    let moved = start_replica(upstream, &redis, &url, &clock).await;
    let ready = format!("http://{}/readyz", moved.admin_addr);
    assert_eq!(
        get(&ready, &[]).await.status,
        200,
        "recognised without confirm-records"
    );
    let mut fresh = Agent::new(moved.addr);
    let res = password_login(&mut fresh, "alice", "wonderland").await;
    assert_eq!(
        res.header("location"),
        Some("/_2fa/challenge"),
        "{}",
        res.text()
    );
    clock.advance(30);
    let passed = answer_totp_challenge(&mut fresh, &res, &secret, &clock).await;
    assert_eq!(passed.status, 303, "{}", passed.text());
}

/// `sslmode=require` speaks TLS (the server refuses anything else) and verifies the server's
/// certificate: with the operator's CA file it connects; without it the connection is refused,
/// never made in plain text; a CA file without a certificate is refused at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "external-tools"), ignore = "needs external-tools")]
async fn postgres_over_tls_verifies_the_server_certificate() {
    init();
    let pg = PostgresServer::start_tls();
    let url = pg.url("tls");
    assert!(url.contains("sslmode=require"));
    let trusted = PostgresRecords::open(&url, Some(pg.ca_file())).unwrap();
    trusted.identity().await.unwrap();
    trusted.save_two_factor("dora", &record(3)).await.unwrap();
    assert_eq!(trusted.two_factor("dora").await.unwrap(), Some(record(3)));

    let unknown = PostgresRecords::open(&url, None).unwrap();
    let err = unknown.identity().await.unwrap_err().to_string();
    assert!(err.to_lowercase().contains("certificate"), "{err}");

    let dir = TempDir::new("ca");
    let empty = dir.path("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    assert!(PostgresRecords::open(&url, Some(&empty)).is_err());
}

/// Failover under load (bounded: 8 clients for about 6 s): signing in and browsing while
/// PostgreSQL stops and comes back. No sign-in ever skips the challenge, every refusal is a
/// clean 503, signed-in browsing goes on (it never reads the records), and sign-ins are served
/// again soon after the restart (the bound is printed and asserted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "external-tools"), ignore = "needs external-tools")]
async fn a_postgres_restart_under_load_lets_nobody_past_the_second_factor() {
    use crate::support::under_load;
    init();
    let mut pg = PostgresServer::start();
    let url = pg.url("load");
    let redis = RedisServer::start();
    let (upstream, _stop) = demo_upstream().await;
    let clock = twofa_proxy::clock::ManualClock::at_now();
    let windows = under_load::WINDOWS.map(|(k, v)| (k, v.to_owned()));
    let proxy = start_replica_with(upstream, &redis, &url, &clock, &windows).await;
    let browser = under_load::enrolled_browser(proxy.addr, &clock).await;

    let mut restart = (Instant::now(), Instant::now());
    let t = under_load::run(
        proxy.addr,
        browser.cookies.clone(),
        clock.clone(),
        Duration::from_secs(6),
        async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            tokio::task::block_in_place(|| pg.stop());
            tokio::time::sleep(Duration::from_millis(1500)).await;
            restart.0 = Instant::now();
            tokio::task::block_in_place(|| pg.restart());
            restart.1 = Instant::now();
        },
    )
    .await;
    t.assert_fail_closed();
    let back = t.back_at().unwrap();
    assert!(
        back > restart.0,
        "sign-ins were served again before the server was back"
    );
    let recovery = back.saturating_duration_since(restart.1);
    eprintln!(
        "postgres restart under load: {} challenged, {} pages browsed, {} answers 503, none \
         let through; the server took {:?} to accept queries again, sign-ins were served \
         {recovery:?} after that (0 = by the time it answered pg_isready)",
        t.challenged,
        t.browsed,
        t.refused_503,
        restart.1 - restart.0
    );
    assert!(recovery < Duration::from_secs(3), "{recovery:?}");
}
