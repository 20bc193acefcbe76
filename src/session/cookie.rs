//! The only place the proxy's cookies are built or read. `__Host-` names (Secure, Path=/, no
//! Domain) unless `insecure_http_cookies` is on for plain-http development.

use cookie::{Cookie, SameSite};
use http::{HeaderMap, HeaderValue, header};

#[derive(Debug, Clone)]
pub struct CookieNames {
    pub session: &'static str,
    pub pending: &'static str,
    secure: bool,
}

impl CookieNames {
    pub fn new(insecure_http_cookies: bool) -> Self {
        if insecure_http_cookies {
            Self {
                session: "twofa-session",
                pending: "twofa-pending",
                secure: false,
            }
        } else {
            Self {
                session: "__Host-twofa-session",
                pending: "__Host-twofa-pending",
                secure: true,
            }
        }
    }

    /// `Set-Cookie` for one of our cookies, living `max_age` seconds (session cookie if None).
    pub fn set(&self, name: &'static str, value: &str, max_age: Option<u64>) -> HeaderValue {
        let mut c = Cookie::build((name, value.to_owned()))
            .path("/")
            .http_only(true)
            .secure(self.secure)
            .same_site(SameSite::Lax);
        if let Some(secs) = max_age {
            c = c.max_age(cookie::time::Duration::seconds(
                secs.min(i64::MAX as u64) as i64
            ));
        }
        header_value(&c.build().to_string())
    }

    /// `Set-Cookie` that removes one of our cookies from the browser.
    pub fn clear(&self, name: &'static str) -> HeaderValue {
        let c = Cookie::build((name, ""))
            .path("/")
            .http_only(true)
            .secure(self.secure)
            .same_site(SameSite::Lax)
            .max_age(cookie::time::Duration::ZERO);
        header_value(&c.build().to_string())
    }

    fn is_ours(&self, name: &str) -> bool {
        name == self.session || name == self.pending
    }
}

/// `Set-Cookie` that expires the app's own cookie `name` in the browser.
pub fn expire_app_cookie(name: &str) -> HeaderValue {
    header_value(&format!("{name}=; Path=/; Max-Age=0"))
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The value of cookie `name` from every `Cookie` header (HTTP/2 may split them).
pub fn find<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// Every non-empty value of cookie `name` (a request may carry the same name twice).
pub fn find_all<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(k, v)| *k == name && !v.trim().is_empty())
        .map(|(_, v)| v.trim())
        .collect()
}

/// Whether the request carries cookie `name` with a non-empty value.
pub fn has(headers: &HeaderMap, name: &str) -> bool {
    find(headers, name).is_some_and(|v| !v.is_empty())
}

/// Removes the proxy's own cookies before a request goes upstream: the app never sees our
/// session ids.
pub fn strip_ours(headers: &mut HeaderMap, names: &CookieNames) {
    let values: Vec<HeaderValue> = headers.get_all(header::COOKIE).iter().cloned().collect();
    if !values
        .iter()
        .any(|v| v.to_str().map_or(true, |s| s.contains("twofa-")))
    {
        return;
    }
    headers.remove(header::COOKIE);
    let kept: Vec<&str> = values
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .filter(|pair| pair.split_once('=').is_none_or(|(k, _)| !names.is_ours(k)))
        .collect();
    if !kept.is_empty()
        && let Ok(v) = HeaderValue::from_str(&kept.join("; "))
    {
        headers.insert(header::COOKIE, v);
    }
}

/// The value a `Set-Cookie` header sets.
pub fn cookie_value(value: &HeaderValue) -> Option<String> {
    Cookie::parse(value.to_str().ok()?)
        .ok()
        .map(|c| c.value().to_owned())
}

/// Whether a `Set-Cookie` value sets cookie `name` to something (not an expiry).
pub fn sets_cookie(value: &HeaderValue, name: &str) -> bool {
    let Ok(text) = value.to_str() else {
        return false;
    };
    let Ok(c) = Cookie::parse(text) else {
        return false;
    };
    let expired = c.max_age().is_some_and(|a| a.is_zero() || a.is_negative())
        || c.expires_datetime()
            .is_some_and(|t| t < cookie::time::OffsetDateTime::now_utc());
    c.name() == name && !c.value().is_empty() && !expired
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_prefixed_and_locked_down() {
        let names = CookieNames::new(false);
        let v = names.set(names.session, "abc", Some(60));
        let s = v.to_str().unwrap();
        assert!(s.starts_with("__Host-twofa-session=abc"), "{s}");
        for attr in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=60"] {
            assert!(s.contains(attr), "{attr} missing in {s}");
        }
        assert!(!s.contains("Domain"));
        let dev = CookieNames::new(true);
        let s = dev.set(dev.session, "abc", None);
        assert!(!s.to_str().unwrap().contains("Secure"));
        assert!(s.to_str().unwrap().starts_with("twofa-session="));
    }

    #[test]
    fn ours_are_stripped_theirs_kept() {
        let names = CookieNames::new(false);
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; __Host-twofa-session=s"),
        );
        h.append(
            header::COOKIE,
            HeaderValue::from_static("__Host-twofa-pending=p; session=app"),
        );
        assert_eq!(find(&h, "__Host-twofa-pending"), Some("p"));
        strip_ours(&mut h, &names);
        assert_eq!(h.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(h[header::COOKIE], "a=1; session=app");
        let mut only_ours = HeaderMap::new();
        only_ours.insert(
            header::COOKIE,
            HeaderValue::from_static("__Host-twofa-session=s"),
        );
        strip_ours(&mut only_ours, &names);
        assert!(!only_ours.contains_key(header::COOKIE));
    }

    #[test]
    fn detects_the_app_setting_its_cookie() {
        let v = |s: &'static str| HeaderValue::from_static(s);
        assert!(sets_cookie(&v("session=abc; Path=/; HttpOnly"), "session"));
        assert!(!sets_cookie(&v("session=; Path=/; Max-Age=0"), "session"));
        assert!(!sets_cookie(&v("session=abc; Max-Age=0"), "session"));
        assert!(!sets_cookie(&v("other=abc"), "session"));
        assert!(!sets_cookie(
            &v("session=x; Expires=Thu, 01 Jan 1970 00:00:00 GMT"),
            "session"
        ));
    }
}
