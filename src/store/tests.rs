use super::*;
use crate::model::{FiscalCode, NotSubscribedReason, Outcome, RowFiscalCode};

fn job() -> JobId {
    JobId::new("0123abcd")
}

fn record(line: u64, state: RecipientState) -> RecipientRecord {
    RecipientRecord {
        line,
        fiscal_code: RowFiscalCode::valid(FiscalCode::parse("RSSMRA85T10A562S").unwrap()),
        values: vec!["Mario".into(), "12,50".into(), "2026-12-31".into()],
        state,
    }
}

fn every_state() -> Vec<RecipientState> {
    let ulid = "01ARZ3NDEKTSV4RRFFQ69G5FAV".to_string();
    vec![
        RecipientState::Queued,
        RecipientState::Sending {
            at_ms: 1_700_000_000_123,
        },
        RecipientState::Submitted {
            id: ulid.clone(),
            at_ms: 42,
        },
        RecipientState::Submitted {
            id: "not-a-ulid".into(),
            at_ms: 42,
        },
        RecipientState::Final {
            id: ulid.clone(),
            status: "PROCESSED".into(),
            read_status: Some("UNREAD".into()),
            payment_status: None,
            notification: Some("email=SENT".into()),
            at_ms: u64::MAX,
            polls: 3,
        },
        RecipientState::PollExpired {
            id: ulid.clone(),
            at_ms: 9,
            polls: u16::MAX,
        },
        RecipientState::NotSubscribed {
            reason: NotSubscribedReason::Feed,
        },
        RecipientState::NotSubscribed {
            reason: NotSubscribedReason::ProfileNotFound,
        },
        RecipientState::NotSubscribed {
            reason: NotSubscribedReason::SenderNotAllowed,
        },
        RecipientState::Invalid {
            field: "content.subject".into(),
            reason: "9 caratteri è poco".into(),
        },
        RecipientState::Duplicate { first_line: 7 },
        RecipientState::Failed {
            status: 403,
            title: "Recipient forbidden".into(),
            detail: "x".into(),
        },
        RecipientState::Unknown {
            reason: "timeout".into(),
            id: None,
        },
        RecipientState::Unknown {
            reason: "decode".into(),
            id: Some(ulid),
        },
    ]
}

#[test]
fn every_state_round_trips() {
    for (i, state) in every_state().into_iter().enumerate() {
        for fc in [
            RowFiscalCode::valid(FiscalCode::parse("RSSMRA85T10A562S").unwrap()),
            RowFiscalCode::raw("not a code àè"),
            RowFiscalCode::raw(""),
        ] {
            let r = RecipientRecord {
                line: i as u64,
                fiscal_code: fc,
                values: vec![String::new(), "ù".repeat(300)],
                state: state.clone(),
            };
            let back = RecipientRecord::decode(r.line, &r.encode()).unwrap();
            assert_eq!(back, r);
        }
    }
}

#[test]
fn corrupt_and_truncated_bytes_are_refused() {
    let bytes = record(1, every_state()[4].clone()).encode();
    for cut in 0..bytes.len() {
        assert!(
            RecipientRecord::decode(1, &bytes[..cut]).is_err(),
            "cut at {cut}"
        );
    }
    let mut extra = bytes.clone();
    extra.push(0);
    assert!(RecipientRecord::decode(1, &extra).is_err());
    let mut bad_version = bytes.clone();
    bad_version[0] = 99;
    assert!(RecipientRecord::decode(1, &bad_version).is_err());
}

/// The on-disk bytes of a record are fixed (store format 2): a release that moves the types
/// around must write exactly these.
#[test]
fn a_record_encodes_to_the_same_bytes() {
    let r = RecipientRecord {
        line: 7,
        fiscal_code: RowFiscalCode::valid(FiscalCode::parse("RSSMRA85T10A562S").unwrap()),
        values: vec!["Mario".into()],
        state: RecipientState::Submitted {
            id: "01ARZ3NDEKTSV4RRFFQ69G5FAV".into(),
            at_ms: 42,
        },
    };
    assert_eq!(
        hex::encode(r.encode()),
        "01005253534d52413835543130413536325301054d6172696f020001563e3ab5d3d6764c61efb99302bd5b2a"
    );
}

/// The store hands out a `FiscalCode`: 16 stored bytes that are not one are a corrupt record,
/// and the error does not show them.
#[test]
fn a_stored_code_that_is_not_a_fiscal_code_is_corrupt() {
    let mut bytes = record(1, RecipientState::Queued).encode();
    bytes[2..18].copy_from_slice(b"rssmra85t10a562s");
    let err = RecipientRecord::decode(1, &bytes).unwrap_err();
    assert!(err.contains("stored fiscal code"), "{err}");
    assert!(!err.to_lowercase().contains("rssmra"), "{err}");
}

#[test]
fn raw_fiscal_codes_are_truncated_on_char_boundaries() {
    let long = "è".repeat(40);
    let fc = RowFiscalCode::raw(&long);
    assert!(fc.as_bytes().len() <= RowFiscalCode::RAW_MAX);
    assert!(std::str::from_utf8(fc.as_bytes()).is_ok());
    assert!(!format!("{fc:?}").contains('è'));
}

#[tokio::test]
async fn set_state_keeps_values_and_commits_atomically() {
    let store = Store::temporary().unwrap();
    let j = job();
    let mut b = store.batch();
    b.put_recipient(&j, &record(2, RecipientState::Queued));
    b.set_state(&j, 2, RecipientState::Sending { at_ms: 5 });
    b.set_ingest_progress(&j, 2, true, 1);
    store.commit(b).await.unwrap();
    let r = store.recipient(&j, 2).unwrap().unwrap();
    assert_eq!(r.state, RecipientState::Sending { at_ms: 5 });
    assert_eq!(r.values[0], "Mario");
    assert_eq!(store.ingest_progress(&j).unwrap(), (2, true));
    // A state change for a line that does not exist fails the whole batch.
    let mut b = store.batch();
    b.set_state(&j, 2, RecipientState::Queued);
    b.set_state(&j, 99, RecipientState::Queued);
    assert!(store.commit(b).await.is_err());
    assert_eq!(
        store.recipient(&j, 2).unwrap().unwrap().state,
        RecipientState::Sending { at_ms: 5 }
    );
}

#[test]
fn claims_detect_duplicates_and_reruns() {
    let store = Store::temporary().unwrap();
    let j = job();
    let fc = *b"RSSMRA85T10A562S";
    assert_eq!(store.claim_fiscal_code(&j, fc, 2).unwrap(), Claim::New);
    assert_eq!(store.claim_fiscal_code(&j, fc, 2).unwrap(), Claim::SameLine);
    assert_eq!(
        store.claim_fiscal_code(&j, fc, 9).unwrap(),
        Claim::Duplicate { first_line: 2 }
    );
    // Another job is independent.
    assert_eq!(
        store
            .claim_fiscal_code(&JobId::new("other"), fc, 9)
            .unwrap(),
        Claim::New
    );
}

#[tokio::test]
async fn committed_data_survives_reopen_and_scans_in_line_order() {
    let dir = tempfile::tempdir().unwrap();
    let j = job();
    {
        let store = Store::open(dir.path()).await.unwrap();
        let mut b = store.batch();
        for line in [300u64, 2, 40, 256] {
            b.put_recipient(&j, &record(line, RecipientState::Queued));
        }
        store.commit(b).await.unwrap();
        store.put_job_meta(&j, b"{}").unwrap();
        store.meta_put("feed/last_day", b"2026-11-23").unwrap();
        store.flush().await.unwrap();
    }
    let store = Store::open(dir.path()).await.unwrap();
    let lines: Vec<u64> = store
        .scan_recipients(&j, 0)
        .map(|r| r.unwrap().line)
        .collect();
    assert_eq!(lines, vec![2, 40, 256, 300]);
    let from: Vec<u64> = store
        .scan_recipients(&j, 41)
        .map(|r| r.unwrap().line)
        .collect();
    assert_eq!(from, vec![256, 300]);
    assert_eq!(store.list_jobs().unwrap(), vec![j.clone()]);
    assert_eq!(
        store.meta_get("feed/last_day").unwrap().as_deref(),
        Some(&b"2026-11-23"[..])
    );
    assert_eq!(
        store.count_states(&j).unwrap().get(&Outcome::Queued),
        Some(&4)
    );
    store.delete_job(&j, None).await.unwrap();
    assert_eq!(store.scan_recipients(&j, 0).count(), 0);
    assert!(store.list_jobs().unwrap().is_empty());
}

/// The ≤ 300 bytes per recipient target, measured on sled's real files: 100 k distinct
/// recipients with five short values and their dedup entries, ingested and then moved to a final
/// state, as a job would.
#[tokio::test]
async fn bytes_per_recipient_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).await.unwrap();
    let j = job();
    let n = 100_000u64;
    for chunk in (0..n).collect::<Vec<_>>().chunks(4096) {
        let mut b = store.batch();
        for &i in chunk {
            let mut fc = *b"RSSMRA85T10A000S";
            fc[12..15].copy_from_slice(format!("{:03}", i % 1000).as_bytes());
            fc[6..8].copy_from_slice(format!("{:02}", (i / 1000) % 100).as_bytes());
            assert_eq!(store.claim_fiscal_code(&j, fc, i + 2).unwrap(), Claim::New);
            b.put_recipient(
                &j,
                &RecipientRecord {
                    line: i + 2,
                    fiscal_code: RowFiscalCode::valid(FiscalCode::from_bytes(&fc).unwrap()),
                    values: vec![
                        format!("Nome{i}"),
                        format!("{}", i * 7 % 100_000),
                        "2026-12-31".into(),
                        "012345678901234567".into(),
                        "TARI".into(),
                    ],
                    state: RecipientState::Queued,
                },
            );
        }
        store.commit(b).await.unwrap();
    }
    println!(
        "store: after ingest {} bytes per recipient",
        walk(dir.path()) / n
    );
    for chunk in (0..n).collect::<Vec<_>>().chunks(4096) {
        let mut b = store.batch();
        for &i in chunk {
            b.set_state(
                &j,
                i + 2,
                RecipientState::Final {
                    id: ulid::Ulid::new().to_string(),
                    status: "PROCESSED".into(),
                    read_status: None,
                    payment_status: None,
                    notification: None,
                    at_ms: 1_700_000_000_000 + i,
                    polls: 1,
                },
            );
        }
        store.commit(b).await.unwrap();
    }
    store.flush().await.unwrap();
    drop(store);
    let bytes: u64 = walk(dir.path());
    let per = bytes as f64 / n as f64;
    println!("store: {per:.0} bytes per recipient on disk ({bytes} bytes for {n})");
    assert!(per <= 300.0, "{per:.0} bytes per recipient");
}

fn walk(p: &std::path::Path) -> u64 {
    std::fs::read_dir(p)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                walk(&e.path())
            } else {
                m.len()
            }
        })
        .sum()
}

#[tokio::test(start_paused = true)]
async fn a_store_in_use_is_reported_as_locked_after_a_short_wait() {
    let dir = tempfile::tempdir().unwrap();
    let _held = Store::open(dir.path()).await.unwrap();
    let err = Store::open(dir.path()).await.unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    assert!(err.to_string().contains("in use by another process"));
}

#[tokio::test]
async fn claims_in_a_batch_see_the_batch_and_the_store() {
    let store = Store::temporary().unwrap();
    let j = job();
    let a = *b"RSSMRA85T10A562S";
    let b = *b"BNCLRA90A41H501X";
    let mut batch = store.batch();
    assert_eq!(
        store.claim_in_batch(&mut batch, &j, a, 2).unwrap(),
        Claim::New
    );
    // The same code again in the same batch: a duplicate of line 2, before any commit.
    assert_eq!(
        store.claim_in_batch(&mut batch, &j, a, 5).unwrap(),
        Claim::Duplicate { first_line: 2 }
    );
    assert_eq!(
        store.claim_in_batch(&mut batch, &j, b, 3).unwrap(),
        Claim::New
    );
    store.commit(batch).await.unwrap();
    // A later batch sees the committed claims; an ingest re-run on the same line is not a
    // duplicate of itself.
    let mut batch = store.batch();
    assert_eq!(
        store.claim_in_batch(&mut batch, &j, b, 9).unwrap(),
        Claim::Duplicate { first_line: 3 }
    );
    assert_eq!(
        store.claim_in_batch(&mut batch, &j, a, 2).unwrap(),
        Claim::SameLine
    );
    // Nothing committed, nothing claimed: an uncommitted batch leaves no claim behind.
    let mut other = store.batch();
    let c = *b"VRDGPP80A01F205Z";
    assert_eq!(
        store.claim_in_batch(&mut other, &j, c, 4).unwrap(),
        Claim::New
    );
    drop(other);
    let mut again = store.batch();
    assert_eq!(
        store.claim_in_batch(&mut again, &j, c, 7).unwrap(),
        Claim::New
    );
}

/// A record as the release before the format marker wrote it (codec version 1), pinned as
/// bytes: line 7, a valid code, one value, `Submitted` with a non-ULID id.
fn pinned_v1_record() -> Vec<u8> {
    let mut b = vec![1, 0];
    b.extend_from_slice(b"RSSMRA85T10A562S");
    b.extend_from_slice(&[1, 5]);
    b.extend_from_slice(b"Mario");
    b.extend_from_slice(&[2, 1, 4]);
    b.extend_from_slice(b"id-7");
    b.push(42);
    b
}

#[tokio::test]
async fn a_store_of_the_previous_release_is_opened_and_read_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    {
        // What the previous release did: sled with its options, one tree, no format marker.
        let db = sled::Config::new()
            .path(&path)
            .use_compression(true)
            .compression_factor(3)
            .open()
            .unwrap();
        let tree = db.open_tree("corriere").unwrap();
        tree.insert(record_key(&job(), 7), pinned_v1_record())
            .unwrap();
        db.flush().unwrap();
    }
    let store = Store::open(&path).await.unwrap();
    assert_eq!(
        store.recipient(&job(), 7).unwrap().unwrap(),
        RecipientRecord {
            line: 7,
            fiscal_code: RowFiscalCode::valid(FiscalCode::parse("RSSMRA85T10A562S").unwrap()),
            values: vec!["Mario".into()],
            state: RecipientState::Submitted {
                id: "id-7".into(),
                at_ms: 42,
            },
        }
    );
    // Migrated: the marker says this release's format, and the store opens again.
    assert_eq!(
        store.tree.get(sync::FORMAT_KEY).unwrap().unwrap().as_ref(),
        STORE_FORMAT.to_be_bytes()
    );
    drop(store);
    let again = Store::open(&path).await.unwrap();
    assert!(again.recipient(&job(), 7).unwrap().is_some());
}

#[tokio::test]
async fn a_store_of_a_newer_format_is_refused_naming_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    {
        let store = Store::open(&path).await.unwrap();
        store
            .tree
            .insert(sync::FORMAT_KEY, &(STORE_FORMAT + 1).to_be_bytes())
            .unwrap();
        store.flush().await.unwrap();
    }
    let err = Store::open(&path).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Version { found, supported, .. } if found == STORE_FORMAT + 1 && supported == STORE_FORMAT),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains(&format!("store format {}", STORE_FORMAT + 1))
            && text.contains(&format!("formats 1 to {STORE_FORMAT}")),
        "{text}"
    );
}

#[tokio::test]
async fn syncs_and_commits_are_counted_and_kept_in_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = Store::open(&path).await.unwrap();
    let start = store.io_stats();
    let mut b = store.batch();
    b.put_recipient(&job(), &record(2, RecipientState::Queued));
    store.commit(b).await.unwrap();
    let mut b = store.batch();
    b.set_state(&job(), 2, RecipientState::Sending { at_ms: 1 });
    store.commit_no_flush(b).unwrap();
    let after = store.io_stats();
    assert_eq!(after.syncs - start.syncs, 1, "one commit with a sync");
    assert_eq!(after.commits - start.commits, 2, "two batches applied");
    // The observer hears of the intent at the sync that makes it durable, not before.
    let heard = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let h = heard.clone();
    store.set_sync_observer(Some(std::sync::Arc::new(move |lines| {
        h.lock().unwrap().extend_from_slice(lines)
    })));
    let mut b = store.batch();
    b.set_state(&job(), 2, RecipientState::Sending { at_ms: 2 });
    store.commit_no_flush(b).unwrap();
    assert!(heard.lock().unwrap().is_empty());
    store.flush().await.unwrap();
    assert_eq!(*heard.lock().unwrap(), vec![(job(), 2)]);
    let total = store.io_stats();
    drop(store);
    // Kept across processes: a new handle starts from the stored counts.
    let store = Store::open(&path).await.unwrap();
    assert_eq!(store.io_stats(), total);
}

/// A job's metadata is read through the store; one that does not decode is an error naming the
/// job (the text the engine gave when it read it itself), for a read and for an update.
#[test]
fn job_metadata_that_does_not_decode_is_an_error_naming_the_job() {
    use crate::model::job::JobMeta;
    let store = Store::temporary().unwrap();
    let j = job();
    assert!(JobMeta::load(&store, &j).unwrap().is_none());
    assert!(JobMeta::update(&store, &j, |_| {}).unwrap().is_none());
    store.put_job_meta(&j, b"{not json").unwrap();
    let err = JobMeta::load(&store, &j).unwrap_err().to_string();
    assert!(
        err.starts_with("corrupt store data: job 0123abcd metadata: "),
        "{err}"
    );
    let err = JobMeta::update(&store, &j, |m| m.paused = true)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("corrupt store data: job 0123abcd metadata: "),
        "{err}"
    );
    assert_eq!(
        store.job_meta(&j).unwrap().as_deref(),
        Some(&b"{not json"[..])
    );
}

/// Fiscal code `i` of the ledger tests (distinct for i < 1000).
fn fc_n(i: u64) -> [u8; 16] {
    let mut fc = *b"RSSMRA85T10A000S";
    fc[12..15].copy_from_slice(format!("{:03}", i % 1000).as_bytes());
    fc
}

/// `n` citizens: `holder` holds each in `campaign` at line i + 2 in `holder_state`; each other
/// job of `queued` has it queued at the same line.
fn ledger_fixture(
    store: &Store,
    campaign: &CampaignKey,
    holder: &JobId,
    holder_state: RecipientState,
    queued: &[&JobId],
    n: u64,
) {
    let mut b = store.batch();
    for i in 0..n {
        let rec = |state: RecipientState| RecipientRecord {
            line: i + 2,
            fiscal_code: RowFiscalCode::valid(FiscalCode::from_bytes(&fc_n(i)).unwrap()),
            values: vec!["Mario".into()],
            state,
        };
        b.put_recipient(holder, &rec(holder_state.clone()));
        for j in queued {
            b.put_recipient(j, &rec(RecipientState::Queued));
        }
    }
    store.commit_no_flush(b).unwrap();
    for i in 0..n {
        store
            .set_ledger_holder(campaign, &fc_n(i), holder, i + 2)
            .unwrap();
    }
}

/// Issue 14 review: two jobs of a campaign both found the citizen held by a job that never sent
/// it (cancelled) and both took it over and sent (the check and the write were two steps).
/// Here two threads claim each citizen at the same moment (a barrier per citizen), and a granted
/// claim writes its `Sending` intent before it lets go, as the send path does: each citizen is
/// granted to exactly one of them.
#[test]
fn two_sends_racing_for_a_citizen_whose_holder_never_sent_it_are_granted_once() {
    const N: u64 = 300;
    let store = Store::temporary().unwrap();
    let campaign = CampaignKey::of("Avviso TARI {{anno}}");
    let (a, b, c) = (JobId::new("a"), JobId::new("b"), JobId::new("c"));
    ledger_fixture(
        &store,
        &campaign,
        &c,
        RecipientState::Cancelled,
        &[&a, &b],
        N,
    );
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
    let racers: Vec<_> = [a, b]
        .into_iter()
        .map(|job| {
            let (store, barrier) = (store.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut granted = Vec::new();
                for i in 0..N {
                    barrier.wait();
                    loop {
                        match store
                            .claim_for_send(&campaign, &fc_n(i), &job, i + 2, 0)
                            .unwrap()
                        {
                            SendClaim::Granted(guard) => {
                                let mut b = store.batch();
                                b.set_state(&job, i + 2, RecipientState::Sending { at_ms: 1 });
                                store.apply_in_order(b).unwrap();
                                drop(guard);
                                granted.push(i);
                                break;
                            }
                            // The other one's send is between its claim and its intent.
                            SendClaim::Busy { .. } => std::thread::yield_now(),
                            SendClaim::Sent { state, .. } => {
                                assert!(matches!(state, Some(RecipientState::Sending { .. })));
                                break;
                            }
                            other => panic!("citizen {i}: {other:?}"),
                        }
                    }
                }
                granted
            })
        })
        .collect();
    let mut sends = vec![0u32; N as usize];
    for r in racers {
        for i in r.join().unwrap() {
            sends[i as usize] += 1;
        }
    }
    for (i, n) in sends.iter().enumerate() {
        assert_eq!(*n, 1, "citizen {i} granted {n} times");
    }
}

#[test]
fn a_claim_is_not_taken_from_a_holder_that_sent_or_is_sending() {
    let store = Store::temporary().unwrap();
    let campaign = CampaignKey::of("c");
    let (a, h) = (JobId::new("a"), JobId::new("h"));
    ledger_fixture(&store, &campaign, &h, RecipientState::Queued, &[&a], 1);
    let fc = fc_n(0);
    // The holder's send is in flight: the other job waits.
    let guard = match store.claim_for_send(&campaign, &fc, &h, 2, 0).unwrap() {
        SendClaim::Granted(g) => g,
        other => panic!("{other:?}"),
    };
    assert!(matches!(
        store.claim_for_send(&campaign, &fc, &a, 2, 0).unwrap(),
        SendClaim::Busy { .. }
    ));
    // Its intent applied, then the guard goes: `sending` is already sent.
    let mut b = store.batch();
    b.set_state(&h, 2, RecipientState::Sending { at_ms: 1 });
    store.apply_in_order(b).unwrap();
    drop(guard);
    assert!(matches!(
        store.claim_for_send(&campaign, &fc, &a, 2, 0).unwrap(),
        SendClaim::Sent {
            state: Some(RecipientState::Sending { .. }),
            ..
        }
    ));
    // A retry (429) puts it back to queued: nothing was created, so it may be taken over.
    let mut b = store.batch();
    b.set_state(&h, 2, RecipientState::Queued);
    store.apply_in_order(b).unwrap();
    assert!(matches!(
        store.claim_for_send(&campaign, &fc, &a, 2, 0).unwrap(),
        SendClaim::Granted(_)
    ));
    assert_eq!(store.ledger_holder(&campaign, &fc).unwrap(), Some((a, 2)));
}

#[tokio::test]
async fn an_ingest_batch_is_refused_when_the_ledger_changed_under_it() {
    let store = Store::temporary().unwrap();
    let campaign = CampaignKey::of("c");
    let (t, h, other) = (JobId::new("t"), JobId::new("h"), JobId::new("o"));
    ledger_fixture(&store, &campaign, &h, RecipientState::Queued, &[&other], 2);
    // Citizen 0 is held by a job that only queued it: the ingest takes it over...
    let mut b = store.batch();
    let entry = match store
        .claim_recipient(&mut b, &t, Ledger::Enforce(&campaign), fc_n(0), 2, 0)
        .unwrap()
    {
        RecipientClaim::Held { job, line, entry } => {
            assert_eq!((job, line), (h.clone(), 2));
            entry
        }
        other => panic!("{other:?}"),
    };
    store.take_over(&mut b, &campaign, &t, fc_n(0), 2, 0, &entry, (h.clone(), 2));
    // ...but the holder's send starts before the batch commits: the batch is refused whole.
    let guard = store.claim_for_send(&campaign, &fc_n(0), &h, 2, 0).unwrap();
    assert!(matches!(guard, SendClaim::Granted(_)));
    b.put_recipient(&t, &record(2, RecipientState::Queued));
    assert!(matches!(
        store.commit(b).await,
        Err(StoreError::LedgerConflict)
    ));
    assert!(store.recipient(&t, 2).unwrap().is_none(), "nothing written");
    assert_eq!(
        store.ledger_holder(&campaign, &fc_n(0)).unwrap(),
        Some((h.clone(), 2))
    );
    drop(guard);
    // A citizen absent from the ledger, claimed by another job's send before the commit.
    store.forget_campaign_ledger();
    let mut b = store.batch();
    assert_eq!(
        store
            .claim_recipient(&mut b, &t, Ledger::Enforce(&campaign), fc_n(1), 3, 0)
            .unwrap(),
        RecipientClaim::New
    );
    let sent = store
        .claim_for_send(&campaign, &fc_n(1), &other, 3, 0)
        .unwrap();
    assert!(matches!(sent, SendClaim::Granted(_)));
    assert!(matches!(
        store.commit(b).await,
        Err(StoreError::LedgerConflict)
    ));
    assert_eq!(
        store.ledger_holder(&campaign, &fc_n(1)).unwrap(),
        Some((other.clone(), 3))
    );
    // A batch that starts while a send is already in flight (nothing moves during the batch)
    // and takes that citizen over, its holder's record still `queued`: refused too.
    let in_flight = store
        .claim_for_send(&campaign, &fc_n(1), &other, 3, 0)
        .unwrap();
    assert!(matches!(in_flight, SendClaim::Granted(_)));
    let mut b = store.batch();
    let entry = match store
        .claim_recipient(&mut b, &t, Ledger::Enforce(&campaign), fc_n(1), 3, 0)
        .unwrap()
    {
        RecipientClaim::Held { entry, .. } => entry,
        other => panic!("{other:?}"),
    };
    store.take_over(
        &mut b,
        &campaign,
        &t,
        fc_n(1),
        3,
        0,
        &entry,
        (other.clone(), 3),
    );
    assert!(matches!(
        store.commit(b).await,
        Err(StoreError::LedgerConflict)
    ));
    drop(in_flight);
    // With nothing in flight and nothing changed since it read the ledger, a batch commits.
    let mut b = store.batch();
    assert_eq!(
        store
            .claim_recipient(&mut b, &t, Ledger::Enforce(&campaign), fc_n(0), 2, 0)
            .unwrap(),
        RecipientClaim::New
    );
    b.put_recipient(&t, &record(2, RecipientState::Queued));
    store.commit(b).await.unwrap();
    assert_eq!(
        store.ledger_holder(&campaign, &fc_n(0)).unwrap(),
        Some((t, 2))
    );
}

#[tokio::test]
async fn deleting_a_job_releases_its_unsent_claims_and_keeps_its_sent_ones() {
    let store = Store::temporary().unwrap();
    let campaign = CampaignKey::of("c");
    let j = JobId::new("j");
    ledger_fixture(&store, &campaign, &j, RecipientState::Queued, &[], 4);
    let mut b = store.batch();
    b.set_state(
        &j,
        2,
        RecipientState::Submitted {
            id: "01ID".into(),
            at_ms: 1,
        },
    );
    b.set_state(
        &j,
        3,
        RecipientState::Unknown {
            reason: "timeout".into(),
            id: None,
        },
    );
    b.set_state(&j, 4, RecipientState::Cancelled);
    store.commit(b).await.unwrap();
    // Not while one of its sends is in flight.
    let guard = store.claim_for_send(&campaign, &fc_n(3), &j, 5, 0).unwrap();
    assert!(matches!(
        store.delete_job(&j, Some(&campaign)).await,
        Err(StoreError::JobBusy(_))
    ));
    drop(guard);
    store.delete_job(&j, Some(&campaign)).await.unwrap();
    assert!(store.scan_recipients(&j, 0).next().is_none());
    let holder = |i| store.ledger_holder(&campaign, &fc_n(i)).unwrap();
    // Kept under a tombstone holder no live job id can equal.
    let gone = JobId::new(&format!("{}~deleted", j.as_str()));
    assert_eq!(holder(0), Some((gone.clone(), 2)), "sent: still counts");
    assert_eq!(
        holder(1),
        Some((gone.clone(), 3)),
        "may have been sent: still counts"
    );
    assert_eq!(holder(2), None, "cancelled: released");
    assert_eq!(holder(3), None, "queued: released");
    // What stays answers `already_sent` (the job is gone, so without a message id).
    assert!(matches!(
        store
            .claim_for_send(&campaign, &fc_n(0), &JobId::new("later"), 2, 0)
            .unwrap(),
        SendClaim::Sent { state: None, .. }
    ));
    // The same inputs submitted again make a job with the same id: its earlier sends still
    // count (before the tombstone it found its own claim and sent again).
    assert!(matches!(
        store.claim_for_send(&campaign, &fc_n(0), &j, 2, 0).unwrap(),
        SendClaim::Sent { state: None, .. }
    ));
    assert!(matches!(
        store.claim_for_send(&campaign, &fc_n(1), &j, 3, 0).unwrap(),
        SendClaim::Sent { state: None, .. }
    ));
}
