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
use crate::store::{CampaignKey, JobId, Store};
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
    context_with(store, job, f, budget())
}

fn context_with(
    store: &Store,
    job: &JobId,
    f: &FakeIoHandle,
    budget: RateBudget,
) -> Arc<JobContext> {
    Arc::new(
        JobContext::load(
            store.clone(),
            job.clone(),
            Arc::new(client(f)),
            budget,
            DispatchSettings::default(),
            None,
        )
        .unwrap(),
    )
}

/// Directories `a`, `b`, … under `dir`, each with the same campaign (same subject) for the
/// fake's first `n` citizens, names differing (so each is a job of its own).
fn campaign_jobs(
    dir: &Path,
    f: &FakeIoHandle,
    n: usize,
    names: &[&str],
) -> Vec<(PathBuf, PathBuf)> {
    names
        .iter()
        .map(|name| {
            let d = dir.join(name);
            std::fs::create_dir_all(&d).unwrap();
            files(&d, f, n, name)
        })
        .collect()
}

fn state_of(store: &Store, job: &JobId, line: u64) -> RecipientState {
    store.recipient(job, line).unwrap().unwrap().state
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

/// Issue 14 review: a job stopped with its citizens queued, another job of the campaign took
/// them over, and the first was resumed: it reported them `already_sent` (no message id) on the
/// strength of a claim alone, and when the second was then cancelled nobody had sent them. A
/// claim is not a message: the resumed job sends them, the cancelled one never does, each
/// citizen gets exactly one, and a later job reports the message ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_whose_holder_never_sent_is_not_already_sent() {
    let f = fake(100).await;
    let dir = tempfile::tempdir().unwrap();
    let jobs = campaign_jobs(dir.path(), &f, 5, &["Nome", "Nomi", "Nomo"]);
    let store = Store::temporary().unwrap();
    let a = prepare_job(&store, &jobs[0].0, &jobs[0].1, &|_| {})
        .await
        .unwrap();
    // A is stopped before sending; B takes its citizens over.
    let b = prepare_job(&store, &jobs[1].0, &jobs[1].1, &|_| {})
        .await
        .unwrap();
    // A is resumed first: B has sent nothing, so A sends.
    run_completed(&store, &a.job, &f).await;
    // B is then cancelled: it never sends.
    set_job_flags(&store, &b.job, None, Some(true))
        .await
        .unwrap();
    run_completed(&store, &b.job, &f).await;
    let mut ids = Vec::new();
    for i in 0..5u64 {
        let fc = &f.population().citizen(i as usize).fiscal_code;
        assert_eq!(f.messages_for(fc), 1, "citizen {i}");
        match state_of(&store, &a.job, i + 2) {
            RecipientState::Submitted { id, .. } => ids.push(id),
            other => panic!("citizen {i} in A: {other:?}"),
        }
    }
    // A third job of the campaign: already sent, naming A and its message ids.
    let c = prepare_job(&store, &jobs[2].0, &jobs[2].1, &|_| {})
        .await
        .unwrap();
    for (i, id) in ids.into_iter().enumerate() {
        let line = i as u64 + 2;
        assert_eq!(
            state_of(&store, &c.job, line),
            RecipientState::AlreadySent {
                job: a.job.to_string(),
                line,
                id: Some(id)
            }
        );
    }
    f.shutdown().await;
}

/// Issue 14 review: two jobs of one campaign sending at once, both finding their citizens held
/// by a third job that never sent them (cancelled), could both take a citizen over and send.
/// The fake's ground truth: each citizen exactly one message; the job that did not send names
/// the one that did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_jobs_of_a_campaign_sending_at_once_never_send_one_citizen_twice() {
    const N: usize = 200;
    let f = fake(300).await;
    let dir = tempfile::tempdir().unwrap();
    let jobs = campaign_jobs(dir.path(), &f, N, &["Nome", "Nomi", "Nomo"]);
    let store = Store::temporary().unwrap();
    let mut ids = Vec::new();
    for (t, r) in &jobs {
        ids.push(prepare_job(&store, t, r, &|_| {}).await.unwrap().job);
    }
    let (a, b, c) = (ids[0].clone(), ids[1].clone(), ids[2].clone());
    // C, the last to ingest, holds every citizen; it is cancelled before sending any.
    set_job_flags(&store, &c, None, Some(true)).await.unwrap();
    run_completed(&store, &c, &f).await;
    assert_eq!(
        store.count_states(&c).unwrap().get(&Outcome::Cancelled),
        Some(&(N as u64))
    );
    let wide = || {
        RateBudget::new(RateConfig {
            mode: RateMode::Unlimited,
            in_flight: 32,
        })
    };
    let (ca, cb) = (
        context_with(&store, &a, &f, wide()),
        context_with(&store, &b, &f, wide()),
    );
    let (ra, rb) = tokio::join!(
        run_job(ca, CancellationToken::new()),
        run_job(cb, CancellationToken::new())
    );
    assert!(ra.unwrap().completed && rb.unwrap().completed);
    for i in 0..N {
        let fc = &f.population().citizen(i).fiscal_code;
        assert_eq!(f.messages_for(fc), 1, "citizen {i}");
        let line = i as u64 + 2;
        let (sa, sb) = (state_of(&store, &a, line), state_of(&store, &b, line));
        let (sender, other_state) = match (&sa, &sb) {
            (RecipientState::Submitted { .. }, s) => (&a, s),
            (s, RecipientState::Submitted { .. }) => (&b, s),
            _ => panic!("citizen {i}: nobody sent it: {sa:?} / {sb:?}"),
        };
        assert!(
            matches!(other_state, RecipientState::AlreadySent { job, .. } if job == sender.as_str()),
            "citizen {i}: {sa:?} / {sb:?}"
        );
    }
    f.shutdown().await;
}

/// Issue 14 review: deleting a job left its ledger entries pointing at records that no longer
/// exist, which read as "never sent": the next job of the campaign sent its citizens again. A
/// deleted job's sent citizens still count; the claims on the ones it never sent are released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_jobs_sent_citizens_still_count_and_its_unsent_ones_are_released() {
    let f = fake(100).await;
    let dir = tempfile::tempdir().unwrap();
    let jobs = campaign_jobs(dir.path(), &f, 10, &["Nome", "Nomi"]);
    let store = Store::temporary().unwrap();
    let a = prepare_job(&store, &jobs[0].0, &jobs[0].1, &|_| {})
        .await
        .unwrap();
    // A cancel half-way: the last five were never sent.
    let mut batch = store.batch();
    for line in 7..12 {
        batch.set_state(&a.job, line, RecipientState::Cancelled);
    }
    store.commit(batch).await.unwrap();
    run_completed(&store, &a.job, &f).await;
    delete_job(&store, &a.job).await.unwrap();
    assert!(JobMeta::load(&store, &a.job).unwrap().is_none());
    let b = prepare_job(&store, &jobs[1].0, &jobs[1].1, &|_| {})
        .await
        .unwrap();
    run_completed(&store, &b.job, &f).await;
    for i in 0..10u64 {
        let fc = &f.population().citizen(i as usize).fiscal_code;
        assert_eq!(f.messages_for(fc), 1, "citizen {i}");
        let state = state_of(&store, &b.job, i + 2);
        if i < 5 {
            assert_eq!(
                state,
                RecipientState::AlreadySent {
                    job: format!("{}~deleted", a.job),
                    line: i + 2,
                    id: None
                }
            );
        } else {
            assert!(
                matches!(state, RecipientState::Submitted { .. }),
                "{state:?}"
            );
        }
    }
    f.shutdown().await;
}

/// An ingest batch the ledger refuses (a send of another job claimed one of its citizens after
/// the batch read the ledger) is read again from where it started: every line is still one row,
/// once, under its own number, and the progress counts them once.
#[tokio::test]
async fn an_ingest_batch_refused_by_the_ledger_is_read_again_whole() {
    const N: u64 = INGEST_BATCH as u64 + 500;
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("t.toml");
    std::fs::write(
        &t,
        "subject = \"Avviso per {{nome}}\"\nmarkdown = \"Gentile {{nome}}, questo è un avviso di prova con testo a sufficienza per IO, davvero.\"\nfilter = \"none\"\n",
    )
    .unwrap();
    let r = dir.path().join("r.csv");
    let mut csv = String::from("fiscal_code;nome\n");
    for i in 0..N {
        csv.push_str(&format!(
            "{};Nome {i}\n",
            corriere_fake_io::synthetic_code(7, i)
        ));
    }
    std::fs::write(&r, csv).unwrap();
    let campaign = CampaignKey::of("Avviso per {{nome}}");
    // The first batch refused once, then (another store) the second.
    for refused in [1, 2] {
        let store = Store::temporary().unwrap();
        store.ledger_conflict_at_commit(refused);
        let p = prepare_job(&store, &t, &r, &|_| {}).await.unwrap();
        assert_eq!(p.rows_ingested, N);
        let meta = JobMeta::load(&store, &p.job).unwrap().unwrap();
        assert_eq!((meta.rows, meta.phase), (N, JobPhase::Running));
        assert_eq!(
            store.ingest_progress_rows(&p.job).unwrap(),
            (N + 1, true, Some(N))
        );
        let lines: Vec<u64> = store
            .scan_recipients(&p.job, 0)
            .map(|r| {
                let r = r.unwrap();
                assert_eq!(r.state, RecipientState::Queued, "line {}", r.line);
                r.line
            })
            .collect();
        assert_eq!(lines, (2..N + 2).collect::<Vec<_>>());
        for i in [0, N / 2, N - 1] {
            let fc: [u8; 16] = corriere_fake_io::synthetic_code(7, i)
                .as_bytes()
                .try_into()
                .unwrap();
            assert_eq!(
                store.ledger_holder(&campaign, &fc).unwrap(),
                Some((p.job.clone(), i + 2))
            );
        }
    }
}
