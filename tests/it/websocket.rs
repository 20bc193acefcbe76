//! WebSocket (HTTP/1.1 Upgrade) through the proxy to a real WebSocket echo server.

use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

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
