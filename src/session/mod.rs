//! Proxy sessions: opaque 256-bit ids in a cookie, records in the store, idle and absolute
//! timeouts enforced here against the clock. A new id at every privilege change.

pub mod binding;
pub mod cookie;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue};

use crate::clock::SharedClock;
use crate::config::SessionConfig;
use crate::secrets::random_token;
use crate::store::{AnyStore, SessionRecord, Store, StoreResult};
pub use cookie::CookieNames;

/// A session id and its record, as loaded for this request.
#[derive(Debug, Clone)]
pub struct Current {
    pub id: String,
    pub record: SessionRecord,
}

/// Sessions read from a shared store, reused for `ttl` (see `[session] cache_ttl`).
struct Cache {
    ttl: Duration,
    entries: Mutex<HashMap<String, (SessionRecord, Instant)>>,
}

/// More entries than this and the cache starts over (it is only a shortcut).
const CACHE_MAX: usize = 100_000;

impl Cache {
    fn get(&self, id: &str) -> Option<SessionRecord> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(id)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(r, _)| r.clone())
    }

    fn put(&self, id: &str, record: &SessionRecord) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CACHE_MAX {
            entries.clear();
        }
        entries.insert(id.to_owned(), (record.clone(), Instant::now()));
    }

    fn forget(&self, id: &str) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    fn forget_bound_to(&self, app_hash: &str) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, (r, _)| {
                r.app_cookie.as_deref() != Some(app_hash)
                    && r.app_cookie_prev.as_deref() != Some(app_hash)
            });
    }

    fn forget_user(&self, user: &str) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, (r, _)| r.user != user);
    }
}

pub struct Sessions {
    store: Arc<AnyStore>,
    cache: Option<Cache>,
    clock: SharedClock,
    idle: u64,
    absolute: u64,
    /// `last_seen` is rewritten at most this often, so a busy session is not a write per request.
    touch_every: u64,
    pub names: CookieNames,
}

impl Sessions {
    pub fn new(store: Arc<AnyStore>, clock: SharedClock, config: &SessionConfig) -> Self {
        let idle = config.idle_timeout.as_secs().max(1);
        // The memory store is already in this process: nothing to save.
        let shared = matches!(*store, AnyStore::Redis(_));
        let cache = (shared && !config.cache_ttl.is_zero()).then(|| Cache {
            ttl: config.cache_ttl,
            entries: Mutex::new(HashMap::new()),
        });
        Self {
            store,
            cache,
            clock,
            idle,
            absolute: config.absolute_timeout.as_secs().max(1),
            touch_every: (idle / 4).clamp(1, 60),
            names: CookieNames::new(config.insecure_http_cookies),
        }
    }

    fn ttl(&self, record: &SessionRecord, now: u64) -> Duration {
        let absolute_left = (record.created + self.absolute).saturating_sub(now);
        Duration::from_secs(self.idle.min(absolute_left).max(1))
    }

    /// Starts a session with a fresh id (never one the browser brought: no fixation).
    pub async fn create(
        &self,
        user: &str,
        must_enroll: bool,
        held: Option<String>,
        email: Option<String>,
        app_cookie: Option<String>,
    ) -> StoreResult<Current> {
        let now = self.clock.now();
        let record = SessionRecord {
            user: user.to_owned(),
            created: now,
            last_seen: now,
            csrf: random_token(),
            must_enroll,
            held,
            email,
            app_cookie,
            app_cookie_prev: None,
        };
        let id = random_token();
        let ttl = self.ttl(&record, now);
        match &record.app_cookie {
            // Written and bound in one step: one round trip on Redis.
            Some(hash) => {
                self.store
                    .put_bound_session(&id, &record, ttl, hash, self.bind_ttl())
                    .await?
            }
            None => self.store.put_session(&id, &record, ttl).await?,
        }
        Ok(Current { id, record })
    }

    /// The request's session if it exists and has not timed out.
    pub async fn load(&self, headers: &HeaderMap) -> StoreResult<Option<Current>> {
        match cookie::find(headers, self.names.session).filter(|v| !v.is_empty()) {
            Some(id) => self.load_id(id).await,
            None => Ok(None),
        }
    }

    /// Whether session `id` still exists and has not timed out, without counting this as the
    /// session's activity (an open tunnel must not keep an idle session alive).
    pub async fn alive(&self, id: &str) -> StoreResult<bool> {
        Ok(self.fetch(id, false).await?.is_some())
    }

    /// Session `id` if it exists and has not timed out.
    pub async fn load_id(&self, id: &str) -> StoreResult<Option<Current>> {
        self.fetch(id, true).await
    }

    /// The live session `id`; `touch` records this request as its activity.
    async fn fetch(&self, id: &str, touch: bool) -> StoreResult<Option<Current>> {
        let cached = self.cache.as_ref().and_then(|c| c.get(id));
        let mut record = match cached {
            Some(r) => r,
            None => {
                let Some(r) = self.store.session(id).await? else {
                    return Ok(None);
                };
                if let Some(c) = &self.cache {
                    c.put(id, &r);
                }
                r
            }
        };
        let now = self.clock.now();
        let idle_over = now.saturating_sub(record.last_seen) > self.idle;
        let absolute_over = now.saturating_sub(record.created) > self.absolute;
        if idle_over || absolute_over {
            self.store.delete_session(id).await?;
            return Ok(None);
        }
        if touch && now.saturating_sub(record.last_seen) >= self.touch_every {
            record.last_seen = now;
            // Only if it still exists: a logout racing this request must stay a logout.
            self.save(id, &record).await?;
        }
        Ok(Some(Current {
            id: id.to_owned(),
            record,
        }))
    }

    /// Writes a changed record of a live session (never brings an ended one back).
    pub async fn save(&self, id: &str, record: &SessionRecord) -> StoreResult<()> {
        let now = self.clock.now();
        self.store
            .refresh_session(id, record, self.ttl(record, now))
            .await?;
        if let Some(c) = &self.cache {
            c.put(id, record);
        }
        Ok(())
    }

    /// Notes that session `id` now vouches for the app session `app_hash` (at its login, or
    /// after the app rotated its cookie).
    pub async fn bind_app_session(&self, id: &str, app_hash: &str) -> StoreResult<()> {
        self.store
            .bind_app_session(app_hash, id, self.bind_ttl())
            .await
    }

    /// A binding lives as long as a session can.
    fn bind_ttl(&self) -> Duration {
        Duration::from_secs(self.absolute)
    }

    /// Ends every session that vouches for the app session `app_hash`: a login on it is about
    /// to happen, and an app that keeps its session id across logins would make it another
    /// user's.
    pub async fn end_bound_to(&self, app_hash: &str) -> StoreResult<u32> {
        if let Some(c) = &self.cache {
            c.forget_bound_to(app_hash);
        }
        self.store.end_sessions_bound_to(app_hash).await
    }

    /// How long another replica may go on using a session it read before it ended (zero
    /// without a cache).
    pub fn cache_ttl(&self) -> Duration {
        self.cache.as_ref().map_or(Duration::ZERO, |c| c.ttl)
    }

    pub async fn end(&self, id: &str) -> StoreResult<()> {
        if let Some(c) = &self.cache {
            c.forget(id);
        }
        self.store.delete_session(id).await
    }

    /// Ends every other session of the user (2FA changed or reset).
    pub async fn end_others(&self, user: &str, keep: Option<&str>) -> StoreResult<u32> {
        if let Some(c) = &self.cache {
            c.forget_user(user);
        }
        self.store.end_user_sessions(user, keep).await
    }

    pub fn set_cookie(&self, id: &str) -> HeaderValue {
        self.names.set(self.names.session, id, Some(self.absolute))
    }

    pub fn clear_cookie(&self) -> HeaderValue {
        self.names.clear(self.names.session)
    }
}
