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

    fn is_ours(&self, name: &[u8]) -> bool {
        name == self.session.as_bytes() || name == self.pending.as_bytes()
    }
}

/// `Set-Cookie` that expires the app's own cookie `name` in the browser.
pub fn expire_app_cookie(name: &str) -> HeaderValue {
    header_value(&format!("{name}=; Path=/; Max-Age=0"))
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The value of cookie `name` from every `Cookie` header (HTTP/2 may split them). Exact names:
/// for the proxy's own cookies, which only the proxy sets.
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

/// The app's session cookie as any app server could read it from a request.
///
/// Servers disagree on cookie names: Python, Go, Node and Tomcat trim white space around them,
/// PHP percent-decodes them and reads `.`, ` ` and `[` as `_`, ASP.NET compares them without
/// case, and legacy parsers (RFC 2109, Tomcat's legacy processor) also split at `,`. Every pair
/// whose name is the app cookie's in any of these readings is returned, so that each one has
/// to satisfy the session binding; a second pair hidden after a `,` inside a value, an app
/// cookie value with a `,`, one that is not UTF-8 or one longer than any browser stores makes
/// the request `ambiguous`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AppCookies<'a> {
    /// Every non-empty value sent under a spelling of the app cookie's name.
    pub values: Vec<&'a str>,
    /// The request spells the app cookie in a way no value check can settle: refuse it.
    pub ambiguous: bool,
}

impl AppCookies<'_> {
    /// Whether the request carries the app's cookie in any spelling.
    pub fn present(&self) -> bool {
        self.ambiguous || !self.values.is_empty()
    }
}

/// Browsers store at most 4096 bytes of name and value (RFC 6265 6.1).
pub const MAX_COOKIE_BYTES: usize = 4096;

pub fn app_cookies<'a>(headers: &'a HeaderMap, name: &str) -> AppCookies<'a> {
    let mut found = AppCookies::default();
    // Pairs whose key is a spelling of the name, and every place a lenient parser could find
    // the name: the two must agree, or the request hides a copy the binding would not check.
    let (mut keys, mut mentions) = (0, 0);
    for header in headers.get_all(header::COOKIE) {
        let bytes = header.as_bytes();
        // What browsers send (`a=1; b=2`, nothing to decode, no blank but after `;`) can only
        // name a cookie at a pair's start: the scan for hidden names is skipped (this runs on
        // every request).
        let plain = bytes.iter().enumerate().all(|(i, &b)| match b {
            b' ' => i > 0 && bytes[i - 1] == b';',
            b'%' | b'+' | b',' | b'"' | b'\t' | b'\r' | b'\n' | 0x0b | 0x0c => false,
            b => b < 0x80,
        });
        for pair in bytes.split(|&b| b == b';') {
            let (key, value) = match pair.iter().position(|&b| b == b'=') {
                Some(at) => (&pair[..at], &pair[at + 1..]),
                None => (pair, &b""[..]),
            };
            if !loose_name_eq(key, name) {
                continue;
            }
            keys += 1;
            if plain {
                mentions += 1;
            }
            match std::str::from_utf8(trim_ws(value)) {
                // A comma is no cookie-octet (RFC 6265 4.1.1); legacy parsers end the value
                // there and read what follows as another cookie.
                Ok(v) if v.len() > MAX_COOKIE_BYTES || v.contains(',') => found.ambiguous = true,
                Ok("") => {}
                Ok(v) => found.values.push(v),
                Err(_) => found.ambiguous = true,
            }
        }
        if !plain {
            mentions += mentions_of(bytes, name);
        }
    }
    if mentions != keys {
        found.ambiguous = true;
    }
    found
}

/// How often `name`, in any spelling [`loose_name_eq`] accepts, stands in a `Cookie` header
/// where some parser could take it for a cookie name: after the start, a separator (`;`, `,`),
/// white space or a byte outside ASCII (Python's `str.strip` removes U+0085 and U+00A0, Django's
/// the Unicode spaces), and followed, after such blanks, by `=`. ASP.NET Core resynchronises
/// after a malformed pair, so even `x=a session=b` names it.
fn mentions_of(header: &[u8], name: &str) -> usize {
    let decoded;
    let bytes = if header.contains(&b'%') || header.contains(&b'+') {
        decoded = form_decode(header);
        &decoded[..]
    } else {
        header
    };
    let wanted = name.as_bytes();
    let Some(first) = wanted.first().map(|&b| fold_name_byte(b)) else {
        return 0;
    };
    let blank = |b: u8| b >= 0x80 || matches!(b, b' ' | b'\t' | b'\r' | b'\n' | 0x0b | 0x0c | b'"');
    let mut count = 0;
    for (at, _) in bytes
        .iter()
        .enumerate()
        .filter(|&(_, &b)| b < 0x80 && fold_name_byte(b) == first)
    {
        let starts = at == 0 || matches!(bytes[at - 1], b';' | b',') || blank(bytes[at - 1]);
        let rest = &bytes[at..];
        let named = starts
            && rest.len() >= wanted.len()
            && rest
                .iter()
                .zip(wanted)
                .all(|(&b, &w)| b < 0x80 && fold_name_byte(b) == fold_name_byte(w));
        if named
            && rest[wanted.len()..]
                .iter()
                .find(|&&b| !blank(b))
                .is_some_and(|&b| b == b'=')
        {
            count += 1;
        }
    }
    count
}

/// The values an app may read from a cookie value as sent: as it is, without surrounding
/// double quotes (Go, Python, Node, Tomcat), and percent-decoded (Node, PHP).
pub fn value_readings(value: &str) -> Vec<String> {
    let unquoted = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    let decoded = |v: &str| {
        percent_encoding::percent_decode_str(v)
            .decode_utf8_lossy()
            .into_owned()
    };
    let mut readings = vec![value.to_owned()];
    for reading in [unquoted.to_owned(), decoded(value), decoded(unquoted)] {
        if !readings.contains(&reading) {
            readings.push(reading);
        }
    }
    readings
}

/// Cookie names compared as the most lenient server compares them (see [`AppCookies`]).
pub fn loose_name_eq(raw: &[u8], name: &str) -> bool {
    let raw = trim_ws(raw);
    let raw = raw
        .strip_prefix(b"\"")
        .and_then(|r| r.strip_suffix(b"\""))
        .unwrap_or(raw);
    let decoded;
    // PHP url-decodes names (`+` a space, before 7.4.32) and then drops leading spaces.
    let given = if raw.contains(&b'%') || raw.contains(&b'+') {
        decoded = form_decode(raw);
        trim_ws(&decoded)
    } else {
        trim_ws(raw)
    };
    given.len() == name.len()
        && given
            .iter()
            .zip(name.bytes())
            .all(|(&a, b)| fold_name_byte(a) == fold_name_byte(b))
}

fn fold_name_byte(b: u8) -> u8 {
    match b {
        // PHP reads `.`, ` ` and `[` in names as `_`.
        b'.' | b' ' | b'[' => b'_',
        b => b.to_ascii_lowercase(),
    }
}

/// `+` as a space and `%XX` escapes decoded, as PHP decodes cookie names.
fn form_decode(raw: &[u8]) -> Vec<u8> {
    let plus: Vec<u8> = raw
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    percent_encoding::percent_decode(&plus).collect()
}

/// White space any server trims around cookie names and values (Python's `str.strip` is the
/// widest: space, tab, CR, LF, VT, FF).
fn trim_ws(mut bytes: &[u8]) -> &[u8] {
    let ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n' | 0x0b | 0x0c);
    while let Some((first, rest)) = bytes.split_first()
        && ws(first)
    {
        bytes = rest;
    }
    while let Some((last, rest)) = bytes.split_last()
        && ws(last)
    {
        bytes = rest;
    }
    bytes
}

/// Readies the request's cookies for the upstream: the proxy's own cookies removed (the app
/// never sees our session ids) and HTTP/2's cookie crumbs joined into one header (RFC 9113
/// 8.2.3: some servers read only the first `Cookie` header).
pub fn strip_ours(headers: &mut HeaderMap, names: &CookieNames) {
    let mut all = headers.get_all(header::COOKIE).iter();
    let Some(first) = all.next() else {
        return;
    };
    let has_ours = |v: &HeaderValue| v.as_bytes().windows(6).any(|w| w == b"twofa-");
    if all.next().is_none() && !has_ours(first) {
        return;
    }
    let mut joined: Vec<u8> = Vec::new();
    for value in headers.get_all(header::COOKIE) {
        for pair in value.as_bytes().split(|&b| b == b';') {
            let pair = trim_ws(pair);
            let key = pair.split(|&b| b == b'=').next().unwrap_or(pair);
            if pair.is_empty() || names.is_ours(trim_ws(key)) {
                continue;
            }
            if !joined.is_empty() {
                joined.extend_from_slice(b"; ");
            }
            joined.extend_from_slice(pair);
        }
    }
    headers.remove(header::COOKIE);
    if !joined.is_empty()
        && let Ok(v) = HeaderValue::from_bytes(&joined)
    {
        headers.insert(header::COOKIE, v);
    }
}

/// Removes every `Set-Cookie` that sets cookie `name` (in any spelling a server could read as
/// it) to a value: the app's session is withheld from the browser. True if any was removed.
pub fn withhold(headers: &mut HeaderMap, name: &str) -> bool {
    let sets = |v: &HeaderValue| {
        let raw = v.as_bytes();
        let key = raw.split(|&b| b == b'=').next().unwrap_or(raw);
        loose_name_eq(key, name) && !expires(v)
    };
    if !headers.get_all(header::SET_COOKIE).iter().any(sets) {
        return false;
    }
    let kept: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter(|v| !sets(v))
        .cloned()
        .collect();
    headers.remove(header::SET_COOKIE);
    for v in kept {
        headers.append(header::SET_COOKIE, v);
    }
    true
}

/// Whether a `Set-Cookie` only removes its cookie (empty, or expired).
fn expires(value: &HeaderValue) -> bool {
    let Ok(c) = value.to_str().map(Cookie::parse) else {
        return false;
    };
    c.is_ok_and(|c| c.value().is_empty() || removes(&c))
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
    c.name() == name && !c.value().is_empty() && !removes(&c)
}

/// Whether a `Set-Cookie` removes its cookie: `Max-Age` zero or less, or, without `Max-Age`
/// (which wins, RFC 6265 5.3 step 3), an `Expires` in the past.
fn removes(c: &Cookie<'_>) -> bool {
    match c.max_age() {
        Some(age) => age.is_zero() || age.is_negative(),
        None => c
            .expires_datetime()
            .is_some_and(|t| t < cookie::time::OffsetDateTime::now_utc()),
    }
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
        // Crumbs of HTTP/2 are joined even when none of ours is among them.
        let mut crumbs = HeaderMap::new();
        crumbs.append(header::COOKIE, HeaderValue::from_static("a=1"));
        crumbs.append(header::COOKIE, HeaderValue::from_static("b=2"));
        strip_ours(&mut crumbs, &names);
        assert_eq!(crumbs.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(crumbs[header::COOKIE], "a=1; b=2");
        let mut only_ours = HeaderMap::new();
        only_ours.insert(
            header::COOKIE,
            HeaderValue::from_static("__Host-twofa-session=s"),
        );
        strip_ours(&mut only_ours, &names);
        assert!(!only_ours.contains_key(header::COOKIE));
    }

    /// Each row: Cookie headers, and what the proxy must make of cookie `session` in them.
    #[test]
    fn app_cookie_spellings_any_server_reads() {
        let read = |headers: &[&[u8]]| {
            let mut h = HeaderMap::new();
            for v in headers {
                h.append(header::COOKIE, HeaderValue::from_bytes(v).unwrap());
            }
            let found = app_cookies(&h, "session");
            let values: Vec<String> = found.values.iter().map(|v| (*v).to_owned()).collect();
            (values, found.ambiguous)
        };
        let plain = |v: &[&str]| (v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(), false);
        for (headers, want) in [
            (&[&b"session=a"[..]][..], plain(&["a"])),
            (&[b"x=1; session=a; y=2"], plain(&["a"])),
            (&[b"session =a"], plain(&["a"])),
            (&[b" session\t= a "], plain(&["a"])),
            (&[b"SESSION=a"], plain(&["a"])),
            (&[b"Session=a; session=b"], plain(&["a", "b"])),
            (&[b"sess%69on=a"], plain(&["a"])),
            (&[b"\"session\"=a"], plain(&["a"])),
            (&[b"x=1", b"session=b"], plain(&["b"])),
            (&[b"x=\xff; session=a"], plain(&["a"])),
            (&[b"session="], plain(&[])),
            (&[b"sessions=a; my_session=b; session_id=c"], plain(&[])),
            (&[b"x=1, session=a"], (vec![], true)),
            (&[b"session=a,session=b"], (vec![], true)),
            (&[b"session=a, b=2"], (vec![], true)),
            // Blanks outside ASCII that Python and Django strip from names.
            (&[b"\xa0session=a"], (vec![], true)),
            (&[b"x=1; session\x85=a"], (vec![], true)),
            (
                &[b"\xc2\xa0session=a; session=b"],
                (vec!["b".to_owned()], true),
            ),
            // A comma inside a name, and ASP.NET Core's resynchronisation after a bad pair.
            (&[b"a,session=a"], (vec![], true)),
            (&[b"pref=dark session=a"], (vec![], true)),
            (&[b"x=session=a"], plain(&[])),
            // Older PHP url-decoded names: `+` was a space, and a space is `_` to it.
            (&[b"+session=a"], plain(&["a"])),
            (&[b"%20session=a"], plain(&["a"])),
            (&[b"my_session=a; sessionx=b"], plain(&[])),
            (&[b"session=\xff"], (vec![], true)),
        ] {
            assert_eq!(read(headers), want, "{headers:?}");
        }
        let long = format!("session={}", "a".repeat(MAX_COOKIE_BYTES + 1));
        assert_eq!(read(&[long.as_bytes()]), (vec![], true));
        // PHP reads `.`, ` ` and `[` in names as `_`.
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("my.sess=a; my sess=b; my[sess=c"),
        );
        assert_eq!(app_cookies(&h, "my_sess").values, ["a", "b", "c"]);
        h.insert(header::COOKIE, HeaderValue::from_static("my+sess=d; x=1"));
        assert_eq!(app_cookies(&h, "my_sess").values, ["d"]);
    }

    #[test]
    fn cookie_value_readings() {
        assert_eq!(value_readings("s1"), ["s1"]);
        assert_eq!(value_readings("\"s1\""), ["\"s1\"", "s1"]);
        assert_eq!(value_readings("%73%31"), ["%73%31", "s1"]);
        assert_eq!(value_readings("\"%73\""), ["\"%73\"", "%73", "\"s\"", "s"]);
    }

    #[test]
    fn withheld_app_cookies() {
        let mut h = HeaderMap::new();
        for v in [
            "session=abc; Path=/",
            "Session=def",
            "other=1",
            "session=; Max-Age=0",
            " session =ghi",
        ] {
            h.append(header::SET_COOKIE, HeaderValue::from_static(v));
        }
        assert!(withhold(&mut h, "session"));
        let left: Vec<&str> = h
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(left, ["other=1", "session=; Max-Age=0"]);
        assert!(!withhold(&mut h, "session"));
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
        // Max-Age wins over a past Expires: browsers keep this one.
        assert!(sets_cookie(
            &v("session=x; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=3600"),
            "session"
        ));
    }
}
