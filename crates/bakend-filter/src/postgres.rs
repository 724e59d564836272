//! What PostgreSQL needs from this crate: the [`Postgres`] dialect, and the `bak_lower`
//! function `~` compiles to ([`postgres_functions_sql`]).
//!
//! `bak_lower` must lowercase exactly as Rust's `str::to_lowercase` (the evaluator's), which is
//! Unicode's default lowercasing: one mapping per character, plus the one context rule, the
//! final sigma. PostgreSQL's `lower()` under ICU's root locale (`"und-x-icu"`) is the same
//! algorithm, and fast; what can differ is the Unicode version (ICU 72 of Debian 12 has
//! Unicode 15, Rust 1.95 has Unicode 17), so the function is built from Rust's own behaviour
//! where it matters:
//!
//! - every `Σ` is resolved before ICU sees the text, by a regular expression whose character
//!   classes (cased, case-ignorable) are read off `str::to_lowercase` itself;
//! - every character Rust lowercases is checked against the server's ICU when the function is
//!   installed; those ICU does not know yet are lowercased afterwards with `translate`, and any
//!   other disagreement stops the installation with an error naming the character.
//!
//! Both extra steps run only on texts containing `Σ` or such a character (a regular-expression
//! test first), so the common case costs one ICU `lower()`.

use std::fmt::Write as _;
use std::sync::LazyLock;

use crate::sql::Dialect;

/// PostgreSQL as Bakend stores on it (`bakend_store`'s PostgreSQL schema): every value keeps
/// its SQLite storage class — integers and booleans (0/1) `BIGINT`, floats
/// `DOUBLE PRECISION`, everything text-like `TEXT` (`COLLATE "C"`).
///
/// Placeholders are SQLite's `?N`: the fragment runs through `bakend_store::sql::Conn`, which
/// turns them into `$N` together with the caller's own, so offsets work as on SQLite. Text
/// comparisons say `COLLATE "C"` (binary order, as SQLite compares), integers and floats are
/// compared exactly (see [`Dialect::compares_mixed_numbers_exactly`]), text values with a NUL
/// are never bound (PostgreSQL's text cannot hold one), and `~` calls `bak_lower`, which the
/// store installs with [`postgres_functions_sql`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Postgres;

impl Dialect for Postgres {
    fn boolean_literal(&self, value: bool) -> &'static str {
        // `WHERE 1` is an error in PostgreSQL.
        if value { "TRUE" } else { "FALSE" }
    }

    fn binary_collation(&self) -> &'static str {
        " COLLATE \"C\""
    }

    fn compares_mixed_numbers_exactly(&self) -> bool {
        false
    }

    fn text_holds_nul(&self) -> bool {
        false
    }
}

/// SQL that creates (or replaces) `bak_lower(text)` in the current schema — the first of the
/// `search_path`, where the filter SQL finds it. Run it with `batch_execute` (several
/// statements, no parameters) when setting a schema up, and again whenever the binary may have
/// changed (it is `CREATE OR REPLACE`; a new Rust brings new Unicode), under the lock that
/// keeps two servers from migrating at once (two concurrent `CREATE OR REPLACE` of one function
/// can fail). It takes tens of milliseconds; building the text, once per process, a few
/// hundred in a debug build. It fails, with a message
/// that says why, on a database that is not UTF8, on a PostgreSQL built without ICU, and when
/// the server's ICU lowercases some character differently from Rust in a way that cannot be
/// patched. The function is `IMMUTABLE` and `PARALLEL SAFE`, and simple enough for PostgreSQL
/// to inline into the query.
pub fn postgres_functions_sql() -> &'static str {
    static SQL: LazyLock<String> = LazyLock::new(build_functions_sql);
    &SQL
}

const SIGMA: char = 'Σ';

/// Characters in the two classes that decide a `Σ`'s lowercase, read off `str::to_lowercase`:
/// `Σ` becomes `ς` when the nearest character before it that is not case-ignorable is cased,
/// and the nearest one after it that is not case-ignorable is not (or there is none).
struct SigmaClasses {
    /// Cased and not case-ignorable (Rust skips case-ignorable characters first).
    cased: Vec<(u32, u32)>,
    case_ignorable: Vec<(u32, u32)>,
}

fn sigma_classes() -> SigmaClasses {
    let mut cased = Vec::new();
    let mut case_ignorable = Vec::new();
    let mut buf = String::new();
    let mut ends_final = |prefix: &[char]| {
        buf.clear();
        buf.extend(prefix);
        buf.push(SIGMA);
        buf.to_lowercase().ends_with('ς')
    };
    for c in char::MIN..=char::MAX {
        // `cΣ`: final exactly when c is cased (a case-ignorable c is skipped, leaving nothing).
        if ends_final(&[c]) {
            push_range(&mut cased, c);
        // `AcΣ`: final when c is cased or skipped; not cased, so skipped.
        } else if ends_final(&['A', c]) {
            push_range(&mut case_ignorable, c);
        }
    }
    SigmaClasses {
        cased,
        case_ignorable,
    }
}

fn push_range(ranges: &mut Vec<(u32, u32)>, c: char) {
    let cp = u32::from(c);
    match ranges.last_mut() {
        Some((_, end)) if *end + 1 == cp => *end = cp,
        _ => ranges.push((cp, cp)),
    }
}

/// A bracket expression of PostgreSQL's regular expressions, in ASCII (`\uXXXX` escapes,
/// backslashes doubled for an `E''` literal).
fn bracket(ranges: &[(u32, u32)]) -> String {
    let esc = |out: &mut String, cp: u32| {
        let _ = if cp <= 0xFFFF {
            write!(out, "\\\\u{cp:04x}")
        } else {
            write!(out, "\\\\U{cp:08x}")
        };
    };
    let mut out = String::from("[");
    for &(a, b) in ranges {
        esc(&mut out, a);
        if b > a {
            out.push('-');
            esc(&mut out, b);
        }
    }
    out.push(']');
    out
}

/// Every character other than `Σ` that `to_lowercase` changes, as `code:lower[,lower…];` in
/// decimal (ASCII, for the installer to check against ICU).
fn lowercase_mappings() -> String {
    let mut out = String::new();
    for c in char::MIN..=char::MAX {
        let mut lower = c.to_lowercase();
        if c == SIGMA || (lower.len() == 1 && lower.clone().next() == Some(c)) {
            continue;
        }
        if !out.is_empty() {
            out.push(';');
        }
        let _ = write!(out, "{}:", u32::from(c));
        if let Some(first) = lower.next() {
            let _ = write!(out, "{}", u32::from(first));
        }
        for l in lower {
            let _ = write!(out, ",{}", u32::from(l));
        }
    }
    out
}

fn build_functions_sql() -> String {
    let classes = sigma_classes();
    let (cased, ignorable) = (bracket(&classes.cased), bracket(&classes.case_ignorable));
    // `(cased)(ignorable*)Σ` not followed by `ignorable* cased`: a final sigma, with what comes
    // before it. The preceding characters are consumed and put back, which never hides the
    // context of a later final sigma: that one's nearest non-ignorable predecessor comes after
    // this one (were it this Σ, this Σ would not be final). A lookbehind would say the same
    // but costs PostgreSQL time quadratic in the text's length.
    let final_sigma = format!("({cased})({ignorable}*)\\\\u03a3(?!{ignorable}*{cased})");
    let (major, minor, update) = char::UNICODE_VERSION;
    let mut sql = String::with_capacity(64 * 1024);
    sql.push_str(
        r#"DO $bak_lower$
DECLARE
  mapping text;
  upper_char text;
  rust text;
  icu text;
  patch_from text := '';
  patch_to text := '';
  patch_class text := '';
  final_sigma text := E'"#,
    );
    sql.push_str(&final_sigma);
    sql.push_str(
        r#"';
  -- Capital sigma (U+03A3, chr(931)) resolved before ICU sees the text: final_sigma marks
  -- the final ones, which become chr(962), the others chr(963).
  resolve_sigma text := $s$replace(regexp_replace(t, %L, E'\\1\\2' || chr(962), 'g'), chr(931), chr(963))$s$;
BEGIN
  IF current_setting('server_encoding') <> 'UTF8' THEN
    RAISE EXCEPTION 'Bakend needs a UTF8 database, this one is %', current_setting('server_encoding');
  END IF;
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_collation WHERE collname = 'und-x-icu') THEN
    RAISE EXCEPTION 'Bakend needs PostgreSQL built with ICU: the collation "und-x-icu", which the case-insensitive ~ of filters lowercases with, is missing';
  END IF;
  -- Each character Rust lowercases (but capital sigma) against ICU.
  FOREACH mapping IN ARRAY string_to_array('"#,
    );
    sql.push_str(&lowercase_mappings());
    sql.push_str(
        r#"', ';') LOOP
    upper_char := chr(split_part(mapping, ':', 1)::int);
    SELECT string_agg(chr(l::int), '' ORDER BY n) INTO rust
      FROM unnest(string_to_array(split_part(mapping, ':', 2), ',')) WITH ORDINALITY AS m(l, n);
    icu := lower(upper_char COLLATE "und-x-icu");
    CONTINUE WHEN icu = rust;
    IF icu = upper_char AND char_length(rust) = 1 THEN
      -- A character newer than this ICU's Unicode: translated after ICU's lower().
      patch_from := patch_from || upper_char;
      patch_to := patch_to || rust;
      patch_class := patch_class || E'\\U' || lpad(to_hex(ascii(upper_char)), 8, '0');
    ELSE
      RAISE EXCEPTION 'bak_lower: this server''s ICU lowercases U+% to "%", Bakend (Rust) to "%"; filters with ~ would not agree with realtime',
        upper(to_hex(ascii(upper_char))), icu, rust;
    END IF;
  END LOOP;
  resolve_sigma := format(resolve_sigma, final_sigma);
  -- Texts without capital sigma (or a patched character) are ICU's alone: the common case costs
  -- one regular-expression test more than lower().
  IF patch_from = '' THEN
    EXECUTE format($def$
CREATE OR REPLACE FUNCTION bak_lower(t text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN strpos(t, chr(931)) = 0 THEN lower(t COLLATE "und-x-icu")
  ELSE lower(%s COLLATE "und-x-icu") END
$def$, resolve_sigma);
  ELSE
    EXECUTE format($def$
CREATE OR REPLACE FUNCTION bak_lower(t text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN t !~ %L THEN lower(t COLLATE "und-x-icu")
  WHEN t !~ %L THEN lower(%s COLLATE "und-x-icu")
  ELSE translate(lower(%s COLLATE "und-x-icu"), %L, %L) END
$def$, E'[\\u03a3' || patch_class || ']', '[' || patch_class || ']', resolve_sigma, resolve_sigma,
      patch_from, patch_to);
  END IF;
END
$bak_lower$;
"#,
    );
    let _ = writeln!(
        sql,
        "COMMENT ON FUNCTION bak_lower(text) IS 'Bakend: lowercases as Rust''s str::to_lowercase \
         (Unicode {major}.{minor}.{update}), for the ~ of filters';"
    );
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigma_classes_are_rusts() {
        let c = sigma_classes();
        let has =
            |r: &[(u32, u32)], ch: char| r.iter().any(|&(a, b)| (a..=b).contains(&u32::from(ch)));
        for ch in ['A', 'z', 'Σ', 'ς', 'ǅ', 'ß', 'É'] {
            assert!(has(&c.cased, ch), "{ch} is cased");
            assert!(!has(&c.case_ignorable, ch), "{ch} is not case-ignorable");
        }
        // Apostrophe, full stop and colon (word-break rules), soft hyphen, combining acute,
        // modifier letter.
        for ch in ['\'', '.', ':', '\u{ad}', '\u{301}', 'ʰ'] {
            assert!(has(&c.case_ignorable, ch), "{ch:?} is case-ignorable");
        }
        // Ypogegrammeni is cased and case-ignorable: skipped, as Rust does.
        assert!(has(&c.case_ignorable, '\u{345}'));
        assert!(!has(&c.cased, '\u{345}'));
        for ch in [' ', '1', '日', '\0', '-'] {
            assert!(!has(&c.cased, ch) && !has(&c.case_ignorable, ch), "{ch:?}");
        }
    }

    #[test]
    fn the_installer_is_ascii_and_complete() {
        let sql = postgres_functions_sql();
        assert!(
            sql.is_ascii(),
            "encoding problems are reported by the SQL itself"
        );
        assert!(sql.contains("CREATE OR REPLACE FUNCTION bak_lower(t text)"));
        // İ lowercases to two characters; Σ is left to the function.
        assert!(sql.contains(";304:105,775;"));
        assert!(!sql.contains(";931:"));
        assert!(sql.len() < 100_000, "{} bytes", sql.len());
    }

    #[test]
    fn brackets_escape_everything() {
        assert_eq!(
            bracket(&[(0x27, 0x27), (0x41, 0x5a), (0x1_0400, 0x1_0427)]),
            r"[\\u0027\\u0041-\\u005a\\U00010400-\\U00010427]"
        );
    }
}
