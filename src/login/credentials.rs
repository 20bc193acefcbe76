//! Reading the account name of a watched login exactly the way every app could read it, or
//! refusing the login. If the proxy and the app could disagree about who logs in, the wrong
//! account gets challenged: a second copy of the field, a spelling some framework folds into
//! it, a nested copy a framework may prefer, or a method override are all refused.

use std::borrow::Cow;

use http::HeaderMap;

use crate::login::media::{Charset, LoginMedia};

/// The login cannot be attributed to exactly one account name as every app would read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ambiguous;

/// Headers through which frameworks let a request pose as another method (Rails, Express's
/// method-override, ASP.NET, Spring's `HiddenHttpMethodFilter` reads `_method`).
const METHOD_OVERRIDES: &[&str] = &[
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// The form or JSON field frameworks read as a method override.
const METHOD_FIELD: &str = "_method";

/// Whether the request asks the app to treat it as another method.
pub fn overrides_method(headers: &HeaderMap, query: &str) -> bool {
    headers.keys().any(|k| {
        METHOD_OVERRIDES
            .iter()
            .any(|o| crate::upstream::same_name(k.as_str(), o))
    }) || form_keys(query.as_bytes()).any(|k| k.is_none_or(|k| same_field(&k, METHOD_FIELD)))
}

/// The account name sent in the query string and the body together: `Ok(None)` when there is
/// none, `Err` when there is more than one copy or any spelling an app could read differently.
/// `body` is `None` when the request has no body (its type is then not looked at).
pub fn account_name(
    query: &str,
    body: Option<(&[u8], LoginMedia, Charset)>,
    field: &str,
) -> Result<Option<String>, Ambiguous> {
    // Servlet containers, Flask's `request.values`, PHP's `$_REQUEST` and Rails merge the
    // query string with the body: the name must be in exactly one place, once.
    let mut names = form_names(query.as_bytes(), field)?;
    match body {
        None => {}
        Some((bytes, _, Charset::Ascii)) if !bytes.is_ascii() => return Err(Ambiguous),
        // Many handlers decode the body as JSON whatever its type (Go's `json.NewDecoder`,
        // PHP's `php://input`, Flask's `get_json(force=True)`): a form must not be a JSON
        // document too. (Form parsers, on the other hand, go by the type.)
        Some((bytes, LoginMedia::Form, _)) => {
            if looks_like_json(bytes)
                || form_keys(bytes).any(|k| k.is_none_or(|k| same_field(&k, METHOD_FIELD)))
            {
                return Err(Ambiguous);
            }
            names.extend(form_names(bytes, field)?);
        }
        Some((bytes, LoginMedia::Json, _)) => names.extend(json_names(bytes, field)?),
    }
    match names.len() {
        0 => Ok(None),
        1 => Ok(names.pop()),
        _ => Err(Ambiguous),
    }
}

/// Whether a form key is, for some framework, the field `field`: letter case, PHP's mangling
/// (leading spaces dropped, cut at NUL, `.`, space and `[` read as `_`) and `field[...]` arrays.
/// Any key whose last part is the field's (`session[username]`, `user[email]` for `email`)
/// matches too: frameworks nest and unnest parameters.
pub fn same_field(key: &str, field: &str) -> bool {
    let (key_base, key_leaf) = parts(key);
    let (field_base, field_leaf) = parts(field);
    loose_eq(key_leaf, field_leaf) || (field_base == field && loose_eq(key_base, field_base))
}

/// `user[email][]` -> (`user`, `email`); `username` -> (`username`, `username`).
fn parts(key: &str) -> (&str, &str) {
    let key = key.trim_start_matches(' ');
    let key = key.split('\0').next().unwrap_or(key);
    let base = key.split('[').next().unwrap_or(key);
    let leaf = key
        .split(['[', ']'])
        .rfind(|s| !s.is_empty())
        .unwrap_or(base);
    (base, leaf)
}

fn loose_eq(a: &str, b: &str) -> bool {
    let fold = |c: char| match c {
        '.' | ' ' => '_',
        c => c.to_ascii_lowercase(),
    };
    a.chars().map(fold).eq(b.chars().map(fold))
}

/// The decoded keys of an urlencoded string, as `&`-separated pairs (`None`: a key that is not
/// UTF-8). Pieces split again at `;` (the legacy CGI separator) yield their extra keys too.
fn form_keys(bytes: &[u8]) -> impl Iterator<Item = Option<Cow<'_, str>>> {
    bytes
        .split(|&b| b == b'&')
        .flat_map(|piece| piece.split(|&b| b == b';'))
        .map(|sub| decode(sub.split(|&b| b == b'=').next().unwrap_or(sub)))
}

/// The values of the account field in an urlencoded string.
fn form_names(bytes: &[u8], field: &str) -> Result<Vec<String>, Ambiguous> {
    let mut names = Vec::new();
    for piece in bytes.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let (key, value) = match piece.iter().position(|&b| b == b'=') {
            Some(at) => (&piece[..at], &piece[at + 1..]),
            None => (piece, &b""[..]),
        };
        let key = decode(key).ok_or(Ambiguous)?;
        // `x=1;username=alice`: the name as a legacy parser reads it.
        let hidden = piece.contains(&b';')
            && piece.split(|&b| b == b';').any(|sub| {
                let k = sub.split(|&b| b == b'=').next().unwrap_or(sub);
                decode(k).is_none_or(|k| same_field(&k, field))
            });
        if hidden {
            return Err(Ambiguous);
        }
        if !same_field(&key, field) {
            continue;
        }
        // Arrays and case or mangling variants: each framework picks differently.
        if key != field {
            return Err(Ambiguous);
        }
        names.push(decode(value).ok_or(Ambiguous)?.into_owned());
    }
    Ok(names)
}

/// `application/x-www-form-urlencoded` decoding of one key or value; `None` if not UTF-8.
fn decode(raw: &[u8]) -> Option<Cow<'_, str>> {
    if !raw.contains(&b'+') && !raw.contains(&b'%') {
        return std::str::from_utf8(raw).ok().map(Cow::Borrowed);
    }
    let plus: Vec<u8> = raw
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    let bytes: Vec<u8> = percent_encoding::percent_decode(&plus).collect();
    String::from_utf8(bytes).ok().map(Cow::Owned)
}

/// A body any JSON decoder would take for a document (an object or an array).
fn looks_like_json(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'{' || b == b'[')
}

/// The account field of a top-level JSON object; for a bracketed field (`user[email]`, as
/// Devise names it) the one string at `{"user":{"email":..}}`. Refused: a body that is not one
/// object, duplicate or case-variant keys, a non-string value, non-ASCII keys at any depth (Go's
/// decoder folds `ſ` to `s`), the field's name anywhere else (Rails wraps and unwraps
/// parameters; a framework may read another copy) and `_method`.
fn json_names(bytes: &[u8], field: &str) -> Result<Vec<String>, Ambiguous> {
    let Members(members) = serde_json::from_slice(bytes).map_err(|_| Ambiguous)?;
    let (base, leaf) = parts(field);
    let nested_field = base != field;
    let mut names = Vec::new();
    for (key, value) in members {
        if !key.is_ascii() || key.eq_ignore_ascii_case(METHOD_FIELD) {
            return Err(Ambiguous);
        }
        if nested_field && key.eq_ignore_ascii_case(base) {
            let serde_json::Value::Object(inner) = value else {
                return Err(Ambiguous);
            };
            if key != base {
                return Err(Ambiguous);
            }
            for (k, v) in inner {
                if !k.is_ascii() || nested_key(&v, leaf) {
                    return Err(Ambiguous);
                }
                if k.eq_ignore_ascii_case(leaf) {
                    match v {
                        serde_json::Value::String(s) if k == leaf => names.push(s),
                        _ => return Err(Ambiguous),
                    }
                }
            }
            continue;
        }
        if nested_key(&value, leaf) {
            return Err(Ambiguous);
        }
        if key.eq_ignore_ascii_case(leaf) || key.eq_ignore_ascii_case(field) {
            match value {
                serde_json::Value::String(s) if key == field => names.push(s),
                _ => return Err(Ambiguous),
            }
        }
    }
    Ok(names)
}

/// Whether any object below `value` has a non-ASCII key or a key that is `leaf` in any case.
fn nested_key(value: &serde_json::Value, leaf: &str) -> bool {
    match value {
        serde_json::Value::Object(map) => map
            .iter()
            .any(|(k, v)| !k.is_ascii() || k.eq_ignore_ascii_case(leaf) || nested_key(v, leaf)),
        serde_json::Value::Array(items) => items.iter().any(|v| nested_key(v, leaf)),
        _ => false,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn form(body: &str) -> Result<Option<String>, Ambiguous> {
        account_name(
            "",
            Some((body.as_bytes(), LoginMedia::Form, Charset::Utf8)),
            "username",
        )
    }

    fn json(body: &str) -> Result<Option<String>, Ambiguous> {
        account_name(
            "",
            Some((body.as_bytes(), LoginMedia::Json, Charset::Utf8)),
            "username",
        )
    }

    #[test]
    fn names_from_forms_json_and_queries() {
        assert_eq!(
            form("username=Alice%40example.com&password=x"),
            Ok(Some("Alice@example.com".into()))
        );
        assert_eq!(
            form("password=a%3Bb;c&username=bob"),
            Ok(Some("bob".into()))
        );
        assert_eq!(
            json(r#"{"username":"bob","password":"x","meta":{"a":1}}"#),
            Ok(Some("bob".into()))
        );
        assert_eq!(json(r#"{"email":"bob"}"#), Ok(None));
        assert_eq!(form("password=x"), Ok(None));
        assert_eq!(form(""), Ok(None));
        assert_eq!(
            account_name("username=carol&next=/x", None, "username"),
            Ok(Some("carol".into()))
        );
        assert_eq!(
            account_name(
                "next=/",
                Some((b"username=dan", LoginMedia::Form, Charset::Ascii)),
                "username"
            ),
            Ok(Some("dan".into()))
        );
        let bracketed = account_name(
            "",
            Some((
                b"user[email]=eve&user[password]=x",
                LoginMedia::Form,
                Charset::Utf8,
            )),
            "user[email]",
        );
        assert_eq!(bracketed, Ok(Some("eve".into())));
        // Devise's JSON sign-in for the same field.
        let devise = |body: &str| {
            account_name(
                "",
                Some((body.as_bytes(), LoginMedia::Json, Charset::Utf8)),
                "user[email]",
            )
        };
        assert_eq!(
            devise(r#"{"user":{"email":"eve","password":"x"},"commit":"Log in"}"#),
            Ok(Some("eve".into()))
        );
        for body in [
            r#"{"user":{"email":"eve","EMAIL":"mallory"}}"#,
            r#"{"user":{"email":"eve"},"email":"mallory"}"#,
            r#"{"user":{"email":"eve"},"User":{"email":"mallory"}}"#,
            r#"{"user":{"email":"eve","x":{"email":"mallory"}}}"#,
            r#"{"user":{"email":["eve"]}}"#,
            r#"{"user":"eve"}"#,
            r#"{"user":{"email":"eve"},"user":{"email":"mallory"}}"#,
        ] {
            assert_eq!(devise(body), Err(Ambiguous), "{body}");
        }
        // PHP reads `user.name` and `user name` as `user_name`.
        for body in [
            "user_name=a&user.name=b",
            "user_name=a&user+name=b",
            "user.name=a",
        ] {
            let got = account_name(
                "",
                Some((body.as_bytes(), LoginMedia::Form, Charset::Utf8)),
                "user_name",
            );
            assert_eq!(got, Err(Ambiguous), "{body}");
        }
    }

    /// Bodies where the proxy and some app could read different account names are refused.
    #[test]
    fn ambiguous_account_names_are_refused() {
        for body in [
            "username=nobody&username=alice",
            "username=alice&Username=nobody",
            "username[]=alice&password=x",
            "username=alice&USERNAME[0]=nobody",
            "username=mallory&username%00x=alice",
            "username=mallory&+username=alice",
            "x=1;username=alice&username=mallory",
            "username;x=mallory&username=alice",
            "username=%FF",
            "us%FFername=alice",
            "username=alice&_method=GET",
            "username=alice&_METHOD=GET",
            "session[username]=alice&username=mallory",
            // A JSON document sent as a form: the app may decode it as JSON.
            r#"{"username":"alice","x":"&username=nobody&"}"#,
            "  [1]",
        ] {
            assert_eq!(form(body), Err(Ambiguous), "{body}");
        }
        for body in [
            r#"{"username":"nobody","username":"alice"}"#,
            r#"{"username":"alice","UserName":"nobody"}"#,
            r#"{"username":["a","b"]}"#,
            r#"{"username":1}"#,
            r#"{"username":null}"#,
            r#"["username","alice"]"#,
            "{\"username\":\"mallory\",\"u\u{17f}ername\":\"alice\"}",
            r#"{"username":"mallory","session":{"username":"alice"}}"#,
            r#"{"user":{"USERNAME":"alice"}}"#,
            r#"{"list":[{"username":"alice"}]}"#,
            r#"{"username":"alice","_method":"GET"}"#,
            "\u{feff}{\"username\":\"alice\"}",
            r#"{"username":"alice"} {"username":"bob"}"#,
        ] {
            assert_eq!(json(body), Err(Ambiguous), "{body}");
        }
        // In the query and the body: which one wins depends on the framework.
        assert_eq!(
            account_name(
                "username=a",
                Some((b"username=b", LoginMedia::Form, Charset::Utf8)),
                "username"
            ),
            Err(Ambiguous)
        );
        assert_eq!(
            account_name(
                "username=a",
                Some((b"{\"username\":\"a\"}", LoginMedia::Json, Charset::Utf8)),
                "username"
            ),
            Err(Ambiguous)
        );
        // A body declared US-ASCII that is not.
        assert_eq!(
            account_name(
                "",
                Some(("username=ä".as_bytes(), LoginMedia::Form, Charset::Ascii)),
                "username"
            ),
            Err(Ambiguous)
        );
    }

    #[test]
    fn method_overrides_are_seen() {
        let mut h = HeaderMap::new();
        assert!(!overrides_method(&h, "next=/"));
        assert!(overrides_method(&h, "_method=GET"));
        assert!(overrides_method(&h, "x=1;_method=GET"));
        for name in [
            "x-http-method-override",
            "X-HTTP-Method",
            "x_method_override",
        ] {
            h.clear();
            h.insert(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                http::HeaderValue::from_static("GET"),
            );
            assert!(overrides_method(&h, ""), "{name}");
        }
    }
}
