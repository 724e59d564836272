//! Reads every subsystem's counters and writes them as one exposition (docs/metrics.md lists
//! each family). Only atomics and short-held locks are read: a scrape never waits on the
//! database, the hub task or a JS worker.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use bakend_events::ConsumerInfo;
use serde_json::Value;

use super::exposition::{Exposition, Kind};
use super::http::BOUNDS;
use crate::state::AppState;

fn load(c: &AtomicU64) -> u64 {
    c.load(Relaxed)
}

pub fn render(state: &AppState) -> String {
    let mut e = Exposition::default();
    e.family(
        "bakend_build_info",
        Kind::Gauge,
        "Always 1; the version running.",
    );
    e.sample("bakend_build_info", &[("version", bakend_core::VERSION)], 1);
    http(&mut e, state);
    realtime(&mut e, state);
    events(&mut e, state);
    jobs(&mut e, state);
    functions(&mut e, state);
    database(&mut e, state);
    e.finish()
}

fn http(e: &mut Exposition, state: &AppState) {
    let name = "bakend_http_requests_total";
    e.family(
        name,
        Kind::Counter,
        "HTTP requests answered, by method, route template and status.",
    );
    for (method, route, status, n) in state.http_metrics.requests() {
        e.sample(
            name,
            &[("method", method), ("route", route), ("status", &status)],
            n,
        );
    }
    let name = "bakend_http_request_duration_seconds";
    e.family(
        name,
        Kind::Histogram,
        "Time from request to response head, by route template.",
    );
    for l in state.http_metrics.latency() {
        e.histogram(
            name,
            &[("route", l.route)],
            &BOUNDS,
            &l.buckets,
            l.sum_seconds,
        );
    }
}

fn realtime(e: &mut Exposition, state: &AppState) {
    // The hub publishes its counters as the admin API's JSON; read the same numbers.
    let s = state.realtime.stats_json();
    let n = |key: &str| s.get(key).and_then(Value::as_u64).unwrap_or(0);
    for (name, kind, help, key) in [
        (
            "bakend_realtime_connections",
            Kind::Gauge,
            "Open WebSocket connections.",
            "connections",
        ),
        (
            "bakend_realtime_subscriptions",
            Kind::Gauge,
            "Channel subscriptions held by open connections.",
            "subscriptions",
        ),
        (
            "bakend_realtime_events_in_total",
            Kind::Counter,
            "Events the realtime hub took from the bus.",
            "eventsIn",
        ),
        (
            "bakend_realtime_frames_out_total",
            Kind::Counter,
            "Frames queued to connections (deliveries).",
            "framesOut",
        ),
        (
            "bakend_realtime_slow_consumer_closes_total",
            Kind::Counter,
            "Connections closed with 4008 because their queue was full.",
            "slowConsumerCloses",
        ),
        (
            "bakend_realtime_token_expired_closes_total",
            Kind::Counter,
            "Connections closed with 4001 because their token expired.",
            "tokenExpiredCloses",
        ),
        (
            "bakend_realtime_delivery_wait_timeouts_total",
            Kind::Counter,
            "Writes answered before their event reached the sockets (the hub was over 2 s behind).",
            "deliveryWaitTimeouts",
        ),
        (
            "bakend_realtime_queue_high_water",
            Kind::Gauge,
            "Deepest any connection's outbound queue has been, in frames.",
            "queueHighWater",
        ),
        (
            "bakend_realtime_queue_capacity",
            Kind::Gauge,
            "Frames one connection may have queued (realtime.queueCapacity).",
            "queueCapacity",
        ),
    ] {
        e.single(name, kind, help, n(key));
    }
    cluster(e, state);
}

/// How events travel between the nodes of a cluster (this node's own; PostgreSQL only).
fn cluster(e: &mut Exposition, state: &AppState) {
    let s = state.cluster.local_stats(&state.realtime);
    let c = &s["cluster"];
    let Some(nats) = c["nats"].as_str() else {
        return;
    };
    e.single(
        "bakend_cluster_nats_connected",
        Kind::Gauge,
        "1 while this node is connected to the cluster's NATS (0: disconnected or not configured).",
        u64::from(nats == "connected"),
    );
    for (name, help, key) in [
        (
            "bakend_cluster_published_total",
            "Commit groups this node sent to the other nodes over NATS.",
            "published",
        ),
        (
            "bakend_cluster_received_total",
            "Other nodes' events that NATS brought to this node.",
            "received",
        ),
        (
            "bakend_cluster_filled_from_journal_total",
            "Other nodes' events this node read from the journal while NATS is configured (lost or late messages, a broker outage).",
            "filledFromJournal",
        ),
        (
            "bakend_cluster_dropped_total",
            "Commit groups this node could not hand to NATS (their events travel through the journal).",
            "dropped",
        ),
    ] {
        if let Some(v) = c[key].as_u64() {
            e.single(name, Kind::Counter, help, v);
        }
    }
}

/// Consumers that share a name (a restarted dispatcher, say) are added up: one series each.
fn by_name(consumers: Vec<ConsumerInfo>) -> Vec<ConsumerInfo> {
    let mut out: Vec<ConsumerInfo> = Vec::new();
    for c in consumers {
        match out.iter_mut().find(|o| o.name == c.name) {
            Some(o) => {
                o.depth += c.depth;
                o.capacity += c.capacity;
                o.delivered += c.delivered;
                o.dropped += c.dropped;
            }
            None => out.push(c),
        }
    }
    out
}

fn events(e: &mut Exposition, state: &AppState) {
    e.single(
        "bakend_events_emitted_total",
        Kind::Counter,
        "Events published on the bus.",
        state.bus.emitted(),
    );
    let consumers = by_name(state.bus.consumers());
    type Field = fn(&ConsumerInfo) -> u64;
    let families: [(&str, Kind, &str, Field); 4] = [
        (
            "bakend_events_queue_depth",
            Kind::Gauge,
            "Events waiting in a bus consumer's queue.",
            |c| c.depth as u64,
        ),
        (
            "bakend_events_queue_capacity",
            Kind::Gauge,
            "Size of a bus consumer's queue.",
            |c| c.capacity as u64,
        ),
        (
            "bakend_events_delivered_total",
            Kind::Counter,
            "Events queued to a bus consumer.",
            |c| c.delivered,
        ),
        (
            "bakend_events_dropped_total",
            Kind::Counter,
            "Events a bus consumer missed because its queue was full.",
            |c| c.dropped,
        ),
    ];
    for (name, kind, help, field) in families {
        e.family(name, kind, help);
        for c in &consumers {
            e.sample(name, &[("consumer", &c.name)], field(c));
        }
    }
}

fn jobs(e: &mut Exposition, state: &AppState) {
    let s = state.jobs.jobs.stats();
    e.single(
        "bakend_jobs_runs_started_total",
        Kind::Counter,
        "Job runs started (scheduled or manual).",
        load(&s.started),
    );
    let name = "bakend_jobs_runs_total";
    e.family(
        name,
        Kind::Counter,
        "Job runs finished, by outcome (retries included in one run).",
    );
    e.sample(name, &[("outcome", "completed")], load(&s.completed));
    e.sample(name, &[("outcome", "failed")], load(&s.failed));
    e.single(
        "bakend_jobs_ticks_skipped_total",
        Kind::Counter,
        "Scheduled ticks skipped because the job was still running.",
        load(&s.skipped),
    );
}

fn functions(e: &mut Exposition, state: &AppState) {
    let s = state.functions.stats();
    e.single(
        "bakend_functions_invocations_queued_total",
        Kind::Counter,
        "Function invocations accepted into the worker queue.",
        load(&s.queued),
    );
    let name = "bakend_functions_invocations_total";
    e.family(
        name,
        Kind::Counter,
        "Function invocations by outcome: completed, failed (threw or hit a limit), dropped (queue full).",
    );
    e.sample(name, &[("outcome", "completed")], load(&s.completed));
    e.sample(name, &[("outcome", "failed")], load(&s.failed));
    e.sample(name, &[("outcome", "dropped")], load(&s.dropped));
    e.single(
        "bakend_functions_runtimes_recycled_total",
        Kind::Counter,
        "JS runtimes rebuilt after hitting a time, memory or stack limit.",
        load(&s.recycled),
    );
    let name = "bakend_functions_reloads_total";
    e.family(name, Kind::Counter, "Function hot reloads, by outcome.");
    e.sample(name, &[("outcome", "ok")], load(&s.reloads));
    e.sample(name, &[("outcome", "failed")], load(&s.reload_failures));
}

fn database(e: &mut Exposition, state: &AppState) {
    let s = state.records.database().writer_stats();
    e.single(
        "bakend_db_commits_total",
        Kind::Counter,
        "Transactions the writer committed (one fsync each).",
        load(&s.commits),
    );
    e.single(
        "bakend_db_writes_total",
        Kind::Counter,
        "Writes committed (several may share a commit).",
        load(&s.writes),
    );
    e.single(
        "bakend_db_writes_failed_total",
        Kind::Counter,
        "Writes that failed and were rolled back alone.",
        load(&s.failed),
    );
}
