//! Watching the app's own login. The POST is buffered (bounded) to read the account name, then
//! forwarded unchanged. If the app accepts the password, its answer is held back: the user
//! proves a second factor first (or enrolls, under the "required" policy).

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;

use crate::body::Body;
use crate::challenge::email;
use crate::config::AddressSource;
use crate::config::Enforcement;
use crate::forms::{FormError, read_body};
use crate::login::parked::{PARK_LIMIT, Parked};
use crate::mail::MailKind;
use crate::mail::address::EmailAddress;
use crate::pages;
use crate::secrets::random_token;
use crate::session::cookie;
use crate::state::Core;
use crate::store::{MethodKind, PendingLogin, Store, StoreError};
use crate::upstream::{ConnInfo, Upstream};

/// Login posts larger than this are refused (413) rather than buffered.
pub const LOGIN_BODY_LIMIT: usize = 64 * 1024;

pub async fn watch_login(
    core: &Core,
    upstream: &Upstream,
    req: Request<Incoming>,
    conn: &ConnInfo,
) -> Result<Response<Body>, StoreError> {
    let wants_html = pages::wants_html(req.headers());
    let (mut parts, body) = req.into_parts();
    let body = match read_body(&parts, body, LOGIN_BODY_LIMIT).await {
        Ok(b) => b,
        Err(FormError::TooLarge) => {
            return Ok(pages::error(
                &core.brand,
                StatusCode::PAYLOAD_TOO_LARGE,
                wants_html,
            ));
        }
        Err(_) => {
            return Ok(pages::error(
                &core.brand,
                StatusCode::BAD_REQUEST,
                wants_html,
            ));
        }
    };
    // The account name is read exactly the way every app would read it, or the login is refused:
    // if the proxy and the app could disagree about who logs in, the wrong user gets challenged.
    // With `user_header` the app names the user itself and the body is not read for it.
    let (json, typed_user) = if core.config.app.user_header.is_some() {
        (login_body_kind(&parts.headers) == Ok(BodyKind::Json), None)
    } else {
        let json = match login_body_kind(&parts.headers) {
            Ok(kind) => kind == BodyKind::Json,
            Err(status) => return Ok(pages::error(&core.brand, status, wants_html)),
        };
        let field = &core.config.app.username_field;
        // Some frameworks read the query string before the body (Servlet, Flask).
        let query = parts.uri.query().unwrap_or("");
        let in_query = form_urlencoded::parse(query.as_bytes()).any(|(k, _)| same_field(&k, field));
        match username_from_body(&body, json, field) {
            Ok(user) if !in_query => (json, user),
            _ => {
                return Ok(pages::error(
                    &core.brand,
                    StatusCode::BAD_REQUEST,
                    wants_html,
                ));
            }
        }
    };
    let old_session = cookie::find(&parts.headers, core.sessions.names.session).map(str::to_owned);
    core.prepare_upstream_headers(&mut parts.headers, None);

    let res = match upstream
        .forward(Request::from_parts(parts, Body::from(body)), conn)
        .await
    {
        Ok(res) => res,
        Err(e) => return Ok(pages::error(&core.brand, e.status(), wants_html)),
    };
    let app = &core.config.app;
    let accepted = app.success_status.contains(&res.status().as_u16())
        && res
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .any(|v| cookie::sets_cookie(v, &app.success_cookie));
    if !accepted {
        return Ok(res);
    }

    let (mut head, body) = res.into_parts();
    // The app's own word on who logged in wins over what was typed; it never reaches the browser.
    let named = app
        .user_header
        .as_deref()
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
        return Ok(pages::error(
            &core.brand,
            StatusCode::BAD_GATEWAY,
            wants_html,
        ));
    };
    let body = match http_body_util::Limited::new(body, PARK_LIMIT)
        .collect_bytes()
        .await
    {
        Some(b) => b,
        None => {
            tracing::error!(
                user,
                "the app's login answer is too large or broke off; login refused"
            );
            return Ok(pages::error(
                &core.brand,
                StatusCode::BAD_GATEWAY,
                wants_html,
            ));
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
    let parked = Parked::new(head.status, &head.headers, &body);

    // Whatever session the browser brought is over: a login never inherits an old id.
    if let Some(old) = &old_session {
        core.sessions.end(old).await?;
    }

    let record = core.store.two_factor(&user).await?;
    if let Some(record) = record {
        let id = random_token();
        let pending = PendingLogin {
            user: user.clone(),
            created: core.clock.now(),
            parked: parked.seal(&core.sealer, &user),
            csrf: random_token(),
            json,
            email: header_email.clone(),
        };
        let ttl = core.config.twofactor.challenge_ttl;
        core.store.park_login(&id, &pending, ttl).await?;
        let method = match record.method {
            MethodKind::Totp => "totp",
            MethodKind::Email => "email",
        };
        tracing::info!(target: "audit", event = "challenge_issued", user, method);
        if let (MethodKind::Email, Some(address)) = (record.method, &record.email) {
            // A failed send is shown on the challenge page, which offers to try again.
            email::send_code(
                core,
                &email::login_key(&id),
                &user,
                address,
                MailKind::LoginCode,
            )
            .await?;
        }
        let names = &core.sessions.names;
        let mut res = if json {
            pages::json(
                StatusCode::UNAUTHORIZED,
                &serde_json::json!({
                    "error": "second_factor_required",
                    "method": method,
                    "challenge": format!("{}/api/v1/challenge", core.prefix()),
                }),
            )
        } else {
            pages::redirect(&format!("{}/challenge", core.prefix()))
        };
        let h = res.headers_mut();
        h.append(
            header::SET_COOKIE,
            names.set(names.pending, &id, Some(ttl.as_secs())),
        );
        if old_session.is_some() {
            h.append(header::SET_COOKIE, core.sessions.clear_cookie());
        }
        return Ok(res);
    }

    match core.config.twofactor.enforcement {
        Enforcement::Optional => {
            let session = core
                .sessions
                .create(
                    &user,
                    false,
                    None,
                    header_email.clone(),
                    core.app_cookie_of(&parked),
                )
                .await?;
            tracing::info!(target: "audit", event = "login_without_second_factor", user);
            let mut res = parked.into_response();
            res.headers_mut()
                .append(header::SET_COOKIE, core.sessions.set_cookie(&session.id));
            Ok(res)
        }
        Enforcement::Required => {
            let sealed = parked.seal(&core.sealer, &user);
            let session = core
                .sessions
                .create(&user, true, Some(sealed), header_email.clone(), None)
                .await?;
            tracing::info!(target: "audit", event = "enrollment_required", user);
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
            Ok(res)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    Form,
    Json,
}

/// Only plain, unencoded urlencoded forms and JSON are read; anything else (multipart, a
/// compressed body, an unknown type) could hide a second account name from the proxy.
fn login_body_kind(headers: &http::HeaderMap) -> Result<BodyKind, StatusCode> {
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
    let content_type = content_type
        .to_str()
        .map_err(|_| StatusCode::UNSUPPORTED_MEDIA_TYPE)?
        .to_ascii_lowercase();
    let mut params = content_type.split(';').map(str::trim);
    let media = params.next().unwrap_or("");
    // A charset the app would decode differently (say, EBCDIC) could hide another name.
    for param in params {
        if let Some(charset) = param.strip_prefix("charset=")
            && !matches!(charset.trim_matches('"'), "utf-8" | "us-ascii")
        {
            return Err(StatusCode::UNSUPPORTED_MEDIA_TYPE);
        }
    }
    match Some(media) {
        Some("application/x-www-form-urlencoded") => Ok(BodyKind::Form),
        Some("application/json") => Ok(BodyKind::Json),
        _ => Err(StatusCode::UNSUPPORTED_MEDIA_TYPE),
    }
}

/// Whether a form key is, for some framework, the field `field`: letter case, PHP's mangling
/// (leading spaces dropped, cut at NUL, `.` and space read as `_`) and `field[...]` arrays.
fn same_field(key: &str, field: &str) -> bool {
    let key = key.trim_start_matches(' ');
    let key = key.split('\0').next().unwrap_or(key);
    let key = key.split('[').next().unwrap_or(key);
    let fold = |c: char| match c {
        '.' | ' ' => '_',
        c => c.to_ascii_lowercase(),
    };
    key.chars().map(fold).eq(field.chars().map(fold))
}

/// The top-level members of a JSON object, duplicates kept (serde_json's map keeps only one).
struct Members(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for Members {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Members;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Members, A::Error> {
                let mut members = Vec::new();
                while let Some(entry) = map.next_entry::<String, serde_json::Value>()? {
                    members.push(entry);
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// The account-name field of a form or top-level JSON object. `Err` when it is ambiguous: sent
/// twice, in another letter case (some frameworks bind case-insensitively), as a PHP/Rails-style
/// array, or not a string. `Ok(None)` when absent.
fn username_from_body(body: &Bytes, json: bool, field: &str) -> Result<Option<String>, ()> {
    let candidates: Vec<Option<String>> = if json {
        let Members(members) = serde_json::from_slice(body).map_err(|_| ())?;
        // Non-ASCII keys are refused: some decoders fold Unicode case (Go: `ſ` is `s`).
        if members.iter().any(|(k, _)| !k.is_ascii()) {
            return Err(());
        }
        members
            .into_iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(field))
            .map(|(_, v)| v.as_str().map(str::to_owned))
            .collect()
    } else {
        form_urlencoded::parse(body)
            .filter(|(k, _)| same_field(k, field))
            .map(|(k, v)| (k.as_ref() == field).then(|| v.into_owned()))
            .collect()
    };
    match candidates.as_slice() {
        [] => Ok(None),
        [Some(name)] => Ok(Some(name.clone())),
        _ => Err(()),
    }
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
    fn usernames_from_forms_and_json() {
        let name = |body: &'static [u8], json| {
            username_from_body(&Bytes::from_static(body), json, "username")
        };
        assert_eq!(
            name(b"username=Alice%40example.com&password=x", false),
            Ok(Some("Alice@example.com".into()))
        );
        assert_eq!(
            name(br#"{"username":"bob","password":"x"}"#, true),
            Ok(Some("bob".into()))
        );
        assert_eq!(name(br#"{"email":"bob"}"#, true), Ok(None));
        assert_eq!(name(b"password=x", false), Ok(None));
    }

    /// Bodies where the proxy and some app could read different account names are refused.
    #[test]
    fn ambiguous_account_names_are_refused() {
        let name = |body: &'static [u8], json| {
            username_from_body(&Bytes::from_static(body), json, "username")
        };
        for form in [
            &b"username=nobody&username=alice"[..],
            b"username=alice&Username=nobody",
            b"username[]=alice&password=x",
            b"username=alice&USERNAME[0]=nobody",
            b"username=mallory&username%00x=alice",
            b"username=mallory&+username=alice",
        ] {
            assert_eq!(
                name(form, false),
                Err(()),
                "{}",
                String::from_utf8_lossy(form)
            );
        }
        for json in [
            &br#"{"username":"nobody","username":"alice"}"#[..],
            br#"{"username":"alice","UserName":"nobody"}"#,
            br#"{"username":["a","b"]}"#,
            br#"{"username":1}"#,
            br#"["username","alice"]"#,
            "{\"username\":\"mallory\",\"u\u{17f}ername\":\"alice\"}".as_bytes(),
        ] {
            assert_eq!(
                name(json, true),
                Err(()),
                "{}",
                String::from_utf8_lossy(json)
            );
        }
    }

    #[test]
    fn only_plain_forms_and_json_are_read() {
        let kind = |ct: &'static str, ce: Option<&'static str>| {
            let mut h = http::HeaderMap::new();
            h.insert(header::CONTENT_TYPE, http::HeaderValue::from_static(ct));
            if let Some(ce) = ce {
                h.insert(header::CONTENT_ENCODING, http::HeaderValue::from_static(ce));
            }
            login_body_kind(&h)
        };
        assert_eq!(
            kind("application/x-www-form-urlencoded; charset=UTF-8", None),
            Ok(BodyKind::Form)
        );
        assert_eq!(kind("Application/JSON", None), Ok(BodyKind::Json));
        assert_eq!(
            kind("application/json", Some("identity")),
            Ok(BodyKind::Json)
        );
        assert!(kind("application/json", Some("gzip")).is_err());
        assert!(kind("multipart/form-data; boundary=x", None).is_err());
        assert!(kind("text/plain", None).is_err());
        assert!(kind("application/x-www-form-urlencoded; charset=ibm037", None).is_err());
        assert_eq!(
            kind("application/json; charset=utf-8", None),
            Ok(BodyKind::Json)
        );
    }
}
