//! Checking a second factor for a user: a TOTP code (each step accepted once, RFC 6238 5.2), an
//! emailed code, or a recovery code, every check under the account's [`lockout`] rules.

use std::time::Duration;

use crate::auth::SecondFactor;
use crate::auth::{email, lockout, notices, recovery, totp};
use crate::mail::Notice;
use crate::records::Records;
use crate::records::TwoFactorRecord;
use crate::state::Core;
use crate::store::{Store, StoreResult};

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
    Ok(core
        .store
        .claim_totp_step(user, step, step_ttl(core))
        .await?
        .is_claimed())
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
    let reserved = match lockout::reserve(core, user).await? {
        Ok(r) => r,
        Err(locked) => return Ok(locked),
    };
    let ok = match record.method {
        SecondFactor::Totp if totp::TotpCode::parse(code).is_some() => {
            match totp_secret(core, user, record) {
                Some(secret) => totp_matches(core, user, &secret, code).await?,
                None => false,
            }
        }
        // Only a code sent to the address that is the factor now: a sign-in held back before
        // the user moved the factor to a new address must not finish with a code from the old.
        SecondFactor::Email if email::parse_code(core, code).is_some() => {
            email::check_code(core, email_key, code)
                .await?
                .is_some_and(|sent_to| record.email.as_deref() == Some(sent_to.as_str()))
        }
        // Anything else may be a recovery code.
        _ => use_recovery_code(core, user, code).await?,
    };
    lockout::settle(core, user, ok, reserved).await
}

/// A recovery code only (the challenge's recovery page).
pub async fn verify_recovery(core: &Core, user: &str, code: &str) -> StoreResult<Outcome> {
    let reserved = match lockout::reserve(core, user).await? {
        Ok(r) => r,
        Err(locked) => return Ok(locked),
    };
    let ok = use_recovery_code(core, user, code).await?;
    lockout::settle(core, user, ok, reserved).await
}

async fn use_recovery_code(core: &Core, user: &str, code: &str) -> StoreResult<bool> {
    let Some(normalized) = recovery::normalize(code) else {
        return Ok(false);
    };
    // Codes hashed under a previous key (before a rotation) still work.
    let mut used = false;
    for hash in core.sealer.hash_candidates("recovery", &normalized) {
        if core.records.use_recovery_code(user, &hash).await? {
            used = true;
            break;
        }
    }
    if used {
        let left = core.records.recovery_codes_left(user).await.unwrap_or(0);
        tracing::info!(target: "audit", event = "recovery_code_used", user, codes_left = left);
        notices::notify_known(core, user, Notice::RecoveryCodeUsed).await?;
    }
    Ok(used)
}
