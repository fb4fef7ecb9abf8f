//! Local-specific behaviour of the SQLite model registry.

use std::collections::BTreeMap;
use std::sync::Arc;

use galley_core::ErrorKind;
use galley_core::stages::{ApprovalStatus, Lineage, ModelRegistry, NewModelVersion, Signature};
use galley_core::table::{Column, DType};
use galley_local::registry::LocalRegistry;

fn new_version(uri: &str, acc: f64) -> NewModelVersion {
    NewModelVersion {
        artifact_uri: uri.into(),
        metrics: BTreeMap::from([("acc".to_owned(), acc)]),
        lineage: Lineage { run_id: Some("run-1".into()), data_hash: Some("abc".into()), ..Default::default() },
        signature: Signature { inputs: vec![Column::new("alcohol", DType::Float)], output: None },
        description: None,
    }
}

async fn registry() -> (tempfile::TempDir, LocalRegistry) {
    let dir = tempfile::tempdir().unwrap();
    let r = LocalRegistry::open(dir.path().join("registry.db")).unwrap();
    r.create_model("wine", Some("wine quality")).await.unwrap();
    (dir, r)
}

#[tokio::test]
async fn versions_are_numbered_from_one_and_keep_their_documents() {
    let (_dir, r) = registry().await;
    r.create_model("wine", None).await.unwrap();
    let v1 = r.register_version("wine", &new_version("file:///m1", 0.8)).await.unwrap();
    let v2 = r.register_version("wine", &new_version("file:///m2", 0.9)).await.unwrap();
    assert_eq!((v1.version, v2.version), (1, 2));
    assert_eq!(v1.approval, ApprovalStatus::PendingManualApproval);
    let got = r.get_version("wine", 2).await.unwrap();
    assert_eq!(got.artifact_uri, "file:///m2");
    assert_eq!(got.metrics["acc"], 0.9);
    assert_eq!(got.lineage.data_hash.as_deref(), Some("abc"));
    assert_eq!(got.signature.inputs[0].name, "alcohol");
    assert_eq!(r.list_versions("wine").await.unwrap().iter().map(|v| v.version).collect::<Vec<_>>(), [1, 2]);

    r.set_approval("wine", 1, ApprovalStatus::Approved).await.unwrap();
    assert_eq!(r.get_version("wine", 1).await.unwrap().approval, ApprovalStatus::Approved);

    let e = r.get_version("wine", 7).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.message().contains("1 to 2"), "{e}");
    let e = r.register_version("nope", &new_version("file:///x", 0.1)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.message().contains("nope"), "{e}");
}

#[tokio::test]
async fn concurrent_registrations_get_distinct_consecutive_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.db");
    LocalRegistry::open(path.clone()).unwrap().create_model("wine", None).await.unwrap();
    // Two independent connections (as two processes would have), four registrations each.
    let stores = [Arc::new(LocalRegistry::open(path.clone()).unwrap()), Arc::new(LocalRegistry::open(path).unwrap())];
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = Arc::clone(&stores[i % 2]);
        tasks.push(tokio::spawn(async move {
            store.register_version("wine", &new_version(&format!("file:///m{i}"), i as f64)).await.unwrap().version
        }));
    }
    let mut numbers = Vec::new();
    for t in tasks {
        numbers.push(t.await.unwrap());
    }
    numbers.sort();
    assert_eq!(numbers, (1..=8).collect::<Vec<u64>>());
}

#[tokio::test]
async fn an_alias_names_one_version_and_moves_when_set_again() {
    let (_dir, r) = registry().await;
    for acc in [0.7, 0.8, 0.9] {
        r.register_version("wine", &new_version("file:///m", acc)).await.unwrap();
    }
    assert_eq!(r.get_by_alias("wine", "champion").await.unwrap(), None);
    r.set_alias("wine", "champion", 1).await.unwrap();
    r.set_alias("wine", "challenger", 2).await.unwrap();
    assert_eq!(r.get_by_alias("wine", "champion").await.unwrap().unwrap().version, 1);
    r.set_alias("wine", "champion", 3).await.unwrap();
    assert_eq!(r.get_by_alias("wine", "champion").await.unwrap().unwrap().version, 3);
    assert!(r.get_version("wine", 1).await.unwrap().aliases.is_empty());
    assert_eq!(r.get_version("wine", 3).await.unwrap().aliases, ["champion"]);

    assert_eq!(r.set_alias("wine", "champion", 9).await.unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(r.set_alias("wine", "7", 1).await.unwrap_err().kind(), ErrorKind::InvalidInput);
    r.remove_alias("wine", "challenger").await.unwrap();
    r.remove_alias("wine", "challenger").await.unwrap();
    assert_eq!(r.get_by_alias("wine", "challenger").await.unwrap(), None);
}

#[tokio::test]
async fn deleting_a_model_deletes_its_versions_and_aliases() {
    let (_dir, r) = registry().await;
    r.register_version("wine", &new_version("file:///m", 0.7)).await.unwrap();
    r.set_alias("wine", "champion", 1).await.unwrap();
    r.delete_model("wine").await.unwrap();
    assert!(!r.model_exists("wine").await.unwrap());
    assert_eq!(r.get_by_alias("wine", "champion").await.unwrap_err().kind(), ErrorKind::NotFound);
    // Re-created, it starts again from version 1 with no alias.
    r.create_model("wine", None).await.unwrap();
    assert_eq!(r.register_version("wine", &new_version("file:///m", 0.7)).await.unwrap().version, 1);
    assert_eq!(r.get_by_alias("wine", "champion").await.unwrap(), None);
    r.delete_model("absent").await.unwrap();
}
