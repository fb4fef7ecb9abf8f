//! The local experiment tracker, on one SQLite file (the same data model as MLflow's tracking
//! store: experiments, runs, params, the full metric history plus a latest-value table that
//! searches read, tags and artifact URIs).

use std::collections::BTreeMap;

use async_trait::async_trait;
use galley_core::error::ResultExt;
use galley_core::stages::{
    Comparison, Described, ExperimentTracker, Metric, Run, RunQuery, RunStatus, now_ms,
};
use galley_core::{Error, Result, Stage};
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params, params_from_iter};

use crate::db::{Db, DbResult};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS experiments (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    experiment_id TEXT NOT NULL REFERENCES experiments (id) ON DELETE CASCADE,
    name TEXT,
    status TEXT NOT NULL,
    start_ms INTEGER NOT NULL,
    end_ms INTEGER
);
CREATE INDEX IF NOT EXISTS runs_by_experiment ON runs (experiment_id, start_ms);
CREATE TABLE IF NOT EXISTS params (
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (run_id, key)
) WITHOUT ROWID;
-- NaN is stored as NULL (SQLite has no NaN) and read back as NaN.
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value REAL,
    step INTEGER NOT NULL,
    timestamp_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS metrics_by_run_key ON metrics (run_id, key, step);
CREATE TABLE IF NOT EXISTS latest_metrics (
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value REAL,
    step INTEGER NOT NULL,
    timestamp_ms INTEGER NOT NULL,
    PRIMARY KEY (run_id, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS latest_metrics_by_key ON latest_metrics (key, value);
CREATE TABLE IF NOT EXISTS tags (
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (run_id, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS run_artifacts (
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    uri TEXT NOT NULL,
    PRIMARY KEY (run_id, name)
) WITHOUT ROWID;
";

pub struct LocalExperiments {
    db: Db,
}

impl LocalExperiments {
    /// Opens (creating if needed) the tracking database at `db_path`.
    pub fn open(db_path: std::path::PathBuf) -> Result<Self> {
        let db = Db::open(&db_path, SCHEMA)
            .map_err(|e| e.stage(Stage::Experiments).operation("open").resource(db_path.display().to_string()))?;
        Ok(LocalExperiments { db })
    }

    pub fn path(&self) -> &std::path::Path {
        self.db.path()
    }
}

fn status_str(s: RunStatus) -> &'static str {
    match s {
        RunStatus::Running => "running",
        RunStatus::Finished => "finished",
        RunStatus::Failed => "failed",
        RunStatus::Killed => "killed",
    }
}

fn parse_status(s: &str) -> DbResult<RunStatus> {
    Ok(match s {
        "running" => RunStatus::Running,
        "finished" => RunStatus::Finished,
        "failed" => RunStatus::Failed,
        "killed" => RunStatus::Killed,
        other => return Err(Error::corrupt(format!("run status `{other}` is not one Galley writes")).into()),
    })
}

fn experiment_id(conn: &Connection, name: &str) -> DbResult<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT id FROM experiments WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()?)
}

fn run_not_found(run: &str) -> Error {
    Error::not_found(format!("run `{run}` does not exist in the local experiment tracker"))
}

/// The run's status, or NotFound naming it.
fn run_status(conn: &Connection, run: &str) -> DbResult<RunStatus> {
    let status: Option<String> =
        conn.prepare_cached("SELECT status FROM runs WHERE id = ?1")?.query_row([run], |r| r.get(0)).optional()?;
    parse_status(&status.ok_or_else(|| run_not_found(run))?)
}

/// Refuses writes to a run that has ended: its record is final once reported.
fn require_running(conn: &Connection, run: &str) -> DbResult<()> {
    match run_status(conn, run)? {
        RunStatus::Running => Ok(()),
        ended => Err(Error::conflict(format!(
            "run `{run}` has already ended ({}); start a new run to log more",
            status_str(ended)
        ))
        .into()),
    }
}

fn upsert_tags(conn: &Connection, run: &str, tags: &BTreeMap<String, String>) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO tags (run_id, key, value) VALUES (?1, ?2, ?3)
         ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value",
    )?;
    for (k, v) in tags {
        stmt.execute(params![run, k, v])?;
    }
    Ok(())
}

fn key_value_map(conn: &Connection, sql: &str, run: &str) -> rusqlite::Result<BTreeMap<String, String>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map([run], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

fn load_run(conn: &Connection, run: &str) -> DbResult<Run> {
    let head = conn
        .prepare_cached(
            "SELECT e.name, r.name, r.status, r.start_ms, r.end_ms
             FROM runs r JOIN experiments e ON e.id = r.experiment_id WHERE r.id = ?1",
        )?
        .query_row([run], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, Option<i64>>(4)?,
            ))
        })
        .optional()?;
    let (experiment, name, status, start_ms, end_ms) = head.ok_or_else(|| run_not_found(run))?;
    let metrics = {
        let mut stmt = conn.prepare_cached("SELECT key, value FROM latest_metrics WHERE run_id = ?1")?;
        let rows = stmt.query_map([run], |r| Ok((r.get(0)?, r.get::<_, Option<f64>>(1)?.unwrap_or(f64::NAN))))?;
        rows.collect::<rusqlite::Result<BTreeMap<String, f64>>>()?
    };
    Ok(Run {
        id: run.to_owned(),
        experiment,
        name,
        status: parse_status(&status)?,
        start_ms,
        end_ms,
        params: key_value_map(conn, "SELECT key, value FROM params WHERE run_id = ?1", run)?,
        metrics,
        tags: key_value_map(conn, "SELECT key, value FROM tags WHERE run_id = ?1", run)?,
        artifacts: key_value_map(conn, "SELECT name, uri FROM run_artifacts WHERE run_id = ?1", run)?,
    })
}

fn comparison_sql(c: Comparison) -> &'static str {
    match c {
        Comparison::Gt => ">",
        Comparison::Ge => ">=",
        Comparison::Lt => "<",
        Comparison::Le => "<=",
        Comparison::Eq => "=",
    }
}

fn check_key(what: &str, key: &str) -> Result<()> {
    if key.is_empty() || key.len() > 250 {
        return Err(Error::invalid(format!("{what} name `{key}` must be 1-250 characters long")));
    }
    Ok(())
}

impl Described for LocalExperiments {
    fn capabilities(&self) -> galley_core::Capabilities {
        crate::platform::capabilities()
    }
}

#[async_trait]
impl ExperimentTracker for LocalExperiments {
    async fn create_experiment(&self, name: &str) -> Result<String> {
        check_key("experiment", name).ctx(Stage::Experiments, "create_experiment", name)?;
        let n = name.to_owned();
        self.db
            .call(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                if let Some(id) = experiment_id(&tx, &n)? {
                    return Ok(id);
                }
                let id = uuid::Uuid::new_v4().simple().to_string();
                tx.prepare_cached("INSERT INTO experiments (id, name, created_ms) VALUES (?1, ?2, ?3)")?
                    .execute(params![id, n, now_ms()])?;
                tx.commit()?;
                Ok(id)
            })
            .await
            .ctx(Stage::Experiments, "create_experiment", name)
    }

    async fn get_experiment(&self, name: &str) -> Result<Option<String>> {
        let n = name.to_owned();
        self.db.call(move |conn| experiment_id(conn, &n)).await.ctx(Stage::Experiments, "get_experiment", name)
    }

    /// Deletes the experiment and all its runs; deleting an absent experiment succeeds.
    async fn delete_experiment(&self, name: &str) -> Result<()> {
        let n = name.to_owned();
        self.db
            .call(move |conn| {
                conn.prepare_cached("DELETE FROM experiments WHERE name = ?1")?.execute([&n])?;
                Ok(())
            })
            .await
            .ctx(Stage::Experiments, "delete_experiment", name)
    }

    async fn start_run(&self, experiment: &str, name: Option<&str>, tags: &BTreeMap<String, String>) -> Result<String> {
        let (e, n, tags) = (experiment.to_owned(), name.map(str::to_owned), tags.clone());
        self.db
            .call(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let experiment_id = experiment_id(&tx, &e)?.ok_or_else(|| {
                    Error::not_found(format!(
                        "experiment `{e}` does not exist; create it first (run `galley apply`)"
                    ))
                })?;
                let id = uuid::Uuid::new_v4().simple().to_string();
                tx.prepare_cached(
                    "INSERT INTO runs (id, experiment_id, name, status, start_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![id, experiment_id, n, status_str(RunStatus::Running), now_ms()])?;
                upsert_tags(&tx, &id, &tags)?;
                tx.commit()?;
                Ok(id)
            })
            .await
            .ctx(Stage::Experiments, "start_run", experiment)
    }

    /// Params are immutable, as in MLflow: logging the same value again is fine, a different
    /// one is a `Conflict` (the run's record would otherwise lie about how it was trained).
    async fn log_params(&self, run: &str, params: &BTreeMap<String, String>) -> Result<()> {
        for k in params.keys() {
            check_key("param", k).ctx(Stage::Experiments, "log_params", run)?;
        }
        let (r, params) = (run.to_owned(), params.clone());
        self.db
            .call(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                require_running(&tx, &r)?;
                {
                    let mut existing = tx.prepare_cached("SELECT value FROM params WHERE run_id = ?1 AND key = ?2")?;
                    let mut insert = tx.prepare_cached("INSERT INTO params (run_id, key, value) VALUES (?1, ?2, ?3)")?;
                    for (k, v) in &params {
                        match existing.query_row(params![r, k], |row| row.get::<_, String>(0)).optional()? {
                            Some(old) if old == *v => {}
                            Some(old) => {
                                return Err(Error::conflict(format!(
                                    "param `{k}` of run `{r}` is already `{old}`; params cannot change \
                                     (log `{v}` under another name or start a new run)"
                                ))
                                .into());
                            }
                            None => {
                                insert.execute(params![r, k, v])?;
                            }
                        }
                    }
                }
                tx.commit()?;
                Ok(())
            })
            .await
            .ctx(Stage::Experiments, "log_params", run)
    }

    async fn log_metrics(&self, run: &str, metrics: &[Metric]) -> Result<()> {
        for m in metrics {
            check_key("metric", &m.key).ctx(Stage::Experiments, "log_metrics", run)?;
        }
        let (r, metrics) = (run.to_owned(), metrics.to_vec());
        self.db
            .call(move |conn| {
                // One transaction and two cached statements per batch: the cost of a batch is
                // one commit, not one per point.
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                require_running(&tx, &r)?;
                {
                    let mut history = tx.prepare_cached(
                        "INSERT INTO metrics (run_id, key, value, step, timestamp_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                    )?;
                    // The latest point is the one with the highest (step, timestamp), as in
                    // MLflow; a late point for an earlier step does not replace it.
                    let mut latest = tx.prepare_cached(
                        "INSERT INTO latest_metrics (run_id, key, value, step, timestamp_ms)
                         VALUES (?1, ?2, ?3, ?4, ?5)
                         ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value,
                             step = excluded.step, timestamp_ms = excluded.timestamp_ms
                         WHERE (excluded.step, excluded.timestamp_ms)
                             >= (latest_metrics.step, latest_metrics.timestamp_ms)",
                    )?;
                    for m in &metrics {
                        let value = if m.value.is_nan() { None } else { Some(m.value) };
                        let p = params![r, m.key, value, m.step, m.timestamp_ms];
                        history.execute(p)?;
                        latest.execute(p)?;
                    }
                }
                tx.commit()?;
                Ok(())
            })
            .await
            .ctx(Stage::Experiments, "log_metrics", run)
    }

    async fn set_tags(&self, run: &str, tags: &BTreeMap<String, String>) -> Result<()> {
        for k in tags.keys() {
            check_key("tag", k).ctx(Stage::Experiments, "set_tags", run)?;
        }
        let (r, tags) = (run.to_owned(), tags.clone());
        self.db
            .call(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                // Tags stay editable after a run ends (e.g. marking the run that was deployed).
                run_status(&tx, &r)?;
                upsert_tags(&tx, &r, &tags)?;
                tx.commit()?;
                Ok(())
            })
            .await
            .ctx(Stage::Experiments, "set_tags", run)
    }

    async fn log_artifact(&self, run: &str, name: &str, uri: &str) -> Result<()> {
        check_key("artifact", name).ctx(Stage::Experiments, "log_artifact", run)?;
        let (r, n, u) = (run.to_owned(), name.to_owned(), uri.to_owned());
        self.db
            .call(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                require_running(&tx, &r)?;
                tx.prepare_cached(
                    "INSERT INTO run_artifacts (run_id, name, uri) VALUES (?1, ?2, ?3)
                     ON CONFLICT (run_id, name) DO UPDATE SET uri = excluded.uri",
                )?
                .execute(params![r, n, u])?;
                tx.commit()?;
                Ok(())
            })
            .await
            .ctx(Stage::Experiments, "log_artifact", run)
    }

    async fn end_run(&self, run: &str, status: RunStatus) -> Result<()> {
        if status == RunStatus::Running {
            return Err(Error::invalid("a run cannot be ended with status `running`"))
                .ctx(Stage::Experiments, "end_run", run);
        }
        let r = run.to_owned();
        self.db
            .call(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                require_running(&tx, &r)?;
                tx.prepare_cached("UPDATE runs SET status = ?2, end_ms = ?3 WHERE id = ?1")?
                    .execute(params![r, status_str(status), now_ms()])?;
                tx.commit()?;
                Ok(())
            })
            .await
            .ctx(Stage::Experiments, "end_run", run)
    }

    async fn get_run(&self, run: &str) -> Result<Run> {
        let r = run.to_owned();
        self.db.call(move |conn| load_run(conn, &r)).await.ctx(Stage::Experiments, "get_run", run)
    }

    async fn metric_history(&self, run: &str, key: &str) -> Result<Vec<Metric>> {
        let (r, k) = (run.to_owned(), key.to_owned());
        self.db
            .call(move |conn| {
                run_status(conn, &r)?;
                let mut stmt = conn.prepare_cached(
                    "SELECT value, step, timestamp_ms FROM metrics WHERE run_id = ?1 AND key = ?2
                     ORDER BY step, timestamp_ms, rowid",
                )?;
                let rows = stmt.query_map(params![r, k], |row| {
                    Ok(Metric {
                        key: k.clone(),
                        value: row.get::<_, Option<f64>>(0)?.unwrap_or(f64::NAN),
                        step: row.get(1)?,
                        timestamp_ms: row.get(2)?,
                    })
                })?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
            .await
            .ctx(Stage::Experiments, "metric_history", run)
    }

    async fn search_runs(&self, experiment: &str, query: &RunQuery) -> Result<Vec<Run>> {
        let (e, q) = (experiment.to_owned(), query.clone());
        self.db
            .call(move |conn| {
                let experiment_id = experiment_id(conn, &e)?
                    .ok_or_else(|| Error::not_found(format!("experiment `{e}` does not exist")))?;
                // The SQL text is built only from fixed fragments; every name and value is bound.
                let mut sql = String::from("SELECT r.id FROM runs r");
                let mut bound: Vec<SqlValue> = Vec::new();
                if let Some(order) = &q.order_by {
                    sql.push_str(" LEFT JOIN latest_metrics o ON o.run_id = r.id AND o.key = ?");
                    bound.push(SqlValue::Text(order.clone()));
                }
                sql.push_str(" WHERE r.experiment_id = ?");
                bound.push(SqlValue::Text(experiment_id));
                for (key, cmp, value) in &q.metrics {
                    sql.push_str(&format!(
                        " AND EXISTS (SELECT 1 FROM latest_metrics m WHERE m.run_id = r.id \
                         AND m.key = ? AND m.value {} ?)",
                        comparison_sql(*cmp)
                    ));
                    bound.push(SqlValue::Text(key.clone()));
                    bound.push(SqlValue::Real(*value));
                }
                for (key, value) in &q.tags {
                    sql.push_str(
                        " AND EXISTS (SELECT 1 FROM tags t WHERE t.run_id = r.id AND t.key = ? AND t.value = ?)",
                    );
                    bound.push(SqlValue::Text(key.clone()));
                    bound.push(SqlValue::Text(value.clone()));
                }
                // Runs without the ordering metric come last, whichever the direction.
                if q.order_by.is_some() {
                    sql.push_str(if q.descending {
                        " ORDER BY o.value IS NULL, o.value DESC, r.start_ms DESC, r.id"
                    } else {
                        " ORDER BY o.value IS NULL, o.value ASC, r.start_ms DESC, r.id"
                    });
                } else {
                    sql.push_str(" ORDER BY r.start_ms DESC, r.id");
                }
                if let Some(limit) = q.limit {
                    sql.push_str(" LIMIT ?");
                    bound.push(SqlValue::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
                }
                let ids: Vec<String> = {
                    let mut stmt = conn.prepare_cached(&sql)?;
                    let rows = stmt.query_map(params_from_iter(bound.iter()), |r| r.get(0))?;
                    rows.collect::<rusqlite::Result<_>>()?
                };
                ids.iter().map(|id| load_run(conn, id)).collect()
            })
            .await
            .ctx(Stage::Experiments, "search_runs", experiment)
    }
}
