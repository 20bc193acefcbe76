//! `twofa-proxy admin export` and `admin import`: every user's records as one JSON document,
//! for backups and for moving between backends (SQLite to PostgreSQL and back).
//!
//! TOTP keys stay sealed and recovery codes stay keyed hashes: the file is only usable with the
//! same `[secrets] encryption_key` (or one of `previous_keys`), and holds email addresses, so it
//! is written readable by its owner only. The export carries the records' identity; an import
//! into empty records takes it over, so the store recognises the moved records as the ones it
//! served with (see [`super::identity`]). Importing into records that already hold users is
//! refused unless asked to merge, which adds only the users they do not have.

use std::io::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{AnyRecords, Records, TwoFactorRecord, UserRecords};
use crate::config::{Config, RecordsBackend};
use crate::store::{StoreError, StoreResult};

/// What the file says it is, so an unrelated JSON file is refused.
const FORMAT: &str = "twofa-proxy records";
/// Bumped when the document's shape changes; an import refuses versions it does not know.
const VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
pub struct Export {
    pub format: String,
    pub version: u32,
    /// The exported records' identity.
    pub identity: String,
    /// Seconds since the Unix epoch.
    pub exported_at: u64,
    pub users: Vec<UserRecords>,
}

impl Export {
    /// Refuses a document this proxy does not read.
    pub fn check(&self) -> StoreResult<()> {
        if self.format != FORMAT || self.version != VERSION {
            return Err(StoreError::Corrupt(format!(
                "not a records export this proxy reads (format {:?}, version {}; expected \
                 {FORMAT:?}, version {VERSION})",
                self.format, self.version
            )));
        }
        Ok(())
    }
}

/// What an import did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Imported {
    pub users: usize,
    /// Users the records already had (merge only): left as they were.
    pub skipped: usize,
    /// The records took over the export's identity (they were empty).
    pub identity_adopted: bool,
}

/// Joins records with `(user, hash)` code rows, in any order (a database's collation need not
/// be byte order); the users come out sorted.
pub(super) fn join(
    users: Vec<(String, TwoFactorRecord)>,
    codes: Vec<(String, String)>,
) -> StoreResult<Vec<UserRecords>> {
    let mut by_user: std::collections::BTreeMap<String, Vec<String>> =
        std::collections::BTreeMap::new();
    for (user, hash) in codes {
        by_user.entry(user).or_default().push(hash);
    }
    let mut out: Vec<UserRecords> = users
        .into_iter()
        .map(|(user, record)| {
            // Codes of users without a record (none are written that way) are left out.
            let mut recovery_hashes = by_user.remove(&user).unwrap_or_default();
            recovery_hashes.sort_unstable();
            UserRecords {
                user,
                record,
                recovery_hashes,
            }
        })
        .collect();
    out.sort_unstable_by(|a, b| a.user.cmp(&b.user));
    Ok(out)
}

impl AnyRecords {
    /// Every user's records and the identity, trusted or not (an operator's backup).
    pub async fn export(&self, now: u64) -> StoreResult<Export> {
        Ok(Export {
            format: FORMAT.to_owned(),
            version: VERSION,
            identity: self.identity().await?,
            exported_at: now,
            users: self.export_all().await?,
        })
    }

    /// Writes `export`'s users into these records (see the module's rules).
    pub async fn import(&self, export: &Export, merge: bool) -> StoreResult<Imported> {
        export.check()?;
        self.import_all(&export.users, &export.identity, merge)
            .await
    }
}

/// The refusal of an import into records that hold users, without `--merge`.
pub(super) fn not_empty(users: u64) -> StoreError {
    StoreError::Corrupt(format!(
        "these records already hold {users} user(s): import into empty records, or pass --merge \
         to add only the users they do not have"
    ))
}

/// Writes `export` to a new file readable by its owner only (it holds email addresses and
/// sealed keys), or to stdout for `-`.
pub fn write_file(export: &Export, path: &Path) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(export)?;
    if path.as_os_str() == "-" {
        let mut out = std::io::stdout().lock();
        out.write_all(&json)?;
        return out.write_all(b"\n");
    }
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(&json)?;
    file.write_all(b"\n")?;
    file.sync_all()
}

pub fn read_file(path: &Path) -> anyhow::Result<Export> {
    let bytes = if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut buf)?;
        buf
    } else {
        std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
    };
    serde_json::from_slice(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Opens the records `[records]` names for an operator's command. An SQLite file must exist:
/// exporting a path with a typo must not create an empty database and export nobody.
async fn open_for_command(config: &Config, must_exist: bool) -> anyhow::Result<AnyRecords> {
    crate::app::install_crypto_provider();
    let r = &config.records;
    if must_exist && r.backend == RecordsBackend::Sqlite && !r.in_memory() && !r.path.exists() {
        anyhow::bail!("records.path {}: no such file", r.path.display());
    }
    AnyRecords::open(r)
        .await
        .map_err(|e| anyhow::anyhow!("[records]: {e}"))
}

/// `twofa-proxy admin export [--output FILE]`.
pub async fn export_command(config: &Config, output: &Path, now: u64) -> anyhow::Result<()> {
    let records = open_for_command(config, true).await?;
    let export = records.export(now).await?;
    write_file(&export, output).map_err(|e| anyhow::anyhow!("{}: {e}", output.display()))?;
    tracing::warn!(
        target: "audit",
        event = "records_exported",
        users = export.users.len(),
        by = "admin"
    );
    eprintln!("exported {} user(s)", export.users.len());
    Ok(())
}

/// `twofa-proxy admin import FILE [--merge]`.
pub async fn import_command(config: &Config, input: &Path, merge: bool) -> anyhow::Result<()> {
    let export = read_file(input)?;
    export.check()?;
    let records = open_for_command(config, false).await?;
    let done = records.import(&export, merge).await?;
    tracing::warn!(
        target: "audit",
        event = "records_imported",
        users = done.users,
        skipped = done.skipped,
        by = "admin"
    );
    eprintln!(
        "imported {} user(s), skipped {} already there{}",
        done.users,
        done.skipped,
        if done.identity_adopted {
            "; the records took the export's identity (a proxy that served the exported \
             records serves these without confirm-records)"
        } else {
            "; the records kept their identity"
        }
    );
    Ok(())
}

/// `twofa-proxy migrate`: brings the records' schema up to date (a start does the same).
pub async fn migrate_command(config: &Config) -> anyhow::Result<()> {
    let records = open_for_command(config, false).await?;
    // The identity is read after the schema is current: PostgreSQL migrates at the first call.
    let identity = records.identity().await?;
    eprintln!("records schema is current");
    // On stdout, for `[records] identity` (it is an identifier, not a secret).
    writeln!(std::io::stdout(), "records identity: {identity}")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::SecondFactor;

    fn record(n: u64) -> TwoFactorRecord {
        TwoFactorRecord {
            method: SecondFactor::Email,
            totp_secret: None,
            email: Some(format!("u{n}@example.com")),
            enabled_at: n,
            language: None,
        }
    }

    #[test]
    fn codes_join_their_users_only() {
        let users = vec![("c".into(), record(2)), ("a".into(), record(1))];
        let codes = vec![
            ("a".into(), "h2".into()),
            ("d".into(), "orphan".into()),
            ("c".into(), "h3".into()),
            ("b".into(), "orphan".into()),
            ("a".into(), "h1".into()),
        ];
        let joined = join(users, codes).unwrap();
        assert_eq!(joined.len(), 2);
        assert_eq!(joined[0].user, "a");
        assert_eq!(joined[0].recovery_hashes, ["h1", "h2"]);
        assert_eq!(joined[1].user, "c");
        assert_eq!(joined[1].recovery_hashes, ["h3"]);
    }
}
