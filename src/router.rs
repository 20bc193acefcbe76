//! The proxy's service for one worker: normalises the path, lets the gate decide, and carries
//! the decision out -- the proxy's own pages, the watched login, or forwarding with or without
//! an identity. Errors become responses here and only here.
//!
//! Message framing (RFC 9112 6.1/6.3, request smuggling) is hyper's: it rejects invalid or
//! conflicting `Content-Length`/`Transfer-Encoding`, drops `Content-Length` when chunked
//! encoding is present and closes that connection after answering. `tests/it/malformed.rs`
//! pins that behaviour for the hyper version in Cargo.toml.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderValue, Request, Response, StatusCode, Uri, header};
use hyper::body::Incoming;

use crate::body::{Body, BodyRead};
use crate::listener::ConnInfo;
use crate::login::gate::{self, Decision, SessionState};
use crate::login::intercept;
use crate::metrics::RouteClass;
use crate::session::cookie;
use crate::state::Core;
use crate::upstream::{Tunnel, TunnelEnd, Upstream, headers};
use crate::web::Answer;
use crate::web::pages::{self, Frame};
use crate::web::refusal::{Refusal, Reply};
use crate::words::{LanguageSetting, Words};

pub struct Router {
    core: Arc<Core>,
    upstream: Upstream,
}

impl Router {
    pub fn new(core: Arc<Core>, upstream: Upstream) -> Self {
        Self { core, upstream }
    }

    pub async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let started = Instant::now();
        let conn = req.extensions().get::<ConnInfo>().copied();
        let method = req.method().clone();
        let (class, res) = self.route(req, conn).await;
        self.core.metrics.count(class, res.status());
        tracing::debug!(
            target: "twofa_proxy::access",
            %method,
            status = res.status().as_u16(),
            micros = started.elapsed().as_micros() as u64,
            peer = conn.map(|c| c.peer.ip().to_string()),
        );
        res
    }

    async fn route(
        &self,
        mut req: Request<Incoming>,
        conn: Option<ConnInfo>,
    ) -> (RouteClass, Response<Body>) {
        let core = &*self.core;
        let reply_to = ReplyTo::of(core, req.headers());
        let wants_html = reply_to.html;
        if !one_host(&req) {
            tracing::debug!("refused a request naming two hosts");
            return (
                RouteClass::Rejected,
                reply_to.error(core, StatusCode::BAD_REQUEST),
            );
        }
        let path = match gate::normalize_path(req.uri().path()) {
            Ok(p) => p.into_owned(),
            Err(e) => {
                tracing::debug!(reason = ?e, "refused an ambiguous path");
                return (
                    RouteClass::Rejected,
                    reply_to.error(core, StatusCode::BAD_REQUEST),
                );
            }
        };
        // A session id in the URL would reach the app past the cookie binding: path parameters
        // are dropped, the rest refused.
        let path = match gate::strip_session_params(&path, &core.config.app.success_cookie) {
            Some(stripped) => stripped,
            None => path,
        };
        if gate::carries_session_id(&path, req.uri().query()) {
            tracing::debug!("refused a session id in the URL");
            return (
                RouteClass::Rejected,
                reply_to.error(core, StatusCode::BAD_REQUEST),
            );
        }
        if core.rules.is_own(&path) {
            // Boxed, like every branch off the forwarding path: a future holds the state of all
            // its branches, and this one is allocated (and moved) for every request.
            return (
                RouteClass::Own,
                Box::pin(crate::web::handle(core, req, &path)).await,
            );
        }
        let Some(conn) = conn else {
            // The listener always inserts ConnInfo; without it X-Forwarded-For cannot be honest.
            tracing::error!("request without connection info");
            return (
                RouteClass::Rejected,
                reply_to.error(core, StatusCode::INTERNAL_SERVER_ERROR),
            );
        };
        if path != req.uri().path() {
            // Forward exactly the path that was decided on.
            let rebuilt = match req.uri().query() {
                Some(q) => format!("{path}?{q}"),
                None => path.clone(),
            };
            match rebuilt.parse::<Uri>() {
                Ok(uri) => *req.uri_mut() = uri,
                // Never forward a path other than the one decided on.
                Err(_) => {
                    return (
                        RouteClass::Rejected,
                        reply_to.error(core, StatusCode::BAD_REQUEST),
                    );
                }
            }
        }

        let method = req.method().clone();
        let rules = &core.rules;
        let needs_session =
            !(rules.is_public(&path) || rules.is_logout(&path) || rules.is_login(&path));
        let session = if needs_session {
            match core.sessions.load(req.headers()).await {
                Ok(s) => s,
                Err(e) => return (RouteClass::Upstream, self.refuse(e.into(), &reply_to)),
            }
        } else {
            None
        };
        // A proxy session only vouches for the app session it was issued with: an app cookie
        // from any other login (say, one the app accepted at a path nobody watched) is refused.
        // Every copy and every spelling an app server could read counts (see `AppCookies`).
        let app_cookies = cookie::app_cookies(req.headers(), &core.config.app.success_cookie);
        let foreign_app_session = match &session {
            Some(s) => {
                app_cookies.ambiguous
                    || app_cookies
                        .values
                        .iter()
                        .any(|value| !core.bindings.vouches_for(&s.record, value))
            }
            None => false,
        };
        if foreign_app_session && let Some(s) = &session {
            tracing::warn!(target: "audit", event = "app_session_mismatch", user = s.record.user);
        }
        let state = match &session {
            None => SessionState::None,
            Some(_) if foreign_app_session => SessionState::None,
            Some(s) if s.record.must_enroll => SessionState::MustEnroll,
            Some(_) => SessionState::Valid,
        };
        let has_app_cookie = app_cookies.present();
        let app_cookie_bindings: Vec<std::sync::Arc<str>> = if state == SessionState::Valid {
            app_cookies
                .values
                .iter()
                .map(|v| core.bindings.hash(v))
                .collect()
        } else {
            Vec::new()
        };
        let decision = gate::decide(rules, &method, &path, wants_html, has_app_cookie, state);

        let res = match decision {
            Decision::Own => Ok(reply_to.error(core, StatusCode::NOT_FOUND)),
            Decision::WatchLogin => {
                Box::pin(intercept::watch_login(core, &self.upstream, req, &conn)).await
            }
            Decision::Public => {
                let session_id =
                    cookie::find(req.headers(), core.sessions.names.session).map(str::to_owned);
                // An ambiguous spelling never rolls a binding.
                let request_cookies: Vec<String> = if app_cookies.ambiguous {
                    Vec::new()
                } else {
                    app_cookies.values.iter().map(|v| (*v).to_owned()).collect()
                };
                // A public tunnel carries no identity; it lives until either side closes it.
                let res = self
                    .forward(req, None, &conn, &reply_to, Tunnel::UntilClosed)
                    .await;
                Box::pin(self.follow_on_public(session_id, &request_cookies, res)).await
            }
            Decision::Forward => match &session {
                Some(current) => {
                    // A tunnel outlives this request's gate check: it closes once the session
                    // behind it ends. Built only for a request that asks for one.
                    let tunnel = if self.upstream.would_tunnel(&req) {
                        Tunnel::UntilEnded(self.session_ended(current.id.clone()))
                    } else {
                        Tunnel::Never
                    };
                    // Counted until the app answered: a login on this app session waits.
                    let _in_flight: Vec<_> = app_cookie_bindings
                        .into_iter()
                        .map(|b| core.bindings.enter(b))
                        .collect();
                    let res = self
                        .forward(req, Some(&current.record.user), &conn, &reply_to, tunnel)
                        .await;
                    self.follow_app_session(current, res).await
                }
                None => Ok(reply_to.error(core, StatusCode::INTERNAL_SERVER_ERROR)),
            },
            Decision::Logout => Box::pin(self.logout(req, &conn, &reply_to)).await,
            Decision::Enroll => Ok(pages::redirect(&format!("{}/settings", core.prefix()))),
            Decision::SignIn { expire_app_cookie } => {
                // Where to come back to: only ever a same-origin path (the login page passes
                // it on, and apps do not all check it).
                let target = req
                    .uri()
                    .path_and_query()
                    .map(|p| p.as_str())
                    .filter(|t| gate::is_safe_redirect(t))
                    .unwrap_or("/");
                let next: String = form_urlencoded::byte_serialize(target.as_bytes()).collect();
                let app = &core.config.app;
                let mut res =
                    pages::redirect(&format!("{}?{}={next}", app.login_page, app.next_param));
                if expire_app_cookie {
                    res.headers_mut().append(
                        header::SET_COOKIE,
                        cookie::expire_app_cookie(&app.success_cookie),
                    );
                }
                Ok(res)
            }
            Decision::Unauthorized { expire_app_cookie } => {
                let mut res = pages::json(
                    StatusCode::UNAUTHORIZED,
                    &serde_json::json!({ "error": "unauthenticated", "message": reply_to.words(core).api_sign_in_first }),
                );
                pages::vary_language(&mut res, core.config.ui.language);
                if expire_app_cookie {
                    let name = &core.config.app.success_cookie;
                    res.headers_mut()
                        .append(header::SET_COOKIE, cookie::expire_app_cookie(name));
                }
                Ok(res)
            }
        };
        match res {
            Ok(res) => (RouteClass::Upstream, res),
            Err(refusal) => (RouteClass::Upstream, self.refuse(refusal, &reply_to)),
        }
    }

    async fn forward(
        &self,
        mut req: Request<Incoming>,
        user: Option<&str>,
        conn: &ConnInfo,
        reply_to: &ReplyTo,
        tunnel: Tunnel,
    ) -> Response<Body> {
        let core = &*self.core;
        headers::prepare(
            req.headers_mut(),
            &core.sessions.names,
            &core.config.app.identity_header,
            user,
        );
        let read = req.extensions_mut().remove::<BodyRead>();
        match self
            .upstream
            .forward_with(req.map(|body| Body::request(body, read)), conn, tunnel)
            .await
        {
            Ok(res) => res,
            Err(e) => self.refuse(e.into(), reply_to),
        }
    }

    /// Resolves once session `id` has ended (logout, 2FA changed or reset, idle or absolute
    /// timeout), checked every `upstream.tunnel_session_check`. A store error counts as ended:
    /// a tunnel whose session cannot be checked is closed (fail closed).
    fn session_ended(&self, id: String) -> TunnelEnd {
        let core = self.core.clone();
        let every = core.config.upstream.tunnel_session_check;
        Box::pin(async move {
            loop {
                tokio::time::sleep(every).await;
                match core.sessions.alive(&id).await {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "store unavailable; closing a tunnel");
                        return;
                    }
                }
            }
        })
    }

    /// The app may replace its session cookie on any answer (rolling sessions); the new value
    /// becomes the session's binding. With `user_header` configured, only an answer that names
    /// this session's user may do so (anything else is a login nobody watched: its cookie is
    /// withheld). Without it, such a login cannot be told from a rotation: list every login
    /// endpoint in `login_paths`.
    async fn follow_app_session(
        &self,
        current: &crate::session::Current,
        mut res: Response<Body>,
    ) -> Answer {
        let core = &*self.core;
        let app = &core.config.app;
        // The app's word on the user is for the proxy only, on every answer.
        let named = app
            .user_header
            .as_ref()
            .and_then(|h| res.headers_mut().remove(h));
        // Browsers keep the last Set-Cookie of a name.
        let Some(value) = res
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .rfind(|v| cookie::sets_cookie(v, &app.success_cookie))
            .and_then(cookie::cookie_value)
        else {
            return Ok(res);
        };
        let hash = core.bindings.hash(&value);
        if current.record.app_cookie.as_deref() == Some(&*hash) {
            return Ok(res);
        }
        let same_user = match &app.user_header {
            None => true,
            Some(_) => named
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .and_then(|u| core.canonical_user(u))
                .is_some_and(|u| u == current.record.user),
        };
        if !same_user {
            tracing::warn!(target: "audit", event = "unwatched_login_refused", user = current.record.user);
            cookie::withhold(res.headers_mut(), &app.success_cookie);
            return Ok(res);
        }
        let record = crate::store::SessionRecord {
            app_cookie_prev: current.record.app_cookie.clone(),
            app_cookie: Some(hash.to_string()),
            ..current.record.clone()
        };
        Box::pin(core.sessions.save(&current.id, &record)).await?;
        Box::pin(core.sessions.bind_app_session(&current.id, &hash)).await?;
        Ok(res)
    }

    /// A public page may roll the app's cookie too (its middleware runs everywhere). Followed
    /// only for a live session whose request carried the app cookie it vouches for.
    async fn follow_on_public(
        &self,
        session_id: Option<String>,
        request_cookies: &[String],
        res: Response<Body>,
    ) -> Answer {
        let core = &*self.core;
        let app = &core.config.app;
        let rolls = res
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .any(|v| cookie::sets_cookie(v, &app.success_cookie));
        let Some(id) = session_id.filter(|_| rolls && !request_cookies.is_empty()) else {
            return Ok(res);
        };
        let Some(current) = core.sessions.load_id(&id).await? else {
            return Ok(res);
        };
        let vouched = request_cookies
            .iter()
            .all(|v| core.bindings.vouches_for(&current.record, v));
        if current.record.must_enroll || !vouched {
            return Ok(res);
        }
        self.follow_app_session(&current, res).await
    }

    /// Logout paths end the proxy session too, then go to the app as usual.
    async fn logout(&self, req: Request<Incoming>, conn: &ConnInfo, reply_to: &ReplyTo) -> Answer {
        let core = &*self.core;
        let id = cookie::find(req.headers(), core.sessions.names.session).map(str::to_owned);
        if let Some(id) = &id {
            if let Some(s) = core.store_session_user(id).await? {
                tracing::info!(target: "audit", event = "logout", user = s);
            }
            core.sessions.end(id).await?;
        }
        let mut res = self.forward(req, None, conn, reply_to, Tunnel::Never).await;
        if id.is_some() {
            res.headers_mut()
                .append(header::SET_COOKIE, core.sessions.clear_cookie());
        }
        Ok(res)
    }

    /// Fail closed: a refusal (the store unreachable included) forwards nothing.
    fn refuse(&self, refusal: Refusal, reply_to: &ReplyTo) -> Response<Body> {
        let mut res = refusal.respond(&self.core, reply_to.reply(&self.core));
        pages::vary_language(&mut res, self.core.config.ui.language);
        res
    }
}

/// How a refusal on this request is written: a page or JSON, in the words its `Accept-Language`
/// asks for. The header is kept as it came (a reference count, not a copy) and read only when
/// a refusal is written, so forwarding never parses it; a second line (rare) is kept too, since
/// the lines are one list.
struct ReplyTo {
    html: bool,
    languages: Option<HeaderValue>,
    more_languages: Vec<HeaderValue>,
}

impl ReplyTo {
    fn of(core: &Core, headers: &http::HeaderMap) -> Self {
        let (mut languages, mut more_languages) = (None, Vec::new());
        if core.config.ui.language == LanguageSetting::Auto {
            let mut lines = headers.get_all(header::ACCEPT_LANGUAGE).iter();
            languages = lines.next().cloned();
            more_languages.extend(lines.cloned());
        }
        ReplyTo {
            html: pages::wants_html(headers),
            languages,
            more_languages,
        }
    }

    fn words(&self, core: &Core) -> &'static Words {
        let lines = self.languages.iter().chain(&self.more_languages);
        core.config.ui.language.for_values(lines).words()
    }

    fn reply(&self, core: &Core) -> Reply {
        let w = self.words(core);
        if self.html {
            Reply::Html(w)
        } else {
            Reply::Json(w)
        }
    }

    /// The branded error page (or JSON error) for `status`.
    fn error(&self, core: &Core, status: StatusCode) -> Response<Body> {
        let mut res = pages::error(&Frame::new(core, self.words(core), ""), status, self.html);
        pages::vary_language(&mut res, core.config.ui.language);
        res
    }
}

/// RFC 9113 8.3.1: an HTTP/2 request's `Host` must name what its `:authority` names, or the
/// app and the proxy could each read another host. The same holds for an HTTP/1.1 request in
/// absolute form (RFC 9112 3.2.2). More than one `Host` is refused too (RFC 9112 3.2).
fn one_host<B>(req: &Request<B>) -> bool {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let Some(host) = hosts.next() else {
        return true;
    };
    if hosts.next().is_some() {
        return false;
    }
    match req.uri().authority() {
        Some(authority) => host
            .as_bytes()
            .eq_ignore_ascii_case(authority.as_str().as_bytes()),
        None => true,
    }
}

/// tower glue: the router is shared by a worker's connections; each call clones an `Arc`.
#[derive(Clone)]
pub struct RouterService(pub Arc<Router>);

impl tower::Service<Request<Incoming>> for RouterService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let router = self.0.clone();
        Box::pin(async move { Ok(router.handle(req).await) })
    }
}
