//! Watching project folders for `bak dev` / `--watch`: file changes are debounced and reported
//! on a thread of their own, so a burst of saves (an editor writing a temp file, then renaming
//! it) causes one reload.

use std::path::Path;
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::thread::JoinHandle;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

/// Quiet time after the last change before the callback runs.
pub const DEBOUNCE: Duration = Duration::from_millis(150);

/// Stops watching when dropped.
pub struct DirWatcher {
    watcher: Option<notify::RecommendedWatcher>,
    thread: Option<JoinHandle<()>>,
}

impl DirWatcher {
    /// Watches `dir` recursively (creating it if missing) and calls `on_change` after each
    /// debounced burst of changes to `.ts` files.
    pub fn start<F>(dir: &Path, on_change: F) -> Result<DirWatcher, notify::Error>
    where
        F: Fn() + Send + 'static,
    {
        std::fs::create_dir_all(dir).map_err(notify::Error::io)?;
        let (tx, rx) = channel::<()>();
        let mut watcher =
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                if let Ok(ev) = res
                    && ev.paths.iter().any(|p| relevant(p.as_path()))
                {
                    let _ = tx.send(());
                }
            })?;
        watcher.watch(dir, RecursiveMode::Recursive)?;
        let name = format!(
            "bakend-watch-{}",
            dir.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        );
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                // Ends when the watcher (and with it the sender) is dropped.
                while rx.recv().is_ok() {
                    loop {
                        match rx.recv_timeout(DEBOUNCE) {
                            Ok(()) => continue,
                            Err(RecvTimeoutError::Timeout) => break,
                            Err(RecvTimeoutError::Disconnected) => return,
                        }
                    }
                    on_change();
                }
            })
            .map_err(notify::Error::io)?;
        Ok(DirWatcher {
            watcher: Some(watcher),
            thread: Some(thread),
        })
    }
}

fn relevant(p: &Path) -> bool {
    let ts = p.extension().is_some_and(|e| e == "ts");
    let cache = p.components().any(|c| c.as_os_str() == ".bakend-cache");
    // A removed or renamed directory shows up without an extension: reload to be safe.
    (ts || p.extension().is_none()) && !cache
}

impl Drop for DirWatcher {
    fn drop(&mut self) {
        drop(self.watcher.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
