//! The Redis store on replicated Redis: the store contract on Sentinel (1 master, 1 replica, 3
//! sentinels) and on a Cluster (3 masters); failovers (kill -9 of the master) during which
//! every call fails as a `StoreError` or answers right, and after which the store works on the
//! new master within a measured time (printed; run with `--nocapture` to see it), never on an
//! old master that came back empty; `rediss://` with `[store] ca_file`; and the proxy itself
//! through a Sentinel failover: 503 or a verified session, never a request forwarded without
//! one; and on a Cluster and on Sentinel with every data node emptied, 2FA still asked for.

use std::sync::Arc;
use std::time::{Duration, Instant};

use twofa_proxy::config::{RedisMode, StoreBackend, StoreConfig};
use twofa_proxy::store::redis::RedisStore;
use twofa_proxy::store::{SessionRecord, Store, StoreError};

use crate::store::{contract, session};
use crate::support::agent::Agent;
use crate::support::redis_ha::{self, MASTER_NAME, RedisCluster, RedisSentinel};
use crate::support::site::*;
use crate::support::{TempDir, demo_upstream, init, under_load};
use tokio_util::sync::CancellationToken;

const TTL: Duration = Duration::from_secs(300);
/// How long a failover may take before the test gives up: Sentinel needs down-after (1 s)
/// plus an election, a Cluster node-timeout (2 s) plus an election; measured ~2.5 s and ~4 s.
const FAILOVER_LIMIT: Duration = Duration::from_secs(30);

fn redis_config(prefix: &str, mode: RedisMode) -> StoreConfig {
    StoreConfig {
        backend: StoreBackend::Redis,
        url: String::new(),
        key_prefix: prefix.to_owned(),
        mode,
        username: None,
        password: None,
        tls: false,
        ca_file: None,
    }
}

fn host_ports(addrs: &[String]) -> Vec<(String, u16)> {
    addrs
        .iter()
        .map(|a| {
            let (h, p) = a.rsplit_once(':').unwrap();
            (h.to_owned(), p.parse().unwrap())
        })
        .collect()
}

fn sentinel_mode(ha: &RedisSentinel) -> RedisMode {
    RedisMode::Sentinel {
        sentinels: host_ports(&ha.sentinel_addrs()),
        master_name: MASTER_NAME.to_owned(),
        sentinel_password: None,
        db: 0,
    }
}

fn cluster_mode(c: &RedisCluster) -> RedisMode {
    RedisMode::Cluster {
        nodes: host_ports(&c.node_addrs()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sentinel_store_keeps_the_contract() {
    let ha = RedisSentinel::start();
    let store = RedisStore::open(&redis_config("test:", sentinel_mode(&ha)))
        .await
        .unwrap();
    contract(Arc::new(store), "sentinel").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_store_keeps_the_contract() {
    let cluster = RedisCluster::start(3, 0);
    let store = RedisStore::open(&redis_config("test:", cluster_mode(&cluster)))
        .await
        .unwrap();
    contract(Arc::new(store), "cluster").await;
    // Every key sits under the one hash tag, on the one master that serves it.
    let home = cluster.master_of("{test:}");
    for addr in cluster.node_addrs() {
        let port: u16 = addr.rsplit_once(':').unwrap().1.parse().unwrap();
        if port != home {
            assert_eq!(
                RedisCluster::dbsize(port),
                0,
                "a key outside the tag's slot"
            );
        }
    }
    assert!(RedisCluster::dbsize(home) > 0);
}

/// The data nodes' ACL user and password (`[store] username`, `password`) reach the master the
/// sentinels name; a wrong password is refused at start, and never quoted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sentinel_store_signs_in_with_the_configured_user() {
    let ha =
        RedisSentinel::start_with(&["--user", "twofa", "on", ">s3cret-pw", "~*", "&*", "+@all"]);
    let mut config = redis_config("acl:", sentinel_mode(&ha));
    config.username = Some("twofa".into());
    config.password = Some(twofa_proxy::config::Secret::new("wrong-pw".into()));
    let Err(e) = RedisStore::open(&config).await else {
        panic!("a wrong password was accepted");
    };
    assert!(!e.to_string().contains("wrong-pw"), "{e}");
    config.password = Some(twofa_proxy::config::Secret::new("s3cret-pw".into()));
    let store = RedisStore::open(&config).await.unwrap();
    store.put_session("s", &session("a"), TTL).await.unwrap();
    assert_eq!(store.session("s").await.unwrap(), Some(session("a")));
    let whoami: String = redis_ha::query(ha.master_port().unwrap(), &["CLIENT", "LIST"]).unwrap();
    assert!(
        whoami.contains("user=twofa"),
        "the store did not sign in as twofa"
    );
}

/// What a failover looks like from the store: after the kill, calls fail (as `StoreError`,
/// never as a wrong answer such as "no such session") until the store serves from the new
/// master, with the data the old one had replicated.
async fn ride_out_failover(
    store: &RedisStore,
    before: &SessionRecord,
    killed: Instant,
) -> Duration {
    let mut failed = 0u32;
    for i in 0u32.. {
        assert!(
            killed.elapsed() < FAILOVER_LIMIT,
            "no service within {FAILOVER_LIMIT:?} ({failed} calls failed)"
        );
        match store.session("before").await {
            Ok(Some(s)) => assert_eq!(&s, before),
            Ok(None) => panic!("a wrong answer: the session from before the kill is missing"),
            Err(StoreError::Unavailable(_)) => failed += 1,
            Err(e) => panic!("not an outage: {e}"),
        }
        let id = format!("during-{i}");
        match store.put_session(&id, &session("bob"), TTL).await {
            Ok(()) => {
                assert_eq!(store.session(&id).await.unwrap(), Some(session("bob")));
                if failed > 0 {
                    return killed.elapsed();
                }
            }
            Err(StoreError::Unavailable(_)) => failed += 1,
            Err(e) => panic!("not an outage: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    unreachable!()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sentinel_failover_fails_closed_then_finds_the_new_master_never_the_old() {
    let mut ha = RedisSentinel::start();
    let store = RedisStore::open(&redis_config("fo:", sentinel_mode(&ha)))
        .await
        .unwrap();
    let before = session("alice");
    store.put_session("before", &before, TTL).await.unwrap();
    ha.sync_replica();
    let old = ha.first_master;

    ha.kill_master();
    let killed = Instant::now();
    let took = ride_out_failover(&store, &before, killed).await;
    eprintln!("sentinel failover: store served again {took:?} after kill -9 of the master");
    let new = ha.master_port().unwrap();
    assert_ne!(new, old);
    assert_eq!(new, ha.replica_port());

    // The old master comes back empty and stays a master (no sentinel can demote it). The
    // store's connection to the new master is cut, so it must ask again: it still finds the
    // new one, and the old one gets nothing.
    ha.restart_old_master_empty();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cut: i64 = redis_ha::query(new, &["CLIENT", "KILL", "TYPE", "normal"]).unwrap();
    assert!(cut > 0, "the store had no connection to the new master");
    for i in 0..20 {
        let id = format!("after-{i}");
        match store.put_session(&id, &session("carol"), TTL).await {
            Ok(()) => assert_eq!(store.session(&id).await.unwrap(), Some(session("carol"))),
            Err(StoreError::Unavailable(_)) => {}
            Err(e) => panic!("{e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(store.session("before").await.unwrap(), Some(before));
    assert_eq!(
        RedisSentinel::dbsize(old),
        0,
        "the store wrote to the old master that came back empty"
    );
}

/// A master cut off from the sentinels but not from the proxy (frozen with SIGSTOP, then
/// thawed): the sentinels promote the replica, the old master comes back still a master with
/// the store's connection open. The store's watch of the sentinels drops that connection, so
/// later writes go to the new master, none to the old.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sentinel_store_leaves_a_master_the_sentinels_replaced_behind_its_back() {
    let ha = RedisSentinel::start_undemotable();
    let store = RedisStore::open(&redis_config("split:", sentinel_mode(&ha)))
        .await
        .unwrap();
    store
        .put_session("before", &session("alice"), TTL)
        .await
        .unwrap();
    ha.sync_replica();
    let old = ha.first_master;
    ha.freeze_master(true);
    let frozen = Instant::now();
    while ha.master_port() == Some(old) {
        assert!(
            frozen.elapsed() < FAILOVER_LIMIT,
            "the sentinels did not fail over"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let new = ha.master_port().unwrap();
    ha.freeze_master(false);
    assert_eq!(
        redis_ha::role(old),
        "master",
        "the old master was demoted after all"
    );
    // The watch asks every second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for i in 0..10 {
        let id = format!("after-{i}");
        match store.put_session(&id, &session("bob"), TTL).await {
            Ok(()) => {
                let key = store_key("split:", &id);
                let on_old: i64 = redis_ha::query(old, &["EXISTS", &key]).unwrap();
                assert_eq!(on_old, 0, "a write went to the replaced master");
                let on_new: i64 = redis_ha::query(new, &["EXISTS", &key]).unwrap();
                assert_eq!(on_new, 1, "a write acknowledged but not on the new master");
            }
            Err(StoreError::Unavailable(_)) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(
        store.session("before").await.unwrap(),
        Some(session("alice"))
    );
}

/// A failover the sentinels are asked for (`SENTINEL FAILOVER`): the old master lives on as a
/// replica, its connections may stay open. The store's next write there meets READONLY, so it
/// asks the sentinels and goes on with the new master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sentinel_store_follows_a_requested_failover() {
    let ha = RedisSentinel::start();
    let store = RedisStore::open(&redis_config("manual:", sentinel_mode(&ha)))
        .await
        .unwrap();
    store
        .put_session("before", &session("alice"), TTL)
        .await
        .unwrap();
    ha.sync_replica();
    let old = ha.first_master;
    let _: () = ha.ask_failover().unwrap();
    let asked = Instant::now();
    while ha.master_port() == Some(old) {
        assert!(
            asked.elapsed() < FAILOVER_LIMIT,
            "the sentinels did not fail over"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let switched = asked.elapsed();
    let new = ha.master_port().unwrap();
    // The old master must have turned replica too before the writes below are meaningful.
    while redis_ha::role(old) != "slave" {
        assert!(
            asked.elapsed() < FAILOVER_LIMIT,
            "the old master was not demoted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut written = 0;
    for i in 0..40 {
        let id = format!("after-{i}");
        match store.put_session(&id, &session("bob"), TTL).await {
            Ok(()) => {
                written += 1;
                let on_new: i64 =
                    redis_ha::query(new, &["EXISTS", &store_key("manual:", &id)]).unwrap();
                assert_eq!(on_new, 1, "a write acknowledged but not on the new master");
            }
            Err(StoreError::Unavailable(_)) => {}
            Err(e) => panic!("{e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "requested sentinel failover: sentinels switched {switched:?} after the request; \
         {written}/40 store writes after it succeeded, all on the new master"
    );
    assert!(written >= 30, "the store did not follow the new master");
    assert_eq!(
        store.session("before").await.unwrap(),
        Some(session("alice"))
    );
}

/// The key a session id is stored under (redis.rs: `Ps:H(id)`).
fn store_key(prefix: &str, id: &str) -> String {
    use base64::Engine as _;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, id.as_bytes());
    format!(
        "{prefix}s:{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref())
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_failover_fails_closed_then_serves_from_the_promoted_replica() {
    let mut cluster = RedisCluster::start(3, 1);
    let store = RedisStore::open(&redis_config("fo:", cluster_mode(&cluster)))
        .await
        .unwrap();
    let before = session("alice");
    store.put_session("before", &before, TTL).await.unwrap();
    let home = cluster.master_of("{fo:}");
    redis_ha::sync_replicas_of(home);

    cluster.kill(home);
    let killed = Instant::now();
    let took = ride_out_failover(&store, &before, killed).await;
    eprintln!("cluster failover: store served again {took:?} after kill -9 of the master");
    // The nodes agree on the new owner of the slot within moments of serving from it.
    while cluster.master_of("{fo:}") == home {
        assert!(
            killed.elapsed() < FAILOVER_LIMIT,
            "the slot still names the dead master"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_trusts_the_ca_file_and_only_it() {
    crate::support::init();
    let dir = TempDir::new("redis-tls");
    let (cert, key) = crate::support::self_signed(&dir.0);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = std::process::Command::new("redis-server")
        .args([
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(["--tls-port", &port.to_string(), "--tls-auth-clients", "no"])
        .arg("--tls-cert-file")
        .arg(&cert)
        .arg("--tls-key-file")
        .arg(&key)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "redis-server with TLS did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut config = redis_config("tls:", RedisMode::Standalone);
    config.url = format!("rediss://localhost:{port}/0");
    config.tls = true;
    let untrusted = RedisStore::open(&config).await;
    assert!(
        untrusted.is_err(),
        "a certificate outside the system roots was accepted"
    );
    config.ca_file = Some(cert);
    let store = RedisStore::open(&config).await.unwrap();
    store.ping().await.unwrap();
    store.put_session("s", &session("a"), TTL).await.unwrap();
    assert_eq!(store.session("s").await.unwrap(), Some(session("a")));
    config.ca_file = Some(dir.path("missing.pem"));
    let Err(e) = RedisStore::open(&config).await else {
        panic!("a missing CA file was accepted");
    };
    assert!(e.to_string().contains("store.ca_file"), "{e}");
    let _ = child.kill();
    let _ = child.wait();
}

/// The proxy on Sentinel through a failover: an enrolled user's requests answer 503 or pass
/// with the verified session; a password alone never reaches the app; afterwards both work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_on_sentinel_fails_closed_through_a_failover() {
    init();
    let mut ha = RedisSentinel::start();
    let (upstream, _stop) = demo_upstream().await;
    let sentinels = ha.sentinel_addrs().join(",");
    let config = login_config(
        upstream,
        None,
        &[
            ("TWOFA_STORE__BACKEND", "redis"),
            ("TWOFA_STORE__MODE", "sentinel"),
            ("TWOFA_STORE__SENTINELS", &sentinels),
            ("TWOFA_STORE__MASTER_NAME", MASTER_NAME),
            ("TWOFA_SECRETS__ENCRYPTION_KEY", TEST_KEY),
        ],
    );
    let clock = twofa_proxy::clock::ManualClock::at_now();
    let proxy = twofa_proxy::app::start_with_clock(config, clock.clone())
        .await
        .unwrap();
    let mut enrolled = Agent::new(proxy.addr);
    password_login(&mut enrolled, "alice", "wonderland").await;
    let secret = enroll_totp_over_api(&mut enrolled, &clock).await;
    assert_eq!(enrolled.get("/").await.status, 200);
    ha.sync_replica();

    ha.kill_master();
    let killed = Instant::now();
    let mut refused = 0u32;
    let back = loop {
        assert!(
            killed.elapsed() < FAILOVER_LIMIT,
            "the proxy did not recover"
        );
        // The signed-in user: served with the session, or 503; nothing else.
        let page = enrolled.get("/").await;
        match page.status.as_u16() {
            200 => {}
            503 => refused += 1,
            other => panic!("signed-in user got {other}: {}", page.text()),
        }
        // A password alone: the challenge or 503, never the app.
        let mut stranger = Agent::new(proxy.addr);
        let res = password_login(&mut stranger, "alice", "wonderland").await;
        match res.status.as_u16() {
            303 => assert_eq!(res.header("location"), Some("/_2fa/challenge")),
            503 => refused += 1,
            other => panic!("a password alone got {other}: {}", res.text()),
        }
        assert_ne!(stranger.get("/").await.status, 200, "forwarded without 2FA");
        if page.status == 200 && res.status == 303 && refused > 0 {
            break killed.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!(
        "proxy on sentinel: {refused} answers were 503; service back {back:?} after the kill"
    );
    // Service is back: a new sign-in passes with the code.
    let mut fresh = Agent::new(proxy.addr);
    let res = password_login(&mut fresh, "alice", "wonderland").await;
    assert_eq!(res.header("location"), Some("/_2fa/challenge"));
    clock.advance(30);
    let passed = answer_totp_challenge(&mut fresh, &res, &secret, &clock).await;
    assert_eq!(passed.status, 303, "{}", passed.text());
    assert_eq!(fresh.get("/").await.status, 200);
    proxy.shutdown();
    proxy.wait().await;
}

/// Every data node of the deployment emptied (FLUSHALL on each: what a restart without
/// persistence, an eviction storm or a failover to an empty replica leaves): the enrolled user
/// is signed out but challenged again, never let in with the password alone — the 2FA records
/// live in the records, not in Redis. Through the proxy on a Cluster and on Sentinel.
async fn emptied_redis_keeps_2fa(env: &[(&str, &str)], flush: impl Fn()) {
    let (upstream, _stop) = demo_upstream().await;
    let mut all = vec![
        ("TWOFA_STORE__BACKEND", "redis"),
        ("TWOFA_SECRETS__ENCRYPTION_KEY", TEST_KEY),
    ];
    all.extend_from_slice(env);
    let config = login_config(upstream, None, &all);
    let clock = twofa_proxy::clock::ManualClock::at_now();
    let proxy = twofa_proxy::app::start_with_clock(config, clock.clone())
        .await
        .unwrap();
    let mut enrolled = Agent::new(proxy.addr);
    password_login(&mut enrolled, "alice", "wonderland").await;
    let secret = enroll_totp_over_api(&mut enrolled, &clock).await;
    assert_eq!(enrolled.get("/").await.status, 200);

    flush();
    // Sessions read in the last `session.cache_ttl` (2 s) may be served that long from the
    // replica's cache; past it the emptied store signs the user out.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_ne!(
        enrolled.get("/").await.status,
        200,
        "the session outlived the store"
    );
    let mut fresh = Agent::new(proxy.addr);
    let res = password_login_once_served(&mut fresh, "alice", "wonderland", 50).await;
    assert_eq!(
        res.header("location"),
        Some("/_2fa/challenge"),
        "{}",
        res.text()
    );
    assert_ne!(fresh.get("/").await.status, 200, "forwarded without 2FA");
    clock.advance(30);
    let passed = answer_totp_challenge(&mut fresh, &res, &secret, &clock).await;
    assert_eq!(passed.status, 303, "{}", passed.text());
    assert_eq!(fresh.get("/").await.status, 200);
    proxy.shutdown();
    proxy.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_on_a_cluster_keeps_2fa_when_every_node_is_emptied() {
    init();
    let cluster = RedisCluster::start(3, 0);
    let nodes = cluster.node_addrs();
    let joined = nodes.join(",");
    emptied_redis_keeps_2fa(
        &[
            ("TWOFA_STORE__MODE", "cluster"),
            ("TWOFA_STORE__NODES", &joined),
        ],
        || {
            for addr in &nodes {
                let port: u16 = addr.rsplit_once(':').unwrap().1.parse().unwrap();
                redis_ha::query::<()>(port, &["FLUSHALL"]).unwrap();
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_on_sentinel_keeps_2fa_when_the_data_is_emptied() {
    init();
    let ha = RedisSentinel::start();
    let sentinels = ha.sentinel_addrs().join(",");
    let master = ha.master_port().unwrap();
    emptied_redis_keeps_2fa(
        &[
            ("TWOFA_STORE__MODE", "sentinel"),
            ("TWOFA_STORE__SENTINELS", &sentinels),
            ("TWOFA_STORE__MASTER_NAME", MASTER_NAME),
        ],
        || {
            // The replica follows the master's FLUSHALL.
            redis_ha::query::<()>(master, &["FLUSHALL"]).unwrap();
            ha.sync_replica();
        },
    )
    .await;
}

/// A proxy on replicated Redis with an enrolled user and a signed-in browser; ready for a load.
async fn loaded_site(
    env: &[(&str, &str)],
) -> (
    twofa_proxy::app::Running,
    Agent,
    Arc<twofa_proxy::clock::ManualClock>,
    CancellationToken,
) {
    let (upstream, stop) = demo_upstream().await;
    let mut all = vec![
        ("TWOFA_STORE__BACKEND", "redis"),
        ("TWOFA_SECRETS__ENCRYPTION_KEY", TEST_KEY),
    ];
    all.extend_from_slice(env);
    all.extend_from_slice(&under_load::WINDOWS);
    let config = login_config(upstream, None, &all);
    let clock = twofa_proxy::clock::ManualClock::at_now();
    let proxy = twofa_proxy::app::start_with_clock(config, clock.clone())
        .await
        .unwrap();
    let browser = under_load::enrolled_browser(proxy.addr, &clock).await;
    (proxy, browser, clock, stop)
}

/// Failover under load (8 clients, 8 s): the Sentinel master killed while users sign in and
/// browse. Nobody gets past the second factor, every refusal is a clean 503, service returns
/// within the bound the README states.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_under_load_lets_nobody_past_the_second_factor() {
    init();
    let mut ha = RedisSentinel::start();
    let sentinels = ha.sentinel_addrs().join(",");
    let (proxy, browser, clock, _stop) = loaded_site(&[
        ("TWOFA_STORE__MODE", "sentinel"),
        ("TWOFA_STORE__SENTINELS", &sentinels),
        ("TWOFA_STORE__MASTER_NAME", MASTER_NAME),
    ])
    .await;
    ha.sync_replica();
    let mut killed = Instant::now();
    let t = under_load::run(
        proxy.addr,
        browser.cookies.clone(),
        clock,
        Duration::from_secs(8),
        async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            killed = Instant::now();
            tokio::task::block_in_place(|| ha.kill_master());
        },
    )
    .await;
    t.assert_fail_closed();
    let back = t.back_at().unwrap() - killed;
    eprintln!(
        "sentinel failover under load: {} challenged, {} pages, {} answers 503, none let \
         through; served again {back:?} after kill -9 of the master",
        t.challenged, t.browsed, t.refused_503
    );
    assert!(back < Duration::from_secs(6), "{back:?}");
}

/// The same on a Cluster (3 masters, 3 replicas): the master of the store's slot killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_failover_under_load_lets_nobody_past_the_second_factor() {
    init();
    let mut cluster = RedisCluster::start(3, 1);
    let nodes = cluster.node_addrs().join(",");
    let (proxy, browser, clock, _stop) = loaded_site(&[
        ("TWOFA_STORE__MODE", "cluster"),
        ("TWOFA_STORE__NODES", &nodes),
    ])
    .await;
    // The default prefix, as a tag: every key of the proxy is in this slot.
    let home = cluster.master_of("{twofa:}");
    redis_ha::sync_replicas_of(home);
    let mut killed = Instant::now();
    let t = under_load::run(
        proxy.addr,
        browser.cookies.clone(),
        clock,
        Duration::from_secs(10),
        async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            killed = Instant::now();
            tokio::task::block_in_place(|| cluster.kill(home));
        },
    )
    .await;
    t.assert_fail_closed();
    let back = t.back_at().unwrap() - killed;
    eprintln!(
        "cluster failover under load: {} challenged, {} pages, {} answers 503, none let \
         through; served again {back:?} after kill -9 of the slot's master",
        t.challenged, t.browsed, t.refused_503
    );
    assert!(back < Duration::from_secs(8), "{back:?}");
}
