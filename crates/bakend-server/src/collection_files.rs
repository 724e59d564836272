//! Keeps the project's `collections/*.json` in step with collection changes made while the
//! server runs: through this server's admin API, or through another server on the same
//! database (each node of a cluster has its own copy of the project folder, and the next start
//! of a node reads its copy: a stale file would then be refused, or taken for a change to
//! make).

use std::path::Path;
use std::sync::{Arc, Mutex};

use bakend_store::collections::files;
use bakend_store::collections::registry::Registry;

/// Makes `project_dir/collections` say what `registry` holds now for collection `name`: its
/// definition, in the file that defines it (or a new `<name>.json`), or no file when it is gone.
/// Writes take turns, each writing the registry's newest definition, so the file ends with the
/// newest whichever way two changes arrive (this node's admin API, another node's). The
/// database change already stands, so a failure here is logged, not returned.
pub async fn write_back(project_dir: &Path, name: &str, registry: &Arc<Registry>) {
    static TURNS: Mutex<()> = Mutex::new(());
    let dir = project_dir.join("collections");
    let (name, registry) = (name.to_string(), registry.clone());
    let done = tokio::task::spawn_blocking(move || {
        let _turn = bakend_core::sync::lock(&TURNS);
        match registry.get(&name) {
            Some(c) => files::write_definition(&dir, &name, &c.raw).map(Some),
            None => files::remove_definition(&dir, &name),
        }
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
