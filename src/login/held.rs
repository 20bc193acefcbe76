//! The app's answer to an accepted login, held back (sealed, in the store) until the second
//! factor is proven, then replayed to the browser as if it had just arrived.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde::{Deserialize, Serialize};

use crate::body::Body;
use crate::secrets::Sealer;

/// What is held back: status, end-to-end headers and a small body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeldAnswer {
    status: u16,
    /// Header name and base64 of the value bytes.
    headers: Vec<(String, String)>,
    /// Base64 of the body.
    body: String,
}

/// Login answers are small; anything bigger than this is not held back (the login fails closed).
pub const HELD_LIMIT: usize = 256 * 1024;

/// The sealing purpose keeps its first name: answers sealed before the rename still open.
const PURPOSE: &str = "parked-login";

impl HeldAnswer {
    pub fn new(status: StatusCode, headers: &http::HeaderMap, body: &Bytes) -> Self {
        let headers = headers
            .iter()
            // Framing is recomputed on replay.
            .filter(|(k, _)| *k != header::CONTENT_LENGTH && *k != header::TRANSFER_ENCODING)
            .map(|(k, v)| (k.as_str().to_owned(), STANDARD.encode(v.as_bytes())))
            .collect();
        Self {
            status: status.as_u16(),
            headers,
            body: STANDARD.encode(body),
        }
    }

    pub fn seal(&self, sealer: &Sealer, user: &str) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        sealer.seal(PURPOSE, user, &json)
    }

    pub fn open(sealer: &Sealer, user: &str, sealed: &str) -> Option<Self> {
        serde_json::from_slice(&sealer.open(PURPOSE, user, sealed)?).ok()
    }

    fn header_values(&self, name: &str) -> impl Iterator<Item = HeaderValue> + '_ {
        let name = name.to_owned();
        self.headers
            .iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(&name))
            .filter_map(|(_, v)| STANDARD.decode(v).ok())
            .filter_map(|v| HeaderValue::from_bytes(&v).ok())
    }

    /// Where the app sent the browser (its `Location`), if anywhere.
    pub fn location(&self) -> Option<String> {
        self.header_values("location")
            .next()
            .and_then(|v| v.to_str().ok().map(str::to_owned))
    }

    /// The value the app gives cookie `name` here, if it sets it.
    /// (The last one that sets it, as browsers keep; deletions such as PHP's
    /// `name=deleted; expires=1970` do not count.)
    pub fn cookie_value(&self, name: &str) -> Option<String> {
        self.set_cookies()
            .iter()
            .filter(|v| crate::session::cookie::sets_cookie(v, name))
            .filter_map(crate::session::cookie::cookie_value)
            .next_back()
    }

    /// The app's cookies (its session), to hand over now.
    pub fn set_cookies(&self) -> Vec<HeaderValue> {
        self.header_values("set-cookie").collect()
    }

    /// The answer as the app gave it.
    pub fn into_response(self) -> Response<Body> {
        let mut res = Response::new(Body::from(Bytes::from(
            STANDARD.decode(&self.body).unwrap_or_default(),
        )));
        *res.status_mut() = StatusCode::from_u16(self.status).unwrap_or(StatusCode::OK);
        for (k, v) in &self.headers {
            if let (Ok(name), Some(value)) = (
                http::HeaderName::try_from(k.as_str()),
                STANDARD
                    .decode(v)
                    .ok()
                    .and_then(|b| HeaderValue::from_bytes(&b).ok()),
            ) {
                res.headers_mut().append(name, value);
            }
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_through_the_sealer() {
        let mut h = http::HeaderMap::new();
        h.insert(header::LOCATION, HeaderValue::from_static("/dashboard"));
        h.append(
            header::SET_COOKIE,
            HeaderValue::from_static("session=abc; Path=/"),
        );
        h.append(header::SET_COOKIE, HeaderValue::from_static("theme=dark"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("2"));
        let p = HeldAnswer::new(StatusCode::SEE_OTHER, &h, &Bytes::from_static(b"ok"));
        let sealer = Sealer::random();
        let sealed = p.seal(&sealer, "alice");
        assert!(!sealed.contains("session=abc"));
        assert!(HeldAnswer::open(&sealer, "bob", &sealed).is_none());
        let back = HeldAnswer::open(&sealer, "alice", &sealed).unwrap();
        assert_eq!(back.location().as_deref(), Some("/dashboard"));
        assert_eq!(back.set_cookies().len(), 2);
        let res = back.into_response();
        assert_eq!(res.status(), 303);
        assert!(!res.headers().contains_key(header::CONTENT_LENGTH));
    }
}
