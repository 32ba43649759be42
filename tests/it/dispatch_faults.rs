//! The campaign under fault injection: a tight call window (429s with retry hints), 5 % 5xx,
//! connections dropped before and after the message was created, 200 ms latency. It completes,
//! every line is accounted for, nobody gets two messages, and `unknown` counts exactly the faults
//! that could have created a message (every 5xx and every dropped connection: the client cannot
//! tell them apart).

use crate::common;

use std::time::Duration;

use common::*;
use corriere_fake_io::{FakeRate, Faults, Processing};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_never_cause_a_duplicate_and_unknown_counts_the_ambiguous_ones() {
    let n = std::env::var("CORRIERE_TEST_FAULT_RECIPIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let mut cfg = fake_config(n as u64 + 1000);
    cfg.processing = Processing {
        min: Duration::from_millis(50),
        median: Duration::from_millis(300),
        max: Duration::from_secs(2),
    };
    // A tight window: the adaptive start (100 calls/s, growing) overshoots it on any machine.
    cfg.rate = FakeRate::Window {
        calls: 200,
        period: Duration::from_secs(1),
    };
    cfg.faults = Faults {
        latency: Duration::from_millis(200),
        error_5xx_rate: 0.05,
        drop_before_create_rate: 0.01,
        drop_after_create_rate: 0.01,
        ..Faults::default()
    };
    let fake = start_fake(cfg).await;
    let dir = tempfile::tempdir().unwrap();
    let campaign = write_campaign(dir.path(), &fake, n, "none");
    let report = dir.path().join("report.csv");
    let out = send_campaign(&fake, &dir.path().join("store"), &campaign)
        .env("CORRIERE_RATE_MODE", "adaptive")
        .env("CORRIERE_RATE_IN_FLIGHT", "200")
        .arg("--report")
        .arg(&report)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = read_report(&report);
    let counts = check_report(&rows, &campaign.expect, &["unknown"]);
    let stats = fake.stats();
    println!("{n} recipients under faults: {counts:?}; fake: 429s {}, 5xx {}, dropped before {}, after {}", stats.throttled, stats.fault_5xx, stats.fault_drop_before_create, stats.fault_drop_after_create);
    assert!(stats.throttled > 0, "the scenario must include throttling");
    assert_eq!(
        stats.max_per_recipient, 1,
        "nobody received the message twice"
    );
    let ambiguous =
        stats.fault_5xx + stats.fault_drop_before_create + stats.fault_drop_after_create;
    assert!(ambiguous > 0);
    assert_eq!(
        counts.get("unknown").copied().unwrap_or(0) as u64,
        ambiguous
    );
    // Messages created = those we know of + the ones created behind a dropped connection.
    let known = counts.get("processed").unwrap_or(&0) + counts.get("rejected").unwrap_or(&0);
    assert_eq!(
        stats.messages_created,
        known as u64 + stats.fault_drop_after_create
    );

    // The operator decides to re-send the Unknown ones: they go out once more; those whose
    // first message was created behind a dropped connection now have two, which is why this
    // needs an explicit --yes.
    fake.set_faults(Faults::default());
    let job = local_job_id(&fake, &dir.path().join("store")).await;
    let no = corriere(&fake, &dir.path().join("store"))
        .args(["resend-unknown", &job])
        .output()
        .await
        .unwrap();
    assert!(!no.status.success());
    let yes = corriere(&fake, &dir.path().join("store"))
        .args(["resend-unknown", &job, "--yes"])
        .output()
        .await
        .unwrap();
    assert!(
        yes.status.success(),
        "{}",
        String::from_utf8_lossy(&yes.stderr)
    );
    let after = fake.stats();
    assert_eq!(after.messages_created, stats.messages_created + ambiguous);
    assert_eq!(
        after.recipients_with_more_than_one,
        stats.fault_drop_after_create
    );
}
