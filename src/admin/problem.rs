//! [`Problem`]: every error the admin API answers, as an RFC 9457 `application/problem+json`
//! body (`type`, `title`, `status`, `detail`) that says what was wrong.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::daemon::api::BackendError;

/// Media type of problem answers.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// A problem answer. `title` is the status's reason phrase; `detail` names the part, field,
/// file or state that made the request fail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// Always `about:blank`: the status says the kind of problem, `detail` the specifics.
    #[serde(rename = "type")]
    pub kind: String,
    /// Reason phrase of `status`.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// What was wrong, for a human.
    pub detail: String,
    /// Extra header (the `WWW-Authenticate` challenge of a 401).
    #[serde(skip)]
    challenge: Option<&'static str>,
}

impl Problem {
    /// A problem with `status` and `detail`.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Problem {
            kind: "about:blank".to_owned(),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            challenge: None,
        }
    }

    /// 400.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::BAD_REQUEST, detail)
    }

    /// 500.
    pub fn internal(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::INTERNAL_SERVER_ERROR, detail)
    }

    /// 401 with a `WWW-Authenticate` challenge (`invalid` when a token was sent but is wrong).
    pub fn unauthorized(detail: impl Into<String>, invalid: bool) -> Self {
        let mut p = Problem::new(StatusCode::UNAUTHORIZED, detail);
        p.challenge = Some(if invalid {
            "Bearer realm=\"corriere\", error=\"invalid_token\""
        } else {
            "Bearer realm=\"corriere\""
        });
        p
    }

    /// The HTTP status.
    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl From<BackendError> for Problem {
    fn from(err: BackendError) -> Self {
        let status = match &err {
            BackendError::NotFound(_) => StatusCode::NOT_FOUND,
            BackendError::BadRequest(_) => StatusCode::BAD_REQUEST,
            BackendError::Conflict(_) => StatusCode::CONFLICT,
            BackendError::Forbidden(_) => StatusCode::FORBIDDEN,
            BackendError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            BackendError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %err, "Admin request failed inside the daemon.");
        }
        Problem::new(status, err.to_string())
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let body = serde_json::to_vec(&self).expect("a Problem always serializes");
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(challenge) = self.challenge {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_errors_map_to_their_status() {
        let cases = [
            (BackendError::NotFound("j1".into()), 404),
            (BackendError::BadRequest("x".into()), 400),
            (BackendError::Conflict("x".into()), 409),
            (BackendError::Forbidden("x".into()), 403),
            (BackendError::Unavailable("x".into()), 503),
            (BackendError::Internal("x".into()), 500),
        ];
        for (err, status) in cases {
            let p = Problem::from(err);
            assert_eq!(p.status, status);
            assert_eq!(p.status_code().as_u16(), status);
        }
    }

    #[test]
    fn body_has_the_rfc_9457_members() {
        let v = serde_json::to_value(Problem::bad_request("part `recipients` is missing")).unwrap();
        assert_eq!(v["type"], "about:blank");
        assert_eq!(v["title"], "Bad Request");
        assert_eq!(v["status"], 400);
        assert_eq!(v["detail"], "part `recipients` is missing");
        assert_eq!(v.as_object().unwrap().len(), 4);
    }
}
