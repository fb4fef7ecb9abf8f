//! The [`ModelRegistry`] contract: get-or-create models, versions numbered 1, 2, … (also under
//! concurrent registration), metadata that round-trips, approval status and movable aliases.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use galley_core::capability::Feature;
use galley_core::stages::{ApprovalStatus, Lineage, ModelRegistry, NewModelVersion, Signature};
use galley_core::table::Column;
use galley_core::{DType, ErrorKind};

use crate::runner::{Case, Report, TestResult, run_cases};
use crate::support::{expect_kind, sha256_hex, unique};
use crate::{case, ensure_eq};

type Registry = Arc<dyn ModelRegistry>;

pub fn cases() -> Vec<Case<Registry>> {
    vec![
        case!(create_model_is_get_or_create),
        case!(delete_model_removes_it),
        case!(versions_are_numbered_from_one),
        case!(version_metadata_roundtrips),
        case!(get_of_unknown_version_is_not_found),
        case!(concurrent_registrations_get_distinct_numbers),
        case!(approval_status_is_recorded, needs = [Feature::ApprovalStatus]),
        case!(aliases_move_and_resolve, needs = [Feature::ModelAliases]),
        case!(alias_to_unknown_version_is_not_found, needs = [Feature::ModelAliases]),
        case!(get_by_unknown_alias_is_none, needs = [Feature::ModelAliases]),
        case!(aliases_are_refused_as_unsupported, needs = [], absent = [Feature::ModelAliases]),
    ]
}

pub async fn run_registry(registry: Registry) -> Report {
    let caps = registry.capabilities();
    run_cases("registry", registry, &caps, cases()).await
}

fn new_version(n: u64) -> NewModelVersion {
    NewModelVersion {
        artifact_uri: format!("file:///tmp/galley-testkit/models/{n}/model.json"),
        metrics: BTreeMap::from([("rmse".to_owned(), 0.5 / n as f64), ("r2".to_owned(), 0.8)]),
        lineage: Lineage {
            run_id: Some(format!("run-{n}")),
            data_hash: Some(sha256_hex(format!("data {n}").as_bytes())),
            code_version: Some("galley 0.1.0 / blueprint 9f2c".to_owned()),
            params: BTreeMap::from([("alpha".to_owned(), "0.1".to_owned())]),
        },
        signature: Signature {
            inputs: vec![Column::new("alcohol", DType::Float), Column::new("ph", DType::Float)],
            output: Some(Column::new("quality", DType::Float)),
        },
        description: Some(format!("candidate {n}")),
    }
}

/// Creates a fresh model, runs `body`, then deletes it whatever the outcome.
async fn with_model<F: Future<Output = TestResult>>(r: Registry, body: impl FnOnce(Registry, String) -> F) -> TestResult {
    let name = unique("gtk-model-");
    r.create_model(&name, Some("galley-testkit")).await?;
    let out = body(r.clone(), name.clone()).await;
    let _ = r.delete_model(&name).await;
    out
}

pub async fn create_model_is_get_or_create(r: Registry) -> TestResult {
    with_model(r, |r, name| async move {
        r.create_model(&name, Some("galley-testkit"))
            .await
            .map_err(|e| anyhow::anyhow!("creating model `{name}` again must succeed: {e}"))?;
        anyhow::ensure!(r.model_exists(&name).await?, "model_exists({name}) is false after create");
        r.register_version(&name, &new_version(1)).await?;
        r.create_model(&name, None).await?;
        ensure_eq!(r.list_versions(&name).await?.len(), 1, "versions kept across a repeated create_model");
        anyhow::ensure!(!r.model_exists(&unique("gtk-model-")).await?, "model_exists of a model never created is true");
        Ok(())
    })
    .await
}

pub async fn delete_model_removes_it(r: Registry) -> TestResult {
    let name = unique("gtk-model-");
    r.create_model(&name, None).await?;
    r.register_version(&name, &new_version(1)).await?;
    r.delete_model(&name).await?;
    anyhow::ensure!(!r.model_exists(&name).await?, "model_exists is true after delete_model");
    Ok(())
}

pub async fn versions_are_numbered_from_one(r: Registry) -> TestResult {
    with_model(r, |r, name| async move {
        for n in 1..=3 {
            let v = r.register_version(&name, &new_version(n)).await?;
            ensure_eq!(v.version, n, "number of registration #{n}");
            ensure_eq!(v.model, name, "model of the registered version");
        }
        let mut listed: Vec<u64> = r.list_versions(&name).await?.iter().map(|v| v.version).collect();
        listed.sort_unstable();
        ensure_eq!(listed, vec![1, 2, 3], "list_versions");
        ensure_eq!(r.get_version(&name, 2).await?.artifact_uri, new_version(2).artifact_uri, "artifact of version 2");
        Ok(())
    })
    .await
}

pub async fn version_metadata_roundtrips(r: Registry) -> TestResult {
    with_model(r, |r, name| async move {
        let new = new_version(7);
        let registered = r.register_version(&name, &new).await?;
        let got = r.get_version(&name, registered.version).await?;
        ensure_eq!(got, registered, "get_version vs what register_version returned");
        ensure_eq!(got.artifact_uri, new.artifact_uri, "artifact_uri");
        ensure_eq!(got.metrics, new.metrics, "metrics");
        ensure_eq!(got.lineage, new.lineage, "lineage");
        ensure_eq!(got.signature, new.signature, "signature");
        ensure_eq!(got.aliases, Vec::<String>::new(), "aliases of a new version");
        anyhow::ensure!(got.created_ms > 0, "created_ms is {}", got.created_ms);
        Ok(())
    })
    .await
}

pub async fn get_of_unknown_version_is_not_found(r: Registry) -> TestResult {
    with_model(r, |r, name| async move {
        r.register_version(&name, &new_version(1)).await?;
        expect_kind(r.get_version(&name, 2).await, ErrorKind::NotFound, "version 2 of a model with one version")?;
        expect_kind(r.get_version(&unique("gtk-model-"), 1).await, ErrorKind::NotFound, "a version of a model never created")
    })
    .await
}

pub async fn concurrent_registrations_get_distinct_numbers(r: Registry) -> TestResult {
    with_model(r, |r, name| async move {
        const N: u64 = 8;
        let tasks: Vec<_> = (1..=N)
            .map(|n| {
                let (r, name) = (r.clone(), name.clone());
                tokio::spawn(async move { r.register_version(&name, &new_version(n)).await })
            })
            .collect();
        let mut numbers = BTreeSet::new();
        for t in tasks {
            let v = t.await??;
            anyhow::ensure!(numbers.insert(v.version), "version {} was handed out twice", v.version);
        }
        ensure_eq!(numbers, (1..=N).collect::<BTreeSet<_>>(), "numbers handed to {N} concurrent registrations");
        ensure_eq!(r.list_versions(&name).await?.len(), N as usize, "versions listed");
        Ok(())
    })
    .await
}

pub async fn approval_status_is_recorded(r: Registry) -> TestResult {
    with_model(r, |r, name| async move {
        let v1 = r.register_version(&name, &new_version(1)).await?.version;
        let v2 = r.register_version(&name, &new_version(2)).await?.version;
        r.set_approval(&name, v2, ApprovalStatus::Approved).await?;
        let approved = r.get_version(&name, v2).await?;
        ensure_eq!(approved.approval, ApprovalStatus::Approved, "approval of v2");
        // Approving changes the status, not the record a deploy reads (signature, metrics, lineage).
        let registered = new_version(2);
        ensure_eq!(
            (approved.signature, approved.metrics, approved.lineage),
            (registered.signature, registered.metrics, registered.lineage),
            "v2's record after its approval"
        );
        r.set_approval(&name, v1, ApprovalStatus::Rejected).await?;
        ensure_eq!(r.get_version(&name, v1).await?.approval, ApprovalStatus::Rejected, "approval of v1");
        ensure_eq!(r.get_version(&name, v2).await?.approval, ApprovalStatus::Approved, "approval of v2 after v1 changed");
        r.set_approval(&name, v2, ApprovalStatus::Rejected).await?;
        ensure_eq!(r.get_version(&name, v2).await?.approval, ApprovalStatus::Rejected, "approval of v2 after rejection");
        expect_kind(r.set_approval(&name, 99, ApprovalStatus::Approved).await, ErrorKind::NotFound, "approving a version that does not exist")
    })
    .await
}

pub async fn aliases_move_and_resolve(r: Registry) -> TestResult {
    with_model(r, |r, name| async move {
        for n in 1..=2 {
            r.register_version(&name, &new_version(n)).await?;
        }
        r.set_alias(&name, "champion", 1).await?;
        r.set_alias(&name, "challenger", 2).await?;
        let champ = r.get_by_alias(&name, "champion").await?.map(|v| v.version);
        ensure_eq!(champ, Some(1), "champion after set_alias(champion, 1)");
        ensure_eq!(r.get_version(&name, 1).await?.aliases, vec!["champion".to_owned()], "aliases of v1");

        // Promotion: the alias moves, it is not duplicated.
        r.set_alias(&name, "champion", 2).await?;
        ensure_eq!(r.get_by_alias(&name, "champion").await?.map(|v| v.version), Some(2), "champion after the move");
        ensure_eq!(r.get_version(&name, 1).await?.aliases, Vec::<String>::new(), "aliases of v1 after the move");
        let mut v2_aliases = r.get_version(&name, 2).await?.aliases;
        v2_aliases.sort();
        ensure_eq!(v2_aliases, vec!["challenger".to_owned(), "champion".to_owned()], "aliases of v2");
        // A listing carries them too: promotion logic (the gate's champion, a migration) reads it.
        let listed: Vec<(u64, Vec<String>)> = r
            .list_versions(&name)
            .await?
            .into_iter()
            .map(|v| {
                let mut a = v.aliases;
                a.sort();
                (v.version, a)
            })
            .collect();
        ensure_eq!(listed, vec![(1, vec![]), (2, vec!["challenger".to_owned(), "champion".to_owned()])], "list_versions' aliases");

        r.remove_alias(&name, "challenger").await?;
        ensure_eq!(r.get_by_alias(&name, "challenger").await?, None, "challenger after remove_alias");
        ensure_eq!(r.get_by_alias(&name, "champion").await?.map(|v| v.version), Some(2), "champion after removing another alias");
        Ok(())
    })
    .await
}

pub async fn alias_to_unknown_version_is_not_found(r: Registry) -> TestResult {
    with_model(r, |r, name| async move {
        r.register_version(&name, &new_version(1)).await?;
        expect_kind(r.set_alias(&name, "champion", 5).await, ErrorKind::NotFound, "set_alias to version 5 of 1")?;
        ensure_eq!(r.get_by_alias(&name, "champion").await?, None, "an alias whose set_alias failed");
        Ok(())
    })
    .await
}

pub async fn get_by_unknown_alias_is_none(r: Registry) -> TestResult {
    with_model(r, |r, name| async move {
        r.register_version(&name, &new_version(1)).await?;
        ensure_eq!(r.get_by_alias(&name, "never-set").await?, None, "get_by_alias of an alias never set");
        Ok(())
    })
    .await
}

pub async fn aliases_are_refused_as_unsupported(r: Registry) -> TestResult {
    with_model(r, |r, name| async move {
        r.register_version(&name, &new_version(1)).await?;
        expect_kind(r.set_alias(&name, "champion", 1).await, ErrorKind::Unsupported, "set_alias on a platform without aliases")
    })
    .await
}
