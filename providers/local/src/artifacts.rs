//! The local artifact store: a content-addressed directory.
//!
//! Layout under the root:
//! - `blobs/sha256/<hh>/<hash>` — the content, stored once however many keys name it, read-only;
//! - `index.db` — SQLite: key → (hash, size, modified). The index is the source of truth: reads
//!   go key → hash → blob, so a reader sees an old or a new object, never a mix;
//! - `objects/<key>` — a hard link to the blob, so every artifact is also an ordinary file
//!   that any tool (and `uri_for`) can open by its key;
//! - `tmp/` — uploads in progress, on the same filesystem so the final rename is atomic.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, StreamExt};
use galley_core::error::ResultExt;
use galley_core::stages::{ArtifactKey, ArtifactMeta, ArtifactStore, ByteStream, Described, now_ms};
use galley_core::{Error, Result, Stage};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio_util::io::ReaderStream;

use crate::db::{Db, DbError, DbResult};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS refs (
    key TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    modified_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS refs_by_hash ON refs (sha256);
";

/// Read in chunks of this size: big enough for throughput, small enough that a large model
/// never has to fit in memory.
const READ_CHUNK: usize = 64 * 1024;

pub struct LocalArtifacts {
    root: PathBuf,
    db: Db,
    /// What it declares: local's features, or those of a platform that keeps its files here.
    declared: galley_core::Capabilities,
}

struct Ref {
    sha256: String,
    size: u64,
    modified_ms: i64,
}

impl LocalArtifacts {
    /// The same object declared as `platform`'s: a platform that keeps this stage the local
    /// way (onprem's shared directory) proves the declaration with its own suite run.
    pub fn declaring(mut self, platform: galley_core::Capabilities) -> Self {
        self.declared = platform;
        self
    }

    /// Opens (creating if needed) the store rooted at `root`.
    pub fn open(root: PathBuf) -> Result<Self> {
        let layout = || -> std::io::Result<PathBuf> {
            for dir in ["blobs/sha256", "objects", "tmp"] {
                std::fs::create_dir_all(root.join(dir))?;
            }
            root.canonicalize()
        };
        let root = layout().map_err(|e| {
            Error::from(e)
                .platform(crate::platform::LOCAL)
                .stage(Stage::Artifacts)
                .operation("open")
                .resource(root.display().to_string())
        })?;
        let db = Db::open(&root.join("index.db"), SCHEMA)?;
        remove_abandoned_uploads(&root.join("tmp"));
        Ok(LocalArtifacts { root, db, declared: crate::platform::capabilities() })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The `file://` URI of `key`: the path of its ordinary-file view under `objects/`.
    pub fn uri_for(&self, key: &ArtifactKey) -> String {
        format!("file://{}", self.root.join("objects").join(key.as_str()).display())
    }

    /// The key a `file://` URI made by [`uri_for`](Self::uri_for) names, or `None` when the
    /// URI points somewhere outside this store.
    pub fn key_for_uri(&self, uri: &str) -> Option<ArtifactKey> {
        let path = uri.strip_prefix("file://")?;
        let objects = self.root.join("objects");
        let rest = Path::new(path).strip_prefix(&objects).ok()?;
        ArtifactKey::new(rest.to_str()?).ok()
    }

    fn meta(&self, key: &str, r: &Ref) -> ArtifactMeta {
        ArtifactMeta {
            key: key.to_owned(),
            size: r.size,
            sha256: r.sha256.clone(),
            uri: format!("file://{}", self.root.join("objects").join(key).display()),
            modified_ms: r.modified_ms,
            encryption: None,
        }
    }

    fn not_found(&self, key: &ArtifactKey) -> Error {
        Error::not_found(format!(
            "artifact `{key}` is not in the local artifact store at {}",
            self.root.display()
        ))
    }

    /// Streams `body` into a temporary file while hashing it, then makes it durable.
    async fn receive(&self, mut body: ByteStream) -> Result<(PathBuf, String, u64)> {
        let tmp = self.root.join("tmp").join(format!("{}.part", uuid::Uuid::new_v4()));
        let outcome: Result<(String, u64)> = async {
            let mut file = tokio::fs::File::create(&tmp).await?;
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            while let Some(chunk) = body.next().await {
                let chunk = chunk?;
                hasher.update(&chunk);
                size += chunk.len() as u64;
                file.write_all(&chunk).await?;
            }
            file.flush().await?;
            file.sync_all().await?;
            Ok((hex::encode(hasher.finalize()), size))
        }
        .await;
        match outcome {
            Ok((hash, size)) => Ok((tmp, hash, size)),
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                Err(e)
            }
        }
    }
}

/// Uploads interrupted by a crash leave `.part` files behind. Only day-old ones are removed:
/// a younger one may belong to another process still uploading.
fn remove_abandoned_uploads(tmp: &Path) {
    const ABANDONED: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
    let Ok(entries) = std::fs::read_dir(tmp) else { return };
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > ABANDONED);
        if old && entry.file_name().to_string_lossy().ends_with(".part") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn blob_path(root: &Path, hash: &str) -> PathBuf {
    root.join("blobs/sha256").join(&hash[..2]).join(hash)
}

fn read_ref(conn: &Connection, key: &str) -> rusqlite::Result<Option<Ref>> {
    conn.prepare_cached("SELECT sha256, size, modified_ms FROM refs WHERE key = ?1")?
        .query_row([key], |r| {
            Ok(Ref { sha256: r.get(0)?, size: r.get::<_, i64>(1)? as u64, modified_ms: r.get(2)? })
        })
        .optional()
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Makes `objects/<key>` a hard link to the blob, replacing any previous object atomically.
fn link_view(root: &Path, key: &str, blob: &Path) -> DbResult<()> {
    let target = root.join("objects").join(key);
    let parent = target.parent().expect("a key has at least one segment");
    match std::fs::create_dir_all(parent) {
        Ok(()) => {}
        Err(e) if matches!(e.kind(), std::io::ErrorKind::AlreadyExists | std::io::ErrorKind::NotADirectory) => {
            return Err(Error::conflict(format!(
                "cannot store `{key}`: a parent of it is already an artifact (a file), so it cannot \
                 also be a folder; choose another key or delete that artifact first"
            ))
            .with_source(e)
            .into());
        }
        Err(e) => return Err(Error::from(e).into()),
    }
    if target.is_dir() {
        return Err(Error::conflict(format!(
            "cannot store `{key}`: other artifacts are stored under `{key}/`, so it cannot also be a \
             file; choose another key"
        ))
        .into());
    }
    let staging = parent.join(format!(".{}.link", uuid::Uuid::new_v4()));
    if std::fs::hard_link(blob, &staging).is_err() {
        // Filesystems without hard links still get a correct (if not deduplicated) view.
        std::fs::copy(blob, &staging).map_err(Error::from)?;
    }
    let renamed = std::fs::rename(&staging, &target);
    // rename() is a no-op when both names already link the same inode; drop the spare link.
    let _ = std::fs::remove_file(&staging);
    renamed.map_err(Error::from)?;
    Ok(())
}

/// Removes `objects/<key>` and the folders it leaves empty.
fn unlink_view(root: &Path, key: &str) {
    let objects = root.join("objects");
    let target = objects.join(key);
    let _ = std::fs::remove_file(&target);
    let mut dir = target.parent().map(Path::to_path_buf);
    while let Some(d) = dir {
        if d == objects || std::fs::remove_dir(&d).is_err() {
            break;
        }
        dir = d.parent().map(Path::to_path_buf);
    }
}

/// Deletes the blob when no key points at it any more. Runs in its own write transaction so
/// no concurrent `put` of the same content can see the blob exist and then lose it.
fn collect_garbage(conn: &mut Connection, root: &Path, hash: &str) -> DbResult<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let users: i64 =
        tx.prepare_cached("SELECT count(*) FROM refs WHERE sha256 = ?1")?.query_row([hash], |r| r.get(0))?;
    if users == 0 {
        match std::fs::remove_file(blob_path(root, hash)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::from(e).into()),
        }
    }
    tx.commit()?;
    Ok(())
}

fn write_ref(conn: &Connection, key: &str, r: &Ref) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO refs (key, sha256, size, modified_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (key) DO UPDATE SET sha256 = excluded.sha256, size = excluded.size,
             modified_ms = excluded.modified_ms",
    )?
    .execute(params![key, r.sha256, r.size as i64, r.modified_ms])?;
    Ok(())
}

impl Described for LocalArtifacts {
    fn capabilities(&self) -> galley_core::Capabilities {
        self.declared.clone()
    }
}

#[async_trait]
impl ArtifactStore for LocalArtifacts {
    async fn put(&self, key: &ArtifactKey, body: ByteStream) -> Result<ArtifactMeta> {
        let (tmp, sha256, size) = self.receive(body).await.ctx(Stage::Artifacts, "put", key.as_str())?;
        let root = self.root.clone();
        let k = key.to_string();
        let stored = Ref { sha256, size, modified_ms: now_ms() };
        let upload = tmp.clone();
        let result = self
            .db
            .call(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let blob = blob_path(&root, &stored.sha256);
                if blob.exists() {
                    std::fs::remove_file(&tmp).map_err(Error::from)?;
                } else {
                    let dir = blob.parent().expect("blob has a parent");
                    std::fs::create_dir_all(dir).map_err(Error::from)?;
                    // Read-only, so nobody edits an artifact in place through its `objects/` link.
                    let mut perms = std::fs::metadata(&tmp).map_err(Error::from)?.permissions();
                    perms.set_readonly(true);
                    std::fs::set_permissions(&tmp, perms).map_err(Error::from)?;
                    std::fs::rename(&tmp, &blob).map_err(Error::from)?;
                    sync_dir(dir).map_err(Error::from)?;
                }
                let previous = read_ref(&tx, &k)?;
                let published = match link_view(&root, &k, &blob).and_then(|()| Ok(write_ref(&tx, &k, &stored)?)) {
                    Ok(()) => tx.commit().map_err(DbError::from),
                    Err(e) => {
                        drop(tx);
                        Err(e)
                    }
                };
                if let Err(e) = published {
                    // The blob may now be referenced by nothing; best effort, the error that
                    // matters is the one reported.
                    let _ = collect_garbage(conn, &root, &stored.sha256);
                    return Err(e);
                }
                if let Some(old) = previous.filter(|old| old.sha256 != stored.sha256) {
                    collect_garbage(conn, &root, &old.sha256)?;
                }
                Ok(stored)
            })
            .await
            .ctx(Stage::Artifacts, "put", key.as_str());
        match result {
            Ok(stored) => Ok(self.meta(key.as_str(), &stored)),
            Err(e) => {
                // The upload is still in tmp/ if the transaction failed before moving it.
                let _ = tokio::fs::remove_file(&upload).await;
                Err(e)
            }
        }
    }

    async fn get(&self, key: &ArtifactKey) -> Result<ByteStream> {
        let (root, k) = (self.root.clone(), key.to_string());
        // The key is resolved and its blob opened under the store's lock, which garbage
        // collection also takes: an overwrite racing this read cannot delete the blob between
        // the two, and once open, the file stays readable even if it is unlinked afterwards.
        let opened = self
            .db
            .call(move |conn| {
                // Another process may still overwrite the key and collect the blob in between;
                // then the key has moved on and the lookup is simply repeated.
                for _ in 0..3 {
                    let Some(r) = read_ref(conn, &k)? else { return Ok(None) };
                    match std::fs::File::open(blob_path(&root, &r.sha256)) {
                        Ok(file) => return Ok(Some((r, Some(file)))),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                            if read_ref(conn, &k)?.is_some_and(|now| now.sha256 == r.sha256) {
                                return Ok(Some((r, None)));
                            }
                        }
                        Err(e) => return Err(Error::from(e).into()),
                    }
                }
                Err(Error::new(
                    galley_core::ErrorKind::Unavailable,
                    format!("artifact `{k}` kept changing while being opened; retry"),
                )
                .into())
            })
            .await
            .ctx(Stage::Artifacts, "get", key.as_str())?;
        let (r, file) = opened.ok_or_else(|| self.not_found(key))?;
        let path = blob_path(&self.root, &r.sha256);
        let corrupt = |why: String| {
            Error::corrupt(format!(
                "blob {} for artifact `{key}` {why}; the store under {} is damaged: delete the \
                 artifact and write it again",
                path.display(),
                self.root.display()
            ))
            .platform(crate::platform::LOCAL)
            .stage(Stage::Artifacts)
            .operation("get")
            .resource(key.to_string())
        };
        let file = tokio::fs::File::from_std(file.ok_or_else(|| corrupt("is missing".into()))?);
        let actual_size = file.metadata().await?.len();
        if actual_size != r.size {
            return Err(corrupt(format!("holds {actual_size} bytes but {} were stored", r.size)));
        }
        let state = Verifier {
            chunks: ReaderStream::with_capacity(file, READ_CHUNK),
            hasher: Sha256::new(),
            expected: r.sha256.clone(),
            corrupt_error: Some(corrupt("no longer matches its SHA-256".into())),
            done: false,
        };
        Ok(stream::unfold(state, Verifier::next).boxed())
    }

    async fn head(&self, key: &ArtifactKey) -> Result<ArtifactMeta> {
        let r = self.lookup(key).await?.ok_or_else(|| self.not_found(key))?;
        Ok(self.meta(key.as_str(), &r))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ArtifactMeta>> {
        let p = prefix.to_owned();
        let rows = self
            .db
            .call(move |conn| {
                // Keys sharing a prefix are contiguous in key order, starting at the prefix.
                let mut stmt = conn.prepare_cached(
                    "SELECT key, sha256, size, modified_ms FROM refs WHERE key >= ?1 ORDER BY key",
                )?;
                let mut rows = stmt.query([&p])?;
                let mut out = Vec::new();
                while let Some(row) = rows.next()? {
                    let key: String = row.get(0)?;
                    if !key.starts_with(&p) {
                        break;
                    }
                    let r = Ref { sha256: row.get(1)?, size: row.get::<_, i64>(2)? as u64, modified_ms: row.get(3)? };
                    out.push((key, r));
                }
                Ok(out)
            })
            .await
            .ctx(Stage::Artifacts, "list", prefix)?;
        Ok(rows.iter().map(|(k, r)| self.meta(k, r)).collect())
    }

    async fn delete(&self, key: &ArtifactKey) -> Result<()> {
        let root = self.root.clone();
        let k = key.to_string();
        self.db
            .call(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let Some(old) = read_ref(&tx, &k)? else { return Ok(()) };
                tx.prepare_cached("DELETE FROM refs WHERE key = ?1")?.execute([&k])?;
                unlink_view(&root, &k);
                tx.commit()?;
                collect_garbage(conn, &root, &old.sha256)
            })
            .await
            .ctx(Stage::Artifacts, "delete", key.as_str())
    }

    async fn copy(&self, from: &ArtifactKey, to: &ArtifactKey) -> Result<ArtifactMeta> {
        let root = self.root.clone();
        let (f, t) = (from.to_string(), to.to_string());
        let copied = self
            .db
            .call(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let Some(source) = read_ref(&tx, &f)? else { return Ok(None) };
                let blob = blob_path(&root, &source.sha256);
                if !blob.exists() {
                    return Err(Error::corrupt(format!(
                        "blob {} for artifact `{f}` is missing; delete the artifact and write it again",
                        blob.display()
                    ))
                    .into());
                }
                let previous = read_ref(&tx, &t)?;
                let copied = Ref { modified_ms: now_ms(), ..source };
                link_view(&root, &t, &blob)?;
                write_ref(&tx, &t, &copied)?;
                tx.commit()?;
                if let Some(old) = previous.filter(|old| old.sha256 != copied.sha256) {
                    collect_garbage(conn, &root, &old.sha256)?;
                }
                Ok(Some(copied))
            })
            .await
            .ctx(Stage::Artifacts, "copy", from.as_str())?;
        let copied = copied.ok_or_else(|| self.not_found(from))?;
        Ok(self.meta(to.as_str(), &copied))
    }
}

impl LocalArtifacts {
    async fn lookup(&self, key: &ArtifactKey) -> Result<Option<Ref>> {
        let k = key.to_string();
        self.db.call(move |conn| Ok(read_ref(conn, &k)?)).await.ctx(Stage::Artifacts, "head", key.as_str())
    }
}

/// Streams a blob while hashing it; a blob whose bytes no longer match its name ends the
/// stream with a `Corrupt` error instead of a clean end.
struct Verifier {
    chunks: ReaderStream<tokio::fs::File>,
    hasher: Sha256,
    expected: String,
    corrupt_error: Option<Error>,
    done: bool,
}

impl Verifier {
    async fn next(mut self) -> Option<(Result<Bytes>, Verifier)> {
        if self.done {
            return None;
        }
        match self.chunks.next().await {
            Some(Ok(chunk)) => {
                self.hasher.update(&chunk);
                Some((Ok(chunk), self))
            }
            Some(Err(e)) => {
                self.done = true;
                Some((Err(Error::from(e).platform(crate::platform::LOCAL).stage(Stage::Artifacts)), self))
            }
            None => {
                self.done = true;
                let actual = hex::encode(self.hasher.clone().finalize());
                if actual == self.expected {
                    None
                } else {
                    let e = self.corrupt_error.take().expect("taken once");
                    Some((Err(e), self))
                }
            }
        }
    }
}
