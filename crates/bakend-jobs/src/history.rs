//! Run history in `_job_runs` (system schema step 4): a row is written when a run starts
//! (`running`) and completed when it ends, so another process (`bak jobs runs`) sees runs in
//! progress and every finished run survives restarts. Each job keeps its newest `limit` rows.
//!
//! Writes go through the store's writer thread; the event that reports the change rides on
//! the same write, so it is emitted only after the row is durable.

use std::sync::Arc;

use bakend_core::Event;
use bakend_store::sql::{Backend, Conn, params};
use bakend_store::{Committed, Database, StoreError};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Running,
    Completed,
    Failed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
        }
    }

    fn parse(s: &str) -> RunStatus {
        match s {
            "completed" => RunStatus::Completed,
            "failed" => RunStatus::Failed,
            _ => RunStatus::Running,
        }
    }
}

/// What started a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// A due tick of the schedule.
    Schedule,
    /// `POST /api/admin/jobs/:name/run` or `bak jobs run`.
    Manual,
    /// The next attempt of a run whose node was lost (several servers on PostgreSQL).
    Retry,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Manual => "manual",
            Trigger::Retry => "retry",
        }
    }
}

/// One run (the admin API's JobRun). `startedAt` is the start of attempt 1; `durationMs`
/// includes retry waits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobRun {
    pub run_id: String,
    pub job: String,
    pub status: RunStatus,
    pub attempt: u32,
    pub trigger: String,
    pub started_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The node that ran it (several servers on PostgreSQL: docs/cluster.md); absent on SQLite.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// The message stored for runs that a stop of the server cut short.
pub const INTERRUPTED: &str = "Interrupted: the server stopped during the run";

/// The message stored for a run whose node stopped answering (`node lost: <node>`).
pub const NODE_LOST: &str = "node lost";

#[derive(Clone)]
pub struct History {
    db: Arc<Database>,
    limit: u32,
    /// This server's node id when others may share the database (PostgreSQL), stored with each
    /// run it starts.
    node: Option<String>,
}

/// A run taken over from a lost node: recorded as failed; its next attempt is this node's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LostRun {
    pub run_id: String,
    pub job: String,
    pub attempt: u32,
    pub node: String,
}

impl History {
    pub fn new(db: Arc<Database>, limit: u32) -> History {
        let node = db.sequencer().map(|s| s.id.clone());
        History {
            db,
            limit: limit.max(1),
            node,
        }
    }

    /// Records a run that just started, drops the job's rows beyond the limit, and emits
    /// `event` after the commit.
    pub async fn started(&self, run: &JobRun, event: Event) -> Result<(), StoreError> {
        let (run, limit) = (run.clone(), self.limit);
        self.db
            .write(move |conn| {
                conn.execute(
                    "INSERT INTO _job_runs(run_id, job, status, attempt, trigger, started_at, node)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        run.run_id,
                        run.job,
                        run.status.as_str(),
                        run.attempt,
                        run.trigger,
                        run.started_at,
                        run.node
                    ],
                )?;
                cap(conn, &run.job, limit)?;
                Ok(Committed::new(()).event(event))
            })
            .await
    }

    /// Records the end of a run and emits `event` after the commit. A row already closed
    /// (marked interrupted at shutdown) is left alone.
    pub async fn finished(&self, run: &JobRun, event: Event) -> Result<(), StoreError> {
        let run = run.clone();
        self.db
            .write_single(move |conn| {
                conn.execute(
                    "UPDATE _job_runs SET status = ?2, attempt = ?3, ended_at = ?4,
                            duration_ms = ?5, error = ?6
                     WHERE run_id = ?1 AND status = 'running'",
                    params![
                        run.run_id,
                        run.status.as_str(),
                        run.attempt,
                        run.ended_at,
                        run.duration_ms.map(|d| d as i64),
                        run.error
                    ],
                )?;
                Ok(Committed::new(()).event(event))
            })
            .await
    }

    /// Closes rows still `running` as failed with `error` (the runs a crash or a stop cut
    /// short). `only` limits it to these run ids. Returns how many rows changed.
    pub async fn interrupt(
        &self,
        only: Option<Vec<String>>,
        error: &str,
    ) -> Result<usize, StoreError> {
        let error = error.to_string();
        let now = bakend_core::time::now_iso();
        self.db
            .write(move |conn| {
                let mut n = 0;
                let sql = "UPDATE _job_runs SET status = 'failed', ended_at = ?1, error = ?2
                           WHERE status = 'running'";
                match only {
                    None => n += conn.execute(sql, params![now, error])?,
                    Some(ids) => {
                        let mut stmt = conn.prepare(&format!("{sql} AND run_id = ?3"))?;
                        for id in ids {
                            n += stmt.execute(params![now, error, id])?;
                        }
                    }
                }
                Ok(Committed::new(n))
            })
            .await
    }

    /// Claims the scheduled run of `job` at `tick` for this server (PostgreSQL; with one server
    /// per SQLite file there is nothing to claim: [`Claim::Run`]). The claim is taken even when
    /// the job is still running on another node, so that no node runs the tick: a job never
    /// runs concurrently with itself in the cluster. (Writes take turns under the cluster-wide
    /// write lock, so the claim and the look at `_job_runs` see every earlier claim's run
    /// start, bar one recorded in the milliseconds between another node's claim and its
    /// start.) Claims older than a day are dropped on the way.
    pub async fn claim_tick(&self, job: &str, tick: &str) -> Result<Claim, StoreError> {
        if self.db.backend() == Backend::Sqlite {
            return Ok(Claim::Run);
        }
        let (job, tick, me) = (job.to_string(), tick.to_string(), self.node.clone());
        let expired = bakend_core::time::to_iso(chrono::Utc::now() - chrono::Duration::days(1));
        self.db
            .write(move |conn| {
                let claimed = conn.execute(
                    "INSERT INTO _job_ticks(job, tick) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                    params![job, tick],
                )? == 1;
                conn.execute(
                    "DELETE FROM _job_ticks WHERE job = ?1 AND tick < ?2",
                    params![job, expired],
                )?;
                let claim = match claimed {
                    false => Claim::Taken,
                    true => match running_elsewhere(conn, &job, me.as_deref())? {
                        Some(node) => Claim::RunningOn(node),
                        None => Claim::Run,
                    },
                };
                Ok(Committed::new(claim))
            })
            .await
    }

    /// The other node on which `job` is running now, if any (PostgreSQL with several servers;
    /// this server's own runs are the scheduler's to know).
    pub async fn running_elsewhere(&self, job: &str) -> Result<Option<String>, StoreError> {
        let Some(me) = self.node.clone() else {
            return Ok(None);
        };
        let job = job.to_string();
        self.db
            .read(move |conn| running_elsewhere(conn, &job, Some(&me)))
            .await
    }

    /// This server's node id, when other servers may share the database.
    pub fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }

    /// PostgreSQL: the runs still `running` on nodes that stopped answering (no heartbeat in
    /// `_nodes` for [`bakend_store::db::nodes::ALIVE`]), recorded as failed (`node lost`) with
    /// a `job.failed` event each. Only the runs this call closed are returned (another node
    /// sweeping at the same time gets the others): their retries are this node's to run.
    pub async fn take_over_lost(&self) -> Result<Vec<LostRun>, StoreError> {
        let Some(me) = self.node.clone() else {
            return Ok(Vec::new());
        };
        let since = chrono::Utc::now().timestamp_millis()
            - bakend_store::db::nodes::ALIVE.as_millis() as i64;
        let lost: Vec<LostRun> = {
            let me = me.clone();
            self.db
                .read(move |conn| {
                    let mut stmt = conn.prepare(
                        "SELECT run_id, job, attempt, node FROM _job_runs
                         WHERE status = 'running' AND node IS NOT NULL AND node <> ?1
                           AND node NOT IN (SELECT id FROM _nodes WHERE seen_at >= ?2)",
                    )?;
                    let rows = stmt.query_map(params![me, since], |r| {
                        Ok(LostRun {
                            run_id: r.get(0)?,
                            job: r.get(1)?,
                            attempt: r.get::<i64>(2)? as u32,
                            node: r.get(3)?,
                        })
                    })?;
                    Ok(rows.collect::<Result<Vec<_>, _>>()?)
                })
                .await?
        };
        let mut taken = Vec::new();
        for run in lost {
            let now = bakend_core::time::now_iso();
            let error = format!("{NODE_LOST}: {}", run.node);
            let event = Event::new(
                "job.failed",
                bakend_core::EventSource::Jobs,
                serde_json::json!({"name": run.job, "runId": run.run_id, "error": error, "attempt": run.attempt}),
            );
            let r = run.clone();
            let closed = self
                .db
                .write_single(move |conn| {
                    let n = conn.execute(
                        "UPDATE _job_runs SET status = 'failed', ended_at = ?2, error = ?3
                         WHERE run_id = ?1 AND status = 'running'",
                        params![r.run_id, now, error],
                    )?;
                    Ok(match n {
                        1 => Committed::new(true).event(event),
                        _ => Committed::new(false),
                    })
                })
                .await?;
            if closed {
                tracing::warn!(
                    "Job {}: run {} was on node {}, which stopped answering; recorded as failed ({NODE_LOST})",
                    run.job,
                    run.run_id,
                    run.node
                );
                taken.push(run);
            }
        }
        Ok(taken)
    }

    /// At server start: closes the runs a previous server left `running` (it crashed or was
    /// killed mid-run). On PostgreSQL only when no other server runs on the database: their
    /// runs in progress are theirs (a crashed one's stay `running` until a server starts
    /// alone; telling which server a run belongs to comes with the cluster).
    pub async fn recover(&self) -> Result<(), StoreError> {
        if self.db.backend() == Backend::Postgres {
            let holders = self
                .db
                .read(bakend_store::db::DbLock::postgres_holders)
                .await?;
            if holders > 1 {
                tracing::info!(
                    "Other servers run on this database: their job runs in progress are left as they are"
                );
                return Ok(());
            }
        }
        let n = self.interrupt(None, INTERRUPTED).await?;
        if n > 0 {
            tracing::warn!(
                "{n} job run(s) of a previous server were still marked running; recorded as failed"
            );
        }
        Ok(())
    }

    /// The job's newest `limit` runs, oldest first. Runs on the reader pool.
    pub async fn list(&self, job: &str) -> Result<Vec<JobRun>, StoreError> {
        let (job, limit) = (job.to_string(), self.limit);
        self.db.read(move |conn| list(conn, &job, limit)).await
    }

    /// Whether any run of `job` was ever recorded (a job whose file is gone keeps its
    /// history).
    pub async fn has_runs(&self, job: &str) -> Result<bool, StoreError> {
        let job = job.to_string();
        self.db
            .read(move |conn| {
                Ok(conn
                    .prepare_cached("SELECT 1 FROM _job_runs WHERE job = ?1 LIMIT 1")?
                    .exists([job])?)
            })
            .await
    }
}

/// What claiming a scheduled tick found ([`History::claim_tick`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The tick is this server's to run.
    Run,
    /// Another server claimed it first and runs it.
    Taken,
    /// This server claimed it, but the job is still running on that node: the tick is skipped.
    RunningOn(String),
}

fn running_elsewhere(
    conn: &Conn,
    job: &str,
    me: Option<&str>,
) -> Result<Option<String>, StoreError> {
    let Some(me) = me else {
        return Ok(None);
    };
    let mut stmt = conn.prepare_cached(
        "SELECT node FROM _job_runs
         WHERE job = ?1 AND status = 'running' AND node IS NOT NULL AND node <> ?2 LIMIT 1",
    )?;
    let mut rows = stmt.query(params![job, me])?;
    Ok(match rows.next()? {
        Some(row) => Some(row.get::<String>(0)?),
        None => None,
    })
}

fn cap(conn: &Conn, job: &str, limit: u32) -> Result<(), StoreError> {
    conn.execute(
        "DELETE FROM _job_runs WHERE job = ?1 AND rowid NOT IN (
             SELECT rowid FROM _job_runs WHERE job = ?1
             ORDER BY started_at DESC, rowid DESC LIMIT ?2)",
        params![job, limit],
    )?;
    Ok(())
}

fn list(conn: &Conn, job: &str, limit: u32) -> Result<Vec<JobRun>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT run_id, job, status, attempt, trigger, started_at, ended_at, duration_ms, error,
                node
         FROM (SELECT rowid AS r, * FROM _job_runs WHERE job = ?1
               ORDER BY started_at DESC, rowid DESC LIMIT ?2) AS recent
         ORDER BY started_at ASC, r ASC",
    )?;
    let rows = stmt.query_map(params![job, limit], |r| {
        Ok(JobRun {
            run_id: r.get(0)?,
            job: r.get(1)?,
            status: RunStatus::parse(&r.get::<String>(2)?),
            attempt: r.get(3)?,
            trigger: r.get(4)?,
            started_at: r.get(5)?,
            ended_at: r.get(6)?,
            duration_ms: r.get::<Option<i64>>(7)?.map(|d| d.max(0) as u64),
            error: r.get(8)?,
            node: r.get(9)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}
