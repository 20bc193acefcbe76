//! Accepts connections (plain or rustls TLS), speaks HTTP/1.1 and HTTP/2 on each, and drains
//! in-flight requests on shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::body::Body;
use crate::config::{ServerConfig, TlsFiles};
use crate::metrics::Metrics;
use crate::upstream::ConnInfo;

/// How long a client has to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Listener {
    tcp: TcpListener,
    tls: Option<TlsAcceptor>,
    builder: auto::Builder<TokioExecutor>,
}

impl Listener {
    pub async fn bind(config: &ServerConfig) -> anyhow::Result<Self> {
        let tcp = TcpListener::bind(config.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
        let tls = config.tls.as_ref().map(tls_acceptor).transpose()?;
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(config.header_read_timeout)
            .max_buf_size(config.max_header_bytes);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(config.max_header_bytes as u32);
        Ok(Self { tcp, tls, builder })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
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
        S: tower::Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
    {
        let graceful = GracefulShutdown::new();
        let builder = Arc::new(self.builder);
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
            let conn = ConnInfo {
                peer,
                tls: self.tls.is_some(),
            };
            let service = service.clone();
            let hyper_service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(conn);
                service.clone().oneshot(req)
            });
            let tls = self.tls.clone();
            let builder = builder.clone();
            let metrics = metrics.clone();
            let watcher = graceful.watcher();
            handle.spawn(async move {
                let _open = OpenConnection::new(&metrics);
                let Ok(stream) = TcpStream::from_std(stream) else {
                    return;
                };
                match tls {
                    None => serve_io(&builder, watcher, stream, hyper_service).await,
                    Some(acceptor) => {
                        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                            .await
                        {
                            Ok(Ok(tls_stream)) => {
                                serve_io(&builder, watcher, tls_stream, hyper_service).await
                            }
                            Ok(Err(e)) => {
                                tracing::debug!(error = %e, %peer, "TLS handshake failed")
                            }
                            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                        }
                    }
                }
            });
        }
        drop(self.tcp);
        tracing::info!(
            grace_secs = grace.as_secs(),
            "stopped accepting; draining open connections"
        );
        tokio::select! {
            _ = graceful.shutdown() => tracing::info!("all connections drained"),
            _ = tokio::time::sleep(grace) => tracing::warn!("grace period over; closing remaining connections"),
        }
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

async fn serve_io<I, S>(
    builder: &auto::Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
    io: I,
    service: S,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(conn.into_owned()).await {
        // Clients vanishing mid-request is ordinary; nothing to act on.
        tracing::debug!(error = %e, "connection ended with an error");
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

fn tls_acceptor(files: &TlsFiles) -> anyhow::Result<TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("server.tls_cert {}: {e}", files.cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| anyhow::anyhow!("server.tls_key {}: {e}", files.key.display()))?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| anyhow::anyhow!("server.tls_cert/tls_key: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Checks that the TLS files load, for `check-config`.
pub fn check_tls(files: &TlsFiles) -> anyhow::Result<()> {
    tls_acceptor(files).map(|_| ())
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
