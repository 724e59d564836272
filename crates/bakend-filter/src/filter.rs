//! A filter checked against a [`Schema`]: every name resolved, every comparison well typed,
//! datetime literals normalised, `~` patterns lowercased. Built once, then compiled to SQL or
//! evaluated on records as often as needed.

use std::hash::{Hash, Hasher};

use serde_json::{Map, Value};

use crate::error::{ErrorKind, FilterError};
use crate::lexer::Op;
use crate::like::{LikePattern, fold};
use crate::parse::{Comparison, Expr, Operand, Term, Var, parse, write_quoted};
use crate::schema::{Kind, Schema};
use crate::vars::RequestVars;

/// A checked filter. Cheap to share (`Send + Sync`); independent of the [`Schema`] it was
/// checked against, but only meaningful for records of that collection.
#[derive(Clone, Debug, PartialEq)]
pub struct Filter {
    pub(crate) root: Node,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Node {
    And(Vec<Node>),
    Or(Vec<Node>),
    Test(Test),
}

/// One comparison, in the form both back-ends work from.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Test {
    /// Decided when checking (a comparison with the literal `null` other than `=`/`!=`, or
    /// `=`/`!=` between `null` and a literal).
    Const(bool),
    /// `x = null` (`is_null`) or `x != null`.
    Null { arg: Arg, is_null: bool },
    /// Both sides non-null and `left op right` in `ty`'s order.
    Compare {
        op: Cmp,
        left: Arg,
        right: Arg,
        ty: Ty,
    },
    /// `left ~ pattern` (or `!~` when `negated`); false if either is null.
    Like {
        left: Arg,
        pattern: Pattern,
        negated: bool,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Arg {
    Field(FieldRef),
    Lit(Literal),
    Var(Var),
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct FieldRef {
    pub name: Box<str>,
    pub column: Box<str>,
    pub kind: Kind,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Pattern {
    Lit(LikePattern),
    /// An `@` value, made into a pattern with the request's value.
    Var(Var),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Cmp {
    pub(crate) fn sql(self) -> &'static str {
        match self {
            Cmp::Eq => "=",
            Cmp::Ne => "<>",
            Cmp::Lt => "<",
            Cmp::Le => "<=",
            Cmp::Gt => ">",
            Cmp::Ge => ">=",
        }
    }

    /// The operator with its operands swapped: `a < b` is `b > a`.
    pub(crate) fn flip(self) -> Cmp {
        match self {
            Cmp::Lt => Cmp::Gt,
            Cmp::Le => Cmp::Ge,
            Cmp::Gt => Cmp::Lt,
            Cmp::Ge => Cmp::Le,
            eq_or_ne => eq_or_ne,
        }
    }

    pub(crate) fn holds(self, o: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            Cmp::Eq => o == Equal,
            Cmp::Ne => o != Equal,
            Cmp::Lt => o == Less,
            Cmp::Le => o != Greater,
            Cmp::Gt => o == Greater,
            Cmp::Ge => o != Less,
        }
    }
}

/// How a comparison orders its operands: text (and datetimes, which are canonical text) by
/// bytes — SQLite's BINARY collation —, numbers by value, booleans as booleans.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ty {
    Text,
    Number,
    Bool,
}

/// A literal value of a checked filter, as [`Filter::equalities`] reports it. Numbers are
/// normalised (a float with an integral value in the 64-bit range is an `Integer`) and datetime
/// literals are in the canonical stored form, so [`Literal::from_json`] of a matching record
/// value is equal to it (`Eq` and `Hash` agree, floats by bit pattern).
#[derive(Clone, Debug)]
pub enum Literal {
    Text(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
}

impl PartialEq for Literal {
    fn eq(&self, o: &Self) -> bool {
        match (self, o) {
            (Literal::Text(a), Literal::Text(b)) => a == b,
            (Literal::Integer(a), Literal::Integer(b)) => a == b,
            (Literal::Float(a), Literal::Float(b)) => a.to_bits() == b.to_bits(),
            (Literal::Bool(a), Literal::Bool(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Literal {}

impl Hash for Literal {
    fn hash<H: Hasher>(&self, h: &mut H) {
        std::mem::discriminant(self).hash(h);
        match self {
            Literal::Text(s) => s.hash(h),
            Literal::Integer(i) => i.hash(h),
            Literal::Float(f) => f.to_bits().hash(h),
            Literal::Bool(b) => b.hash(h),
        }
    }
}

impl Literal {
    /// The literal a record's JSON value equals under `=`, normalised like filter literals
    /// (`5.0` is `Integer(5)`); `None` for null, objects and arrays.
    pub fn from_json(v: &Value) -> Option<Literal> {
        match v {
            Value::String(s) => Some(Literal::Text(s.clone())),
            Value::Bool(b) => Some(Literal::Bool(*b)),
            Value::Number(_) => num_of(v).map(Num::literal),
            _ => None,
        }
    }
}

/// A number from a literal or a record.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    /// Integral floats in range become integers (the comparison is exact either way).
    fn literal(self) -> Literal {
        match self {
            Num::Int(i) => Literal::Integer(i),
            Num::Float(f) if f.fract() == 0.0 && (-I64_BOUND..I64_BOUND).contains(&f) => {
                Literal::Integer(f as i64)
            }
            Num::Float(f) => Literal::Float(f),
        }
    }

    /// Exact comparison, as SQLite compares an INTEGER with a REAL.
    fn cmp(self, o: Num) -> Option<std::cmp::Ordering> {
        match (self, o) {
            (Num::Int(a), Num::Int(b)) => Some(a.cmp(&b)),
            (Num::Float(a), Num::Float(b)) => a.partial_cmp(&b),
            (Num::Int(a), Num::Float(b)) => int_float(a, b),
            (Num::Float(a), Num::Int(b)) => int_float(b, a).map(std::cmp::Ordering::reverse),
        }
    }
}

/// 2^63 as a float: the first value above every i64.
pub(crate) const I64_BOUND: f64 = 9_223_372_036_854_775_808.0;

pub(crate) fn int_float(i: i64, f: f64) -> Option<std::cmp::Ordering> {
    use std::cmp::Ordering::*;
    if f.is_nan() {
        return None;
    }
    if f < -I64_BOUND {
        return Some(Greater);
    }
    if f >= I64_BOUND {
        return Some(Less);
    }
    let whole = f.trunc();
    match i.cmp(&(whole as i64)) {
        Equal => 0.0_f64.partial_cmp(&(f - whole)),
        o => Some(o),
    }
}

fn num_of(v: &Value) -> Option<Num> {
    let Value::Number(n) = v else { return None };
    if let Some(i) = n.as_i64() {
        Some(Num::Int(i))
    } else {
        n.as_f64().map(Num::Float)
    }
}

// ---------------------------------------------------------------------------------------------
// Checking

impl Filter {
    /// The filter every record passes (an unfiltered live query).
    pub fn everything() -> Filter {
        Filter {
            root: Node::Test(Test::Const(true)),
        }
    }

    /// Parses and checks `src` against `schema`.
    pub fn new(src: &str, schema: &Schema) -> Result<Filter, FilterError> {
        Filter::check(&parse(src)?, schema)
    }

    /// Checks a parsed expression against `schema`: names resolve, operands fit their operator
    /// and each other, datetime strings are valid. Errors point at the offending name or
    /// literal, and at the operator for type mismatches.
    pub fn check(expr: &Expr, schema: &Schema) -> Result<Filter, FilterError> {
        Ok(Filter {
            root: check_node(expr, schema)?,
        })
    }
}

fn check_node(e: &Expr, schema: &Schema) -> Result<Node, FilterError> {
    Ok(match e {
        Expr::And(items) => Node::And(
            items
                .iter()
                .map(|e| check_node(e, schema))
                .collect::<Result<_, _>>()?,
        ),
        Expr::Or(items) => Node::Or(
            items
                .iter()
                .map(|e| check_node(e, schema))
                .collect::<Result<_, _>>()?,
        ),
        Expr::Compare(c) => Node::Test(check_comparison(c, schema)?),
    })
}

/// An operand's type as far as checking goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sort {
    Text,
    Datetime,
    Number,
    Bool,
    Json,
    /// A string literal: text, or a datetime next to one.
    Str,
    Null,
}

struct Side<'a> {
    operand: &'a Operand,
    sort: Sort,
    /// `None` for the literal `null`.
    arg: Option<Arg>,
}

impl Side<'_> {
    /// How messages name this operand.
    fn describe(&self) -> String {
        match (&self.operand.term, &self.arg) {
            (Term::Field(name), Some(Arg::Field(f))) => {
                format!("{} field {name:?}", f.kind.as_str())
            }
            (Term::String(s), _) => {
                let mut out = String::from("string ");
                let short: String = s.chars().take(40).collect();
                let _ = write_quoted(&mut out, &short);
                if short.len() < s.len() {
                    out.insert(out.len() - 1, '…');
                }
                out
            }
            (Term::Integer(_) | Term::Float(_), _) => format!("number {}", self.operand.term),
            (Term::Bool(b), _) => format!("boolean {b}"),
            (Term::Null, _) => "null".into(),
            (Term::Var(v), _) => v.as_str().into(),
            (Term::Field(name), _) => format!("field {name:?}"),
        }
    }
}

fn resolve<'a>(o: &'a Operand, schema: &Schema) -> Result<Side<'a>, FilterError> {
    let (sort, arg) = match &o.term {
        Term::Field(name) => {
            let f = schema.field(name).ok_or_else(|| {
                FilterError::new(ErrorKind::UnknownField(name.clone()), o.position)
            })?;
            let sort = match f.kind {
                Kind::String | Kind::Text | Kind::Relation | Kind::File => Sort::Text,
                Kind::Integer | Kind::Float => Sort::Number,
                Kind::Boolean => Sort::Bool,
                Kind::Datetime => Sort::Datetime,
                Kind::Json => Sort::Json,
            };
            let field = FieldRef {
                name: f.name.as_str().into(),
                column: f.column.as_str().into(),
                kind: f.kind,
            };
            (sort, Some(Arg::Field(field)))
        }
        Term::String(s) => (Sort::Str, Some(Arg::Lit(Literal::Text(s.clone())))),
        Term::Integer(i) => (Sort::Number, Some(Arg::Lit(Num::Int(*i).literal()))),
        Term::Float(x) => (Sort::Number, Some(Arg::Lit(Num::Float(*x).literal()))),
        Term::Bool(b) => (Sort::Bool, Some(Arg::Lit(Literal::Bool(*b)))),
        Term::Null => (Sort::Null, None),
        Term::Var(Var::Now) => (Sort::Datetime, Some(Arg::Var(Var::Now))),
        Term::Var(v) => (Sort::Text, Some(Arg::Var(*v))),
    };
    Ok(Side {
        operand: o,
        sort,
        arg,
    })
}

fn check_comparison(c: &Comparison, schema: &Schema) -> Result<Test, FilterError> {
    let mut l = resolve(&c.left, schema)?;
    let mut r = resolve(&c.right, schema)?;
    let op = c.op.as_str();
    let mismatch = |message: String| FilterError::new(ErrorKind::Type(message), c.op_position);

    for (side, other) in [(&l, &r), (&r, &l)] {
        if side.sort == Sort::Json && !(matches!(c.op, Op::Eq | Op::Ne) && other.sort == Sort::Null)
        {
            return Err(mismatch(format!(
                "{} can only be compared with null (\"= null\" or \"!= null\")",
                side.describe()
            )));
        }
    }

    if let Op::Like | Op::NotLike = c.op {
        for side in [&l, &r] {
            if matches!(side.sort, Sort::Number | Sort::Bool) {
                return Err(mismatch(format!(
                    "cannot use {op} with {}",
                    side.describe()
                )));
            }
        }
        if let Some(Arg::Field(_)) = r.arg {
            return Err(mismatch(format!(
                "the right side of {op} must be a string or an @ value, not {}",
                r.describe()
            )));
        }
        let (Some(left), Some(right)) = (l.arg, r.arg) else {
            return Ok(Test::Const(false));
        };
        let pattern = match right {
            Arg::Lit(Literal::Text(s)) => Pattern::Lit(LikePattern::new(&s)),
            Arg::Var(v) => Pattern::Var(v),
            // Unreachable: fields, numbers and booleans were refused above.
            Arg::Lit(_) | Arg::Field(_) => return Ok(Test::Const(false)),
        };
        return Ok(Test::Like {
            left,
            pattern,
            negated: c.op == Op::NotLike,
        });
    }

    let cmp = match c.op {
        Op::Eq => Cmp::Eq,
        Op::Ne => Cmp::Ne,
        Op::Gt => Cmp::Gt,
        Op::Ge => Cmp::Ge,
        Op::Lt => Cmp::Lt,
        _ => Cmp::Le,
    };
    let ordering = !matches!(cmp, Cmp::Eq | Cmp::Ne);
    if ordering {
        for side in [&l, &r] {
            if side.sort == Sort::Bool {
                return Err(mismatch(format!(
                    "cannot use {op} with {}",
                    side.describe()
                )));
            }
        }
    }

    match (l.arg.take(), r.arg.take()) {
        (None, None) => return Ok(Test::Const(cmp == Cmp::Eq)),
        (None, Some(arg)) | (Some(arg), None) => {
            return Ok(match arg {
                _ if ordering => Test::Const(false),
                Arg::Lit(_) => Test::Const(cmp == Cmp::Ne),
                arg => Test::Null {
                    arg,
                    is_null: cmp == Cmp::Eq,
                },
            });
        }
        (Some(a), Some(b)) => {
            l.arg = Some(a);
            r.arg = Some(b);
        }
    }

    let ty = match (l.sort, r.sort) {
        (Sort::Text | Sort::Str, Sort::Text | Sort::Str) | (Sort::Datetime, Sort::Datetime) => {
            Ty::Text
        }
        (Sort::Datetime, Sort::Str) => {
            datetime_literal(&mut r)?;
            Ty::Text
        }
        (Sort::Str, Sort::Datetime) => {
            datetime_literal(&mut l)?;
            Ty::Text
        }
        (Sort::Number, Sort::Number) => Ty::Number,
        (Sort::Bool, Sort::Bool) => Ty::Bool,
        _ => {
            return Err(mismatch(format!(
                "cannot compare {} with {}",
                l.describe(),
                r.describe()
            )));
        }
    };
    let (Some(left), Some(right)) = (l.arg, r.arg) else {
        // Unreachable: both were put back above.
        return Ok(Test::Const(false));
    };
    Ok(Test::Compare {
        op: cmp,
        left,
        right,
        ty,
    })
}

/// A string literal next to a datetime becomes the canonical form a stored value has.
fn datetime_literal(side: &mut Side<'_>) -> Result<(), FilterError> {
    if let Some(Arg::Lit(Literal::Text(s))) = &mut side.arg {
        *s = bakend_core::time::normalize(s).ok_or_else(|| {
            FilterError::new(ErrorKind::InvalidDatetime(s.clone()), side.operand.position)
        })?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Evaluation

type Record = Map<String, Value>;

impl Filter {
    /// Whether `record` — a record's JSON wire shape: an object with `id`, `createdAt`,
    /// `updatedAt` and the fields, booleans as JSON booleans — passes the filter for a request
    /// with `vars`. A missing key counts as null; a value of the wrong type (which the store
    /// never produces) fails every comparison except `!= null`. Selects exactly the records
    /// the compiled SQL selects.
    pub fn matches(&self, record: &Value, vars: &RequestVars) -> bool {
        self.root.eval(record.as_object(), vars)
    }

    /// The conjuncts `field = literal` that must all hold for the filter to hold: the filter
    /// itself if it is one, or the top-level `&&` items that are (either operand order, never
    /// `null`). For indexing subscriptions: a record whose value for the field is not
    /// [`Literal::from_json`]-equal to the literal cannot match. Fields are reported by their
    /// JSON names.
    pub fn equalities(&self) -> Vec<(&str, &Literal)> {
        let items = match &self.root {
            Node::And(items) => items.as_slice(),
            root => std::slice::from_ref(root),
        };
        items
            .iter()
            .filter_map(|n| match n {
                Node::Test(Test::Compare {
                    op: Cmp::Eq,
                    left,
                    right,
                    ..
                }) => match (left, right) {
                    (Arg::Field(f), Arg::Lit(l)) | (Arg::Lit(l), Arg::Field(f)) => {
                        Some((&*f.name, l))
                    }
                    _ => None,
                },
                _ => None,
            })
            .collect()
    }

    /// Every field the filter reads, by JSON name, once each, in order of appearance.
    pub fn fields(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.root.visit(&mut |t| {
            let (a, b) = match t {
                Test::Const(_) => (None, None),
                Test::Null { arg, .. } | Test::Like { left: arg, .. } => (Some(arg), None),
                Test::Compare { left, right, .. } => (Some(left), Some(right)),
            };
            for arg in [a, b].into_iter().flatten() {
                if let Arg::Field(f) = arg
                    && !out.contains(&&*f.name)
                {
                    out.push(&*f.name);
                }
            }
        });
        out
    }
}

impl Node {
    fn eval(&self, rec: Option<&Record>, vars: &RequestVars) -> bool {
        match self {
            Node::And(items) => items.iter().all(|n| n.eval(rec, vars)),
            Node::Or(items) => items.iter().any(|n| n.eval(rec, vars)),
            Node::Test(t) => t.eval(rec, vars),
        }
    }

    pub(crate) fn visit<'a>(&'a self, f: &mut impl FnMut(&'a Test)) {
        match self {
            Node::And(items) | Node::Or(items) => items.iter().for_each(|n| n.visit(f)),
            Node::Test(t) => f(t),
        }
    }
}

impl Test {
    /// The test's value for a record (`None`: a test that reads no field, decided from the
    /// literals and `vars` alone).
    pub(crate) fn eval(&self, rec: Option<&Record>, vars: &RequestVars) -> bool {
        match self {
            Test::Const(b) => *b,
            Test::Null { arg, is_null } => arg.is_null(rec, vars) == *is_null,
            Test::Compare {
                op,
                left,
                right,
                ty,
            } => {
                let order = match ty {
                    Ty::Text => match (left.text(rec, vars), right.text(rec, vars)) {
                        (Some(a), Some(b)) => Some(a.cmp(b)),
                        _ => None,
                    },
                    Ty::Number => match (left.num(rec), right.num(rec)) {
                        (Some(a), Some(b)) => a.cmp(b),
                        _ => None,
                    },
                    Ty::Bool => match (left.boolean(rec), right.boolean(rec)) {
                        (Some(a), Some(b)) => Some(a.cmp(&b)),
                        _ => None,
                    },
                };
                order.is_some_and(|o| op.holds(o))
            }
            Test::Like {
                left,
                pattern,
                negated,
            } => {
                let Some(value) = left.text(rec, vars) else {
                    return false;
                };
                let value = fold(value);
                let matched = match pattern {
                    Pattern::Lit(p) => p.matches(&value),
                    Pattern::Var(v) => match vars.get(*v) {
                        Some(s) => LikePattern::new(s).matches(&value),
                        None => return false,
                    },
                };
                matched != *negated
            }
        }
    }

    pub(crate) fn reads_field(&self) -> bool {
        let field = |a: &Arg| matches!(a, Arg::Field(_));
        match self {
            Test::Const(_) => false,
            Test::Null { arg, .. } | Test::Like { left: arg, .. } => field(arg),
            Test::Compare { left, right, .. } => field(left) || field(right),
        }
    }
}

impl Arg {
    fn json<'a>(f: &FieldRef, rec: Option<&'a Record>) -> Option<&'a Value> {
        rec?.get(&*f.name)
    }

    pub(crate) fn is_null(&self, rec: Option<&Record>, vars: &RequestVars) -> bool {
        match self {
            Arg::Field(f) => Arg::json(f, rec).is_none_or(Value::is_null),
            Arg::Lit(_) => false,
            Arg::Var(v) => vars.get(*v).is_none(),
        }
    }

    pub(crate) fn text<'a>(
        &'a self,
        rec: Option<&'a Record>,
        vars: &'a RequestVars,
    ) -> Option<&'a str> {
        match self {
            Arg::Field(f) => Arg::json(f, rec)?.as_str(),
            Arg::Lit(Literal::Text(s)) => Some(s),
            Arg::Lit(_) => None,
            Arg::Var(v) => vars.get(*v),
        }
    }

    fn num(&self, rec: Option<&Record>) -> Option<Num> {
        match self {
            Arg::Field(f) => num_of(Arg::json(f, rec)?),
            Arg::Lit(Literal::Integer(i)) => Some(Num::Int(*i)),
            Arg::Lit(Literal::Float(x)) => Some(Num::Float(*x)),
            _ => None,
        }
    }

    fn boolean(&self, rec: Option<&Record>) -> Option<bool> {
        match self {
            Arg::Field(f) => Arg::json(f, rec)?.as_bool(),
            Arg::Lit(Literal::Bool(b)) => Some(*b),
            _ => None,
        }
    }
}
