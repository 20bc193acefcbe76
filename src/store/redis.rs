//! The shared store: Redis (or Valkey) through a reconnecting `ConnectionManager`. Every key
//! starts with `[store] key_prefix` and has a TTL where its record expires. Being written.

use std::time::Duration;

use super::{
    Enrollment, PendingLogin, SessionRecord, Store, StoreError, StoreResult, TwoFactorRecord,
};

pub struct RedisStore {
    _prefix: String,
}

impl RedisStore {
    pub async fn connect(_url: &str, prefix: &str) -> StoreResult<Self> {
        Ok(Self {
            _prefix: prefix.to_owned(),
        })
    }
}

fn todo<T>() -> StoreResult<T> {
    Err(StoreError::Unavailable(
        "redis backend not built yet".into(),
    ))
}

impl Store for RedisStore {
    async fn ping(&self) -> StoreResult<()> {
        todo()
    }
    async fn put_session(&self, _id: &str, _s: &SessionRecord, _ttl: Duration) -> StoreResult<()> {
        todo()
    }
    async fn session(&self, _id: &str) -> StoreResult<Option<SessionRecord>> {
        todo()
    }
    async fn delete_session(&self, _id: &str) -> StoreResult<()> {
        todo()
    }
    async fn end_user_sessions(&self, _user: &str, _keep: Option<&str>) -> StoreResult<u32> {
        todo()
    }
    async fn park_login(&self, _id: &str, _l: &PendingLogin, _ttl: Duration) -> StoreResult<()> {
        todo()
    }
    async fn pending_login(&self, _id: &str) -> StoreResult<Option<PendingLogin>> {
        todo()
    }
    async fn take_login(&self, _id: &str) -> StoreResult<Option<PendingLogin>> {
        todo()
    }
    async fn count_attempt(&self, _id: &str, _ttl: Duration) -> StoreResult<u32> {
        todo()
    }
    async fn two_factor(&self, _user: &str) -> StoreResult<Option<TwoFactorRecord>> {
        todo()
    }
    async fn save_two_factor(&self, _user: &str, _r: &TwoFactorRecord) -> StoreResult<()> {
        todo()
    }
    async fn remove_two_factor(&self, _user: &str) -> StoreResult<bool> {
        todo()
    }
    async fn set_recovery_codes(&self, _user: &str, _h: &[String]) -> StoreResult<()> {
        todo()
    }
    async fn use_recovery_code(&self, _user: &str, _h: &str) -> StoreResult<bool> {
        todo()
    }
    async fn recovery_codes_left(&self, _user: &str) -> StoreResult<u32> {
        todo()
    }
    async fn put_enrollment(
        &self,
        _user: &str,
        _e: &Enrollment,
        _ttl: Duration,
    ) -> StoreResult<()> {
        todo()
    }
    async fn enrollment(&self, _user: &str) -> StoreResult<Option<Enrollment>> {
        todo()
    }
    async fn delete_enrollment(&self, _user: &str) -> StoreResult<()> {
        todo()
    }
    async fn claim_totp_step(&self, _user: &str, _step: u64, _ttl: Duration) -> StoreResult<bool> {
        todo()
    }
    async fn count_failure(&self, _user: &str, _b: u64, _ttl: Duration) -> StoreResult<u32> {
        todo()
    }
    async fn clear_failures(&self, _user: &str, _b: u64) -> StoreResult<()> {
        todo()
    }
    async fn lock_account(&self, _user: &str, _until: u64, _ttl: Duration) -> StoreResult<()> {
        todo()
    }
    async fn locked_until(&self, _user: &str) -> StoreResult<Option<u64>> {
        todo()
    }
    async fn unlock_account(&self, _user: &str) -> StoreResult<()> {
        todo()
    }
}
