//! The daemon in-process against the bundled fake IO: two jobs at once under one budget,
//! pause / resume / cancel, a shutdown mid-job and a restart, send windows, and a dry run
//! whose estimate matches the real run.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use corriere::clock::Clock;
use corriere::daemon::api::{Backend, Input, JobSpec, JobState, Submitted};
use corriere::daemon::{Daemon, DaemonParts};
use corriere::dispatch::DispatchSettings;
use corriere::feed::{Feed, FeedSettings};
use corriere::io_api::{ApiKey, IoClient, IoClientConfig};
use corriere::rate::{RateBudget, RateConfig, RateMode};
use corriere::runtime::{FeedAccess, Preflight, Runtime, RuntimeParts};
use corriere::store::Store;
use corriere_fake_io::{FakeIoHandle, FakeRate, Processing};
use tokio_util::sync::CancellationToken;

struct Running {
    daemon: Daemon,
    shutdown: CancellationToken,
}

async fn start(
    fake: &FakeIoHandle,
    dir: &std::path::Path,
    settings: DispatchSettings,
    with_feed: bool,
) -> Running {
    start_with(fake, dir, settings, with_feed, None).await
}

async fn start_with(
    fake: &FakeIoHandle,
    dir: &std::path::Path,
    settings: DispatchSettings,
    with_feed: bool,
    preflight: Option<Preflight>,
) -> Running {
    let store_dir = dir.join("store");
    let store = Store::open(&store_dir).await.unwrap();
    let budget = RateBudget::new(RateConfig {
        mode: RateMode::Adaptive {
            initial: 300.0,
            floor: 20.0,
            ceiling: 2000.0,
        },
        in_flight: 16,
    });
    let mut io = IoClientConfig::new(fake.base_url(), ApiKey::new(KEY));
    io.request_timeout = Duration::from_secs(5);
    let client = IoClient::new(io).unwrap();
    let feed = if with_feed {
        let (feed, _) = Feed::open(
            store.clone(),
            FeedSettings::new(store_dir.join("feed").join("subscribers.snapshot")),
        )
        .await
        .unwrap();
        FeedAccess::Open(Arc::new(feed))
    } else {
        FeedAccess::Off
    };
    let shutdown = CancellationToken::new();
    let daemon = Daemon::start(
        DaemonParts {
            runtime: Arc::new(Runtime::new(RuntimeParts {
                store,
                client,
                budget,
                settings,
                preflight,
                feed,
            })),
            // With the feed: synced at start (it is stale), then daily.
            feed_sync_at: with_feed.then(|| chrono::NaiveTime::from_hms_opt(0, 30, 0).unwrap()),
            uploads_dir: dir.join("uploads"),
            // Path submits read the test's own directory.
            input_dirs: vec![dir.canonicalize().unwrap()],
            upload_retention: Duration::from_secs(7 * 24 * 3600),
        },
        shutdown.clone(),
    )
    .await
    .unwrap();
    Running { daemon, shutdown }
}

fn spec(c: &Campaign) -> JobSpec {
    JobSpec {
        template: Input::Path(c.template.clone()),
        recipients: Input::Path(c.recipients.clone()),
        options: Default::default(),
    }
}

async fn submit(d: &Daemon, c: &Campaign) -> String {
    match d.submit(spec(c), false).await.unwrap() {
        Submitted::Job { id, existing } => {
            assert!(!existing);
            id
        }
        other => panic!("{other:?}"),
    }
}

/// Waits (on the daemon's own view, re-read whenever the fake answers more calls) until
/// `pred` holds; bounded.
async fn wait_for(
    d: &Daemon,
    fake: &FakeIoHandle,
    id: &str,
    what: &str,
    pred: impl Fn(&corriere::daemon::api::JobView) -> bool,
) -> corriere::daemon::api::JobView {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let v = d.get(id).await.unwrap();
        if pred(&v) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {v:?} (fake {:?})",
            fake.stats().requests_total
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn campaign_in(dir: &std::path::Path, fake: &FakeIoHandle, n: usize, filter: &str) -> Campaign {
    std::fs::create_dir_all(dir).unwrap();
    write_campaign(dir, fake, n, filter)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_jobs_pause_resume_cancel_shutdown_and_restart_lose_nothing() {
    let mut cfg = fake_config(12_000);
    cfg.rate = FakeRate::Capacity {
        per_second: 400.0,
        burst: 20.0,
    };
    cfg.processing = Processing {
        min: Duration::from_millis(10),
        median: Duration::from_millis(100),
        max: Duration::from_millis(500),
    };
    let fake = start_fake(cfg).await;
    let dir = tempfile::tempdir().unwrap();
    let a = campaign_in(&dir.path().join("a"), &fake, 3000, "none");
    // B uses other citizens than A (offset), so "nobody twice" is per job and across jobs.
    let b = {
        let d = dir.path().join("b");
        std::fs::create_dir_all(&d).unwrap();
        let c = write_campaign(&d, &fake, 6000, "profile");
        // Keep the last 3000 rows only (different citizens from A's).
        let text = std::fs::read_to_string(&c.recipients).unwrap();
        let mut lines = text.lines();
        let header = lines.next().unwrap().to_owned();
        let rest: Vec<&str> = lines.skip(3000).collect();
        std::fs::write(&c.recipients, format!("{header}\n{}\n", rest.join("\n"))).unwrap();
        Campaign {
            template: c.template,
            recipients: c.recipients,
            expect: c.expect[3000..].to_vec(),
        }
    };

    let run = start(&fake, dir.path(), DispatchSettings::default(), false).await;
    let id_a = submit(&run.daemon, &a).await;
    let id_b = submit(&run.daemon, &b).await;
    // The same inputs again are the same job.
    match run.daemon.submit(spec(&a), false).await.unwrap() {
        Submitted::Job { id, existing } => assert!(existing && id == id_a),
        other => panic!("{other:?}"),
    }

    // Pause A once it is sending; it stops sending while B goes on.
    wait_for(&run.daemon, &fake, &id_a, "A sending", |v| {
        v.counts.get("submitted").copied().unwrap_or(0)
            + v.counts.get("processed").copied().unwrap_or(0)
            > 100
    })
    .await;
    let paused = run.daemon.pause(&id_a).await.unwrap();
    assert_eq!(paused.state, JobState::Paused);
    // Once its in-flight sends have settled, A's count of messages stays put while B moves.
    let a_sent = |v: &corriere::daemon::api::JobView| {
        [
            "sending",
            "submitted",
            "processed",
            "rejected",
            "failed_status",
            "unknown",
            "failed",
        ]
        .iter()
        .map(|k| v.counts.get(*k).copied().unwrap_or(0))
        .sum::<u64>()
    };
    // A send that passed the gate just before the pause may still be starting: let B move a
    // little first, then freeze A's count.
    let b_start = run.daemon.get(&id_b).await.unwrap().settled;
    wait_for(&run.daemon, &fake, &id_b, "B moving on", |v| {
        v.settled > b_start + 50
    })
    .await;
    let a_view = wait_for(
        &run.daemon,
        &fake,
        &id_a,
        "A's in-flight sends settled",
        |v| v.counts.get("sending").copied().unwrap_or(0) == 0,
    )
    .await;
    let a_frozen = a_sent(&a_view);
    let b_before = run.daemon.get(&id_b).await.unwrap().settled;
    wait_for(
        &run.daemon,
        &fake,
        &id_b,
        "B progressing while A is paused",
        |v| v.settled > b_before + 200,
    )
    .await;
    assert_eq!(
        a_sent(&run.daemon.get(&id_a).await.unwrap()),
        a_frozen,
        "a paused job sends nothing"
    );
    run.daemon.resume(&id_a).await.unwrap();

    // Shut down mid-job (SIGTERM does this), then restart on the same store.
    wait_for(&run.daemon, &fake, &id_a, "A sending again", |v| {
        a_sent(v) > a_frozen + 50
    })
    .await;
    run.shutdown.cancel();
    assert!(
        run.daemon.drain(Duration::from_secs(30)).await,
        "drained in time"
    );
    drop(run);

    let run = start(&fake, dir.path(), DispatchSettings::default(), false).await;
    // Cancel B after the restart: what it sent is still polled, the rest is cancelled.
    let cancelled = run.daemon.cancel(&id_b).await.unwrap();
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert!(
        run.daemon.resume(&id_b).await.is_err(),
        "a cancelled job stays cancelled"
    );
    let a_done = wait_for(&run.daemon, &fake, &id_a, "A done", |v| {
        v.state == JobState::Done
    })
    .await;
    let b_done = wait_for(&run.daemon, &fake, &id_b, "B settled", |v| {
        v.settled == v.rows && v.rows > 0
    })
    .await;
    assert_eq!(a_done.settled, 3000);
    assert_eq!(
        a_done.counts.get("unknown").copied().unwrap_or(0),
        0,
        "a clean shutdown leaves nothing unknown"
    );
    assert!(b_done.counts.get("cancelled").copied().unwrap_or(0) > 0);
    assert_eq!(b_done.counts.get("queued").copied().unwrap_or(0), 0);

    // Every line of both reports exactly once; nobody messaged twice.
    for (id, c, cancelled_ok) in [(&id_a, &a, false), (&id_b, &b, true)] {
        let mut stream = run.daemon.report(id, Default::default()).await.unwrap();
        let mut csv = Vec::new();
        use futures::StreamExt;
        while let Some(chunk) = stream.next().await {
            csv.extend_from_slice(&chunk.unwrap());
        }
        let path = dir.path().join(format!("{id}.csv"));
        std::fs::write(&path, &csv).unwrap();
        let rows = read_report(&path);
        let extra: &[&str] = if cancelled_ok { &["cancelled"] } else { &[] };
        check_report(&rows, &c.expect, extra);
    }
    let stats = fake.stats();
    assert_eq!(
        stats.recipients_with_more_than_one, 0,
        "nobody received a message twice"
    );
    run.shutdown.cancel();
    run.daemon.drain(Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_outside_its_send_window_sends_nothing_until_it_opens() {
    let fake = start_fake(fake_config(3_000)).await;
    let dir = tempfile::tempdir().unwrap();
    let c = campaign_in(&dir.path().join("w"), &fake, 500, "none");
    // The clock reads 08:59:50 in Rome on a Wednesday; the window opens at 09:00.
    use chrono::TimeZone;
    let fake_now = chrono_tz::Europe::Rome
        .with_ymd_and_hms(2026, 11, 25, 8, 59, 50)
        .single()
        .unwrap()
        .with_timezone(&chrono::Utc);
    let settings = DispatchSettings {
        send_window: Some(
            corriere::model::SendWindow::parse("mon-fri 09:00-18:00", chrono_tz::Europe::Rome)
                .unwrap(),
        ),
        clock: Clock::starting_at(fake_now),
        ..DispatchSettings::default()
    };
    let run = start(&fake, dir.path(), settings, false).await;
    let id = submit(&run.daemon, &c).await;
    let waiting = wait_for(&run.daemon, &fake, &id, "waiting for the window", |v| {
        v.state == JobState::Waiting
    })
    .await;
    assert!(!waiting.send_window_open);
    assert_eq!(
        fake.stats().messages_created,
        0,
        "nothing sent outside the window"
    );
    assert!(waiting.settled < waiting.rows);
    let done = wait_for(
        &run.daemon,
        &fake,
        &id,
        "done after the window opened",
        |v| v.state == JobState::Done,
    )
    .await;
    assert_eq!(done.settled, 500);
    assert!(fake.stats().messages_created > 0);
    run.shutdown.cancel();
    run.daemon.drain(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_sends_nothing_and_its_call_estimate_matches_the_real_run() {
    let fake = start_fake(fake_config(20_000)).await;
    let dir = tempfile::tempdir().unwrap();
    let c = campaign_in(&dir.path().join("d"), &fake, 4000, "feed");
    let run = start(&fake, dir.path(), DispatchSettings::default(), true).await;
    // The daemon syncs the stale set at start; it is ready once the set is loaded.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !run.daemon.readiness().await.ready() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the set never loaded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let feed_calls_before = fake.stats().requests_total;
    let dry = match run.daemon.submit(spec(&c), true).await.unwrap() {
        Submitted::DryRun(r) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        fake.stats().requests_total,
        feed_calls_before,
        "a dry run calls nothing"
    );
    assert_eq!(dry.rows, 4000);
    assert_eq!(dry.calls.feed_days, 0, "the set is fresh: {dry:?}");
    assert!(dry.counts.get("invalid").copied().unwrap_or(0) > 0);
    assert!(dry
        .invalid
        .iter()
        .all(|r| r.line >= 2 && !r.field.is_empty()));

    let id = submit(&run.daemon, &c).await;
    let done = wait_for(&run.daemon, &fake, &id, "done", |v| {
        v.state == JobState::Done
    })
    .await;
    assert_eq!(done.settled, 4000);
    let real_total = fake.stats().requests_total - feed_calls_before;
    let estimate = dry.calls.total as f64;
    let error = (estimate - real_total as f64).abs() / real_total as f64;
    assert!(
        error <= 0.05,
        "estimate {estimate} vs real {real_total} calls ({:.1} %): {dry:?}",
        error * 100.0
    );
    let count =
        |m: &std::collections::BTreeMap<String, u64>, k: &str| m.get(k).copied().unwrap_or(0);
    assert_eq!(
        count(&done.counts, "not_subscribed"),
        count(&dry.counts, "not_subscribed")
    );
    assert_eq!(
        count(&done.counts, "invalid"),
        count(&dry.counts, "invalid")
    );
    assert_eq!(
        count(&done.counts, "duplicate"),
        count(&dry.counts, "duplicate")
    );
    assert_eq!(count(&done.counts, "processed"), count(&dry.counts, "send"));
    run.shutdown.cancel();
    run.daemon.drain(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_edited_after_submit_never_makes_a_second_job() {
    let mut cfg = fake_config(4_000);
    cfg.rate = FakeRate::Capacity {
        per_second: 200.0,
        burst: 10.0,
    };
    let fake = start_fake(cfg).await;
    let dir = tempfile::tempdir().unwrap();
    let c = campaign_in(&dir.path().join("e"), &fake, 1500, "none");
    let run = start(&fake, dir.path(), DispatchSettings::default(), false).await;
    let id = submit(&run.daemon, &c).await;
    wait_for(&run.daemon, &fake, &id, "ingested and sending", |v| {
        v.state == JobState::Running && v.settled > 50
    })
    .await;
    run.shutdown.cancel();
    assert!(run.daemon.drain(Duration::from_secs(30)).await);
    drop(run);

    // The operator edits the CSV in place while the daemon is down.
    let mut text = std::fs::read_to_string(&c.recipients).unwrap();
    text.push_str(&format!(
        "{};Nuovo;2026\n",
        fake.population().citizen(3999).fiscal_code
    ));
    std::fs::write(&c.recipients, text).unwrap();

    let run = start(&fake, dir.path(), DispatchSettings::default(), false).await;
    let done = wait_for(&run.daemon, &fake, &id, "the original job done", |v| {
        v.state == JobState::Done
    })
    .await;
    assert_eq!(
        done.rows, 1500,
        "the job keeps the rows it was submitted with"
    );
    let jobs = run.daemon.list().await.unwrap();
    assert_eq!(jobs.len(), 1, "no second job appeared: {jobs:?}");
    assert_eq!(
        fake.messages_for(&fake.population().citizen(3999).fiscal_code),
        0
    );
    assert_eq!(fake.stats().recipients_with_more_than_one, 0);
    run.shutdown.cancel();
    run.daemon.drain(Duration::from_secs(10)).await;
    drop(run);
    // Nor in the store, where the next restart would have found (and sent) it.
    let store = Store::open(&dir.path().join("store")).await.unwrap();
    assert_eq!(store.list_jobs().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_refuses_a_job_its_service_preflight_blocks_before_any_send() {
    let mut cfg = fake_config(3_000);
    // A sandbox key: it may message only its authorized recipients.
    cfg.services[0].sandbox = true;
    let fake = start_fake(cfg).await;
    let dir = tempfile::tempdir().unwrap();
    let c = campaign_in(&dir.path().join("p"), &fake, 300, "none");
    let mut raw = corriere::config::RawConfig::default();
    raw.io.base_url = Some(fake.base_url());
    raw.io.api_key = Some(corriere::config::Secret::new(KEY));
    let config = raw.validate(None).unwrap();
    let preflight = Preflight {
        settings: corriere::service::PreflightSettings::from(&config),
        source_ip: config.io.source_ip,
    };
    let run = start_with(
        &fake,
        dir.path(),
        DispatchSettings::default(),
        false,
        Some(preflight),
    )
    .await;
    let id = submit(&run.daemon, &c).await;
    let failed = wait_for(&run.daemon, &fake, &id, "refused by the preflight", |v| {
        v.state == JobState::Failed
    })
    .await;
    let error = failed.error.unwrap();
    assert!(
        error.contains("preflight") && error.to_lowercase().contains("sandbox"),
        "{error}"
    );
    assert_eq!(fake.stats().messages_created, 0, "nothing sent");
    assert_eq!(
        failed.counts.get("queued").copied().unwrap_or(0)
            + failed.counts.get("invalid").copied().unwrap_or(0)
            + failed.counts.get("duplicate").copied().unwrap_or(0),
        300
    );
    run.shutdown.cancel();
    run.daemon.drain(Duration::from_secs(10)).await;
}
