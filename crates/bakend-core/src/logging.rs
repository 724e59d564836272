//! The log sink: `[<ISO-8601 ms>] <LEVEL> <message>` lines on stderr (or JSON lines), an optional
//! file with size-based rotation, and an in-memory ring of recent entries for the admin API.
//!
//! Only Bakend's own crates log through it; dependency chatter (hyper, rusqlite) is dropped.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};

use crate::config::LogLevel;
use crate::time::now_iso;

const RING_CAPACITY: usize = 500;
/// The ring also holds at most this many bytes of entries: with every message near
/// [`MAX_MESSAGE_BYTES`], fewer than [`RING_CAPACITY`] entries are kept.
const RING_MAX_BYTES: usize = 1024 * 1024;
/// A log message (with its fields) is cut to this many bytes, on a character boundary, and
/// ends with [`TRUNCATED_MARK`]: one huge line (a function logging a 20 MiB string) must not
/// be copied to stderr, the log file and the ring whole.
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024;
/// Appended to a cut message, followed by the original size in bytes and `]`.
pub const TRUNCATED_MARK: &str = "… [truncated, ";
const ROTATE_AT_BYTES: u64 = 5 * 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct LogEntry {
    pub timestamp: String,
    pub level: &'static str,
    pub message: String,
    /// The message was longer than [`MAX_MESSAGE_BYTES`] and was cut (only sent when true).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

impl LogEntry {
    /// What the entry costs the ring, roughly: its strings.
    fn bytes(&self) -> usize {
        self.timestamp.len() + self.level.len() + self.message.len()
    }
}

/// Recent log entries, oldest first, bounded by count and by bytes.
#[derive(Default)]
pub struct LogRing {
    entries: Mutex<Ring>,
}

#[derive(Default)]
struct Ring {
    entries: VecDeque<LogEntry>,
    bytes: usize,
}

impl LogRing {
    pub fn snapshot(&self) -> Vec<LogEntry> {
        crate::sync::lock(&self.entries)
            .entries
            .iter()
            .cloned()
            .collect()
    }

    fn push(&self, entry: LogEntry) {
        let mut r = crate::sync::lock(&self.entries);
        r.bytes += entry.bytes();
        r.entries.push_back(entry);
        while r.entries.len() > RING_CAPACITY || (r.bytes > RING_MAX_BYTES && r.entries.len() > 1) {
            let Some(old) = r.entries.pop_front() else {
                break;
            };
            r.bytes -= old.bytes();
        }
    }
}

/// A `fmt::Write` that keeps the first `max` bytes (cut on a character boundary) and counts
/// the rest without storing it, so formatting a huge value never allocates it again.
struct Bounded {
    text: String,
    max: usize,
    /// Every byte offered, kept or not.
    total: usize,
}

impl Bounded {
    fn new(max: usize) -> Bounded {
        Bounded {
            text: String::new(),
            max,
            total: 0,
        }
    }

    fn truncated(&self) -> bool {
        self.total > self.text.len()
    }

    /// The kept text, with the truncation mark and the original size when something was cut.
    fn finish(mut self) -> (String, bool) {
        let truncated = self.truncated();
        if truncated {
            let _ = write!(self.text, "{TRUNCATED_MARK}{} bytes]", self.total);
        }
        (self.text, truncated)
    }
}

impl std::fmt::Write for Bounded {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        // Once something was cut, nothing more is kept: it would not follow what was.
        let already_cut = self.truncated();
        self.total = self.total.saturating_add(s.len());
        if !already_cut {
            let mut end = self.max.saturating_sub(self.text.len()).min(s.len());
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            self.text.push_str(&s[..end]);
        }
        Ok(())
    }
}

struct FileSink {
    path: PathBuf,
    file: Option<File>,
}

impl FileSink {
    fn write_line(&mut self, line: &str) {
        // Write errors are ignored on purpose: logging must never take the server down.
        if let Ok(meta) = std::fs::metadata(&self.path)
            && meta.len() >= ROTATE_AT_BYTES
        {
            self.file = None;
            let one = self.path.with_extension(rotated_ext(&self.path, 1));
            let two = self.path.with_extension(rotated_ext(&self.path, 2));
            let _ = std::fs::rename(&one, &two);
            let _ = std::fs::rename(&self.path, &one);
        }
        if self.file.is_none() {
            if let Some(parent) = self.path.parent() {
                let _ = std::fs::create_dir_all(parent);
            }
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .ok();
        }
        if let Some(f) = self.file.as_mut() {
            let _ = f.write_all(line.as_bytes());
        }
    }
}

fn rotated_ext(path: &std::path::Path, n: u32) -> String {
    match path.extension() {
        Some(ext) => format!("{}.{n}", ext.to_string_lossy()),
        None => n.to_string(),
    }
}

struct BakendLayer {
    level: LogLevel,
    format: LogFormat,
    file: Option<Mutex<FileSink>>,
    ring: Arc<LogRing>,
}

fn level_of(l: &Level) -> LogLevel {
    match *l {
        Level::ERROR => LogLevel::Error,
        Level::WARN => LogLevel::Warn,
        Level::INFO => LogLevel::Info,
        _ => LogLevel::Debug,
    }
}

fn is_ours(meta: &Metadata<'_>) -> bool {
    let t = meta.target();
    t.starts_with("bak")
}

/// Other fields (`function=…`, `error=…`) are cut shorter than the message.
const MAX_FIELD_BYTES: usize = 1024;

/// The event's message and its other fields, each written into a bounded buffer as visited.
struct Fields {
    message: Bounded,
    extra: Vec<(&'static str, String)>,
    extra_truncated: bool,
}

impl Default for Fields {
    fn default() -> Fields {
        Fields {
            message: Bounded::new(MAX_MESSAGE_BYTES),
            extra: Vec::new(),
            extra_truncated: false,
        }
    }
}

impl Fields {
    fn push_extra(&mut self, name: &'static str, value: Bounded) {
        let (v, cut) = value.finish();
        self.extra_truncated |= cut;
        self.extra.push((name, v));
    }

    /// The line's message: the (possibly cut) message, then ` key=value` per other field.
    fn finish(self) -> (String, bool) {
        let (mut text, cut) = self.message.finish();
        for (k, v) in &self.extra {
            let _ = write!(text, " {k}={v}");
        }
        (text, cut || self.extra_truncated)
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            let _ = self.message.write_str(value);
        } else {
            let mut v = Bounded::new(MAX_FIELD_BYTES);
            let _ = v.write_str(value);
            self.push_extra(field.name(), v);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let mut v = Bounded::new(MAX_FIELD_BYTES);
            let _ = write!(v, "{value:?}");
            self.push_extra(field.name(), v);
        }
    }
}

impl<S: Subscriber> Layer<S> for BakendLayer {
    fn enabled(&self, meta: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        is_ours(meta) && level_of(meta.level()) >= self.level
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        if !is_ours(meta) || level_of(meta.level()) < self.level {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let level = level_of(meta.level()).as_str();
        let timestamp = now_iso();
        let (message, truncated) = fields.finish();
        let line = match self.format {
            LogFormat::Text => format!("[{timestamp}] {level} {message}\n"),
            LogFormat::Json => {
                let mut obj = serde_json::Map::new();
                obj.insert("timestamp".into(), timestamp.clone().into());
                obj.insert("level".into(), level.into());
                obj.insert("message".into(), message.clone().into());
                obj.insert("target".into(), meta.target().into());
                format!("{}\n", serde_json::Value::Object(obj))
            }
        };
        let _ = std::io::stderr().write_all(line.as_bytes());
        if let Some(file) = &self.file {
            crate::sync::lock(file).write_line(&line);
        }
        self.ring.push(LogEntry {
            timestamp,
            level,
            message,
            truncated,
        });
    }
}

/// Installs the global log sink. Returns the ring of recent entries. Installing twice (tests
/// start many servers in one process) keeps the first sink and returns a fresh, unused ring.
pub fn install(level: LogLevel, format: LogFormat, file: Option<PathBuf>) -> Arc<LogRing> {
    let ring = Arc::new(LogRing::default());
    let layer = BakendLayer {
        level,
        format,
        file: file.map(|path| Mutex::new(FileSink { path, file: None })),
        ring: ring.clone(),
    };
    let subscriber = tracing_subscriber::registry().with(layer);
    if tracing::subscriber::set_global_default(subscriber).is_ok() {
        let _ = INSTALLED.set(ring.clone());
    }
    ring
}

/// The ring of the installed sink, for `GET /api/admin/logs`.
static INSTALLED: std::sync::OnceLock<Arc<LogRing>> = std::sync::OnceLock::new();

/// Recent entries of the installed sink, oldest first (empty when none is installed, as in
/// tests that run servers in-process).
pub fn recent() -> Vec<LogEntry> {
    INSTALLED.get().map(|r| r.snapshot()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_sink_rotates_at_the_size_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs").join("bakend.log");
        let mut sink = FileSink {
            path: path.clone(),
            file: None,
        };
        sink.write_line("first\n");
        std::fs::write(&path, vec![b'x'; ROTATE_AT_BYTES as usize]).unwrap();
        sink.write_line("second\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "second\n");
        let rotated = dir.path().join("logs").join("bakend.log.1");
        assert_eq!(std::fs::metadata(rotated).unwrap().len(), ROTATE_AT_BYTES);
    }

    #[test]
    fn ring_keeps_the_newest_entries() {
        let ring = LogRing::default();
        for i in 0..(RING_CAPACITY + 10) {
            ring.push(LogEntry {
                timestamp: String::new(),
                level: "INFO",
                message: i.to_string(),
                truncated: false,
            });
        }
        let all = ring.snapshot();
        assert_eq!(all.len(), RING_CAPACITY);
        assert_eq!(all[0].message, "10");
    }

    #[test]
    fn ring_is_bounded_by_bytes_too() {
        let ring = LogRing::default();
        for i in 0..RING_CAPACITY {
            ring.push(LogEntry {
                timestamp: String::new(),
                level: "INFO",
                message: format!("{i} {}", "x".repeat(MAX_MESSAGE_BYTES)),
                truncated: false,
            });
        }
        let all = ring.snapshot();
        let bytes: usize = all.iter().map(LogEntry::bytes).sum();
        assert!(bytes <= RING_MAX_BYTES, "{bytes}");
        assert!(
            all.len() < RING_CAPACITY && all.len() >= RING_MAX_BYTES / (MAX_MESSAGE_BYTES + 8) - 1
        );
        let last = format!("{} ", RING_CAPACITY - 1);
        assert!(
            all[all.len() - 1].message.starts_with(&last),
            "the newest is kept"
        );
    }

    #[test]
    fn a_long_message_is_cut_on_a_char_boundary_and_marked() {
        let mut b = Bounded::new(10);
        let _ = b.write_str("aaaaaaaaaé");
        let _ = write!(b, "{}", "é".repeat(100));
        let (text, truncated) = b.finish();
        assert!(truncated);
        // 10 bytes would end inside "é": the cut stays on a boundary, after the nine "a".
        assert_eq!(text, format!("aaaaaaaaa{TRUNCATED_MARK}211 bytes]"));

        let mut b = Bounded::new(10);
        let _ = b.write_str("short");
        assert_eq!(b.finish(), ("short".to_string(), false));
    }

    #[test]
    fn a_cut_message_keeps_its_fields_after_the_mark() {
        let mut f = Fields::default();
        let _ = write!(f.message, "{}", "y".repeat(MAX_MESSAGE_BYTES + 5));
        let mut file = Bounded::new(MAX_FIELD_BYTES);
        let _ = write!(file, "functions/a.ts");
        f.push_extra("function", file);
        let (text, truncated) = f.finish();
        assert!(truncated);
        let mark = format!("{TRUNCATED_MARK}{} bytes]", MAX_MESSAGE_BYTES + 5);
        assert_eq!(
            text,
            format!(
                "{}{mark} function=functions/a.ts",
                "y".repeat(MAX_MESSAGE_BYTES)
            )
        );

        let mut f = Fields::default();
        let _ = write!(f.message, "small");
        let mut err = Bounded::new(MAX_FIELD_BYTES);
        let _ = write!(err, "{}", "e".repeat(5000));
        f.push_extra("error", err);
        let (text, truncated) = f.finish();
        assert!(truncated, "a cut field marks the entry too");
        assert!(text.len() < 1200, "{}", text.len());
    }
}
