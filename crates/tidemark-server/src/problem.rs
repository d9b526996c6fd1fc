//! RFC 9457 problem details: every error response names what was wrong.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tidemark_store::{AppendError, Refusal};

pub struct Problem {
    pub status: StatusCode,
    pub code: &'static str,
    pub title: &'static str,
    pub detail: String,
    pub extra: Value,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u64>,
}

impl Problem {
    pub fn new(status: StatusCode, code: &'static str, title: &'static str, detail: impl Into<String>) -> Problem {
        Problem { status, code, title, detail: detail.into(), extra: Value::Null, retry_after: None }
    }

    pub fn with_retry_after(mut self, seconds: u64) -> Problem {
        self.retry_after = Some(seconds);
        self
    }

    pub fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, "bad_request", "The request is malformed", detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", "A valid read credential is required", detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "not_found", "No such resource", detail)
    }

    pub fn internal(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "The ledger failed", detail)
    }

    /// A refused event: status by reason, the event's index and id in the body.
    pub fn refused(e: &AppendError) -> Problem {
        let (status, title) = match &e.reason {
            Refusal::Event(tidemark_core::EventError::TooLarge { .. }) | Refusal::BatchTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "The event or batch is too large")
            }
            Refusal::Event(_) => (StatusCode::BAD_REQUEST, "The event is malformed or invalid"),
            Refusal::Auth(_) | Refusal::BadSignature { .. } => {
                (StatusCode::FORBIDDEN, "The signer may not append this event")
            }
            Refusal::Conflict { .. } | Refusal::ConflictInBatch { .. } => {
                (StatusCode::CONFLICT, "The event id is already used by other content")
            }
            Refusal::Inconsistent { .. } => (StatusCode::CONFLICT, "The event contradicts the ledger's state"),
            _ => (StatusCode::BAD_REQUEST, "The event was refused"),
        };
        let mut p = Problem::new(status, e.reason.code(), title, e.to_string());
        p.extra = json!({"event_index": e.index, "event_id": e.id.map(|i| i.to_string())});
        p
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut body = json!({
            "type": format!("https://tidemark.dev/problems/{}", self.code),
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        if let Value::Object(extra) = self.extra {
            body.as_object_mut().expect("object").extend(extra);
        }
        let mut response = (self.status, body.to_string()).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"tidemark\""));
        }
        response
    }
}
