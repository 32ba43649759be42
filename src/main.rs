//! The `corriere` command line: parses arguments, builds the configuration and calls the library.
//! Exit codes: 0 done, 1 failed, 64 bad usage or configuration (EX_USAGE), 65 bad input data
//! (EX_DATAERR; also a job the service preflight refuses), 69 the daemon's admin API cannot be
//! reached (EX_UNAVAILABLE), 75 interrupted, resumable (EX_TEMPFAIL).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

mod cli;

use cli::admin;

/// mimalloc instead of glibc's malloc: a tenth of the dispatcher's CPU went to malloc/free, and
/// glibc's per-thread arenas kept freed pages of sled's churn resident (see README,
/// Performance).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use corriere::config::Config;

/// Exit code for bad usage or configuration.
const EX_USAGE: u8 = 64;
/// Exit code for a run stopped by a signal; running the same command again resumes it.
const EX_TEMPFAIL: u8 = 75;

#[derive(Parser)]
#[command(
    name = "corriere",
    version,
    about = "Send App IO messages to millions of citizens: fast, crash-safe, never twice."
)]
struct Cli {
    /// Configuration file (TOML); environment variables CORRIERE_* override it.
    #[arg(long, short, global = true, env = "CORRIERE_CONFIG")]
    config: Option<PathBuf>,
    /// Store directory (overrides store.path).
    #[arg(long, global = true)]
    store: Option<PathBuf>,
    /// IO base URL (overrides io.base_url).
    #[arg(long, global = true)]
    io_base_url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: many jobs under one budget, the admin API and /metrics, a daily feed
    /// sync; SIGTERM drains and exits 0 (75 when the grace period ran out with requests in
    /// flight).
    Run,
    /// Run one job to completion in the foreground: ingest, send, poll, report.
    Send(cli::SendArgs),
    /// Write a job's per-recipient report (CSV) and print its summary.
    Report(cli::ReportArgs),
    /// Re-send the recipients left Unknown (the operator decided IO did not create them).
    ResendUnknown(cli::ResendArgs),
    /// Submit a job to the running daemon (template + CSV, uploaded or by path; --dry-run).
    Submit(admin::SubmitArgs),
    /// List the daemon's jobs (--local: read the store directly, when no daemon runs).
    Jobs(admin::JobsArgs),
    /// One job of the daemon: counts per outcome, rate, ETA (--watch: live progress).
    Job(admin::JobArgs),
    /// Pause a job of the daemon: sending stops, polls go on.
    Pause(admin::JobIdArgs),
    /// Resume a paused (or failed) job of the daemon.
    Resume(admin::JobIdArgs),
    /// Cancel a job of the daemon: nothing more is sent; what was sent is still polled.
    Cancel(admin::JobIdArgs),
    /// The subscriptions feed and the local subscriber set (sync, status, check).
    Feed {
        #[command(subcommand)]
        command: cli::FeedCommand,
    },
    /// Run the bundled fake IO server (rehearsals, tests, benchmarks).
    FakeIo(cli::FakeIoArgs),
    /// One call to IO through the client (checks a key, a profile, a message).
    Io {
        #[command(subcommand)]
        call: cli::IoCall,
    },
    /// The demo: a fake IO in-process, a generated campaign, the whole path, a summary.
    Demo(cli::DemoArgs),
    /// Budget figures from a real job against the fake IO (window use, 429s, calls per message).
    Loadtest(cli::loadtest::LoadtestArgs),
    /// Every performance figure of README.md: the budget job and the raw throughput (benches/figures.sh).
    Figures(cli::figures::FiguresArgs),
    /// The IO service: preflight check, and management (/manage/services, manage key).
    Service {
        #[command(subcommand)]
        command: cli::service::ServiceCommand,
    },
    /// The organization: its logo.
    Organization {
        #[command(subcommand)]
        command: cli::service::OrganizationCommand,
    },
}

/// Files and directories this process creates are its owner's only: the store, uploads and
/// reports hold personal data.
const UMASK: u32 = 0o077;

fn main() -> ExitCode {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(UMASK));
    let args = Cli::parse();
    let config = match load_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("corriere: {e:#}");
            return ExitCode::from(EX_USAGE);
        }
    };
    cli::init_tracing(
        &config,
        matches!(
            args.command,
            Command::Send(_)
                | Command::Demo(_)
                | Command::Loadtest(_)
                | Command::Figures(_)
                | Command::Feed {
                    command: cli::FeedCommand::Sync(_)
                }
                | Command::Job(admin::JobArgs { watch: true, .. })
        ) && std::io::stderr().is_terminal(),
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("corriere: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = CancellationToken::new();
    runtime.spawn(cli::on_signal(shutdown.clone()));
    let result = runtime.block_on(dispatch(args.command, config, shutdown.clone()));
    // In-flight work was drained by the command itself; do not wait for blocking readers.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(cli::Outcome::Done) => ExitCode::SUCCESS,
        Ok(cli::Outcome::Interrupted) => ExitCode::from(EX_TEMPFAIL),
        Err(e) => {
            eprintln!("corriere: {e:#}");
            ExitCode::from(exit_code_of(&e))
        }
    }
}

fn load_config(args: &Cli) -> Result<Config> {
    let mut config = Config::load(args.config.as_deref()).context("configuration")?;
    if let Some(store) = &args.store {
        config.store_path = store.clone();
    }
    if let Some(url) = &args.io_base_url {
        config.io.base_url = url.trim_end_matches('/').to_owned();
    }
    Ok(config)
}

async fn dispatch(
    command: Command,
    config: Config,
    shutdown: CancellationToken,
) -> Result<cli::Outcome> {
    let config = Arc::new(config);
    match command {
        Command::Run => cli::run_daemon(config, shutdown).await,
        Command::Send(a) => cli::send(config, a, shutdown).await,
        Command::Report(a) => cli::report(config, a).await,
        Command::ResendUnknown(a) => cli::resend_unknown(config, a, shutdown).await,
        Command::Jobs(a) if a.local => cli::jobs(config).await,
        Command::Jobs(a) => {
            admin::jobs(&admin::AdminClient::from_config(&config, &a.admin)?).await?;
            Ok(cli::Outcome::Done)
        }
        Command::Submit(a) => {
            admin::submit(&admin::AdminClient::from_config(&config, &a.admin)?, &a).await?;
            Ok(cli::Outcome::Done)
        }
        Command::Job(a) => {
            let client = admin::AdminClient::from_config(&config, &a.admin)?;
            admin::job(&client, &a, shutdown.clone()).await?;
            // Ctrl-C ends a watch before the job does: say so (exit 75), as elsewhere.
            Ok(if shutdown.is_cancelled() {
                cli::Outcome::Interrupted
            } else {
                cli::Outcome::Done
            })
        }
        Command::Pause(a) => job_action(&config, a, admin::JobAction::Pause).await,
        Command::Resume(a) => job_action(&config, a, admin::JobAction::Resume).await,
        Command::Cancel(a) => job_action(&config, a, admin::JobAction::Cancel).await,
        Command::Feed { command } => cli::feed(config, command, shutdown).await,
        Command::FakeIo(a) => cli::fake_io(a, shutdown).await,
        Command::Io { call } => cli::io_call(config, call).await,
        Command::Demo(a) => cli::demo::run(a, shutdown).await,
        Command::Service { command } => cli::service(config, command).await,
        Command::Organization { command } => cli::organization(config, command).await,
        Command::Loadtest(a) => cli::loadtest::run(a, shutdown)
            .await
            .map(|()| cli::Outcome::Done),
        Command::Figures(a) => cli::figures::run(a, shutdown)
            .await
            .map(|()| cli::Outcome::Done),
    }
}

async fn job_action(
    config: &Config,
    args: admin::JobIdArgs,
    action: admin::JobAction,
) -> Result<cli::Outcome> {
    let client = admin::AdminClient::from_config(config, &args.admin)?;
    admin::act(&client, &args.id, action).await?;
    Ok(cli::Outcome::Done)
}

/// Exit code for an error: the admin client's own (1 API error, 64 usage, 69 daemon
/// unreachable), else the library's.
fn exit_code_of(err: &anyhow::Error) -> u8 {
    err.chain()
        .find_map(|cause| cause.downcast_ref::<admin::ClientError>())
        .map_or_else(|| cli::exit_code_of(err), admin::ClientError::exit_code)
}
