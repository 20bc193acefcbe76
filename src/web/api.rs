//! `/_2fa/api/v1/...`: the settings and challenge actions as JSON, for single-page apps and
//! automation. Posts must be `application/json` and same-origin; errors are
//! `{"error": "<code>", "message": "..."}` with a 4xx status; lockouts are 429 with Retry-After.

use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use serde_json::{Value, json};

use crate::auth::challenge::{self as rules, Attempt};
use crate::auth::email::Sent;
use crate::auth::enrollment::{self, Change, Enabled};
use crate::auth::totp;
use crate::body::Body;
use crate::session::{Current, cookie};
use crate::state::Core;
use crate::web::challenge::View;
use crate::web::forms::read_json;
use crate::web::pages;
use crate::web::{Answer, refusal::Refusal};
use crate::words::Words;

fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    pages::json(status, &json!({ "error": code, "message": message }))
}

fn wrong(w: &Words, tries_left: u32) -> Response<Body> {
    pages::json(
        StatusCode::UNAUTHORIZED,
        &json!({ "error": "invalid_code", "message": w.api_wrong_code, "tries_left": tries_left }),
    )
}

/// A string field of the JSON body (missing = empty); `None` for arrays or numbers, so a
/// request can never carry several codes.
fn field<'a>(body: &'a serde_json::Map<String, Value>, name: &str) -> Option<&'a str> {
    match body.get(name) {
        None => Some(""),
        Some(Value::String(s)) => Some(s),
        Some(_) => None,
    }
}

fn one_code_only(w: &Words) -> Response<Body> {
    error(StatusCode::BAD_REQUEST, "bad_request", w.api_one_code)
}

fn with_session_cookie(mut res: Response<Body>, core: &Core, fresh: &Current) -> Response<Body> {
    res.headers_mut()
        .append(header::SET_COOKIE, core.sessions.set_cookie(&fresh.id));
    res
}

/// The settings actions a signed-in user can post.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    TotpSetup,
    TotpConfirm,
    EmailSetup,
    EmailConfirm,
    Disable,
    NewCodes,
}

/// 401 for API calls without a session.
pub fn sign_in_first(w: &Words) -> Response<Body> {
    error(
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
        w.api_sign_in_first,
    )
}

/// 401 for challenge calls whose sign-in is gone; the pending cookie is cleared.
pub fn challenge_expired(core: &Core, w: &Words) -> Response<Body> {
    let names = &core.sessions.names;
    let mut res = error(
        StatusCode::UNAUTHORIZED,
        "challenge_expired",
        w.api_sign_in_again,
    );
    res.headers_mut()
        .append(header::SET_COOKIE, names.clear(names.pending));
    res
}

pub async fn session_action(
    core: &Core,
    w: &'static Words,
    req: Request<Incoming>,
    session: &Current,
    action: Action,
) -> Answer {
    if matches!(action, Action::EmailSetup | Action::EmailConfirm)
        && !enrollment::email_offered(core)
    {
        return Ok(error(
            StatusCode::NOT_FOUND,
            "method_unavailable",
            w.api_email_unavailable,
        ));
    }
    let (_, body) = read_json(req).await?;
    let Some(code) = field(&body, "code") else {
        return Ok(one_code_only(w));
    };
    match action {
        Action::TotpSetup => {
            let user = &session.record.user;
            let secret = enrollment::enrollment_secret(core, user).await?;
            let uri = totp::otpauth_uri(&secret, &core.config.totp.issuer, user);
            Ok(pages::json(
                StatusCode::OK,
                &json!({ "secret": totp::base32(&secret), "otpauth_uri": uri, "qr_svg": totp::qr_svg(&uri) }),
            ))
        }
        Action::TotpConfirm => {
            let Some(current) = field(&body, "current_code") else {
                return Ok(one_code_only(w));
            };
            enabled_answer(
                core,
                w,
                enrollment::enable_totp(core, session, code, current, w.language).await?,
            )
        }
        Action::EmailSetup => {
            let Some(address) = field(&body, "address") else {
                return Ok(one_code_only(w));
            };
            Ok(
                match enrollment::send_enrollment_code(core, session, address, w.language).await? {
                    Ok(sent) => sent_answer(w, sent),
                    Err(enrollment::AddressProblem::Invalid) => error(
                        StatusCode::BAD_REQUEST,
                        "invalid_address",
                        w.api_address_invalid,
                    ),
                    Err(enrollment::AddressProblem::Unknown) => {
                        error(StatusCode::CONFLICT, "no_address", w.api_address_unknown)
                    }
                },
            )
        }
        Action::EmailConfirm => {
            let Some(current) = field(&body, "current_code") else {
                return Ok(one_code_only(w));
            };
            enabled_answer(
                core,
                w,
                enrollment::enable_email(core, session, code, current, w.language).await?,
            )
        }
        Action::Disable => Ok(match enrollment::turn_off(core, session, code).await? {
            Change::Done(fresh) => with_session_cookie(
                pages::json(StatusCode::OK, &json!({ "enabled": false })),
                core,
                &fresh,
            ),
            Change::Failed { tries_left } => wrong(w, tries_left),
            Change::Locked { retry_after } => return Err(Refusal::Locked { retry_after }),
            Change::NotEnabled => error(StatusCode::CONFLICT, "not_enabled", w.api_not_enabled),
            Change::NotAllowed => error(StatusCode::FORBIDDEN, "required", w.required_here),
        }),
        Action::NewCodes => Ok(match enrollment::new_codes(core, session, code).await? {
            Change::Done((codes, fresh)) => with_session_cookie(
                pages::json(StatusCode::OK, &json!({ "recovery_codes": codes })),
                core,
                &fresh,
            ),
            Change::Failed { tries_left } => wrong(w, tries_left),
            Change::Locked { retry_after } => return Err(Refusal::Locked { retry_after }),
            Change::NotEnabled | Change::NotAllowed => {
                error(StatusCode::CONFLICT, "not_enabled", w.api_not_enabled)
            }
        }),
    }
}

/// The answer to a confirmed enrollment (either method).
fn enabled_answer(core: &Core, w: &Words, outcome: Enabled) -> Answer {
    Ok(match outcome {
        Enabled::Done { codes, fresh } => {
            let mut answer = json!({ "enabled": true, "recovery_codes": codes });
            if fresh.record.held.is_some() {
                answer["continue"] = json!(format!("{}/settings/continue", core.prefix()));
            }
            with_session_cookie(pages::json(StatusCode::OK, &answer), core, &fresh)
        }
        Enabled::Current(Change::Failed { tries_left }) => wrong(w, tries_left),
        Enabled::Current(Change::Locked { retry_after }) => {
            return Err(Refusal::Locked { retry_after });
        }
        Enabled::Current(_) => error(StatusCode::CONFLICT, "conflict", w.api_try_again),
        Enabled::Expired => error(
            StatusCode::CONFLICT,
            "enrollment_expired",
            w.api_setup_expired,
        ),
        Enabled::WrongCode => wrong(w, 0),
    })
}

/// What happened to a code email, as JSON.
fn sent_answer(w: &Words, sent: Sent) -> Response<Body> {
    match sent {
        Sent::Sent { to } => pages::json(StatusCode::OK, &json!({ "sent_to": to })),
        Sent::TooSoon { wait } => {
            let mut res = pages::json(
                StatusCode::TOO_MANY_REQUESTS,
                &json!({ "error": "too_soon", "message": (w.api_ask_again_in)(wait), "retry_after": wait }),
            );
            if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
                res.headers_mut().insert(header::RETRY_AFTER, v);
            }
            res
        }
        Sent::HourlyCap => error(
            StatusCode::TOO_MANY_REQUESTS,
            "send_limit",
            w.api_many_codes,
        ),
        Sent::Failed => error(StatusCode::BAD_GATEWAY, "send_failed", w.api_send_failed),
    }
}

pub async fn resend(v: View<'_>, req: Request<Incoming>) -> Answer {
    // Same-origin JSON only: that is what keeps another site from sending codes.
    read_json(req).await?;
    Ok(
        match rules::resend(v.core, v.id, v.pending, v.w.language).await? {
            Some(sent) => sent_answer(v.w, sent),
            None => error(
                StatusCode::BAD_REQUEST,
                "not_applicable",
                v.w.nothing_to_send,
            ),
        },
    )
}

pub async fn status(core: &Core, session: &Current) -> Answer {
    let user = &session.record.user;
    let st = enrollment::status(core, user).await?;
    let method = st.factor.map(|f| f.as_str());
    let left = st.recovery_left;
    Ok(pages::json(
        StatusCode::OK,
        &json!({
            "user": user,
            "enabled": method.is_some(),
            "method": method,
            "recovery_codes_left": left,
            "must_enroll": session.record.must_enroll,
        }),
    ))
}

pub async fn challenge(v: View<'_>, req: Request<Incoming>, recovery: bool) -> Answer {
    let View {
        core,
        w,
        id,
        pending,
    } = v;
    let (parts, body) = read_json(req).await?;
    let Some(code) = field(&body, "code") else {
        return Ok(one_code_only(w));
    };
    let names = &core.sessions.names;
    // The pending cookie is SameSite=Lax and HttpOnly, and this endpoint only takes JSON from the
    // same origin: no CSRF token needed.
    let old_session = cookie::find(&parts.headers, names.session);
    Ok(
        match rules::attempt(core, id, pending, code, recovery, old_session).await? {
            Attempt::Passed { answer, session } => {
                let redirect = answer.location().unwrap_or_else(|| "/".to_owned());
                let mut res = pages::json(StatusCode::OK, &json!({ "redirect": redirect }));
                let h = res.headers_mut();
                for c in answer.set_cookies() {
                    h.append(header::SET_COOKIE, c);
                }
                h.append(header::SET_COOKIE, core.sessions.set_cookie(&session.id));
                h.append(header::SET_COOKIE, names.clear(names.pending));
                res
            }
            Attempt::Failed { tries_left } => wrong(w, tries_left),
            Attempt::Locked { retry_after } => return Err(Refusal::Locked { retry_after }),
            Attempt::Exhausted => error(
                StatusCode::UNAUTHORIZED,
                "too_many_attempts",
                w.api_sign_in_again,
            ),
            Attempt::Expired => challenge_expired(core, w),
        },
    )
}
