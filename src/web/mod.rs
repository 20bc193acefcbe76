//! The proxy's own routes under the prefix (`/_2fa` by default): the challenge, the settings
//! pages, the JSON API and the assets. The upstream never sees these paths. One table names
//! every route with its guard; the guard loads the session or the held-back login once, and
//! every refusal is answered by [`refusal`].

pub mod api;
pub mod challenge;
pub mod forms;
pub mod pages;
pub mod refusal;
pub mod settings;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::body::Body;
use crate::session::Current;
use crate::state::Core;
use crate::store::PendingLogin;
use crate::words::Words;
use pages::Frame;
use refusal::{Refusal, Reply};

/// What a handler answers: a response, or a refusal [`refusal`] writes.
pub type Answer = Result<Response<Body>, Refusal>;

/// Routes anyone may call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Stylesheet,
    Outbox,
    Cancel,
}

/// Routes of a browser in the middle of a sign-in: the guard loads its held-back login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    Show { recovery: bool },
    Submit { recovery: bool },
    Resend,
    ApiAttempt { recovery: bool },
    ApiResend,
}

/// Routes of a signed-in user: the guard loads the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Session {
    Status,
    /// The choice of method ("Next"): on to the setup of the one chosen.
    Choose,
    TotpSetup,
    TotpConfirm,
    EmailSetup,
    EmailPost,
    SendCode,
    Disable,
    NewCodes,
    DownloadCodes,
    Continue,
    ApiStatus,
    Api(api::Action),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Guarded {
    Open(Open),
    Pending(Pending),
    Session(Session),
}

struct Route {
    method: Method,
    /// After the prefix.
    path: &'static str,
    handler: Guarded,
}

const fn route(method: Method, path: &'static str, handler: Guarded) -> Route {
    Route {
        method,
        path,
        handler,
    }
}

use Guarded::{Open as O, Pending as P, Session as S};

/// Every own route. A path not here (or here with another method) is 404.
const ROUTES: &[Route] = &[
    route(Method::GET, "/assets/style.css", O(Open::Stylesheet)),
    route(Method::HEAD, "/assets/style.css", O(Open::Stylesheet)),
    route(Method::GET, "/outbox", O(Open::Outbox)),
    route(Method::POST, "/challenge/cancel", O(Open::Cancel)),
    route(
        Method::GET,
        "/challenge",
        P(Pending::Show { recovery: false }),
    ),
    route(
        Method::POST,
        "/challenge",
        P(Pending::Submit { recovery: false }),
    ),
    route(
        Method::GET,
        "/challenge/recovery",
        P(Pending::Show { recovery: true }),
    ),
    route(
        Method::POST,
        "/challenge/recovery",
        P(Pending::Submit { recovery: true }),
    ),
    route(Method::POST, "/challenge/resend", P(Pending::Resend)),
    route(Method::GET, "/settings", S(Session::Status)),
    route(Method::GET, "/settings/enable", S(Session::Choose)),
    route(Method::GET, "/settings/totp", S(Session::TotpSetup)),
    route(Method::POST, "/settings/totp", S(Session::TotpConfirm)),
    route(Method::GET, "/settings/email", S(Session::EmailSetup)),
    route(Method::POST, "/settings/email", S(Session::EmailPost)),
    route(Method::POST, "/settings/send-code", S(Session::SendCode)),
    route(Method::POST, "/settings/disable", S(Session::Disable)),
    route(
        Method::POST,
        "/settings/recovery-codes",
        S(Session::NewCodes),
    ),
    route(
        Method::POST,
        "/settings/recovery-codes.txt",
        S(Session::DownloadCodes),
    ),
    route(Method::GET, "/settings/continue", S(Session::Continue)),
    route(
        Method::POST,
        "/api/v1/challenge",
        P(Pending::ApiAttempt { recovery: false }),
    ),
    route(
        Method::POST,
        "/api/v1/challenge/recovery",
        P(Pending::ApiAttempt { recovery: true }),
    ),
    route(
        Method::POST,
        "/api/v1/challenge/resend",
        P(Pending::ApiResend),
    ),
    route(Method::GET, "/api/v1/status", S(Session::ApiStatus)),
    route(
        Method::POST,
        "/api/v1/totp/setup",
        S(Session::Api(api::Action::TotpSetup)),
    ),
    route(
        Method::POST,
        "/api/v1/totp/confirm",
        S(Session::Api(api::Action::TotpConfirm)),
    ),
    route(
        Method::POST,
        "/api/v1/email/setup",
        S(Session::Api(api::Action::EmailSetup)),
    ),
    route(
        Method::POST,
        "/api/v1/email/confirm",
        S(Session::Api(api::Action::EmailConfirm)),
    ),
    route(
        Method::POST,
        "/api/v1/disable",
        S(Session::Api(api::Action::Disable)),
    ),
    route(
        Method::POST,
        "/api/v1/recovery-codes",
        S(Session::Api(api::Action::NewCodes)),
    ),
];

const API: &str = "/api/v1";

/// Answers a request for an own path (`path` starts with the prefix).
pub async fn handle(core: &Core, req: Request<Incoming>, path: &str) -> Response<Body> {
    let rest = &path[core.prefix().len()..];
    let api = rest.starts_with(API);
    let w = core.words(req.headers());
    // Pages are for browsers; the API always answers JSON.
    let reply = if api { Reply::Json(w) } else { Reply::Html(w) };
    let mut res = dispatch(core, w, req, rest, api)
        .await
        .unwrap_or_else(|refusal| refusal.respond(core, reply));
    pages::vary_language(&mut res, core.config.ui.language);
    res
}

/// The route `rest` names, behind its guard.
async fn dispatch(
    core: &Core,
    w: &'static Words,
    req: Request<Incoming>,
    rest: &str,
    api: bool,
) -> Answer {
    let Some(route) = ROUTES
        .iter()
        .find(|r| r.path == rest && r.method == req.method())
    else {
        return Ok(not_found(core, w, &req, api));
    };
    match route.handler {
        Guarded::Open(open) => open_route(core, w, req, open).await,
        Guarded::Pending(action) => match challenge::pending(core, req.headers()).await {
            Ok(Some((id, p))) => pending_route(core, w, req, action, id, p).await,
            Ok(None) if api => Ok(api::challenge_expired(core, w)),
            Ok(None) => Ok(challenge::expired(core, w)),
            Err(e) => Err(e.into()),
        },
        Guarded::Session(action) => match core.sessions.load(req.headers()).await {
            Ok(Some(session)) => session_route(core, w, req, action, session).await,
            Ok(None) if api => Ok(api::sign_in_first(w)),
            Ok(None) => Ok(settings::sign_in_first(core)),
            Err(e) => Err(e.into()),
        },
    }
}

fn not_found(core: &Core, w: &'static Words, req: &Request<Incoming>, api: bool) -> Response<Body> {
    if api {
        return pages::json_error(StatusCode::NOT_FOUND, "not_found", w.api_not_found);
    }
    pages::error(
        &Frame::new(core, w, ""),
        StatusCode::NOT_FOUND,
        pages::wants_html(req.headers()),
    )
}

async fn open_route(core: &Core, w: &'static Words, req: Request<Incoming>, open: Open) -> Answer {
    match open {
        Open::Stylesheet => Ok(pages::stylesheet()),
        Open::Cancel => challenge::cancel(core, req).await,
        // Only the demo's `log` transport has an outbox.
        Open::Outbox => Ok(match core.mailer.outbox() {
            Some(outbox) => pages::page(
                StatusCode::OK,
                &pages::OutboxPage {
                    frame: Frame::new(core, w, ""),
                    mails: outbox.mails(),
                },
            ),
            None => not_found(core, w, &req, false),
        }),
    }
}

async fn pending_route(
    core: &Core,
    w: &'static Words,
    req: Request<Incoming>,
    action: Pending,
    id: String,
    pending: PendingLogin,
) -> Answer {
    let v = challenge::View {
        core,
        w,
        id: &id,
        pending: &pending,
    };
    match action {
        Pending::Show { recovery } => challenge::show(v, recovery).await,
        Pending::Submit { recovery } => challenge::submit(v, req, recovery).await,
        Pending::Resend => challenge::resend(v, req).await,
        Pending::ApiAttempt { recovery } => api::challenge(v, req, recovery).await,
        Pending::ApiResend => api::resend(v, req).await,
    }
}

async fn session_route(
    core: &Core,
    w: &'static Words,
    req: Request<Incoming>,
    action: Session,
    session: Current,
) -> Answer {
    let s = &session;
    // The settings pages, in the request's words.
    let v = settings::View {
        core,
        w,
        session: s,
    };
    match action {
        Session::Status => settings::status(v, &req).await,
        Session::Choose => Ok(settings::choose(v, &req)),
        Session::TotpSetup => settings::setup(v).await,
        Session::TotpConfirm => settings::confirm(v, req).await,
        Session::EmailSetup => settings::email_setup(v, &req).await,
        Session::EmailPost => settings::email_post(v, req).await,
        Session::SendCode => settings::send_change_code(v, req).await,
        Session::Disable => settings::disable(v, req).await,
        Session::NewCodes => settings::regenerate_codes(v, req).await,
        Session::DownloadCodes => settings::download_codes(v, req).await,
        Session::Continue => settings::continue_to_app(v).await,
        Session::ApiStatus => api::status(core, s).await,
        Session::Api(a) => api::session_action(core, w, req, s, a).await,
    }
}
