//! The gate: for every request, a pure decision from the normalised path, the method and what
//! the store said about the session. The router only carries it out.

use std::borrow::Cow;

use http::Method;

/// Why a path is refused before any decision (answered with 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Not an absolute path (`/...`) or `*`.
    NotAbsolute,
    /// `%2F`, `%5C` or `%00`: a separator or NUL the upstream might decode after we decided.
    EncodedSeparator,
    /// A malformed percent escape.
    BadEscape,
    /// A raw backslash (some servers treat it as `/`).
    Backslash,
    /// `..;x` and friends: a dot segment that some servers resolve and we would not.
    DotSegmentParameter,
    ControlCharacter,
}

/// The canonical path the proxy decides on and forwards: percent-escapes of unreserved
/// characters decoded and the rest upper-cased (RFC 3986 6.2.2), `.` and `..` resolved (5.2.4),
/// repeated slashes merged. Anything an upstream could read differently is refused.
pub fn normalize_path(raw: &str) -> Result<Cow<'_, str>, PathError> {
    if raw == "*" {
        return Ok(Cow::Borrowed(raw));
    }
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let clean = !raw.contains(['%', '\\'])
        && !raw.contains("//")
        && !raw.contains("/.")
        && raw.bytes().all(|b| b > 0x20 && b != 0x7f);
    if clean {
        return Ok(Cow::Borrowed(raw));
    }
    let decoded = decode_unreserved(raw)?;
    let mut segments: Vec<&str> = Vec::new();
    let parts: Vec<&str> = decoded.split('/').skip(1).collect();
    let last = parts.len().saturating_sub(1);
    let mut trailing_slash = false;
    for (i, segment) in parts.iter().enumerate() {
        let base = segment.split(';').next().unwrap_or("");
        if (base == "." || base == "..") && base.len() != segment.len() {
            return Err(PathError::DotSegmentParameter);
        }
        match *segment {
            "" => trailing_slash = i == last,
            "." => trailing_slash = i == last,
            ".." => {
                segments.pop();
                trailing_slash = i == last;
            }
            s => {
                segments.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

fn decode_unreserved(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or(PathError::BadEscape)?;
                let value = std::str::from_utf8(hex)
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or(PathError::BadEscape)?;
                match value {
                    b'/' | b'\\' | 0 => return Err(PathError::EncodedSeparator),
                    v if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') => {
                        out.push(v as char)
                    }
                    v => {
                        out.push('%');
                        out.push_str(&format!("{v:02X}"));
                    }
                }
                i += 3;
            }
            b'\\' => return Err(PathError::Backslash),
            b if b <= 0x20 || b == 0x7f => return Err(PathError::ControlCharacter),
            _ => {
                // Multi-byte UTF-8 passes through whole.
                let ch_len = utf8_len(b);
                let end = (i + ch_len).min(bytes.len());
                out.push_str(
                    std::str::from_utf8(&bytes[i..end]).map_err(|_| PathError::BadEscape)?,
                );
                i = end;
                continue;
            }
        }
        if b != b'%' {
            i += 1;
        }
    }
    Ok(out)
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xf0.. => 4,
        0xe0.. => 3,
        0xc0.. => 2,
        _ => 1,
    }
}

/// Path rules from `[app]`, matched against normalised paths.
#[derive(Debug, Clone)]
pub struct PathRules {
    prefix: String,
    login_paths: Vec<String>,
    logout_paths: Vec<String>,
    public_paths: Vec<String>,
    login_page: String,
    /// The last segment of each login path and of the login page, lower case: a cheap first
    /// look before the full comparison (the gate asks on every request).
    login_stems: Vec<String>,
}

impl PathRules {
    pub fn new(
        prefix: String,
        login_paths: Vec<String>,
        logout_paths: Vec<String>,
        public_paths: Vec<String>,
        login_page: String,
    ) -> Self {
        let login_stems = login_paths
            .iter()
            .chain(std::iter::once(&login_page))
            .map(|p| loose_segments(p).last().unwrap_or("").to_ascii_lowercase())
            .collect();
        Self {
            prefix,
            login_paths,
            logout_paths,
            public_paths,
            login_page,
            login_stems,
        }
    }

    pub fn is_own(&self, path: &str) -> bool {
        path.strip_prefix(self.prefix.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    /// `"/static/"` covers everything below it; `"/login"` covers `/login` and `/login/...`,
    /// never `/login-admin`.
    pub fn is_public(&self, path: &str) -> bool {
        self.public_paths.iter().any(|p| {
            if p.ends_with('/') {
                path.starts_with(p.as_str())
            } else {
                path.strip_prefix(p.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            }
        })
    }

    /// A login path in any spelling an app might accept: letter case, a trailing slash,
    /// `;parameters` and a format suffix (`/login.json`: Rails' `(.:format)`, Spring's suffix
    /// patterns) do not make a login unwatched.
    pub fn is_login(&self, path: &str) -> bool {
        self.login_paths
            .iter()
            .zip(&self.login_stems)
            .any(|(p, stem)| may_match(stem, path) && loose_path_eq(p, path))
    }

    /// A page the app sends a browser to for its password: a login path or the login page.
    /// An answer sending the browser there is never a successful login.
    pub fn is_login_page(&self, path: &str) -> bool {
        let page_stem = self.login_stems.last().map_or("", String::as_str);
        self.is_login(path) || (may_match(page_stem, path) && loose_path_eq(&self.login_page, path))
    }

    pub fn is_logout(&self, path: &str) -> bool {
        self.logout_paths.iter().any(|p| p == path)
    }
}

/// Two paths as the most lenient router matches them: `;parameters` dropped from every segment
/// (as servlet containers do), a format suffix dropped from the last one, trailing slashes and
/// letter case ignored. Allocation-free: the gate asks this of every request.
fn loose_path_eq(a: &str, b: &str) -> bool {
    let (mut a, mut b) = (loose_segments(a), loose_segments(b));
    loop {
        match (a.next(), b.next()) {
            (None, None) => return true,
            (Some(x), Some(y)) if x.eq_ignore_ascii_case(y) => {}
            _ => return false,
        }
    }
}

/// A cheap first look for [`loose_path_eq`]: `path` can only match a configured path if it
/// holds that path's last segment (`stem`, lower case) in any letter case.
fn may_match(stem: &str, path: &str) -> bool {
    let Some(&first) = stem.as_bytes().first() else {
        return true;
    };
    let path = path.as_bytes();
    path.iter().enumerate().any(|(at, b)| {
        b.to_ascii_lowercase() == first
            && path
                .get(at..at + stem.len())
                .is_some_and(|w| w.eq_ignore_ascii_case(stem.as_bytes()))
    })
}

fn loose_segments(path: &str) -> impl Iterator<Item = &str> {
    let path = path.split(['?', '#']).next().unwrap_or(path);
    let segments = move || path.split('/').map(|s| s.split(';').next().unwrap_or(s));
    let kept = segments()
        .enumerate()
        .filter(|(_, s)| !s.is_empty())
        .last()
        .map_or(1, |(i, _)| i + 1);
    // Spring's suffix patterns match `/login.a.b` to `/login`: everything from the first dot.
    segments()
        .take(kept)
        .enumerate()
        .map(move |(i, s)| match s.split_once('.') {
            Some((stem, _)) if i + 1 == kept && !stem.is_empty() => stem,
            _ => s,
        })
}

/// Whether a path parameter names a session: servlet containers track sessions in a
/// `;jsessionid=` parameter (on by default), and any spelling of the app's own cookie counts.
fn session_param(param: &str, app_cookie: &str) -> bool {
    let name = param.split('=').next().unwrap_or(param).trim();
    name.eq_ignore_ascii_case("jsessionid")
        || crate::session::cookie::loose_name_eq(name.as_bytes(), app_cookie)
}

/// `path` without its session path parameters (`/a;jsessionid=X/b` is `/a/b`), `None` if it
/// has none. The app then reads its session only from the cookie the binding checks, and URLs
/// that Tomcat writes for a new session (`Location: /account;jsessionid=X`) keep working.
pub fn strip_session_params(path: &str, app_cookie: &str) -> Option<String> {
    if !path.contains(';') {
        return None;
    }
    let mut changed = false;
    let segments: Vec<String> = path
        .split('/')
        .map(|segment| {
            let mut parts = segment.split(';');
            let mut kept = parts.next().unwrap_or("").to_owned();
            for param in parts {
                if session_param(param, app_cookie) {
                    changed = true;
                } else {
                    kept.push(';');
                    kept.push_str(param);
                }
            }
            kept
        })
        .collect();
    changed.then(|| segments.join("/"))
}

/// Whether a request carries a session id in its URL where the session binding (which reads
/// cookies) would not see it and it cannot be dropped: ASP.NET's cookieless sessions and forms
/// tickets sit in a `/(S(id))/` segment, and PHP (and servlet containers) read `PHPSESSID` and
/// `jsessionid` from the query when configured to. Path parameters are dropped instead
/// ([`strip_session_params`]).
pub fn carries_session_id(path: &str, query: Option<&str>) -> bool {
    let in_path = path.contains('(')
        && path.split('/').any(|segment| {
            let name = segment.as_bytes();
            name.len() > 3 && name[0] == b'(' && name[1].is_ascii_alphabetic() && name[2] == b'('
        });
    // In the query only the names containers read there: `?session=` is an ordinary
    // parameter to many apps. Most queries hold neither name, not even escaped.
    let in_query = query.is_some_and(|q| {
        let may = q.contains('%')
            || q.as_bytes()
                .windows(6)
                .any(|w| w.eq_ignore_ascii_case(b"sessid") || w.eq_ignore_ascii_case(b"ession"));
        may && q.split(['&', ';']).any(|pair| {
            let key = pair.split('=').next().unwrap_or(pair);
            let key = percent_encoding::percent_decode_str(key).decode_utf8_lossy();
            let key = key.trim();
            key.eq_ignore_ascii_case("jsessionid") || key.eq_ignore_ascii_case("phpsessid")
        })
    });
    in_path || in_query
}

/// What the store said about the request's proxy session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    None,
    Valid,
    /// Logged in, but must enroll before anything else (`enforcement = "required"`).
    MustEnroll,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The proxy's own pages and API.
    Own,
    /// A login POST: forward it and watch the app's answer.
    WatchLogin,
    /// End the proxy session, then forward.
    Logout,
    /// Forward without an identity.
    Public,
    /// Forward with the session's identity.
    Forward,
    /// Send the browser to the 2FA enrollment pages.
    Enroll,
    /// Send the browser to the app's login page; expire the app's cookie if it sent one.
    SignIn { expire_app_cookie: bool },
    /// 401 for API clients.
    Unauthorized { expire_app_cookie: bool },
}

/// The whole policy, one pure function (tested with a table of tricky paths below).
pub fn decide(
    rules: &PathRules,
    method: &Method,
    path: &str,
    wants_html: bool,
    has_app_cookie: bool,
    session: SessionState,
) -> Decision {
    if rules.is_own(path) {
        return Decision::Own;
    }
    // Every method is watched on a login path: apps log in on GET with query credentials, on
    // PUT or PATCH, or behind a method override.
    if rules.is_login(path) {
        return Decision::WatchLogin;
    }
    if rules.is_logout(path) {
        return Decision::Logout;
    }
    if rules.is_public(path) {
        return Decision::Public;
    }
    match session {
        SessionState::Valid => Decision::Forward,
        SessionState::MustEnroll if wants_html => Decision::Enroll,
        SessionState::MustEnroll => Decision::Unauthorized {
            expire_app_cookie: false,
        },
        SessionState::None => {
            let expire_app_cookie = has_app_cookie;
            let navigable = method == Method::GET || method == Method::HEAD;
            if navigable && wants_html {
                Decision::SignIn { expire_app_cookie }
            } else {
                Decision::Unauthorized { expire_app_cookie }
            }
        }
    }
}

/// Whether `next` is a safe place to send a browser after login: a same-origin relative path.
/// Refuses `//host`, `/\host`, schemes, and control or space characters that browsers strip.
pub fn is_safe_redirect(next: &str) -> bool {
    let bytes = next.as_bytes();
    bytes.first() == Some(&b'/')
        && !matches!(bytes.get(1), Some(b'/') | Some(b'\\'))
        && !next
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> PathRules {
        PathRules::new(
            "/_2fa".into(),
            vec!["/login".into(), "/api/login".into()],
            vec!["/logout".into()],
            vec!["/login".into(), "/static/".into()],
            "/login".into(),
        )
    }

    #[test]
    fn normalisation_table() {
        let ok = [
            ("/", "/"),
            ("/a/b", "/a/b"),
            ("//admin", "/admin"),
            ("/static//../admin", "/admin"),
            ("/static/../admin", "/admin"),
            ("/static/./x", "/static/x"),
            ("/static/%2e%2e/admin", "/admin"),
            ("/static/%2E%2E/admin", "/admin"),
            ("/static/.%2e/admin", "/admin"),
            ("/%61dmin", "/admin"),
            ("/a%20b", "/a%20b"),
            ("/a%3bb", "/a%3Bb"),
            ("/../../etc", "/etc"),
            ("/a/", "/a/"),
            ("/a/.", "/a/"),
            ("/a/..", "/"),
            ("/login;jsessionid=1", "/login;jsessionid=1"),
            ("/caf%C3%A9", "/caf%C3%A9"),
            ("*", "*"),
        ];
        for (raw, want) in ok {
            assert_eq!(normalize_path(raw).as_deref(), Ok(want), "{raw}");
        }
        let refused = [
            ("/static%2f..%2fadmin", PathError::EncodedSeparator),
            ("/static/..%2Fadmin", PathError::EncodedSeparator),
            ("/static/..%5cadmin", PathError::EncodedSeparator),
            ("/a%00", PathError::EncodedSeparator),
            ("/static/..;/admin", PathError::DotSegmentParameter),
            ("/static/.;x/admin", PathError::DotSegmentParameter),
            ("/static\\..\\admin", PathError::Backslash),
            ("/a%zz", PathError::BadEscape),
            ("/a%2", PathError::BadEscape),
            ("admin", PathError::NotAbsolute),
        ];
        for (raw, want) in refused {
            assert_eq!(normalize_path(raw), Err(want), "{raw}");
        }
    }

    #[test]
    fn decisions_on_tricky_paths() {
        use Decision::*;
        let r = rules();
        let get = |path: &str, s| {
            let path = normalize_path(path).unwrap();
            decide(&r, &Method::GET, &path, true, false, s)
        };
        let none = SessionState::None;
        assert_eq!(get("/_2fa/settings", none), Own);
        assert_eq!(get("/_2fa", none), Own);
        assert_eq!(
            get("/_2fax", none),
            SignIn {
                expire_app_cookie: false
            }
        );
        // Every method is watched on a login path (GET logins with query credentials).
        assert_eq!(get("/login", none), WatchLogin);
        assert_eq!(get("/login/", none), WatchLogin);
        assert_eq!(get("/login/form", none), Public);
        assert_eq!(
            get("/login-admin", none),
            SignIn {
                expire_app_cookie: false
            }
        );
        assert_eq!(get("/LOGIN", none), WatchLogin, "case is folded for logins");
        assert_eq!(
            get("/Static/app.css", none),
            SignIn {
                expire_app_cookie: false
            },
            "but not for public paths"
        );
        assert_eq!(get("/static/app.css", none), Public);
        assert_eq!(
            get("/static", none),
            SignIn {
                expire_app_cookie: false
            }
        );
        assert_eq!(
            get("/static/../admin", none),
            SignIn {
                expire_app_cookie: false
            }
        );
        assert_eq!(
            get("/static/%2e%2e/admin", none),
            SignIn {
                expire_app_cookie: false
            }
        );
        assert_eq!(
            get("//static/../dashboard", none),
            SignIn {
                expire_app_cookie: false
            }
        );
        assert_eq!(
            get("/login/../dashboard", none),
            SignIn {
                expire_app_cookie: false
            }
        );
        assert_eq!(get("/login;x", none), WatchLogin);
        assert_eq!(get("/dashboard", SessionState::Valid), Forward);
        assert_eq!(get("/dashboard", SessionState::MustEnroll), Enroll);
        assert_eq!(get("/logout", none), Logout);
        let post = |path: &str| decide(&r, &Method::POST, path, true, false, none);
        assert_eq!(post("/login"), WatchLogin);
        assert_eq!(post("/api/login"), WatchLogin);
        assert_eq!(
            post("/login/"),
            WatchLogin,
            "a trailing slash does not hide a login"
        );
        assert_eq!(post("/LOGIN"), WatchLogin, "nor does letter case");
        assert_eq!(
            post("/login;jsessionid=1"),
            WatchLogin,
            "nor a path parameter"
        );
        assert_eq!(
            decide(&r, &Method::PUT, "/login", true, false, none),
            WatchLogin
        );
        assert_eq!(
            post("/api;v=1/login"),
            WatchLogin,
            "a parameter on an earlier segment"
        );
        assert_eq!(
            post("/login;x/anything"),
            Unauthorized {
                expire_app_cookie: false
            },
            "not the login path"
        );
        for method in [Method::DELETE, Method::OPTIONS, Method::HEAD] {
            assert_eq!(decide(&r, &method, "/login", true, false, none), WatchLogin);
        }
        assert_eq!(post("/login.json"), WatchLogin, "nor a format suffix");
        assert_eq!(post("/api/login.xml;x=1"), WatchLogin);
        assert_eq!(post("/login.a.b"), WatchLogin, "Spring's suffix patterns");
        assert_eq!(
            post("/api/login.x/y"),
            Unauthorized {
                expire_app_cookie: false
            }
        );
        assert_eq!(
            post("/login/other"),
            Public,
            "paths below it are the app's business"
        );
        assert_eq!(
            post("/dashboard"),
            Unauthorized {
                expire_app_cookie: false
            }
        );
        let api = decide(&r, &Method::GET, "/api/me", false, true, none);
        assert_eq!(
            api,
            Unauthorized {
                expire_app_cookie: true
            }
        );
        let stale = decide(&r, &Method::GET, "/", true, true, none);
        assert_eq!(
            stale,
            SignIn {
                expire_app_cookie: true
            }
        );
    }

    #[test]
    fn session_ids_in_urls() {
        for (path, stripped) in [
            ("/account;jsessionid=ABC", "/account"),
            ("/account;JSESSIONID=ABC/x", "/account/x"),
            ("/a;x=1;jsessionid=ABC;y", "/a;x=1;y"),
            ("/app;jsessionid=A/whoami;session=B", "/app/whoami"),
            ("/account; jsessionid=ABC", "/account"),
        ] {
            assert_eq!(
                strip_session_params(path, "session").as_deref(),
                Some(stripped),
                "{path}"
            );
        }
        for path in ["/account", "/login;x=1", "/a;sessions=1"] {
            assert_eq!(strip_session_params(path, "session"), None, "{path}");
        }
        for (path, query) in [
            ("/(S(abc123))/page.aspx", None),
            ("/app/(F(ticket))/page", None),
            ("/account", Some("PHPSESSID=abc")),
            ("/account", Some("x=1&jsessionid=abc")),
            ("/account", Some("x=1;JSessionId=abc")),
            ("/account", Some("php%73essid=abc")),
        ] {
            assert!(carries_session_id(path, query), "{path} {query:?}");
        }
        for (path, query) in [
            ("/account", None),
            ("/(x)/y", None),
            ("/account", Some("sessions=2&tab=session")),
            ("/courses", Some("session=2026-fall")),
        ] {
            assert!(!carries_session_id(path, query), "{path} {query:?}");
        }
    }

    #[test]
    fn login_pages() {
        let r = rules();
        for path in [
            "/login",
            "/LOGIN/",
            "/login;jsessionid=1",
            "/login.html",
            "/api/login",
        ] {
            assert!(r.is_login_page(path), "{path}");
        }
        for path in ["/", "/dashboard", "/login/welcome", "/logins", "/.login"] {
            assert!(!r.is_login_page(path), "{path}");
        }
        let custom = PathRules::new(
            "/_2fa".into(),
            vec!["/login".into()],
            vec![],
            vec![],
            "/signin".into(),
        );
        assert!(custom.is_login_page("/SignIn"));
    }

    /// Vectors from known open-redirect bugs in auth proxies (see security-standards.md 6.1).
    #[test]
    fn redirect_targets() {
        for good in ["/", "/dashboard", "/a?b=c", "/a#b", "/caf%C3%A9"] {
            assert!(is_safe_redirect(good), "{good}");
        }
        for bad in [
            "//redirect",
            "/\\evil.com",
            "/ /evil.com",
            "/ \\evil.com",
            "/\t/evil.com",
            "/\t\\evil.com",
            "/\x0b/evil.com",
            "/\n/evil.com",
            "/\r\\evil.com",
            "/./\\evil.com",
            "foo.bar/redirect",
            "http://foo.bar.evil.corp/",
            "https://evil.corp/redirect?rd=foo.bar",
            "javascript:alert(1)",
            "data:text/html,x",
            "",
        ] {
            assert!(!is_safe_redirect(bad), "{bad:?}");
        }
    }
}
