//! The [`ExperimentTracker`] contract: get-or-create experiments, the run lifecycle, batched
//! metrics with their history in step order, and search by metric, tag, order and limit.

use std::collections::BTreeMap;
use std::sync::Arc;

use galley_core::ErrorKind;
use galley_core::capability::Feature;
use galley_core::stages::{Comparison, ExperimentTracker, Metric, RunQuery, RunStatus};

use crate::runner::{Case, Report, TestResult, run_cases};
use crate::support::{expect_kind, unique};
use crate::{case, ensure_eq};

type Tracker = Arc<dyn ExperimentTracker>;

pub fn cases() -> Vec<Case<Tracker>> {
    vec![
        case!(create_experiment_is_get_or_create),
        case!(run_lifecycle_from_start_to_end),
        case!(params_tags_and_artifacts_are_recorded),
        case!(a_thousand_metrics_in_one_call),
        case!(metric_history_is_in_step_order),
        case!(run_metrics_hold_the_latest_value),
        case!(logging_to_an_ended_run_fails),
        case!(get_of_unknown_run_is_not_found),
        case!(search_filters_orders_and_limits, needs = [Feature::RunSearch]),
        case!(search_compares_on_the_latest_value, needs = [Feature::RunSearch]),
    ]
}

pub async fn run_experiments(tracker: Tracker) -> Report {
    let caps = tracker.capabilities();
    run_cases("experiments", tracker, &caps, cases()).await
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// Creates a fresh experiment, runs `body`, then deletes it whatever the outcome.
async fn with_experiment<F: Future<Output = TestResult>>(t: Tracker, body: impl FnOnce(Tracker, String) -> F) -> TestResult {
    let name = unique("gtk-exp-");
    t.create_experiment(&name).await?;
    let out = body(t.clone(), name.clone()).await;
    let _ = t.delete_experiment(&name).await;
    out
}

pub async fn create_experiment_is_get_or_create(t: Tracker) -> TestResult {
    let (a, b) = (unique("gtk-exp-"), unique("gtk-exp-"));
    let out = async {
        let id1 = t.create_experiment(&a).await?;
        let id2 = t.create_experiment(&a).await?;
        ensure_eq!(id2, id1, "id from creating `{a}` a second time");
        let other = t.create_experiment(&b).await?;
        anyhow::ensure!(other != id1, "two experiments with different names share the id {id1}");
        Ok(())
    }
    .await;
    let _ = t.delete_experiment(&a).await;
    let _ = t.delete_experiment(&b).await;
    out
}

pub async fn run_lifecycle_from_start_to_end(t: Tracker) -> TestResult {
    with_experiment(t, |t, exp| async move {
        let exp_id = t.create_experiment(&exp).await?;
        let tags = map(&[("team", "fraud")]);
        let run = t.start_run(&exp, Some("baseline"), &tags).await?;
        let r = t.get_run(&run).await?;
        ensure_eq!(r.id, run, "run id");
        anyhow::ensure!(
            r.experiment == exp || r.experiment == exp_id,
            "run.experiment is `{}`; expected the experiment's name `{exp}` or id `{exp_id}`",
            r.experiment
        );
        ensure_eq!(r.name.as_deref(), Some("baseline"), "run name");
        ensure_eq!(r.status, RunStatus::Running, "status of a started run");
        ensure_eq!(r.end_ms, None, "end time of a running run");
        ensure_eq!(r.tags.get("team").map(String::as_str), Some("fraud"), "tag given at start");
        anyhow::ensure!(r.start_ms > 0, "start_ms is {}", r.start_ms);

        t.end_run(&run, RunStatus::Finished).await?;
        let r = t.get_run(&run).await?;
        ensure_eq!(r.status, RunStatus::Finished, "status after end_run(Finished)");
        match r.end_ms {
            Some(end) => anyhow::ensure!(end >= r.start_ms, "run ended at {end}, before it started at {}", r.start_ms),
            None => anyhow::bail!("an ended run has no end_ms"),
        }

        let failed = t.start_run(&exp, None, &BTreeMap::new()).await?;
        anyhow::ensure!(failed != run, "two runs got the same id {run}");
        t.end_run(&failed, RunStatus::Failed).await?;
        ensure_eq!(t.get_run(&failed).await?.status, RunStatus::Failed, "status after end_run(Failed)");
        Ok(())
    })
    .await
}

pub async fn params_tags_and_artifacts_are_recorded(t: Tracker) -> TestResult {
    with_experiment(t, |t, exp| async move {
        let run = t.start_run(&exp, None, &BTreeMap::new()).await?;
        let params = map(&[("alpha", "0.5"), ("max_depth", "6"), ("solver", "lbfgs")]);
        t.log_params(&run, &params).await?;
        t.set_tags(&run, &map(&[("stage", "candidate"), ("data", "v2")])).await?;
        t.set_tags(&run, &map(&[("stage", "champion")])).await?;
        t.log_artifact(&run, "model", "file:///tmp/galley/model.json").await?;
        let r = t.get_run(&run).await?;
        ensure_eq!(r.params, params, "params");
        ensure_eq!(r.tags.get("stage").map(String::as_str), Some("champion"), "tag set twice keeps the last value");
        ensure_eq!(r.tags.get("data").map(String::as_str), Some("v2"), "tag");
        ensure_eq!(r.artifacts, map(&[("model", "file:///tmp/galley/model.json")]), "artifacts");
        t.end_run(&run, RunStatus::Finished).await?;
        Ok(())
    })
    .await
}

pub async fn a_thousand_metrics_in_one_call(t: Tracker) -> TestResult {
    with_experiment(t, |t, exp| async move {
        let run = t.start_run(&exp, None, &BTreeMap::new()).await?;
        let mut batch: Vec<Metric> =
            (0..500).map(|s| Metric::new("loss", 1.0 / (s as f64 + 1.0)).at_step(s)).collect();
        batch.extend((0..500).map(|s| Metric::new("accuracy", s as f64 / 500.0).at_step(s)));
        t.log_metrics(&run, &batch).await?;
        let loss = t.metric_history(&run, "loss").await?;
        ensure_eq!(loss.len(), 500, "points in loss's history");
        anyhow::ensure!(loss.iter().all(|m| m.key == "loss"), "loss's history holds another metric's points");
        let acc = t.metric_history(&run, "accuracy").await?;
        ensure_eq!(acc.len(), 500, "points in accuracy's history");
        ensure_eq!(acc[250].value, 0.5, "accuracy at step 250");
        t.end_run(&run, RunStatus::Finished).await?;
        Ok(())
    })
    .await
}

pub async fn metric_history_is_in_step_order(t: Tracker) -> TestResult {
    with_experiment(t, |t, exp| async move {
        let run = t.start_run(&exp, None, &BTreeMap::new()).await?;
        // Logged in a scrambled order across two calls.
        let mut steps: Vec<i64> = (0..200).collect();
        fastrand::Rng::with_seed(5).shuffle(&mut steps);
        let points: Vec<Metric> = steps.iter().map(|&s| Metric::new("val_loss", s as f64 * 0.5).at_step(s)).collect();
        t.log_metrics(&run, &points[..100]).await?;
        t.log_metrics(&run, &points[100..]).await?;
        let history = t.metric_history(&run, "val_loss").await?;
        let got: Vec<(i64, f64)> = history.iter().map(|m| (m.step, m.value)).collect();
        let want: Vec<(i64, f64)> = (0..200).map(|s| (s, s as f64 * 0.5)).collect();
        ensure_eq!(got, want, "history of val_loss as (step, value)");
        t.end_run(&run, RunStatus::Finished).await?;
        Ok(())
    })
    .await
}

pub async fn run_metrics_hold_the_latest_value(t: Tracker) -> TestResult {
    with_experiment(t, |t, exp| async move {
        let run = t.start_run(&exp, None, &BTreeMap::new()).await?;
        for (step, v) in [(0, 0.9), (1, 0.5), (2, 0.3)] {
            t.log_metrics(&run, &[Metric::new("loss", v).at_step(step)]).await?;
        }
        t.log_metrics(&run, &[Metric::new("rmse", 4.25)]).await?;
        let r = t.get_run(&run).await?;
        ensure_eq!(r.metrics.get("loss").copied(), Some(0.3), "run.metrics[loss] after steps 0, 1, 2");
        ensure_eq!(r.metrics.get("rmse").copied(), Some(4.25), "run.metrics[rmse]");
        t.end_run(&run, RunStatus::Finished).await?;
        Ok(())
    })
    .await
}

pub async fn logging_to_an_ended_run_fails(t: Tracker) -> TestResult {
    with_experiment(t, |t, exp| async move {
        let run = t.start_run(&exp, None, &BTreeMap::new()).await?;
        t.log_metrics(&run, &[Metric::new("loss", 1.0)]).await?;
        t.end_run(&run, RunStatus::Finished).await?;
        let attempts = [
            ("log_metrics", t.log_metrics(&run, &[Metric::new("loss", 0.0).at_step(1)]).await),
            ("log_params", t.log_params(&run, &map(&[("late", "1")])).await),
        ];
        for (what, result) in attempts {
            match result {
                Ok(()) => anyhow::bail!("{what} on an ended run succeeded; a finished run must be immutable"),
                Err(e) if e.is_retryable() => {
                    anyhow::bail!("{what} on an ended run failed as retryable ({:?}: {e}); retrying cannot help", e.kind())
                }
                Err(_) => {}
            }
        }
        ensure_eq!(t.metric_history(&run, "loss").await?.len(), 1, "loss points after the refused late log");
        Ok(())
    })
    .await
}

pub async fn get_of_unknown_run_is_not_found(t: Tracker) -> TestResult {
    expect_kind(t.get_run(&unique("gtkrun")).await, ErrorKind::NotFound, "get_run of a run never started")
}

/// Four runs with known accuracies and teams; returns their ids in accuracy order.
async fn seed_runs(t: &Tracker, exp: &str) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::new();
    for (acc, team) in [(0.6, "a"), (0.7, "a"), (0.8, "b"), (0.9, "a")] {
        let run = t.start_run(exp, None, &map(&[("team", team)])).await?;
        t.log_metrics(&run, &[Metric::new("accuracy", acc), Metric::new("rmse", 1.0 - acc)]).await?;
        t.end_run(&run, RunStatus::Finished).await?;
        ids.push(run);
    }
    Ok(ids)
}

pub async fn search_filters_orders_and_limits(t: Tracker) -> TestResult {
    with_experiment(t, |t, exp| async move {
        let ids = seed_runs(&t, &exp).await?;
        let found = |q: RunQuery| {
            let (t, exp) = (t.clone(), exp.clone());
            async move { Ok::<_, anyhow::Error>(t.search_runs(&exp, &q).await?.into_iter().map(|r| r.id).collect::<Vec<_>>()) }
        };
        let mut all = found(RunQuery::default()).await?;
        all.sort();
        let mut want_all = ids.clone();
        want_all.sort();
        ensure_eq!(all, want_all, "search with no filter");

        let q = RunQuery {
            metrics: vec![("accuracy".into(), Comparison::Gt, 0.65)],
            tags: map(&[("team", "a")]),
            order_by: Some("accuracy".into()),
            descending: true,
            limit: None,
        };
        ensure_eq!(found(q.clone()).await?, vec![ids[3].clone(), ids[1].clone()], "accuracy > 0.65, team a, best first");
        ensure_eq!(
            found(RunQuery { limit: Some(1), ..q.clone() }).await?,
            vec![ids[3].clone()],
            "the same with limit 1"
        );
        ensure_eq!(
            found(RunQuery { descending: false, ..q }).await?,
            vec![ids[1].clone(), ids[3].clone()],
            "the same, worst first"
        );
        let boundary = RunQuery {
            metrics: vec![("accuracy".into(), Comparison::Ge, 0.7), ("rmse".into(), Comparison::Gt, 0.15)],
            order_by: Some("accuracy".into()),
            ..RunQuery::default()
        };
        ensure_eq!(found(boundary).await?, vec![ids[1].clone(), ids[2].clone()], "accuracy >= 0.7 and rmse > 0.15, ascending");
        let none = RunQuery { tags: map(&[("team", "nobody")]), ..RunQuery::default() };
        ensure_eq!(found(none).await?, Vec::<String>::new(), "search for an absent tag value");
        Ok(())
    })
    .await
}

pub async fn search_compares_on_the_latest_value(t: Tracker) -> TestResult {
    with_experiment(t, |t, exp| async move {
        let run = t.start_run(&exp, None, &BTreeMap::new()).await?;
        // Good early, bad at the end: a search for good runs must not match on history.
        t.log_metrics(&run, &[Metric::new("accuracy", 0.95).at_step(0), Metric::new("accuracy", 0.4).at_step(1)])
            .await?;
        t.end_run(&run, RunStatus::Finished).await?;
        let q = RunQuery { metrics: vec![("accuracy".into(), Comparison::Gt, 0.9)], ..RunQuery::default() };
        let got: Vec<String> = t.search_runs(&exp, &q).await?.into_iter().map(|r| r.id).collect();
        ensure_eq!(got, Vec::<String>::new(), "runs whose latest accuracy > 0.9");
        Ok(())
    })
    .await
}
