//! Feed sync against the in-process fake IO: exactness, ordering, incremental runs, resume,
//! faults, snapshots.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::io_api::{ApiKey, IoClientConfig};
use crate::observe::BudgetObserver;
use crate::rate::{RateConfig, RateMode};
use corriere_fake_io::{FakeIo, FakeIoConfig, FakeIoHandle, FakeRate, Faults};

/// 61 days after the feed's first day: every sync here fetches about 60 days, not the ~2 400
/// days of a real today.
const TODAY: (i32, u32, u32) = (2020, 5, 24);

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(TODAY.0, TODAY.1, TODAY.2).unwrap()
}

fn yesterday() -> NaiveDate {
    today() - chrono::Days::new(1)
}

async fn fake(population: u64, rate: FakeRate) -> FakeIoHandle {
    let config = FakeIoConfig {
        population,
        seed: 11,
        today: Some(today()),
        rate,
        ..FakeIoConfig::default()
    };
    FakeIo::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn budget(mode: RateMode) -> RateBudget {
    RateBudget::new(RateConfig {
        mode,
        in_flight: 16,
    })
}

fn client(fake: &FakeIoHandle, budget: &RateBudget) -> IoClient {
    let mut cfg = IoClientConfig::new(fake.base_url(), ApiKey::new("fake-primary-key"));
    cfg.request_timeout = Duration::from_secs(5);
    IoClient::new(cfg)
        .unwrap()
        .with_observer(Arc::new(BudgetObserver::new(budget.clone())))
}

fn truth(fake: &FakeIoHandle, through: NaiveDate) -> HashSet<Key> {
    fake.population()
        .subscribers_through(day_number(through))
        .map(|h| Key::from_hex(&h).unwrap())
        .collect()
}

fn contents(feed: &Feed) -> HashSet<Key> {
    feed.subscribers().load().set.iter().collect()
}

fn settings(dir: &std::path::Path) -> FeedSettings {
    FeedSettings::new(dir.join("feed").join("subscribers.snapshot"))
}

async fn open(dir: &std::path::Path) -> (Feed, OpenReport) {
    let store = Store::open(&dir.join("store")).await.unwrap();
    Feed::open(store, settings(dir)).await.unwrap()
}

/// A whole sync up to yesterday, without progress or shutdown.
async fn sync_all(feed: &Feed, c: &IoClient, b: &RateBudget) -> Result<SyncStats, FeedError> {
    feed.sync(c, b, until_yesterday(), &|_| {}, &CancellationToken::new())
        .await
}

fn until_yesterday() -> SyncOptions {
    SyncOptions {
        until: Some(yesterday()),
        ..SyncOptions::default()
    }
}

#[tokio::test]
async fn a_full_sync_equals_the_ground_truth_and_a_second_sync_fetches_nothing() {
    let fake = fake(20_000, FakeRate::Unlimited).await;
    let b = budget(RateMode::Unlimited);
    let c = client(&fake, &b);
    let dir = tempfile::tempdir().unwrap();
    let (feed, report) = open(dir.path()).await;
    assert_eq!(report.subscribers, 0);
    assert_eq!(feed.freshness(), Freshness::NeverSynced);
    let stats = sync_all(&feed, &c, &b).await.unwrap();
    let expected = truth(&fake, yesterday());
    assert_eq!(contents(&feed), expected);
    assert_eq!(stats.subscribers, expected.len());
    assert_eq!(stats.through, Some(yesterday()));
    assert_eq!(stats.days_applied, day_number(yesterday()) + 1);
    assert!(stats.unsubscriptions > 0, "the population unsubscribes");
    assert!(stats.snapshot_bytes > 0);

    let calls = fake.stats().requests_total;
    let again = sync_all(&feed, &c, &b).await.unwrap();
    assert_eq!(again.days_applied, 0);
    assert_eq!(fake.stats().requests_total, calls, "nothing fetched again");
    assert_eq!(contents(&feed), expected);
}

#[tokio::test]
async fn an_incremental_sync_equals_a_full_one_and_stops_at_the_unpublished_day() {
    let fake = fake(20_000, FakeRate::Unlimited).await;
    let b = budget(RateMode::Unlimited);
    let c = client(&fake, &b);
    let dir = tempfile::tempdir().unwrap();
    let (feed, _) = open(dir.path()).await;

    // IO has published up to 20 days ago: the sync ends there without an error.
    let horizon = today() - chrono::Days::new(20);
    fake.set_feed_horizon(Some(horizon));
    let first = sync_all(&feed, &c, &b).await.unwrap();
    assert_eq!(first.not_published_from, Some(horizon));
    let before = horizon - chrono::Days::new(1);
    assert_eq!(first.through, Some(before));
    assert_eq!(contents(&feed), truth(&fake, before));

    fake.set_feed_horizon(None);
    let second = sync_all(&feed, &c, &b).await.unwrap();
    assert_eq!(second.days_applied, 20);
    assert_eq!(second.first_day, Some(horizon));
    assert_eq!(contents(&feed), truth(&fake, yesterday()));

    // A restart loads the snapshot and agrees.
    drop(feed);
    let (reopened, report) = open(dir.path()).await;
    assert!(report.from_snapshot && report.snapshot_refused.is_none());
    assert_eq!(report.through, Some(yesterday()));
    assert_eq!(contents(&reopened), truth(&fake, yesterday()));
}

#[tokio::test]
async fn an_interrupted_sync_resumes_where_it_stopped_and_equals_a_full_one() {
    let fake = fake(20_000, FakeRate::Unlimited).await;
    let b = budget(RateMode::Unlimited);
    let c = client(&fake, &b);
    let dir = tempfile::tempdir().unwrap();
    let (feed, _) = open(dir.path()).await;
    let stop = CancellationToken::new();
    let stopper = stop.clone();
    let partial = feed
        .sync(
            &c,
            &b,
            until_yesterday(),
            &move |p: &SyncProgress| {
                if p.days_done >= 25 {
                    stopper.cancel();
                }
            },
            &stop,
        )
        .await
        .unwrap();
    assert!(partial.interrupted);
    assert!(partial.days_applied >= 25 && partial.through < Some(yesterday()));
    assert_eq!(contents(&feed), truth(&fake, partial.through.unwrap()));
    drop(feed);

    let (feed, report) = open(dir.path()).await;
    assert!(report.from_snapshot);
    assert_eq!(report.through, partial.through);
    let calls = fake.stats().requests_total;
    let rest = sync_all(&feed, &c, &b).await.unwrap();
    assert_eq!(
        rest.first_day,
        partial.through.map(|d| d + chrono::Days::new(1))
    );
    assert_eq!(
        u64::from(partial.days_applied + rest.days_applied),
        u64::from(day_number(yesterday()) + 1),
        "no day fetched twice, none skipped"
    );
    assert_eq!(
        fake.stats().requests_total - calls,
        u64::from(rest.days_applied)
    );
    assert_eq!(contents(&feed), truth(&fake, yesterday()));
}

#[tokio::test]
async fn open_replays_the_journal_in_order_and_drops_days_after_a_hole() {
    let dir = tempfile::tempdir().unwrap();
    let key = |i: u8| Key::from_hex(&format!("{i:02x}").repeat(32)).unwrap();
    {
        let store = Store::open(&dir.path().join("store")).await.unwrap();
        let day = |d, subs: &[u8], unsubs: &[u8]| {
            FeedDayRecord::new(
                d,
                subs.iter().map(|&i| key(i).to_bytes()).collect(),
                unsubs.iter().map(|&i| key(i).to_bytes()).collect(),
            )
        };
        store
            .put_feed_days(&[
                day(0, &[1, 2, 3], &[]),
                day(1, &[4], &[2]),
                day(2, &[2], &[1]),
                // Day 3 is missing: day 4 cannot be applied in order.
                day(4, &[9], &[4]),
            ])
            .await
            .unwrap();
    }
    let (feed, report) = open(dir.path()).await;
    assert!(!report.from_snapshot && report.snapshot_refused.is_none());
    assert_eq!(report.replayed_days, 3);
    assert_eq!(report.through, Some(feed_epoch() + chrono::Days::new(2)));
    let want: HashSet<Key> = [2, 3, 4].into_iter().map(key).collect();
    assert_eq!(contents(&feed), want);
    assert_eq!(
        feed.store.feed_last_day().unwrap(),
        Some(2),
        "day 4 will be fetched again"
    );
}

#[tokio::test]
async fn a_corrupt_snapshot_is_refused_and_the_set_rebuilt_from_the_feed() {
    let fake = fake(5_000, FakeRate::Unlimited).await;
    let b = budget(RateMode::Unlimited);
    let c = client(&fake, &b);
    let dir = tempfile::tempdir().unwrap();
    let (feed, _) = open(dir.path()).await;
    sync_all(&feed, &c, &b).await.unwrap();
    drop(feed);
    let path = dir.path().join("feed").join("subscribers.snapshot");
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 5] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();

    let (feed, report) = open(dir.path()).await;
    assert!(report.snapshot_refused.unwrap().contains("CRC"));
    assert!(
        report.rebuilt,
        "the journal was pruned: the feed must be fetched again"
    );
    assert_eq!(report.subscribers, 0);
    assert_eq!(feed.freshness(), Freshness::NeverSynced);
    sync_all(&feed, &c, &b).await.unwrap();
    assert_eq!(contents(&feed), truth(&fake, yesterday()));
}

#[tokio::test]
async fn server_errors_and_overload_are_retried_and_no_day_is_skipped() {
    let fake = fake(
        10_000,
        // Far below the budget's start (1000/s), with room for two calls at once: the sync's
        // concurrent first calls overflow it however slowly a loaded machine sends them.
        FakeRate::Capacity {
            per_second: 20.0,
            burst: 2.0,
        },
    )
    .await;
    fake.set_faults(Faults {
        // 61 calls: at 20 % the chance of no 5xx at all is 1 in a million.
        error_5xx_rate: 0.2,
        all_endpoints: true,
        ..Faults::default()
    });
    let b = budget(RateMode::Adaptive {
        initial: 1000.0,
        floor: 50.0,
        ceiling: 2000.0,
    });
    let c = client(&fake, &b);
    let dir = tempfile::tempdir().unwrap();
    let (mut feed, _) = open(dir.path()).await;
    feed.settings.max_attempts = 20;
    let stats = sync_all(&feed, &c, &b).await.unwrap();
    assert!(stats.retried > 0, "5xx were retried: {stats:?}");
    assert!(stats.throttled > 0, "429s were waited out: {stats:?}");
    assert_eq!(stats.days_applied, day_number(yesterday()) + 1);
    assert_eq!(contents(&feed), truth(&fake, yesterday()));
}

#[tokio::test]
async fn a_day_that_keeps_failing_stops_the_sync_with_its_date_and_keeps_earlier_days() {
    let fake = fake(2_000, FakeRate::Unlimited).await;
    fake.set_faults(Faults {
        error_5xx_rate: 1.0,
        all_endpoints: true,
        ..Faults::default()
    });
    let b = budget(RateMode::Unlimited);
    let c = client(&fake, &b);
    let dir = tempfile::tempdir().unwrap();
    let (mut feed, _) = open(dir.path()).await;
    feed.settings.max_attempts = 2;
    feed.settings.concurrency = 1;
    tokio::time::pause();
    let err = sync_all(&feed, &c, &b).await.unwrap_err();
    match err {
        FeedError::Day { date, attempts, .. } => {
            assert_eq!(date, feed_epoch());
            assert_eq!(attempts, 2);
        }
        other => panic!("{other}"),
    }
    assert_eq!(feed.freshness(), Freshness::NeverSynced);
}

#[tokio::test]
async fn a_resync_from_a_date_reapplies_the_suffix_exactly() {
    let fake = fake(10_000, FakeRate::Unlimited).await;
    let b = budget(RateMode::Unlimited);
    let c = client(&fake, &b);
    let dir = tempfile::tempdir().unwrap();
    let (feed, _) = open(dir.path()).await;
    sync_all(&feed, &c, &b).await.unwrap();
    let from = today() - chrono::Days::new(15);
    let stats = feed
        .sync(
            &c,
            &b,
            SyncOptions {
                from: Some(from),
                until: Some(yesterday()),
                full: false,
            },
            &|_| {},
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(stats.days_applied, 15);
    assert_eq!(stats.through, Some(yesterday()));
    assert_eq!(contents(&feed), truth(&fake, yesterday()));
}

#[test]
fn a_hash_in_both_lists_of_one_day_ends_subscribed() {
    let k = Key::from_hex(&"ab".repeat(32)).unwrap();
    let other = Key::from_hex(&"cd".repeat(32)).unwrap();
    let day = FeedDayRecord::new(5, vec![k.to_bytes()], vec![k.to_bytes(), other.to_bytes()]);
    let mut stats = SyncStats::default();
    let fetched = Fetched {
        day: 5,
        subscriptions: vec![k],
        unsubscriptions: vec![k, other],
        malformed: 0,
        throttled: 0,
        retried: 0,
    };
    assert_eq!(to_record(&fetched, &mut stats), day);
    assert_eq!(stats.conflicts, 1);
    let mut pending = vec![(other, true)];
    push_day(&mut pending, &day);
    let set = SubscriberSet::default().apply(pending);
    assert!(set.contains_key(k), "subscribed wins inside a day");
    assert!(!set.contains_key(other), "a later unsubscription removes");
}
