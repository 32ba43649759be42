//! CSV ingest: rows per second, first parsing and validating alone (`job::Ingest`: CSV, fiscal
//! code, template fields per row), then the whole `prepare_job` into a store (campaign ledger
//! claims, records, group commits), as `corriere send` does it before the first call. Then the
//! campaign ledger's cost alone: the same store loop (rows read, claimed, written in batches of
//! `INGEST_BATCH`, one commit each) with the dedup claims of a job without the ledger
//! (`store_rows_without_ledger`, what the ingest did before the ledger) and with the ledger's
//! claims, checked again at each commit (`store_rows_with_ledger`).

use std::io::Write;
use std::path::Path;

mod common;

use corriere::dispatch::{prepare_job, values_crc, INGEST_BATCH};
use corriere::job::{Ingest, RowOutcome, Template};
use corriere::model::{FiscalCode, RecipientRecord, RecipientState, RowFiscalCode};
use corriere::store::{CampaignKey, Claim, JobId, Ledger, RecipientClaim, Store};
use corriere_fake_io::synthetic_code;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

const ROWS: u64 = 20_000;

/// The shared TARI notice, plus this bench's keys.
fn template_text() -> String {
    [
        common::TARI_MESSAGE,
        r#"filter = "none"
"#,
    ]
    .concat()
}

fn write_csv(path: &Path) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(out, "fiscal_code;nome;anno;importo;scadenza").unwrap();
    for i in 0..ROWS {
        writeln!(
            out,
            "{};Nome Cognome {i};2026;{},{:02};2026-12-31",
            synthetic_code(11, i),
            100 + i % 400,
            i % 100
        )
        .unwrap();
    }
    out.flush().unwrap();
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("recipients.csv");
    let template_path = dir.path().join("template.toml");
    write_csv(&csv);
    let text = template_text();
    std::fs::write(&template_path, &text).unwrap();
    let template = Template::from_toml_str(&text, &template_path).unwrap();

    let mut g = c.benchmark_group("ingest");
    g.throughput(Throughput::Elements(ROWS));
    g.sample_size(10);
    g.bench_function("parse_validate_rows", |b| {
        b.iter(|| {
            let mut valid = 0u64;
            for row in Ingest::open(&csv, &template).unwrap() {
                if matches!(
                    row.unwrap().outcome,
                    corriere::job::RowOutcome::Valid { .. }
                ) {
                    valid += 1;
                }
            }
            assert_eq!(valid, ROWS);
        })
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    g.bench_function("prepare_job_into_store", |b| {
        b.iter_batched(
            || {
                let d = tempfile::tempdir().unwrap();
                let store = rt.block_on(Store::open(&d.path().join("store"))).unwrap();
                (d, store)
            },
            |(d, store)| {
                let prepared = rt
                    .block_on(prepare_job(&store, &template_path, &csv, &|_| {}))
                    .unwrap();
                assert_eq!(prepared.rows_ingested, ROWS);
                drop(store);
                d
            },
            BatchSize::PerIteration,
        )
    });
    for ledger in [false, true] {
        let name = if ledger {
            "store_rows_with_ledger"
        } else {
            "store_rows_without_ledger"
        };
        g.bench_function(name, |b| {
            b.iter_batched(
                || {
                    let d = tempfile::tempdir().unwrap();
                    let store = rt.block_on(Store::open(&d.path().join("store"))).unwrap();
                    (d, store)
                },
                |(d, store)| {
                    let rows = rt.block_on(store_rows(&store, &csv, &template, ledger));
                    assert_eq!(rows, ROWS);
                    drop(store);
                    d
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

/// The ingest's store loop, with (`ledger`) or without the campaign ledger's claims.
async fn store_rows(store: &Store, csv: &Path, template: &Template, ledger: bool) -> u64 {
    let job = JobId::new("bench");
    let campaign = CampaignKey::of(template.campaign());
    let mut ingest = Ingest::open(csv, template).unwrap();
    let mut total = 0u64;
    loop {
        let mut batch = store.batch();
        let mut n = 0;
        let mut last = 0;
        for row in ingest.by_ref() {
            let row = row.unwrap();
            let RowOutcome::Valid {
                fiscal_code,
                values,
                ..
            } = row.outcome
            else {
                panic!("line {}: invalid", row.line);
            };
            let fc: [u8; 16] = fiscal_code.expose().as_bytes().try_into().unwrap();
            let new = if ledger {
                let crc = values_crc(&values);
                let claim = store
                    .claim_recipient(
                        &mut batch,
                        &job,
                        Ledger::Enforce(&campaign),
                        fc,
                        row.line,
                        crc,
                    )
                    .unwrap();
                claim == RecipientClaim::New
            } else {
                store
                    .claim_in_batch(&mut batch, &job, fc, row.line)
                    .unwrap()
                    == Claim::New
            };
            assert!(new);
            batch.put_recipient(
                &job,
                &RecipientRecord {
                    line: row.line,
                    fiscal_code: RowFiscalCode::valid(FiscalCode::from_bytes(&fc).unwrap()),
                    values,
                    state: RecipientState::Queued,
                },
            );
            last = row.line;
            n += 1;
            if n == INGEST_BATCH {
                break;
            }
        }
        total += n as u64;
        let complete = n < INGEST_BATCH;
        batch.set_ingest_progress(&job, last, complete, total);
        store.commit(batch).await.unwrap();
        if complete {
            return total;
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
