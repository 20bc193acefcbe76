//! Accepts connections (plain or rustls TLS), speaks HTTP/1.1 and HTTP/2 on each, and drains
//! in-flight requests on shutdown.
//!
//! Every phase of a connection is bounded: the TLS handshake and the first request by
//! `header_read_timeout`, the time between requests by `keepalive_timeout` (plain HTTP/1.1 in
//! `h1`, TLS and h2c connections by `serve_auto`'s idle deadline). A request in flight is not
//! cut short by either; the upstream's `response_timeout` bounds the wait for its answer.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, Version};
use hyper::body::{Body as _, Incoming};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tower::util::Oneshot;

use crate::body::{Body, BodyRead};
use crate::config::{ServerConfig, TlsFiles};
use crate::metrics::Metrics;
use crate::upstream::connection_names;

/// What the listener knows about the connection a request came in on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
}

mod h1;

/// At most this many requests at once on one HTTP/2 connection (hyper's default is 200). Each is
/// a task's worth of state and may hold an upstream connection; browsers open far fewer.
const H2_MAX_CONCURRENT_STREAMS: u32 = 100;

/// HTTP/2 PINGs on a connection that has been quiet this long; a peer that does not answer
/// within [`H2_PING_TIMEOUT`] is gone (a dropped network, a half-open socket) and the connection
/// is closed, requests in flight included. An answered PING is not a request: it does not hold
/// off the idle deadline.
const H2_PING_EVERY: Duration = Duration::from_secs(30);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// The HTTP/2 connection preface; a plain connection starting with it speaks h2c.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub struct Listener {
    tcp: TcpListener,
    tls: Option<TlsAcceptor>,
    /// The certificate new TLS handshakes present, replaced by [`Certificate::reload`].
    certificate: Option<Arc<Certificate>>,
    protocols: Protocols,
}

/// Connection settings shared by every connection of a listener.
struct Protocols {
    /// Plain HTTP/1.1 (see [`h1`]).
    h1: http1::Builder,
    /// TLS connections (ALPN picks) and h2c.
    auto: auto::Builder<TokioExecutor>,
    keepalive: Duration,
    /// How long a new connection may stay silent: the header-read timeout, as for hyper.
    first_bytes: Duration,
    /// How long the TLS handshake, and then the first request, may take: `header_read_timeout`.
    first_request: Duration,
}

impl Listener {
    pub async fn bind(config: &ServerConfig) -> anyhow::Result<Self> {
        let tcp = TcpListener::bind(config.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
        let certificate = config
            .tls
            .as_ref()
            .map(|files| Certificate::load(files).map(Arc::new))
            .transpose()?;
        let tls = certificate.clone().map(tls_acceptor);
        let mut h1 = http1::Builder::new();
        h1.timer(TokioTimer::new())
            .header_read_timeout(config.header_read_timeout)
            .max_buf_size(config.max_header_bytes);
        let mut auto = auto::Builder::new(TokioExecutor::new());
        auto.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(config.header_read_timeout)
            .max_buf_size(config.max_header_bytes);
        auto.http2()
            .timer(TokioTimer::new())
            .max_header_list_size(config.max_header_bytes as u32)
            .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
            .keep_alive_interval(H2_PING_EVERY)
            .keep_alive_timeout(H2_PING_TIMEOUT);
        Ok(Self {
            tcp,
            tls,
            certificate,
            protocols: Protocols {
                h1,
                auto,
                keepalive: config.keepalive_timeout,
                first_bytes: config.header_read_timeout.min(config.keepalive_timeout),
                first_request: config.header_read_timeout,
            },
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// The TLS certificate in use, for a reload; `None` for a plain listener.
    pub fn certificate(&self) -> Option<Arc<Certificate>> {
        self.certificate.clone()
    }

    /// Accepts until `shutdown` fires, handing each connection to the next worker in turn (with
    /// that worker's own service), then stops accepting and gives open connections `grace` to
    /// finish their requests.
    pub async fn serve<S>(
        self,
        workers: Vec<(Handle, S)>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
        grace: Duration,
    ) where
        S: WorkerService,
    {
        let connections = TaskTracker::new();
        let protocols = Arc::new(self.protocols);
        let mut next = 0usize;
        loop {
            let (stream, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = self.tcp.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            // Round robin: every worker gets its share however few connections there are.
            let Some((handle, service)) = workers.get(next % workers.len().max(1)) else {
                return;
            };
            next = next.wrapping_add(1);
            // Move the socket to the worker's own reactor.
            let stream = match stream.into_std() {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(error = %e, "could not hand over a connection");
                    continue;
                }
            };
            let service = ConnService {
                inner: service.clone(),
                conn: ConnInfo {
                    peer,
                    tls: self.tls.is_some(),
                },
                activity: None,
                parks: false,
            };
            let tls = self.tls.clone();
            let protocols = protocols.clone();
            let metrics = metrics.clone();
            let shutdown = shutdown.clone();
            let fut = async move {
                let _open = OpenConnection::new(&metrics);
                let Ok(stream) = TcpStream::from_std(stream) else {
                    return;
                };
                match tls {
                    None => serve_plain_tcp(&protocols, stream, service, &shutdown).await,
                    // Boxed: the handshake and TLS state would otherwise enlarge every
                    // connection's task, plain ones included.
                    Some(acceptor) => {
                        Box::pin(serve_tls(
                            &protocols, acceptor, stream, peer, service, &shutdown,
                        ))
                        .await
                    }
                }
            };
            connections.spawn_on(fut, handle);
        }
        drop(self.tcp);
        connections.close();
        tracing::info!(
            grace_secs = grace.as_secs(),
            "stopped accepting; draining open connections"
        );
        tokio::select! {
            _ = connections.wait() => tracing::info!("all connections drained"),
            _ = tokio::time::sleep(grace) => tracing::warn!("grace period over; closing remaining connections"),
        }
    }
}

/// A worker's request path as the listener needs it: cloned per connection, moved to the
/// worker's thread, and polled in place (no boxing on the way).
pub trait WorkerService:
    tower::Service<
        Request<Incoming>,
        Response = Response<Body>,
        Error = Infallible,
        Future: Send + Unpin + 'static,
    > + Clone
    + Send
    + Unpin
    + 'static
{
}

impl<S> WorkerService for S where
    S: tower::Service<
            Request<Incoming>,
            Response = Response<Body>,
            Error = Infallible,
            Future: Send + Unpin + 'static,
        > + Clone
        + Send
        + Unpin
        + 'static
{
}

/// The worker's service as hyper calls it, per connection: tags each request with its
/// connection's facts and counts it, for [`h1`]'s parking or for [`serve_auto`]'s idle deadline.
#[derive(Clone)]
struct ConnService<S> {
    inner: S,
    conn: ConnInfo,
    activity: Option<Arc<h1::Activity>>,
    /// A plain HTTP/1.1 connection that parks: it also needs keep-alive and body bookkeeping.
    parks: bool,
}

impl<S> hyper::service::Service<Request<Incoming>> for ConnService<S>
where
    S: tower::Service<Request<Incoming>, Response = Response<Body>, Error = Infallible> + Clone,
{
    type Response = Response<h1::Tracked>;
    type Error = Infallible;
    type Future = h1::Counted<Oneshot<S, Request<Incoming>>>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        req.extensions_mut().insert(self.conn);
        if let Some(activity) = self.activity.as_ref().filter(|_| !self.parks) {
            // Only "a request is under way" matters to the idle deadline.
            activity.request_started(false, false);
        } else if let Some(activity) = &self.activity {
            // As hyper decides: 1.1 unless `close`; 1.0 only with `keep-alive` and no `close`.
            let keep_alive = match req.version() {
                Version::HTTP_11 => !h1::closes(req.headers()),
                Version::HTTP_10 => {
                    connection_names(req.headers(), "keep-alive") && !h1::closes(req.headers())
                }
                _ => false,
            };
            let has_body = !req.body().is_end_stream();
            let number = activity.request_started(has_body, keep_alive);
            if has_body {
                let activity = activity.clone();
                req.extensions_mut()
                    .insert(BodyRead::new(move || activity.body_read(number)));
            }
        }
        let http10 = req.version() == Version::HTTP_10;
        h1::Counted::new(
            self.inner.clone().oneshot(req),
            self.activity.clone(),
            http10,
        )
    }
}

/// A plain connection: HTTP/1.1 that parks between requests, or h2c (prior knowledge).
async fn serve_plain_tcp<S>(
    protocols: &Protocols,
    stream: TcpStream,
    mut service: ConnService<S>,
    shutdown: &CancellationToken,
) where
    S: WorkerService,
{
    // No hyper state until the client has sent something; a silent client costs only its socket.
    tokio::select! {
        biased;
        _ = shutdown.cancelled() => return,
        ready = tokio::time::timeout(protocols.first_bytes, stream.readable()) => {
            if !matches!(ready, Ok(Ok(()))) {
                return;
            }
        }
    }
    // HTTP/2 with prior knowledge opens with its preface; anything else is HTTP/1. A client that
    // trickles a prefix of the preface gets the header-read timeout to finish it.
    let version = tokio::time::timeout(protocols.first_bytes, async {
        let mut first = [0u8; H2_PREFACE.len()];
        loop {
            let n = stream.peek(&mut first).await.ok()?;
            if n == 0 {
                return None;
            }
            if !H2_PREFACE.starts_with(&first[..n]) {
                return Some(Version::HTTP_11);
            }
            if n == H2_PREFACE.len() {
                return Some(Version::HTTP_2);
            }
            // Unread bytes keep the socket readable; wait a moment for the rest.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    match version {
        Ok(Some(Version::HTTP_11)) => {}
        Ok(Some(_)) => {
            return Box::pin(serve_auto(protocols, stream, service, shutdown)).await;
        }
        _ => return,
    }
    let activity = Arc::new(h1::Activity::default());
    service.activity = Some(activity.clone());
    service.parks = true;
    h1::serve(
        &protocols.h1,
        stream,
        service,
        activity,
        protocols.keepalive,
        shutdown,
    )
    .await;
}

async fn serve_tls<S>(
    protocols: &Protocols,
    acceptor: TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    service: ConnService<S>,
    shutdown: &CancellationToken,
) where
    S: WorkerService,
{
    match tokio::time::timeout(protocols.first_request, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => serve_auto(protocols, tls, service, shutdown).await,
        Ok(Err(e)) => tracing::debug!(error = %e, %peer, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
    }
}

/// HTTP/1.1 or HTTP/2 as the client chooses, through hyper-util's auto connection; on shutdown
/// the connection finishes its requests (HTTP/2: GOAWAY) and ends.
///
/// hyper-util waits for a client's first bytes, and HTTP/2 for new streams, without a limit, so
/// the connection gets an idle deadline of its own: with no request in flight and none started
/// for `header_read_timeout` (before the first request) or `keepalive_timeout` (after), it is
/// shut down gracefully (HTTP/2: GOAWAY), and closed outright if that has not finished within
/// another `header_read_timeout` (a client that never answers the GOAWAY's PING).
async fn serve_auto<I, S>(
    protocols: &Protocols,
    io: I,
    mut service: ConnService<S>,
    shutdown: &CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: WorkerService,
{
    let activity = Arc::new(h1::Activity::default());
    service.activity = Some(activity.clone());
    service.parks = false;
    let conn = protocols
        .auto
        .serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let drain = shutdown.cancelled();
    tokio::pin!(drain);
    let mut idle = IdleDeadline::new(protocols.first_request, protocols.keepalive);
    let timer = tokio::time::sleep_until(idle.next_check(Instant::now()));
    tokio::pin!(timer);
    let mut draining = false;
    // Set once the idle deadline has asked the connection to end: when it must be gone.
    let mut hard_close: Option<Instant> = None;
    let result = std::future::poll_fn(|cx: &mut Context<'_>| {
        loop {
            if !draining && drain.as_mut().poll(cx).is_ready() {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            if let Poll::Ready(r) = conn.as_mut().poll(cx) {
                return Poll::Ready(r);
            }
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let now = Instant::now();
            if let Some(at) = hard_close {
                if now >= at {
                    tracing::debug!("idle connection did not end after its shutdown; closed");
                    return Poll::Ready(Ok(()));
                }
                timer.as_mut().reset(at);
                continue;
            }
            if idle.expired(&activity, now) {
                // The graceful shutdown is polled on the next turn of the loop.
                conn.as_mut().graceful_shutdown();
                let at = now + protocols.first_request;
                hard_close = Some(at);
                timer.as_mut().reset(at);
            } else {
                timer.as_mut().reset(idle.next_check(now));
            }
        }
    })
    .await;
    if let Err(e) = result {
        // Clients vanishing mid-request is ordinary; nothing to act on.
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// When a connection that never parks has been idle too long: no request in flight and none
/// started for `first` (before the first request) or `between` (after). Checked by polling the
/// request counters every quarter of the limit, so a connection ends between 1 and 1.25 times
/// the limit after its last activity, and a busy one touches the timer a few times per limit
/// rather than per request.
struct IdleDeadline {
    first: Duration,
    between: Duration,
    /// Requests started as of the last check.
    requests: usize,
    /// When a check last saw a request under way or a new one.
    active: Instant,
}

impl IdleDeadline {
    fn new(first: Duration, between: Duration) -> Self {
        Self {
            first,
            between,
            requests: 0,
            active: Instant::now(),
        }
    }

    fn limit(&self) -> Duration {
        if self.requests == 0 {
            self.first
        } else {
            self.between
        }
    }

    /// Records what the connection did since the last check; true once it has been idle for its
    /// whole limit.
    fn expired(&mut self, activity: &h1::Activity, now: Instant) -> bool {
        let (requests, in_flight) = activity.progress();
        if in_flight > 0 || requests != self.requests {
            self.requests = requests;
            self.active = now;
        }
        now.saturating_duration_since(self.active) >= self.limit()
    }

    fn next_check(&self, now: Instant) -> Instant {
        let step = (self.limit() / 4).max(Duration::from_millis(10));
        (now + step).min(self.active + self.limit())
    }
}

/// Worker threads, each running a single-threaded tokio runtime. A client connection lives its
/// whole life on one worker, together with the upstream connections its requests use, so the
/// hot path has no cross-thread wake-ups (the thread-per-core shape of nginx and pingora).
pub struct Workers {
    workers: Vec<Worker>,
}

struct Worker {
    handle: Handle,
    stop: oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Workers {
    /// Starts `count` workers; 0 means one per available core.
    pub fn start(count: usize) -> std::io::Result<Self> {
        let count = match count {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let mut workers = Vec::with_capacity(count);
        for i in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("twofa-worker-{i}"))
                .spawn(move || {
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                })?;
            workers.push(Worker {
                handle,
                stop,
                thread,
            });
        }
        Ok(Self { workers })
    }

    pub fn handles(&self) -> impl Iterator<Item = &Handle> {
        self.workers.iter().map(|w| &w.handle)
    }

    /// Stops every worker (tasks still running are dropped) and waits for the threads.
    pub fn stop(self) {
        for w in self.workers {
            let _ = w.stop.send(());
            let _ = w.thread.join();
        }
    }
}

/// Keeps the open-connections gauge true even when a connection task ends by panic.
struct OpenConnection(Arc<Metrics>);

impl OpenConnection {
    fn new(metrics: &Arc<Metrics>) -> Self {
        metrics.open_connections.inc();
        metrics.connections.inc();
        Self(metrics.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open_connections.dec();
    }
}

/// The server certificate and key that new handshakes present. A reload (SIGHUP) replaces
/// them; connections already made keep the ones they began with.
#[derive(Debug)]
pub struct Certificate(std::sync::RwLock<Arc<rustls::sign::CertifiedKey>>);

impl Certificate {
    fn load(files: &TlsFiles) -> anyhow::Result<Self> {
        Ok(Self(std::sync::RwLock::new(Arc::new(certified_key(
            files,
        )?))))
    }

    /// Reads the files again; on any problem the certificate in use stays.
    pub fn reload(&self, files: &TlsFiles) -> anyhow::Result<()> {
        let key = Arc::new(certified_key(files)?);
        if let Ok(mut current) = self.0.write() {
            *current = key;
        }
        Ok(())
    }
}

impl rustls::server::ResolvesServerCert for Certificate {
    fn resolve(
        &self,
        _: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.0.read().ok().map(|key| key.clone())
    }
}

fn certified_key(files: &TlsFiles) -> anyhow::Result<rustls::sign::CertifiedKey> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("server.tls_cert {}: {e}", files.cert.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "server.tls_cert {}: no certificate in the file",
        files.cert.display()
    );
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| anyhow::anyhow!("server.tls_key {}: {e}", files.key.display()))?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    rustls::sign::CertifiedKey::from_der(certs, key, &provider)
        .map_err(|e| anyhow::anyhow!("server.tls_cert/tls_key: {e}"))
}

fn tls_acceptor(certificate: Arc<Certificate>) -> TlsAcceptor {
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(certificate);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    TlsAcceptor::from(Arc::new(config))
}

/// Checks that the TLS files load, for `check-config`.
pub fn check_tls(files: &TlsFiles) -> anyhow::Result<()> {
    certified_key(files).map(|_| ())
}

/// A connection handed to a plain hyper HTTP/1 server (admin listener, demo app).
pub fn serve_plain<S>(stream: TcpStream, service: S)
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    tokio::spawn(async move {
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .await;
    });
}
