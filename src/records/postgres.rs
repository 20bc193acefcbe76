//! Records in PostgreSQL, shared by every replica. High availability is the operator's
//! PostgreSQL (Patroni, a managed service): this side reconnects and never guesses.
//!
//! - A small pool (deadpool) of tokio-postgres connections; a connection the server closed (a
//!   restart, a failover, an idle timeout) is dropped and replaced at the next checkout, so a
//!   restart costs the requests that were in flight, not the ones after it.
//! - Every call is bounded by `CALL_TIMEOUT` (5 s) (checkout, connect and query together) and fails
//!   as [`StoreError::Unavailable`] past it: the caller answers 503, nothing is forwarded.
//! - A call that finds its connection closed is tried once more on a fresh one, except using up
//!   a recovery code: its DELETE may have committed before the connection broke, and a second
//!   try would then read "no such code" — refusing once is better than guessing.
//! - The proxy starts with the server down: the pool connects lazily, and the schema is brought
//!   up to date at the first call that reaches the server (the identity check, which runs before
//!   anything is trusted; see [`super::identity`]).
//! - TLS through rustls (the system roots, plus `[records] ca_file`), as the URL's `sslmode`
//!   asks; certificates are always verified when TLS is used.
//!
//! Tables carry a `twofa_` prefix so the records can share a database with other software;
//! `search_path` (in the URL's `options`) picks a schema.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio::sync::OnceCell;
use tokio_postgres::Row;

use super::{Records, TwoFactorRecord, UserRecords};
use crate::auth::SecondFactor;
use crate::store::{StoreError, StoreResult};
use crate::words::Language;

/// The schema, one step per version (`twofa_schema.version` counts the steps applied). Forward
/// only: a step, once released, never changes.
pub const MIGRATIONS: &[&str] = &[
    // 1: a user's second factor and recovery codes; this database's identity.
    "CREATE TABLE twofa_two_factor (
        user_name text PRIMARY KEY,
        method text NOT NULL,
        totp_secret text,
        email text,
        enabled_at bigint NOT NULL,
        language text
    );
    CREATE TABLE twofa_recovery_code (
        user_name text NOT NULL,
        hash text NOT NULL,
        PRIMARY KEY (user_name, hash)
    );
    CREATE TABLE twofa_installation (
        id text NOT NULL,
        created bigint NOT NULL
    );",
];

/// The schema version this proxy writes.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// Replicas starting together migrate one at a time: the first holds this advisory lock for
/// its migration transaction, the others wait and then find nothing left to do.
const MIGRATION_LOCK: i64 = 0x7477_6f66_6172_6563; // "twofarec"

/// The longest one records call may take, pool checkout and reconnect included.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long opening a TCP connection to the server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// See [`PostgresRecords::open`]: how long unacknowledged data may wait, and the idle time before
/// keepalive probes.
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(6);
const KEEPALIVE_IDLE: Duration = Duration::from_secs(15);
/// Connections kept per process: records are read at sign-in and written at enrollment, never
/// per forwarded request.
const POOL_SIZE: usize = 8;

pub struct PostgresRecords {
    pool: Pool,
    schema: OnceCell<()>,
}

fn unavailable(op: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("records ({op}): {e}"))
}

/// An error and its causes, one line ("error performing TLS handshake" alone says little).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

/// A driver error with the server's message when there is one (tokio-postgres prints only
/// "db error"); never the DETAIL, which can quote the values of a row.
fn failed(op: &str, e: &tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) => unavailable(op, format_args!("{} {}", db.code().code(), db.message())),
        None => unavailable(op, with_causes(e)),
    }
}

impl PostgresRecords {
    /// Builds the pool for `url` (`postgres://user@host:port/db?sslmode=...`) without
    /// connecting: a server that is down now is retried at each call.
    pub fn open(url: &str, ca_file: Option<&Path>) -> StoreResult<Self> {
        // The URL may carry a password: the parser's message is not echoed.
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|_| StoreError::Unavailable("records.url is not a PostgreSQL URL".into()))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        // A server that vanished without a reset (a moved VIP, a partition) must not keep the
        // pool's connections looking alive: unacknowledged data fails the socket after
        // TCP_USER_TIMEOUT, and idle ones are probed. Without these the kernel's defaults hold
        // a dead connection for about 15 minutes.
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(TCP_USER_TIMEOUT);
        }
        if config.get_keepalives_idle() > KEEPALIVE_IDLE {
            config.keepalives_idle(KEEPALIVE_IDLE);
        }
        // Records are written as well as read, and a hot standby would answer reads with what
        // it has replayed so far: a user enrolled since would read as "no 2FA". With several
        // hosts in the URL only the primary is used, whatever the URL says.
        config.target_session_attrs(tokio_postgres::config::TargetSessionAttrs::ReadWrite);
        if config.get_application_name().is_none() {
            config.application_name("twofa-proxy");
        }
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(ca_file)?);
        let manager = Manager::from_config(
            config,
            tls,
            ManagerConfig {
                // Fast: a connection whose socket the server closed is known closed without a
                // round trip; one that breaks mid-query fails that query and is then dropped.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(CALL_TIMEOUT))
            .create_timeout(Some(CALL_TIMEOUT))
            .recycle_timeout(Some(CALL_TIMEOUT))
            .build()
            .map_err(|e| unavailable("pool", e))?;
        Ok(Self {
            pool,
            schema: OnceCell::new(),
        })
    }

    /// Runs `f` on a pooled connection within [`CALL_TIMEOUT`]; once more on a fresh one when
    /// the connection turned out closed and `retry` allows it.
    async fn call<T, F, Fut>(&self, op: &'static str, retry: bool, f: F) -> StoreResult<T>
    where
        F: Fn(Object) -> Fut,
        Fut: Future<Output = Result<T, tokio_postgres::Error>>,
    {
        let attempt = async {
            let mut tries = if retry { 2 } else { 1 };
            loop {
                tries -= 1;
                let client = self.pool.get().await.map_err(|e| match e {
                    // Connecting failed in the server (authentication, no such database): its
                    // message, never its DETAIL.
                    deadpool_postgres::PoolError::Backend(e) => failed(op, &e),
                    e => unavailable(op, with_causes(&e)),
                })?;
                match f(client).await {
                    Ok(value) => return Ok(value),
                    Err(e) if e.is_closed() && tries > 0 => continue,
                    Err(e) => return Err(failed(op, &e)),
                }
            }
        };
        tokio::time::timeout(CALL_TIMEOUT, attempt)
            .await
            .map_err(|_| unavailable(op, "timed out"))?
    }

    /// Brings the schema up to date and writes the identity, once per process.
    async fn ensure_schema(&self) -> StoreResult<()> {
        self.schema
            .get_or_try_init(|| self.call("migrate", true, migrate))
            .await
            .map(drop)
    }
}

/// The roots TLS connections are verified against: the system's, and the operator's CA file.
fn tls_config(ca_file: Option<&Path>) -> StoreResult<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    // A missing or partly unreadable system bundle is not fatal: the CA file may be all that is
    // needed, and a server no root vouches for fails its handshake anyway.
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| {
            StoreError::Unavailable(format!("records.ca_file {}: {e}", path.display()))
        })?;
        let mut added = 0;
        for cert in rustls_pki_types_certs(&pem) {
            roots.add(cert?).map_err(|e| {
                StoreError::Unavailable(format!("records.ca_file {}: {e}", path.display()))
            })?;
            added += 1;
        }
        if added == 0 {
            return Err(StoreError::Unavailable(format!(
                "records.ca_file {}: no PEM certificate in it",
                path.display()
            )));
        }
    }
    Ok(rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth())
}

fn rustls_pki_types_certs(
    pem: &[u8],
) -> impl Iterator<Item = StoreResult<rustls::pki_types::CertificateDer<'static>>> + '_ {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .map(|c| c.map_err(|e| StoreError::Unavailable(format!("records.ca_file: {e}"))))
}

/// Applies the steps the database has not seen yet under [`MIGRATION_LOCK`], and writes the
/// identity if there is none; refuses a database from a newer proxy.
async fn migrate(mut c: Object) -> Result<(), tokio_postgres::Error> {
    let tx = c.transaction().await?;
    // Bounded in the server too: a wait the client gave up on must not hold the connection.
    tx.batch_execute("SET LOCAL lock_timeout = '4s'; SET LOCAL statement_timeout = '4s'")
        .await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS twofa_schema (version integer NOT NULL)")
        .await?;
    let version: i32 = match tx
        .query_opt("SELECT version FROM twofa_schema", &[])
        .await?
    {
        Some(row) => row.try_get(0)?,
        None => {
            tx.execute("INSERT INTO twofa_schema (version) VALUES (0)", &[])
                .await?;
            0
        }
    };
    if version > SCHEMA_VERSION {
        // Raised in the server so it arrives as an ordinary error and rolls the transaction back.
        tx.batch_execute(&format!(
            "DO $$ BEGIN RAISE EXCEPTION 'the records schema is version {version}, newer than \
             this proxy''s {SCHEMA_VERSION}: run the newer proxy, or restore a backup'; END $$"
        ))
        .await?;
    }
    for step in MIGRATIONS.iter().skip(version.max(0) as usize) {
        tx.batch_execute(step).await?;
    }
    tx.execute("UPDATE twofa_schema SET version = $1", &[&SCHEMA_VERSION])
        .await?;
    tx.execute(
        "INSERT INTO twofa_installation (id, created)
         SELECT $1, extract(epoch FROM now())::bigint
         WHERE NOT EXISTS (SELECT 1 FROM twofa_installation)",
        &[&crate::secrets::random_token()],
    )
    .await?;
    tx.commit().await
}

/// A `twofa_two_factor` row, checked: a row this proxy cannot read is an outage, not a user
/// without 2FA.
fn read_record(row: &Row) -> StoreResult<TwoFactorRecord> {
    // `try_get`: a column of another type (a schema changed by hand) is an error, not a panic.
    let corrupt = |e: tokio_postgres::Error| StoreError::Corrupt(format!("records: {e}"));
    let method: String = row.try_get(0).map_err(corrupt)?;
    let method = SecondFactor::from_name(&method)
        .ok_or_else(|| StoreError::Corrupt(format!("records: unknown method {method:?}")))?;
    let enabled_at: i64 = row.try_get(3).map_err(corrupt)?;
    let language: Option<String> = row.try_get(4).map_err(corrupt)?;
    Ok(TwoFactorRecord {
        method,
        totp_secret: row.try_get(1).map_err(corrupt)?,
        email: row.try_get(2).map_err(corrupt)?,
        enabled_at: u64::try_from(enabled_at)
            .map_err(|_| StoreError::Corrupt("records: negative enabled_at".into()))?,
        language: language.as_deref().and_then(Language::from_tag),
    })
}

impl Records for PostgresRecords {
    async fn ping(&self) -> StoreResult<()> {
        self.call("ping", true, |c| async move {
            c.simple_query("SELECT 1").await.map(drop)
        })
        .await
    }

    async fn identity(&self) -> StoreResult<String> {
        self.ensure_schema().await?;
        self.call("identity", true, |c| async move {
            c.query_one("SELECT id FROM twofa_installation", &[])
                .await?
                .try_get(0)
        })
        .await
    }

    async fn two_factor(&self, user: &str) -> StoreResult<Option<TwoFactorRecord>> {
        self.ensure_schema().await?;
        let row = self
            .call("two_factor", true, |c| async move {
                let select = c
                    .prepare_cached(
                        "SELECT method, totp_secret, email, enabled_at, language
                         FROM twofa_two_factor WHERE user_name = $1",
                    )
                    .await?;
                c.query_opt(&select, &[&user]).await
            })
            .await?;
        row.as_ref().map(read_record).transpose()
    }

    async fn save_two_factor(&self, user: &str, record: &TwoFactorRecord) -> StoreResult<()> {
        self.ensure_schema().await?;
        let enabled_at = i64::try_from(record.enabled_at)
            .map_err(|_| StoreError::Corrupt("records: enabled_at out of range".into()))?;
        let method = record.method.as_str();
        let language = record.language.map(Language::tag);
        // An upsert: the same statement twice leaves the same row, so a retry is safe.
        self.call("save_two_factor", true, |c| async move {
            c.execute(
                "INSERT INTO twofa_two_factor
                   (user_name, method, totp_secret, email, enabled_at, language)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (user_name) DO UPDATE SET method = excluded.method,
                   totp_secret = excluded.totp_secret, email = excluded.email,
                   enabled_at = excluded.enabled_at, language = excluded.language",
                &[
                    &user,
                    &method,
                    &record.totp_secret,
                    &record.email,
                    &enabled_at,
                    &language,
                ],
            )
            .await
            .map(drop)
        })
        .await
    }

    async fn remove_two_factor(&self, user: &str) -> StoreResult<bool> {
        self.ensure_schema().await?;
        // Not retried: after a commit whose answer was lost, a retry would read "there was
        // none", and the caller tells the user (a reset notice) only when there was one.
        self.call("remove_two_factor", false, |mut c| async move {
            let tx = c.transaction().await?;
            tx.execute(
                "DELETE FROM twofa_recovery_code WHERE user_name = $1",
                &[&user],
            )
            .await?;
            let removed = tx
                .execute(
                    "DELETE FROM twofa_two_factor WHERE user_name = $1",
                    &[&user],
                )
                .await?;
            tx.commit().await?;
            Ok(removed > 0)
        })
        .await
    }

    async fn set_recovery_codes(&self, user: &str, hashes: &[String]) -> StoreResult<()> {
        self.ensure_schema().await?;
        self.call("set_recovery_codes", true, |mut c| async move {
            let tx = c.transaction().await?;
            tx.execute(
                "DELETE FROM twofa_recovery_code WHERE user_name = $1",
                &[&user],
            )
            .await?;
            // One statement for the whole set: a round trip per code would make regenerating
            // codes cost ten.
            tx.execute(
                "INSERT INTO twofa_recovery_code (user_name, hash)
                 SELECT $1, h FROM unnest($2::text[]) AS h
                 ON CONFLICT DO NOTHING",
                &[&user, &hashes],
            )
            .await?;
            tx.commit().await
        })
        .await
    }

    async fn use_recovery_code(&self, user: &str, hash: &str) -> StoreResult<bool> {
        self.ensure_schema().await?;
        self.call("use_recovery_code", false, |c| async move {
            let delete = c
                .prepare_cached(
                    "DELETE FROM twofa_recovery_code WHERE user_name = $1 AND hash = $2",
                )
                .await?;
            c.execute(&delete, &[&user, &hash]).await.map(|n| n == 1)
        })
        .await
    }

    async fn recovery_codes_left(&self, user: &str) -> StoreResult<u32> {
        self.ensure_schema().await?;
        let n: i64 = self
            .call("recovery_codes_left", true, |c| async move {
                let count = c
                    .prepare_cached("SELECT count(*) FROM twofa_recovery_code WHERE user_name = $1")
                    .await?;
                c.query_one(&count, &[&user]).await?.try_get(0)
            })
            .await?;
        u32::try_from(n).map_err(|_| StoreError::Corrupt("records: recovery code count".into()))
    }

    async fn export_all(&self) -> StoreResult<Vec<UserRecords>> {
        self.ensure_schema().await?;
        let (users, codes) = self
            .call("export", true, |mut c| async move {
                // One snapshot for both reads.
                let tx = c
                    .build_transaction()
                    .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                    .read_only(true)
                    .start()
                    .await?;
                let users = tx
                    .query(
                        "SELECT method, totp_secret, email, enabled_at, language, user_name
                         FROM twofa_two_factor ORDER BY user_name",
                        &[],
                    )
                    .await?;
                let codes = tx
                    .query(
                        "SELECT user_name, hash FROM twofa_recovery_code
                         ORDER BY user_name, hash",
                        &[],
                    )
                    .await?;
                tx.commit().await?;
                Ok((users, codes))
            })
            .await?;
        super::transfer::join(
            users
                .iter()
                .map(|row| {
                    let user: String = row
                        .try_get(5)
                        .map_err(|e| StoreError::Corrupt(format!("records: {e}")))?;
                    Ok((user, read_record(row)?))
                })
                .collect::<StoreResult<Vec<_>>>()?,
            codes
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect::<Result<_, tokio_postgres::Error>>()
                .map_err(|e| StoreError::Corrupt(format!("records: {e}")))?,
        )
    }

    async fn import_all(
        &self,
        users: &[UserRecords],
        identity: &str,
        merge: bool,
    ) -> StoreResult<super::transfer::Imported> {
        self.ensure_schema().await?;
        // Not retried: a lost commit answer would read as "not empty" the second time.
        let outcome = self
            .call("import", false, |mut c| async move {
                let tx = c.transaction().await?;
                let existing: i64 = tx
                    .query_one("SELECT count(*) FROM twofa_two_factor", &[])
                    .await?
                    .try_get(0)?;
                if existing > 0 && !merge {
                    return Ok(Err(existing));
                }
                let mut done = super::transfer::Imported::default();
                for u in users {
                    let enabled_at = i64::try_from(u.record.enabled_at).unwrap_or(i64::MAX);
                    let added = tx
                        .execute(
                            "INSERT INTO twofa_two_factor
                               (user_name, method, totp_secret, email, enabled_at, language)
                             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (user_name) DO NOTHING",
                            &[
                                &u.user,
                                &u.record.method.as_str(),
                                &u.record.totp_secret,
                                &u.record.email,
                                &enabled_at,
                                &u.record.language.map(Language::tag),
                            ],
                        )
                        .await?;
                    if added == 0 {
                        done.skipped += 1;
                        continue;
                    }
                    tx.execute(
                        "INSERT INTO twofa_recovery_code (user_name, hash)
                         SELECT $1, h FROM unnest($2::text[]) AS h ON CONFLICT DO NOTHING",
                        &[&u.user, &u.recovery_hashes],
                    )
                    .await?;
                    done.users += 1;
                }
                if existing == 0 {
                    tx.execute("UPDATE twofa_installation SET id = $1", &[&identity])
                        .await?;
                    done.identity_adopted = true;
                }
                tx.commit().await?;
                Ok(Ok(done))
            })
            .await?;
        outcome.map_err(|n| super::transfer::not_empty(u64::try_from(n).unwrap_or(0)))
    }

    async fn adopt_identity(&self, id: &str) -> StoreResult<()> {
        self.ensure_schema().await?;
        self.call("adopt_identity", true, |c| async move {
            c.execute("UPDATE twofa_installation SET id = $1", &[&id])
                .await
                .map(drop)
        })
        .await
    }
}
