//! How the Redis store reaches its server(s), by `[store] mode`: one server through a
//! reconnecting `ConnectionManager`; the master a set of sentinels names, followed across
//! failovers ([`SentinelMaster`]); or a Cluster through the crate's `ClusterConnection`, which
//! follows MOVED and reconnects by itself. [`Conn`] hides which, so `redis.rs` issues each
//! command one way.
//!
//! Never log a URL or a password from here: errors are described by kind only (`failure` in
//! `redis.rs`).

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::io::tcp::TcpSettings;
use redis::io::tcp::socket2::TcpKeepalive;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionAddr, ErrorKind, IntoConnectionInfo, Pipeline,
    RedisError, RedisFuture, RedisResult, Role, TlsCertificates, TlsMode, Value,
};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

use super::{StoreError, StoreResult};
use crate::config::{RedisMode, Secret, StoreConfig};

/// Connect and response timeout: a dead server fails a request in about this long instead of
/// holding it.
pub(super) const TIMEOUT: Duration = Duration::from_secs(2);
/// Reconnect attempts per outage before commands fail; the next command starts a new round.
const RECONNECT_RETRIES: usize = 2;
const RECONNECT_MAX_DELAY: Duration = Duration::from_millis(500);
/// Idle time before TCP probes the server, so a silently dead connection is noticed.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// Tries of one command under Sentinel: the first, and one on each newly resolved master. A
/// failover takes seconds (down-after-milliseconds plus the election); a request does not wait
/// for it but fails at once (503) and the next one finds the new master.
const SENTINEL_ATTEMPTS: usize = 2;
/// Asking the sentinels (all of them, then ROLE on the named master) may take this long.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);
/// After a failed look-up, commands fail without asking again for this long: during an outage
/// each request would otherwise ask every sentinel.
const RESOLVE_PAUSE: Duration = Duration::from_millis(200);
/// How often the sentinels are asked whether the master is still the one in use: a master cut
/// off from the sentinels (but not from us) keeps accepting writes after they promoted another,
/// and a demoted one keeps answering reads; neither breaks the connection.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// One handle for a command; every kind is cheap to clone (all share one multiplexed
/// connection per server).
#[derive(Clone)]
pub(super) enum Conn {
    Standalone(ConnectionManager),
    Sentinel(Arc<SentinelMaster>),
    Cluster(ClusterConnection),
}

impl Conn {
    /// Connects once to check addresses and credentials; later outages are retried per command.
    /// `certs`: the CA of `[store] ca_file` ([`read_ca_file`]), if any.
    pub(super) async fn open(
        config: &StoreConfig,
        certs: Option<TlsCertificates>,
    ) -> RedisResult<Self> {
        match &config.mode {
            RedisMode::Standalone => {
                let mut info = config.url.as_str().into_connection_info()?;
                let mut redis = info.redis_settings().clone();
                if let Some(user) = &config.username {
                    redis = redis.set_username(user);
                }
                if let Some(password) = &config.password {
                    redis = redis.set_password(password.expose());
                }
                info = info
                    .set_redis_settings(redis)
                    .set_tcp_settings(tcp_settings());
                let client = match certs {
                    Some(certs) => redis::Client::build_with_tls(info, certs)?,
                    None => redis::Client::open(info)?,
                };
                let manager = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(TIMEOUT))
                    .set_response_timeout(Some(TIMEOUT))
                    .set_number_of_retries(RECONNECT_RETRIES)
                    .set_max_delay(RECONNECT_MAX_DELAY);
                Ok(Self::Standalone(
                    ConnectionManager::new_with_config(client, manager).await?,
                ))
            }
            RedisMode::Sentinel {
                sentinels,
                master_name,
                sentinel_password,
                db,
            } => {
                let client = sentinel_client(
                    config,
                    sentinels,
                    master_name,
                    sentinel_password.as_ref(),
                    *db,
                    certs,
                )?;
                let master = Arc::new(SentinelMaster::connect(client, master_name, *db).await?);
                tokio::spawn(watch(Arc::downgrade(&master)));
                Ok(Self::Sentinel(master))
            }
            RedisMode::Cluster { nodes } => {
                let scheme = if config.tls { "rediss" } else { "redis" };
                let urls = nodes
                    .iter()
                    .map(|(host, port)| format!("{scheme}://{}:{port}", url_host(host)));
                let mut builder = ClusterClientBuilder::new(urls)
                    .connection_timeout(TIMEOUT)
                    .response_timeout(TIMEOUT)
                    .tcp_settings(tcp_settings())
                    .retries(RECONNECT_RETRIES as u32)
                    .max_retry_wait(RECONNECT_MAX_DELAY.as_millis() as u64);
                if let Some(user) = &config.username {
                    builder = builder.username(user);
                }
                if let Some(password) = &config.password {
                    builder = builder.password(password.expose());
                }
                if let Some(certs) = certs {
                    builder = builder.certs(certs);
                }
                Ok(Self::Cluster(
                    builder.build()?.get_async_connection().await?,
                ))
            }
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Standalone(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
            Self::Sentinel(s) => Box::pin(async move {
                match s.run(Request::Command(cmd)).await? {
                    Reply::One(v) => Ok(v),
                    Reply::Many(_) => Err(unexpected_reply()),
                }
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Standalone(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Sentinel(s) => Box::pin(async move {
                match s.run(Request::Pipeline(pipeline, offset, count)).await? {
                    Reply::Many(v) => Ok(v),
                    Reply::One(_) => Err(unexpected_reply()),
                }
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Standalone(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
            Self::Sentinel(s) => s.db,
        }
    }
}

/// What one call sends: a command or a slice of a pipeline (see [`ConnectionLike`]).
#[derive(Clone, Copy)]
enum Request<'a> {
    Command(&'a Cmd),
    Pipeline(&'a Pipeline, usize, usize),
}

enum Reply {
    One(Value),
    Many(Vec<Value>),
}

fn unexpected_reply() -> RedisError {
    RedisError::from((ErrorKind::Client, "reply of the wrong shape"))
}

/// The master the sentinels name, followed across failovers.
///
/// The crate's `ConnectionManager` built from a `SentinelClient` keeps reconnecting to the
/// address it first got: after a failover it stayed on the old master and, when that one came
/// back empty, wrote there. Here a connection error, a timeout or a write refused by a replica
/// (READONLY) drops the connection; the next command asks the sentinels again, checks with
/// ROLE that the node they name is a master, and only then uses it. Never an address the
/// sentinels did not name just now. And since a master the sentinels replaced behind our back
/// (cut off from them, not from us; or demoted, still answering reads) breaks nothing, a
/// watch ([`watch`]) asks a sentinel every [`WATCH_INTERVAL`] which master it names, and
/// drops the connection when it is another.
///
/// A command is tried at most [`SENTINEL_ATTEMPTS`] times, and again only when the first try
/// provably did not run (a replica refused it, the connection was refused): a command whose
/// reply was lost may have run, and one that ran twice around another store call (a session
/// written again after "sign out everywhere") could undo that call.
pub(super) struct SentinelMaster {
    sentinels: tokio::sync::Mutex<Resolver>,
    current: RwLock<Current>,
    config: AsyncConnectionConfig,
    master_name: String,
    db: i64,
}

struct Resolver {
    client: SentinelClient,
    /// The last failed look-up: when, and why (answered again until [`RESOLVE_PAUSE`] passes).
    failed: Option<(Instant, RedisError)>,
}

struct Current {
    /// Counts every change, so a command that failed on an older connection does not drop a
    /// newer one another command already found.
    generation: u64,
    conn: Option<MultiplexedConnection>,
    /// Where `conn` goes, as the sentinels named it.
    addr: Option<(String, u16)>,
}

impl SentinelMaster {
    async fn connect(client: SentinelClient, master_name: &str, db: i64) -> RedisResult<Self> {
        let master = Self {
            master_name: master_name.to_owned(),
            db,
            sentinels: tokio::sync::Mutex::new(Resolver {
                client,
                failed: None,
            }),
            current: RwLock::new(Current {
                generation: 0,
                conn: None,
                addr: None,
            }),
            config: AsyncConnectionConfig::new()
                .set_connection_timeout(Some(TIMEOUT))
                .set_response_timeout(Some(TIMEOUT)),
        };
        master.master().await?;
        Ok(master)
    }

    async fn run(&self, request: Request<'_>) -> RedisResult<Reply> {
        let mut last = None;
        for _ in 0..SENTINEL_ATTEMPTS {
            let (generation, mut conn) = match self.snapshot() {
                (generation, Some(conn)) => (generation, conn),
                (_, None) => self.master().await?,
            };
            let reply = match request {
                Request::Command(cmd) => conn.req_packed_command(cmd).await.map(Reply::One),
                Request::Pipeline(p, offset, count) => conn
                    .req_packed_commands(p, offset, count)
                    .await
                    .map(Reply::Many),
            };
            match reply {
                Err(e) if wrong_or_gone(&e) => {
                    self.forget(generation);
                    // Tried again only when the error proves the command did not run: after a
                    // timeout or a dropped connection it may have, and running a session write
                    // again after a "sign out everywhere" in between would bring it back.
                    if !did_not_run(&e) {
                        return Err(e);
                    }
                    last = Some(e);
                }
                other => return other,
            }
        }
        Err(last.unwrap_or_else(unexpected_reply))
    }

    fn snapshot(&self) -> (u64, Option<MultiplexedConnection>) {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        (current.generation, current.conn.clone())
    }

    /// Drops the connection a command failed on, unless another one already replaced it.
    fn forget(&self, generation: u64) {
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        if current.generation == generation && current.conn.is_some() {
            current.conn = None;
            current.addr = None;
            current.generation += 1;
            tracing::warn!("redis master lost: asking the sentinels again");
        }
    }

    /// The current master's connection and its generation, asking the sentinels if there is
    /// none. One look-up at a time; those who waited for it use its result.
    async fn master(&self) -> RedisResult<(u64, MultiplexedConnection)> {
        let mut resolver = self.sentinels.lock().await;
        if let (generation, Some(conn)) = self.snapshot() {
            return Ok((generation, conn));
        }
        if let Some((at, e)) = &resolver.failed
            && at.elapsed() < RESOLVE_PAUSE
        {
            return Err(e.clone());
        }
        let found = tokio::time::timeout(RESOLVE_TIMEOUT, self.resolve(&mut resolver.client))
            .await
            .unwrap_or_else(|_| {
                Err(RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "sentinel look-up timed out",
                )))
            });
        match found {
            Ok((conn, addr)) => {
                resolver.failed = None;
                let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
                current.conn = Some(conn.clone());
                current.addr = Some(addr);
                current.generation += 1;
                tracing::info!("redis master found through the sentinels");
                Ok((current.generation, conn))
            }
            Err(e) => {
                resolver.failed = Some((Instant::now(), e.clone()));
                Err(e)
            }
        }
    }

    /// Asks the sentinels for the master, connects, and checks that the node says it is one
    /// (the sentinels' view may be a moment old: a demoted master says "slave").
    async fn resolve(
        &self,
        client: &mut SentinelClient,
    ) -> RedisResult<(MultiplexedConnection, (String, u16))> {
        let master = client.async_get_client().await?;
        let addr = match master.get_connection_info().addr() {
            ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
                (host.clone(), *port)
            }
            // (Sentinel names TCP addresses only.)
            _ => (String::new(), 0),
        };
        let mut conn = master
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        let role: Role = redis::cmd("ROLE").query_async(&mut conn).await?;
        match role {
            Role::Primary { .. } => Ok((conn, addr)),
            _ => Err(RedisError::from((
                ErrorKind::Server(redis::ServerErrorKind::ReadOnly),
                "the node the sentinels named is not a master",
            ))),
        }
    }
}

/// Every [`WATCH_INTERVAL`], for as long as the store lives: asks a sentinel which master it
/// names and drops the connection if that is not the one in use (the next command looks the
/// master up again, with its ROLE check).
async fn watch(master: std::sync::Weak<SentinelMaster>) {
    let mut sentinel = None;
    loop {
        tokio::time::sleep(WATCH_INTERVAL).await;
        let Some(master) = master.upgrade() else {
            return;
        };
        master.check(&mut sentinel).await;
    }
}

impl SentinelMaster {
    async fn check(&self, sentinel: &mut Option<MultiplexedConnection>) {
        let (generation, in_use) = {
            let current = self.current.read().unwrap_or_else(|p| p.into_inner());
            (current.generation, current.addr.clone())
        };
        // No connection: the next command asks the sentinels anyway.
        let Some(in_use) = in_use else {
            return;
        };
        if sentinel.is_none() {
            let connect = async {
                let client = self
                    .sentinels
                    .lock()
                    .await
                    .client
                    .async_get_sentinel_client()
                    .await?;
                client
                    .get_multiplexed_async_connection_with_config(&self.config)
                    .await
            };
            *sentinel = tokio::time::timeout(RESOLVE_TIMEOUT, connect)
                .await
                .ok()
                .and_then(Result::ok);
        }
        let Some(conn) = sentinel.as_mut() else {
            return;
        };
        let mut ask = redis::cmd("SENTINEL");
        ask.arg("GET-MASTER-ADDR-BY-NAME").arg(&self.master_name);
        let ask = ask.query_async::<Option<(String, u16)>>(conn);
        match tokio::time::timeout(TIMEOUT, ask).await {
            Ok(Ok(Some(named))) if named != in_use => {
                tracing::warn!("the sentinels name another redis master: switching");
                self.forget(generation);
            }
            Ok(Ok(_)) => {}
            // Another sentinel next time.
            Ok(Err(_)) | Err(_) => *sentinel = None,
        }
    }
}

/// Whether an error means the connection no longer reaches a writable master: it broke, timed
/// out, was refused, or the node is (now) a replica. Errors inside a MULTI arrive wrapped in
/// EXECABORT.
/// The server refused the command without running it (a replica, a master without its
/// replicas), or it never reached a server.
fn did_not_run(e: &RedisError) -> bool {
    let replica = |code: &str| matches!(code, "READONLY" | "MASTERDOWN");
    e.is_connection_refusal()
        || e.code().is_some_and(replica)
        || (e.code() == Some("EXECABORT")
            && e.clone()
                .into_server_errors()
                .is_some_and(|errs| errs.iter().any(|(_, s)| replica(s.code()))))
}

fn wrong_or_gone(e: &RedisError) -> bool {
    let replica = |code: &str| matches!(code, "READONLY" | "MASTERDOWN");
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_refusal()
        || e.is_connection_dropped()
        || e.code().is_some_and(replica)
        || (e.code() == Some("EXECABORT")
            && e.clone()
                .into_server_errors()
                .is_some_and(|errs| errs.iter().any(|(_, s)| replica(s.code()))))
}

fn sentinel_client(
    config: &StoreConfig,
    sentinels: &[(String, u16)],
    master_name: &str,
    sentinel_password: Option<&Secret>,
    db: i64,
    certs: Option<TlsCertificates>,
) -> RedisResult<SentinelClient> {
    let addrs = sentinels.iter().map(|(host, port)| {
        if config.tls {
            ConnectionAddr::TcpTls {
                host: host.clone(),
                port: *port,
                insecure: false,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(host.clone(), *port)
        }
    });
    let mut builder = SentinelClientBuilder::new(addrs, master_name, SentinelServerType::Master)?
        .set_client_to_redis_db(db)
        .set_client_to_redis_tcp_settings(tcp_settings())
        .set_client_to_sentinel_tcp_settings(tcp_settings());
    if config.tls {
        builder = builder
            .set_client_to_redis_tls_mode(TlsMode::Secure)
            .set_client_to_sentinel_tls_mode(TlsMode::Secure);
        if let Some(certs) = certs {
            builder = builder
                .set_client_to_redis_certificates(certs.clone())
                .set_client_to_sentinel_certificates(certs);
        }
    }
    if let Some(user) = &config.username {
        builder = builder.set_client_to_redis_username(user);
    }
    if let Some(password) = &config.password {
        builder = builder.set_client_to_redis_password(password.expose());
    }
    if let Some(password) = sentinel_password {
        builder = builder.set_client_to_sentinel_password(password.expose());
    }
    builder.build()
}

/// `[store] ca_file`: the PEM bundle trusted instead of the system roots. Read and checked at
/// start, so a missing or unreadable file stops the proxy instead of failing every handshake.
pub(super) fn read_ca_file(path: &Path) -> StoreResult<TlsCertificates> {
    let problem = |why: String| StoreError::Unavailable(format!("store.ca_file {path:?}: {why}"));
    let pem = std::fs::read(path).map_err(|e| problem(e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| problem("not a PEM certificate bundle".into()))?;
    if certs.is_empty() {
        return Err(problem("holds no PEM certificate".into()));
    }
    Ok(TlsCertificates {
        client_tls: None,
        root_cert: Some(pem),
    })
}

/// An IPv6 address goes into a URL in brackets.
fn url_host(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// Nagle off: small request/reply traffic. Keepalive and (on Linux) a user timeout make the
/// kernel drop a connection whose peer vanished without a reset, so the manager reconnects
/// instead of timing out every command on a dead socket.
fn tcp_settings() -> TcpSettings {
    let settings = TcpSettings::default()
        .set_nodelay(true)
        .set_keepalive(TcpKeepalive::new().with_time(KEEPALIVE));
    #[cfg(target_os = "linux")]
    let settings = settings.set_user_timeout(TIMEOUT * 3);
    settings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_that_mean_another_master_and_those_that_do_not() {
        let io = RedisError::from(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "refused",
        ));
        assert!(wrong_or_gone(&io));
        let readonly = RedisError::from((
            ErrorKind::Server(redis::ServerErrorKind::ReadOnly),
            "replica",
        ));
        assert!(wrong_or_gone(&readonly));
        // A missing script or a refused permission is the command's own: asking the sentinels
        // again would not change it.
        for kind in [
            redis::ServerErrorKind::NoScript,
            redis::ServerErrorKind::NoPerm,
        ] {
            assert!(!wrong_or_gone(&RedisError::from((
                ErrorKind::Server(kind),
                "no"
            ))));
        }
        assert!(!wrong_or_gone(&unexpected_reply()));
    }

    #[test]
    fn only_commands_that_provably_did_not_run_are_tried_again() {
        let refused = RedisError::from(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "refused",
        ));
        assert!(did_not_run(&refused));
        let readonly = RedisError::from((
            ErrorKind::Server(redis::ServerErrorKind::ReadOnly),
            "replica",
        ));
        assert!(did_not_run(&readonly));
        // Sent, then nothing heard: it may have run.
        for kind in [
            std::io::ErrorKind::TimedOut,
            std::io::ErrorKind::ConnectionReset,
            std::io::ErrorKind::BrokenPipe,
        ] {
            let lost = RedisError::from(std::io::Error::new(kind, "lost"));
            assert!(wrong_or_gone(&lost) && !did_not_run(&lost), "{kind:?}");
        }
    }
}
