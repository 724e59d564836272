//! Who may do what. [`permissions::decide`] is the single place where a collection rule is
//! applied to a caller; REST handlers and the realtime hub both ask it.

pub mod permissions;

pub use bakend_core::access::{AuthContext, Caller, Operation, Role, Rule};
