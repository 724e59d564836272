//! `ctx.db`: the bun:sqlite-style calls user code relies on (`query(sql).all/get/run/values`,
//! `prepare`, `run`, `exec`, `transaction`, `inTransaction`) over a connection of this worker's
//! own. It is opened on first use, shares the invocation's time budget (a runaway query is
//! interrupted like a runaway loop), and an invocation that leaves a transaction open has it
//! rolled back. `close()`, `loadExtension()` and `serialize()` are refused: the database
//! belongs to the server. SQL that reaches outside the collections (ATTACH, VACUUM, pragmas that
//! set values, `_`-prefixed internal tables) is refused by the authorizer in `db_policy`.
//! Writes through `db` bypass validation, permissions and events.

use std::sync::{Arc, Mutex};

use rquickjs::function::Opt;
use rquickjs::{Array, Ctx, Exception, Function, Object, Type, TypedArray, Value};
use rusqlite::types::Value as Sql;
use rusqlite::{Connection, Statement};

use super::db_policy::{self, Refusals};
use crate::budget::Budget;
use crate::services::OpenDatabase;

/// One worker's database connection, opened lazily.
pub(crate) struct DbHandle {
    open: OpenDatabase,
    budget: Budget,
    conn: Mutex<Option<Connection>>,
    /// Why the authorizer refused the last statement, for the error thrown to user code.
    refusals: Refusals,
}

const SQLITE_PROGRESS_OPS: i32 = 1000;

impl DbHandle {
    pub fn new(open: OpenDatabase, budget: Budget) -> Arc<DbHandle> {
        Arc::new(DbHandle {
            open,
            budget,
            conn: Mutex::new(None),
            refusals: Refusals::default(),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> Result<T, String>) -> Result<T, String> {
        let mut guard = self
            .conn
            .lock()
            .map_err(|_| "database handle poisoned".to_string())?;
        if guard.is_none() {
            let mut conn = (self.open)().map_err(|e| format!("cannot open the database: {e}"))?;
            let budget = self.budget.clone();
            conn.progress_handler(SQLITE_PROGRESS_OPS, Some(move || budget.expired()))
                .map_err(|e| e.to_string())?;
            db_policy::install(&mut conn, self.refusals.clone()).map_err(|e| e.to_string())?;
            *guard = Some(conn);
        }
        let Some(conn) = guard.as_ref() else {
            return Err("database unavailable".into());
        };
        self.refusals.take();
        f(conn).map_err(|e| match self.refusals.take() {
            Some(reason) => format!("not authorized: {reason}"),
            None => e,
        })
    }

    /// Rolls back a transaction an invocation left open (a thrown error or a time limit inside
    /// `transaction`, or a `BEGIN` without `COMMIT`), so the write lock is never kept.
    pub fn finish_invocation(&self, file: &str) {
        let Ok(guard) = self.conn.lock() else { return };
        if let Some(conn) = guard.as_ref()
            && !conn.is_autocommit()
        {
            tracing::warn!(function = %file, "Rolling back a database transaction left open by {file}");
            if let Err(e) = conn.execute_batch("ROLLBACK") {
                tracing::error!("Rolling back a function's transaction failed: {e}");
            }
        }
    }
}

/// What a statement call returns.
#[derive(Clone, Copy)]
enum Mode {
    All,
    Get,
    Run,
    Values,
}

impl Mode {
    fn from_code(code: i32) -> Mode {
        match code {
            1 => Mode::Get,
            2 => Mode::Run,
            3 => Mode::Values,
            _ => Mode::All,
        }
    }
}

/// Rows or a run result, converted to JS after the connection lock is released.
enum Output {
    Rows {
        columns: Vec<String>,
        rows: Vec<Vec<Sql>>,
    },
    Run {
        changes: u64,
        last_insert_rowid: i64,
    },
}

const JS_WRAPPER: &str = r#"((native) => {
  const isBytes = (v) => v instanceof Uint8Array || v instanceof ArrayBuffer;
  const params = (p) => {
    if (p.length === 1 && Array.isArray(p[0])) return p[0];
    if (p.length === 1 && p[0] !== null && typeof p[0] === "object" && !isBytes(p[0]) && !(p[0] instanceof Date)) return p[0];
    return p;
  };
  const refuse = (what) => () => { throw new Error(`db.${what}() is not allowed: the database belongs to the server`); };
  class Statement {
    constructor(sql) { this.sql = String(sql); this.cls = null; }
    shape(row) { if (row && this.cls) Object.setPrototypeOf(row, this.cls.prototype); return row; }
    all(...p) { const rows = native.query(this.sql, params(p), 0); return this.cls ? rows.map((r) => this.shape(r)) : rows; }
    get(...p) { return this.shape(native.query(this.sql, params(p), 1)); }
    run(...p) { return native.query(this.sql, params(p), 2); }
    values(...p) { return native.query(this.sql, params(p), 3); }
    *iterate(...p) { yield* this.all(...p); }
    as(cls) { this.cls = cls; return this; }
    finalize() {}
    toString() { return this.sql; }
  }
  const cache = new Map();
  let depth = 0;
  const wrap = (fn, begin) => function (...args) {
    const nested = depth > 0;
    const sp = `bakend_sp_${depth}`;
    native.exec(nested ? `SAVEPOINT ${sp}` : begin);
    depth++;
    let out;
    try {
      out = fn.apply(this, args);
      if (out && typeof out.then === "function") throw new TypeError("db.transaction() needs a synchronous function");
    } catch (e) {
      depth--;
      native.exec(nested ? `ROLLBACK TO ${sp}; RELEASE ${sp}` : "ROLLBACK");
      throw e;
    }
    depth--;
    native.exec(nested ? `RELEASE ${sp}` : "COMMIT");
    return out;
  };
  return {
    query(sql) { let s = cache.get(sql); if (!s) { s = new Statement(sql); cache.set(sql, s); } return s; },
    prepare(sql) { return new Statement(sql); },
    run(sql, p) { return native.exec(String(sql), p); },
    exec(sql, p) { return native.exec(String(sql), p); },
    transaction(fn) {
      if (typeof fn !== "function") throw new TypeError("db.transaction() needs a function");
      const t = wrap(fn, "BEGIN");
      t.deferred = wrap(fn, "BEGIN DEFERRED");
      t.immediate = wrap(fn, "BEGIN IMMEDIATE");
      t.exclusive = wrap(fn, "BEGIN EXCLUSIVE");
      return t;
    },
    get inTransaction() { return native.inTransaction(); },
    close: refuse("close"),
    loadExtension: refuse("loadExtension"),
    serialize: refuse("serialize"),
  };
})"#;

/// Builds the `db` object for one runtime (it is reused by every invocation).
pub(crate) fn db_object<'js>(
    ctx: &Ctx<'js>,
    handle: Arc<DbHandle>,
) -> rquickjs::Result<Value<'js>> {
    let native = Object::new(ctx.clone())?;
    let h = handle.clone();
    native.set(
        "query",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, sql: String, params: Opt<Value<'js>>, mode: i32| {
                let bound = bind_values(&ctx, params.0.as_ref())?;
                let mode = Mode::from_code(mode);
                let out = h
                    .with(|conn| statement(conn, &sql, &bound, mode))
                    .map_err(|e| Exception::throw_message(&ctx, &e))?;
                to_js(&ctx, out, mode)
            },
        )?,
    )?;
    let h = handle.clone();
    native.set(
        "exec",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, sql: String, params: Opt<Value<'js>>| {
                let given = params.0.as_ref().filter(|v| !v.type_of().is_void());
                let out = match given {
                    None => h.with(|conn| {
                        conn.execute_batch(&sql).map_err(sql_error)?;
                        Ok(Output::Run {
                            changes: conn.changes(),
                            last_insert_rowid: conn.last_insert_rowid(),
                        })
                    }),
                    Some(p) => {
                        let bound = bind_values(&ctx, Some(p))?;
                        h.with(|conn| statement(conn, &sql, &bound, Mode::Run))
                    }
                }
                .map_err(|e| Exception::throw_message(&ctx, &e))?;
                to_js(&ctx, out, Mode::Run)
            },
        )?,
    )?;
    let h = handle;
    native.set(
        "inTransaction",
        Function::new(ctx.clone(), move || {
            h.with(|conn| Ok(!conn.is_autocommit())).unwrap_or(false)
        })?,
    )?;
    let wrapper: Function = ctx.eval(JS_WRAPPER)?;
    wrapper.call((native,))
}

/// Parameters as given by user code: positional (an array) or named (an object whose keys are
/// `$x`, `:x`, `@x` or the bare name).
enum Bound {
    None,
    Positional(Vec<Sql>),
    Named(Vec<(String, Sql)>),
}

fn bind_values<'js>(ctx: &Ctx<'js>, params: Option<&Value<'js>>) -> rquickjs::Result<Bound> {
    let Some(p) = params.filter(|v| !v.type_of().is_void()) else {
        return Ok(Bound::None);
    };
    if let Some(arr) = p.as_array() {
        let mut out = Vec::with_capacity(arr.len());
        for v in arr.iter::<Value>() {
            out.push(to_sql(ctx, &v?)?);
        }
        return Ok(Bound::Positional(out));
    }
    if let Some(obj) = p.as_object()
        && !is_bytes(p)
    {
        let mut out = Vec::new();
        for entry in obj.props::<String, Value>() {
            let (k, v) = entry?;
            out.push((k, to_sql(ctx, &v)?));
        }
        return Ok(Bound::Named(out));
    }
    Ok(Bound::Positional(vec![to_sql(ctx, p)?]))
}

fn is_bytes(v: &Value<'_>) -> bool {
    TypedArray::<u8>::from_value(v.clone()).is_ok()
        || rquickjs::ArrayBuffer::from_value(v.clone()).is_some()
}

fn to_sql<'js>(ctx: &Ctx<'js>, v: &Value<'js>) -> rquickjs::Result<Sql> {
    Ok(match v.type_of() {
        Type::Uninitialized | Type::Undefined | Type::Null => Sql::Null,
        Type::Bool => Sql::Integer(i64::from(v.as_bool().unwrap_or(false))),
        Type::Int => Sql::Integer(i64::from(v.as_int().unwrap_or(0))),
        Type::Float => {
            let f = v.as_float().unwrap_or(0.0);
            if f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_991.0 {
                Sql::Integer(f as i64)
            } else {
                Sql::Real(f)
            }
        }
        Type::String => Sql::Text(
            v.as_string()
                .map(|s| s.to_string())
                .transpose()?
                .unwrap_or_default(),
        ),
        Type::BigInt => match v.as_big_int() {
            Some(b) => Sql::Integer(b.clone().to_i64()?),
            None => Sql::Null,
        },
        _ => {
            if let Ok(ta) = TypedArray::<u8>::from_value(v.clone()) {
                // SAFETY: the bytes are copied before any JS can run and detach the buffer.
                return Ok(Sql::Blob(
                    unsafe { ta.as_bytes() }.unwrap_or_default().to_vec(),
                ));
            }
            if let Some(ab) = rquickjs::ArrayBuffer::from_value(v.clone()) {
                // SAFETY: as above.
                return Ok(Sql::Blob(
                    unsafe { ab.as_bytes() }.unwrap_or_default().to_vec(),
                ));
            }
            if let Some(obj) = v.as_object()
                && let Ok(iso) = obj.get::<_, Function>("toISOString")
                && obj.get::<_, Function>("getTime").is_ok()
            {
                let s: String = iso.call((rquickjs::function::This(obj.clone()),))?;
                return Ok(Sql::Text(s));
            }
            // Objects and arrays are stored as JSON text (what `json` fields hold).
            match ctx.json_stringify(v.clone())? {
                Some(s) => Sql::Text(s.to_string()?),
                None => Sql::Null,
            }
        }
    })
}

fn sql_error(e: rusqlite::Error) -> String {
    match e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::OperationInterrupted =>
        {
            "SQLite query interrupted: the function's time limit was reached".into()
        }
        other => format!("SQLite: {other}"),
    }
}

fn bind(stmt: &mut Statement<'_>, bound: &Bound) -> Result<(), String> {
    let count = stmt.parameter_count();
    match bound {
        Bound::None => {
            if count > 0 {
                return Err(format!(
                    "SQLite: the statement expects {count} parameter(s)"
                ));
            }
        }
        Bound::Positional(values) => {
            if values.len() != count {
                return Err(format!(
                    "SQLite: the statement expects {count} parameter(s), got {}",
                    values.len()
                ));
            }
            for (i, v) in values.iter().enumerate() {
                stmt.raw_bind_parameter(i + 1, v).map_err(sql_error)?;
            }
        }
        Bound::Named(values) => {
            for i in 1..=count {
                let Some(name) = stmt.parameter_name(i).map(str::to_string) else {
                    return Err(
                        "SQLite: positional `?` parameters need an array, not an object".into(),
                    );
                };
                let bare = name.get(1..).unwrap_or("");
                let v = values
                    .iter()
                    .find(|(k, _)| *k == name)
                    .or_else(|| values.iter().find(|(k, _)| k == bare))
                    .map(|(_, v)| v)
                    .ok_or_else(|| format!("SQLite: missing value for parameter {name}"))?;
                stmt.raw_bind_parameter(i, v).map_err(sql_error)?;
            }
        }
    }
    Ok(())
}

fn statement(conn: &Connection, sql: &str, bound: &Bound, mode: Mode) -> Result<Output, String> {
    let mut stmt = conn.prepare_cached(sql).map_err(sql_error)?;
    bind(&mut stmt, bound)?;
    let columns: Vec<String> = stmt.column_names().map(str::to_string).collect();
    let n = columns.len();
    let mut rows_out = Vec::new();
    {
        let mut rows = stmt.raw_query();
        while let Some(row) = rows.next().map_err(sql_error)? {
            if matches!(mode, Mode::Run) {
                continue;
            }
            let mut vals = Vec::with_capacity(n);
            for i in 0..n {
                vals.push(row.get::<_, Sql>(i).map_err(sql_error)?);
            }
            rows_out.push(vals);
            if matches!(mode, Mode::Get) {
                break;
            }
        }
    }
    Ok(match mode {
        Mode::Run => Output::Run {
            changes: conn.changes(),
            last_insert_rowid: conn.last_insert_rowid(),
        },
        _ => Output::Rows {
            columns,
            rows: rows_out,
        },
    })
}

fn sql_to_js<'js>(ctx: &Ctx<'js>, v: Sql) -> rquickjs::Result<Value<'js>> {
    Ok(match v {
        Sql::Null => Value::new_null(ctx.clone()),
        Sql::Integer(i) => match i32::try_from(i) {
            Ok(small) => Value::new_int(ctx.clone(), small),
            Err(_) => Value::new_float(ctx.clone(), i as f64),
        },
        Sql::Real(f) => Value::new_float(ctx.clone(), f),
        Sql::Text(s) => rquickjs::String::from_str(ctx.clone(), &s)?.into_value(),
        Sql::Blob(b) => TypedArray::<u8>::new(ctx.clone(), b)?.into_value(),
    })
}

fn to_js<'js>(ctx: &Ctx<'js>, out: Output, mode: Mode) -> rquickjs::Result<Value<'js>> {
    match out {
        Output::Run {
            changes,
            last_insert_rowid,
        } => {
            let o = Object::new(ctx.clone())?;
            o.set("changes", changes as f64)?;
            o.set("lastInsertRowid", last_insert_rowid as f64)?;
            Ok(o.into_value())
        }
        Output::Rows { columns, rows } => {
            let row_value = |row: Vec<Sql>| -> rquickjs::Result<Value<'js>> {
                if matches!(mode, Mode::Values) {
                    let a = Array::new(ctx.clone())?;
                    for (i, v) in row.into_iter().enumerate() {
                        a.set(i, sql_to_js(ctx, v)?)?;
                    }
                    Ok(a.into_value())
                } else {
                    let o = Object::new(ctx.clone())?;
                    for (name, v) in columns.iter().zip(row) {
                        o.set(name.as_str(), sql_to_js(ctx, v)?)?;
                    }
                    Ok(o.into_value())
                }
            };
            if matches!(mode, Mode::Get) {
                return match rows.into_iter().next() {
                    Some(r) => row_value(r),
                    None => Ok(Value::new_null(ctx.clone())),
                };
            }
            let a = Array::new(ctx.clone())?;
            for (i, r) in rows.into_iter().enumerate() {
                a.set(i, row_value(r)?)?;
            }
            Ok(a.into_value())
        }
    }
}
