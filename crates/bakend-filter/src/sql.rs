//! The SQL back-end: a checked filter as a `WHERE` fragment and its parameters. Values are
//! always parameters, never SQL text; what differs between databases is behind [`Dialect`].

use std::fmt::Write as _;

use crate::filter::{Arg, Filter, Literal, Node, Pattern, Test};
use crate::like::LikePattern;
use crate::vars::RequestVars;

/// A parameter of a compiled filter. The caller converts it to its driver's value
/// (`rusqlite::ToSql` is implemented, with booleans as 0/1).
#[derive(Clone, Debug, PartialEq)]
pub enum SqlValue {
    Integer(i64),
    Real(f64),
    Text(String),
    /// Only from dialects whose [`Dialect::boolean_param`] returns it (SQLite's does not).
    Bool(bool),
}

/// A `WHERE` fragment and the values of its placeholders, in order.
#[derive(Clone, Debug, PartialEq)]
pub struct SqlWhere {
    /// A boolean SQL expression, parenthesised where needed so it can be joined with `AND`.
    /// It is true exactly for the rows the evaluator accepts; for the others it is false or
    /// NULL, so use it as is or under `AND`/`OR`, never under `NOT`.
    pub sql: String,
    /// Placeholder `param_offset + 1 + i` is `params[i]`.
    pub params: Vec<SqlValue>,
}

/// What differs between SQL databases. [`Sqlite`] now; PostgreSQL implements the same methods
/// (`$N`, `TRUE`/`FALSE`, a real boolean parameter, its own lowercasing function).
pub trait Dialect {
    /// Appends the placeholder of parameter `n` (1-based): `?N` in SQLite, `$N` in PostgreSQL.
    fn placeholder(&self, n: usize, out: &mut String);
    /// Appends `name` quoted as an identifier.
    fn quote_identifier(&self, name: &str, out: &mut String);
    /// A constant true or false expression (for comparisons decided without a column).
    fn boolean_literal(&self, value: bool) -> &'static str;
    /// The parameter compared with a boolean column.
    fn boolean_param(&self, value: bool) -> SqlValue;
    /// The one-argument function lowercasing exactly like Rust's `str::to_lowercase`, NULL for
    /// anything but text.
    fn lower_function(&self) -> &'static str;
    /// The escape character of LIKE patterns.
    fn like_escape(&self) -> char {
        '\\'
    }
}

/// SQLite: `?N`, `"ident"`, `1`/`0`, booleans stored 0/1, `bak_lower` (registered by
/// [`crate::register_sqlite_functions`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct Sqlite;

impl Dialect for Sqlite {
    fn placeholder(&self, n: usize, out: &mut String) {
        let _ = write!(out, "?{n}");
    }

    fn quote_identifier(&self, name: &str, out: &mut String) {
        out.push('"');
        out.push_str(&name.replace('"', "\"\""));
        out.push('"');
    }

    fn boolean_literal(&self, value: bool) -> &'static str {
        if value { "1" } else { "0" }
    }

    fn boolean_param(&self, value: bool) -> SqlValue {
        SqlValue::Integer(i64::from(value))
    }

    fn lower_function(&self) -> &'static str {
        crate::sqlite::LOWER_FUNCTION
    }
}

impl Filter {
    /// The filter as SQL for a request with `vars`. Placeholders are numbered from
    /// `param_offset + 1`, after the caller's own. `@` values become parameters (or decide a
    /// comparison outright: one with a null `@` value is false), and a comparison of a column
    /// with a value is `"col" op ?N`, so an index on the column serves it.
    pub fn to_sql(
        &self,
        dialect: &dyn Dialect,
        vars: &RequestVars,
        param_offset: usize,
    ) -> SqlWhere {
        let mut c = Compiler {
            dialect,
            vars,
            offset: param_offset,
            out: SqlWhere {
                sql: String::new(),
                params: Vec::new(),
            },
        };
        c.node(&self.root);
        c.out
    }
}

struct Compiler<'a> {
    dialect: &'a dyn Dialect,
    vars: &'a RequestVars,
    offset: usize,
    out: SqlWhere,
}

impl Compiler<'_> {
    fn node(&mut self, n: &Node) {
        let (items, joiner) = match n {
            Node::Test(t) => return self.test(t),
            Node::And(items) => (items, " AND "),
            Node::Or(items) => (items, " OR "),
        };
        self.out.sql.push('(');
        for (i, n) in items.iter().enumerate() {
            if i > 0 {
                self.out.sql.push_str(joiner);
            }
            self.node(n);
        }
        self.out.sql.push(')');
    }

    fn constant(&mut self, value: bool) {
        self.out.sql.push_str(self.dialect.boolean_literal(value));
    }

    fn param(&mut self, v: SqlValue) {
        self.out.params.push(v);
        let n = self.offset + self.out.params.len();
        self.dialect.placeholder(n, &mut self.out.sql);
    }

    /// A column or a parameter.
    fn arg(&mut self, a: &Arg) {
        match a {
            Arg::Field(f) => self.dialect.quote_identifier(&f.column, &mut self.out.sql),
            Arg::Lit(l) => {
                let v = match l {
                    Literal::Text(s) => SqlValue::Text(s.clone()),
                    Literal::Integer(i) => SqlValue::Integer(*i),
                    Literal::Float(x) => SqlValue::Real(*x),
                    Literal::Bool(b) => self.dialect.boolean_param(*b),
                };
                self.param(v);
            }
            Arg::Var(v) => match self.vars.get(*v) {
                Some(s) => self.param(SqlValue::Text(s.to_string())),
                // Callers decide comparisons with a null `@` value before writing them; NULL
                // would make such a comparison NULL, which is false in a WHERE all the same.
                None => self.out.sql.push_str("NULL"),
            },
        }
    }

    /// An `@` value that is null for this request: a comparison with it is false.
    fn null_var(&self, a: &Arg) -> bool {
        matches!(a, Arg::Var(v) if self.vars.get(*v).is_none())
    }

    fn test(&mut self, t: &Test) {
        // Without a column the answer is the same for every row: decide it here, with the
        // evaluator, so the two cannot differ (and no untyped parameter pair reaches the
        // database).
        if !t.reads_field() {
            return self.constant(t.eval(None, self.vars));
        }
        match t {
            Test::Const(b) => self.constant(*b),
            Test::Null { arg, is_null } => {
                self.arg(arg);
                self.out
                    .sql
                    .push_str(if *is_null { " IS NULL" } else { " IS NOT NULL" });
            }
            Test::Compare {
                op, left, right, ..
            } => {
                if self.null_var(left) || self.null_var(right) {
                    return self.constant(false);
                }
                self.arg(left);
                self.out.sql.push(' ');
                self.out.sql.push_str(op.sql());
                self.out.sql.push(' ');
                self.arg(right);
            }
            Test::Like {
                left,
                pattern,
                negated,
            } => {
                let pattern = match pattern {
                    Pattern::Lit(p) => p.sql(self.dialect.like_escape()),
                    Pattern::Var(v) => match self.vars.get(*v) {
                        Some(s) => LikePattern::new(s).sql(self.dialect.like_escape()),
                        None => return self.constant(false),
                    },
                };
                if self.null_var(left) {
                    return self.constant(false);
                }
                self.out.sql.push_str(self.dialect.lower_function());
                self.out.sql.push('(');
                self.arg(left);
                self.out
                    .sql
                    .push_str(if *negated { ") NOT LIKE " } else { ") LIKE " });
                self.param(SqlValue::Text(pattern));
                self.out.sql.push_str(" ESCAPE '");
                let escape = self.dialect.like_escape();
                if escape == '\'' {
                    self.out.sql.push('\'');
                }
                self.out.sql.push(escape);
                self.out.sql.push('\'');
            }
        }
    }
}
