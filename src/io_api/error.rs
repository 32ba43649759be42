//! [`IoError`]: every way an IO call can fail, classified by method so callers never match
//! status codes: [`IoError::may_have_created_message`] (the dispatcher's no-duplicate rule),
//! [`IoError::is_retryable`], [`IoError::is_back_pressure`], [`IoError::retry_after`].

use std::time::Duration;

use serde::Deserialize;

/// Longest body snippet kept from an unexpected answer.
pub const SNIPPET_MAX: usize = 200;

/// Which kind of 403 IO answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ForbiddenKind {
    /// A sandbox key sending to someone outside `authorized_recipients` (`Recipient forbidden`).
    RecipientForbidden,
    /// Wrong group, source IP outside `authorized_cidrs`, another service's message
    /// (`You are not allowed here`).
    NotAllowedHere,
    /// An ADVANCED message from a service without premium.
    PremiumNotAllowed,
    /// A payee in the message without the permission for it.
    PayeeNotAllowed,
    /// Anything else.
    Other,
}

/// Which part of the exchange timed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutPhase {
    /// Opening the connection: the request never left.
    Connect,
    /// Waiting for the answer: the request may have been processed.
    Response,
}

/// An IO call that did not succeed. `Display` never contains a fiscal code or a key: IO's
/// details can echo the input, so anything shaped like a fiscal code is masked.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum IoError {
    /// 400: IO refused the payload (ProblemJson title/detail).
    #[error("IO refused the request (400 {title}): {detail}")]
    InvalidPayload {
        /// ProblemJson title.
        title: String,
        /// ProblemJson detail.
        detail: String,
    },
    /// 401: the gateway refused the key.
    #[error("IO refused the API key (401): {message}")]
    Unauthorized {
        /// APIM message.
        message: String,
    },
    /// 403: not allowed (see [`ForbiddenKind`]).
    #[error("IO forbids this request (403 {title}): {detail}")]
    Forbidden {
        /// Which 403.
        kind: ForbiddenKind,
        /// ProblemJson title.
        title: String,
        /// ProblemJson detail.
        detail: String,
    },
    /// 404.
    #[error("not found on IO (404 {title}): {detail}")]
    NotFound {
        /// ProblemJson title.
        title: String,
        /// ProblemJson detail.
        detail: String,
    },
    /// 409 (service management: incompatible lifecycle state).
    #[error("conflict (409 {title}): {detail}")]
    Conflict {
        /// ProblemJson title.
        title: String,
        /// ProblemJson detail.
        detail: String,
    },
    /// 429: throttled by the gateway.
    #[error("throttled by IO (429){}", fmt_retry(.retry_after))]
    Throttled {
        /// How long IO asks to wait.
        retry_after: Option<Duration>,
        /// Calls left in the window, if said.
        remaining: Option<u32>,
    },
    /// 5xx: IO or its gateway failed; the body may be HTML.
    #[error("IO server error ({status}): {detail}")]
    Server {
        /// HTTP status.
        status: u16,
        /// ProblemJson detail, or a sanitized snippet of the body.
        detail: String,
    },
    /// The call timed out.
    #[error("IO call timed out ({phase:?})")]
    Timeout {
        /// Which phase.
        phase: TimeoutPhase,
    },
    /// The connection could not be opened: the request never left.
    #[error("cannot connect to IO: {0}")]
    Connect(String),
    /// The connection failed after the request was (or may have been) written.
    #[error("connection to IO lost after the request was sent: {0}")]
    Transport(String),
    /// A success status with a body we cannot read.
    #[error("unreadable answer from IO ({status}): {reason}")]
    Decode {
        /// HTTP status.
        status: u16,
        /// What was wrong.
        reason: String,
    },
    /// A status the spec does not document for this call.
    #[error("unexpected answer from IO ({status}): {detail}")]
    UnexpectedStatus {
        /// HTTP status.
        status: u16,
        /// A sanitized snippet of the body.
        detail: String,
    },
    /// A 3xx: IO never redirects its API, so the base URL is wrong (or something between us
    /// and IO answers). Not followed: the key stays with us and nothing was created.
    #[error("IO answered {status} redirecting to {location}; check io.base_url")]
    Redirect {
        /// HTTP status.
        status: u16,
        /// Scheme, host and port of the `Location` (never its path or query).
        location: String,
    },
    /// The client could not be built (bad base URL, TLS set-up).
    #[error("IO client configuration: {0}")]
    Config(String),
}

fn fmt_retry(d: &Option<Duration>) -> String {
    d.map(|d| format!(", retry after {} ms", d.as_millis()))
        .unwrap_or_default()
}

impl IoError {
    /// Whether IO may have created a message when this was the answer to POST /messages.
    ///
    /// The dispatcher's no-duplicate guarantee rests on this answer: `true` means "do not send
    /// again unless the operator decides to".
    /// - `Server` (5xx): true. IO's function may have stored the message before failing, and a
    ///   gateway 502/504 may hide a function that finished. Nothing proves it did not.
    /// - `Timeout{Response}`, `Transport`: true. The request left; we never saw the answer.
    /// - `Decode` of a 2xx: true. IO said it created something; we could not read the id.
    /// - `Throttled` (429): false. The gateway's rate-limit policy answers before the request
    ///   reaches IO's function (FACTS §6).
    /// - `Connect`, `Timeout{Connect}`: false. The connection never opened.
    /// - `Unauthorized` (401): false. The gateway refused the key before the function.
    /// - `InvalidPayload`, `Forbidden`, `NotFound`, `Conflict`: false. IO's function refused
    ///   the message before creating it (FACTS §5: validation and permission middlewares run
    ///   before the handler; "a new message ID gets generated for each request, even for requests
    ///   that fail", but no message is stored).
    /// - `UnexpectedStatus`: true for a 2xx/3xx (something was done), false for a 4xx.
    /// - `Redirect`: false. Whatever answered with a 3xx did not take the message; it is a
    ///   wrong base URL, and [`IoError::is_misconfiguration`] stops the job.
    /// - `Config`: false (no request was made).
    pub fn may_have_created_message(&self) -> bool {
        match self {
            IoError::Server { .. }
            | IoError::Transport(_)
            | IoError::Timeout {
                phase: TimeoutPhase::Response,
            } => true,
            IoError::Decode { status, .. } => (200..300).contains(status),
            IoError::UnexpectedStatus { status, .. } => *status < 400 || *status >= 500,
            IoError::Throttled { .. }
            | IoError::Connect(_)
            | IoError::Timeout {
                phase: TimeoutPhase::Connect,
            }
            | IoError::Unauthorized { .. }
            | IoError::InvalidPayload { .. }
            | IoError::Forbidden { .. }
            | IoError::NotFound { .. }
            | IoError::Conflict { .. }
            | IoError::Redirect { .. }
            | IoError::Config(_) => false,
        }
    }

    /// The configuration is wrong (a redirect: the base URL): every further call would fail
    /// the same way, so a job stops instead of failing recipient after recipient.
    pub fn is_misconfiguration(&self) -> bool {
        matches!(self, IoError::Redirect { .. })
    }

    /// Whether an *idempotent* call (GET, POST /profiles, the feed) is worth repeating.
    /// POST /messages must use [`IoError::may_have_created_message`] instead.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            IoError::Throttled { .. }
                | IoError::Server { .. }
                | IoError::Timeout { .. }
                | IoError::Connect(_)
                | IoError::Transport(_)
        )
    }

    /// Whether the request certainly never reached IO's function (safe to repeat even for
    /// POST /messages).
    pub fn certainly_not_sent(&self) -> bool {
        !self.may_have_created_message()
            && matches!(
                self,
                IoError::Throttled { .. }
                    | IoError::Connect(_)
                    | IoError::Timeout {
                        phase: TimeoutPhase::Connect
                    }
                    | IoError::Unauthorized { .. }
            )
    }

    /// A 429: IO wants us to slow down.
    pub fn is_back_pressure(&self) -> bool {
        matches!(self, IoError::Throttled { .. })
    }

    /// IO's retry hint, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            IoError::Throttled { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// HTTP status of the answer, if there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            IoError::InvalidPayload { .. } => Some(400),
            IoError::Unauthorized { .. } => Some(401),
            IoError::Forbidden { .. } => Some(403),
            IoError::NotFound { .. } => Some(404),
            IoError::Conflict { .. } => Some(409),
            IoError::Throttled { .. } => Some(429),
            IoError::Server { status, .. }
            | IoError::Redirect { status, .. }
            | IoError::Decode { status, .. }
            | IoError::UnexpectedStatus { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// (status, title, detail) for a report row.
    pub fn problem(&self) -> (u16, String, String) {
        match self {
            IoError::InvalidPayload { title, detail }
            | IoError::Forbidden { title, detail, .. }
            | IoError::NotFound { title, detail }
            | IoError::Conflict { title, detail } => {
                (self.status().unwrap_or(0), title.clone(), detail.clone())
            }
            other => (
                other.status().unwrap_or(0),
                String::new(),
                other.to_string(),
            ),
        }
    }
}

/// RFC 7807 body of IO's functions.
#[derive(Debug, Default, Deserialize)]
struct ProblemJson {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    detail: Option<String>,
}

/// Azure APIM body (`{"statusCode": 401, "message": "..."}`).
#[derive(Debug, Default, Deserialize)]
struct ApimBody {
    #[serde(default)]
    message: Option<String>,
}

/// Builds the error for a non-success answer. `retry_after`/`remaining` come from the headers.
pub(crate) fn from_response(
    status: u16,
    body: &[u8],
    retry_after: Option<Duration>,
    remaining: Option<u32>,
) -> IoError {
    let problem: ProblemJson = serde_json::from_slice(body).unwrap_or_default();
    let title = mask_fiscal_codes(problem.title.as_deref().unwrap_or(""));
    let detail = mask_fiscal_codes(
        problem
            .detail
            .as_deref()
            .map(str::to_owned)
            .unwrap_or_else(|| snippet(body))
            .as_str(),
    );
    match status {
        400 => IoError::InvalidPayload { title, detail },
        401 => {
            let apim: ApimBody = serde_json::from_slice(body).unwrap_or_default();
            IoError::Unauthorized {
                message: mask_fiscal_codes(&apim.message.unwrap_or_else(|| snippet(body))),
            }
        }
        403 => IoError::Forbidden {
            kind: forbidden_kind(&title, &detail),
            title,
            detail,
        },
        404 => IoError::NotFound { title, detail },
        409 => IoError::Conflict { title, detail },
        429 => IoError::Throttled {
            retry_after,
            remaining,
        },
        500..=599 => IoError::Server { status, detail },
        _ => IoError::UnexpectedStatus { status, detail },
    }
}

fn forbidden_kind(title: &str, detail: &str) -> ForbiddenKind {
    if title == "Recipient forbidden" {
        ForbiddenKind::RecipientForbidden
    } else if detail.contains("Premium") {
        ForbiddenKind::PremiumNotAllowed
    } else if detail.contains("payee") {
        ForbiddenKind::PayeeNotAllowed
    } else if title == "You are not allowed here" {
        ForbiddenKind::NotAllowedHere
    } else {
        ForbiddenKind::Other
    }
}

/// A printable, bounded, single-line snippet of a body (HTML from a gateway included).
pub(crate) fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(SNIPPET_MAX)
        .collect();
    mask_fiscal_codes(flat.trim())
}

/// Replaces anything shaped like a fiscal code (16 chars of the IO pattern's alphabet, letters
/// and digits in the right places, in either case) by its masked form. IO's 400 details echo
/// the input, and a CSV may hold codes in lower case.
pub fn mask_fiscal_codes(text: &str) -> String {
    let bytes = text.as_bytes();
    if bytes.len() < 16 {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        if i + 16 <= bytes.len()
            && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric())
            && (i + 16 == bytes.len() || !bytes[i + 16].is_ascii_alphanumeric())
        {
            if let Ok(candidate) = std::str::from_utf8(&bytes[i..i + 16]) {
                let upper = candidate.to_ascii_uppercase();
                if let Ok(fc) = crate::model::FiscalCode::parse(&upper) {
                    if upper == fc.expose() {
                        // Masked as written: the first six and last three stay in their case.
                        out.push_str(&crate::model::fiscal_code::mask(candidate));
                        i += 16;
                        continue;
                    }
                }
            }
        }
        let ch = text[i..].chars().next().expect("i is on a char boundary");
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_status_maps_to_its_class() {
        let pj = br#"{"detail":"value [\"RSSMRA85T10A562S\"] at [root] is not valid","status":400,"title":"Invalid message structure"}"#;
        let e = from_response(400, pj, None, None);
        assert!(matches!(e, IoError::InvalidPayload { .. }));
        assert!(!e.to_string().contains("RSSMRA85T10A562S"), "{e}");
        assert!(e.to_string().contains("RSSMRA*******62S"), "{e}");

        let e = from_response(
            401,
            br#"{"statusCode":401,"message":"Access denied due to invalid subscription key."}"#,
            None,
            None,
        );
        assert!(
            matches!(&e, IoError::Unauthorized { message } if message.contains("Access denied"))
        );

        let e = from_response(403, br#"{"title":"Recipient forbidden","detail":"You are not allowed to issue requests for the recipient.","status":403}"#, None, None);
        assert!(matches!(
            e,
            IoError::Forbidden {
                kind: ForbiddenKind::RecipientForbidden,
                ..
            }
        ));
        let e = from_response(403, br#"{"title":"You are not allowed here","detail":"You do not have enough permissions to send a Premium message","status":403}"#, None, None);
        assert!(matches!(
            e,
            IoError::Forbidden {
                kind: ForbiddenKind::PremiumNotAllowed,
                ..
            }
        ));
        let e = from_response(403, br#"{"title":"You are not allowed here","detail":"You do not have enough permission to complete the operation you requested","status":403}"#, None, None);
        assert!(matches!(
            e,
            IoError::Forbidden {
                kind: ForbiddenKind::NotAllowedHere,
                ..
            }
        ));

        let e = from_response(
            429,
            br#"{"statusCode":429,"message":"Rate limit is exceeded. Try again in 3 seconds."}"#,
            Some(Duration::from_secs(3)),
            Some(0),
        );
        assert!(e.is_back_pressure());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));

        let html = b"<html><head><title>502 Bad Gateway</title></head>\n<body>nginx</body></html>";
        let e = from_response(502, html, None, None);
        assert!(
            matches!(&e, IoError::Server { status: 502, detail } if detail.contains("502 Bad Gateway") && !detail.contains('\n'))
        );
    }

    #[test]
    fn may_have_created_message_per_class() {
        let yes = [
            IoError::Server {
                status: 500,
                detail: String::new(),
            },
            IoError::Server {
                status: 503,
                detail: String::new(),
            },
            IoError::Timeout {
                phase: TimeoutPhase::Response,
            },
            IoError::Transport("reset".into()),
            IoError::Decode {
                status: 201,
                reason: "no id".into(),
            },
        ];
        let no = [
            IoError::Throttled {
                retry_after: None,
                remaining: None,
            },
            IoError::Connect("refused".into()),
            IoError::Timeout {
                phase: TimeoutPhase::Connect,
            },
            IoError::Unauthorized {
                message: String::new(),
            },
            IoError::InvalidPayload {
                title: String::new(),
                detail: String::new(),
            },
            IoError::Forbidden {
                kind: ForbiddenKind::Other,
                title: String::new(),
                detail: String::new(),
            },
            IoError::NotFound {
                title: String::new(),
                detail: String::new(),
            },
        ];
        for e in &yes {
            assert!(e.may_have_created_message(), "{e:?}");
            assert!(!e.certainly_not_sent(), "{e:?}");
        }
        for e in &no {
            assert!(!e.may_have_created_message(), "{e:?}");
        }
        assert!(IoError::Throttled {
            retry_after: None,
            remaining: None
        }
        .certainly_not_sent());
        assert!(IoError::Connect("x".into()).certainly_not_sent());
        assert!(!IoError::InvalidPayload {
            title: String::new(),
            detail: String::new()
        }
        .certainly_not_sent());
    }

    #[test]
    fn masking_finds_codes_in_text_and_leaves_the_rest() {
        assert_eq!(
            mask_fiscal_codes("fc RSSMRA85T10A562S, again rssmra85t10a562s, RssMra85T10a562S"),
            "fc RSSMRA*******62S, again rssmra*******62s, RssMra*******62S"
        );
        // Omocodia letters in lower case too.
        assert_eq!(
            mask_fiscal_codes("x rssmra85t10a56ns."),
            "x rssmra*******6ns."
        );
        assert_eq!(mask_fiscal_codes("àè short"), "àè short");
        assert_eq!(mask_fiscal_codes("XRSSMRA85T10A562S"), "XRSSMRA85T10A562S");
        let long = "x".repeat(500);
        assert_eq!(snippet(long.as_bytes()).chars().count(), SNIPPET_MAX);
    }
}
