//! Keeps the project's `collections/*.json` in step with collection changes made while the
//! server runs: through this server's admin API, or through another server on the same
//! database (each node of a cluster has its own copy of the project folder, and the next start
//! of a node reads its copy: a stale file would then be refused, or taken for a change to
//! make).

use std::path::Path;

use bakend_store::collections::files;
use serde_json::Value;

/// Writes collection `name`'s definition `raw` to the file that defines it (or a new
/// `<name>.json`) in `project_dir/collections`, or removes that file when `raw` is `None` (the
/// collection was deleted). The database change already stands, so a failure here is logged,
/// not returned.
pub async fn write_back(project_dir: &Path, name: &str, raw: Option<Value>) {
    let dir = project_dir.join("collections");
    let name = name.to_string();
    let done = tokio::task::spawn_blocking(move || match raw {
        Some(raw) => files::write_definition(&dir, &name, &raw).map(Some),
        None => files::remove_definition(&dir, &name),
    })
    .await;
    match done {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::error!(
            "Could not update the definition file in collections/: {e}; run `bak migrate export` before the next start"
        ),
        Err(e) => tracing::error!("Definition file task failed: {e}"),
    }
}
