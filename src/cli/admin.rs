//! The CLI side of the admin API: [`AdminClient`] (reqwest) and the commands `corriere submit`,
//! `jobs`, `job ID [--watch]`, `pause`, `resume` and `cancel`. Errors carry the server's
//! problem+json `detail` and map to exit codes with [`ClientError::exit_code`].

use std::io::IsTerminal;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use corriere::admin::problem::Problem;
use corriere::config::{Config, Secret};
use corriere::daemon::api::{DryRunReport, JobState, JobView, Submitted};

/// Exit code: the API answered with an error.
pub const EX_API: u8 = 1;
/// Exit code: bad usage or configuration (EX_USAGE).
pub const EX_USAGE: u8 = 64;
/// Exit code: the daemon cannot be reached (EX_UNAVAILABLE).
pub const EX_UNAVAILABLE: u8 = 69;
/// Time allowed to connect to the daemon.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Whole-request timeout of every call but uploads (which take as long as the file needs).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How often `corriere job ID --watch` redraws.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);
/// Invalid rows a dry run prints (the API returns up to 100).
const DRY_RUN_INVALID_SHOWN: usize = 20;

/// What went wrong talking to the daemon.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Bad arguments or configuration (exit 64).
    #[error("{0}")]
    Usage(String),
    /// No connection to the daemon (exit 69).
    #[error(
        "cannot reach the corriere daemon at {url}: {reason} (is `corriere run` running? \
         --admin URL points elsewhere)"
    )]
    Unreachable {
        /// Admin base URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The API refused the request; `detail` is its problem+json detail (exit 1).
    #[error("{detail} (HTTP {status})")]
    Api {
        /// HTTP status.
        status: u16,
        /// What the daemon said was wrong.
        detail: String,
    },
    /// The answer was not what the API promises (exit 1).
    #[error("unexpected answer from {url}: {reason}")]
    Protocol {
        /// Request URL.
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// A watched job stopped with an error (exit 1).
    #[error("job {id} failed: {error}")]
    JobFailed {
        /// Job id.
        id: String,
        /// The job's error.
        error: String,
    },
}

impl ClientError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Usage(_) => EX_USAGE,
            ClientError::Unreachable { .. } => EX_UNAVAILABLE,
            ClientError::Api { .. }
            | ClientError::Protocol { .. }
            | ClientError::JobFailed { .. } => EX_API,
        }
    }
}

/// `--admin URL`, shared by every admin command.
#[derive(Debug, Clone, Default, Args)]
pub struct AdminArgs {
    /// Admin API of the daemon (default: http:// + admin.listen of the configuration).
    #[arg(long = "admin", value_name = "URL")]
    pub admin: Option<String>,
}

/// `corriere submit`
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// Message template (TOML).
    #[arg(long, short)]
    pub template: PathBuf,
    /// Recipients CSV.
    #[arg(long, short)]
    pub recipients: PathBuf,
    /// Validate and render every row, apply the filter, estimate IO calls and time: send nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Send the files' absolute paths for the daemon to read (same machine, large files)
    /// instead of uploading them.
    #[arg(long)]
    pub paths: bool,
    /// Send even to citizens who already have a message of this campaign from an earlier job
    /// (recorded in the job and logged).
    #[arg(long)]
    pub allow_repeat: bool,
    /// Decode the CSV in this encoding (e.g. windows-1252) instead of the template's.
    #[arg(long)]
    pub encoding: Option<String>,
    /// The sheet of a workbook (.xlsx, .xlsm, .ods) to read, instead of the template's.
    #[arg(long)]
    pub sheet: Option<String>,
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// `corriere jobs`
#[derive(Debug, Args)]
pub struct JobsArgs {
    /// Read the store directly instead of asking the daemon (only while no daemon runs: the
    /// store is locked by a running daemon).
    #[arg(long)]
    pub local: bool,
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// `corriere job ID`
#[derive(Debug, Args)]
pub struct JobArgs {
    /// Job id.
    pub id: String,
    /// Redraw a progress bar every second until the job is done (Ctrl-C leaves).
    #[arg(long)]
    pub watch: bool,
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// `corriere pause|resume|cancel ID`
#[derive(Debug, Args)]
pub struct JobIdArgs {
    /// Job id.
    pub id: String,
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// What an operator can do to a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobAction {
    /// Stop sending until resumed (polls go on).
    Pause,
    /// Resume a paused or failed job.
    Resume,
    /// Stop sending for good (what was sent is still polled).
    Cancel,
}

impl JobAction {
    fn path(self) -> &'static str {
        match self {
            JobAction::Pause => "pause",
            JobAction::Resume => "resume",
            JobAction::Cancel => "cancel",
        }
    }
}

/// The admin API base URL for a listen address (an unspecified address means this host).
pub fn base_url_for(listen: SocketAddr) -> String {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, listen.port()))
}

/// A client of the admin API.
#[derive(Debug, Clone)]
pub struct AdminClient {
    base: String,
    token: Option<Secret>,
    http: reqwest::Client,
}

impl AdminClient {
    /// A client of `base` (`http://host:port`), sending `token` as a bearer token.
    pub fn new(base: &str, token: Option<Secret>) -> Result<Self, ClientError> {
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::Usage(format!(
                "admin URL {base:?} must start with http:// or https://"
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("corriere/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Usage(format!("building the HTTP client: {e}")))?;
        Ok(AdminClient { base, token, http })
    }

    /// From the configuration (`admin.listen`, `CORRIERE_ADMIN_TOKEN` / `admin.token_file`)
    /// and `--admin`.
    pub fn from_config(config: &Config, args: &AdminArgs) -> Result<Self, ClientError> {
        let base = args
            .admin
            .clone()
            .unwrap_or_else(|| base_url_for(config.admin_listen));
        AdminClient::new(&base, config.admin_token.clone())
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let builder = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => builder.bearer_auth(t.expose()),
            None => builder,
        }
    }

    async fn send<T: DeserializeOwned>(
        &self,
        builder: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let response = builder.send().await.map_err(|e| self.transport(e))?;
        let url = response.url().to_string();
        let status = response.status();
        let body = response.bytes().await.map_err(|e| self.transport(e))?;
        if !status.is_success() {
            return Err(api_error(status, &body));
        }
        serde_json::from_slice(&body).map_err(|e| ClientError::Protocol {
            url,
            reason: e.to_string(),
        })
    }

    fn transport(&self, e: reqwest::Error) -> ClientError {
        if e.is_connect() || e.is_timeout() {
            ClientError::Unreachable {
                url: self.base.clone(),
                reason: root_cause(&e),
            }
        } else {
            ClientError::Protocol {
                url: self.base.clone(),
                reason: root_cause(&e),
            }
        }
    }

    /// `GET /jobs`
    pub async fn list(&self) -> Result<Vec<JobView>, ClientError> {
        self.send(self.request(Method::GET, "/jobs").timeout(REQUEST_TIMEOUT))
            .await
    }

    /// `GET /jobs/{id}`
    pub async fn get(&self, id: &str) -> Result<JobView, ClientError> {
        self.send(
            self.request(Method::GET, &format!("/jobs/{}", path_segment(id)?))
                .timeout(REQUEST_TIMEOUT),
        )
        .await
    }

    /// `POST /jobs/{id}/pause|resume|cancel`
    pub async fn act(&self, id: &str, action: JobAction) -> Result<JobView, ClientError> {
        self.send(
            self.request(
                Method::POST,
                &format!("/jobs/{}/{}", path_segment(id)?, action.path()),
            )
            .timeout(REQUEST_TIMEOUT),
        )
        .await
    }

    /// `POST /jobs`: uploads both files (multipart), or with `by_path` sends their absolute
    /// paths for the daemon to read; with the operator's options (`allow_repeat`, `encoding`).
    pub async fn submit(
        &self,
        template: &Path,
        recipients: &Path,
        dry_run: bool,
        by_path: bool,
        options: &corriere::daemon::api::SubmitOptions,
    ) -> Result<Submitted, ClientError> {
        let mut query = Vec::new();
        if dry_run {
            query.push("dry_run=true".to_owned());
        }
        if options.allow_repeat {
            query.push("allow_repeat=true".to_owned());
        }
        if let Some(e) = &options.encoding {
            let e: String = e
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect();
            query.push(format!("encoding={e}"));
        }
        if let Some(sheet) = &options.sheet {
            query.push(format!("sheet={}", percent_encode(sheet)));
        }
        let path = if query.is_empty() {
            "/jobs".to_owned()
        } else {
            format!("/jobs?{}", query.join("&"))
        };
        let builder = self.request(Method::POST, &path);
        let builder = if by_path {
            #[derive(Serialize)]
            struct Paths {
                template_path: PathBuf,
                recipients_path: PathBuf,
            }
            builder
                .json(&Paths {
                    template_path: absolute(template)?,
                    recipients_path: absolute(recipients)?,
                })
                .timeout(REQUEST_TIMEOUT)
        } else {
            let form = reqwest::multipart::Form::new()
                .part("template", file_part(template, "application/toml").await?)
                .part(
                    "recipients",
                    file_part(
                        recipients,
                        match corriere::job::WorkbookKind::of(recipients) {
                            Some(corriere::job::WorkbookKind::Xlsx) => {
                                corriere::dispatch::report_xlsx::XLSX_MEDIA_TYPE
                            }
                            Some(corriere::job::WorkbookKind::Ods) => {
                                "application/vnd.oasis.opendocument.spreadsheet"
                            }
                            None => "text/csv",
                        },
                    )
                    .await?,
                );
            builder.multipart(form)
        };
        self.send(builder).await
    }
}

/// Reads a problem+json body into an [`ClientError::Api`]; any other body becomes its text.
fn api_error(status: StatusCode, body: &[u8]) -> ClientError {
    let detail = match serde_json::from_slice::<Problem>(body) {
        Ok(p) => p.detail,
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                status.canonical_reason().unwrap_or("error").to_owned()
            } else {
                text.chars().take(500).collect()
            }
        }
    };
    ClientError::Api {
        status: status.as_u16(),
        detail,
    }
}

/// The innermost cause of a transport error ("Connection refused (os error 111)").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// A job id as one URL path segment (ids are ASCII letters, digits, `-` and `_`).
fn path_segment(id: &str) -> Result<&str, ClientError> {
    if !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
    {
        Ok(id)
    } else {
        Err(ClientError::Usage(format!(
            "{id:?} is not a job id (letters, digits, - and _)"
        )))
    }
}

fn absolute(path: &Path) -> Result<PathBuf, ClientError> {
    std::fs::canonicalize(path).map_err(|e| ClientError::Usage(format!("{}: {e}", path.display())))
}

async fn file_part(path: &Path, mime: &str) -> Result<reqwest::multipart::Part, ClientError> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| ClientError::Usage(format!("{}: {e}", path.display())))?;
    let len = file
        .metadata()
        .await
        .map_err(|e| ClientError::Usage(format!("{}: {e}", path.display())))?
        .len();
    let name = path
        .file_name()
        .map_or_else(|| "upload".to_owned(), |n| n.to_string_lossy().into_owned());
    reqwest::multipart::Part::stream_with_length(reqwest::Body::from(file), len)
        .file_name(name)
        .mime_str(mime)
        .map_err(|e| ClientError::Usage(format!("{}: {e}", path.display())))
}

/// A query value with every byte but the unreserved ones as `%XX` (a sheet name may hold
/// spaces, `&` or accents).
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ── Commands ────────────────────────────────────────────────────────────────────────────────

/// `corriere submit`: prints the job id on standard output (the rest on standard error), or
/// the dry run's findings.
pub async fn submit(client: &AdminClient, args: &SubmitArgs) -> Result<(), ClientError> {
    let submitted = client
        .submit(
            &args.template,
            &args.recipients,
            args.dry_run,
            args.paths,
            &corriere::daemon::api::SubmitOptions {
                allow_repeat: args.allow_repeat,
                encoding: args.encoding.clone(),
                sheet: args.sheet.clone(),
            },
        )
        .await?;
    match submitted {
        Submitted::Job { id, existing } => {
            if existing {
                eprintln!("these inputs were submitted before: same job");
            } else {
                eprintln!("job created; follow it with `corriere job {id} --watch`");
            }
            println!("{id}");
        }
        Submitted::DryRun(report) => print!("{}", format_dry_run(&report)),
    }
    Ok(())
}

/// `corriere jobs` (through the API).
pub async fn jobs(client: &AdminClient) -> Result<(), ClientError> {
    let jobs = client.list().await?;
    print!("{}", format_jobs(&jobs));
    Ok(())
}

/// `corriere job ID [--watch]`
pub async fn job(
    client: &AdminClient,
    args: &JobArgs,
    shutdown: CancellationToken,
) -> Result<(), ClientError> {
    let view = client.get(&args.id).await?;
    if !args.watch {
        print!("{}", format_job(&view));
        return Ok(());
    }
    watch(client, view, shutdown).await
}

/// `corriere pause|resume|cancel ID`
pub async fn act(client: &AdminClient, id: &str, action: JobAction) -> Result<(), ClientError> {
    let view = client.act(id, action).await?;
    println!("job {}: {}", view.id, state_name(view.state));
    Ok(())
}

/// Whether a job will not move any more (a cancelled job still polls what it sent).
fn finished(view: &JobView) -> bool {
    match view.state {
        JobState::Done | JobState::Failed => true,
        JobState::Cancelled => view.settled >= view.rows,
        _ => false,
    }
}

async fn watch(
    client: &AdminClient,
    mut view: JobView,
    shutdown: CancellationToken,
) -> Result<(), ClientError> {
    let terminal = std::io::stderr().is_terminal();
    let bar = if terminal {
        let bar = ProgressBar::new(view.rows);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} {bar:30.cyan/blue} {pos}/{len} {percent}% | {msg}",
            )
            .expect("static template"),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate; `view` is fresh
    let mut last_logged = None;
    loop {
        bar.set_length(view.rows);
        bar.set_position(view.settled);
        bar.set_prefix(format!("{} {}", view.id, state_name(view.state)));
        bar.set_message(progress_line(&view));
        // Without a terminal (a log file), one line per change instead of a bar.
        if !terminal && last_logged != Some((view.state, view.settled)) {
            last_logged = Some((view.state, view.settled));
            eprintln!(
                "{} {} {}/{} | {}",
                view.id,
                state_name(view.state),
                view.settled,
                view.rows,
                progress_line(&view)
            );
        }
        if finished(&view) {
            break;
        }
        tokio::select! {
            _ = shutdown.cancelled() => {
                bar.abandon();
                return Ok(());
            }
            _ = tick.tick() => {}
        }
        view = client.get(&view.id).await?;
    }
    bar.finish_and_clear();
    print!("{}", format_job(&view));
    match (view.state, view.error) {
        (JobState::Failed, error) => Err(ClientError::JobFailed {
            id: view.id,
            error: error.unwrap_or_else(|| "no detail".to_owned()),
        }),
        _ => Ok(()),
    }
}

// ── Formatting (pure, tested) ───────────────────────────────────────────────────────────────

fn state_name(state: JobState) -> &'static str {
    match state {
        JobState::Ingesting => "ingesting",
        JobState::Running => "running",
        JobState::Waiting => "waiting",
        JobState::Paused => "paused",
        JobState::Cancelled => "cancelled",
        JobState::Done => "done",
        JobState::Failed => "failed",
    }
}

fn human_seconds(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "-".to_owned();
    }
    humantime::format_duration(Duration::from_secs(seconds.round() as u64)).to_string()
}

fn percent(settled: u64, rows: u64) -> f64 {
    if rows == 0 {
        100.0
    } else {
        settled as f64 * 100.0 / rows as f64
    }
}

fn progress_line(view: &JobView) -> String {
    let shown: Vec<String> = view
        .counts
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    format!(
        "{} | {:.1} sends/s | ETA {}",
        shown.join(" "),
        view.sends_per_second,
        view.eta_seconds
            .map_or_else(|| "-".to_owned(), human_seconds)
    )
}

/// The `corriere jobs` table.
pub fn format_jobs(jobs: &[JobView]) -> String {
    if jobs.is_empty() {
        return "no jobs\n".to_owned();
    }
    let mut out = format!(
        "{:<28} {:<10} {:>23} {:>7} {:>9} {:>10}  {:<20} {}\n",
        "ID", "STATE", "SETTLED/ROWS", "%", "SENDS/S", "ETA", "CREATED", "TEMPLATE"
    );
    for j in jobs {
        out.push_str(&format!(
            "{:<28} {:<10} {:>23} {:>6.1}% {:>9.1} {:>10}  {:<20} {}\n",
            j.id,
            state_name(j.state),
            format!("{}/{}", j.settled, j.rows),
            percent(j.settled, j.rows),
            j.sends_per_second,
            j.eta_seconds.map_or_else(|| "-".to_owned(), human_seconds),
            j.created_at.chars().take(20).collect::<String>(),
            j.template,
        ));
    }
    out
}

/// The `corriere job ID` view.
pub fn format_job(j: &JobView) -> String {
    let mut out = format!(
        "job        {}\nstate      {}{}\ncreated    {}\ntemplate   {}\nrecipients {}\n",
        j.id,
        state_name(j.state),
        if j.send_window_open {
            ""
        } else {
            " (send window closed)"
        },
        j.created_at,
        j.template,
        j.recipients,
    );
    out.push_str(&format!(
        "settled    {}/{} ({:.1}%)\nrate       {:.1} sends/s\neta        {}\n",
        j.settled,
        j.rows,
        percent(j.settled, j.rows),
        j.sends_per_second,
        j.eta_seconds.map_or_else(|| "-".to_owned(), human_seconds),
    ));
    out.push_str("outcomes\n");
    for (outcome, n) in j.counts.iter().filter(|(_, n)| **n > 0) {
        out.push_str(&format!("  {outcome:<16} {n:>10}\n"));
    }
    if let Some(e) = &j.error {
        out.push_str(&format!("error      {e}\n"));
    }
    out
}

fn lines_list(lines: &[u64]) -> String {
    lines
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// What `corriere submit --dry-run` prints.
pub fn format_dry_run(r: &DryRunReport) -> String {
    let mut out = format!(
        "dry run: nothing was sent (job id would be {})\nrows             {:>10}\n",
        r.id, r.rows
    );
    for (outcome, n) in &r.counts {
        out.push_str(&format!("  {outcome:<15}{n:>10}\n"));
    }
    let c = &r.calls;
    out.push_str(&format!(
        "IO calls         {:>10}  (sends {}, polls {}, profile checks {}, feed days {})\n\
         estimated time   {:>10}\n",
        c.total,
        c.sends,
        c.polls,
        c.profile_checks,
        c.feed_days,
        human_seconds(r.estimated_seconds)
    ));
    if r.due_date_in_past.count > 0 {
        out.push_str(&format!(
            "warning: {} rows have a due date in the past (IO accepts them); first lines: {}\n",
            r.due_date_in_past.count,
            lines_list(&r.due_date_in_past.lines)
        ));
    }
    if !r.invalid.is_empty() {
        out.push_str(&format!(
            "invalid rows (first {} of {} listed)\n",
            r.invalid.len().min(DRY_RUN_INVALID_SHOWN),
            r.invalid.len()
        ));
        for row in r.invalid.iter().take(DRY_RUN_INVALID_SHOWN) {
            out.push_str(&format!(
                "  line {:<8} {:<16} {}\n",
                row.line, row.field, row.reason
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn view(state: JobState, settled: u64, rows: u64) -> JobView {
        JobView {
            id: "01JOB".into(),
            state,
            created_at: "2025-01-02T03:04:05Z".into(),
            template: "t.toml".into(),
            recipients: "r.csv".into(),
            rows,
            counts: BTreeMap::from([
                ("processed".to_owned(), settled),
                ("queued".to_owned(), rows - settled),
            ]),
            settled,
            sends_per_second: 12.5,
            eta_seconds: Some(75.0),
            send_window_open: true,
            error: None,
        }
    }

    #[test]
    fn unspecified_listen_address_means_this_host() {
        assert_eq!(
            base_url_for("0.0.0.0:9464".parse().unwrap()),
            "http://127.0.0.1:9464"
        );
        assert_eq!(
            base_url_for("[::]:9464".parse().unwrap()),
            "http://[::1]:9464"
        );
        assert_eq!(
            base_url_for("10.0.0.5:1".parse().unwrap()),
            "http://10.0.0.5:1"
        );
    }

    #[test]
    fn problem_detail_becomes_the_error() {
        let body =
            br#"{"type":"about:blank","title":"Not Found","status":404,"detail":"no job x"}"#;
        let e = api_error(StatusCode::NOT_FOUND, body);
        assert_eq!(e.to_string(), "no job x (HTTP 404)");
        assert_eq!(e.exit_code(), EX_API);
        let e = api_error(StatusCode::BAD_GATEWAY, b"");
        assert_eq!(e.to_string(), "Bad Gateway (HTTP 502)");
    }

    #[test]
    fn ids_are_single_path_segments() {
        assert!(path_segment("01HZX-a_b").is_ok());
        assert!(path_segment("../metrics").is_err());
        assert!(path_segment("").is_err());
    }

    #[test]
    fn cancelled_job_is_finished_once_everything_settled() {
        assert!(!finished(&view(JobState::Cancelled, 5, 10)));
        assert!(finished(&view(JobState::Cancelled, 10, 10)));
        assert!(finished(&view(JobState::Done, 10, 10)));
        assert!(!finished(&view(JobState::Running, 10, 10)));
    }

    #[test]
    fn job_view_shows_counts_rate_and_eta() {
        let text = format_job(&view(JobState::Running, 4, 10));
        assert!(text.contains("settled    4/10 (40.0%)"), "{text}");
        assert!(text.contains("12.5 sends/s"), "{text}");
        assert!(text.contains("eta        1m 15s"), "{text}");
        assert!(text.contains("processed"), "{text}");
        let table = format_jobs(&[view(JobState::Paused, 1, 4)]);
        assert!(table.starts_with("ID"), "{table}");
        assert!(
            table.contains("paused") && table.contains("1/4") && table.contains("25.0%"),
            "{table}"
        );
    }
}
