//! The plan is the run: what `galley plan -o json` says a run will do — the steps in order, the
//! variants, versions and weights the endpoint ends up with — is what `galley run` does, on the
//! first deploy (all traffic to the new version) and on a later one (the canary split).

mod common;

use common::{Project, ok};
use serde_json::Value;

/// The plan's `shift_traffic` variants as (name, version, weight).
fn planned(plan: &Value) -> Vec<(String, u64, u64)> {
    let shift = plan["lifecycle"].as_array().unwrap().iter().find(|a| a["action"] == "shift_traffic").unwrap_or_else(|| panic!("{plan}"));
    let mut v: Vec<_> = shift["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap().to_owned(), v["version"].as_u64().unwrap(), v["weight"].as_u64().unwrap()))
        .collect();
    v.sort();
    v
}

/// The variants the run's deploy step left on the endpoint.
fn deployed(run: &Value) -> Vec<(String, u64, u64)> {
    let mut v: Vec<_> = run["run"]["variants"]
        .as_array()
        .unwrap_or_else(|| panic!("{run}"))
        .iter()
        .map(|v| (v["name"].as_str().unwrap().to_owned(), v["version"].as_u64().unwrap(), v["weight"].as_u64().unwrap()))
        .collect();
    v.sort();
    v
}

fn planned_steps(plan: &Value) -> Vec<String> {
    let run = plan["lifecycle"].as_array().unwrap().iter().find(|a| a["action"] == "run_pipeline").unwrap();
    run["steps"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_owned()).collect()
}

fn run_steps(run: &Value) -> Vec<String> {
    run["run"]["steps"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn the_plan_shows_exactly_the_variants_and_steps_the_run_applies() {
    // The gate keeps its floor but not "beat the champion", so a retrained model is promoted.
    let p = Project::from_shipped("quickstart.yaml", |t| t.replace("      beat_champion_by: 0.0\n", ""));

    // First deploy: the plan (before anything exists) and the run agree on all traffic to v1,
    // although the blueprint asks for a 10% canary (there is nothing to split with yet).
    let (_, plan) = p.galley_json(&["plan"]);
    assert_eq!(planned(&plan), [("v1".to_owned(), 1, 100)], "{plan}");
    ok(&p.galley(&["apply", "--auto-approve"]));
    let (code, run) = p.galley_json(&["run"]);
    assert_eq!(code, 0, "{run}");
    assert_eq!(deployed(&run), planned(&plan), "the first run did what the plan said");
    assert_eq!(run_steps(&run), planned_steps(&plan), "the steps, in the order the plan listed them");

    // A retrained model (other hyperparameters): the plan, made against the live endpoint,
    // shows the canary split; the run applies exactly that.
    let retrain = ["--var", "max_iterations=60"];
    let (code, plan) = p.galley_json(&[&["plan", "--detailed-exitcode"][..], &retrain[..]].concat());
    assert_eq!(code, 0, "no resource changes, only lifecycle actions: {plan}");
    assert_eq!(planned(&plan), [("v1".to_owned(), 1, 90), ("v2".to_owned(), 2, 10)], "{plan}");
    let (code, run) = p.galley_json(&[&["run"][..], &retrain[..]].concat());
    assert_eq!(code, 0, "{run}");
    assert_eq!(run["run"]["registered_version"], 2, "{run}");
    assert_eq!(deployed(&run), planned(&plan), "the second run did what the plan said");

    ok(&p.galley(&["destroy", "--auto-approve"]));
}
