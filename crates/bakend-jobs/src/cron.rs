//! Cron schedules: parsing with `croner` and finding the next fire time in a time zone.
//!
//! Syntax (the full table with examples is in `docs/jobs.md` and the tests below):
//! `[second] minute hour day-of-month month day-of-week`, or a macro (`@hourly`, `@daily`,
//! `@weekly`, `@monthly`, `@yearly`, `@annually`). Lists, ranges, `*/n` and `a-b/n` steps,
//! month and weekday names (case-insensitive), weekday `7` = Sunday. When day-of-month and
//! day-of-week are both restricted a day matches if **either** does (Vixie cron); croner's
//! extensions (`L`, `W`, `#`, a leading `+` on day-of-week for AND) are accepted too.
//!
//! croner replaces names anywhere in the expression and reports errors without saying where,
//! so every field is checked on its own first: errors name the field.

use std::fmt;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// A parsed, valid schedule.
#[derive(Clone)]
pub struct Schedule {
    expr: String,
    cron: Cron,
    tz: Tz,
    with_seconds: bool,
}

/// Why an expression was rejected. The `Display` text is what load errors show after
/// `schedule "<expr>": `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("must not be empty")]
    Empty,
    #[error(
        "expected 5 fields (minute hour day-of-month month day-of-week) or 6 with a leading second, got {0}"
    )]
    FieldCount(usize),
    #[error("unknown macro {0} (use @yearly, @annually, @monthly, @weekly, @daily or @hourly)")]
    Macro(String),
    #[error("{field} field \"{value}\" is invalid: {reason}")]
    Field {
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error("never fires (no matching time in the next years)")]
    Never,
    #[error("{0}")]
    Other(String),
}

const FIELDS_5: [&str; 5] = ["minute", "hour", "day-of-month", "month", "day-of-week"];
const FIELDS_6: [&str; 6] = [
    "second",
    "minute",
    "hour",
    "day-of-month",
    "month",
    "day-of-week",
];
const MACROS: [&str; 6] = [
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@hourly",
];
const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

fn parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
}

/// Letters a field may contain, as whole words: croner would otherwise turn `MON` in the month
/// field into `1` without complaint.
fn words_allowed(field: &str, word: &str) -> bool {
    match field {
        "month" => MONTHS.contains(&word),
        "day-of-week" => WEEKDAYS.contains(&word) || word == "L",
        "day-of-month" => word == "L" || word == "W" || word == "LW",
        _ => false,
    }
}

fn check_words(field: &'static str, value: &str) -> Result<(), ScheduleError> {
    // croner accepts `1,,2`; an empty list item is almost certainly a typo.
    if value.split(',').any(str::is_empty) {
        return Err(ScheduleError::Field {
            field,
            value: value.to_string(),
            reason: "empty list item".into(),
        });
    }
    let upper = value.to_ascii_uppercase();
    for word in upper
        .split(|c: char| !c.is_ascii_alphabetic())
        .filter(|w| !w.is_empty())
    {
        if !words_allowed(field, word) {
            let reason = match field {
                "month" => format!("\"{word}\" is not a month name (JAN-DEC)"),
                "day-of-week" => format!("\"{word}\" is not a weekday name (SUN-SAT)"),
                _ => format!("\"{word}\" is not allowed here"),
            };
            return Err(ScheduleError::Field {
                field,
                value: value.to_string(),
                reason,
            });
        }
    }
    Ok(())
}

/// croner's message without its generic prefix.
fn reason(e: &croner::errors::CronError) -> String {
    let text = e.to_string();
    for prefix in [
        "Component error: ",
        "Invalid pattern: ",
        "Pattern contains ",
    ] {
        if let Some(rest) = text.strip_prefix(prefix) {
            return rest.to_string();
        }
    }
    text
}

impl Schedule {
    /// Parses `expr`; fire times are computed in `tz`.
    pub fn parse(expr: &str, tz: Tz) -> Result<Schedule, ScheduleError> {
        let trimmed = expr.trim();
        if trimmed.is_empty() {
            return Err(ScheduleError::Empty);
        }
        let parser = parser();
        if trimmed.starts_with('@') {
            let lower = trimmed.to_ascii_lowercase();
            if !MACROS.contains(&lower.as_str()) {
                return Err(ScheduleError::Macro(trimmed.to_string()));
            }
            let cron = parser
                .parse(&lower)
                .map_err(|e| ScheduleError::Other(reason(&e)))?;
            return Self::checked(expr, cron, tz, false);
        }
        let parts: Vec<&str> = trimmed.split_whitespace().collect();
        let names: &[&'static str] = match parts.len() {
            5 => &FIELDS_5,
            6 => &FIELDS_6,
            n => return Err(ScheduleError::FieldCount(n)),
        };
        for (i, (field, value)) in names.iter().zip(&parts).enumerate() {
            check_words(field, value)?;
            // Each field alone, with every other field `*`, so the error can name it.
            let alone: Vec<&str> = (0..parts.len())
                .map(|j| if j == i { *value } else { "*" })
                .collect();
            if let Err(e) = parser.parse(&alone.join(" ")) {
                return Err(ScheduleError::Field {
                    field,
                    value: value.to_string(),
                    reason: reason(&e),
                });
            }
        }
        let cron = parser
            .parse(trimmed)
            .map_err(|e| ScheduleError::Other(reason(&e)))?;
        Self::checked(expr, cron, tz, parts.len() == 6)
    }

    fn checked(
        expr: &str,
        cron: Cron,
        tz: Tz,
        with_seconds: bool,
    ) -> Result<Schedule, ScheduleError> {
        let s = Schedule {
            expr: expr.to_string(),
            cron,
            tz,
            with_seconds,
        };
        // `0 0 30 2 *` parses but never fires; croner gives up after a bounded search.
        let probe = DateTime::<Utc>::from_timestamp(1_767_225_600, 0).unwrap_or_default();
        if s.next_after(probe).is_none() {
            return Err(ScheduleError::Never);
        }
        Ok(s)
    }

    /// The expression as written.
    pub fn expr(&self) -> &str {
        &self.expr
    }

    pub fn tz(&self) -> Tz {
        self.tz
    }

    /// Whether the expression has a seconds field (6 fields).
    pub fn with_seconds(&self) -> bool {
        self.with_seconds
    }

    /// The first fire time strictly after `t` (sub-second parts of `t` are ignored, so a
    /// tick is never returned twice).
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = t.with_timezone(&self.tz);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schedule({:?} in {})", self.expr, self.tz)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.expr)
    }
}

/// Parses an IANA time zone name (`UTC`, `Europe/Berlin`).
pub fn parse_tz(name: &str) -> Option<Tz> {
    name.parse::<Tz>().ok()
}

#[cfg(test)]
mod tests;
