//! The real binary's life: graceful drain on SIGTERM and SIGINT.

use std::time::{Duration, Instant};

use crate::support::*;

async fn drains_on(signal: &str) {
    let (up, _stop) = demo_upstream().await;
    let mut proxy = ProxyProcess::start(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nshutdown_grace = \"10s\"\n\
         [upstream]\nurl = \"http://{up}\"\n[app]\npublic_paths = [\"/debug/\"]\n"
    ));
    let addr = proxy.addr;
    let in_flight =
        tokio::spawn(async move { get(&format!("http://{addr}/debug/slow?ms=1500"), &[]).await });
    // Let the request reach the upstream before the signal.
    tokio::time::sleep(Duration::from_millis(400)).await;
    proxy.signal(signal);

    // Readiness turns to 503 while draining, so a load balancer stops sending work.
    let mut saw_draining = false;
    for _ in 0..20 {
        let res = tokio::time::timeout(Duration::from_secs(2), async {
            get(&format!("http://{}/readyz", proxy.admin_addr), &[]).await
        })
        .await;
        if let Ok(res) = res
            && res.status == 503
        {
            saw_draining = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(saw_draining, "readyz never reported draining");

    // New connections are refused once draining began.
    let refused = tokio::net::TcpStream::connect(addr).await;
    assert!(refused.is_err(), "still accepting after {signal}");

    let answer = in_flight.await.unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.text(), "slept 1500 ms\n");

    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = proxy.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "proxy did not exit after draining"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish() {
    drains_on("TERM").await;
}

#[tokio::test]
async fn sigint_lets_in_flight_requests_finish() {
    drains_on("INT").await;
}
