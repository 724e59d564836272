//! `~` patterns: lowercase both sides, `%` is the only wildcard, no `%` means "contains".

use std::borrow::Cow;

/// What `~` compares: `str::to_lowercase` of the text (the SQL side calls the same function
/// through `bak_lower`), cut at the first NUL as SQLite's LIKE does. Borrows when there is
/// nothing to change.
pub(crate) fn fold(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| !b.is_ascii() || b.is_ascii_uppercase()) {
        let mut lower = s.to_lowercase();
        if let Some(nul) = lower.find('\0') {
            lower.truncate(nul);
        }
        Cow::Owned(lower)
    } else {
        Cow::Borrowed(s.split('\0').next().unwrap_or(""))
    }
}

/// A `~` pattern, lowercased once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LikePattern {
    /// The lowercased pattern, `%` included.
    folded: String,
    /// Whether it has a `%`: then it is anchored at both ends like SQL's LIKE; without one it
    /// matches anywhere ("contains").
    anchored: bool,
}

impl LikePattern {
    pub(crate) fn new(raw: &str) -> LikePattern {
        let folded = fold(raw).into_owned();
        LikePattern {
            anchored: folded.contains('%'),
            folded,
        }
    }

    /// Whether the already folded `value` matches.
    pub(crate) fn matches(&self, value: &str) -> bool {
        if !self.anchored {
            return value.contains(self.folded.as_str());
        }
        let mut parts = self.folded.split('%');
        let first = parts.next().unwrap_or("");
        let Some(rest) = value.strip_prefix(first) else {
            return false;
        };
        let last = parts.next_back().unwrap_or("");
        let Some(mut rest) = rest.strip_suffix(last) else {
            return false;
        };
        // Whatever lies between is matched leftmost-first, which is exact for `%`-only
        // patterns: an earlier match never leaves less room for the parts after it.
        for part in parts {
            match rest.find(part) {
                Some(i) => rest = &rest[i + part.len()..],
                None => return false,
            }
        }
        true
    }

    /// The SQL LIKE pattern with `escape` as the escape character: `_` and the escape character
    /// are escaped, `%` kept; a pattern without `%` is wrapped in `%…%`.
    pub(crate) fn sql(&self, escape: char) -> String {
        let mut out = String::with_capacity(self.folded.len() + 2);
        if !self.anchored {
            out.push('%');
        }
        for c in self.folded.chars() {
            if c == '_' || c == escape {
                out.push(escape);
            }
            out.push(c);
        }
        if !self.anchored {
            out.push('%');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, value: &str) -> bool {
        LikePattern::new(pattern).matches(&fold(value))
    }

    #[test]
    fn contains_without_wildcards() {
        assert!(m("ell", "Hello"));
        assert!(m("HELLO", "hello"));
        assert!(m("", "anything"));
        assert!(m("", ""));
        assert!(!m("x", ""));
        assert!(m("a_c", "xA_Cx"));
        assert!(!m("a_c", "abc"), "_ is literal");
        assert!(m(r"a\c", r"A\C"), "\\ is literal");
    }

    #[test]
    fn wildcards_anchor() {
        assert!(m("he%", "Hello"));
        assert!(!m("el%", "Hello"));
        assert!(m("%lo", "Hello"));
        assert!(!m("%ll", "Hello"));
        assert!(m("h%l%o", "Hello"));
        assert!(m("%", ""));
        assert!(m("%%", "x"));
        assert!(!m("a%a", "a"), "prefix and suffix do not overlap");
        assert!(m("a%a", "aa"));
        assert!(m("%b%b%", "abcbd"));
        assert!(!m("%b%b%", "abcd"));
        assert!(m("h%", "h"));
    }

    #[test]
    fn unicode_case_folds_both_sides() {
        assert!(m("straße", "STRAßE"));
        assert!(m("ÉCOLE", "école"));
        assert!(m("ǅ", "ǆ"));
        assert!(m("ǆ", "Ǆ"));
        assert!(
            !m("strasse", "Straße"),
            "lowercasing is not full case folding"
        );
        // `str::to_lowercase` knows a final sigma.
        assert!(m("σας", "ΣΑΣ"));
        assert_eq!(fold("ΣΑΣ"), "σας");
    }

    #[test]
    fn nul_ends_the_text() {
        assert!(m("ab", "ab\0cd"));
        assert!(!m("cd", "ab\0cd"));
        assert!(m("a\0zzz", "xax"));
    }

    #[test]
    fn sql_form() {
        assert_eq!(LikePattern::new("Ab_c").sql('\\'), r"%ab\_c%");
        assert_eq!(LikePattern::new(r"50%\x").sql('\\'), r"50%\\x");
        assert_eq!(LikePattern::new("").sql('\\'), "%%");
    }
}
