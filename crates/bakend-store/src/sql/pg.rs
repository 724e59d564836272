//! The PostgreSQL side of [`super::Conn`]: a synchronous client (each store thread owns its
//! connection, as with SQLite), SQLite's placeholders translated, statements cached per
//! connection, and values converted to and from SQLite's storage classes.

use std::cell::RefCell;
use std::collections::HashMap;
use std::error::Error as StdError;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use postgres::types::{IsNull, Type, to_sql_checked};
use rusqlite::types::{ToSqlOutput, Value, ValueRef};

use super::error::{Error, Result};
use super::{Params, placeholders};

/// Statements kept per connection; past this the cache starts over (dynamic SQL such as
/// filters would otherwise grow it without end).
const STATEMENT_CACHE: usize = 256;

use bakend_core::config::{PostgresSettings, redact_url};

pub struct PgConn {
    client: RefCell<postgres::Client>,
    cache: RefCell<HashMap<Arc<str>, postgres::Statement>>,
}

impl PgConn {
    /// Connects and sets the connection up: search path, statement timeout, UTC.
    pub fn connect(cfg: &PostgresSettings) -> Result<PgConn> {
        let failed = |message: String| Error::Connect {
            url: redact_url(&cfg.url),
            message,
        };
        // The driver's own messages for a bad URL may quote it, password and all.
        let mut pg = postgres::Config::from_str(&cfg.url)
            .map_err(|_| failed("the URL is not a valid PostgreSQL connection URL".into()))?;
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(Duration::from_secs(10));
        }
        pg.application_name("bakend");
        let client = pg
            .connect(postgres::NoTls)
            .map_err(|e| failed(super::error::postgres_message(&e)))?;
        let conn = PgConn {
            client: RefCell::new(client),
            cache: RefCell::new(HashMap::new()),
        };
        let schema = quote_ident(&cfg.options.schema);
        conn.batch_execute(&format!(
            "SET search_path TO {schema}; SET statement_timeout = {}; SET TIME ZONE 'UTC';",
            cfg.options.statement_timeout.as_millis()
        ))?;
        Ok(conn)
    }

    pub(super) fn batch_execute(&self, sql: &str) -> Result<()> {
        Ok(self.client.borrow_mut().batch_execute(sql)?)
    }

    pub(super) fn prepare(&self, sql: &str) -> Result<PgStmt<'_>> {
        if let Some((key, stmt)) = self.cache.borrow().get_key_value(sql) {
            return Ok(PgStmt {
                conn: self,
                key: key.clone(),
                stmt: stmt.clone(),
            });
        }
        let stmt = self
            .client
            .borrow_mut()
            .prepare(&placeholders::to_postgres(sql))?;
        let mut cache = self.cache.borrow_mut();
        if cache.len() >= STATEMENT_CACHE {
            cache.clear();
        }
        let key: Arc<str> = Arc::from(sql);
        cache.insert(key.clone(), stmt.clone());
        Ok(PgStmt {
            conn: self,
            key,
            stmt,
        })
    }

    /// Forgets every prepared statement (after a schema change that alters a result's
    /// columns, which PostgreSQL refuses to re-plan silently).
    pub fn clear_statement_cache(&self) {
        self.cache.borrow_mut().clear();
    }

    /// Waits up to `timeout` for notifications on the channels this connection `LISTEN`s to
    /// and takes every one that came, as `(channel, payload)`; none when the time ran out.
    pub fn wait_for_notifications(&self, timeout: Duration) -> Result<Vec<(String, String)>> {
        use postgres::fallible_iterator::FallibleIterator;
        let mut client = self.client.borrow_mut();
        let mut notifications = client.notifications();
        let mut out = Vec::new();
        let first = notifications.timeout_iter(timeout).next()?;
        if let Some(n) = first {
            out.push((n.channel().to_string(), n.payload().to_string()));
            while let Some(n) = notifications.iter().next()? {
                out.push((n.channel().to_string(), n.payload().to_string()));
            }
        }
        Ok(out)
    }

    pub(super) fn is_closed(&self) -> bool {
        self.client.borrow().is_closed()
    }

    /// Whether the server is still there (a cheap round trip).
    pub fn is_valid(&self) -> bool {
        self.client
            .borrow_mut()
            .is_valid(Duration::from_secs(5))
            .is_ok()
    }
}

pub struct PgStmt<'c> {
    conn: &'c PgConn,
    /// The SQL it was cached under.
    key: Arc<str>,
    stmt: postgres::Statement,
}

impl PgStmt<'_> {
    pub(super) fn execute(&self, params: &impl Params) -> Result<usize> {
        let values = owned(params)?;
        let refs = as_pg(&values);
        let n = self.conn.client.borrow_mut().execute(&self.stmt, &refs);
        let n = self.forget_if_stale(n)?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    pub(super) fn query(&self, params: &impl Params) -> Result<Vec<postgres::Row>> {
        let values = owned(params)?;
        let refs = as_pg(&values);
        let rows = self.conn.client.borrow_mut().query(&self.stmt, &refs);
        Ok(self.forget_if_stale(rows)?)
    }

    /// A schema change (a migration on this or another server) can leave a prepared statement
    /// that PostgreSQL will no longer run: its result's columns or its parameters' types
    /// changed. Dropped from the cache, so the next use prepares it afresh (this use fails:
    /// inside a transaction PostgreSQL has already aborted it).
    fn forget_if_stale<T>(
        &self,
        result: std::result::Result<T, postgres::Error>,
    ) -> std::result::Result<T, postgres::Error> {
        use postgres::error::SqlState;
        if let Err(e) = &result
            && e.code().is_some_and(|c| {
                *c == SqlState::FEATURE_NOT_SUPPORTED
                    || *c == SqlState::UNDEFINED_FUNCTION
                    || *c == SqlState::DATATYPE_MISMATCH
                    || *c == SqlState::UNDEFINED_TABLE
                    || *c == SqlState::UNDEFINED_COLUMN
            })
        {
            self.conn.cache.borrow_mut().remove(&*self.key);
        }
        result
    }

    pub(super) fn column_names(&self) -> Vec<String> {
        self.stmt
            .columns()
            .iter()
            .map(|c| c.name().to_string())
            .collect()
    }
}

/// The parameters as owned values: they must all exist at once to cross to PostgreSQL.
fn owned(params: &impl Params) -> Result<Vec<Param>> {
    let mut values = Vec::new();
    let mut failed = None;
    params.each(&mut |p| match p.to_sql() {
        Ok(ToSqlOutput::Borrowed(v)) => values.push(Param(to_owned(v))),
        Ok(ToSqlOutput::Owned(v)) => values.push(Param(v)),
        Ok(_) => {
            failed.get_or_insert(Error::Unsupported(
                "a parameter type PostgreSQL cannot take".into(),
            ));
        }
        Err(e) => {
            failed.get_or_insert(Error::Sqlite(e));
        }
    });
    match failed {
        Some(e) => Err(e),
        None => Ok(values),
    }
}

fn to_owned(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Real(f) => Value::Real(f),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}

fn as_pg(values: &[Param]) -> Vec<&(dyn postgres::types::ToSql + Sync)> {
    values
        .iter()
        .map(|v| v as &(dyn postgres::types::ToSql + Sync))
        .collect()
}

/// One parameter in SQLite's value model, written as whatever type PostgreSQL inferred for
/// its placeholder.
#[derive(Debug)]
struct Param(Value);

type BoxError = Box<dyn StdError + Sync + Send>;

impl postgres::types::ToSql for Param {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> std::result::Result<IsNull, BoxError> {
        let mismatch = |what: &str| -> BoxError {
            format!("cannot bind {what} to a parameter of type {ty}").into()
        };
        match &self.0 {
            Value::Null => Ok(IsNull::Yes),
            Value::Integer(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::FLOAT8 => (*i as f64).to_sql(ty, out),
                Type::FLOAT4 => (*i as f32).to_sql(ty, out),
                Type::BOOL => (*i != 0).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                    i.to_string().as_str().to_sql(ty, out)
                }
                _ => Err(mismatch("an integer")),
            },
            Value::Real(f) => match *ty {
                Type::FLOAT8 => f.to_sql(ty, out),
                Type::FLOAT4 => (*f as f32).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR | Type::UNKNOWN => {
                    f.to_string().as_str().to_sql(ty, out)
                }
                _ => Err(mismatch("a real number")),
            },
            Value::Text(s) => match *ty {
                Type::TEXT
                | Type::VARCHAR
                | Type::BPCHAR
                | Type::NAME
                | Type::UNKNOWN
                | Type::JSON => {
                    out.extend_from_slice(s.as_bytes());
                    Ok(IsNull::No)
                }
                Type::JSONB => {
                    out.extend_from_slice(&[1]);
                    out.extend_from_slice(s.as_bytes());
                    Ok(IsNull::No)
                }
                _ => Err(mismatch("text")),
            },
            Value::Blob(b) => match *ty {
                Type::BYTEA => b.as_slice().to_sql(ty, out),
                _ => Err(mismatch("a blob")),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// Column `i` of a PostgreSQL row in SQLite's value model.
pub(super) fn value_ref(row: &postgres::Row, i: usize) -> Result<ValueRef<'_>> {
    let Some(col) = row.columns().get(i) else {
        return Err(Error::Sqlite(rusqlite::Error::InvalidColumnIndex(i)));
    };
    let v = match *col.type_() {
        Type::INT8 => row.try_get::<_, Option<i64>>(i)?.map(ValueRef::Integer),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(i)?
            .map(|n| ValueRef::Integer(n.into())),
        Type::INT2 => row
            .try_get::<_, Option<i16>>(i)?
            .map(|n| ValueRef::Integer(n.into())),
        Type::BOOL => row
            .try_get::<_, Option<bool>>(i)?
            .map(|b| ValueRef::Integer(b.into())),
        Type::FLOAT8 => row.try_get::<_, Option<f64>>(i)?.map(ValueRef::Real),
        Type::FLOAT4 => row
            .try_get::<_, Option<f32>>(i)?
            .map(|f| ValueRef::Real(f.into())),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => row
            .try_get::<_, Option<&str>>(i)?
            .map(|s| ValueRef::Text(s.as_bytes())),
        Type::BYTEA => row.try_get::<_, Option<&[u8]>>(i)?.map(ValueRef::Blob),
        Type::VOID => None,
        ref other => {
            return Err(Error::Unsupported(format!(
                "column \"{}\" has type {other}, which Bakend does not read (cast it to BIGINT, \
                 DOUBLE PRECISION, TEXT or BYTEA)",
                col.name()
            )));
        }
    };
    Ok(v.unwrap_or(ValueRef::Null))
}

/// An identifier in double quotes, quotes inside doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
