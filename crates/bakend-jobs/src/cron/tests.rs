//! The cron semantics table. It is the specification of schedules: every row is mirrored in
//! `docs/jobs.md`. Each row: expression, time zone, the instant to search from, and the next
//! fire times (each found strictly after the previous one), written in the zone's local offset.

use super::*;

struct Row {
    expr: &'static str,
    tz: &'static str,
    from: &'static str,
    next: &'static [&'static str],
}

const fn row(
    expr: &'static str,
    tz: &'static str,
    from: &'static str,
    next: &'static [&'static str],
) -> Row {
    Row {
        expr,
        tz,
        from,
        next,
    }
}

const TABLE: &[Row] = &[
    // Basics: strictly after "from", seconds of "from" ignored.
    row(
        "* * * * *",
        "UTC",
        "2026-03-10T12:00:30Z",
        &["2026-03-10T12:01:00Z", "2026-03-10T12:02:00Z"],
    ),
    row(
        "0 * * * *",
        "UTC",
        "2026-03-10T12:00:00Z",
        &["2026-03-10T13:00:00Z"],
    ),
    row(
        "*/15 * * * *",
        "UTC",
        "2026-03-10T12:07:00Z",
        &["2026-03-10T12:15:00Z", "2026-03-10T12:30:00Z"],
    ),
    row(
        "5,10,55 * * * *",
        "UTC",
        "2026-03-10T12:10:00Z",
        &["2026-03-10T12:55:00Z", "2026-03-10T13:05:00Z"],
    ),
    row(
        "0 9-17/4 * * *",
        "UTC",
        "2026-03-10T10:00:00Z",
        &[
            "2026-03-10T13:00:00Z",
            "2026-03-10T17:00:00Z",
            "2026-03-11T09:00:00Z",
        ],
    ),
    row(
        "30 2 * * *",
        "UTC",
        "2026-03-10T12:00:00Z",
        &["2026-03-11T02:30:00Z"],
    ),
    row(
        "0 0 1 * *",
        "UTC",
        "2026-03-10T00:00:00Z",
        &["2026-04-01T00:00:00Z", "2026-05-01T00:00:00Z"],
    ),
    // Day-of-month 31 skips months without one; Feb 29 waits for a leap year.
    row(
        "0 0 31 * *",
        "UTC",
        "2026-04-01T00:00:00Z",
        &["2026-05-31T00:00:00Z", "2026-07-31T00:00:00Z"],
    ),
    row(
        "0 0 29 2 *",
        "UTC",
        "2026-03-10T00:00:00Z",
        &["2028-02-29T00:00:00Z"],
    ),
    // Weekdays: 0 and 7 are Sunday; names in any case; ranges and steps of weekdays.
    row(
        "0 0 * * 1",
        "UTC",
        "2026-03-10T00:00:00Z",
        &["2026-03-16T00:00:00Z"],
    ),
    row(
        "0 0 * * 7",
        "UTC",
        "2026-03-10T00:00:00Z",
        &["2026-03-15T00:00:00Z"],
    ),
    row(
        "0 0 * * sun",
        "UTC",
        "2026-03-10T00:00:00Z",
        &["2026-03-15T00:00:00Z"],
    ),
    row(
        "0 12 * * MON-FRI",
        "UTC",
        "2026-03-13T13:00:00Z",
        &["2026-03-16T12:00:00Z", "2026-03-17T12:00:00Z"],
    ),
    row(
        "0 0 * * 1-5/2",
        "UTC",
        "2026-03-15T00:00:00Z",
        &[
            "2026-03-16T00:00:00Z",
            "2026-03-18T00:00:00Z",
            "2026-03-20T00:00:00Z",
            "2026-03-23T00:00:00Z",
        ],
    ),
    row(
        "0 0 * * 0,6",
        "UTC",
        "2026-03-10T00:00:00Z",
        &["2026-03-14T00:00:00Z", "2026-03-15T00:00:00Z"],
    ),
    // Month names, lists and stepped name ranges.
    row(
        "0 0 1 JAN,JUL *",
        "UTC",
        "2026-03-10T00:00:00Z",
        &["2026-07-01T00:00:00Z", "2027-01-01T00:00:00Z"],
    ),
    row(
        "0 0 1 jan-may/2 *",
        "UTC",
        "2026-01-15T00:00:00Z",
        &["2026-03-01T00:00:00Z", "2026-05-01T00:00:00Z"],
    ),
    // Day-of-month and day-of-week both restricted: either matches (Vixie OR).
    row(
        "0 0 13 * 5",
        "UTC",
        "2026-03-14T00:00:00Z",
        &[
            "2026-03-20T00:00:00Z",
            "2026-03-27T00:00:00Z",
            "2026-04-03T00:00:00Z",
            "2026-04-10T00:00:00Z",
            "2026-04-13T00:00:00Z",
        ],
    ),
    row(
        "0 0 1 * MON",
        "UTC",
        "2026-03-24T00:00:00Z",
        &[
            "2026-03-30T00:00:00Z",
            "2026-04-01T00:00:00Z",
            "2026-04-06T00:00:00Z",
        ],
    ),
    // Only one of them restricted: only that one counts.
    row(
        "0 0 1-3 * *",
        "UTC",
        "2026-03-10T00:00:00Z",
        &[
            "2026-04-01T00:00:00Z",
            "2026-04-02T00:00:00Z",
            "2026-04-03T00:00:00Z",
            "2026-05-01T00:00:00Z",
        ],
    ),
    // A leading `+` on day-of-week asks for AND: the 1st that is a Monday.
    row(
        "0 0 1 * +MON",
        "UTC",
        "2026-03-10T00:00:00Z",
        &["2026-06-01T00:00:00Z", "2027-02-01T00:00:00Z"],
    ),
    // croner extensions: last day of the month, nth weekday.
    row(
        "0 0 L * *",
        "UTC",
        "2026-02-01T00:00:00Z",
        &["2026-02-28T00:00:00Z", "2026-03-31T00:00:00Z"],
    ),
    row(
        "0 0 * * FRI#2",
        "UTC",
        "2026-03-01T00:00:00Z",
        &["2026-03-13T00:00:00Z", "2026-04-10T00:00:00Z"],
    ),
    // Macros.
    row(
        "@hourly",
        "UTC",
        "2026-03-10T12:34:56Z",
        &["2026-03-10T13:00:00Z"],
    ),
    row(
        "@daily",
        "UTC",
        "2026-03-10T12:00:00Z",
        &["2026-03-11T00:00:00Z"],
    ),
    row(
        "@weekly",
        "UTC",
        "2026-03-10T12:00:00Z",
        &["2026-03-15T00:00:00Z"],
    ),
    row(
        "@monthly",
        "UTC",
        "2026-03-10T12:00:00Z",
        &["2026-04-01T00:00:00Z"],
    ),
    row(
        "@yearly",
        "UTC",
        "2026-03-10T12:00:00Z",
        &["2027-01-01T00:00:00Z"],
    ),
    row(
        "@annually",
        "UTC",
        "2026-03-10T12:00:00Z",
        &["2027-01-01T00:00:00Z"],
    ),
    // Six fields: a leading seconds field.
    row(
        "*/1 * * * * *",
        "UTC",
        "2026-03-10T12:00:00.500Z",
        &["2026-03-10T12:00:01Z", "2026-03-10T12:00:02Z"],
    ),
    row(
        "*/10 * * * * *",
        "UTC",
        "2026-03-10T12:00:05Z",
        &["2026-03-10T12:00:10Z", "2026-03-10T12:00:20Z"],
    ),
    row(
        "30 0 0 * * *",
        "UTC",
        "2026-03-10T12:00:00Z",
        &["2026-03-11T00:00:30Z"],
    ),
    // Time zones: the expression is read on the zone's wall clock.
    row(
        "0 9 * * *",
        "Europe/Berlin",
        "2026-01-15T00:00:00Z",
        &["2026-01-15T09:00:00+01:00"],
    ),
    row(
        "0 9 * * *",
        "Europe/Berlin",
        "2026-07-15T00:00:00Z",
        &["2026-07-15T09:00:00+02:00"],
    ),
    row(
        "0 9 * * *",
        "America/New_York",
        "2026-01-15T00:00:00Z",
        &["2026-01-15T09:00:00-05:00"],
    ),
    row(
        "@daily",
        "Asia/Kolkata",
        "2026-03-10T12:00:00Z",
        &["2026-03-11T00:00:00+05:30"],
    ),
    // DST gap (Berlin, 2026-03-29 02:00 → 03:00): a fixed-time job runs at the first
    // minute after the gap, once; interval jobs skip the missing times.
    row(
        "30 2 * * *",
        "Europe/Berlin",
        "2026-03-28T12:00:00Z",
        &["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"],
    ),
    row(
        "*/30 * * * *",
        "Europe/Berlin",
        "2026-03-29T01:45:00+01:00",
        &["2026-03-29T03:00:00+02:00", "2026-03-29T03:30:00+02:00"],
    ),
    row(
        "0 2 * * *",
        "America/New_York",
        "2026-03-07T12:00:00Z",
        &["2026-03-08T03:00:00-04:00", "2026-03-09T02:00:00-04:00"],
    ),
    // DST overlap (Berlin, 2026-10-25 03:00 → 02:00): a fixed-time job runs once, at the
    // first pass; interval jobs run in both passes.
    row(
        "30 2 * * *",
        "Europe/Berlin",
        "2026-10-24T12:00:00Z",
        &["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"],
    ),
    row(
        "*/30 2 * * *",
        "Europe/Berlin",
        "2026-10-25T02:00:00+02:00",
        &[
            "2026-10-25T02:30:00+02:00",
            "2026-10-25T02:00:00+01:00",
            "2026-10-25T02:30:00+01:00",
            "2026-10-26T02:00:00+01:00",
        ],
    ),
];

fn instant(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("bad instant {s}: {e}"))
        .with_timezone(&Utc)
}

#[test]
fn semantics_table() {
    assert!(TABLE.len() >= 30, "the table has {} rows", TABLE.len());
    let mut failures = Vec::new();
    for r in TABLE {
        let tz = parse_tz(r.tz).unwrap();
        let s = match Schedule::parse(r.expr, tz) {
            Ok(s) => s,
            Err(e) => {
                failures.push(format!("{:?} ({}): rejected: {e}", r.expr, r.tz));
                continue;
            }
        };
        let mut t = instant(r.from);
        for want in r.next {
            let got = s.next_after(t);
            if got != Some(instant(want)) {
                failures.push(format!(
                    "{:?} ({}) after {}: want {want}, got {:?}",
                    r.expr,
                    r.tz,
                    t.to_rfc3339(),
                    got.map(|g| g.with_timezone(&tz).to_rfc3339())
                ));
                break;
            }
            t = instant(want);
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn invalid_expressions_name_the_field() {
    let utc = chrono_tz::UTC;
    for (expr, field) in [
        ("60 * * * *", "minute"),
        ("* 24 * * *", "hour"),
        ("* * 0 * *", "day-of-month"),
        ("* * 32 * *", "day-of-month"),
        ("* * * 13 *", "month"),
        ("* * * * 8", "day-of-week"),
        ("* * * MON *", "month"),
        ("* * * * JAN", "day-of-week"),
        ("* * * * MONDAY", "day-of-week"),
        ("*/0 * * * *", "minute"),
        ("0/10 * * * *", "minute"),
        ("1,,2 * * * *", "minute"),
        ("x * * * *", "minute"),
        ("61 * * * * *", "second"),
        ("* 60 * * * *", "minute"),
    ] {
        match Schedule::parse(expr, utc) {
            Err(ScheduleError::Field { field: f, .. }) => assert_eq!(f, field, "{expr}"),
            other => panic!("{expr}: expected a {field} error, got {other:?}"),
        }
    }
    assert_eq!(
        Schedule::parse("* * * *", utc).unwrap_err(),
        ScheduleError::FieldCount(4)
    );
    assert_eq!(
        Schedule::parse("* * * * * * *", utc).unwrap_err(),
        ScheduleError::FieldCount(7)
    );
    assert_eq!(
        Schedule::parse("  ", utc).unwrap_err(),
        ScheduleError::Empty
    );
    assert!(matches!(
        Schedule::parse("@every5m", utc),
        Err(ScheduleError::Macro(_))
    ));
    assert_eq!(
        Schedule::parse("0 0 30 2 *", utc).unwrap_err(),
        ScheduleError::Never
    );
}

#[test]
fn error_text_names_field_and_value() {
    let e = Schedule::parse("0 25 * * *", chrono_tz::UTC).unwrap_err();
    let text = e.to_string();
    assert!(text.starts_with("hour field \"25\" is invalid"), "{text}");
}

#[test]
fn time_zone_names() {
    assert!(parse_tz("UTC").is_some());
    assert!(parse_tz("Europe/Berlin").is_some());
    assert!(parse_tz("Mars/Olympus").is_none());
}
