//! Where pending logins, sessions, 2FA records and counters live: [`memory`] for one process,
//! [`redis`] shared by replicas. Methods are named after what the proxy does and say how atomic
//! they are; one contract test suite (`tests/it/store.rs`) runs against both backends.
//!
//! Validity (idle and absolute timeouts, lock expiry) is decided by the caller against the
//! injected clock from timestamps in the records; store TTLs only clean up.

mod connection;
pub mod memory;
pub mod redis;

use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store record unreadable: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A proxy session: the user passed the second factor (or has none, under the optional policy).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub user: String,
    /// Unix seconds.
    pub created: u64,
    pub last_seen: u64,
    /// Token the session's forms must echo.
    pub csrf: String,
    /// Under `enforcement = "required"`: only the enrollment pages until the user enrolls.
    #[serde(default)]
    pub must_enroll: bool,
    /// The app's login answer (sealed), replayed once a forced enrollment completes.
    /// Stored under its first name, so records written before the rename still read.
    #[serde(default, rename = "parked")]
    pub held: Option<String>,
    /// The user's address as the app named it at login (`address_source = "header:..."`).
    #[serde(default)]
    pub email: Option<String>,
    /// Keyed hash of the app's session cookie this session was issued with: a proxy session
    /// only ever accompanies the app session of the same login.
    #[serde(default)]
    pub app_cookie: Option<String>,
    /// The binding before the app's last cookie rotation: requests already on their way with the
    /// old cookie are not mistaken for another login.
    #[serde(default)]
    pub app_cookie_prev: Option<String>,
}

/// A login the app accepted, held back until the second factor is proven.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingLogin {
    pub user: String,
    pub created: u64,
    /// The app's answer (status, headers, body), sealed; stored under its first name.
    #[serde(rename = "parked")]
    pub held: String,
    pub csrf: String,
    /// The login came as JSON: answer the challenge in JSON too.
    pub json: bool,
    /// The user's address as the app named it (`address_source = "header:..."`).
    #[serde(default)]
    pub email: Option<String>,
    /// The client that started the sign-in: its code emails count against its own budget.
    #[serde(default)]
    pub client: Option<String>,
}

/// A user's 2FA record in the store's old layout, and their recovery-code hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyRecord {
    pub user: String,
    pub record: crate::records::TwoFactorRecord,
    pub recovery_hashes: Vec<String>,
}

/// A TOTP enrollment started but not yet confirmed with a first code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrollment {
    /// The new TOTP key, sealed.
    pub secret: String,
    pub created: u64,
}

/// An emailed code: its keyed hash, where it went, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailCode {
    pub hash: String,
    pub address: String,
    /// When this code was issued (it expires `[email] code_ttl` later).
    pub created: u64,
}

/// The store's contract. Every method is one round trip and, where it says so, atomic across
/// all replicas sharing the backend.
pub trait Store: Send + Sync + 'static {
    fn ping(&self) -> impl Future<Output = StoreResult<()>> + Send;
    /// The identity of the records store this store last served with (see
    /// [`crate::records::identity`]); kept without expiry.
    fn records_identity(&self) -> impl Future<Output = StoreResult<Option<String>>> + Send;
    /// Remembers the records' identity, and that TOTP steps up to `step_floor` are not to be
    /// accepted: a store that learns the identity again has lost its memory of the steps used
    /// (emptied, a failover to an empty replica, a restart), so codes of the steps before it
    /// learned are refused rather than accepted a second time.
    fn remember_records_identity(
        &self,
        id: &str,
        step_floor: u64,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// 2FA records written by proxies that kept them in this store (before [`crate::records`]),
    /// with their recovery-code hashes: imported once, so an upgrade turns nobody's 2FA off.
    fn legacy_two_factor(&self) -> impl Future<Output = StoreResult<Vec<LegacyRecord>>> + Send;

    fn put_session(
        &self,
        id: &str,
        session: &SessionRecord,
        ttl: Duration,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// [`Store::put_session`] and [`Store::bind_app_session`] together, atomically.
    fn put_bound_session(
        &self,
        id: &str,
        session: &SessionRecord,
        ttl: Duration,
        app_hash: &str,
        bind_ttl: Duration,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    fn session(&self, id: &str) -> impl Future<Output = StoreResult<Option<SessionRecord>>> + Send;
    /// Rewrites a session only if it still exists: a refresh racing a logout or an "end all
    /// sessions" must not bring the session back.
    fn refresh_session(
        &self,
        id: &str,
        session: &SessionRecord,
        ttl: Duration,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    fn delete_session(&self, id: &str) -> impl Future<Output = StoreResult<()>> + Send;
    /// Notes that session `id` vouches for the app session whose cookie hashes to `app_hash`
    /// (see [`Store::end_sessions_bound_to`]); the note lives at least `ttl`.
    fn bind_app_session(
        &self,
        app_hash: &str,
        id: &str,
        ttl: Duration,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Ends every session that vouches (or vouched) for the app session `app_hash`: a new
    /// login on that app session may make it someone else's. Returns how many ended.
    fn end_sessions_bound_to(
        &self,
        app_hash: &str,
    ) -> impl Future<Output = StoreResult<u32>> + Send;
    /// Ends every session of `user` except `keep`; returns how many ended.
    fn end_user_sessions(
        &self,
        user: &str,
        keep: Option<&str>,
    ) -> impl Future<Output = StoreResult<u32>> + Send;

    fn hold_login(
        &self,
        id: &str,
        login: &PendingLogin,
        ttl: Duration,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Reads a pending login without consuming it.
    fn pending_login(
        &self,
        id: &str,
    ) -> impl Future<Output = StoreResult<Option<PendingLogin>>> + Send;
    /// Consumes a pending login: of any number of concurrent takers, exactly one gets it.
    fn take_login(
        &self,
        id: &str,
    ) -> impl Future<Output = StoreResult<Option<PendingLogin>>> + Send;
    /// Counts one code attempt against a pending login; returns the count so far.
    fn count_attempt(
        &self,
        id: &str,
        ttl: Duration,
    ) -> impl Future<Output = StoreResult<u32>> + Send;

    fn put_enrollment(
        &self,
        user: &str,
        enrollment: &Enrollment,
        ttl: Duration,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    fn enrollment(
        &self,
        user: &str,
    ) -> impl Future<Output = StoreResult<Option<Enrollment>>> + Send;
    fn delete_enrollment(&self, user: &str) -> impl Future<Output = StoreResult<()>> + Send;

    /// Stores the code for `key` (a pending login or an enrollment), replacing any earlier one.
    fn put_email_code(
        &self,
        key: &str,
        code: &EmailCode,
        ttl: Duration,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    fn email_code(&self, key: &str) -> impl Future<Output = StoreResult<Option<EmailCode>>> + Send;
    /// Consumes the code for `key`: of any number of concurrent takers, exactly one gets it.
    fn take_email_code(
        &self,
        key: &str,
    ) -> impl Future<Output = StoreResult<Option<EmailCode>>> + Send;
    /// Holds a sign-in back as [`Store::hold_login`] does, unless its user already started
    /// `cap` in `bucket` (the cap on held-back logins per account): counts it, and holds it
    /// only within the cap; false when over it. One round trip.
    fn hold_login_capped(
        &self,
        id: &str,
        login: &PendingLogin,
        ttl: Duration,
        bucket: u64,
        cap: u32,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
    /// Counts one code email to `user` in `bucket` (the hourly send cap); returns the count.
    fn count_email_send(
        &self,
        user: &str,
        bucket: u64,
        ttl: Duration,
    ) -> impl Future<Output = StoreResult<u32>> + Send;

    /// Accepts TOTP time step `step` for `user` only if it is later than every step accepted
    /// before (RFC 6238 5.2: each code once) and than the floor of
    /// [`Store::remember_records_identity`]. Atomic compare-and-set. A shared store that no
    /// longer knows the records' identity was emptied since: `Unavailable`, until the identity
    /// check learns it again (with a new floor).
    fn claim_totp_step(
        &self,
        user: &str,
        step: u64,
        ttl: Duration,
    ) -> impl Future<Output = StoreResult<StepClaim>> + Send;

    /// Takes one attempt of `user` at a code, in one step: if the account is locked past `now`,
    /// `Locked` and nothing is counted; otherwise a lock that has ended is lifted and the
    /// `window` counter starts over, then both counters (`window`, `in_a_row`: a bucket and its
    /// TTL each) count the attempt. One round trip for what the lockout rules check first.
    fn reserve_attempt(
        &self,
        user: &str,
        now: u64,
        window: (u64, Duration),
        in_a_row: (u64, Duration),
    ) -> impl Future<Output = StoreResult<Reserved>> + Send;
    /// Forgets the failures counted in `buckets`.
    fn clear_failures(
        &self,
        user: &str,
        buckets: &[u64],
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Locks the account until the unix time `until`.
    fn lock_account(
        &self,
        user: &str,
        until: u64,
        ttl: Duration,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// When the lock set by [`Store::lock_account`] ends, if there is one (past or not).
    fn locked_until(&self, user: &str) -> impl Future<Output = StoreResult<Option<u64>>> + Send;
    fn unlock_account(&self, user: &str) -> impl Future<Output = StoreResult<()>> + Send;
}

/// What [`Store::claim_totp_step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepClaim {
    /// The step is now the user's last: the code passes.
    Claimed,
    /// The user already used this step or a later one.
    AlreadyUsed,
    /// At or before the floor: the store cannot tell whether it was used. Nothing claimed.
    BeforeFloor,
}

impl StepClaim {
    pub fn is_claimed(self) -> bool {
        self == Self::Claimed
    }
}

/// What [`Store::reserve_attempt`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reserved {
    /// Locked until this unix time.
    Locked(u64),
    /// Counted: the window's count and the in-a-row count, this attempt included.
    Counted { in_window: u32, in_a_row: u32 },
}

/// The backend chosen by config, dispatched statically.
pub enum AnyStore {
    Memory(Box<memory::MemoryStore>),
    /// Boxed like the memory store: the variants stay one pointer each.
    Redis(Box<redis::RedisStore>),
}

macro_rules! delegate {
    ($( fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty; )*) => {
        impl Store for AnyStore {
            $(
                async fn $name(&self $(, $arg: $ty)*) -> $ret {
                    match self {
                        AnyStore::Memory(s) => s.$name($($arg),*).await,
                        // Boxed: a Redis call's future is large, and inline it would enlarge
                        // every caller's future, memory-store requests included. One
                        // allocation beside a network round trip is nothing.
                        AnyStore::Redis(s) => Box::pin(s.$name($($arg),*)).await,
                    }
                }
            )*
        }
    };
}

delegate! {
    fn ping(&self) -> StoreResult<()>;
    fn records_identity(&self) -> StoreResult<Option<String>>;
    fn remember_records_identity(&self, id: &str, step_floor: u64) -> StoreResult<()>;
    fn legacy_two_factor(&self) -> StoreResult<Vec<LegacyRecord>>;
    fn put_session(&self, id: &str, session: &SessionRecord, ttl: Duration) -> StoreResult<()>;
    fn put_bound_session(&self, id: &str, session: &SessionRecord, ttl: Duration, app_hash: &str, bind_ttl: Duration) -> StoreResult<()>;
    fn session(&self, id: &str) -> StoreResult<Option<SessionRecord>>;
    fn refresh_session(&self, id: &str, session: &SessionRecord, ttl: Duration) -> StoreResult<()>;
    fn delete_session(&self, id: &str) -> StoreResult<()>;
    fn bind_app_session(&self, app_hash: &str, id: &str, ttl: Duration) -> StoreResult<()>;
    fn end_sessions_bound_to(&self, app_hash: &str) -> StoreResult<u32>;
    fn end_user_sessions(&self, user: &str, keep: Option<&str>) -> StoreResult<u32>;
    fn hold_login(&self, id: &str, login: &PendingLogin, ttl: Duration) -> StoreResult<()>;
    fn pending_login(&self, id: &str) -> StoreResult<Option<PendingLogin>>;
    fn take_login(&self, id: &str) -> StoreResult<Option<PendingLogin>>;
    fn count_attempt(&self, id: &str, ttl: Duration) -> StoreResult<u32>;
    fn put_enrollment(&self, user: &str, enrollment: &Enrollment, ttl: Duration) -> StoreResult<()>;
    fn enrollment(&self, user: &str) -> StoreResult<Option<Enrollment>>;
    fn delete_enrollment(&self, user: &str) -> StoreResult<()>;
    fn put_email_code(&self, key: &str, code: &EmailCode, ttl: Duration) -> StoreResult<()>;
    fn email_code(&self, key: &str) -> StoreResult<Option<EmailCode>>;
    fn take_email_code(&self, key: &str) -> StoreResult<Option<EmailCode>>;
    fn hold_login_capped(&self, id: &str, login: &PendingLogin, ttl: Duration, bucket: u64, cap: u32) -> StoreResult<bool>;
    fn count_email_send(&self, user: &str, bucket: u64, ttl: Duration) -> StoreResult<u32>;
    fn claim_totp_step(&self, user: &str, step: u64, ttl: Duration) -> StoreResult<StepClaim>;
    fn reserve_attempt(&self, user: &str, now: u64, window: (u64, Duration), in_a_row: (u64, Duration)) -> StoreResult<Reserved>;
    fn clear_failures(&self, user: &str, buckets: &[u64]) -> StoreResult<()>;
    fn lock_account(&self, user: &str, until: u64, ttl: Duration) -> StoreResult<()>;
    fn locked_until(&self, user: &str) -> StoreResult<Option<u64>>;
    fn unlock_account(&self, user: &str) -> StoreResult<()>;
}
