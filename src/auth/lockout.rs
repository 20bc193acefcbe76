//! The brute-force rules of one account: failed codes are counted per account in the store
//! (shared by replicas, surviving restarts); `lockout_threshold` failures within
//! `lockout_window` lock it for `lockout_duration`, and never more than 100 failures in a row
//! are allowed whatever the window (NIST SP 800-63B 5.2.2). Every check first takes a
//! [`Reservation`], so parallel guesses cannot all pass the threshold together.

use std::time::Duration;

use crate::auth::notices;
use crate::auth::verify::Outcome;
use crate::mail::Notice;
use crate::state::Core;
use crate::store::{Store, StoreResult};

/// The consecutive-failure counter's bucket: it only ever resets on a success or an
/// administrator's reset.
const CONSECUTIVE: u64 = u64::MAX;
/// NIST SP 800-63B 5.2.2: at most 100 consecutive failed attempts on one account.
const CONSECUTIVE_LIMIT: u32 = 100;
const CONSECUTIVE_TTL: Duration = Duration::from_secs(30 * 86_400);

/// An attempt counted before its code is checked; [`settle`] records how it went.
#[must_use]
pub struct Reservation {
    /// Failures in the current window, this attempt included.
    failures: u32,
}

fn bucket(core: &Core) -> u64 {
    core.clock.now() / core.config.twofactor.lockout_window.as_secs().max(1)
}

/// Seconds left on the user's lock, if locked now.
pub async fn locked_for(core: &Core, user: &str) -> StoreResult<Option<u64>> {
    let now = core.clock.now();
    Ok(core
        .store
        .locked_until(user)
        .await?
        .filter(|until| *until > now)
        .map(|until| until - now))
}

/// Counts an attempt before the code is checked. `Err(Locked)` if the account is locked or
/// this attempt is over a limit.
pub async fn reserve(core: &Core, user: &str) -> StoreResult<Result<Reservation, Outcome>> {
    let now = core.clock.now();
    match core.store.locked_until(user).await? {
        Some(until) if until > now => {
            return Ok(Err(Outcome::Locked {
                retry_after: until - now,
            }));
        }
        // The lock has run its time: the window starts over.
        Some(_) => {
            core.store.clear_failures(user, bucket(core)).await?;
            core.store.unlock_account(user).await?;
        }
        None => {}
    }
    let tf = &core.config.twofactor;
    let in_window = core
        .store
        .count_failure(user, bucket(core), tf.lockout_window)
        .await?;
    let in_a_row = core
        .store
        .count_failure(user, CONSECUTIVE, CONSECUTIVE_TTL)
        .await?;
    if in_window > tf.lockout_threshold || in_a_row > CONSECUTIVE_LIMIT {
        return Ok(Err(lock(core, user).await?));
    }
    Ok(Ok(Reservation {
        failures: in_window,
    }))
}

/// Records the result of a reserved attempt: a success clears the counts; a failure stays
/// counted and locks the account at the threshold.
pub async fn settle(
    core: &Core,
    user: &str,
    ok: bool,
    reservation: Reservation,
) -> StoreResult<Outcome> {
    let tf = &core.config.twofactor;
    if ok {
        core.store.clear_failures(user, bucket(core)).await?;
        core.store.clear_failures(user, CONSECUTIVE).await?;
        return Ok(Outcome::Passed);
    }
    let failures = reservation.failures;
    tracing::info!(target: "audit", event = "second_factor_failed", user, failures);
    if failures >= tf.lockout_threshold {
        return lock(core, user).await;
    }
    Ok(Outcome::Failed {
        tries_left: tf.lockout_threshold - failures,
    })
}

async fn lock(core: &Core, user: &str) -> StoreResult<Outcome> {
    let tf = &core.config.twofactor;
    let now = core.clock.now();
    let until = now + tf.lockout_duration.as_secs();
    // Tell the user (and count it) once per lock, not for every refused guess; the window's
    // count is kept, so guesses already on their way are refused too.
    let already = locked_for(core, user).await?.is_some();
    // Kept past its end (until the window is over too), so the next attempt knows to start over.
    core.store
        .lock_account(user, until, tf.lockout_duration + tf.lockout_window)
        .await?;
    if !already {
        core.metrics.lockouts.inc();
        notices::notify_known(core, user, Notice::Locked).await?;
    }
    tracing::warn!(target: "audit", event = "account_locked", user, seconds = tf.lockout_duration.as_secs());
    Ok(Outcome::Locked {
        retry_after: until - now,
    })
}

/// Lifts the lock and the consecutive count (the administrator's reset): past 100 failures in
/// a row nothing else clears them.
pub async fn forgive(core: &Core, user: &str) -> StoreResult<()> {
    core.store.unlock_account(user).await?;
    core.store.clear_failures(user, CONSECUTIVE).await
}
