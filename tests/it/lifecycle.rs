//! The real binary's life: graceful drain on SIGTERM and SIGINT (with and without a delay),
//! probes on the main listener, reloads on SIGHUP, a start with the store down, a rolling restart
//! of two replicas behind nginx.

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

/// Waits for a log line whose message is `message`; the other lines are skipped.
fn wait_for_log(proxy: &ProxyProcess, message: &str, within: Duration) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = proxy
            .stderr
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no log line {message:?} within {within:?}"));
        if let Ok(event) = serde_json::from_str::<serde_json::Value>(&line)
            && event["message"] == message
        {
            return event;
        }
    }
}

fn public_proxy(up: std::net::SocketAddr, server: &str) -> ProxyProcess {
    ProxyProcess::start(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n{server}\n\
         [upstream]\nurl = \"http://{up}\"\n[app]\npublic_paths = [\"/debug/\"]\n"
    ))
}

/// Kubernetes removes a terminating pod's endpoints while traffic still arrives: during
/// `shutdown_delay` readiness fails, yet new connections are accepted and answered; then the
/// drain refuses new ones and lets the one in flight finish.
#[tokio::test]
async fn sigterm_delay_keeps_serving_while_readiness_fails_then_drains() {
    let (up, _stop) = demo_upstream().await;
    let mut proxy = public_proxy(up, "shutdown_delay = \"1500ms\"\nshutdown_grace = \"10s\"");
    let addr = proxy.addr;
    let ready = format!("http://{addr}/_2fa/readyz");
    assert_eq!(get(&ready, &[]).await.status, 200);
    let in_flight =
        tokio::spawn(async move { get(&format!("http://{addr}/debug/slow?ms=2500"), &[]).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = Instant::now();
    proxy.signal("TERM");

    // During the delay: readiness fails on both listeners, every new request is served.
    let mut served = 0;
    while signalled.elapsed() < Duration::from_millis(1200) {
        let probe = get(&ready, &[]).await;
        if probe.status == 503 {
            assert_eq!(probe.text(), "draining\n");
            let res = get(&format!("http://{addr}/debug/headers"), &[]).await;
            assert_eq!(res.status, 200, "a request during the delay failed");
            served += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served >= 5, "only {served} requests during the delay");
    let admin = get(&format!("http://{}/readyz", proxy.admin_addr), &[]).await;
    assert_eq!(admin.status, 503);

    // After it: no new connections; the request in flight still finishes.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            break;
        }
        assert!(Instant::now() < deadline, "still accepting after the delay");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(signalled.elapsed() >= Duration::from_millis(1400));
    let answer = in_flight.await.unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.text(), "slept 2500 ms\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = proxy.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "proxy did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status:?}");
}

/// The probe routes on the main listener answer before anything else: no session, nothing
/// forwarded (the demo app would answer these paths with its own page or a 404).
#[tokio::test]
async fn probes_on_the_main_listener_need_no_session_and_are_never_forwarded() {
    let (up, _stop) = demo_upstream().await;
    let proxy = public_proxy(up, "");
    for (path, body) in [("/_2fa/healthz", "ok\n"), ("/_2fa/readyz", "ready\n")] {
        let res = get(&format!("http://{}{path}", proxy.addr), &[]).await;
        assert_eq!(res.status, 200, "{path}");
        assert_eq!(res.text(), body, "{path}");
        assert_eq!(res.headers["cache-control"], "no-store");
    }
    // Only GET and HEAD; other spellings are the proxy's own routes (404), not the app's.
    let res = get(&format!("http://{}/_2fa/./readyz", proxy.addr), &[]).await;
    assert_ne!(res.status, 200);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_twofa-proxy"))
        .args(["health", "--config"])
        .arg(probe_config(&proxy))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ready\n");
}

/// A config naming the running proxy's listener, for `twofa-proxy health`.
fn probe_config(proxy: &ProxyProcess) -> std::path::PathBuf {
    let text = std::fs::read_to_string(proxy.config_path()).unwrap();
    let text = text.replace("127.0.0.1:0", &proxy.addr.to_string());
    // admin_listen must differ from listen.
    let text = text.replacen(
        &format!("admin_listen = \"{}\"", proxy.addr),
        "admin_listen = \"127.0.0.1:0\"",
        1,
    );
    let path = proxy.config_path().with_file_name("probe.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// SIGHUP with a config that does not load: logged, the running config kept, the process
/// alive and serving. Then a good one is applied to the next request.
#[tokio::test]
async fn sighup_refuses_a_broken_config_and_applies_a_good_one() {
    let (up, _stop) = demo_upstream().await;
    let proxy = public_proxy(up, "");
    let path = proxy.config_path();
    let good = std::fs::read_to_string(&path).unwrap();
    let page = format!("http://{}/debug/headers", proxy.addr);
    assert_eq!(get(&page, &[]).await.status, 200);

    std::fs::write(
        &path,
        good.replace("[app]", "[app]\nlogin_page = 42\n[nonsense"),
    )
    .unwrap();
    proxy.signal("HUP");
    let refused = wait_for_log(
        &proxy,
        "SIGHUP: config refused, the running one is kept",
        Duration::from_secs(5),
    );
    assert!(
        refused["problems"].as_str().unwrap().contains("TOML"),
        "{refused}"
    );
    std::fs::write(
        &path,
        good.replace("public_paths = [", "login_page = 42\npublic_paths = ["),
    )
    .unwrap();
    proxy.signal("HUP");
    let refused = wait_for_log(
        &proxy,
        "SIGHUP: config refused, the running one is kept",
        Duration::from_secs(5),
    );
    assert!(
        refused["problems"]
            .as_str()
            .unwrap()
            .contains("app.login_page"),
        "{refused}"
    );
    // A listener cannot move without a restart.
    std::fs::write(&path, good.replacen("127.0.0.1:0", "127.0.0.1:1", 1)).unwrap();
    proxy.signal("HUP");
    let refused = wait_for_log(
        &proxy,
        "SIGHUP: config refused, the running one is kept",
        Duration::from_secs(5),
    );
    assert!(
        refused["error"].as_str().unwrap().contains("server.listen"),
        "{refused}"
    );
    assert_eq!(get(&page, &[]).await.status, 200, "old config kept");

    // No public paths any more: without a session the same request is refused.
    std::fs::write(
        &path,
        good.replace("public_paths = [\"/debug/\"]", "public_paths = []"),
    )
    .unwrap();
    proxy.signal("HUP");
    wait_for_log(
        &proxy,
        "SIGHUP: config and TLS certificate reloaded",
        Duration::from_secs(5),
    );
    assert_eq!(get(&page, &[]).await.status, 401, "new config applied");
}

/// SIGHUP with a new certificate: new connections see it, a connection made before keeps
/// working with the old one.
#[tokio::test]
async fn sighup_reloads_the_certificate_for_new_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    twofa_proxy::app::install_crypto_provider();
    let (up, _stop) = demo_upstream().await;
    let dir = TempDir::new("hup-tls");
    let (cert, key) = self_signed(&dir.0);
    let proxy = public_proxy(
        up,
        &format!(
            "tls_cert = {:?}\ntls_key = {:?}",
            cert.display(),
            key.display()
        ),
    );
    let first = std::fs::read(&cert).unwrap();

    let (mut old, old_cert) = tls_connect(proxy.addr).await;
    let request = b"GET /debug/headers HTTP/1.1\r\nHost: localhost\r\n\r\n";
    old.write_all(request).await.unwrap();
    let mut buf = vec![0u8; 16384];
    let n = old.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));

    let (_, _) = self_signed(&dir.0);
    assert_ne!(std::fs::read(&cert).unwrap(), first);
    proxy.signal("HUP");
    wait_for_log(
        &proxy,
        "SIGHUP: config and TLS certificate reloaded",
        Duration::from_secs(5),
    );
    let (_new, new_cert) = tls_connect(proxy.addr).await;
    assert_ne!(
        new_cert, old_cert,
        "a new connection still sees the old certificate"
    );
    assert_eq!(pem_der(&cert), new_cert);

    // The connection made before the reload goes on.
    old.write_all(request).await.unwrap();
    let n = old.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
}

fn pem_der(path: &std::path::Path) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_file(path).unwrap().to_vec()
}

/// A TLS connection that accepts any certificate and says which one it saw.
async fn tls_connect(
    addr: std::net::SocketAddr,
) -> (
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    Vec<u8>,
) {
    use std::sync::Arc;
    #[derive(Debug)]
    struct Any(Arc<rustls::crypto::CryptoProvider>);
    impl rustls::client::danger::ServerCertVerifier for Any {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &rustls::pki_types::CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                m,
                c,
                d,
                &self.0.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &rustls::pki_types::CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                m,
                c,
                d,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Any(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    let cert = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    (tls, cert)
}

/// Redis down at start: the proxy starts anyway, alive but not ready, answering 503 to
/// everything but the probes and forwarding nothing; once Redis is up it is ready and serves.
#[tokio::test]
#[cfg_attr(not(feature = "external-tools"), ignore = "needs external-tools")]
async fn starts_with_the_store_down_and_becomes_ready_when_it_comes_up() {
    let (up, _stop) = demo_upstream().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let proxy = ProxyProcess::start(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
         [upstream]\nurl = \"http://{up}\"\n[app]\npublic_paths = [\"/debug/\"]\n\
         [store]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1:{port}/0\"\n\
         [secrets]\nencryption_key = \"{}\"\n",
        crate::support::site::TEST_KEY
    ));
    let base = format!("http://{}", proxy.addr);
    assert_eq!(get(&format!("{base}/_2fa/healthz"), &[]).await.status, 200);
    let ready = get(&format!("{base}/_2fa/readyz"), &[]).await;
    assert_eq!(
        (ready.status.as_u16(), ready.text().as_str()),
        (503, "starting: store not reached yet\n")
    );
    assert_eq!(
        get(&format!("http://{}/readyz", proxy.admin_addr), &[])
            .await
            .status,
        503
    );
    let public = get(&format!("{base}/debug/headers"), &[]).await;
    assert_eq!(public.status, 503, "forwarded without the store");
    assert_eq!(public.headers["retry-after"], "5");
    // The retries are logged, with the wait before the next.
    let retry = wait_for_log(
        &proxy,
        "store still unreachable: not ready; retrying",
        Duration::from_secs(10),
    );
    assert!(retry["retry_in_ms"].as_u64().unwrap() >= 1000, "{retry}");

    let _redis = crate::support::redis::RedisServer::start_on(port);
    wait_for_log(&proxy, "store reached: serving", Duration::from_secs(40));
    assert_eq!(get(&format!("{base}/_2fa/readyz"), &[]).await.status, 200);
    assert_eq!(get(&format!("{base}/debug/headers"), &[]).await.status, 200);
}

/// A rolling restart of two replicas behind nginx (a tiny load balancer, as an ingress would
/// be) under a bounded load: each replica in turn is sent SIGTERM, drains and is started again
/// on its port. With `shutdown_delay`, readiness fails while it still serves; after it the
/// refused connections are retried on the other replica by nginx. Not one request fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "external-tools"), ignore = "needs external-tools")]
async fn a_rolling_restart_behind_a_load_balancer_fails_no_request() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    let (up, _stop) = demo_upstream().await;
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let replica = |addr: std::net::SocketAddr| {
        ProxyProcess::start(&format!(
            "[server]\nlisten = \"{addr}\"\nadmin_listen = \"127.0.0.1:0\"\n\
             shutdown_delay = \"1s\"\nshutdown_grace = \"5s\"\n\
             [upstream]\nurl = \"http://{up}\"\n[app]\npublic_paths = [\"/debug/\"]\n"
        ))
    };
    let addrs = [free(), free()];
    let mut replicas = [replica(addrs[0]), replica(addrs[1])];

    let dir = TempDir::new("rolling");
    let lb = free();
    let conf = dir.path("nginx.conf");
    let d = dir.0.display();
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 512; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
               upstream twofa {{ server {a} max_fails=0; server {b} max_fails=0; keepalive 16; }}\n\
               server {{\n    listen {lb};\n    location / {{\n      proxy_pass http://twofa;\n\
                 proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n\
                 proxy_connect_timeout 1s;\n      proxy_next_upstream error timeout;\n    }}\n  }}\n}}\n",
            a = addrs[0],
            b = addrs[1],
        ),
    )
    .unwrap();
    let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or_else(|| missing_tool("nginx", "apt-get install nginx", "not found"));
    let mut balancer = std::process::Command::new(nginx)
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(&dir.0)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| missing_tool("nginx", "apt-get install nginx", e));
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(lb).await.is_err() {
        assert!(Instant::now() < deadline, "nginx did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Bounded load: 8 clients, each one request at a time on its own keep-alive connection.
    let running = Arc::new(AtomicBool::new(true));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (running, ok, failed) = (running.clone(), ok.clone(), failed.clone());
        clients.push(tokio::spawn(async move {
            let client = http_client();
            let mut statuses = Vec::new();
            while running.load(Ordering::Relaxed) {
                let req = http::Request::get(format!("http://{lb}/debug/headers"))
                    .body(full(bytes::Bytes::new()))
                    .unwrap();
                match tokio::time::timeout(Duration::from_secs(10), client.request(req)).await {
                    Ok(Ok(res)) if res.status() == 200 => {
                        use http_body_util::BodyExt as _;
                        match res.into_body().collect().await {
                            Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                            Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                    Ok(Ok(res)) => {
                        statuses.push(res.status().as_u16());
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            statuses
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (i, addr) in addrs.into_iter().enumerate() {
        let before = ok.load(Ordering::Relaxed);
        replicas[i].signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(15);
        while replicas[i].child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "replica {i} did not stop");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(replicas[i].child.try_wait().unwrap().unwrap().success());
        replicas[i] = replica(addr);
        assert_eq!(
            get(&format!("http://{addr}/_2fa/readyz"), &[]).await.status,
            200
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            ok.load(Ordering::Relaxed) > before,
            "no requests served during the restart"
        );
    }
    running.store(false, Ordering::Relaxed);
    let mut statuses = Vec::new();
    for client in clients {
        statuses.extend(client.await.unwrap());
    }
    let _ = balancer.kill();
    let _ = balancer.wait();
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("rolling restart: {ok} requests served, {failed} failed");
    assert!(ok > 200, "only {ok} requests");
    assert_eq!(failed, 0, "failed requests (statuses {statuses:?})");
}

/// `server.metrics_listen`: a scraper reaches `/metrics` there and nothing else; the admin
/// listener keeps its probes and API but no longer serves metrics.
#[tokio::test]
async fn metrics_on_a_listener_of_their_own() {
    let (up, _stop) = demo_upstream().await;
    let config = twofa_proxy::config::Config::from_toml(
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
             metrics_listen = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://{up}\"\n\
             [records]\npath = \":memory:\"\n"
        ),
        Vec::new(),
    )
    .unwrap();
    let proxy = twofa_proxy::app::start(config).await.unwrap();
    let metrics = proxy.metrics_addr.expect("metrics listener");
    let scraped = get(&format!("http://{metrics}/metrics"), &[]).await;
    assert_eq!(scraped.status, 200);
    assert!(
        scraped.text().contains("twofa_open_connections"),
        "{}",
        scraped.text()
    );
    for path in ["/readyz", "/healthz", "/admin/v1/records/confirm"] {
        assert_eq!(
            get(&format!("http://{metrics}{path}"), &[]).await.status,
            404,
            "{path}"
        );
    }
    let admin = proxy.admin_addr;
    assert_eq!(
        get(&format!("http://{admin}/metrics"), &[]).await.status,
        404
    );
    assert_eq!(
        get(&format!("http://{admin}/readyz"), &[]).await.status,
        200
    );
    proxy.shutdown();
    proxy.wait().await;
}

/// A second SIGTERM during a long `shutdown_delay` cuts it short: the drain starts at once.
#[tokio::test]
async fn a_second_signal_cuts_the_delay_short() {
    let (up, _stop) = demo_upstream().await;
    let mut proxy = public_proxy(up, "shutdown_delay = \"60s\"\nshutdown_grace = \"5s\"");
    proxy.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let res = get(&format!("http://{}/_2fa/readyz", proxy.addr), &[]).await;
    assert_eq!(res.status, 503, "readiness fails during the delay");
    let asked = Instant::now();
    proxy.signal("TERM");
    let deadline = asked + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = proxy.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "still in the delay after a second signal"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "exit status {status:?}");
}
