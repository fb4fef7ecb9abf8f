//! `galley migrate` through the real binary, local → local (another blueprint's stack: other
//! bucket, experiment, model, endpoint, monitor): planned, killed with SIGKILL at every kill
//! point and resumed until it finishes, then proven; a target that moves on fails the proof.
//! The local → aws and aws → local pairs run on moto in `aws_moto.rs`.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::process::Output;

use common::{Project, ok};
use serde_json::Value;

const TARGET_STATE: &str = ".galley/target.json";

/// The quickstart as another stack: every name changed, so nothing is shared but the machine.
fn target_text(source: &str) -> String {
    source
        .replace("name: wine-quality\n", "name: wine-quality-b\n")
        .replace("bucket: wine-quality-artifacts", "bucket: wine-quality-b")
        .replace("group: wine-features", "group: wine-features-b")
        .replace("    name: wine-quality\n", "    name: wine-quality-b\n")
        .replace("name: wine-quality-retrain", "name: wine-quality-b-retrain")
        .replace("model: wine-quality\n", "model: wine-quality-b\n")
        .replace("endpoint: wine-quality\n", "endpoint: wine-quality-b\n")
}

fn on_target(p: &Project, args: &[&str]) -> Output {
    let (cmd, rest) = args.split_first().unwrap();
    std::process::Command::new(env!("CARGO_BIN_EXE_galley"))
        .current_dir(p.path())
        .arg(cmd)
        .arg("target.yaml")
        .args(["--state", TARGET_STATE])
        .args(rest)
        .env("NO_COLOR", "1")
        .env_remove("GALLEY_OUTPUT")
        .output()
        .unwrap()
}

/// `galley migrate SUB SOURCE ARGS…`.
fn migrate(p: &Project, sub: &str, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_galley"))
        .current_dir(p.path())
        .args(["migrate", sub])
        .arg(&p.blueprint)
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("GALLEY_OUTPUT")
        .output()
        .unwrap()
}

fn migrate_json(p: &Project, sub: &str, args: &[&str]) -> (i32, Value) {
    let out = migrate(p, sub, &[args, &["--output", "json"]].concat());
    (out.status.code().unwrap_or(-1), json_of(&out))
}

fn json_of(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::Deserializer::from_str(&stdout)
        .into_iter::<Value>()
        .filter_map(Result::ok)
        .last()
        .unwrap_or_else(|| panic!("no JSON:\n{stdout}\nstderr:\n{}", String::from_utf8_lossy(&out.stderr)))
}

fn check<'a>(proof: &'a Value, what: &str) -> &'a Value {
    proof["checks"].as_array().unwrap().iter().find(|c| c["what"] == what).unwrap_or_else(|| panic!("no `{what}` check: {proof}"))
}

#[test]
fn local_to_local_killed_at_every_point_resumes_and_is_proven() {
    let p = Project::from_shipped("quickstart.yaml", |t| t);
    let text = std::fs::read_to_string(&p.blueprint).unwrap();
    std::fs::write(p.path().join("target.yaml"), target_text(&text)).unwrap();
    // Two versions behind a canary split, so the copy must keep an order and a split.
    ok(&p.galley(&["up"]));
    ok(&p.galley(&["run", "--var", "max_iterations=400"]));
    let source_state = std::fs::read(p.path().join(".galley/state.json")).unwrap();
    let (_, status) = p.galley_json(&["status"]);

    let to = ["--to", "target.yaml", "--target-state", TARGET_STATE];
    let (code, plan) = migrate_json(&p, "plan", &to);
    assert_eq!(code, 0, "{plan}");
    let m = &plan["migration"];
    assert!(m["artifacts"]["objects"].as_u64().unwrap() >= 4, "{m}");
    assert_eq!(m["artifacts"]["present"], 0, "nothing is on the target yet: {m}");
    assert_eq!(m["runs"]["runs"], 2, "{m}");
    assert_eq!(m["versions"]["versions"], 2, "{m}");
    assert_eq!(m["endpoint"]["split"], "v1 90%, v2 10%", "{m}");
    assert!(plan["target_plan"]["changes"].as_array().unwrap().len() >= 6, "the target's resources are planned: {plan}");
    assert!(!p.path().join(TARGET_STATE).exists(), "plan changes nothing");

    // Killed at its first kill point, every time, until a run gets through: every boundary
    // between units and inside one (an object written, a run started, a version registered,
    // the endpoint deployed, each before the journal knows) is a place it died.
    let mut kills = 0;
    loop {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_galley"));
        c.current_dir(p.path()).args(["migrate", "apply"]).arg(&p.blueprint).args(to).args(["--auto-approve", "--output", "json"]);
        let out = c.env("GALLEY_TEST_MIGRATE_CRASH_AT", "1").output().unwrap();
        if out.status.signal() == Some(9) {
            kills += 1;
            assert!(kills < 200, "no progress after {kills} kills");
            continue;
        }
        let done = json_of(&out);
        assert!(out.status.success(), "{done}\n{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(done["ok"], true, "{done}");
        break;
    }
    assert!(kills >= 12, "killed only {kills} times");

    let (code, verified) = migrate_json(&p, "verify", &to);
    assert_eq!(code, 0, "{verified}");
    let proof = &verified["proof"];
    assert!(proof["checks"].as_array().unwrap().iter().all(|c| c["ok"] == true), "{proof}");
    let predictions = check(proof, "predictions")["detail"].as_str().unwrap().to_owned();
    assert!(predictions.contains("v1 → v1, v2 → v2"), "both variants answered on both sides: {predictions}");
    assert!(check(proof, "experiments")["detail"].as_str().unwrap().starts_with("2 runs"), "{proof}");
    assert!(check(proof, "registry")["detail"].as_str().unwrap().starts_with("2 versions"), "{proof}");

    // The target's own tools agree: two versions, the endpoint on the split, nothing twice.
    let out = on_target(&p, &["status", "--output", "json"]);
    let target_status = json_of(&out);
    assert!(target_status.to_string().contains("wine-quality-b"), "{target_status}");
    // The source was only read.
    assert_eq!(std::fs::read(p.path().join(".galley/state.json")).unwrap(), source_state, "the source's state changed");
    let (_, status_after) = p.galley_json(&["status"]);
    assert_eq!(status_after["resources"], status["resources"], "the source's stack changed");

    // A second apply has nothing left to do.
    let (code, again) = migrate_json(&p, "apply", &[&to[..], &["--auto-approve"]].concat());
    assert_eq!(code, 0, "{again}");
    assert_eq!(again["applied"]["objects_copied"], 0, "{again}");
    assert_eq!(again["applied"]["runs_created"], 0, "{again}");
    assert_eq!(again["applied"]["versions_registered"], 0, "{again}");

    // The proof has teeth: a target that moves on (a third version, the split shifted) fails it.
    ok(&on_target(&p, &["run", "--var", "max_iterations=50", "--no-cache"]));
    let (code, moved) = migrate_json(&p, "verify", &to);
    assert_eq!(code, 1, "a target serving something else must fail the proof: {moved}");
    assert_eq!(check(&moved["proof"], "serving")["ok"], false, "{moved}");

    ok(&on_target(&p, &["destroy", "--auto-approve"]));
    ok(&p.galley(&["destroy", "--auto-approve"]));
}

#[test]
fn migrate_names_what_is_wrong_with_its_target() {
    let p = Project::from_shipped("quickstart.yaml", |t| t);
    let out = migrate(&p, "plan", &["--to", "nowhere"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not provisioned") || err.contains("galley apply"), "the source must exist first: {err}");
    ok(&p.galley(&["apply", "--auto-approve"]));
    let err = String::from_utf8_lossy(&migrate(&p, "plan", &["--to", "nowhere"]).stderr).into_owned();
    assert!(err.contains("--to nowhere") && err.contains("blueprint"), "{err}");
    let name = p.blueprint.file_name().unwrap().to_str().unwrap().to_owned();
    let err = String::from_utf8_lossy(&migrate(&p, "plan", &["--to", &name]).stderr).into_owned();
    assert!(err.contains("--target-state"), "the same state twice is refused, naming the fix: {err}");
    ok(&p.galley(&["destroy", "--auto-approve"]));
}
