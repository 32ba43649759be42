//! The commands behind `corriere …` (the binary's side: arguments, printing, progress bars,
//! `anyhow`): each builds what it needs from [`Config`] and calls the library. `main.rs` only
//! parses arguments and maps errors to exit codes.
//!
//! - [`admin`]: the daemon's HTTP client (`submit`, `jobs`, `job --watch`, `pause`, …).
//! - [`service`]: `corriere service …` and `organization …` (/manage/services).
//! - [`demo`], [`loadtest`], [`figures`]: the demo, the budget load test and README's figures,
//!   each against the bundled fake IO (`corriere_fake_io`).

pub mod admin;
pub mod demo;
pub mod figures;
pub mod loadtest;
pub mod service;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;
use tracing::info;

use corriere::config::{Config, LogFormat};
use corriere::dispatch::report::{write_report, FiscalCodes, JobSummary};
use corriere::dispatch::{self, prepare_job_with, DispatchError, JobContext, PrepareOptions};
use corriere::feed::{Feed, FeedSettings, Freshness, SyncOptions, SyncProgress, SyncStats};
use corriere::io_api::IoClient;
use corriere::model::job::{JobMeta, JobPhase};
use corriere::model::FiscalCode;
use corriere::model::Outcome as RecipientOutcome;
use corriere::rate::{RateBudget, RateConfig};
use corriere::runner::{RunError, RunObserver};
use corriere::runtime::{FeedAccess, FeedObserver, FreshError, Runtime};
use corriere::store::{JobId, Store};

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Finished.
    Done,
    /// Stopped by a signal; the same command resumes.
    Interrupted,
}

/// `corriere send`
#[derive(Debug, Args)]
pub struct SendArgs {
    /// Message template (TOML).
    #[arg(long, short)]
    pub template: PathBuf,
    /// Recipients CSV (header; `fiscal_code` column unless the template names another).
    #[arg(long, short)]
    pub recipients: PathBuf,
    /// Write the per-recipient report here when the job ends (a workbook when the name ends
    /// in .xlsx, else CSV).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Clear fiscal codes in the report (masked by default).
    #[arg(long)]
    pub clear: bool,
    /// Give up polling a message this long after its submit.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "24h")]
    pub poll_deadline: Duration,
    /// Our public address as IO sees it (default: io.source_ip), for the service preflight's
    /// authorized_cidrs check.
    #[arg(long)]
    pub source_ip: Option<std::net::IpAddr>,
    /// Start without the service preflight (not recommended: a campaign IO will refuse is only
    /// found out message by message).
    #[arg(long)]
    pub skip_preflight: bool,
    /// Validate and render every row, apply the filter, and print the outcomes, the IO calls
    /// and the time the job would take; send nothing and create no job.
    #[arg(long)]
    pub dry_run: bool,
    /// Send even to citizens who already have a message of this campaign from an earlier job
    /// (recorded in the job and logged; a new job even for the same files).
    #[arg(long)]
    pub allow_repeat: bool,
    /// Decode the CSV in this encoding (e.g. windows-1252) instead of the template's
    /// `encoding` (UTF-8 by default; a BOM always wins).
    #[arg(long)]
    pub encoding: Option<String>,
    /// The sheet of a workbook (.xlsx, .xlsm, .ods) to read, instead of the template's
    /// `sheet` (default: the first visible one).
    #[arg(long)]
    pub sheet: Option<String>,
}

/// `corriere report`
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Job id (as printed by `send` and `jobs`).
    pub job: String,
    /// Write the report here, as a workbook when the name ends in .xlsx, else as CSV
    /// (default: CSV on standard output).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Clear fiscal codes (masked by default).
    #[arg(long)]
    pub clear: bool,
}

/// `corriere resend-unknown`
#[derive(Debug, Args)]
pub struct ResendArgs {
    /// Job id.
    pub job: String,
    /// Confirms that the operator accepts that some of these citizens may get the message twice.
    #[arg(long)]
    pub yes: bool,
    /// Give up polling a message this long after its submit.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "24h")]
    pub poll_deadline: Duration,
    /// Our public address as IO sees it (default: io.source_ip), for the service preflight.
    #[arg(long)]
    pub source_ip: Option<std::net::IpAddr>,
    /// Start without the service preflight (not recommended).
    #[arg(long)]
    pub skip_preflight: bool,
}

/// `corriere io …`: single calls through the client.
#[derive(Debug, Subcommand)]
pub enum IoCall {
    /// POST /profiles: is this citizen on IO, and does it accept this service?
    Profile {
        /// Fiscal code, or `-` to read it from standard input (keeps it out of `ps` and the
        /// shell history).
        fiscal_code: String,
    },
    /// GET /messages/{fiscal_code}/{id}
    Message {
        /// Fiscal code, or `-` to read it from standard input.
        fiscal_code: String,
        /// Message id.
        id: String,
    },
    /// GET /subscriptions-feed/{date}
    Feed {
        /// Day, YYYY-MM-DD (UTC).
        date: chrono::NaiveDate,
    },
}

/// `corriere fake-io`
#[derive(Debug, Args)]
pub struct FakeIoArgs {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// Fake IO configuration file (TOML); flags below override it.
    #[arg(long)]
    pub fake_config: Option<PathBuf>,
    /// Citizens on the fake IO.
    #[arg(long)]
    pub population: Option<u64>,
    /// Seed of the population and of every random choice.
    #[arg(long)]
    pub seed: Option<u64>,
}

/// `corriere demo`
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Recipients in the generated campaign.
    #[arg(long, default_value_t = 100_000)]
    pub recipients: u64,
    /// The fake IO's hidden capacity (calls/s) before it answers 429.
    #[arg(long, default_value_t = 2000)]
    pub capacity: u32,
    /// Directory for the generated files, the store and the report.
    #[arg(long, default_value = "corriere-demo")]
    pub dir: PathBuf,
    /// Write the campaign as a workbook (recipients.xlsx) and the report as report.xlsx.
    #[arg(long)]
    pub xlsx: bool,
}

/// Installs the `tracing` subscriber (human or JSON, filter from RUST_LOG or config). While a
/// progress bar owns the terminal, only warnings are shown. Audit lines
/// ([`corriere::admin::AUDIT_TARGET`]) are shown whatever the filter.
pub fn init_tracing(config: &Config, progress_bar: bool) {
    use tracing_subscriber::EnvFilter;
    let default = if progress_bar {
        "warn"
    } else {
        config.log_filter.as_deref().unwrap_or("info")
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // Audit lines survive any filter (`log.filter = "warn"`, RUST_LOG, a progress bar).
    let filter = match format!("{}=info", corriere::admin::AUDIT_TARGET).parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match config.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Human => builder.try_init(),
    };
}

/// Cancels `token` on SIGINT or SIGTERM.
pub async fn on_signal(token: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    info!("Stopping: finishing the requests in flight, then flushing the store.");
    token.cancel();
}

/// Exit code for an error (64 for configuration, 65 for unusable input, 1 otherwise).
pub fn exit_code_of(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if let Some(d) = cause.downcast_ref::<DispatchError>() {
            return match d {
                DispatchError::Job(_) | DispatchError::NothingToSend(_) => 65,
                DispatchError::Unauthorized
                | DispatchError::Unsupported(_)
                | DispatchError::IoMisconfigured(_) => 64,
                _ => 1,
            };
        }
        if cause
            .downcast_ref::<corriere::config::ConfigError>()
            .is_some()
        {
            return 64;
        }
        if let Some(s) = cause.downcast_ref::<corriere::service::ServiceError>() {
            return s.exit_code();
        }
        if let Some(FreshError::NotFresh(_)) = cause.downcast_ref::<FreshError>() {
            // EX_UNAVAILABLE: the same command works once IO publishes the missing days.
            return 69;
        }
    }
    1
}

/// A fiscal code from the command line, or from the first line of standard input when the
/// argument is `-` (a code on the command line shows in `ps` and in the shell's history).
/// Lower case is accepted; errors never repeat the code.
pub fn fiscal_code_arg(arg: &str) -> Result<FiscalCode> {
    let text = if arg == "-" {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("reading the fiscal code from standard input")?;
        line
    } else {
        arg.to_owned()
    };
    FiscalCode::parse(&text.trim().to_ascii_uppercase())
        .map_err(|e| anyhow::anyhow!("fiscal code: {e}"))
}

/// Builds the IO client from configuration (reporting to no budget: single calls).
pub fn build_client(config: &Config) -> Result<IoClient> {
    Ok(corriere::runtime::client_from(config)?)
}

/// Builds the shared call budget from configuration.
pub fn build_budget(config: &Config) -> RateBudget {
    RateBudget::new(RateConfig::from(&config.rate))
}

/// Opens the store named by the configuration (its directory private to the owner).
pub async fn open_store(config: &Config) -> Result<Store> {
    Ok(corriere::runtime::open_store(config).await?)
}

/// The runtime of a command that sends: the store (opened here unless given), client, budget,
/// the feed on demand, the preflight as the flags say.
async fn command_runtime(
    config: &Config,
    store: Option<Store>,
    poll_deadline: Duration,
    skip_preflight: bool,
    source_ip: Option<std::net::IpAddr>,
) -> Result<Runtime> {
    let clock = corriere::clock::Clock::System;
    let store = match store {
        Some(s) => s,
        None => open_store(config).await?,
    };
    let mut rt = Runtime::with_store(
        config,
        store,
        clock.clone(),
        FeedAccess::OnDemand(feed_settings(config, clock)),
    )?;
    rt.settings_mut().poll_deadline = poll_deadline;
    if skip_preflight {
        tracing::warn!("Service preflight skipped (--skip-preflight).");
        rt.set_preflight(None);
    } else if let (Some(ip), Some(p)) = (source_ip, rt.preflight()) {
        let mut p = p.clone();
        p.source_ip = Some(ip);
        rt.set_preflight(Some(p));
    }
    Ok(rt)
}

/// A run's error as the command reports it (exit codes: [`exit_code_of`]).
fn run_error(e: RunError) -> anyhow::Error {
    match e {
        RunError::Dispatch(d) => d.into(),
        RunError::Preflight(s) => anyhow::Error::new(s).context("service preflight"),
        // The table is on standard error already (the view printed it).
        RunError::Refused { blocking, .. } => {
            corriere::service::ServiceError::Blocked { blocking }.into()
        }
        RunError::Subscribers(FreshError::Feed(f)) => {
            anyhow::Error::new(f).context("opening or syncing the subscriptions feed")
        }
        // IO's feed does not reach recent enough days yet: a wait, not a configuration error.
        RunError::Subscribers(f @ FreshError::NotFresh(_)) => anyhow::Error::new(f),
        RunError::Subscribers(f) => DispatchError::Unsupported(f.to_string()).into(),
        other => anyhow::anyhow!("{other}"),
    }
}

/// `corriere send`
pub async fn send(
    config: Arc<Config>,
    args: SendArgs,
    shutdown: CancellationToken,
) -> Result<Outcome> {
    if args.dry_run {
        let store = open_store(&config).await?;
        return send_dry_run(&config, &store, &args).await;
    }
    let rt = command_runtime(
        &config,
        None,
        args.poll_deadline,
        args.skip_preflight,
        args.source_ip,
    )
    .await?;
    let store = rt.store();
    let ingest_bar = spinner("reading recipients");
    let options = PrepareOptions {
        inputs: inputs_of(&args)?,
    };
    let prepared = prepare_job_with(store, &args.template, &args.recipients, &options, &|rows| {
        ingest_bar.set_message(format!("{rows} rows read"))
    })
    .await?;
    ingest_bar.finish_and_clear();
    eprintln!(
        "job {}{}{}",
        prepared.job,
        if prepared.resumed { " (resumed)" } else { "" },
        if args.allow_repeat {
            " (--allow-repeat: citizens who already have this campaign get it again)"
        } else {
            ""
        }
    );
    // Nothing to send because every row is invalid: the report says why, and the exit code
    // (65) tells a script the input is unusable.
    let counts = store.count_states(&prepared.job)?;
    let total: u64 = counts.values().sum();
    if total == counts.get(&RecipientOutcome::Invalid).copied().unwrap_or(0) {
        let summary = finish_report(
            store,
            &prepared.job,
            args.report.as_ref(),
            args.clear,
            config.io.service_id.as_deref(),
        )?;
        print_summary(&prepared.job, &summary, Outcome::Done);
        bail!(DispatchError::NothingToSend(format!(
            "{}: {}; nothing was sent",
            args.recipients.display(),
            if total == 0 {
                "no rows after the header".to_owned()
            } else {
                format!("all {total} rows are invalid (see the report)")
            }
        )));
    }
    // The preflight (a campaign IO is certain to refuse stops with its table, exit 65, nothing
    // sent), the subscriber set, then send and poll.
    let outcome = run_to_end(&rt, &prepared.job, &shutdown).await?;
    let summary = finish_report(
        store,
        &prepared.job,
        args.report.as_ref(),
        args.clear,
        config.io.service_id.as_deref(),
    )?;
    print_summary(&prepared.job, &summary, outcome);
    print_warnings(store, &prepared.job)?;
    Ok(outcome)
}

/// `--encoding` and `--allow-repeat`, checked.
fn inputs_of(args: &SendArgs) -> Result<corriere::job::JobInputs> {
    let encoding = match &args.encoding {
        Some(label) => Some(
            corriere::job::FileEncoding::from_label(label)
                .map_err(|e| DispatchError::Unsupported(format!("--encoding: {e}")))?,
        ),
        None => None,
    };
    Ok(corriere::job::JobInputs {
        encoding,
        allow_repeat: args.allow_repeat,
        sheet: args.sheet.clone(),
    })
}

/// Prints the warnings found at ingest (due dates in the past).
fn print_warnings(store: &Store, job: &JobId) -> Result<()> {
    if let Some(meta) = JobMeta::load(store, job)? {
        let w = &meta.due_date_in_past;
        if w.count > 0 {
            eprintln!(
                "warning: {} rows have a due date in the past (IO accepts them); first lines: {}",
                w.count,
                w.lines
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    Ok(())
}

/// Runs an ingested job to its end through the one runner, with the terminal's view.
pub async fn run_to_end(
    rt: &Runtime,
    job: &JobId,
    shutdown: &CancellationToken,
) -> Result<Outcome> {
    let view = TerminalView::default();
    let end = corriere::runner::run(rt, job, &view, shutdown)
        .await
        .map_err(run_error)?;
    Ok(if end.interrupted() {
        Outcome::Interrupted
    } else {
        Outcome::Done
    })
}

/// What a foreground run shows: the preflight's table, the feed sync's progress, the job's
/// progress bar (a log line every 10 s without a terminal).
#[derive(Default)]
pub struct TerminalView {
    sync: std::sync::Mutex<Option<SyncBar>>,
    progress: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl FeedObserver for TerminalView {
    fn feed_opened(&self, report: &corriere::feed::OpenReport) {
        if let Some(reason) = &report.snapshot_refused {
            eprintln!("subscriber snapshot refused ({reason}); rebuilding it");
        }
    }

    fn feed_sync_started(&self, freshness: &Freshness) {
        eprintln!("subscriber set: {freshness:?}; syncing the subscriptions feed first");
    }

    fn feed_progress(&self, p: &SyncProgress) {
        let mut bar = self.sync.lock().expect("sync bar lock");
        bar.get_or_insert_with(SyncBar::new).update(p);
    }

    fn feed_synced(&self, stats: &SyncStats) {
        if let Some(bar) = self.sync.lock().expect("sync bar lock").take() {
            bar.finish();
        }
        print_feed_stats(stats);
    }
}

impl RunObserver for TerminalView {
    fn preflight(&self, report: &corriere::service::PreflightReport) {
        eprintln!("service preflight:\n{}", report.table());
    }

    fn started(&self, ctx: &Arc<JobContext>) -> Result<(), DispatchError> {
        let handle = spawn_progress(ctx.clone());
        *self.progress.lock().expect("progress lock") = Some(handle);
        Ok(())
    }

    fn stopped(&self) {
        if let Some(h) = self.progress.lock().expect("progress lock").take() {
            h.abort();
        }
    }
}

impl Drop for TerminalView {
    fn drop(&mut self) {
        self.stopped();
    }
}

fn spinner(msg: &str) -> ProgressBar {
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::new_spinner()
    } else {
        ProgressBar::hidden()
    };
    bar.set_message(msg.to_owned());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// Progress bar on a terminal (sent, processed, rejected, invalid, rate, ETA); otherwise a log
/// line every 10 s.
fn spawn_progress(ctx: Arc<JobContext>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let c = ctx.counters.clone();
        let terminal = std::io::stderr().is_terminal();
        let bar = if terminal {
            let bar = ProgressBar::new(c.total());
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:30.cyan/blue} {pos}/{len} {percent}% | {msg} | ETA {eta}",
                )
                .expect("static template"),
            );
            bar
        } else {
            ProgressBar::hidden()
        };
        let mut tick = tokio::time::interval(if terminal {
            Duration::from_millis(250)
        } else {
            Duration::from_secs(10)
        });
        loop {
            tick.tick().await;
            let msg = format!(
                "sent {} processed {} rejected {} not subscribed {} invalid {} unknown {} | {:.1} calls/s",
                c.get(RecipientOutcome::Submitted) + c.get(RecipientOutcome::Processed) + c.get(RecipientOutcome::Rejected) + c.get(RecipientOutcome::FailedStatus) + c.get(RecipientOutcome::PollExpired),
                c.get(RecipientOutcome::Processed),
                c.get(RecipientOutcome::Rejected),
                c.get(RecipientOutcome::NotSubscribed),
                c.get(RecipientOutcome::Invalid),
                c.get(RecipientOutcome::Unknown),
                ctx.budget.current_rate(),
            );
            let msg = match ctx.control.gate() {
                corriere::dispatch::control::Gate::WindowClosed { opens_at } => format!(
                    "{msg} | outside the send window until {}",
                    opens_at
                        .with_timezone(&corriere::model::send_window::DEFAULT_TIMEZONE)
                        .format("%a %d %b %H:%M")
                ),
                corriere::dispatch::control::Gate::Paused => format!("{msg} | paused"),
                _ => msg,
            };
            if terminal {
                bar.set_position(c.settled());
                bar.set_message(msg);
            } else {
                info!(job = %ctx.job, settled = c.settled(), total = c.total(), "{msg}");
            }
        }
    })
}

/// Writes the report (when a path is given) and returns the summary.
pub fn finish_report(
    store: &Store,
    job: &JobId,
    path: Option<&PathBuf>,
    clear: bool,
    service_id: Option<&str>,
) -> Result<JobSummary> {
    let codes = if clear {
        FiscalCodes::Clear
    } else {
        FiscalCodes::Masked
    };
    if clear {
        corriere::admin::audit_clear_export(job.as_str(), "local CLI");
    }
    match path {
        Some(p) => {
            // Written aside and renamed over: a file or link already at `p` is replaced, never
            // written through (it could be open to others, or point elsewhere).
            let mut file = std::io::BufWriter::new(
                corriere::files::PrivateFile::create(p)
                    .with_context(|| format!("creating {}", p.display()))?,
            );
            let summary = if corriere::dispatch::report_xlsx::is_xlsx(p) {
                corriere::dispatch::report_xlsx::write_report_xlsx(
                    store,
                    job,
                    &mut file,
                    codes,
                    &corriere::runner::report_facts(store, job, service_id),
                )?
            } else {
                write_report(store, job, Some(&mut file), codes)?
            };
            file.into_inner()
                .map_err(|e| e.into_error())
                .and_then(|f| f.persist())
                .with_context(|| format!("writing {}", p.display()))?;
            eprintln!("report: {}", p.display());
            Ok(summary)
        }
        None => Ok(write_report(store, job, None, codes)?),
    }
}

/// Prints the per-outcome counts.
pub fn print_summary(job: &JobId, summary: &JobSummary, outcome: Outcome) {
    eprintln!(
        "job {job}: {} rows{}",
        summary.rows,
        if outcome == Outcome::Interrupted {
            " (interrupted: run the same command again to resume)"
        } else {
            ""
        }
    );
    for (outcome, n) in &summary.outcomes {
        if *n > 0 {
            eprintln!("  {outcome:<15} {n:>10}");
        }
    }
}

/// `corriere report`
pub async fn report(config: Arc<Config>, args: ReportArgs) -> Result<Outcome> {
    let store = open_store(&config).await?;
    let job = JobId::new(&args.job);
    if JobMeta::load(&store, &job)?.is_none() {
        bail!(DispatchError::UnknownJob(args.job));
    }
    let codes = if args.clear {
        FiscalCodes::Clear
    } else {
        FiscalCodes::Masked
    };
    let summary = match &args.out {
        Some(_) => finish_report(
            &store,
            &job,
            args.out.as_ref(),
            args.clear,
            config.io.service_id.as_deref(),
        )?,
        None => {
            if args.clear {
                corriere::admin::audit_clear_export(job.as_str(), "local CLI");
            }
            let stdout = std::io::stdout();
            let mut lock = stdout.lock();
            write_report(&store, &job, Some(&mut lock), codes)?
        }
    };
    print_summary(&job, &summary, Outcome::Done);
    Ok(Outcome::Done)
}

/// `corriere resend-unknown`
pub async fn resend_unknown(
    config: Arc<Config>,
    args: ResendArgs,
    shutdown: CancellationToken,
) -> Result<Outcome> {
    if !args.yes {
        bail!(
            "resend-unknown re-sends messages IO may already have created: a citizen may get one twice. \
             Re-run with --yes once you have decided to."
        );
    }
    // The job is checked before the client is built: an unknown job is the answer whatever
    // the key.
    let store = open_store(&config).await?;
    let job = JobId::new(&args.job);
    let Some(meta) = JobMeta::load(&store, &job)? else {
        bail!(DispatchError::UnknownJob(args.job));
    };
    // This command sends and polls; it never reads the CSV. A job whose ingest was interrupted
    // would end `done` with part of its file: its ingest must finish first.
    if meta.phase == JobPhase::Ingesting {
        bail!(DispatchError::Unsupported(format!(
            "job {job} has not read its whole file yet: run `corriere send` with the same \
             template and recipients first (it resumes the ingest), then resend-unknown"
        )));
    }
    let rt = command_runtime(
        &config,
        Some(store),
        args.poll_deadline,
        args.skip_preflight,
        args.source_ip,
    )
    .await?;
    let store = rt.store();
    let requeued = dispatch::requeue_unknown(store, &job).await?;
    eprintln!(
        "job {job}: {} recipients queued again ({} of them left sending by an interrupted run){}",
        requeued.requeued,
        requeued.recovered,
        if requeued.kept_with_id > 0 {
            format!(
                "; {} unknown with a message id kept (IO created their message)",
                requeued.kept_with_id
            )
        } else {
            String::new()
        }
    );
    // The same runner as `send`: the preflight on the recipients now queued again (a campaign
    // IO will refuse stops before anything is re-sent; they stay queued), the send window.
    let outcome = run_to_end(&rt, &job, &shutdown).await?;
    let summary = finish_report(store, &job, None, false, config.io.service_id.as_deref())?;
    print_summary(&job, &summary, outcome);
    Ok(outcome)
}

/// `corriere jobs`
pub async fn jobs(config: Arc<Config>) -> Result<Outcome> {
    let store = open_store(&config).await?;
    for job in store.list_jobs()? {
        let meta = JobMeta::load(&store, &job)?;
        let counts = store.count_states(&job)?;
        let total: u64 = counts.values().sum();
        match meta {
            Some(m) => println!(
                "{job}  {:?}  {total} recipients  created {}  template {}",
                m.phase,
                m.created_at,
                m.template_path.display()
            ),
            None => println!("{job}  (no metadata)"),
        }
    }
    Ok(Outcome::Done)
}

/// `corriere io …`
pub async fn io_call(config: Arc<Config>, call: IoCall) -> Result<Outcome> {
    let client = build_client(&config)?;
    match call {
        IoCall::Profile { fiscal_code } => {
            let fc = fiscal_code_arg(&fiscal_code)?;
            let p = client.get_profile(&fc).await?;
            println!("{}", serde_json::to_string_pretty(&p)?);
        }
        IoCall::Message { fiscal_code, id } => {
            let fc = fiscal_code_arg(&fiscal_code)?;
            let m = client.get_message(&fc, &id).await?;
            println!("{}", serde_json::to_string_pretty(&m)?);
        }
        IoCall::Feed { date } => {
            let feed = client.get_subscriptions_feed(date).await?;
            println!("{}", serde_json::to_string_pretty(&feed)?);
        }
    }
    Ok(Outcome::Done)
}

/// `corriere service …`
pub async fn service(
    config: Arc<Config>,
    command: crate::cli::service::ServiceCommand,
) -> Result<Outcome> {
    crate::cli::service::run_service(&config, command).await?;
    Ok(Outcome::Done)
}

/// `corriere organization …`
pub async fn organization(
    config: Arc<Config>,
    command: crate::cli::service::OrganizationCommand,
) -> Result<Outcome> {
    crate::cli::service::run_organization(&config, command).await?;
    Ok(Outcome::Done)
}

/// `corriere fake-io`
pub async fn fake_io(args: FakeIoArgs, shutdown: CancellationToken) -> Result<Outcome> {
    let mut cfg = match &args.fake_config {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            toml::from_str(&text).with_context(|| format!("parsing {}", p.display()))?
        }
        None => corriere_fake_io::FakeIoConfig::default(),
    };
    if let Some(n) = args.population {
        cfg.population = n;
    }
    if let Some(s) = args.seed {
        cfg.seed = s;
    }
    let handle = corriere_fake_io::FakeIo::start(cfg, args.listen).await?;
    eprintln!(
        "fake IO listening on {} (API key: fake-primary-key, manage key: fake-manage-key)",
        handle.base_url()
    );
    shutdown.cancelled().await;
    handle.shutdown().await;
    Ok(Outcome::Done)
}

/// `corriere feed …`
#[derive(Debug, Subcommand)]
pub enum FeedCommand {
    /// Bring the local subscriber set up to date with IO's subscriptions feed (incremental:
    /// only the days after the last one applied).
    Sync(FeedSyncArgs),
    /// What the local set holds: subscribers, last day applied, sizes.
    Status,
    /// Is this citizen in the local set? (prints the masked code and the answer)
    Check {
        /// Fiscal code, or `-` to read it from standard input.
        fiscal_code: String,
    },
}

/// `corriere feed sync`
#[derive(Debug, Args)]
pub struct FeedSyncArgs {
    /// Re-fetch and re-apply the days from this one (YYYY-MM-DD) on, on top of the current set.
    #[arg(long)]
    pub from: Option<chrono::NaiveDate>,
    /// Last day to fetch (default: yesterday, UTC).
    #[arg(long)]
    pub until: Option<chrono::NaiveDate>,
    /// Drop the set and download the whole feed again.
    #[arg(long, conflicts_with = "from")]
    pub full: bool,
}

/// Feed settings from configuration.
pub fn feed_settings(config: &Config, clock: corriere::clock::Clock) -> FeedSettings {
    corriere::runtime::feed_settings(config, clock)
}

/// Opens the feed (without a client: `feed status`, `feed check`) and reports what was loaded.
pub async fn open_feed(config: &Config, store: &Store) -> Result<Feed> {
    corriere::runtime::open_feed(
        store.clone(),
        feed_settings(config, Default::default()),
        &TerminalView::default(),
    )
    .await
    .context("opening the subscriber set")
}

/// A feed sync's progress bar on a terminal (days, hashes/s), a log line every 100 days
/// otherwise.
pub struct SyncBar {
    bar: ProgressBar,
    terminal: bool,
    started: tokio::time::Instant,
}

impl SyncBar {
    fn new() -> SyncBar {
        let terminal = std::io::stderr().is_terminal();
        let bar = if terminal {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "feed {bar:30.cyan/blue} {pos}/{len} days | {msg} | ETA {eta}",
                )
                .expect("static template"),
            );
            bar
        } else {
            ProgressBar::hidden()
        };
        SyncBar {
            bar,
            terminal,
            started: tokio::time::Instant::now(),
        }
    }

    fn update(&self, p: &SyncProgress) {
        let rate = p.hashes as f64 / self.started.elapsed().as_secs_f64().max(0.001);
        if self.terminal {
            self.bar.set_length(u64::from(p.days_total));
            self.bar.set_position(u64::from(p.days_done));
            self.bar
                .set_message(format!("{} hashes, {rate:.0} hashes/s", p.hashes));
        } else if p.days_done % 100 == 0 || p.days_done == p.days_total {
            info!(
                days_done = p.days_done,
                days_total = p.days_total,
                hashes = p.hashes,
                hashes_per_second = rate as u64,
                through = ?p.through,
                "Feed sync progress."
            );
        }
    }

    fn finish(self) {
        self.bar.finish_and_clear();
    }
}

/// Runs a sync with a [`SyncBar`].
pub async fn sync_with_progress(
    feed: &Feed,
    client: &IoClient,
    budget: &RateBudget,
    options: SyncOptions,
    shutdown: &CancellationToken,
) -> Result<SyncStats> {
    let bar = SyncBar::new();
    let result = feed
        .sync(client, budget, options, &|p| bar.update(p), shutdown)
        .await;
    bar.finish();
    Ok(result?)
}

fn print_feed_stats(stats: &SyncStats) {
    eprintln!(
        "feed: {} subscribers, last day {}; this sync: {} days, +{} / -{} hashes{}{} in {:.1} s",
        stats.subscribers,
        stats
            .through
            .map_or_else(|| "none".to_owned(), |d| d.to_string()),
        stats.days_applied,
        stats.subscriptions,
        stats.unsubscriptions,
        if stats.retried + stats.throttled > 0 {
            format!(", {} retried, {} throttled", stats.retried, stats.throttled)
        } else {
            String::new()
        },
        stats
            .not_published_from
            .map_or_else(String::new, |d| format!(" ({d} not published by IO yet)")),
        stats.seconds,
    );
    eprintln!(
        "      set {:.1} MiB in memory ({:.2} bytes/subscriber), snapshot {:.1} MiB, store {:.1} MiB on disk",
        stats.set_bytes as f64 / 1048576.0,
        stats.set_bytes as f64 / (stats.subscribers.max(1)) as f64,
        stats.snapshot_bytes as f64 / 1048576.0,
        stats.store_bytes as f64 / 1048576.0,
    );
    if stats.conflicts > 0 || stats.malformed > 0 {
        eprintln!(
            "      {} hashes in both lists of a day (kept as subscribed), {} malformed entries skipped",
            stats.conflicts, stats.malformed
        );
    }
}

/// `corriere feed …`
pub async fn feed(
    config: Arc<Config>,
    command: FeedCommand,
    shutdown: CancellationToken,
) -> Result<Outcome> {
    let store = open_store(&config).await?;
    let feed = open_feed(&config, &store).await?;
    match command {
        FeedCommand::Sync(args) => {
            let budget = build_budget(&config);
            let client = build_client(&config)?.with_observer(Arc::new(
                corriere::observe::BudgetObserver::new(budget.clone()),
            ));
            // (Not a `Runtime`: the store and feed are open already, and this sync is the
            // only one of the process, whatever the set's freshness.)
            let options = SyncOptions {
                from: args.from,
                until: args.until,
                full: args.full,
            };
            let stats = sync_with_progress(&feed, &client, &budget, options, &shutdown).await?;
            print_feed_stats(&stats);
            Ok(if stats.interrupted {
                Outcome::Interrupted
            } else {
                Outcome::Done
            })
        }
        FeedCommand::Status => {
            let p = feed.subscribers().load();
            println!(
                "subscribers {}\nlast day    {}\nfreshness   {:?}\nmemory      {} bytes ({:.2} per subscriber)\nsnapshot    {} ({} bytes)",
                p.set.len(),
                p.through.map_or_else(|| "none".to_owned(), |d| d.to_string()),
                feed.freshness(),
                p.set.heap_bytes(),
                p.set.heap_bytes() as f64 / p.set.len().max(1) as f64,
                config.feed.snapshot_path.display(),
                std::fs::metadata(&config.feed.snapshot_path).map_or(0, |m| m.len()),
            );
            Ok(Outcome::Done)
        }
        FeedCommand::Check { fiscal_code } => {
            let fc = fiscal_code_arg(&fiscal_code)?;
            let p = feed.subscribers().load();
            let yes = p.set.contains_digest(&fc.feed_hash_bytes());
            println!(
                "{fc}: {} (set through {})",
                if yes { "subscribed" } else { "not subscribed" },
                p.through
                    .map_or_else(|| "none".to_owned(), |d| d.to_string())
            );
            Ok(Outcome::Done)
        }
    }
}

/// How long the admin API may take to close its open requests once the daemon has drained.
const ADMIN_STOP_GRACE: Duration = Duration::from_secs(3);

/// `corriere run`: the daemon with its admin API, until SIGTERM/SIGINT; then it stops taking
/// new sends, finishes or records what is in flight, flushes the store and exits 0 within
/// `daemon.grace_period` (75 when the grace period ran out with requests in flight).
pub async fn run_daemon(config: Arc<Config>, shutdown: CancellationToken) -> Result<Outcome> {
    corriere::admin::check_bind(config.admin_listen, config.admin_token.as_ref())?;
    let metrics = corriere::metrics::install().context("installing the metrics recorder")?;
    let clock = corriere::clock::Clock::System;
    let feed = match config.daemon.feed_sync_at {
        Some(_) => FeedAccess::OnDemand(feed_settings(&config, clock.clone())),
        None => FeedAccess::Off,
    };
    let runtime = Runtime::from_config(&config, clock, feed).await?;
    // Opened now: a snapshot problem shows at start, and the first sync starts from it.
    runtime
        .feed(&TerminalView::default())
        .await
        .context("opening the subscriber set")?;
    let listener = tokio::net::TcpListener::bind(config.admin_listen)
        .await
        .with_context(|| format!("binding the admin API to {}", config.admin_listen))?;
    let daemon = corriere::daemon::Daemon::start(
        corriere::daemon::DaemonParts {
            runtime: Arc::new(runtime),
            feed_sync_at: config.daemon.feed_sync_at,
            uploads_dir: config.store_path.join("uploads"),
            input_dirs: config.admin.input_dirs.clone(),
            upload_retention: config.admin.upload_retention,
        },
        shutdown.child_token(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("starting the daemon: {e}"))?;
    let admin_addr = listener
        .local_addr()
        .map_or_else(|_| config.admin_listen.to_string(), |a| a.to_string());
    // On stderr whatever the log level: scripts and tests wait for this line.
    eprintln!("admin API listening on http://{admin_addr}");
    info!(admin = %admin_addr, "corriere daemon running.");
    // Stops answering when the daemon has drained, so clients see the jobs to the end.
    let admin_stop = CancellationToken::new();
    let mut admin = tokio::spawn(corriere::admin::serve(
        listener,
        Arc::new(daemon.clone()),
        config.admin_token.clone(),
        metrics,
        corriere::admin::ServerLimits::from_config(&config.admin),
        admin_stop.clone(),
    ));
    tokio::select! {
        () = shutdown.cancelled() => {}
        result = &mut admin => {
            // The admin server ended by itself: an error (the port was taken away, say).
            let drained = daemon.drain(config.daemon.grace_period).await;
            let outcome = stop_outcome(drained, daemon.requests_in_flight());
            return match result {
                Ok(Ok(())) => Ok(outcome),
                Ok(Err(e)) => Err(e.into()),
                Err(e) => Err(anyhow::anyhow!("admin server task: {e}")),
            };
        }
    }
    info!(
        grace_s = config.daemon.grace_period.as_secs(),
        "Shutting down: draining in-flight requests."
    );
    let drained = daemon.drain(config.daemon.grace_period).await;
    let outcome = stop_outcome(drained, daemon.requests_in_flight());
    admin_stop.cancel();
    // Requests still open (a long report download) get a moment, not a veto over the exit:
    // the store is flushed already.
    if tokio::time::timeout(ADMIN_STOP_GRACE, &mut admin)
        .await
        .is_err()
    {
        admin.abort();
    }
    info!(drained, "corriere daemon stopped.");
    Ok(outcome)
}

/// How the daemon's stop ends: requests to IO cut by the grace period leave their recipients
/// Unknown until an operator decides, so the exit code says so (75, as a foreground run
/// interrupted mid-way does); a task that overran with no request in flight cut nothing.
fn stop_outcome(drained: bool, requests_in_flight: usize) -> Outcome {
    if !drained && requests_in_flight > 0 {
        Outcome::Interrupted
    } else {
        Outcome::Done
    }
}

/// `corriere send --dry-run`: the daemon's dry run, in the foreground.
async fn send_dry_run(config: &Config, store: &Store, args: &SendArgs) -> Result<Outcome> {
    let text = std::fs::read_to_string(&args.template)
        .with_context(|| format!("reading {}", args.template.display()))?;
    let template = corriere::job::Template::from_toml_str(&text, &args.template)?;
    let feed = match template.options().filter {
        corriere::job::FilterMode::Feed => Some(Arc::new(open_feed(config, store).await?)),
        _ => None,
    };
    let spinner = spinner("reading recipients");
    let report = corriere::daemon::dry_run(corriere::daemon::DryRun {
        template_path: args.template.clone(),
        recipients_path: args.recipients.clone(),
        inputs: inputs_of(args)?,
        store: Some(store.clone()),
        feed,
        rate: build_budget(config).current_rate(),
        default_window: config.daemon.send_window.clone(),
        clock: Default::default(),
        polls_per_message: corriere::runner::polls_per_message(store),
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    spinner.finish_and_clear();
    print_dry_run(&report);
    Ok(Outcome::Done)
}

/// Prints a dry run's findings.
pub fn print_dry_run(r: &corriere::daemon::api::DryRunReport) {
    eprintln!("dry run of job {}: {} rows; nothing was sent", r.id, r.rows);
    if let Some(sheet) = &r.sheet {
        eprintln!("sheet: {sheet:?}");
    }
    if r.merged_cells > 0 {
        eprintln!(
            "note: the sheet has {} merged cell ranges; each reads as its first cell, the rest of the range as empty",
            r.merged_cells
        );
    }
    for (outcome, n) in &r.counts {
        eprintln!("  {outcome:<15} {n:>10}");
    }
    if r.due_date_in_past.count > 0 {
        eprintln!(
            "warning: {} rows have a due date in the past (IO accepts them); first lines: {}",
            r.due_date_in_past.count,
            r.due_date_in_past
                .lines
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for row in r.invalid.iter().take(10) {
        eprintln!("  line {}: {}: {}", row.line, row.field, row.reason);
    }
    let c = &r.calls;
    eprintln!(
        "IO calls: {} sends + {} polls + {} profile checks + {} feed days = {}",
        c.sends, c.polls, c.profile_checks, c.feed_days, c.total
    );
    eprintln!(
        "estimated time at the configured budget and send window: {}",
        humantime::format_duration(Duration::from_secs(r.estimated_seconds.round() as u64))
    );
}

#[cfg(test)]
mod stop_tests {
    use super::*;

    #[test]
    fn exit_75_only_when_requests_to_io_were_cut() {
        assert_eq!(stop_outcome(true, 0), Outcome::Done);
        assert_eq!(
            stop_outcome(false, 0),
            Outcome::Done,
            "overran, nothing cut"
        );
        assert_eq!(stop_outcome(false, 2), Outcome::Interrupted);
    }
}
