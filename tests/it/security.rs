//! The daemon's admin API as a hostile or careless client (and another local user) would try
//! it: path submits through symbolic links and outside `admin.input_dirs` leak nothing (dry
//! runs included); a slow header is cut; the connection cap holds while a pause still gets
//! through; a huge multipart part header is refused early; uploads are private and removed
//! after a dry run, a refused submit and the retention; a clear export leaves an audit line.
//! The real daemon in-process against the bundled fake IO, served by `corriere::admin::serve`.

use crate::common;

use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use corriere::admin::ServerLimits;
use corriere::config::Secret;
use corriere::daemon::{Daemon, DaemonParts};
use corriere::dispatch::DispatchSettings;
use corriere::io_api::{ApiKey, IoClient, IoClientConfig};
use corriere::rate::{RateBudget, RateConfig, RateMode};
use corriere::runtime::{FeedAccess, Runtime, RuntimeParts};
use corriere::store::Store;
use corriere_fake_io::{FakeIoHandle, FakeRate};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "security-test-token-0123456789";
const SECRET: &str = "CORRIERE_ADMIN_TOKEN=do-not-leak-4242";

struct Running {
    daemon: Daemon,
    addr: SocketAddr,
    shutdown: CancellationToken,
    dir: PathBuf,
}

impl Running {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
    fn uploads(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.dir.join("uploads"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .collect()
    }
    async fn stop(self) {
        self.shutdown.cancel();
        self.daemon.drain(Duration::from_secs(10)).await;
    }
}

/// The daemon with `input_dirs` = `<dir>/in`, its admin API on 127.0.0.1:0 under `limits`.
async fn start(
    fake: &FakeIoHandle,
    dir: &Path,
    limits: ServerLimits,
    retention: Duration,
) -> Running {
    let inputs = dir.join("in");
    std::fs::create_dir_all(&inputs).unwrap();
    let store = Store::open(&dir.join("store")).await.unwrap();
    let budget = RateBudget::new(RateConfig {
        mode: RateMode::Adaptive {
            initial: 50.0,
            floor: 10.0,
            ceiling: 50.0,
        },
        in_flight: 4,
    });
    let mut io = IoClientConfig::new(fake.base_url(), ApiKey::new(KEY));
    io.request_timeout = Duration::from_secs(5);
    let client = IoClient::new(io).unwrap();
    let shutdown = CancellationToken::new();
    let daemon = Daemon::start(
        DaemonParts {
            runtime: Arc::new(Runtime::new(RuntimeParts {
                store,
                client,
                budget,
                settings: DispatchSettings::default(),
                preflight: None,
                feed: FeedAccess::Off,
            })),
            feed_sync_at: None,
            uploads_dir: dir.join("uploads"),
            input_dirs: vec![inputs.canonicalize().unwrap()],
            upload_retention: retention,
        },
        shutdown.clone(),
    )
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics = corriere::metrics::install().unwrap();
    tokio::spawn(corriere::admin::serve(
        listener,
        Arc::new(daemon.clone()),
        Some(Secret::new(TOKEN)),
        metrics,
        limits,
        shutdown.clone(),
    ));
    Running {
        daemon,
        addr,
        shutdown,
        dir: dir.to_owned(),
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

fn authed(req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    req.bearer_auth(TOKEN)
}

const TEMPLATE: &str = "subject = \"Avviso di prova per {{nome}}\"\n\
    markdown = \"Gentile {{nome}}, questo è un avviso di prova generato dai test di corriere con testo sufficiente.\"\n\
    fiscal_code_column = \"codice_fiscale\"\nfilter = \"none\"\n";

async fn path_submit(
    r: &Running,
    template: &Path,
    recipients: &Path,
    dry_run: bool,
) -> (u16, String) {
    let res = authed(http().post(r.url(if dry_run {
        "/jobs?dry_run=true"
    } else {
        "/jobs"
    })))
    .json(&serde_json::json!({ "template_path": template, "recipients_path": recipients }))
    .send()
    .await
    .unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

fn form(template: &str, csv: &str) -> reqwest::multipart::Form {
    reqwest::multipart::Form::new()
        .part(
            "template",
            reqwest::multipart::Part::bytes(template.as_bytes().to_vec()).file_name("t.toml"),
        )
        .part(
            "recipients",
            reqwest::multipart::Part::bytes(csv.as_bytes().to_vec()).file_name("r.csv"),
        )
}

fn campaign_csv(fake: &FakeIoHandle, n: usize) -> String {
    let mut csv = String::from("codice_fiscale;nome\n");
    for i in 0..n {
        csv.push_str(&format!(
            "{};Nome {i}\n",
            fake.population().citizen(i).fiscal_code
        ));
    }
    csv
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_submits_through_links_or_outside_the_input_dirs_leak_nothing_even_in_a_dry_run() {
    let fake = start_fake(fake_config(100)).await;
    let dir = tempfile::tempdir().unwrap();
    let r = start(
        &fake,
        dir.path(),
        ServerLimits::default(),
        Duration::from_secs(3600),
    )
    .await;
    let inputs = dir.path().join("in");
    let template = inputs.join("t.toml");
    std::fs::write(&template, TEMPLATE).unwrap();
    // What a hostile local user points the daemon at: a secret outside the input directory.
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let secret = outside.join("environ");
    std::fs::write(&secret, format!("{SECRET}\nHOME=/root\n")).unwrap();
    std::os::unix::fs::symlink(&secret, inputs.join("env.csv")).unwrap();
    std::os::unix::fs::symlink(&outside, inputs.join("linked")).unwrap();
    std::fs::write(outside.join("direct.csv"), format!("{SECRET}\n")).unwrap();
    // A regular file inside the directory whose header is not the template's: the error names
    // the missing column and counts the header's, never quoting it.
    std::fs::write(
        inputs.join("header.csv"),
        format!("{SECRET};x\nRSSMRA85T10A562S;1\n"),
    )
    .unwrap();
    let attempts = [
        (inputs.join("env.csv"), 400, "symbolic link"),
        (
            inputs.join("linked").join("environ.csv"),
            403,
            "admin.input_dirs",
        ),
        (outside.join("direct.csv"), 403, "admin.input_dirs"),
        (inputs.join("header.csv"), 400, "2 columns"),
    ];
    for dry_run in [true, false] {
        for (path, status, says) in &attempts {
            let (got, body) = path_submit(&r, &template, path, dry_run).await;
            assert_eq!(
                got,
                *status,
                "{} (dry run {dry_run}): {body}",
                path.display()
            );
            assert!(body.contains(says), "{body}");
            assert!(!body.contains("do-not-leak"), "leaked: {body}");
        }
    }
    // The template may not come through a link either.
    std::os::unix::fs::symlink(&secret, inputs.join("evil.toml")).unwrap();
    let (got, body) = path_submit(
        &r,
        &inputs.join("evil.toml"),
        &inputs.join("header.csv"),
        true,
    )
    .await;
    assert_eq!(got, 400, "{body}");
    assert!(!body.contains("do-not-leak"), "{body}");
    let jobs: Value = authed(http().get(r.url("/jobs")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        jobs.as_array().map(Vec::len),
        Some(0),
        "nothing created: {jobs}"
    );
    assert_eq!(fake.stats().requests_total, 0, "IO was never called");
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_submit_reads_only_a_private_copy_of_the_checked_file() {
    let fake = start_fake(fake_config(100)).await;
    let dir = tempfile::tempdir().unwrap();
    let r = start(
        &fake,
        dir.path(),
        ServerLimits::default(),
        Duration::from_secs(3600),
    )
    .await;
    let inputs = dir.path().join("in");
    let template = inputs.join("t.toml");
    std::fs::write(&template, TEMPLATE).unwrap();
    let recipients = inputs.join("r.csv");
    let csv = campaign_csv(&fake, 3);
    std::fs::write(&recipients, &csv).unwrap();
    let (status, body) = path_submit(&r, &template, &recipients, false).await;
    assert_eq!(status, 201, "{body}");
    // The job reads a copy in the daemon's private uploads, made from the checked descriptor:
    // swapping the operator's path for a link afterwards changes nothing the job reads.
    let secret = dir.path().join("key");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    std::fs::remove_file(&recipients).unwrap();
    std::os::unix::fs::symlink(&secret, &recipients).unwrap();
    let id = serde_json::from_str::<Value>(&body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let view: Value = authed(http().get(r.url(&format!("/jobs/{id}"))))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let uploads = r.uploads();
    let copy = uploads
        .iter()
        .find(|p| Some(p.file_name().unwrap().to_str().unwrap()) == view["recipients"].as_str())
        .unwrap_or_else(|| panic!("the job's recipients are not in the uploads: {view}"));
    assert_eq!(std::fs::read_to_string(copy).unwrap(), csv);
    let mode = std::fs::metadata(copy).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(uploads
        .iter()
        .any(|p| Some(p.file_name().unwrap().to_str().unwrap()) == view["template"].as_str()));
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_header_is_cut_at_the_header_timeout_even_while_it_trickles() {
    let fake = start_fake(fake_config(10)).await;
    let dir = tempfile::tempdir().unwrap();
    let limits = ServerLimits {
        header_timeout: Duration::from_secs(1),
        ..ServerLimits::default()
    };
    let r = start(&fake, dir.path(), limits, Duration::from_secs(3600)).await;
    let mut conn = tokio::net::TcpStream::connect(r.addr).await.unwrap();
    conn.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    // One header byte every 50 ms never completes the header; the server must close anyway.
    // (The bound is only there to fail instead of hanging: the header timeout is 1 s.)
    let closed = tokio::time::timeout(Duration::from_secs(30), async {
        let mut buf = [0u8; 256];
        loop {
            tokio::select! {
                read = conn.read(&mut buf) => match read {
                    Ok(0) | Err(_) => return true,
                    Ok(_) => return false, // an answer to half a header would be a bug
                },
                () = tokio::time::sleep(Duration::from_millis(50)) => {
                    if conn.write_all(b"x").await.is_err() {
                        return true;
                    }
                }
            }
        }
    })
    .await
    .expect("the half-sent header was never cut");
    assert!(closed, "the server answered half a header");
    // A complete request on a new connection is served.
    let ok = http().get(r.url("/healthz")).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_holds_and_an_authenticated_pause_gets_through_a_flood() {
    let mut cfg = fake_config(2_000);
    cfg.rate = FakeRate::Capacity {
        per_second: 20.0,
        burst: 2.0,
    };
    let fake = start_fake(cfg).await;
    let dir = tempfile::tempdir().unwrap();
    let cap = 8;
    let limits = ServerLimits {
        max_connections: cap,
        ..ServerLimits::default()
    };
    let r = start(&fake, dir.path(), limits, Duration::from_secs(3600)).await;
    let created = authed(http().post(r.url("/jobs")))
        .multipart(form(TEMPLATE, &campaign_csv(&fake, 1_000)))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Sending: read into the store.
    wait_until_created(&fake, 1).await;
    // The flood: five times the cap of connections that never finish their header.
    let mut flood = Vec::new();
    for _ in 0..cap * 5 {
        if let Ok(mut c) = tokio::net::TcpStream::connect(r.addr).await {
            if c.write_all(b"GET /jobs HTTP/1.1\r\nhost: x\r\n")
                .await
                .is_ok()
            {
                flood.push(c);
            }
        }
    }
    // The operator's pause, during the flood, on a fresh connection.
    let res = authed(http().post(r.url(&format!("/jobs/{id}/pause"))))
        .send()
        .await
        .expect("the pause gets through the flood");
    let paused = Some(res.status());
    assert_eq!(paused, Some(reqwest::StatusCode::OK));
    // Each flood connection now finishes its request: only those still open are answered,
    // and never more than the cap.
    let mut answered = 0;
    for mut c in flood {
        if c.write_all(b"\r\n").await.is_err() {
            continue;
        }
        let mut buf = [0u8; 64];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf)).await {
            if n > 0 && buf.starts_with(b"HTTP/1.1") {
                answered += 1;
            }
        }
    }
    assert!(
        answered <= cap,
        "{answered} flood connections were served, cap {cap}"
    );
    let view: Value = authed(http().get(r.url(&format!("/jobs/{id}"))))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["state"], "paused", "{view}");
    r.stop().await;
}

/// A connection that pipelines `GET /healthz` without ever reading an answer, its receive
/// buffer small so the daemon's answers stall at once. The returned task ends when a write
/// fails (the daemon closed the connection); `stalled` is told once the writes stall.
async fn pipelining_non_reader(
    addr: SocketAddr,
    stalled: tokio::sync::mpsc::Sender<()>,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut c = socket.connect(addr).await.unwrap();
    let chunk = b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n".repeat(512);
    tokio::spawn(async move {
        let mut told = false;
        loop {
            // The writes stop moving once the daemon stops reading (its answers are stuck).
            let write = c.write_all(&chunk);
            tokio::pin!(write);
            if !told {
                match tokio::time::timeout(Duration::from_secs(2), &mut write).await {
                    Ok(r) => {
                        r?;
                        continue;
                    }
                    Err(_) => {
                        told = true;
                        let _ = stalled.send(()).await;
                    }
                }
            }
            write.await?;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelining_flood_that_never_reads_cannot_lock_out_an_authenticated_pause() {
    let mut cfg = fake_config(2_000);
    cfg.rate = FakeRate::Capacity {
        per_second: 20.0,
        burst: 2.0,
    };
    let fake = start_fake(cfg).await;
    let dir = tempfile::tempdir().unwrap();
    let cap = 8;
    let limits = ServerLimits {
        max_connections: cap,
        // No timeout frees a slot during the test: only the cap's choice can.
        idle_timeout: Duration::from_secs(3600),
        ..ServerLimits::default()
    };
    let r = start(&fake, dir.path(), limits, Duration::from_secs(3600)).await;
    let created = authed(http().post(r.url("/jobs")))
        .multipart(form(TEMPLATE, &campaign_csv(&fake, 1_000)))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_until_created(&fake, 1).await;
    // Every slot: a pipelining client that never reads, its answers stuck.
    let (tx, mut rx) = tokio::sync::mpsc::channel(cap);
    let mut flood = Vec::new();
    for _ in 0..cap {
        flood.push(pipelining_non_reader(r.addr, tx.clone()).await);
    }
    for _ in 0..cap {
        rx.recv().await.unwrap();
    }
    // The operator's pause, on a fresh connection, gets through.
    let res = authed(http().post(r.url(&format!("/jobs/{id}/pause"))))
        .send()
        .await
        .expect("the pause gets through the flood");
    assert_eq!(res.status(), reqwest::StatusCode::OK);
    let view: Value = authed(http().get(r.url(&format!("/jobs/{id}"))))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["state"], "paused", "{view}");
    for f in flood {
        f.abort();
    }
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_whose_answers_do_not_drain_is_closed_at_the_idle_timeout() {
    let fake = start_fake(fake_config(10)).await;
    let dir = tempfile::tempdir().unwrap();
    let limits = ServerLimits {
        idle_timeout: Duration::from_secs(2),
        ..ServerLimits::default()
    };
    let r = start(&fake, dir.path(), limits, Duration::from_secs(3600)).await;
    let (tx, _rx) = tokio::sync::mpsc::channel(1);
    let writer = pipelining_non_reader(r.addr, tx).await;
    // The daemon closes the stalled connection: the writes fail.
    let ended = tokio::time::timeout(Duration::from_secs(60), writer)
        .await
        .expect("the daemon closed the connection whose answers did not drain")
        .unwrap();
    assert!(ended.is_err());
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_multipart_part_header_is_refused_before_it_is_read_whole() {
    let fake = start_fake(fake_config(10)).await;
    let dir = tempfile::tempdir().unwrap();
    let r = start(
        &fake,
        dir.path(),
        ServerLimits::default(),
        Duration::from_secs(3600),
    )
    .await;
    // 256 MiB of one part header, produced as the server reads it.
    const TOTAL: u64 = 256 << 20;
    let pulled = Arc::new(AtomicU64::new(0));
    let head =
        b"--BOUNDARY\r\nContent-Disposition: form-data; name=\"template\"\r\nX-Pad: ".to_vec();
    let counter = pulled.clone();
    let body = futures::stream::unfold(0u64, move |sent| {
        let counter = counter.clone();
        let head = head.clone();
        async move {
            if sent >= TOTAL {
                return None;
            }
            let chunk = if sent == 0 {
                head
            } else {
                vec![b'a'; 64 * 1024]
            };
            counter.fetch_add(chunk.len() as u64, Ordering::SeqCst);
            Some((Ok::<_, std::io::Error>(chunk), sent + 64 * 1024))
        }
    });
    let res = authed(http().post(r.url("/jobs")))
        .header("content-type", "multipart/form-data; boundary=BOUNDARY")
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await;
    if let Ok(res) = res {
        assert_eq!(res.status(), 400);
        let text = res.text().await.unwrap_or_default();
        assert!(text.contains("part header"), "{text}");
    }
    // Whether the client saw the answer or a reset, the server stopped reading early: the
    // rest of the 256 MiB was never pulled (socket buffers hold a few MiB at most).
    let read = pulled.load(Ordering::SeqCst);
    assert!(
        read < 32 << 20,
        "the server read {read} bytes of one part header"
    );
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_private_and_go_after_a_dry_run_a_refused_submit_and_the_retention() {
    let fake = start_fake(fake_config(200)).await;
    let dir = tempfile::tempdir().unwrap();
    let r = start(&fake, dir.path(), ServerLimits::default(), Duration::ZERO).await;
    let csv = campaign_csv(&fake, 50);
    // A dry run keeps nothing.
    let dry = authed(http().post(r.url("/jobs?dry_run=true")))
        .multipart(form(TEMPLATE, &csv))
        .send()
        .await
        .unwrap();
    assert_eq!(dry.status(), 200, "{}", dry.text().await.unwrap());
    assert_eq!(
        r.uploads(),
        Vec::<PathBuf>::new(),
        "a dry run's uploads are removed"
    );
    // A refused submit (the template names a column the CSV lacks) keeps nothing.
    let bad = TEMPLATE.replace("{{nome}}", "{{cognome}}");
    let refused = authed(http().post(r.url("/jobs")))
        .multipart(form(&bad, &csv))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    assert_eq!(
        r.uploads(),
        Vec::<PathBuf>::new(),
        "a refused submit's uploads are removed"
    );
    // A job keeps its uploads, private to the owner, while it runs.
    let created = authed(http().post(r.url("/jobs")))
        .multipart(form(TEMPLATE, &csv))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir.path().join("uploads")), 0o700);
    let kept = r.uploads();
    assert_eq!(kept.len(), 2, "{kept:?}");
    for p in &kept {
        assert_eq!(mode(p), 0o600, "{}", p.display());
    }
    // Done, then past its retention (zero here): the sweep removes them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let v: Value = authed(http().get(r.url(&format!("/jobs/{id}"))))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["state"] == "done" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job never done: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let removed = r.daemon.sweep_uploads().unwrap();
    assert_eq!(removed, 2);
    assert_eq!(r.uploads(), Vec::<PathBuf>::new());
    // The report still comes from the store.
    let report = authed(http().get(r.url(&format!("/jobs/{id}/report"))))
        .send()
        .await
        .unwrap();
    assert_eq!(report.status(), 200);
    assert_eq!(report.text().await.unwrap().lines().count(), 51);
    r.stop().await;
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_clear_export_leaves_one_audit_line_with_the_job_and_the_client_and_no_code() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    // One thread: every line the handlers log reaches this subscriber.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let fake = start_fake(fake_config(100)).await;
        let dir = tempfile::tempdir().unwrap();
        let r = start(
            &fake,
            dir.path(),
            ServerLimits::default(),
            Duration::from_secs(3600),
        )
        .await;
        let csv = campaign_csv(&fake, 5);
        let created = authed(http().post(r.url("/jobs")))
            .multipart(form(TEMPLATE, &csv))
            .send()
            .await
            .unwrap();
        let id = created.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        // The report is served as soon as the job exists, and its rows appear once the ingest
        // has committed them: wait for them on the masked report (which logs no audit line),
        // then export once in clear.
        loop {
            let res = authed(http().get(r.url(&format!("/jobs/{id}/report"))))
                .send()
                .await
                .unwrap();
            if res.status() == 200 {
                if res.text().await.unwrap().lines().count() > 5 {
                    break;
                }
            } else {
                assert_eq!(
                    res.status(),
                    409,
                    "only 'not read yet' may delay the report"
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let res = authed(http().get(r.url(&format!("/jobs/{id}/report?codes=clear"))))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let report = res.text().await.unwrap();
        let code = &fake.population().citizen(0).fiscal_code;
        assert!(report.contains(code.as_str()), "the export is clear");
        let masked = authed(http().get(r.url(&format!("/jobs/{id}/report"))))
            .send()
            .await
            .unwrap();
        assert_eq!(masked.status(), 200);
        let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let audit: Vec<&str> = logs
            .lines()
            .filter(|l| l.contains("Clear fiscal codes exported"))
            .collect();
        assert_eq!(
            audit.len(),
            1,
            "one line per clear export, none for masked: {logs}"
        );
        assert!(
            audit[0].contains(&id) && audit[0].contains("127.0.0.1"),
            "{}",
            audit[0]
        );
        assert!(!logs.contains(code.as_str()), "a code reached the log");
        r.stop().await;
    });
}

#[test]
fn debug_of_a_row_masks_its_fiscal_code_even_in_lower_case() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("r.csv");
    let mut f = std::fs::File::create(&csv).unwrap();
    writeln!(
        f,
        "codice_fiscale;nome\nrssmra85t10a562s;Mario Rossi\nBADCODE;Luigi"
    )
    .unwrap();
    let t = corriere::job::Template::from_toml_str(TEMPLATE, Path::new("t.toml")).unwrap();
    let rows: Vec<_> = corriere::job::Ingest::open(&csv, &t)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let shown = format!("{rows:?}");
    assert!(
        !shown.to_ascii_uppercase().contains("RSSMRA85T10A562S"),
        "{shown}"
    );
    assert!(!shown.contains("Mario Rossi"), "{shown}");
    assert!(shown.contains("rssmra*******62s"), "{shown}");
    assert!(!shown.contains("BADCODE"), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_past_the_size_limit_or_the_staging_quota_are_refused_and_leave_nothing() {
    let fake = start_fake(fake_config(3_000)).await;
    let dir = tempfile::tempdir().unwrap();
    let limits = ServerLimits {
        upload_limit: 256 * 1024,
        staging_quota: 32 * 1024,
        ..ServerLimits::default()
    };
    let r = start(&fake, dir.path(), limits, Duration::from_secs(3600)).await;
    let big = campaign_csv(&fake, 2_500); // ~70 KiB: over the quota, under the limit
    let res = authed(http().post(r.url("/jobs")))
        .multipart(form(TEMPLATE, &big))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 507, "{}", res.text().await.unwrap());
    let huge = format!("{big}{big}{big}{big}"); // ~280 KiB: over the limit
    let res = authed(http().post(r.url("/jobs")))
        .multipart(form(TEMPLATE, &huge))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413, "{}", res.text().await.unwrap());
    // Nothing staged or kept, and the quota was given back: a small upload goes through.
    assert_eq!(r.uploads(), Vec::<PathBuf>::new());
    let staging = dir.path().join("uploads").join("staging");
    let staged = std::fs::read_dir(&staging).map_or(0, |d| d.count());
    assert_eq!(staged, 0, "staged files left behind");
    let res = authed(http().post(r.url("/jobs?dry_run=true")))
        .multipart(form(TEMPLATE, &campaign_csv(&fake, 100)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_upload_is_answered_408_at_the_request_timeout() {
    let fake = start_fake(fake_config(10)).await;
    let dir = tempfile::tempdir().unwrap();
    let limits = ServerLimits {
        request_timeout: Duration::from_secs(1),
        ..ServerLimits::default()
    };
    let r = start(&fake, dir.path(), limits, Duration::from_secs(3600)).await;
    let mut conn = tokio::net::TcpStream::connect(r.addr).await.unwrap();
    let head = format!(
        "POST /jobs HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\n\
         content-type: multipart/form-data; boundary=B\r\ncontent-length: 100000\r\n\r\n\
         --B\r\ncontent-disposition: form-data; name=\"template\"; filename=\"t.toml\"\r\n\r\nsubject"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    // The rest of the body never comes.
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), conn.read_to_end(&mut answer))
        .await
        .expect("the stalled upload was never cut")
        .ok();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("admin.request_timeout"), "{answer}");
    let staged =
        std::fs::read_dir(dir.path().join("uploads").join("staging")).map_or(0, |d| d.count());
    assert_eq!(staged, 0, "the stalled upload's staging file was removed");
    r.stop().await;
}
