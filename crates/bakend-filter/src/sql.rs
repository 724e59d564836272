//! The SQL back-end: a checked filter as a `WHERE` fragment and its parameters. Values are
//! always parameters, never SQL text; what differs between databases is behind [`Dialect`].

use std::fmt::Write as _;

use crate::filter::{Arg, Cmp, Filter, I64_BOUND, Literal, Node, Pattern, Test, Ty};
use crate::like::LikePattern;
use crate::schema::Kind;
use crate::vars::RequestVars;

/// A parameter of a compiled filter. The caller converts it to its driver's value
/// (`rusqlite::ToSql` is implemented, with booleans as 0/1).
#[derive(Clone, Debug, PartialEq)]
pub enum SqlValue {
    Integer(i64),
    Real(f64),
    Text(String),
    /// Only from dialects whose [`Dialect::boolean_param`] returns it (neither SQLite's nor
    /// PostgreSQL's does: both stores keep booleans as 0/1 integers).
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

/// What differs between SQL databases: [`Sqlite`] and [`crate::Postgres`]. The defaults are
/// SQLite's behaviour; a dialect overrides what its database does differently.
pub trait Dialect {
    /// Appends the placeholder of parameter `n` (1-based): `?N` (the store translates it for
    /// PostgreSQL together with its own).
    fn placeholder(&self, n: usize, out: &mut String) {
        let _ = write!(out, "?{n}");
    }
    /// Appends `name` quoted as an identifier: `"name"`, inner quotes doubled.
    fn quote_identifier(&self, name: &str, out: &mut String) {
        out.push('"');
        out.push_str(&name.replace('"', "\"\""));
        out.push('"');
    }
    /// A constant true or false expression (for comparisons decided without a column).
    fn boolean_literal(&self, value: bool) -> &'static str;
    /// The parameter compared with a boolean column: 0/1, as both stores keep booleans.
    fn boolean_param(&self, value: bool) -> SqlValue {
        SqlValue::Integer(i64::from(value))
    }
    /// The one-argument function lowercasing exactly like Rust's `str::to_lowercase`, NULL for
    /// anything but text: `bak_lower`, registered on SQLite connections and installed in the
    /// PostgreSQL schema.
    fn lower_function(&self) -> &'static str {
        crate::sqlite::LOWER_FUNCTION
    }
    /// The escape character of LIKE patterns.
    fn like_escape(&self) -> char {
        '\\'
    }
    /// Appended after the right operand of a text comparison so that it compares bytes
    /// (code points), whatever collation the column has. Empty where text comparisons are
    /// binary anyway (SQLite's default `BINARY`).
    fn binary_collation(&self) -> &'static str {
        ""
    }
    /// Whether the database compares an integer with a float by their exact values, as SQLite
    /// does. When it does not (PostgreSQL converts the integer to `double precision`, which
    /// rounds above 2^53), the compiler never lets it: a literal is brought to the column's
    /// type beforehand, and two columns of different types are compared by a `CASE` that is
    /// exact.
    fn compares_mixed_numbers_exactly(&self) -> bool {
        true
    }
    /// Whether a stored text can contain NUL. When it cannot (PostgreSQL), a text value with a
    /// NUL never reaches the database as a parameter (it could not be bound): a comparison with
    /// it is decided from the part before the NUL, which orders the same against every text
    /// without one.
    fn text_holds_nul(&self) -> bool {
        true
    }
}

/// SQLite: `?N`, `"ident"`, `1`/`0`, booleans stored 0/1, `bak_lower` (registered by
/// [`crate::register_sqlite_functions`]); everything else as the [`Dialect`] defaults.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sqlite;

impl Dialect for Sqlite {
    fn boolean_literal(&self, value: bool) -> &'static str {
        if value { "1" } else { "0" }
    }
}

impl Filter {
    /// The filter as SQL for a request with `vars`. Placeholders are numbered from
    /// `param_offset + 1`, after the caller's own. `@` values become parameters (or decide a
    /// comparison outright: one with a null `@` value is false), and a comparison of a column
    /// with a value is `"col" op ?N` (for text on PostgreSQL `"col" op ?N COLLATE "C"`, which
    /// the column's own `"C"` index serves as well), so an index on the column serves it.
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
                op,
                left,
                right,
                ty,
            } => {
                if self.null_var(left) || self.null_var(right) {
                    return self.constant(false);
                }
                // Written by the dialect's rewrites, if it needs one here.
                let rewritten = match ty {
                    Ty::Number if !self.dialect.compares_mixed_numbers_exactly() => {
                        self.mixed_numbers(*op, left, right)
                    }
                    Ty::Text if !self.dialect.text_holds_nul() => {
                        self.text_with_nul(*op, left, right)
                    }
                    _ => false,
                };
                if rewritten {
                    return;
                }
                self.arg(left);
                self.out.sql.push(' ');
                self.out.sql.push_str(op.sql());
                self.out.sql.push(' ');
                self.arg(right);
                if *ty == Ty::Text {
                    self.out.sql.push_str(self.dialect.binary_collation());
                }
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

/// A comparison of a column with a value, rewritten so the database can decide it exactly.
enum Rewrite {
    /// False for every row.
    Never,
    /// True for every row where the column is not null.
    NotNull,
    /// `column op value`.
    Compare(Cmp, SqlValue),
}

/// An operand's number type, when it is a number column or a number literal.
#[derive(Clone, Copy, PartialEq, Eq)]
enum NumType {
    Integer,
    Float,
}

fn num_type(a: &Arg) -> Option<NumType> {
    match a {
        Arg::Field(f) if f.kind == Kind::Integer => Some(NumType::Integer),
        Arg::Field(f) if f.kind == Kind::Float => Some(NumType::Float),
        Arg::Lit(Literal::Integer(_)) => Some(NumType::Integer),
        Arg::Lit(Literal::Float(_)) => Some(NumType::Float),
        _ => None,
    }
}

/// `column op value` for an integer column and a float value, as integer comparisons: what the
/// evaluator's exact comparison (`filter::int_float`) decides.
fn integer_column_with_float(op: Cmp, v: f64) -> Rewrite {
    if v.is_nan() {
        return Rewrite::Never;
    }
    // Beyond every integer on one side: the answer is the same for every integer.
    let all_below = v >= I64_BOUND;
    if all_below || v < -I64_BOUND {
        let holds = match op {
            Cmp::Ne => true,
            Cmp::Lt | Cmp::Le => all_below,
            Cmp::Gt | Cmp::Ge => !all_below,
            Cmp::Eq => false,
        };
        return if holds {
            Rewrite::NotNull
        } else {
            Rewrite::Never
        };
    }
    let floor = v.floor();
    // In range, so exact.
    let k = floor as i64;
    if floor == v {
        return Rewrite::Compare(op, SqlValue::Integer(k));
    }
    // Strictly between k and k + 1: no integer equals it, and `< v` is `<= k`.
    match op {
        Cmp::Eq => Rewrite::Never,
        Cmp::Ne => Rewrite::NotNull,
        Cmp::Lt | Cmp::Le => Rewrite::Compare(Cmp::Le, SqlValue::Integer(k)),
        Cmp::Gt | Cmp::Ge => Rewrite::Compare(Cmp::Gt, SqlValue::Integer(k)),
    }
}

/// `column op value` for a float column and an integer value, as float comparisons.
fn float_column_with_integer(op: Cmp, k: i64) -> Rewrite {
    let d = k as f64;
    // i128 holds every i64 and every integral f64 up to 2^63 exactly.
    let (exact, above) = (i128::from(k), d as i128);
    if exact == above {
        return Rewrite::Compare(op, SqlValue::Real(d));
    }
    // k lies strictly between two neighbouring floats: no float equals it, and `< k` is
    // `<= lo`, `> k` is `>= hi`.
    let (lo, hi) = if above > exact {
        (d.next_down(), d)
    } else {
        (d, d.next_up())
    };
    match op {
        Cmp::Eq => Rewrite::Never,
        Cmp::Ne => Rewrite::NotNull,
        Cmp::Lt | Cmp::Le => Rewrite::Compare(Cmp::Le, SqlValue::Real(lo)),
        Cmp::Gt | Cmp::Ge => Rewrite::Compare(Cmp::Ge, SqlValue::Real(hi)),
    }
}

impl Compiler<'_> {
    fn rewrite(&mut self, column: &Arg, r: Rewrite, text: bool) {
        match r {
            Rewrite::Never => self.constant(false),
            Rewrite::NotNull => {
                self.arg(column);
                self.out.sql.push_str(" IS NOT NULL");
            }
            Rewrite::Compare(op, v) => {
                self.arg(column);
                self.out.sql.push(' ');
                self.out.sql.push_str(op.sql());
                self.out.sql.push(' ');
                self.param(v);
                if text {
                    self.out.sql.push_str(self.dialect.binary_collation());
                }
            }
        }
    }

    /// An integer compared with a float, for a dialect that would round the integer: written
    /// so the database compares exact values (false when the types agree and there is
    /// nothing to do).
    fn mixed_numbers(&mut self, op: Cmp, left: &Arg, right: &Arg) -> bool {
        let (Some(l), Some(r)) = (num_type(left), num_type(right)) else {
            return false;
        };
        if l == r {
            return false;
        }
        // As `column op value`, or `integer op float` for two columns.
        let (op, a, b) = match (left, right) {
            (_, Arg::Field(_)) if !matches!(left, Arg::Field(_)) => (op.flip(), right, left),
            (Arg::Field(_), Arg::Field(_)) if l == NumType::Float => (op.flip(), right, left),
            _ => (op, left, right),
        };
        let r = match b {
            Arg::Lit(Literal::Float(v)) => integer_column_with_float(op, *v),
            Arg::Lit(Literal::Integer(k)) => float_column_with_integer(op, *k),
            Arg::Field(_) => {
                self.integer_with_float_column(op, a, b);
                return true;
            }
            // Unreachable: numbers are columns or literals, and one of them is a column.
            _ => return false,
        };
        self.rewrite(a, r, false);
        true
    }

    /// `int op float` for two columns, exactly: where the integer converted to a float differs
    /// from the float, that comparison is the answer (rounding to floats never reverses an
    /// order); where they are equal, the float is integral and at most 2^63, so it either fits
    /// a BIGINT and the integers compare, or it is 2^63, above every integer — NUMERIC keeps
    /// that order. The BIGINT cast is only reached with such a float (it fails out of range);
    /// with a NULL column the `ELSE` is NULL.
    fn integer_with_float_column(&mut self, op: Cmp, int: &Arg, float: &Arg) {
        let op = op.sql();
        self.out.sql.push_str("CASE WHEN CAST(");
        self.arg(int);
        self.out.sql.push_str(" AS DOUBLE PRECISION) <> ");
        self.arg(float);
        self.out.sql.push_str(" THEN CAST(");
        self.arg(int);
        self.out.sql.push_str(" AS DOUBLE PRECISION) ");
        self.out.sql.push_str(op);
        self.out.sql.push(' ');
        self.arg(float);
        self.out.sql.push_str(" WHEN CAST(");
        self.arg(int);
        self.out.sql.push_str(" AS DOUBLE PRECISION) = ");
        self.arg(float);
        self.out.sql.push_str(" AND ");
        self.arg(float);
        self.out
            .sql
            .push_str(" < CAST(9223372036854775808 AS DOUBLE PRECISION) THEN ");
        self.arg(int);
        self.out.sql.push(' ');
        self.out.sql.push_str(op);
        self.out.sql.push_str(" CAST(");
        self.arg(float);
        self.out.sql.push_str(" AS BIGINT) ELSE CAST(");
        self.arg(int);
        self.out.sql.push_str(" AS NUMERIC) ");
        self.out.sql.push_str(op);
        self.out.sql.push_str(" CAST(");
        self.arg(float);
        self.out.sql.push_str(" AS NUMERIC) END");
    }

    /// A text column compared with a value containing NUL, for a dialect whose text cannot
    /// hold one: decided from the value's part before the NUL (false when there is no such
    /// value).
    fn text_with_nul(&mut self, op: Cmp, left: &Arg, right: &Arg) -> bool {
        let (op, column, value) = match (left, right) {
            (Arg::Field(_), Arg::Field(_)) => return false,
            (Arg::Field(_), v) => (op, left, v),
            (v, _) => (op.flip(), right, v),
        };
        let Some(value) = value.text(None, self.vars) else {
            return false;
        };
        let Some(nul) = value.find('\0') else {
            return false;
        };
        // No stored text equals the value, and for a stored text s (without NUL) and the
        // prefix p: s < value exactly when s <= p, s > value exactly when s > p.
        let prefix = SqlValue::Text(value[..nul].to_string());
        let r = match op {
            Cmp::Eq => Rewrite::Never,
            Cmp::Ne => Rewrite::NotNull,
            Cmp::Lt | Cmp::Le => Rewrite::Compare(Cmp::Le, prefix),
            Cmp::Gt | Cmp::Ge => Rewrite::Compare(Cmp::Gt, prefix),
        };
        self.rewrite(column, r, true);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::int_float;

    const OPS: [Cmp; 6] = [Cmp::Eq, Cmp::Ne, Cmp::Lt, Cmp::Le, Cmp::Gt, Cmp::Ge];

    fn ints() -> Vec<i64> {
        let mut v = vec![
            0,
            1,
            -1,
            2,
            -3,
            5,
            i64::MAX,
            i64::MIN,
            i64::MAX - 1,
            i64::MIN + 1,
        ];
        for base in [1i64 << 53, 1 << 62, -(1 << 53), -(1 << 62)] {
            v.extend((-3..=3).map(|d| base + d));
        }
        v
    }

    fn floats() -> Vec<f64> {
        let mut v = vec![
            0.0,
            -0.0,
            0.5,
            -0.5,
            2.5,
            -2.5,
            5.0,
            1e20,
            -1e20,
            -9.3e18,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MAX,
            f64::MIN_POSITIVE,
        ];
        for base in [2f64.powi(53), 2f64.powi(62), 2f64.powi(63)] {
            for x in [base, -base] {
                v.extend([x, x.next_up(), x.next_down()]);
            }
        }
        v
    }

    /// Whether a rewrite holds for a column value, as the database decides it when both sides
    /// have the same type.
    fn holds(r: &Rewrite, column: Num) -> bool {
        match (r, column) {
            (Rewrite::Never, _) => false,
            (Rewrite::NotNull, _) => true,
            (Rewrite::Compare(op, SqlValue::Integer(k)), Num::Int(x)) => op.holds(x.cmp(k)),
            (Rewrite::Compare(op, SqlValue::Real(d)), Num::Float(y)) => {
                y.partial_cmp(d).is_some_and(|o| op.holds(o))
            }
            _ => panic!("a rewrite changed the column's type"),
        }
    }

    #[derive(Clone, Copy, Debug)]
    enum Num {
        Int(i64),
        Float(f64),
    }

    /// The rewrites decide exactly what the evaluator's exact comparison decides.
    #[test]
    fn mixed_number_rewrites_are_exact() {
        for op in OPS {
            for x in ints() {
                for v in floats() {
                    let want = int_float(x, v).is_some_and(|o| op.holds(o));
                    let r = integer_column_with_float(op, v);
                    assert_eq!(holds(&r, Num::Int(x)), want, "{x} {op:?} {v:?}");
                }
            }
            for y in floats() {
                for k in ints() {
                    let want = int_float(k, y).is_some_and(|o| op.holds(o.reverse()));
                    let r = float_column_with_integer(op, k);
                    assert_eq!(holds(&r, Num::Float(y)), want, "{y:?} {op:?} {k}");
                }
            }
        }
        // The ones an index can serve stay comparisons.
        assert!(matches!(
            float_column_with_integer(Cmp::Eq, 5),
            Rewrite::Compare(Cmp::Eq, SqlValue::Real(5.0))
        ));
        assert!(matches!(
            integer_column_with_float(Cmp::Lt, 2.5),
            Rewrite::Compare(Cmp::Le, SqlValue::Integer(2))
        ));
    }
}
