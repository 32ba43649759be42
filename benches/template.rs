//! Template validation per row (ingest, without rendering) and rendering (send time).

use std::path::Path;

mod common;

use corriere::job::Template;
use corriere::model::FiscalCode;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};

/// The shared TARI notice, plus this bench's keys.
fn template_text() -> String {
    [
        common::TARI_MESSAGE,
        r#"[payment_data]
amount = "{{importo}}"
amount_unit = "euro"
notice_number = "{{avviso}}"
"#,
    ]
    .concat()
}

fn bench(c: &mut Criterion) {
    let t = Template::from_toml_str(&template_text(), Path::new("bench.toml")).unwrap();
    let header: Vec<String> = [
        "fiscal_code",
        "nome",
        "anno",
        "importo",
        "scadenza",
        "avviso",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let bound = t.bind(&header).unwrap();
    let rows: Vec<Vec<String>> = (0..1000)
        .map(|i| {
            let by_name = |n: &str| match n {
                "nome" => format!("Cittadina Numero {i}"),
                "anno" => "2026".to_owned(),
                "importo" => format!("{},{:02}", 50 + i % 300, i % 100),
                "scadenza" => "31/12/2026".to_owned(),
                _ => format!("0{:017}", i),
            };
            bound.used_columns().iter().map(|c| by_name(c)).collect()
        })
        .collect();
    let fc = FiscalCode::parse("RSSMRA85T10A562S").unwrap();
    let mut g = c.benchmark_group("template");
    g.throughput(Throughput::Elements(rows.len() as u64));
    g.bench_function("validate_row", |b| {
        b.iter(|| {
            rows.iter()
                .filter(|r| bound.validate_row(black_box(r)).is_ok())
                .count()
        })
    });
    g.bench_function("render", |b| {
        b.iter(|| {
            rows.iter()
                .filter(|r| bound.render(&fc, black_box(r)).is_ok())
                .count()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
