//! When each job is next due, and which are due now. Pure: the caller passes the wall-clock
//! time, so clock jumps can be tested without waiting.
//!
//! * A due job fires **once**, however many of its ticks passed since the last look (a clock
//!   jumping forward, a suspended machine, a slow wake-up): the next tick is computed from now,
//!   so missed ticks are skipped, never replayed in a burst.
//! * A clock that goes back more than [`BACKWARD_TOLERANCE`] recomputes every next tick from the
//!   new time, so an hourly job keeps running hourly instead of waiting for the clock to catch
//!   up with the old schedule. (A fixed-time job whose time comes round again after the jump
//!   runs again; that is the lesser evil.)

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::definition::JobDef;

pub const BACKWARD_TOLERANCE: Duration = Duration::from_secs(2);

struct Slot {
    def: Arc<JobDef>,
    next: Option<DateTime<Utc>>,
}

pub struct Timetable {
    slots: Vec<Slot>,
    last: DateTime<Utc>,
}

impl Timetable {
    pub fn new(defs: &[Arc<JobDef>], now: DateTime<Utc>) -> Timetable {
        Timetable {
            slots: defs
                .iter()
                .map(|d| Slot {
                    def: d.clone(),
                    next: d.schedule.next_after(now),
                })
                .collect(),
            last: now,
        }
    }

    /// The jobs due at `now`, each once with the tick it is due for; their next ticks move
    /// past `now`.
    pub fn due(&mut self, now: DateTime<Utc>) -> Vec<(Arc<JobDef>, DateTime<Utc>)> {
        let back = self.last - now;
        if back.to_std().is_ok_and(|d| d > BACKWARD_TOLERANCE) {
            tracing::warn!(
                "The system clock went back by {} s; next job runs recomputed from now",
                back.num_seconds()
            );
            for s in &mut self.slots {
                s.next = s.def.schedule.next_after(now);
            }
            self.last = now;
            return Vec::new();
        }
        self.last = self.last.max(now);
        let mut due = Vec::new();
        for s in &mut self.slots {
            if let Some(tick) = s.next.filter(|n| *n <= now) {
                due.push((s.def.clone(), tick));
                s.next = s.def.schedule.next_after(now);
            }
        }
        due
    }

    /// How long until the earliest next tick (zero if one is due).
    pub fn wait(&self, now: DateTime<Utc>) -> Option<Duration> {
        self.slots
            .iter()
            .filter_map(|s| s.next)
            .min()
            .map(|n| (n - now).to_std().unwrap_or(Duration::ZERO))
    }

    /// Next tick of `name`, if scheduled.
    pub fn next_of(&self, name: &str) -> Option<DateTime<Utc>> {
        self.slots.iter().find(|s| s.def.name == name)?.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::{JobDefaults, JobSource};

    fn def(name: &str, schedule: &str) -> Arc<JobDef> {
        let src = JobSource {
            name: name.into(),
            file: format!("jobs/{name}.ts"),
            exports: serde_json::json!({ "schedule": schedule })
                .as_object()
                .cloned()
                .unwrap(),
            has_default: true,
        };
        Arc::new(JobDef::from_source(&src, &JobDefaults::default()).unwrap())
    }

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn names(v: &[(Arc<JobDef>, DateTime<Utc>)]) -> Vec<&str> {
        v.iter().map(|(d, _)| d.name.as_str()).collect()
    }

    #[test]
    fn fires_once_per_tick_and_not_at_load() {
        let mut tt = Timetable::new(&[def("m", "* * * * *")], t("2026-03-10T12:00:30Z"));
        assert!(
            tt.due(t("2026-03-10T12:00:59Z")).is_empty(),
            "no run at load"
        );
        assert_eq!(names(&tt.due(t("2026-03-10T12:01:00.004Z"))), ["m"]);
        assert!(
            tt.due(t("2026-03-10T12:01:00.500Z")).is_empty(),
            "same tick twice"
        );
        assert_eq!(
            tt.wait(t("2026-03-10T12:01:00.500Z")),
            Some(Duration::from_millis(59_500))
        );
        assert_eq!(names(&tt.due(t("2026-03-10T12:02:00Z"))), ["m"]);
    }

    #[test]
    fn forward_jump_fires_once_without_burst() {
        let mut tt = Timetable::new(&[def("m", "* * * * *")], t("2026-03-10T12:00:00Z"));
        // The clock leaps three hours: 180 ticks were missed; one run, then normal ticks.
        assert_eq!(names(&tt.due(t("2026-03-10T15:00:10Z"))), ["m"]);
        assert!(tt.due(t("2026-03-10T15:00:11Z")).is_empty());
        assert_eq!(tt.next_of("m"), Some(t("2026-03-10T15:01:00Z")));
    }

    #[test]
    fn backward_jump_recomputes_instead_of_stalling() {
        let mut tt = Timetable::new(&[def("h", "0 * * * *")], t("2026-03-10T12:30:00Z"));
        assert_eq!(tt.next_of("h"), Some(t("2026-03-10T13:00:00Z")));
        // Back two hours: the job must not wait until 13:00 (three hours of wall time).
        assert!(tt.due(t("2026-03-10T10:30:00Z")).is_empty());
        assert_eq!(tt.next_of("h"), Some(t("2026-03-10T11:00:00Z")));
        assert_eq!(names(&tt.due(t("2026-03-10T11:00:00Z"))), ["h"]);
        // A small step back (timer jitter, NTP slew) changes nothing.
        assert!(tt.due(t("2026-03-10T10:59:59Z")).is_empty());
        assert_eq!(tt.next_of("h"), Some(t("2026-03-10T12:00:00Z")));
    }

    #[test]
    fn several_jobs_due_together() {
        let mut tt = Timetable::new(
            &[
                def("a", "*/1 * * * * *"),
                def("b", "*/2 * * * * *"),
                def("c", "@daily"),
            ],
            t("2026-03-10T12:00:00.100Z"),
        );
        assert_eq!(names(&tt.due(t("2026-03-10T12:00:01Z"))), ["a"]);
        assert_eq!(names(&tt.due(t("2026-03-10T12:00:02Z"))), ["a", "b"]);
        assert_eq!(
            tt.wait(t("2026-03-10T12:00:02Z")),
            Some(Duration::from_secs(1))
        );
    }
}
