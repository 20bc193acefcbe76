//! Records in SQLite: one file (WAL journal), for a single replica, e.g. on a Kubernetes volume;
//! `:memory:` for the demo and tests. The schema is migrated forward at open, each step in its
//! own transaction, and a file from a newer proxy is refused rather than guessed at.
//!
//! One connection behind a mutex, used from the blocking pool: records are read at sign-in and
//! written at enrollment, never per forwarded request, so one writer is plenty and SQLite's own
//! locking never sees two. The reads of a sign-in are prepared once (`prepare_cached`). Measured
//! (`cargo bench --bench load`, memory store): full 2FA logins went from about 7 000/s with the
//! records in the memory store to about 5 000/s here, the thread hop per read included;
//! authenticated requests do not touch the records.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use super::{Records, TwoFactorRecord, UserRecords};
use crate::auth::SecondFactor;
use crate::store::{StoreError, StoreResult};
use crate::words::Language;

/// The schema, one step per version (`PRAGMA user_version` counts the steps applied). Forward
/// only: a step, once released, never changes.
const MIGRATIONS: &[&str] = &[
    // 1: a user's second factor and recovery codes.
    "CREATE TABLE two_factor (
        user TEXT PRIMARY KEY NOT NULL,
        method TEXT NOT NULL,
        totp_secret TEXT,
        email TEXT,
        enabled_at INTEGER NOT NULL,
        language TEXT
    ) STRICT;
    CREATE TABLE recovery_code (
        user TEXT NOT NULL,
        hash TEXT NOT NULL,
        PRIMARY KEY (user, hash)
    ) STRICT;",
    // 2: this database's identity, written once when it is first opened (see
    // `records::identity`).
    "CREATE TABLE installation (
        id TEXT NOT NULL,
        created INTEGER NOT NULL
    ) STRICT;",
];

/// How long a statement waits for a lock another process holds (a backup, `sqlite3` at the
/// console) before the request is refused.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

pub struct SqliteRecords {
    conn: Arc<Mutex<Connection>>,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("records: {e}"))
}

impl SqliteRecords {
    /// Opens the database at `path` (created when missing) and brings its schema up to date.
    pub async fn open(path: &Path) -> StoreResult<Self> {
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || Self::open_here(&path))
            .await
            .map_err(unavailable)?
    }

    /// [`Self::open`] on this thread (it does file I/O: not on a runtime worker).
    pub fn open_here(path: &Path) -> StoreResult<Self> {
        let open = || -> rusqlite::Result<Connection> {
            let mut conn = Connection::open(path)?;
            conn.busy_timeout(BUSY_TIMEOUT)?;
            // WAL: readers never wait for the writer, and a crash mid-write leaves the last
            // committed state. FULL sync: a confirmed enrollment survives a power cut.
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "FULL")?;
            migrate(&mut conn)?;
            conn.execute(
                "INSERT INTO installation (id, created)
                 SELECT ?1, unixepoch() WHERE NOT EXISTS (SELECT 1 FROM installation)",
                params![crate::secrets::random_token()],
            )?;
            Ok(conn)
        };
        let conn = open().map_err(|e| unavailable(format!("{}: {e}", path.display())))?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` on the connection in the blocking pool.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> StoreResult<T> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock leaves the connection as SQLite left it: every
            // statement is its own transaction, so it is still consistent.
            let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut conn)
        })
        .await
        .map_err(unavailable)?
        .map_err(unavailable)
    }
}

/// The schema version this proxy writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Applies the steps the database has not seen yet; refuses a database from a newer proxy.
fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let version: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "the records schema is version {version}, newer than this proxy's {SCHEMA_VERSION}: \
             run the newer proxy, or restore a backup"
        )));
    }
    for (done, step) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(step)?;
        tx.pragma_update(None, "user_version", done as u32 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

/// A `two_factor` row as SQLite gives it, before it is checked.
struct Row {
    method: String,
    totp_secret: Option<String>,
    email: Option<String>,
    enabled_at: i64,
    language: Option<String>,
}

impl Row {
    /// A row this proxy cannot read is an outage, not a user without 2FA.
    fn check(self) -> StoreResult<TwoFactorRecord> {
        let method = SecondFactor::from_name(&self.method).ok_or_else(|| {
            StoreError::Corrupt(format!("records: unknown method {:?}", self.method))
        })?;
        let enabled_at = u64::try_from(self.enabled_at)
            .map_err(|_| StoreError::Corrupt("records: negative enabled_at".into()))?;
        Ok(TwoFactorRecord {
            method,
            totp_secret: self.totp_secret,
            email: self.email,
            enabled_at,
            language: self.language.as_deref().and_then(Language::from_tag),
        })
    }
}

fn read_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok(Row {
        method: row.get(0)?,
        totp_secret: row.get(1)?,
        email: row.get(2)?,
        enabled_at: row.get(3)?,
        language: row.get(4)?,
    })
}

impl Records for SqliteRecords {
    async fn ping(&self) -> StoreResult<()> {
        self.with(|c| c.query_row("SELECT 1", [], |_| Ok(()))).await
    }

    async fn identity(&self) -> StoreResult<String> {
        self.with(|c| c.query_row("SELECT id FROM installation", [], |r| r.get(0)))
            .await
    }

    async fn two_factor(&self, user: &str) -> StoreResult<Option<TwoFactorRecord>> {
        let user = user.to_owned();
        let row = self
            .with(move |c| {
                c.prepare_cached(
                    "SELECT method, totp_secret, email, enabled_at, language
                     FROM two_factor WHERE user = ?1",
                )?
                .query_row(params![user], read_row)
                .optional()
            })
            .await?;
        row.map(Row::check).transpose()
    }

    async fn save_two_factor(&self, user: &str, record: &TwoFactorRecord) -> StoreResult<()> {
        let user = user.to_owned();
        let record = record.clone();
        let enabled_at = i64::try_from(record.enabled_at)
            .map_err(|_| StoreError::Corrupt("records: enabled_at out of range".into()))?;
        self.with(move |c| {
            c.execute(
                "INSERT INTO two_factor (user, method, totp_secret, email, enabled_at, language)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (user) DO UPDATE SET method = excluded.method,
                   totp_secret = excluded.totp_secret, email = excluded.email,
                   enabled_at = excluded.enabled_at, language = excluded.language",
                params![
                    user,
                    record.method.as_str(),
                    record.totp_secret,
                    record.email,
                    enabled_at,
                    record.language.map(Language::tag),
                ],
            )
            .map(drop)
        })
        .await
    }

    async fn remove_two_factor(&self, user: &str) -> StoreResult<bool> {
        let user = user.to_owned();
        self.with(move |c| {
            let tx = c.transaction()?;
            tx.execute("DELETE FROM recovery_code WHERE user = ?1", params![user])?;
            let removed = tx.execute("DELETE FROM two_factor WHERE user = ?1", params![user])?;
            tx.commit()?;
            Ok(removed > 0)
        })
        .await
    }

    async fn set_recovery_codes(&self, user: &str, hashes: &[String]) -> StoreResult<()> {
        let user = user.to_owned();
        let hashes = hashes.to_vec();
        self.with(move |c| {
            let tx = c.transaction()?;
            tx.execute("DELETE FROM recovery_code WHERE user = ?1", params![user])?;
            {
                let mut insert =
                    tx.prepare("INSERT OR IGNORE INTO recovery_code (user, hash) VALUES (?1, ?2)")?;
                for hash in &hashes {
                    insert.execute(params![user, hash])?;
                }
            }
            tx.commit()
        })
        .await
    }

    async fn use_recovery_code(&self, user: &str, hash: &str) -> StoreResult<bool> {
        let (user, hash) = (user.to_owned(), hash.to_owned());
        self.with(move |c| {
            c.prepare_cached("DELETE FROM recovery_code WHERE user = ?1 AND hash = ?2")?
                .execute(params![user, hash])
                .map(|n| n == 1)
        })
        .await
    }

    async fn recovery_codes_left(&self, user: &str) -> StoreResult<u32> {
        let user = user.to_owned();
        self.with(move |c| {
            c.prepare_cached("SELECT count(*) FROM recovery_code WHERE user = ?1")?
                .query_row(params![user], |r| r.get(0))
        })
        .await
    }

    async fn export_all(&self) -> StoreResult<Vec<UserRecords>> {
        let rows = self
            .with(|c| {
                // One read transaction: the records and the codes from the same moment.
                let tx = c.transaction()?;
                let users = tx
                    .prepare(
                        "SELECT method, totp_secret, email, enabled_at, language, user
                         FROM two_factor ORDER BY user",
                    )?
                    .query_map([], |r| Ok((read_row(r)?, r.get::<_, String>(5)?)))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let codes = tx
                    .prepare("SELECT user, hash FROM recovery_code ORDER BY user, hash")?
                    .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                tx.commit()?;
                Ok((users, codes))
            })
            .await?;
        let (users, codes) = rows;
        super::transfer::join(
            users
                .into_iter()
                .map(|(row, user)| Ok((user, row.check()?)))
                .collect::<StoreResult<Vec<_>>>()?,
            codes,
        )
    }

    async fn import_all(
        &self,
        users: &[UserRecords],
        identity: &str,
        merge: bool,
    ) -> StoreResult<super::transfer::Imported> {
        let users = users.to_vec();
        let identity = identity.to_owned();
        let outcome = self
            .with(move |c| {
                let tx = c.transaction()?;
                let existing: i64 =
                    tx.query_row("SELECT count(*) FROM two_factor", [], |r| r.get(0))?;
                if existing > 0 && !merge {
                    return Ok(Err(existing));
                }
                let mut done = super::transfer::Imported::default();
                for u in &users {
                    let enabled_at = i64::try_from(u.record.enabled_at).unwrap_or(i64::MAX);
                    let added = tx.execute(
                        "INSERT INTO two_factor
                           (user, method, totp_secret, email, enabled_at, language)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (user) DO NOTHING",
                        params![
                            u.user,
                            u.record.method.as_str(),
                            u.record.totp_secret,
                            u.record.email,
                            enabled_at,
                            u.record.language.map(Language::tag),
                        ],
                    )?;
                    if added == 0 {
                        done.skipped += 1;
                        continue;
                    }
                    for hash in &u.recovery_hashes {
                        tx.execute(
                            "INSERT OR IGNORE INTO recovery_code (user, hash) VALUES (?1, ?2)",
                            params![u.user, hash],
                        )?;
                    }
                    done.users += 1;
                }
                if existing == 0 {
                    tx.execute("UPDATE installation SET id = ?1", params![identity])?;
                    done.identity_adopted = true;
                }
                tx.commit()?;
                Ok(Ok(done))
            })
            .await?;
        outcome.map_err(|n| super::transfer::not_empty(u64::try_from(n).unwrap_or(0)))
    }

    async fn adopt_identity(&self, id: &str) -> StoreResult<()> {
        let id = id.to_owned();
        self.with(move |c| {
            c.execute("UPDATE installation SET id = ?1", params![id])
                .map(drop)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each earlier version, holding a record written the way that version wrote it, is brought
    /// to the current one by opening it, and the record reads back. A new step must keep this
    /// row readable (or extend the test with what it changes).
    #[tokio::test]
    async fn every_earlier_schema_is_migrated_with_its_records() {
        let dir = std::env::temp_dir().join(format!("twofa-migrate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for version in 0..SCHEMA_VERSION {
            let path = dir.join(format!("v{version}.db"));
            let _ = std::fs::remove_file(&path);
            {
                let c = Connection::open(&path).unwrap();
                for step in &MIGRATIONS[..version as usize] {
                    c.execute_batch(step).unwrap();
                }
                c.pragma_update(None, "user_version", version).unwrap();
                if version >= 1 {
                    c.execute_batch(
                        "INSERT INTO two_factor (user, method, totp_secret, enabled_at)
                         VALUES ('old', 'totp', 'sealed', 7);
                         INSERT INTO recovery_code VALUES ('old', 'h1');",
                    )
                    .unwrap();
                }
            }
            let records = SqliteRecords::open(&path).await.unwrap();
            let now: u32 = records
                .with(|c| c.pragma_query_value(None, "user_version", |r| r.get(0)))
                .await
                .unwrap();
            assert_eq!(now, SCHEMA_VERSION, "from version {version}");
            let id = records.identity().await.unwrap();
            assert!(!id.is_empty());
            if version >= 1 {
                let old = records.two_factor("old").await.unwrap().unwrap();
                assert_eq!(old.totp_secret.as_deref(), Some("sealed"));
                assert_eq!(old.enabled_at, 7);
                assert_eq!(records.recovery_codes_left("old").await.unwrap(), 1);
            }
            drop(records);
            // Opening again keeps the identity.
            let again = SqliteRecords::open(&path).await.unwrap();
            assert_eq!(again.identity().await.unwrap(), id);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_newer_schema_is_refused_and_an_older_one_migrated() {
        let dir = std::env::temp_dir().join(format!("twofa-records-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("records.db");
        let _ = std::fs::remove_file(&path);
        // A file written by a proxy that knew more steps than this one.
        {
            let c = Connection::open(&path).unwrap();
            c.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
                .unwrap();
        }
        let refused = SqliteRecords::open(&path).await;
        assert!(matches!(refused, Err(StoreError::Unavailable(m)) if m.contains("newer")));
        // A fresh file is brought to the current version, and opening again changes nothing.
        std::fs::remove_file(&path).unwrap();
        let records = SqliteRecords::open(&path).await.unwrap();
        records.ping().await.unwrap();
        drop(records);
        let again = SqliteRecords::open(&path).await.unwrap();
        let version: u32 = again
            .with(|c| c.pragma_query_value(None, "user_version", |r| r.get(0)))
            .await
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
