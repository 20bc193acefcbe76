//! When the app's answer to a watched login means "password accepted".
//!
//! Many apps answer a wrong password with a redirect *and* their session cookie (Flask's
//! flash-and-redirect, PHP, Rails), so status and cookie alone cannot tell. Taking such an
//! answer for a success would let anyone, without a password, start a challenge under any name
//! (learning who has 2FA, spending their email budget, counting towards their lockout) or, under
//! `enforcement = "required"`, enroll their own authenticator on someone else's account.
//!
//! The rule: the status is in `success_status`, the answer sets `success_cookie`, and
//! - when `user_header` is set, the answer carries it (apps name the user only on success),
//!   which settles it;
//! - otherwise a redirect must name a `Location` that is not a login page (`login_paths`,
//!   `login_page`, in any spelling [`PathRules::is_login_page`] matches) and, when
//!   `success_location` is set, lies under one of those prefixes.
//!
//! An answer that meets none of this is passed through as the app's own refusal (without
//! `user_header`, minus the session cookie it set in answer to credentials: it could be a
//! success this rule cannot see); one whose `Location` cannot be read is refused outright.

use http::{HeaderMap, StatusCode, header};

use crate::login::gate::{self, PathRules};
use crate::session::cookie;

/// What the proxy makes of the app's answer to a watched login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The password was accepted: hold the answer back.
    Accepted,
    /// Not a success: the app's answer goes back as it is.
    NotAccepted,
    /// Looks like a success but cannot be read with certainty: refuse it whole.
    Unclear,
}

/// How the app says "accepted" (from `[app]`).
#[derive(Debug, Clone)]
pub struct SuccessRules {
    pub statuses: Vec<u16>,
    pub cookie: String,
    pub user_header: Option<http::HeaderName>,
    /// Path prefixes a successful login redirects to (empty: any but a login page).
    pub locations: Vec<String>,
}

/// Judges the app's answer to a watched login at `request_path`.
pub fn judge(
    rules: &SuccessRules,
    paths: &PathRules,
    request_path: &str,
    status: StatusCode,
    headers: &HeaderMap,
) -> Verdict {
    if !rules.statuses.contains(&status.as_u16()) {
        return Verdict::NotAccepted;
    }
    let sets_cookie = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .any(|v| cookie::sets_cookie(v, &rules.cookie));
    if !sets_cookie {
        return Verdict::NotAccepted;
    }
    // The app names the user only on success: its word settles it, wherever it redirects.
    if let Some(name) = &rules.user_header {
        return if headers.contains_key(name) {
            Verdict::Accepted
        } else {
            Verdict::NotAccepted
        };
    }
    if !status.is_redirection() {
        return Verdict::Accepted;
    }
    let mut locations = headers.get_all(header::LOCATION).iter();
    let (Some(location), None) = (locations.next(), locations.next()) else {
        // No place to go, or two: not a login the proxy can stand behind.
        return Verdict::NotAccepted;
    };
    let Some(target) = location
        .to_str()
        .ok()
        .and_then(|l| redirect_path(request_path, l))
    else {
        return Verdict::Unclear;
    };
    if paths.is_login_page(&target) {
        return Verdict::NotAccepted;
    }
    let listed = rules.locations.is_empty()
        || rules.locations.iter().any(|prefix| {
            if prefix.ends_with('/') {
                target.starts_with(prefix.as_str())
            } else {
                target
                    .strip_prefix(prefix.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            }
        });
    if listed {
        Verdict::Accepted
    } else {
        Verdict::NotAccepted
    }
}

/// The normalised path a `Location` sends the browser to (RFC 9110 10.2.2: a URI reference,
/// resolved against the request's path). `None` when it cannot be read as one.
pub fn redirect_path(request_path: &str, location: &str) -> Option<String> {
    let location = location.trim();
    if location.is_empty() || location.contains(['\\', '\t', '\r', '\n']) {
        return None;
    }
    let without_fragment = location.split('#').next().unwrap_or(location);
    let path = if let Some(rest) = without_fragment.strip_prefix("//") {
        // Scheme-relative: `//host/path`.
        rest.find('/').map_or("/", |at| &rest[at..])
    } else if without_fragment.starts_with('/') {
        without_fragment
    } else if let Some((scheme, rest)) = without_fragment.split_once("://")
        && !scheme.is_empty()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    {
        rest.find('/').map_or("/", |at| &rest[at..])
    } else if without_fragment.contains(':')
        && !without_fragment
            .split(':')
            .next()
            .is_some_and(|s| s.contains('/'))
    {
        // `mailto:`, `javascript:` and the like: nothing a login redirects to.
        return None;
    } else {
        // Relative to the request path's directory.
        let dir = request_path.rsplit_once('/').map_or("", |(dir, _)| dir);
        return join(dir, without_fragment);
    };
    let path = path.split('?').next().unwrap_or(path);
    gate::normalize_path(path).ok().map(|p| p.into_owned())
}

fn join(dir: &str, relative: &str) -> Option<String> {
    let relative = relative.split('?').next().unwrap_or(relative);
    let joined = format!("{dir}/{relative}");
    gate::normalize_path(&joined).ok().map(|p| p.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn paths() -> PathRules {
        PathRules::new(
            "/_2fa".into(),
            vec!["/login".into(), "/api/login".into()],
            vec!["/logout".into()],
            vec!["/login".into()],
            "/signin".into(),
        )
    }

    fn rules() -> SuccessRules {
        SuccessRules {
            statuses: vec![200, 302, 303],
            cookie: "session".into(),
            user_header: None,
            locations: Vec::new(),
        }
    }

    fn answer(
        status: u16,
        location: Option<&str>,
        cookie: Option<&str>,
    ) -> (StatusCode, HeaderMap) {
        let mut h = HeaderMap::new();
        if let Some(l) = location {
            h.append(header::LOCATION, HeaderValue::from_str(l).unwrap());
        }
        if let Some(c) = cookie {
            h.append(header::SET_COOKIE, HeaderValue::from_str(c).unwrap());
        }
        (StatusCode::from_u16(status).unwrap(), h)
    }

    #[test]
    fn success_table() {
        use Verdict::*;
        let cookie = Some("session=abc; Path=/; HttpOnly");
        for (status, location, set, want) in [
            (302, Some("/"), cookie, Accepted),
            (303, Some("/dashboard?tab=1"), cookie, Accepted),
            (302, Some("https://app.example/home"), cookie, Accepted),
            (302, Some("//app.example/home"), cookie, Accepted),
            (302, Some("dashboard"), cookie, Accepted),
            (200, None, cookie, Accepted),
            // Flask's flash-and-redirect: back to the form, with a session cookie.
            (302, Some("/login"), cookie, NotAccepted),
            (302, Some("/login?error=1"), cookie, NotAccepted),
            (302, Some("/LOGIN/"), cookie, NotAccepted),
            (302, Some("/login;jsessionid=A1"), cookie, NotAccepted),
            (302, Some("/login.php"), cookie, NotAccepted),
            (302, Some("https://app.example/login"), cookie, NotAccepted),
            (302, Some("//app.example/signin#x"), cookie, NotAccepted),
            (302, Some("login"), cookie, NotAccepted),
            (302, Some("./signin"), cookie, NotAccepted),
            (302, Some("/a/../login"), cookie, NotAccepted),
            (302, Some("/%6cogin"), cookie, NotAccepted),
            (302, Some("/api/login"), cookie, NotAccepted),
            (302, None, cookie, NotAccepted),
            (302, Some("/"), None, NotAccepted),
            (302, Some("/"), Some("session=; Max-Age=0"), NotAccepted),
            (401, None, cookie, NotAccepted),
            (302, Some("/\\evil"), cookie, Unclear),
            (302, Some("/a%2flogin"), cookie, Unclear),
            (302, Some("javascript:alert(1)"), cookie, Unclear),
        ] {
            let (status, headers) = answer(status, location, set);
            assert_eq!(
                judge(&rules(), &paths(), "/login", status, &headers),
                want,
                "{status} {location:?} {set:?}"
            );
        }
    }

    #[test]
    fn operators_can_name_success() {
        let listed = SuccessRules {
            locations: vec!["/dashboard".into(), "/app/".into()],
            ..rules()
        };
        let cookie = Some("session=abc");
        for (location, want) in [
            ("/dashboard", Verdict::Accepted),
            ("/dashboard/x?y", Verdict::Accepted),
            ("/app/home", Verdict::Accepted),
            ("/", Verdict::NotAccepted),
            ("/dashboards", Verdict::NotAccepted),
            ("/app", Verdict::NotAccepted),
        ] {
            let (status, headers) = answer(302, Some(location), cookie);
            assert_eq!(
                judge(&listed, &paths(), "/login", status, &headers),
                want,
                "{location}"
            );
        }
        let named = SuccessRules {
            user_header: Some(http::HeaderName::from_static("x-user")),
            ..rules()
        };
        let (status, mut headers) = answer(302, Some("/"), cookie);
        assert_eq!(
            judge(&named, &paths(), "/login", status, &headers),
            Verdict::NotAccepted
        );
        headers.insert("x-user", HeaderValue::from_static("alice"));
        assert_eq!(
            judge(&named, &paths(), "/login", status, &headers),
            Verdict::Accepted
        );
        // A success that goes back to a login page (`next=/login`) is still one.
        let (status, mut headers) = answer(302, Some("/login"), cookie);
        headers.insert("x-user", HeaderValue::from_static("alice"));
        assert_eq!(
            judge(&named, &paths(), "/login", status, &headers),
            Verdict::Accepted
        );
    }
}
