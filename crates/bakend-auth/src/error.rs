//! Errors of accounts and sessions. The HTTP layer maps them to the spec's envelope.

use bakend_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Input the caller must fix (400).
    #[error("{0}")]
    BadRequest(String),
    #[error("Invalid email or password")]
    InvalidCredentials,
    #[error("Invalid or expired refresh token")]
    InvalidRefreshToken,
    #[error("Authentication required")]
    Unauthenticated,
    #[error("Email is already registered")]
    EmailTaken,
    #[error("User not found")]
    UserNotFound,
    /// The change would leave the project without an admin.
    #[error("{0}")]
    LastAdmin(String),
    #[error("Too many attempts; retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    /// Too many password hashes running and waiting (503): the server sheds the load.
    #[error("Too many sign-ins in progress; retry in {retry_after_secs} s")]
    Busy { retry_after_secs: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<bakend_store::sql::Error> for AuthError {
    fn from(e: bakend_store::sql::Error) -> Self {
        AuthError::Store(StoreError::Database(e))
    }
}
