//! Email addresses as account keys. One account per address means two strings that look the
//! same must not make two accounts: besides trimming and lower-casing, a new address may not
//! contain characters that render as nothing (zero-width spaces, joiners, bidi marks, BOMs —
//! Unicode's format characters and default-ignorable code points), controls, private-use or
//! unassigned code points, nor a domain with an empty label (`example.com.`, `example..com`).

use icu_properties::props::{DefaultIgnorableCodePoint, GeneralCategory};
use icu_properties::{CodePointMapData, CodePointSetData};

use crate::error::AuthError;

fn invalid() -> AuthError {
    AuthError::BadRequest("Invalid email address".into())
}

/// Trimmed, lower-case, `local@domain` with one `@`, no whitespace or controls, 3–254 bytes.
/// What every address has to be; new addresses must also pass [`normalize_new_email`].
pub fn normalize_email(raw: &str) -> Result<String, AuthError> {
    let email = raw.trim().to_lowercase();
    let valid = email.len() >= 3
        && email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && matches!(email.split_once('@'), Some((local, domain)) if !local.is_empty() && !domain.is_empty() && !domain.contains('@'));
    if valid { Ok(email) } else { Err(invalid()) }
}

/// [`normalize_email`] plus the look-alike rules, for addresses that create an account
/// (register, `bak admin create`). Sign-in only normalises, so an account made before these
/// rules existed can still sign in.
pub fn normalize_new_email(raw: &str) -> Result<String, AuthError> {
    let email = normalize_email(raw)?;
    let domain = email.rsplit_once('@').map_or("", |(_, d)| d);
    if email.chars().any(is_invisible) || domain.split('.').any(str::is_empty) {
        return Err(invalid());
    }
    Ok(email)
}

/// Characters that are not visible text, or may render as nothing.
fn is_invisible(c: char) -> bool {
    let category = CodePointMapData::<GeneralCategory>::new().get(c);
    matches!(
        category,
        GeneralCategory::Format
            | GeneralCategory::Control
            | GeneralCategory::PrivateUse
            | GeneralCategory::Surrogate
            | GeneralCategory::Unassigned
            | GeneralCategory::SpaceSeparator
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
    ) || CodePointSetData::new::<DefaultIgnorableCodePoint>().contains(c)
        // Blank-looking letters and symbols that are neither of the above.
        || matches!(c, '\u{2800}' | '\u{3164}' | '\u{FFA0}' | '\u{115F}' | '\u{1160}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_and_lower_cases() {
        assert_eq!(
            normalize_new_email("  Alice@Example.COM ").unwrap(),
            "alice@example.com"
        );
        assert_eq!(
            normalize_new_email("josé@exämple.com").unwrap(),
            "josé@exämple.com"
        );
        assert_eq!(
            normalize_new_email("a.b+tag@mail.example.co.uk").unwrap(),
            "a.b+tag@mail.example.co.uk"
        );
    }

    #[test]
    fn look_alikes_are_refused() {
        for bad in [
            "alice@example.com.",
            "alice@example..com",
            "alice@.example.com",
            "ali\u{200B}ce@example.com",  // zero-width space
            "alice@exam\u{200C}ple.com",  // zero-width non-joiner
            "alice\u{200D}@example.com",  // zero-width joiner
            "\u{FEFF}alice@example.com",  // byte-order mark
            "alice@example.com\u{2060}",  // word joiner
            "al\u{00AD}ice@example.com",  // soft hyphen
            "alice@\u{202E}moc.elpmaxe",  // right-to-left override
            "alice\u{200E}@example.com",  // left-to-right mark
            "alice@example.com\u{E0041}", // tag character
            "alice\u{FE0F}@example.com",  // variation selector
            "alice\u{034F}@example.com",  // combining grapheme joiner
            "alice\u{3164}@example.com",  // Hangul filler
            "alice\u{2800}@example.com",  // braille blank
            "alice\u{E000}@example.com",  // private use
            "alice\u{0378}@example.com",  // unassigned
            "ali\u{00A0}ce@example.com",  // no-break space
            "ali\u{0085}ce@example.com",  // next line (control)
        ] {
            assert!(normalize_new_email(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn sign_in_only_normalises() {
        // An account made before the look-alike rules can still sign in.
        assert_eq!(
            normalize_email("Alice@Example.com.").unwrap(),
            "alice@example.com."
        );
        for bad in ["", "a@", "@b", "a@b@c", "a b@c", "a\u{0}b@c"] {
            assert!(normalize_email(bad).is_err(), "{bad:?}");
        }
    }
}
