//! Cron expressions (`bakend_jobs::cron::Schedule`). Parsing any expression in any of a few
//! time zones (with DST and odd offsets) never panics, and an accepted schedule's next fire
//! time is strictly after the time asked about, the one after that later still, and on a whole
//! minute when the expression has no seconds field.
//!
//! bakend-jobs depends on the JavaScript engine (rquickjs, oxc), which would triple this
//! workspace's build; cron.rs depends on chrono, chrono-tz and croner only, so its source is
//! compiled in directly.

#![no_main]

#[path = "../../crates/bakend-jobs/src"]
mod jobs {
    #[allow(dead_code)]
    pub mod cron;
}

use jobs::cron;

use arbitrary::Arbitrary;
use chrono::DateTime;
use chrono_tz::Tz;
use libfuzzer_sys::fuzz_target;

const ZONES: &[Tz] = &[
    Tz::UTC,
    Tz::Europe__Berlin,
    Tz::America__New_York,
    Tz::Australia__Lord_Howe,
    Tz::Asia__Kathmandu,
    Tz::Pacific__Chatham,
    Tz::America__Santiago,
];

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    zone: u8,
    /// Seconds after 2000-01-01, up to about 2100.
    at: u32,
    expr: &'a str,
}

fuzz_target!(|input: Input<'_>| {
    let tz = ZONES[usize::from(input.zone) % ZONES.len()];
    let Ok(s) = cron::Schedule::parse(input.expr, tz) else {
        return;
    };
    let Some(t) = DateTime::from_timestamp(946_684_800 + i64::from(input.at % 3_155_760_000), 0)
    else {
        return;
    };
    let Some(next) = s.next_after(t) else {
        return;
    };
    assert!(next > t, "{s:?}: next_after({t}) = {next}");
    if !s.with_seconds() {
        assert_eq!(next.timestamp() % 60, 0, "{s:?}: {next} is not on a minute");
    }
    if let Some(later) = s.next_after(next) {
        assert!(later > next, "{s:?}: next_after({next}) = {later}");
    }
});
