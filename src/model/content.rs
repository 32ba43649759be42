//! Message content with every constraint of IO's spec: [`NewMessage`], [`MessageContent`],
//! [`PaymentData`], [`FeatureLevelType`], and [`ContentError`] naming each violated field.
//! Lengths count characters, not bytes: Italian text has accents.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize, Serializer};

use super::FiscalCode;

/// Subject length in characters (`MessageSubject`).
pub const SUBJECT_MIN: usize = 10;
/// Subject maximum length.
pub const SUBJECT_MAX: usize = 120;
/// Markdown length in characters (`MessageBodyMarkdown`).
pub const MARKDOWN_MIN: usize = 80;
/// Markdown maximum length.
pub const MARKDOWN_MAX: usize = 10_000;
/// Payment amount in euro cents (`PaymentAmount`).
pub const AMOUNT_MIN: u64 = 1;
/// Payment amount maximum, euro cents.
pub const AMOUNT_MAX: u64 = 9_999_999_999;
/// `time_to_live` bounds in seconds (`TimeToLiveSeconds`).
pub const TTL_MIN: u32 = 3600;
/// `time_to_live` maximum (7 days).
pub const TTL_MAX: u32 = 604_800;

/// STANDARD or ADVANCED (premium) message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FeatureLevelType {
    /// The default.
    #[serde(rename = "STANDARD")]
    Standard,
    /// Premium: read and payment status; needs the premium flag on the service.
    #[serde(rename = "ADVANCED")]
    Advanced,
}

impl FeatureLevelType {
    /// The spec's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            FeatureLevelType::Standard => "STANDARD",
            FeatureLevelType::Advanced => "ADVANCED",
        }
    }
}

/// The payee of a payment notice (`payee.fiscal_code`: an organization's 11-digit code).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payee {
    /// Organization fiscal code, 11 digits.
    pub fiscal_code: String,
}

/// A pagoPA payment notice attached to a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentData {
    /// Euro cents, 1–9 999 999 999 (and at most the service's `max_allowed_payment_amount`).
    pub amount: u64,
    /// 18 digits, first one 0–3.
    pub notice_number: String,
    /// The notice cannot be paid after the due date.
    #[serde(default)]
    pub invalid_after_due_date: bool,
    /// Payee; without it IO uses the service's organization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payee: Option<Payee>,
}

/// The content of a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageContent {
    /// 10–120 characters.
    pub subject: String,
    /// 80–10 000 characters of (restricted) Markdown.
    pub markdown: String,
    /// Due date, UTC.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_timestamp"
    )]
    pub due_date: Option<DateTime<Utc>>,
    /// Payment notice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_data: Option<PaymentData>,
    /// true: no email notification, only push. Absent: the service's setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_secure_channels: Option<bool>,
}

/// The body of POST /messages (`NewMessage`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewMessage {
    /// Recipient (in the body for POST /messages; absent for POST /messages/{fiscal_code}).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fiscal_code: Option<FiscalCode>,
    /// Seconds, 3600–604 800 (IO's default 3600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_live: Option<u32>,
    /// Content.
    pub content: MessageContent,
    /// STANDARD (default) or ADVANCED. The guide's older spelling `feature_type` is accepted
    /// when reading.
    #[serde(
        default,
        alias = "feature_type",
        skip_serializing_if = "Option::is_none"
    )]
    pub feature_level_type: Option<FeatureLevelType>,
}

/// Debug without the content (personal data) and with the fiscal code masked.
impl fmt::Debug for NewMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewMessage")
            .field("fiscal_code", &self.fiscal_code)
            .field("time_to_live", &self.time_to_live)
            .field("feature_level_type", &self.feature_level_type)
            .field("subject_chars", &self.content.subject.chars().count())
            .field("markdown_chars", &self.content.markdown.chars().count())
            .finish_non_exhaustive()
    }
}

fn ser_timestamp<S: Serializer>(d: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(&format_timestamp(d)),
        None => s.serialize_none(),
    }
}

/// IO's `Timestamp` format: `2018-10-13T00:00:00.000Z`.
pub fn format_timestamp(d: &DateTime<Utc>) -> String {
    d.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// One violated constraint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The field, as in the spec (`content.subject`, `content.payment_data.amount`, …).
    pub field: &'static str,
    /// The limit and what was found.
    pub reason: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// Every violated constraint of a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ContentError {
    /// The violations, in field order.
    pub violations: Vec<Violation>,
}

impl fmt::Display for ContentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, v) in self.violations.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{v}")?;
        }
        Ok(())
    }
}

fn check_chars(field: &'static str, chars: usize, min: usize, max: usize) -> Result<(), Violation> {
    if (min..=max).contains(&chars) {
        Ok(())
    } else {
        Err(Violation {
            field,
            reason: format!("{chars} characters, must be {min}–{max}"),
        })
    }
}

/// Checks a subject's length (characters).
pub fn check_subject(subject: &str) -> Result<(), Violation> {
    check_subject_len(subject.chars().count())
}

/// Checks a subject length already counted in characters (renderers count without building).
pub fn check_subject_len(chars: usize) -> Result<(), Violation> {
    check_chars("content.subject", chars, SUBJECT_MIN, SUBJECT_MAX)
}

/// Checks a markdown body's length (characters).
pub fn check_markdown(markdown: &str) -> Result<(), Violation> {
    check_markdown_len(markdown.chars().count())
}

/// Checks a markdown length already counted in characters.
pub fn check_markdown_len(chars: usize) -> Result<(), Violation> {
    check_chars("content.markdown", chars, MARKDOWN_MIN, MARKDOWN_MAX)
}

/// Checks a payment amount in euro cents.
pub fn check_amount(amount: u64) -> Result<(), Violation> {
    if (AMOUNT_MIN..=AMOUNT_MAX).contains(&amount) {
        Ok(())
    } else {
        Err(Violation {
            field: "content.payment_data.amount",
            reason: format!("{amount} cents, must be {AMOUNT_MIN}–{AMOUNT_MAX}"),
        })
    }
}

/// Checks a notice number: `^[0123][0-9]{17}$`.
pub fn check_notice_number(n: &str) -> Result<(), Violation> {
    let b = n.as_bytes();
    if b.len() == 18 && (b'0'..=b'3').contains(&b[0]) && b.iter().all(u8::is_ascii_digit) {
        Ok(())
    } else {
        Err(Violation {
            field: "content.payment_data.notice_number",
            reason: format!(
                "{} characters, must be 18 digits starting with 0, 1, 2 or 3",
                n.chars().count()
            ),
        })
    }
}

/// Checks an organization fiscal code (payee): 11 digits.
pub fn check_payee(fc: &str) -> Result<(), Violation> {
    if fc.len() == 11 && fc.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(Violation {
            field: "content.payment_data.payee.fiscal_code",
            reason: "must be an organization fiscal code of 11 digits".to_owned(),
        })
    }
}

/// Checks `time_to_live` seconds.
pub fn check_ttl(ttl: u32) -> Result<(), Violation> {
    if (TTL_MIN..=TTL_MAX).contains(&ttl) {
        Ok(())
    } else {
        Err(Violation {
            field: "time_to_live",
            reason: format!("{ttl} seconds, must be {TTL_MIN}–{TTL_MAX}"),
        })
    }
}

impl PaymentData {
    fn violations(&self, out: &mut Vec<Violation>) {
        out.extend(check_amount(self.amount).err());
        out.extend(check_notice_number(&self.notice_number).err());
        if let Some(p) = &self.payee {
            out.extend(check_payee(&p.fiscal_code).err());
        }
    }
}

impl MessageContent {
    /// Every violated constraint of the content.
    pub fn validate(&self) -> Result<(), ContentError> {
        let mut v = Vec::new();
        self.violations(&mut v);
        finish(v)
    }

    fn violations(&self, out: &mut Vec<Violation>) {
        out.extend(check_subject(&self.subject).err());
        out.extend(check_markdown(&self.markdown).err());
        if let Some(p) = &self.payment_data {
            p.violations(out);
        }
    }
}

impl NewMessage {
    /// Every violated constraint of the message.
    pub fn validate(&self) -> Result<(), ContentError> {
        let mut v = Vec::new();
        if let Some(ttl) = self.time_to_live {
            v.extend(check_ttl(ttl).err());
        }
        self.content.violations(&mut v);
        finish(v)
    }
}

fn finish(violations: Vec<Violation>) -> Result<(), ContentError> {
    if violations.is_empty() {
        Ok(())
    } else {
        Err(ContentError { violations })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn content(subject: &str, markdown: &str) -> MessageContent {
        MessageContent {
            subject: subject.to_owned(),
            markdown: markdown.to_owned(),
            due_date: None,
            payment_data: None,
            require_secure_channels: None,
        }
    }

    fn fields(r: Result<(), ContentError>) -> Vec<&'static str> {
        r.err()
            .map(|e| e.violations.iter().map(|v| v.field).collect())
            .unwrap_or_default()
    }

    #[test]
    fn subject_boundaries_count_characters() {
        let md = "m".repeat(80);
        assert_eq!(
            fields(content(&"s".repeat(9), &md).validate()),
            ["content.subject"]
        );
        assert!(content(&"s".repeat(10), &md).validate().is_ok());
        assert!(content(&"s".repeat(120), &md).validate().is_ok());
        assert_eq!(
            fields(content(&"s".repeat(121), &md).validate()),
            ["content.subject"]
        );
        // 10 accented characters are 20 bytes and still a valid subject; 121 are too many.
        assert!(content(&"à".repeat(10), &md).validate().is_ok());
        assert!(content(&"è".repeat(120), &md).validate().is_ok());
        assert!(content(&"è".repeat(121), &md).validate().is_err());
        assert!(content(&"é".repeat(9), &md).validate().is_err());
    }

    #[test]
    fn markdown_boundaries_count_characters() {
        let s = "Oggetto valido";
        assert!(content(s, &"m".repeat(79)).validate().is_err());
        assert!(content(s, &"m".repeat(80)).validate().is_ok());
        assert!(content(s, &"m".repeat(10_000)).validate().is_ok());
        assert!(content(s, &"m".repeat(10_001)).validate().is_err());
        assert!(content(s, &"ù".repeat(80)).validate().is_ok());
        assert!(content(s, &"ù".repeat(10_000)).validate().is_ok());
        assert!(content(s, &"ù".repeat(10_001)).validate().is_err());
    }

    #[test]
    fn violations_name_field_limit_and_actual_value() {
        let e = content("corto", "breve").validate().unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("content.subject: 5 characters, must be 10–120"),
            "{text}"
        );
        assert!(
            text.contains("content.markdown: 5 characters, must be 80–10000"),
            "{text}"
        );
    }

    #[test]
    fn payment_amount_boundaries() {
        assert!(check_amount(0).is_err());
        assert!(check_amount(1).is_ok());
        assert!(check_amount(9_999_999_999).is_ok());
        assert!(check_amount(10_000_000_000).is_err());
    }

    #[test]
    fn notice_numbers() {
        assert!(check_notice_number("012345678901234567").is_ok());
        assert!(check_notice_number("312345678901234567").is_ok());
        assert!(check_notice_number("412345678901234567").is_err());
        assert!(check_notice_number("01234567890123456").is_err());
        assert!(check_notice_number("0123456789012345678").is_err());
        assert!(check_notice_number("01234567890123456a").is_err());
    }

    #[test]
    fn payee_and_ttl() {
        assert!(check_payee("01234567890").is_ok());
        assert!(check_payee("0123456789").is_err());
        assert!(check_payee("0123456789a").is_err());
        assert!(check_ttl(3599).is_err());
        assert!(check_ttl(3600).is_ok());
        assert!(check_ttl(604_800).is_ok());
        assert!(check_ttl(604_801).is_err());
    }

    #[test]
    fn serializes_as_the_spec_new_message() {
        let msg = NewMessage {
            fiscal_code: Some(FiscalCode::parse("RSSMRA85T10A562S").unwrap()),
            time_to_live: Some(3600),
            content: MessageContent {
                subject: "Avviso di pagamento TARI".to_owned(),
                markdown: "m".repeat(80),
                due_date: Some(Utc.with_ymd_and_hms(2026, 12, 31, 0, 0, 0).unwrap()),
                payment_data: Some(PaymentData {
                    amount: 12_050,
                    notice_number: "012345678901234567".to_owned(),
                    invalid_after_due_date: false,
                    payee: Some(Payee {
                        fiscal_code: "01234567890".to_owned(),
                    }),
                }),
                require_secure_channels: Some(true),
            },
            feature_level_type: Some(FeatureLevelType::Advanced),
        };
        assert!(msg.validate().is_ok());
        let json = serde_json::to_value(&msg).unwrap();
        let expected = serde_json::json!({
            "fiscal_code": "RSSMRA85T10A562S",
            "time_to_live": 3600,
            "content": {
                "subject": "Avviso di pagamento TARI",
                "markdown": "m".repeat(80),
                "due_date": "2026-12-31T00:00:00.000Z",
                "payment_data": {
                    "amount": 12050,
                    "notice_number": "012345678901234567",
                    "invalid_after_due_date": false,
                    "payee": { "fiscal_code": "01234567890" }
                },
                "require_secure_channels": true
            },
            "feature_level_type": "ADVANCED"
        });
        assert_eq!(json, expected);
        let back: NewMessage = serde_json::from_value(json).unwrap();
        assert_eq!(back, msg);
        // Optional fields are omitted, not null.
        let plain = NewMessage {
            fiscal_code: None,
            time_to_live: None,
            content: content("Oggetto valido", &"m".repeat(80)),
            feature_level_type: None,
        };
        assert_eq!(
            serde_json::to_value(&plain).unwrap(),
            serde_json::json!({"content": {"subject": "Oggetto valido", "markdown": "m".repeat(80)}})
        );
    }

    #[test]
    fn reads_the_guides_feature_type_spelling() {
        let m: NewMessage = serde_json::from_value(serde_json::json!({
            "content": {"subject": "Oggetto valido", "markdown": "m".repeat(80)},
            "feature_type": "STANDARD"
        }))
        .unwrap();
        assert_eq!(m.feature_level_type, Some(FeatureLevelType::Standard));
    }

    #[test]
    fn debug_hides_content_and_fiscal_code() {
        let msg = NewMessage {
            fiscal_code: Some(FiscalCode::parse("RSSMRA85T10A562S").unwrap()),
            time_to_live: None,
            content: content("Segreto personale", &"riservato ".repeat(10)),
            feature_level_type: None,
        };
        let shown = format!("{msg:?}");
        assert!(
            !shown.contains("Segreto") && !shown.contains("riservato") && !shown.contains("85T10"),
            "{shown}"
        );
    }
}
