//! The subscriber set at IO's scale: 40 M synthetic subscribers (uniform keys, like SHA-256
//! output). Measures lookups per second on one core (hits, misses, and from a fiscal code
//! including its SHA-256), the bytes per subscriber in memory, and, once, the time to load
//! the 40 M snapshot (a daemon restart). `SUBSCRIBER_SET_N` changes the size.
//!
//! `cargo bench --bench subscriber_set`

use corriere::feed::{snapshot, Key, SubscriberSet};
use corriere::model::FiscalCode;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const QUERIES: usize = 1 << 20;

fn size() -> usize {
    std::env::var("SUBSCRIBER_SET_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40_000_000)
}

fn random_key(rng: &mut SmallRng) -> Key {
    let digest: [u8; 32] = rng.gen();
    Key::from_digest(&digest)
}

/// A one-shot wall-clock figure printed by the bench (not logic: tokio's clock rule does not
/// apply).
#[allow(clippy::disallowed_types)]
fn wall_clock<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let started = std::time::Instant::now();
    let out = f();
    (out, started.elapsed().as_secs_f64())
}

fn bench(c: &mut Criterion) {
    let n = size();
    let mut rng = SmallRng::seed_from_u64(40);
    let mut keys: Vec<Key> = (0..n).map(|_| random_key(&mut rng)).collect();
    keys.sort_unstable();
    keys.dedup();
    let set = SubscriberSet::from_sorted(&keys);
    let hits: Vec<Key> = (0..QUERIES)
        .map(|_| keys[rng.gen_range(0..keys.len())])
        .collect();
    drop(keys);
    let misses: Vec<Key> = (0..QUERIES).map(|_| random_key(&mut rng)).collect();
    println!(
        "subscriber_set: {} subscribers, {} bytes in memory, {:.2} bytes per subscriber",
        set.len(),
        set.heap_bytes(),
        set.heap_bytes() as f64 / set.len() as f64
    );

    // A daemon restart: load the snapshot (every check included). Timed once, printed.
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("subscribers.snapshot");
    snapshot::write(&path, &set, None).expect("snapshot written");
    let (loaded, seconds) = wall_clock(|| snapshot::read(&path).expect("snapshot reads"));
    let loaded = loaded.expect("exists");
    println!(
        "subscriber_set: snapshot of {} bytes loaded and verified in {seconds:.2} s",
        std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0),
    );
    assert_eq!(loaded.set.len(), set.len());
    drop(loaded);

    let mut g = c.benchmark_group("subscriber_set");
    g.throughput(Throughput::Elements(QUERIES as u64));
    g.bench_function("lookup_hit", |b| {
        b.iter(|| {
            let mut found = 0usize;
            for k in black_box(&hits) {
                found += usize::from(set.contains_key(*k));
            }
            assert_eq!(found, QUERIES);
            found
        })
    });
    g.bench_function("lookup_miss", |b| {
        b.iter(|| {
            let mut found = 0usize;
            for k in black_box(&misses) {
                found += usize::from(set.contains_key(*k));
            }
            found
        })
    });
    // A million distinct codes, so their buckets are not all in the cache.
    let codes: Vec<FiscalCode> = (0..QUERIES as u64)
        .map(|i| {
            let mut x = i.wrapping_mul(2_654_435_761) % 308_915_776;
            let mut letters = [b'A'; 6];
            for l in letters.iter_mut().rev() {
                *l = b'A' + (x % 26) as u8;
                x /= 26;
            }
            // Any valid shape will do: a wrong check character only warns.
            let s = format!(
                "{}85T10A562Z",
                std::str::from_utf8(&letters).expect("ASCII")
            );
            FiscalCode::parse(&s).expect("valid shape")
        })
        .collect();
    g.throughput(Throughput::Elements(codes.len() as u64));
    g.bench_function("lookup_fiscal_code_with_sha256", |b| {
        b.iter(|| {
            let mut found = 0usize;
            for fc in black_box(&codes) {
                found += usize::from(set.contains_digest(&fc.feed_hash_bytes()));
            }
            found
        })
    });
    // The same, a batch at a time: hash 64 codes, then look the 64 up together.
    g.bench_function("lookup_fiscal_code_with_sha256_batched", |b| {
        let mut batch: Vec<Key> = Vec::with_capacity(64);
        let mut answers = Vec::with_capacity(64);
        b.iter(|| {
            let mut found = 0usize;
            for chunk in black_box(&codes).chunks(64) {
                batch.clear();
                batch.extend(
                    chunk
                        .iter()
                        .map(|fc| Key::from_digest(&fc.feed_hash_bytes())),
                );
                set.contains_keys(&batch, &mut answers);
                found += answers.iter().filter(|&&a| a).count();
            }
            found
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
