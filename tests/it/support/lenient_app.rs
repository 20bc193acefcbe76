//! A protected app that reads requests the way the most permissive frameworks do, so the
//! bypass tests can show where the proxy and an app could disagree:
//! - logins on any method at `/login`, `/login-get` and `/api/login`, the name and password
//!   taken from the query string and the body together (Flask's `request.values`, Servlet
//!   `getParameter`), the last copy winning;
//! - account names folded like Django (NFKC) and then lower-cased;
//! - a wrong password answered like Flask's flash-and-redirect: `302 /login?error=1` *with* a
//!   session cookie; a JSON login answered 200 (right) or 401 (wrong);
//! - cookies read like Python's parser and Tomcat's legacy one: split at `;` and `,`, names
//!   trimmed and compared without case, the last copy winning;
//! - `GET /` shows who the app thinks is signed in and the identity header the proxy set.
//!
//! Tokens are handed out in order, so a test can also ask the app directly for a victim's cookie
//! (`login_directly`), as an attacker who stole it would have it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use http::{Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use unicode_normalization::UnicodeNormalization;

use super::{TestBody, full, scripted_upstream};

pub const USERS: &[(&str, &str)] = &[
    ("alice", "wonderland"),
    ("mallory", "mallory"),
    ("carol", "singer"),
];

#[derive(Default)]
pub struct AppState {
    sessions: Mutex<HashMap<String, String>>,
    next: AtomicU64,
    /// Login requests that reached the app.
    pub logins_seen: AtomicUsize,
}

pub struct LenientApp {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
}

impl LenientApp {
    pub async fn start() -> Self {
        let state = Arc::new(AppState::default());
        let shared = state.clone();
        let addr = scripted_upstream(move |req| {
            let state = shared.clone();
            async move { handle(&state, req).await }
        })
        .await;
        Self { addr, state }
    }

    /// The app's session cookie value for `user`, obtained from the app itself (no proxy).
    pub fn login_directly(&self, user: &str) -> String {
        self.state.new_session(user)
    }
}

impl AppState {
    fn new_session(&self, user: &str) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let token = format!("tok{n}x{}", user.len());
        self.sessions
            .lock()
            .unwrap()
            .insert(token.clone(), user.to_owned());
        token
    }

    fn user_of(&self, token: &str) -> Option<String> {
        self.sessions.lock().unwrap().get(token).cloned()
    }
}

async fn handle(state: &AppState, req: Request<Incoming>) -> Response<TestBody> {
    let path = req.uri().path().to_owned();
    let identity = req
        .headers()
        .get("x-twofa-user")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    let cookie_user = lenient_cookie(req.headers(), "session").and_then(|t| state.user_of(&t));
    // Routed as leniently as the proxy watches: letter case, a trailing slash, `.json`.
    let route = path.to_ascii_lowercase();
    let route = route.trim_end_matches('/');
    let route = route.strip_suffix(".json").unwrap_or(route);
    match route {
        "/login" | "/login-get" | "/api/login" => login(state, req).await,
        "/logout" => redirect("/login", None),
        _ => match cookie_user {
            Some(user) => Response::builder()
                .status(200)
                .body(full(format!("user={user} identity={identity}")))
                .unwrap(),
            None => redirect("/login", None),
        },
    }
}

async fn login(state: &AppState, req: Request<Incoming>) -> Response<TestBody> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let mut params: Vec<(String, String)> =
        form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let json = content_type.contains("json");
    if json {
        if let Ok(serde_json::Value::Object(map)) = serde_json::from_slice(&body) {
            for (k, v) in map {
                if let Some(s) = v.as_str() {
                    params.push((k, s.to_owned()));
                }
            }
        }
    } else if content_type.contains("urlencoded") {
        params.extend(form_urlencoded::parse(&body).into_owned());
    }
    let value = |name: &str| {
        params
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let (Some(name), password) = (value("username"), value("password")) else {
        // The login form itself.
        return Response::builder()
            .status(200)
            .body(full("<form method=post>login</form>"))
            .unwrap();
    };
    state.logins_seen.fetch_add(1, Ordering::Relaxed);
    let folded: String = name.nfkc().collect::<String>().trim().to_lowercase();
    let accepted = USERS
        .iter()
        .find(|(u, p)| *u == folded && Some(*p) == password.as_deref())
        .map(|(u, _)| *u);
    match (accepted, json) {
        (Some(user), false) => redirect("/", Some(&state.new_session(user))),
        (Some(user), true) => {
            let token = state.new_session(user);
            Response::builder()
                .status(200)
                .header(header::SET_COOKIE, format!("session={token}; Path=/"))
                .body(full(r#"{"ok":true}"#))
                .unwrap()
        }
        // Flask: flash("Invalid credentials") stores the message in a fresh session cookie.
        (None, false) => redirect("/login?error=1", Some(&state.new_session("<flash>"))),
        (None, true) => Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header(header::SET_COOKIE, "session=flash; Path=/")
            .body(full(r#"{"ok":false}"#))
            .unwrap(),
    }
}

fn redirect(location: &str, cookie: Option<&str>) -> Response<TestBody> {
    let mut res = Response::builder()
        .status(302)
        .header(header::LOCATION, location);
    if let Some(token) = cookie {
        res = res.header(header::SET_COOKIE, format!("session={token}; Path=/"));
    }
    res.body(full("")).unwrap()
}

/// The most permissive reading of cookie `name`: every `Cookie` header, pairs split at `;` and
/// `,`, names trimmed and compared without case, the last copy winning.
fn lenient_cookie(headers: &http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| std::str::from_utf8(v.as_bytes()).ok())
        .flat_map(|v| v.split([';', ',']))
        .filter_map(|pair| pair.split_once('='))
        .filter(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_owned())
        .next_back()
}
