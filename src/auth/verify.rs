//! Checking a second factor for a user, with the brute-force rules around it: a per-account
//! failure counter in the store (shared by replicas, surviving restarts), lockouts answered
//! with a retry time, and each TOTP step accepted once (RFC 6238 5.2).

use std::time::Duration;

use crate::auth::{email, recovery, totp};
use crate::mail::Notice;
use crate::state::Core;
use crate::store::{MethodKind, Store, StoreResult, TwoFactorRecord};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    /// Wrong, reused or malformed; `tries_left` before the account locks.
    Failed {
        tries_left: u32,
    },
    /// Locked; try again in this many seconds.
    Locked {
        retry_after: u64,
    },
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

/// How long the store remembers a claimed step: past the end of the skew window.
pub fn step_ttl(core: &Core) -> Duration {
    Duration::from_secs((2 * u64::from(core.config.totp.skew) + 2) * totp::STEP_SECONDS)
}

/// The TOTP key of a 2FA record, opened.
pub fn totp_secret(core: &Core, user: &str, record: &TwoFactorRecord) -> Option<Vec<u8>> {
    core.sealer
        .open("totp", user, record.totp_secret.as_deref()?)
}

/// Checks `code` against a TOTP key and claims its step; no lockout bookkeeping.
pub async fn totp_matches(core: &Core, user: &str, secret: &[u8], code: &str) -> StoreResult<bool> {
    let Some(code) = totp::TotpCode::parse(code) else {
        return Ok(false);
    };
    let Some(step) = totp::check(secret, &code, core.clock.now(), core.config.totp.skew) else {
        return Ok(false);
    };
    core.store.claim_totp_step(user, step, step_ttl(core)).await
}

/// A code from the user's authenticator app, or (if it looks like one) a recovery code.
/// `email_key` names the emailed code this check is for (a pending login or a settings change);
/// it matters only when the user's method is email.
pub async fn verify(
    core: &Core,
    user: &str,
    record: &TwoFactorRecord,
    code: &str,
    email_key: &str,
) -> StoreResult<Outcome> {
    let reserved = match reserve(core, user).await? {
        Ok(n) => n,
        Err(locked) => return Ok(locked),
    };
    let ok = match record.method {
        MethodKind::Totp if totp::TotpCode::parse(code).is_some() => {
            match totp_secret(core, user, record) {
                Some(secret) => totp_matches(core, user, &secret, code).await?,
                None => false,
            }
        }
        // Only a code sent to the address that is the factor now: a sign-in held back before
        // the user moved the factor to a new address must not finish with a code from the old.
        MethodKind::Email if email::parse_code(core, code).is_some() => {
            email::check_code(core, email_key, code)
                .await?
                .is_some_and(|sent_to| record.email.as_deref() == Some(sent_to.as_str()))
        }
        // Anything else may be a recovery code.
        _ => use_recovery_code(core, user, code).await?,
    };
    settle(core, user, ok, reserved).await
}

/// A recovery code only (the challenge's recovery page).
pub async fn verify_recovery(core: &Core, user: &str, code: &str) -> StoreResult<Outcome> {
    let reserved = match reserve(core, user).await? {
        Ok(n) => n,
        Err(locked) => return Ok(locked),
    };
    let ok = use_recovery_code(core, user, code).await?;
    settle(core, user, ok, reserved).await
}

async fn use_recovery_code(core: &Core, user: &str, code: &str) -> StoreResult<bool> {
    let Some(normalized) = recovery::normalize(code) else {
        return Ok(false);
    };
    // Codes hashed under a previous key (before a rotation) still work.
    let mut used = false;
    for hash in core.sealer.hash_candidates("recovery", &normalized) {
        if core.store.use_recovery_code(user, &hash).await? {
            used = true;
            break;
        }
    }
    if used {
        let left = core.store.recovery_codes_left(user).await.unwrap_or(0);
        tracing::info!(target: "audit", event = "recovery_code_used", user, codes_left = left);
        email::notify_known(core, user, Notice::RecoveryCodeUsed).await?;
    }
    Ok(used)
}

fn bucket(core: &Core) -> u64 {
    core.clock.now() / core.config.twofactor.lockout_window.as_secs().max(1)
}

/// The consecutive-failure counter's bucket: it only ever resets on a success (NIST SP 800-63B
/// 5.2.2: never more than 100 consecutive failed attempts on one account).
pub const CONSECUTIVE: u64 = u64::MAX;
const CONSECUTIVE_LIMIT: u32 = 100;
const CONSECUTIVE_TTL: Duration = Duration::from_secs(30 * 86_400);

/// Counts an attempt before the code is checked, so that parallel guesses cannot all pass the
/// threshold check together. `Ok(count)` to go ahead; `Err(Locked)` if locked or over the limit.
async fn reserve(core: &Core, user: &str) -> StoreResult<Result<u32, Outcome>> {
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
    Ok(Ok(in_window))
}

/// Records the result of a reserved attempt: a success clears the counts; a failure stays
/// counted and locks the account at the threshold.
async fn settle(core: &Core, user: &str, ok: bool, failures: u32) -> StoreResult<Outcome> {
    let tf = &core.config.twofactor;
    if ok {
        core.store.clear_failures(user, bucket(core)).await?;
        core.store.clear_failures(user, CONSECUTIVE).await?;
        return Ok(Outcome::Passed);
    }
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
        email::notify_known(core, user, Notice::Locked).await?;
    }
    tracing::warn!(target: "audit", event = "account_locked", user, seconds = tf.lockout_duration.as_secs());
    Ok(Outcome::Locked {
        retry_after: until - now,
    })
}
