//! A whole campaign through the real `corriere send` against the fake IO: every line of the CSV
//! accounted for exactly once, nobody messaged twice, and a re-run does not send again.

use crate::common;

use std::time::Duration;

use common::*;
use corriere_fake_io::Processing;

/// Recipients in the campaign (override with CORRIERE_TEST_RECIPIENTS).
fn scale() -> usize {
    std::env::var("CORRIERE_TEST_RECIPIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_ends_with_every_line_accounted_for_once() {
    let n = scale();
    let mut cfg = fake_config(n as u64 + 1000);
    cfg.processing = Processing {
        min: Duration::from_millis(50),
        median: Duration::from_millis(300),
        max: Duration::from_secs(2),
    };
    let fake = start_fake(cfg).await;
    let dir = tempfile::tempdir().unwrap();
    let campaign = write_campaign(dir.path(), &fake, n, "none");
    let report = dir.path().join("report.csv");
    let store = dir.path().join("store");
    let out = send_campaign(&fake, &store, &campaign)
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
    let counts = check_report(&rows, &campaign.expect, &[]);
    println!("{n} recipients: {counts:?}");
    let stats = fake.stats();
    assert_eq!(
        stats.max_per_recipient, 1,
        "nobody received the message twice"
    );
    let sent = counts.get("processed").unwrap_or(&0) + counts.get("rejected").unwrap_or(&0);
    assert_eq!(stats.messages_created as usize, sent);
    // Every reported message id is one the fake created for that line's citizen.
    assert!(rows
        .iter()
        .filter(|r| r.outcome == "processed")
        .all(|r| r.message_id.len() == 26 && r.status == "PROCESSED"));
    // Polls per message stay near one (the budget is shared with sends).
    let polls = stats.requests.get("get_message 200").copied().unwrap_or(0) as f64;
    println!("polls per message: {:.3}", polls / sent as f64);

    // The same command again: the job is found complete; nothing is sent again.
    let again = send_campaign(&fake, &store, &campaign)
        .output()
        .await
        .unwrap();
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("(resumed)"));
    assert_eq!(fake.stats().messages_created, stats.messages_created);

    // The report command gives the same rows, masked unless --clear.
    let job = local_job_id(&fake, &store).await;
    let masked = corriere(&fake, &store)
        .args(["report", &job])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&masked.stdout);
    assert_eq!(text.lines().count(), n + 1);
    let clear_code = &fake.population().citizen(0).fiscal_code;
    assert!(!text.contains(clear_code.as_str()));
    let clear = corriere(&fake, &store)
        .args(["report", &job, "--clear"])
        .output()
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&clear.stdout).contains(clear_code.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_filter_skips_non_subscribers_without_sending() {
    let n = 600;
    let fake = start_fake(fake_config(1000)).await;
    let dir = tempfile::tempdir().unwrap();
    let campaign = write_campaign(dir.path(), &fake, n, "profile");
    let report = dir.path().join("report.csv");
    let out = send_campaign(&fake, &dir.path().join("store"), &campaign)
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
    let counts = check_report(&read_report(&report), &campaign.expect, &[]);
    // Profile filter: non-subscribers are never sent, so nothing is rejected by IO.
    assert_eq!(counts.get("rejected"), None, "{counts:?}");
    assert!(counts["not_subscribed"] > 0);
    assert_eq!(fake.stats().messages_created as usize, counts["processed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_naming_a_missing_column_sends_nothing() {
    let fake = start_fake(fake_config(100)).await;
    let dir = tempfile::tempdir().unwrap();
    let campaign = write_campaign(dir.path(), &fake, 50, "none");
    std::fs::write(&campaign.template, "subject = \"Avviso per {{cognome}}\"\nmarkdown = \"{{cognome}}: un testo che da solo non basta ai limiti di IO, ma la colonna manca.\"\nfiscal_code_column = \"codice_fiscale\"\n").unwrap();
    let out = send_campaign(&fake, &dir.path().join("store"), &campaign)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(65));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cognome") && err.contains("template.toml"),
        "{err}"
    );
    assert_eq!(fake.stats().requests_total, 0);
}
