//! HTML the proxy serves itself: branded pages rendered from compiled templates, and their CSS.
//! Their words come from [`crate::words`]; the templates only place them.

use askama::Template;
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use crate::body::Body;
use crate::state::Core;
use crate::words::{LanguageSetting, Trouble, Words};

/// The stylesheet served at `<prefix>/assets/style.css`.
pub const STYLE_CSS: &str = include_str!("style.css");

/// Security headers on every page the proxy renders: no framing, no inline script, no caching.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; \
                       base-uri 'none'; frame-ancestors 'none'";

/// What every page needs to draw its frame: the app's name, where the stylesheet is, the prefix
/// for links and forms, the form token, and the request's words. Built once per page by
/// [`Frame::new`]; every template reads it as `frame`.
#[derive(Clone, Copy)]
pub struct Frame<'a> {
    pub app_name: &'a str,
    /// URL prefix of the stylesheet, e.g. `/_2fa/assets`.
    pub assets: &'a str,
    pub prefix: &'a str,
    /// The CSRF token the page's forms echo (empty on pages without forms).
    pub csrf: &'a str,
    pub w: &'static Words,
}

impl<'a> Frame<'a> {
    pub fn new(core: &'a Core, w: &'static Words, csrf: &'a str) -> Self {
        Frame {
            app_name: &core.brand.app_name,
            assets: &core.brand.assets,
            prefix: core.prefix(),
            csrf,
            w,
        }
    }
}

/// The app name and the stylesheet's place, fixed at start.
#[derive(Debug, Clone)]
pub struct Brand {
    pub app_name: String,
    /// URL prefix of the stylesheet, e.g. `/_2fa/assets`.
    pub assets: String,
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    frame: Frame<'a>,
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

/// Which code the challenge asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    App,
    /// The masked address the code went to.
    Email,
    Recovery,
}

/// The challenge: a code from the authenticator app or the email, or a recovery code.
#[derive(Template)]
#[template(path = "challenge.html")]
pub struct ChallengePage<'a> {
    pub frame: Frame<'a>,
    pub asked: Asked,
    /// What the page says first: which code, for whom, where it went.
    pub lead: String,
    pub error: Option<String>,
    pub notice: Option<String>,
    /// The user's method is email (the recovery page links back to it).
    pub by_email: bool,
    /// Seconds until a new code may be asked for.
    pub resend_wait: u64,
}

#[derive(Template)]
#[template(path = "notice.html")]
pub struct NoticePage<'a> {
    pub frame: Frame<'a>,
    pub heading: &'a str,
    pub message: String,
    pub link: Option<(String, &'a str)>,
}

/// What the settings page says about the user's second factor.
pub enum FactorState {
    App,
    /// The email method, with its address masked.
    Email(String),
    Off,
}

#[derive(Template)]
#[template(path = "settings.html")]
pub struct SettingsPage<'a> {
    pub frame: Frame<'a>,
    pub user: &'a str,
    pub state: FactorState,
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
    pub frame: Frame<'a>,
    pub user: &'a str,
    pub issuer: &'a str,
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
    pub frame: Frame<'a>,
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
    pub frame: Frame<'a>,
    pub mails: Vec<crate::mail::Mail>,
}

#[derive(Template)]
#[template(path = "recovery_codes.html")]
pub struct RecoveryCodesPage<'a> {
    pub frame: Frame<'a>,
    pub codes: Vec<String>,
    pub codes_joined: String,
    pub continue_href: String,
    pub notice: Option<&'a str>,
}

/// `{"error": "<code>", "message": "..."}`, the JSON form of every refusal.
pub fn json_error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "error": code, "message": message }).to_string();
    let mut res = respond(status, "application/json", body.into());
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// Marks an answer whose words followed `Accept-Language` (`[ui] language = "auto"`), so no
/// cache hands one reader's language to another.
pub fn vary_language(res: &mut Response<Body>, setting: LanguageSetting) {
    if setting == LanguageSetting::Auto {
        res.headers_mut()
            .append(header::VARY, HeaderValue::from_static("accept-language"));
    }
}

/// The explanation of an error status, for JSON answers.
pub fn error_message(status: StatusCode, w: &Words, app: &str) -> String {
    (w.trouble)(trouble(status), app).message
}

/// The page after too many wrong codes.
pub fn locked_page(frame: &Frame<'_>, retry_after: u64) -> Response<Body> {
    page(
        StatusCode::TOO_MANY_REQUESTS,
        &NoticePage {
            frame: *frame,
            heading: frame.w.locked_heading,
            message: (frame.w.locked)(retry_after),
            link: None,
        },
    )
}

/// What an error status means to the user.
fn trouble(status: StatusCode) -> Trouble {
    match status {
        StatusCode::BAD_GATEWAY => Trouble::AppUnreachable,
        StatusCode::GATEWAY_TIMEOUT => Trouble::AppTooSlow,
        StatusCode::SERVICE_UNAVAILABLE => Trouble::ChecksUnavailable,
        StatusCode::NOT_FOUND => Trouble::NotFound,
        StatusCode::PAYLOAD_TOO_LARGE => Trouble::TooLarge,
        _ if status.is_client_error() => Trouble::NotUnderstood,
        _ => Trouble::Failed,
    }
}

/// A branded error page, or a JSON error for clients that do not want HTML.
pub fn error(frame: &Frame<'_>, status: StatusCode, wants_html: bool) -> Response<Body> {
    let words = (frame.w.trouble)(trouble(status), frame.app_name);
    if !wants_html {
        let code = status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase()
            .replace(' ', "_");
        return json_error(status, &code, &words.message);
    }
    let page = ErrorPage {
        frame: *frame,
        heading: words.heading,
        message: words.message,
        retry: words.retry,
        status: status.as_u16(),
    };
    match page.render() {
        Ok(html) => html_response(status, html),
        // Templates are compiled in; rendering fails only on a formatter error. Say it plainly.
        Err(_) => respond(
            status,
            "text/plain; charset=utf-8",
            Body::from(words.heading),
        ),
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
    use crate::words::Language;
    use http_body_util::BodyExt;

    fn frame(l: Language) -> Frame<'static> {
        Frame {
            app_name: "Acme <Books>",
            assets: "/_2fa/assets",
            prefix: "/_2fa",
            csrf: "tok",
            w: l.words(),
        }
    }

    async fn text(res: Response<Body>) -> String {
        String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn error_pages_are_branded_escaped_and_framed() {
        let res = error(&frame(Language::English), StatusCode::BAD_GATEWAY, true);
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
        let res = error(&frame(Language::German), StatusCode::GATEWAY_TIMEOUT, false);
        let v: serde_json::Value = serde_json::from_str(&text(res).await).unwrap();
        // The code is for programs and never changes; the message is for people.
        assert_eq!(v["error"], "gateway_timeout");
        assert_eq!(
            v["message"],
            "Acme <Books> hat nicht rechtzeitig geantwortet."
        );
    }

    /// Every page the proxy draws, in one language, with sample values.
    fn every_page(l: Language) -> Vec<String> {
        let f = frame(l);
        let w = f.w;
        let challenge = |asked, lead: String| ChallengePage {
            frame: f,
            asked,
            lead,
            error: Some((w.wrong_code)(2)),
            notice: Some((w.new_code_sent)("a•••@example.com")),
            by_email: asked == Asked::Email,
            resend_wait: 30,
        };
        let settings = |state| SettingsPage {
            frame: f,
            user: "ann",
            state,
            email_offered: true,
            recovery_left: 9,
            can_disable: true,
            notice: Some(w.done_enabled),
            error: Some((w.code_failed)(1)),
            back: Some("/account"),
        };
        let email_setup = |sent_to: Option<String>| EmailSetupPage {
            frame: f,
            ask_address: true,
            known: None,
            sent_to,
            needs_current: true,
            digits: 6,
            minutes: 10,
            notice: None,
            error: Some(w.address_invalid.to_owned()),
        };
        let mut pages = [
            challenge(Asked::App, (w.challenge_app)("Acme", "ann")),
            challenge(
                Asked::Email,
                (w.challenge_email)(6, "a•••@example.com", "Acme", "ann", 10),
            ),
            challenge(Asked::Recovery, (w.challenge_recovery)("Acme", "ann")),
        ]
        .iter()
        .map(|p| p.render().unwrap())
        .collect::<Vec<_>>();
        for state in [
            FactorState::Off,
            FactorState::App,
            FactorState::Email("a•••@example.com".into()),
        ] {
            pages.push(settings(state).render().unwrap());
        }
        let mut no_disable = settings(FactorState::App);
        no_disable.can_disable = false;
        pages.push(no_disable.render().unwrap());
        pages.push(
            TotpSetupPage {
                frame: f,
                user: "ann",
                issuer: "Acme",
                qr_svg: "<svg></svg>".into(),
                key_grouped: "ABCD EFGH".into(),
                needs_current: true,
                current_is_email: true,
                error: Some(w.setup_wrong_code.to_owned()),
            }
            .render()
            .unwrap(),
        );
        pages.push(email_setup(None).render().unwrap());
        pages.push(
            email_setup(Some("a•••@example.com".into()))
                .render()
                .unwrap(),
        );
        pages.push(
            RecoveryCodesPage {
                frame: f,
                codes: vec!["aaaa-bbbb".into()],
                codes_joined: "aaaa-bbbb".into(),
                continue_href: "/_2fa/settings".into(),
                notice: Some(w.codes_replaced),
            }
            .render()
            .unwrap(),
        );
        pages.push(
            NoticePage {
                frame: f,
                heading: w.locked_heading,
                message: (w.locked)(240),
                link: Some(("/login".into(), w.go_to_sign_in)),
            }
            .render()
            .unwrap(),
        );
        pages.push(
            OutboxPage {
                frame: f,
                mails: Vec::new(),
            }
            .render()
            .unwrap(),
        );
        for status in [502u16, 503, 504, 404, 413, 400, 500] {
            let status = StatusCode::from_u16(status).unwrap();
            let words = (w.trouble)(trouble(status), f.app_name);
            pages.push(
                ErrorPage {
                    frame: f,
                    heading: words.heading,
                    message: words.message,
                    retry: words.retry,
                    status: status.as_u16(),
                }
                .render()
                .unwrap(),
            );
        }
        pages
    }

    /// What a reader sees of a page: its text and the words in its attributes.
    fn visible(html: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = html;
        while let Some(close) = rest.find('>') {
            let tag = &rest[..close];
            for attr in [
                "aria-label=\"",
                "value=\"",
                "title=\"",
                "placeholder=\"",
                "alt=\"",
            ] {
                if let Some(at) = tag.find(attr) {
                    let v = &tag[at + attr.len()..];
                    out.push(v[..v.find('"').unwrap_or(v.len())].to_owned());
                }
            }
            rest = &rest[close + 1..];
            let text = &rest[..rest.find('<').unwrap_or(rest.len())];
            out.push(text.trim().to_owned());
        }
        out.retain(|t| t.chars().any(char::is_alphabetic));
        out
    }

    /// Every template's words come from the catalogue: each page drawn in another language
    /// shows none of the English page's text chunks, except the sample values themselves. A
    /// sentence typed into a template shows up in both. (Handlers' own strings are checked end to
    /// end in tests/it/language.rs.)
    #[test]
    fn every_page_speaks_only_its_language() {
        let data = [
            "Acme &#60;Books&#62; ·",
            "Acme &#60;Books&#62;",
            "Acme &lt;Books&gt;",
            "ABCD EFGH",
            "aaaa-bbbb",
            "tok",
            "totp",
            "email",
            "verify",
            "send",
            "totp",
        ];
        let english = every_page(Language::English);
        for other in Language::ALL.into_iter().skip(1) {
            let pages = every_page(other);
            assert_eq!(pages.len(), english.len());
            for (en, page) in english.iter().zip(&pages) {
                assert!(page.contains(&format!("<html lang=\"{}\">", other.tag())));
                let theirs = visible(page);
                for text in visible(en) {
                    if data.contains(&text.as_str()) {
                        continue;
                    }
                    assert!(
                        !theirs.contains(&text),
                        "{other:?} page shows the English {text:?}:\n{page}"
                    );
                }
            }
        }
    }

    /// The seed's own words, where its guide puts them.
    #[test]
    fn english_uses_the_seed_words() {
        let pages = every_page(Language::English).join("\n");
        for words in [
            "Two Factor Authentication",
            "Enable Two-Factor Authentication",
            "Method 1 (Recommended): Setup using Authentication App",
            "Method 2: Setup using Email",
            ">Next<",
            ">Verify<",
        ] {
            assert!(pages.contains(words), "{words:?} is missing");
        }
        assert!(!pages.to_lowercase().contains("two-step"));
    }
}
