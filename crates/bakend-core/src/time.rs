//! Timestamps on the wire are ISO-8601 UTC with exactly three fractional digits and `Z`
//! (what JavaScript's `toISOString` prints), e.g. `2026-11-27T22:43:17.725Z`.

use chrono::{DateTime, SecondsFormat, Utc};

pub fn now_iso() -> String {
    to_iso(Utc::now())
}

pub fn to_iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    #[test]
    fn iso_has_millis_and_z() {
        let s = super::now_iso();
        assert_eq!(s.len(), 24, "{s}");
        assert!(s.ends_with('Z'));
        assert_eq!(&s[19..20], ".");
    }
}
