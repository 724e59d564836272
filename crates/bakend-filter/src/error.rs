//! The one error type: what went wrong and where.

/// A filter that cannot be used: a syntax error, an unknown name, a type mismatch or a limit.
/// Every one of them is the client's mistake (`400 bad_request`), and its `Display` is the
/// message to send: `filter: unknown field "vews" at 1`.
///
/// The position is 1-based and counts characters (Unicode scalar values), not bytes; the end of
/// the input is one past its last character.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("filter: {kind} at {position}")]
pub struct FilterError {
    kind: ErrorKind,
    position: usize,
}

impl FilterError {
    pub(crate) fn new(kind: ErrorKind, position: usize) -> FilterError {
        FilterError { kind, position }
    }

    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// 1-based character position of the offending token (`chars().count() + 1` for "at the
    /// end").
    pub fn position(&self) -> usize {
        self.position
    }
}

/// What was wrong. Its `Display` is the middle of the message (no `filter: ` prefix, no
/// position).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The input is over [`crate::MAX_LENGTH`] bytes.
    #[error("longer than {limit} bytes")]
    TooLong { limit: usize },
    /// Parentheses nested deeper than [`crate::MAX_DEPTH`].
    #[error("parentheses nested deeper than {limit}")]
    TooDeep { limit: usize },
    /// Nothing but whitespace.
    #[error("empty filter")]
    Empty,
    #[error("unexpected character {0:?}")]
    UnexpectedChar(String),
    #[error("unterminated string")]
    UnterminatedString,
    #[error("invalid number {0:?}")]
    InvalidNumber(String),
    /// The parser wanted one thing and found another (`found` describes it).
    #[error("expected {expected}, found {found}")]
    Expected {
        expected: &'static str,
        found: String,
    },
    #[error("unknown field {0:?}")]
    UnknownField(String),
    /// An `@` name other than `@request.auth.id`, `@request.auth.role`, `@request.auth.email`
    /// and `@now`.
    #[error("unknown variable {0:?}")]
    UnknownVariable(String),
    /// A string compared with a datetime that `bakend_core::time::normalize` does not accept.
    #[error("invalid datetime {0:?}")]
    InvalidDatetime(String),
    /// Operands that cannot be compared, or an operator that does not apply to an operand;
    /// the message names both.
    #[error("{0}")]
    Type(String),
}
