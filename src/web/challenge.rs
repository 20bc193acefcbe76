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
use crate::web::pages::{self, ChallengePage};
use crate::web::refusal::Refusal;

/// The held-back login behind the request's pending cookie, with the cookie's value.
pub async fn pending(
    core: &Core,
    headers: &HeaderMap,
) -> StoreResult<Option<(String, PendingLogin)>> {
    let id = cookie::find(headers, core.sessions.names.pending).unwrap_or_default();
    Ok(rules::pending(core, id).await?.map(|p| (id.to_owned(), p)))
}

/// The page for a sign-in that is gone (expired, used, cancelled).
pub fn expired(core: &Core) -> Response<Body> {
    let minutes = core.config.twofactor.challenge_ttl.as_secs().div_ceil(60);
    let mut res = notice(
        core,
        StatusCode::UNAUTHORIZED,
        "Please sign in again",
        format!(
            "For your security, this sign-in step has ended (they last {minutes} minutes and work once)."
        ),
    );
    let names = &core.sessions.names;
    res.headers_mut()
        .append(header::SET_COOKIE, names.clear(names.pending));
    res
}

pub fn notice(core: &Core, status: StatusCode, heading: &str, message: String) -> Response<Body> {
    pages::page(
        status,
        &pages::NoticePage {
            app_name: &core.brand.app_name,
            assets: &core.brand.assets,
            heading,
            message,
            link: Some((core.config.app.login_page.clone(), "Go to sign in")),
        },
    )
}

/// Renders the challenge for the user's method. For email it says where the code went, or
/// that it could not be sent, and when a new one may be asked for.
async fn render(
    core: &Core,
    id: &str,
    recovery: bool,
    pending: &PendingLogin,
    error: Option<String>,
    notice: Option<String>,
    status: StatusCode,
) -> Answer {
    let prompt = rules::prompt(core, id, pending).await?;
    let mut error = error;
    if let Some(e) = &prompt.email
        && !e.code_out
        && error.is_none()
        && !recovery
    {
        error = Some(format!(
            "We could not send a code to {}. Try sending it again.",
            e.to
        ));
    }
    let page = ChallengePage {
        app_name: &core.brand.app_name,
        assets: &core.brand.assets,
        prefix: core.prefix(),
        user: &pending.user,
        csrf: &pending.csrf,
        error,
        notice,
        recovery,
        resend_wait: prompt.email.as_ref().map_or(0, |e| e.resend_wait),
        email: prompt.email.map(|e| e.to),
        digits: prompt.digits,
        minutes: core.config.email.code_ttl.as_secs().div_ceil(60),
    };
    Ok(pages::page(status, &page))
}

pub async fn show(core: &Core, id: &str, pending: &PendingLogin, recovery: bool) -> Answer {
    render(core, id, recovery, pending, None, None, StatusCode::OK).await
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
pub async fn resend(
    core: &Core,
    req: Request<Incoming>,
    id: &str,
    pending: &PendingLogin,
) -> Answer {
    pending_form(req, pending).await?;
    let (notice, error) = match rules::resend(core, id, pending).await? {
        Some(Sent::Sent { to }) => (
            Some(format!(
                "We sent a new code to {to}. Earlier codes no longer work."
            )),
            None,
        ),
        Some(Sent::TooSoon { wait }) => (
            None,
            Some(format!("You can ask for a new code in {wait} seconds.")),
        ),
        Some(Sent::HourlyCap) => (
            None,
            Some(
                "You have asked for many codes. Try again in an hour, or use a recovery code."
                    .to_owned(),
            ),
        ),
        Some(Sent::Failed) => (
            None,
            Some("We could not send the code. Try again in a moment.".to_owned()),
        ),
        None => (
            None,
            Some("This sign-in uses an authenticator app; there is nothing to send.".to_owned()),
        ),
    };
    render(core, id, false, pending, error, notice, StatusCode::OK).await
}

pub async fn submit(
    core: &Core,
    req: Request<Incoming>,
    id: &str,
    pending: &PendingLogin,
    recovery: bool,
) -> Answer {
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
                "That code did not work, and this sign-in has no tries left. Please sign in again."
                    .to_owned()
            } else {
                pages::wrong_code_words(tries_left)
            };
            render(
                core,
                id,
                recovery,
                pending,
                Some(error),
                None,
                StatusCode::UNAUTHORIZED,
            )
            .await
        }
        Attempt::Locked { retry_after } => Err(Refusal::Locked { retry_after }),
        Attempt::Exhausted => Ok(notice(
            core,
            StatusCode::UNAUTHORIZED,
            "Too many tries",
            "This sign-in had too many wrong codes. Please sign in again.".to_owned(),
        )),
        Attempt::Expired => Ok(expired(core)),
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
