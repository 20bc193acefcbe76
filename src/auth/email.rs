//! Codes sent by email: 6 to 10 digits from the CSPRNG, stored as a keyed hash under the pending
//! login or enrollment they were issued for, single use, expiring after `[email] code_ttl`.
//! A new code replaces the old; resends wait `resend_interval` and count against the hourly
//! cap; none of this touches the failure counter.

use std::time::Duration;

use crate::mail::address::mask;
use crate::mail::render::{MailKind, code_mail};
use crate::secrets::random_below;
use crate::secrets::token_matches;
use crate::state::Core;
use crate::store::{EmailCode, Store, StoreResult};
use crate::words::Language;

/// Where a code is kept: bound to what it was issued for.
pub fn login_key(pending_id: &str) -> String {
    format!("login:{pending_id}")
}

pub fn enroll_key(user: &str) -> String {
    format!("enroll:{user}")
}

/// For confirming a change in settings when the user's method is email.
pub fn change_key(user: &str) -> String {
    format!("change:{user}")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// Sent to this (masked) address.
    Sent { to: String },
    /// The last code went out less than `resend_interval` ago; wait this many seconds.
    TooSoon { wait: u64 },
    /// The hourly cap is reached.
    HourlyCap,
    /// The mail server did not take it; nothing was issued, a retry can work.
    Failed,
}

/// A code as typed: digits only (spaces and dashes ignored), of the configured length.
pub fn parse_code(core: &Core, input: &str) -> Option<String> {
    let digits: String = input
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .collect();
    (digits.len() == usize::from(core.config.email.code_digits)
        && digits.bytes().all(|b| b.is_ascii_digit()))
    .then_some(digits)
}

fn new_code(digits: u8) -> String {
    let n = random_below(10u64.pow(u32::from(digits)));
    format!("{n:0width$}", width = usize::from(digits))
}

/// Who pays for a code email. Someone who knows a victim's password can start sign-ins; if
/// their code emails spent the account's one budget, the victim could not get a code. So each
/// sign-in has its own small allowance, each client its own hourly one per account, and only a
/// larger ceiling is shared by the whole account.
#[derive(Debug, Clone, Copy)]
pub enum Budget<'a> {
    /// A sign-in's code: `pending` is its id, `client` where it was started from.
    Login {
        pending: &'a str,
        client: Option<&'a str>,
    },
    /// A code the signed-in user asked for in the settings.
    Settings,
}

/// Counter keys for the budgets; `\u{1f}` cannot occur in a canonical account name.
fn budget_key(user: &str, part: &str) -> String {
    format!("{user}\u{1f}{part}")
}

/// Counts one email against every budget it draws on; false if any is spent.
async fn spend(core: &Core, user: &str, budget: Budget<'_>) -> StoreResult<bool> {
    let email = &core.config.email;
    let hour = core.clock.now() / 3600;
    let an_hour = Duration::from_secs(3600);
    let counts = match budget {
        Budget::Settings => vec![(
            budget_key(user, "settings"),
            hour,
            an_hour,
            email.max_sends_per_hour,
        )],
        Budget::Login { pending, client } => vec![
            (
                budget_key(user, &format!("login:{pending}")),
                0,
                core.config.twofactor.challenge_ttl,
                email.max_sends_per_login,
            ),
            (
                budget_key(user, &format!("client:{}", client.unwrap_or("-"))),
                hour,
                an_hour,
                email.max_sends_per_hour,
            ),
            (
                user.to_owned(),
                hour,
                an_hour,
                email.max_account_sends_per_hour,
            ),
        ],
    };
    for (key, bucket, ttl, limit) in counts {
        if core.store.count_email_send(&key, bucket, ttl).await? > limit {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Issues a fresh code for `key` and mails it to `address`, in `language`.
pub async fn send_code(
    core: &Core,
    key: &str,
    user: &str,
    address: &str,
    kind: MailKind,
    budget: Budget<'_>,
    language: Language,
) -> StoreResult<Sent> {
    let email = &core.config.email;
    let now = core.clock.now();
    if let Some(previous) = core.store.email_code(key).await? {
        let next = previous.created + email.resend_interval.as_secs();
        if now < next {
            return Ok(Sent::TooSoon { wait: next - now });
        }
    }
    if !spend(core, user, budget).await? {
        tracing::info!(target: "audit", event = "email_code_capped", user);
        return Ok(Sent::HourlyCap);
    }
    let code = new_code(email.code_digits);
    let minutes = email.code_ttl.as_secs().div_ceil(60);
    let w = language.words();
    let mail = code_mail(w, &core.brand.app_name, address, user, &code, minutes, kind);
    if let Err(e) = core.mailer.send(&mail).await {
        core.metrics.email(kind.as_str(), "failed");
        tracing::warn!(user, kind = kind.as_str(), error = %e, "could not send a code email");
        return Ok(Sent::Failed);
    }
    core.metrics.email(kind.as_str(), "sent");
    let record = EmailCode {
        hash: core.sealer.hash_code("email", &code),
        address: address.to_owned(),
        created: now,
    };
    core.store
        .put_email_code(key, &record, email.code_ttl)
        .await?;
    tracing::info!(target: "audit", event = "email_code_sent", user, kind = kind.as_str());
    Ok(Sent::Sent { to: mask(address) })
}

/// Whether `input` is the live code for `key`, without using it up.
pub async fn matches_code(core: &Core, key: &str, input: &str) -> StoreResult<Option<EmailCode>> {
    let Some(code) = parse_code(core, input) else {
        return Ok(None);
    };
    let Some(stored) = core.store.email_code(key).await? else {
        return Ok(None);
    };
    if core.clock.now() > stored.created + core.config.email.code_ttl.as_secs() {
        return Ok(None);
    }
    // Hashes made under a previous key (before a rotation) still match.
    let matched = core
        .sealer
        .hash_candidates("email", &code)
        .iter()
        .any(|h| token_matches(h, &stored.hash));
    Ok(matched.then_some(stored))
}

/// Uses up a code found by [`matches_code`]; of two right answers racing, one wins.
pub async fn take_code(core: &Core, key: &str, matched: &EmailCode) -> StoreResult<Option<String>> {
    Ok(core
        .store
        .take_email_code(key)
        .await?
        .filter(|t| t.hash == matched.hash)
        .map(|t| t.address))
}

/// Whether `input` is the live code for `key`; a match uses the code up. The address it was
/// sent to comes back, so an enrollment proves exactly that address.
pub async fn check_code(core: &Core, key: &str, input: &str) -> StoreResult<Option<String>> {
    match matches_code(core, key, input).await? {
        Some(matched) => take_code(core, key, &matched).await,
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_the_configured_length_and_vary() {
        for digits in [6u8, 8, 10] {
            let c = new_code(digits);
            assert_eq!(c.len(), usize::from(digits));
            assert!(c.bytes().all(|b| b.is_ascii_digit()));
        }
        let many: std::collections::HashSet<String> = (0..50).map(|_| new_code(6)).collect();
        assert!(many.len() > 45, "codes repeat too often");
    }
}
