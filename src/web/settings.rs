//! The 2FA settings pages: status, enabling the authenticator app (QR code, manual key, first
//! code), recovery codes (shown once), and turning 2FA off. Every change needs a current second
//! factor, gets a new session id and ends the user's other sessions.

use std::time::Duration;

use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use crate::auth::email::{self, Sent};
use crate::auth::verify::{self, Outcome};
use crate::auth::{recovery, totp};
use crate::body::Body;
use crate::config::Enforcement;
use crate::config::{AddressSource, Method};
use crate::login::held::HeldAnswer;
use crate::mail::address::{EmailAddress, mask};
use crate::mail::{MailKind, Notice};
use crate::session::Current;
use crate::state::Core;
use crate::store::{Enrollment, MethodKind, SessionRecord, Store, StoreResult, TwoFactorRecord};
use crate::web::challenge::{form_error, locked};
use crate::web::forms::{Form, read_form, token_matches};
use crate::web::pages::{self, EmailSetupPage, RecoveryCodesPage, SettingsPage, TotpSetupPage};

/// How long a started enrollment (its new key) waits for the first code.
const ENROLLMENT_TTL: Duration = Duration::from_secs(15 * 60);

/// Settings pages need a session; without one the browser goes to the app's login first.
pub fn sign_in_first(core: &Core) -> Response<Body> {
    let app = &core.config.app;
    let next: String =
        form_urlencoded::byte_serialize(format!("{}/settings", core.prefix()).as_bytes()).collect();
    pages::redirect(&format!("{}?{}={next}", app.login_page, app.next_param))
}

pub async fn status(
    core: &Core,
    session: &Current,
    req: &Request<Incoming>,
) -> StoreResult<Response<Body>> {
    let done = req.uri().query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "done")
            .map(|(_, v)| v.into_owned())
    });
    let notice = match done.as_deref() {
        Some("disabled") => Some("Two-step verification is off."),
        Some("enabled") => Some("Two-step verification is on."),
        Some("codes") => Some("Your new recovery codes are ready; the old ones no longer work."),
        _ if session.record.must_enroll => {
            Some("Your organisation requires two-step verification. Set it up to continue.")
        }
        _ => None,
    };
    render_status(core, session, notice, None, StatusCode::OK).await
}

async fn render_status(
    core: &Core,
    session: &Current,
    notice: Option<&str>,
    error: Option<String>,
    status: StatusCode,
) -> StoreResult<Response<Body>> {
    let user = &session.record.user;
    let record = core.store.two_factor(user).await?;
    let enabled = record.is_some();
    let email_to = record
        .as_ref()
        .filter(|r| r.method == MethodKind::Email)
        .and_then(|r| r.email.as_deref())
        .map(mask);
    let recovery_left = if enabled {
        core.store.recovery_codes_left(user).await?
    } else {
        0
    };
    Ok(pages::page(
        status,
        &SettingsPage {
            app_name: &core.brand.app_name,
            assets: &core.brand.assets,
            prefix: core.prefix(),
            user,
            csrf: &session.record.csrf,
            enabled,
            email_to,
            email_offered: email_offered(core),
            recovery_left,
            can_disable: core.config.twofactor.enforcement == Enforcement::Optional,
            notice,
            error,
            back: (!session.record.must_enroll)
                .then_some(core.config.app.account_settings_url.as_str()),
        },
    ))
}

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

async fn render_setup(
    core: &Core,
    session: &Current,
    error: Option<String>,
    status: StatusCode,
) -> StoreResult<Response<Body>> {
    let user = &session.record.user;
    let secret = enrollment_secret(core, user).await?;
    let issuer = &core.config.totp.issuer;
    let uri = totp::otpauth_uri(&secret, issuer, user);
    let current = core.store.two_factor(user).await?;
    Ok(pages::page(
        status,
        &TotpSetupPage {
            app_name: &core.brand.app_name,
            assets: &core.brand.assets,
            prefix: core.prefix(),
            user,
            issuer,
            csrf: &session.record.csrf,
            qr_svg: totp::qr_svg(&uri),
            key_grouped: totp::grouped(&totp::base32(&secret)),
            needs_current: current.is_some(),
            current_is_email: current.is_some_and(|r| r.method == MethodKind::Email),
            error,
        },
    ))
}

pub async fn setup(core: &Core, session: &Current) -> StoreResult<Response<Body>> {
    render_setup(core, session, None, StatusCode::OK).await
}

/// A form posted by the signed-in user: same-origin, bounded, with the session's CSRF token.
/// The refusal is boxed: it is the rare path.
async fn session_form(
    core: &Core,
    session: &Current,
    req: Request<Incoming>,
) -> Result<Form, Box<Response<Body>>> {
    let form = read_form(req)
        .await
        .map_err(|e| Box::new(form_error(core, e)))?;
    if !token_matches(form.get("csrf"), &session.record.csrf) {
        return Err(Box::new(pages::error(
            &core.brand,
            StatusCode::FORBIDDEN,
            true,
        )));
    }
    Ok(form)
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
    fn refusal<U>(self) -> Change<U> {
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
    let Some(record) = core.store.two_factor(user).await? else {
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

/// Turns TOTP on (or moves it to a new key) once the first code from the new key matches.
pub async fn enable_totp(
    core: &Core,
    session: &Current,
    code: &str,
    current_code: &str,
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
    let previous_address = email::known_address(core, user).await?;
    let changing = match may_enable(core, user, current_code).await? {
        Ok(changing) => changing,
        Err(refused) => return Ok(refused),
    };
    // Mark the step used so the first code cannot log in. If it is already claimed (the current
    // code of the same 30 s window was), it cannot log in either: nothing more to check.
    let claimed = core
        .store
        .claim_totp_step(user, new_step, verify::step_ttl(core))
        .await?;
    if !claimed && !changing {
        // A first enrollment racing itself (a double submit): one finishes, the other does not.
        return Ok(Enabled::WrongCode);
    }
    let record = TwoFactorRecord {
        method: MethodKind::Totp,
        totp_secret: Some(core.sealer.seal("totp", user, &secret)),
        email: None,
        enabled_at: now,
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
    let method = match record.method {
        MethodKind::Totp => "totp",
        MethodKind::Email => "email",
    };
    core.store.save_two_factor(user, &record).await?;
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
    let address = match previous_address {
        Some(a) => Some(a),
        None => email::known_address(core, user).await?,
    };
    email::notify(
        core,
        user,
        address,
        if changing {
            Notice::Changed
        } else {
            Notice::Enabled
        },
    );
    Ok(Enabled::Done { codes, fresh })
}

/// The recovery-codes page that ends a successful enablement, with the new session cookie.
fn enabled_page(core: &Core, codes: Vec<String>, fresh: &Current) -> Response<Body> {
    let continue_href = if fresh.record.held.is_some() {
        format!("{}/settings/continue", core.prefix())
    } else {
        format!("{}/settings?done=enabled", core.prefix())
    };
    let mut res = codes_page(core, &fresh.record, codes, continue_href, None);
    res.headers_mut()
        .append(header::SET_COOKIE, core.sessions.set_cookie(&fresh.id));
    res
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
    let address = email::known_address(core, user).await?;
    core.store.remove_two_factor(user).await?;
    email::notify(core, user, address, Notice::Disabled);
    let fresh = privilege_changed(core, session).await?;
    tracing::info!(target: "audit", event = "second_factor_disabled", user);
    let method = match record.method {
        MethodKind::Totp => "totp",
        MethodKind::Email => "email",
    };
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

/// The form post of the setup page.
pub async fn confirm(
    core: &Core,
    session: &Current,
    req: Request<Incoming>,
) -> StoreResult<Response<Body>> {
    let form = match session_form(core, session, req).await {
        Ok(f) => f,
        Err(res) => return Ok(*res),
    };
    match enable_totp(core, session, form.get("code"), form.get("current_code")).await? {
        Enabled::Done { codes, fresh } => Ok(enabled_page(core, codes, &fresh)),
        Enabled::Current(Change::Locked { retry_after }) => Ok(locked(core, retry_after)),
        Enabled::Current(Change::Failed { tries_left }) => {
            let error = format!(
                "Your current code did not work. {}",
                tries_words(tries_left)
            );
            render_setup(core, session, Some(error), StatusCode::UNAUTHORIZED).await
        }
        Enabled::Current(_) => render_setup(core, session, None, StatusCode::OK).await,
        Enabled::Expired => {
            let error =
                "The setup took too long, so here is a new QR code. Scan it again.".to_owned();
            render_setup(core, session, Some(error), StatusCode::OK).await
        }
        Enabled::WrongCode => {
            let error = "That code did not match. Make sure you scanned this QR code, then enter the newest code.";
            render_setup(
                core,
                session,
                Some(error.to_owned()),
                StatusCode::UNAUTHORIZED,
            )
            .await
        }
    }
}

pub async fn disable(
    core: &Core,
    session: &Current,
    req: Request<Incoming>,
) -> StoreResult<Response<Body>> {
    let form = match session_form(core, session, req).await {
        Ok(f) => f,
        Err(res) => return Ok(*res),
    };
    match turn_off(core, session, form.get("code")).await? {
        Change::Done(fresh) => {
            let mut res = pages::redirect(&format!("{}/settings?done=disabled", core.prefix()));
            res.headers_mut()
                .append(header::SET_COOKIE, core.sessions.set_cookie(&fresh.id));
            Ok(res)
        }
        Change::Failed { tries_left } => {
            let error = format!(
                "That code did not work, so two-step verification is still on. {}",
                tries_words(tries_left)
            );
            render_status(core, session, None, Some(error), StatusCode::UNAUTHORIZED).await
        }
        Change::Locked { retry_after } => Ok(locked(core, retry_after)),
        Change::NotEnabled => Ok(pages::redirect(&format!("{}/settings", core.prefix()))),
        Change::NotAllowed => {
            let error = "Two-step verification is required here.".to_owned();
            render_status(core, session, None, Some(error), StatusCode::FORBIDDEN).await
        }
    }
}

pub async fn regenerate_codes(
    core: &Core,
    session: &Current,
    req: Request<Incoming>,
) -> StoreResult<Response<Body>> {
    let form = match session_form(core, session, req).await {
        Ok(f) => f,
        Err(res) => return Ok(*res),
    };
    match new_codes(core, session, form.get("code")).await? {
        Change::Done((codes, fresh)) => {
            let continue_href = format!("{}/settings?done=codes", core.prefix());
            let notice = Some("Your old recovery codes no longer work.");
            let mut res = codes_page(core, &fresh.record, codes, continue_href, notice);
            res.headers_mut()
                .append(header::SET_COOKIE, core.sessions.set_cookie(&fresh.id));
            Ok(res)
        }
        Change::Failed { tries_left } => {
            let error = format!("That code did not work. {}", tries_words(tries_left));
            render_status(core, session, None, Some(error), StatusCode::UNAUTHORIZED).await
        }
        Change::Locked { retry_after } => Ok(locked(core, retry_after)),
        Change::NotEnabled | Change::NotAllowed => {
            Ok(pages::redirect(&format!("{}/settings", core.prefix())))
        }
    }
}

/// The codes the user just saw, echoed back as a text file (they are never stored in clear).
pub async fn download_codes(
    core: &Core,
    session: &Current,
    req: Request<Incoming>,
) -> StoreResult<Response<Body>> {
    let form = match session_form(core, session, req).await {
        Ok(f) => f,
        Err(res) => return Ok(*res),
    };
    let codes: Vec<&str> = form
        .get("codes")
        .split_whitespace()
        .filter(|c| recovery::normalize(c).is_some())
        .collect();
    let text = format!(
        "{} recovery codes for {}\r\nEach code signs you in once if you lose your authenticator app.\r\n\r\n{}\r\n",
        core.brand.app_name,
        session.record.user,
        codes.join("\r\n")
    );
    let mut res = Response::new(Body::from(text));
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"recovery-codes.txt\""),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Ok(res)
}

/// After a forced enrollment: hand over the app's login answer that was held back.
pub async fn continue_to_app(core: &Core, session: &Current) -> StoreResult<Response<Body>> {
    let user = &session.record.user;
    let Some(sealed) = &session.record.held else {
        return Ok(pages::redirect(&core.config.app.account_settings_url));
    };
    if session.record.must_enroll {
        return Ok(pages::redirect(&format!("{}/settings", core.prefix())));
    }
    let held = HeldAnswer::open(&core.sealer, user, sealed);
    // The app session handed over now is the one this proxy session vouches for.
    let record = SessionRecord {
        held: None,
        app_cookie: held.as_ref().and_then(|p| core.app_cookie_of(p)),
        ..session.record.clone()
    };
    core.sessions.save(&session.id, &record).await?;
    Ok(match held {
        Some(held) => {
            let mut res = held.into_response();
            res.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            res
        }
        None => pages::redirect(&core.config.app.account_settings_url),
    })
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
    core.store.set_recovery_codes(user, &hashes).await?;
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

fn codes_page(
    core: &Core,
    record: &SessionRecord,
    codes: Vec<String>,
    continue_href: String,
    notice: Option<&str>,
) -> Response<Body> {
    pages::page(
        StatusCode::OK,
        &RecoveryCodesPage {
            app_name: &core.brand.app_name,
            assets: &core.brand.assets,
            prefix: core.prefix(),
            csrf: &record.csrf,
            codes_joined: codes.join(" "),
            codes,
            continue_href,
            notice,
        },
    )
}

fn tries_words(tries_left: u32) -> String {
    match tries_left {
        1 => "1 try left before your account is locked for a while.".to_owned(),
        n if n <= 5 => format!("{n} tries left."),
        _ => String::new(),
    }
}

/// Whether operators offer the email method.
pub fn email_offered(core: &Core) -> bool {
    core.config.twofactor.methods.contains(&Method::Email)
}

/// The address codes go to when the user does not type one (`address_source`).
fn fixed_address(core: &Core, session: &Current) -> Option<EmailAddress> {
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

/// Sends an enrollment code to the typed address (`input`) or the known one.
pub async fn send_enrollment_code(
    core: &Core,
    session: &Current,
    typed: &str,
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
    )
    .await?;
    Ok(Ok(sent))
}

/// Turns the email method on once the code sent to the address comes back.
pub async fn enable_email(
    core: &Core,
    session: &Current,
    code: &str,
    current_code: &str,
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
    let previous_address = email::known_address(core, user).await?;
    let changing = match may_enable(core, user, current_code).await? {
        Ok(changing) => changing,
        Err(refused) => return Ok(refused),
    };
    let Some(address) = email::take_code(core, &key, &matched).await? else {
        return Ok(Enabled::Expired);
    };
    let record = TwoFactorRecord {
        method: MethodKind::Email,
        totp_secret: None,
        email: Some(address.clone()),
        enabled_at: core.clock.now(),
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

async fn render_email(
    core: &Core,
    session: &Current,
    sent_to: Option<String>,
    notice: Option<String>,
    error: Option<String>,
    status: StatusCode,
) -> StoreResult<Response<Body>> {
    let email = &core.config.email;
    let page = EmailSetupPage {
        app_name: &core.brand.app_name,
        assets: &core.brand.assets,
        prefix: core.prefix(),
        csrf: &session.record.csrf,
        ask_address: email.address_source == AddressSource::Input,
        known: fixed_address(core, session).map(|a| a.masked()),
        sent_to,
        needs_current: core.store.two_factor(&session.record.user).await?.is_some(),
        digits: email.code_digits,
        minutes: email.code_ttl.as_secs().div_ceil(60),
        notice,
        error,
    };
    Ok(pages::page(status, &page))
}

pub async fn email_setup(
    core: &Core,
    session: &Current,
    req: &Request<Incoming>,
) -> StoreResult<Response<Body>> {
    if !email_offered(core) {
        return Ok(pages::error(&core.brand, StatusCode::NOT_FOUND, true));
    }
    let change = req.uri().query().is_some_and(|q| q.contains("change=1"));
    let pending = core
        .store
        .email_code(&email::enroll_key(&session.record.user))
        .await?;
    let sent_to = pending.filter(|_| !change).map(|c| mask(&c.address));
    render_email(core, session, sent_to, None, None, StatusCode::OK).await
}

pub async fn email_post(
    core: &Core,
    session: &Current,
    req: Request<Incoming>,
) -> StoreResult<Response<Body>> {
    if !email_offered(core) {
        return Ok(pages::error(&core.brand, StatusCode::NOT_FOUND, true));
    }
    let form = match session_form(core, session, req).await {
        Ok(f) => f,
        Err(res) => return Ok(*res),
    };
    let user = &session.record.user;
    let outstanding = || async {
        Ok::<_, crate::store::StoreError>(
            core.store
                .email_code(&email::enroll_key(user))
                .await?
                .map(|c| mask(&c.address)),
        )
    };
    match form.get("action") {
        "send" => {
            let (sent_to, notice, error) = match send_enrollment_code(
                core,
                session,
                form.get("address"),
            )
            .await?
            {
                Ok(Sent::Sent { to }) => (Some(to), None, None),
                Ok(Sent::TooSoon { wait }) => (
                    outstanding().await?,
                    None,
                    Some(format!("You can ask for a new code in {wait} seconds.")),
                ),
                Ok(Sent::HourlyCap) => (
                    outstanding().await?,
                    None,
                    Some("You have asked for many codes. Try again in an hour.".to_owned()),
                ),
                Ok(Sent::Failed) => (
                    outstanding().await?,
                    None,
                    Some(
                        "We could not send the code. Check the address and try again in a moment."
                            .to_owned(),
                    ),
                ),
                Err(AddressProblem::Invalid) => (
                    None,
                    None,
                    Some("Enter an email address like name@example.com.".to_owned()),
                ),
                Err(AddressProblem::Unknown) => (
                    None,
                    None,
                    Some(
                        "No email address is known for your account. Ask your administrator."
                            .to_owned(),
                    ),
                ),
            };
            let status = if error.is_some() {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::OK
            };
            render_email(core, session, sent_to, notice, error, status).await
        }
        "verify" => {
            match enable_email(core, session, form.get("code"), form.get("current_code")).await? {
                Enabled::Done { codes, fresh } => Ok(enabled_page(core, codes, &fresh)),
                Enabled::Current(Change::Locked { retry_after }) => Ok(locked(core, retry_after)),
                Enabled::Current(Change::Failed { tries_left }) => {
                    let error = format!(
                        "Your current code did not work. {}",
                        tries_words(tries_left)
                    );
                    render_email(
                        core,
                        session,
                        outstanding().await?,
                        None,
                        Some(error),
                        StatusCode::UNAUTHORIZED,
                    )
                    .await
                }
                Enabled::Current(_) => {
                    render_email(core, session, None, None, None, StatusCode::OK).await
                }
                Enabled::Expired => {
                    let error = "That code expired or had too many wrong tries. Send a new code.";
                    render_email(
                        core,
                        session,
                        None,
                        None,
                        Some(error.to_owned()),
                        StatusCode::UNAUTHORIZED,
                    )
                    .await
                }
                Enabled::WrongCode => {
                    let error = "That code did not match, or it expired. Check the newest email, or send a new code.";
                    render_email(
                        core,
                        session,
                        outstanding().await?,
                        None,
                        Some(error.to_owned()),
                        StatusCode::UNAUTHORIZED,
                    )
                    .await
                }
            }
        }
        _ => Ok(pages::error(&core.brand, StatusCode::BAD_REQUEST, true)),
    }
}

/// "Send me a code" in settings, for users whose method is email (changes need a current code).
pub async fn send_change_code(
    core: &Core,
    session: &Current,
    req: Request<Incoming>,
) -> StoreResult<Response<Body>> {
    let form = match session_form(core, session, req).await {
        Ok(f) => f,
        Err(res) => return Ok(*res),
    };
    let user = &session.record.user;
    let record = core.store.two_factor(user).await?;
    let Some(address) = record
        .filter(|r| r.method == MethodKind::Email)
        .and_then(|r| r.email)
    else {
        return Ok(pages::redirect(&format!("{}/settings", core.prefix())));
    };
    let (notice, error) = match email::send_code(
        core,
        &email::change_key(user),
        user,
        &address,
        MailKind::ChangeCode,
        email::Budget::Settings,
    )
    .await?
    {
        Sent::Sent { to } => (Some(format!("We sent a code to {to}.")), None),
        Sent::TooSoon { wait } => (
            None,
            Some(format!("You can ask for a new code in {wait} seconds.")),
        ),
        Sent::HourlyCap => (
            None,
            Some("You have asked for many codes. Try again in an hour.".to_owned()),
        ),
        Sent::Failed => (
            None,
            Some("We could not send the code. Try again in a moment.".to_owned()),
        ),
    };
    let back = form.get("back");
    if back == "totp" {
        return render_setup(core, session, error.or(notice), StatusCode::OK).await;
    }
    render_status(core, session, notice.as_deref(), error, StatusCode::OK).await
}
