//! Composition root: builds every part from the config and decides, in one place, the order in
//! which a request meets them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use http::{HeaderValue, Request, header};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestId, PropagateRequestIdLayer, RequestId, SetRequestId,
    SetRequestIdLayer,
};
use tower_http::sensitive_headers::{SetSensitiveRequestHeaders, SetSensitiveRequestHeadersLayer};

use crate::admin::{self, AdminState};
use crate::clock::{self, SharedClock};
use crate::config::{Config, StoreBackend};
use crate::listener::{Listener, Workers};
use crate::metrics::Metrics;
use crate::records::{AnyRecords, identity};
use crate::router::{Router, RouterService};
use crate::secrets::Sealer;
use crate::state::Core;
use crate::store::AnyStore;
use crate::store::memory::MemoryStore;
use crate::store::redis::RedisStore;
use crate::upstream::Upstream;

/// A started proxy: where it listens, and the handle to stop it.
pub struct Running {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Running {
    /// Begins a graceful shutdown: readiness fails, no new connections, in-flight requests finish.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Resolves once the proxy has drained (or its grace period ran out).
    pub async fn wait(self) {
        let _ = self.task.await;
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

/// [`start`] with an injected clock (tests move a manual one).
pub async fn start_with_clock(config: Config, clock: SharedClock) -> anyhow::Result<Running> {
    install_crypto_provider();
    for warning in config.warnings() {
        tracing::warn!(key = warning.key, "{}", warning.message);
    }
    let metrics = Arc::new(Metrics::new());
    let store = Arc::new(open_store(&config, &clock).await?);
    if matches!(*store, AnyStore::Memory(_)) {
        tokio::spawn(sweep_memory_store(Arc::downgrade(&store)));
    }
    let records = Arc::new(
        AnyRecords::open(&config.records)
            .await
            .map_err(|e| anyhow::anyhow!("[records]: {e}"))?,
    );
    // Checked before the first request: records that may have been replaced serve nothing.
    let mut verdict = None;
    identity::log_change(
        &mut verdict,
        &identity::check(&store, &records, clock.now()).await,
    );
    tokio::spawn(identity::watch(
        store.clone(),
        Arc::downgrade(&records),
        clock.clone(),
        verdict,
    ));
    let sealer = Sealer::from_config(&config.secrets)?;
    let listener = Listener::bind(&config.server).await?;
    let addr = listener.local_addr()?;
    let admin_listener = TcpListener::bind(config.server.admin_listen)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on {} (server.admin_listen): {e}",
                config.server.admin_listen
            )
        })?;
    let admin_addr = admin_listener.local_addr()?;

    let upstream_url = config.upstream.url.clone();
    let grace = config.server.shutdown_grace;
    let core = Arc::new(Core::new(
        config,
        store.clone(),
        records,
        sealer,
        clock,
        metrics.clone(),
    )?);
    let workers = Workers::start(core.config.server.workers)?;
    let stacks: anyhow::Result<Vec<_>> = workers
        .handles()
        .map(|handle| Ok((handle.clone(), service_stack(&core)?)))
        .collect();
    let stacks = match stacks {
        Ok(stacks) => stacks,
        Err(e) => {
            let _ = tokio::task::spawn_blocking(move || workers.stop()).await;
            return Err(e);
        }
    };

    let shutdown = CancellationToken::new();
    let admin_state = Arc::new(AdminState {
        metrics: metrics.clone(),
        store: store.clone(),
        core: core.clone(),
        ready: AtomicBool::new(true),
    });
    let admin_stop = CancellationToken::new();
    tokio::spawn(admin::serve(
        admin_listener,
        admin_state.clone(),
        admin_stop.clone(),
    ));

    let token = shutdown.clone();
    let task = tokio::spawn(async move {
        let draining = token.clone();
        let state = admin_state.clone();
        tokio::spawn(async move {
            draining.cancelled().await;
            state.ready.store(false, Ordering::Release);
        });
        listener.serve(stacks, metrics, token, grace).await;
        // Connections are drained (or out of time): the workers can go.
        let _ = tokio::task::spawn_blocking(move || workers.stop()).await;
        // The admin listener outlives the drain so probes see "draining", not a refused port.
        admin_stop.cancel();
    });
    tracing::info!(%addr, %admin_addr, upstream = %upstream_url, "twofa-proxy listening");
    Ok(Running {
        addr,
        admin_addr,
        shutdown,
        task,
    })
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
