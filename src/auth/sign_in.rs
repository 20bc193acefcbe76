//! What follows an accepted password: with 2FA on, the app's answer is held back (sealed, under
//! a fresh pending-login id, at most `max_pending_logins` per account per `challenge_ttl`) and a
//! challenge starts, mailing a code for the email factor; without 2FA the user gets a session,
//! or under `enforcement = "required"` one that may only enroll, the answer held in it.

use crate::auth::SecondFactor;
use crate::auth::email;
use crate::config::Enforcement;
use crate::login::held::HeldAnswer;
use crate::mail::MailKind;
use crate::records::Records;
use crate::secrets::random_token;
use crate::session::Current;
use crate::state::Core;
use crate::store::{PendingLogin, Store, StoreResult};
use crate::words::Language;

/// A login the app accepted, as the login watcher read it.
pub struct Accepted<'a> {
    /// The canonical account name.
    pub user: &'a str,
    pub answer: &'a HeldAnswer,
    /// The login came as JSON: the challenge is answered in JSON too.
    pub json: bool,
    /// The address the app named in its answer (`address_source = "header:..."`).
    pub email: Option<String>,
    /// Where the login came from: its code emails count against its own budget.
    pub client: &'a str,
    /// The login request's language, for the code email it may send.
    pub language: Language,
}

/// What the browser is told after the password.
pub enum AfterPassword {
    /// Held back under pending-login `id`: prove `factor`.
    Challenge { id: String, factor: SecondFactor },
    /// Too many sign-ins are waiting for this account; try again in `retry_after` seconds.
    Capped { retry_after: u64 },
    /// No 2FA and none required: signed in.
    SignedIn(Current),
    /// No 2FA but it is required: a session that may only enroll, the answer held in it.
    MustEnroll(Current),
}

pub async fn after_password(core: &Core, login: Accepted<'_>) -> StoreResult<AfterPassword> {
    let user = login.user;
    let binding = core.bindings.of_answer(login.answer);
    let Some(record) = core.records.two_factor(user).await? else {
        return Ok(match core.config.twofactor.enforcement {
            Enforcement::Optional => {
                let session = core
                    .sessions
                    .create(user, false, None, login.email, binding)
                    .await?;
                tracing::info!(target: "audit", event = "login_without_second_factor", user);
                AfterPassword::SignedIn(session)
            }
            Enforcement::Required => {
                let sealed = login.answer.seal(&core.sealer, user);
                // Bound from the start: this session vouches only for the app session of this
                // login, also while it is held back for the enrollment.
                let session = core
                    .sessions
                    .create(user, true, Some(sealed), login.email, binding)
                    .await?;
                tracing::info!(target: "audit", event = "enrollment_required", user);
                AfterPassword::MustEnroll(session)
            }
        });
    };
    // Each held-back login keeps the app's answer: their number per account is bounded.
    let tf = &core.config.twofactor;
    let window = tf.challenge_ttl.as_secs().max(1);
    let id = random_token();
    let pending = PendingLogin {
        user: user.to_owned(),
        created: core.clock.now(),
        held: login.answer.seal(&core.sealer, user),
        csrf: random_token(),
        json: login.json,
        email: login.email,
        client: Some(login.client.to_owned()),
    };
    // Counted and held in one round trip.
    let held = core
        .store
        .hold_login_capped(
            &id,
            &pending,
            tf.challenge_ttl,
            core.clock.now() / window,
            tf.max_pending_logins,
        )
        .await?;
    if !held {
        tracing::warn!(target: "audit", event = "pending_logins_capped", user);
        return Ok(AfterPassword::Capped {
            retry_after: window,
        });
    }
    tracing::info!(target: "audit", event = "challenge_issued", user, method = record.method.as_str());
    if let (SecondFactor::Email, Some(address)) = (record.method, &record.email) {
        // A failed send is shown on the challenge page, which offers to try again.
        email::send_code(
            core,
            &email::login_key(&id),
            user,
            address,
            MailKind::LoginCode,
            email::Budget::Login {
                pending: &id,
                client: Some(login.client),
            },
            login.language,
        )
        .await?;
    }
    Ok(AfterPassword::Challenge {
        id,
        factor: record.method,
    })
}
