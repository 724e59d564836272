//! Timestamps on the wire are ISO-8601 UTC with exactly three fractional digits and `Z`
//! (what JavaScript's `toISOString` prints), e.g. `2026-11-27T22:43:17.725Z`.
//!
//! [`normalize`] turns what people type into that form: record `datetime` values (the store)
//! and datetime literals in filters (`bakend-filter`) both go through it, so a filter's
//! `'2024-01-01'` is the very string a stored `"2024-01-01"` became.

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};

pub fn now_iso() -> String {
    to_iso(Utc::now())
}

pub fn to_iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A `datetime` value in the canonical form, or `None` if it is not one. Upstream accepted
/// anything JavaScript's `Date.parse` took and stored it verbatim; Bakend accepts the common
/// unambiguous forms and stores one canonical form (ISO-8601 UTC with milliseconds and `Z`), so
/// values sort and compare correctly as text.
///
/// Parses RFC 3339 / ISO-8601 (`2024-01-01T10:00:00+02:00`, `…Z`, or without offset meaning UTC,
/// `T` or space between date and time), a bare date (midnight UTC), or RFC 2822.
pub fn normalize(s: &str) -> Option<String> {
    let s = s.trim();
    if s.is_empty() || s.len() > 64 {
        return None;
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(to_iso(t.with_timezone(&Utc)));
    }
    if let Ok(t) = DateTime::parse_from_rfc2822(s) {
        return Some(to_iso(t.with_timezone(&Utc)));
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(to_iso(t.and_utc()));
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Some(to_iso(d.and_hms_opt(0, 0, 0)?.and_utc()));
    }
    // A space-separated offset (`2024-01-01 10:00:00+02:00`).
    if let Ok(t) = DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f%:z") {
        return Some(to_iso(t.with_timezone(&Utc)));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn iso_has_millis_and_z() {
        let s = super::now_iso();
        assert_eq!(s.len(), 24, "{s}");
        assert!(s.ends_with('Z'));
        assert_eq!(&s[19..20], ".");
    }

    #[test]
    fn accepted_forms_normalize_to_utc_millis() {
        for (input, want) in [
            ("2024-01-01", "2024-01-01T00:00:00.000Z"),
            ("2024-01-01T10:20:30Z", "2024-01-01T10:20:30.000Z"),
            ("2024-01-01T10:20:30.5+02:00", "2024-01-01T08:20:30.500Z"),
            ("2024-01-01 10:20:30", "2024-01-01T10:20:30.000Z"),
            ("2024-01-01T10:20", "2024-01-01T10:20:00.000Z"),
            ("Tue, 01 Jan 2030 00:00:00 GMT", "2030-01-01T00:00:00.000Z"),
        ] {
            assert_eq!(normalize(input).as_deref(), Some(want), "{input}");
        }
    }

    #[test]
    fn garbage_is_rejected() {
        for bad in [
            "",
            "yesterday",
            "2024-13-01",
            "2024-02-30",
            "12:00",
            "1700000000",
        ] {
            assert_eq!(normalize(bad), None, "{bad}");
        }
    }
}
