//! The embedded store: everything in this process's memory, expiring by the injected clock.
//! For one replica and the demo; nothing survives a restart.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::{
    EmailCode, Enrollment, LegacyRecord, PendingLogin, Reserved, SessionRecord, StepClaim, Store,
    StoreResult,
};
use crate::clock::SharedClock;

/// A value and the unix second after which it is gone.
struct Expiring<T> {
    value: T,
    expires: u64,
}

#[derive(Default)]
struct Maps {
    sessions: HashMap<String, Expiring<SessionRecord>>,
    user_sessions: HashMap<String, HashSet<String>>,
    /// Sessions by the app session they vouch for (`bind_app_session`).
    app_sessions: HashMap<String, HashSet<String>>,
    pending: HashMap<String, Expiring<PendingLogin>>,
    attempts: HashMap<String, Expiring<u32>>,
    enrollments: HashMap<String, Expiring<Enrollment>>,
    totp_steps: HashMap<String, Expiring<u64>>,
    email_codes: HashMap<String, Expiring<EmailCode>>,
    email_sends: HashMap<(String, u64), Expiring<u32>>,
    logins_started: HashMap<(String, u64), Expiring<u32>>,
    failures: HashMap<(String, u64), Expiring<u32>>,
    locks: HashMap<String, Expiring<u64>>,
    records_identity: Option<String>,
    /// TOTP steps up to this one are refused (see `Store::remember_records_identity`).
    step_floor: u64,
}

pub struct MemoryStore {
    maps: Mutex<Maps>,
    clock: SharedClock,
}

impl MemoryStore {
    pub fn new(clock: SharedClock) -> Self {
        Self {
            maps: Mutex::new(Maps::default()),
            clock,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Maps> {
        // A panic while holding the lock cannot leave a map half-written in a way that matters
        // more than losing the whole store would.
        self.maps.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn expiry(&self, ttl: Duration) -> u64 {
        self.clock.now().saturating_add(ttl.as_secs().max(1))
    }

    /// Drops what has expired, so the maps do not grow without bound. Called on a timer (see
    /// `app::start`), not on the request path: it walks every map under the lock.
    pub fn sweep(&self) {
        let mut guard = self.lock();
        let maps = &mut *guard;
        let now = self.clock.now();
        maps.sessions.retain(|_, e| e.expires > now);
        let live: HashSet<&String> = maps.sessions.keys().collect();
        for ids in maps.user_sessions.values_mut() {
            ids.retain(|id| live.contains(id));
        }
        maps.user_sessions.retain(|_, ids| !ids.is_empty());
        for ids in maps.app_sessions.values_mut() {
            ids.retain(|id| live.contains(id));
        }
        maps.app_sessions.retain(|_, ids| !ids.is_empty());
        maps.pending.retain(|_, e| e.expires > now);
        maps.attempts.retain(|_, e| e.expires > now);
        maps.enrollments.retain(|_, e| e.expires > now);
        maps.totp_steps.retain(|_, e| e.expires > now);
        maps.email_codes.retain(|_, e| e.expires > now);
        maps.email_sends.retain(|_, e| e.expires > now);
        maps.logins_started.retain(|_, e| e.expires > now);
        maps.failures.retain(|_, e| e.expires > now);
        maps.locks.retain(|_, e| e.expires > now);
    }
}

/// Increments an expiring counter (starting over once it expired); returns the new count.
fn bump<K: std::hash::Hash + Eq>(
    map: &mut HashMap<K, Expiring<u32>>,
    key: K,
    now: u64,
    expires: u64,
) -> u32 {
    let entry = map.entry(key).or_insert(Expiring { value: 0, expires });
    if entry.expires <= now {
        *entry = Expiring { value: 0, expires };
    }
    entry.value += 1;
    entry.value
}

fn live<'a, K, T>(map: &'a HashMap<K, Expiring<T>>, key: &K, now: u64) -> Option<&'a T>
where
    K: std::hash::Hash + Eq,
{
    map.get(key).filter(|e| e.expires > now).map(|e| &e.value)
}

impl Store for MemoryStore {
    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }

    async fn records_identity(&self) -> StoreResult<Option<String>> {
        Ok(self.lock().records_identity.clone())
    }

    async fn remember_records_identity(&self, id: &str, step_floor: u64) -> StoreResult<()> {
        let mut m = self.lock();
        m.records_identity = Some(id.to_owned());
        m.step_floor = m.step_floor.max(step_floor);
        Ok(())
    }

    /// A memory store starts empty: nothing was ever kept in it across a start.
    async fn legacy_two_factor(&self) -> StoreResult<Vec<LegacyRecord>> {
        Ok(Vec::new())
    }

    async fn put_session(
        &self,
        id: &str,
        session: &SessionRecord,
        ttl: Duration,
    ) -> StoreResult<()> {
        let expires = self.expiry(ttl);
        let mut m = self.lock();
        m.user_sessions
            .entry(session.user.clone())
            .or_default()
            .insert(id.to_owned());
        m.sessions.insert(
            id.to_owned(),
            Expiring {
                value: session.clone(),
                expires,
            },
        );
        Ok(())
    }

    async fn session(&self, id: &str) -> StoreResult<Option<SessionRecord>> {
        let now = self.clock.now();
        Ok(live(&self.lock().sessions, &id.to_owned(), now).cloned())
    }

    async fn refresh_session(
        &self,
        id: &str,
        session: &SessionRecord,
        ttl: Duration,
    ) -> StoreResult<()> {
        let now = self.clock.now();
        let expires = self.expiry(ttl);
        let mut m = self.lock();
        if let Some(entry) = m.sessions.get_mut(id)
            && entry.expires > now
        {
            *entry = Expiring {
                value: session.clone(),
                expires,
            };
        }
        Ok(())
    }

    // Like Redis: the list may hold sessions that ended or were rebound since (pruned by the
    // sweep); ending those again is harmless.
    async fn put_bound_session(
        &self,
        id: &str,
        session: &SessionRecord,
        ttl: Duration,
        app_hash: &str,
        bind_ttl: Duration,
    ) -> StoreResult<()> {
        // Two steps under one process: nothing can come between them that matters (a reader
        // that sees the session before its binding sees what the binding does not change).
        self.put_session(id, session, ttl).await?;
        self.bind_app_session(app_hash, id, bind_ttl).await
    }

    async fn bind_app_session(&self, app_hash: &str, id: &str, _ttl: Duration) -> StoreResult<()> {
        self.lock()
            .app_sessions
            .entry(app_hash.to_owned())
            .or_default()
            .insert(id.to_owned());
        Ok(())
    }

    async fn end_sessions_bound_to(&self, app_hash: &str) -> StoreResult<u32> {
        let mut m = self.lock();
        let Some(ids) = m.app_sessions.remove(app_hash) else {
            return Ok(0);
        };
        let mut ended = 0u32;
        for id in &ids {
            if let Some(e) = m.sessions.remove(id) {
                ended += 1;
                if let Some(user_ids) = m.user_sessions.get_mut(&e.value.user) {
                    user_ids.remove(id);
                }
            }
        }
        Ok(ended)
    }

    async fn delete_session(&self, id: &str) -> StoreResult<()> {
        let mut m = self.lock();
        if let Some(e) = m.sessions.remove(id)
            && let Some(ids) = m.user_sessions.get_mut(&e.value.user)
        {
            ids.remove(id);
        }
        Ok(())
    }

    async fn end_user_sessions(&self, user: &str, keep: Option<&str>) -> StoreResult<u32> {
        let mut m = self.lock();
        let ids = m.user_sessions.remove(user).unwrap_or_default();
        let mut ended = 0;
        let mut kept = HashSet::new();
        for id in ids {
            if Some(id.as_str()) == keep {
                kept.insert(id);
            } else if m.sessions.remove(&id).is_some() {
                ended += 1;
            }
        }
        if !kept.is_empty() {
            m.user_sessions.insert(user.to_owned(), kept);
        }
        Ok(ended)
    }

    async fn hold_login(&self, id: &str, login: &PendingLogin, ttl: Duration) -> StoreResult<()> {
        let expires = self.expiry(ttl);
        let mut m = self.lock();
        m.pending.insert(
            id.to_owned(),
            Expiring {
                value: login.clone(),
                expires,
            },
        );
        Ok(())
    }

    async fn pending_login(&self, id: &str) -> StoreResult<Option<PendingLogin>> {
        let now = self.clock.now();
        Ok(live(&self.lock().pending, &id.to_owned(), now).cloned())
    }

    async fn take_login(&self, id: &str) -> StoreResult<Option<PendingLogin>> {
        let now = self.clock.now();
        let mut m = self.lock();
        m.attempts.remove(id);
        Ok(m.pending
            .remove(id)
            .filter(|e| e.expires > now)
            .map(|e| e.value))
    }

    async fn count_attempt(&self, id: &str, ttl: Duration) -> StoreResult<u32> {
        let now = self.clock.now();
        let expires = self.expiry(ttl);
        let mut m = self.lock();
        let n = bump(&mut m.attempts, id.to_owned(), now, expires);
        Ok(n)
    }

    async fn put_enrollment(
        &self,
        user: &str,
        enrollment: &Enrollment,
        ttl: Duration,
    ) -> StoreResult<()> {
        let expires = self.expiry(ttl);
        let mut m = self.lock();
        m.enrollments.insert(
            user.to_owned(),
            Expiring {
                value: enrollment.clone(),
                expires,
            },
        );
        Ok(())
    }

    async fn enrollment(&self, user: &str) -> StoreResult<Option<Enrollment>> {
        let now = self.clock.now();
        Ok(live(&self.lock().enrollments, &user.to_owned(), now).cloned())
    }

    async fn delete_enrollment(&self, user: &str) -> StoreResult<()> {
        self.lock().enrollments.remove(user);
        Ok(())
    }

    async fn put_email_code(&self, key: &str, code: &EmailCode, ttl: Duration) -> StoreResult<()> {
        let expires = self.expiry(ttl);
        let mut m = self.lock();
        m.email_codes.insert(
            key.to_owned(),
            Expiring {
                value: code.clone(),
                expires,
            },
        );
        Ok(())
    }

    async fn email_code(&self, key: &str) -> StoreResult<Option<EmailCode>> {
        let now = self.clock.now();
        Ok(live(&self.lock().email_codes, &key.to_owned(), now).cloned())
    }

    async fn take_email_code(&self, key: &str) -> StoreResult<Option<EmailCode>> {
        let now = self.clock.now();
        Ok(self
            .lock()
            .email_codes
            .remove(key)
            .filter(|e| e.expires > now)
            .map(|e| e.value))
    }

    async fn hold_login_capped(
        &self,
        id: &str,
        login: &PendingLogin,
        ttl: Duration,
        bucket: u64,
        cap: u32,
    ) -> StoreResult<bool> {
        let now = self.clock.now();
        let expires = self.expiry(ttl);
        let mut m = self.lock();
        let started = bump(
            &mut m.logins_started,
            (login.user.clone(), bucket),
            now,
            expires,
        );
        if started > cap {
            return Ok(false);
        }
        m.pending.insert(
            id.to_owned(),
            Expiring {
                value: login.clone(),
                expires,
            },
        );
        Ok(true)
    }

    async fn count_email_send(&self, user: &str, bucket: u64, ttl: Duration) -> StoreResult<u32> {
        let now = self.clock.now();
        let expires = self.expiry(ttl);
        let mut m = self.lock();
        let n = bump(&mut m.email_sends, (user.to_owned(), bucket), now, expires);
        Ok(n)
    }

    async fn claim_totp_step(
        &self,
        user: &str,
        step: u64,
        ttl: Duration,
    ) -> StoreResult<StepClaim> {
        let now = self.clock.now();
        let expires = self.expiry(ttl);
        let mut m = self.lock();
        // No check of the identity here: this store is emptied only by a restart, which the
        // identity check at start sees (and sets the floor).
        let last = live(&m.totp_steps, &user.to_owned(), now).copied();
        if step <= m.step_floor {
            return Ok(StepClaim::BeforeFloor);
        }
        if last.is_some_and(|last| step <= last) {
            return Ok(StepClaim::AlreadyUsed);
        }
        m.totp_steps.insert(
            user.to_owned(),
            Expiring {
                value: step,
                expires,
            },
        );
        Ok(StepClaim::Claimed)
    }

    async fn reserve_attempt(
        &self,
        user: &str,
        now: u64,
        window: (u64, Duration),
        in_a_row: (u64, Duration),
    ) -> StoreResult<Reserved> {
        let (clock_now, window_expires, row_expires) = (
            self.clock.now(),
            self.expiry(window.1),
            self.expiry(in_a_row.1),
        );
        let mut m = self.lock();
        let user = user.to_owned();
        match live(&m.locks, &user, clock_now).copied() {
            Some(until) if until > now => return Ok(Reserved::Locked(until)),
            Some(_) => {
                m.locks.remove(&user);
                m.failures.remove(&(user.clone(), window.0));
            }
            None => {}
        }
        let in_window = bump(
            &mut m.failures,
            (user.clone(), window.0),
            clock_now,
            window_expires,
        );
        let in_a_row = bump(&mut m.failures, (user, in_a_row.0), clock_now, row_expires);
        Ok(Reserved::Counted {
            in_window,
            in_a_row,
        })
    }

    async fn clear_failures(&self, user: &str, buckets: &[u64]) -> StoreResult<()> {
        let mut m = self.lock();
        for bucket in buckets {
            m.failures.remove(&(user.to_owned(), *bucket));
        }
        Ok(())
    }

    async fn lock_account(&self, user: &str, until: u64, ttl: Duration) -> StoreResult<()> {
        let expires = self.expiry(ttl);
        self.lock().locks.insert(
            user.to_owned(),
            Expiring {
                value: until,
                expires,
            },
        );
        Ok(())
    }

    async fn locked_until(&self, user: &str) -> StoreResult<Option<u64>> {
        let now = self.clock.now();
        Ok(live(&self.lock().locks, &user.to_owned(), now).copied())
    }

    async fn unlock_account(&self, user: &str) -> StoreResult<()> {
        self.lock().locks.remove(user);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[tokio::test]
    async fn sweep_drops_only_what_expired() {
        let clock = ManualClock::new(1_000);
        let store = MemoryStore::new(clock.clone());
        let record = SessionRecord {
            user: "a".into(),
            created: 1_000,
            last_seen: 1_000,
            csrf: "c".into(),
            must_enroll: false,
            held: None,
            email: None,
            app_cookie: None,
            app_cookie_prev: None,
        };
        store
            .put_session("short", &record, Duration::from_secs(10))
            .await
            .unwrap();
        store
            .put_session("long", &record, Duration::from_secs(100))
            .await
            .unwrap();
        store
            .reserve_attempt(
                "a",
                1_000,
                (1, Duration::from_secs(10)),
                (2, Duration::from_secs(10)),
            )
            .await
            .unwrap();
        clock.advance(11);
        store.sweep();
        let maps = store.lock();
        assert_eq!(maps.sessions.len(), 1);
        assert!(maps.sessions.contains_key("long"));
        assert_eq!(maps.user_sessions["a"].len(), 1);
        assert!(maps.failures.is_empty());
    }
}
