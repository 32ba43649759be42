//! Regression tests of the engine defects found by reading the code (issue 14, point 8) and of
//! the campaign ledger, against the bundled fake IO on 127.0.0.1.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::ledger::LEDGER_BACKFILLED_META;
use super::*;
use crate::io_api::{ApiKey, IoClient, IoClientConfig};
use crate::model::{Outcome, RecipientRecord, RecipientState};
use crate::rate::{RateBudget, RateConfig, RateMode};
use crate::store::{JobId, Store};
use corriere_fake_io::{FakeIo, FakeIoConfig, FakeIoHandle, FakeRate, Processing};

pub(super) async fn fake(population: u64) -> FakeIoHandle {
    let cfg = FakeIoConfig {
        population,
        rate: FakeRate::Unlimited,
        processing: Processing {
            min: Duration::ZERO,
            median: Duration::ZERO,
            max: Duration::ZERO,
        },
        ..FakeIoConfig::default()
    };
    FakeIo::start(cfg, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn client(f: &FakeIoHandle) -> IoClient {
    let mut cfg = IoClientConfig::new(f.base_url(), ApiKey::new("fake-primary-key"));
    cfg.request_timeout = Duration::from_secs(5);
    IoClient::new(cfg).unwrap()
}

fn budget() -> RateBudget {
    RateBudget::new(RateConfig {
        mode: RateMode::Unlimited,
        in_flight: 4,
    })
}

/// Writes a template (filter none, no polls) and a CSV of the fake's first `n` citizens.
pub(super) fn files(dir: &Path, f: &FakeIoHandle, n: usize, name: &str) -> (PathBuf, PathBuf) {
    let t = dir.join("t.toml");
    std::fs::write(
        &t,
        "subject = \"Avviso per {{nome}}\"\nmarkdown = \"Gentile {{nome}}, questo è un avviso di prova con testo a sufficienza per IO, davvero.\"\nfilter = \"none\"\npoll = \"none\"\n",
    )
    .unwrap();
    let r = dir.join("r.csv");
    let mut csv = String::from("fiscal_code;nome\n");
    for i in 0..n {
        csv.push_str(&format!(
            "{};{name} {i}\n",
            f.population().citizen(i).fiscal_code
        ));
    }
    std::fs::write(&r, csv).unwrap();
    (t, r)
}

/// Runs `job` to its end and asserts it completed.
async fn run_completed(store: &Store, job: &JobId, f: &FakeIoHandle) {
    let ctx = context(store, job, f).await;
    assert!(
        super::run_job(ctx, CancellationToken::new())
            .await
            .unwrap()
            .completed
    );
}

pub(super) async fn context(store: &Store, job: &JobId, f: &FakeIoHandle) -> Arc<JobContext> {
    Arc::new(
        JobContext::load(
            store.clone(),
            job.clone(),
            Arc::new(client(f)),
            budget(),
            DispatchSettings::default(),
            None,
        )
        .unwrap(),
    )
}

#[tokio::test]
async fn requeue_unknown_keeps_an_interrupted_ingest_and_counts_sending() {
    let store = Store::temporary().unwrap();
    let job = JobId::new("j1");
    let meta = JobMeta {
        sheet: None,
        id: "j1".into(),
        created_at: String::new(),
        template_path: "t.toml".into(),
        template_text: String::new(),
        recipients_path: "r.csv".into(),
        header: vec![],
        phase: JobPhase::Ingesting,
        rows: 0,
        paused: false,
        cancelled: false,
        campaign: None,
        allow_repeat: false,
        encoding: None,
        delimiter: None,
        lines: None,
        due_date_in_past: DueDateWarnings::default(),
    };
    store.put_job_meta(&job, &meta.encode()).unwrap();
    let mut b = store.batch();
    let fc = crate::model::RowFiscalCode::valid(
        crate::model::FiscalCode::parse("RSSMRA85T10A562S").unwrap(),
    );
    for (line, state) in [
        (2, RecipientState::Sending { at_ms: 1 }),
        (
            3,
            RecipientState::Unknown {
                reason: "timeout".into(),
                id: None,
            },
        ),
        (
            4,
            RecipientState::Unknown {
                reason: "commit".into(),
                id: Some("01ARZ3NDEKTSV4RRFFQ69G5FAV".into()),
            },
        ),
    ] {
        b.put_recipient(
            &job,
            &RecipientRecord {
                line,
                fiscal_code: fc.clone(),
                values: vec![],
                state,
            },
        );
    }
    store.commit(b).await.unwrap();
    let done = requeue_unknown(&store, &job).await.unwrap();
    assert_eq!(
        done,
        Requeued {
            recovered: 1,
            requeued: 2,
            kept_with_id: 1
        }
    );
    // Before the fix the phase became Running and the rest of the CSV was never read.
    assert_eq!(
        JobMeta::load(&store, &job).unwrap().unwrap().phase,
        JobPhase::Ingesting
    );
    assert_eq!(
        store.recipient(&job, 2).unwrap().unwrap().state,
        RecipientState::Queued
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_after_a_201_keeps_the_message_id() {
    let f = fake(100).await;
    let dir = tempfile::tempdir().unwrap();
    let (t, r) = files(dir.path(), &f, 1, "Nome");
    let store = Store::temporary().unwrap();
    let prepared = prepare_job(&store, &t, &r, &|_| {}).await.unwrap();
    store.fail_next_submitted_commit();
    let ctx = context(&store, &prepared.job, &f).await;
    let result = super::run_job(ctx, CancellationToken::new()).await;
    assert!(
        matches!(result, Err(DispatchError::Commit(_))),
        "{result:?}"
    );
    let fc = &f.population().citizen(0).fiscal_code;
    assert_eq!(f.messages_for(fc), 1);
    // The id IO gave is in the store: not `sending` (which a restart would make an unknown
    // without id, and resend-unknown would duplicate).
    let rec = store.recipient(&prepared.job, 2).unwrap().unwrap();
    assert!(
        matches!(rec.state, RecipientState::Submitted { .. }),
        "{:?}",
        rec.state
    );
    assert_eq!(
        requeue_unknown(&store, &prepared.job)
            .await
            .unwrap()
            .requeued,
        0
    );
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_job_leaves_a_citizen_another_job_took_over() {
    let f = fake(100).await;
    let dir = tempfile::tempdir().unwrap();
    let a_dir = dir.path().join("a");
    let b_dir = dir.path().join("b");
    std::fs::create_dir_all(&a_dir).unwrap();
    std::fs::create_dir_all(&b_dir).unwrap();
    // Same campaign (same subject), the name fixed in B: a different job.
    let (ta, ra) = files(&a_dir, &f, 5, "Nome");
    let (tb, rb) = files(&b_dir, &f, 5, "Nomi");
    let store = Store::temporary().unwrap();
    let a = prepare_job(&store, &ta, &ra, &|_| {}).await.unwrap();
    // A was ingested and stopped before sending: B takes its citizens over and sends them.
    let b = prepare_job(&store, &tb, &rb, &|_| {}).await.unwrap();
    assert_ne!(a.job, b.job);
    run_completed(&store, &b.job, &f).await;
    // A is resumed later: it checks the ledger before each send and sends nobody.
    run_completed(&store, &a.job, &f).await;
    for i in 0..5 {
        assert_eq!(f.messages_for(&f.population().citizen(i).fiscal_code), 1);
    }
    let counts = store.count_states(&a.job).unwrap();
    assert_eq!(counts.get(&Outcome::AlreadySent), Some(&5), "{counts:?}");
    f.shutdown().await;
}

#[tokio::test]
async fn conflicting_duplicates_and_already_sent_are_told_apart_at_ingest() {
    let f = fake(100).await;
    let dir = tempfile::tempdir().unwrap();
    let (t, _) = files(dir.path(), &f, 0, "Nome");
    let a = f.population().citizen(0).fiscal_code.clone();
    let b = f.population().citizen(1).fiscal_code.clone();
    let r = dir.path().join("dup.csv");
    std::fs::write(
        &r,
        format!("fiscal_code;nome\n{a};Uno\n{a};Uno\n{a};Due\n{b};Tre\n"),
    )
    .unwrap();
    let store = Store::temporary().unwrap();
    let p = prepare_job(&store, &t, &r, &|_| {}).await.unwrap();
    let state = |line| store.recipient(&p.job, line).unwrap().unwrap().state;
    assert_eq!(state(2), RecipientState::Queued);
    assert_eq!(state(3), RecipientState::Duplicate { first_line: 2 });
    assert_eq!(
        state(4),
        RecipientState::DuplicateConflict { first_line: 2 }
    );
    f.shutdown().await;
}

#[tokio::test]
async fn a_citizen_queued_under_two_lines_of_one_job_is_sent_once() {
    // A take-over and back (job A → B → A, met again at a later line) can leave one job with a
    // citizen queued under two lines while the ledger names only one of them.
    let f = fake(100).await;
    let dir = tempfile::tempdir().unwrap();
    let (t, r) = files(dir.path(), &f, 1, "Nome");
    let store = Store::temporary().unwrap();
    let a = prepare_job(&store, &t, &r, &|_| {}).await.unwrap();
    let first = store.recipient(&a.job, 2).unwrap().unwrap();
    assert_eq!(first.state, RecipientState::Queued);
    let mut batch = store.batch();
    batch.put_recipient(
        &a.job,
        &RecipientRecord {
            line: 9,
            ..first.clone()
        },
    );
    store.commit(batch).await.unwrap();
    let fc = *first.fiscal_code.code().unwrap().as_bytes();
    let campaign = crate::store::CampaignKey::of("Avviso per {{nome}}");
    store.set_ledger_holder(&campaign, &fc, &a.job, 9).unwrap();
    run_completed(&store, &a.job, &f).await;
    assert_eq!(f.messages_for(&f.population().citizen(0).fiscal_code), 1);
    assert_eq!(
        store.recipient(&a.job, 2).unwrap().unwrap().state,
        RecipientState::Duplicate { first_line: 9 }
    );
    f.shutdown().await;
}

#[tokio::test]
async fn a_rerun_after_an_upgrade_does_not_send_a_campaign_again() {
    let f = fake(100).await;
    let dir = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&a_dir).unwrap();
    std::fs::create_dir_all(&b_dir).unwrap();
    let (ta, ra) = files(&a_dir, &f, 5, "Nome");
    let store = Store::temporary().unwrap();
    let a = prepare_job(&store, &ta, &ra, &|_| {}).await.unwrap();
    run_completed(&store, &a.job, &f).await;
    // As a store of the release before campaigns: no ledger, no campaign in the job.
    store.forget_campaign_ledger();
    update_meta(&store, &a.job, |m| m.campaign = None).unwrap();
    store.meta_remove_for_tests(LEDGER_BACKFILLED_META);
    // The operator fixes a name and runs the campaign again.
    let (tb, rb) = files(&b_dir, &f, 5, "Nomi");
    let b = prepare_job(&store, &tb, &rb, &|_| {}).await.unwrap();
    run_completed(&store, &b.job, &f).await;
    for i in 0..5 {
        assert_eq!(f.messages_for(&f.population().citizen(i).fiscal_code), 1);
    }
    let counts = store.count_states(&b.job).unwrap();
    assert_eq!(counts.get(&Outcome::AlreadySent), Some(&5), "{counts:?}");
    f.shutdown().await;
}
