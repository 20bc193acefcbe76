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
use crate::records::Records;
use crate::session::Current;
use crate::state::Core;
use crate::web::Answer;
use crate::web::forms::{Form, read_form, token_matches};
use crate::web::pages::{
    self, EmailSetupPage, FactorState, Frame, RecoveryCodesPage, SettingsPage, TotpSetupPage,
};
use crate::web::refusal::Refusal;
use crate::words::Words;

/// What every settings handler works with: the shared state, the request's words, the session.
#[derive(Clone, Copy)]
pub struct View<'a> {
    pub core: &'a Core,
    pub w: &'static Words,
    pub session: &'a Current,
}

impl<'a> View<'a> {
    /// The page frame, with the session's form token.
    fn frame(self) -> Frame<'a> {
        Frame::new(self.core, self.w, &self.session.record.csrf)
    }

    fn user(self) -> &'a str {
        &self.session.record.user
    }

    fn settings_url(self, done: Option<&str>) -> String {
        match done {
            Some(done) => format!("{}/settings?done={done}", self.core.prefix()),
            None => format!("{}/settings", self.core.prefix()),
        }
    }
}

/// Settings pages need a session; without one the browser goes to the app's login first.
pub fn sign_in_first(core: &Core) -> Response<Body> {
    let app = &core.config.app;
    let next: String =
        form_urlencoded::byte_serialize(format!("{}/settings", core.prefix()).as_bytes()).collect();
    pages::redirect(&format!("{}?{}={next}", app.login_page, app.next_param))
}

pub async fn status(v: View<'_>, req: &Request<Incoming>) -> Answer {
    let done = query_value(req, "done");
    let w = v.w;
    let notice = match done.as_deref() {
        Some("disabled") => Some(w.done_disabled),
        Some("enabled") => Some(w.done_enabled),
        Some("codes") => Some(w.done_codes),
        _ if v.session.record.must_enroll => Some(w.must_enroll),
        _ => None,
    };
    render_status(v, notice, None, StatusCode::OK).await
}

fn query_value(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.uri().query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    })
}

/// "Next" on the choice of method: on to that method's setup (back to the choice for anything
/// else, or for email where it is not offered).
pub fn choose(v: View<'_>, req: &Request<Incoming>) -> Response<Body> {
    let prefix = v.core.prefix();
    match query_value(req, "method")
        .as_deref()
        .and_then(SecondFactor::from_name)
    {
        Some(SecondFactor::Totp) => pages::redirect(&format!("{prefix}/settings/totp")),
        Some(SecondFactor::Email) if enrollment::email_offered(v.core) => {
            pages::redirect(&format!("{prefix}/settings/email"))
        }
        _ => pages::redirect(&v.settings_url(None)),
    }
}

async fn render_status(
    v: View<'_>,
    notice: Option<&str>,
    error: Option<String>,
    status: StatusCode,
) -> Answer {
    let core = v.core;
    let st = enrollment::status(core, v.user()).await?;
    let state = match (st.factor, st.email_to) {
        (None, _) => FactorState::Off,
        (Some(SecondFactor::Email), Some(to)) => FactorState::Email(to),
        (Some(_), _) => FactorState::App,
    };
    Ok(pages::page(
        status,
        &SettingsPage {
            frame: v.frame(),
            user: v.user(),
            state,
            email_offered: enrollment::email_offered(core),
            recovery_left: st.recovery_left,
            can_disable: st.can_disable,
            notice,
            error,
            back: (!v.session.record.must_enroll)
                .then_some(core.config.app.account_settings_url.as_str()),
        },
    ))
}

async fn render_setup(v: View<'_>, error: Option<String>, status: StatusCode) -> Answer {
    let core = v.core;
    let user = v.user();
    let secret = enrollment::enrollment_secret(core, user).await?;
    let issuer = &core.config.totp.issuer;
    let uri = totp::otpauth_uri(&secret, issuer, user);
    let current = core.records.two_factor(user).await?;
    Ok(pages::page(
        status,
        &TotpSetupPage {
            frame: v.frame(),
            user,
            issuer,
            qr_svg: totp::qr_svg(&uri),
            key_grouped: totp::grouped(&totp::base32(&secret)),
            needs_current: current.is_some(),
            current_is_email: current.is_some_and(|r| r.method == SecondFactor::Email),
            error,
        },
    ))
}

pub async fn setup(v: View<'_>) -> Answer {
    render_setup(v, None, StatusCode::OK).await
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
fn enabled_page(v: View<'_>, codes: Vec<String>, fresh: &Current) -> Response<Body> {
    let continue_href = if fresh.record.held.is_some() {
        format!("{}/settings/continue", v.core.prefix())
    } else {
        v.settings_url(Some("enabled"))
    };
    codes_page(v, fresh, codes, continue_href, None)
}

/// The form post of the setup page.
pub async fn confirm(v: View<'_>, req: Request<Incoming>) -> Answer {
    let (core, w) = (v.core, v.w);
    let form = session_form(v.session, req).await?;
    match enrollment::enable_totp(
        core,
        v.session,
        form.get("code"),
        form.get("current_code"),
        w.language,
    )
    .await?
    {
        Enabled::Done { codes, fresh } => Ok(enabled_page(v, codes, &fresh)),
        Enabled::Current(Change::Locked { retry_after }) => Err(Refusal::Locked { retry_after }),
        Enabled::Current(Change::Failed { tries_left }) => {
            let error = (w.current_code_failed)(tries_left);
            render_setup(v, Some(error), StatusCode::UNAUTHORIZED).await
        }
        Enabled::Current(_) => render_setup(v, None, StatusCode::OK).await,
        Enabled::Expired => render_setup(v, Some(w.setup_expired.to_owned()), StatusCode::OK).await,
        Enabled::WrongCode => {
            let error = w.setup_wrong_code.to_owned();
            render_setup(v, Some(error), StatusCode::UNAUTHORIZED).await
        }
    }
}

pub async fn disable(v: View<'_>, req: Request<Incoming>) -> Answer {
    let (core, w) = (v.core, v.w);
    let form = session_form(v.session, req).await?;
    match enrollment::turn_off(core, v.session, form.get("code")).await? {
        Change::Done(fresh) => {
            let mut res = pages::redirect(&v.settings_url(Some("disabled")));
            res.headers_mut()
                .append(header::SET_COOKIE, core.sessions.set_cookie(&fresh.id));
            Ok(res)
        }
        Change::Failed { tries_left } => {
            let error = (w.disable_failed)(tries_left);
            render_status(v, None, Some(error), StatusCode::UNAUTHORIZED).await
        }
        Change::Locked { retry_after } => Err(Refusal::Locked { retry_after }),
        Change::NotEnabled => Ok(pages::redirect(&v.settings_url(None))),
        Change::NotAllowed => {
            let error = w.required_here.to_owned();
            render_status(v, None, Some(error), StatusCode::FORBIDDEN).await
        }
    }
}

pub async fn regenerate_codes(v: View<'_>, req: Request<Incoming>) -> Answer {
    let (core, w) = (v.core, v.w);
    let form = session_form(v.session, req).await?;
    match enrollment::new_codes(core, v.session, form.get("code")).await? {
        Change::Done((codes, fresh)) => {
            let continue_href = v.settings_url(Some("codes"));
            Ok(codes_page(
                v,
                &fresh,
                codes,
                continue_href,
                Some(w.codes_replaced),
            ))
        }
        Change::Failed { tries_left } => {
            let error = (w.code_failed)(tries_left);
            render_status(v, None, Some(error), StatusCode::UNAUTHORIZED).await
        }
        Change::Locked { retry_after } => Err(Refusal::Locked { retry_after }),
        Change::NotEnabled | Change::NotAllowed => Ok(pages::redirect(&v.settings_url(None))),
    }
}

/// The codes the user just saw, echoed back as a text file (they are never stored in clear).
pub async fn download_codes(v: View<'_>, req: Request<Incoming>) -> Answer {
    let form = session_form(v.session, req).await?;
    let codes: Vec<&str> = form
        .get("codes")
        .split_whitespace()
        .filter(|c| recovery::normalize(c).is_some())
        .collect();
    let text = format!(
        "{}\r\n\r\n{}\r\n",
        (v.w.codes_file)(&v.core.brand.app_name, v.user()),
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
pub async fn continue_to_app(v: View<'_>) -> Answer {
    let core = v.core;
    Ok(match enrollment::release_held(core, v.session).await? {
        Release::Answer(held) => {
            let mut res = held.into_response();
            res.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            res
        }
        Release::Nothing => pages::redirect(&core.config.app.account_settings_url),
        Release::EnrollFirst => pages::redirect(&v.settings_url(None)),
    })
}

/// The recovery codes, shown once, with the new session's cookie (its form token too).
fn codes_page(
    v: View<'_>,
    fresh: &Current,
    codes: Vec<String>,
    continue_href: String,
    notice: Option<&str>,
) -> Response<Body> {
    let mut res = pages::page(
        StatusCode::OK,
        &RecoveryCodesPage {
            frame: Frame::new(v.core, v.w, &fresh.record.csrf),
            codes_joined: codes.join(" "),
            codes,
            continue_href,
            notice,
        },
    );
    res.headers_mut()
        .append(header::SET_COOKIE, v.core.sessions.set_cookie(&fresh.id));
    res
}

async fn render_email(
    v: View<'_>,
    sent_to: Option<String>,
    notice: Option<String>,
    error: Option<String>,
    status: StatusCode,
) -> Answer {
    let core = v.core;
    let email = &core.config.email;
    let page = EmailSetupPage {
        frame: v.frame(),
        ask_address: email.address_source == AddressSource::Input,
        known: enrollment::fixed_address(core, v.session).map(|a| a.masked()),
        sent_to,
        needs_current: core.records.two_factor(v.user()).await?.is_some(),
        digits: email.code_digits,
        minutes: email.code_ttl.as_secs().div_ceil(60),
        notice,
        error,
    };
    Ok(pages::page(status, &page))
}

fn not_offered(v: View<'_>) -> Response<Body> {
    pages::error(&v.frame(), StatusCode::NOT_FOUND, true)
}

pub async fn email_setup(v: View<'_>, req: &Request<Incoming>) -> Answer {
    if !enrollment::email_offered(v.core) {
        return Ok(not_offered(v));
    }
    let change = req.uri().query().is_some_and(|q| q.contains("change=1"));
    let sent_to = if change {
        None
    } else {
        enrollment::code_out_to(v.core, v.user()).await?
    };
    render_email(v, sent_to, None, None, StatusCode::OK).await
}

/// What to say about a code email: `Ok` with a notice when it went out, `Err` with the error
/// when it did not.
fn sent_words(w: &Words, sent: &Sent, failed: &'static str) -> Result<String, String> {
    match sent {
        Sent::Sent { to } => Ok((w.code_sent_to)(to)),
        Sent::TooSoon { wait } => Err((w.wait_for_new_code)(*wait)),
        Sent::HourlyCap => Err(w.many_codes.to_owned()),
        Sent::Failed => Err(failed.to_owned()),
    }
}

pub async fn email_post(v: View<'_>, req: Request<Incoming>) -> Answer {
    let (core, w) = (v.core, v.w);
    if !enrollment::email_offered(core) {
        return Ok(not_offered(v));
    }
    let form = session_form(v.session, req).await?;
    let outstanding = || enrollment::code_out_to(core, v.user());
    match form.get("action") {
        "send" => {
            let (sent_to, error) = match enrollment::send_enrollment_code(
                core,
                v.session,
                form.get("address"),
                w.language,
            )
            .await?
            {
                Ok(Sent::Sent { to }) => (Some(to), None),
                Ok(other) => (
                    outstanding().await?,
                    sent_words(w, &other, w.send_failed_check_address).err(),
                ),
                Err(AddressProblem::Invalid) => (None, Some(w.address_invalid.to_owned())),
                Err(AddressProblem::Unknown) => (None, Some(w.address_unknown.to_owned())),
            };
            let status = if error.is_some() {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::OK
            };
            render_email(v, sent_to, None, error, status).await
        }
        "verify" => {
            let outcome = enrollment::enable_email(
                core,
                v.session,
                form.get("code"),
                form.get("current_code"),
                w.language,
            )
            .await?;
            let unauthorized = StatusCode::UNAUTHORIZED;
            match outcome {
                Enabled::Done { codes, fresh } => Ok(enabled_page(v, codes, &fresh)),
                Enabled::Current(Change::Locked { retry_after }) => {
                    Err(Refusal::Locked { retry_after })
                }
                Enabled::Current(Change::Failed { tries_left }) => {
                    let error = (w.current_code_failed)(tries_left);
                    render_email(v, outstanding().await?, None, Some(error), unauthorized).await
                }
                Enabled::Current(_) => render_email(v, None, None, None, StatusCode::OK).await,
                Enabled::Expired => {
                    let error = w.email_code_expired.to_owned();
                    render_email(v, None, None, Some(error), unauthorized).await
                }
                Enabled::WrongCode => {
                    let error = w.email_wrong_code.to_owned();
                    render_email(v, outstanding().await?, None, Some(error), unauthorized).await
                }
            }
        }
        _ => Ok(pages::error(&v.frame(), StatusCode::BAD_REQUEST, true)),
    }
}

/// "Send me a code" in settings, for users whose method is email (changes need a current code).
pub async fn send_change_code(v: View<'_>, req: Request<Incoming>) -> Answer {
    let form = session_form(v.session, req).await?;
    let Some(sent) = enrollment::send_change_code(v.core, v.user(), v.w.language).await? else {
        return Ok(pages::redirect(&v.settings_url(None)));
    };
    let said = sent_words(v.w, &sent, v.w.send_failed);
    if form.get("back") == "totp" {
        let said = match said {
            Ok(s) | Err(s) => s,
        };
        return render_setup(v, Some(said), StatusCode::OK).await;
    }
    match said {
        Ok(notice) => render_status(v, Some(&notice), None, StatusCode::OK).await,
        Err(error) => render_status(v, None, Some(error), StatusCode::OK).await,
    }
}
