//! The one place the local stores open SQLite and turn its errors into Galley errors, so the
//! pragmas, the blocking-thread discipline and the "your database is damaged, here is what to
//! do" messages are written once.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use galley_core::{Error, ErrorKind, Result};
use rusqlite::{Connection, ErrorCode};

/// How long a writer waits for another process's lock before reporting `Unavailable`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Enough cached statements for every store's fixed statements plus the few shapes of
/// batched `IN (…)` lookups the feature store prepares per group.
const STATEMENT_CACHE: usize = 128;

/// An error inside a database closure: either SQLite's (mapped with the file name afterwards)
/// or one of ours (validation, not-found) that passes through untouched. Both convert with `?`.
pub(crate) enum DbError {
    Sql(rusqlite::Error),
    Galley(Error),
}

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> Self {
        DbError::Sql(e)
    }
}

impl From<Error> for DbError {
    fn from(e: Error) -> Self {
        DbError::Galley(e)
    }
}

impl From<serde_json::Error> for DbError {
    fn from(e: serde_json::Error) -> Self {
        DbError::Galley(Error::corrupt("a stored JSON document could not be read").with_source(e))
    }
}

pub(crate) type DbResult<T> = std::result::Result<T, DbError>;

/// A SQLite database shared by one store. Blocking SQLite work runs on tokio's blocking pool
/// so an async caller never stalls a runtime worker.
#[derive(Clone)]
pub(crate) struct Db {
    path: Arc<PathBuf>,
    conn: Arc<Mutex<Connection>>,
    /// A second connection for [`Db::read_now`]: under WAL a reader never waits for a
    /// writer, so point reads need not queue behind an ingest holding `conn`.
    reader: Arc<Mutex<Connection>>,
}

impl Db {
    /// Opens (creating if needed) the database at `path`, applies the pragmas every store
    /// relies on and runs `schema` (idempotent `CREATE … IF NOT EXISTS` statements).
    pub(crate) fn open(path: &Path, schema: &str) -> Result<Db> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                Error::from(e)
                    .resource(path.display().to_string())
                    .platform(crate::platform::LOCAL)
            })?;
        }
        let connect = || Self::connect(path, schema).map_err(|e| map_sqlite_error(path, e).platform(crate::platform::LOCAL));
        let conn = connect()?;
        let reader = connect()?;
        Ok(Db { path: Arc::new(path.to_path_buf()), conn: Arc::new(Mutex::new(conn)), reader: Arc::new(Mutex::new(reader)) })
    }

    fn connect(path: &Path, schema: &str) -> rusqlite::Result<Connection> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // WAL lets readers proceed while one writer commits; NORMAL sync is durable across
        // application crashes and only risks the last commits on power loss, as MLflow and
        // Feast's SQLite stores accept.
        // journal_mode answers with the mode now in force, so it is read back, not just set.
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0))?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        // Touch the schema so a damaged file is reported at open, not at the first query.
        conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0))?;
        conn.execute_batch(schema)?;
        Ok(conn)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Runs a short read on the calling thread, with the reader connection.
    ///
    /// Only for indexed point reads (an online feature lookup): they take microseconds, while
    /// a hop to the blocking pool and back costs two thread wake-ups — most of a lookup's time
    /// (measured: 18 µs per lookup through `call`, 2.9 µs for the read itself). Under WAL a
    /// reader does not wait for writers, so this cannot stall the async worker behind an ingest.
    pub(crate) fn read_now<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce(&Connection) -> DbResult<T>,
    {
        let guard = self.reader.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&guard)
            .map_err(|e| match e {
                DbError::Sql(e) => map_sqlite_error(&self.path, e),
                DbError::Galley(e) => e,
            })
            .map_err(|e| e.platform(crate::platform::LOCAL))
    }

    /// Runs `f` with the connection on the blocking pool and maps its errors.
    pub(crate) async fn call<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> DbResult<T> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        let path = Arc::clone(&self.path);
        let outcome = tokio::task::spawn_blocking(move || {
            // A panic in another caller leaves the connection itself usable (an open
            // transaction is rolled back when its guard drops), so a poisoned lock is taken over.
            let mut guard = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| {
            Error::internal(format!("a database task on {} did not complete", path.display())).with_source(e)
        })?;
        outcome.map_err(|e| match e {
            DbError::Sql(e) => map_sqlite_error(&path, e),
            DbError::Galley(e) => e,
        })
        .map_err(|e| e.platform(crate::platform::LOCAL))
    }
}

/// Removes the database at `path` (with its WAL and shared-memory files) when `table` holds no
/// rows, so destroying the last resource of a store leaves no file behind. `table` is one of
/// the stores' own constant table names, never user input.
pub fn remove_if_empty(path: &Path, table: &'static str) -> Result<bool> {
    if !path.exists() {
        return Ok(false);
    }
    let empty = {
        let conn = Connection::open(path).map_err(|e| map_sqlite_error(path, e))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| map_sqlite_error(path, e))?;
        let any: i64 = conn
            .query_row(&format!("SELECT EXISTS(SELECT 1 FROM {table})"), [], |r| r.get(0))
            .map_err(|e| map_sqlite_error(path, e))?;
        any == 0
    };
    if empty {
        for suffix in ["", "-wal", "-shm"] {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            match std::fs::remove_file(&p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::from(e).resource(path.display().to_string())),
                _ => {}
            }
        }
    }
    Ok(empty)
}

/// Turns a SQLite error into a Galley error that names the file and says what to do.
pub(crate) fn map_sqlite_error(path: &Path, e: rusqlite::Error) -> Error {
    let file = path.display();
    let error = match &e {
        rusqlite::Error::SqliteFailure(failure, _) => match failure.code {
            ErrorCode::NotADatabase => Error::corrupt(format!(
                "{file} is not a SQLite database ({failure}); move it aside and run `galley apply` \
                 again to recreate it"
            )),
            ErrorCode::DatabaseCorrupt => Error::corrupt(format!(
                "{file} is damaged ({failure}); move it aside (keep it if you want to attempt \
                 `sqlite3 {file} .recover`) and run `galley apply` again to recreate it"
            )),
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => Error::new(
                ErrorKind::Unavailable,
                format!(
                    "{file} is locked by another process for longer than {}s; retry when it finishes",
                    BUSY_TIMEOUT.as_secs()
                ),
            ),
            ErrorCode::ConstraintViolation => {
                Error::conflict(format!("the change conflicts with what {file} already holds ({failure})"))
            }
            ErrorCode::PermissionDenied | ErrorCode::ReadOnly => Error::new(
                ErrorKind::PermissionDenied,
                format!("{file} cannot be written ({failure}); check its permissions and those of its folder"),
            ),
            ErrorCode::CannotOpen => Error::new(
                ErrorKind::PermissionDenied,
                format!("{file} cannot be opened ({failure}); check that its folder exists and is writable"),
            ),
            ErrorCode::DiskFull => Error::new(
                ErrorKind::Unavailable,
                format!("the disk holding {file} is full; free some space and retry"),
            ),
            _ => Error::internal(format!("SQLite failed on {file} ({failure})")),
        },
        rusqlite::Error::QueryReturnedNoRows => Error::not_found(format!("no matching row in {file}")),
        _ => Error::internal(format!("SQLite failed on {file}")),
    };
    error.resource(path.display().to_string()).with_source(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_file_is_reported_as_corrupt_with_a_remedy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        std::fs::write(&path, vec![0x5au8; 8192]).unwrap();
        let e = Db::open(&path, "CREATE TABLE IF NOT EXISTS t (a)").err().expect("must fail");
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
        assert!(e.message().contains(&path.display().to_string()), "{e}");
        assert!(e.message().contains("galley apply"), "{e}");
    }
}
