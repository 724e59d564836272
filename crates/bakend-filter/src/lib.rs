//! The filter language of list queries, realtime subscriptions and (later) permission rules:
//! PocketBase's filter syntax (`docs/filters.md`).
//!
//! One parser, two back-ends that agree:
//!
//! ```text
//!  text ──parse──► Expr ──Filter::check(schema)──► Filter ──to_sql(dialect, vars, offset)──► SqlWhere
//!                                                      └───matches(record JSON, vars)──────► bool
//! ```
//!
//! A [`Filter`] is checked once against a collection's [`Schema`] and then used as often as
//! needed: compiled to a `WHERE` fragment for a list (values are always bound parameters, never
//! SQL text) or evaluated on records in memory for realtime. The two select the same records —
//! including nulls, booleans, datetimes and the Unicode lowercasing of `~` —, on SQLite
//! ([`Sqlite`], with [`register_sqlite_functions`]) and on PostgreSQL ([`Postgres`], with
//! [`postgres_functions_sql`] installed), which the property test in
//! `crates/bakend-store/tests/filter_agreement.rs` checks against real tables of both stores
//! (it lives there to run its SQL through the store's `sql::Conn`).
//!
//! ```
//! use bakend_filter::{Filter, Kind, RequestVars, Schema, Sqlite};
//! use serde_json::json;
//!
//! let schema = Schema::new().with_field("title", Kind::String).with_field("views", Kind::Integer);
//! let filter = Filter::new("views > 10 && title ~ 'Hello'", &schema)?;
//! let vars = RequestVars::anonymous("2024-01-01T00:00:00.000Z");
//!
//! let sql = filter.to_sql(&Sqlite, &vars, 0);
//! assert_eq!(sql.sql, r#"("views" > ?1 AND bak_lower("title") LIKE ?2 ESCAPE '\')"#);
//!
//! assert!(filter.matches(&json!({"id": "r1", "title": "Say HELLO", "views": 11}), &vars));
//!
//! let err = Filter::new("vews > 10", &schema).unwrap_err();
//! assert_eq!(err.to_string(), r#"filter: unknown field "vews" at 1"#);
//! # Ok::<(), bakend_filter::FilterError>(())
//! ```

mod error;
mod filter;
mod lexer;
mod like;
mod parse;
mod postgres;
mod schema;
mod sql;
mod sqlite;
mod vars;

pub use error::{ErrorKind, FilterError};
pub use filter::{Filter, Literal};
pub use lexer::Op;
pub use parse::{Comparison, Expr, MAX_DEPTH, MAX_LENGTH, Operand, Term, Var, parse};
pub use postgres::{Postgres, postgres_functions_sql};
pub use schema::{Kind, Schema, SchemaField};
pub use sql::{Dialect, SqlValue, SqlWhere, Sqlite};
pub use sqlite::{LOWER_FUNCTION, register_sqlite_functions};
pub use vars::RequestVars;

#[cfg(test)]
mod tests;
