//! The subscriber set's snapshot file: a restart loads 40 M subscribers in seconds instead of
//! downloading the feed again. Written to a temporary file, fsynced, then renamed over the old
//! one (a crash leaves the old snapshot or the new one, never half of one). Read back with
//! every check: magic, version, exact length, CRC-32 of everything, and the set's own
//! invariants ([`SubscriberSet::from_parts`]). A snapshot failing any check is never used.
//!
//! # Format (little-endian)
//! | bytes | field |
//! |---|---|
//! | 8 | magic `CORRSUB1` |
//! | 4 | format version (1) |
//! | 4 | directory bits |
//! | 8 | keys |
//! | 4 | last feed day applied, days since 2020-03-24 (`u32::MAX`: none) |
//! | 4 | CRC-32 of everything before it and everything after the header |
//! | 4 × (2^bits + 1) | directory |
//! | 8 × keys | keys |

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use chrono::NaiveDate;

use super::set::SubscriberSet;
use super::{feed_epoch, FeedError};

const MAGIC: &[u8; 8] = b"CORRSUB1";
const VERSION: u32 = 1;
const HEADER: usize = 32;
const NO_DAY: u32 = u32::MAX;
const CHUNK: usize = 1 << 20;

/// What a snapshot holds.
#[derive(Debug)]
pub struct Snapshot {
    /// The set.
    pub set: SubscriberSet,
    /// The last feed day it includes.
    pub through: Option<NaiveDate>,
    /// Its CRC (the store records it, to tie the file to the store).
    pub crc: u32,
}

fn bad(path: &Path, reason: impl Into<String>) -> FeedError {
    FeedError::Snapshot {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

fn day_code(day: Option<NaiveDate>) -> u32 {
    day.map_or(NO_DAY, |d| (d - feed_epoch()).num_days().max(0) as u32)
}

fn header(bits: u32, keys: u64, day: u32) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&bits.to_le_bytes());
    h[16..24].copy_from_slice(&keys.to_le_bytes());
    h[24..28].copy_from_slice(&day.to_le_bytes());
    h
}

/// Writes `set` (through `through`) to `path` atomically; returns its CRC.
pub fn write(
    path: &Path,
    set: &SubscriberSet,
    through: Option<NaiveDate>,
) -> Result<u32, FeedError> {
    let io = |e: std::io::Error| bad(path, format!("write failed: {e}"));
    let tmp = tmp_path(path);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(io)?;
    }
    let (bits, dir, keys) = set.parts();
    let mut head = header(bits, keys.len() as u64, day_code(through));
    let mut crc = crc32fast::Hasher::new();
    crc.update(&head[..28]);
    let mut buf = Vec::with_capacity(CHUNK);
    let file = File::create(&tmp).map_err(io)?;
    let mut out = BufWriter::with_capacity(CHUNK, file);
    out.write_all(&head).map_err(io)?;
    for chunk in dir.chunks(CHUNK / 4) {
        buf.clear();
        for d in chunk {
            buf.extend_from_slice(&d.to_le_bytes());
        }
        crc.update(&buf);
        out.write_all(&buf).map_err(io)?;
    }
    for chunk in keys.chunks(CHUNK / 8) {
        buf.clear();
        for k in chunk {
            buf.extend_from_slice(&k.to_le_bytes());
        }
        crc.update(&buf);
        out.write_all(&buf).map_err(io)?;
    }
    let crc = crc.finalize();
    head[28..32].copy_from_slice(&crc.to_le_bytes());
    let mut file = out.into_inner().map_err(|e| io(e.into_error()))?;
    use std::io::{Seek, SeekFrom};
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    file.write_all(&head).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    fs::rename(&tmp, path).map_err(io)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // The rename is durable once the directory is.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(crc)
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Reads and checks a snapshot. `Ok(None)` when there is no file.
pub fn read(path: &Path) -> Result<Option<Snapshot>, FeedError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(bad(path, format!("cannot open: {e}"))),
    };
    let len = file
        .metadata()
        .map_err(|e| bad(path, format!("cannot stat: {e}")))?
        .len();
    let mut input = BufReader::with_capacity(CHUNK, file);
    let mut head = [0u8; HEADER];
    input
        .read_exact(&mut head)
        .map_err(|_| bad(path, "truncated header"))?;
    if &head[..8] != MAGIC {
        return Err(bad(path, "not a corriere subscriber snapshot"));
    }
    let u32_at = |i: usize| u32::from_le_bytes(head[i..i + 4].try_into().expect("4 bytes"));
    let version = u32_at(8);
    if version != VERSION {
        return Err(bad(
            path,
            format!("format version {version}, expected {VERSION}"),
        ));
    }
    let bits = u32_at(12);
    if !(super::set::MIN_DIR_BITS..=super::set::MAX_DIR_BITS).contains(&bits) {
        return Err(bad(path, format!("directory bits {bits}")));
    }
    let keys = u64::from_le_bytes(head[16..24].try_into().expect("8 bytes"));
    let day = u32_at(24);
    let want_crc = u32_at(28);
    let dir_len = (1u64 << bits) + 1;
    let expected = keys
        .checked_mul(8)
        .and_then(|k| k.checked_add(HEADER as u64 + dir_len * 4));
    if expected != Some(len) {
        let expected = expected.map_or_else(|| "an impossible size".to_owned(), |e| e.to_string());
        return Err(bad(
            path,
            format!("{len} bytes, expected {expected} (truncated or padded)"),
        ));
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(&head[..28]);
    let mut buf = vec![0u8; CHUNK];
    let mut dir = Vec::with_capacity(dir_len as usize);
    read_words(&mut input, &mut buf, &mut crc, dir_len as usize, 4, |b| {
        dir.push(u32::from_le_bytes(b.try_into().expect("4 bytes")));
    })
    .map_err(|e| bad(path, format!("read failed: {e}")))?;
    let mut ks = Vec::with_capacity(keys as usize);
    read_words(&mut input, &mut buf, &mut crc, keys as usize, 8, |b| {
        ks.push(u64::from_le_bytes(b.try_into().expect("8 bytes")));
    })
    .map_err(|e| bad(path, format!("read failed: {e}")))?;
    let got = crc.finalize();
    if got != want_crc {
        return Err(bad(path, format!("CRC {got:08x}, expected {want_crc:08x}")));
    }
    let set = SubscriberSet::from_parts(bits, dir, ks).map_err(|e| bad(path, e.to_string()))?;
    let through = (day != NO_DAY).then(|| feed_epoch() + chrono::Days::new(u64::from(day)));
    Ok(Some(Snapshot {
        set,
        through,
        crc: want_crc,
    }))
}

fn read_words(
    input: &mut impl Read,
    buf: &mut [u8],
    crc: &mut crc32fast::Hasher,
    count: usize,
    width: usize,
    mut each: impl FnMut(&[u8]),
) -> std::io::Result<()> {
    let per_chunk = buf.len() / width;
    let mut left = count;
    while left > 0 {
        let n = left.min(per_chunk);
        let bytes = &mut buf[..n * width];
        input.read_exact(bytes)?;
        crc.update(bytes);
        for w in bytes.chunks_exact(width) {
            each(w);
        }
        left -= n;
    }
    Ok(())
}

/// Removes a snapshot (and any temporary file).
pub fn remove(path: &Path) {
    let _ = fs::remove_file(path);
    let _ = fs::remove_file(tmp_path(path));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::set::Key;
    use sha2::{Digest, Sha256};

    fn sample(n: u64) -> SubscriberSet {
        let mut keys: Vec<Key> = (0..n)
            .map(|i| Key::from_digest(&Sha256::digest(i.to_le_bytes()).into()))
            .collect();
        keys.sort();
        SubscriberSet::from_sorted(&keys)
    }

    #[test]
    fn round_trip_keeps_the_set_and_the_day() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("subscribers.snapshot");
        assert!(read(&path).unwrap().is_none());
        let set = sample(300_000);
        let day = NaiveDate::from_ymd_opt(2026, 11, 24);
        let crc = write(&path, &set, day).unwrap();
        let snap = read(&path).unwrap().unwrap();
        assert_eq!(snap.set, set);
        assert_eq!(snap.through, day);
        assert_eq!(snap.crc, crc);
        // An empty, never-synced set too.
        write(&path, &SubscriberSet::default(), None).unwrap();
        let snap = read(&path).unwrap().unwrap();
        assert!(snap.set.is_empty() && snap.through.is_none());
    }

    #[test]
    fn truncated_flipped_or_foreign_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.snapshot");
        write(&path, &sample(20_000), NaiveDate::from_ymd_opt(2025, 1, 1)).unwrap();
        let good = fs::read(&path).unwrap();

        fs::write(&path, &good[..good.len() - 3]).unwrap();
        assert!(read(&path).unwrap_err().to_string().contains("truncated"));

        let mut flipped = good.clone();
        let i = good.len() - 100;
        flipped[i] ^= 0x10;
        fs::write(&path, &flipped).unwrap();
        assert!(read(&path).unwrap_err().to_string().contains("CRC"));

        let mut day = good.clone();
        day[24] ^= 1;
        fs::write(&path, &day).unwrap();
        assert!(read(&path).is_err(), "the header is covered by the CRC");

        fs::write(&path, b"hello").unwrap();
        assert!(read(&path).is_err());
        fs::write(&path, [b'x'; 64]).unwrap();
        assert!(read(&path)
            .unwrap_err()
            .to_string()
            .contains("not a corriere"));
    }
}
