//! Compact, versioned binary encoding of a [`RecipientRecord`] (the domain's, `model::recipient`):
//! a version byte, the fiscal code (16 raw bytes), the row's values (varint lengths), the state
//! (a tag and its fields). No serde per record: a recipient must cost at most a few hundred bytes
//! on disk. Encoding and decoding only.

use crate::model::recipient::{
    NotSubscribedReason, RecipientRecord, RecipientState, RowFiscalCode,
};
use crate::model::FiscalCode;

/// Encoding version written in the first byte.
const VERSION: u8 = 1;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn put_opt(out: &mut Vec<u8>, s: &Option<String>) {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_bytes(out, s.as_bytes());
        }
    }
}

/// A message id: 16 bytes when it is a ULID (IO's ids are), else the string.
fn put_id(out: &mut Vec<u8>, id: &str) {
    match ulid::Ulid::from_string(id) {
        Ok(u) if u.to_string() == id => {
            out.push(0);
            out.extend_from_slice(&u.to_bytes());
        }
        _ => {
            out.push(1);
            put_bytes(out, id.as_bytes());
        }
    }
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Result<u8, String> {
        let v = *self.b.get(self.pos).ok_or("truncated")?;
        self.pos += 1;
        Ok(v)
    }
    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.u8()?;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).ok_or("length overflow")?;
        let s = self.b.get(self.pos..end).ok_or("truncated")?;
        self.pos = end;
        Ok(s)
    }
    fn string(&mut self) -> Result<String, String> {
        let n = self.varint()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| "string is not UTF-8".into())
    }
    fn opt(&mut self) -> Result<Option<String>, String> {
        match self.u8()? {
            0 => Ok(None),
            1 => self.string().map(Some),
            t => Err(format!("bad option tag {t}")),
        }
    }
    fn id(&mut self) -> Result<String, String> {
        match self.u8()? {
            0 => {
                let b: [u8; 16] = self.take(16)?.try_into().expect("16 bytes taken");
                Ok(ulid::Ulid::from_bytes(b).to_string())
            }
            1 => self.string(),
            t => Err(format!("bad id tag {t}")),
        }
    }
    fn u16(&mut self) -> Result<u16, String> {
        u16::try_from(self.varint()?).map_err(|_| "u16 out of range".into())
    }
}

fn encode_state(out: &mut Vec<u8>, s: &RecipientState) {
    match s {
        RecipientState::Queued => out.push(0),
        RecipientState::Sending { at_ms } => {
            out.push(1);
            put_varint(out, *at_ms);
        }
        RecipientState::Submitted { id, at_ms } => {
            out.push(2);
            put_id(out, id);
            put_varint(out, *at_ms);
        }
        RecipientState::Final {
            id,
            status,
            read_status,
            payment_status,
            notification,
            at_ms,
            polls,
        } => {
            out.push(3);
            put_id(out, id);
            put_bytes(out, status.as_bytes());
            put_opt(out, read_status);
            put_opt(out, payment_status);
            put_opt(out, notification);
            put_varint(out, *at_ms);
            put_varint(out, u64::from(*polls));
        }
        RecipientState::PollExpired { id, at_ms, polls } => {
            out.push(4);
            put_id(out, id);
            put_varint(out, *at_ms);
            put_varint(out, u64::from(*polls));
        }
        RecipientState::NotSubscribed { reason } => {
            out.push(5);
            out.push(match reason {
                NotSubscribedReason::Feed => 0,
                NotSubscribedReason::ProfileNotFound => 1,
                NotSubscribedReason::SenderNotAllowed => 2,
            });
        }
        RecipientState::Invalid { field, reason } => {
            out.push(6);
            put_bytes(out, field.as_bytes());
            put_bytes(out, reason.as_bytes());
        }
        RecipientState::Duplicate { first_line } => {
            out.push(7);
            put_varint(out, *first_line);
        }
        RecipientState::Failed {
            status,
            title,
            detail,
        } => {
            out.push(8);
            put_varint(out, u64::from(*status));
            put_bytes(out, title.as_bytes());
            put_bytes(out, detail.as_bytes());
        }
        RecipientState::Unknown { reason, id } => {
            out.push(9);
            put_bytes(out, reason.as_bytes());
            put_opt(out, id);
        }
        RecipientState::Cancelled => out.push(10),
        RecipientState::AlreadySent { job, line, id } => {
            out.push(11);
            put_bytes(out, job.as_bytes());
            put_varint(out, *line);
            put_opt(out, id);
        }
        RecipientState::DuplicateConflict { first_line } => {
            out.push(12);
            put_varint(out, *first_line);
        }
    }
}

fn decode_state(r: &mut Reader<'_>) -> Result<RecipientState, String> {
    Ok(match r.u8()? {
        0 => RecipientState::Queued,
        1 => RecipientState::Sending { at_ms: r.varint()? },
        2 => RecipientState::Submitted {
            id: r.id()?,
            at_ms: r.varint()?,
        },
        3 => RecipientState::Final {
            id: r.id()?,
            status: r.string()?,
            read_status: r.opt()?,
            payment_status: r.opt()?,
            notification: r.opt()?,
            at_ms: r.varint()?,
            polls: r.u16()?,
        },
        4 => RecipientState::PollExpired {
            id: r.id()?,
            at_ms: r.varint()?,
            polls: r.u16()?,
        },
        5 => RecipientState::NotSubscribed {
            reason: match r.u8()? {
                0 => NotSubscribedReason::Feed,
                1 => NotSubscribedReason::ProfileNotFound,
                2 => NotSubscribedReason::SenderNotAllowed,
                t => return Err(format!("bad not-subscribed reason {t}")),
            },
        },
        6 => RecipientState::Invalid {
            field: r.string()?,
            reason: r.string()?,
        },
        7 => RecipientState::Duplicate {
            first_line: r.varint()?,
        },
        8 => RecipientState::Failed {
            status: r.u16()?,
            title: r.string()?,
            detail: r.string()?,
        },
        9 => RecipientState::Unknown {
            reason: r.string()?,
            id: r.opt()?,
        },
        10 => RecipientState::Cancelled,
        11 => RecipientState::AlreadySent {
            job: r.string()?,
            line: r.varint()?,
            id: r.opt()?,
        },
        12 => RecipientState::DuplicateConflict {
            first_line: r.varint()?,
        },
        t => return Err(format!("unknown state tag {t}")),
    })
}

impl RecipientRecord {
    /// Encodes the record (the line is the key, not in the value).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.push(VERSION);
        match &self.fiscal_code {
            RowFiscalCode::Valid(code) => {
                out.push(0);
                out.extend_from_slice(code.as_bytes());
            }
            RowFiscalCode::Raw(b) => {
                out.push(1);
                put_bytes(&mut out, b);
            }
        }
        put_varint(&mut out, self.values.len() as u64);
        for v in &self.values {
            put_bytes(&mut out, v.as_bytes());
        }
        encode_state(&mut out, &self.state);
        out
    }

    /// Decodes a record; garbage, truncation or trailing bytes are errors.
    pub fn decode(line: u64, bytes: &[u8]) -> Result<RecipientRecord, String> {
        let (record, end) = decode_parts(line, bytes)?;
        if end != bytes.len() {
            return Err(format!("{} trailing bytes", bytes.len() - end));
        }
        Ok(record)
    }
}

fn decode_parts(line: u64, bytes: &[u8]) -> Result<(RecipientRecord, usize), String> {
    let mut r = Reader { b: bytes, pos: 0 };
    let version = r.u8()?;
    if version != VERSION {
        return Err(format!("unknown record version {version}"));
    }
    let fiscal_code = match r.u8()? {
        0 => {
            let bytes: &[u8; 16] = r.take(16)?.try_into().expect("16 bytes taken");
            // Never shown: the error names the record (job/line), not the code.
            let code = FiscalCode::from_bytes(bytes)
                .map_err(|e| format!("stored fiscal code is not valid: {e}"))?;
            RowFiscalCode::Valid(code)
        }
        1 => {
            let n = r.varint()? as usize;
            RowFiscalCode::Raw(r.take(n)?.to_vec())
        }
        t => return Err(format!("bad fiscal code tag {t}")),
    };
    let n = r.varint()? as usize;
    if n > 4096 {
        return Err(format!("{n} values"));
    }
    let mut values = Vec::with_capacity(n);
    for _ in 0..n {
        values.push(r.string()?);
    }
    let state = decode_state(&mut r)?;
    Ok((
        RecipientRecord {
            line,
            fiscal_code,
            values,
            state,
        },
        r.pos,
    ))
}

/// Re-encodes `current` with a new state, keeping fiscal code and values.
pub(super) fn replace_state(current: &[u8], state: &RecipientState) -> Result<Vec<u8>, String> {
    let (mut record, _) = decode_parts(0, current)?;
    record.state = state.clone();
    Ok(record.encode())
}
