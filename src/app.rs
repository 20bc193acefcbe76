//! Composition root: builds every part from the config and decides, in one place, the order in
//! which a request meets them.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderValue, Request, header};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower::{ServiceBuilder, ServiceExt as _};
use tower_http::request_id::{
    MakeRequestId, PropagateRequestId, PropagateRequestIdLayer, RequestId, SetRequestId,
    SetRequestIdLayer,
};
use tower_http::sensitive_headers::{SetSensitiveRequestHeaders, SetSensitiveRequestHeadersLayer};

use crate::admin::{self, AdminState};
use crate::body::Body;
use crate::clock::{self, SharedClock};
use crate::config::{Config, StoreBackend};
use crate::health::{self, Health};
use crate::listener::{Certificate, Listener, Workers};
use crate::metrics::Metrics;
use crate::records::{AnyRecords, identity};
use crate::router::{Router, RouterService};
use crate::secrets::Sealer;
use crate::state::Core;
use crate::store::AnyStore;
use crate::store::memory::MemoryStore;
use crate::store::redis::RedisStore;
use crate::upstream::Upstream;

/// A started proxy: where it listens, and the handle to reload or stop it.
pub struct Running {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// `server.metrics_listen`'s bound address, when set.
    pub metrics_addr: Option<SocketAddr>,
    stop: CancellationToken,
    /// A second shutdown request: the delay is cut short.
    hurry: CancellationToken,
    task: JoinHandle<()>,
    serving: Arc<Serving>,
}

impl Running {
    /// Begins a graceful shutdown: readiness fails at once; requests are still accepted and
    /// served for `server.shutdown_delay`; then no new connections, and in-flight requests get
    /// `server.shutdown_grace` to finish.
    /// A second call (a second Ctrl-C) cuts the delay short; the drain still runs.
    pub fn shutdown(&self) {
        if self.stop.is_cancelled() {
            self.hurry.cancel();
        }
        self.stop.cancel();
    }

    /// Resolves once the proxy has drained (or its grace period ran out).
    pub async fn wait(self) {
        let _ = self.task.await;
    }

    /// [`Running::wait`] without giving up the handle, so a shutdown can be asked for again
    /// meanwhile. Not to be awaited again once it has resolved.
    pub async fn stopped(&mut self) {
        let _ = (&mut self.task).await;
    }

    /// Whether the store has been reached and requests are served (readiness may still fail
    /// later, when the store or the records go away).
    pub fn serving(&self) -> bool {
        self.serving.health.core().is_some()
    }

    /// Applies a new config (SIGHUP): the TLS certificate for new connections, and everything
    /// the request path reads, for each worker's next request. On any problem nothing changes
    /// and the error says why. Settings bound at start (listeners, workers, TLS on or off,
    /// `[store]`, `[records]`) must stay as they are: a reload that changes them is refused.
    pub fn reload(&self, config: Config) -> anyhow::Result<()> {
        self.serving.reload(config)
    }
}

/// rustls needs exactly one process-wide crypto provider; several crates in the tree could each
/// bring one, so choose explicitly. Safe to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Binds both listeners and starts serving in the background.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    start_with_clock(config, clock::system()).await
}

/// The store the config names.
pub async fn open_store(config: &Config, clock: &SharedClock) -> anyhow::Result<AnyStore> {
    Ok(match config.store.backend {
        StoreBackend::Memory => AnyStore::Memory(Box::new(MemoryStore::new(clock.clone()))),
        StoreBackend::Redis => AnyStore::Redis(Box::new(
            RedisStore::open(&config.store)
                .await
                .map_err(|e| anyhow::anyhow!("[store]: {e}"))?,
        )),
    })
}

/// Clears expired entries from the memory store every 30 s, for as long as the store lives.
async fn sweep_memory_store(store: std::sync::Weak<AnyStore>) {
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
        match store.upgrade().as_deref() {
            Some(AnyStore::Memory(memory)) => memory.sweep(),
            _ => return,
        }
    }
}

/// Waits between attempts to reach the store at start: doubling from the first, up to the last.
const STORE_RETRY_FIRST: Duration = Duration::from_millis(500);
const STORE_RETRY_MAX: Duration = Duration::from_secs(30);

/// [`start`] with an injected clock (tests move a manual one).
///
/// A store that cannot be reached does not stop the start: the listeners are bound, liveness
/// answers, readiness fails and every other request is answered 503 (nothing is forwarded
/// unchecked), while the store is tried again with backoff in the background. Everything else
/// the config names (keys, records, TLS files, the upstream's CA, mail) must load, or the start
/// fails.
pub async fn start_with_clock(config: Config, clock: SharedClock) -> anyhow::Result<Running> {
    install_crypto_provider();
    for warning in config.warnings() {
        tracing::warn!(key = warning.key, "{}", warning.message);
    }
    preflight(&config)?;
    let metrics = Arc::new(Metrics::new());
    let records = Arc::new(
        AnyRecords::open(&config.records)
            .await
            .map_err(|e| anyhow::anyhow!("[records]: {e}"))?,
    );
    let listener = Listener::bind(&config.server).await?;
    let addr = listener.local_addr()?;
    let admin_listener = bind(config.server.admin_listen, "server.admin_listen").await?;
    let admin_addr = admin_listener.local_addr()?;
    let metrics_listener = match config.server.metrics_listen {
        Some(at) => Some(bind(at, "server.metrics_listen").await?),
        None => None,
    };
    let metrics_addr = metrics_listener
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()?;

    let workers = Workers::start(config.server.workers)?;
    let health = Arc::new(Health::default());
    let probes = Probes::new(&config.twofactor.prefix);
    let cells: Vec<Cell> = workers.handles().map(|_| Cell::default()).collect();
    let stacks: Vec<_> = workers
        .handles()
        .zip(&cells)
        .map(|(handle, cell)| {
            (
                handle.clone(),
                Probed(Arc::new(ProbedParts {
                    cell: cell.clone(),
                    health: health.clone(),
                    probes: probes.clone(),
                })),
            )
        })
        .collect();
    let grace = config.server.shutdown_grace;
    let upstream_url = config.upstream.url.clone();
    let serving = Arc::new(Serving {
        health: health.clone(),
        cells,
        certificate: listener.certificate(),
        clock,
        metrics: metrics.clone(),
        records,
        store: std::sync::OnceLock::new(),
        config: std::sync::Mutex::new(config),
    });

    let stop = CancellationToken::new();
    let hurry = CancellationToken::new();
    // The first attempt in line, so a reachable store is serving when `start` returns.
    let first = open_store(&serving.config(), &serving.clock).await;
    match first {
        Ok(store) => {
            if let Err(e) = serving.install_store(store).await {
                let _ = tokio::task::spawn_blocking(move || workers.stop()).await;
                return Err(e);
            }
        }
        Err(e) => {
            tracing::warn!(
                error = %format!("{e:#}"),
                retry_in_ms = STORE_RETRY_FIRST.as_millis() as u64,
                "store unreachable at start: not ready, every protected request answers 503; retrying"
            );
            tokio::spawn(reach_store(serving.clone(), stop.clone()));
        }
    }

    let admin_state = Arc::new(AdminState {
        metrics: metrics.clone(),
        health: health.clone(),
        metrics_here: metrics_listener.is_none(),
    });
    let admin_stop = CancellationToken::new();
    tokio::spawn(admin::serve(
        admin_listener,
        admin_state,
        admin_stop.clone(),
    ));
    if let Some(listener) = metrics_listener {
        tokio::spawn(admin::serve_metrics(
            listener,
            metrics.clone(),
            admin_stop.clone(),
        ));
    }

    let accepting = CancellationToken::new();
    let serve = tokio::spawn(listener.serve(stacks, metrics, accepting.clone(), grace));
    let task = {
        let stop = stop.clone();
        let hurry = hurry.clone();
        let serving = serving.clone();
        tokio::spawn(async move {
            stop.cancelled().await;
            serving.health.start_draining();
            let delay = serving.config().server.shutdown_delay;
            if !delay.is_zero() {
                tracing::info!(
                    delay_ms = delay.as_millis() as u64,
                    "shutdown: readiness fails; still accepting and serving during the delay"
                );
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = hurry.cancelled() => tracing::info!("shutdown asked again: delay cut short"),
                }
            }
            accepting.cancel();
            let _ = serve.await;
            // Connections are drained (or out of time): the workers can go.
            let _ = tokio::task::spawn_blocking(move || workers.stop()).await;
            // The admin listener outlives the drain so probes see "draining", not a refused
            // port.
            admin_stop.cancel();
        })
    };
    tracing::info!(%addr, %admin_addr, upstream = %upstream_url, "twofa-proxy listening");
    Ok(Running {
        addr,
        admin_addr,
        metrics_addr,
        stop,
        hurry,
        task,
        serving,
    })
}

async fn bind(at: SocketAddr, key: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(at)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {at} ({key}): {e}"))
}

/// Builds, and drops, what a [`Core`] needs from the config besides the store, so a config that
/// cannot serve fails the start (or the reload) instead of the later build.
fn preflight(config: &Config) -> anyhow::Result<()> {
    Sealer::from_config(&config.secrets)?;
    crate::mail::Mailer::from_config(&config.email)?;
    Ok(())
}

/// Tries the store again, with backoff, until it answers or the proxy stops.
async fn reach_store(serving: Arc<Serving>, stop: CancellationToken) {
    let mut wait = STORE_RETRY_FIRST;
    let mut attempt: u32 = 1;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        attempt += 1;
        let config = serving.config();
        match open_store(&config, &serving.clock).await {
            Ok(store) => {
                match serving.install_store(store).await {
                    Ok(()) => tracing::info!(attempt, "store reached: serving"),
                    // `preflight` built the same parts at start; this is not expected.
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), "cannot serve; stopping");
                        stop.cancel();
                    }
                }
                return;
            }
            Err(e) => {
                wait = (wait * 2).min(STORE_RETRY_MAX);
                tracing::warn!(
                    attempt,
                    error = %format!("{e:#}"),
                    retry_in_ms = wait.as_millis() as u64,
                    "store still unreachable: not ready; retrying"
                );
            }
        }
    }
}

/// One worker's request path, swapped whole by a reload; empty until the store is reached.
type Cell = Arc<RwLock<Option<Stack>>>;

/// What the request path is built from, what a reload replaces and what it keeps.
struct Serving {
    health: Arc<Health>,
    /// One per worker, in the workers' order.
    cells: Vec<Cell>,
    certificate: Option<Arc<Certificate>>,
    clock: SharedClock,
    metrics: Arc<Metrics>,
    records: Arc<AnyRecords>,
    /// Set once, when the store is first reached.
    store: std::sync::OnceLock<Arc<AnyStore>>,
    /// The config in force (or waiting for the store to be reached).
    config: std::sync::Mutex<Config>,
}

impl Serving {
    fn config(&self) -> Config {
        match self.config.lock() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The store has been reached: check the records against it, then serve.
    async fn install_store(&self, store: AnyStore) -> anyhow::Result<()> {
        let store = Arc::new(store);
        if matches!(*store, AnyStore::Memory(_)) {
            tokio::spawn(sweep_memory_store(Arc::downgrade(&store)));
        }
        // Checked before the first request: records that may have been replaced serve nothing.
        let mut verdict = None;
        identity::log_change(
            &mut verdict,
            &identity::check(&store, &self.records, self.clock.now()).await,
        );
        tokio::spawn(identity::watch(
            store.clone(),
            Arc::downgrade(&self.records),
            self.clock.clone(),
            verdict,
        ));
        let _ = self.store.set(store.clone());
        let config = self.config();
        let stacks = self.build(config, store)?;
        self.install(stacks);
        Ok(())
    }

    /// A core and one stack per worker for `config`; nothing is installed yet.
    fn build(
        &self,
        config: Config,
        store: Arc<AnyStore>,
    ) -> anyhow::Result<(Arc<Core>, Vec<Stack>)> {
        let sealer = Sealer::from_config(&config.secrets)?;
        let core = Arc::new(Core::new(
            config,
            store,
            self.records.clone(),
            sealer,
            self.clock.clone(),
            self.metrics.clone(),
        )?);
        let stacks = self
            .cells
            .iter()
            .map(|_| service_stack(&core))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok((core, stacks))
    }

    fn install(&self, (core, stacks): (Arc<Core>, Vec<Stack>)) {
        for (cell, stack) in self.cells.iter().zip(stacks) {
            if let Ok(mut slot) = cell.write() {
                *slot = Some(stack);
            }
        }
        self.health.set_core(core);
    }

    fn reload(&self, config: Config) -> anyhow::Result<()> {
        let running = self.config();
        let fixed = restart_only_changes(&running, &config);
        anyhow::ensure!(
            fixed.is_empty(),
            "{} cannot change without a restart",
            fixed.join(", ")
        );
        check_files(&config)?;
        preflight(&config)?;
        let built = match self.store.get() {
            Some(store) => Some(self.build(config.clone(), store.clone())?),
            None => None,
        };
        if let (Some(certificate), Some(files)) = (&self.certificate, &config.server.tls) {
            certificate.reload(files)?;
        }
        for warning in config.warnings() {
            tracing::warn!(key = warning.key, "{}", warning.message);
        }
        if let Ok(mut slot) = self.config.lock() {
            *slot = config;
        }
        if let Some(built) = built {
            self.install(built);
        }
        Ok(())
    }
}

/// The settings a running proxy was bound with at start, named when a reload would change them.
fn restart_only_changes(running: &Config, new: &Config) -> Vec<&'static str> {
    let (a, b) = (&running.server, &new.server);
    let mut changed = Vec::new();
    let mut check = |name, same: bool| {
        if !same {
            changed.push(name);
        }
    };
    check("server.listen", a.listen == b.listen);
    check("server.admin_listen", a.admin_listen == b.admin_listen);
    check(
        "server.metrics_listen",
        a.metrics_listen == b.metrics_listen,
    );
    check("server.workers", a.workers == b.workers);
    check(
        "server.tls_cert/tls_key (TLS on or off)",
        a.tls.is_some() == b.tls.is_some(),
    );
    check(
        "server.header_read_timeout",
        a.header_read_timeout == b.header_read_timeout,
    );
    check(
        "server.keepalive_timeout",
        a.keepalive_timeout == b.keepalive_timeout,
    );
    check(
        "server.max_header_bytes",
        a.max_header_bytes == b.max_header_bytes,
    );
    check(
        "server.shutdown_grace",
        a.shutdown_grace == b.shutdown_grace,
    );
    // Compared as printed: every [store] key, whichever the backend reads.
    check(
        "[store]",
        format!("{:?}", running.store) == format!("{:?}", new.store),
    );
    check(
        "[records]",
        format!("{:?}", running.records) == format!("{:?}", new.records)
            && running.records.url.expose() == new.records.url.expose(),
    );
    changed
}

/// The probe routes on the main listener, under the prefix the proxy started with.
#[derive(Clone)]
struct Probes {
    live: Arc<str>,
    ready: Arc<str>,
}

impl Probes {
    fn new(prefix: &str) -> Self {
        Self {
            live: format!("{prefix}{}", health::LIVE_SUFFIX).into(),
            ready: format!("{prefix}{}", health::READY_SUFFIX).into(),
        }
    }
}

/// The outermost layer of every worker: the probe routes, then the stack in force, or 503
/// while the store has not been reached. Cloned for every request (hyper's service is), so its
/// parts sit behind one `Arc`: one reference count per request, not five.
#[derive(Clone)]
struct Probed(Arc<ProbedParts>);

struct ProbedParts {
    cell: Cell,
    health: Arc<Health>,
    probes: Probes,
}

impl tower::Service<Request<Incoming>> for Probed {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = ProbedFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> ProbedFuture {
        // Probes answer GET and HEAD only; other methods go on (and are the router's own 404s).
        let probe = matches!(*req.method(), http::Method::GET | http::Method::HEAD);
        let path = req.uri().path();
        let parts = &*self.0;
        if probe && path == &*parts.probes.live {
            return ProbedFuture::Ready(Some(health::text(http::StatusCode::OK, "ok\n")));
        }
        if probe && path == &*parts.probes.ready {
            let health = parts.health.clone();
            return ProbedFuture::Boxed(Box::pin(async move {
                let readiness = health.readiness().await;
                health::text(readiness.status(), readiness.text())
            }));
        }
        let stack = parts.cell.read().ok().and_then(|s| s.clone());
        match stack {
            Some(stack) => ProbedFuture::Inner(stack.oneshot(req)),
            None => {
                let mut res = health::text(
                    http::StatusCode::SERVICE_UNAVAILABLE,
                    "starting: store not reached yet\n",
                );
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                ProbedFuture::Ready(Some(res))
            }
        }
    }
}

enum ProbedFuture {
    Inner(tower::util::Oneshot<Stack, Request<Incoming>>),
    Ready(Option<http::Response<Body>>),
    Boxed(std::pin::Pin<Box<dyn Future<Output = http::Response<Body>> + Send>>),
}

impl Future for ProbedFuture {
    type Output = Result<http::Response<Body>, Infallible>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut *self {
            ProbedFuture::Inner(inner) => std::pin::Pin::new(inner).poll(cx),
            ProbedFuture::Ready(res) => match res.take() {
                Some(res) => Poll::Ready(Ok(res)),
                None => Poll::Pending,
            },
            ProbedFuture::Boxed(fut) => fut.as_mut().poll(cx).map(Ok),
        }
    }
}

/// One worker's request path, outermost layer first. Each worker has its own, so upstream
/// connection pools stay on the worker's thread.
fn service_stack(core: &Arc<Core>) -> anyhow::Result<Stack> {
    let config = &core.config;
    let upstream = Upstream::new(
        &config.upstream,
        config.server.trusted_proxies.clone(),
        Some(core.config.app.identity_header.clone()),
        core.metrics.clone(),
    )?;
    let router = Arc::new(Router::new(core.clone(), upstream));
    Ok(ServiceBuilder::new()
        // Cookie and credential values print as "Sensitive" in any debug output and are never
        // put in HTTP/2 header compression tables.
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::COOKIE,
            header::AUTHORIZATION,
            header::PROXY_AUTHORIZATION,
        ]))
        // Every request carries an id upstream and back, so app logs and ours can be joined.
        .layer(SetRequestIdLayer::x_request_id(RequestIds::new()))
        .layer(PropagateRequestIdLayer::x_request_id())
        // No catch-panic layer: each connection runs in its own task, so a panic ends one
        // connection, never the process; our code denies panics by lint, and the layer would box
        // every response body.
        .service(RouterService(router)))
}

type Stack =
    SetSensitiveRequestHeaders<SetRequestId<PropagateRequestId<RouterService>, RequestIds>>;

/// Request ids: a random per-process prefix and a counter; unique without a syscall per request.
#[derive(Clone)]
struct RequestIds {
    prefix: u32,
    next: Arc<AtomicU64>,
}

impl RequestIds {
    fn new() -> Self {
        let mut bytes = [0u8; 4];
        // Uniqueness across restarts only; a fixed prefix would still be correct.
        let _ = getrandom::fill(&mut bytes);
        Self {
            prefix: u32::from_le_bytes(bytes),
            next: Arc::new(AtomicU64::new(1)),
        }
    }
}

impl MakeRequestId for RequestIds {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        // `{prefix:08x}-{n:x}`, written without the formatting machinery (every request).
        let mut buf = [0u8; 8 + 1 + 16];
        let digits = b"0123456789abcdef";
        for (i, slot) in buf[..8].iter_mut().enumerate() {
            *slot = digits[((self.prefix >> (28 - 4 * i)) & 0xf) as usize];
        }
        buf[8] = b'-';
        let width = (16 - n.leading_zeros() as usize / 4).max(1);
        for (i, slot) in buf[9..9 + width].iter_mut().enumerate() {
            *slot = digits[((n >> (4 * (width - 1 - i))) & 0xf) as usize];
        }
        HeaderValue::from_bytes(&buf[..9 + width])
            .ok()
            .map(RequestId::new)
    }
}

/// Waits for SIGTERM (Kubernetes) or SIGINT (a terminal's Ctrl-C).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Loads every file the config names (TLS cert and key, upstream CA), as `run` would; for
/// `check-config`, which must find what `run` would trip over.
pub fn check_files(config: &Config) -> anyhow::Result<()> {
    install_crypto_provider();
    if let Some(files) = &config.server.tls {
        crate::listener::check_tls(files)?;
    }
    Upstream::new(&config.upstream, Vec::new(), None, Arc::new(Metrics::new()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_reload_names_every_setting_bound_at_start() {
        let config = |extra: &str| {
            Config::from_toml(
                &format!("[records]\npath = \":memory:\"\n{extra}"),
                Vec::new(),
            )
            .unwrap()
        };
        let running = config("");
        let same = config("[app]\npublic_paths = [\"/\"]\n[session]\nidle_timeout = \"5m\"\n");
        assert!(restart_only_changes(&running, &same).is_empty());
        for (extra, named) in [
            ("[server]\nlisten = \"127.0.0.1:1\"\n", "server.listen"),
            ("[server]\nworkers = 3\n", "server.workers"),
            (
                "[server]\nshutdown_grace = \"1s\"\n",
                "server.shutdown_grace",
            ),
            (
                "[server]\nmetrics_listen = \"127.0.0.1:9100\"\n",
                "server.metrics_listen",
            ),
            ("[store]\nkey_prefix = \"other:\"\n", "[store]"),
        ] {
            assert_eq!(
                restart_only_changes(&running, &config(extra)),
                [named],
                "{extra}"
            );
        }
        // Delays and everything the request path reads are applied.
        let delay = config("[server]\nshutdown_delay = \"5s\"\n");
        assert!(restart_only_changes(&running, &delay).is_empty());
    }

    #[test]
    fn request_ids_read_as_prefix_dash_counter_in_hex() {
        for (prefix, n) in [(0, 1), (0xdead_beef, 0xff), (7, 0x10), (1, u64::MAX)] {
            let mut ids = RequestIds {
                prefix,
                next: Arc::new(AtomicU64::new(n)),
            };
            let req = Request::new(());
            let id = ids.make_request_id(&req).unwrap();
            assert_eq!(
                id.header_value().to_str().unwrap(),
                format!("{prefix:08x}-{n:x}")
            );
        }
    }
}
