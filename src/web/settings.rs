//! The 2FA settings pages: status, enabling the authenticator app (QR code, manual key, first
//! code), recovery codes (shown once), and turning 2FA off. Every change needs a current second
//! factor, gets a new session id and ends the user's other sessions.

use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use crate::auth::SecondFactor;
use crate::auth::email::Sent;
use crate::auth::enrollment::{self, AddressProblem, Change, Enabled, Release};
use crate::auth::{recovery, totp};
use crate::body::Body;
use crate::config::AddressSource;
use crate::session::Current;
use crate::state::Core;
use crate::store::{SessionRecord, Store};
use crate::web::Answer;
use crate::web::forms::{Form, read_form, token_matches};
use crate::web::pages::{self, EmailSetupPage, RecoveryCodesPage, SettingsPage, TotpSetupPage};
use crate::web::refusal::Refusal;

/// Settings pages need a session; without one the browser goes to the app's login first.
pub fn sign_in_first(core: &Core) -> Response<Body> {
    let app = &core.config.app;
    let next: String =
        form_urlencoded::byte_serialize(format!("{}/settings", core.prefix()).as_bytes()).collect();
    pages::redirect(&format!("{}?{}={next}", app.login_page, app.next_param))
}

pub async fn status(core: &Core, session: &Current, req: &Request<Incoming>) -> Answer {
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
) -> Answer {
    let user = &session.record.user;
    let st = enrollment::status(core, user).await?;
    Ok(pages::page(
        status,
        &SettingsPage {
            app_name: &core.brand.app_name,
            assets: &core.brand.assets,
            prefix: core.prefix(),
            user,
            csrf: &session.record.csrf,
            enabled: st.enabled(),
            email_offered: enrollment::email_offered(core),
            recovery_left: st.recovery_left,
            can_disable: st.can_disable,
            email_to: st.email_to,
            notice,
            error,
            back: (!session.record.must_enroll)
                .then_some(core.config.app.account_settings_url.as_str()),
        },
    ))
}

async fn render_setup(
    core: &Core,
    session: &Current,
    error: Option<String>,
    status: StatusCode,
) -> Answer {
    let user = &session.record.user;
    let secret = enrollment::enrollment_secret(core, user).await?;
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
            current_is_email: current.is_some_and(|r| r.method == SecondFactor::Email),
            error,
        },
    ))
}

pub async fn setup(core: &Core, session: &Current) -> Answer {
    render_setup(core, session, None, StatusCode::OK).await
}

/// A form posted by the signed-in user: same-origin, bounded, with the session's CSRF token.
async fn session_form(session: &Current, req: Request<Incoming>) -> Result<Form, Refusal> {
    let form = read_form(req).await?;
    if !token_matches(form.get("csrf"), &session.record.csrf) {
        return Err(Refusal::Forged);
    }
    Ok(form)
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

/// The form post of the setup page.
pub async fn confirm(core: &Core, session: &Current, req: Request<Incoming>) -> Answer {
    let form = session_form(session, req).await?;
    match enrollment::enable_totp(core, session, form.get("code"), form.get("current_code")).await?
    {
        Enabled::Done { codes, fresh } => Ok(enabled_page(core, codes, &fresh)),
        Enabled::Current(Change::Locked { retry_after }) => Err(Refusal::Locked { retry_after }),
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

pub async fn disable(core: &Core, session: &Current, req: Request<Incoming>) -> Answer {
    let form = session_form(session, req).await?;
    match enrollment::turn_off(core, session, form.get("code")).await? {
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
        Change::Locked { retry_after } => Err(Refusal::Locked { retry_after }),
        Change::NotEnabled => Ok(pages::redirect(&format!("{}/settings", core.prefix()))),
        Change::NotAllowed => {
            let error = "Two-step verification is required here.".to_owned();
            render_status(core, session, None, Some(error), StatusCode::FORBIDDEN).await
        }
    }
}

pub async fn regenerate_codes(core: &Core, session: &Current, req: Request<Incoming>) -> Answer {
    let form = session_form(session, req).await?;
    match enrollment::new_codes(core, session, form.get("code")).await? {
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
        Change::Locked { retry_after } => Err(Refusal::Locked { retry_after }),
        Change::NotEnabled | Change::NotAllowed => {
            Ok(pages::redirect(&format!("{}/settings", core.prefix())))
        }
    }
}

/// The codes the user just saw, echoed back as a text file (they are never stored in clear).
pub async fn download_codes(core: &Core, session: &Current, req: Request<Incoming>) -> Answer {
    let form = session_form(session, req).await?;
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
pub async fn continue_to_app(core: &Core, session: &Current) -> Answer {
    Ok(match enrollment::release_held(core, session).await? {
        Release::Answer(held) => {
            let mut res = held.into_response();
            res.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            res
        }
        Release::Nothing => pages::redirect(&core.config.app.account_settings_url),
        Release::EnrollFirst => pages::redirect(&format!("{}/settings", core.prefix())),
    })
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

async fn render_email(
    core: &Core,
    session: &Current,
    sent_to: Option<String>,
    notice: Option<String>,
    error: Option<String>,
    status: StatusCode,
) -> Answer {
    let email = &core.config.email;
    let page = EmailSetupPage {
        app_name: &core.brand.app_name,
        assets: &core.brand.assets,
        prefix: core.prefix(),
        csrf: &session.record.csrf,
        ask_address: email.address_source == AddressSource::Input,
        known: enrollment::fixed_address(core, session).map(|a| a.masked()),
        sent_to,
        needs_current: core.store.two_factor(&session.record.user).await?.is_some(),
        digits: email.code_digits,
        minutes: email.code_ttl.as_secs().div_ceil(60),
        notice,
        error,
    };
    Ok(pages::page(status, &page))
}

pub async fn email_setup(core: &Core, session: &Current, req: &Request<Incoming>) -> Answer {
    if !enrollment::email_offered(core) {
        return Ok(pages::error(&core.brand, StatusCode::NOT_FOUND, true));
    }
    let change = req.uri().query().is_some_and(|q| q.contains("change=1"));
    let sent_to = if change {
        None
    } else {
        enrollment::code_out_to(core, &session.record.user).await?
    };
    render_email(core, session, sent_to, None, None, StatusCode::OK).await
}

pub async fn email_post(core: &Core, session: &Current, req: Request<Incoming>) -> Answer {
    if !enrollment::email_offered(core) {
        return Ok(pages::error(&core.brand, StatusCode::NOT_FOUND, true));
    }
    let form = session_form(session, req).await?;
    let user = &session.record.user;
    let outstanding = || enrollment::code_out_to(core, user);
    match form.get("action") {
        "send" => {
            let (sent_to, notice, error) = match enrollment::send_enrollment_code(
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
            match enrollment::enable_email(
                core,
                session,
                form.get("code"),
                form.get("current_code"),
            )
            .await?
            {
                Enabled::Done { codes, fresh } => Ok(enabled_page(core, codes, &fresh)),
                Enabled::Current(Change::Locked { retry_after }) => {
                    Err(Refusal::Locked { retry_after })
                }
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
pub async fn send_change_code(core: &Core, session: &Current, req: Request<Incoming>) -> Answer {
    let form = session_form(session, req).await?;
    let Some(sent) = enrollment::send_change_code(core, &session.record.user).await? else {
        return Ok(pages::redirect(&format!("{}/settings", core.prefix())));
    };
    let (notice, error) = match sent {
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
