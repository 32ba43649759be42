//! The poll queue's due-time scan, as the scheduler uses it: 100 000 messages wait for a poll,
//! most of them not due yet; take the 512 due now (`pop_due`) and put them back with their next
//! due time (a pending status reschedules); read the next due time; ask with nothing due.

use corriere::dispatch::poll_queue::PollQueue;
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};

const QUEUED: u64 = 100_000;
const DUE: u64 = 512;
const NOW_MS: u64 = 1_700_000_000_000;

fn queue() -> PollQueue {
    PollQueue::from_entries(
        (0..QUEUED)
            .map(|i| {
                // DUE entries already due, the rest spread over the next hour.
                let due = if i < DUE {
                    NOW_MS - 1_000 + i % 1_000
                } else {
                    NOW_MS + 1 + (i * 36) % 3_600_000
                };
                (due, i + 2)
            })
            .collect(),
    )
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("poll_queue");
    g.throughput(Throughput::Elements(DUE));
    g.bench_function("take_512_due_of_100k", |b| {
        b.iter_batched_ref(
            queue,
            |q| {
                let mut n = 0;
                while let Some(entry) = q.pop_due(black_box(NOW_MS)) {
                    black_box(entry);
                    n += 1;
                }
                assert_eq!(n, DUE);
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("take_and_reschedule_512_of_100k", |b| {
        let mut q = queue();
        let mut now = NOW_MS;
        b.iter(|| {
            // Each round, the 512 earliest come due; each goes back an hour later.
            for _ in 0..DUE {
                let due = q.next_due().expect("never empty");
                now = now.max(due);
                let (due, line) = q.pop_due(now).expect("due");
                q.push(due + 3_600_000, line);
            }
        })
    });
    g.throughput(Throughput::Elements(1));
    let q = queue();
    g.bench_function("next_due_of_100k", |b| {
        b.iter(|| black_box(&q).next_due().unwrap())
    });
    g.bench_function("nothing_due_of_100k", |b| {
        b.iter(|| assert!(!black_box(&q).has_due(black_box(NOW_MS - 10_000))))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
