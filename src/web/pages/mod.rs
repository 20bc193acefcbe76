//! HTML the proxy serves itself: branded pages rendered from compiled templates, and their CSS.
//! All user-facing words live in this module so they can be translated later.

use askama::Template;
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use crate::body::Body;

/// The stylesheet served at `<prefix>/assets/style.css`.
pub const STYLE_CSS: &str = include_str!("style.css");

/// Security headers on every page the proxy renders: no framing, no inline script, no caching.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; \
                       base-uri 'none'; frame-ancestors 'none'";

/// What every page needs to draw its frame.
#[derive(Debug, Clone)]
pub struct Brand {
    pub app_name: String,
    /// URL prefix of the stylesheet, e.g. `/_2fa/assets`.
    pub assets: String,
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    app_name: &'a str,
    assets: &'a str,
    heading: &'a str,
    message: String,
    retry: Option<&'a str>,
    status: u16,
}

/// A rendered page, sent with the proxy's security headers (CSP, no framing, no caching).
pub fn page<T: Template>(status: StatusCode, template: &T) -> Response<Body> {
    match template.render() {
        Ok(html) => html_response(status, html),
        Err(e) => {
            tracing::error!(error = %e, "page did not render");
            respond(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain; charset=utf-8",
                Body::from("internal error"),
            )
        }
    }
}

/// JSON with the API's headers (never cached: answers may carry codes or secrets).
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut res = respond(status, "application/json", Body::from(value.to_string()));
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// 303 See Other to a path of ours or the app's.
pub fn redirect(location: &str) -> Response<Body> {
    let mut res = Response::new(Body::empty());
    *res.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// The challenge: a code from the authenticator app, or (`recovery`) a recovery code.
#[derive(Template)]
#[template(path = "challenge.html")]
pub struct ChallengePage<'a> {
    pub app_name: &'a str,
    pub assets: &'a str,
    pub prefix: &'a str,
    pub user: &'a str,
    pub csrf: &'a str,
    pub error: Option<String>,
    pub notice: Option<String>,
    pub recovery: bool,
    /// Email method: the masked address the code went to.
    pub email: Option<String>,
    pub digits: u8,
    pub minutes: u64,
    /// Seconds until a new code may be asked for.
    pub resend_wait: u64,
}

#[derive(Template)]
#[template(path = "notice.html")]
pub struct NoticePage<'a> {
    pub app_name: &'a str,
    pub assets: &'a str,
    pub heading: &'a str,
    pub message: String,
    pub link: Option<(String, &'a str)>,
}

#[derive(Template)]
#[template(path = "settings.html")]
pub struct SettingsPage<'a> {
    pub app_name: &'a str,
    pub assets: &'a str,
    pub prefix: &'a str,
    pub user: &'a str,
    pub csrf: &'a str,
    pub enabled: bool,
    /// The email method's address, masked, when that is the method.
    pub email_to: Option<String>,
    pub email_offered: bool,
    pub recovery_left: u32,
    pub can_disable: bool,
    pub notice: Option<&'a str>,
    pub error: Option<String>,
    pub back: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "totp_setup.html")]
pub struct TotpSetupPage<'a> {
    pub app_name: &'a str,
    pub assets: &'a str,
    pub prefix: &'a str,
    pub user: &'a str,
    pub issuer: &'a str,
    pub csrf: &'a str,
    pub qr_svg: String,
    pub key_grouped: String,
    pub needs_current: bool,
    /// The current method is email: offer to send the code the change needs.
    pub current_is_email: bool,
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "email_setup.html")]
pub struct EmailSetupPage<'a> {
    pub app_name: &'a str,
    pub assets: &'a str,
    pub prefix: &'a str,
    pub csrf: &'a str,
    /// The user types the address (`address_source = "input"`).
    pub ask_address: bool,
    /// The address codes will go to, masked, when it is not typed.
    pub known: Option<String>,
    /// Set once a code went out: the masked address.
    pub sent_to: Option<String>,
    pub needs_current: bool,
    pub digits: u8,
    pub minutes: u64,
    pub notice: Option<String>,
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "outbox.html")]
pub struct OutboxPage<'a> {
    pub app_name: &'a str,
    pub assets: &'a str,
    pub mails: Vec<crate::mail::Mail>,
}

#[derive(Template)]
#[template(path = "recovery_codes.html")]
pub struct RecoveryCodesPage<'a> {
    pub app_name: &'a str,
    pub assets: &'a str,
    pub prefix: &'a str,
    pub csrf: &'a str,
    pub codes: Vec<String>,
    pub codes_joined: String,
    pub continue_href: String,
    pub notice: Option<&'a str>,
}

/// "Try again in 4 minutes."
pub fn retry_words(seconds: u64) -> String {
    match seconds {
        0..=59 => "Try again in a minute.".to_owned(),
        60..=119 => "Try again in 2 minutes.".to_owned(),
        s => format!("Try again in {} minutes.", s.div_ceil(60)),
    }
}

/// The words after a wrong code.
pub fn wrong_code_words(tries_left: u32) -> String {
    match tries_left {
        1 => "That code did not work. Check the time on your phone and try again. 1 try left before your account is locked for a while.".to_owned(),
        n if n <= 5 => format!("That code did not work. Check the time on your phone and try again. {n} tries left."),
        _ => "That code did not work. Check the time on your phone and try again.".to_owned(),
    }
}

/// `{"error": "<code>", "message": "..."}`, the JSON form of every refusal.
pub fn json_error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "error": code, "message": message }).to_string();
    respond(status, "application/json", body.into())
}

/// The explanation of an error status, for JSON answers.
pub fn error_message(status: StatusCode, app: &str) -> String {
    error_words(status, app).1
}

/// The page after too many wrong codes.
pub fn locked_page(core: &crate::state::Core, retry_after: u64) -> Response<Body> {
    page(
        StatusCode::TOO_MANY_REQUESTS,
        &NoticePage {
            app_name: &core.brand.app_name,
            assets: &core.brand.assets,
            heading: "Too many wrong codes",
            message: format!(
                "To protect your account, sign-in is paused after several wrong codes. {}",
                retry_words(retry_after)
            ),
            link: None,
        },
    )
}

/// The words for an error status: heading, explanation, and when to retry.
fn error_words(status: StatusCode, app: &str) -> (&'static str, String, Option<&'static str>) {
    match status {
        StatusCode::BAD_GATEWAY => (
            "The application is not answering",
            format!("{app} could not be reached right now."),
            Some("This is usually brief. Try again in a minute."),
        ),
        StatusCode::GATEWAY_TIMEOUT => (
            "The application took too long",
            format!("{app} did not answer in time."),
            Some("Try again in a minute. If it keeps happening, tell your administrator."),
        ),
        StatusCode::SERVICE_UNAVAILABLE => (
            "Temporarily unavailable",
            "Sign-in checks cannot be made right now, so nothing was sent on.".to_owned(),
            Some("Try again in a minute."),
        ),
        StatusCode::NOT_FOUND => (
            "Page not found",
            "There is no page at this address.".to_owned(),
            None,
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            "Request too large",
            "The request was larger than allowed.".to_owned(),
            None,
        ),
        _ if status.is_client_error() => (
            "Request not understood",
            "The request could not be handled as sent.".to_owned(),
            None,
        ),
        _ => (
            "Something went wrong",
            "The request could not be completed.".to_owned(),
            Some("Try again in a minute."),
        ),
    }
}

/// A branded error page, or a JSON error for clients that do not want HTML.
pub fn error(brand: &Brand, status: StatusCode, wants_html: bool) -> Response<Body> {
    let (heading, message, retry) = error_words(status, &brand.app_name);
    if !wants_html {
        let code = status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase()
            .replace(' ', "_");
        return json_error(status, &code, &message);
    }
    let page = ErrorPage {
        app_name: &brand.app_name,
        assets: &brand.assets,
        heading,
        message,
        retry,
        status: status.as_u16(),
    };
    match page.render() {
        Ok(html) => html_response(status, html),
        // Templates are compiled in; rendering fails only on a formatter error. Say it plainly.
        Err(_) => respond(status, "text/plain; charset=utf-8", Body::from(heading)),
    }
}

pub fn html_response(status: StatusCode, html: String) -> Response<Body> {
    let mut res = respond(status, "text/html; charset=utf-8", html.into());
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    res
}

pub fn stylesheet() -> Response<Body> {
    let mut res = respond(
        StatusCode::OK,
        "text/css; charset=utf-8",
        Body::from(Bytes::from_static(STYLE_CSS.as_bytes())),
    );
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    res
}

fn respond(status: StatusCode, content_type: &'static str, body: Body) -> Response<Body> {
    let mut res = Response::new(body);
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    res
}

/// Whether the client would rather read a page than JSON (browsers send `text/html` first).
pub fn wants_html(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/html"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn brand() -> Brand {
        Brand {
            app_name: "Acme <Books>".into(),
            assets: "/_2fa/assets".into(),
        }
    }

    async fn text(res: Response<Body>) -> String {
        String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn error_pages_are_branded_escaped_and_framed() {
        let res = error(&brand(), StatusCode::BAD_GATEWAY, true);
        assert_eq!(res.status(), 502);
        assert!(
            res.headers()[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .contains("frame-ancestors 'none'")
        );
        let html = text(res).await;
        assert!(
            html.contains("Acme &#60;Books&#62;") || html.contains("Acme &lt;Books&gt;"),
            "{html}"
        );
        assert!(!html.contains("<Books>"));
        assert!(html.contains("Try again in a minute"));
        assert!(!html.contains("<script"));
    }

    #[tokio::test]
    async fn api_clients_get_json() {
        let res = error(&brand(), StatusCode::GATEWAY_TIMEOUT, false);
        let v: serde_json::Value = serde_json::from_str(&text(res).await).unwrap();
        assert_eq!(v["error"], "gateway_timeout");
    }
}
