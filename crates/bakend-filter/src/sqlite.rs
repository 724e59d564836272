//! What SQLite needs from this crate: the lowercasing function `~` compiles to, and parameters
//! as rusqlite values.

use rusqlite::functions::FunctionFlags;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ToSql};

use crate::sql::SqlValue;

/// The SQL name of the lowercasing function (see [`register_sqlite_functions`]).
pub const LOWER_FUNCTION: &str = "bak_lower";

/// Registers `bak_lower(x)` on `conn`: Rust's `str::to_lowercase` of a text argument (the very
/// function the evaluator uses, so `~` agrees with it on every character), NULL for anything
/// else. Deterministic and innocuous, so SQLite may use it in indexes and views. Call it on
/// every connection a compiled filter may run on.
pub fn register_sqlite_functions(conn: &Connection) -> rusqlite::Result<()> {
    conn.create_scalar_function(
        LOWER_FUNCTION,
        1,
        FunctionFlags::SQLITE_UTF8
            | FunctionFlags::SQLITE_DETERMINISTIC
            | FunctionFlags::SQLITE_INNOCUOUS,
        |ctx| {
            Ok(match ctx.get_raw(0) {
                ValueRef::Text(t) => std::str::from_utf8(t).ok().map(str::to_lowercase),
                _ => None,
            })
        },
    )
}

impl ToSql for SqlValue {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            SqlValue::Integer(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            SqlValue::Real(x) => ToSqlOutput::Borrowed(ValueRef::Real(*x)),
            SqlValue::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            SqlValue::Bool(b) => ToSqlOutput::Borrowed(ValueRef::Integer(i64::from(*b))),
        })
    }
}
