//! The syntax tree and the parser: text → [`Expr`], with positions, before any schema is known.
//!
//! ```text
//! expr       := and ( "||" and )*
//! and        := primary ( "&&" primary )*
//! primary    := "(" expr ")" | comparison
//! comparison := operand op operand
//! operand    := name | string | number | true | false | null | @variable
//! op         := "=" | "!=" | ">" | ">=" | "<" | "<=" | "~" | "!~"
//! ```
//!
//! `&&` and `||` lists are kept flat (`a && (b && c)` is one list of three), so the tree is only
//! as deep as the parentheses that change meaning, and that is at most [`MAX_DEPTH`].

use std::fmt;

use crate::error::{ErrorKind, FilterError};
use crate::lexer::{Op, Tok, Token, tokenize};

/// Longest filter accepted, in bytes.
pub const MAX_LENGTH: usize = 2048;
/// Deepest nesting of parentheses accepted.
pub const MAX_DEPTH: usize = 32;

/// A parsed filter, not yet checked against a collection. Its `Display` is a canonical form
/// that parses back to the same expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// Two or more conditions that must all hold; none of them is itself an `And`.
    And(Vec<Expr>),
    /// Two or more conditions of which one must hold; none of them is itself an `Or`.
    Or(Vec<Expr>),
    Compare(Comparison),
}

/// `left op right`.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    pub left: Operand,
    pub op: Op,
    /// 1-based character position of the operator (where type errors point).
    pub op_position: usize,
    pub right: Operand,
}

/// One side of a comparison and where it starts.
#[derive(Clone, Debug, PartialEq)]
pub struct Operand {
    pub term: Term,
    /// 1-based character position.
    pub position: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Term {
    /// A name: one of the collection's fields, or `id`, `createdAt`, `updatedAt`.
    Field(String),
    String(String),
    Integer(i64),
    /// A number with a decimal point, or an integer too large for 64 bits.
    Float(f64),
    Bool(bool),
    Null,
    Var(Var),
}

/// The `@` values, supplied per request (see [`crate::RequestVars`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Var {
    /// `@request.auth.id`
    AuthId,
    /// `@request.auth.role`
    AuthRole,
    /// `@request.auth.email`
    AuthEmail,
    /// `@now`
    Now,
}

impl Var {
    pub const ALL: [Var; 4] = [Var::AuthId, Var::AuthRole, Var::AuthEmail, Var::Now];

    pub fn as_str(self) -> &'static str {
        match self {
            Var::AuthId => "@request.auth.id",
            Var::AuthRole => "@request.auth.role",
            Var::AuthEmail => "@request.auth.email",
            Var::Now => "@now",
        }
    }

    pub fn parse(s: &str) -> Option<Var> {
        Var::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// Parses a filter. Fails on input over [`MAX_LENGTH`] bytes, parentheses deeper than
/// [`MAX_DEPTH`], unknown `@` names and any syntax error; never panics, and recursion is bounded
/// by the depth limit.
pub fn parse(src: &str) -> Result<Expr, FilterError> {
    if src.len() > MAX_LENGTH {
        // Point at the first character that does not fit.
        let position = src
            .char_indices()
            .take_while(|&(i, c)| i + c.len_utf8() <= MAX_LENGTH)
            .count()
            + 1;
        return Err(FilterError::new(
            ErrorKind::TooLong { limit: MAX_LENGTH },
            position,
        ));
    }
    let tokens = tokenize(src)?;
    let mut p = Parser { tokens, next: 0 };
    if p.peek().tok == Tok::End {
        return Err(FilterError::new(ErrorKind::Empty, 1));
    }
    let expr = p.or(0)?;
    let t = p.peek();
    if t.tok != Tok::End {
        return Err(expected("\"&&\" or \"||\"", t));
    }
    Ok(expr)
}

fn expected(expected: &'static str, found: &Token<'_>) -> FilterError {
    FilterError::new(
        ErrorKind::Expected {
            expected,
            found: found.tok.describe(),
        },
        found.pos,
    )
}

struct Parser<'a> {
    /// Always ends with `Tok::End`.
    tokens: Vec<Token<'a>>,
    next: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> &Token<'a> {
        let last = self.tokens.len().saturating_sub(1);
        &self.tokens[self.next.min(last)]
    }

    fn bump(&mut self) -> Token<'a> {
        let t = self.peek().clone();
        if t.tok != Tok::End {
            self.next += 1;
        }
        t
    }

    fn or(&mut self, depth: usize) -> Result<Expr, FilterError> {
        let mut items = Vec::new();
        push_flat(&mut items, self.and(depth)?, false);
        while self.peek().tok == Tok::Or {
            self.bump();
            push_flat(&mut items, self.and(depth)?, false);
        }
        Ok(finish(items, Expr::Or))
    }

    fn and(&mut self, depth: usize) -> Result<Expr, FilterError> {
        let mut items = Vec::new();
        push_flat(&mut items, self.primary(depth)?, true);
        while self.peek().tok == Tok::And {
            self.bump();
            push_flat(&mut items, self.primary(depth)?, true);
        }
        Ok(finish(items, Expr::And))
    }

    fn primary(&mut self, depth: usize) -> Result<Expr, FilterError> {
        if self.peek().tok != Tok::LParen {
            return self.comparison();
        }
        let open = self.bump();
        if depth >= MAX_DEPTH {
            return Err(FilterError::new(
                ErrorKind::TooDeep { limit: MAX_DEPTH },
                open.pos,
            ));
        }
        let inner = self.or(depth + 1)?;
        let close = self.bump();
        if close.tok != Tok::RParen {
            return Err(expected("\"&&\", \"||\" or \")\"", &close));
        }
        Ok(inner)
    }

    fn comparison(&mut self) -> Result<Expr, FilterError> {
        let left = self.operand()?;
        let t = self.bump();
        let Tok::Op(op) = t.tok else {
            return Err(expected("a comparison operator", &t));
        };
        let right = self.operand()?;
        Ok(Expr::Compare(Comparison {
            left,
            op,
            op_position: t.pos,
            right,
        }))
    }

    fn operand(&mut self) -> Result<Operand, FilterError> {
        let t = self.bump();
        let term = match t.tok {
            Tok::Ident("true") => Term::Bool(true),
            Tok::Ident("false") => Term::Bool(false),
            Tok::Ident("null") => Term::Null,
            Tok::Ident(name) => Term::Field(name.to_string()),
            Tok::Str(s) => Term::String(s),
            Tok::Num(text) => number(text).ok_or_else(|| {
                FilterError::new(ErrorKind::InvalidNumber(text.to_string()), t.pos)
            })?,
            Tok::Var(name) => Term::Var(Var::parse(name).ok_or_else(|| {
                FilterError::new(ErrorKind::UnknownVariable(name.to_string()), t.pos)
            })?),
            _ => return Err(expected("an operand", &t)),
        };
        Ok(Operand {
            term,
            position: t.pos,
        })
    }
}

/// Adds `e` to an `&&` (`and`) or `||` list, splicing in a list of the same kind.
fn push_flat(items: &mut Vec<Expr>, e: Expr, and: bool) {
    match e {
        Expr::And(inner) if and => items.extend(inner),
        Expr::Or(inner) if !and => items.extend(inner),
        e => items.push(e),
    }
}

fn finish(mut items: Vec<Expr>, list: fn(Vec<Expr>) -> Expr) -> Expr {
    match items.pop() {
        Some(only) if items.is_empty() => only,
        Some(last) => {
            items.push(last);
            list(items)
        }
        // Unreachable: every list starts with one item.
        None => list(items),
    }
}

/// `-?digits` (64-bit, or a float when larger) or `-?digits.digits`.
fn number(text: &str) -> Option<Term> {
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = match unsigned.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (unsigned, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || !fraction.is_none_or(digits) {
        return None;
    }
    if fraction.is_none()
        && let Ok(i) = text.parse::<i64>()
    {
        return Some(Term::Integer(i));
    }
    let f = text.parse::<f64>().ok()?;
    f.is_finite().then_some(Term::Float(f))
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Or(items) => {
                for (i, e) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" || ")?;
                    }
                    write!(f, "{e}")?;
                }
                Ok(())
            }
            Expr::And(items) => {
                for (i, e) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" && ")?;
                    }
                    match e {
                        Expr::Or(_) => write!(f, "({e})")?,
                        e => write!(f, "{e}")?,
                    }
                }
                Ok(())
            }
            Expr::Compare(c) => write!(f, "{} {} {}", c.left.term, c.op.as_str(), c.right.term),
        }
    }
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Term::Field(name) => f.write_str(name),
            Term::String(s) => write_quoted(f, s),
            Term::Integer(i) => write!(f, "{i}"),
            Term::Float(x) => {
                // `Display` for f64 never uses an exponent and is the shortest that reads back
                // exactly; keep a decimal point so it reads back as a float.
                let s = x.to_string();
                f.write_str(&s)?;
                if s.contains('.') {
                    Ok(())
                } else {
                    f.write_str(".0")
                }
            }
            Term::Bool(b) => write!(f, "{b}"),
            Term::Null => f.write_str("null"),
            Term::Var(v) => f.write_str(v.as_str()),
        }
    }
}

/// `'…'` with `\` and `'` escaped, as the lexer reads them.
pub(crate) fn write_quoted(f: &mut impl fmt::Write, s: &str) -> fmt::Result {
    f.write_char('\'')?;
    for c in s.chars() {
        if c == '\'' || c == '\\' {
            f.write_char('\\')?;
        }
        f.write_char(c)?;
    }
    f.write_char('\'')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tree without positions, as its canonical text.
    fn p(src: &str) -> String {
        parse(src).unwrap().to_string()
    }

    fn err(src: &str) -> String {
        parse(src).unwrap_err().to_string()
    }

    #[test]
    fn every_operator() {
        for op in [
            Op::Eq,
            Op::Ne,
            Op::Gt,
            Op::Ge,
            Op::Lt,
            Op::Le,
            Op::Like,
            Op::NotLike,
        ] {
            let src = format!("views{}10", op.as_str());
            let Expr::Compare(c) = parse(&src).unwrap() else {
                panic!("{src}")
            };
            assert_eq!(c.op, op);
            assert_eq!(c.left.term, Term::Field("views".into()));
            assert_eq!(c.right.term, Term::Integer(10));
            assert_eq!((c.left.position, c.op_position), (1, 6));
        }
    }

    #[test]
    fn operands() {
        let e = parse("a = 'x' || b = \"y\" || c = 1 || d = -2 || e = 1.5 || f = -0.25 || g = true || h = false || i = null || @now > @request.auth.id || @request.auth.role = @request.auth.email").unwrap();
        let Expr::Or(items) = e else { panic!() };
        let rights: Vec<Term> = items
            .iter()
            .map(|e| match e {
                Expr::Compare(c) => c.right.term.clone(),
                _ => panic!(),
            })
            .collect();
        assert_eq!(
            rights,
            vec![
                Term::String("x".into()),
                Term::String("y".into()),
                Term::Integer(1),
                Term::Integer(-2),
                Term::Float(1.5),
                Term::Float(-0.25),
                Term::Bool(true),
                Term::Bool(false),
                Term::Null,
                Term::Var(Var::AuthId),
                Term::Var(Var::AuthEmail),
            ]
        );
        let terms = |src: &str| match parse(src).unwrap() {
            Expr::Compare(c) => (c.left.term, c.right.term),
            e => panic!("{e:?}"),
        };
        assert_eq!(
            terms("9223372036854775807 = -9223372036854775808"),
            (Term::Integer(i64::MAX), Term::Integer(i64::MIN))
        );
        assert_eq!(
            terms("x = 9223372036854775808"),
            (
                Term::Field("x".into()),
                Term::Float(9_223_372_036_854_775_808.0)
            )
        );
    }

    #[test]
    fn and_binds_tighter_than_or() {
        assert_eq!(p("a=1 || b=2 && c=3"), "a = 1 || b = 2 && c = 3");
        let Expr::Or(items) = parse("a=1 || b=2 && c=3").unwrap() else {
            panic!()
        };
        assert!(matches!(&items[1], Expr::And(v) if v.len() == 2));
        let Expr::Or(items) = parse("a=1 && b=2 || c=3").unwrap() else {
            panic!()
        };
        assert!(matches!(&items[0], Expr::And(v) if v.len() == 2));
        assert!(matches!(
            parse("(a=1 || b=2) && c=3").unwrap(),
            Expr::And(_)
        ));
        assert_eq!(p("(a=1 || b=2) && c=3"), "(a = 1 || b = 2) && c = 3");
    }

    #[test]
    fn lists_are_flat_and_redundant_parentheses_vanish() {
        assert_eq!(p("((a = 1))"), "a = 1");
        assert_eq!(p("a=1 && (b=2 && (c=3))"), "a = 1 && b = 2 && c = 3");
        assert_eq!(p("(a=1 || b=2) || c=3"), "a = 1 || b = 2 || c = 3");
        let Expr::And(items) = parse("a=1 && (b=2 && c=3) && d=4").unwrap() else {
            panic!()
        };
        assert_eq!(items.len(), 4);
    }

    #[test]
    fn printing_round_trips() {
        for src in [
            r#"a = 'it\'s' && b != "back\\slash" || c ~ '50%'"#,
            "x = 1.0 || y = -0.5 || z = 100000000000000000000.0",
            "(a = 1 || b = 2) && (c = 3 || d = null) && @now >= createdAt",
        ] {
            let once = p(src);
            assert_eq!(p(&once), once, "{src}");
            assert_eq!(
                parse(&once).unwrap().to_string(),
                parse(src).unwrap().to_string()
            );
        }
        assert_eq!(p("x = 5.0"), "x = 5.0");
        assert_eq!(p("x='a\"b'"), r#"x = 'a"b'"#);
    }

    #[test]
    fn syntax_errors_point_at_the_token() {
        for (src, msg) in [
            ("", "filter: empty filter at 1"),
            ("   ", "filter: empty filter at 1"),
            (
                "a = ",
                "filter: expected an operand, found end of filter at 5",
            ),
            (
                "a",
                "filter: expected a comparison operator, found end of filter at 2",
            ),
            (
                "a b",
                r#"filter: expected a comparison operator, found "b" at 3"#,
            ),
            ("a = = 1", r#"filter: expected an operand, found "=" at 5"#),
            (
                "a = 1 b = 2",
                r#"filter: expected "&&" or "||", found "b" at 7"#,
            ),
            ("a = 1)", r#"filter: expected "&&" or "||", found ")" at 6"#),
            (
                "(a = 1",
                r#"filter: expected "&&", "||" or ")", found end of filter at 7"#,
            ),
            (
                "(a = 1 'x'",
                r#"filter: expected "&&", "||" or ")", found a string at 8"#,
            ),
            (
                "a = 1 &&",
                "filter: expected an operand, found end of filter at 9",
            ),
            (
                "&& a = 1",
                r#"filter: expected an operand, found "&&" at 1"#,
            ),
            ("() ", r#"filter: expected an operand, found ")" at 2"#),
            (
                "a = 1 || || b = 2",
                r#"filter: expected an operand, found "||" at 10"#,
            ),
            (
                "'x' 'y'",
                "filter: expected a comparison operator, found a string at 5",
            ),
            ("a = 1.2.3", r#"filter: invalid number "1.2.3" at 5"#),
            ("a = 12ab", r#"filter: invalid number "12ab" at 5"#),
            ("a = 1.", r#"filter: invalid number "1." at 5"#),
            ("a = -1.x", r#"filter: invalid number "-1.x" at 5"#),
            (
                "a = @request.data.x",
                r#"filter: unknown variable "@request.data.x" at 5"#,
            ),
            ("@ = 1", r#"filter: unknown variable "@" at 1"#),
            ("a.b = 1", r#"filter: unexpected character "." at 2"#),
            ("a == 1", r#"filter: expected an operand, found "=" at 4"#),
            ("a = 1 & b = 2", r#"filter: unexpected character "&" at 7"#),
        ] {
            assert_eq!(err(src), msg, "{src:?}");
        }
        let too_big = format!("x = {}", "9".repeat(400));
        assert_eq!(
            err(&too_big),
            format!("filter: invalid number \"{}\" at 5", "9".repeat(400))
        );
    }

    #[test]
    fn length_limit() {
        let fits = format!("a = '{}'", "x".repeat(MAX_LENGTH - 6));
        assert_eq!(fits.len(), MAX_LENGTH);
        assert!(parse(&fits).is_ok());
        let over = format!("a = '{}'", "x".repeat(MAX_LENGTH - 5));
        assert_eq!(err(&over), "filter: longer than 2048 bytes at 2049");
        // Positions count characters: 'é' is two bytes.
        let wide = format!("a = '{}'", "é".repeat(1100));
        let e = parse(&wide).unwrap_err();
        assert_eq!(e.kind(), &ErrorKind::TooLong { limit: 2048 });
        assert_eq!(e.position(), 5 + 1021 + 1);
    }

    #[test]
    fn depth_limit() {
        let nest = |n: usize| format!("{}a = 1{}", "(".repeat(n), ")".repeat(n));
        assert!(parse(&nest(MAX_DEPTH)).is_ok());
        assert_eq!(
            err(&nest(MAX_DEPTH + 1)),
            "filter: parentheses nested deeper than 32 at 33"
        );
        // Alternating lists nest too.
        let mut s = "a = 1".to_string();
        for i in 0..MAX_DEPTH {
            s = if i % 2 == 0 {
                format!("b = 2 || ({s})")
            } else {
                format!("c = 3 && ({s})")
            };
        }
        assert!(parse(&s).is_ok());
        assert!(parse(&format!("d = 4 && ({s})")).is_err());
        // Long flat lists are no deeper than one.
        let long = vec!["a=1"; 400].join("&&");
        assert!(matches!(parse(&long).unwrap(), Expr::And(v) if v.len() == 400));
        // Deep unbalanced input fails at the limit rather than recursing further.
        assert_eq!(
            err(&"(".repeat(2000)),
            "filter: parentheses nested deeper than 32 at 33"
        );
    }
}
