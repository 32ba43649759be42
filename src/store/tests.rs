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
    store.delete_job(&j).await.unwrap();
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
