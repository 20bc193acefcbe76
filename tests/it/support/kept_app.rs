//! A protected app that keeps the session id the browser brought across logins, for the tests
//! of sessions bound to an app session (`kept_sessions.rs`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use http::{Request, Response, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use twofa_proxy::config::Config;

use super::{TestBody, full, scripted_upstream};

/// An app that keeps the session id the browser brought across logins (PHP without
/// `session_regenerate_id()`, express-session without `regenerate()`), and that logs in by
/// more than the one field the proxy is told of: the `username` field, an `email` field, or
/// HTTP Basic on the login path (PHP's `$_SERVER['PHP_AUTH_USER']`). Like PHP behind nginx
/// (the body is buffered before the script runs) and Django (the session is loaded lazily,
/// after CSRF middleware has read `request.POST`), it reads its session only after the body.
#[derive(Default)]
pub struct Kept {
    /// Set-Cookie the (same) id on every login (Flask-Session, express-session `rolling`).
    pub resend: bool,
    sessions: Mutex<HashMap<String, String>>,
    next: AtomicU64,
}

/// The `sid` cookie as Node's `cookie` package (express-session), Go's `net/http`, Python's
/// `http.cookies` and Tomcat read it: surrounding double quotes dropped; Node and PHP also
/// percent-decode the value.
fn sid_of(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| *k == "sid")
        .map(|(_, v)| {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned()
        })
}

pub const ALICE_BASIC: &str = "Basic YWxpY2U6d29uZGVybGFuZA=="; // alice:wonderland

pub async fn kept_handle(app: Arc<Kept>, req: Request<Incoming>) -> Response<TestBody> {
    let path = req.uri().path().to_owned();
    let basic = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let sid = sid_of(req.headers());
    // Like PHP behind nginx and Django: the body first, then the session.
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let known = sid
        .clone()
        .filter(|s| app.sessions.lock().unwrap().contains_key(s));
    if path == "/login" {
        let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
        let password = form.get("password").map(String::as_str);
        let user = if let Some(u) = form.get("username") {
            Some(u.clone())
        } else if let Some(e) = form.get("email") {
            e.strip_suffix("@example.com").map(str::to_owned)
        } else if basic.as_deref() == Some(ALICE_BASIC) {
            Some("alice".to_owned())
        } else {
            None
        };
        let ok = match (user.as_deref(), password) {
            (Some("alice"), Some("wonderland")) | (Some("mallory"), Some("mallory")) => true,
            (Some("alice"), None) => basic.as_deref() == Some(ALICE_BASIC),
            _ => false,
        };
        if !ok {
            return Response::builder()
                .status(200)
                .body(full("<form method=post>login</form>"))
                .unwrap();
        }
        let user = user.unwrap();
        let mut res = Response::builder()
            .status(302)
            .header(header::LOCATION, "/")
            .header("x-authenticated-user", user.as_str());
        let id = match known {
            Some(id) if app.resend => {
                res = res.header(header::SET_COOKIE, format!("sid={id}; Path=/; HttpOnly"));
                id
            }
            Some(id) => id,
            None => {
                let id = format!("s{}", app.next.fetch_add(1, Ordering::Relaxed));
                res = res.header(header::SET_COOKIE, format!("sid={id}; Path=/; HttpOnly"));
                id
            }
        };
        app.sessions.lock().unwrap().insert(id, user);
        return res.body(full("")).unwrap();
    }
    let user = known.and_then(|id| app.sessions.lock().unwrap().get(&id).cloned());
    match user {
        Some(u) => Response::builder()
            .status(200)
            .body(full(format!("user={u}")))
            .unwrap(),
        None => Response::builder()
            .status(302)
            .header(header::LOCATION, "/login")
            .body(full(""))
            .unwrap(),
    }
}

pub const KEPT_TOML: &str = r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
[app]
name = "Kept"
login_paths = ["/login"]
success_status = [302]
success_cookie = "sid"
public_paths = ["/static/"]
[records]
path = ":memory:"

[session]
insecure_http_cookies = true
"#;

pub fn kept_config(addr: std::net::SocketAddr, extra: &[(&str, String)]) -> Config {
    let mut env = vec![("TWOFA_UPSTREAM__URL".to_owned(), format!("http://{addr}"))];
    env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    Config::from_toml(KEPT_TOML, env).unwrap()
}

/// The app on a free loopback port.
pub async fn kept_app(resend: bool) -> std::net::SocketAddr {
    let app = Arc::new(Kept {
        resend,
        ..Kept::default()
    });
    scripted_upstream(move |req| kept_handle(app.clone(), req)).await
}
