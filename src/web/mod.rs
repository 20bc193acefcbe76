//! The proxy's own routes under the prefix (`/_2fa` by default): the challenge, the settings
//! pages and their assets. The upstream never sees these paths.

pub mod api;
pub mod challenge;
pub mod forms;
pub mod pages;
pub mod settings;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::body::Body;
use crate::state::Core;
use crate::store::StoreResult;

pub async fn handle(
    core: &Core,
    req: Request<Incoming>,
    path: &str,
) -> StoreResult<Response<Body>> {
    let rest = &path[core.prefix().len()..];
    let method = req.method().clone();
    if let Some(api) = rest.strip_prefix("/api/v1") {
        return crate::web::api::handle(core, req, api).await;
    }
    match (&method, rest) {
        (&Method::GET | &Method::HEAD, "/assets/style.css") => return Ok(pages::stylesheet()),
        (&Method::GET, "/challenge") => return challenge::show(core, &req, false).await,
        (&Method::POST, "/challenge") => return challenge::submit(core, req, false).await,
        (&Method::GET, "/challenge/recovery") => return challenge::show(core, &req, true).await,
        (&Method::POST, "/challenge/recovery") => return challenge::submit(core, req, true).await,
        (&Method::POST, "/challenge/cancel") => return challenge::cancel(core, req).await,
        (&Method::POST, "/challenge/resend") => return challenge::resend(core, req).await,
        (&Method::GET, "/outbox") => {
            // Only the demo's `log` transport has an outbox.
            if let Some(outbox) = core.mailer.outbox() {
                let page = pages::OutboxPage {
                    app_name: &core.brand.app_name,
                    assets: &core.brand.assets,
                    mails: outbox.mails(),
                };
                return Ok(pages::page(StatusCode::OK, &page));
            }
        }
        _ => {}
    }
    let settings = matches!(
        (&method, rest),
        (
            &Method::GET,
            "/settings" | "/settings/totp" | "/settings/email" | "/settings/continue"
        ) | (
            &Method::POST,
            "/settings/totp"
                | "/settings/email"
                | "/settings/send-code"
                | "/settings/disable"
                | "/settings/recovery-codes"
                | "/settings/recovery-codes.txt"
        )
    );
    if !settings {
        return Ok(pages::error(
            &core.brand,
            StatusCode::NOT_FOUND,
            pages::wants_html(req.headers()),
        ));
    }
    let Some(session) = core.sessions.load(req.headers()).await? else {
        return Ok(settings::sign_in_first(core));
    };
    match (&method, rest) {
        (&Method::GET, "/settings") => settings::status(core, &session, &req).await,
        (&Method::GET, "/settings/totp") => settings::setup(core, &session).await,
        (&Method::POST, "/settings/totp") => settings::confirm(core, &session, req).await,
        (&Method::POST, "/settings/disable") => settings::disable(core, &session, req).await,
        (&Method::POST, "/settings/recovery-codes") => {
            settings::regenerate_codes(core, &session, req).await
        }
        (&Method::POST, "/settings/recovery-codes.txt") => {
            settings::download_codes(core, &session, req).await
        }
        (&Method::GET, "/settings/email") => settings::email_setup(core, &session, &req).await,
        (&Method::POST, "/settings/email") => settings::email_post(core, &session, req).await,
        (&Method::POST, "/settings/send-code") => {
            settings::send_change_code(core, &session, req).await
        }
        (&Method::GET, "/settings/continue") => settings::continue_to_app(core, &session).await,
        _ => Ok(pages::error(&core.brand, StatusCode::NOT_FOUND, true)),
    }
}
