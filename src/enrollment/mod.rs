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
use crate::forms::{read_form, token_matches};
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
async fn enrollment_secret(core: &Core, user: &str) -> StoreResult<Vec<u8>> {
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

pub async fn confirm(
    core: &Core,
    session: &Current,
    req: Request<Incoming>,
) -> StoreResult<Response<Body>> {
    let form = match read_form(req).await {
        Ok(f) => f,
        Err(e) => return Ok(form_error(core, e)),
    };
    if !token_matches(form.get("csrf"), &session.record.csrf) {
        return Ok(pages::error(&core.brand, StatusCode::FORBIDDEN, true));
    }
    let user = session.record.user.clone();
    let existing = core.store.two_factor(&user).await?;
    // Changing the method needs the current factor first.
    if let Some(record) = &existing {
        match verify::verify(core, &user, record, form.get("current_code")).await? {
            Outcome::Passed => {}
            Outcome::Failed { tries_left } => {
                let error = format!(
                    "Your current code did not work. {}",
                    tries_words(tries_left)
                );
                return render_setup(core, session, Some(error), StatusCode::UNAUTHORIZED).await;
            }
            Outcome::Locked { retry_after } => return Ok(locked(core, retry_after)),
        }
    }
    let Some(e) = core.store.enrollment(&user).await? else {
        let error = "The setup took too long, so here is a new QR code. Scan it again.".to_owned();
        return render_setup(core, session, Some(error), StatusCode::OK).await;
    };
    let Some(secret) = core.sealer.open("enrollment", &user, &e.secret) else {
        core.store.delete_enrollment(&user).await?;
        return render_setup(
            core,
            session,
            Some("Please scan the new QR code.".into()),
            StatusCode::OK,
        )
        .await;
    };
    // The first code claims its step, so it cannot be replayed to log in.
    if !verify::totp_matches(core, &user, &secret, form.get("code")).await? {
        let error = "That code did not match. Make sure you scanned this QR code, then enter the newest code.";
        return render_setup(
            core,
            session,
            Some(error.to_owned()),
            StatusCode::UNAUTHORIZED,
        )
        .await;
    }
    let record = TwoFactorRecord {
        method: MethodKind::Totp,
        totp_secret: Some(core.sealer.seal("totp", &user, &secret)),
        email: None,
        enabled_at: core.clock.now(),
    };
    core.store.save_two_factor(&user, &record).await?;
    core.store.delete_enrollment(&user).await?;
    let codes = new_recovery_codes(core, &user).await?;
    let fresh = privilege_changed(core, session).await?;
    let changed = existing.is_some();
    tracing::info!(target: "audit", event = if changed { "second_factor_changed" } else { "second_factor_enabled" }, user, method = "totp");
    core.metrics
        .enrollment(if changed { "changed" } else { "enabled" }, "totp");
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

pub async fn disable(
    core: &Core,
    session: &Current,
    req: Request<Incoming>,
) -> StoreResult<Response<Body>> {
    let form = match read_form(req).await {
        Ok(f) => f,
        Err(e) => return Ok(form_error(core, e)),
    };
    if !token_matches(form.get("csrf"), &session.record.csrf) {
        return Ok(pages::error(&core.brand, StatusCode::FORBIDDEN, true));
    }
    if core.config.twofactor.enforcement == Enforcement::Required {
        return render_status(
            core,
            session,
            None,
            Some("Two-step verification is required here.".into()),
            StatusCode::FORBIDDEN,
        )
        .await;
    }
    let user = session.record.user.clone();
    let Some(record) = core.store.two_factor(&user).await? else {
        return Ok(pages::redirect(&format!("{}/settings", core.prefix())));
    };
    match verify::verify(core, &user, &record, form.get("code")).await? {
        Outcome::Passed => {}
        Outcome::Failed { tries_left } => {
            let error = format!(
                "That code did not work, so two-step verification is still on. {}",
                tries_words(tries_left)
            );
            return render_status(core, session, None, Some(error), StatusCode::UNAUTHORIZED).await;
        }
        Outcome::Locked { retry_after } => return Ok(locked(core, retry_after)),
    }
    core.store.remove_two_factor(&user).await?;
    let fresh = privilege_changed(core, session).await?;
    tracing::info!(target: "audit", event = "second_factor_disabled", user);
    core.metrics.enrollment("disabled", "totp");
    let mut res = pages::redirect(&format!("{}/settings?done=disabled", core.prefix()));
    res.headers_mut()
        .append(header::SET_COOKIE, core.sessions.set_cookie(&fresh.id));
    Ok(res)
}

pub async fn regenerate_codes(
    core: &Core,
    session: &Current,
    req: Request<Incoming>,
) -> StoreResult<Response<Body>> {
    let form = match read_form(req).await {
        Ok(f) => f,
        Err(e) => return Ok(form_error(core, e)),
    };
    if !token_matches(form.get("csrf"), &session.record.csrf) {
        return Ok(pages::error(&core.brand, StatusCode::FORBIDDEN, true));
    }
    let user = session.record.user.clone();
    let Some(record) = core.store.two_factor(&user).await? else {
        return Ok(pages::redirect(&format!("{}/settings", core.prefix())));
    };
    match verify::verify(core, &user, &record, form.get("code")).await? {
        Outcome::Passed => {}
        Outcome::Failed { tries_left } => {
            let error = format!("That code did not work. {}", tries_words(tries_left));
            return render_status(core, session, None, Some(error), StatusCode::UNAUTHORIZED).await;
        }
        Outcome::Locked { retry_after } => return Ok(locked(core, retry_after)),
    }
    let codes = new_recovery_codes(core, &user).await?;
    let fresh = privilege_changed(core, session).await?;
    tracing::info!(target: "audit", event = "recovery_codes_regenerated", user);
    let continue_href = format!("{}/settings?done=codes", core.prefix());
    let mut res = codes_page(
        core,
        &fresh.record,
        codes,
        continue_href,
        Some("Your old recovery codes no longer work."),
    );
    res.headers_mut()
        .append(header::SET_COOKIE, core.sessions.set_cookie(&fresh.id));
    Ok(res)
}

/// The codes the user just saw, echoed back as a text file (they are never stored in clear).
pub async fn download_codes(
    core: &Core,
    session: &Current,
    req: Request<Incoming>,
) -> StoreResult<Response<Body>> {
    let form = match read_form(req).await {
        Ok(f) => f,
        Err(e) => return Ok(form_error(core, e)),
    };
    if !token_matches(form.get("csrf"), &session.record.csrf) {
        return Ok(pages::error(&core.brand, StatusCode::FORBIDDEN, true));
    }
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
    core.store
        .put_session(&session.id, &record, core.config.session.idle_timeout)
        .await?;
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
