//! The 2FA settings pages: status, enabling the authenticator app (QR code, manual key, first
//! code), recovery codes (shown once), and turning 2FA off. Every change needs a current second
//! factor, gets a new session id and ends the user's other sessions.

use std::time::Duration;

use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use crate::body::Body;
use crate::challenge::flow::{form_error, locked};
use crate::challenge::verify::{self, Outcome};
use crate::challenge::{recovery, totp};
use crate::config::Enforcement;
use crate::forms::{Form, read_form, token_matches};
use crate::login::parked::Parked;
use crate::pages::{self, RecoveryCodesPage, SettingsPage, TotpSetupPage};
use crate::session::Current;
use crate::state::Core;
use crate::store::{Enrollment, MethodKind, SessionRecord, Store, StoreResult, TwoFactorRecord};

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
    let enabled = core.store.two_factor(user).await?.is_some();
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
            needs_current: core.store.two_factor(user).await?.is_some(),
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
    Ok(match verify::verify(core, user, &record, code).await? {
        Outcome::Passed => Change::Done(record),
        Outcome::Failed { tries_left } => Change::Failed { tries_left },
        Outcome::Locked { retry_after } => Change::Locked { retry_after },
    })
}

/// Turns TOTP on (or moves it to a new key) once the first code from the new key matches.
pub async fn enable_totp(
    core: &Core,
    session: &Current,
    code: &str,
    current_code: &str,
) -> StoreResult<Enabled> {
    let user = &session.record.user;
    let changing = match current_factor(core, user, current_code).await? {
        Change::NotEnabled => false,
        Change::Done(_) => true,
        Change::Failed { tries_left } => {
            return Ok(Enabled::Current(Change::Failed { tries_left }));
        }
        Change::Locked { retry_after } => {
            return Ok(Enabled::Current(Change::Locked { retry_after }));
        }
        Change::NotAllowed => return Ok(Enabled::Current(Change::NotAllowed)),
    };
    let secret = match core.store.enrollment(user).await? {
        Some(e) => core.sealer.open("enrollment", user, &e.secret),
        None => None,
    };
    let Some(secret) = secret else {
        core.store.delete_enrollment(user).await?;
        return Ok(Enabled::Expired);
    };
    // The first code claims its step, so it cannot be replayed to log in.
    if !verify::totp_matches(core, user, &secret, code).await? {
        return Ok(Enabled::WrongCode);
    }
    let record = TwoFactorRecord {
        method: MethodKind::Totp,
        totp_secret: Some(core.sealer.seal("totp", user, &secret)),
        email: None,
        enabled_at: core.clock.now(),
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
    tracing::info!(target: "audit", event, user, method = "totp");
    core.metrics
        .enrollment(if changing { "changed" } else { "enabled" }, "totp");
    Ok(Enabled::Done { codes, fresh })
}

/// Turns 2FA off after a current code; ends the user's other sessions.
pub async fn turn_off(core: &Core, session: &Current, code: &str) -> StoreResult<Change<Current>> {
    if core.config.twofactor.enforcement == Enforcement::Required {
        return Ok(Change::NotAllowed);
    }
    let user = &session.record.user;
    match current_factor(core, user, code).await? {
        Change::Done(_) => {}
        Change::Failed { tries_left } => return Ok(Change::Failed { tries_left }),
        Change::Locked { retry_after } => return Ok(Change::Locked { retry_after }),
        Change::NotEnabled => return Ok(Change::NotEnabled),
        Change::NotAllowed => return Ok(Change::NotAllowed),
    }
    core.store.remove_two_factor(user).await?;
    let fresh = privilege_changed(core, session).await?;
    tracing::info!(target: "audit", event = "second_factor_disabled", user);
    core.metrics.enrollment("disabled", "totp");
    Ok(Change::Done(fresh))
}

/// New recovery codes after a current code; the old ones stop working.
pub async fn new_codes(
    core: &Core,
    session: &Current,
    code: &str,
) -> StoreResult<Change<(Vec<String>, Current)>> {
    let user = &session.record.user;
    match current_factor(core, user, code).await? {
        Change::Done(_) => {}
        Change::Failed { tries_left } => return Ok(Change::Failed { tries_left }),
        Change::Locked { retry_after } => return Ok(Change::Locked { retry_after }),
        Change::NotEnabled => return Ok(Change::NotEnabled),
        Change::NotAllowed => return Ok(Change::NotAllowed),
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
        Enabled::Done { codes, fresh } => {
            let continue_href = if fresh.record.parked.is_some() {
                format!("{}/settings/continue", core.prefix())
            } else {
                format!("{}/settings?done=enabled", core.prefix())
            };
            let mut res = codes_page(core, &fresh.record, codes, continue_href, None);
            res.headers_mut()
                .append(header::SET_COOKIE, core.sessions.set_cookie(&fresh.id));
            Ok(res)
        }
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
    let Some(sealed) = &session.record.parked else {
        return Ok(pages::redirect(&core.config.app.account_settings_url));
    };
    if session.record.must_enroll {
        return Ok(pages::redirect(&format!("{}/settings", core.prefix())));
    }
    let record = SessionRecord {
        parked: None,
        ..session.record.clone()
    };
    core.sessions.save(&session.id, &record).await?;
    Ok(match Parked::open(&core.sealer, user, sealed) {
        Some(parked) => parked.into_response(),
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

/// A privilege change: a new session id (keeping a parked login for the forced-enrollment
/// case) and every other session of the user ended.
async fn privilege_changed(core: &Core, session: &Current) -> StoreResult<Current> {
    let fresh = core
        .sessions
        .create(&session.record.user, false, session.record.parked.clone())
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
