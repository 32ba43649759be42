//! CSV ingest: rows per second, first parsing and validating alone (`job::Ingest`: CSV, fiscal
//! code, template fields per row), then the whole `prepare_job` into a store (dedup claims,
//! records, group commits), as `corriere send` does it before the first call.

use std::io::Write;
use std::path::Path;

mod common;

use corriere::dispatch::prepare_job;
use corriere::job::{Ingest, Template};
use corriere::store::Store;
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
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
