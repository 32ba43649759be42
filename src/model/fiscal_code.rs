//! [`FiscalCode`]: an Italian *codice fiscale* as IO accepts it, masked wherever it is shown.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// Length of a personal fiscal code.
pub const FISCAL_CODE_LEN: usize = 16;

/// A fiscal code matching IO's pattern
/// `^[A-Z]{6}[0-9LMNPQRSTUV]{2}[ABCDEHLMPRST][0-9LMNPQRSTUV]{2}[A-Z][0-9LMNPQRSTUV]{3}[A-Z]$`
/// (omocodia letters included). `Display` and `Debug` show a masked form
/// (`RSSMRA*******62S`); the clear value only through [`FiscalCode::expose`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FiscalCode([u8; FISCAL_CODE_LEN]);

/// Why a string is not a fiscal code. Never contains the input itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FiscalCodeError {
    /// Wrong number of characters (after trimming).
    #[error("a fiscal code has 16 characters, this one has {0}")]
    Length(usize),
    /// A character not allowed at its position (1-based).
    #[error("character {position} of the fiscal code is not allowed there (expected {expected})")]
    Character {
        /// 1-based position.
        position: usize,
        /// What the pattern allows there.
        expected: &'static str,
    },
}

/// The check character differs from the computed one: a warning, never an error (IO does not
/// check it, and its own test citizen `AAAAAA00A00A000A` has a wrong one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckCharMismatch {
    /// The check character the algorithm gives.
    pub expected: char,
    /// The one in the code.
    pub found: char,
}

impl fmt::Display for CheckCharMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "check character is {}, the algorithm gives {} (IO accepts it anyway)",
            self.found, self.expected
        )
    }
}

/// Character classes of the pattern, by position.
#[derive(Clone, Copy)]
enum Class {
    Letter,
    DigitOrOmocodia,
    Month,
}

const CLASSES: [Class; FISCAL_CODE_LEN] = {
    use Class::*;
    [
        Letter,
        Letter,
        Letter,
        Letter,
        Letter,
        Letter,
        DigitOrOmocodia,
        DigitOrOmocodia,
        Month,
        DigitOrOmocodia,
        DigitOrOmocodia,
        Letter,
        DigitOrOmocodia,
        DigitOrOmocodia,
        DigitOrOmocodia,
        Letter,
    ]
};

impl Class {
    fn allows(self, c: u8) -> bool {
        match self {
            Class::Letter => c.is_ascii_uppercase(),
            Class::DigitOrOmocodia => c.is_ascii_digit() || b"LMNPQRSTUV".contains(&c),
            Class::Month => b"ABCDEHLMPRST".contains(&c),
        }
    }
    fn describe(self) -> &'static str {
        match self {
            Class::Letter => "a letter A-Z",
            Class::DigitOrOmocodia => "a digit or one of LMNPQRSTUV",
            Class::Month => "a month letter ABCDEHLMPRST",
        }
    }
}

/// Values of characters in odd positions (1st, 3rd, …) for the check character, indexed by
/// digit value (0–9) or letter (A–Z); digits and letters A–J share values.
const ODD: [u8; 26] = [
    1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11, 3, 6, 8, 12, 14, 16, 10, 22, 25, 24, 23,
];

/// The one masking rule for a fiscal code, valid or not, as written (case kept): the first 6
/// and the last 3 characters stay, the others become `*` (`RSSMRA*******62S`); a field of 9
/// characters or fewer is all stars. Logs, errors and reports all mask with it.
pub fn mask(raw: &str) -> String {
    let chars: Vec<char> = raw.chars().collect();
    if chars.len() <= 9 {
        return "*".repeat(chars.len());
    }
    let head: String = chars[..6].iter().collect();
    let tail: String = chars[chars.len() - 3..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 9))
}

impl FiscalCode {
    /// Parses user input: trims, upper-cases, checks the pattern. Allocation-free.
    pub fn parse(input: &str) -> Result<FiscalCode, FiscalCodeError> {
        let bytes = input.trim().as_bytes();
        if bytes.len() != FISCAL_CODE_LEN {
            // Count chars, not bytes, so the message matches what the user sees.
            return Err(FiscalCodeError::Length(input.trim().chars().count()));
        }
        let mut out = [0u8; FISCAL_CODE_LEN];
        for (i, (&b, class)) in bytes.iter().zip(CLASSES).enumerate() {
            let c = b.to_ascii_uppercase();
            if !class.allows(c) {
                return Err(FiscalCodeError::Character {
                    position: i + 1,
                    expected: class.describe(),
                });
            }
            out[i] = c;
        }
        Ok(FiscalCode(out))
    }

    /// The check character the standard algorithm gives for the first 15 characters.
    pub fn computed_check_char(&self) -> char {
        let sum: u32 = self.0[..15]
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                let idx = if c.is_ascii_digit() {
                    c - b'0'
                } else {
                    c - b'A'
                } as usize;
                // Positions are 1-based in the algorithm: index 0 is an odd position.
                if i % 2 == 0 {
                    u32::from(ODD[idx])
                } else {
                    idx as u32
                }
            })
            .sum();
        (b'A' + (sum % 26) as u8) as char
    }

    /// `Some` when the check character is not the computed one (a warning only).
    pub fn check_char_mismatch(&self) -> Option<CheckCharMismatch> {
        let expected = self.computed_check_char();
        let found = self.0[15] as char;
        (expected != found).then_some(CheckCharMismatch { expected, found })
    }

    /// The clear value. Only for the request that must carry it, or an explicit `--clear`.
    pub fn expose(&self) -> &str {
        std::str::from_utf8(&self.0).expect("only ASCII is ever stored")
    }

    /// The 16 ASCII bytes.
    pub fn as_bytes(&self) -> &[u8; FISCAL_CODE_LEN] {
        &self.0
    }

    /// A code from its 16 bytes as [`FiscalCode::as_bytes`] gave them (the store's): the
    /// pattern is checked again, and nothing is trimmed or upper-cased.
    pub fn from_bytes(bytes: &[u8; FISCAL_CODE_LEN]) -> Result<FiscalCode, FiscalCodeError> {
        let text = std::str::from_utf8(bytes).map_err(|e| FiscalCodeError::Character {
            position: e.valid_up_to() + 1,
            expected: "an ASCII character",
        })?;
        let code = FiscalCode::parse(text)?;
        match code.0.iter().zip(bytes).position(|(a, b)| a != b) {
            None => Ok(code),
            Some(i) => Err(FiscalCodeError::Character {
                position: i + 1,
                expected: CLASSES[i].describe(),
            }),
        }
    }

    /// The masked form shown in logs and reports: first 6, 7 stars, last 3 ([`mask`]).
    pub fn masked(&self) -> String {
        mask(self.expose())
    }

    /// The subscriptions feed's hash: lowercase hex SHA-256 of the upper-case code.
    pub fn feed_hash(&self) -> String {
        hex::encode(self.feed_hash_bytes())
    }

    /// The raw SHA-256 of the upper-case code.
    pub fn feed_hash_bytes(&self) -> [u8; 32] {
        Sha256::digest(self.0).into()
    }
}

impl fmt::Display for FiscalCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl fmt::Debug for FiscalCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FiscalCode({})", self.masked())
    }
}

impl std::str::FromStr for FiscalCode {
    type Err = FiscalCodeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FiscalCode::parse(s)
    }
}

/// Serializes the clear code: serialization is for the request to IO.
impl Serialize for FiscalCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.expose())
    }
}

impl<'de> Deserialize<'de> for FiscalCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        FiscalCode::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_code_parses_and_its_check_char_matches() {
        let fc = FiscalCode::parse("RSSMRA85T10A562S").unwrap();
        assert_eq!(fc.expose(), "RSSMRA85T10A562S");
        assert_eq!(fc.check_char_mismatch(), None);
        assert_eq!(
            FiscalCode::parse("MRTMTT91D08F205J")
                .unwrap()
                .check_char_mismatch(),
            None
        );
    }

    #[test]
    fn from_bytes_takes_back_a_stored_code_and_nothing_parse_would_have_to_fix() {
        let fc = FiscalCode::parse("RSSMRA85T10A562S").unwrap();
        assert_eq!(FiscalCode::from_bytes(fc.as_bytes()), Ok(fc));
        assert!(FiscalCode::from_bytes(b"rssmra85t10a562s").is_err());
        assert!(FiscalCode::from_bytes(b" RSSMRA85T10A562").is_err());
        assert!(FiscalCode::from_bytes(b"RSSMRA85T10A56\xc3\xa8").is_err());
    }

    #[test]
    fn omocodia_letters_are_accepted_with_their_own_check_char() {
        // 2 → N in the town code; the check character is recomputed over the letter.
        let fc = FiscalCode::parse("RSSMRA85T10A56NH").unwrap();
        assert_eq!(fc.check_char_mismatch(), None);
        // Every digit position replaced.
        let fc = FiscalCode::parse("RSSMRAURTMLARSNL").unwrap();
        assert_eq!(fc.check_char_mismatch(), None);
    }

    #[test]
    fn wrong_check_char_is_a_warning_not_an_error() {
        let fc = FiscalCode::parse("RSSMRA85T10A562X").unwrap();
        assert_eq!(
            fc.check_char_mismatch(),
            Some(CheckCharMismatch {
                expected: 'S',
                found: 'X'
            })
        );
        // IO's own test citizen.
        let fc = FiscalCode::parse("AAAAAA00A00A000A").unwrap();
        assert_eq!(fc.check_char_mismatch().unwrap().expected, 'I');
    }

    #[test]
    fn lower_case_and_spaces_are_normalised() {
        let fc = FiscalCode::parse("  rssmra85t10a562s \t").unwrap();
        assert_eq!(fc.expose(), "RSSMRA85T10A562S");
    }

    #[test]
    fn garbage_is_rejected_without_echoing_the_input() {
        assert_eq!(FiscalCode::parse(""), Err(FiscalCodeError::Length(0)));
        assert_eq!(
            FiscalCode::parse("RSSMRA85T10A562"),
            Err(FiscalCodeError::Length(15))
        );
        assert_eq!(
            FiscalCode::parse("RSSMRA85T10A562SS"),
            Err(FiscalCodeError::Length(17))
        );
        // Month letter F is not a month.
        let err = FiscalCode::parse("RSSMRA85F10A562S").unwrap_err();
        assert!(matches!(
            err,
            FiscalCodeError::Character { position: 9, .. }
        ));
        // A letter outside LMNPQRSTUV in a digit position.
        let err = FiscalCode::parse("RSSMRA8AT10A562S").unwrap_err();
        assert!(matches!(
            err,
            FiscalCodeError::Character { position: 8, .. }
        ));
        // A digit in a letter position.
        let err = FiscalCode::parse("1SSMRA85T10A562S").unwrap_err();
        assert!(matches!(
            err,
            FiscalCodeError::Character { position: 1, .. }
        ));
        // Non-ASCII, 16 chars but more bytes.
        assert!(FiscalCode::parse("RSSMRÀ85T10A562S").is_err());
        let shown = FiscalCode::parse("RSSMRA85F10A562S")
            .unwrap_err()
            .to_string();
        assert!(!shown.contains("RSSMRA"), "{shown}");
    }

    #[test]
    fn display_and_debug_are_masked() {
        let fc = FiscalCode::parse("RSSMRA85T10A562S").unwrap();
        assert_eq!(fc.to_string(), "RSSMRA*******62S");
        assert_eq!(format!("{fc:?}"), "FiscalCode(RSSMRA*******62S)");
        assert!(!format!("{fc} {fc:?}").contains("85T10A5"));
    }

    #[test]
    fn feed_hash_is_lowercase_hex_sha256_of_the_upper_case_code() {
        let fc = FiscalCode::parse("rssmra85t10a562s").unwrap();
        // printf %s RSSMRA85T10A562S | sha256sum
        assert_eq!(
            fc.feed_hash(),
            "bd807ad78163541b86ec74dec91f028a83299ba3adc7e1345f8c213573cd22be"
        );
        assert_eq!(hex::encode(fc.feed_hash_bytes()), fc.feed_hash());
    }

    #[test]
    fn serde_round_trip_uses_the_clear_code() {
        let fc = FiscalCode::parse("RSSMRA85T10A562S").unwrap();
        let json = serde_json::to_string(&fc).unwrap();
        assert_eq!(json, "\"RSSMRA85T10A562S\"");
        let back: FiscalCode = serde_json::from_str("\"rssmra85t10a562s\"").unwrap();
        assert_eq!(back, fc);
        assert!(serde_json::from_str::<FiscalCode>("\"nope\"").is_err());
    }
}
