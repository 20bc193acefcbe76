//! Property tests of the parsers the security rests on: whatever the proxy keys on, every
//! emulated app parser would key on the same thing (or the proxy refuses). Each emulator is a
//! few lines that read input the way a real framework does, written from that framework's
//! documented behaviour; the generators are biased towards the spellings that split them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use http::{HeaderMap, HeaderValue, header};
use proptest::prelude::*;
use twofa_proxy::login::account::{NameRules, canonical};
use twofa_proxy::login::credentials::account_name;
use twofa_proxy::login::media::{Charset, LoginMedia, login_media};
use twofa_proxy::session::cookie::app_cookies;
use unicode_normalization::UnicodeNormalization;

const FIELD: &str = "username";

// ---- account names -------------------------------------------------------------------------

/// Letters and the characters that different apps fold differently.
fn name_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => proptest::char::range('a', 'z'),
        2 => proptest::char::range('A', 'Z'),
        1 => Just('ß'), 1 => Just('ſ'), 1 => Just('ı'), 1 => Just('İ'), 1 => Just('K'),
        1 => Just('ﬁ'), 1 => Just('ς'), 1 => Just('Σ'), 1 => Just('é'), 1 => Just('\u{0301}'),
        1 => proptest::char::range('ａ', 'ｚ'), 1 => proptest::char::range('Ａ', 'Ｚ'),
        1 => Just('\u{200B}'), 1 => Just('\u{00A0}'), 1 => Just(';'), 1 => Just('@'),
        1 => Just('.'), 1 => Just(' '), 1 => Just('\u{FF1B}'),
    ]
}

fn name() -> impl Strategy<Value = String> {
    proptest::collection::vec(name_char(), 1..12).prop_map(|c| c.into_iter().collect())
}

/// How apps turn a typed name into the key they look up (trimmed in every case).
fn app_keys(name: &str) -> Vec<String> {
    let t = name.trim();
    let nfkc: String = t.nfkc().collect();
    vec![
        t.to_lowercase(),                   // most apps, Rails `downcase`
        t.to_uppercase(),                   // ASP.NET Identity's NormalizedUserName
        nfkc.to_lowercase(),                // Django (NFKC) + a case-insensitive lookup
        nfkc.to_uppercase().to_lowercase(), // a casefold-like comparison
        t.to_ascii_lowercase(),             // byte-wise case-insensitive collations
    ]
}

const UNICODE: NameRules = NameRules {
    case_sensitive: false,
    unicode: true,
};
const ASCII: NameRules = NameRules {
    case_sensitive: false,
    unicode: false,
};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Keys are stable: a key canonicalises to itself.
    #[test]
    fn canonical_names_are_fixed_points(raw in name()) {
        for rules in [ASCII, UNICODE] {
            if let Ok(key) = canonical(&raw, rules) {
                prop_assert_eq!(canonical(&key, rules), Ok(key.clone()), "{:?}", raw);
            }
        }
    }

    /// Two names that some app reads as one account share the proxy's key (or one of them is
    /// refused): the proxy never folds less than an app.
    #[test]
    fn names_an_app_merges_share_a_key(a in name(), b in name()) {
        let merged = app_keys(&a).iter().zip(app_keys(&b)).any(|(x, y)| *x == y);
        for rules in [ASCII, UNICODE] {
            if let (Ok(ka), Ok(kb)) = (canonical(&a, rules), canonical(&b, rules)) {
                prop_assert!(!merged || ka == kb, "{:?} / {:?} -> {:?} / {:?}", a, b, ka, kb);
            }
        }
    }

    /// A typed variant of a name (case changes, fullwidth forms) keys the same account.
    #[test]
    fn variants_of_a_name_key_the_same_account(base in "[a-z]{1,10}", flips in proptest::collection::vec(0u8..4, 10)) {
        let variant: String = base.chars().zip(flips.iter().cycle()).map(|(c, f)| match f {
            0 => c,
            1 => c.to_ascii_uppercase(),
            2 => char::from_u32(c as u32 - 'a' as u32 + 'ａ' as u32).unwrap(),
            _ => char::from_u32(c as u32 - 'a' as u32 + 'Ａ' as u32).unwrap(),
        }).collect();
        prop_assert_eq!(canonical(&variant, UNICODE), canonical(&base, UNICODE));
        // ASCII mode: the same key, or refused.
        if let Ok(k) = canonical(&variant, ASCII) {
            prop_assert_eq!(Ok(k), canonical(&base, ASCII));
        }
    }
}

// ---- login bodies --------------------------------------------------------------------------

/// Keys near the account field in the ways frameworks bind them.
fn form_key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just("username".to_owned()),
        1 => Just("Username".to_owned()),
        1 => Just("USERNAME".to_owned()),
        1 => Just("username[]".to_owned()),
        1 => Just("username[0]".to_owned()),
        1 => Just("user[username]".to_owned()),
        1 => Just(" username".to_owned()),
        1 => Just("username%00x".to_owned()),
        1 => Just("user%6Eame".to_owned()),
        3 => Just("password".to_owned()),
        2 => Just("next".to_owned()),
        1 => Just("_method".to_owned()),
        1 => "[a-z]{1,6}",
    ]
}

fn form_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("alice".to_owned()),
        Just("mallory".to_owned()),
        Just("a%3Bb".to_owned()),
        Just("x;username=alice".to_owned()),
        Just("".to_owned()),
        "[a-z]{1,5}",
    ]
}

fn form_body() -> impl Strategy<Value = String> {
    proptest::collection::vec((form_key(), form_value(), prop::bool::ANY), 0..6).prop_map(|pairs| {
        pairs
            .iter()
            .map(|(k, v, semi)| format!("{k}={v}{}", if *semi { ";" } else { "" }))
            .collect::<Vec<_>>()
            .join("&")
    })
}

fn decode(s: &str) -> String {
    form_urlencoded::parse(format!("k={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn pairs(body: &str, separators: &[char]) -> Vec<(String, String)> {
    body.split(separators)
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// The account name each emulated framework reads from a form body (`None`: it sees none).
fn framework_names(body: &str) -> Vec<Option<String>> {
    let amp = pairs(body, &['&']);
    let legacy = pairs(body, &['&', ';']);
    let php_key = |k: &str| {
        let k = k.trim_start_matches(' ');
        let k = k.split('\0').next().unwrap_or(k);
        k.replace(['.', ' '], "_")
    };
    vec![
        // Servlet getParameter, Flask/werkzeug `.get`, Go FormValue: the first exact key.
        amp.iter().find(|(k, _)| k == FIELD).map(|(_, v)| v.clone()),
        // Express/qs and Rack: the last exact key wins.
        amp.iter()
            .rev()
            .find(|(k, _)| k == FIELD)
            .map(|(_, v)| v.clone()),
        // PHP: mangled keys, the last wins; `username[]` makes an array (first element).
        amp.iter()
            .rev()
            .find(|(k, _)| php_key(k).split('[').next() == Some(FIELD))
            .map(|(_, v)| v.clone()),
        // ASP.NET model binding: keys without case, the first.
        amp.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(FIELD))
            .map(|(_, v)| v.clone()),
        // Legacy CGI parsers that also split at `;`.
        legacy
            .iter()
            .rev()
            .find(|(k, _)| k == FIELD)
            .map(|(_, v)| v.clone()),
        // Rails: `user[username]` is read by a controller that expects the nested form.
        amp.iter()
            .find(|(k, _)| k.ends_with("[username]"))
            .map(|(_, v)| v.clone()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    /// Whatever name the proxy reads from a form, every framework that reads a name reads that
    /// one; when the proxy reads none, none does.
    #[test]
    fn the_name_the_proxy_keys_is_the_name_every_framework_reads(body in form_body()) {
        let proxy = account_name("", Some((body.as_bytes(), LoginMedia::Form, Charset::Utf8)), FIELD);
        if let Ok(name) = proxy {
            for (i, seen) in framework_names(&body).into_iter().enumerate() {
                prop_assert!(
                    seen.is_none() || seen == name,
                    "framework {} read {:?}, the proxy {:?} in {:?}", i, seen, name, body
                );
                if name.is_none() {
                    prop_assert!(seen.is_none(), "framework {} read {:?} in {:?}", i, seen, body);
                }
            }
        }
    }

    /// JSON: the proxy's name is the top-level string every decoder reads, and no nested copy
    /// or case variant exists.
    #[test]
    fn json_names_are_unambiguous(
        keys in proptest::collection::vec(prop_oneof![
            Just("username"), Just("USERNAME"), Just("password"), Just("_method"), Just("user"),
        ], 0..5),
        nested in prop::bool::ANY,
    ) {
        let mut body = String::from("{");
        for (i, k) in keys.iter().enumerate() {
            if i > 0 { body.push(','); }
            if nested && *k == "user" {
                body.push_str(r#""user":{"username":"alice"}"#);
            } else {
                body.push_str(&format!(r#""{k}":"v{i}""#));
            }
        }
        body.push('}');
        let proxy = account_name("", Some((body.as_bytes(), LoginMedia::Json, Charset::Utf8)), FIELD);
        let exact = keys.iter().filter(|k| **k == FIELD).count();
        let variants = keys.iter().filter(|k| k.eq_ignore_ascii_case(FIELD)).count();
        let hidden = nested && keys.contains(&"user");
        if let Ok(name) = proxy {
            prop_assert!(variants == exact && exact <= 1 && !hidden && !keys.contains(&"_method"), "{}", body);
            prop_assert_eq!(name.is_some(), exact == 1);
        }
    }
}

// ---- cookies -------------------------------------------------------------------------------

fn cookie_name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => Just(b"session".to_vec()),
        1 => Just(b"session ".to_vec()),
        1 => Just(b" session".to_vec()),
        1 => Just(b"\tsession".to_vec()),
        1 => Just(b"SESSION".to_vec()),
        1 => Just(b"Session".to_vec()),
        1 => Just(b"sess%69on".to_vec()),
        1 => Just(b"\"session\"".to_vec()),
        1 => Just(b"\xa0session".to_vec()),
        1 => Just(b"session\x85".to_vec()),
        1 => Just(b"a,session".to_vec()),
        1 => Just(b"x=1 session".to_vec()),
        1 => Just(b"sessions".to_vec()),
        2 => "[a-z]{1,5}".prop_map(String::into_bytes),
    ]
}

fn cookie_headers() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let pair = (cookie_name(), "[a-z0-9]{0,4}", prop::bool::ANY).prop_map(|(n, v, comma)| {
        let mut p = n;
        p.push(b'=');
        p.extend_from_slice(v.as_bytes());
        if comma {
            p.push(b',');
        }
        p
    });
    proptest::collection::vec(proptest::collection::vec(pair, 1..4), 1..3).prop_map(|headers| {
        headers
            .into_iter()
            .map(|pairs| pairs.join(&b"; "[..]))
            .collect()
    })
}

/// Every value of cookie `session` as each emulated server reads the request's cookies. Bytes
/// are read as Latin-1, as WSGI hands them to Python.
fn server_values(headers: &[Vec<u8>]) -> Vec<String> {
    let mut out = Vec::new();
    for h in headers {
        let text: String = h.iter().map(|&b| b as char).collect();
        for (separators, fold_case, decode_name, python_strip) in [
            (&[';'][..], false, false, false), // RFC 6265 servers (Go, Node), names trimmed
            (&[';', ','][..], false, false, true), // Python's and Tomcat's legacy parsers
            (&[';'][..], true, false, false),  // ASP.NET: names without case
            (&[';'][..], false, true, false),  // PHP: names percent-decoded
            (&[';', ' '][..], false, false, false), // ASP.NET Core resyncing after a bad pair
        ] {
            for pair in text.split(separators) {
                let Some((k, v)) = pair.split_once('=') else {
                    continue;
                };
                let k = if python_strip {
                    k.trim()
                } else {
                    k.trim_matches([' ', '\t'])
                };
                let mut k = k.trim_matches('"').to_owned();
                if decode_name {
                    k = decode(&k);
                }
                let hit = if fold_case {
                    k.eq_ignore_ascii_case("session")
                } else {
                    k == "session"
                };
                if hit && !v.trim().is_empty() {
                    out.push(v.trim().to_owned());
                }
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    /// Any value some server reads as the app cookie is among those the binding checks (or
    /// the request is refused as ambiguous).
    #[test]
    fn every_cookie_a_server_reads_is_checked(headers in cookie_headers()) {
        let mut map = HeaderMap::new();
        for h in &headers {
            map.append(header::COOKIE, HeaderValue::from_bytes(h).unwrap());
        }
        let found = app_cookies(&map, "session");
        if !found.ambiguous {
            for value in server_values(&headers) {
                prop_assert!(
                    found.values.iter().any(|v| *v == value),
                    "{:?} reads {:?}, the proxy checks {:?}", headers, value, found.values
                );
            }
        }
    }
}

// ---- media types ---------------------------------------------------------------------------

fn media_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("application/x-www-form-urlencoded".to_owned()),
        Just("application/json".to_owned()),
        Just(";".to_owned()),
        Just(" ".to_owned()),
        Just("charset".to_owned()),
        Just("CharSet".to_owned()),
        Just("=".to_owned()),
        Just(" =".to_owned()),
        Just("= ".to_owned()),
        Just("utf-8".to_owned()),
        Just("ibm037".to_owned()),
        Just("\"".to_owned()),
        Just(",".to_owned()),
        Just("x".to_owned()),
    ]
}

/// The charset a lenient container finds: the first `charset` name (any case) followed, after
/// optional spaces, by `=` (Tomcat's and several frameworks' reading).
fn lenient_charset(value: &str) -> Option<String> {
    let lower = value.to_ascii_lowercase();
    let at = lower.find("charset")?;
    let rest = lower[at + "charset".len()..].trim_start();
    let rest = rest.strip_prefix('=')?.trim_start().trim_start_matches('"');
    Some(
        rest.split([';', ' ', '"', ','])
            .next()
            .unwrap_or("")
            .to_owned(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    /// A media type the proxy reads as UTF-8 is UTF-8 (or no charset) to a lenient container.
    #[test]
    fn an_accepted_media_type_has_no_other_charset(pieces in proptest::collection::vec(media_piece(), 1..8)) {
        let value: String = pieces.concat();
        if let Ok((_, Charset::Utf8)) = login_media(value.as_bytes()) {
            let seen = lenient_charset(&value);
            prop_assert!(
                seen.is_none() || seen.as_deref() == Some("utf-8"),
                "{:?}: a container reads charset {:?}", value, seen
            );
        }
    }
}
