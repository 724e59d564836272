//! This server as a node of a cluster (docs/cluster.md): its name, its NATS link, its
//! heartbeat in `_nodes` (with how far its triggers have run), taking over what a lost node
//! left (the triggers of its last events), and the realtime stats of every node for
//! `GET /api/admin/realtime`.
//!
//! On SQLite there is one node (this one) and nothing is written; on PostgreSQL every server
//! sharing the database is a node, with or without NATS.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bakend_core::config::Config;
use bakend_core::{Event, SharedEvent, sync};
use bakend_events::{ConsumerInfo, EventBus, EventStream};
use bakend_functions::FunctionsHost;
use bakend_realtime::Hub;
use bakend_store::db::nodes;
use bakend_store::db::sequencer::Sequencer;
use bakend_store::{Committed, Database};
use serde_json::{Map, Value, json};
use tokio::task::JoinHandle;

pub struct Cluster {
    pub node_id: String,
    started_at: i64,
    db: Arc<Database>,
    /// PostgreSQL with the journal on: other nodes may share the database.
    sequencer: Option<Arc<Sequencer>>,
    link: Option<Arc<bakend_cluster::Link>>,
    heartbeat: Mutex<Option<JoinHandle<()>>>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Cluster {
    /// Joins the cluster: connects to NATS (in the background) when `cluster.nats` is set.
    /// Other nodes' events without a seq (function lifecycle) are emitted on `bus`.
    pub async fn start(
        config: &Config,
        db: &Arc<Database>,
        bus: Arc<dyn EventBus>,
    ) -> Result<Arc<Cluster>, bakend_cluster::ClusterError> {
        let sequencer = db.sequencer().cloned();
        let node_id = match &sequencer {
            Some(s) => s.id.clone(),
            None => config
                .cluster
                .node_id
                .clone()
                .unwrap_or_else(|| "local".into()),
        };
        let link = match (&config.cluster.nats, &sequencer, db.journal()) {
            (Some(url), Some(seq), Some(journal)) => {
                let link = bakend_cluster::Link::start(
                    url,
                    &journal.epoch,
                    &node_id,
                    seq.clone(),
                    Box::new(move |envelope| emit_volatile(bus.as_ref(), envelope)),
                )
                .await?;
                Some(Arc::new(link))
            }
            (Some(_), _, _) => {
                tracing::warn!(
                    "cluster.nats is set but the event journal is off (realtime.journal): events do not travel between nodes"
                );
                None
            }
            _ => None,
        };
        Ok(Arc::new(Cluster {
            node_id,
            started_at: now_ms(),
            db: db.clone(),
            sequencer,
            link,
            heartbeat: Mutex::new(None),
        }))
    }

    /// The bus for what emits events without a seq (the functions host, jobs): with NATS,
    /// they reach the other nodes' clients too ([`ForwardingBus`]).
    pub fn bus_for_unjournaled(&self, bus: Arc<dyn EventBus>) -> Arc<dyn EventBus> {
        match &self.link {
            Some(link) => Arc::new(ForwardingBus {
                inner: bus,
                link: link.clone(),
            }),
            None => bus,
        }
    }

    /// PostgreSQL: writes this node's heartbeat (with its stats and trigger progress) every
    /// [`nodes::HEARTBEAT`] until [`Cluster::leave`], and takes over lost nodes — first its
    /// own row from an earlier life (a node restarted with the same `cluster.nodeId`).
    pub fn spawn_heartbeat(self: &Arc<Self>, hub: Arc<Hub>, functions: Arc<FunctionsHost>) {
        if self.sequencer.is_none() {
            return;
        }
        let weak: Weak<Cluster> = Arc::downgrade(self);
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(nodes::HEARTBEAT);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut beats: u64 = 0;
            loop {
                tick.tick().await;
                let Some(me) = weak.upgrade() else { return };
                // At start (its own old row) and every other beat after.
                if beats.is_multiple_of(2) {
                    me.take_over_lost(&functions, beats == 0).await;
                }
                beats += 1;
                let stats = me.local_stats(&hub).to_string();
                let (id, started) = (me.node_id.clone(), me.started_at);
                let done = functions.triggers_done();
                let db = me.db.clone();
                drop(me);
                let wrote = db
                    .write_single(move |conn| {
                        let beat = nodes::Beat {
                            id: &id,
                            started_at: started,
                            now: now_ms(),
                            stats: &stats,
                            triggers_done: done,
                        };
                        nodes::beat(conn, &beat).map(Committed::new)
                    })
                    .await;
                if let Err(e) = wrote {
                    tracing::warn!("Writing this node's heartbeat failed: {e}");
                }
            }
        });
        *sync::lock(&self.heartbeat) = Some(task);
    }

    /// Takes over the nodes not seen for [`nodes::ALIVE`] (and, at start, this node's own
    /// row from an earlier life): runs the triggers of the events each committed after the
    /// point its heartbeat last reported — at least once (some may have run already).
    async fn take_over_lost(&self, functions: &FunctionsHost, at_start: bool) {
        let since = now_ms() - nodes::ALIVE.as_millis() as i64;
        let me = at_start.then(|| self.node_id.clone());
        let taken = self
            .db
            .write(move |conn| nodes::take_over(conn, me.as_deref(), since).map(Committed::new))
            .await;
        let taken = match taken {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!("Looking for lost nodes failed: {e}");
                return;
            }
        };
        for (node, done) in taken {
            let Some(mut after) = done else {
                continue; // it ran no triggers
            };
            let mut runs = 0;
            loop {
                let n = node.clone();
                let page = self
                    .db
                    .read(move |conn| {
                        Ok(bakend_store::db::journal::node_events_after(
                            conn, &n, after, 1000,
                        )?)
                    })
                    .await;
                let page = match page {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::error!("Reading the events of lost node {node} failed: {e}");
                        break;
                    }
                };
                let Some(last) = page.last().map(|e| e.seq) else {
                    break;
                };
                after = last;
                let events: Vec<bakend_core::Event> =
                    page.iter().filter_map(|e| e.event().ok()).collect();
                runs += events.len();
                functions.run_recovered(events);
            }
            if runs > 0 {
                tracing::warn!(
                    "Node {node} stopped answering: running the triggers of {runs} event(s) it committed after its last report (at least once: some may have run there already)"
                );
            }
        }
    }

    /// Stops the heartbeat and removes this node's row, so the others stop counting it at once.
    pub async fn leave(&self) {
        if let Some(task) = sync::lock(&self.heartbeat).take() {
            task.abort();
        }
        if self.sequencer.is_some() {
            let id = self.node_id.clone();
            let left = self
                .db
                .write_single(move |conn| nodes::leave(conn, &id).map(Committed::new))
                .await;
            if let Err(e) = left {
                tracing::warn!("Removing this node from _nodes failed: {e}");
            }
        }
    }

    /// This node's realtime stats, with how events travel between nodes (`cluster`).
    pub fn local_stats(&self, hub: &Hub) -> Value {
        let mut stats = hub.stats_json();
        let link = self.link.as_ref().map(|l| l.stats());
        let nats = match &link {
            Some(l) if l.connected => "connected",
            Some(_) => "disconnected",
            None => "off",
        };
        let cluster = match &self.sequencer {
            Some(seq) => {
                let c = seq.counts();
                let load =
                    |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
                json!({
                    "nats": nats,
                    "published": load(&c.published),
                    "received": load(&c.received),
                    "filledFromJournal": load(&c.filled_from_journal),
                    "unreadable": load(&c.unreadable),
                    "dropped": link.map_or(0, |l| l.dropped),
                })
            }
            None => json!({"nats": nats}),
        };
        if let Some(obj) = stats.as_object_mut() {
            obj.insert("cluster".into(), cluster);
        }
        stats
    }

    /// `GET /api/admin/realtime`: the totals of every live node at the top level (the keys a
    /// single server always had; `queueCapacity` is this node's, `queueHighWater` the highest),
    /// and `nodes`: each node's own, this one live, the others as of their last heartbeat (at
    /// most [`nodes::HEARTBEAT`] old).
    pub async fn realtime_stats(&self, hub: &Hub) -> Value {
        let mine = self.local_stats(hub);
        let mut nodes: Vec<(String, Value)> = Vec::new();
        if self.sequencer.is_some() {
            let since = now_ms() - nodes::ALIVE.as_millis() as i64;
            match self
                .db
                .read(move |conn| nodes::seen_since(conn, since))
                .await
            {
                Ok(rows) => {
                    for row in rows {
                        if row.id != self.node_id
                            && let Ok(stats) = serde_json::from_str::<Value>(&row.stats)
                        {
                            nodes.push((row.id, stats));
                        }
                    }
                }
                Err(e) => tracing::warn!("Reading the other nodes' stats failed: {e}"),
            }
        }
        nodes.push((self.node_id.clone(), mine.clone()));
        nodes.sort_by(|a, b| a.0.cmp(&b.0));
        let mut total = totals(nodes.iter().map(|(_, s)| s), &mine);
        let list: Vec<Value> = nodes
            .into_iter()
            .map(|(id, stats)| {
                let mut node = Map::new();
                node.insert("id".into(), Value::String(id));
                if let Value::Object(o) = stats {
                    node.extend(o);
                }
                Value::Object(node)
            })
            .collect();
        total.insert("node".into(), Value::String(self.node_id.clone()));
        total.insert("nodes".into(), Value::Array(list));
        Value::Object(total)
    }
}

/// Another node's event without a seq, emitted here for this node's clients (`remote`: its
/// functions do not run for it). An envelope that does not read is left out.
fn emit_volatile(bus: &dyn EventBus, envelope: &[u8]) {
    let event = std::str::from_utf8(envelope)
        .ok()
        .and_then(|text| Event::from_journal(text, None).ok());
    match event {
        Some(mut event) if event.seq.is_none() => {
            event.remote = true;
            bus.emit(event);
        }
        _ => tracing::debug!("Cluster: an unreadable event from NATS was left out"),
    }
}

/// The bus the functions host and jobs emit on: every event goes to this node's consumers, and
/// one without a seq (not journaled, so not carried with the commit groups) also to the other
/// nodes, as its envelope (serialized once, shared with this node's sockets).
struct ForwardingBus {
    inner: Arc<dyn EventBus>,
    link: Arc<bakend_cluster::Link>,
}

impl EventBus for ForwardingBus {
    fn emit(&self, event: Event) -> SharedEvent {
        let event = self.inner.emit(event);
        if event.seq.is_none() && !event.remote {
            let envelope = event.envelope_json();
            self.link
                .publish_volatile(bytes::Bytes::from_owner(ArcBytes(envelope)));
        }
        event
    }

    fn subscribe(&self, consumer: &str, capacity: usize) -> EventStream {
        self.inner.subscribe(consumer, capacity)
    }

    fn emitted(&self) -> u64 {
        self.inner.emitted()
    }

    fn consumers(&self) -> Vec<ConsumerInfo> {
        self.inner.consumers()
    }
}

/// The shared envelope text as bytes for NATS, without a copy.
struct ArcBytes(Arc<str>);

impl AsRef<[u8]> for ArcBytes {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(task) = sync::lock(&self.heartbeat).take() {
            task.abort();
        }
    }
}

/// Sums the nodes' counters (also inside `cluster`); `queueHighWater` is the highest,
/// `queueCapacity` and `cluster.nats` are this node's.
fn totals<'a>(all: impl Iterator<Item = &'a Value> + Clone, mine: &Value) -> Map<String, Value> {
    fn sum(all: &[&Map<String, Value>], key: &str) -> Value {
        json!(all.iter().filter_map(|m| m.get(key)?.as_u64()).sum::<u64>())
    }
    let maps: Vec<&Map<String, Value>> = all.clone().filter_map(Value::as_object).collect();
    let mut out = Map::new();
    let Some(mine) = mine.as_object() else {
        return out;
    };
    for (key, value) in mine {
        let total = match key.as_str() {
            "queueCapacity" => value.clone(),
            "queueHighWater" => json!(
                maps.iter()
                    .filter_map(|m| m.get(key)?.as_u64())
                    .max()
                    .unwrap_or(0)
            ),
            "cluster" => {
                let inner: Vec<&Map<String, Value>> = maps
                    .iter()
                    .filter_map(|m| m.get("cluster")?.as_object())
                    .collect();
                let mut c = Map::new();
                if let Some(own) = value.as_object() {
                    for (k, v) in own {
                        let t = if v.is_u64() {
                            sum(&inner, k)
                        } else {
                            v.clone()
                        };
                        c.insert(k.clone(), t);
                    }
                }
                Value::Object(c)
            }
            _ if value.is_u64() => sum(&maps, key),
            _ => value.clone(),
        };
        out.insert(key.clone(), total);
    }
    out
}

/// How long `bak` waits at most for its heartbeat write when stopping.
pub const LEAVE_TIMEOUT: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn totals_sum_counters_and_keep_what_does_not_add_up() {
        let a = json!({"connections": 2, "queueHighWater": 7, "queueCapacity": 256,
                       "cluster": {"nats": "connected", "received": 5}});
        let b = json!({"connections": 3, "queueHighWater": 4, "queueCapacity": 512,
                       "cluster": {"nats": "disconnected", "received": 1}});
        let t = super::totals([&a, &b].into_iter(), &a);
        assert_eq!(
            serde_json::Value::Object(t),
            json!({"connections": 5, "queueHighWater": 7, "queueCapacity": 256,
                   "cluster": {"nats": "connected", "received": 6}})
        );
    }
}
