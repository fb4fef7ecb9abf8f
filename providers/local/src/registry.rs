//! The local model registry, on one SQLite file: registered models, their numbered versions
//! (metrics, lineage and signature kept as JSON documents), approval status and aliases.

use async_trait::async_trait;
use galley_core::error::ResultExt;
use galley_core::stages::{
    ApprovalStatus, Described, ModelRegistry, ModelVersion, NewModelVersion, now_ms,
};
use galley_core::{Error, Result, Stage};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::db::{Db, DbResult};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS models (
    name TEXT PRIMARY KEY,
    description TEXT,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS model_versions (
    model TEXT NOT NULL REFERENCES models (name) ON DELETE CASCADE,
    version INTEGER NOT NULL,
    artifact_uri TEXT NOT NULL,
    metrics TEXT NOT NULL,
    lineage TEXT NOT NULL,
    signature TEXT NOT NULL,
    description TEXT,
    approval TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (model, version)
);
CREATE TABLE IF NOT EXISTS model_aliases (
    model TEXT NOT NULL,
    alias TEXT NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (model, alias),
    FOREIGN KEY (model, version) REFERENCES model_versions (model, version) ON DELETE CASCADE
);
";

pub struct LocalRegistry {
    db: Db,
}

impl LocalRegistry {
    /// Opens (creating if needed) the registry database at `db_path`.
    pub fn open(db_path: std::path::PathBuf) -> Result<Self> {
        let db = Db::open(&db_path, SCHEMA)
            .map_err(|e| e.stage(Stage::Registry).operation("open").resource(db_path.display().to_string()))?;
        Ok(LocalRegistry { db })
    }

    pub fn path(&self) -> &std::path::Path {
        self.db.path()
    }
}

fn approval_str(s: ApprovalStatus) -> &'static str {
    match s {
        ApprovalStatus::PendingManualApproval => "pending_manual_approval",
        ApprovalStatus::Approved => "approved",
        ApprovalStatus::Rejected => "rejected",
    }
}

fn parse_approval(s: &str) -> DbResult<ApprovalStatus> {
    Ok(match s {
        "pending_manual_approval" => ApprovalStatus::PendingManualApproval,
        "approved" => ApprovalStatus::Approved,
        "rejected" => ApprovalStatus::Rejected,
        other => return Err(Error::corrupt(format!("approval status `{other}` is not one Galley writes")).into()),
    })
}

fn check_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 250 || name.chars().any(char::is_control) {
        return Err(Error::invalid(format!(
            "{what} `{name}` is not a valid name: use 1-250 printable characters"
        )));
    }
    Ok(())
}

/// Aliases must not look like version numbers, so `model@3` can never be ambiguous.
fn check_alias(alias: &str) -> Result<()> {
    check_name("alias", alias)?;
    let numeric = alias.strip_prefix(['v', 'V']).unwrap_or(alias);
    if !numeric.is_empty() && numeric.chars().all(|c| c.is_ascii_digit()) {
        return Err(Error::invalid(format!(
            "alias `{alias}` looks like a version number; choose a name such as `champion` or `production`"
        )));
    }
    Ok(())
}

fn model_exists(conn: &Connection, model: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT 1 FROM models WHERE name = ?1")?.exists([model])
}

fn require_model(conn: &Connection, model: &str) -> DbResult<()> {
    if model_exists(conn, model)? {
        Ok(())
    } else {
        Err(Error::not_found(format!(
            "model `{model}` is not registered; create it first (run `galley apply`)"
        ))
        .into())
    }
}

fn version_not_found(conn: &Connection, model: &str, version: u64) -> DbResult<Error> {
    let latest: Option<i64> = conn
        .prepare_cached("SELECT max(version) FROM model_versions WHERE model = ?1")?
        .query_row([model], |r| r.get(0))?;
    Ok(Error::not_found(match latest {
        Some(latest) => format!("model `{model}` has no version {version} (its versions are 1 to {latest})"),
        None => format!("model `{model}` has no version {version} (it has no versions yet)"),
    }))
}

fn load_version(conn: &Connection, model: &str, version: u64) -> DbResult<Option<ModelVersion>> {
    let row = conn
        .prepare_cached(
            "SELECT artifact_uri, metrics, lineage, signature, approval, created_ms
             FROM model_versions WHERE model = ?1 AND version = ?2",
        )?
        .query_row(params![model, version as i64], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, i64>(5)?,
            ))
        })
        .optional()?;
    let Some((artifact_uri, metrics, lineage, signature, approval, created_ms)) = row else {
        return Ok(None);
    };
    let aliases = {
        let mut stmt = conn
            .prepare_cached("SELECT alias FROM model_aliases WHERE model = ?1 AND version = ?2 ORDER BY alias")?;
        let rows = stmt.query_map(params![model, version as i64], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<Vec<String>>>()?
    };
    Ok(Some(ModelVersion {
        model: model.to_owned(),
        version,
        artifact_uri,
        metrics: serde_json::from_str(&metrics)?,
        lineage: serde_json::from_str(&lineage)?,
        signature: serde_json::from_str(&signature)?,
        approval: parse_approval(&approval)?,
        aliases,
        created_ms,
    }))
}

fn require_version(conn: &Connection, model: &str, version: u64) -> DbResult<ModelVersion> {
    require_model(conn, model)?;
    match load_version(conn, model, version)? {
        Some(v) => Ok(v),
        None => Err(version_not_found(conn, model, version)?.into()),
    }
}

impl Described for LocalRegistry {
    fn capabilities(&self) -> galley_core::Capabilities {
        crate::platform::capabilities()
    }
}

#[async_trait]
impl ModelRegistry for LocalRegistry {
    async fn create_model(&self, name: &str, description: Option<&str>) -> Result<()> {
        check_name("model", name).ctx(Stage::Registry, "create_model", name)?;
        let (n, d) = (name.to_owned(), description.map(str::to_owned));
        self.db
            .call(move |conn| {
                conn.prepare_cached(
                    "INSERT INTO models (name, description, created_ms) VALUES (?1, ?2, ?3)
                     ON CONFLICT (name) DO NOTHING",
                )?
                .execute(params![n, d, now_ms()])?;
                Ok(())
            })
            .await
            .ctx(Stage::Registry, "create_model", name)
    }

    /// Deletes the model with its versions and aliases; deleting an absent model succeeds.
    async fn delete_model(&self, name: &str) -> Result<()> {
        let n = name.to_owned();
        self.db
            .call(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                // Explicit, not only by cascade, so a database opened without foreign keys
                // enforced (an older sqlite3 shell) cannot leave orphans behind.
                tx.prepare_cached("DELETE FROM model_aliases WHERE model = ?1")?.execute([&n])?;
                tx.prepare_cached("DELETE FROM model_versions WHERE model = ?1")?.execute([&n])?;
                tx.prepare_cached("DELETE FROM models WHERE name = ?1")?.execute([&n])?;
                tx.commit()?;
                Ok(())
            })
            .await
            .ctx(Stage::Registry, "delete_model", name)
    }

    async fn model_exists(&self, name: &str) -> Result<bool> {
        let n = name.to_owned();
        self.db.call(move |conn| Ok(model_exists(conn, &n)?)).await.ctx(Stage::Registry, "model_exists", name)
    }

    async fn register_version(&self, model: &str, version: &NewModelVersion) -> Result<ModelVersion> {
        let (m, v) = (model.to_owned(), version.clone());
        self.db
            .call(move |conn| {
                // An immediate transaction takes the write lock before reading the highest
                // number, so concurrent registrations (threads or processes) get distinct ones.
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                require_model(&tx, &m)?;
                let next: i64 = tx
                    .prepare_cached("SELECT coalesce(max(version), 0) + 1 FROM model_versions WHERE model = ?1")?
                    .query_row([&m], |r| r.get(0))?;
                tx.prepare_cached(
                    "INSERT INTO model_versions (model, version, artifact_uri, metrics, lineage,
                         signature, description, approval, created_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )?
                .execute(params![
                    m,
                    next,
                    v.artifact_uri,
                    serde_json::to_string(&v.metrics)?,
                    serde_json::to_string(&v.lineage)?,
                    serde_json::to_string(&v.signature)?,
                    v.description,
                    approval_str(ApprovalStatus::PendingManualApproval),
                    now_ms(),
                ])?;
                let created = require_version(&tx, &m, next as u64)?;
                tx.commit()?;
                Ok(created)
            })
            .await
            .ctx(Stage::Registry, "register_version", model)
    }

    async fn get_version(&self, model: &str, version: u64) -> Result<ModelVersion> {
        let m = model.to_owned();
        self.db.call(move |conn| require_version(conn, &m, version)).await.ctx(Stage::Registry, "get_version", model)
    }

    async fn list_versions(&self, model: &str) -> Result<Vec<ModelVersion>> {
        let m = model.to_owned();
        self.db
            .call(move |conn| {
                require_model(conn, &m)?;
                let numbers: Vec<i64> = {
                    let mut stmt =
                        conn.prepare_cached("SELECT version FROM model_versions WHERE model = ?1 ORDER BY version")?;
                    let rows = stmt.query_map([&m], |r| r.get(0))?;
                    rows.collect::<rusqlite::Result<_>>()?
                };
                numbers.into_iter().map(|n| require_version(conn, &m, n as u64)).collect()
            })
            .await
            .ctx(Stage::Registry, "list_versions", model)
    }

    async fn set_approval(&self, model: &str, version: u64, status: ApprovalStatus) -> Result<()> {
        let m = model.to_owned();
        self.db
            .call(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                require_version(&tx, &m, version)?;
                tx.prepare_cached("UPDATE model_versions SET approval = ?3 WHERE model = ?1 AND version = ?2")?
                    .execute(params![m, version as i64, approval_str(status)])?;
                tx.commit()?;
                Ok(())
            })
            .await
            .ctx(Stage::Registry, "set_approval", model)
    }

    async fn set_alias(&self, model: &str, alias: &str, version: u64) -> Result<()> {
        check_alias(alias).ctx(Stage::Registry, "set_alias", model)?;
        let (m, a) = (model.to_owned(), alias.to_owned());
        self.db
            .call(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                require_version(&tx, &m, version)?;
                // One row per (model, alias): setting it again moves it.
                tx.prepare_cached(
                    "INSERT INTO model_aliases (model, alias, version) VALUES (?1, ?2, ?3)
                     ON CONFLICT (model, alias) DO UPDATE SET version = excluded.version",
                )?
                .execute(params![m, a, version as i64])?;
                tx.commit()?;
                Ok(())
            })
            .await
            .ctx(Stage::Registry, "set_alias", model)
    }

    /// Removing an alias that is not set succeeds.
    async fn remove_alias(&self, model: &str, alias: &str) -> Result<()> {
        let (m, a) = (model.to_owned(), alias.to_owned());
        self.db
            .call(move |conn| {
                conn.prepare_cached("DELETE FROM model_aliases WHERE model = ?1 AND alias = ?2")?
                    .execute(params![m, a])?;
                Ok(())
            })
            .await
            .ctx(Stage::Registry, "remove_alias", model)
    }

    /// `None` when the alias is not set; `NotFound` when the model itself does not exist.
    async fn get_by_alias(&self, model: &str, alias: &str) -> Result<Option<ModelVersion>> {
        let (m, a) = (model.to_owned(), alias.to_owned());
        self.db
            .call(move |conn| {
                require_model(conn, &m)?;
                let version: Option<i64> = conn
                    .prepare_cached("SELECT version FROM model_aliases WHERE model = ?1 AND alias = ?2")?
                    .query_row(params![m, a], |r| r.get(0))
                    .optional()?;
                version.map(|v| require_version(conn, &m, v as u64)).transpose()
            })
            .await
            .ctx(Stage::Registry, "get_by_alias", model)
    }
}
