//! SQLite's placeholders in PostgreSQL's spelling: `?` and `?N` become `$N`, numbered as
//! SQLite numbers them (a bare `?` takes one more than the largest number so far). Quoted
//! strings, quoted identifiers and comments are copied untouched.

pub fn to_postgres(sql: &str) -> String {
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len() + 8);
    let mut largest = 0usize;
    let mut i = 0;
    let mut copied = 0;
    while i < bytes.len() {
        match bytes[i] {
            q @ (b'\'' | b'"') => {
                // To the closing quote; a doubled quote is an escaped one and is crossed as
                // two quotes in a row.
                i += 1;
                while i < bytes.len() && bytes[i] != q {
                    i += 1;
                }
                i += 1;
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i < bytes.len() && !(bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/')) {
                    i += 1;
                }
                i += 2;
            }
            b'?' => {
                out.push_str(&sql[copied..i]);
                let digits = bytes[i + 1..]
                    .iter()
                    .take_while(|b| b.is_ascii_digit())
                    .count();
                let n = match sql[i + 1..i + 1 + digits].parse::<usize>() {
                    Ok(n) => n,
                    Err(_) => largest + 1,
                };
                largest = largest.max(n);
                out.push('$');
                out.push_str(&n.to_string());
                i += 1 + digits;
                copied = i;
            }
            _ => i += 1,
        }
    }
    out.push_str(&sql[copied.min(sql.len())..]);
    out
}

#[cfg(test)]
mod tests {
    use super::to_postgres;

    #[test]
    fn placeholders_are_numbered_as_sqlite_numbers_them() {
        assert_eq!(to_postgres("SELECT ?, ?"), "SELECT $1, $2");
        assert_eq!(
            to_postgres("a = ?2 AND b = ?1 OR c = ?"),
            "a = $2 AND b = $1 OR c = $3"
        );
        assert_eq!(to_postgres("LIMIT ?1 OFFSET ?2"), "LIMIT $1 OFFSET $2");
        assert_eq!(to_postgres("x = ?10"), "x = $10");
    }

    #[test]
    fn quotes_and_comments_are_left_alone() {
        assert_eq!(
            to_postgres("SELECT '?', \"a?\", 'it''s ?' -- why?\n, ? /* ? */ , ?"),
            "SELECT '?', \"a?\", 'it''s ?' -- why?\n, $1 /* ? */ , $2"
        );
        assert_eq!(
            to_postgres("SELECT 'unterminated ?"),
            "SELECT 'unterminated ?"
        );
        assert_eq!(to_postgres("?"), "$1");
        assert_eq!(to_postgres(""), "");
    }
}
