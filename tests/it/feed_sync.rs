//! `corriere feed sync` (the real binary) against the bundled fake IO on 127.0.0.1: the set
//! equals the fake's ground truth exactly (a population of 100 000 with unsubscriptions and
//! re-subscriptions), an incremental second sync equals a full one, a sync killed with SIGKILL
//! half-way and run again equals a full one, and a job with `filter = "feed"` sends only to
//! subscribers.

use crate::common;

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use common::*;
use corriere::feed::{Feed, FeedSettings, Key};
use corriere::store::Store;
use corriere_fake_io::{FakeIoHandle, Faults};

const POPULATION: u64 = 100_000;

fn yesterday() -> chrono::NaiveDate {
    corriere::clock::Clock::System.today() - chrono::Days::new(1)
}

fn day_offset(d: chrono::NaiveDate) -> u32 {
    (d - corriere::feed::feed_epoch()).num_days() as u32
}

fn truth(fake: &FakeIoHandle, through: chrono::NaiveDate) -> HashSet<Key> {
    fake.population()
        .subscribers_through(day_offset(through))
        .map(|h| Key::from_hex(&h).unwrap())
        .collect()
}

async fn set_in(store_dir: &Path) -> (HashSet<Key>, Option<chrono::NaiveDate>) {
    let store = Store::open(store_dir).await.unwrap();
    let (feed, _) = Feed::open(
        store,
        FeedSettings::new(store_dir.join("feed").join("subscribers.snapshot")),
    )
    .await
    .unwrap();
    let p = feed.subscribers().load();
    (p.set.iter().collect(), p.through)
}

fn sync(fake: &FakeIoHandle, store: &Path) -> tokio::process::Command {
    let mut cmd = corriere(fake, store);
    cmd.args(["feed", "sync"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    cmd
}

async fn run_ok(mut cmd: tokio::process::Command) -> String {
    let out = cmd.output().await.unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "corriere failed: {err}");
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_sync_equals_the_ground_truth_and_an_incremental_one_equals_a_full_one() {
    let fake = start_fake(fake_config(POPULATION)).await;
    let dir = tempfile::tempdir().unwrap();

    // Full sync in one go.
    let full = dir.path().join("full");
    let out = run_ok(sync(&fake, &full)).await;
    assert!(out.contains("subscribers"), "{out}");
    let (full_set, through) = set_in(&full).await;
    assert_eq!(through, Some(yesterday()));
    let expected = truth(&fake, yesterday());
    let population = fake.population();
    let unsubscribed = (0..population.len())
        .filter(|&i| !population.citizen(i).subscribed_now)
        .count();
    let resubscribed = (0..population.len())
        .filter(|&i| population.citizen(i).events.len() == 3)
        .count();
    assert!(
        unsubscribed > 10_000 && resubscribed > 1_000,
        "{unsubscribed} {resubscribed}"
    );
    assert_eq!(full_set.len(), expected.len());
    assert!(full_set == expected, "the set equals the ground truth");

    // Incremental: IO has published up to 400 days ago, then everything.
    let incremental = dir.path().join("incremental");
    let horizon = corriere::clock::Clock::System.today() - chrono::Days::new(400);
    fake.set_feed_horizon(Some(horizon));
    let out = run_ok(sync(&fake, &incremental)).await;
    assert!(out.contains("not published by IO yet"), "{out}");
    let (partial, through) = set_in(&incremental).await;
    assert_eq!(through, Some(horizon - chrono::Days::new(1)));
    assert!(partial == truth(&fake, horizon - chrono::Days::new(1)));
    fake.set_feed_horizon(None);
    let before = fake.stats().requests_total;
    run_ok(sync(&fake, &incremental)).await;
    assert_eq!(
        fake.stats().requests_total - before,
        400,
        "only the new days are fetched"
    );
    let (incremental_set, through) = set_in(&incremental).await;
    assert_eq!(through, Some(yesterday()));
    assert!(incremental_set == full_set, "incremental equals full");

    // Nothing new: no call at all.
    let before = fake.stats().requests_total;
    run_ok(sync(&fake, &incremental)).await;
    assert_eq!(fake.stats().requests_total, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_killed_half_way_and_run_again_equals_a_full_one() {
    let fake = start_fake(fake_config(POPULATION)).await;
    // Slow enough that the kill lands in the middle, with some 5xx to retry on the way.
    fake.set_faults(Faults {
        latency: Duration::from_millis(15),
        error_5xx_rate: 0.02,
        all_endpoints: true,
        ..Faults::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let days = u64::from(day_offset(yesterday())) + 1;
    let mut child = sync(&fake, &store).spawn().unwrap();
    // Wait (on the fake's own counter) until about half of the days were served.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while fake.stats().requests_total < days / 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sync did not get half-way"
        );
        assert!(child.try_wait().unwrap().is_none(), "finished too early");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.start_kill().unwrap(); // SIGKILL
    child.wait().await.unwrap();
    let served_before_kill = fake.stats().requests_total;
    assert!(
        served_before_kill < days + days / 10,
        "killed before the end"
    );

    fake.set_faults(Faults::default());
    let out = run_ok(sync(&fake, &store)).await;
    let resumed_calls = fake.stats().requests_total - served_before_kill;
    assert!(
        resumed_calls < days * 3 / 4,
        "the second run resumed from the journal instead of starting over ({resumed_calls} calls for {days} days): {out}"
    );
    let (set, through) = set_in(&store).await;
    assert_eq!(through, Some(yesterday()));
    assert!(set == truth(&fake, yesterday()), "resumed equals full");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_filtered_job_sends_only_to_subscribers() {
    let fake = start_fake(fake_config(30_000)).await;
    let dir = tempfile::tempdir().unwrap();
    let campaign = write_campaign(dir.path(), &fake, 5_000, "feed");
    let store = dir.path().join("store");
    let report = dir.path().join("report.csv");
    // No sync first: `send` syncs the set itself because it has never been synced.
    let mut cmd = send_campaign(&fake, &store, &campaign);
    cmd.arg("--report")
        .arg(&report)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let out = run_ok(cmd).await;
    assert!(
        out.contains("syncing the subscriptions feed first"),
        "{out}"
    );
    let rows = read_report(&report);
    let counts = check_report(&rows, &campaign.expect, &[]);
    let subscribed = campaign
        .expect
        .iter()
        .filter(|e| **e == Expect::Subscribed)
        .count();
    assert_eq!(counts.get("processed").copied().unwrap_or(0), subscribed);
    assert_eq!(
        counts.get("rejected").copied().unwrap_or(0),
        0,
        "non-subscribers are filtered locally, never sent"
    );
    let stats = fake.stats();
    assert_eq!(
        stats.messages_created, subscribed as u64,
        "one message per subscriber"
    );
    assert_eq!(stats.recipients_with_more_than_one, 0);
}
