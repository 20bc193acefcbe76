//! The records contract, run against every backend (SQLite in a file and in memory): the 2FA
//! record round trip, recovery codes used once under concurrency, removal; and durability: a
//! record written is there after the file is opened again, and a schema is migrated once.

use std::sync::Arc;

use twofa_proxy::auth::SecondFactor;
use twofa_proxy::records::Records;
use twofa_proxy::records::TwoFactorRecord;
use twofa_proxy::records::sqlite::SqliteRecords;
use twofa_proxy::words::Language;

use crate::support::agent::{Agent, input_value};
use crate::support::site::*;
use crate::support::*;

/// Each run uses its own user names so suites can share a backend.
pub(crate) async fn contract<R: Records + 'static>(records: Arc<R>, tag: &str) {
    let alice = format!("alice-{tag}");
    let bob = format!("bob-{tag}");
    records.ping().await.unwrap();
    assert_eq!(records.two_factor(&alice).await.unwrap(), None);
    let record = TwoFactorRecord {
        method: SecondFactor::Totp,
        totp_secret: Some("sealed".into()),
        email: None,
        enabled_at: 5,
        language: Some(Language::German),
    };
    records.save_two_factor(&alice, &record).await.unwrap();
    assert_eq!(
        records.two_factor(&alice).await.unwrap(),
        Some(record.clone())
    );
    let hashes: Vec<String> = (0..10).map(|i| format!("h{i}")).collect();
    records.set_recovery_codes(&alice, &hashes).await.unwrap();
    assert_eq!(records.recovery_codes_left(&alice).await.unwrap(), 10);
    let users: Vec<_> = (0..16)
        .map(|_| {
            let records = records.clone();
            let alice = alice.clone();
            tokio::spawn(async move { records.use_recovery_code(&alice, "h3").await.unwrap() })
        })
        .collect();
    let mut used = 0;
    for u in users {
        if u.await.unwrap() {
            used += 1;
        }
    }
    assert_eq!(used, 1, "a recovery code was used {used} times");
    assert!(!records.use_recovery_code(&alice, "nope").await.unwrap());
    assert!(
        !records.use_recovery_code(&bob, "h4").await.unwrap(),
        "codes are per user"
    );
    assert_eq!(records.recovery_codes_left(&alice).await.unwrap(), 9);
    records
        .set_recovery_codes(&alice, &["n1".to_owned()])
        .await
        .unwrap();
    assert!(
        !records.use_recovery_code(&alice, "h4").await.unwrap(),
        "old codes survived regeneration"
    );
    assert!(records.remove_two_factor(&alice).await.unwrap());
    assert!(!records.remove_two_factor(&alice).await.unwrap());
    assert_eq!(records.two_factor(&alice).await.unwrap(), None);
    assert_eq!(records.recovery_codes_left(&alice).await.unwrap(), 0);

    // A record with every field empty that may be.
    let plain = TwoFactorRecord {
        method: SecondFactor::Email,
        totp_secret: None,
        email: Some("b@example.com".into()),
        enabled_at: 0,
        language: None,
    };
    records.save_two_factor(&bob, &plain).await.unwrap();
    assert_eq!(records.two_factor(&bob).await.unwrap(), Some(plain.clone()));
    // Saving again replaces, it does not add.
    let changed = TwoFactorRecord {
        method: SecondFactor::Totp,
        totp_secret: Some("sealed-2".into()),
        email: None,
        ..plain
    };
    records.save_two_factor(&bob, &changed).await.unwrap();
    assert_eq!(
        records.two_factor(&bob).await.unwrap(),
        Some(changed.clone())
    );

    // The export: every user with a record, sorted, each with their own codes.
    records.save_two_factor(&alice, &record).await.unwrap();
    records
        .set_recovery_codes(&alice, &["b".to_owned(), "a".to_owned()])
        .await
        .unwrap();
    let mine: Vec<_> = records
        .export_all()
        .await
        .unwrap()
        .into_iter()
        .filter(|u| u.user.ends_with(&format!("-{tag}")))
        .collect();
    assert_eq!(mine.len(), 2);
    assert_eq!(mine[0].user, alice);
    assert_eq!(mine[0].record, record);
    assert_eq!(mine[0].recovery_hashes, ["a", "b"]);
    assert_eq!(mine[1].user, bob);
    assert_eq!(mine[1].record, changed);
    assert!(mine[1].recovery_hashes.is_empty());
    assert!(records.remove_two_factor(&alice).await.unwrap());
    assert!(records.remove_two_factor(&bob).await.unwrap());

    // The identity can be taken over (an import), and stays taken.
    let before = records.identity().await.unwrap();
    records
        .adopt_identity(&format!("adopted-{tag}"))
        .await
        .unwrap();
    assert_eq!(records.identity().await.unwrap(), format!("adopted-{tag}"));
    records.adopt_identity(&before).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_in_memory_keeps_the_contract() {
    let records = SqliteRecords::open(":memory:".as_ref()).await.unwrap();
    contract(Arc::new(records), "mem").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_in_a_file_keeps_the_contract_and_the_records() {
    let dir = TempDir::new("records");
    let path = dir.path("records.db");
    let records = Arc::new(SqliteRecords::open(&path).await.unwrap());
    contract(records.clone(), "file").await;
    let kept = TwoFactorRecord {
        method: SecondFactor::Totp,
        totp_secret: Some("sealed".into()),
        email: None,
        enabled_at: 1_700_000_000,
        language: Some(Language::English),
    };
    records.save_two_factor("carol", &kept).await.unwrap();
    records
        .set_recovery_codes("carol", &["r1".into(), "r2".into()])
        .await
        .unwrap();
    drop(records);
    // What a restart sees: the same record and codes, from the file alone.
    let reopened = SqliteRecords::open(&path).await.unwrap();
    assert_eq!(reopened.two_factor("carol").await.unwrap(), Some(kept));
    assert_eq!(reopened.recovery_codes_left("carol").await.unwrap(), 2);
    assert!(reopened.use_recovery_code("carol", "r2").await.unwrap());
}

/// An unreadable database is an outage: the proxy refuses to start on it rather than reading
/// it as "nobody has 2FA".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_is_not_a_database_is_refused() {
    let dir = TempDir::new("records-bad");
    let path = dir.path("records.db");
    std::fs::write(
        &path,
        b"not a database, but some bytes that are not SQLite's header",
    )
    .unwrap();
    assert!(SqliteRecords::open(&path).await.is_err());
}

/// Enrolls the agent's signed-in user in email codes over the JSON API, reading the code from
/// the demo outbox (`transport = "log"`).
async fn enroll_by_email(agent: &mut Agent, outbox: &mut Agent) {
    let sent = agent
        .post_json(
            "/_2fa/api/v1/email/setup",
            serde_json::json!({ "address": "alice@example.com" }),
        )
        .await;
    assert_eq!(sent.status, 200, "{}", sent.text());
    let page = outbox.get("/_2fa/outbox").await.text();
    let code: String = page
        .split("Your code is ")
        .nth(1)
        .expect("no code in the outbox")
        .chars()
        .take(6)
        .collect();
    let done = agent
        .post_json(
            "/_2fa/api/v1/email/confirm",
            serde_json::json!({ "code": code }),
        )
        .await;
    assert_eq!(done.status, 200, "{}", done.text());
}

/// A restart (a new process on the same records file, the memory store empty) keeps 2FA on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_2fa_on() {
    let dir = TempDir::new("records-restart");
    let path = dir.path("records.db");
    let overrides = [
        ("TWOFA_RECORDS__PATH", path.to_str().unwrap()),
        ("TWOFA_EMAIL__TRANSPORT", "log"),
    ];
    let first = site(Backend::Memory, &overrides).await;
    let mut agent = Agent::new(first.proxy.addr);
    password_login(&mut agent, "alice", "wonderland").await;
    enroll_by_email(&mut agent, &mut Agent::new(first.proxy.addr)).await;
    first.proxy.shutdown();
    first.proxy.wait().await;

    let second = site(Backend::Memory, &overrides).await;
    let mut fresh = Agent::new(second.proxy.addr);
    let res = password_login(&mut fresh, "alice", "wonderland").await;
    assert_eq!(res.status, 303, "{}", res.text());
    assert_eq!(res.header("location"), Some("/_2fa/challenge"));
    let status = fresh.get("/_2fa/challenge").await.text();
    assert!(status.contains("a•••@example.com"), "{status}");
}

/// The failure the records exist for: Redis restarted empty (a FLUSHALL, an eviction or a
/// failover to an empty replica do the same) must not turn anyone's 2FA off; and the code
/// used just before cannot be used again, though the emptied store forgot it was used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "external-tools"), ignore = "needs external-tools")]
async fn an_emptied_redis_turns_nobodys_2fa_off() {
    let dir = TempDir::new("records-redis");
    let path = dir.path("records.db");
    let mut site = site(
        Backend::Redis,
        &[("TWOFA_RECORDS__PATH", path.to_str().unwrap())],
    )
    .await;
    let mut agent = Agent::new(site.proxy.addr);
    password_login(&mut agent, "alice", "wonderland").await;
    let secret = enroll_totp_over_api(&mut agent, &site.clock).await;
    // A sign-in with the code of this step, just before the store is lost.
    site.clock.advance(30);
    let mut before = Agent::new(site.proxy.addr);
    let res = password_login(&mut before, "alice", "wonderland").await;
    let used = oathtool(&secret, site.clock.now_secs());
    let passed = answer_totp_challenge(&mut before, &res, &secret, &site.clock).await;
    assert_eq!(passed.status, 303, "{}", passed.text());

    site.redis.as_mut().unwrap().restart();
    let mut fresh = Agent::new(site.proxy.addr);
    let res = password_login_once_served(&mut fresh, "alice", "wonderland", 50).await;
    assert_eq!(res.status, 303, "{}", res.text());
    assert_eq!(res.header("location"), Some("/_2fa/challenge"));
    // Until the proxy learns the identity again (its check runs every 2 s) a code cannot be
    // checked against the forgotten steps; then the step of the lost sign-in stays refused.
    let client = ::redis::Client::open(site.redis.as_ref().unwrap().url()).unwrap();
    let mut conn = client.get_connection().unwrap();
    for _ in 0..100 {
        let learned: bool = ::redis::cmd("EXISTS")
            .arg("twofa:records-id")
            .query(&mut conn)
            .unwrap();
        if learned {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let page = fresh.follow(&res).await;
    let csrf = input_value(&page.text(), "csrf");
    let replay = fresh
        .post_form("/_2fa/challenge", &[("csrf", &csrf), ("code", &used)])
        .await;
    assert_eq!(
        replay.status, 401,
        "a code used before the store was lost passed again"
    );
    // The next code works: the key itself was never in the store.
    site.clock.advance(30);
    let code = oathtool(&secret, site.clock.now_secs());
    let passed = fresh
        .post_form("/_2fa/challenge", &[("csrf", &csrf), ("code", &code)])
        .await;
    assert_eq!(passed.status, 303, "{}", passed.text());
    assert_eq!(fresh.get("/").await.status, 200);
}

/// The identity check on its own: a store learns the records it first serves with, trusts them
/// again, and refuses others until an operator confirms them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_that_are_not_the_ones_served_with_are_refused_until_confirmed() {
    use twofa_proxy::records::AnyRecords;
    use twofa_proxy::records::identity::{Verdict, check, confirm};
    use twofa_proxy::store::AnyStore;
    use twofa_proxy::store::memory::MemoryStore;
    const NOW: u64 = 1_800_000_000;

    let dir = TempDir::new("identity");
    let store = AnyStore::Memory(Box::new(MemoryStore::new(
        twofa_proxy::clock::ManualClock::at_now(),
    )));
    let config = |name: &str| twofa_proxy::config::RecordsConfig {
        backend: twofa_proxy::config::RecordsBackend::Sqlite,
        path: dir.path(name),
        url: twofa_proxy::config::Secret::new(String::new()),
        ca_file: None,
        identity: None,
    };
    let first = AnyRecords::open(&config("first.db")).await.unwrap();
    // Untrusted until checked: reads fail instead of answering "no 2FA".
    assert!(first.two_factor("alice").await.is_err());
    assert_eq!(check(&store, &first, NOW).await.unwrap(), Verdict::Learned);
    assert_eq!(first.two_factor("alice").await.unwrap(), None);
    assert_eq!(check(&store, &first, NOW).await.unwrap(), Verdict::Same);
    // The same file opened again is the same records.
    let again = AnyRecords::open(&config("first.db")).await.unwrap();
    assert_eq!(check(&store, &again, NOW).await.unwrap(), Verdict::Same);

    let other = AnyRecords::open(&config("other.db")).await.unwrap();
    assert_eq!(check(&store, &other, NOW).await.unwrap(), Verdict::Replaced);
    assert!(!other.trusted());
    assert!(other.two_factor("alice").await.is_err());
    assert!(other.save_two_factor("alice", &sample()).await.is_err());
    confirm(&store, &other, NOW).await.unwrap();
    assert!(other.trusted());
    assert_eq!(check(&store, &other, NOW).await.unwrap(), Verdict::Same);
    // Now the first records are the strangers.
    assert_eq!(check(&store, &first, NOW).await.unwrap(), Verdict::Replaced);

    // Pinned in the config: records with another identity are refused even by a store that
    // knows none (both emptied together), and cannot be confirmed; the pinned ones are served
    // whatever the store remembers.
    let first_id = first.identity().await.unwrap();
    let pinned = |name: &str, id: &str| twofa_proxy::config::RecordsConfig {
        identity: Some(id.to_owned()),
        ..config(name)
    };
    let empty_store = AnyStore::Memory(Box::new(MemoryStore::new(
        twofa_proxy::clock::ManualClock::at_now(),
    )));
    let stranger = AnyRecords::open(&pinned("third.db", &first_id))
        .await
        .unwrap();
    assert_eq!(
        check(&empty_store, &stranger, NOW).await.unwrap(),
        Verdict::Replaced
    );
    assert!(confirm(&empty_store, &stranger, NOW).await.is_err());
    assert!(!stranger.trusted());
    let right = AnyRecords::open(&pinned("first.db", &first_id))
        .await
        .unwrap();
    assert_eq!(check(&store, &right, NOW).await.unwrap(), Verdict::Learned);
    assert_eq!(check(&store, &right, NOW).await.unwrap(), Verdict::Same);
}

fn sample() -> TwoFactorRecord {
    TwoFactorRecord {
        method: SecondFactor::Totp,
        totp_secret: Some("sealed".into()),
        email: None,
        enabled_at: 1,
        language: None,
    }
}

/// End to end: a lost records volume (the file gone, an empty one in its place) does not let
/// an enrolled user in with the password alone; putting the file back does, with 2FA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "external-tools"), ignore = "needs external-tools")]
async fn a_lost_records_volume_refuses_sign_in_instead_of_turning_2fa_off() {
    let dir = TempDir::new("records-lost");
    let path = dir.path("records.db");
    let token = "records-test-admin-token-of-32-chars-or-more";
    let overrides = [
        ("TWOFA_RECORDS__PATH", path.to_str().unwrap()),
        ("TWOFA_SECRETS__ADMIN_TOKEN", token),
    ];
    let first = site(Backend::Redis, &overrides).await;
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
    // Stopped for good (its database closed) before the files move.
    proxy.shutdown();
    proxy.wait().await;
    let redis = redis.unwrap();
    let start = |overrides: &[(&str, &str)]| {
        let config = login_config(upstream, Some(&redis), overrides);
        twofa_proxy::app::start_with_clock(config, clock.clone())
    };

    // The volume is lost: the proxy starts on an empty database in its place.
    // The whole database goes: the file and its write-ahead log.
    let files = ["records.db", "records.db-wal", "records.db-shm"];
    let kept = TempDir::new("records-kept");
    for f in files {
        let _ = std::fs::rename(dir.path(f), kept.path(f));
    }
    let lost = start(&overrides).await.unwrap();
    let mut fresh = Agent::new(lost.addr);
    let res = password_login(&mut fresh, "alice", "wonderland").await;
    assert_eq!(res.status, 503, "signed in past 2FA: {}", res.text());
    assert!(fresh.get("/").await.status != 200);
    let ready = get(&format!("http://{}/readyz", lost.admin_addr), &[]).await;
    assert_eq!(ready.status, 503);
    assert!(ready.text().contains("confirm-records"), "{}", ready.text());
    lost.shutdown();
    lost.wait().await;

    // The file is back: the user is asked for the second factor again.
    for f in files {
        let _ = std::fs::remove_file(dir.path(f));
        let _ = std::fs::rename(kept.path(f), dir.path(f));
    }
    let back = start(&overrides).await.unwrap();
    let mut fresh = Agent::new(back.addr);
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
    back.shutdown();
    back.wait().await;

    // An operator may instead accept other records (here: an empty one) with the admin API.
    let other = dir.path("other.db");
    let elsewhere = [
        ("TWOFA_RECORDS__PATH", other.to_str().unwrap()),
        ("TWOFA_SECRETS__ADMIN_TOKEN", token),
    ];
    let moved = start(&elsewhere).await.unwrap();
    let url = format!("http://{}/readyz", moved.admin_addr);
    assert_eq!(get(&url, &[]).await.status, 503);
    let confirmed = send(
        http::Request::post(format!(
            "http://{}/admin/v1/records/confirm",
            moved.admin_addr
        ))
        .header("authorization", format!("Bearer {token}"))
        .body(full(""))
        .unwrap(),
    )
    .await;
    assert_eq!(confirmed.status, 200, "{}", confirmed.text());
    assert_eq!(get(&url, &[]).await.status, 200);
}

/// An upgrade from a proxy that kept the 2FA records in Redis: they are imported into the
/// records at the first start, so the upgrade turns nobody's 2FA off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "external-tools"), ignore = "needs external-tools")]
async fn an_upgrade_from_records_in_redis_keeps_2fa_on() {
    let old = site(Backend::Redis, &[]).await;
    let redis = old.redis.as_ref().unwrap();
    // What the earlier proxy wrote (store/redis.rs before records/): `Pu:user` and `Prc:user`,
    // and no records identity yet.
    let client = ::redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let legacy = r#"{"method":"email","totp_secret":null,"email":"alice@example.com","enabled_at":1700000000}"#;
    ::redis::cmd("SET")
        .arg("twofa:u:alice")
        .arg(legacy)
        .exec(&mut conn)
        .unwrap();
    ::redis::cmd("SADD")
        .arg("twofa:rc:alice")
        .arg("h1")
        .arg("h2")
        .exec(&mut conn)
        .unwrap();
    ::redis::cmd("DEL")
        .arg("twofa:records-id")
        .exec(&mut conn)
        .unwrap();

    let dir = TempDir::new("records-upgrade");
    let path = dir.path("records.db");
    let config = login_config(
        old.upstream,
        Some(redis),
        &[("TWOFA_RECORDS__PATH", path.to_str().unwrap())],
    );
    let new = twofa_proxy::app::start_with_clock(config, old.clock.clone())
        .await
        .unwrap();
    let mut agent = Agent::new(new.addr);
    let res = password_login(&mut agent, "alice", "wonderland").await;
    assert_eq!(
        res.header("location"),
        Some("/_2fa/challenge"),
        "{}",
        res.text()
    );
    let page = agent.get("/_2fa/challenge").await.text();
    assert!(page.contains("a•••@example.com"), "{page}");

    let records = SqliteRecords::open(&path).await.unwrap();
    assert_eq!(records.recovery_codes_left("alice").await.unwrap(), 2);
    // The old keys stay, for a rollback.
    let still: bool = ::redis::cmd("EXISTS")
        .arg("twofa:u:alice")
        .query(&mut conn)
        .unwrap();
    assert!(still);
}

/// The operators' commands on the real binary: `migrate` creates and migrates the file,
/// `admin export` writes it out, `admin import` refuses a file that is not an export and loads
/// one into new records; an export of a file that does not exist is refused, not empty.
#[test]
fn migrate_export_and_import_commands() {
    use std::process::Command;
    let dir = TempDir::new("records-cli");
    let run = |records: &std::path::Path, args: &[&str]| {
        let config = dir.path("config.toml");
        std::fs::write(
            &config,
            format!(
                "[upstream]\nurl = \"http://127.0.0.1:9\"\n[records]\npath = {:?}\n",
                records.to_str().unwrap()
            ),
        )
        .unwrap();
        Command::new(env!("CARGO_BIN_EXE_twofa-proxy"))
            .arg("--config")
            .arg(&config)
            .args(args)
            .env_remove("TWOFA_LOG")
            .output()
            .unwrap()
    };
    let db = dir.path("records.db");
    let out = run(&dir.path("typo.db"), &["admin", "export"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such file"));
    assert!(
        !dir.path("typo.db").exists(),
        "the export created a database"
    );

    let out = run(&db, &["migrate"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let export = dir.path("export.json");
    let out = run(&db, &["admin", "export", "-o", export.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&export).unwrap()).unwrap();
    assert_eq!(doc["format"], "twofa-proxy records");
    assert_eq!(doc["users"], serde_json::json!([]));

    let junk = dir.path("junk.json");
    std::fs::write(
        &junk,
        r#"{"format":"other","version":1,"identity":"x","exported_at":0,"users":[]}"#,
    )
    .unwrap();
    let other = dir.path("other.db");
    let out = run(&other, &["admin", "import", junk.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a records export"));
    assert!(!other.exists(), "a refused import created a database");
    let out = run(&other, &["admin", "import", export.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("took the export's identity"));
}
