//! What the store writes to disk for a raw job's traffic, without HTTP: counts, not times, so
//! the figures hold on a busy machine. For N recipients (`STORE_IO_RECIPIENTS`, default 200 000):
//! the ingest (records and campaign-ledger claims in batches of 4 096, one sync each), then
//! the sends as the dispatcher makes them: every commit that syncs carries the outcomes
//! (`Submitted`) of the previous group of sends and the intents (`Sending`) of the next group
//! (`STORE_IO_GROUP` recipients, default 64; 1 is what the group commit did before it really
//! grouped), then the poll results (`Final`), which nobody waits for, in batches of 512
//! without a sync. Prints, per phase, the bytes this process wrote to disk (`write_bytes` of
//! /proc/self/io) per recipient and the durable syncs per recipient (the store's own count),
//! then the store's size per recipient.
//!
//! `cargo bench --bench store_io` (environment: `STORE_IO_RECIPIENTS`, `STORE_IO_GROUP`,
//! `STORE_IO_COMPRESSION` = `true`/`false`, `STORE_IO_CACHE_MIB`).

use corriere::model::{FiscalCode, RecipientRecord, RecipientState, RowFiscalCode};
use corriere::store::{CampaignKey, JobId, Ledger, Store, StoreOptions};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn write_bytes() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn code(i: u64) -> [u8; 16] {
    // A distinct, well-formed code per recipient (the store keeps valid codes as `FiscalCode`
    // and refuses to decode one that is not): `i` spread over the 7 digit positions of
    // RSSMRA..T..A...S, 10 million codes.
    let mut c = *b"RSSMRA00T00A000S";
    let digits = format!("{:07}", i % 10_000_000);
    for (pos, d) in [6, 7, 9, 10, 12, 13, 14].into_iter().zip(digits.bytes()) {
        c[pos] = d;
    }
    c
}

fn dir_size(path: &std::path::Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(path).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            dir_size(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

struct Phase {
    name: &'static str,
    bytes: u64,
    syncs: u64,
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n = env_u64("STORE_IO_RECIPIENTS", 200_000);
    let group = env_u64("STORE_IO_GROUP", 64).max(1);
    let compression = std::env::var("STORE_IO_COMPRESSION").map_or(true, |v| v != "false");
    let cache = env_u64("STORE_IO_CACHE_MIB", 8) * 1024 * 1024;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir =
        tempfile::tempdir_in(std::env::var("STORE_IO_DIR").unwrap_or_else(|_| ".".into())).unwrap();
    let options = StoreOptions {
        compression,
        cache_capacity: cache,
        ..StoreOptions::default()
    };
    let store = rt
        .block_on(Store::open_with(&dir.path().join("store"), options))
        .unwrap();
    let job = JobId::new("0123456789abcdef");
    let campaign = CampaignKey::of("Avviso di prova");
    let mut phases = Vec::new();
    let mut mark = (write_bytes(), store.io_stats().syncs);
    let mut phase = |name: &'static str, store: &Store, mark: &mut (u64, u64)| {
        let now = (write_bytes(), store.io_stats().syncs);
        phases.push(Phase {
            name,
            bytes: now.0 - mark.0,
            syncs: now.1 - mark.1,
        });
        *mark = now;
    };

    rt.block_on(async {
        // 1. Ingest.
        let mut batch = store.batch();
        for line in 0..n {
            let fc = code(line);
            store
                .claim_recipient(&mut batch, &job, Ledger::Enforce(&campaign), fc, line, 7)
                .unwrap();
            batch.put_recipient(
                &job,
                &RecipientRecord {
                    line,
                    fiscal_code: RowFiscalCode::valid(FiscalCode::from_bytes(&fc).unwrap()),
                    values: vec![format!("Nome {line}")],
                    state: RecipientState::Queued,
                },
            );
            if batch.len() >= 2 * 4096 {
                store
                    .commit(std::mem::replace(&mut batch, store.batch()))
                    .await
                    .unwrap();
            }
        }
        batch.set_ingest_progress(&job, n + 1, true, n);
        store.commit(batch).await.unwrap();
    });
    phase("ingest", &store, &mut mark);

    rt.block_on(async {
        // 2. Sends: each synced commit = outcomes of the last group + intents of the next.
        let mut line = 0;
        let mut previous: Vec<u64> = Vec::new();
        while line < n || !previous.is_empty() {
            let mut batch = store.batch();
            for &l in &previous {
                batch.set_state(
                    &job,
                    l,
                    RecipientState::Submitted {
                        id: ulid::Ulid::from_parts(1_700_000_000_000 + l, l as u128).to_string(),
                        at_ms: 1_700_000_000_000 + l,
                    },
                );
            }
            previous.clear();
            while line < n && (previous.len() as u64) < group {
                batch.set_state(
                    &job,
                    line,
                    RecipientState::Sending {
                        at_ms: 1_700_000_000_000 + line,
                    },
                );
                previous.push(line);
                line += 1;
            }
            // As the dispatcher's committer: in order, then one sync.
            store.apply_in_order(batch).unwrap();
            store.flush().await.unwrap();
        }
    });
    phase("sends", &store, &mut mark);

    rt.block_on(async {
        // 3. Poll results, nobody waiting: no sync of their own (the background flush writes).
        let mut batch = store.batch();
        for l in 0..n {
            batch.set_state(
                &job,
                l,
                RecipientState::Final {
                    id: ulid::Ulid::from_parts(1_700_000_000_000 + l, l as u128).to_string(),
                    status: "PROCESSED".into(),
                    read_status: None,
                    payment_status: None,
                    notification: None,
                    at_ms: 1_700_000_001_000 + l,
                    polls: 1,
                },
            );
            if batch.len() >= 512 {
                store
                    .apply_in_order(std::mem::replace(&mut batch, store.batch()))
                    .unwrap();
            }
        }
        store.apply_in_order(batch).unwrap();
        store.flush().await.unwrap();
    });
    phase("polls", &store, &mut mark);
    let size = dir_size(&dir.path().join("store"));
    drop(store);

    println!(
        "store_io: {n} recipients, sends grouped by {group}, compression {compression}, cache {} MiB",
        cache / 1024 / 1024
    );
    let (mut bytes, mut syncs) = (0, 0);
    for p in &phases {
        bytes += p.bytes;
        syncs += p.syncs;
        println!(
            "  {:<7} {:>9.0} B written per recipient, {:.4} syncs per recipient",
            p.name,
            p.bytes as f64 / n as f64,
            p.syncs as f64 / n as f64
        );
    }
    println!(
        "  {:<7} {:>9.0} B written per recipient, {:.4} syncs per recipient; store {:.0} B per recipient",
        "all",
        bytes as f64 / n as f64,
        syncs as f64 / n as f64,
        size as f64 / n as f64
    );
}
