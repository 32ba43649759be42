//! One physical line split into fields ([`Fields::split`]): `,` or `;`, RFC 4180 quotes (`""`
//! inside a quoted value), but never across lines: a quote that is not closed on its own line
//! makes that line invalid instead of swallowing the next ones.

/// Why a line does not split into fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SplitError {
    /// Field `n` (0-based) opens a quote that the line does not close.
    Unclosed(usize),
    /// Field `n` has text after its closing quote.
    AfterQuote(usize),
}

/// The fields of one line, unescaped, in one reused buffer.
#[derive(Debug, Default)]
pub(crate) struct Fields {
    buf: String,
    ranges: Vec<(usize, usize)>,
}

impl Fields {
    /// Fields read (all of them after `Ok`, those before the bad one after `Err`).
    pub(crate) fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Field `i`, as written (unescaped, not trimmed).
    pub(crate) fn get(&self, i: usize) -> Option<&str> {
        self.ranges.get(i).map(|&(a, b)| &self.buf[a..b])
    }

    /// Every field.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &str> {
        self.ranges.iter().map(|&(a, b)| &self.buf[a..b])
    }

    /// Empties the fields (before [`Fields::push`]ing a row's cells).
    pub(crate) fn clear(&mut self) {
        self.buf.clear();
        self.ranges.clear();
    }

    /// Adds a field.
    pub(crate) fn push(&mut self, value: &str) {
        let start = self.buf.len();
        self.buf.push_str(value);
        self.ranges.push((start, self.buf.len()));
    }

    /// Splits `line` on `delimiter` (ASCII).
    pub(crate) fn split(&mut self, line: &str, delimiter: u8) -> Result<(), SplitError> {
        self.buf.clear();
        self.ranges.clear();
        let b = line.as_bytes();
        let mut i = 0;
        loop {
            let start = self.buf.len();
            let field = self.ranges.len();
            if b.get(i) == Some(&b'"') {
                i += 1;
                loop {
                    let Some(j) = memchr::memchr(b'"', &b[i..]) else {
                        return Err(SplitError::Unclosed(field));
                    };
                    self.buf.push_str(&line[i..i + j]);
                    i += j + 1;
                    if b.get(i) == Some(&b'"') {
                        self.buf.push('"');
                        i += 1;
                    } else {
                        break;
                    }
                }
                while b.get(i) == Some(&b' ') {
                    i += 1;
                }
                self.ranges.push((start, self.buf.len()));
                match b.get(i) {
                    None => return Ok(()),
                    Some(&c) if c == delimiter => i += 1,
                    Some(_) => return Err(SplitError::AfterQuote(field)),
                }
            } else {
                match memchr::memchr(delimiter, &b[i..]) {
                    Some(j) => {
                        self.buf.push_str(&line[i..i + j]);
                        self.ranges.push((start, self.buf.len()));
                        i += j + 1;
                    }
                    None => {
                        self.buf.push_str(&line[i..]);
                        self.ranges.push((start, self.buf.len()));
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// The first control character in `s` (C0 but TAB, DEL, C1), for the reason of an invalid row.
/// TAB counts too once a value is trimmed: it cannot be part of a message's value.
pub(crate) fn control_char(s: &str) -> Option<char> {
    if s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) || (b >= 0xa0 && b != 0xc2))
    {
        return None;
    }
    s.chars().find(|c| c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(line: &str, d: u8) -> Result<Vec<String>, SplitError> {
        let mut f = Fields::default();
        f.split(line, d)?;
        Ok(f.iter().map(str::to_owned).collect())
    }

    #[test]
    fn quotes_delimiters_and_empty_fields() {
        assert_eq!(split("a;b;", b';').unwrap(), vec!["a", "b", ""]);
        assert_eq!(split("", b';').unwrap(), vec![""]);
        assert_eq!(
            split("\"Rossi; Mario\";\"a \"\"b\"\"\";x", b';').unwrap(),
            vec!["Rossi; Mario", "a \"b\"", "x"]
        );
        // A quote inside an unquoted value is a character like any other.
        assert_eq!(
            split("AAAAAB91H15F518R;Giovanna D\"Angelo;2026", b';').unwrap(),
            vec!["AAAAAB91H15F518R", "Giovanna D\"Angelo", "2026"]
        );
        assert_eq!(split("a,\"b\" ,c", b',').unwrap(), vec!["a", "b", "c"]);
    }

    #[test]
    fn a_quote_that_is_not_closed_on_its_line_is_an_error() {
        assert_eq!(
            split("AAAAAA86T65C044Z;\"Mario;2026", b';'),
            Err(SplitError::Unclosed(1))
        );
        assert_eq!(split("a;\"b\"c;d", b';'), Err(SplitError::AfterQuote(1)));
        let mut f = Fields::default();
        let _ = f.split("RSSMRA85T10A562S;\"x", b';');
        assert_eq!(f.get(0), Some("RSSMRA85T10A562S"));
    }

    #[test]
    fn control_characters_are_found() {
        assert_eq!(control_char("Mario Rossi àèì €"), None);
        assert_eq!(control_char("Ma\0rio"), Some('\0'));
        assert_eq!(control_char("Ma\trio"), Some('\t'));
        assert_eq!(control_char("x\u{7f}"), Some('\u{7f}'));
        assert_eq!(control_char("x\u{85}"), Some('\u{85}'));
        assert_eq!(control_char("\u{c2}\u{a0}"), None);
    }
}
