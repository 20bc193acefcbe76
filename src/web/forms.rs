//! Reading the proxy's own form and JSON posts: bounded, one value per field, same-origin.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, Request, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::body::BodyRead;

/// Our forms are tiny; anything bigger is not one of them.
pub const FORM_LIMIT: usize = 16 * 1024;

/// How long a client may take to send one of our forms (a stalled body would otherwise hold
/// its stream, and on HTTP/2 its connection, for ever).
pub const FORM_READ_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormError {
    TooLarge,
    Malformed,
    /// A field sent twice (e.g. several codes in one request).
    Repeated,
    CrossOrigin,
    /// The body did not arrive in time.
    TimedOut,
}

pub struct Form {
    pub parts: Parts,
    fields: HashMap<String, String>,
}

impl Form {
    pub fn get(&self, name: &str) -> &str {
        self.fields.get(name).map_or("", String::as_str)
    }
}

/// The whole request body, up to `limit` bytes within `timeout`; a success is reported to the
/// request's [`BodyRead`] (the connection may then park).
pub async fn read_body(
    parts: &Parts,
    body: Incoming,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, FormError> {
    let Ok(collected) = tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await
    else {
        return Err(FormError::TimedOut);
    };
    match collected {
        Ok(c) => {
            if let Some(read) = parts.extensions.get::<BodyRead>() {
                read.notify();
            }
            Ok(c.to_bytes())
        }
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(FormError::TooLarge)
        }
        Err(_) => Err(FormError::Malformed),
    }
}

/// A same-origin `application/x-www-form-urlencoded` post, parsed.
pub async fn read_form(req: Request<Incoming>) -> Result<Form, FormError> {
    let (parts, body) = req.into_parts();
    if !same_origin(&parts.headers, &parts.uri) {
        return Err(FormError::CrossOrigin);
    }
    let bytes = read_body(&parts, body, FORM_LIMIT, FORM_READ_TIMEOUT).await?;
    let mut fields = HashMap::new();
    for (k, v) in form_urlencoded::parse(&bytes) {
        if fields.insert(k.into_owned(), v.into_owned()).is_some() {
            return Err(FormError::Repeated);
        }
    }
    Ok(Form { parts, fields })
}

/// A same-origin JSON post whose body is an object of string fields.
pub async fn read_json(
    req: Request<Incoming>,
) -> Result<(Parts, serde_json::Map<String, serde_json::Value>), FormError> {
    let (parts, body) = req.into_parts();
    if !same_origin(&parts.headers, &parts.uri) {
        return Err(FormError::CrossOrigin);
    }
    let is_json = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"));
    if !is_json {
        return Err(FormError::Malformed);
    }
    let bytes = read_body(&parts, body, FORM_LIMIT, FORM_READ_TIMEOUT).await?;
    match serde_json::from_slice(&bytes) {
        Ok(serde_json::Value::Object(map)) => Ok((parts, map)),
        _ => Err(FormError::Malformed),
    }
}

/// Browsers say where a request came from; refuse anything that says "another site".
/// (CSRF tokens do the real work; this closes the gap for clients that lose them.)
pub fn same_origin(headers: &HeaderMap, uri: &http::Uri) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return false;
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    // HTTP/2 carries the host in `:authority`, not a Host header.
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .unwrap_or("");
    let origin_host = origin.split_once("://").map_or("", |(_, rest)| rest);
    !host.is_empty() && origin_host.eq_ignore_ascii_case(host)
}

pub use crate::secrets::token_matches;

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn same_origin_h(headers: &HeaderMap) -> bool {
        same_origin(headers, &http::Uri::from_static("/"))
    }

    #[test]
    fn http2_authority_counts_as_the_host() {
        let mut h = HeaderMap::new();
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://app.example"),
        );
        assert!(same_origin(
            &h,
            &http::Uri::from_static("https://app.example/_2fa/challenge")
        ));
        assert!(!same_origin(
            &h,
            &http::Uri::from_static("https://evil.example/x")
        ));
    }

    #[test]
    fn origins() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, HeaderValue::from_static(v));
            }
            m
        };
        assert!(same_origin_h(&h(&[("host", "app.example")])));
        assert!(same_origin_h(&h(&[
            ("host", "app.example"),
            ("origin", "https://app.example")
        ])));
        assert!(!same_origin_h(&h(&[
            ("host", "app.example"),
            ("origin", "https://evil.example")
        ])));
        assert!(!same_origin_h(&h(&[
            ("host", "app.example"),
            ("origin", "null")
        ])));
        assert!(!same_origin_h(&h(&[
            ("host", "app.example"),
            ("sec-fetch-site", "cross-site")
        ])));
        assert!(same_origin_h(&h(&[
            ("host", "app.example"),
            ("sec-fetch-site", "same-origin")
        ])));
    }

    #[test]
    fn tokens() {
        assert!(token_matches("abc", "abc"));
        assert!(!token_matches("abd", "abc"));
        assert!(!token_matches("", ""));
    }
}
