//! Who may do what. Accounts, access tokens and refresh sessions live in [`accounts`];
//! [`permissions::decide`] is the single place where a collection rule is applied to a caller —
//! REST handlers and the realtime hub both ask it.

pub mod accounts;
pub mod email;
pub mod error;
pub mod hashing;
pub mod passwords;
pub mod permissions;
pub mod ratelimit;
pub mod tokens;

pub use accounts::{AdminOutcome, AuthService, TokenCheck, TokenPair, UserChange, safe_user};
pub use bakend_core::access::{AuthContext, Caller, Operation, Role, Rule};
pub use bakend_store::{Permission, Precondition, RuleExpression};
pub use error::AuthError;
