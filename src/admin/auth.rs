//! [`BearerToken`]: the admin API's bearer-token check. Tokens are compared as SHA-256 digests
//! in constant time (neither the content nor the length of the expected token leaks through
//! timing), and never logged.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::problem::Problem;
use crate::config::Secret;

/// Routes anyone may call (liveness probes carry no token).
pub const OPEN_PATHS: &[&str] = &["/healthz"];

/// Set on a connection once one of its requests to a protected route passed the token check:
/// the server's connection cap never evicts such a connection while it serves a request (the
/// server puts one in every request's extensions).
#[derive(Clone, Debug, Default)]
pub struct ConnectionTrust(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl ConnectionTrust {
    /// Whether a request of this connection passed the token check.
    pub fn trusted(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
    pub(crate) fn grant(&self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Marks the request's connection as trusted (see [`ConnectionTrust`]).
fn trust(request: &Request) {
    if let Some(t) = request.extensions().get::<ConnectionTrust>() {
        t.grant();
    }
}

/// The expected token, kept only as its digest.
#[derive(Clone)]
pub struct BearerToken {
    digest: Option<[u8; 32]>,
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.digest.is_some() {
            "BearerToken(***)"
        } else {
            "BearerToken(none)"
        })
    }
}

impl BearerToken {
    /// Checks requests against `token`; `None` (or an empty token) lets every request through,
    /// which [`super::check_bind`] allows on loopback addresses only.
    pub fn new(token: Option<&Secret>) -> Self {
        BearerToken {
            digest: token
                .filter(|t| !t.expose().is_empty())
                .map(|t| Sha256::digest(t.expose().as_bytes()).into()),
        }
    }

    /// Whether a token is required.
    pub fn required(&self) -> bool {
        self.digest.is_some()
    }

    /// Whether `presented` is the expected token (true when none is required).
    pub fn accepts(&self, presented: &str) -> bool {
        match &self.digest {
            None => true,
            Some(expected) => {
                let got: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
                bool::from(got.ct_eq(expected))
            }
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
fn bearer_of(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Middleware: every route but [`OPEN_PATHS`] needs the bearer token.
pub async fn require_token(
    State(token): State<BearerToken>,
    request: Request,
    next: Next,
) -> Response {
    if OPEN_PATHS.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    if !token.required() {
        trust(&request);
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_of);
    match presented {
        None => Problem::unauthorized(
            "missing bearer token: send `Authorization: Bearer <token>` with the admin token \
             (CORRIERE_ADMIN_TOKEN or admin.token_file)",
            false,
        )
        .into_response(),
        Some(t) if token.accepts(t) => {
            trust(&request);
            next.run(request).await
        }
        Some(_) => {
            tracing::warn!(
                path = request.uri().path(),
                "Admin request with a wrong token."
            );
            Problem::unauthorized("the bearer token is not the admin token", true).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_the_exact_token() {
        let t = BearerToken::new(Some(&Secret::new("s3cret")));
        assert!(t.required());
        assert!(t.accepts("s3cret"));
        assert!(!t.accepts("s3cre"));
        assert!(!t.accepts("s3cret2"));
        assert!(!t.accepts(""));
    }

    #[test]
    fn no_or_empty_token_requires_nothing() {
        assert!(!BearerToken::new(None).required());
        assert!(!BearerToken::new(Some(&Secret::new("  \n"))).required());
    }

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(bearer_of("Bearer abc"), Some("abc"));
        assert_eq!(bearer_of("bearer abc "), Some("abc"));
        assert_eq!(bearer_of("Basic abc"), None);
        assert_eq!(bearer_of("Bearer "), None);
        assert_eq!(bearer_of("Bearer"), None);
    }

    #[test]
    fn debug_never_shows_the_digest() {
        let shown = format!("{:?}", BearerToken::new(Some(&Secret::new("s3cret"))));
        assert_eq!(shown, "BearerToken(***)");
    }
}
