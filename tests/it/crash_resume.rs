//! `kill -9` at random moments: `corriere send` runs as a child process and is killed with
//! SIGKILL at least ten times during one job, then restarted each time, and finally left to
//! finish. Nothing is lost, nobody receives two messages, and `unknown` is at most
//! kills × the in-flight cap (only requests caught between the durable intent and the durable
//! answer can be ambiguous).

use crate::common;

use std::time::Duration;

use common::*;
use corriere_fake_io::{FakeRate, Processing};
use rand::Rng;

const IN_FLIGHT: u64 = 16;
const KILLS: usize = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_again_and_again_it_loses_nothing_and_sends_nothing_twice() {
    let n = 3000;
    let mut cfg = fake_config(n as u64 + 1000);
    cfg.processing = Processing {
        min: Duration::from_millis(50),
        median: Duration::from_millis(400),
        max: Duration::from_secs(2),
    };
    // Slow enough that the job spans every kill.
    cfg.rate = FakeRate::Capacity {
        per_second: 250.0,
        burst: 20.0,
    };
    let fake = start_fake(cfg).await;
    let dir = tempfile::tempdir().unwrap();
    let campaign = write_campaign(dir.path(), &fake, n, "none");
    let store = dir.path().join("store");
    let send = || {
        let mut c = send_campaign(&fake, &store, &campaign);
        c.env("CORRIERE_RATE_MODE", "adaptive")
            .env("CORRIERE_RATE_IN_FLIGHT", IN_FLIGHT.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        c
    };
    let mut rng = rand::thread_rng();
    let mut kills = 0;
    let mut moments = Vec::new();
    for _ in 0..KILLS {
        let mut child = send().spawn().unwrap();
        // A random moment: ingest, sending, polling, or a group commit in between.
        let ms = rng.gen_range(200..1400);
        moments.push(ms);
        tokio::select! {
            status = child.wait() => {
                // The job finished before this kill: fine, but the test needs its kills.
                assert!(status.unwrap().success());
                break;
            }
            () = tokio::time::sleep(Duration::from_millis(ms)) => {
                child.start_kill().unwrap(); // SIGKILL
                child.wait().await.unwrap();
                kills += 1;
            }
        }
    }
    println!("killed {kills} times, at {moments:?} ms after each start");
    assert!(
        kills >= 10,
        "only {kills} kills happened before the job ended"
    );
    let sent_before_final = fake.stats().messages_created;
    assert!(
        sent_before_final > 0,
        "the kills must have hit a job that was sending"
    );

    let report = dir.path().join("report.csv");
    let out = tokio::time::timeout(
        Duration::from_secs(300),
        send()
            .arg("--report")
            .arg(&report)
            .stderr(std::process::Stdio::piped())
            .output(),
    )
    .await
    .expect("the final run finishes")
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let counts = check_report(&read_report(&report), &campaign.expect, &["unknown"]);
    let stats = fake.stats();
    println!(
        "after {kills} kills: {counts:?}; messages created {}",
        stats.messages_created
    );
    assert_eq!(
        stats.max_per_recipient, 1,
        "nobody received the message twice"
    );
    let unknown = counts.get("unknown").copied().unwrap_or(0) as u64;
    assert!(
        unknown <= kills as u64 * IN_FLIGHT,
        "{unknown} unknown after {kills} kills"
    );
    let known =
        (counts.get("processed").unwrap_or(&0) + counts.get("rejected").unwrap_or(&0)) as u64;
    assert!(stats.messages_created >= known && stats.messages_created <= known + unknown);
}

/// SIGTERM (or Ctrl-C) is a clean stop: requests in flight finish and are recorded, the store is
/// flushed, the exit code says "resumable", and the next run finishes with nothing ambiguous.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_cleanly_and_leaves_nothing_unknown() {
    let n = 1000;
    let mut cfg = fake_config(n as u64 + 100);
    cfg.rate = FakeRate::Capacity {
        per_second: 200.0,
        burst: 10.0,
    };
    let fake = start_fake(cfg).await;
    let dir = tempfile::tempdir().unwrap();
    let campaign = write_campaign(dir.path(), &fake, n, "none");
    let store = dir.path().join("store");
    let send = || {
        let mut c = send_campaign(&fake, &store, &campaign);
        c.env("CORRIERE_RATE_MODE", "adaptive");
        c
    };
    let child = send()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the job is really sending, as the fake observes it (bounded).
    wait_until_created(&fake, 100).await;
    sigterm(&child);
    let out = child.wait_with_output().await.unwrap();
    assert_eq!(
        out.status.code(),
        Some(75),
        "a signal-stopped run exits 75 (resumable)"
    );
    let report = dir.path().join("report.csv");
    let out = send().arg("--report").arg(&report).output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let counts = check_report(&read_report(&report), &campaign.expect, &[]);
    assert_eq!(
        counts.get("unknown"),
        None,
        "a clean stop leaves nothing ambiguous: {counts:?}"
    );
    assert_eq!(fake.stats().max_per_recipient, 1);
}

/// The poll queue lives in memory and is rebuilt from the store: a run stopped while every sent
/// message still waits for its status leaves them `submitted`, and the next run polls each of
/// them to its final status without sending anything again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_waiting_for_a_status_are_polled_after_a_restart_not_sent_again() {
    let n = 300;
    let mut cfg = fake_config(n as u64 + 100);
    // IO takes a second or more to process: the first run ends before any first poll (due
    // 2 s after each submit) can find a message final.
    cfg.processing = Processing {
        min: Duration::from_millis(1000),
        median: Duration::from_millis(1500),
        max: Duration::from_secs(3),
    };
    let fake = start_fake(cfg).await;
    let dir = tempfile::tempdir().unwrap();
    let campaign = write_campaign(dir.path(), &fake, n, "none");
    // Lines IO gets a message for (subscribers, and non-subscribers IO rejects after creating).
    let sendable = campaign
        .expect
        .iter()
        .filter(|e| matches!(e, Expect::Subscribed | Expect::NotSubscribed))
        .count();
    let store = dir.path().join("store");
    let child = send_campaign(&fake, &store, &campaign)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Every message created, as the fake sees it (bounded wait).
    wait_until_created(&fake, sendable as u64).await;
    sigterm(&child);
    let out = child.wait_with_output().await.unwrap();
    assert_eq!(out.status.code(), Some(75), "stopped, resumable");
    let created = fake.stats().messages_created;
    let polls_before = fake
        .stats()
        .requests
        .get("get_message 200")
        .copied()
        .unwrap_or(0);

    // What the stop left: messages IO accepted, still waiting for their status.
    let job = local_job_id(&fake, &store).await;
    let out = corriere(&fake, &store)
        .args(["report", &job])
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let waiting = csv::ReaderBuilder::new()
        .delimiter(b';')
        .from_reader(out.stdout.as_slice())
        .records()
        .filter(|r| &r.as_ref().unwrap()[2] == "submitted")
        .count();
    println!("after the stop: {waiting} of {created} messages waiting for a status");
    assert!(waiting > 0, "the stop came before any message was final");

    let report = dir.path().join("report.csv");
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        send_campaign(&fake, &store, &campaign)
            .arg("--report")
            .arg(&report)
            .output(),
    )
    .await
    .expect("the second run finishes")
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let counts = check_report(&read_report(&report), &campaign.expect, &[]);
    let stats = fake.stats();
    let polls_after = stats.requests.get("get_message 200").copied().unwrap_or(0);
    println!(
        "{counts:?}; polls in the second run: {}",
        polls_after - polls_before
    );
    assert_eq!(created as usize, sendable);
    assert_eq!(stats.messages_created, created, "nothing sent again");
    let delivered = counts.get("processed").unwrap_or(&0) + counts.get("rejected").unwrap_or(&0);
    assert_eq!(
        delivered, sendable,
        "every message reached its final status"
    );
    assert_eq!(stats.max_per_recipient, 1);
    assert!(
        polls_after - polls_before >= waiting as u64,
        "each waiting message polled at least once"
    );
}
