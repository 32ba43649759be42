//! Physical lines of a recipients file, as an editor or a spreadsheet numbers them: [`Lines`]
//! splits on LF, CRLF and CR alike and decodes each line to text ([`FileEncoding`]: UTF-8 with
//! or without BOM, UTF-16 LE/BE with BOM, or a single-byte encoding the template names);
//! [`scan`] reads the file once before anything is ingested: its identity (SHA-256 of the
//! bytes), its physical line count, and the first line that is not valid UTF-8.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use encoding_rs::{Encoding, UTF_16BE, UTF_16LE, UTF_8};
use sha2::{Digest, Sha256};

const READ_BUF: usize = 1 << 16;

/// How a recipients file is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileEncoding(&'static Encoding);

impl Default for FileEncoding {
    fn default() -> Self {
        FileEncoding(UTF_8)
    }
}

impl FileEncoding {
    /// UTF-8 (the default).
    pub const UTF8: FileEncoding = FileEncoding(UTF_8);

    /// From a label (`utf-8`, `windows-1252`, `latin1`, `iso-8859-15`, `utf-16le`…). Only
    /// encodings a spreadsheet writes for Italian text are accepted.
    pub fn from_label(label: &str) -> Result<FileEncoding, String> {
        let enc = Encoding::for_label(label.trim().as_bytes()).ok_or_else(|| {
            format!("{label:?} is not an encoding name (use \"utf-8\" or \"windows-1252\")")
        })?;
        let allowed = [
            UTF_8,
            encoding_rs::WINDOWS_1252,
            encoding_rs::ISO_8859_15,
            UTF_16LE,
            UTF_16BE,
        ];
        if allowed.contains(&enc) {
            Ok(FileEncoding(enc))
        } else {
            Err(format!(
                "{label:?} ({}) is not supported: use \"utf-8\", \"windows-1252\", \"iso-8859-15\" or \"utf-16\" with a BOM",
                enc.name()
            ))
        }
    }

    /// The encoding's canonical name.
    pub fn name(&self) -> &'static str {
        self.0.name()
    }

    fn is_utf16(&self) -> bool {
        self.0 == UTF_16LE || self.0 == UTF_16BE
    }
}

/// The file's byte order mark, which wins over the declared encoding (as in browsers).
fn sniff_bom(head: &[u8]) -> Option<(&'static Encoding, usize)> {
    Encoding::for_bom(head)
}

/// A reader that turns UTF-16 into UTF-8 as it streams (malformed units become U+FFFD).
struct Utf16ToUtf8 {
    inner: BufReader<File>,
    decoder: encoding_rs::Decoder,
    out: Vec<u8>,
    pos: usize,
    done: bool,
}

impl Read for Utf16ToUtf8 {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.out.len() {
            if self.done {
                return Ok(0);
            }
            let input = self.inner.fill_buf()?;
            let last = input.is_empty();
            let room = self
                .decoder
                .max_utf8_buffer_length(input.len())
                .unwrap_or(input.len() * 3 + 16);
            self.out.clear();
            self.out.resize(room, 0);
            let (_, read, written, _) = self.decoder.decode_to_utf8(input, &mut self.out, last);
            self.inner.consume(read);
            self.out.truncate(written);
            self.pos = 0;
            self.done = last;
        }
        let n = buf.len().min(self.out.len() - self.pos);
        buf[..n].copy_from_slice(&self.out[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Opens `path` for reading as text in `declared` (a BOM overrides it): the byte stream (UTF-8
/// for UTF-16 files, transcoded) and the single-byte decoder to apply per line, if any.
fn open_text(
    path: &Path,
    declared: FileEncoding,
) -> std::io::Result<(Box<dyn BufRead + Send>, Option<&'static Encoding>)> {
    let mut file = BufReader::with_capacity(READ_BUF, File::open(path)?);
    let head = file.fill_buf()?;
    let (enc, bom_len) = match sniff_bom(head) {
        Some((enc, len)) => (enc, len),
        None => (declared.0, 0),
    };
    file.consume(bom_len);
    if enc == UTF_16LE || enc == UTF_16BE {
        let reader = Utf16ToUtf8 {
            inner: file,
            decoder: enc.new_decoder_without_bom_handling(),
            out: Vec::new(),
            pos: 0,
            done: false,
        };
        return Ok((Box::new(BufReader::with_capacity(READ_BUF, reader)), None));
    }
    let single_byte = (enc != UTF_8).then_some(enc);
    Ok((Box::new(file), single_byte))
}

/// Why a physical line could not be turned into text.
#[derive(Debug)]
pub enum LineError {
    /// Reading failed.
    Io(std::io::Error),
    /// The line is not valid UTF-8 (and no other encoding was named).
    NotUtf8 {
        /// The line.
        line: u64,
    },
}

/// The physical lines of a file, decoded, numbered from 1.
pub struct Lines {
    reader: Box<dyn BufRead + Send>,
    single_byte: Option<&'static Encoding>,
    raw: Vec<u8>,
    text: String,
    line: u64,
    /// The previous line ended with CR: a LF right after it belongs to that terminator.
    after_cr: bool,
}

impl Lines {
    /// Opens `path` decoded as `encoding` (a BOM overrides it).
    pub fn open(path: &Path, encoding: FileEncoding) -> std::io::Result<Lines> {
        let (reader, single_byte) = open_text(path, encoding)?;
        Ok(Lines {
            reader,
            single_byte,
            raw: Vec::with_capacity(1024),
            text: String::with_capacity(1024),
            line: 0,
            after_cr: false,
        })
    }

    /// Reads the raw bytes of the next physical line (without its terminator) into `raw`.
    /// False at the end of the file.
    fn next_raw(&mut self) -> std::io::Result<bool> {
        self.raw.clear();
        let mut any = false;
        loop {
            let buf = self.reader.fill_buf()?;
            if buf.is_empty() {
                // The last line, unless the file ended with a terminator.
                return Ok(any);
            }
            let mut start = 0;
            if self.after_cr {
                self.after_cr = false;
                if buf[0] == b'\n' {
                    start = 1;
                }
            }
            match memchr::memchr2(b'\n', b'\r', &buf[start..]) {
                Some(i) => {
                    let end = start + i;
                    self.raw.extend_from_slice(&buf[start..end]);
                    self.after_cr = buf[end] == b'\r';
                    self.reader.consume(end + 1);
                    return Ok(true);
                }
                None => {
                    let n = buf.len();
                    if n > start {
                        any = true;
                    }
                    self.raw.extend_from_slice(&buf[start..]);
                    self.reader.consume(n);
                }
            }
        }
    }

    /// The next physical line, its number and its text: `Ok(None)` at the end of the file.
    pub fn next_line(&mut self) -> Result<Option<(u64, &str)>, LineError> {
        if !self.next_raw().map_err(LineError::Io)? {
            return Ok(None);
        }
        self.line += 1;
        let line = self.line;
        match self.single_byte {
            None => match std::str::from_utf8(&self.raw) {
                Ok(s) => Ok(Some((line, s))),
                Err(_) => Err(LineError::NotUtf8 { line }),
            },
            Some(enc) => {
                self.text.clear();
                match enc.decode_without_bom_handling(&self.raw).0 {
                    Cow::Borrowed(s) => self.text.push_str(s),
                    Cow::Owned(s) => self.text = s,
                }
                Ok(Some((line, &self.text)))
            }
        }
    }
}

/// What one read of a recipients file tells before any row is ingested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileScan {
    /// Physical lines (LF, CRLF and CR all end one; a last line without terminator counts).
    pub lines: u64,
    /// The first line that is not valid UTF-8, when the file is read as UTF-8.
    pub first_bad_line: Option<u64>,
    /// The encoding actually used (a BOM overrides the declared one).
    pub encoding: &'static str,
    /// Read with a single-byte encoding (`windows-1252`, …), the file is nonetheless valid UTF-8
    /// with accented letters: the declared encoding would garble them.
    pub utf8_with_accents: bool,
}

/// Counts line terminators in `chunk` (CRLF is one), `after_cr` carrying whether the previous
/// chunk ended with CR.
fn count_terminators(chunk: &[u8], after_cr: &mut bool) -> u64 {
    let mut n = 0;
    for i in memchr::memchr2_iter(b'\n', b'\r', chunk) {
        let follows_cr = if i == 0 {
            *after_cr
        } else {
            chunk[i - 1] == b'\r'
        };
        if !(chunk[i] == b'\n' && follows_cr) {
            n += 1;
        }
    }
    if let Some(&b) = chunk.last() {
        *after_cr = b == b'\r';
    }
    n
}

/// Reads `path` once, feeding its bytes to `h`: physical lines, first non-UTF-8 line (for
/// files read as UTF-8). UTF-16 files (with BOM) are read a second time, decoded, for the count.
pub fn scan(path: &Path, declared: FileEncoding, h: &mut Sha256) -> std::io::Result<FileScan> {
    let mut file = BufReader::with_capacity(1 << 20, File::open(path)?);
    let bom = sniff_bom(file.fill_buf()?);
    let enc = bom.map_or(declared.0, |(e, _)| e);
    // Checked for single-byte encodings too: a UTF-8 file read as windows-1252 garbles accents.
    let check_utf8 = !enc_is_utf16(enc);
    let mut non_ascii = false;
    let mut lines = 0u64;
    let mut after_cr = false;
    let mut ends_in_line = false;
    let mut first_bad_line = None;
    // Bytes of an incomplete UTF-8 sequence at the end of the previous chunk.
    let mut carry: Vec<u8> = Vec::new();
    let mut skip_bom = bom.map_or(0, |(_, n)| n);
    loop {
        let buf = file.fill_buf()?;
        if buf.is_empty() {
            break;
        }
        h.update(buf);
        let n = buf.len();
        let body = &buf[skip_bom.min(n)..];
        skip_bom = skip_bom.saturating_sub(n);
        if !enc_is_utf16(enc) {
            if check_utf8 && first_bad_line.is_none() {
                if let Some(offset) = first_invalid_utf8(&mut carry, body) {
                    let mut cr = after_cr;
                    let before = count_terminators(&body[..offset], &mut cr);
                    first_bad_line = Some(lines + before + 1);
                }
            }
            if !non_ascii && enc != UTF_8 {
                non_ascii = !body.is_ascii();
            }
            lines += count_terminators(body, &mut after_cr);
            if let Some(&last) = body.last() {
                ends_in_line = last != b'\n' && last != b'\r';
            }
        }
        file.consume(n);
    }
    if enc_is_utf16(enc) {
        let mut text = Lines::open(path, declared)?;
        while text.next_raw()? {
            text.line += 1;
        }
        lines = text.line;
    } else if ends_in_line {
        lines += 1;
    }
    if check_utf8 && first_bad_line.is_none() && !carry.is_empty() {
        // The file ends inside a multi-byte sequence: its last line is not UTF-8.
        first_bad_line = Some(lines.max(1));
    }
    let single_byte = enc != UTF_8 && !enc_is_utf16(enc);
    Ok(FileScan {
        lines,
        utf8_with_accents: single_byte && first_bad_line.is_none() && non_ascii,
        first_bad_line: if enc == UTF_8 { first_bad_line } else { None },
        encoding: enc.name(),
    })
}

fn enc_is_utf16(enc: &'static Encoding) -> bool {
    FileEncoding(enc).is_utf16()
}

/// Streaming UTF-8 check of `chunk` after the `carry` of the previous chunk: the offset (in
/// `chunk`, 0 when the bad sequence began in the carry) of the first invalid sequence, if any.
/// `carry` keeps an incomplete sequence at the end for the next chunk.
fn first_invalid_utf8(carry: &mut Vec<u8>, chunk: &[u8]) -> Option<usize> {
    let joined;
    let (data, shift) = if carry.is_empty() {
        (chunk, 0)
    } else {
        joined = [carry.as_slice(), chunk].concat();
        (&joined[..], carry.len())
    };
    let (bad, rest) = match std::str::from_utf8(data) {
        Ok(_) => (None, Vec::new()),
        Err(e) => match e.error_len() {
            Some(_) => (Some(e.valid_up_to().saturating_sub(shift)), Vec::new()),
            None => (None, data[e.valid_up_to()..].to_vec()),
        },
    };
    *carry = rest;
    bad
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        f.flush().unwrap();
        f
    }

    fn all_lines(bytes: &[u8], enc: FileEncoding) -> Vec<String> {
        let f = file(bytes);
        let mut l = Lines::open(f.path(), enc).unwrap();
        let mut out = Vec::new();
        while let Some((_, s)) = l.next_line().unwrap() {
            out.push(s.to_owned());
        }
        out
    }

    #[test]
    fn lf_crlf_cr_and_mixed_terminators_give_the_same_lines() {
        let want = vec!["a", "b", "", "c"];
        for bytes in [
            &b"a\nb\n\nc\n"[..],
            b"a\r\nb\r\n\r\nc\r\n",
            b"a\rb\r\rc\r",
            b"a\r\nb\n\rc",
            b"\xEF\xBB\xBFa\nb\n\nc",
        ] {
            assert_eq!(all_lines(bytes, FileEncoding::UTF8), want, "{bytes:?}");
            let s = scan(file(bytes).path(), FileEncoding::UTF8, &mut Sha256::new()).unwrap();
            assert_eq!(s.lines, 4, "{bytes:?}");
            assert_eq!(s.first_bad_line, None);
        }
    }

    #[test]
    fn terminators_split_across_chunks_are_counted_once() {
        let mut cr = false;
        assert_eq!(count_terminators(b"a\r", &mut cr), 1);
        assert_eq!(count_terminators(b"\nb\r\n", &mut cr), 1);
        assert_eq!(count_terminators(b"\r\r\n\n", &mut cr), 3);
    }

    #[test]
    fn the_first_line_that_is_not_utf8_is_named() {
        let s = scan(
            file(b"h\nok \xc3\xa0\nbad \xe0 here\nbad\xff\n").path(),
            FileEncoding::UTF8,
            &mut Sha256::new(),
        )
        .unwrap();
        assert_eq!(s.first_bad_line, Some(3));
        assert_eq!(s.lines, 4);
        // Declared windows-1252: every byte is a character.
        let w = FileEncoding::from_label("windows-1252").unwrap();
        let s = scan(file(b"h\nbad \xe0 here\n").path(), w, &mut Sha256::new()).unwrap();
        assert_eq!(s.first_bad_line, None);
        assert_eq!(
            all_lines(b"h\nPerch\xe9 \x80\n", w),
            vec!["h", "Perch\u{e9} \u{20ac}"]
        );
    }

    #[test]
    fn utf8_split_inside_a_character_across_chunks_is_valid() {
        let mut carry = Vec::new();
        assert_eq!(first_invalid_utf8(&mut carry, b"ab\xc3"), None);
        assert_eq!(first_invalid_utf8(&mut carry, b"\xa0cd"), None);
        assert!(carry.is_empty());
        assert_eq!(first_invalid_utf8(&mut carry, b"x\xe2\x82"), None);
        assert_eq!(first_invalid_utf8(&mut carry, b"\xacz"), None);
        assert_eq!(first_invalid_utf8(&mut carry, b"\xe2"), None);
        assert_eq!(first_invalid_utf8(&mut carry, b"zz"), Some(0));
    }

    #[test]
    fn utf16_with_bom_is_decoded_both_ways() {
        let text = "fiscal_code;nome\r\nRSSMRA85T10A562S;Niccolò\r\n";
        let mut le = vec![0xFF, 0xFE];
        let mut be = vec![0xFE, 0xFF];
        for u in text.encode_utf16() {
            le.extend_from_slice(&u.to_le_bytes());
            be.extend_from_slice(&u.to_be_bytes());
        }
        for bytes in [le, be] {
            assert_eq!(
                all_lines(&bytes, FileEncoding::UTF8),
                vec!["fiscal_code;nome", "RSSMRA85T10A562S;Niccolò"]
            );
            let s = scan(file(&bytes).path(), FileEncoding::UTF8, &mut Sha256::new()).unwrap();
            assert_eq!((s.lines, s.first_bad_line), (2, None));
        }
    }

    #[test]
    fn only_spreadsheet_encodings_are_accepted() {
        assert_eq!(
            FileEncoding::from_label("latin1").unwrap().name(),
            "windows-1252"
        );
        assert!(FileEncoding::from_label("shift_jis").is_err());
        assert!(FileEncoding::from_label("klingon").is_err());
    }
}
