//! The admin HTTP API and its CLI client against an in-test [`Backend`] (a map of jobs behind a
//! mutex), served by `corriere::admin::serve` on 127.0.0.1:0: auth, submit (multipart, paths,
//! dry run), malformed requests as problem+json, the streamed report, readiness, `/metrics` as
//! Prometheus text, and `corriere submit|jobs|job|pause|resume|cancel` as the real binary.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use corriere::admin::{check_bind, serve, AdminError};
use corriere::config::Secret;
use corriere::daemon::api::{
    Backend, BackendError, CallEstimate, Codes, DryRunReport, Input, InvalidRow, JobSpec, JobState,
    JobView, Readiness, Submitted,
};
use futures::stream::{self, BoxStream, StreamExt};
use reqwest::header::{CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE};
use reqwest::StatusCode;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "test-admin-token-0123456789";
const TEMPLATE: &str = "subject = \"Avviso TARI 2026 per {name}\"\nmarkdown = \"...\"\n";
const CSV: &str = "fiscal_code,name\nRSSMRA80A01H501U,Mario\nVRDLGU85B02F205X,Luigi\n";

// ── The mock daemon ─────────────────────────────────────────────────────────────────────────

/// What a submit received (for asserting the API passed the inputs through).
#[derive(Debug, Clone)]
struct Received {
    template: String,
    recipients: String,
    recipients_name: String,
    by_path: bool,
    dry_run: bool,
}

#[derive(Default)]
struct Mock {
    jobs: Mutex<HashMap<String, JobView>>,
    received: Mutex<Vec<Received>>,
    feed_loaded: AtomicBool,
    /// Views `get` answers one after another for a job (the last one sticks): a job moving on.
    script: Mutex<HashMap<String, std::collections::VecDeque<JobView>>>,
}

impl Mock {
    fn insert(&self, view: JobView) {
        self.jobs.lock().unwrap().insert(view.id.clone(), view);
    }
    fn job_count(&self) -> usize {
        self.jobs.lock().unwrap().len()
    }
}

fn view(id: &str, state: JobState, rows: u64, settled: u64) -> JobView {
    JobView {
        id: id.to_owned(),
        state,
        created_at: "2026-03-01T09:00:00Z".to_owned(),
        template: "tari.toml".to_owned(),
        recipients: "tari.csv".to_owned(),
        rows,
        counts: BTreeMap::from([
            ("processed".to_owned(), settled),
            ("queued".to_owned(), rows - settled),
        ]),
        settled,
        sends_per_second: 42.5,
        eta_seconds: Some(3725.0),
        send_window_open: true,
        error: None,
    }
}

async fn read_input(input: &Input) -> Result<(String, String, bool), BackendError> {
    match input {
        Input::Bytes { name, bytes } => Ok((
            name.clone(),
            String::from_utf8(bytes.to_vec())
                .map_err(|_| BackendError::BadRequest(format!("{name}: not UTF-8")))?,
            false,
        )),
        Input::Staged { name, path } => Ok((
            name.clone(),
            tokio::fs::read_to_string(path)
                .await
                .map_err(|e| BackendError::BadRequest(format!("{name}: {e}")))?,
            false,
        )),
        Input::Path(p) => {
            let text = tokio::fs::read_to_string(p)
                .await
                .map_err(|e| BackendError::BadRequest(format!("{}: {e}", p.display())))?;
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            Ok((name, text, true))
        }
    }
}

impl Backend for Mock {
    async fn submit(&self, spec: JobSpec, dry_run: bool) -> Result<Submitted, BackendError> {
        let (_, template, by_path) = read_input(&spec.template).await?;
        let (recipients_name, recipients, _) = read_input(&spec.recipients).await?;
        if !recipients.starts_with("fiscal_code") {
            return Err(BackendError::BadRequest(format!(
                "{recipients_name}: line 1: no fiscal_code column"
            )));
        }
        self.received.lock().unwrap().push(Received {
            template: template.clone(),
            recipients: recipients.clone(),
            recipients_name: recipients_name.clone(),
            by_path,
            dry_run,
        });
        let rows = recipients.lines().count() as u64 - 1;
        // The same inputs give the same job, like the daemon's content-derived ids.
        let id = format!(
            "job-{:08x}",
            (template.len() * 31 + recipients.len()) as u32
        );
        if dry_run {
            return Ok(Submitted::DryRun(DryRunReport {
                id,
                rows,
                counts: BTreeMap::from([("send".to_owned(), rows - 1), ("invalid".to_owned(), 1)]),
                invalid: vec![InvalidRow {
                    line: 3,
                    field: "fiscal_code".to_owned(),
                    reason: "check character does not match".to_owned(),
                }],
                due_date_in_past: Default::default(),
                sheet: None,
                merged_cells: 0,
                calls: CallEstimate {
                    sends: rows - 1,
                    polls: rows - 1,
                    profile_checks: 0,
                    feed_days: 0,
                    total: 2 * (rows - 1),
                },
                estimated_seconds: 90.0,
            }));
        }
        let mut jobs = self.jobs.lock().unwrap();
        let existing = jobs.contains_key(&id);
        jobs.entry(id.clone()).or_insert_with(|| {
            let mut v = view(&id, JobState::Ingesting, rows, 0);
            v.recipients = recipients_name;
            v
        });
        Ok(Submitted::Job { id, existing })
    }

    async fn list(&self) -> Result<Vec<JobView>, BackendError> {
        let mut all: Vec<JobView> = self.jobs.lock().unwrap().values().cloned().collect();
        all.sort_by(|a, b| b.id.cmp(&a.id));
        Ok(all)
    }

    async fn get(&self, id: &str) -> Result<JobView, BackendError> {
        if let Some(views) = self.script.lock().unwrap().get_mut(id) {
            let next = if views.len() > 1 {
                views.pop_front()
            } else {
                views.front().cloned()
            };
            return next.ok_or_else(|| BackendError::NotFound(id.to_owned()));
        }
        self.jobs
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .ok_or_else(|| BackendError::NotFound(id.to_owned()))
    }

    async fn pause(&self, id: &str) -> Result<JobView, BackendError> {
        self.set_state(id, JobState::Paused)
    }

    async fn resume(&self, id: &str) -> Result<JobView, BackendError> {
        self.set_state(id, JobState::Running)
    }

    async fn cancel(&self, id: &str) -> Result<JobView, BackendError> {
        self.set_state(id, JobState::Cancelled)
    }

    async fn report(
        &self,
        id: &str,
        codes: Codes,
    ) -> Result<BoxStream<'static, Result<bytes::Bytes, BackendError>>, BackendError> {
        self.get(id).await?;
        let code = match codes {
            Codes::Masked => "RSSMRA*******01U",
            Codes::Clear => "RSSMRA80A01H501U",
        };
        let chunks = vec![
            Ok(bytes::Bytes::from_static(b"line,fiscal_code,outcome\n")),
            Ok(bytes::Bytes::from(format!("2,{code},processed\n"))),
            Ok(bytes::Bytes::from_static(b"3,VRDLGU*******05X,rejected\n")),
        ];
        Ok(stream::iter(chunks).boxed())
    }

    async fn readiness(&self) -> Readiness {
        let set = self.feed_loaded.load(Ordering::SeqCst);
        Readiness {
            store: true,
            subscriber_set: set,
            detail: (!set).then(|| "subscriber set not synced yet".to_owned()),
        }
    }
}

impl Mock {
    fn set_state(&self, id: &str, to: JobState) -> Result<JobView, BackendError> {
        let mut jobs = self.jobs.lock().unwrap();
        let job = jobs
            .get_mut(id)
            .ok_or_else(|| BackendError::NotFound(id.to_owned()))?;
        if matches!(job.state, JobState::Cancelled | JobState::Done) {
            return Err(BackendError::Conflict(format!(
                "job {id} is {:?}: it cannot change any more",
                job.state
            )));
        }
        job.state = to;
        Ok(job.clone())
    }
}

// ── Harness ─────────────────────────────────────────────────────────────────────────────────

struct Server {
    addr: SocketAddr,
    mock: Arc<Mock>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), AdminError>>,
}

impl Server {
    async fn start(token: Option<&str>) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mock = Arc::new(Mock::default());
        let shutdown = CancellationToken::new();
        let metrics = corriere::metrics::install().expect("the recorder installs");
        let task = tokio::spawn(serve(
            listener,
            mock.clone(),
            token.map(Secret::new),
            metrics,
            corriere::admin::ServerLimits::default(),
            shutdown.clone(),
        ));
        Server {
            addr,
            mock,
            shutdown,
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().expect("serve ends cleanly");
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

fn authed(req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    req.bearer_auth(TOKEN)
}

/// Asserts `res` is a problem+json answer with `status`, and returns its detail.
async fn problem(res: reqwest::Response, status: StatusCode) -> String {
    assert_eq!(res.status(), status);
    assert_eq!(
        res.headers()[CONTENT_TYPE].to_str().unwrap(),
        "application/problem+json"
    );
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], status.as_u16());
    assert_eq!(body["type"], "about:blank");
    assert_eq!(body["title"], status.canonical_reason().unwrap());
    body["detail"]
        .as_str()
        .expect("detail is a string")
        .to_owned()
}

fn multipart(template: Option<&str>, recipients: Option<&str>) -> reqwest::multipart::Form {
    let mut form = reqwest::multipart::Form::new();
    if let Some(t) = template {
        form = form.part(
            "template",
            reqwest::multipart::Part::text(t.to_owned()).file_name("tari.toml"),
        );
    }
    if let Some(r) = recipients {
        form = form.part(
            "recipients",
            reqwest::multipart::Part::text(r.to_owned()).file_name("tari.csv"),
        );
    }
    form
}

// ── HTTP API ────────────────────────────────────────────────────────────────────────────────

#[tokio::test]
async fn healthz_is_open_and_every_other_route_needs_the_token() {
    let s = Server::start(Some(TOKEN)).await;
    let c = http();
    let res = c.get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    for path in ["/jobs", "/jobs/x", "/readyz", "/metrics", "/nowhere"] {
        let res = c.get(s.url(path)).send().await.unwrap();
        assert_eq!(
            res.headers()[WWW_AUTHENTICATE].to_str().unwrap(),
            "Bearer realm=\"corriere\"",
            "{path}"
        );
        let detail = problem(res, StatusCode::UNAUTHORIZED).await;
        assert!(detail.contains("missing bearer token"), "{detail}");

        let res = c
            .get(s.url(path))
            .bearer_auth("not-the-token")
            .send()
            .await
            .unwrap();
        assert!(res.headers()[WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .contains("invalid_token"));
        let detail = problem(res, StatusCode::UNAUTHORIZED).await;
        assert!(!detail.contains(TOKEN), "the token never shows: {detail}");
    }
    let res = c
        .post(s.url("/jobs"))
        .header("authorization", format!("Basic {TOKEN}"))
        .send()
        .await
        .unwrap();
    problem(res, StatusCode::UNAUTHORIZED).await;

    let res = authed(c.get(s.url("/jobs"))).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = authed(c.get(s.url("/nowhere"))).send().await.unwrap();
    problem(res, StatusCode::NOT_FOUND).await;
    let res = authed(c.delete(s.url("/jobs"))).send().await.unwrap();
    problem(res, StatusCode::METHOD_NOT_ALLOWED).await;
    s.stop().await;
}

#[tokio::test]
async fn multipart_submit_creates_a_job_once_then_finds_it() {
    let s = Server::start(Some(TOKEN)).await;
    let c = http();
    let res = authed(c.post(s.url("/jobs")))
        .multipart(multipart(Some(TEMPLATE), Some(CSV)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let location = res.headers()[LOCATION].to_str().unwrap().to_owned();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["kind"], "job");
    assert_eq!(body["existing"], false);
    let id = body["id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/jobs/{id}"));

    let got = s.mock.received.lock().unwrap()[0].clone();
    assert_eq!(got.template, TEMPLATE);
    assert_eq!(got.recipients, CSV);
    assert_eq!(got.recipients_name, "tari.csv");
    assert!(!got.by_path && !got.dry_run);

    // The same inputs again: the same job, 200.
    let res = authed(c.post(s.url("/jobs")))
        .multipart(multipart(Some(TEMPLATE), Some(CSV)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["existing"], true);
    assert_eq!(s.mock.job_count(), 1);

    let job: JobView = authed(c.get(s.url(&location)))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(job.id, id);
    assert_eq!(job.rows, 2);
    let all: Vec<JobView> = authed(c.get(s.url("/jobs")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
    s.stop().await;
}

#[tokio::test]
async fn path_submit_hands_absolute_paths_to_the_daemon() {
    let s = Server::start(Some(TOKEN)).await;
    let dir = tempfile::tempdir().unwrap();
    let (t, r) = (dir.path().join("t.toml"), dir.path().join("r.csv"));
    std::fs::write(&t, TEMPLATE).unwrap();
    std::fs::write(&r, CSV).unwrap();
    let c = http();
    let res = authed(c.post(s.url("/jobs")))
        .json(&serde_json::json!({ "template_path": t, "recipients_path": r }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let got = s.mock.received.lock().unwrap()[0].clone();
    assert!(got.by_path);
    assert_eq!(got.recipients, CSV);
    assert_eq!(got.recipients_name, "r.csv");

    let res = authed(c.post(s.url("/jobs")))
        .json(&serde_json::json!({ "template_path": "t.toml", "recipients_path": r }))
        .send()
        .await
        .unwrap();
    let detail = problem(res, StatusCode::BAD_REQUEST).await;
    assert!(
        detail.contains("template_path") && detail.contains("absolute"),
        "{detail}"
    );
    s.stop().await;
}

#[tokio::test]
async fn dry_run_reports_and_creates_nothing() {
    let s = Server::start(Some(TOKEN)).await;
    let res = authed(http().post(s.url("/jobs?dry_run=true")))
        .multipart(multipart(Some(TEMPLATE), Some(CSV)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers().get(LOCATION).is_none());
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["kind"], "dry_run");
    assert_eq!(body["rows"], 2);
    assert_eq!(body["calls"]["total"], 2);
    assert!(s.mock.received.lock().unwrap()[0].dry_run);
    assert_eq!(s.mock.job_count(), 0);
    s.stop().await;
}

#[tokio::test]
async fn malformed_requests_get_a_problem_that_names_the_fault_and_create_nothing() {
    let s = Server::start(Some(TOKEN)).await;
    let c = http();
    let post = || authed(c.post(s.url("/jobs")));

    let detail = problem(
        post()
            .multipart(multipart(Some(TEMPLATE), None))
            .send()
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(
        detail.contains("`recipients` is missing"),
        "missing part: {detail}"
    );

    let detail = problem(
        post()
            .multipart(multipart(None, Some(CSV)))
            .send()
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(detail.contains("`template` is missing"), "{detail}");

    let form = multipart(Some(TEMPLATE), Some(CSV)).text("extra", "x");
    let detail = problem(
        post().multipart(form).send().await.unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(detail.contains("\"extra\""), "{detail}");

    let detail = problem(
        post()
            .header(CONTENT_TYPE, "application/json")
            .body("{\"template_path\": ")
            .send()
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(detail.starts_with("JSON body"), "bad JSON: {detail}");

    let detail = problem(
        post()
            .json(&serde_json::json!({ "template_path": "/t.toml" }))
            .send()
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(
        detail.contains("recipients_path"),
        "missing field: {detail}"
    );

    let detail = problem(
        post()
            .header(CONTENT_TYPE, "text/plain")
            .body("hello")
            .send()
            .await
            .unwrap(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
    )
    .await;
    assert!(detail.contains("multipart/form-data"), "{detail}");

    let detail = problem(
        authed(c.post(s.url("/jobs?dry_run=maybe")))
            .multipart(multipart(Some(TEMPLATE), Some(CSV)))
            .send()
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(detail.contains("dry_run"), "{detail}");

    // The daemon's own validation (a CSV without its column) comes back as its detail.
    let detail = problem(
        post()
            .multipart(multipart(Some(TEMPLATE), Some("name\nMario\n")))
            .send()
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(detail, "tari.csv: line 1: no fiscal_code column");
    assert_eq!(s.mock.job_count(), 0, "nothing half-created");

    let detail = problem(
        authed(c.get(s.url("/jobs/nope"))).send().await.unwrap(),
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(detail, "no job nope");
    problem(
        authed(c.post(s.url("/jobs/nope/pause")))
            .send()
            .await
            .unwrap(),
        StatusCode::NOT_FOUND,
    )
    .await;

    s.mock
        .insert(view("j-cancelled", JobState::Cancelled, 10, 4));
    let detail = problem(
        authed(c.post(s.url("/jobs/j-cancelled/resume")))
            .send()
            .await
            .unwrap(),
        StatusCode::CONFLICT,
    )
    .await;
    assert!(detail.contains("cannot change"), "{detail}");
    s.stop().await;
}

#[tokio::test]
async fn pause_resume_cancel_answer_the_job() {
    let s = Server::start(Some(TOKEN)).await;
    s.mock.insert(view("j1", JobState::Running, 10, 4));
    let c = http();
    for (action, state) in [
        ("pause", JobState::Paused),
        ("resume", JobState::Running),
        ("cancel", JobState::Cancelled),
    ] {
        let res = authed(c.post(s.url(&format!("/jobs/j1/{action}"))))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{action}");
        let job: JobView = res.json().await.unwrap();
        assert_eq!(job.state, state);
    }
    s.stop().await;
}

#[tokio::test]
async fn report_streams_csv_masked_unless_asked() {
    let s = Server::start(Some(TOKEN)).await;
    s.mock.insert(view("j1", JobState::Done, 2, 2));
    let c = http();
    let res = authed(c.get(s.url("/jobs/j1/report")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers()[CONTENT_TYPE].to_str().unwrap(),
        "text/csv; charset=utf-8"
    );
    assert!(res.headers().get("content-length").is_none(), "streamed");
    let body = res.text().await.unwrap();
    assert_eq!(
        body,
        "line,fiscal_code,outcome\n2,RSSMRA*******01U,processed\n3,VRDLGU*******05X,rejected\n"
    );
    let body = authed(c.get(s.url("/jobs/j1/report?codes=clear")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("RSSMRA80A01H501U"), "{body}");
    problem(
        authed(c.get(s.url("/jobs/j1/report?codes=plain")))
            .send()
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    problem(
        authed(c.get(s.url("/jobs/j2/report")))
            .send()
            .await
            .unwrap(),
        StatusCode::NOT_FOUND,
    )
    .await;
    s.stop().await;
}

#[tokio::test]
async fn readyz_follows_the_subscriber_set() {
    let s = Server::start(Some(TOKEN)).await;
    let c = http();
    let res = authed(c.get(s.url("/readyz"))).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Readiness = res.json().await.unwrap();
    assert!(body.store && !body.subscriber_set && body.detail.is_some());
    s.mock.feed_loaded.store(true, Ordering::SeqCst);
    let res = authed(c.get(s.url("/readyz"))).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    s.stop().await;
}

#[tokio::test]
async fn metrics_are_prometheus_text_with_what_was_counted() {
    let s = Server::start(Some(TOKEN)).await;
    metrics::counter!(corriere::metrics::RECIPIENTS_TOTAL, "job" => "j-metrics", "outcome" => "processed")
        .increment(3);
    metrics::histogram!(corriere::metrics::IO_REQUEST_DURATION_SECONDS, "endpoint" => "submit_message")
        .record(0.03);
    metrics::gauge!(corriere::metrics::POLL_QUEUE_DEPTH).set(7.0);
    let res = authed(http().get(s.url("/metrics"))).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()[CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = res.text().await.unwrap();
    let families = prom::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));

    let recipients = &families["corriere_recipients_total"];
    assert_eq!(recipients.kind, "counter");
    assert!(recipients.help.is_some(), "described");
    let sample = recipients
        .samples
        .iter()
        .find(|s| s.labels.get("job").map(String::as_str) == Some("j-metrics"))
        .expect("the counter incremented above");
    assert_eq!(sample.labels["outcome"], "processed");
    assert_eq!(sample.value, 3.0);

    let durations = &families["corriere_io_request_duration_seconds"];
    assert_eq!(durations.kind, "histogram");
    let le_005 = durations
        .samples
        .iter()
        .find(|s| s.name.ends_with("_bucket") && s.labels["le"] == "0.05")
        .expect("a 0.05 s bucket");
    assert!(le_005.value >= 1.0);
    assert_eq!(families["corriere_poll_queue_depth"].kind, "gauge");
    for name in families.keys() {
        assert!(
            corriere::metrics::ALL.contains(&name.as_str()),
            "{name} is not declared in metrics.rs"
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn a_public_address_needs_a_token() {
    let err = check_bind("0.0.0.0:9464".parse().unwrap(), None).unwrap_err();
    assert!(matches!(err, AdminError::PublicWithoutToken { .. }));
    check_bind("0.0.0.0:9464".parse().unwrap(), Some(&Secret::new(TOKEN))).unwrap();
    check_bind("127.0.0.1:9464".parse().unwrap(), None).unwrap();
}

#[tokio::test]
async fn without_a_token_on_loopback_every_route_is_open() {
    let s = Server::start(None).await;
    let res = http().get(s.url("/jobs")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    s.stop().await;
}

// ── CLI (the real binary against the mock daemon) ───────────────────────────────────────────

/// `corriere` with a clean environment and the test token.
fn corriere(token: &str) -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::cargo_bin("corriere").unwrap();
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("CORRIERE_ADMIN_TOKEN", token)
        .env("RUST_LOG", "warn");
    cmd
}

/// Runs the command off the runtime's threads (the server answers on them meanwhile).
async fn run(mut cmd: assert_cmd::Command, args: &[&str]) -> std::process::Output {
    cmd.args(args);
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write_inputs(dir: &Path) -> (String, String) {
    let (t, r) = (dir.join("tari.toml"), dir.join("tari.csv"));
    std::fs::write(&t, TEMPLATE).unwrap();
    std::fs::write(&r, CSV).unwrap();
    (
        t.to_string_lossy().into_owned(),
        r.to_string_lossy().into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_jobs_and_job_show_counts_rate_and_eta() {
    let s = Server::start(Some(TOKEN)).await;
    s.mock.insert(view("job-a", JobState::Running, 1000, 250));
    let base = s.base();

    let out = run(corriere(TOKEN), &["jobs", "--admin", &base]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("ID"), "{stdout}");
    assert!(
        stdout.contains("job-a") && stdout.contains("running") && stdout.contains("250/1000"),
        "{stdout}"
    );

    let out = run(corriere(TOKEN), &["job", "job-a", "--admin", &base]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("settled    250/1000 (25.0%)"), "{stdout}");
    assert!(stdout.contains("42.5 sends/s"), "{stdout}");
    assert!(stdout.contains("eta        1h 2m 5s"), "{stdout}");
    assert!(
        stdout.contains("processed") && stdout.contains("750"),
        "{stdout}"
    );

    // A finished job: --watch draws once and returns.
    s.mock.insert(view("job-b", JobState::Done, 5, 5));
    let out = run(
        corriere(TOKEN),
        &["job", "job-b", "--watch", "--admin", &base],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("state      done"));

    let out = run(corriere(TOKEN), &["job", "nope", "--admin", &base]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no job nope (HTTP 404)"),
        "{}",
        text(&out.stderr)
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_watch_follows_a_job_to_its_end() {
    let s = Server::start(Some(TOKEN)).await;
    let base = s.base();
    let mut failed = view("job-f", JobState::Failed, 10, 5);
    failed.error = Some("IO refused the API key (401)".to_owned());
    s.mock.script.lock().unwrap().extend([
        (
            "job-w".to_owned(),
            [
                view("job-w", JobState::Running, 10, 0),
                view("job-w", JobState::Running, 10, 5),
                view("job-w", JobState::Done, 10, 10),
            ]
            .into(),
        ),
        (
            "job-f".to_owned(),
            [view("job-f", JobState::Running, 10, 5), failed].into(),
        ),
    ]);

    let out = run(
        corriere(TOKEN),
        &["job", "job-w", "--watch", "--admin", &base],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    for seen in [
        "job-w running 0/10",
        "job-w running 5/10",
        "job-w done 10/10",
    ] {
        assert!(stderr.contains(seen), "{seen}: {stderr}");
    }
    assert!(text(&out.stdout).contains("state      done"));

    let out = run(
        corriere(TOKEN),
        &["job", "job-f", "--watch", "--admin", &base],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("job job-f failed: IO refused the API key (401)"),
        "{}",
        text(&out.stderr)
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_submit_dry_run_then_for_real_then_control_the_job() {
    let s = Server::start(Some(TOKEN)).await;
    let base = s.base();
    let dir = tempfile::tempdir().unwrap();
    let (t, r) = write_inputs(dir.path());

    let out = run(
        corriere(TOKEN),
        &["submit", "-t", &t, "-r", &r, "--dry-run", "--admin", &base],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("dry run: nothing was sent"), "{stdout}");
    assert!(stdout.contains("line 3"), "{stdout}");
    assert!(stdout.contains("estimated time"), "{stdout}");
    assert_eq!(s.mock.job_count(), 0);

    let out = run(
        corriere(TOKEN),
        &["submit", "-t", &t, "-r", &r, "--admin", &base],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_owned();
    assert_eq!(s.mock.job_count(), 1);
    assert!(!s.mock.received.lock().unwrap()[1].by_path);

    let out = run(
        corriere(TOKEN),
        &["submit", "-t", &t, "-r", &r, "--paths", "--admin", &base],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), id, "same inputs, same job");
    assert!(s.mock.received.lock().unwrap()[2].by_path);

    let out = run(corriere(TOKEN), &["pause", &id, "--admin", &base]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), format!("job {id}: paused"));
    let out = run(corriere(TOKEN), &["cancel", &id, "--admin", &base]).await;
    assert!(out.status.success());
    let out = run(corriere(TOKEN), &["resume", &id, "--admin", &base]).await;
    assert_eq!(out.status.code(), Some(1), "a cancelled job cannot resume");
    assert!(
        text(&out.stderr).contains("(HTTP 409)"),
        "{}",
        text(&out.stderr)
    );

    let out = run(
        corriere(TOKEN),
        &["submit", "-t", "/no/such.toml", "-r", &r, "--admin", &base],
    )
    .await;
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_exit_codes_for_wrong_token_bad_url_and_no_daemon() {
    let s = Server::start(Some(TOKEN)).await;
    let out = run(corriere("wrong"), &["jobs", "--admin", &s.base()]).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("HTTP 401") && !stderr.contains("wrong"),
        "{stderr}"
    );
    s.stop().await;

    let out = run(corriere(TOKEN), &["jobs", "--admin", "localhost:1"]).await;
    assert_eq!(out.status.code(), Some(64));

    // A port nobody listens on: bind, note it, close.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let out = run(corriere(TOKEN), &["jobs", "--admin", &url]).await;
    assert_eq!(out.status.code(), Some(69), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("cannot reach the corriere daemon"),
        "{}",
        text(&out.stderr)
    );
}

// ── A small Prometheus text-format (0.0.4) validator ────────────────────────────────────────

mod prom {
    use std::collections::BTreeMap;

    #[derive(Debug, Default)]
    pub struct Family {
        pub kind: String,
        pub help: Option<String>,
        pub samples: Vec<Sample>,
    }

    #[derive(Debug)]
    pub struct Sample {
        pub name: String,
        pub labels: BTreeMap<String, String>,
        pub value: f64,
    }

    fn valid_name(n: &str) -> bool {
        let mut chars = n.chars();
        matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }

    fn value(v: &str) -> Result<f64, String> {
        match v {
            "+Inf" => Ok(f64::INFINITY),
            "-Inf" => Ok(f64::NEG_INFINITY),
            "NaN" => Ok(f64::NAN),
            _ => v.parse().map_err(|_| format!("bad value {v:?}")),
        }
    }

    /// `{a="x",b="y"}` → labels and the rest of the line.
    fn labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
        let mut out = BTreeMap::new();
        let mut rest = s.strip_prefix('{').ok_or("labels must open with {")?;
        loop {
            rest = rest.trim_start();
            if let Some(r) = rest.strip_prefix('}') {
                return Ok((out, r));
            }
            let eq = rest.find('=').ok_or("label without =")?;
            let name = rest[..eq].trim();
            if !valid_name(name) || name.contains(':') {
                return Err(format!("bad label name {name:?}"));
            }
            rest = rest[eq + 1..]
                .strip_prefix('"')
                .ok_or("label value must be quoted")?;
            let mut val = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                match chars.next() {
                    None => return Err("unterminated label value".into()),
                    Some((i, '"')) => break i,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, '\\')) => val.push('\\'),
                        Some((_, '"')) => val.push('"'),
                        Some((_, 'n')) => val.push('\n'),
                        _ => return Err("bad escape in label value".into()),
                    },
                    Some((_, c)) => val.push(c),
                }
            };
            if out.insert(name.to_owned(), val).is_some() {
                return Err(format!("label {name} repeated"));
            }
            rest = &rest[end + 1..];
            rest = rest.strip_prefix(',').unwrap_or(rest);
        }
    }

    /// The family a sample belongs to, given the declared types.
    fn family_of<'a>(name: &'a str, families: &BTreeMap<String, Family>) -> &'a str {
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix) {
                if families
                    .get(base)
                    .is_some_and(|f| f.kind == "histogram" || f.kind == "summary")
                {
                    return base;
                }
            }
        }
        name
    }

    /// Parses (and so validates) the exposition text, line by line.
    pub fn parse(text: &str) -> Result<BTreeMap<String, Family>, String> {
        let mut families: BTreeMap<String, Family> = BTreeMap::new();
        for (n, line) in text.lines().enumerate() {
            let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
            if line.trim().is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# ") {
                let mut parts = rest.splitn(3, ' ');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some("HELP"), Some(name), help) => {
                        let f = families.entry(name.to_owned()).or_default();
                        if f.help.replace(help.unwrap_or("").to_owned()).is_some() {
                            return Err(at("second HELP".into()));
                        }
                    }
                    (Some("TYPE"), Some(name), Some(kind)) => {
                        if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind)
                        {
                            return Err(at(format!("unknown type {kind}")));
                        }
                        let f = families.entry(name.to_owned()).or_default();
                        if !f.kind.is_empty() || !f.samples.is_empty() {
                            return Err(at("TYPE after samples or twice".into()));
                        }
                        f.kind = kind.to_owned();
                    }
                    _ => {} // a plain comment
                }
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let name_end = line
                .find(['{', ' '])
                .ok_or_else(|| at("sample without a value".into()))?;
            let name = &line[..name_end];
            if !valid_name(name) {
                return Err(at(format!("bad metric name {name:?}")));
            }
            let (labels, rest) = if line[name_end..].starts_with('{') {
                labels(&line[name_end..]).map_err(at)?
            } else {
                (BTreeMap::new(), &line[name_end..])
            };
            let mut fields = rest.split_whitespace();
            let v = value(fields.next().ok_or_else(|| at("no value".into()))?).map_err(at)?;
            if let Some(ts) = fields.next() {
                ts.parse::<i64>()
                    .map_err(|_| at(format!("bad timestamp {ts:?}")))?;
            }
            if fields.next().is_some() {
                return Err(at("trailing fields".into()));
            }
            let family = family_of(name, &families).to_owned();
            let f = families.entry(family.clone()).or_default();
            if f.kind == "histogram" && name.ends_with("_bucket") && !labels.contains_key("le") {
                return Err(at("bucket without le".into()));
            }
            if f.kind == "counter" && v < 0.0 {
                return Err(at("negative counter".into()));
            }
            f.samples.push(Sample {
                name: name.to_owned(),
                labels,
                value: v,
            });
        }
        Ok(families)
    }

    #[test]
    fn the_validator_refuses_broken_text() {
        assert!(parse("# TYPE a counter\na 1\n").is_ok());
        assert!(parse("a{b=\"x\\\"y\"} 1 123\n").is_ok());
        assert!(parse("a{b=x} 1\n").is_err());
        assert!(parse("a 1 2 3\n").is_err());
        assert!(parse("1a 1\n").is_err());
        assert!(parse("a one\n").is_err());
        assert!(parse("# TYPE h histogram\nh_bucket 1\n").is_err());
        assert!(parse("a 1\n# TYPE a counter\n").is_err());
    }
}
