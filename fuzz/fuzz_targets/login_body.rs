//! Login bodies (form or JSON, with a query string): never a panic, and a name the proxy reads
//! is the only copy of the field in the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use twofa_proxy::login::credentials::account_name;
use twofa_proxy::login::media::{Charset, LoginMedia};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let (query, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (&b""[..], rest),
    };
    let Ok(query) = std::str::from_utf8(query) else {
        return;
    };
    let media = if selector & 1 == 0 {
        LoginMedia::Form
    } else {
        LoginMedia::Json
    };
    let charset = if selector & 2 == 0 {
        Charset::Utf8
    } else {
        Charset::Ascii
    };
    let result = account_name(query, Some((body, media, charset)), "username");
    if let (Ok(Some(name)), LoginMedia::Form) = (&result, media) {
        // Exactly one `username=` key, in the query or the body, as every parser reads it.
        let exact = |s: &[u8]| {
            s.split(|&b| b == b'&')
                .filter(|p| p.split(|&b| b == b'=').next() == Some(&b"username"[..]))
                .count()
        };
        assert_eq!(exact(query.as_bytes()) + exact(body), 1, "{name:?}");
    }
});
