//! Issue 14 through the daemon's admin API (the real daemon in-process, its API on 127.0.0.1,
//! the bundled fake IO's ground truth): a Windows-1252 upload is refused whole without
//! `encoding`, then sent whole with `?encoding=windows-1252`, accents right in every body IO
//! received; a dry run of an edited file counts `already_sent`, another lists a conflicting
//! duplicate first and counts a past due date; the same submit again is the
//! same job; `?allow_repeat=true` sends the campaign again; `GET /jobs/{id}/report` starts with
//! a UTF-8 BOM and uses the input's `;`.

use crate::common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use corriere::admin::ServerLimits;
use corriere::daemon::api::{Backend, JobState};
use corriere::daemon::{Daemon, DaemonParts};
use corriere::dispatch::DispatchSettings;
use corriere::io_api::{ApiKey, IoClient, IoClientConfig};
use corriere::rate::{RateBudget, RateConfig, RateMode};
use corriere::runtime::{FeedAccess, Runtime, RuntimeParts};
use corriere::store::Store;
use corriere_fake_io::FakeIoHandle;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const TEMPLATE: &str = "subject = \"Avviso TARI {{anno}}\"\n\
    markdown = \"Gentile {{nome}}, è disponibile il tuo avviso TARI per l'anno {{anno}}. Puoi pagarlo dall'app IO entro la scadenza.\"\n\
    filter = \"none\"\npoll = \"none\"\n";

struct Running {
    daemon: Daemon,
    addr: SocketAddr,
    shutdown: CancellationToken,
}

/// The daemon and its admin API (no token: loopback only).
async fn start(fake: &FakeIoHandle, dir: &std::path::Path) -> Running {
    let store = Store::open(&dir.join("store")).await.unwrap();
    let budget = RateBudget::new(RateConfig {
        mode: RateMode::Unlimited,
        in_flight: 8,
    });
    let mut io = IoClientConfig::new(fake.base_url(), ApiKey::new(KEY));
    io.request_timeout = Duration::from_secs(5);
    let shutdown = CancellationToken::new();
    let daemon = Daemon::start(
        DaemonParts {
            runtime: Arc::new(Runtime::new(RuntimeParts {
                store,
                client: IoClient::new(io).unwrap(),
                budget,
                settings: DispatchSettings::default(),
                preflight: None,
                feed: FeedAccess::Off,
            })),
            feed_sync_at: None,
            uploads_dir: dir.join("uploads"),
            input_dirs: Vec::new(),
            upload_retention: Duration::from_secs(3600),
        },
        shutdown.clone(),
    )
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(corriere::admin::serve(
        listener,
        Arc::new(daemon.clone()),
        None,
        corriere::metrics::install().unwrap(),
        ServerLimits::default(),
        shutdown.clone(),
    ));
    Running {
        daemon,
        addr,
        shutdown,
    }
}

fn form(template: &str, csv: &[u8]) -> reqwest::multipart::Form {
    reqwest::multipart::Form::new()
        .part(
            "template",
            reqwest::multipart::Part::bytes(template.as_bytes().to_vec()).file_name("t.toml"),
        )
        .part(
            "recipients",
            reqwest::multipart::Part::bytes(csv.to_vec()).file_name("excel.csv"),
        )
}

async fn submit(r: &Running, query: &str, csv: &[u8]) -> (u16, Value) {
    submit_with(r, query, TEMPLATE, csv).await
}

async fn submit_with(r: &Running, query: &str, template: &str, csv: &[u8]) -> (u16, Value) {
    let res = reqwest::Client::new()
        .post(format!("http://{}/jobs{query}", r.addr))
        .multipart(form(template, csv))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Waits (at most a minute) until job `id` is done.
async fn wait_done(r: &Running, id: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let view = r.daemon.get(id).await.unwrap();
        match view.state {
            JobState::Done => return,
            JobState::Failed => panic!("job {id} failed: {:?}", view.error),
            _ => {}
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job {id} not done: {view:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_takes_an_encoding_and_allow_repeat_and_its_report_opens_in_excel() {
    let fake = start_fake(fake_config(50)).await;
    let dir = tempfile::tempdir().unwrap();
    let r = start(&fake, dir.path()).await;
    // What Italian Excel writes: Windows-1252, CRLF, `;`. "Niccolò" on odd rows only, so a
    // partial campaign would send the others.
    let codes: Vec<String> = (0..6)
        .map(|i| fake.population().citizen(i).fiscal_code.clone())
        .collect();
    let excel = |even_name: &[u8]| {
        let mut csv = b"fiscal_code;nome;anno\r\n".to_vec();
        for (i, fc) in codes.iter().enumerate() {
            csv.extend_from_slice(fc.as_bytes());
            csv.push(b';');
            csv.extend_from_slice(if i % 2 == 1 { b"Niccol\xf2" } else { even_name });
            csv.extend_from_slice(b";2026\r\n");
        }
        csv
    };
    let csv = excel(b"Mario");

    // Without an encoding: refused whole, naming the line and the way out; nothing created.
    let (status, body) = submit(&r, "", &csv).await;
    assert!((400..500).contains(&status), "{status} {body}");
    let text = body.to_string();
    assert!(
        text.contains("line 3") && text.contains("windows-1252"),
        "{text}"
    );
    assert!(r.daemon.list().await.unwrap().is_empty());
    assert_eq!(fake.stats().messages_created, 0);

    // `?encoding=windows-1252`: the whole file, accents right in what IO received.
    let (status, body) = submit(&r, "?encoding=windows-1252", &csv).await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    wait_done(&r, &id).await;
    for (i, fc) in codes.iter().enumerate() {
        let bodies = fake.contents_for(fc);
        assert_eq!(bodies.len(), 1, "citizen {i}");
        if i % 2 == 1 {
            assert!(bodies[0].contains("Gentile Niccolò,"), "{}", bodies[0]);
        }
    }

    // The report: a UTF-8 BOM, the input's `;`, one row per line.
    let report = reqwest::Client::new()
        .get(format!("http://{}/jobs/{id}/report", r.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(report.status().as_u16(), 200);
    let bytes = report.bytes().await.unwrap();
    assert!(
        bytes.starts_with(b"\xEF\xBB\xBFline;fiscal_code;outcome"),
        "{:?}",
        String::from_utf8_lossy(&bytes[..bytes.len().min(80)])
    );
    let text = std::str::from_utf8(&bytes[3..]).unwrap();
    let rows: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(rows.len(), 6, "{text}");
    for (i, row) in rows.iter().enumerate() {
        assert!(
            row.starts_with(&format!("{};", i + 2)) && !row.contains(','),
            "{row}"
        );
    }

    // A dry run of the file with a name fixed and a new citizen: the campaign ledger counts
    // the six as already sent, one to send; nothing is created or sent.
    let mut edited = excel(b"Marco");
    edited.extend_from_slice(fake.population().citizen(6).fiscal_code.as_bytes());
    edited.extend_from_slice(b";Nuova;2026\r\n");
    let (status, body) = submit(&r, "?encoding=windows-1252&dry_run=true", &edited).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["counts"]["already_sent"].as_u64(), Some(6), "{body}");
    assert_eq!(body["counts"]["send"].as_u64(), Some(1), "{body}");
    assert_eq!(r.daemon.list().await.unwrap().len(), 1);
    assert_eq!(fake.stats().messages_created, 6);

    // Checks at load in a dry run: a conflicting duplicate is listed first among the rows not
    // sent, then the invalid ones; a due date in the past is counted, with its line.
    let dated = format!("{TEMPLATE}due_date = \"{{{{scadenza}}}}\"\ncampaign = \"Scadenze\"\n");
    let pop = fake.population();
    let rows = format!(
        "fiscal_code;nome;anno;scadenza\n\
         {a};Anna;2026;31/12/2099\n\
         {b};Bruno;2026;31/01/2020\n\
         NOTACODE;Ugo;2026;31/12/2099\n\
         {a};Anna Maria;2026;31/12/2099\n",
        a = pop.citizen(10).fiscal_code,
        b = pop.citizen(11).fiscal_code,
    );
    let (status, body) = submit_with(&r, "?dry_run=true", &dated, rows.as_bytes()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["counts"]["send"].as_u64(), Some(2), "{body}");
    assert_eq!(
        body["counts"]["duplicate_conflict"].as_u64(),
        Some(1),
        "{body}"
    );
    assert_eq!(body["counts"]["invalid"].as_u64(), Some(1), "{body}");
    let listed: Vec<u64> = body["invalid"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["line"].as_u64().unwrap())
        .collect();
    assert_eq!(listed, vec![5, 4], "the conflict first: {body}");
    assert!(body["invalid"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("line 2"));
    assert_eq!(
        body["due_date_in_past"]["count"].as_u64(),
        Some(1),
        "{body}"
    );
    assert_eq!(body["due_date_in_past"]["lines"], serde_json::json!([3]));
    assert_eq!(fake.stats().messages_created, 6);

    // The same submit again is the same job: nothing sent again.
    let (status, body) = submit(&r, "?encoding=windows-1252", &csv).await;
    assert_eq!(
        (status, body["existing"].as_bool()),
        (200, Some(true)),
        "{body}"
    );
    assert_eq!(fake.stats().messages_created, 6);

    // `allow_repeat=true`: a new job, recorded as such, that sends the campaign again.
    let (status, body) = submit(&r, "?encoding=windows-1252&allow_repeat=true", &csv).await;
    assert_eq!(status, 201, "{body}");
    let again = body["id"].as_str().unwrap().to_owned();
    assert_ne!(again, id);
    wait_done(&r, &again).await;
    for (i, fc) in codes.iter().enumerate() {
        let bodies = fake.contents_for(fc);
        assert_eq!(bodies.len(), 2, "citizen {i}");
        if i % 2 == 1 {
            assert!(bodies[1].contains("Gentile Niccolò,"), "{}", bodies[1]);
        }
    }
    r.shutdown.cancel();
    r.daemon.drain(Duration::from_secs(10)).await;
    fake.shutdown().await;
}
