//! The `twofa-proxy` command: parses arguments, loads the config, starts logging, runs.
// Since the store can reach Sentinel and Cluster (the redis crate's cluster-async types), clippy
// on this target stops with "queries overflow the depth limit" at the default of 128.
#![recursion_limit = "256"]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use twofa_proxy::config::{Config, ConfigErrors};
use twofa_proxy::records::transfer;
use twofa_proxy::telemetry::{self, LogFormat};

/// Exit code for a configuration that cannot be used.
const EXIT_CONFIG: u8 = 2;

/// `--version`: the crate version, the commit and the commit's date, given at build time by
/// `TWOFA_BUILD_COMMIT` and `TWOFA_BUILD_DATE` (docker/build sets both from git; no build
/// script, so a rebuild with the same inputs gives the same binary, and dev builds do not
/// recompile on every commit).
static VERSION: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "{} (commit {}, built {})",
        env!("CARGO_PKG_VERSION"),
        option_env!("TWOFA_BUILD_COMMIT").unwrap_or("unknown"),
        option_env!("TWOFA_BUILD_DATE").unwrap_or("unknown"),
    )
});

#[derive(Parser)]
#[command(
    name = "twofa-proxy",
    version = VERSION.as_str(),
    about = "Two-factor authentication in front of an existing web app"
)]
struct Cli {
    /// Config file (TOML); `TWOFA_<SECTION>__<KEY>` variables override it.
    #[arg(long, global = true, env = "TWOFA_CONFIG")]
    config: Option<PathBuf>,
    /// Log format: json (default) or text.
    #[arg(
        long,
        global = true,
        default_value = "json",
        env = "TWOFA_LOG_FORMAT",
        value_parser = ["json", "text"]
    )]
    log_format: String,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (the default when only --config is given).
    Run,
    /// The whole product on this machine: demo app, proxy, in-memory store.
    Demo {
        /// Where the proxy listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Where health, readiness and metrics are served.
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin_listen: SocketAddr,
    },
    /// Validate the config: print every problem, exit 2 if there is any.
    CheckConfig,
    /// Ask the running proxy (at server.listen) whether it is ready (<prefix>/readyz): exit 0
    /// if so, 1 if not. For an image's exec-form HEALTHCHECK, where there is no shell or curl.
    Health {
        /// Ask whether it is alive (<prefix>/healthz) instead.
        #[arg(long)]
        live: bool,
    },
    /// Bring the records' schema up to date and exit (a start does the same; for running it
    /// as a separate step before a rollout).
    Migrate,
    /// Administer a running proxy through its admin listener (reset, confirm-records), or its
    /// records database directly (export, import).
    Admin {
        #[command(subcommand)]
        action: AdminAction,
    },
    /// Only the demo app (no proxy): the upstream the load benches measure against.
    DemoApp {
        #[arg(long, default_value = "127.0.0.1:3000")]
        listen: SocketAddr,
        /// Also accept `load1` .. `loadN` with password `load-password` (load tests).
        #[arg(long, default_value_t = 0)]
        load_users: u32,
    },
    /// Drive load at a proxy (local or deployed): authenticated browsing or full 2FA logins,
    /// bounded in time; prints latency percentiles and errors.
    Loadtest(Box<LoadtestArgs>),
}

#[derive(clap::Args)]
struct LoadtestArgs {
    /// Base URL of the proxy, e.g. http://127.0.0.1:8080 (plain http).
    #[arg(long)]
    target: http::Uri,
    /// "login": password, TOTP code, first page per flow; "browse": GET --path as a signed-in user.
    #[arg(long, default_value = "browse")]
    scenario: String,
    /// Test users, one `name,password[,totp base32 key]` per line.
    #[arg(long)]
    users: Option<PathBuf>,
    /// Turn on TOTP for every user in --users and write them with their keys to this file; no load.
    #[arg(long)]
    enroll_out: Option<PathBuf>,
    /// The app's JSON login path.
    #[arg(long, default_value = "/api/login")]
    login_path: String,
    /// Page fetched by "browse", and after each "login".
    #[arg(long, default_value = "/")]
    path: String,
    /// Flows in flight (closed loop). Ignored with --rate.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Flows started per second (open loop, corrected for coordinated omission).
    #[arg(long)]
    rate: Option<f64>,
    /// How long to measure, e.g. 30s.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: std::time::Duration,
    /// Unmeasured start, e.g. 2s.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    warmup: std::time::Duration,
    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    twofa_proxy::config::parse_duration(s)
}

async fn loadtest(args: LoadtestArgs) -> anyhow::Result<()> {
    use twofa_proxy::loadtest::{self, Pace, Plan, Scenario, User};
    let users = match &args.users {
        Some(path) => User::parse_list(&std::fs::read_to_string(path)?)?,
        None => Vec::new(),
    };
    if let Some(out) = &args.enroll_out {
        let enrolled = loadtest::enroll(&args.target, &args.login_path, users, 32).await?;
        let lines: Vec<String> = enrolled.iter().map(User::to_line).collect();
        std::fs::write(out, lines.join("\n") + "\n")?;
        eprintln!(
            "enrolled {} users; keys written to {}",
            enrolled.len(),
            out.display()
        );
        return Ok(());
    }
    let scenario = match args.scenario.as_str() {
        "login" => {
            anyhow::ensure!(
                !users.is_empty(),
                "--scenario login needs --users with TOTP keys"
            );
            Scenario::Login {
                login_path: args.login_path.clone(),
                landing: args.path.clone(),
                users: users.into(),
            }
        }
        "browse" => {
            // Signed in once, as the first user when one is given.
            let cookie = match users.first() {
                Some(u) => Some(sign_in_once(&args, u).await?),
                None => None,
            };
            Scenario::Browse {
                path: args.path.clone(),
                cookie,
            }
        }
        other => anyhow::bail!("unknown scenario {other:?} (login, browse)"),
    };
    let pace = match args.rate {
        Some(r) => Pace::Rate(r),
        None => Pace::Concurrency(args.concurrency),
    };
    eprintln!(
        "loadtest: {} {:?} against {} for {:?}",
        args.scenario, pace, args.target, args.duration
    );
    let report = loadtest::run(Plan {
        target: args.target.clone(),
        scenario,
        pace,
        duration: args.duration,
        warmup: args.warmup,
        progress: true,
    })
    .await;
    let json = report.to_json();
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&json)?)?;
    }
    if report.users_exhausted {
        eprintln!(
            "note: every test user signed in before the time was up; the rate covers {:.1}s",
            report.seconds
        );
    }
    #[allow(clippy::print_stdout)]
    {
        println!(
            "{} flows ({:.0}/s), {} errors; latency p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            report.flows,
            report.per_second(),
            report.errors,
            report.percentile_ms(0.5),
            report.percentile_ms(0.9),
            report.percentile_ms(0.99),
            report.percentile_ms(1.0)
        );
    }
    Ok(())
}

/// Signs in; if this step's code was already used (say, at enrollment), waits for the next step.
async fn sign_in_once(
    args: &LoadtestArgs,
    user: &twofa_proxy::loadtest::User,
) -> anyhow::Result<String> {
    use twofa_proxy::loadtest;
    let client = loadtest::LoadClient::default();
    match loadtest::sign_in(&client, &args.target, &args.login_path, user, unix_now()).await {
        Ok(cookie) => Ok(cookie),
        Err(_) => {
            let wait = 30 - unix_now() % 30 + 1;
            eprintln!("waiting {wait}s for the next TOTP step to sign in");
            tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
            loadtest::sign_in(&client, &args.target, &args.login_path, user, unix_now()).await
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[derive(Subcommand)]
enum AdminAction {
    /// Remove USER's two-factor authentication (lost phone): the user signs in with the
    /// password alone (or must enroll again under the "required" policy). Audited.
    Reset { user: String },
    /// Confirm that the records in use are the right ones (restored from a backup, moved to a
    /// new volume) after the proxy refused them as not the ones it served with. Audited.
    ConfirmRecords,
    /// Write every user's 2FA records (keys sealed, recovery codes hashed) as JSON, read from
    /// the records database itself, for a backup or a move to another backend. The file holds
    /// email addresses: it is created readable by its owner only. Audited.
    Export {
        /// The file to create ("-" for stdout); never overwritten.
        #[arg(long, short, default_value = "-")]
        output: PathBuf,
    },
    /// Write an export into the records database; empty records take the export's identity.
    /// Needs the same [secrets] encryption_key as the exporting proxy. Audited.
    Import {
        /// The export ("-" for stdin).
        input: PathBuf,
        /// Into records that already hold users: add only the users they do not have.
        #[arg(long)]
        merge: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let demo = matches!(cli.command, Some(Command::Demo { .. }));
    let format = match cli.log_format.as_str() {
        "text" => LogFormat::Text,
        "json" if demo && !cli_log_format_given() => LogFormat::Text,
        _ => LogFormat::Json,
    };
    telemetry::init(format);
    // For `run` this runtime only accepts connections, serves the admin listener and waits for
    // signals; requests are served on the proxy's own worker threads (listener::Workers).
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("twofa-proxy: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        match cli.command.unwrap_or(Command::Run) {
            Command::Demo {
                listen,
                admin_listen,
            } => report(twofa_proxy::demo::run(listen, admin_listen).await),
            Command::CheckConfig => check_config(cli.config),
            Command::Health { live } => match load(cli.config) {
                Ok(config) => report(health(&config, live).await),
                Err(code) => code,
            },
            Command::Migrate => match load(cli.config) {
                Ok(config) => report(transfer::migrate_command(&config).await),
                Err(code) => code,
            },
            Command::Admin { action } => match load(cli.config) {
                Ok(config) => report(match action {
                    AdminAction::Reset { user } => {
                        twofa_proxy::admin::reset_remote(&config, &user).await
                    }
                    AdminAction::ConfirmRecords => {
                        twofa_proxy::admin::confirm_records_remote(&config).await
                    }
                    AdminAction::Export { output } => {
                        transfer::export_command(&config, &output, unix_now()).await
                    }
                    AdminAction::Import { input, merge } => {
                        transfer::import_command(&config, &input, merge).await
                    }
                }),
                Err(code) => code,
            },
            Command::DemoApp { listen, load_users } => {
                report(twofa_proxy::demo::run_app(listen, load_users).await)
            }
            Command::Loadtest(args) => report(loadtest(*args).await),
            // `load` succeeds only with a path.
            Command::Run => match load(cli.config.clone()) {
                Ok(config) => report(run(config, cli.config.unwrap_or_default()).await),
                Err(code) => code,
            },
        }
    })
}

fn cli_log_format_given() -> bool {
    std::env::args().any(|a| a.starts_with("--log-format"))
}

fn load(path: Option<PathBuf>) -> Result<Config, ExitCode> {
    let Some(path) = path else {
        eprintln!(
            "twofa-proxy: --config FILE is required (or TWOFA_CONFIG); try `twofa-proxy demo`"
        );
        return Err(ExitCode::from(EXIT_CONFIG));
    };
    Config::load(&path).map_err(|errors: ConfigErrors| {
        eprintln!(
            "twofa-proxy: {} has {} problem(s):\n{errors}",
            path.display(),
            errors.0.len()
        );
        ExitCode::from(EXIT_CONFIG)
    })
}

fn check_config(path: Option<PathBuf>) -> ExitCode {
    let config = match load(path.clone()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Err(e) = twofa_proxy::app::check_files(&config) {
        eprintln!("twofa-proxy: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    for warning in config.warnings() {
        eprintln!("warning: {warning}");
    }
    eprintln!(
        "{}: ok (listen {}, upstream {}, store {:?})",
        path.map(|p| p.display().to_string()).unwrap_or_default(),
        config.server.listen,
        config.upstream.url,
        config.store.backend,
    );
    ExitCode::SUCCESS
}

async fn run(config: Config, path: PathBuf) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    // Before anything else: SIGHUP's default action ends the process.
    let mut hangup = signal(SignalKind::hangup())?;
    let mut running = twofa_proxy::app::start(config).await?;
    let shutdown = twofa_proxy::app::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = hangup.recv() => reload(&running, &path),
        }
    }
    tracing::info!("shutdown signal received");
    running.shutdown();
    // A second signal (an impatient Ctrl-C) skips what is left of server.shutdown_delay.
    let again = twofa_proxy::app::shutdown_signal();
    tokio::pin!(again);
    tokio::select! {
        _ = running.stopped() => {}
        _ = &mut again => {
            running.shutdown();
            running.stopped().await;
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// SIGHUP: the config file (and environment) read again; refused whole on any problem.
fn reload(running: &twofa_proxy::app::Running, path: &std::path::Path) {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(errors) => {
            let problems: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
            tracing::error!(
                problems = %problems.join("; "),
                "SIGHUP: config refused, the running one is kept"
            );
            return;
        }
    };
    match running.reload(config) {
        Ok(()) => tracing::info!("SIGHUP: config and TLS certificate reloaded"),
        Err(e) => tracing::error!(
            error = %format!("{e:#}"),
            "SIGHUP: config refused, the running one is kept"
        ),
    }
}

async fn health(config: &Config, live: bool) -> anyhow::Result<()> {
    let answer = twofa_proxy::health::probe(config, live).await?;
    #[allow(clippy::print_stdout)]
    {
        println!("{answer}");
    }
    Ok(())
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("twofa-proxy: {e:#}");
            ExitCode::FAILURE
        }
    }
}
