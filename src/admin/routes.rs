//! The admin API's handlers: each turns a request into one [`Backend`] call and its answer into
//! JSON, CSV or Prometheus text; every failure is a [`Problem`].

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::TryStreamExt;
use serde::Deserialize;
use std::sync::atomic::{AtomicU64, Ordering};

use super::problem::Problem;
use super::{MAX_JSON_BYTES, MAX_PART_HEADER_BYTES};
use crate::daemon::api::{Backend, Codes, Input, JobSpec, Submitted};
use crate::metrics::MetricsHandle;

/// What every handler shares.
pub(crate) struct AppState<B> {
    pub backend: Arc<B>,
    pub metrics: MetricsHandle,
    /// Largest submit body, bytes.
    pub upload_limit: u64,
    /// Bytes being staged on disk by submits in progress.
    pub staging: Arc<StagingQuota>,
}

impl<B> Clone for AppState<B> {
    fn clone(&self) -> Self {
        AppState {
            backend: self.backend.clone(),
            metrics: self.metrics.clone(),
            upload_limit: self.upload_limit,
            staging: self.staging.clone(),
        }
    }
}

/// The bytes of uploads being staged at once, across submits (`admin.staging_quota_mib`): a
/// few concurrent uploads cannot fill the store's disk.
pub(crate) struct StagingQuota {
    limit: u64,
    used: AtomicU64,
}

impl StagingQuota {
    pub(crate) fn new(limit: u64) -> StagingQuota {
        StagingQuota {
            limit,
            used: AtomicU64::new(0),
        }
    }

    /// Takes `n` bytes of the quota, or none when they do not fit.
    fn try_take(&self, n: u64) -> bool {
        self.used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                used.checked_add(n).filter(|&u| u <= self.limit)
            })
            .is_ok()
    }

    fn give_back(&self, n: u64) {
        self.used.fetch_sub(n, Ordering::SeqCst);
    }
}

/// A submit's share of the staging quota, given back when the submit ends (the backend has
/// moved or removed the staged files by then).
struct QuotaHold {
    quota: Arc<StagingQuota>,
    bytes: u64,
}

impl QuotaHold {
    fn take(&mut self, n: u64) -> Result<(), Problem> {
        if self.quota.try_take(n) {
            self.bytes += n;
            Ok(())
        } else {
            Err(Problem::new(
                StatusCode::INSUFFICIENT_STORAGE,
                format!(
                    "uploads being staged would exceed admin.staging_quota_mib ({} MiB); try \
                     again when the submits in progress are done",
                    self.quota.limit / (1024 * 1024)
                ),
            ))
        }
    }
}

impl Drop for QuotaHold {
    fn drop(&mut self) {
        self.quota.give_back(self.bytes);
    }
}

/// Media type of `/metrics` (Prometheus text exposition format 0.0.4).
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Media type of reports.
pub const CSV: &str = "text/csv; charset=utf-8";

/// The two multipart parts of a submit.
const PART_TEMPLATE: &str = "template";
const PART_RECIPIENTS: &str = "recipients";

/// `POST /jobs` query.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitQuery {
    #[serde(default)]
    dry_run: bool,
    /// Send even to citizens who already have a message of the campaign.
    #[serde(default)]
    allow_repeat: bool,
    /// How the CSV is decoded (over the template's `encoding`).
    #[serde(default)]
    encoding: Option<String>,
    /// The sheet of a workbook to read (over the template's `sheet`).
    #[serde(default)]
    sheet: Option<String>,
}

/// `POST /jobs` JSON body: files the daemon reads itself.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PathSubmit {
    template_path: std::path::PathBuf,
    recipients_path: std::path::PathBuf,
}

/// `GET /jobs/{id}/report` query.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportQuery {
    #[serde(default)]
    codes: Codes,
    /// `csv` (default) or `xlsx`.
    #[serde(default)]
    format: ReportFormat,
}

/// The file a report comes as.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ReportFormat {
    #[default]
    Csv,
    Xlsx,
}

fn query<T: serde::de::DeserializeOwned>(uri: &Uri) -> Result<T, Problem> {
    Query::<T>::try_from_uri(uri)
        .map(|Query(q)| q)
        .map_err(|e| Problem::bad_request(format!("query string: {}", e.body_text())))
}

/// `GET /healthz`: the process answers (liveness).
pub(crate) async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// `GET /readyz`: 200 when the store is open and the subscriber set loaded, 503 otherwise.
pub(crate) async fn readyz<B: Backend>(State(st): State<AppState<B>>) -> Response {
    let readiness = st.backend.readiness().await;
    let status = if readiness.ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(readiness)).into_response()
}

/// `GET /metrics`: Prometheus text.
pub(crate) async fn metrics<B: Backend>(State(st): State<AppState<B>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(PROMETHEUS_TEXT),
        )],
        st.metrics.render(),
    )
        .into_response()
}

/// `POST /jobs[?dry_run=true]`: multipart (`template`, `recipients` files) or JSON
/// (`template_path`, `recipients_path`).
pub(crate) async fn submit<B: Backend>(
    State(st): State<AppState<B>>,
    request: Request,
) -> Result<Response, Problem> {
    // Held until the backend has taken the staged files over.
    let mut hold = QuotaHold {
        quota: st.staging.clone(),
        bytes: 0,
    };
    let SubmitQuery {
        dry_run,
        allow_repeat,
        encoding,
        sheet,
    } = query(request.uri())?;
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let spec = if content_type.starts_with("multipart/form-data") {
        spec_from_multipart(
            request,
            st.backend.staging_dir(),
            st.upload_limit,
            &mut hold,
        )
        .await?
    } else if content_type.starts_with("application/json") {
        spec_from_json(request).await?
    } else {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "content type {:?}: send multipart/form-data with the files as parts \
                 `{PART_TEMPLATE}` and `{PART_RECIPIENTS}`, or application/json \
                 {{\"template_path\": …, \"recipients_path\": …}}",
                if content_type.is_empty() {
                    "(none)"
                } else {
                    &content_type
                }
            ),
        ));
    };
    let mut spec = spec;
    spec.options = crate::daemon::api::SubmitOptions {
        allow_repeat,
        encoding,
        sheet,
    };
    let submitted = st.backend.submit(spec, dry_run).await?;
    Ok(match &submitted {
        Submitted::Job { id, existing } => {
            let status = if *existing {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            let mut response = (status, Json(&submitted)).into_response();
            if let Ok(location) = HeaderValue::from_str(&format!("/jobs/{id}")) {
                response.headers_mut().insert(header::LOCATION, location);
            }
            response
        }
        Submitted::DryRun(_) => (StatusCode::OK, Json(&submitted)).into_response(),
    })
}

async fn spec_from_multipart(
    request: Request,
    staging: Option<std::path::PathBuf>,
    upload_limit: u64,
    hold: &mut QuotaHold,
) -> Result<JobSpec, Problem> {
    let too_large = || {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "a submit is at most {} MiB (admin.upload_limit_mib)",
                upload_limit / (1024 * 1024)
            ),
        )
    };
    let boundary = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| multer::parse_boundary(ct).ok())
        .ok_or_else(|| Problem::bad_request("multipart body: the content type has no boundary"))?;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > upload_limit) {
        return Err(too_large());
    }
    // Staged files not handed to the backend (a later part was bad) are removed on return.
    let mut staged = StagedFiles(Vec::new());
    let meter = Arc::new(Meter::default());
    let body = Metered::new(
        request.into_body().into_data_stream(),
        meter.clone(),
        upload_limit,
    );
    let mut multipart = multer::Multipart::new(body, boundary);
    let fault = |e: multer::Error| match meter.tripped() {
        Some(Tripped::TooLarge) => too_large(),
        Some(Tripped::Framing) => Problem::bad_request(format!(
            "multipart body: a part header (or the preamble) is longer than \
             {MAX_PART_HEADER_BYTES} bytes"
        )),
        None => Problem::bad_request(format!("multipart body: {e}")),
    };
    let mut template = None;
    let mut recipients = None;
    while let Some(mut field) = multipart.next_field().await.map_err(fault)? {
        meter.field_started();
        let part = field.name().unwrap_or("").to_owned();
        let slot = match part.as_str() {
            PART_TEMPLATE => &mut template,
            PART_RECIPIENTS => &mut recipients,
            other => {
                return Err(Problem::bad_request(format!(
                    "unexpected multipart part {other:?}: expected `{PART_TEMPLATE}` and \
                     `{PART_RECIPIENTS}`"
                )))
            }
        };
        if slot.is_some() {
            return Err(Problem::bad_request(format!(
                "multipart part `{part}` is given twice"
            )));
        }
        let name = field
            .file_name()
            .map(sanitize_file_name)
            .unwrap_or_else(|| part.clone());
        match &staging {
            // Streamed to disk: the daemon's memory does not grow with the CSV.
            Some(dir) => {
                crate::daemon::inputs::create_private_dir(dir)
                    .map_err(|e| Problem::internal(format!("staging directory: {e}")))?;
                let path = dir.join(format!("{}.upload", ulid::Ulid::new()));
                staged.0.push(path.clone());
                let file = crate::daemon::inputs::create_private_file(&path)
                    .map_err(|e| Problem::internal(format!("staging the upload: {e}")))?;
                let mut out = tokio::io::BufWriter::with_capacity(
                    STAGING_WRITE_BUFFER,
                    tokio::fs::File::from_std(file),
                );
                while let Some(chunk) = field.chunk().await.map_err(fault)? {
                    meter.data_out(chunk.len());
                    hold.take(chunk.len() as u64)?;
                    tokio::io::AsyncWriteExt::write_all(&mut out, &chunk)
                        .await
                        .map_err(|e| Problem::internal(format!("staging the upload: {e}")))?;
                }
                tokio::io::AsyncWriteExt::flush(&mut out)
                    .await
                    .map_err(|e| Problem::internal(format!("staging the upload: {e}")))?;
                *slot = Some(Input::Staged { name, path });
            }
            None => {
                let mut bytes = bytes::BytesMut::new();
                while let Some(chunk) = field.chunk().await.map_err(fault)? {
                    meter.data_out(chunk.len());
                    bytes.extend_from_slice(&chunk);
                }
                *slot = Some(Input::Bytes {
                    name,
                    bytes: bytes.freeze(),
                });
            }
        }
    }
    match (template, recipients) {
        (Some(template), Some(recipients)) => {
            // The backend owns them now.
            staged.0.clear();
            Ok(JobSpec {
                template,
                recipients,
                options: Default::default(),
            })
        }
        (t, _) => {
            let missing = if t.is_none() {
                PART_TEMPLATE
            } else {
                PART_RECIPIENTS
            };
            Err(Problem::bad_request(format!(
                "multipart part `{missing}` is missing: a submit needs `{PART_TEMPLATE}` (the \
                 TOML template) and `{PART_RECIPIENTS}` (the CSV)"
            )))
        }
    }
}

/// Write buffer of a staged upload (the body arrives in pieces of [`PIECE`] bytes).
const STAGING_WRITE_BUFFER: usize = 1 << 20;
/// The multipart parser is fed at most this much at a time.
const PIECE: usize = 16 * 1024;
/// Framing bytes a part may bring besides its header (boundary lines, padding).
const FRAMING_SLACK: u64 = 512;

/// Which limit a multipart body ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tripped {
    TooLarge,
    Framing,
}

/// What went into the multipart parser and what came out as part data. The parser (multer)
/// buffers everything it is fed until it finds a part's end of header, without a limit of its
/// own: fed minus data out is what it holds, and that is bounded here.
#[derive(Default)]
struct Meter {
    fed: AtomicU64,
    data: AtomicU64,
    fields: AtomicU64,
    tripped: std::sync::atomic::AtomicU8,
}

impl Meter {
    fn field_started(&self) {
        self.fields.fetch_add(1, Ordering::SeqCst);
    }
    fn data_out(&self, n: usize) {
        self.data.fetch_add(n as u64, Ordering::SeqCst);
    }
    fn tripped(&self) -> Option<Tripped> {
        match self.tripped.load(Ordering::SeqCst) {
            1 => Some(Tripped::TooLarge),
            2 => Some(Tripped::Framing),
            _ => None,
        }
    }
    fn trip(&self, t: Tripped) -> MeterError {
        self.tripped.store(
            match t {
                Tripped::TooLarge => 1,
                Tripped::Framing => 2,
            },
            Ordering::SeqCst,
        );
        MeterError(t)
    }
    /// Bytes the parser may hold that are not part data: every part's header and the one
    /// coming, plus the piece in hand.
    fn framing_allowed(&self) -> u64 {
        (self.fields.load(Ordering::SeqCst) + 1) * (MAX_PART_HEADER_BYTES + FRAMING_SLACK)
            + PIECE as u64
    }
}

#[derive(Debug, thiserror::Error)]
#[error("multipart body refused: {0:?}")]
struct MeterError(Tripped);

/// The request body cut into pieces of at most [`PIECE`] bytes, one per poll of the parser
/// (it drains its stream until `Pending`, so each piece is followed by a yield): the parser's
/// buffer grows by one piece at a time and the limits are checked before each.
struct Metered<S> {
    inner: S,
    rest: Option<bytes::Bytes>,
    meter: Arc<Meter>,
    limit: u64,
    yield_next: bool,
}

impl<S> Metered<S> {
    fn new(inner: S, meter: Arc<Meter>, limit: u64) -> Self {
        Metered {
            inner,
            rest: None,
            meter,
            limit,
            yield_next: false,
        }
    }
}

impl<S> futures::Stream for Metered<S>
where
    S: futures::Stream<Item = Result<bytes::Bytes, axum::Error>> + Unpin,
{
    type Item = Result<bytes::Bytes, Box<dyn std::error::Error + Send + Sync>>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        if self.meter.tripped().is_some() {
            return Poll::Ready(None);
        }
        if self.yield_next {
            self.yield_next = false;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let mut piece = match self.rest.take() {
            Some(p) => p,
            None => match futures::ready!(std::pin::Pin::new(&mut self.inner).poll_next(cx)) {
                None => return Poll::Ready(None),
                Some(Err(e)) => return Poll::Ready(Some(Err(Box::new(e)))),
                Some(Ok(b)) => b,
            },
        };
        if piece.len() > PIECE {
            self.rest = Some(piece.split_off(PIECE));
        }
        let fed = self
            .meter
            .fed
            .fetch_add(piece.len() as u64, Ordering::SeqCst)
            + piece.len() as u64;
        if fed > self.limit {
            return Poll::Ready(Some(Err(Box::new(self.meter.trip(Tripped::TooLarge)))));
        }
        let held = fed.saturating_sub(self.meter.data.load(Ordering::SeqCst));
        if held > self.meter.framing_allowed() {
            return Poll::Ready(Some(Err(Box::new(self.meter.trip(Tripped::Framing)))));
        }
        self.yield_next = true;
        Poll::Ready(Some(Ok(piece)))
    }
}

/// Removes staged upload files when dropped (a submit that failed half-way).
struct StagedFiles(Vec<std::path::PathBuf>);

impl Drop for StagedFiles {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The last path component of an uploaded file name, without control characters (it ends up in
/// the job's metadata and in messages).
fn sanitize_file_name(raw: &str) -> String {
    let base = raw.rsplit(['/', '\\']).next().unwrap_or(raw);
    base.chars().filter(|c| !c.is_control()).take(255).collect()
}

async fn spec_from_json(request: Request) -> Result<JobSpec, Problem> {
    let body = axum::body::to_bytes(request.into_body(), MAX_JSON_BYTES)
        .await
        .map_err(|_| {
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("a JSON submit body is at most {MAX_JSON_BYTES} bytes"),
            )
        })?;
    let paths: PathSubmit = serde_json::from_slice(&body).map_err(|e| {
        Problem::bad_request(format!(
            "JSON body: {e} (expected {{\"template_path\": \"/abs/template.toml\", \
             \"recipients_path\": \"/abs/recipients.csv\"}})"
        ))
    })?;
    for (key, path) in [
        ("template_path", &paths.template_path),
        ("recipients_path", &paths.recipients_path),
    ] {
        if !path.is_absolute() {
            return Err(Problem::bad_request(format!(
                "{key} {:?} must be an absolute path: the daemon's working directory is not \
                 the client's",
                path.display().to_string()
            )));
        }
    }
    Ok(JobSpec {
        template: Input::Path(paths.template_path),
        recipients: Input::Path(paths.recipients_path),
        options: Default::default(),
    })
}

/// `GET /jobs`
pub(crate) async fn list<B: Backend>(State(st): State<AppState<B>>) -> Result<Response, Problem> {
    Ok(Json(st.backend.list().await?).into_response())
}

/// `GET /jobs/{id}`
pub(crate) async fn get<B: Backend>(
    State(st): State<AppState<B>>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    Ok(Json(st.backend.get(&id).await?).into_response())
}

/// `POST /jobs/{id}/pause`
pub(crate) async fn pause<B: Backend>(
    State(st): State<AppState<B>>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    Ok(Json(st.backend.pause(&id).await?).into_response())
}

/// `POST /jobs/{id}/resume`
pub(crate) async fn resume<B: Backend>(
    State(st): State<AppState<B>>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    Ok(Json(st.backend.resume(&id).await?).into_response())
}

/// `POST /jobs/{id}/cancel`
pub(crate) async fn cancel<B: Backend>(
    State(st): State<AppState<B>>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    Ok(Json(st.backend.cancel(&id).await?).into_response())
}

/// `GET /jobs/{id}/report[?codes=clear][&format=xlsx]`: the per-recipient CSV (or workbook),
/// streamed as the store is read.
pub(crate) async fn report<B: Backend>(
    State(st): State<AppState<B>>,
    Path(id): Path<String>,
    connect: Option<axum::Extension<ConnectInfo<std::net::SocketAddr>>>,
    uri: Uri,
) -> Result<Response, Problem> {
    let ReportQuery { codes, format } = query(&uri)?;
    let stream = match format {
        ReportFormat::Csv => st.backend.report(&id, codes).await?,
        ReportFormat::Xlsx => st.backend.report_xlsx(&id, codes).await?,
    };
    if codes == Codes::Clear {
        let client = connect.map_or_else(
            || "unknown".to_owned(),
            |axum::Extension(ConnectInfo(addr))| addr.to_string(),
        );
        super::audit_clear_export(&id, &client);
    }
    let job = id.clone();
    // An error after the first bytes cannot become a status any more: the body is cut short
    // (the client sees an incomplete chunked body) and the cause is logged.
    let body = Body::from_stream(stream.map_err(move |e| {
        tracing::warn!(job = %job, error = %e, "Report stream failed; body cut short.");
        std::io::Error::other(e.to_string())
    }));
    let mut headers = HeaderMap::new();
    let (media_type, ext) = match format {
        ReportFormat::Csv => (CSV, "csv"),
        ReportFormat::Xlsx => (crate::dispatch::report_xlsx::XLSX_MEDIA_TYPE, "xlsx"),
    };
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(media_type));
    let safe_id: String = id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        .collect();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"corriere-{safe_id}-report.{ext}\""
    )) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok((headers, body).into_response())
}

/// Unknown paths.
pub(crate) async fn not_found(uri: Uri) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        format!("no route {}: see the route table in README.md", uri.path()),
    )
}

/// Known paths, wrong method.
pub(crate) async fn method_not_allowed(request: Request) -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploaded_names_lose_their_directories_and_controls() {
        assert_eq!(sanitize_file_name("../../etc/passwd"), "passwd");
        assert_eq!(sanitize_file_name("C:\\x\\list.csv"), "list.csv");
        assert_eq!(sanitize_file_name("a\nb.csv"), "ab.csv");
    }
}
