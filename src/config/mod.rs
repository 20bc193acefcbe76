//! Configuration: one TOML file, `TWOFA_<SECTION>__<KEY>` env overrides and `<key>_file` secrets,
//! read into typed values. Every problem is reported at once, named by its key.
//!
//! `config/example.toml` documents every key read here, with its default.

mod reader;
mod site;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, Uri};
use ipnet::IpNet;
use toml::{Table, Value};

use reader::Reader;

use crate::auth::SecondFactor;
use crate::words::{Language, LanguageSetting};
pub use reader::{KeyBytes, Problem, Secret, parse_duration};

/// Every problem found while loading; `Display` prints one per line.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<Problem>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.0 {
            writeln!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub upstream: UpstreamConfig,
    pub app: AppConfig,
    pub twofactor: TwoFactorConfig,
    pub totp: TotpConfig,
    pub email: EmailConfig,
    pub session: SessionConfig,
    pub store: StoreConfig,
    pub records: RecordsConfig,
    pub secrets: SecretsConfig,
    pub ui: UiConfig,
    /// `TWOFA_` variables that are neither overrides nor read by the command (a warning).
    pub ignored_env: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub tls: Option<TlsFiles>,
    pub trusted_proxies: Vec<IpNet>,
    /// After SIGTERM: how long readiness fails while requests are still accepted and served
    /// (endpoint removal is asynchronous), before the drain of `shutdown_grace` begins.
    pub shutdown_delay: Duration,
    pub shutdown_grace: Duration,
    /// A listener of its own for `/metrics` only; `None`: metrics on the admin listener.
    pub metrics_listen: Option<SocketAddr>,
    /// Time a client has to send a request's headers (slow-loris guard).
    pub header_read_timeout: Duration,
    /// How long an idle keep-alive connection is kept open waiting for its next request.
    pub keepalive_timeout: Duration,
    /// Largest request head accepted; beyond it clients get 431.
    pub max_header_bytes: usize,
    /// Worker threads serving connections; 0 = one per core.
    pub workers: usize,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamScheme {
    Http,
    Https,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub url: Uri,
    pub scheme: UpstreamScheme,
    /// `host:port` of the upstream, used as Host when `preserve_host` is off.
    pub authority: http::uri::Authority,
    pub preserve_host: bool,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
    /// Extra CA trusted for an https upstream (internal CAs, self-signed test servers).
    pub ca_file: Option<PathBuf>,
    /// `Upgrade` protocols tunnelled besides `websocket`, lower case; never one carrying HTTP.
    pub upgrade_protocols: Vec<String>,
    /// How often a tunnel opened under a session checks that the session still exists.
    pub tunnel_session_check: Duration,
}

#[derive(Debug, Clone)]
pub struct AppConfig {
    pub name: String,
    pub login_paths: Vec<String>,
    pub username_field: String,
    pub username_case_sensitive: bool,
    /// Account names may use any Unicode letters, canonicalised for every app's folding
    /// (`login::account`); off: non-ASCII names are refused at the login.
    pub username_unicode: bool,
    pub success_status: Vec<u16>,
    /// Path prefixes a successful login redirects to; empty: anywhere but a login page.
    pub success_location: Vec<String>,
    /// How long a client may take to send a watched login's body.
    pub login_body_timeout: Duration,
    pub success_cookie: String,
    pub user_header: Option<HeaderName>,
    pub login_page: String,
    pub next_param: String,
    pub logout_paths: Vec<String>,
    pub public_paths: Vec<String>,
    pub identity_header: HeaderName,
    /// Where the settings page links back to (the app's own account page).
    pub account_settings_url: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforcement {
    Optional,
    Required,
}

#[derive(Debug, Clone)]
pub struct TwoFactorConfig {
    pub enforcement: Enforcement,
    pub methods: Vec<SecondFactor>,
    pub prefix: String,
    pub challenge_ttl: Duration,
    pub max_attempts_per_challenge: u32,
    pub lockout_threshold: u32,
    pub lockout_window: Duration,
    pub lockout_duration: Duration,
    pub recovery_codes: u32,
    /// Sign-ins of one account held back at once (within one `challenge_ttl` window).
    pub max_pending_logins: u32,
}

#[derive(Debug, Clone)]
pub struct UiConfig {
    /// The language of pages, JSON messages and emails.
    pub language: LanguageSetting,
}

#[derive(Debug, Clone)]
pub struct TotpConfig {
    pub issuer: String,
    pub skew: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailTransport {
    Smtp,
    File,
    /// Prints codes to the log: demo and development only.
    Log,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressSource {
    Input,
    Username,
    Header(String),
}

#[derive(Debug, Clone)]
pub struct EmailConfig {
    pub transport: MailTransport,
    pub from: String,
    pub address_source: AddressSource,
    pub code_ttl: Duration,
    pub code_digits: u8,
    pub resend_interval: Duration,
    /// Code emails per hour to one account from one client (settings: from its own user).
    pub max_sends_per_hour: u32,
    /// Code emails for one sign-in (the first code and its resends).
    pub max_sends_per_login: u32,
    /// Code emails per hour to one account from all clients together.
    pub max_account_sends_per_hour: u32,
    pub file_dir: Option<PathBuf>,
    pub smtp: SmtpConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    StartTls,
    Tls,
    None,
}

#[derive(Debug, Clone)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub ca_file: Option<PathBuf>,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub idle_timeout: Duration,
    pub absolute_timeout: Duration,
    pub insecure_http_cookies: bool,
    /// How long a replica may reuse a session it read from Redis: the bound on how late a
    /// logout or revocation on another replica takes effect here. Zero disables the cache.
    pub cache_ttl: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreBackend {
    Memory,
    Redis,
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub backend: StoreBackend,
    /// Standalone Redis only (`mode = "standalone"`); may carry a password, so never logged.
    pub url: String,
    pub key_prefix: String,
    /// How the Redis store finds its server(s).
    pub mode: RedisMode,
    /// The data nodes' ACL user and password (Sentinel and Cluster; standalone takes them from
    /// the URL, and these override it).
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// TLS to every Redis connection (standalone: the URL is `rediss://`).
    pub tls: bool,
    /// PEM CA bundle trusted for the Redis servers' certificates instead of the system roots.
    pub ca_file: Option<PathBuf>,
}

/// `[store] mode`: one server, a Sentinel-watched master, or a Cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisMode {
    Standalone,
    /// The master named `master_name`, as the sentinels at `sentinels` know it.
    Sentinel {
        sentinels: Vec<(String, u16)>,
        master_name: String,
        /// `requirepass` of the sentinels themselves, if they have one.
        sentinel_password: Option<Secret>,
        db: i64,
    },
    /// Any of the cluster's nodes; the rest are discovered.
    Cluster {
        nodes: Vec<(String, u16)>,
    },
}

/// `[records]`: where the durable 2FA records live (see [`crate::records`]).
#[derive(Debug, Clone)]
pub struct RecordsConfig {
    pub backend: RecordsBackend,
    /// The SQLite database file, created at the first start; `:memory:` keeps records in memory
    /// only (the demo and tests).
    pub path: PathBuf,
    /// The PostgreSQL URL (it may carry a password: a secret, also read from `url_file`).
    pub url: Secret,
    /// PEM certificates that vouch for the PostgreSQL server, besides the system roots.
    pub ca_file: Option<PathBuf>,
    /// The records' identity as the operator pinned it (see [`crate::records::identity`]).
    pub identity: Option<String>,
}

fn is_loopback_name(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordsBackend {
    /// One file, one replica.
    Sqlite,
    /// One database shared by every replica.
    Postgres,
}

impl RecordsConfig {
    /// A PostgreSQL server on another host reached without TLS required: the sealed keys are
    /// sealed, but emails, recovery-code hashes and the password in the URL are not.
    fn plaintext_remote(&self) -> Option<Problem> {
        if self.backend != RecordsBackend::Postgres {
            return None;
        }
        let config: tokio_postgres::Config = self.url.expose().parse().ok()?;
        let remote = config.get_hosts().iter().any(|host| match host {
            tokio_postgres::config::Host::Tcp(name) => !is_loopback_name(name),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(_) => false,
        });
        (remote && config.get_ssl_mode() != tokio_postgres::config::SslMode::Require).then(|| {
            Problem {
                key: "records.url".into(),
                message: "PostgreSQL on another host without sslmode=require: records and the \
                          password travel in the clear if the server offers no TLS"
                    .into(),
            }
        })
    }

    /// The records vanish when the process ends.
    pub fn in_memory(&self) -> bool {
        self.backend == RecordsBackend::Sqlite && self.path.as_os_str() == ":memory:"
    }
}

#[derive(Debug, Clone)]
pub struct SecretsConfig {
    pub encryption_key: Option<KeyBytes>,
    pub previous_keys: Vec<KeyBytes>,
    pub admin_token: Option<Secret>,
}

impl Config {
    /// Settings that load but leave a door open or cannot tell things apart; `check-config`
    /// prints them and the proxy logs them at start.
    pub fn warnings(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let app = &self.app;
        let plain: Vec<String> = app
            .success_status
            .iter()
            .filter(|s| !(300..400).contains(*s))
            .map(u16::to_string)
            .collect();
        if !plain.is_empty() && app.user_header.is_none() {
            out.push(Problem {
                key: "app.success_status".into(),
                message: format!(
                    "{} is not a redirect: an answer with that status that sets `{}` counts as a \
                     successful login, also a failed one that sets it. Set app.user_header (the \
                     app names the user only on success) so failures can be told apart",
                    plain.join(", "),
                    app.success_cookie
                ),
            });
        }
        if !self.server.admin_listen.ip().is_loopback() {
            out.push(Problem {
                key: "server.admin_listen".into(),
                message: format!(
                    "{} is reachable from other hosts: metrics and, with an admin_token, the API \
                     that resets anyone's 2FA. Keep it on a private network or 127.0.0.1",
                    self.server.admin_listen
                ),
            });
        }
        // Only the demo may use the `log` transport, and it keeps everything in memory.
        if self.records.in_memory() && self.email.transport != MailTransport::Log {
            out.push(Problem {
                key: "records.path".into(),
                message: "\":memory:\" keeps 2FA records only until the process ends: after a \
                          restart every user signs in with the password alone. Use a file on a \
                          persistent volume"
                    .into(),
            });
        }
        if self.store.backend == StoreBackend::Redis
            && self.records.backend == RecordsBackend::Sqlite
        {
            out.push(Problem {
                key: "records.backend".into(),
                message: "the Redis store is shared by replicas, but SQLite records are one \
                          replica's own: run one replica only, or use backend = \"postgres\""
                    .into(),
            });
        }
        if let Some(problem) = self.records.plaintext_remote() {
            out.push(problem);
        }
        if app.username_case_sensitive {
            out.push(Problem {
                key: "app.username_case_sensitive".into(),
                message: "names are not case-folded: only right if the app itself tells ALICE \
                          from alice, or ALICE gets past alice's second factor"
                    .into(),
            });
        }
        out.extend(site::warnings(self));
        out
    }
}

/// Prefix of environment overrides: `TWOFA_UPSTREAM__URL` sets `[upstream] url`.
pub const ENV_PREFIX: &str = "TWOFA_";

impl Config {
    /// Loads a config file with the process environment's overrides.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![Problem {
                key: path.display().to_string(),
                message: format!("cannot read: {e}"),
            }])
        })?;
        let config = Self::from_toml(&text, std::env::vars())?;
        if config.email.transport == MailTransport::Log {
            // It prints codes: only the demo (which builds its own config) may do that.
            return Err(ConfigErrors(vec![Problem {
                key: "email.transport".into(),
                message: "\"log\" prints codes to the console and is only for `twofa-proxy demo`; use \"smtp\" or \"file\"".into(),
            }]));
        }
        // Deployments only (tests and the demo build configs in code, on loopback).
        let errors = site::errors(&config);
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        Ok(config)
    }

    /// Parses TOML text, then applies overrides from `env` (pairs of variable name and value).
    pub fn from_toml(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigErrors> {
        let mut root: Table = text.parse().map_err(|e: toml::de::Error| {
            ConfigErrors(vec![Problem {
                key: "(file)".into(),
                message: format!("not valid TOML: {e}"),
            }])
        })?;
        let (env_sources, mut problems, ignored_env) = apply_env(&mut root, env);
        let mut r = Reader::new(root, env_sources);
        let mut config = read(&mut r);
        config.ignored_env = ignored_env;
        problems.extend(r.finish());
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(problems))
        }
    }
}

impl Config {
    /// Every key the reader knows, dotted (`server.listen`); a test checks each is documented in
    /// `config/example.toml`.
    pub fn known_keys() -> Vec<String> {
        let mut r = Reader::new(Table::new(), BTreeMap::new());
        let _ = read(&mut r);
        let mut keys = r.asked();
        keys.sort();
        keys
    }
}

/// Writes `TWOFA_A__B__C=value` into `[a.b] c = "value"`; the reader coerces strings to the type
/// each key expects.
fn apply_env(
    root: &mut Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> (BTreeMap<String, String>, Vec<Problem>, Vec<String>) {
    let mut sources = BTreeMap::new();
    let mut problems = Vec::new();
    let mut ignored = Vec::new();
    let mut known: Option<Vec<String>> = None;
    for (name, value) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        // Variables without a section separator are not overrides: the command's own
        // (TWOFA_CONFIG), a near miss of one (TWOFA_SERVER_LISTEN: refused, as it would
        // silently leave the setting as it was), or someone else's (warned).
        if !rest.contains("__") {
            if site::COMMAND_VARIABLES.contains(&name.as_str()) {
                continue;
            }
            let known = known.get_or_insert_with(Config::known_keys);
            match site::near_miss(&name, known) {
                Some(meant) => problems.push(Problem {
                    message: format!("not an override (one underscore): did you mean {meant}?"),
                    key: name,
                }),
                None => ignored.push(name),
            }
            continue;
        }
        let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        if path.iter().any(String::is_empty) {
            problems.push(Problem {
                key: name,
                message: "malformed override name".into(),
            });
            continue;
        }
        if !insert_path(root, &path, value) {
            problems.push(Problem {
                key: name,
                message: "does not name a config section".into(),
            });
            continue;
        }
        sources.insert(path.join("."), name);
    }
    (sources, problems, ignored)
}

/// Sets `path` (sections then key) in `table`, creating sections; false if a section is a value.
fn insert_path(table: &mut Table, path: &[String], value: String) -> bool {
    match path {
        [] => false,
        [leaf] => {
            table.insert(leaf.clone(), Value::String(value));
            true
        }
        [section, rest @ ..] => match table
            .entry(section.clone())
            .or_insert_with(|| Value::Table(Table::new()))
        {
            Value::Table(inner) => insert_path(inner, rest, value),
            _ => false,
        },
    }
}

fn read(r: &mut Reader) -> Config {
    let app = read_app(r);
    Config {
        server: read_server(r),
        upstream: read_upstream(r),
        twofactor: read_twofactor(r),
        totp: TotpConfig {
            issuer: r
                .opt_string("totp.issuer")
                .unwrap_or_else(|| app.name.clone()),
            skew: r.uint("totp.skew", 1, 0..=2) as u8,
        },
        email: read_email(r, &app),
        session: read_session(r),
        store: read_store(r),
        records: read_records(r),
        secrets: read_secrets(r),
        ignored_env: Vec::new(),
        ui: UiConfig {
            language: r.choice(
                "ui.language",
                LanguageSetting::Auto,
                &[
                    ("auto", LanguageSetting::Auto),
                    ("en", LanguageSetting::Pinned(Language::English)),
                    ("de", LanguageSetting::Pinned(Language::German)),
                ],
            ),
        },
        app,
    }
}

fn read_server(r: &mut Reader) -> ServerConfig {
    let listen = r.parsed(
        "server.listen",
        SocketAddr::from(([0, 0, 0, 0], 8080)),
        "an address like 0.0.0.0:8080",
    );
    let admin_listen = r.parsed(
        "server.admin_listen",
        SocketAddr::from(([127, 0, 0, 1], 9090)),
        "an address like 127.0.0.1:9090",
    );
    if listen == admin_listen && listen.port() != 0 {
        r.problem(
            "server.admin_listen",
            "must differ from server.listen: the admin API is never public",
        );
    }
    let metrics_listen: Option<SocketAddr> =
        r.opt_parsed("server.metrics_listen", "an address like 0.0.0.0:9100");
    if let Some(metrics) = metrics_listen
        && metrics.port() != 0
        && (metrics == listen || metrics == admin_listen)
    {
        r.problem(
            "server.metrics_listen",
            "must differ from server.listen and server.admin_listen",
        );
    }
    let tls = match (r.path("server.tls_cert"), r.path("server.tls_key")) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        (None, None) => None,
        (Some(_), None) => {
            r.problem("server.tls_key", "tls_cert is set: tls_key is needed too");
            None
        }
        (None, Some(_)) => {
            r.problem("server.tls_cert", "tls_key is set: tls_cert is needed too");
            None
        }
    };
    let mut trusted_proxies = Vec::new();
    for cidr in r.strings("server.trusted_proxies", &[]) {
        // A bare address means that one host.
        let parsed = cidr
            .parse::<IpNet>()
            .or_else(|_| cidr.parse::<std::net::IpAddr>().map(IpNet::from));
        match parsed {
            Ok(net) => trusted_proxies.push(net),
            Err(_) => r.problem(
                "server.trusted_proxies",
                format!("expected CIDRs like 10.0.0.0/8, got {cidr:?}"),
            ),
        }
    }
    ServerConfig {
        listen,
        admin_listen,
        tls,
        trusted_proxies,
        shutdown_delay: r.duration("server.shutdown_delay", Duration::ZERO),
        shutdown_grace: r.duration("server.shutdown_grace", Duration::from_secs(30)),
        metrics_listen,
        header_read_timeout: r.duration("server.header_read_timeout", Duration::from_secs(10)),
        keepalive_timeout: r.duration("server.keepalive_timeout", Duration::from_secs(60)),
        max_header_bytes: r.uint("server.max_header_bytes", 32 * 1024, 8 * 1024..=1024 * 1024)
            as usize,
        workers: r.uint("server.workers", 0, 0..=1024) as usize,
    }
}

fn read_upstream(r: &mut Reader) -> UpstreamConfig {
    let default_url = "http://127.0.0.1:3000";
    let text = r.string("upstream.url", default_url);
    let (url, scheme, authority) = match parse_upstream_url(&text) {
        Ok(parts) => parts,
        Err(message) => {
            r.problem("upstream.url", message);
            parse_upstream_url(default_url).unwrap_or_else(|_| unreachable_default())
        }
    };
    UpstreamConfig {
        url,
        scheme,
        authority,
        preserve_host: r.bool("upstream.preserve_host", true),
        connect_timeout: r.duration("upstream.connect_timeout", Duration::from_secs(5)),
        response_timeout: r.duration("upstream.response_timeout", Duration::from_secs(60)),
        pool_idle_timeout: r.duration("upstream.pool_idle_timeout", Duration::from_secs(90)),
        pool_max_idle_per_host: r.uint("upstream.pool_max_idle_per_host", 256, 0..=65_536) as usize,
        ca_file: r.path("upstream.ca_file"),
        upgrade_protocols: read_upgrade_protocols(r),
        tunnel_session_check: read_tunnel_session_check(r),
    }
}

fn read_upgrade_protocols(r: &mut Reader) -> Vec<String> {
    let mut protocols = Vec::new();
    for p in r.strings("upstream.upgrade_protocols", &[]) {
        let p = p.trim().to_ascii_lowercase();
        let token = !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/".contains(&b));
        if !token {
            r.problem(
                "upstream.upgrade_protocols",
                format!("expected protocol names like \"websocket\", got {p:?}"),
            );
        } else if crate::upstream::carries_http(&p) {
            r.problem(
                "upstream.upgrade_protocols",
                format!(
                    "{p:?} carries HTTP requests of its own, which would pass the gate unchecked"
                ),
            );
        } else {
            protocols.push(p);
        }
    }
    protocols
}

fn read_tunnel_session_check(r: &mut Reader) -> Duration {
    let every = r.duration("upstream.tunnel_session_check", Duration::from_secs(10));
    if every.is_zero() {
        r.problem(
            "upstream.tunnel_session_check",
            "must be more than zero: it bounds how long a tunnel outlives its session",
        );
        return Duration::from_secs(10);
    }
    every
}

/// The built-in default always parses; this keeps the type checker honest without a panic.
fn unreachable_default() -> (Uri, UpstreamScheme, http::uri::Authority) {
    let authority = http::uri::Authority::from_static("127.0.0.1:3000");
    (
        Uri::from_static("http://127.0.0.1:3000"),
        UpstreamScheme::Http,
        authority,
    )
}

fn parse_upstream_url(text: &str) -> Result<(Uri, UpstreamScheme, http::uri::Authority), String> {
    let url: Uri = text
        .parse()
        .map_err(|_| format!("expected a URL like http://127.0.0.1:3000, got {text:?}"))?;
    let scheme = match url.scheme_str() {
        Some("http") => UpstreamScheme::Http,
        Some("https") => UpstreamScheme::Https,
        _ => return Err(format!("expected an http:// or https:// URL, got {text:?}")),
    };
    let authority = url
        .authority()
        .cloned()
        .ok_or_else(|| format!("{text:?} has no host"))?;
    if !matches!(url.path(), "" | "/") || url.query().is_some() {
        return Err(format!(
            "{text:?}: the upstream URL takes no path or query; paths are forwarded as requested"
        ));
    }
    Ok((url, scheme, authority))
}

fn read_app(r: &mut Reader) -> AppConfig {
    let name = r.string("app.name", "DCKAP Integrator");
    if name.trim().is_empty() {
        r.problem(
            "app.name",
            "must not be empty: pages and the authenticator app show it",
        );
    }
    let login_paths = r.strings("app.login_paths", &["/login"]);
    let logout_paths = r.strings("app.logout_paths", &["/logout"]);
    let public_paths = r.strings("app.public_paths", &["/login", "/static/"]);
    for (key, paths) in [
        ("app.login_paths", &login_paths),
        ("app.logout_paths", &logout_paths),
        ("app.public_paths", &public_paths),
    ] {
        for p in paths {
            if !p.starts_with('/') {
                r.problem(key, format!("paths start with '/', got {p:?}"));
            }
        }
    }
    let mut success_status = Vec::new();
    for s in r.strings_or_numbers("app.success_status", &[302, 303]) {
        if (100..=599).contains(&s) {
            success_status.push(s as u16);
        } else {
            r.problem("app.success_status", format!("{s} is not an HTTP status"));
        }
    }
    let login_page = r.string("app.login_page", "/login");
    if !login_page.starts_with('/') || login_page.starts_with("//") {
        r.problem(
            "app.login_page",
            format!("expected a path on this site like \"/login\", got {login_page:?}"),
        );
    }
    let success_location = r.strings("app.success_location", &[]);
    for p in &success_location {
        if !p.starts_with('/') {
            r.problem(
                "app.success_location",
                format!("paths start with '/', got {p:?}"),
            );
        }
    }
    let identity_header = r.string("app.identity_header", "X-Twofa-User");
    let identity_header = header_name(r, "app.identity_header", identity_header)
        .unwrap_or(HeaderName::from_static("x-twofa-user"));
    let user_header = r
        .opt_string("app.user_header")
        .and_then(|h| header_name(r, "app.user_header", h));
    AppConfig {
        name,
        login_paths,
        username_field: r.string("app.username_field", "username"),
        username_case_sensitive: r.bool("app.username_case_sensitive", false),
        username_unicode: r.bool("app.username_unicode", false),
        success_status,
        success_location,
        login_body_timeout: r.duration("app.login_body_timeout", Duration::from_secs(10)),
        success_cookie: r.string("app.success_cookie", "session"),
        user_header,
        login_page,
        next_param: r.string("app.next_param", "next"),
        logout_paths,
        public_paths,
        identity_header,
        account_settings_url: r.string("app.account_settings_url", "/"),
    }
}

fn read_twofactor(r: &mut Reader) -> TwoFactorConfig {
    let enforcement = r.choice(
        "twofactor.enforcement",
        Enforcement::Optional,
        &[
            ("optional", Enforcement::Optional),
            ("required", Enforcement::Required),
        ],
    );
    let mut methods = Vec::new();
    for m in r.strings("twofactor.methods", &["totp", "email"]) {
        match SecondFactor::from_name(&m) {
            Some(f) => methods.push(f),
            None => r.problem(
                "twofactor.methods",
                format!("unknown method {m:?} (known: \"totp\", \"email\")"),
            ),
        }
    }
    if methods.is_empty() {
        r.problem("twofactor.methods", "at least one method is needed");
    }
    let prefix = r.string("twofactor.prefix", "/_2fa");
    if !prefix.starts_with('/') || prefix.ends_with('/') || prefix.len() < 2 {
        r.problem(
            "twofactor.prefix",
            format!("expected a path like \"/_2fa\", got {prefix:?}"),
        );
    }
    TwoFactorConfig {
        enforcement,
        methods,
        prefix,
        challenge_ttl: r.duration("twofactor.challenge_ttl", Duration::from_secs(300)),
        max_attempts_per_challenge: r.uint("twofactor.max_attempts_per_challenge", 5, 1..=100)
            as u32,
        // NIST SP 800-63B 5.2.2: never more than 100 consecutive failed attempts.
        lockout_threshold: r.uint("twofactor.lockout_threshold", 10, 1..=100) as u32,
        lockout_window: r.duration("twofactor.lockout_window", Duration::from_secs(900)),
        lockout_duration: r.duration("twofactor.lockout_duration", Duration::from_secs(900)),
        recovery_codes: r.uint("twofactor.recovery_codes", 10, 0..=50) as u32,
        max_pending_logins: r.uint("twofactor.max_pending_logins", 5, 1..=100) as u32,
    }
}

/// A header name from config, or a problem reported under `key`.
fn header_name(r: &mut Reader, key: &str, text: String) -> Option<HeaderName> {
    match HeaderName::try_from(text.as_str()) {
        Ok(name) => Some(name),
        Err(_) => {
            r.problem(key, format!("{text:?} is not a valid header name"));
            None
        }
    }
}

fn read_email(r: &mut Reader, app: &AppConfig) -> EmailConfig {
    let transport = r.choice(
        "email.transport",
        MailTransport::Smtp,
        &[
            ("smtp", MailTransport::Smtp),
            ("file", MailTransport::File),
            ("log", MailTransport::Log),
        ],
    );
    let address_source = match r.string("email.address_source", "input").as_str() {
        "input" => AddressSource::Input,
        "username" => AddressSource::Username,
        other => match other.strip_prefix("header:") {
            Some(h) if http::HeaderName::try_from(h).is_ok() => AddressSource::Header(h.to_owned()),
            _ => {
                r.problem(
                    "email.address_source",
                    format!("expected \"input\", \"username\" or \"header:<Header-Name>\", got {other:?}"),
                );
                AddressSource::Input
            }
        },
    };
    let file_dir = r.path("email.file_dir");
    if transport == MailTransport::File && file_dir.is_none() {
        r.problem(
            "email.file_dir",
            "transport = \"file\" needs a folder to write to",
        );
    }
    let tls = r.choice(
        "email.smtp.tls",
        SmtpTls::StartTls,
        &[
            ("starttls", SmtpTls::StartTls),
            ("tls", SmtpTls::Tls),
            ("none", SmtpTls::None),
        ],
    );
    EmailConfig {
        transport,
        from: r.string(
            "email.from",
            &format!("{} <no-reply@example.com>", app.name),
        ),
        address_source,
        code_ttl: r.duration("email.code_ttl", Duration::from_secs(600)),
        code_digits: r.uint("email.code_digits", 6, 6..=10) as u8,
        resend_interval: r.duration("email.resend_interval", Duration::from_secs(30)),
        max_sends_per_hour: r.uint("email.max_sends_per_hour", 5, 1..=1000) as u32,
        max_sends_per_login: r.uint("email.max_sends_per_login", 3, 1..=100) as u32,
        max_account_sends_per_hour: r.uint("email.max_account_sends_per_hour", 20, 1..=10_000)
            as u32,
        file_dir,
        smtp: SmtpConfig {
            host: r.string("email.smtp.host", "127.0.0.1"),
            port: r.uint("email.smtp.port", 587, 1..=65_535) as u16,
            tls,
            username: r.opt_string("email.smtp.username"),
            password: r.secret("email.smtp.password"),
            ca_file: r.path("email.smtp.ca_file"),
            timeout: r.duration("email.smtp.timeout", Duration::from_secs(10)),
        },
    }
}

fn read_session(r: &mut Reader) -> SessionConfig {
    let idle_timeout = r.duration("session.idle_timeout", Duration::from_secs(30 * 60));
    let absolute_timeout = r.duration("session.absolute_timeout", Duration::from_secs(12 * 3600));
    if idle_timeout > absolute_timeout {
        r.problem(
            "session.idle_timeout",
            "is longer than session.absolute_timeout",
        );
    }
    SessionConfig {
        idle_timeout,
        absolute_timeout,
        insecure_http_cookies: r.bool("session.insecure_http_cookies", false),
        cache_ttl: r.duration("session.cache_ttl", Duration::from_secs(2)),
    }
}

fn read_store(r: &mut Reader) -> StoreConfig {
    let backend = r.choice(
        "store.backend",
        StoreBackend::Memory,
        &[
            ("memory", StoreBackend::Memory),
            ("redis", StoreBackend::Redis),
        ],
    );
    let url_set = r.is_set("store.url");
    let url = r.string("store.url", "redis://127.0.0.1:6379/0");
    let mode_name = r.choice(
        "store.mode",
        "standalone",
        &[
            ("standalone", "standalone"),
            ("sentinel", "sentinel"),
            ("cluster", "cluster"),
        ],
    );
    // `None`: an entry was refused (and reported); `Some(empty)`: none given.
    let sentinels = host_ports(r, "store.sentinels");
    let master_name = r.opt_string("store.master_name");
    let sentinel_password = r.secret("store.sentinel_password");
    let db_set = r.is_set("store.db");
    let db = r.uint("store.db", 0, 0..=65_535);
    let nodes = host_ports(r, "store.nodes");
    let username = r.opt_string("store.username");
    let password = r.secret("store.password");
    let tls_set = r.is_set("store.tls");
    let tls = r.bool("store.tls", false);
    let ca_file = r.path("store.ca_file");
    let redis = backend == StoreBackend::Redis;
    // Keys that belong to another mode are refused rather than ignored: a Sentinel setting
    // silently unused would leave the proxy on one server the operator thinks is replicated.
    let unused = |r: &mut Reader, key: &str, set: bool, mode: &str| {
        if redis && set {
            r.problem(key, format!("not used with store.mode = {mode:?}"));
        }
    };
    let mode = match mode_name {
        "sentinel" => {
            unused(r, "store.url", url_set, "sentinel");
            unused(
                r,
                "store.nodes",
                nodes.as_ref().is_none_or(|n| !n.is_empty()),
                "sentinel",
            );
            if redis && sentinels.as_ref().is_some_and(Vec::is_empty) {
                r.problem(
                    "store.sentinels",
                    "store.mode = \"sentinel\" needs the sentinels' addresses, like [\"10.0.0.1:26379\"]",
                );
            }
            if redis && master_name.as_deref().is_none_or(str::is_empty) {
                r.problem(
                    "store.master_name",
                    "store.mode = \"sentinel\" needs the name the sentinels monitor the master under",
                );
            }
            RedisMode::Sentinel {
                sentinels: sentinels.unwrap_or_default(),
                master_name: master_name.unwrap_or_default(),
                sentinel_password,
                db: i64::try_from(db).unwrap_or(0),
            }
        }
        "cluster" => {
            unused(r, "store.url", url_set, "cluster");
            unused(
                r,
                "store.sentinels",
                sentinels.as_ref().is_none_or(|s| !s.is_empty()),
                "cluster",
            );
            unused(r, "store.master_name", master_name.is_some(), "cluster");
            unused(
                r,
                "store.sentinel_password",
                sentinel_password.is_some(),
                "cluster",
            );
            if redis && db_set {
                r.problem("store.db", "a Redis Cluster has database 0 only");
            }
            if redis && nodes.as_ref().is_some_and(Vec::is_empty) {
                r.problem(
                    "store.nodes",
                    "store.mode = \"cluster\" needs one or more nodes' addresses, like [\"10.0.0.1:6379\"]",
                );
            }
            RedisMode::Cluster {
                nodes: nodes.unwrap_or_default(),
            }
        }
        _ => {
            unused(
                r,
                "store.sentinels",
                sentinels.as_ref().is_none_or(|s| !s.is_empty()),
                "standalone",
            );
            unused(r, "store.master_name", master_name.is_some(), "standalone");
            unused(
                r,
                "store.sentinel_password",
                sentinel_password.is_some(),
                "standalone",
            );
            unused(
                r,
                "store.nodes",
                nodes.as_ref().is_none_or(|n| !n.is_empty()),
                "standalone",
            );
            if redis && db_set {
                r.problem(
                    "store.db",
                    "standalone: the database is the URL's path, redis://host:6379/0",
                );
            }
            if redis && tls_set {
                r.problem(
                    "store.tls",
                    "standalone: TLS is the URL's scheme, rediss://",
                );
            }
            if redis && !url.starts_with("redis://") && !url.starts_with("rediss://") {
                // Never echo the URL: it may carry a password.
                r.problem(
                    "store.url",
                    "expected a redis:// or rediss:// URL (Sentinel and Cluster: set store.mode)",
                );
            }
            RedisMode::Standalone
        }
    };
    let tls = match mode {
        RedisMode::Standalone => url.starts_with("rediss://"),
        _ => tls,
    };
    if redis && ca_file.is_some() && !tls {
        r.problem(
            "store.ca_file",
            "a CA file is for TLS: use a rediss:// URL (standalone) or store.tls = true",
        );
    }
    StoreConfig {
        backend,
        url,
        key_prefix: r.string("store.key_prefix", "twofa:"),
        mode,
        username,
        password,
        tls,
        ca_file,
    }
}

fn read_records(r: &mut Reader) -> RecordsConfig {
    let backend = r.choice(
        "records.backend",
        RecordsBackend::Sqlite,
        &[
            ("sqlite", RecordsBackend::Sqlite),
            ("postgres", RecordsBackend::Postgres),
        ],
    );
    let path = r
        .path("records.path")
        .unwrap_or_else(|| PathBuf::from("/var/lib/twofa-proxy/records.db"));
    let url = r.secret("records.url");
    let ca_file = r.path("records.ca_file");
    let url = match (backend, url) {
        (RecordsBackend::Postgres, None) => {
            r.problem(
                "records.url",
                "backend = \"postgres\" needs url (or url_file): postgres://user@host/db",
            );
            Secret::new(String::new())
        }
        (RecordsBackend::Postgres, Some(url)) => {
            let u = url.expose();
            if !(u.starts_with("postgres://") || u.starts_with("postgresql://")) {
                // The value may hold a password: named, not shown.
                r.problem("records.url", "expected a postgres:// or postgresql:// URL");
            } else if u.parse::<tokio_postgres::Config>().is_err() {
                r.problem("records.url", "not a PostgreSQL URL that can be read");
            }
            url
        }
        (RecordsBackend::Sqlite, url) => {
            // A PostgreSQL setting without `backend = "postgres"` would leave each replica on
            // its own file while the operator thinks they share one.
            if url.is_some() {
                r.problem("records.url", "only read with backend = \"postgres\"");
            }
            if ca_file.is_some() {
                r.problem("records.ca_file", "only read with backend = \"postgres\"");
            }
            Secret::new(String::new())
        }
    };
    RecordsConfig {
        backend,
        path,
        url,
        ca_file,
        identity: r.opt_string("records.identity"),
    }
}

/// A list of `host:port` addresses (no scheme, no credentials: those have keys of their own).
fn host_ports(r: &mut Reader, key: &str) -> Option<Vec<(String, u16)>> {
    let mut out = Some(Vec::new());
    for entry in r.strings(key, &[]) {
        let parsed = entry
            .rsplit_once(':')
            .and_then(|(host, port)| Some((host, port.parse::<u16>().ok()?)))
            .filter(|(host, port)| !host.is_empty() && !host.contains(['/', '@']) && *port != 0);
        match parsed {
            // A bracketed IPv6 address is given to the client without its brackets.
            Some((host, port)) => {
                if let Some(out) = &mut out {
                    out.push((
                        host.trim_start_matches('[')
                            .trim_end_matches(']')
                            .to_owned(),
                        port,
                    ));
                }
            }
            None => {
                r.problem(
                    key,
                    "expected \"host:port\" entries (no scheme and no password: see store.password)",
                );
                out = None;
            }
        }
    }
    out
}

fn read_secrets(r: &mut Reader) -> SecretsConfig {
    let configured = r.secret("secrets.encryption_key");
    let encryption_key = configured
        .as_ref()
        .and_then(|key| decode_key(r, "secrets.encryption_key", key));
    let previous_keys: Vec<KeyBytes> = r
        .strings("secrets.previous_keys", &[])
        .into_iter()
        .filter_map(|key| decode_key(r, "secrets.previous_keys", &Secret::new(key)))
        .collect();
    let backend_is_redis = matches!(r.opt_string("store.backend").as_deref(), Some("redis"));
    if backend_is_redis && configured.is_none() {
        r.problem(
            "secrets.encryption_key",
            "the redis store keeps secrets outside this process: set encryption_key or encryption_key_file",
        );
    }
    let admin_token = r.secret("secrets.admin_token");
    if let Some(token) = &admin_token
        && token.expose().trim().len() < MIN_ADMIN_TOKEN
    {
        // Never echo the value.
        r.problem(
            "secrets.admin_token",
            format!(
                "too short: at least {MIN_ADMIN_TOKEN} characters (e.g. `openssl rand -base64 32`)"
            ),
        );
    }
    SecretsConfig {
        encryption_key,
        previous_keys,
        admin_token,
    }
}

/// The admin token resets anyone's 2FA: it must not be guessable.
const MIN_ADMIN_TOKEN: usize = 32;

/// The key a base64 value stands for, or a problem reported under `key`.
fn decode_key(r: &mut Reader, key: &str, secret: &Secret) -> Option<KeyBytes> {
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::STANDARD.decode(secret.expose().trim());
    match decoded.ok().and_then(|b| <[u8; 32]>::try_from(b).ok()) {
        Some(bytes) => Some(KeyBytes::new(bytes)),
        // Never echo the value: it is a secret even when malformed.
        None => {
            r.problem(
                key,
                "expected the base64 of 32 random bytes (e.g. `openssl rand -base64 32`)",
            );
            None
        }
    }
}

impl Reader {
    /// Status lists are written as numbers in files and as strings in env overrides.
    fn strings_or_numbers(&mut self, key: &str, default: &[u64]) -> Vec<u64> {
        if !self.is_set(key) {
            return default.to_vec();
        }
        let mut out = Vec::new();
        match self.raw(key) {
            Some(Value::Array(items)) => {
                for item in items {
                    match item {
                        Value::Integer(i) if i >= 0 => out.push(i as u64),
                        other => self.problem(key, format!("expected status numbers, got {other}")),
                    }
                }
            }
            _ => {
                for s in self.strings(key, &[]) {
                    match s.parse() {
                        Ok(n) => out.push(n),
                        Err(_) => self.problem(key, format!("expected status numbers, got {s:?}")),
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env() -> Vec<(String, String)> {
        Vec::new()
    }

    #[test]
    fn empty_file_gives_the_documented_defaults() {
        let c = Config::from_toml("", no_env()).unwrap();
        assert_eq!(c.server.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(c.upstream.url, "http://127.0.0.1:3000");
        assert_eq!(c.app.login_paths, ["/login"]);
        assert_eq!(c.app.success_status, [302, 303]);
        assert_eq!(c.twofactor.prefix, "/_2fa");
        assert_eq!(c.totp.issuer, "DCKAP Integrator");
        assert_eq!(c.session.idle_timeout, Duration::from_secs(1800));
    }

    #[test]
    fn upgrade_keys_refuse_what_would_pass_the_gate() {
        let c = Config::from_toml("", no_env()).unwrap();
        assert!(c.upstream.upgrade_protocols.is_empty());
        assert_eq!(c.upstream.tunnel_session_check, Duration::from_secs(10));
        let c =
            Config::from_toml("[upstream]\nupgrade_protocols = [\"TLS/1.0\"]", no_env()).unwrap();
        assert_eq!(c.upstream.upgrade_protocols, ["tls/1.0"]);
        for bad in [
            "upgrade_protocols = [\"h2c\"]",
            "upgrade_protocols = [\"HTTP/2.0\"]",
            "upgrade_protocols = [\"websocket, h2c\"]",
            "tunnel_session_check = \"0s\"",
        ] {
            let err = Config::from_toml(&format!("[upstream]\n{bad}"), no_env()).unwrap_err();
            assert!(err.to_string().contains("upstream."), "{bad}: {err}");
        }
    }

    #[test]
    fn env_overrides_win_and_are_typed() {
        let env = [
            ("TWOFA_UPSTREAM__URL", "https://app.internal:8443"),
            ("TWOFA_SERVER__TRUSTED_PROXIES", "10.0.0.0/8, 192.168.1.1"),
            ("TWOFA_APP__SUCCESS_STATUS", "200,302"),
            ("TWOFA_EMAIL__SMTP__PORT", "2525"),
            ("TWOFA_SESSION__INSECURE_HTTP_COOKIES", "true"),
            ("TWOFA_CONFIG", "/ignored/not/an/override"),
            ("PATH", "/usr/bin"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let c = Config::from_toml("[upstream]\nurl = \"http://x:1\"\n", env).unwrap();
        assert_eq!(c.upstream.scheme, UpstreamScheme::Https);
        assert_eq!(c.upstream.authority.as_str(), "app.internal:8443");
        assert_eq!(c.server.trusted_proxies.len(), 2);
        assert_eq!(c.app.success_status, [200, 302]);
        assert_eq!(c.email.smtp.port, 2525);
        assert!(c.session.insecure_http_cookies);
    }

    #[test]
    fn a_mistyped_override_is_reported_by_variable_name() {
        let env = [("TWOFA_UPSTREAM__ULR".to_owned(), "http://x".to_owned())];
        let errs = Config::from_toml("", env).unwrap_err();
        assert_eq!(errs.0.len(), 1);
        assert_eq!(errs.0[0].key, "upstream.ulr (from TWOFA_UPSTREAM__ULR)");
    }

    #[test]
    fn all_problems_at_once() {
        let text = r#"
            [server]
            listen = "nowhere"
            tls_cert = "/x.pem"
            trusted_proxies = ["10.0.0.0/33"]
            [upstream]
            url = "ftp://x"
            response_timeout = "soon"
            [twofactor]
            enforcement = "sometimes"
            lockout_threshold = 1000
            [store]
            backend = "redis"
            [colour]
            blue = true
        "#;
        let errs = Config::from_toml(text, no_env()).unwrap_err();
        let keys: Vec<&str> = errs.0.iter().map(|p| p.key.as_str()).collect();
        for expected in [
            "server.listen",
            "server.tls_key",
            "server.trusted_proxies",
            "upstream.url",
            "upstream.response_timeout",
            "twofactor.enforcement",
            "twofactor.lockout_threshold",
            "secrets.encryption_key",
            "colour",
        ] {
            assert!(keys.contains(&expected), "{expected} missing from {keys:?}");
        }
        assert_eq!(keys.len(), 9, "{errs}");
    }

    #[test]
    fn upstream_url_takes_no_path() {
        assert!(Config::from_toml("[upstream]\nurl = \"http://x:1/app\"\n", no_env()).is_err());
        assert!(Config::from_toml("[upstream]\nurl = \"http://x:1/\"\n", no_env()).is_ok());
    }

    #[test]
    fn admin_tokens_must_be_long() {
        let with = |token: &str| {
            Config::from_toml(&format!("[secrets]\nadmin_token = \"{token}\"\n"), no_env())
        };
        let errs = with("hunter2hunter2").unwrap_err();
        assert_eq!(errs.0[0].key, "secrets.admin_token");
        assert!(!errs.to_string().contains("hunter2"), "never echoed");
        assert!(with(&"k".repeat(32)).is_ok());
    }

    #[test]
    fn warnings_name_what_cannot_be_told_apart() {
        let keys = |toml: &str| -> Vec<String> {
            let c = Config::from_toml(toml, no_env()).unwrap();
            c.warnings().into_iter().map(|w| w.key).collect()
        };
        assert!(keys("").is_empty(), "the defaults are safe");
        assert_eq!(
            keys("[app]\nsuccess_status = [200, 302]\n"),
            ["app.success_status"]
        );
        assert!(keys("[app]\nsuccess_status = [200]\nuser_header = \"X-User\"\n").is_empty());
        assert_eq!(
            keys("[server]\nadmin_listen = \"0.0.0.0:9090\"\n"),
            ["server.admin_listen"]
        );
        assert!(keys("[server]\nadmin_listen = \"[::1]:9090\"\n").is_empty());
    }

    #[test]
    fn postgres_records_are_read_and_plaintext_to_another_host_is_a_warning() {
        let pg = |url: &str| format!("[records]\nbackend = \"postgres\"\nurl = \"{url}\"\n");
        let keys = |toml: &str| -> Vec<String> {
            let c = Config::from_toml(toml, no_env()).unwrap();
            c.warnings().into_iter().map(|w| w.key).collect()
        };
        let c = Config::from_toml(&pg("postgres://twofa@127.0.0.1/twofa"), no_env()).unwrap();
        assert_eq!(c.records.backend, RecordsBackend::Postgres);
        assert!(!c.records.in_memory());
        assert!(keys(&pg("postgres://twofa@localhost/twofa")).is_empty());
        assert!(keys(&pg("postgres://twofa@db.internal/twofa?sslmode=require")).is_empty());
        assert_eq!(
            keys(&pg("postgres://twofa@db.internal/twofa")),
            ["records.url"],
            "sslmode=prefer falls back to plain text"
        );
        // Missing or malformed URLs are refused, and a password in one is never echoed.
        assert!(Config::from_toml("[records]\nbackend = \"postgres\"\n", no_env()).is_err());
        assert!(
            Config::from_toml("[records]\nurl = \"postgres://h/db\"\n", no_env()).is_err(),
            "a url without backend = \"postgres\" is not silently unused"
        );
        let err = Config::from_toml(&pg("mysql://u:hunter2@h/db"), no_env()).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let err = Config::from_toml(&pg("postgres://u:hunter2@h/db?sslmode=bogus"), no_env())
            .unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn redis_sentinel_and_cluster_are_read_and_bad_combinations_named() {
        let redis = |extra: &str| {
            Config::from_toml(
                &format!(
                    "[store]\nbackend = \"redis\"\n{extra}\n[secrets]\nencryption_key = \"{}\"\n",
                    "dGVzdC1rZXktdGVzdC1rZXktdGVzdC1rZXktMTIzNDU="
                ),
                no_env(),
            )
        };
        let c = redis("").unwrap();
        assert_eq!(c.store.mode, RedisMode::Standalone);
        assert!(!c.store.tls);
        let c = redis(
            "mode = \"sentinel\"\nsentinels = [\"10.0.0.1:26379\", \"[::1]:26380\"]\n\
             master_name = \"mymaster\"\npassword = \"pw\"\ntls = true\nca_file = \"/ca.pem\"\ndb = 2",
        )
        .unwrap();
        let RedisMode::Sentinel {
            sentinels,
            master_name,
            db,
            ..
        } = &c.store.mode
        else {
            panic!("not sentinel: {:?}", c.store.mode);
        };
        assert_eq!(
            sentinels,
            &[("10.0.0.1".to_owned(), 26379), ("::1".to_owned(), 26380)]
        );
        assert_eq!((master_name.as_str(), *db), ("mymaster", 2));
        assert!(c.store.tls && c.store.ca_file.is_some() && c.store.password.is_some());
        let c = redis("mode = \"cluster\"\nnodes = [\"127.0.0.1:7000\"]").unwrap();
        assert_eq!(
            c.store.mode,
            RedisMode::Cluster {
                nodes: vec![("127.0.0.1".into(), 7000)]
            }
        );
        let c = redis("url = \"rediss://h:6380/0\"\nca_file = \"/ca.pem\"").unwrap();
        assert!(c.store.tls);

        for (extra, key) in [
            (
                "mode = \"sentinel\"\nmaster_name = \"m\"",
                "store.sentinels",
            ),
            (
                "mode = \"sentinel\"\nsentinels = [\"h:1\"]",
                "store.master_name",
            ),
            (
                "mode = \"sentinel\"\nsentinels = [\"h:1\"]\nmaster_name = \"m\"\nurl = \"redis://h\"",
                "store.url",
            ),
            ("mode = \"cluster\"", "store.nodes"),
            ("mode = \"cluster\"\nnodes = [\"h:1\"]\ndb = 1", "store.db"),
            (
                "mode = \"cluster\"\nnodes = [\"h:1\"]\nmaster_name = \"m\"",
                "store.master_name",
            ),
            (
                "mode = \"cluster\"\nnodes = [\"redis://:pw@h:1\"]",
                "store.nodes",
            ),
            ("mode = \"cluster\"\nnodes = [\"h\"]", "store.nodes"),
            ("sentinels = [\"h:1\"]", "store.sentinels"),
            ("tls = true", "store.tls"),
            ("ca_file = \"/ca.pem\"", "store.ca_file"),
            (
                "mode = \"cluster\"\nnodes = [\"h:1\"]\nca_file = \"/ca.pem\"",
                "store.ca_file",
            ),
            ("mode = \"replicated\"", "store.mode"),
            ("url = \"redis+sentinel://:hunter2@h\"", "store.url"),
        ] {
            let errs = redis(extra).unwrap_err();
            let keys: Vec<&str> = errs.0.iter().map(|p| p.key.as_str()).collect();
            assert_eq!(keys, [key], "{extra}: {errs}");
            assert!(!errs.to_string().contains("hunter2"), "a password echoed");
        }
        // The memory store ignores what only Redis reads.
        assert!(Config::from_toml("[store]\nmode = \"cluster\"\n", no_env()).is_ok());
    }

    #[test]
    fn bad_keys_are_never_echoed() {
        let errs = Config::from_toml(
            "[secrets]\nencryption_key = \"not-base64-secret-value\"\n",
            no_env(),
        )
        .unwrap_err();
        assert!(!errs.to_string().contains("not-base64-secret-value"));
    }
}
