//! The `Sending` intent of every message is synced (sled's flush and `fdatasync` returned)
//! before its POST reaches IO: the store's sync observer marks each line whose intent a
//! completed sync made durable, and a loopback proxy in front of the fake checks, as each POST
//! arrives, that its citizen's line was marked. Ordering, not timing: a POST that left before
//! its intent's sync returned is counted as a violation whatever the machine's speed (each sync
//! is made 3 ms slower, so such a POST would always win the race).

use crate::common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use corriere::dispatch::{self, DispatchSettings, JobContext};
use corriere::rate::{RateBudget, RateConfig, RateMode};
use corriere::store::{Store, StoreOptions};
use tokio_util::sync::CancellationToken;

/// What the proxy saw.
#[derive(Default)]
struct Seen {
    /// POST /messages whose citizen's intent was synced before the request arrived.
    ok: AtomicU64,
    /// POST /messages that arrived before their intent's sync returned.
    early: AtomicU64,
}

/// A proxy on 127.0.0.1 forwarding everything to `upstream` (the fake's origin); each POST
/// /messages is checked against `synced` (fiscal codes) before it is forwarded.
async fn proxy(
    upstream: String,
    synced: Arc<Mutex<HashSet<String>>>,
    seen: Arc<Seen>,
) -> std::net::SocketAddr {
    use axum::body::{to_bytes, Body};
    use axum::extract::Request;
    use axum::response::Response;
    let http = reqwest::Client::new();
    let app = axum::Router::new().fallback(move |req: Request| {
        let http = http.clone();
        let upstream = upstream.clone();
        let synced = synced.clone();
        let seen = seen.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = to_bytes(body, 1 << 20).await.unwrap();
            if parts.method == http::Method::POST && parts.uri.path().ends_with("/messages") {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let fc = v["fiscal_code"].as_str().unwrap_or_default().to_owned();
                if synced.lock().unwrap().contains(&fc) {
                    seen.ok.fetch_add(1, Ordering::SeqCst);
                } else {
                    seen.early.fetch_add(1, Ordering::SeqCst);
                }
            }
            let mut out = http.request(
                parts.method.clone(),
                format!("{upstream}{}", parts.uri.path_and_query().unwrap()),
            );
            for (name, value) in &parts.headers {
                if name != http::header::HOST && name != http::header::CONTENT_LENGTH {
                    out = out.header(name, value);
                }
            }
            let answer = out.body(body).send().await.unwrap();
            let mut response = Response::builder().status(answer.status());
            for (name, value) in answer.headers() {
                response = response.header(name, value);
            }
            response
                .body(Body::from(answer.bytes().await.unwrap()))
                .unwrap()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sending_intent_is_synced_before_its_post_reaches_io() {
    let n = 600;
    let fake = start_fake(fake_config(n as u64 + 100)).await;
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("t.toml");
    std::fs::write(
        &template,
        "subject = \"Avviso per {{nome}}\"\nmarkdown = \"Gentile {{nome}}, questo è un avviso di prova con testo a sufficienza per IO, davvero.\"\nfilter = \"none\"\npoll = \"none\"\n",
    )
    .unwrap();
    let recipients = dir.path().join("r.csv");
    let mut csv = String::from("fiscal_code;nome\n");
    let codes: Vec<String> = (0..n)
        .map(|i| fake.population().citizen(i).fiscal_code.clone())
        .collect();
    for (i, fc) in codes.iter().enumerate() {
        csv.push_str(&format!("{fc};Nome {i}\n"));
    }
    std::fs::write(&recipients, csv).unwrap();

    // A real store on disk (fdatasync), every sync 3 ms slower.
    let store = Store::open_with(
        &dir.path().join("store"),
        StoreOptions {
            sync_delay: Duration::from_millis(3),
            ..StoreOptions::default()
        },
    )
    .await
    .unwrap();
    let prepared = dispatch::prepare_job(&store, &template, &recipients, &|_| {})
        .await
        .unwrap();
    let synced = Arc::new(Mutex::new(HashSet::new()));
    let marks = synced.clone();
    let job = prepared.job.clone();
    store.set_sync_observer(Some(Arc::new(move |lines| {
        let mut set = marks.lock().unwrap();
        for (j, line) in lines {
            assert_eq!(j, &job);
            // CSV line 2 is the first citizen.
            set.insert(codes[*line as usize - 2].clone());
        }
    })));
    let seen = Arc::new(Seen::default());
    let origin = fake.base_url().trim_end_matches("/api/v1").to_owned();
    let addr = proxy(origin, synced.clone(), seen.clone()).await;

    let mut cfg = corriere::io_api::IoClientConfig::new(
        format!("http://{addr}/api/v1"),
        corriere::io_api::ApiKey::new(KEY),
    );
    cfg.request_timeout = Duration::from_secs(10);
    let client = corriere::io_api::IoClient::new(cfg).unwrap();
    let budget = RateBudget::new(RateConfig {
        mode: RateMode::Unlimited,
        in_flight: 64,
    });
    let before = store.io_stats();
    let ctx = Arc::new(
        JobContext::load(
            store.clone(),
            prepared.job.clone(),
            std::sync::Arc::new(client),
            budget,
            DispatchSettings::default(),
            None,
        )
        .unwrap(),
    );
    let summary = dispatch::run_job(ctx, CancellationToken::new())
        .await
        .unwrap();
    assert!(summary.completed);
    let after = store.io_stats();

    // Ground truth: the fake created one message per citizen, and every POST it got had been
    // preceded by the sync of its intent.
    assert_eq!(fake.stats().messages_created, n as u64);
    assert_eq!(fake.stats().max_per_recipient, 1);
    assert_eq!(
        seen.early.load(Ordering::SeqCst),
        0,
        "POSTs before their intent's sync"
    );
    assert_eq!(seen.ok.load(Ordering::SeqCst), n as u64);
    // Each sync is counted by the store; one sync can carry many intents, never fewer than
    // one per sync that made one durable.
    let syncs = after.syncs - before.syncs;
    assert!(syncs >= 1 && syncs <= 2 * n as u64 + 2, "{syncs} syncs");
    println!(
        "{n} sends: {syncs} durable syncs ({:.3} per recipient)",
        syncs as f64 / n as f64
    );
}
