//! Bodies stream both ways: the first bytes cross the proxy before the sender has produced the
//! rest, and a large transfer does not grow the proxy's memory.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, channel::Channel};
use tokio::sync::{Mutex, oneshot};

use crate::support::*;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn downloads_stream_before_the_upstream_finishes() {
    // The upstream sends one chunk, then waits for the client to confirm it arrived before it
    // sends the rest. A buffering proxy would deadlock here.
    let (confirm_tx, confirm_rx) = oneshot::channel::<()>();
    let confirm = std::sync::Arc::new(Mutex::new(Some(confirm_rx)));
    let up = scripted_upstream(move |_req| {
        let confirm = confirm.clone();
        async move {
            let (mut tx, body) = Channel::<Bytes, BoxError>::new(1);
            tokio::spawn(async move {
                tx.send_data(Bytes::from_static(b"first;")).await.unwrap();
                if let Some(rx) = confirm.lock().await.take() {
                    let _ = rx.await;
                }
                tx.send_data(Bytes::from_static(b"rest")).await.unwrap();
            });
            Response::new(body.boxed())
        }
    })
    .await;
    let proxy = proxy(up, &[]).await;
    let res = http_client()
        .request(
            Request::get(format!("http://{}/download", proxy.addr))
                .body(full(""))
                .unwrap(),
        )
        .await
        .unwrap();
    let mut body = res.into_body();
    let first = tokio::time::timeout(WAIT, body.frame())
        .await
        .expect("first chunk held back")
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), "first;");
    confirm_tx.send(()).unwrap();
    let rest = tokio::time::timeout(WAIT, body.collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    assert_eq!(rest, "rest");
}

#[tokio::test]
async fn uploads_stream_before_the_client_finishes() {
    // The upstream reports the first chunk it receives; only then does the client send the rest.
    let (seen_tx, seen_rx) = oneshot::channel::<Bytes>();
    let seen_tx = std::sync::Arc::new(Mutex::new(Some(seen_tx)));
    let up = scripted_upstream(move |req: Request<hyper::body::Incoming>| {
        let seen_tx = seen_tx.clone();
        async move {
            let mut body = req.into_body();
            let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
            if let Some(tx) = seen_tx.lock().await.take() {
                let _ = tx.send(first.clone());
            }
            let rest = body.collect().await.unwrap().to_bytes();
            Response::new(full(format!("{}+{}", first.len(), rest.len())))
        }
    })
    .await;
    let proxy = proxy(up, &[]).await;
    let (mut tx, body) = Channel::<Bytes, BoxError>::new(1);
    let req = Request::post(format!("http://{}/upload", proxy.addr))
        .body(body.boxed())
        .unwrap();
    let pending = tokio::spawn(async move { send(req).await });
    tx.send_data(Bytes::from_static(b"first")).await.unwrap();
    let first = tokio::time::timeout(WAIT, seen_rx)
        .await
        .expect("upstream never saw the first chunk")
        .unwrap();
    assert_eq!(first, "first");
    tx.send_data(Bytes::from_static(b"-and-the-rest"))
        .await
        .unwrap();
    drop(tx);
    let answer = pending.await.unwrap();
    assert_eq!(answer.text(), "5+13");
}

/// 1 GiB each way through the real binary; its peak memory must stay far below the body size.
#[tokio::test]
async fn a_gigabyte_each_way_keeps_memory_flat() {
    const SIZE: u64 = 1 << 30;
    let (up, _stop) = demo_upstream().await;
    let proxy = ProxyProcess::start(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://{up}\"\n[app]\npublic_paths = [\"/debug/\"]\n"
    ));
    let baseline = proxy.rss_kib();

    let res = http_client()
        .request(
            Request::get(format!("http://{}/debug/bytes?n={SIZE}", proxy.addr))
                .body(full(""))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut body = res.into_body();
    let mut received: u64 = 0;
    while let Some(frame) = body.frame().await {
        received += frame.unwrap().data_ref().map_or(0, |d| d.len() as u64);
    }
    assert_eq!(received, SIZE);

    let (mut tx, upload) = Channel::<Bytes, BoxError>::new(4);
    tokio::spawn(async move {
        let chunk = Bytes::from(vec![7u8; 256 * 1024]);
        for _ in 0..SIZE / chunk.len() as u64 {
            if tx.send_data(chunk.clone()).await.is_err() {
                return;
            }
        }
    });
    let answer = send(
        Request::post(format!("http://{}/debug/upload", proxy.addr))
            .body(upload.boxed())
            .unwrap(),
    )
    .await;
    assert_eq!(answer.json()["bytes"], SIZE);

    let peak = proxy.peak_rss_kib();
    eprintln!("proxy RSS: {baseline} KiB at start, {peak} KiB peak after 2 GiB streamed");
    assert!(
        peak < 64 * 1024,
        "peak RSS {peak} KiB: the proxy buffered a body"
    );
}
