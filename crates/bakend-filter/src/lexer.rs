//! Tokens, with their 1-based character positions.

use crate::error::{ErrorKind, FilterError};

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Tok<'a> {
    /// A name: a field, or `true`/`false`/`null`.
    Ident(&'a str),
    /// `@…`, including the `@`.
    Var(&'a str),
    /// A quoted string, escapes resolved.
    Str(String),
    /// The text of a number (validated, not yet converted).
    Num(&'a str),
    Op(Op),
    And,
    Or,
    LParen,
    RParen,
    End,
}

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `~`: contains / LIKE, case-insensitive.
    Like,
    /// `!~`
    NotLike,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Like => "~",
            Op::NotLike => "!~",
        }
    }
}

impl Tok<'_> {
    /// How an error message names this token.
    pub(crate) fn describe(&self) -> String {
        match self {
            Tok::Ident(s) | Tok::Var(s) => format!("{s:?}"),
            Tok::Str(_) => "a string".into(),
            Tok::Num(_) => "a number".into(),
            Tok::Op(op) => format!("{:?}", op.as_str()),
            Tok::And => "\"&&\"".into(),
            Tok::Or => "\"||\"".into(),
            Tok::LParen => "\"(\"".into(),
            Tok::RParen => "\")\"".into(),
            Tok::End => "end of filter".into(),
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Token<'a> {
    pub tok: Tok<'a>,
    /// 1-based character position of the token's first character.
    pub pos: usize,
}

/// Splits `src` into tokens, ending with [`Tok::End`] at one past the last character.
pub(crate) fn tokenize(src: &str) -> Result<Vec<Token<'_>>, FilterError> {
    let mut lx = Lexer {
        src,
        chars: src.char_indices().peekable(),
        pos: 0,
    };
    let mut out = Vec::new();
    loop {
        let token = lx.next_token()?;
        let end = token.tok == Tok::End;
        out.push(token);
        if end {
            return Ok(out);
        }
    }
}

struct Lexer<'a> {
    src: &'a str,
    chars: std::iter::Peekable<std::str::CharIndices<'a>>,
    /// Characters consumed so far (so the next one is at `pos + 1`).
    pos: usize,
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

impl<'a> Lexer<'a> {
    fn bump(&mut self) -> Option<(usize, char)> {
        let next = self.chars.next();
        if next.is_some() {
            self.pos += 1;
        }
        next
    }

    fn peek(&mut self) -> Option<char> {
        self.chars.peek().map(|&(_, c)| c)
    }

    /// Byte offset of the next character (the input's length at the end).
    fn offset(&mut self) -> usize {
        self.chars.peek().map_or(self.src.len(), |&(i, _)| i)
    }

    /// Consumes characters while `f` holds; returns the byte offset after them.
    fn take_while(&mut self, f: impl Fn(char) -> bool) -> usize {
        while self.peek().is_some_and(&f) {
            self.bump();
        }
        self.offset()
    }

    fn next_token(&mut self) -> Result<Token<'a>, FilterError> {
        self.take_while(char::is_whitespace);
        let pos = self.pos + 1;
        let Some((start, c)) = self.bump() else {
            return Ok(Token { tok: Tok::End, pos });
        };
        let unexpected = |c: char| FilterError::new(ErrorKind::UnexpectedChar(c.into()), pos);
        let tok = match c {
            '(' => Tok::LParen,
            ')' => Tok::RParen,
            '=' => Tok::Op(Op::Eq),
            '~' => Tok::Op(Op::Like),
            '>' | '<' => {
                let or_equal = self.peek() == Some('=');
                if or_equal {
                    self.bump();
                }
                Tok::Op(match (c, or_equal) {
                    ('>', false) => Op::Gt,
                    ('>', true) => Op::Ge,
                    ('<', false) => Op::Lt,
                    _ => Op::Le,
                })
            }
            '!' => match self.peek() {
                Some('=') => {
                    self.bump();
                    Tok::Op(Op::Ne)
                }
                Some('~') => {
                    self.bump();
                    Tok::Op(Op::NotLike)
                }
                _ => return Err(unexpected(c)),
            },
            '&' | '|' => {
                if self.peek() != Some(c) {
                    return Err(unexpected(c));
                }
                self.bump();
                if c == '&' { Tok::And } else { Tok::Or }
            }
            '\'' | '"' => Tok::Str(self.string(c, pos)?),
            '@' => {
                let end = self.take_while(|c| is_ident_char(c) || c == '.');
                Tok::Var(&self.src[start..end])
            }
            '-' if self.peek().is_some_and(|c| c.is_ascii_digit()) => self.number(start),
            c if c.is_ascii_digit() => self.number(start),
            c if is_ident_start(c) => {
                let end = self.take_while(is_ident_char);
                Tok::Ident(&self.src[start..end])
            }
            c => return Err(unexpected(c)),
        };
        Ok(Token { tok, pos })
    }

    /// A number runs as far as characters that could continue a name or a number, so `12ab`
    /// and `1.2.3` are one invalid number rather than two tokens.
    fn number(&mut self, start: usize) -> Tok<'a> {
        let end = self.take_while(|c| is_ident_char(c) || c == '.');
        Tok::Num(&self.src[start..end])
    }

    /// The rest of a string opened by `quote` at `pos`. `\` followed by the quote or by `\`
    /// stands for that character; any other `\` is itself.
    fn string(&mut self, quote: char, pos: usize) -> Result<String, FilterError> {
        let mut out = String::new();
        loop {
            match self.bump() {
                None => return Err(FilterError::new(ErrorKind::UnterminatedString, pos)),
                Some((_, c)) if c == quote => return Ok(out),
                Some((_, '\\')) => match self.peek() {
                    Some(n) if n == quote || n == '\\' => {
                        self.bump();
                        out.push(n);
                    }
                    _ => out.push('\\'),
                },
                Some((_, c)) => out.push(c),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<(Tok<'_>, usize)> {
        tokenize(s)
            .unwrap()
            .into_iter()
            .map(|t| (t.tok, t.pos))
            .collect()
    }

    #[test]
    fn operators_and_positions() {
        assert_eq!(
            toks("a>=1&&b!~'x'||(c<=-2.5)"),
            vec![
                (Tok::Ident("a"), 1),
                (Tok::Op(Op::Ge), 2),
                (Tok::Num("1"), 4),
                (Tok::And, 5),
                (Tok::Ident("b"), 7),
                (Tok::Op(Op::NotLike), 8),
                (Tok::Str("x".into()), 10),
                (Tok::Or, 13),
                (Tok::LParen, 15),
                (Tok::Ident("c"), 16),
                (Tok::Op(Op::Le), 17),
                (Tok::Num("-2.5"), 19),
                (Tok::RParen, 23),
                (Tok::End, 24),
            ]
        );
        let all: Vec<_> = toks("= != > >= < <= ~ !~")
            .into_iter()
            .filter_map(|(t, _)| match t {
                Tok::Op(op) => Some(op),
                _ => None,
            })
            .collect();
        assert_eq!(
            all,
            [
                Op::Eq,
                Op::Ne,
                Op::Gt,
                Op::Ge,
                Op::Lt,
                Op::Le,
                Op::Like,
                Op::NotLike
            ]
        );
    }

    #[test]
    fn positions_count_characters_not_bytes() {
        let t = toks("'ßé' = x");
        assert_eq!(t[1], (Tok::Op(Op::Eq), 6));
        assert_eq!(t[2], (Tok::Ident("x"), 8));
        assert_eq!(t[3], (Tok::End, 9));
    }

    #[test]
    fn string_escapes() {
        for (src, want) in [
            (r#"'it\'s'"#, "it's"),
            (r#""say \"hi\"""#, r#"say "hi""#),
            (r#"'a\"b'"#, r#"a\"b"#),
            (r#""a\'b""#, r"a\'b"),
            (r"'back\\slash'", r"back\slash"),
            (r"'lone\ backslash'", r"lone\ backslash"),
            (r"'tail\\'", r"tail\"),
            ("''", ""),
            ("'日本'", "日本"),
        ] {
            assert_eq!(toks(src)[0].0, Tok::Str(want.into()), "{src}");
        }
    }

    #[test]
    fn lexical_errors() {
        for (src, msg) in [
            ("a & b", r#"filter: unexpected character "&" at 3"#),
            ("a | b", r#"filter: unexpected character "|" at 3"#),
            ("a ! b", r#"filter: unexpected character "!" at 3"#),
            ("a = #", r##"filter: unexpected character "#" at 5"##),
            ("é = 1", r#"filter: unexpected character "é" at 1"#),
            ("a = - 1", r#"filter: unexpected character "-" at 5"#),
            ("x = 'abc", "filter: unterminated string at 5"),
            (r#"y = "abc\""#, "filter: unterminated string at 5"),
            (r"x = 'abc\'", "filter: unterminated string at 5"),
        ] {
            assert_eq!(tokenize(src).unwrap_err().to_string(), msg, "{src}");
        }
    }
}
