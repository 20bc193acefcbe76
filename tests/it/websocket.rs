//! Upgrades through the proxy: WebSocket tunnels to a real echo server on public and session
//! paths, closed once their session ends; never a tunnel for other protocols (h2c), for a list
//! of protocols, on the watched login or logout, or from a switch the proxy did not ask for.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use twofa_proxy::clock::ManualClock;

use crate::support::agent::Agent;
use crate::support::site::{login_config, password_login};
use crate::support::*;

async fn echo_server() -> std::net::SocketAddr {
    scripted_upstream(|mut req: Request<hyper::body::Incoming>| async move {
        let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
            return Response::builder()
                .status(400)
                .body(full("not a websocket request"))
                .unwrap();
        };
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let upgraded = upgrade.await.unwrap();
            let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                None,
            )
            .await;
            while let Some(Ok(msg)) = ws.next().await {
                if msg.is_close() {
                    break;
                }
                if ws.send(msg).await.is_err() {
                    break;
                }
            }
        });
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "Upgrade")
            .header(header::UPGRADE, "websocket")
            .header("sec-websocket-accept", derive_accept_key(key.as_bytes()))
            .body(full(""))
            .unwrap()
    })
    .await
}

#[tokio::test]
async fn websocket_echo_through_the_proxy() {
    let up = echo_server().await;
    let proxy = proxy(up, &[]).await;
    let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut ws, res) = tokio_tungstenite::client_async(format!("ws://{}/ws", proxy.addr), stream)
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS);
    for i in 0..5 {
        ws.send(Message::text(format!("hello {i}"))).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::text(format!("hello {i}"))
        );
    }
    let blob = vec![42u8; 200_000];
    ws.send(Message::binary(blob.clone())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(blob));
    ws.close(None).await.unwrap();
}

/// What the switching app saw: each request's method, path and headers.
type Seen = Arc<Mutex<Vec<(String, String, HeaderMap)>>>;

/// An app that switches to whatever protocol it is asked for (an h2c-capable app would), echoes
/// WebSockets, switches unasked at `/surprise`, answers a WebSocket request with `h2c` at
/// `/wrong-protocol`, and otherwise answers like the demo's login: a POST to `/login` sets the
/// app's `session` cookie, `/logout` clears it.
async fn switching_app(seen: Seen) -> SocketAddr {
    scripted_upstream(move |mut req: Request<hyper::body::Incoming>| {
        let seen = seen.clone();
        async move {
            let path = req.uri().path().to_owned();
            seen.lock().unwrap().push((
                req.method().to_string(),
                path.clone(),
                req.headers().clone(),
            ));
            let asked = req.headers().get(header::UPGRADE).cloned();
            let switch = |protocol: &str| {
                Response::builder()
                    .status(StatusCode::SWITCHING_PROTOCOLS)
                    .header(header::CONNECTION, "Upgrade")
                    .header(header::UPGRADE, protocol)
                    .body(full(""))
                    .unwrap()
            };
            if path == "/surprise" {
                return switch("websocket");
            }
            if let Some(asked) = asked {
                if path == "/wrong-protocol" {
                    return switch("h2c");
                }
                let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
                    // Not a WebSocket: take the socket as the asked-for protocol would.
                    let upgrade = hyper::upgrade::on(&mut req);
                    tokio::spawn(async move {
                        if let Ok(io) = upgrade.await {
                            let mut io = TokioIo::new(io);
                            let _ = io.write_all(b"tunnel to the app open").await;
                            let _ = tokio::time::timeout(
                                Duration::from_secs(10),
                                io.read(&mut [0u8; 64]),
                            )
                            .await;
                        }
                    });
                    return switch(asked.to_str().unwrap());
                };
                let upgrade = hyper::upgrade::on(&mut req);
                tokio::spawn(async move {
                    let Ok(upgraded) = upgrade.await else { return };
                    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                        TokioIo::new(upgraded),
                        Role::Server,
                        None,
                    )
                    .await;
                    while let Some(Ok(msg)) = ws.next().await {
                        if msg.is_close() || ws.send(msg).await.is_err() {
                            break;
                        }
                    }
                });
                let mut res = switch(asked.to_str().unwrap());
                res.headers_mut().insert(
                    "sec-websocket-accept",
                    derive_accept_key(key.as_bytes()).parse().unwrap(),
                );
                return res;
            }
            match (req.method().as_str(), path.as_str()) {
                ("POST", "/login") => Response::builder()
                    .status(StatusCode::SEE_OTHER)
                    .header(header::LOCATION, "/")
                    .header(
                        header::SET_COOKIE,
                        "session=app-session-1; Path=/; HttpOnly",
                    )
                    .body(full(""))
                    .unwrap(),
                ("POST", "/logout") => Response::builder()
                    .status(StatusCode::SEE_OTHER)
                    .header(header::LOCATION, "/login")
                    .header(header::SET_COOKIE, "session=; Path=/; Max-Age=0")
                    .body(full(""))
                    .unwrap(),
                _ => Response::new(full("plain answer")),
            }
        }
    })
    .await
}

/// The proxy with the demo's login wiring over the switching app, and a short tunnel re-check.
struct Protected {
    proxy: twofa_proxy::app::Running,
    clock: Arc<ManualClock>,
    seen: Seen,
}

async fn protected() -> Protected {
    init();
    let seen = Seen::default();
    let app = switching_app(seen.clone()).await;
    let clock = ManualClock::at_now();
    let config = login_config(
        app,
        None,
        &[("TWOFA_UPSTREAM__TUNNEL_SESSION_CHECK", "100ms")],
    );
    let proxy = twofa_proxy::app::start_with_clock(config, clock.clone())
        .await
        .unwrap();
    Protected { proxy, clock, seen }
}

impl Protected {
    /// Signs in (no second factor enrolled: the password is enough); the agent holds both the
    /// app's and the proxy's session cookies.
    async fn signed_in(&self) -> Agent {
        let mut agent = Agent::new(self.proxy.addr);
        let res = password_login(&mut agent, "alice", "wonderland").await;
        assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.text());
        assert!(
            agent.cookies.contains_key("twofa-session"),
            "{:?}",
            agent.cookies
        );
        agent
    }

    /// Headers the app saw on requests to `path`.
    fn seen_at(&self, path: &str) -> Vec<HeaderMap> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, p, _)| p == path)
            .map(|(_, _, h)| h.clone())
            .collect()
    }
}

fn cookie_header(agent: &Agent) -> String {
    agent
        .cookies
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Sends a raw request and returns the status line of the answer (the first line).
async fn status_line(addr: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    for _ in 0..100 {
        if got.windows(2).any(|w| w == b"\r\n") {
            break;
        }
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("no answer within 10 s")
            .unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    text.lines().next().unwrap_or_default().to_owned()
}

/// No upgrade request, header or token made it to the app.
fn assert_no_upgrade_upstream(seen: &[HeaderMap]) {
    assert!(!seen.is_empty(), "the request never reached the app");
    for h in seen {
        assert!(!h.contains_key(header::UPGRADE), "{h:?}");
        assert!(!h.contains_key("http2-settings"), "{h:?}");
        let connection = h
            .get_all(header::CONNECTION)
            .iter()
            .map(|v| v.to_str().unwrap().to_ascii_lowercase())
            .collect::<Vec<_>>();
        assert!(
            !connection.iter().any(|v| v.contains("upgrade")),
            "{connection:?}"
        );
    }
}

fn h2c_upgrade(path: &str, cookie: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: app.example\r\nConnection: Upgrade, HTTP2-Settings\r\n\
         Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nCookie: {cookie}\r\n\r\n"
    )
}

#[tokio::test]
async fn h2c_upgrades_are_never_tunnelled() {
    let site = protected().await;
    let agent = site.signed_in().await;
    let cookies = cookie_header(&agent);
    // A public path, then a path only a session reaches, then the same with every spelling.
    for (path, cookie) in [
        ("/login", ""),
        ("/reports", cookies.as_str()),
        ("/reports-upper", cookies.as_str()),
    ] {
        let request = if path == "/reports-upper" {
            h2c_upgrade(path, cookie)
                .replace("Upgrade: h2c", "UPGRADE: H2C")
                .replace("Connection: Upgrade, HTTP2-Settings", "connection: upgrade")
        } else {
            h2c_upgrade(path, cookie)
        };
        let status = status_line(site.proxy.addr, &request).await;
        assert_eq!(status, "HTTP/1.1 200 OK", "{path}");
        assert_no_upgrade_upstream(&site.seen_at(path));
    }
}

#[tokio::test]
async fn an_upgrade_naming_more_than_one_protocol_is_not_tunnelled() {
    let site = protected().await;
    let ws = |path: &str, upgrade: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: app.example\r\nConnection: Upgrade\r\n{upgrade}\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
    };
    for (path, upgrade) in [
        ("/login?list", "Upgrade: websocket, h2c"),
        ("/login?h2c-first", "Upgrade: h2c, websocket"),
        ("/login?two-fields", "Upgrade: websocket\r\nUpgrade: h2c"),
    ] {
        let status = status_line(site.proxy.addr, &ws(path, upgrade)).await;
        assert_eq!(status, "HTTP/1.1 200 OK", "{upgrade}");
    }
    assert_no_upgrade_upstream(&site.seen_at("/login"));
}

#[tokio::test]
async fn the_watched_login_and_logout_never_tunnel() {
    let site = protected().await;
    let agent = site.signed_in().await;
    let before = site.seen_at("/login").len();
    let login = "POST /login HTTP/1.1\r\nHost: app.example\r\nConnection: Upgrade\r\n\
                 Upgrade: websocket\r\nContent-Type: application/x-www-form-urlencoded\r\n\
                 Content-Length: 33\r\n\r\nusername=alice&password=wonderla\n";
    let status = status_line(site.proxy.addr, login).await;
    assert_ne!(status, "HTTP/1.1 101 Switching Protocols");
    assert_no_upgrade_upstream(&site.seen_at("/login")[before..]);

    let logout = format!(
        "POST /logout HTTP/1.1\r\nHost: app.example\r\nConnection: Upgrade\r\n\
         Upgrade: websocket\r\nCookie: {}\r\nContent-Length: 0\r\n\r\n",
        cookie_header(&agent)
    );
    let status = status_line(site.proxy.addr, &logout).await;
    assert_eq!(status, "HTTP/1.1 303 See Other");
    assert_no_upgrade_upstream(&site.seen_at("/logout"));
}

#[tokio::test]
async fn a_switch_nobody_asked_for_is_a_bad_gateway() {
    let site = protected().await;
    let status = status_line(
        site.proxy.addr,
        "GET /login?x HTTP/1.1\r\nHost: app.example\r\n\r\n",
    )
    .await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    // Unasked.
    let agent = site.signed_in().await;
    let surprise = format!(
        "GET /surprise HTTP/1.1\r\nHost: app.example\r\nCookie: {}\r\n\r\n",
        cookie_header(&agent)
    );
    assert_eq!(
        status_line(site.proxy.addr, &surprise).await,
        "HTTP/1.1 502 Bad Gateway"
    );
    // Asked for a WebSocket, switched to something else.
    let stream = TcpStream::connect(site.proxy.addr).await.unwrap();
    let mut req = format!("ws://{}/wrong-protocol", site.proxy.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert(header::COOKIE, cookie_header(&agent).parse().unwrap());
    match tokio_tungstenite::client_async(req, stream).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            assert_eq!(res.status(), StatusCode::BAD_GATEWAY)
        }
        Err(e) => panic!("unexpected error: {e}"),
        Ok((_, res)) => panic!("tunnel made: {}", res.status()),
    }
}

/// Opens a WebSocket to `path` with the agent's cookies and checks that it echoes.
async fn open_ws(
    addr: SocketAddr,
    path: &str,
    agent: &Agent,
) -> tokio_tungstenite::WebSocketStream<TcpStream> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    req.headers_mut()
        .insert(header::COOKIE, cookie_header(agent).parse().unwrap());
    let (mut ws, res) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::client_async(req, stream),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS);
    ws.send(Message::text("ping")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("ping"));
    ws
}

/// Waits (at most 5 s, against a 100 ms check interval) for the proxy to close the tunnel.
async fn assert_closed_soon(ws: &mut tokio_tungstenite::WebSocketStream<TcpStream>) {
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        for _ in 0..1000 {
            // Traffic keeps flowing while the tunnel is open; each round trip proves it.
            if ws.send(Message::text("still there?")).await.is_err() {
                return;
            }
            match ws.next().await {
                None | Some(Err(_)) => return,
                Some(Ok(m)) if m.is_close() => return,
                Some(Ok(_)) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the tunnel outlived its session");
}

#[tokio::test]
async fn websockets_work_on_public_and_session_paths() {
    let site = protected().await;
    let agent = site.signed_in().await;
    let mut public = open_ws(site.proxy.addr, "/static/ws", &Agent::new(site.proxy.addr)).await;
    let mut private = open_ws(site.proxy.addr, "/live", &agent).await;
    for ws in [&mut public, &mut private] {
        ws.send(Message::binary(vec![7u8; 70_000])).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::binary(vec![7u8; 70_000])
        );
    }
    // The app saw the identity on the session path.
    let live = site.seen_at("/live");
    assert_eq!(live[0]["x-twofa-user"], "alice");
    // Without a session the protected path is no tunnel either.
    let stream = TcpStream::connect(site.proxy.addr).await.unwrap();
    let req = format!("ws://{}/live", site.proxy.addr)
        .into_client_request()
        .unwrap();
    assert!(tokio_tungstenite::client_async(req, stream).await.is_err());
}

#[tokio::test]
async fn a_session_websocket_closes_after_logout() {
    let site = protected().await;
    let mut agent = site.signed_in().await;
    let mut ws = open_ws(site.proxy.addr, "/live", &agent).await;
    let res = agent.post_form("/logout", &[]).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    assert_closed_soon(&mut ws).await;
}

#[tokio::test]
async fn a_session_websocket_closes_when_the_session_times_out() {
    let site = protected().await;
    let agent = site.signed_in().await;
    let mut ws = open_ws(site.proxy.addr, "/live", &agent).await;
    // Open through several checks while the session lives.
    tokio::time::sleep(Duration::from_millis(350)).await;
    ws.send(Message::text("alive")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("alive"));
    site.clock.advance(31 * 60);
    assert_closed_soon(&mut ws).await;
}
