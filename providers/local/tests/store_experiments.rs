//! Local-specific behaviour of the SQLite experiment tracker.

use std::collections::BTreeMap;

use galley_core::ErrorKind;
use galley_core::stages::{Comparison, ExperimentTracker, Metric, RunQuery, RunStatus};
use galley_local::experiments::LocalExperiments;

fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

async fn tracker() -> (tempfile::TempDir, LocalExperiments) {
    let dir = tempfile::tempdir().unwrap();
    let t = LocalExperiments::open(dir.path().join("experiments.db")).unwrap();
    (dir, t)
}

#[tokio::test]
async fn experiments_are_get_or_create_and_runs_have_uuid_ids() {
    let (_dir, t) = tracker().await;
    let a = t.create_experiment("wine").await.unwrap();
    assert_eq!(t.create_experiment("wine").await.unwrap(), a);
    let run = t.start_run("wine", Some("first"), &tags(&[("team", "ml")])).await.unwrap();
    assert_eq!(run.len(), 32);
    assert!(run.chars().all(|c| c.is_ascii_hexdigit()), "{run}");
    let r = t.get_run(&run).await.unwrap();
    assert_eq!((r.experiment.as_str(), r.name.as_deref(), r.status), ("wine", Some("first"), RunStatus::Running));
    assert_eq!(r.tags, tags(&[("team", "ml")]));
    let e = t.start_run("missing", None, &BTreeMap::new()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.message().contains("missing"), "{e}");
}

#[tokio::test]
async fn metric_history_is_kept_in_step_order_and_the_run_shows_the_latest() {
    let (_dir, t) = tracker().await;
    t.create_experiment("wine").await.unwrap();
    let run = t.start_run("wine", None, &BTreeMap::new()).await.unwrap();
    let batch: Vec<Metric> = (0..1000)
        .rev()
        .map(|s| Metric { key: "loss".into(), value: 1.0 / (s as f64 + 1.0), step: s, timestamp_ms: 1_000 + s })
        .collect();
    t.log_metrics(&run, &batch).await.unwrap();
    // A late point for an earlier step is history, not the latest value.
    t.log_metrics(&run, &[Metric { key: "loss".into(), value: 42.0, step: 3, timestamp_ms: 99_999 }]).await.unwrap();
    t.log_metrics(&run, &[Metric { key: "nan".into(), value: f64::NAN, step: 0, timestamp_ms: 1 }]).await.unwrap();

    let history = t.metric_history(&run, "loss").await.unwrap();
    assert_eq!(history.len(), 1001);
    assert!(history.windows(2).all(|w| w[0].step <= w[1].step));
    assert_eq!(history[0].step, 0);
    assert_eq!(history[0].value, 1.0);
    assert_eq!(history.iter().filter(|m| m.step == 3).count(), 2);
    let r = t.get_run(&run).await.unwrap();
    assert_eq!(r.metrics["loss"], 1.0 / 1000.0);
    assert!(r.metrics["nan"].is_nan());
    assert!(t.metric_history(&run, "other").await.unwrap().is_empty());
}

#[tokio::test]
async fn ended_and_unknown_runs_refuse_writes() {
    let (_dir, t) = tracker().await;
    t.create_experiment("wine").await.unwrap();
    let run = t.start_run("wine", None, &BTreeMap::new()).await.unwrap();
    t.log_params(&run, &tags(&[("alpha", "0.1")])).await.unwrap();
    t.log_params(&run, &tags(&[("alpha", "0.1")])).await.unwrap();
    let e = t.log_params(&run, &tags(&[("alpha", "0.2")])).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    t.log_artifact(&run, "model", "file:///tmp/m.bin").await.unwrap();
    t.end_run(&run, RunStatus::Finished).await.unwrap();

    let r = t.get_run(&run).await.unwrap();
    assert_eq!(r.status, RunStatus::Finished);
    assert!(r.end_ms.is_some());
    assert_eq!(r.params, tags(&[("alpha", "0.1")]));
    assert_eq!(r.artifacts, tags(&[("model", "file:///tmp/m.bin")]));

    let e = t.log_metrics(&run, &[Metric::new("acc", 0.9)]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert!(e.message().contains(&run) && e.message().contains("ended"), "{e}");
    assert!(t.end_run(&run, RunStatus::Failed).await.is_err());
    // Tags stay editable on an ended run.
    t.set_tags(&run, &tags(&[("deployed", "yes")])).await.unwrap();

    let e = t.log_metrics("no-such-run", &[Metric::new("acc", 0.9)]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.message().contains("no-such-run"), "{e}");
    assert_eq!(t.get_run("no-such-run").await.unwrap_err().kind(), ErrorKind::NotFound);
}

#[tokio::test]
async fn search_filters_by_metrics_and_tags_and_orders_by_a_metric() {
    let (_dir, t) = tracker().await;
    t.create_experiment("wine").await.unwrap();
    t.create_experiment("other").await.unwrap();
    let mut ids = Vec::new();
    for (acc, kind) in [(0.70, "tree"), (0.95, "linear"), (0.85, "tree"), (0.60, "linear")] {
        let run = t.start_run("wine", None, &tags(&[("kind", kind)])).await.unwrap();
        t.log_metrics(&run, &[Metric::new("acc", acc)]).await.unwrap();
        ids.push(run);
    }
    let no_metric = t.start_run("wine", None, &tags(&[("kind", "tree")])).await.unwrap();
    let elsewhere = t.start_run("other", None, &BTreeMap::new()).await.unwrap();
    t.log_metrics(&elsewhere, &[Metric::new("acc", 0.99)]).await.unwrap();

    let q = RunQuery { order_by: Some("acc".into()), descending: true, ..Default::default() };
    let found: Vec<String> = t.search_runs("wine", &q).await.unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(found, [ids[1].clone(), ids[2].clone(), ids[0].clone(), ids[3].clone(), no_metric.clone()]);

    let q = RunQuery { order_by: Some("acc".into()), descending: false, limit: Some(2), ..Default::default() };
    let found: Vec<String> = t.search_runs("wine", &q).await.unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(found, [ids[3].clone(), ids[0].clone()]);

    let q = RunQuery {
        metrics: vec![("acc".into(), Comparison::Ge, 0.7)],
        tags: tags(&[("kind", "tree")]),
        order_by: Some("acc".into()),
        descending: true,
        limit: None,
    };
    let found = t.search_runs("wine", &q).await.unwrap();
    let found_ids: Vec<&str> = found.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(found_ids, [ids[2].as_str(), ids[0].as_str()]);
    assert_eq!(found[0].metrics["acc"], 0.85);

    assert_eq!(t.search_runs("missing", &RunQuery::default()).await.unwrap_err().kind(), ErrorKind::NotFound);

    t.delete_experiment("wine").await.unwrap();
    assert_eq!(t.get_run(&ids[0]).await.unwrap_err().kind(), ErrorKind::NotFound);
    assert!(t.get_run(&elsewhere).await.is_ok());
    t.delete_experiment("wine").await.unwrap();
}
