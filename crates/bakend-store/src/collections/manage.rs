//! Creating, changing and deleting collections at runtime (the admin API), with the same
//! validation and planner as start-up and `bak migrate`. Each operation is one write: checked
//! against the database inside the transaction, applied or refused as a whole, and followed by
//! its `system.collection.*` event and the registry update after the commit.

use std::sync::Arc;

use crate::sql::{Conn, OptionalExtension};
use bakend_core::{Event, EventSource, time};
use serde_json::Value;

use super::definition::{self, Parsed};
use super::migrate;
use super::registry::{Collection, Registry};
use super::sync::{create_in, load_all};
use crate::db::{Committed, Database};
use crate::error::StoreError;

fn event(kind: &str, name: &str) -> Event {
    Event::new(
        format!("system.collection.{kind}"),
        EventSource::Collections,
        serde_json::json!({ "name": name }),
    )
}

/// Parses a request body as a definition: the shape first (spec wording), then every rule.
fn parse_body(raw: &Value) -> Result<Parsed, StoreError> {
    let shaped = raw.get("name").is_some_and(Value::is_string)
        && raw.get("fields").is_some_and(Value::is_array);
    if !shaped {
        return Err(StoreError::Definition(
            "Request body must include name and fields".into(),
        ));
    }
    let parsed = definition::parse(raw).map_err(|e| StoreError::Definition(e.join("; ")))?;
    for w in &parsed.warnings {
        tracing::warn!("Collection \"{}\": {w}", parsed.def.name);
    }
    Ok(parsed)
}

fn check_relations(conn: &Conn, parsed: &Parsed) -> Result<(), StoreError> {
    let names: Vec<String> = load_all(conn)?.into_iter().map(|c| c.def.name).collect();
    definition::check_relations(&parsed.def, &|n| {
        n == parsed.def.name || names.iter().any(|x| x == n)
    })
    .map_err(|e| StoreError::Definition(e.join("; ")))
}

/// The message other servers on the database get when collection `name` changes
/// ([`peer_message`] reads it back): each reloads it from `_collections`.
pub fn peer_message(name: &str) -> String {
    format!("collection {name}")
}

/// The collection named by a message from another server, if it is one ([`peer_message`]).
pub fn collection_of(message: &str) -> Option<&str> {
    message.strip_prefix("collection ")
}

/// Tells the other servers (PostgreSQL) when this transaction commits.
fn tell_peers(
    conn: &Conn,
    peers: Option<&crate::db::sequencer::Peers>,
    name: &str,
) -> Result<(), StoreError> {
    if let Some(p) = peers {
        p.tell(conn, &peer_message(name))?;
    }
    Ok(())
}

/// Another server changed collection `name`: the registry takes what the database now holds
/// (removed when it is gone).
pub async fn reload(db: &Database, registry: &Arc<Registry>, name: &str) -> Result<(), StoreError> {
    let wanted = name.to_string();
    let found = db.read(move |conn| stored(conn, &wanted)).await?;
    match found {
        Some(c) => registry.put(Arc::new(c)),
        None => registry.remove(name),
    }
    Ok(())
}

fn stored(conn: &Conn, name: &str) -> Result<Option<Collection>, StoreError> {
    Ok(load_all(conn)?.into_iter().find(|c| c.def.name == name))
}

/// `POST /api/admin/collections`.
pub async fn create(
    db: &Database,
    registry: &Arc<Registry>,
    raw: Value,
) -> Result<Arc<Collection>, StoreError> {
    let parsed = parse_body(&raw)?;
    let registry = registry.clone();
    let peers = db.peers();
    db.write(move |conn| {
        super::schema::lock_collections(conn)?;
        let name = parsed.def.name.clone();
        let exists: Option<i64> = conn
            .query_row("SELECT 1 FROM _collections WHERE name = ?1", [&name], |r| {
                r.get(0)
            })
            .optional()?;
        if exists.is_some() {
            return Err(StoreError::Definition(format!(
                "Collection \"{name}\" already exists"
            )));
        }
        check_relations(conn, &parsed)?;
        let c = Arc::new(create_in(conn, &parsed)?);
        tell_peers(conn, peers.as_ref(), &name)?;
        let put = c.clone();
        Ok(Committed::new(c)
            .then(move || registry.put(put))
            .event(event("created", &name)))
    })
    .await
}

/// What an update did.
pub struct UpdateOutcome {
    pub collection: Arc<Collection>,
    pub changes: Vec<String>,
    /// Problems `force` pushed through.
    pub forced: Vec<migrate::Blocker>,
}

/// What a change of definition would do, worked out without making it (`PUT
/// /api/admin/collections/:name?dryRun=true`, the dashboard's plan preview).
pub struct Preview {
    pub plan: migrate::Plan,
    /// Every problem existing rows have with the change, forceable or not.
    pub blockers: Vec<migrate::Blocker>,
}

/// The checks [`update`] makes and the plan it would apply, read from a read connection: the
/// same parsing, name and relation checks, the same planner and the same per-row scan as
/// `bak migrate status`. Nothing is written and nothing is emitted. Writes that land between
/// the preview and the real update are checked again by the update itself.
pub async fn preview(db: &Database, name: &str, raw: Value) -> Result<Preview, StoreError> {
    let parsed = parse_body(&raw)?;
    if parsed.def.name != name {
        return Err(StoreError::Definition(
            "Collection name cannot be changed".into(),
        ));
    }
    let name = name.to_string();
    db.read(move |conn| {
        let old =
            stored(conn, &name)?.ok_or_else(|| StoreError::CollectionNotFound(name.clone()))?;
        check_relations(conn, &parsed)?;
        let plan = migrate::plan(&old.def, &parsed.def);
        let blockers = migrate::scan(conn, &old.def, &parsed.def, &plan)?;
        Ok(Preview { plan, blockers })
    })
    .await
}

/// `PUT /api/admin/collections/:name`. Emits `system.collection.updated` even when nothing
/// changed (as v1).
pub async fn update(
    db: &Database,
    registry: &Arc<Registry>,
    name: &str,
    raw: Value,
    force: bool,
) -> Result<UpdateOutcome, StoreError> {
    let parsed = parse_body(&raw)?;
    if parsed.def.name != name {
        return Err(StoreError::Definition(
            "Collection name cannot be changed".into(),
        ));
    }
    let registry = registry.clone();
    let name = name.to_string();
    let peers = db.peers();
    db.write(move |conn| {
        super::schema::lock_collections(conn)?;
        let old =
            stored(conn, &name)?.ok_or_else(|| StoreError::CollectionNotFound(name.clone()))?;
        check_relations(conn, &parsed)?;
        let plan = migrate::plan(&old.def, &parsed.def);
        let forced = migrate::execute(conn, &old.def, &parsed.def, &plan, force)?;
        let now = time::now_iso();
        conn.execute(
            "UPDATE _collections SET definition = ?1, updated_at = ?2 WHERE name = ?3",
            (parsed.raw.to_string(), &now, &name),
        )?;
        tell_peers(conn, peers.as_ref(), &name)?;
        let c = Arc::new(Collection::new(parsed.def, parsed.raw, old.created_at, now));
        let put = c.clone();
        Ok(Committed::new(UpdateOutcome {
            collection: c,
            changes: plan.changes,
            forced,
        })
        .then(move || registry.put(put))
        .event(event("updated", &name)))
    })
    .await
}

/// `DELETE /api/admin/collections/:name`: refused while relation fields point at it.
pub async fn delete(db: &Database, registry: &Arc<Registry>, name: &str) -> Result<(), StoreError> {
    let registry = registry.clone();
    let name = name.to_string();
    let peers = db.peers();
    db.write(move |conn| {
        super::schema::lock_collections(conn)?;
        let all = load_all(conn)?;
        if !all.iter().any(|c| c.def.name == name) {
            return Err(StoreError::CollectionNotFound(name));
        }
        let dependents: Vec<&str> = all
            .iter()
            .filter(|c| {
                c.def.name != name
                    && c.def
                        .fields
                        .iter()
                        .any(|f| f.collection.as_deref() == Some(name.as_str()))
            })
            .map(|c| c.def.name.as_str())
            .collect();
        if !dependents.is_empty() {
            return Err(StoreError::Definition(format!(
                "Cannot delete collection \"{name}\": referenced by relation fields in {}",
                dependents.join(", ")
            )));
        }
        super::schema::run(
            conn,
            &format!("DROP TABLE IF EXISTS {}", super::schema::quote(&name)),
        )?;
        super::schema::forget_statements(conn);
        conn.execute("DELETE FROM _collections WHERE name = ?1", [&name])?;
        super::counts::remove(conn, &name)?;
        tell_peers(conn, peers.as_ref(), &name)?;
        let gone = name.clone();
        Ok(Committed::new(())
            .then(move || registry.remove(&gone))
            .event(event("deleted", &name)))
    })
    .await
}
