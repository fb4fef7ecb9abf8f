//! The migration's journal: one JSON line per unit moved, appended and fsync'd before the next
//! unit starts, so a migration killed at any point resumes where it stopped. It holds ids,
//! keys and URIs, never a setting or a secret.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use galley_core::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// An object: the key → its URI on the target.
    Artifact,
    /// An experiment run: the source's id → the target's.
    Run,
    /// A model version: the source's number → the target's.
    Version,
    /// The endpoint redeployed: its name → the target's.
    Endpoint,
    /// The monitor re-baselined: `MONITOR@VERSION` (the source version it is scored by) → the rows.
    Baseline,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Entry {
    kind: Kind,
    source: String,
    target: String,
}

pub struct Journal {
    path: PathBuf,
    file: std::fs::File,
    done: HashMap<(Kind, String), String>,
}

impl Journal {
    /// Opens (or starts) the journal at `path`. A last line a kill cut short is dropped: its
    /// unit is redone, and found on the target by its natural key if it had got there.
    pub fn open(path: &Path) -> Result<Journal> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e.into()),
        };
        let whole = text.rfind('\n').map_or(0, |i| i + 1);
        let mut done = HashMap::new();
        for (n, line) in text[..whole].lines().enumerate() {
            let e: Entry = serde_json::from_str(line).map_err(|err| {
                Error::corrupt(format!(
                    "{}:{}: not a journal entry ({err}); the file was edited by hand. Move it away to start the migration's bookkeeping afresh (units already copied are found again on the target)",
                    path.display(),
                    n + 1
                ))
            })?;
            done.insert((e.kind, e.source), e.target);
        }
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        file.set_len(whole as u64)?;
        Ok(Journal { path: path.to_owned(), file, done })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Units recorded so far.
    pub fn len(&self) -> usize {
        self.done.len()
    }

    pub fn is_empty(&self) -> bool {
        self.done.is_empty()
    }

    /// What the target holds for `source`, if this unit is done.
    pub fn done(&self, kind: Kind, source: &str) -> Option<&str> {
        self.done.get(&(kind, source.to_owned())).map(String::as_str)
    }

    /// Records a finished unit. The line is written at once, so a killed process keeps it; it
    /// is fsync'd at once too, except an object's, which are fsync'd together by [`Journal::sync`]
    /// (an object whose entry a power cut loses is found on the target by its hash, so a sync per
    /// object would only cost a disk flush each).
    pub fn record(&mut self, kind: Kind, source: &str, target: &str) -> Result<()> {
        let mut line = serde_json::to_string(&Entry { kind, source: source.to_owned(), target: target.to_owned() })?;
        line.push('\n');
        self.file.write_all(line.as_bytes())?;
        if kind != Kind::Artifact {
            self.file.sync_data()?;
        }
        self.done.insert((kind, source.to_owned()), target.to_owned());
        crash_point();
        Ok(())
    }

    /// Makes every entry written so far durable.
    pub fn sync(&mut self) -> Result<()> {
        Ok(self.file.sync_data()?)
    }
}

/// `GALLEY_TEST_MIGRATE_CRASH_AT=N`: dies like `kill -9` at this process's N-th kill point
/// (test builds only): after each journal entry, and inside a unit after the target changed but
/// before the journal knows (an object written, a run started, a version registered, an endpoint
/// deployed). That is how the tests kill a migration at many points.
#[cfg(feature = "testing")]
pub(crate) fn crash_point() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static WRITTEN: AtomicUsize = AtomicUsize::new(0);
    let n = WRITTEN.fetch_add(1, Ordering::SeqCst) + 1;
    if std::env::var("GALLEY_TEST_MIGRATE_CRASH_AT").ok().and_then(|v| v.parse().ok()) == Some(n) {
        // SAFETY: signalling our own process; SIGKILL runs no destructors, like a real kill.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

#[cfg(not(feature = "testing"))]
pub(crate) fn crash_point() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_survive_reopening_and_a_torn_last_line_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j/journal.jsonl");
        let mut j = Journal::open(&path).unwrap();
        j.record(Kind::Run, "a", "1").unwrap();
        j.record(Kind::Version, "1", "4").unwrap();
        drop(j);
        // A kill in the middle of a write leaves part of a line.
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(br#"{"kind":"run","sou"#).unwrap();
        let mut j = Journal::open(&path).unwrap();
        assert_eq!(j.len(), 2);
        assert_eq!(j.done(Kind::Version, "1"), Some("4"));
        assert_eq!(j.done(Kind::Run, "b"), None);
        j.record(Kind::Run, "b", "2").unwrap();
        drop(j);
        let j = Journal::open(&path).unwrap();
        assert_eq!(j.done(Kind::Run, "b"), Some("2"), "the entry after the torn line is whole");
        assert_eq!(j.len(), 3);
    }

    #[test]
    fn a_hand_edited_line_is_refused_naming_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        std::fs::write(&path, "{\"kind\":\"run\",\"source\":\"a\",\"target\":\"1\"}\nnot json\n").unwrap();
        let err = Journal::open(&path).err().unwrap().to_string();
        assert!(err.contains("journal.jsonl:2"), "{err}");
    }
}
