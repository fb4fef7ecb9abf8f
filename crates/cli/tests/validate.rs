//! `galley validate`, `schema` and `completions` through the real binary: exit codes and the
//! JSON shapes scripts rely on.

mod common;

use common::{Project, files_under, ok};

#[test]
fn every_shipped_blueprint_validates() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../blueprints");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_galley"))
                .args(["validate", "--output", "json"])
                .arg(&path)
                .output()
                .unwrap();
            let v: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
            assert_eq!(v["ok"], true, "{}", path.display());
            n += 1;
        }
    }
    assert!(n >= 2, "expected the quickstart and one blueprint per built platform (planned ones are not validated), found {n}");
}

#[test]
fn a_broken_blueprint_exits_1_with_located_json_errors() {
    let p = Project::from_shipped("quickstart.yaml", |t| {
        t.replace("    bucket: wine-quality-artifacts", "    buckett: wine-quality-artifacts")
            .replace("strategy: canary, percent: 10", "strategy: canary, percent: 0")
    });
    let (code, v) = p.galley_json(&["validate"]);
    assert_eq!(code, 1);
    assert_eq!(v["ok"], false);
    let diags = v["diagnostics"].as_array().expect("diagnostics array");
    assert!(diags.len() >= 2, "every problem at once: {v}");
    for d in diags {
        for field in ["file", "line", "column", "path", "message", "hint"] {
            assert!(d.get(field).is_some(), "diagnostic lacks `{field}`: {d}");
        }
        assert!(d["line"].as_u64().unwrap() >= 1);
    }
    let unknown = diags.iter().find(|d| d["message"].as_str().unwrap().contains("buckett")).expect("unknown field reported");
    assert!(unknown["hint"].as_str().unwrap_or_default().contains("bucket"), "did-you-mean hint: {unknown}");

    // The same problems for people: rustc-style, with the file and line.
    let out = p.galley(&["validate"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("quickstart.yaml"), "{text}");
    assert!(text.contains("buckett"), "{text}");
}

#[test]
fn portability_is_checked_against_the_platform_override() {
    // The quickstart promotes with aliases by default; on aws that becomes approval status, but
    // its canary strategy and local bind address are checked against SageMaker's capabilities.
    let p = Project::from_shipped("quickstart.yaml", |t| t.replace("  registry:\n", "  registry:\n    promotion: alias\n"));
    let (code, v) = p.galley_json(&["validate", "--platform", "aws"]);
    assert_eq!(code, 1, "{v}");
    let messages: Vec<&str> = v["diagnostics"].as_array().unwrap().iter().map(|d| d["message"].as_str().unwrap()).collect();
    assert!(messages.iter().any(|m| m.contains("aws") && m.contains("alias")), "{messages:?}");
}

#[test]
fn schema_is_a_json_schema_the_shipped_blueprints_satisfy() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_galley")).arg("schema").output().unwrap();
    let schema: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("`galley schema` prints a valid JSON Schema");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../blueprints");
    let registry = galley_blueprint::PlatformRegistry::default().with(galley_local::rules()).with(galley_aws::rules());
    for name in ["quickstart.yaml", "aws.yaml"] {
        let loaded = galley_blueprint::load_file(&dir.join(name), &Default::default(), &registry).unwrap_or_else(|d| panic!("{d}"));
        let doc = serde_json::to_value(&loaded.blueprint).unwrap();
        let errors: Vec<String> = validator.iter_errors(&doc).map(|e| format!("{} at {}", e, e.instance_path())).collect();
        assert!(errors.is_empty(), "{name}: {errors:?}");
    }
    // And it refuses what the loader refuses: an unknown field.
    let mut bad = serde_json::to_value(&galley_blueprint::load_file(&dir.join("quickstart.yaml"), &Default::default(), &registry).unwrap().blueprint).unwrap();
    bad["stages"]["serving"]["replicas"] = serde_json::json!(3);
    assert!(!validator.is_valid(&bad));
}

#[test]
fn completions_are_generated() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_galley")).args(["completions", "bash"]).output().unwrap();
    let text = ok(&out);
    assert!(text.contains("galley") && text.contains("validate"));
}

#[test]
fn settings_layer_under_flags() {
    let p = Project::from_shipped("quickstart.yaml", |t| t);
    std::fs::write(p.path().join("galley.toml"), "output = \"json\"\nplatform = \"gcp\"\n").unwrap();
    // galley.toml asks for JSON and the gcp platform, which this build does not know yet.
    let out = p.galley(&["validate"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON from galley.toml's `output`");
    assert!(v["diagnostics"].to_string().contains("gcp"), "{v}");
    // A flag beats the file.
    let out = p.galley(&["validate", "--platform", "local", "--output", "human"]);
    assert!(ok(&out).contains("is valid"));
    // And GALLEY_* variables beat the file.
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_galley"));
    c.current_dir(p.path()).args(["validate"]).arg(&p.blueprint).env("GALLEY_PLATFORM", "local");
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

/// A platform is its folder plus one line: the toy platform, registered only in test builds,
/// is known to `galley platforms`, validated by its own rules, provisioned by the ordinary
/// engine, and runs the whole lifecycle with its in-memory stages (`galley up`: one process).
#[cfg(feature = "testing")]
#[test]
fn the_toy_platform_registered_in_one_line_runs_end_to_end() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_galley")).args(["platforms", "--output", "json"]).output().unwrap();
    let listed: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    let toy = listed["platforms"].as_array().unwrap().iter().find(|p| p["platform"] == "toy").unwrap_or_else(|| panic!("{listed}"));
    assert_eq!(toy["built_in"], true);
    assert_eq!(toy["cargo_feature"], "testing");

    let blueprint = "apiVersion: galley/v1
name: toy-wine
platform: toy
data: {source: builtin:winequality, target: quality, positive_when: {at_least: 6}}
stages:
  artifacts: {bucket: wine}
  experiments: {name: wine}
  pipeline: {name: wine-train}
  training: {algorithm: logistic_regression}
  registry: {model: wine, gate: {metric: accuracy, at_least: 0.6}}
  serving: {endpoint: wine, model: \"${stages.registry.outputs.model}\"}
";
    // The toy's own naming rule, at the line and field, with its hint.
    let p = Project::with_text("toy.yaml", blueprint);
    let (code, v) = p.galley_json(&["validate"]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["diagnostics"][0]["path"], "stages.artifacts.bucket", "{v}");
    assert_eq!(v["diagnostics"][0]["hint"], "name it `toy-wine`", "{v}");

    let p = Project::with_text("toy.yaml", &blueprint.replace("bucket: wine", "bucket: toy-wine"));
    let (code, v) = p.galley_json(&["up"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["run"]["registered_version"], 1, "{v}");
    let label = v["sample_prediction"]["prediction"]["predictions"][0].as_f64().unwrap();
    assert!(label == 0.0 || label == 1.0, "{v}");
    // The toy declares no approval status: asking for it is refused at validate, naming it.
    let p = Project::with_text("toy.yaml", &blueprint.replace("bucket: wine", "bucket: toy-wine").replace("registry: {model: wine,", "registry: {model: wine, promotion: approval,"));
    let (code, v) = p.galley_json(&["validate"]);
    assert_eq!(code, 1, "{v}");
    assert!(v["diagnostics"][0]["message"].as_str().unwrap().contains("platform `toy` cannot honour model approval status"), "{v}");
}

/// A credential the platform declares (`platforms.toy.api_token`) is refused written into the
/// blueprint, at its line with the fix; read from the environment it is accepted, and its value
/// appears in no output and no file Galley writes (state, plans, journals, logs).
#[cfg(feature = "testing")]
#[test]
fn platform_credentials_come_from_the_environment_and_are_written_nowhere() {
    const TOKEN: &str = "tok-7f3a9c1e5b2d4860aa17";
    let blueprint = |token: &str| {
        format!(
            "apiVersion: galley/v1
name: toy-secret
platform: toy
platforms:
  toy:
    api_token: {token}
data: {{source: builtin:winequality, target: quality, positive_when: {{at_least: 6}}}}
stages:
  artifacts: {{bucket: toy-secret}}
  experiments: {{name: secret}}
  pipeline: {{name: secret-train}}
  training: {{algorithm: logistic_regression}}
  registry: {{model: secret, gate: {{metric: accuracy, at_least: 0.6}}}}
  serving: {{endpoint: secret, model: \"${{stages.registry.outputs.model}}\"}}
"
        )
    };
    let p = Project::with_text("toy.yaml", &blueprint(TOKEN));
    let (code, v) = p.galley_json(&["validate"]);
    assert_eq!(code, 1, "{v}");
    let d = &v["diagnostics"][0];
    assert_eq!(d["path"], "platforms.toy.api_token", "{v}");
    assert_eq!(d["line"], 6, "{v}");
    assert!(d["hint"].as_str().unwrap().contains("${env.TOY_API_TOKEN}"), "{v}");
    assert!(!v.to_string().contains(TOKEN), "the refusal must not repeat the credential: {v}");

    let p = Project::with_text("toy.yaml", &blueprint("${env.TOY_API_TOKEN}"));
    let galley = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_galley"))
            .current_dir(p.path())
            .args(args)
            .env("TOY_API_TOKEN", TOKEN)
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "galley {args:?}: {text}");
        assert!(!text.contains(TOKEN), "galley {args:?} printed the credential: {text}");
    };
    galley(&["validate", "toy.yaml"]);
    galley(&["plan", "toy.yaml", "--out", "saved.plan", "--output", "json"]);
    // The toy's stages live in one process's memory: apply and run as one command.
    galley(&["up", "toy.yaml", "--output", "json"]);
    for file in files_under(p.path()) {
        let bytes = std::fs::read(p.path().join(&file)).unwrap_or_default();
        assert!(!String::from_utf8_lossy(&bytes).contains(TOKEN), "{file} holds the credential");
    }
}

#[test]
fn a_schedule_eventbridge_cannot_run_is_refused_on_aws_with_its_line() {
    // Classic cron fires on the 1st *or* on Mondays; EventBridge Scheduler takes one of them.
    let p = Project::from_shipped("aws.yaml", |t| t.replace("schedule: \"0 3 * * 1-5\"", "schedule: \"0 3 1 * 1\""));
    let (code, v) = p.galley_json(&["validate"]);
    assert_eq!(code, 1, "{v}");
    let d = v["diagnostics"].as_array().unwrap().iter().find(|d| d["path"] == "stages.pipeline.schedule").unwrap_or_else(|| panic!("{v}"));
    assert!(d["message"].as_str().unwrap().contains("EventBridge Scheduler"), "{d}");
    let line = std::fs::read_to_string(p.path().join("aws.yaml")).unwrap().lines().position(|l| l.contains("0 3 1 * 1")).unwrap() + 1;
    assert_eq!(d["line"].as_u64(), Some(line as u64), "{d}");
    // The shipped one, weekdays at 03:00, validates.
    let (code, v) = Project::from_shipped("aws.yaml", |t| t.to_owned()).galley_json(&["validate"]);
    assert_eq!(code, 0, "{v}");
}

#[test]
fn a_drift_trigger_without_galleys_image_is_refused_on_aws() {
    let p = Project::from_shipped("aws.yaml", |t| t.replace("    image: ${var.image}\n", ""));
    let (code, v) = p.galley_json(&["validate"]);
    assert_eq!(code, 1, "{v}");
    let d = v["diagnostics"].as_array().unwrap().iter().find(|d| d["path"] == "stages.pipeline.retrain_on").unwrap_or_else(|| panic!("{v}"));
    assert!(d["hint"].as_str().unwrap().contains("stages.training.image"), "{d}");
}
