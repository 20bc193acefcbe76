//! Durable 2FA records: each user's second factor (the sealed TOTP key or the email address,
//! when it was enabled, in which language) and the keyed hashes of their recovery codes. What
//! must survive a restart lives here; the ephemeral [`crate::store`] (sessions, held-back logins,
//! codes in flight, counters) may lose everything and only sign people out.
//!
//! A record that cannot be read is an outage, never "no 2FA": every method returns
//! [`StoreError`] and callers refuse (503) on it.

pub mod identity;
pub mod postgres;
pub mod sqlite;
pub mod transfer;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

use crate::auth::SecondFactor;
use crate::config::RecordsBackend;
use crate::store::{StoreError, StoreResult};
use crate::words::Language;

/// A user's enabled second factor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TwoFactorRecord {
    pub method: SecondFactor,
    /// The TOTP key, sealed.
    pub totp_secret: Option<String>,
    pub email: Option<String>,
    pub enabled_at: u64,
    /// The language the user enabled 2FA in: what mails sent without a request (notices, an
    /// admin reset) are written in, under `[ui] language = "auto"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<Language>,
}

/// The records' contract. Every method is atomic; `use_recovery_code` is true for exactly one of
/// any number of concurrent callers.
pub trait Records: Send + Sync {
    fn ping(&self) -> impl Future<Output = StoreResult<()>> + Send;
    /// This database's identity, written once when it was first opened: a database replaced by
    /// another (an empty one, a wrong volume) has another.
    fn identity(&self) -> impl Future<Output = StoreResult<String>> + Send;
    fn two_factor(
        &self,
        user: &str,
    ) -> impl Future<Output = StoreResult<Option<TwoFactorRecord>>> + Send;
    /// Saves (or replaces) the user's second factor.
    fn save_two_factor(
        &self,
        user: &str,
        record: &TwoFactorRecord,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Removes the second factor and its recovery codes; true if there was one.
    fn remove_two_factor(&self, user: &str) -> impl Future<Output = StoreResult<bool>> + Send;
    /// Replaces the user's recovery codes (their keyed hashes).
    fn set_recovery_codes(
        &self,
        user: &str,
        hashes: &[String],
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Uses up one recovery code: true for exactly one of any concurrent callers.
    fn use_recovery_code(
        &self,
        user: &str,
        hash: &str,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
    fn recovery_codes_left(&self, user: &str) -> impl Future<Output = StoreResult<u32>> + Send;
    /// Every user's record and recovery-code hashes, read as one consistent snapshot, by user.
    fn export_all(&self) -> impl Future<Output = StoreResult<Vec<UserRecords>>> + Send;
    /// Takes `id` as this database's identity (an import of another database's records).
    fn adopt_identity(&self, id: &str) -> impl Future<Output = StoreResult<()>> + Send;
    /// Writes `users` in one transaction, never over a user the records have (a user who
    /// enrolled meanwhile keeps their own): refused when the records hold users and `merge` is
    /// false; records that were empty take `identity` in the same transaction.
    fn import_all(
        &self,
        users: &[UserRecords],
        identity: &str,
        merge: bool,
    ) -> impl Future<Output = StoreResult<transfer::Imported>> + Send;
}

/// One user's records as [`Records::export_all`] gives them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecords {
    pub user: String,
    #[serde(flatten)]
    pub record: TwoFactorRecord,
    pub recovery_hashes: Vec<String>,
}

/// The records the config names, refusing every read and write until their identity is
/// confirmed (see [`identity`]): records that may have been replaced must not answer "nobody
/// has 2FA".
pub struct AnyRecords {
    backend: Backend,
    trusted: AtomicBool,
    /// `[records] identity`: the only identity these records may have.
    pinned: Option<String>,
}

enum Backend {
    Sqlite(sqlite::SqliteRecords),
    Postgres(postgres::PostgresRecords),
}

impl AnyRecords {
    /// Opens (and migrates) the records `[records]` names; untrusted until checked.
    pub async fn open(config: &crate::config::RecordsConfig) -> Result<Self, StoreError> {
        let backend = match config.backend {
            RecordsBackend::Sqlite => {
                Backend::Sqlite(sqlite::SqliteRecords::open(&config.path).await?)
            }
            RecordsBackend::Postgres => Backend::Postgres(postgres::PostgresRecords::open(
                config.url.expose(),
                config.ca_file.as_deref(),
            )?),
        };
        Ok(Self {
            backend,
            trusted: AtomicBool::new(false),
            pinned: config.identity.clone(),
        })
    }

    /// SQLite records already checked (the rules' unit tests build their own).
    pub fn checked(records: sqlite::SqliteRecords) -> Self {
        Self {
            backend: Backend::Sqlite(records),
            trusted: AtomicBool::new(true),
            pinned: None,
        }
    }

    /// PostgreSQL records, not yet checked (tests).
    pub fn postgres(records: postgres::PostgresRecords) -> Self {
        Self {
            backend: Backend::Postgres(records),
            trusted: AtomicBool::new(false),
            pinned: None,
        }
    }

    pub fn trusted(&self) -> bool {
        self.trusted.load(Ordering::Acquire)
    }

    pub fn pinned_identity(&self) -> Option<&str> {
        self.pinned.as_deref()
    }

    pub(crate) fn set_trusted(&self, trusted: bool) {
        self.trusted.store(trusted, Ordering::Release);
    }

    /// Copies records from the store's old layout where these records have none for the user
    /// (before they are trusted: this is how they learn what the store knew). Returns how many.
    pub(crate) async fn import_legacy(
        &self,
        legacy: Vec<crate::store::LegacyRecord>,
    ) -> StoreResult<u32> {
        let mut imported = 0;
        for old in legacy {
            if self.backend.two_factor(&old.user).await?.is_some() {
                continue;
            }
            self.backend.save_two_factor(&old.user, &old.record).await?;
            self.backend
                .set_recovery_codes(&old.user, &old.recovery_hashes)
                .await?;
            imported += 1;
        }
        Ok(imported)
    }

    fn refuse_unless_trusted(&self) -> StoreResult<()> {
        if self.trusted() {
            Ok(())
        } else {
            Err(StoreError::Unavailable(
                "records: not confirmed as the ones this installation served with".into(),
            ))
        }
    }
}

/// Each backend's call, by the backend in use.
macro_rules! dispatch {
    ($self:expr, $r:ident => $call:expr) => {
        match $self {
            Backend::Sqlite($r) => $call.await,
            Backend::Postgres($r) => $call.await,
        }
    };
}

macro_rules! delegate {
    ($( fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty; )*) => {
        impl Backend {
            $(
                async fn $name(&self $(, $arg: $ty)*) -> $ret {
                    dispatch!(self, r => r.$name($($arg),*))
                }
            )*
        }

        impl Records for AnyRecords {
            async fn ping(&self) -> StoreResult<()> {
                dispatch!(&self.backend, r => r.ping())
            }

            async fn identity(&self) -> StoreResult<String> {
                dispatch!(&self.backend, r => r.identity())
            }

            // The operator's tools: they read and write the database itself, trusted or not
            // (see `transfer`).
            async fn export_all(&self) -> StoreResult<Vec<UserRecords>> {
                dispatch!(&self.backend, r => r.export_all())
            }

            async fn adopt_identity(&self, id: &str) -> StoreResult<()> {
                dispatch!(&self.backend, r => r.adopt_identity(id))
            }

            async fn import_all(
                &self,
                users: &[UserRecords],
                identity: &str,
                merge: bool,
            ) -> StoreResult<transfer::Imported> {
                dispatch!(&self.backend, r => r.import_all(users, identity, merge))
            }

            $(
                async fn $name(&self $(, $arg: $ty)*) -> $ret {
                    self.refuse_unless_trusted()?;
                    self.backend.$name($($arg),*).await
                }
            )*
        }
    };
}

delegate! {
    fn two_factor(&self, user: &str) -> StoreResult<Option<TwoFactorRecord>>;
    fn save_two_factor(&self, user: &str, record: &TwoFactorRecord) -> StoreResult<()>;
    fn remove_two_factor(&self, user: &str) -> StoreResult<bool>;
    fn set_recovery_codes(&self, user: &str, hashes: &[String]) -> StoreResult<()>;
    fn use_recovery_code(&self, user: &str, hash: &str) -> StoreResult<bool>;
    fn recovery_codes_left(&self, user: &str) -> StoreResult<u32>;
}
