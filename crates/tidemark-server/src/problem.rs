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

/// Largest error body read back when an answer is turned into a problem document.
const MAX_REWRITTEN_BODY: usize = 64 * 1024;

/// The problem type and title of a status (for answers made by axum's
/// extractors and by tower layers, which know nothing of problem details).
fn status_problem(status: StatusCode) -> (&'static str, &'static str) {
    match status {
        StatusCode::BAD_REQUEST => ("bad_request", "The request is malformed"),
        StatusCode::UNAUTHORIZED => ("unauthorized", "A valid read credential is required"),
        StatusCode::NOT_FOUND => ("not_found", "No such resource"),
        StatusCode::METHOD_NOT_ALLOWED => ("method_not_allowed", "The method is not allowed here"),
        StatusCode::REQUEST_TIMEOUT => ("request_timeout", "The request took too long"),
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "The request body is too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported_media_type", "The content type is not accepted"),
        StatusCode::UNPROCESSABLE_ENTITY => ("unprocessable", "The request cannot be processed"),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => ("headers_too_large", "The request headers are too large"),
        s if s.is_server_error() => ("internal", "The ledger failed"),
        _ => ("error", "The request failed"),
    }
}

/// What a status means when the layer that made it said nothing.
fn default_detail(status: StatusCode) -> String {
    match status {
        StatusCode::REQUEST_TIMEOUT => {
            format!("the request was not answered within {} s", crate::REQUEST_TIMEOUT.as_secs())
        }
        StatusCode::PAYLOAD_TOO_LARGE => format!("the request body is over {} bytes", crate::MAX_BODY_BYTES),
        other => other.canonical_reason().unwrap_or("error").to_owned(),
    }
}

/// Turns every error answer that is not already a problem document into
/// one, keeping the status, the headers and the layer's words as `detail`.
pub async fn problemize(response: Response) -> Response {
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, MAX_REWRITTEN_BODY).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_owned(),
        Err(_) => String::new(),
    };
    let detail = match status {
        StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT if !text.is_empty() => {
            format!("{} ({text})", default_detail(status))
        }
        _ if text.is_empty() => default_detail(status),
        _ => text,
    };
    let (code, title) = status_problem(status);
    let rewritten = Problem::new(status, code, title, detail).into_response();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_TYPE);
    let (new_parts, new_body) = rewritten.into_parts();
    for (k, v) in new_parts.headers.iter() {
        parts.headers.insert(k.clone(), v.clone());
    }
    Response::from_parts(parts, new_body)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn rewritten(status: StatusCode, content_type: &str, body: &'static str) -> (StatusCode, Value, String) {
        let mut r = (status, body).into_response();
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_str(content_type).unwrap());
        let r = problemize(r).await;
        let ct = r.headers()[header::CONTENT_TYPE].to_str().unwrap().to_owned();
        let status = r.status();
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap(), ct)
    }

    #[test]
    fn every_error_answer_becomes_a_problem_document() {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let (status, v, ct) =
                rewritten(StatusCode::BAD_REQUEST, "text/plain", "Failed to deserialize query string").await;
            assert_eq!((status, ct.as_str()), (StatusCode::BAD_REQUEST, "application/problem+json"));
            assert_eq!(v["status"], 400);
            assert_eq!(v["detail"], "Failed to deserialize query string");
            assert_eq!(v["type"], "https://tidemark.dev/problems/bad_request");
            let (_, v, _) = rewritten(StatusCode::REQUEST_TIMEOUT, "text/plain", "").await;
            assert!(v["detail"].as_str().unwrap().contains("not answered within"), "{v}");
            let (_, v, _) = rewritten(StatusCode::PAYLOAD_TOO_LARGE, "text/plain", "length limit exceeded").await;
            assert_eq!(v["type"], "https://tidemark.dev/problems/payload_too_large");
        });
    }
}
