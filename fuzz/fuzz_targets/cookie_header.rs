//! Cookie headers as the binding reads them: never a panic, and nothing it returns could be read
//! differently by a legacy parser (no comma, nothing longer than a browser stores).
#![no_main]

use http::{HeaderMap, HeaderValue, header};
use libfuzzer_sys::fuzz_target;
use twofa_proxy::session::cookie::{CookieNames, MAX_COOKIE_BYTES, app_cookies, strip_ours};

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    // Two headers, as HTTP/2 crumbs arrive.
    for part in data.splitn(2, |&b| b == b'\n') {
        if let Ok(v) = HeaderValue::from_bytes(part) {
            headers.append(header::COOKIE, v);
        }
    }
    let found = app_cookies(&headers, "session");
    for value in &found.values {
        assert!(!value.contains(','), "{value:?}");
        assert!(value.len() <= MAX_COOKIE_BYTES);
        assert!(!value.is_empty());
    }
    strip_ours(&mut headers, &CookieNames::new(true));
    assert!(headers.get_all(header::COOKIE).iter().count() <= 1);
    if let Some(joined) = headers.get(header::COOKIE) {
        // No pair named like the proxy's own cookie goes upstream.
        for pair in joined.as_bytes().split(|&b| b == b';') {
            let key = pair.split(|&b| b == b'=').next().unwrap_or(pair);
            assert!(key.trim_ascii() != b"twofa-session", "{joined:?}");
        }
    }
});
