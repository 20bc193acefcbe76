//! The `twofa-proxy` command: parses arguments, loads the config, starts logging, runs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use twofa_proxy::config::{Config, ConfigErrors};
use twofa_proxy::telemetry::{self, LogFormat};

/// Exit code for a configuration that cannot be used.
const EXIT_CONFIG: u8 = 2;

#[derive(Parser)]
#[command(
    name = "twofa-proxy",
    version,
    about = "Two-factor authentication in front of an existing web app"
)]
struct Cli {
    /// Config file (TOML); `TWOFA_<SECTION>__<KEY>` variables override it.
    #[arg(long, global = true, env = "TWOFA_CONFIG")]
    config: Option<PathBuf>,
    /// Log format: json (default) or text.
    #[arg(long, global = true, default_value = "json")]
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
    /// Administer a running proxy through its admin listener.
    Admin {
        #[command(subcommand)]
        action: AdminAction,
    },
    /// Only the demo app (no proxy): the upstream the load benches measure against.
    DemoApp {
        #[arg(long, default_value = "127.0.0.1:3000")]
        listen: SocketAddr,
    },
}

#[derive(Subcommand)]
enum AdminAction {
    /// Remove USER's two-factor authentication (lost phone): the user signs in with the
    /// password alone (or must enroll again under the "required" policy). Audited.
    Reset { user: String },
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
            Command::Admin {
                action: AdminAction::Reset { user },
            } => match load(cli.config) {
                Ok(config) => report(twofa_proxy::admin::reset_remote(&config, &user).await),
                Err(code) => code,
            },
            Command::DemoApp { listen } => report(twofa_proxy::demo::run_app(listen).await),
            Command::Run => match load(cli.config) {
                Ok(config) => report(run(config).await),
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
    eprintln!(
        "{}: ok (listen {}, upstream {}, store {:?})",
        path.map(|p| p.display().to_string()).unwrap_or_default(),
        config.server.listen,
        config.upstream.url,
        config.store.backend,
    );
    ExitCode::SUCCESS
}

async fn run(config: Config) -> anyhow::Result<()> {
    let running = twofa_proxy::app::start(config).await?;
    twofa_proxy::app::shutdown_signal().await;
    tracing::info!("shutdown signal received");
    running.shutdown();
    running.wait().await;
    tracing::info!("stopped");
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
