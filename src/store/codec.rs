//! Compact, versioned binary encoding of [`RecipientRecord`]: a version byte, the fiscal code
//! (16 raw bytes), the row's values (varint lengths), the state (a tag and its fields). No
//! serde per record: a recipient must cost at most a few hundred bytes on disk.

use std::fmt;

/// Encoding version written in the first byte.
const VERSION: u8 = 1;

/// A recipient's fiscal code as stored: 16 ASCII bytes for a valid code, or the raw (truncated)
/// text of an invalid row, kept for the report.
#[derive(Clone, PartialEq, Eq)]
pub enum FcBytes {
    /// A valid code.
    Valid([u8; 16]),
    /// The raw field of an invalid row (at most [`FcBytes::RAW_MAX`] bytes).
    Raw(Vec<u8>),
}

impl FcBytes {
    /// Longest raw field kept.
    pub const RAW_MAX: usize = 32;

    /// A valid code's bytes.
    pub fn valid(bytes: [u8; 16]) -> FcBytes {
        FcBytes::Valid(bytes)
    }

    /// The raw text of an invalid row, truncated on a char boundary.
    pub fn raw(text: &str) -> FcBytes {
        let mut end = text.len().min(Self::RAW_MAX);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        FcBytes::Raw(text.as_bytes()[..end].to_vec())
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            FcBytes::Valid(b) => b,
            FcBytes::Raw(b) => b,
        }
    }
}

impl fmt::Debug for FcBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Personal data: never in Debug output.
        write!(f, "FcBytes({} bytes)", self.as_bytes().len())
    }
}

/// Why a recipient was filtered out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotSubscribedReason {
    /// Not in the subscriptions feed.
    Feed,
    /// POST /profiles answered 404.
    ProfileNotFound,
    /// `sender_allowed: false`.
    SenderNotAllowed,
}

/// Where a recipient is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipientState {
    /// Waiting to be sent.
    Queued,
    /// The intent to send, durable before the POST leaves.
    Sending {
        /// When.
        at_ms: u64,
    },
    /// IO returned an id (durable before it counts as submitted).
    Submitted {
        /// Message id.
        id: String,
        /// When.
        at_ms: u64,
    },
    /// IO reported a final status.
    Final {
        /// Message id.
        id: String,
        /// PROCESSED, REJECTED, FAILED, or a future value.
        status: String,
        /// ADVANCED: read status.
        read_status: Option<String>,
        /// ADVANCED: payment status.
        payment_status: Option<String>,
        /// Notification summary, when IO sent one.
        notification: Option<String>,
        /// When.
        at_ms: u64,
        /// Polls it took.
        polls: u16,
    },
    /// No final status before the poll deadline ("Unknown status").
    PollExpired {
        /// Message id.
        id: String,
        /// When.
        at_ms: u64,
        /// Polls made.
        polls: u16,
    },
    /// Filtered out before sending.
    NotSubscribed {
        /// Why.
        reason: NotSubscribedReason,
    },
    /// The row failed validation.
    Invalid {
        /// Field.
        field: String,
        /// Reason.
        reason: String,
    },
    /// Same fiscal code as an earlier line.
    Duplicate {
        /// That line.
        first_line: u64,
    },
    /// IO refused the message (400/403): final.
    Failed {
        /// HTTP status.
        status: u16,
        /// IO's title.
        title: String,
        /// IO's detail.
        detail: String,
    },
    /// The job was cancelled before this recipient was sent: nothing left for it.
    Cancelled,
    /// The citizen already has a message of this campaign from another job (campaign ledger):
    /// not sent.
    AlreadySent {
        /// That job.
        job: String,
        /// Its line in that job.
        line: u64,
        /// The message id, when that job has one (None: still sending, or never answered).
        id: Option<String>,
    },
    /// Same fiscal code as an earlier line of this job, with different values: not sent.
    DuplicateConflict {
        /// That line.
        first_line: u64,
    },
    /// IO may or may not have created the message: not re-sent unless the operator asks.
    Unknown {
        /// Why.
        reason: String,
        /// The id, if one was seen.
        id: Option<String>,
    },
}

impl RecipientState {
    /// IO has, may have, or is about to have a message for this recipient: `sending` (the
    /// request may be in flight), `submitted`, a final status, `poll_expired`, `unknown`. The
    /// campaign ledger's rule for `already_sent`: a claim in any other state (queued,
    /// cancelled, refused, filtered out) never sent anything and may be taken over.
    pub fn may_have_created(&self) -> bool {
        matches!(
            self,
            RecipientState::Sending { .. }
                | RecipientState::Submitted { .. }
                | RecipientState::Final { .. }
                | RecipientState::PollExpired { .. }
                | RecipientState::Unknown { .. }
        )
    }

    /// The message id IO gave, if any.
    pub fn message_id(&self) -> Option<&str> {
        match self {
            RecipientState::Submitted { id, .. }
            | RecipientState::Final { id, .. }
            | RecipientState::PollExpired { id, .. } => Some(id),
            RecipientState::Unknown { id, .. } => id.as_deref(),
            _ => None,
        }
    }

    /// Stable snake_case label for counts and metrics.
    pub fn outcome_name(&self) -> &'static str {
        match self {
            RecipientState::Queued => "queued",
            RecipientState::Sending { .. } => "sending",
            RecipientState::Submitted { .. } => "submitted",
            RecipientState::Final { status, .. } => match status.as_str() {
                "PROCESSED" => "processed",
                "REJECTED" => "rejected",
                _ => "failed_status",
            },
            RecipientState::PollExpired { .. } => "poll_expired",
            RecipientState::NotSubscribed { .. } => "not_subscribed",
            RecipientState::Invalid { .. } => "invalid",
            RecipientState::Duplicate { .. } => "duplicate",
            RecipientState::Failed { .. } => "failed",
            RecipientState::Unknown { .. } => "unknown",
            RecipientState::Cancelled => "cancelled",
            RecipientState::AlreadySent { .. } => "already_sent",
            RecipientState::DuplicateConflict { .. } => "duplicate_conflict",
        }
    }
}

/// One recipient: its line, fiscal code, the values of the template's columns, its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientRecord {
    /// CSV line (1-based; the header is line 1).
    pub line: u64,
    /// Fiscal code.
    pub fiscal_code: FcBytes,
    /// Values of the columns the template uses (empty for rows that are never sent).
    pub values: Vec<String>,
    /// State.
    pub state: RecipientState,
}

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
            FcBytes::Valid(b) => {
                out.push(0);
                out.extend_from_slice(b);
            }
            FcBytes::Raw(b) => {
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
        0 => FcBytes::Valid(r.take(16)?.try_into().expect("16 bytes taken")),
        1 => {
            let n = r.varint()? as usize;
            FcBytes::Raw(r.take(n)?.to_vec())
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
