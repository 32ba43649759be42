//! FiscalCode parse + check character + feed hash: the per-recipient cost of ingest and filter.

use corriere::model::FiscalCode;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};

fn codes() -> Vec<String> {
    (0..1000u64)
        .map(|i| {
            corriere_fake_io::Population::generate(0, 0, chrono::NaiveDate::MIN)
                .non_io_fiscal_code(i)
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let codes = codes();
    let mut g = c.benchmark_group("fiscal_code");
    g.throughput(Throughput::Elements(codes.len() as u64));
    g.bench_function("parse", |b| {
        b.iter(|| {
            codes
                .iter()
                .filter(|s| FiscalCode::parse(black_box(s)).is_ok())
                .count()
        })
    });
    g.bench_function("parse_and_check_char", |b| {
        b.iter(|| {
            codes
                .iter()
                .filter_map(|s| FiscalCode::parse(black_box(s)).ok())
                .filter(|fc| fc.check_char_mismatch().is_none())
                .count()
        })
    });
    let parsed: Vec<FiscalCode> = codes
        .iter()
        .map(|s| FiscalCode::parse(s).unwrap())
        .collect();
    g.bench_function("feed_hash", |b| {
        b.iter(|| {
            parsed
                .iter()
                .map(|fc| black_box(fc).feed_hash_bytes()[0] as u64)
                .sum::<u64>()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
