//! The demo application standing in for DCKAP Integrator: its own password login (form and JSON),
//! its own session cookie, a dashboard and an Account Settings page linking to the 2FA settings.
//! Its `/debug/*` endpoints make it the upstream that tests and benches measure against.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use askama::Template;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::{Frame, SizeHint};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::body::BoxError;

/// The demo's users: username, password, email.
pub const USERS: &[(&str, &str, &str)] = &[
    ("alice", "wonderland", "alice@example.com"),
    ("bob", "builder", "bob@example.com"),
    ("carol", "singer", "carol@example.com"),
];

/// The app's own session cookie (what `[app] success_cookie` names).
pub const SESSION_COOKIE: &str = "session";

type DemoBody = http_body_util::combinators::BoxBody<Bytes, BoxError>;

#[derive(Clone)]
pub struct DemoApp {
    inner: Arc<Inner>,
}

struct Inner {
    sessions: Mutex<HashMap<String, String>>,
    settings_url: String,
    /// `load1` .. `loadN` (password [`LOAD_PASSWORD`]) exist too, for load tests.
    load_users: u32,
}

/// The password of the generated `loadN` users.
pub const LOAD_PASSWORD: &str = "load-password";

pub struct User {
    pub name: String,
}

#[derive(Template)]
#[template(path = "demo/login.html")]
struct LoginPage<'a> {
    user: Option<User>,
    failed: bool,
    next: &'a str,
}

#[derive(Template)]
#[template(path = "demo/dashboard.html")]
struct DashboardPage {
    user: Option<User>,
    name: String,
}

#[derive(Template)]
#[template(path = "demo/account.html")]
struct AccountPage<'a> {
    user: Option<User>,
    name: String,
    email: String,
    settings_url: &'a str,
}

impl DemoApp {
    /// `settings_url` is where "Enable Two-Factor Authentication" points (the proxy's settings).
    pub fn new(settings_url: &str) -> Self {
        Self::with_load_users(settings_url, 0)
    }

    /// A demo app that also knows `load1` .. `load{count}` (the load benches' users).
    pub fn with_load_users(settings_url: &str, count: u32) -> Self {
        Self {
            inner: Arc::new(Inner {
                sessions: Mutex::new(HashMap::new()),
                settings_url: settings_url.to_owned(),
                load_users: count,
            }),
        }
    }

    /// Serves on `listener` until `stop` fires.
    pub async fn serve(self, listener: TcpListener, stop: CancellationToken) {
        loop {
            let stream = tokio::select! {
                _ = stop.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(_) => { tokio::time::sleep(Duration::from_millis(20)).await; continue; }
                },
            };
            let _ = stream.set_nodelay(true);
            let app = self.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let app = app.clone();
                    async move { Ok::<_, Infallible>(app.handle(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    }

    /// Binds `addr` and serves in the background; returns the bound address.
    pub async fn spawn(
        self,
        addr: SocketAddr,
        stop: CancellationToken,
    ) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        tokio::spawn(self.serve(listener, stop));
        Ok(bound)
    }

    pub async fn handle(&self, req: Request<Incoming>) -> Response<DemoBody> {
        let path = req.uri().path().to_owned();
        match (req.method().clone(), path.as_str()) {
            (Method::GET, "/login") => {
                let next = query_param(&req, "next").unwrap_or_else(|| "/".into());
                let page = LoginPage {
                    user: None,
                    failed: false,
                    next: &next,
                };
                html(StatusCode::OK, page.render())
            }
            (Method::POST, "/login") => self.form_login(req).await,
            (Method::POST, "/api/login") => self.json_login(req).await,
            (Method::GET | Method::POST, "/logout") => {
                if let Some(token) = session_token(&req) {
                    self.sessions().remove(&token);
                }
                let mut res = redirect("/login");
                set_cookie(
                    &mut res,
                    &format!("{SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax"),
                );
                res
            }
            (Method::GET, "/static/app.css") => {
                let mut res = bytes(
                    StatusCode::OK,
                    "text/css",
                    Bytes::from_static(include_bytes!("app.css")),
                );
                res.headers_mut().insert(
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("max-age=3600"),
                );
                res
            }
            (Method::GET, "/debug/hello") => {
                bytes(StatusCode::OK, "text/plain", Bytes::from_static(b"hello\n"))
            }
            (Method::GET, "/debug/headers") => echo_headers(&req),
            (Method::GET, "/debug/bytes") => {
                let n = query_param(&req, "n")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1024);
                let mut res = Response::new(Repeat::new(n).boxed());
                res.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                res
            }
            (Method::POST, "/debug/upload") => {
                let mut body = req.into_body();
                let mut total: u64 = 0;
                while let Some(frame) = body.frame().await {
                    match frame {
                        Ok(f) => total += f.data_ref().map_or(0, |d| d.len() as u64),
                        Err(_) => {
                            return text(StatusCode::BAD_REQUEST, "upload broke off\n".into());
                        }
                    }
                }
                json(StatusCode::OK, serde_json::json!({ "bytes": total }))
            }
            (Method::GET, "/debug/slow") => {
                let ms = query_param(&req, "ms")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1000);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                text(StatusCode::OK, format!("slept {ms} ms\n"))
            }
            (Method::GET, _) => match self.current_user(&req) {
                None => redirect(&format!("/login?next={}", encode(&path))),
                Some(name) => match path.as_str() {
                    "/" => html(
                        StatusCode::OK,
                        DashboardPage {
                            user: Some(User { name: name.clone() }),
                            name,
                        }
                        .render(),
                    ),
                    "/account" => {
                        let email = USERS
                            .iter()
                            .find(|u| u.0 == name)
                            .map_or_else(|| format!("{name}@example.com"), |u| u.2.to_owned());
                        let settings_url = &self.inner.settings_url;
                        html(
                            StatusCode::OK,
                            AccountPage {
                                user: Some(User { name: name.clone() }),
                                name,
                                email,
                                settings_url,
                            }
                            .render(),
                        )
                    }
                    "/api/me" => json(StatusCode::OK, serde_json::json!({ "user": name })),
                    _ => text(StatusCode::NOT_FOUND, "no such page\n".into()),
                },
            },
            _ => text(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed\n".into(),
            ),
        }
    }

    async fn form_login(&self, req: Request<Incoming>) -> Response<DemoBody> {
        let Some(body) = read_small(req).await else {
            return text(StatusCode::BAD_REQUEST, "bad form\n".into());
        };
        let fields: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
        let field = |k: &str| fields.get(k).map(String::as_str).unwrap_or("");
        // The product's own rule: browsers read `/\t/evil.com` as `//evil.com`.
        let next = match field("next") {
            n if crate::login::gate::is_safe_redirect(n) => n.to_owned(),
            _ => "/".to_owned(),
        };
        match self.check_password(field("username"), field("password")) {
            Some(user) => {
                let mut res = redirect(&next);
                set_cookie(&mut res, &self.new_session(&user));
                name_user(&mut res, &user);
                res
            }
            None => {
                let page = LoginPage {
                    user: None,
                    failed: true,
                    next: &next,
                };
                html(StatusCode::UNAUTHORIZED, page.render())
            }
        }
    }

    async fn json_login(&self, req: Request<Incoming>) -> Response<DemoBody> {
        let Some(body) = read_small(req).await else {
            return text(StatusCode::BAD_REQUEST, "bad body\n".into());
        };
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let field = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_owned();
        match self.check_password(&field("username"), &field("password")) {
            Some(user) => {
                let mut res = json(
                    StatusCode::OK,
                    serde_json::json!({ "ok": true, "user": user }),
                );
                set_cookie(&mut res, &self.new_session(&user));
                name_user(&mut res, &user);
                res
            }
            None => json(
                StatusCode::UNAUTHORIZED,
                serde_json::json!({ "ok": false, "error": "invalid_credentials" }),
            ),
        }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        // A poisoned lock only means another request panicked mid-update; the map is still usable.
        self.inner
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn new_session(&self, user: &str) -> String {
        let mut raw = [0u8; 16];
        let _ = getrandom::fill(&mut raw);
        let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        self.sessions().insert(token.clone(), user.to_owned());
        format!("{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax")
    }

    fn current_user(&self, req: &Request<Incoming>) -> Option<String> {
        let token = session_token(req)?;
        self.sessions().get(&token).cloned()
    }

    fn check_password(&self, username: &str, password: &str) -> Option<String> {
        // Like many real apps, the demo ignores the case of the username.
        let username = username.trim().to_lowercase();
        if let Some((u, _, _)) = USERS
            .iter()
            .find(|(u, p, _)| *u == username && *p == password)
        {
            return Some((*u).to_owned());
        }
        let n: u32 = username.strip_prefix("load")?.parse().ok()?;
        (n >= 1 && n <= self.inner.load_users && password == LOAD_PASSWORD).then_some(username)
    }
}

fn session_token<B>(req: &Request<B>) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.to_owned())
}

async fn read_small(req: Request<Incoming>) -> Option<Bytes> {
    Limited::new(req.into_body(), 64 * 1024)
        .collect()
        .await
        .ok()
        .map(|c| c.to_bytes())
}

fn query_param<B>(req: &Request<B>, name: &str) -> Option<String> {
    let query = req.uri().query()?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn echo_headers(req: &Request<Incoming>) -> Response<DemoBody> {
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    json(
        StatusCode::OK,
        serde_json::json!({
            "method": req.method().as_str(),
            "uri": req.uri().to_string(),
            "version": format!("{:?}", req.version()),
            "headers": headers,
        }),
    )
}

fn redirect(location: &str) -> Response<DemoBody> {
    let mut res = text(StatusCode::SEE_OTHER, String::new());
    if let Ok(v) = HeaderValue::from_str(location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    res
}

/// Header naming the logged-in user, for proxies configured with `[app] user_header`.
pub const USER_HEADER: &str = "x-demo-user";

fn name_user(res: &mut Response<DemoBody>, user: &str) {
    if let Ok(v) = HeaderValue::from_str(user) {
        res.headers_mut().insert(USER_HEADER, v);
    }
}

fn set_cookie(res: &mut Response<DemoBody>, cookie: &str) {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
}

fn html(status: StatusCode, rendered: askama::Result<String>) -> Response<DemoBody> {
    match rendered {
        Ok(page) => bytes(status, "text/html; charset=utf-8", Bytes::from(page)),
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "template error\n".into()),
    }
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<DemoBody> {
    bytes(status, "application/json", Bytes::from(value.to_string()))
}

fn text(status: StatusCode, body: String) -> Response<DemoBody> {
    bytes(status, "text/plain; charset=utf-8", Bytes::from(body))
}

fn bytes(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<DemoBody> {
    let mut res = Response::new(Full::new(body).map_err(|never| match never {}).boxed());
    *res.status_mut() = status;
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}

/// `n` bytes produced 64 KiB at a time, never held whole: a large download for streaming tests.
struct Repeat {
    left: u64,
    chunk: Bytes,
}

impl Repeat {
    fn new(n: u64) -> Self {
        Self {
            left: n,
            chunk: Bytes::from(vec![b'x'; 64 * 1024]),
        }
    }
}

impl http_body::Body for Repeat {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(self.chunk.len() as u64) as usize;
        self.left -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_ignore_username_case_only() {
        let app = DemoApp::with_load_users("/", 5);
        assert_eq!(
            app.check_password(" ALICE ", "wonderland").as_deref(),
            Some("alice")
        );
        assert_eq!(app.check_password("alice", "WONDERLAND"), None);
        assert_eq!(app.check_password("mallory", "x"), None);
        assert_eq!(
            app.check_password("load5", LOAD_PASSWORD).as_deref(),
            Some("load5")
        );
        assert_eq!(app.check_password("load6", LOAD_PASSWORD), None);
        assert_eq!(
            DemoApp::new("/").check_password("load1", LOAD_PASSWORD),
            None
        );
    }
}
