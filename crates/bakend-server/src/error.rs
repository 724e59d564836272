//! The one place where errors become HTTP responses: `{"error":{"code","message"[,"details"]}}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bakend_auth::AuthError;
use bakend_storage::StorageError;
use bakend_store::{FieldError, StoreError};
use serde_json::json;

use crate::response::json_response;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Option<Vec<FieldError>>,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "Method not allowed",
        )
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Authentication required",
        )
    }

    pub fn forbidden() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Insufficient permissions",
        )
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("Request body exceeds the limit of {limit} bytes"),
        )
    }

    /// A failure whose details must not reach the client; they go to the log instead.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!("Internal error: {detail}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "Internal server error",
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::CollectionNotFound(_) | StoreError::RecordNotFound(_) => {
                ApiError::not_found(e.to_string())
            }
            StoreError::Validation(details) => ApiError {
                status: StatusCode::BAD_REQUEST,
                code: "validation_error",
                message: "Validation failed".into(),
                details: Some(details),
                retry_after: None,
            },
            StoreError::Forbidden => ApiError::forbidden(),
            StoreError::BadRequest(m) | StoreError::Definition(m) => ApiError::bad_request(m),
            StoreError::Blocked(b) => {
                let message = b.to_string();
                let details = b
                    .blockers
                    .into_iter()
                    .map(|x| FieldError {
                        field: x.field.clone(),
                        rule: x.rule,
                        message: x.to_string(),
                    })
                    .collect();
                ApiError {
                    details: Some(details),
                    ..ApiError::bad_request(message)
                }
            }
            StoreError::WriterStopped => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "The server is shutting down",
            ),
            // The database server is unreachable: logged with its (password-free) cause, and
            // the client is told to retry rather than that its request was wrong.
            StoreError::Connect(cause) => {
                tracing::error!("{cause}");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "The database is unavailable; retry shortly",
                )
            }
            other => ApiError::internal(other),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let msg = e.to_string();
        match e {
            AuthError::BadRequest(_) => ApiError::bad_request(msg),
            AuthError::InvalidCredentials
            | AuthError::InvalidRefreshToken
            | AuthError::Unauthenticated => {
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", msg)
            }
            AuthError::EmailTaken | AuthError::LastAdmin(_) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", msg)
            }
            AuthError::UserNotFound => ApiError::not_found(msg),
            AuthError::RateLimited { retry_after_secs } => ApiError {
                retry_after: Some(retry_after_secs),
                ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_requests", msg)
            },
            AuthError::Busy { retry_after_secs } => ApiError {
                retry_after: Some(retry_after_secs),
                ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", msg)
            },
            AuthError::Store(s) => s.into(),
            AuthError::Internal(detail) => ApiError::internal(detail),
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::NotFound => ApiError::not_found("File not found"),
            StorageError::TooLarge(m) => ApiError::bad_request(m),
            StorageError::Store(StoreError::Forbidden) => {
                ApiError::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden")
            }
            StorageError::Store(s) => s.into(),
            other => ApiError::internal(other),
        }
    }
}

impl From<bakend_jobs::JobsError> for ApiError {
    fn from(e: bakend_jobs::JobsError) -> Self {
        use bakend_jobs::JobsError;
        let msg = e.to_string();
        match e {
            JobsError::NotFound(_) => ApiError::not_found(msg),
            JobsError::AlreadyRunning(_) | JobsError::RunningOn { .. } => {
                ApiError::new(StatusCode::CONFLICT, "conflict", msg)
            }
            JobsError::ShuttingDown => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", msg)
            }
            JobsError::Store(s) => s.into(),
            other => ApiError::internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(details) = self.details {
            error["details"] = json!(details);
        }
        let mut resp = json_response(self.status, &json!({ "error": error }));
        let retry = self
            .retry_after
            .or((self.status == StatusCode::SERVICE_UNAVAILABLE).then_some(1));
        if let Some(secs) = retry
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

/// The body for a handler that panicked: the envelope, nothing about the panic.
pub fn panic_response(_panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("A request handler panicked");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        "Internal server error",
    )
    .into_response()
}

/// Service errors seen by user functions (`ctx.records`, `ctx.storage`) carry the same status,
/// code, message and details as the REST response would.
impl From<ApiError> for bakend_functions::ServiceError {
    fn from(e: ApiError) -> Self {
        bakend_functions::ServiceError {
            status: e.status.as_u16(),
            code: e.code.to_string(),
            message: e.message,
            details: e.details.map(|d| Box::new(json!(d))),
        }
    }
}
