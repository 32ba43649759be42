//! Store: encoding of a recipient record, and one group commit of a batch of state transitions
//! (apply + one flush), as the dispatcher does it.

use corriere::model::{FiscalCode, RecipientRecord, RecipientState, RowFiscalCode};
use corriere::store::{JobId, Store, StoreOptions};
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};

const BATCH: u64 = 256;

fn record(line: u64) -> RecipientRecord {
    RecipientRecord {
        line,
        fiscal_code: RowFiscalCode::valid(FiscalCode::parse("RSSMRA85T10A562S").unwrap()),
        values: vec![
            format!("Nome {line}"),
            "2026".into(),
            "12,50".into(),
            "31/12/2026".into(),
        ],
        state: RecipientState::Queued,
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("store");
    g.throughput(Throughput::Elements(1));
    let r = record(7);
    g.bench_function("encode", |b| b.iter(|| black_box(&r).encode()));
    let bytes = r.encode();
    g.bench_function("decode", |b| {
        b.iter(|| RecipientRecord::decode(7, black_box(&bytes)).unwrap())
    });

    let rt = tokio::runtime::Runtime::new().unwrap();
    g.throughput(Throughput::Elements(BATCH));
    // The store's default options (8 MiB cache), with sled's zstd compression on (the default)
    // and off (`[store] compression = false`).
    for compression in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let options = StoreOptions {
            compression,
            ..StoreOptions::default()
        };
        let store = rt.block_on(Store::open_with(dir.path(), options)).unwrap();
        let job = JobId::new("bench");
        rt.block_on(async {
            let mut b = store.batch();
            for line in 0..100_000 {
                b.put_recipient(&job, &record(line));
            }
            store.commit(b).await.unwrap();
        });
        let mut next = 0u64;
        let name = if compression {
            "group_commit_256_transitions/zstd"
        } else {
            "group_commit_256_transitions/plain"
        };
        g.bench_function(name, |b| {
            b.iter_batched(
                || {
                    let mut batch = store.batch();
                    for i in 0..BATCH {
                        let line = (next + i) % 100_000;
                        batch.set_state(
                            &job,
                            line,
                            RecipientState::Submitted {
                                id: "01ARZ3NDEKTSV4RRFFQ69G5FAV".into(),
                                at_ms: 1_700_000_000_000,
                            },
                        );
                    }
                    next += BATCH;
                    batch
                },
                |batch| rt.block_on(store.commit(batch)).unwrap(),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
