//! The scheduler's scenarios in paused tokio time, against [`TableIo`]: an in-process IO whose
//! answers come from a table (per call: created, 429 with a retry hint, 5xx) and whose messages
//! are processed a set time after their submit. No socket, no real wait: a scenario of minutes
//! of IO time runs in milliseconds. The assertions are on what the table received (the ground
//! truth: who got a POST, when, how many polls), with the store's final states beside them.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use futures::future::BoxFuture;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use std::path::Path;

use super::*;
use crate::clock::Clock;
use crate::io_api::{ExternalMessage, IoError, LimitedProfile, MessageCreated, MessagesApi};
use crate::model::RecipientState;
use crate::model::{FiscalCode, NewMessage};
use crate::rate::RateBudget;
use crate::rate::{RateConfig, RateMode};
use crate::store::{JobId, Store};

/// One scripted answer to a POST /messages.
#[derive(Debug, Clone, Copy)]
enum Answer {
    /// 201 with a new id.
    Created,
    /// 429 with `x-rate-limit-retry-after`-style hint.
    Throttled(Duration),
    /// 500: IO may have created the message.
    ServerError,
}

/// A call the table received, with its (virtual) time.
#[derive(Debug, Clone)]
struct Call {
    kind: &'static str,
    fiscal_code: String,
    at: Instant,
}

#[derive(Default)]
struct Table {
    /// Answers to the next POSTs in order; `Created` once empty.
    answers: VecDeque<Answer>,
    calls: Vec<Call>,
    /// Message id → (recipient, submit time).
    messages: BTreeMap<String, (String, Instant)>,
    next_id: u64,
}

/// Runs at the n-th POST (1-based), before it is answered.
type SubmitHook = (usize, Box<dyn FnOnce() + Send>);

/// The in-process IO of the scenarios.
struct TableIo {
    table: Mutex<Table>,
    /// A message reads PROCESSED this long after its submit, ACCEPTED before.
    processing: Duration,
    on_submit: Mutex<Option<SubmitHook>>,
}

impl TableIo {
    fn new(answers: &[Answer], processing: Duration) -> Arc<TableIo> {
        Arc::new(TableIo {
            table: Mutex::new(Table {
                answers: answers.iter().copied().collect(),
                ..Table::default()
            }),
            processing,
            on_submit: Mutex::new(None),
        })
    }

    fn calls(&self, kind: &str) -> Vec<Call> {
        let t = self.table.lock().unwrap();
        t.calls.iter().filter(|c| c.kind == kind).cloned().collect()
    }

    /// POSTs answered 201, per recipient.
    fn created_per_recipient(&self) -> BTreeMap<String, usize> {
        let t = self.table.lock().unwrap();
        let mut m = BTreeMap::new();
        for (fc, _) in t.messages.values() {
            *m.entry(fc.clone()).or_insert(0) += 1;
        }
        m
    }
}

impl MessagesApi for TableIo {
    fn submit_message<'a>(
        &'a self,
        message: &'a NewMessage,
    ) -> BoxFuture<'a, Result<MessageCreated, IoError>> {
        Box::pin(async move {
            let fc = message
                .fiscal_code
                .as_ref()
                .expect("POST /messages carries the code in its body")
                .expose()
                .to_owned();
            let (n, answer) = {
                let mut t = self.table.lock().unwrap();
                t.calls.push(Call {
                    kind: "submit",
                    fiscal_code: fc.clone(),
                    at: Instant::now(),
                });
                let n = t.calls.iter().filter(|c| c.kind == "submit").count();
                (n, t.answers.pop_front().unwrap_or(Answer::Created))
            };
            let hook = {
                let mut h = self.on_submit.lock().unwrap();
                match h.take() {
                    Some((at, f)) if at == n => Some(f),
                    other => {
                        *h = other;
                        None
                    }
                }
            };
            if let Some(f) = hook {
                f();
            }
            match answer {
                Answer::Created => {
                    let mut t = self.table.lock().unwrap();
                    t.next_id += 1;
                    let id = format!("01TABLE{:019}", t.next_id);
                    t.messages.insert(id.clone(), (fc, Instant::now()));
                    Ok(MessageCreated { id })
                }
                Answer::Throttled(after) => Err(IoError::Throttled {
                    retry_after: Some(after),
                    remaining: Some(0),
                }),
                Answer::ServerError => Err(IoError::Server {
                    status: 500,
                    detail: "scripted".into(),
                }),
            }
        })
    }

    fn get_message<'a>(
        &'a self,
        fiscal_code: &'a FiscalCode,
        id: &'a str,
    ) -> BoxFuture<'a, Result<ExternalMessage, IoError>> {
        Box::pin(async move {
            let mut t = self.table.lock().unwrap();
            t.calls.push(Call {
                kind: "poll",
                fiscal_code: fiscal_code.expose().to_owned(),
                at: Instant::now(),
            });
            let (_, submitted) = t.messages.get(id).expect("polled ids were created");
            let status = if submitted.elapsed() >= self.processing {
                "PROCESSED"
            } else {
                "ACCEPTED"
            };
            Ok(serde_json::from_value(serde_json::json!({
                "message": { "id": id, "fiscal_code": fiscal_code.expose() },
                "status": status,
            }))
            .expect("a valid ExternalMessage"))
        })
    }

    fn get_profile<'a>(
        &'a self,
        fiscal_code: &'a FiscalCode,
    ) -> BoxFuture<'a, Result<LimitedProfile, IoError>> {
        Box::pin(async move {
            self.table.lock().unwrap().calls.push(Call {
                kind: "profile",
                fiscal_code: fiscal_code.expose().to_owned(),
                at: Instant::now(),
            });
            Ok(LimitedProfile {
                sender_allowed: true,
                preferred_languages: vec![],
            })
        })
    }
}

/// A job of `n` recipients (filter none), with `extra` template lines, ingested into a fresh
/// store. Returns the store, the job and the recipients' codes in file order.
async fn job(dir: &Path, n: u64, extra: &str) -> (Store, JobId, Vec<String>) {
    let t = dir.join("t.toml");
    std::fs::write(
        &t,
        format!(
            "subject = \"Avviso per {{{{nome}}}}\"\nmarkdown = \"Gentile {{{{nome}}}}, questo è un avviso di prova con testo a sufficienza per IO, davvero.\"\nfilter = \"none\"\n{extra}"
        ),
    )
    .unwrap();
    let codes: Vec<String> = (0..n)
        .map(|i| corriere_fake_io::synthetic_code(7, i))
        .collect();
    let r = dir.join("r.csv");
    let mut csv = String::from("fiscal_code,nome\n");
    for (i, c) in codes.iter().enumerate() {
        csv.push_str(&format!("{c},Nome {i}\n"));
    }
    std::fs::write(&r, csv).unwrap();
    let store = Store::open(&dir.join("store")).await.unwrap();
    let prepared = prepare_job(&store, &t, &r, &|_| {}).await.unwrap();
    (store, prepared.job, codes)
}

/// Requests in flight at once in every scenario (what may already be on its way when a 429
/// or a cancel arrives).
const IN_FLIGHT: usize = 4;

fn context(store: &Store, job: &JobId, io: Arc<TableIo>, clock: Clock) -> Arc<JobContext> {
    let budget = RateBudget::new(RateConfig {
        mode: RateMode::Unlimited,
        in_flight: IN_FLIGHT,
    });
    Arc::new(
        JobContext::load(
            store.clone(),
            job.clone(),
            io,
            budget,
            DispatchSettings {
                clock,
                ..DispatchSettings::default()
            },
            None,
        )
        .unwrap(),
    )
}

/// Wednesday 2 December 2026, 10:00 UTC: inside any working-hours window.
fn weekday_morning() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 2, 10, 0, 0).unwrap()
}

fn states(store: &Store, job: &JobId) -> BTreeMap<&'static str, u64> {
    store
        .count_states(job)
        .unwrap()
        .into_iter()
        .map(|(o, n)| (o.as_str(), n))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_429_holds_every_send_for_its_retry_hint_and_nobody_is_lost_or_sent_twice() {
    let dir = tempfile::tempdir().unwrap();
    let (store, job, codes) = job(dir.path(), 30, "poll = \"none\"\n").await;
    let hint = Duration::from_secs(7);
    let io = TableIo::new(
        &[Answer::Created, Answer::Created, Answer::Throttled(hint)],
        Duration::ZERO,
    );
    let ctx = context(&store, &job, io.clone(), Clock::tokio_at(weekday_morning()));
    let summary = super::run_job(ctx, CancellationToken::new()).await.unwrap();
    assert!(summary.completed);
    let submits = io.calls("submit");
    let throttled_at = submits[2].at;
    // Every POST after the 429 left at least the hint later (those already in flight aside:
    // at most in_flight of them were sent before the answer came back).
    let early = submits[3..]
        .iter()
        .filter(|c| c.at < throttled_at + hint)
        .count();
    assert!(
        early <= IN_FLIGHT,
        "{early} POSTs left inside the retry hint"
    );
    assert!(submits.last().unwrap().at >= throttled_at + hint);
    // Ground truth: each citizen has exactly one message.
    let created = io.created_per_recipient();
    assert_eq!(created.len(), codes.len());
    assert!(created.values().all(|&n| n == 1), "{created:?}");
    assert_eq!(states(&store, &job).get("submitted").copied(), Some(30));
}

#[tokio::test(start_paused = true)]
async fn polls_back_off_until_the_message_is_processed() {
    let dir = tempfile::tempdir().unwrap();
    let (store, job, _) = job(dir.path(), 5, "").await;
    // Processed ten minutes after the submit: the scheduler must keep polling, less and less
    // often, and stop at the first PROCESSED.
    let processing = Duration::from_secs(600);
    let io = TableIo::new(&[], processing);
    let ctx = context(&store, &job, io.clone(), Clock::tokio_at(weekday_morning()));
    let started = Instant::now();
    let summary = super::run_job(ctx, CancellationToken::new()).await.unwrap();
    assert!(summary.completed);
    assert_eq!(states(&store, &job).get("processed").copied(), Some(5));
    let submits = io.calls("submit");
    let polls = io.calls("poll");
    for s in &submits {
        let mine: Vec<Instant> = polls
            .iter()
            .filter(|p| p.fiscal_code == s.fiscal_code)
            .map(|p| p.at)
            .collect();
        // Finished by a poll after processing, and not one poll after that.
        let last = *mine.last().unwrap();
        assert!(last >= s.at + processing);
        assert_eq!(
            mine.iter().filter(|&&t| t >= s.at + processing).count(),
            1,
            "polled again after PROCESSED"
        );
        // Back-off: after the first poll (timed on the measured processing time), the gaps
        // never shrink, and ten minutes take a handful of polls, not one a second.
        let gaps: Vec<Duration> = mine.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(
            gaps.windows(2)
                .all(|g| g[1] + Duration::from_millis(5) >= g[0]),
            "{gaps:?}"
        );
        assert!(gaps.last().unwrap() >= &(gaps[0] * 10), "{gaps:?}");
        assert!(mine.len() <= 20, "{} polls for 10 minutes", mine.len());
    }
    // All of it in virtual time: the run ended soon after the last message was processed.
    assert!(started.elapsed() < processing * 3);
}

#[tokio::test(start_paused = true)]
async fn a_cancel_stops_new_sends_and_the_rest_end_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let (store, job, _) = job(dir.path(), 40, "poll = \"none\"\n").await;
    let io = TableIo::new(&[], Duration::ZERO);
    let ctx = context(&store, &job, io.clone(), Clock::tokio_at(weekday_morning()));
    {
        let control = ctx.control.clone();
        *io.on_submit.lock().unwrap() = Some((10, Box::new(move || control.cancel())));
    }
    let summary = super::run_job(ctx, CancellationToken::new()).await.unwrap();
    // A cancelled job ends: everyone not sent is `cancelled`, a final outcome.
    assert!(summary.completed);
    let sent = io.calls("submit").len();
    // The 10th POST cancels; at most the in-flight others were already on their way.
    assert!((10..=10 + IN_FLIGHT).contains(&sent), "{sent} POSTs");
    let counts = states(&store, &job);
    assert_eq!(counts.get("submitted").copied(), Some(sent as u64));
    assert_eq!(counts.get("cancelled").copied(), Some(40 - sent as u64));
    assert_eq!(
        counts.get("sending"),
        None,
        "nothing left in flight: {counts:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn after_a_crash_a_recipient_left_sending_is_unknown_and_never_sent_again() {
    let dir = tempfile::tempdir().unwrap();
    let (store, job, codes) = job(dir.path(), 10, "poll = \"none\"\n").await;
    // A crash between the durable intent and the answer: lines 2 and 5 stay `sending`.
    let mut batch = store.batch();
    for line in [2, 5] {
        batch.set_state(&job, line, RecipientState::Sending { at_ms: 1 });
    }
    store.commit(batch).await.unwrap();
    let io = TableIo::new(&[], Duration::ZERO);
    let ctx = context(&store, &job, io.clone(), Clock::tokio_at(weekday_morning()));
    let summary = super::run_job(ctx, CancellationToken::new()).await.unwrap();
    assert!(summary.completed);
    let sent: Vec<String> = io
        .calls("submit")
        .into_iter()
        .map(|c| c.fiscal_code)
        .collect();
    assert_eq!(sent.len(), 8);
    // Lines are 2-based (line 1 is the header): lines 2 and 5 are codes 0 and 3.
    for i in [0, 3] {
        assert!(!sent.contains(&codes[i]), "code {i} was sent again");
    }
    let counts = states(&store, &job);
    assert_eq!(counts.get("unknown").copied(), Some(2));
    assert_eq!(counts.get("submitted").copied(), Some(8));
}

#[tokio::test(start_paused = true)]
async fn a_closed_send_window_holds_every_send_until_it_opens() {
    let dir = tempfile::tempdir().unwrap();
    let (store, job, _) = job(
        dir.path(),
        6,
        "poll = \"none\"\nsend_window = \"mon-fri 09:00-18:00\"\n",
    )
    .await;
    // Saturday 5 December 2026, 22:00 in Rome: the window opens on Monday at 09:00.
    let start = chrono_tz::Europe::Rome
        .with_ymd_and_hms(2026, 12, 5, 22, 0, 0)
        .unwrap()
        .with_timezone(&Utc);
    let opens = chrono_tz::Europe::Rome
        .with_ymd_and_hms(2026, 12, 7, 9, 0, 0)
        .unwrap()
        .with_timezone(&Utc);
    let io = TableIo::new(&[], Duration::ZERO);
    let began = Instant::now();
    let ctx = context(&store, &job, io.clone(), Clock::tokio_at(start));
    let summary = super::run_job(ctx, CancellationToken::new()).await.unwrap();
    assert!(summary.completed);
    let submits = io.calls("submit");
    assert_eq!(submits.len(), 6);
    let wait = (opens - start).to_std().unwrap();
    assert!(
        submits.iter().all(|c| c.at >= began + wait),
        "a POST left before Monday 09:00"
    );
    assert!(submits
        .iter()
        .all(|c| c.at < began + wait + Duration::from_secs(120)));
}

#[tokio::test(start_paused = true)]
async fn a_5xx_on_a_post_makes_its_recipient_unknown_and_it_is_not_sent_again() {
    let dir = tempfile::tempdir().unwrap();
    let (store, job, _) = job(dir.path(), 8, "poll = \"none\"\n").await;
    let io = TableIo::new(&[Answer::Created, Answer::ServerError], Duration::ZERO);
    let ctx = context(&store, &job, io.clone(), Clock::tokio_at(weekday_morning()));
    let summary = super::run_job(ctx, CancellationToken::new()).await.unwrap();
    assert!(summary.completed);
    let submits = io.calls("submit");
    // IO may have created the second recipient's message: one POST each, never two.
    assert_eq!(submits.len(), 8);
    let unlucky = &submits[1].fiscal_code;
    assert_eq!(
        submits.iter().filter(|c| &c.fiscal_code == unlucky).count(),
        1
    );
    let counts = states(&store, &job);
    assert_eq!(counts.get("unknown").copied(), Some(1));
    assert_eq!(counts.get("submitted").copied(), Some(7));
}
