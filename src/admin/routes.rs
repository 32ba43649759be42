//! The admin API's handlers: each turns a request into one [`Backend`] call and its answer into
//! JSON, CSV or Prometheus text; every failure is a [`Problem`].

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::TryStreamExt;
use serde::Deserialize;

use super::problem::Problem;
use super::MAX_JSON_BYTES;
use crate::daemon::api::{Backend, Codes, Input, JobSpec, Submitted};
use crate::metrics::MetricsHandle;

/// What every handler shares.
pub(crate) struct AppState<B> {
    pub backend: Arc<B>,
    pub metrics: MetricsHandle,
}

impl<B> Clone for AppState<B> {
    fn clone(&self) -> Self {
        AppState {
            backend: self.backend.clone(),
            metrics: self.metrics.clone(),
        }
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
    let SubmitQuery {
        dry_run,
        allow_repeat,
        encoding,
    } = query(request.uri())?;
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let spec = if content_type.starts_with("multipart/form-data") {
        spec_from_multipart(request, st.backend.staging_dir()).await?
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
) -> Result<JobSpec, Problem> {
    // Staged files not handed to the backend (a later part was bad) are removed on return.
    let mut staged = StagedFiles(Vec::new());
    let mut multipart = Multipart::from_request(request, &())
        .await
        .map_err(|e| Problem::new(e.status(), format!("multipart body: {}", e.body_text())))?;
    let mut template = None;
    let mut recipients = None;
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| Problem::new(e.status(), format!("multipart body: {}", e.body_text())))?
    {
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
        let part_error = |e: axum::extract::multipart::MultipartError| {
            Problem::new(
                e.status(),
                format!("multipart part `{part}`: {}", e.body_text()),
            )
        };
        match &staging {
            // Streamed to disk: the daemon's memory does not grow with the CSV.
            Some(dir) => {
                let mut field = field;
                tokio::fs::create_dir_all(dir)
                    .await
                    .map_err(|e| Problem::internal(format!("staging directory: {e}")))?;
                let path = dir.join(format!("{}.upload", ulid::Ulid::new()));
                staged.0.push(path.clone());
                let mut file = tokio::fs::File::create(&path)
                    .await
                    .map_err(|e| Problem::internal(format!("staging the upload: {e}")))?;
                while let Some(chunk) = field.chunk().await.map_err(part_error)? {
                    tokio::io::AsyncWriteExt::write_all(&mut file, &chunk)
                        .await
                        .map_err(|e| Problem::internal(format!("staging the upload: {e}")))?;
                }
                tokio::io::AsyncWriteExt::flush(&mut file)
                    .await
                    .map_err(|e| Problem::internal(format!("staging the upload: {e}")))?;
                *slot = Some(Input::Staged { name, path });
            }
            None => {
                let bytes = field.bytes().await.map_err(part_error)?;
                *slot = Some(Input::Bytes { name, bytes });
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

/// `GET /jobs/{id}/report[?codes=clear]`: the per-recipient CSV, streamed as the store is read.
pub(crate) async fn report<B: Backend>(
    State(st): State<AppState<B>>,
    Path(id): Path<String>,
    uri: Uri,
) -> Result<Response, Problem> {
    let ReportQuery { codes } = query(&uri)?;
    let stream = st.backend.report(&id, codes).await?;
    let job = id.clone();
    // An error after the first bytes cannot become a status any more: the body is cut short
    // (the client sees an incomplete chunked body) and the cause is logged.
    let body = Body::from_stream(stream.map_err(move |e| {
        tracing::warn!(job = %job, error = %e, "Report stream failed; body cut short.");
        std::io::Error::other(e.to_string())
    }));
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CSV));
    let safe_id: String = id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        .collect();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"corriere-{safe_id}-report.csv\""
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
