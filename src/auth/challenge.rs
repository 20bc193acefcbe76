//! The challenge of a held-back login: after the app accepted a password, the user proves the
//! second factor (or uses a recovery code) within `challenge_ttl` and `max_attempts_per_challenge`;
//! the held-back login is then taken once and a new proxy session starts.

use crate::auth::email::{self, Sent};
use crate::auth::verify::{self, Outcome};
use crate::auth::{SecondFactor, totp};
use crate::login::held::HeldAnswer;
use crate::mail::MailKind;
use crate::mail::address::mask;
use crate::session::Current;
use crate::state::Core;
use crate::store::{PendingLogin, Store, StoreResult};

/// The held-back login behind a pending cookie's value, while it lives.
pub async fn pending(core: &Core, id: &str) -> StoreResult<Option<PendingLogin>> {
    if id.is_empty() {
        return Ok(None);
    }
    core.store.pending_login(id).await
}

/// What the challenge asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    /// The user's factor; `None` once 2FA was reset meanwhile (the next attempt says expired).
    pub factor: Option<SecondFactor>,
    /// The email factor: where codes go (masked), and whether a code is out.
    pub email: Option<EmailPrompt>,
    /// Digits of the code asked for.
    pub digits: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailPrompt {
    pub to: String,
    /// A code for this sign-in is live (else sending failed, or it was used up).
    pub code_out: bool,
    /// Seconds until a new code may be asked for.
    pub resend_wait: u64,
}

/// What the challenge for pending login `id` asks for.
pub async fn prompt(core: &Core, id: &str, pending: &PendingLogin) -> StoreResult<Prompt> {
    let record = core.store.two_factor(&pending.user).await?;
    let factor = record.as_ref().map(|r| r.method);
    let mut prompt = Prompt {
        factor,
        email: None,
        digits: totp::DIGITS as u8,
    };
    if let Some(r) = record.filter(|r| r.method == SecondFactor::Email) {
        let code = core.store.email_code(&email::login_key(id)).await?;
        let resend_wait = code.as_ref().map_or(0, |c| {
            let next = c.created + core.config.email.resend_interval.as_secs();
            next.saturating_sub(core.clock.now())
        });
        prompt.digits = core.config.email.code_digits;
        prompt.email = Some(EmailPrompt {
            to: r.email.as_deref().map(mask).unwrap_or_default(),
            code_out: code.is_some(),
            resend_wait,
        });
    }
    Ok(prompt)
}

/// Sends a fresh code for a pending login whose user has the email factor (`None` otherwise).
pub async fn resend(core: &Core, id: &str, pending: &PendingLogin) -> StoreResult<Option<Sent>> {
    let Some(record) = core.store.two_factor(&pending.user).await? else {
        return Ok(None);
    };
    let (SecondFactor::Email, Some(address)) = (record.method, record.email.as_deref()) else {
        return Ok(None);
    };
    Ok(Some(
        email::send_code(
            core,
            &email::login_key(id),
            &pending.user,
            address,
            MailKind::LoginCode,
            email::Budget::Login {
                pending: id,
                client: pending.client.as_deref(),
            },
        )
        .await?,
    ))
}

/// What one code against a pending login came to.
pub enum Attempt {
    /// Right: the login was taken and a session started; replay `answer` with its cookie.
    Passed {
        answer: Box<HeldAnswer>,
        session: Box<Current>,
    },
    /// Wrong; `tries_left` before this sign-in or the account runs out.
    Failed {
        tries_left: u32,
    },
    Locked {
        retry_after: u64,
    },
    /// This sign-in used up its attempts and is gone.
    Exhausted,
    /// The pending login is gone (expired, used, or 2FA reset meanwhile).
    Expired,
}

/// Checks `code` (the user's factor, or a recovery code when `recovery`) against pending login
/// `id`. `old_session` is the proxy session the browser still carries: it ends on success.
pub async fn attempt(
    core: &Core,
    id: &str,
    pending: &PendingLogin,
    code: &str,
    recovery: bool,
    old_session: Option<&str>,
) -> StoreResult<Attempt> {
    let user = pending.user.as_str();
    let Some(record) = core.store.two_factor(user).await? else {
        core.store.take_login(id).await?;
        return Ok(Attempt::Expired);
    };
    let tf = &core.config.twofactor;
    let attempts = core.store.count_attempt(id, tf.challenge_ttl).await?;
    if attempts > tf.max_attempts_per_challenge {
        core.store.take_login(id).await?;
        tracing::info!(target: "audit", event = "challenge_abandoned", user, attempts);
        return Ok(Attempt::Exhausted);
    }
    let method = if recovery { "recovery" } else { "totp" };
    let outcome = if recovery {
        verify::verify_recovery(core, user, code).await?
    } else {
        verify::verify(core, user, &record, code, &email::login_key(id)).await?
    };
    Ok(match outcome {
        Outcome::Passed => {
            core.metrics.challenge(method, "passed");
            finish(core, id, old_session).await?
        }
        Outcome::Failed { tries_left } => {
            core.metrics.challenge(method, "failed");
            let left_here = tf.max_attempts_per_challenge.saturating_sub(attempts);
            Attempt::Failed {
                tries_left: tries_left.min(left_here),
            }
        }
        Outcome::Locked { retry_after } => {
            core.metrics.challenge(method, "locked");
            Attempt::Locked { retry_after }
        }
    })
}

/// The code was right: take the held-back login (once) and start a session.
async fn finish(core: &Core, id: &str, old_session: Option<&str>) -> StoreResult<Attempt> {
    let Some(pending) = core.store.take_login(id).await? else {
        return Ok(Attempt::Expired);
    };
    let Some(answer) = HeldAnswer::open(&core.sealer, &pending.user, &pending.held) else {
        tracing::error!(
            user = pending.user,
            "a held-back login could not be opened (key changed?)"
        );
        return Ok(Attempt::Expired);
    };
    if let Some(old) = old_session {
        core.sessions.end(old).await?;
    }
    let session = core
        .sessions
        .create(
            &pending.user,
            false,
            None,
            pending.email.clone(),
            core.app_cookie_of(&answer),
        )
        .await?;
    tracing::info!(target: "audit", event = "challenge_passed", user = pending.user);
    Ok(Attempt::Passed {
        answer: Box::new(answer),
        session: Box::new(session),
    })
}

/// "Cancel": forgets the held-back login; the app's session was never handed over.
pub async fn cancel(core: &Core, id: &str, pending: &PendingLogin) -> StoreResult<()> {
    core.store.take_login(id).await?;
    tracing::info!(target: "audit", event = "challenge_cancelled", user = pending.user);
    Ok(())
}
