//! The store contract, run against every backend: what the login flow relies on, including
//! the atomic operations (single-use pending logins and email codes, one TOTP step once). The
//! durable 2FA records have their own contract (records.rs).

use std::sync::Arc;
use std::time::Duration;

use twofa_proxy::clock::ManualClock;
use twofa_proxy::store::memory::MemoryStore;
use twofa_proxy::store::redis::RedisStore;
use twofa_proxy::store::{
    EmailCode, Enrollment, PendingLogin, Reserved, SessionRecord, Store, StoreError,
};

use crate::support::redis::RedisServer;

const TTL: Duration = Duration::from_secs(300);

pub(crate) fn session(user: &str) -> SessionRecord {
    SessionRecord {
        user: user.into(),
        created: 1,
        last_seen: 2,
        csrf: "c".into(),
        must_enroll: false,
        held: None,
        email: Some(format!("{user}@example.com")),
        app_cookie: None,
        app_cookie_prev: None,
    }
}

fn pending(user: &str) -> PendingLogin {
    PendingLogin {
        user: user.into(),
        created: 1,
        held: "sealed".into(),
        csrf: "t".into(),
        json: false,
        email: None,
        client: Some("192.0.2.1".into()),
    }
}

/// Each run uses its own user and id names so suites can share a backend.
pub(crate) async fn contract<S: Store + 'static>(store: Arc<S>, tag: &str) {
    let alice = format!("alice-{tag}");
    let bob = format!("bob-{tag}");
    store.ping().await.unwrap();
    // What the identity check does before anything is served (a shared store refuses TOTP
    // claims without it).
    store
        .remember_records_identity(&format!("records-{tag}"), 0)
        .await
        .unwrap();

    // Sessions: round trip, delete, end all of a user's but one.
    let (s1, s2, s3, s4) = (
        format!("s1-{tag}"),
        format!("s2-{tag}"),
        format!("s3-{tag}"),
        format!("s4-{tag}"),
    );
    assert_eq!(store.session(&s1).await.unwrap(), None);
    store.put_session(&s1, &session(&alice), TTL).await.unwrap();
    store.put_session(&s2, &session(&alice), TTL).await.unwrap();
    store.put_session(&s3, &session(&alice), TTL).await.unwrap();
    store.put_session(&s4, &session(&bob), TTL).await.unwrap();
    assert_eq!(store.session(&s1).await.unwrap(), Some(session(&alice)));
    store.delete_session(&s1).await.unwrap();
    assert_eq!(store.session(&s1).await.unwrap(), None);
    assert_eq!(store.end_user_sessions(&alice, Some(&s3)).await.unwrap(), 1);
    assert_eq!(store.session(&s2).await.unwrap(), None);
    assert!(
        store.session(&s3).await.unwrap().is_some(),
        "the kept session ended"
    );
    assert!(
        store.session(&s4).await.unwrap().is_some(),
        "another user's session ended"
    );
    assert_eq!(store.end_user_sessions(&alice, None).await.unwrap(), 1);
    assert_eq!(store.session(&s3).await.unwrap(), None);
    // Sessions bound to one app session end together, whoever their user; the binding before
    // the app's last rotation counts too.
    let app = format!("app-{tag}");
    let other_app = format!("other-app-{tag}");
    let bound = |user: &str, now: Option<&str>, prev: Option<&str>| SessionRecord {
        app_cookie: now.map(str::to_owned),
        app_cookie_prev: prev.map(str::to_owned),
        ..session(user)
    };
    let (b1, b2, b3, b4) = (
        format!("b1-{tag}"),
        format!("b2-{tag}"),
        format!("b3-{tag}"),
        format!("b4-{tag}"),
    );
    for (id, record) in [
        (&b1, bound(&alice, Some(&app), None)),
        (&b2, bound(&bob, Some(&app), None)),
        (&b3, bound(&bob, Some(&other_app), Some(&app))),
        (&b4, bound(&bob, Some(&other_app), None)),
    ] {
        // Bound as a sign-in binds (session and binding in one step), then to the previous
        // app session as a rotation does.
        match &record.app_cookie {
            Some(hash) => store
                .put_bound_session(id, &record, TTL, hash, TTL)
                .await
                .unwrap(),
            None => store.put_session(id, &record, TTL).await.unwrap(),
        }
        if let Some(hash) = &record.app_cookie_prev {
            store.bind_app_session(hash, id, TTL).await.unwrap();
        }
    }
    // A bound session is in its user's set too: "sign out everywhere else" ends it.
    let b5 = format!("b5-{tag}");
    let third_app = format!("third-app-{tag}");
    store
        .put_bound_session(
            &b5,
            &bound(&alice, Some(&third_app), None),
            TTL,
            &third_app,
            TTL,
        )
        .await
        .unwrap();
    assert_eq!(store.end_user_sessions(&alice, Some(&b1)).await.unwrap(), 1);
    assert_eq!(store.session(&b5).await.unwrap(), None);
    assert_eq!(store.end_sessions_bound_to(&app).await.unwrap(), 3);
    for id in [&b1, &b2, &b3] {
        assert_eq!(store.session(id).await.unwrap(), None, "{id} still lives");
    }
    assert!(
        store.session(&b4).await.unwrap().is_some(),
        "an unbound session ended"
    );
    assert_eq!(store.end_sessions_bound_to(&app).await.unwrap(), 0);
    store.delete_session(&b4).await.unwrap();
    // A refresh after the end does not bring the session back; one before it does update.
    store
        .refresh_session(&s3, &session(&alice), TTL)
        .await
        .unwrap();
    assert_eq!(
        store.session(&s3).await.unwrap(),
        None,
        "a refresh resurrected a session"
    );
    let mut later = session(&bob);
    later.last_seen = 99;
    store.refresh_session(&s4, &later, TTL).await.unwrap();
    assert_eq!(store.session(&s4).await.unwrap(), Some(later));

    // Pending logins: peek does not consume; take does, exactly once under concurrency.
    let p = format!("p-{tag}");
    store.hold_login(&p, &pending(&alice), TTL).await.unwrap();
    assert_eq!(
        store.pending_login(&p).await.unwrap(),
        Some(pending(&alice))
    );
    assert_eq!(store.count_attempt(&p, TTL).await.unwrap(), 1);
    assert_eq!(store.count_attempt(&p, TTL).await.unwrap(), 2);
    let takers: Vec<_> = (0..16)
        .map(|_| {
            let store = store.clone();
            let p = p.clone();
            tokio::spawn(async move { store.take_login(&p).await.unwrap() })
        })
        .collect();
    let mut won = 0;
    for t in takers {
        if t.await.unwrap().is_some() {
            won += 1;
        }
    }
    assert_eq!(won, 1, "a pending login was taken {won} times");
    assert_eq!(store.pending_login(&p).await.unwrap(), None);

    // Enrollments.
    let e = Enrollment {
        secret: "sealed".into(),
        created: 9,
    };
    store.put_enrollment(&alice, &e, TTL).await.unwrap();
    assert_eq!(store.enrollment(&alice).await.unwrap(), Some(e));
    store.delete_enrollment(&alice).await.unwrap();
    assert_eq!(store.enrollment(&alice).await.unwrap(), None);

    // Email codes: a new one replaces the old; taking is single-use under concurrency.
    let key = format!("login:{tag}");
    let first = EmailCode {
        hash: "h1".into(),
        address: "a@example.com".into(),
        created: 1,
    };
    let second = EmailCode {
        hash: "h2".into(),
        address: "a@example.com".into(),
        created: 2,
    };
    store.put_email_code(&key, &first, TTL).await.unwrap();
    store.put_email_code(&key, &second, TTL).await.unwrap();
    assert_eq!(store.email_code(&key).await.unwrap(), Some(second.clone()));
    let takers: Vec<_> = (0..16)
        .map(|_| {
            let store = store.clone();
            let key = key.clone();
            tokio::spawn(async move { store.take_email_code(&key).await.unwrap() })
        })
        .collect();
    let mut taken = Vec::new();
    for t in takers {
        if let Some(c) = t.await.unwrap() {
            taken.push(c);
        }
    }
    assert_eq!(
        taken,
        vec![second],
        "an email code was taken more than once"
    );
    assert_eq!(store.count_email_send(&alice, 3, TTL).await.unwrap(), 1);
    assert_eq!(store.count_email_send(&alice, 3, TTL).await.unwrap(), 2);
    assert_eq!(store.count_email_send(&alice, 4, TTL).await.unwrap(), 1);
    // Held-back sign-ins per account, counted apart from the emails.
    // Held-back sign-ins are capped per user and bucket: over the cap nothing is held.
    let hold = |id: &str, user: &str, bucket: u64| {
        let (store, id, login) = (store.clone(), format!("{id}-{tag}"), pending(user));
        async move {
            let held = store
                .hold_login_capped(&id, &login, TTL, bucket, 2)
                .await
                .unwrap();
            (held, store.pending_login(&id).await.unwrap().is_some())
        }
    };
    assert_eq!(hold("c1", &alice, 3).await, (true, true));
    assert_eq!(hold("c2", &alice, 3).await, (true, true));
    assert_eq!(hold("c3", &alice, 3).await, (false, false), "over the cap");
    assert_eq!(hold("c4", &bob, 3).await, (true, true), "per user");
    assert_eq!(hold("c5", &alice, 4).await, (true, true), "per bucket");

    // TOTP steps: only later steps, once; concurrent claims of one step: one winner.
    assert!(
        store
            .claim_totp_step(&alice, 100, TTL)
            .await
            .unwrap()
            .is_claimed()
    );
    assert!(
        !store
            .claim_totp_step(&alice, 100, TTL)
            .await
            .unwrap()
            .is_claimed()
    );
    assert!(
        !store
            .claim_totp_step(&alice, 99, TTL)
            .await
            .unwrap()
            .is_claimed()
    );
    assert!(
        store
            .claim_totp_step(&bob, 100, TTL)
            .await
            .unwrap()
            .is_claimed(),
        "steps are per user"
    );
    let claims: Vec<_> = (0..16)
        .map(|_| {
            let store = store.clone();
            let alice = alice.clone();
            tokio::spawn(async move {
                store
                    .claim_totp_step(&alice, 101, TTL)
                    .await
                    .unwrap()
                    .is_claimed()
            })
        })
        .collect();
    let mut claimed = 0;
    for c in claims {
        if c.await.unwrap() {
            claimed += 1;
        }
    }
    assert_eq!(claimed, 1);

    // Attempts counted per window and in a row; locks refuse without counting; an ended lock
    // starts the window over (not the in-a-row count); clearing forgets the named buckets.
    let reserve = |user: &str, now: u64, window: u64| {
        let (store, user) = (store.clone(), user.to_owned());
        async move {
            store
                .reserve_attempt(&user, now, (window, TTL), (u64::MAX, TTL))
                .await
                .unwrap()
        }
    };
    let counted = |in_window, in_a_row| Reserved::Counted {
        in_window,
        in_a_row,
    };
    assert_eq!(reserve(&alice, 100, 7).await, counted(1, 1));
    assert_eq!(reserve(&alice, 100, 7).await, counted(2, 2));
    assert_eq!(
        reserve(&alice, 100, 8).await,
        counted(1, 3),
        "windows are separate, the in-a-row count is not"
    );
    assert_eq!(
        reserve(&bob, 100, 7).await,
        counted(1, 1),
        "counts are per user"
    );
    store.clear_failures(&alice, &[7, u64::MAX]).await.unwrap();
    assert_eq!(reserve(&alice, 100, 7).await, counted(1, 1));
    assert_eq!(
        reserve(&alice, 100, 8).await,
        counted(2, 2),
        "bucket 8 kept"
    );
    assert_eq!(store.locked_until(&alice).await.unwrap(), None);
    store.lock_account(&alice, 12345, TTL).await.unwrap();
    assert_eq!(store.locked_until(&alice).await.unwrap(), Some(12345));
    assert_eq!(store.locked_until(&bob).await.unwrap(), None);
    assert_eq!(reserve(&alice, 12_000, 7).await, Reserved::Locked(12345));
    assert_eq!(reserve(&alice, 12_344, 7).await, Reserved::Locked(12345));
    // Ended: lifted, the window's count starts over, the in-a-row count goes on.
    assert_eq!(reserve(&alice, 12_345, 7).await, counted(1, 3));
    assert_eq!(store.locked_until(&alice).await.unwrap(), None);
    // Attempts racing each other are each counted once.
    let racing: Vec<_> = (0..20)
        .map(|_| tokio::spawn(reserve(&bob, 100, 9)))
        .collect();
    let mut seen = Vec::new();
    for r in racing {
        if let Reserved::Counted { in_window, .. } = r.await.unwrap() {
            seen.push(in_window);
        }
    }
    seen.sort_unstable();
    assert_eq!(seen, (1..=20).collect::<Vec<_>>());
    store.lock_account(&alice, 12345, TTL).await.unwrap();
    store.unlock_account(&alice).await.unwrap();
    assert_eq!(store.locked_until(&alice).await.unwrap(), None);
}

/// The TOTP step floor: steps up to it are refused once the store learned the identity with
/// it; it only rises. On Redis, a store emptied since it learned refuses every claim
/// (`Unavailable`) until it learns again: it no longer knows which steps were used.
async fn totp_floor<S: Store>(store: &S, emptied: Option<&dyn Fn()>) {
    store.remember_records_identity("r", 1_000).await.unwrap();
    assert!(
        !store
            .claim_totp_step("u", 999, TTL)
            .await
            .unwrap()
            .is_claimed()
    );
    assert!(
        !store
            .claim_totp_step("u", 1_000, TTL)
            .await
            .unwrap()
            .is_claimed()
    );
    assert!(
        store
            .claim_totp_step("u", 1_001, TTL)
            .await
            .unwrap()
            .is_claimed()
    );
    store.remember_records_identity("r", 10).await.unwrap();
    assert!(
        !store
            .claim_totp_step("v", 1_000, TTL)
            .await
            .unwrap()
            .is_claimed(),
        "the floor went down"
    );
    if let Some(empty) = emptied {
        empty();
        assert!(matches!(
            store.claim_totp_step("u", 1_002, TTL).await,
            Err(StoreError::Unavailable(_))
        ));
        store.remember_records_identity("r", 1_005).await.unwrap();
        assert!(
            !store
                .claim_totp_step("u", 1_005, TTL)
                .await
                .unwrap()
                .is_claimed()
        );
        assert!(
            store
                .claim_totp_step("u", 1_006, TTL)
                .await
                .unwrap()
                .is_claimed()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_keeps_a_totp_step_floor() {
    totp_floor(&MemoryStore::new(ManualClock::new(1_000_000)), None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "external-tools"), ignore = "needs external-tools")]
async fn redis_store_keeps_a_totp_step_floor_and_refuses_claims_once_emptied() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url(), "floor:").await.unwrap();
    let url = server.url();
    let flush = move || {
        let mut c = ::redis::Client::open(url.as_str())
            .unwrap()
            .get_connection()
            .unwrap();
        ::redis::cmd("FLUSHALL").exec(&mut c).unwrap();
    };
    totp_floor(&store, Some(&flush)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_keeps_the_contract() {
    contract(
        Arc::new(MemoryStore::new(ManualClock::new(1_000_000))),
        "mem",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_expires_by_the_clock() {
    let clock = ManualClock::new(1_000_000);
    let store = MemoryStore::new(clock.clone());
    store
        .put_session("s", &session("a"), Duration::from_secs(60))
        .await
        .unwrap();
    store
        .hold_login("p", &pending("a"), Duration::from_secs(60))
        .await
        .unwrap();
    clock.advance(59);
    assert!(store.session("s").await.unwrap().is_some());
    clock.advance(2);
    assert!(store.session("s").await.unwrap().is_none());
    assert!(store.take_login("p").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "external-tools"), ignore = "needs external-tools")]
async fn redis_store_keeps_the_contract() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url(), "test:").await.unwrap();
    contract(Arc::new(store), "redis").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "external-tools"), ignore = "needs external-tools")]
async fn redis_store_expires_by_ttl() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url(), "test:").await.unwrap();
    store
        .put_session("s", &session("a"), Duration::from_secs(1))
        .await
        .unwrap();
    store
        .hold_login("p", &pending("a"), Duration::from_secs(1))
        .await
        .unwrap();
    assert!(store.session("s").await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(store.session("s").await.unwrap().is_none());
    assert!(store.take_login("p").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "external-tools"), ignore = "needs external-tools")]
async fn redis_store_reports_an_outage_and_recovers() {
    let mut server = RedisServer::start();
    let store = RedisStore::connect(&server.url(), "test:").await.unwrap();
    store.ping().await.unwrap();
    server.stop();
    assert!(store.ping().await.is_err(), "a stopped Redis answered");
    assert!(store.session("s").await.is_err());
    server.restart();
    let mut ok = false;
    for _ in 0..50 {
        if store.ping().await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "the store did not reconnect after Redis came back");
}
