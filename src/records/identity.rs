//! Records that vanish must be noticed, never read as "nobody has 2FA". The records carry an
//! identity written when they were first opened; the store remembers the identity it last
//! served with. At start and every [`CHECK_EVERY`] the two are compared:
//! - the store knows none (a first start, a store that was emptied, or a store from before the
//!   records, whose 2FA records are imported first): it learns the records';
//! - they are the same: served;
//! - they differ: the records were replaced (an empty database, the wrong volume, another
//!   installation's backup). Every records read and write then fails, so sign-ins, challenges
//!   and settings answer 503 (sessions already issued keep working), and `/readyz` fails, until
//!   an operator confirms the records with `twofa-proxy admin confirm-records`.
//!
//! A store and records emptied together look like a first start, unless the operator pinned
//! the identity in the config (`[records] identity`, printed by `twofa-proxy migrate`): pinned,
//! records with another identity are refused whatever the store remembers.

use std::sync::Arc;
use std::time::Duration;

use super::{AnyRecords, Records};
use crate::store::{AnyStore, Store, StoreError, StoreResult};

/// How often a running proxy compares the identities again: also how long TOTP sign-ins answer
/// 503 after the store was emptied (until it learns the identity again). One read of each.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);
/// How soon it tries again after a check could not be made (records or store down, as at a
/// start before the database is up): the proxy serves again about this long after they return.
pub const RETRY_EVERY: Duration = Duration::from_secs(1);

/// What a comparison found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Same,
    /// The store knew no records yet and now knows these.
    Learned,
    /// The records are not the ones the store served with.
    Replaced,
}

/// Compares the identities and trusts the records only when they match (or the store knew
/// none). Any failure leaves them untrusted: an unanswered question is not a yes.
/// `now` (unix seconds, the proxy's clock) sets the TOTP step floor when the store learns.
pub async fn check(store: &AnyStore, records: &AnyRecords, now: u64) -> StoreResult<Verdict> {
    let verdict = compare(store, records, step_floor(now)).await;
    records.set_trusted(matches!(verdict, Ok(Verdict::Same | Verdict::Learned)));
    verdict
}

/// A store that learns the identity (again) does not know which TOTP steps were used before:
/// codes of the current step and earlier are refused from then on (a code typed just before an
/// emptied store could otherwise pass twice). Users wait for their next code at most 30 s.
fn step_floor(now: u64) -> u64 {
    now / crate::auth::totp::STEP_SECONDS
}

async fn compare(store: &AnyStore, records: &AnyRecords, floor: u64) -> StoreResult<Verdict> {
    let found = records.identity().await?;
    let remembered = store.records_identity().await?;
    let pinned = records.pinned_identity();
    if pinned.is_some_and(|p| p != found) {
        // The operator's word in the config outranks what any store remembers.
        return Ok(Verdict::Replaced);
    }
    Ok(match remembered {
        Some(remembered) if remembered == found => Verdict::Same,
        // Pinned and matching: the store is the stranger (emptied, or another one).
        Some(_) if pinned.is_some() => {
            store.remember_records_identity(&found, floor).await?;
            Verdict::Learned
        }
        Some(_) => Verdict::Replaced,
        None => {
            // A store from before the records kept the 2FA records itself: bring them over
            // first, or an upgrade would read as "nobody has 2FA".
            let imported = records
                .import_legacy(store.legacy_two_factor().await?)
                .await?;
            if imported > 0 {
                tracing::warn!(
                    target: "audit",
                    event = "records_imported",
                    count = imported,
                    "2FA records imported from the store's old layout (left in place there)"
                );
            }
            store.remember_records_identity(&found, floor).await?;
            Verdict::Learned
        }
    })
}

/// The operator's word that these are the right records (restored from a backup, moved to a
/// new volume): the store learns their identity and they are served again.
pub async fn confirm(store: &AnyStore, records: &AnyRecords, now: u64) -> StoreResult<()> {
    let found = records.identity().await?;
    if records.pinned_identity().is_some_and(|p| p != found) {
        return Err(StoreError::Unavailable(
            "records: [records] identity names other records; change it to confirm these".into(),
        ));
    }
    store
        .remember_records_identity(&found, step_floor(now))
        .await?;
    records.set_trusted(true);
    tracing::warn!(target: "audit", event = "records_confirmed", by = "admin");
    Ok(())
}

/// Checks again every [`CHECK_EVERY`] ([`RETRY_EVERY`] after a check failed), logging each
/// change of verdict, for as long as the records are in use. `last` is the start's verdict.
pub async fn watch(
    store: Arc<AnyStore>,
    records: std::sync::Weak<AnyRecords>,
    clock: crate::clock::SharedClock,
    mut last: Option<Result<Verdict, ()>>,
) {
    loop {
        let pause = match last {
            Some(Err(())) => RETRY_EVERY,
            _ => CHECK_EVERY,
        };
        tokio::time::sleep(pause).await;
        let Some(records) = records.upgrade() else {
            return;
        };
        let verdict = check(&store, &records, clock.now()).await;
        log_change(&mut last, &verdict);
    }
}

/// Logs a verdict when it differs from the last one.
pub fn log_change(last: &mut Option<Result<Verdict, ()>>, verdict: &StoreResult<Verdict>) {
    let now = match verdict {
        Ok(v) => Ok(v.clone()),
        Err(_) => Err(()),
    };
    if last.as_ref() == Some(&now) {
        return;
    }
    match verdict {
        Ok(Verdict::Same) => tracing::info!("records confirmed: the ones the store served with"),
        Ok(Verdict::Learned) => {
            tracing::info!(
                "records identity remembered in the store (first start or an emptied store)"
            )
        }
        Ok(Verdict::Replaced) => tracing::error!(
            "the records are not the ones this installation served with (an empty or replaced \
             database?): sign-ins are refused until `twofa-proxy admin confirm-records`"
        ),
        Err(e) => {
            tracing::error!(error = %e, "records identity could not be checked; sign-ins are refused")
        }
    }
    *last = Some(now);
}
