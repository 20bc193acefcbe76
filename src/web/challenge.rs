//! The challenge pages: after the app accepted a password, the user proves the second factor
//! (or uses a recovery code); the held-back login is then taken once and replayed with a new
//! proxy session.

use http::{HeaderMap, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use crate::auth::email::{self, Sent};
use crate::auth::verify::{self, Outcome};
use crate::body::Body;
use crate::login::held::HeldAnswer;
use crate::mail::MailKind;
use crate::mail::address::mask;
use crate::session::{Current, cookie};
use crate::state::Core;
use crate::store::MethodKind;
use crate::store::{PendingLogin, Store, StoreResult};
use crate::web::forms::{self, read_form, token_matches};
use crate::web::pages::{self, ChallengePage};

pub async fn pending(
    core: &Core,
    headers: &HeaderMap,
) -> StoreResult<Option<(String, PendingLogin)>> {
    let Some(id) = cookie::find(headers, core.sessions.names.pending).filter(|v| !v.is_empty())
    else {
        return Ok(None);
    };
    Ok(core
        .store
        .pending_login(id)
        .await?
        .map(|p| (id.to_owned(), p)))
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

pub fn locked(core: &Core, retry_after: u64) -> Response<Body> {
    let mut res = pages::page(
        StatusCode::TOO_MANY_REQUESTS,
        &pages::NoticePage {
            app_name: &core.brand.app_name,
            assets: &core.brand.assets,
            heading: "Too many wrong codes",
            message: format!(
                "To protect your account, sign-in is paused after several wrong codes. {}",
                pages::retry_words(retry_after)
            ),
            link: None,
        },
    );
    if let Ok(v) = http::HeaderValue::from_str(&retry_after.to_string()) {
        res.headers_mut().insert(header::RETRY_AFTER, v);
    }
    res
}

pub fn form_error(core: &Core, e: forms::FormError) -> Response<Body> {
    let status = match e {
        forms::FormError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        forms::FormError::CrossOrigin => StatusCode::FORBIDDEN,
        forms::FormError::Malformed | forms::FormError::Repeated => StatusCode::BAD_REQUEST,
        forms::FormError::TimedOut => StatusCode::REQUEST_TIMEOUT,
    };
    pages::error(&core.brand, status, true)
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
) -> StoreResult<Response<Body>> {
    let record = core.store.two_factor(&pending.user).await?;
    let mut email = None;
    let mut error = error;
    let mut resend_wait = 0;
    if let Some(r) = record.as_ref().filter(|r| r.method == MethodKind::Email) {
        let address = r.email.as_deref().map(mask).unwrap_or_default();
        match core.store.email_code(&email::login_key(id)).await? {
            Some(code) => {
                let next = code.created + core.config.email.resend_interval.as_secs();
                resend_wait = next.saturating_sub(core.clock.now());
            }
            None if error.is_none() && !recovery => {
                error = Some(format!(
                    "We could not send a code to {address}. Try sending it again."
                ));
            }
            None => {}
        }
        email = Some(address);
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
        email,
        digits: if record.is_some_and(|r| r.method == MethodKind::Email) {
            core.config.email.code_digits
        } else {
            6
        },
        minutes: core.config.email.code_ttl.as_secs().div_ceil(60),
        resend_wait,
    };
    Ok(pages::page(status, &page))
}

pub async fn show(
    core: &Core,
    req: &Request<Incoming>,
    recovery: bool,
) -> StoreResult<Response<Body>> {
    match pending(core, req.headers()).await? {
        Some((id, p)) => render(core, &id, recovery, &p, None, None, StatusCode::OK).await,
        None => Ok(expired(core)),
    }
}

/// A challenge form: same-origin, for a live pending login, with its CSRF token. The refusal is
/// boxed: it is the rare path.
async fn pending_form(
    core: &Core,
    req: Request<Incoming>,
) -> StoreResult<Result<(crate::web::forms::Form, String, PendingLogin), Box<Response<Body>>>> {
    let form = match read_form(req).await {
        Ok(f) => f,
        Err(e) => return Ok(Err(Box::new(form_error(core, e)))),
    };
    let Some((id, pending)) = pending(core, &form.parts.headers).await? else {
        return Ok(Err(Box::new(expired(core))));
    };
    if !token_matches(form.get("csrf"), &pending.csrf) {
        return Ok(Err(Box::new(pages::error(
            &core.brand,
            StatusCode::FORBIDDEN,
            true,
        ))));
    }
    Ok(Ok((form, id, pending)))
}

/// "Send a new code" on an email challenge.
pub async fn resend(core: &Core, req: Request<Incoming>) -> StoreResult<Response<Body>> {
    let (_form, id, pending) = match pending_form(core, req).await? {
        Ok(x) => x,
        Err(res) => return Ok(*res),
    };
    let (notice, error) = match resend_code(core, &id, &pending).await? {
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
    render(core, &id, false, &pending, error, notice, StatusCode::OK).await
}

/// Sends a fresh code for a pending login whose user has the email method (`None` otherwise).
pub async fn resend_code(
    core: &Core,
    id: &str,
    pending: &PendingLogin,
) -> StoreResult<Option<Sent>> {
    let Some(record) = core.store.two_factor(&pending.user).await? else {
        return Ok(None);
    };
    let (MethodKind::Email, Some(address)) = (record.method, record.email.as_deref()) else {
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
        )
        .await?,
    ))
}

/// What one code against a pending login came to.
pub enum Attempt {
    /// Right: the login was consumed and a session started; replay `held` with its cookie.
    Passed {
        held: Box<HeldAnswer>,
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

/// Checks `code` (a TOTP code, or a recovery code when `recovery`) against pending login `id`.
/// Shared by the page and the JSON API.
pub async fn attempt(
    core: &Core,
    id: &str,
    pending: &PendingLogin,
    code: &str,
    recovery: bool,
    old_session: Option<&str>,
) -> StoreResult<Attempt> {
    let user = pending.user.as_str();
    let Some(record) = core.store.two_factor(user).await? else {
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
    let method = if recovery { "recovery" } else { "totp" };
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

/// The code was right: take the pending login (once) and start a session.
async fn finish(core: &Core, id: &str, old_session: Option<&str>) -> StoreResult<Attempt> {
    let Some(pending) = core.store.take_login(id).await? else {
        return Ok(Attempt::Expired);
    };
    let Some(held) = HeldAnswer::open(&core.sealer, &pending.user, &pending.held) else {
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
            core.app_cookie_of(&held),
        )
        .await?;
    tracing::info!(target: "audit", event = "challenge_passed", user = pending.user);
    Ok(Attempt::Passed {
        held: Box::new(held),
        session: Box::new(session),
    })
}

pub async fn submit(
    core: &Core,
    req: Request<Incoming>,
    recovery: bool,
) -> StoreResult<Response<Body>> {
    let (form, id, pending) = match pending_form(core, req).await? {
        Ok(x) => x,
        Err(res) => return Ok(*res),
    };
    let old_session = cookie::find(&form.parts.headers, core.sessions.names.session);
    match attempt(core, &id, &pending, form.get("code"), recovery, old_session).await? {
        Attempt::Passed { held, session } => {
            let mut res = held.into_response();
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
                &id,
                recovery,
                &pending,
                Some(error),
                None,
                StatusCode::UNAUTHORIZED,
            )
            .await
        }
        Attempt::Locked { retry_after } => Ok(locked(core, retry_after)),
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
pub async fn cancel(core: &Core, req: Request<Incoming>) -> StoreResult<Response<Body>> {
    let form = match read_form(req).await {
        Ok(f) => f,
        Err(e) => return Ok(form_error(core, e)),
    };
    if let Some((id, p)) = pending(core, &form.parts.headers).await?
        && token_matches(form.get("csrf"), &p.csrf)
    {
        core.store.take_login(&id).await?;
        tracing::info!(target: "audit", event = "challenge_cancelled", user = p.user);
    }
    let mut res = pages::redirect(&core.config.app.login_page);
    let names = &core.sessions.names;
    res.headers_mut()
        .append(header::SET_COOKIE, names.clear(names.pending));
    // The app's session was never handed over; nothing else to undo.
    Ok(res)
}
