//! Turning 2FA on, changing the method, new recovery codes and turning it off. A change to an
//! existing second factor needs a current code (or recovery code) first; every change is a
//! privilege change: a new session id, the user's other sessions ended, a notice.

use std::time::Duration;

use crate::auth::email::{self, Sent};
use crate::auth::notices::Recipient;
use crate::auth::verify::{self, Outcome};
use crate::auth::{SecondFactor, notices, recovery, totp};
use crate::config::{AddressSource, Enforcement};
use crate::login::held::HeldAnswer;
use crate::mail::address::{EmailAddress, mask};
use crate::mail::{MailKind, Notice};
use crate::records::Records;
use crate::records::TwoFactorRecord;
use crate::session::Current;
use crate::state::Core;
use crate::store::{Enrollment, SessionRecord, StepClaim, Store, StoreResult};
use crate::words::Language;

/// How long a started enrollment (its new key) waits for the first code.
const ENROLLMENT_TTL: Duration = Duration::from_secs(15 * 60);

/// The enrollment in progress, or a new one with a fresh key.
pub async fn enrollment_secret(core: &Core, user: &str) -> StoreResult<Vec<u8>> {
    if let Some(e) = core.store.enrollment(user).await?
        && let Some(secret) = core.sealer.open("enrollment", user, &e.secret)
    {
        return Ok(secret);
    }
    let secret = totp::new_secret().to_vec();
    let e = Enrollment {
        secret: core.sealer.seal("enrollment", user, &secret),
        created: core.clock.now(),
    };
    core.store.put_enrollment(user, &e, ENROLLMENT_TTL).await?;
    Ok(secret)
}

/// What a change to a user's 2FA came to.
pub enum Change<T> {
    Done(T),
    /// The current code (or recovery code) was wrong.
    Failed {
        tries_left: u32,
    },
    Locked {
        retry_after: u64,
    },
    /// Nothing to change: 2FA is not on.
    NotEnabled,
    /// Policy forbids it (turning 2FA off under `enforcement = "required"`).
    NotAllowed,
}

impl<T> Change<T> {
    /// The same refusal for a change of another kind; `Done` has none.
    pub fn refusal<U>(self) -> Change<U> {
        match self {
            Change::Done(_) | Change::NotEnabled => Change::NotEnabled,
            Change::Failed { tries_left } => Change::Failed { tries_left },
            Change::Locked { retry_after } => Change::Locked { retry_after },
            Change::NotAllowed => Change::NotAllowed,
        }
    }

    /// `None` when the change may go ahead, else the refusal.
    fn refused<U>(self) -> Option<Change<U>> {
        match self {
            Change::Done(_) => None,
            refused => Some(refused.refusal()),
        }
    }
}

/// The outcome of confirming a TOTP enrollment.
pub enum Enabled {
    /// On; here are the recovery codes (shown once) and the session's new id.
    Done { codes: Vec<String>, fresh: Current },
    /// Changing an existing method: the current factor did not check out.
    Current(Change<()>),
    /// The enrollment expired; a new key was started.
    Expired,
    /// The first code did not match the new key.
    WrongCode,
}

/// Checks the user's current second factor before a change.
async fn current_factor(
    core: &Core,
    user: &str,
    code: &str,
) -> StoreResult<Change<TwoFactorRecord>> {
    let Some(record) = core.records.two_factor(user).await? else {
        return Ok(Change::NotEnabled);
    };
    Ok(
        match verify::verify(core, user, &record, code, &email::change_key(user)).await? {
            Outcome::Passed => Change::Done(record),
            Outcome::Failed { tries_left } => Change::Failed { tries_left },
            Outcome::Locked { retry_after } => Change::Locked { retry_after },
        },
    )
}

/// Turns TOTP on (or moves it to a new key) once the first code from the new key matches;
/// `language` is the request's, remembered for later mails.
pub async fn enable_totp(
    core: &Core,
    session: &Current,
    code: &str,
    current_code: &str,
    language: Language,
) -> StoreResult<Enabled> {
    let user = &session.record.user;
    // The new key and its first code are checked before the current factor is spent, so an
    // expired setup or a mistyped new code does not use up (or count against) the current one.
    let secret = match core.store.enrollment(user).await? {
        Some(e) => core.sealer.open("enrollment", user, &e.secret),
        None => None,
    };
    let Some(secret) = secret else {
        core.store.delete_enrollment(user).await?;
        return Ok(Enabled::Expired);
    };
    let now = core.clock.now();
    let new_step = totp::TotpCode::parse(code)
        .and_then(|c| totp::check(&secret, &c, now, core.config.totp.skew));
    let Some(new_step) = new_step else {
        return Ok(Enabled::WrongCode);
    };
    let previous_address = notices::recipient(core, user).await?.map(|r| r.address);
    let changing = match may_enable(core, user, current_code).await? {
        Ok(changing) => changing,
        Err(refused) => return Ok(refused),
    };
    // Mark the step used so the first code cannot log in. If it is already claimed (the current
    // code of the same 30 s window was), it cannot log in either: nothing more to check; nor if
    // it is before the store's floor (a store that just learned the records refuses those
    // steps at sign-in anyway).
    let claimed = match core
        .store
        .claim_totp_step(user, new_step, verify::step_ttl(core))
        .await?
    {
        StepClaim::Claimed | StepClaim::BeforeFloor => true,
        StepClaim::AlreadyUsed => false,
    };
    if !claimed && !changing {
        // A first enrollment racing itself (a double submit): one finishes, the other does not.
        return Ok(Enabled::WrongCode);
    }
    let record = TwoFactorRecord {
        method: SecondFactor::Totp,
        totp_secret: Some(core.sealer.seal("totp", user, &secret)),
        email: None,
        enabled_at: now,
        language: Some(language),
    };
    finish_enable(core, session, record, changing, previous_address).await
}

/// `Ok(changing)` when the user may turn a method on: no 2FA yet, or the current factor checked
/// out (changing methods needs it); otherwise the refusal.
async fn may_enable(
    core: &Core,
    user: &str,
    current_code: &str,
) -> StoreResult<Result<bool, Enabled>> {
    Ok(match current_factor(core, user, current_code).await? {
        Change::NotEnabled => Ok(false),
        Change::Done(_) => Ok(true),
        refused => Err(Enabled::Current(refused.refusal())),
    })
}

/// Saves the new method and does what every enablement does: fresh recovery codes, a new
/// session id with the user's other sessions ended, the audit event, metrics and a notice
/// (to the address notices went to before, or the new one).
async fn finish_enable(
    core: &Core,
    session: &Current,
    record: TwoFactorRecord,
    changing: bool,
    previous_address: Option<String>,
) -> StoreResult<Enabled> {
    let user = &session.record.user;
    let method = record.method.as_str();
    core.records.save_two_factor(user, &record).await?;
    core.store.delete_enrollment(user).await?;
    let codes = new_recovery_codes(core, user).await?;
    let fresh = privilege_changed(core, session).await?;
    let event = if changing {
        "second_factor_changed"
    } else {
        "second_factor_enabled"
    };
    tracing::info!(target: "audit", event, user, method);
    core.metrics
        .enrollment(if changing { "changed" } else { "enabled" }, method);
    let language = core.config.ui.language.for_user(record.language);
    let to = match previous_address {
        Some(address) => Some(Recipient { address, language }),
        None => notices::recipient(core, user).await?,
    };
    notices::notify(
        core,
        user,
        to,
        if changing {
            Notice::Changed
        } else {
            Notice::Enabled
        },
    );
    Ok(Enabled::Done { codes, fresh })
}

/// Turns 2FA off after a current code; ends the user's other sessions.
pub async fn turn_off(core: &Core, session: &Current, code: &str) -> StoreResult<Change<Current>> {
    if core.config.twofactor.enforcement == Enforcement::Required {
        return Ok(Change::NotAllowed);
    }
    let user = &session.record.user;
    let record = match current_factor(core, user, code).await? {
        Change::Done(record) => record,
        refused => return Ok(refused.refusal()),
    };
    let to = notices::recipient(core, user).await?;
    core.records.remove_two_factor(user).await?;
    notices::notify(core, user, to, Notice::Disabled);
    let fresh = privilege_changed(core, session).await?;
    tracing::info!(target: "audit", event = "second_factor_disabled", user);
    let method = record.method.as_str();
    core.metrics.enrollment("disabled", method);
    Ok(Change::Done(fresh))
}

/// New recovery codes after a current code; the old ones stop working.
pub async fn new_codes(
    core: &Core,
    session: &Current,
    code: &str,
) -> StoreResult<Change<(Vec<String>, Current)>> {
    let user = &session.record.user;
    if let Some(refused) = current_factor(core, user, code).await?.refused() {
        return Ok(refused);
    }
    let codes = new_recovery_codes(core, user).await?;
    let fresh = privilege_changed(core, session).await?;
    tracing::info!(target: "audit", event = "recovery_codes_regenerated", user);
    Ok(Change::Done((codes, fresh)))
}

async fn new_recovery_codes(core: &Core, user: &str) -> StoreResult<Vec<String>> {
    let codes: Vec<String> = (0..core.config.twofactor.recovery_codes)
        .map(|_| recovery::generate())
        .collect();
    let hashes: Vec<String> = codes
        .iter()
        .filter_map(|c| recovery::normalize(c))
        .map(|c| core.sealer.hash_code("recovery", &c))
        .collect();
    core.records.set_recovery_codes(user, &hashes).await?;
    Ok(codes)
}

/// A privilege change: a new session id (keeping a held-back login for the forced-enrollment
/// case) and every other session of the user ended.
async fn privilege_changed(core: &Core, session: &Current) -> StoreResult<Current> {
    let fresh = core
        .sessions
        .create(
            &session.record.user,
            false,
            session.record.held.clone(),
            session.record.email.clone(),
            session.record.app_cookie.clone(),
        )
        .await?;
    core.sessions.end(&session.id).await?;
    let ended = core
        .sessions
        .end_others(&session.record.user, Some(&fresh.id))
        .await?;
    if ended > 0 {
        tracing::info!(target: "audit", event = "other_sessions_ended", user = session.record.user, count = ended);
    }
    Ok(fresh)
}

/// Whether operators offer the email method.
pub fn email_offered(core: &Core) -> bool {
    core.config.twofactor.methods.contains(&SecondFactor::Email)
}

/// The address codes go to when the user does not type one (`address_source`).
pub fn fixed_address(core: &Core, session: &Current) -> Option<EmailAddress> {
    match &core.config.email.address_source {
        AddressSource::Input => None,
        AddressSource::Username => EmailAddress::parse(&session.record.user),
        AddressSource::Header(_) => session
            .record
            .email
            .as_deref()
            .and_then(EmailAddress::parse),
    }
}

/// Why an enrollment code was not sent.
pub enum AddressProblem {
    /// What was typed is not an address.
    Invalid,
    /// The address source knows none for this user.
    Unknown,
}

/// Sends an enrollment code to the typed address (`input`) or the known one, in `language`.
pub async fn send_enrollment_code(
    core: &Core,
    session: &Current,
    typed: &str,
    language: Language,
) -> StoreResult<Result<Sent, AddressProblem>> {
    let user = &session.record.user;
    let address = match core.config.email.address_source {
        AddressSource::Input if typed.trim().is_empty() => {
            // "Send a new code": to the address the last code went to.
            match core.store.email_code(&email::enroll_key(user)).await? {
                Some(previous) => EmailAddress::parse(&previous.address),
                None => return Ok(Err(AddressProblem::Invalid)),
            }
        }
        AddressSource::Input => EmailAddress::parse(typed),
        _ => fixed_address(core, session),
    };
    let Some(address) = address else {
        return Ok(Err(match core.config.email.address_source {
            AddressSource::Input => AddressProblem::Invalid,
            _ => AddressProblem::Unknown,
        }));
    };
    let sent = email::send_code(
        core,
        &email::enroll_key(user),
        user,
        address.as_str(),
        MailKind::EnrollmentCode,
        email::Budget::Settings,
        language,
    )
    .await?;
    Ok(Ok(sent))
}

/// Turns the email method on once the code sent to the address comes back; `language` is the
/// request's, remembered for later mails.
pub async fn enable_email(
    core: &Core,
    session: &Current,
    code: &str,
    current_code: &str,
    language: Language,
) -> StoreResult<Enabled> {
    let user = &session.record.user;
    // Wrong codes are counted per issued code: past the limit the code is gone and a new one
    // must be sent (a 6-digit code must not be guessable by retrying).
    let key = email::enroll_key(user);
    let Some(issued) = core.store.email_code(&key).await? else {
        return Ok(Enabled::Expired);
    };
    let counter = format!("{key}:{}", issued.created);
    let attempts = core
        .store
        .count_attempt(&counter, core.config.email.code_ttl)
        .await?;
    if attempts > core.config.twofactor.max_attempts_per_challenge {
        core.store.take_email_code(&key).await?;
        return Ok(Enabled::Expired);
    }
    // The emailed code is checked before the current factor is spent (as for a new app).
    let Some(matched) = email::matches_code(core, &key, code).await? else {
        return Ok(Enabled::WrongCode);
    };
    let previous_address = notices::recipient(core, user).await?.map(|r| r.address);
    let changing = match may_enable(core, user, current_code).await? {
        Ok(changing) => changing,
        Err(refused) => return Ok(refused),
    };
    let Some(address) = email::take_code(core, &key, &matched).await? else {
        return Ok(Enabled::Expired);
    };
    let record = TwoFactorRecord {
        method: SecondFactor::Email,
        totp_secret: None,
        email: Some(address.clone()),
        enabled_at: core.clock.now(),
        language: Some(language),
    };
    // Notices about the new method go to the address just proven.
    finish_enable(
        core,
        session,
        record,
        changing,
        previous_address.or(Some(address)),
    )
    .await
}

/// The masked address an enrollment code is out to, while one is.
pub async fn code_out_to(core: &Core, user: &str) -> StoreResult<Option<String>> {
    Ok(core
        .store
        .email_code(&email::enroll_key(user))
        .await?
        .map(|c| mask(&c.address)))
}

/// Sends a code for a change to a user whose factor is email (changes need a current code),
/// in `language`; `None` when their factor is not email.
pub async fn send_change_code(
    core: &Core,
    user: &str,
    language: Language,
) -> StoreResult<Option<Sent>> {
    let record = core.records.two_factor(user).await?;
    let Some(address) = record
        .filter(|r| r.method == SecondFactor::Email)
        .and_then(|r| r.email)
    else {
        return Ok(None);
    };
    Ok(Some(
        email::send_code(
            core,
            &email::change_key(user),
            user,
            &address,
            MailKind::ChangeCode,
            email::Budget::Settings,
            language,
        )
        .await?,
    ))
}

/// A user's 2FA as the settings show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub factor: Option<SecondFactor>,
    /// The email factor's address, masked.
    pub email_to: Option<String>,
    pub recovery_left: u32,
    /// Whether the user may turn 2FA off (`enforcement = "optional"`).
    pub can_disable: bool,
}

impl Status {
    pub fn enabled(&self) -> bool {
        self.factor.is_some()
    }
}

pub async fn status(core: &Core, user: &str) -> StoreResult<Status> {
    let record = core.records.two_factor(user).await?;
    let recovery_left = if record.is_some() {
        core.records.recovery_codes_left(user).await?
    } else {
        0
    };
    Ok(Status {
        factor: record.as_ref().map(|r| r.method),
        email_to: record
            .as_ref()
            .filter(|r| r.method == SecondFactor::Email)
            .and_then(|r| r.email.as_deref())
            .map(mask),
        recovery_left,
        can_disable: core.config.twofactor.enforcement == Enforcement::Optional,
    })
}

/// What "continue" after a forced enrollment comes to.
pub enum Release {
    /// The app's login answer held back at sign-in: replay it. The session now vouches for it.
    Answer(Box<HeldAnswer>),
    /// Nothing is held back (or it can no longer be opened): go on to the app.
    Nothing,
    /// Enrollment is not finished yet.
    EnrollFirst,
}

/// After a forced enrollment: hands over the app's login answer that was held back, once.
pub async fn release_held(core: &Core, session: &Current) -> StoreResult<Release> {
    let Some(sealed) = &session.record.held else {
        return Ok(Release::Nothing);
    };
    if session.record.must_enroll {
        return Ok(Release::EnrollFirst);
    }
    let held = HeldAnswer::open(&core.sealer, &session.record.user, sealed);
    // The app session handed over now is the one this proxy session vouches for.
    let record = SessionRecord {
        held: None,
        app_cookie: held.as_ref().and_then(|p| core.bindings.of_answer(p)),
        ..session.record.clone()
    };
    core.sessions.save(&session.id, &record).await?;
    Ok(held.map_or(Release::Nothing, |h| Release::Answer(Box::new(h))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::testing::{EN, Fixture};

    fn first_code(f: &Fixture, secret: &[u8]) -> String {
        totp::code_at(secret, f.clock_now())
    }

    #[tokio::test]
    async fn a_double_submit_of_the_first_code_enables_once() {
        let f = Fixture::new(&[]);
        let session = f.session("ann").await;
        let secret = enrollment_secret(&f.core, "ann").await.unwrap();
        // The setup page shown twice keeps the same key.
        assert_eq!(enrollment_secret(&f.core, "ann").await.unwrap(), secret);
        let code = first_code(&f, &secret);
        let (a, b) = tokio::join!(
            enable_totp(&f.core, &session, &code, "", EN),
            enable_totp(&f.core, &session, &code, "", EN),
        );
        let done = [a.unwrap(), b.unwrap()]
            .into_iter()
            .filter(|e| matches!(e, Enabled::Done { .. }))
            .count();
        assert_eq!(done, 1);
        let record = f.core.records.two_factor("ann").await.unwrap().unwrap();
        assert_eq!(record.method, SecondFactor::Totp);
        // The enrollment's first code cannot also sign in: its step is claimed.
        let id = f.held_login("ann").await;
        let p = f.core.store.pending_login(&id).await.unwrap().unwrap();
        assert!(matches!(
            crate::auth::challenge::attempt(&f.core, &id, &p, &code, false, None)
                .await
                .unwrap(),
            crate::auth::challenge::Attempt::Failed { .. }
        ));
    }

    #[tokio::test]
    async fn enabling_is_a_privilege_change() {
        let f = Fixture::new(&[]);
        let other = f.session("ann").await;
        let session = f.session("ann").await;
        let secret = enrollment_secret(&f.core, "ann").await.unwrap();
        let Enabled::Done { codes, fresh } =
            enable_totp(&f.core, &session, &first_code(&f, &secret), "", EN)
                .await
                .unwrap()
        else {
            panic!("enabling failed");
        };
        assert_eq!(codes.len(), f.core.config.twofactor.recovery_codes as usize);
        assert_ne!(fresh.id, session.id);
        assert!(f.core.store.session(&session.id).await.unwrap().is_none());
        assert!(f.core.store.session(&other.id).await.unwrap().is_none());
        assert!(f.core.store.session(&fresh.id).await.unwrap().is_some());
        assert!(f.core.store.enrollment("ann").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_wrong_first_code_or_an_expired_setup_changes_nothing() {
        let f = Fixture::new(&[]);
        let session = f.session("ann").await;
        let secret = enrollment_secret(&f.core, "ann").await.unwrap();
        assert!(
            matches!(
                enable_totp(&f.core, &session, "000000", "", EN)
                    .await
                    .unwrap(),
                Enabled::WrongCode
            ) || first_code(&f, &secret) == "000000"
        );
        f.clock.advance(ENROLLMENT_TTL.as_secs() + 1);
        let code = first_code(&f, &secret);
        assert!(matches!(
            enable_totp(&f.core, &session, &code, "", EN).await.unwrap(),
            Enabled::Expired
        ));
        assert!(f.core.records.two_factor("ann").await.unwrap().is_none());
        // A new key is started for the next setup page.
        assert_ne!(enrollment_secret(&f.core, "ann").await.unwrap(), secret);
    }

    #[tokio::test]
    async fn changing_the_method_needs_the_current_factor() {
        let f = Fixture::new(&[]);
        let (old_secret, old_codes) = f.enroll_totp("ann").await;
        f.clock.advance(30);
        let session = f.session("ann").await;
        let sent = send_enrollment_code(&f.core, &session, "ann@example.com", EN)
            .await
            .unwrap();
        assert!(matches!(sent, Ok(Sent::Sent { .. })));
        let emailed = f.last_code();
        // Without, or with a wrong, current code: refused, and the emailed code is not spent.
        assert!(matches!(
            enable_email(&f.core, &session, &emailed, "", EN)
                .await
                .unwrap(),
            Enabled::Current(Change::Failed { .. })
        ));
        let wrong = if totp::code_at(&old_secret, f.clock_now()) == "123456" {
            "654321"
        } else {
            "123456"
        };
        assert!(matches!(
            enable_email(&f.core, &session, &emailed, wrong, EN)
                .await
                .unwrap(),
            Enabled::Current(Change::Failed { .. })
        ));
        assert_eq!(
            f.core
                .records
                .two_factor("ann")
                .await
                .unwrap()
                .unwrap()
                .method,
            SecondFactor::Totp
        );
        let current = totp::code_at(&old_secret, f.clock_now());
        let Enabled::Done { codes, .. } = enable_email(&f.core, &session, &emailed, &current, EN)
            .await
            .unwrap()
        else {
            panic!("the change failed");
        };
        let record = f.core.records.two_factor("ann").await.unwrap().unwrap();
        assert_eq!(record.method, SecondFactor::Email);
        assert_eq!(record.email.as_deref(), Some("ann@example.com"));
        assert_eq!(record.totp_secret, None);
        assert_ne!(codes, old_codes);
        let st = status(&f.core, "ann").await.unwrap();
        assert_eq!(st.factor, Some(SecondFactor::Email));
        assert_eq!(st.email_to, Some(mask("ann@example.com")));
    }

    #[tokio::test]
    async fn new_recovery_codes_replace_the_old_ones() {
        let f = Fixture::new(&[]);
        let (secret, old) = f.enroll_totp("ann").await;
        f.clock.advance(30);
        let session = f.session("ann").await;
        let code = totp::code_at(&secret, f.clock_now());
        let Change::Done((new, _fresh)) = new_codes(&f.core, &session, &code).await.unwrap() else {
            panic!("new codes refused");
        };
        assert_ne!(new, old);
        assert!(matches!(
            verify::verify_recovery(&f.core, "ann", &old[0])
                .await
                .unwrap(),
            Outcome::Failed { .. }
        ));
        assert_eq!(
            verify::verify_recovery(&f.core, "ann", &new[0])
                .await
                .unwrap(),
            Outcome::Passed
        );
    }

    #[tokio::test]
    async fn turning_off_needs_a_current_code_and_optional_policy() {
        let f = Fixture::new(&[]);
        let (_, codes) = f.enroll_totp("ann").await;
        let session = f.session("ann").await;
        assert!(matches!(
            turn_off(&f.core, &session, "").await.unwrap(),
            Change::Failed { .. }
        ));
        // A recovery code is a current factor too.
        assert!(matches!(
            turn_off(&f.core, &session, &codes[0]).await.unwrap(),
            Change::Done(_)
        ));
        assert!(f.core.records.two_factor("ann").await.unwrap().is_none());
        assert!(matches!(
            turn_off(&f.core, &f.session("ann").await, "x")
                .await
                .unwrap(),
            Change::NotEnabled
        ));

        let g = Fixture::new(&[("TWOFA_TWOFACTOR__ENFORCEMENT", "required")]);
        let (secret_g, _) = g.enroll_totp("ann").await;
        g.clock.advance(30);
        let code = totp::code_at(&secret_g, g.clock_now());
        assert!(matches!(
            turn_off(&g.core, &g.session("ann").await, &code)
                .await
                .unwrap(),
            Change::NotAllowed
        ));
        assert!(g.core.records.two_factor("ann").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn the_held_back_login_is_released_once_after_a_forced_enrollment() {
        let f = Fixture::new(&[("TWOFA_TWOFACTOR__ENFORCEMENT", "required")]);
        let answer = HeldAnswer::new(
            http::StatusCode::FOUND,
            &http::HeaderMap::new(),
            &bytes::Bytes::new(),
        );
        let sealed = answer.seal(&f.core.sealer, "ann");
        let session = f
            .core
            .sessions
            .create("ann", true, Some(sealed), None, None)
            .await
            .unwrap();
        assert!(matches!(
            release_held(&f.core, &session).await.unwrap(),
            Release::EnrollFirst
        ));
        let secret = enrollment_secret(&f.core, "ann").await.unwrap();
        let Enabled::Done { fresh, .. } =
            enable_totp(&f.core, &session, &first_code(&f, &secret), "", EN)
                .await
                .unwrap()
        else {
            panic!("enabling failed");
        };
        assert!(!fresh.record.must_enroll);
        assert!(matches!(
            release_held(&f.core, &fresh).await.unwrap(),
            Release::Answer(_)
        ));
        let after = f.core.sessions.load_id(&fresh.id).await.unwrap().unwrap();
        assert!(matches!(
            release_held(&f.core, &after).await.unwrap(),
            Release::Nothing
        ));
    }
}
