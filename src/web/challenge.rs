//! The challenge pages: after the app accepted a password, the user proves the second factor
//! (or uses a recovery code); the held-back login is then taken once and replayed with a new
//! proxy session.

use http::{HeaderMap, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use crate::auth::challenge::{self as rules, Attempt};
use crate::auth::email::Sent;
use crate::body::Body;
use crate::session::cookie;
use crate::state::Core;
use crate::store::{PendingLogin, StoreResult};
use crate::web::Answer;
use crate::web::forms::{Form, read_form, token_matches};
use crate::web::pages::{self, Asked, ChallengePage, Frame};
use crate::web::refusal::Refusal;
use crate::words::Words;

/// The held-back login behind the request's pending cookie, with the cookie's value.
pub async fn pending(
    core: &Core,
    headers: &HeaderMap,
) -> StoreResult<Option<(String, PendingLogin)>> {
    let id = cookie::find(headers, core.sessions.names.pending).unwrap_or_default();
    Ok(rules::pending(core, id).await?.map(|p| (id.to_owned(), p)))
}

/// The page for a sign-in that is gone (expired, used, cancelled).
pub fn expired(core: &Core, w: &'static Words) -> Response<Body> {
    let minutes = core.config.twofactor.challenge_ttl.as_secs().div_ceil(60);
    let mut res = notice(
        core,
        w,
        StatusCode::UNAUTHORIZED,
        w.sign_in_again_heading,
        (w.sign_in_ended)(minutes),
    );
    let names = &core.sessions.names;
    res.headers_mut()
        .append(header::SET_COOKIE, names.clear(names.pending));
    res
}

/// A page that ends the sign-in, with a way back to the app's login.
pub fn notice(
    core: &Core,
    w: &'static Words,
    status: StatusCode,
    heading: &str,
    message: String,
) -> Response<Body> {
    pages::page(
        status,
        &pages::NoticePage {
            frame: Frame::new(core, w, ""),
            heading,
            message,
            link: Some((core.config.app.login_page.clone(), w.go_to_sign_in)),
        },
    )
}

/// What every challenge handler works with: the shared state, the request's words, and the
/// held-back login behind the pending cookie (with the cookie's value).
#[derive(Clone, Copy)]
pub struct View<'a> {
    pub core: &'a Core,
    pub w: &'static Words,
    pub id: &'a str,
    pub pending: &'a PendingLogin,
}

/// Renders the challenge for the user's method. For email it says where the code went, or
/// that it could not be sent, and when a new one may be asked for.
async fn render(
    v: View<'_>,
    recovery: bool,
    error: Option<String>,
    notice: Option<String>,
    status: StatusCode,
) -> Answer {
    let View {
        core,
        w,
        id,
        pending,
    } = v;
    let prompt = rules::prompt(core, id, pending).await?;
    let (app, user) = (core.brand.app_name.as_str(), pending.user.as_str());
    let mut error = error;
    let (asked, lead) = match &prompt.email {
        _ if recovery => (Asked::Recovery, (w.challenge_recovery)(app, user)),
        Some(e) => {
            if !e.code_out && error.is_none() {
                error = Some((w.code_not_sent)(&e.to));
            }
            let minutes = core.config.email.code_ttl.as_secs().div_ceil(60);
            let lead = (w.challenge_email)(prompt.digits, &e.to, app, user, minutes);
            (Asked::Email, lead)
        }
        None => (Asked::App, (w.challenge_app)(app, user)),
    };
    let page = ChallengePage {
        frame: Frame::new(core, w, &pending.csrf),
        asked,
        lead,
        error,
        notice,
        by_email: prompt.email.is_some(),
        resend_wait: prompt.email.as_ref().map_or(0, |e| e.resend_wait),
    };
    Ok(pages::page(status, &page))
}

pub async fn show(v: View<'_>, recovery: bool) -> Answer {
    render(v, recovery, None, None, StatusCode::OK).await
}

/// A challenge form: same-origin, bounded, with the sign-in's CSRF token.
async fn pending_form(req: Request<Incoming>, pending: &PendingLogin) -> Result<Form, Refusal> {
    let form = read_form(req).await?;
    if !token_matches(form.get("csrf"), &pending.csrf) {
        return Err(Refusal::Forged);
    }
    Ok(form)
}

/// "Send a new code" on an email challenge.
pub async fn resend(v: View<'_>, req: Request<Incoming>) -> Answer {
    let w = v.w;
    pending_form(req, v.pending).await?;
    let (notice, error) = match rules::resend(v.core, v.id, v.pending, w.language).await? {
        Some(Sent::Sent { to }) => (Some((w.new_code_sent)(&to)), None),
        Some(Sent::TooSoon { wait }) => (None, Some((w.wait_for_new_code)(wait))),
        Some(Sent::HourlyCap) => (None, Some(w.many_codes_use_recovery.to_owned())),
        Some(Sent::Failed) => (None, Some(w.send_failed.to_owned())),
        None => (None, Some(w.nothing_to_send.to_owned())),
    };
    render(v, false, error, notice, StatusCode::OK).await
}

pub async fn submit(v: View<'_>, req: Request<Incoming>, recovery: bool) -> Answer {
    let View {
        core,
        w,
        id,
        pending,
    } = v;
    let form = pending_form(req, pending).await?;
    let old_session = cookie::find(&form.parts.headers, core.sessions.names.session);
    match rules::attempt(core, id, pending, form.get("code"), recovery, old_session).await? {
        Attempt::Passed { answer, session } => {
            let mut res = answer.into_response();
            let names = &core.sessions.names;
            let h = res.headers_mut();
            h.append(header::SET_COOKIE, core.sessions.set_cookie(&session.id));
            h.append(header::SET_COOKIE, names.clear(names.pending));
            h.insert(
                header::CACHE_CONTROL,
                http::HeaderValue::from_static("no-store"),
            );
            Ok(res)
        }
        Attempt::Failed { tries_left } => {
            let error = if tries_left == 0 {
                w.no_tries_left.to_owned()
            } else {
                (w.wrong_code)(tries_left)
            };
            render(v, recovery, Some(error), None, StatusCode::UNAUTHORIZED).await
        }
        Attempt::Locked { retry_after } => Err(Refusal::Locked { retry_after }),
        Attempt::Exhausted => Ok(notice(
            core,
            w,
            StatusCode::UNAUTHORIZED,
            w.too_many_tries_heading,
            w.too_many_tries.to_owned(),
        )),
        Attempt::Expired => Ok(expired(core, w)),
    }
}

/// "Cancel": forget the pending login and go back to the app's login page.
pub async fn cancel(core: &Core, req: Request<Incoming>) -> Answer {
    let form = read_form(req).await?;
    if let Some((id, p)) = pending(core, &form.parts.headers).await?
        && token_matches(form.get("csrf"), &p.csrf)
    {
        rules::cancel(core, &id, &p).await?;
    }
    let mut res = pages::redirect(&core.config.app.login_page);
    let names = &core.sessions.names;
    res.headers_mut()
        .append(header::SET_COOKIE, names.clear(names.pending));
    // The app's session was never handed over; nothing else to undo.
    Ok(res)
}
