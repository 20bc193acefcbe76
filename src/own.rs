//! The proxy's own routes under the prefix (`/_2fa` by default): the challenge, the settings
//! pages and their assets. The upstream never sees these paths.

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::body::Body;
use crate::challenge::flow;
use crate::enrollment;
use crate::pages;
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
        return crate::api::handle(core, req, api).await;
    }
    match (&method, rest) {
        (&Method::GET | &Method::HEAD, "/assets/style.css") => return Ok(pages::stylesheet()),
        (&Method::GET, "/challenge") => return flow::show(core, &req, false).await,
        (&Method::POST, "/challenge") => return flow::submit(core, req, false).await,
        (&Method::GET, "/challenge/recovery") => return flow::show(core, &req, true).await,
        (&Method::POST, "/challenge/recovery") => return flow::submit(core, req, true).await,
        (&Method::POST, "/challenge/cancel") => return flow::cancel(core, req).await,
        (&Method::POST, "/challenge/resend") => return flow::resend(core, req).await,
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
        return Ok(enrollment::sign_in_first(core));
    };
    match (&method, rest) {
        (&Method::GET, "/settings") => enrollment::status(core, &session, &req).await,
        (&Method::GET, "/settings/totp") => enrollment::setup(core, &session).await,
        (&Method::POST, "/settings/totp") => enrollment::confirm(core, &session, req).await,
        (&Method::POST, "/settings/disable") => enrollment::disable(core, &session, req).await,
        (&Method::POST, "/settings/recovery-codes") => {
            enrollment::regenerate_codes(core, &session, req).await
        }
        (&Method::POST, "/settings/recovery-codes.txt") => {
            enrollment::download_codes(core, &session, req).await
        }
        (&Method::GET, "/settings/email") => enrollment::email_setup(core, &session, &req).await,
        (&Method::POST, "/settings/email") => enrollment::email_post(core, &session, req).await,
        (&Method::POST, "/settings/send-code") => {
            enrollment::send_change_code(core, &session, req).await
        }
        (&Method::GET, "/settings/continue") => enrollment::continue_to_app(core, &session).await,
        _ => Ok(pages::error(&core.brand, StatusCode::NOT_FOUND, true)),
    }
}
