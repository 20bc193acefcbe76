//! Watching the app's own login. The POST is buffered (bounded) to read the account name, then
//! forwarded unchanged. If the app accepts the password, its answer is held back: the user
//! proves a second factor first (or enrolls, under the "required" policy).

use bytes::Bytes;
use http::{Request, StatusCode, header};
use hyper::body::Incoming;

use crate::auth::sign_in::{self, Accepted, AfterPassword};
use crate::body::Body;
use crate::config::AddressSource;
use crate::listener::ConnInfo;
use crate::login::credentials;
use crate::login::held::{HELD_LIMIT, HeldAnswer};
use crate::login::media::{self, Charset, LoginMedia};
use crate::login::success::{self, Verdict};
use crate::mail::address::EmailAddress;
use crate::session::cookie;
use crate::state::Core;
use crate::upstream::{Upstream, headers};
use crate::web::Answer;
use crate::web::forms::read_body;
use crate::web::pages;
use crate::web::refusal::Refusal;

/// Login posts larger than this are refused (413) rather than buffered.
pub const LOGIN_BODY_LIMIT: usize = 64 * 1024;

pub async fn watch_login(
    core: &Core,
    upstream: &Upstream,
    req: Request<Incoming>,
    conn: &ConnInfo,
) -> Answer {
    let refuse = |status| Err(Refusal::Status(status));
    let (mut parts, body) = req.into_parts();
    let query = parts.uri.query().unwrap_or("").to_owned();
    // Every method is watched here, so a request posing as another one can only confuse.
    if credentials::overrides_method(&parts.headers, &query) {
        return refuse(StatusCode::BAD_REQUEST);
    }
    let had_body = !http_body::Body::is_end_stream(&body);
    let timeout = core.config.app.login_body_timeout;
    let body = read_body(&parts, body, LOGIN_BODY_LIMIT, timeout).await?;
    // The account name is read exactly the way every app would read it, or the login is refused:
    // if the proxy and the app could disagree about who logs in, the wrong user gets challenged.
    let kind = if had_body || !body.is_empty() {
        match login_body_kind(&parts.headers) {
            Ok(kind) => Some(kind),
            Err(status) => return refuse(status),
        }
    } else {
        None
    };
    let json = kind.is_some_and(|(media, _)| media == LoginMedia::Json);
    let field = &core.config.app.username_field;
    let typed = match credentials::account_name(
        &query,
        kind.map(|(media, charset)| (&body[..], media, charset)),
        field,
    ) {
        Ok(name) => name,
        Err(credentials::Ambiguous) => return refuse(StatusCode::BAD_REQUEST),
    };
    // Anything that could log someone in, by the field the proxy knows or by any other (an
    // `email` field, HTTP Basic): a body, credentials in a header, a method other than GET or
    // HEAD, or a query with more than the return address.
    let next_param = &core.config.app.next_param;
    let credentials = typed.is_some()
        || !body.is_empty()
        || parts.headers.contains_key(header::AUTHORIZATION)
        || !matches!(parts.method, http::Method::GET | http::Method::HEAD)
        || form_urlencoded::parse(query.as_bytes()).any(|(k, _)| k != next_param.as_str());
    // A name that cannot key one account (non-ASCII without Unicode mode, separators, controls)
    // never reaches the app. With `user_header` the app names the user itself.
    let typed_user = match (&core.config.app.user_header, typed) {
        (Some(_), _) | (None, None) => None,
        (None, Some(raw)) => match core.canonical_user(&raw) {
            Some(user) => Some(user),
            None => return refuse(StatusCode::BAD_REQUEST),
        },
    };
    let old_session = cookie::find(&parts.headers, core.sessions.names.session).map(str::to_owned);
    if credentials {
        // Apps that keep their session id across logins (PHP without session_regenerate_id,
        // express-session without regenerate) make the app session this request carries the
        // new user's: every proxy session vouching for it ends first, and so does the one the
        // browser brought. A spelling of the app cookie the proxy cannot pin is refused.
        let carried = cookie::app_cookies(&parts.headers, &core.config.app.success_cookie);
        if carried.ambiguous {
            return refuse(StatusCode::BAD_REQUEST);
        }
        // Every reading an app may give the value (quotes dropped, percent-decoded).
        let hashes: Vec<String> = carried
            .values
            .iter()
            .flat_map(|v| cookie::value_readings(v))
            .flat_map(|v| core.bindings.candidates(&v))
            .collect();
        let mut ended = 0;
        for hash in &hashes {
            ended += core.sessions.end_bound_to(hash).await?;
        }
        if let Some(old) = &old_session {
            core.sessions.end(old).await?;
            ended += 1;
        }
        // Other replicas may hold an ended session in their cache for `cache_ttl`: the login
        // waits that out before the app can make the app session someone else's. Requests
        // this process is still forwarding on it are let finish first.
        if ended > 0 {
            tokio::time::sleep(core.sessions.cache_ttl()).await;
        }
        for hash in &hashes {
            if !core.bindings.quiet(hash, timeout).await {
                return Err(Refusal::Busy { retry_after: 5 });
            }
        }
    }
    let client = headers::client_addr(
        &core.config.server.trusted_proxies,
        &parts.headers,
        conn.peer.ip(),
    )
    .to_string();
    let language = core.config.ui.language.for_request(&parts.headers);
    headers::prepare(
        &mut parts.headers,
        &core.sessions.names,
        &core.config.app.identity_header,
        None,
    );
    let request_path = parts.uri.path().to_owned();

    let res = match upstream
        .forward(Request::from_parts(parts, Body::from(body)), conn)
        .await
    {
        Ok(res) => res,
        Err(e) => return Err(e.into()),
    };
    match success::judge(
        &core.success_rules,
        &core.rules,
        &request_path,
        res.status(),
        res.headers(),
    ) {
        Verdict::Accepted => {}
        // The app's own refusal (a wrong password, often with a cookie of its own): nothing is
        // started, sent or counted. Without `user_header` a refusal cannot be told from a
        // success that redirects to a login page (`next=/login`) or answers with an unlisted
        // status, so a session cookie set in answer to credentials is withheld (a flash message
        // in it is lost); with `user_header` the app's word settles it.
        Verdict::NotAccepted => {
            let mut res = res;
            if let Some(h) = &core.config.app.user_header {
                res.headers_mut().remove(h.as_str());
            } else if credentials
                && cookie::withhold(res.headers_mut(), &core.config.app.success_cookie)
            {
                tracing::info!(
                    "a login answer that was not a success set the app's cookie; withheld"
                );
            }
            return Ok(res);
        }
        Verdict::Unclear => {
            tracing::error!(
                "the app's login answer redirects somewhere that cannot be read; login refused"
            );
            return refuse(StatusCode::BAD_GATEWAY);
        }
    }
    let app = &core.config.app;
    let (mut head, body) = res.into_parts();
    // The app's own word on who logged in wins over what was typed; it never reaches the browser.
    let named = app
        .user_header
        .as_ref()
        .and_then(|h| head.headers.remove(h));
    let raw_user = match app.user_header {
        // Configured: the app's word or nothing (a missing header must not fall back to the body).
        Some(_) => named
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        None => typed_user,
    };
    let Some(user) = raw_user.as_deref().and_then(|u| core.canonical_user(u)) else {
        // The app let someone in and we cannot tell who: never hand over its session.
        tracing::error!("the app accepted a login but no account name was found; login refused");
        return refuse(StatusCode::BAD_GATEWAY);
    };
    let body = match http_body_util::Limited::new(body, HELD_LIMIT)
        .collect_bytes()
        .await
    {
        Some(b) => b,
        None => {
            tracing::error!(
                user,
                "the app's login answer is too large or broke off; login refused"
            );
            return refuse(StatusCode::BAD_GATEWAY);
        }
    };
    // `address_source = "header:..."`: the app names the user's address in its answer.
    let header_email = match &core.config.email.address_source {
        AddressSource::Header(h) => head
            .headers
            .remove(h.as_str())
            .and_then(|v| v.to_str().ok().and_then(EmailAddress::parse))
            .map(|a| a.as_str().to_owned()),
        _ => None,
    };
    let held = HeldAnswer::new(head.status, &head.headers, &body);

    // Whatever session the browser brought is over: a login never inherits an old id.
    if let Some(old) = &old_session {
        core.sessions.end(old).await?;
    }

    let accepted = Accepted {
        user: &user,
        answer: &held,
        json,
        email: header_email,
        client: &client,
        language,
    };
    let names = &core.sessions.names;
    Ok(match sign_in::after_password(core, accepted).await? {
        AfterPassword::Challenge { id, factor } => {
            let mut res = if json {
                pages::json(
                    StatusCode::UNAUTHORIZED,
                    &serde_json::json!({
                        "error": "second_factor_required",
                        "method": factor.as_str(),
                        "challenge": format!("{}/api/v1/challenge", core.prefix()),
                    }),
                )
            } else {
                pages::redirect(&format!("{}/challenge", core.prefix()))
            };
            let ttl = core.config.twofactor.challenge_ttl;
            let h = res.headers_mut();
            h.append(
                header::SET_COOKIE,
                names.set(names.pending, &id, Some(ttl.as_secs())),
            );
            if old_session.is_some() {
                h.append(header::SET_COOKIE, core.sessions.clear_cookie());
            }
            res
        }
        AfterPassword::Capped { retry_after } => {
            return Err(Refusal::Throttled { retry_after });
        }
        AfterPassword::SignedIn(session) => {
            let mut res = held.into_response();
            res.headers_mut()
                .append(header::SET_COOKIE, core.sessions.set_cookie(&session.id));
            res
        }
        AfterPassword::MustEnroll(session) => {
            let mut res = if json {
                pages::json(
                    StatusCode::UNAUTHORIZED,
                    &serde_json::json!({
                        "error": "enrollment_required",
                        "settings": format!("{}/api/v1/status", core.prefix()),
                    }),
                )
            } else {
                pages::redirect(&format!("{}/settings", core.prefix()))
            };
            res.headers_mut()
                .append(header::SET_COOKIE, core.sessions.set_cookie(&session.id));
            res
        }
    })
}

/// Only plain, unencoded urlencoded forms and JSON are read; anything else (multipart, a
/// compressed body, an unknown type, a charset an app could decode differently) could hide a
/// second account name from the proxy.
fn login_body_kind(headers: &http::HeaderMap) -> Result<(LoginMedia, Charset), StatusCode> {
    let encoded = headers.get_all(header::CONTENT_ENCODING).iter().any(|v| {
        !v.to_str()
            .is_ok_and(|v| v.trim().eq_ignore_ascii_case("identity"))
    });
    if encoded {
        return Err(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
    let mut types = headers.get_all(header::CONTENT_TYPE).iter();
    let (Some(content_type), None) = (types.next(), types.next()) else {
        return Err(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    };
    media::login_media(content_type.as_bytes()).map_err(|_| StatusCode::UNSUPPORTED_MEDIA_TYPE)
}

/// Collecting a limited body into bytes, `None` if it exceeds the limit or breaks.
trait CollectBytes {
    async fn collect_bytes(self) -> Option<Bytes>;
}

impl<B> CollectBytes for http_body_util::Limited<B>
where
    B: http_body::Body + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    async fn collect_bytes(self) -> Option<Bytes> {
        use http_body_util::BodyExt as _;
        self.collect().await.ok().map(|c| c.to_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_forms_and_json_are_read() {
        let kind = |ct: &[&'static str], ce: Option<&'static str>| {
            let mut h = http::HeaderMap::new();
            for ct in ct {
                h.append(header::CONTENT_TYPE, http::HeaderValue::from_static(ct));
            }
            if let Some(ce) = ce {
                h.insert(header::CONTENT_ENCODING, http::HeaderValue::from_static(ce));
            }
            login_body_kind(&h).map(|(media, _)| media)
        };
        let form = "application/x-www-form-urlencoded; charset=UTF-8";
        assert_eq!(kind(&[form], None), Ok(LoginMedia::Form));
        assert_eq!(kind(&["Application/JSON"], None), Ok(LoginMedia::Json));
        assert_eq!(
            kind(&["application/json"], Some("identity")),
            Ok(LoginMedia::Json)
        );
        assert!(kind(&["application/json"], Some("gzip")).is_err());
        assert!(kind(&[form, form], None).is_err(), "two types");
        assert!(kind(&[], None).is_err());
        assert!(kind(&["multipart/form-data; boundary=x"], None).is_err());
        assert!(
            kind(
                &["application/x-www-form-urlencoded; charset =ibm037"],
                None
            )
            .is_err()
        );
    }
}
