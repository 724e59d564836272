//! The Prometheus text exposition format, version 0.0.4: `# HELP` and `# TYPE` before each
//! family, then `name{label="value",…} value` lines. Small enough to write by hand.

use std::fmt::{Display, Write};

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Default)]
pub struct Exposition {
    out: String,
}

pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Exposition {
    pub fn finish(self) -> String {
        self.out
    }

    /// Starts a family; its samples follow.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.out.push_str(name);
        self.labels(labels, None);
        let _ = writeln!(self.out, " {value}");
    }

    /// A family of one unlabelled sample.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: impl Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// One histogram's samples: cumulative `_bucket`s (`le` from `bounds`, then `+Inf`), `_sum`
    /// and `_count`. `counts` holds a count per bucket, the last above every bound; the count
    /// is their total, so `+Inf` and `_count` always agree.
    pub fn histogram(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        bounds: &[&str],
        counts: &[u64],
        sum: f64,
    ) {
        let mut total = 0u64;
        for (i, n) in counts.iter().enumerate() {
            total += n;
            let le = bounds.get(i).copied().unwrap_or("+Inf");
            let _ = write!(self.out, "{name}_bucket");
            self.labels(labels, Some(le));
            let _ = writeln!(self.out, " {total}");
        }
        let _ = write!(self.out, "{name}_sum");
        self.labels(labels, None);
        let _ = writeln!(self.out, " {sum}");
        let _ = write!(self.out, "{name}_count");
        self.labels(labels, None);
        let _ = writeln!(self.out, " {total}");
    }

    fn labels(&mut self, labels: &[(&str, &str)], le: Option<&str>) {
        if labels.is_empty() && le.is_none() {
            return;
        }
        self.out.push('{');
        let le = le.map(|v| ("le", v));
        for (i, (k, v)) in labels.iter().copied().chain(le).enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            let _ = write!(self.out, "{k}=\"");
            for c in v.chars() {
                match c {
                    '\\' => self.out.push_str("\\\\"),
                    '"' => self.out.push_str("\\\""),
                    '\n' => self.out.push_str("\\n"),
                    c => self.out.push(c),
                }
            }
            self.out.push('"');
        }
        self.out.push('}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_samples_and_escaping() {
        let mut e = Exposition::default();
        e.family("x_total", Kind::Counter, "Things.\nMore \\ text");
        e.sample("x_total", &[("a", "q\"b\\c\nd"), ("b", "2")], 3);
        e.single("y", Kind::Gauge, "Y.", 1.5);
        assert_eq!(
            e.finish(),
            "# HELP x_total Things.\\nMore \\\\ text\n# TYPE x_total counter\n\
             x_total{a=\"q\\\"b\\\\c\\nd\",b=\"2\"} 3\n\
             # HELP y Y.\n# TYPE y gauge\ny 1.5\n"
        );
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_at_count() {
        let mut e = Exposition::default();
        e.histogram("h", &[("r", "x")], &["0.1", "1"], &[2, 0, 3], 4.25);
        assert_eq!(
            e.finish(),
            "h_bucket{r=\"x\",le=\"0.1\"} 2\nh_bucket{r=\"x\",le=\"1\"} 2\n\
             h_bucket{r=\"x\",le=\"+Inf\"} 5\nh_sum{r=\"x\"} 4.25\nh_count{r=\"x\"} 5\n"
        );
    }
}
