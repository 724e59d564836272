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
}

/// Recent log entries, oldest first.
#[derive(Default)]
pub struct LogRing {
    entries: Mutex<VecDeque<LogEntry>>,
}

impl LogRing {
    pub fn snapshot(&self) -> Vec<LogEntry> {
        match self.entries.lock() {
            Ok(e) => e.iter().cloned().collect(),
            Err(_) => Vec::new(),
        }
    }

    fn push(&self, entry: LogEntry) {
        if let Ok(mut e) = self.entries.lock() {
            if e.len() == RING_CAPACITY {
                e.pop_front();
            }
            e.push_back(entry);
        }
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

#[derive(Default)]
struct Fields {
    message: String,
    extra: Vec<(&'static str, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.extra.push((field.name(), value.to_string()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.extra.push((field.name(), format!("{value:?}")));
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
        let mut message = fields.message;
        for (k, v) in &fields.extra {
            let _ = write!(message, " {k}={v}");
        }
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
        if let Some(file) = &self.file
            && let Ok(mut f) = file.lock()
        {
            f.write_line(&line);
        }
        self.ring.push(LogEntry {
            timestamp,
            level,
            message,
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
            });
        }
        let all = ring.snapshot();
        assert_eq!(all.len(), RING_CAPACITY);
        assert_eq!(all[0].message, "10");
    }
}
