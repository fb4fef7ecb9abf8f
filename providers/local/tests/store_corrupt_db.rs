//! A damaged SQLite file behind any local store is reported as `Corrupt`, naming the file and
//! saying how to recover, never as an opaque internal error or a panic.

use std::path::Path;

use galley_core::{Error, ErrorKind};
use galley_local::experiments::LocalExperiments;
use galley_local::features::LocalFeatures;
use galley_local::registry::LocalRegistry;

/// Overwrites the whole file (and drops its WAL) with bytes that are not a database.
fn scribble_over(path: &Path) {
    let mut state = 0x9e3779b97f4a7c15u64;
    let garbage: Vec<u8> = (0..16 * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    std::fs::write(path, garbage).unwrap();
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

fn assert_corrupt(e: Error, path: &Path) {
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(!e.is_retryable());
    assert!(e.message().contains(&path.display().to_string()), "{e}");
    assert!(e.message().contains("not a SQLite database"), "{e}");
    assert!(e.message().contains("move it aside") && e.message().contains("galley apply"), "{e}");
}

#[test]
fn corrupt_feature_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("features.db");
    drop(LocalFeatures::open(path.clone()).unwrap());
    scribble_over(&path);
    assert_corrupt(LocalFeatures::open(path.clone()).err().unwrap(), &path);
}

#[test]
fn corrupt_experiment_tracker() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("experiments.db");
    drop(LocalExperiments::open(path.clone()).unwrap());
    scribble_over(&path);
    assert_corrupt(LocalExperiments::open(path.clone()).err().unwrap(), &path);
}

#[test]
fn corrupt_registry() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.db");
    drop(LocalRegistry::open(path.clone()).unwrap());
    scribble_over(&path);
    assert_corrupt(LocalRegistry::open(path.clone()).err().unwrap(), &path);
}

#[test]
fn corrupt_artifact_index() {
    let dir = tempfile::tempdir().unwrap();
    drop(galley_local::artifacts::LocalArtifacts::open(dir.path().to_path_buf()).unwrap());
    let path = dir.path().canonicalize().unwrap().join("index.db");
    scribble_over(&path);
    assert_corrupt(galley_local::artifacts::LocalArtifacts::open(dir.path().to_path_buf()).err().unwrap(), &path);
}
