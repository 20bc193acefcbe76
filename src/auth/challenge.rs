//! The challenge of a held-back login: after the app accepted a password, the user proves the
//! second factor (or uses a recovery code) within `challenge_ttl` and `max_attempts_per_challenge`;
//! the held-back login is then taken once and a new proxy session starts.

use crate::auth::email::{self, Sent};
use crate::auth::verify::{self, Outcome};
use crate::auth::{SecondFactor, totp};
use crate::login::held::HeldAnswer;
use crate::mail::MailKind;
use crate::mail::address::mask;
use crate::records::Records;
use crate::session::Current;
use crate::state::Core;
use crate::store::{PendingLogin, Store, StoreResult};
use crate::words::Language;

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
    let record = core.records.two_factor(&pending.user).await?;
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

/// Sends a fresh code for a pending login whose user has the email factor (`None` otherwise),
/// in the language of the request that asked.
pub async fn resend(
    core: &Core,
    id: &str,
    pending: &PendingLogin,
    language: Language,
) -> StoreResult<Option<Sent>> {
    let Some(record) = core.records.two_factor(&pending.user).await? else {
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
            language,
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
    let Some(record) = core.records.two_factor(user).await? else {
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
    // Labelled by what was typed: a recovery code, or the user's factor.
    let method = if recovery {
        "recovery"
    } else {
        record.method.as_str()
    };
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
            core.bindings.of_answer(&answer),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::enrollment::{self, Enabled};
    use crate::auth::testing::{EN, Fixture};

    async fn try_code(f: &Fixture, id: &str, code: &str, recovery: bool) -> Attempt {
        let pending = pending(&f.core, id).await.unwrap().expect("pending login");
        attempt(&f.core, id, &pending, code, recovery, None)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn the_held_back_login_is_taken_once() {
        let f = Fixture::new(&[]);
        let (secret, codes) = f.enroll_totp("ann").await;
        f.clock.advance(30);
        let id = f.held_login("ann").await;
        let p = pending(&f.core, &id).await.unwrap().unwrap();
        // A right app code and a right recovery code at once: both check out, one login.
        let code = totp::code_at(&secret, f.clock_now());
        let (a, b) = tokio::join!(
            attempt(&f.core, &id, &p, &code, false, None),
            attempt(&f.core, &id, &p, &codes[0], true, None),
        );
        let outcomes = [a.unwrap(), b.unwrap()];
        let passed = outcomes
            .iter()
            .filter(|o| matches!(o, Attempt::Passed { .. }))
            .count();
        assert_eq!(passed, 1);
        assert!(
            outcomes
                .iter()
                .any(|o| matches!(o, Attempt::Expired | Attempt::Failed { .. }))
        );
        assert!(pending(&f.core, &id).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_passed_challenge_starts_a_session_and_ends_the_old_one() {
        let f = Fixture::new(&[]);
        let (secret, _) = f.enroll_totp("ann").await;
        f.clock.advance(30);
        let old = f.session("ann").await;
        let id = f.held_login("ann").await;
        let p = pending(&f.core, &id).await.unwrap().unwrap();
        let code = totp::code_at(&secret, f.clock_now());
        let Attempt::Passed { session, answer } =
            attempt(&f.core, &id, &p, &code, false, Some(&old.id))
                .await
                .unwrap()
        else {
            panic!("the right code did not pass");
        };
        assert_eq!(answer.location(), None);
        assert_eq!(session.record.user, "ann");
        assert!(!session.record.must_enroll);
        assert!(f.core.store.session(&old.id).await.unwrap().is_none());
        assert!(f.core.store.session(&session.id).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn a_sign_in_runs_out_of_attempts() {
        let f = Fixture::new(&[("TWOFA_TWOFACTOR__MAX_ATTEMPTS_PER_CHALLENGE", "3")]);
        let (secret, _) = f.enroll_totp("ann").await;
        f.clock.advance(30);
        let id = f.held_login("ann").await;
        assert!(matches!(
            try_code(&f, &id, "000000", false).await,
            Attempt::Failed { tries_left: 2 }
        ));
        try_code(&f, &id, "000001", false).await;
        assert!(matches!(
            try_code(&f, &id, "000002", false).await,
            Attempt::Failed { tries_left: 0 }
        ));
        // Even the right code does not finish a sign-in that used up its attempts.
        let right = totp::code_at(&secret, f.clock_now());
        assert!(matches!(
            try_code(&f, &id, &right, false).await,
            Attempt::Exhausted
        ));
        assert!(pending(&f.core, &id).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_recovery_code_works_once() {
        let f = Fixture::new(&[]);
        let (_, codes) = f.enroll_totp("ann").await;
        let left = f.core.records.recovery_codes_left("ann").await.unwrap();
        assert_eq!(left as usize, codes.len());
        let first = f.held_login("ann").await;
        assert!(matches!(
            try_code(&f, &first, &codes[0], true).await,
            Attempt::Passed { .. }
        ));
        assert_eq!(
            f.core.records.recovery_codes_left("ann").await.unwrap(),
            left - 1
        );
        let second = f.held_login("ann").await;
        assert!(matches!(
            try_code(&f, &second, &codes[0], true).await,
            Attempt::Failed { .. }
        ));
        // Typed with other case and spacing, another code works (as on the challenge form).
        let typed = codes[1].to_lowercase().replace('-', " ");
        assert!(matches!(
            try_code(&f, &second, &typed, true).await,
            Attempt::Passed { .. }
        ));
    }

    #[tokio::test]
    async fn a_reset_meanwhile_expires_the_sign_in() {
        let f = Fixture::new(&[]);
        let (secret, _) = f.enroll_totp("ann").await;
        let id = f.held_login("ann").await;
        crate::auth::reset::reset(&f.core, "ann").await.unwrap();
        let code = totp::code_at(&secret, f.clock_now() + 30);
        assert!(matches!(
            try_code(&f, &id, &code, false).await,
            Attempt::Expired
        ));
    }

    /// Enrolls the email factor for `user` at `address`.
    async fn enroll_email(f: &Fixture, user: &str, address: &str) {
        let session = f.session(user).await;
        let sent = enrollment::send_enrollment_code(&f.core, &session, address, EN)
            .await
            .unwrap();
        assert!(matches!(sent, Ok(Sent::Sent { .. })));
        let code = f.last_code();
        assert!(matches!(
            enrollment::enable_email(&f.core, &session, &code, "", EN)
                .await
                .unwrap(),
            Enabled::Done { .. }
        ));
    }

    #[tokio::test]
    async fn resends_wait_the_interval_and_stop_at_the_sign_ins_allowance() {
        let f = Fixture::new(&[
            ("TWOFA_EMAIL__RESEND_INTERVAL", "30s"),
            ("TWOFA_EMAIL__MAX_SENDS_PER_LOGIN", "2"),
        ]);
        enroll_email(&f, "ann", "ann@example.com").await;
        let id = f.held_login("ann").await;
        let p = pending(&f.core, &id).await.unwrap().unwrap();
        assert_eq!(
            resend(&f.core, &id, &p, EN).await.unwrap(),
            Some(Sent::Sent {
                to: mask("ann@example.com")
            })
        );
        let first = f.last_code();
        f.clock.advance(10);
        assert_eq!(
            resend(&f.core, &id, &p, EN).await.unwrap(),
            Some(Sent::TooSoon { wait: 20 })
        );
        let shown = prompt(&f.core, &id, &p).await.unwrap();
        assert_eq!(shown.factor, Some(SecondFactor::Email));
        assert_eq!(shown.email.as_ref().map(|e| e.resend_wait), Some(20));
        f.clock.advance(20);
        assert!(matches!(
            resend(&f.core, &id, &p, EN).await.unwrap(),
            Some(Sent::Sent { .. })
        ));
        f.clock.advance(30);
        assert_eq!(
            resend(&f.core, &id, &p, EN).await.unwrap(),
            Some(Sent::HourlyCap)
        );
        // The newest code works; the one it replaced does not.
        let newest = f.last_code();
        if newest != first {
            assert!(matches!(
                try_code(&f, &id, &first, false).await,
                Attempt::Failed { .. }
            ));
        }
        assert!(matches!(
            try_code(&f, &id, &newest, false).await,
            Attempt::Passed { .. }
        ));
        // Counted as an email challenge, not as an authenticator's.
        let passed = |method| {
            f.core
                .metrics
                .challenges
                .get_or_create(&vec![("method", method), ("outcome", "passed")])
                .get()
        };
        assert_eq!((passed("email"), passed("totp")), (1, 0));
    }

    #[tokio::test]
    async fn an_authenticator_sign_in_has_nothing_to_resend() {
        let f = Fixture::new(&[]);
        f.enroll_totp("ann").await;
        let id = f.held_login("ann").await;
        let p = pending(&f.core, &id).await.unwrap().unwrap();
        assert_eq!(resend(&f.core, &id, &p, EN).await.unwrap(), None);
        let shown = prompt(&f.core, &id, &p).await.unwrap();
        assert_eq!(shown.factor, Some(SecondFactor::Totp));
        assert_eq!(shown.email, None);
        assert_eq!(usize::from(shown.digits), totp::DIGITS);
    }
}
