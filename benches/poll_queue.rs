//! The poll queue's due-time scan: the scheduler asks the store for the polls due now
//! (`due_polls_for`, up to 512 at once, as `dispatch::run` does) and for the next due time
//! (`next_poll_due_for`) while 100 000 messages wait in the queue, most of them not due yet.

use corriere::store::{JobId, Store};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};

const QUEUED: u64 = 100_000;
const DUE: u64 = 2_000;
const FETCH: usize = 512;
const NOW_MS: u64 = 1_700_000_000_000;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = rt.block_on(Store::open(dir.path())).unwrap();
    let job = JobId::new("bench");
    // Another job's queue beside it: the scan must stay within its own job's keys.
    let other = JobId::new("other");
    rt.block_on(async {
        for chunk in (0..QUEUED).collect::<Vec<_>>().chunks(4096) {
            let mut b = store.batch();
            for &i in chunk {
                // DUE entries already due, the rest spread over the next hour.
                let due = if i < DUE {
                    NOW_MS - 1_000 + i % 1_000
                } else {
                    NOW_MS + 1 + (i * 36) % 3_600_000
                };
                b.schedule_poll(due, &job, i + 2);
                b.schedule_poll(due, &other, i + 2);
            }
            store.commit(b).await.unwrap();
        }
    });
    assert_eq!(store.poll_queue_len(&job), QUEUED as usize);

    let mut g = c.benchmark_group("poll_queue");
    g.throughput(Throughput::Elements(FETCH as u64));
    g.bench_function("due_scan_512_of_100k", |b| {
        b.iter(|| {
            let due = store.due_polls_for(&job, black_box(NOW_MS), FETCH).unwrap();
            assert_eq!(due.len(), FETCH);
            due
        })
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("next_due_of_100k", |b| {
        b.iter(|| store.next_poll_due_for(black_box(&job)).unwrap().unwrap())
    });
    g.bench_function("nothing_due_of_100k", |b| {
        b.iter(|| {
            let due = store
                .due_polls_for(&job, black_box(NOW_MS - 10_000), FETCH)
                .unwrap();
            assert!(due.is_empty());
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
