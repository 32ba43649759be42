//! `corriere run` (the real binary) against the bundled fake IO, driven over its admin HTTP
//! API: auth and malformed requests refused with the right status; two jobs submitted (one as
//! a multipart upload, one by paths); pause / resume / cancel; SIGTERM mid-job (exit 0 within
//! the grace period); a restart; both jobs finish with every recipient exactly once and nobody
//! messaged twice; `/metrics` parses as Prometheus text and its counters match the reports.

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use corriere_fake_io::{FakeIoHandle, FakeRate, Processing};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

const TOKEN: &str = "test-admin-token-0123456789";

struct DaemonProc {
    child: tokio::process::Child,
    base: String,
}

async fn start_daemon(fake: &FakeIoHandle, dir: &std::path::Path) -> DaemonProc {
    let config = dir.join("corriere.toml");
    // Path submits read from the test's directory only.
    std::fs::write(
        &config,
        format!(
            "[rate]\nmode = \"adaptive\"\ninitial = 200.0\nfloor = 20.0\nceiling = 2000.0\nin_flight = 16\n\
             [daemon]\nfeed_sync_at = \"off\"\ngrace_period = \"20s\"\n\
             [admin]\nlisten = \"127.0.0.1:0\"\ninput_dirs = [{:?}]\n",
            dir.display().to_string()
        ),
    )
    .unwrap();
    let mut cmd = corriere(fake, &dir.join("store"));
    cmd.env_remove("CORRIERE_RATE_MODE")
        .env("CORRIERE_ADMIN_TOKEN", TOKEN)
        .arg("--config")
        .arg(&config)
        .arg("run")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let base = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(url) = line.strip_prefix("admin API listening on ") {
                return url.trim().to_owned();
            }
        }
        panic!("the daemon exited before listening");
    })
    .await
    .expect("the daemon listens within a minute");
    // Keep draining stderr so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    DaemonProc { child, base }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn api(d: &DaemonProc, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
    http()
        .request(method, format!("{}{path}", d.base))
        .bearer_auth(TOKEN)
}

async fn job(d: &DaemonProc, id: &str) -> Value {
    let r = api(d, reqwest::Method::GET, &format!("/jobs/{id}"))
        .await
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

fn count(v: &Value, outcome: &str) -> u64 {
    v["counts"][outcome].as_u64().unwrap_or(0)
}

async fn wait_job(d: &DaemonProc, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        let v = job(d, id).await;
        if pred(&v) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn post(d: &DaemonProc, path: &str) -> reqwest::Response {
    api(d, reqwest::Method::POST, path)
        .await
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_over_http_two_jobs_pause_cancel_sigterm_restart_and_metrics() {
    let mut cfg = fake_config(9_000);
    cfg.rate = FakeRate::Capacity {
        per_second: 300.0,
        burst: 20.0,
    };
    cfg.processing = Processing {
        min: Duration::from_millis(10),
        median: Duration::from_millis(100),
        max: Duration::from_millis(400),
    };
    let fake = start_fake(cfg).await;
    let dir = tempfile::tempdir().unwrap();
    let a_dir = dir.path().join("a");
    std::fs::create_dir_all(&a_dir).unwrap();
    let a = write_campaign(&a_dir, &fake, 2500, "none");
    let b_dir = dir.path().join("b");
    std::fs::create_dir_all(&b_dir).unwrap();
    let b = {
        // Different citizens from A's: lines 2500.. of a bigger campaign.
        let c = write_campaign(&b_dir, &fake, 5000, "profile");
        let text = std::fs::read_to_string(&c.recipients).unwrap();
        let mut lines = text.lines();
        let header = lines.next().unwrap().to_owned();
        let rest: Vec<&str> = lines.skip(2500).collect();
        std::fs::write(&c.recipients, format!("{header}\n{}\n", rest.join("\n"))).unwrap();
        Campaign {
            template: c.template,
            recipients: c.recipients,
            expect: c.expect[2500..].to_vec(),
        }
    };

    let mut d = start_daemon(&fake, dir.path()).await;

    // Liveness is open; everything else needs the token.
    let health = http()
        .get(format!("{}/healthz", d.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let anon = http().get(format!("{}/jobs", d.base)).send().await.unwrap();
    assert_eq!(anon.status(), 401);
    let wrong = http()
        .get(format!("{}/jobs", d.base))
        .bearer_auth("not-the-token")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let anon_metrics = http()
        .get(format!("{}/metrics", d.base))
        .send()
        .await
        .unwrap();
    assert_eq!(anon_metrics.status(), 401);

    // Malformed requests: the right status and a problem+json body; nothing created.
    let bad_json = api(&d, reqwest::Method::POST, "/jobs")
        .await
        .header("content-type", "application/json")
        .body("{\"template_path\": 3")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_json.status(), 400);
    let problem: Value = bad_json.json().await.unwrap();
    assert_eq!(problem["status"], 400);
    assert!(problem["detail"].as_str().is_some_and(|d| !d.is_empty()));
    let missing_part = api(&d, reqwest::Method::POST, "/jobs")
        .await
        .multipart(reqwest::multipart::Form::new().text("template", "subject = 'x'"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing_part.status(), 400);
    let bad_template_dir = dir.path().join("bad");
    std::fs::create_dir_all(&bad_template_dir).unwrap();
    let bad_template = bad_template_dir.join("t.toml");
    std::fs::write(
        &bad_template,
        "subject = \"Avviso per {{manca}} e altro\"\nmarkdown = \"Gentile cittadino, questo è un avviso di prova abbastanza lungo da superare gli ottanta caratteri.\"\nfiscal_code_column = \"codice_fiscale\"\n",
    )
    .unwrap();
    let missing_column = api(&d, reqwest::Method::POST, "/jobs")
        .await
        .json(&serde_json::json!({"template_path": bad_template, "recipients_path": a.recipients}))
        .send()
        .await
        .unwrap();
    assert_eq!(missing_column.status(), 400);
    let detail = missing_column.json::<Value>().await.unwrap()["detail"].to_string();
    assert!(detail.contains("manca"), "{detail}");
    let unknown = api(&d, reqwest::Method::GET, "/jobs/nosuchjob")
        .await
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let listed: Value = api(&d, reqwest::Method::GET, "/jobs")
        .await
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        listed.as_array().map(Vec::len),
        Some(0),
        "nothing half-created: {listed}"
    );

    // Job A as a multipart upload, job B by paths the daemon reads.
    let form = reqwest::multipart::Form::new()
        .part(
            "template",
            reqwest::multipart::Part::bytes(std::fs::read(&a.template).unwrap())
                .file_name("a.toml"),
        )
        .part(
            "recipients",
            reqwest::multipart::Part::bytes(std::fs::read(&a.recipients).unwrap())
                .file_name("a.csv"),
        );
    let created = api(&d, reqwest::Method::POST, "/jobs")
        .await
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let id_a = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let created = api(&d, reqwest::Method::POST, "/jobs")
        .await
        .json(&serde_json::json!({"template_path": b.template, "recipients_path": b.recipients}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let id_b = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The upload was streamed to disk and adopted: nothing is left in the staging directory,
    // not even from the refused multipart submit above.
    let staging = dir.path().join("store").join("uploads").join("staging");
    let left = std::fs::read_dir(&staging).map_or(0, |d| d.count());
    assert_eq!(
        left,
        0,
        "staged uploads left behind in {}",
        staging.display()
    );

    // Pause A while it sends, resume it; cancel B after a while.
    wait_job(&d, &id_a, "A sending", |v| {
        count(v, "processed") + count(v, "submitted") > 100
    })
    .await;
    let paused = post(&d, &format!("/jobs/{id_a}/pause")).await;
    assert_eq!(paused.status(), 200);
    assert_eq!(paused.json::<Value>().await.unwrap()["state"], "paused");
    let resumed = post(&d, &format!("/jobs/{id_a}/resume")).await;
    assert_eq!(resumed.json::<Value>().await.unwrap()["state"], "running");
    wait_job(&d, &id_b, "B under way", |v| {
        v["settled"].as_u64().unwrap_or(0) > 300
    })
    .await;
    let cancelled = post(&d, &format!("/jobs/{id_b}/cancel")).await;
    assert_eq!(
        cancelled.json::<Value>().await.unwrap()["state"],
        "cancelled"
    );
    let conflict = post(&d, &format!("/jobs/{id_b}/resume")).await;
    assert_eq!(conflict.status(), 409);

    // SIGTERM mid-job: exit 0 within the grace period, nothing left in flight.
    let before = job(&d, &id_a).await;
    assert!(
        before["settled"].as_u64().unwrap() < 2500,
        "A is still running: {before}"
    );
    sigterm(&d.child);
    let status = tokio::time::timeout(Duration::from_secs(40), d.child.wait())
        .await
        .expect("the daemon exits within its grace period")
        .unwrap();
    assert!(status.success(), "exit 0 after SIGTERM: {status:?}");

    // Restart: both jobs go on and finish.
    d = start_daemon(&fake, dir.path()).await;
    let done_a = wait_job(&d, &id_a, "A done", |v| v["state"] == "done").await;
    let done_b = wait_job(&d, &id_b, "B settled", |v| {
        v["settled"].as_u64() == v["rows"].as_u64() && count(v, "submitted") == 0
    })
    .await;
    assert_eq!(done_a["settled"], 2500);
    assert_eq!(
        count(&done_a, "unknown"),
        0,
        "a clean SIGTERM leaves nothing unknown"
    );
    assert!(count(&done_b, "cancelled") > 0);

    // Reports: every line exactly once; nobody messaged twice.
    let mut reports = BTreeMap::new();
    for (id, c, extra) in [(&id_a, &a, &[][..]), (&id_b, &b, &["cancelled"][..])] {
        let r = api(&d, reqwest::Method::GET, &format!("/jobs/{id}/report"))
            .await
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv"));
        let path = dir.path().join(format!("{id}.csv"));
        std::fs::write(&path, r.bytes().await.unwrap()).unwrap();
        let rows = read_report(&path);
        reports.insert(id.clone(), check_report(&rows, &c.expect, extra));
    }
    assert_eq!(
        fake.stats().recipients_with_more_than_one,
        0,
        "nobody received a message twice"
    );

    // /metrics: Prometheus text; corriere_recipients_total matches each job's report.
    let text = api(&d, reqwest::Method::GET, "/metrics")
        .await
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let samples = parse_prometheus(&text);
    for (id, counts) in &reports {
        for (outcome, n) in counts {
            let key = format!("corriere_recipients_total{{job=\"{id}\",outcome=\"{outcome}\"}}");
            let alt = format!("corriere_recipients_total{{outcome=\"{outcome}\",job=\"{id}\"}}");
            let got = samples.get(&key).or_else(|| samples.get(&alt)).copied();
            assert_eq!(got, Some(*n as f64), "{key} in /metrics vs the report");
        }
    }
    assert!(samples
        .keys()
        .any(|k| k.starts_with("corriere_io_request_duration_seconds_bucket")));

    sigterm(&d.child);
    let status = tokio::time::timeout(Duration::from_secs(40), d.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
}

/// Parses Prometheus text format strictly enough to fail on a malformed line: comments
/// (`# HELP`, `# TYPE`), and `name{labels} value` samples. Returns sample → value.
fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            let rest = rest.trim_start();
            assert!(
                rest.starts_with("HELP ") || rest.starts_with("TYPE "),
                "line {}: unexpected comment {line:?}",
                i + 1
            );
            if let Some(t) = rest.strip_prefix("TYPE ") {
                let kind = t.split_whitespace().nth(1).unwrap_or("");
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                    "line {}: bad type {line:?}",
                    i + 1
                );
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("line {}: {line:?}", i + 1));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "line {}: bad metric name {name:?}",
            i + 1
        );
        if name_end < series.len() {
            assert!(
                series.ends_with('}'),
                "line {}: unclosed labels {line:?}",
                i + 1
            );
        }
        let v: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("line {}: bad value {value:?}", i + 1)),
        };
        out.insert(series.to_owned(), v);
    }
    out
}
