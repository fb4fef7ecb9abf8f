//! Broken blueprints: each gives a diagnostic at the exact line and column, with the exact
//! message. The fixtures live in /tests/blueprints/bad, one mistake each.

mod common;

use common::registry;
use std::collections::BTreeMap;
use std::path::PathBuf;

use galley_blueprint::{Diagnostics, LoadOptions, load_bytes, load_file, load_str, load_str_with_env};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/blueprints/")).join(name)
}

fn diagnostics(name: &str, opts: &LoadOptions) -> Diagnostics {
    match load_file(&fixture(name), opts, &registry()) {
        Ok(_) => panic!("{name} should not validate"),
        Err(d) => d,
    }
}

/// (file, line, column, path, message)
const CASES: &[(&str, usize, usize, &str, &str)] = &[
    ("syntax_error.yaml", 5, 9, "", "invalid YAML: illegal placement of ':' indicator"),
    ("duplicate_key.yaml", 6, 1, "", "duplicate key `name` (first defined at line 2, column 1)"),
    ("tabs.yaml", 4, 1, "", "tabs are not allowed for indentation; use spaces"),
    ("empty.yaml", 1, 1, "", "the blueprint is empty; start with `apiVersion: galley/v1`"),
    ("multiple_documents.yaml", 9, 1, "", "a blueprint holds one YAML document; found a second one here"),
    ("alias.yaml", 6, 8, "", "YAML aliases (`*name`) are not supported in blueprints"),
    ("non_string_key.yaml", 10, 3, "", "mapping keys must be strings; found a number `1`"),
    ("not_a_mapping.yaml", 1, 1, "", "a blueprint is a mapping of fields (apiVersion, name, data, stages, …); found a list"),
    ("unknown_field.yaml", 14, 5, "stages.serving.trafic", "unknown field `trafic`"),
    ("wrong_type.yaml", 14, 11, "stages.serving.port", "expected a whole number for `port`, found a string"),
    ("missing_required.yaml", 9, 3, "stages.artifacts.bucket", "missing required field `bucket` in `stages.artifacts`"),
    ("bad_enum.yaml", 11, 16, "stages.registry.promotion", "unknown value `alais` for `promotion`; expected one of alias, approval, stage"),
    ("bad_platform.yaml", 3, 11, "platform", "unknown value `awz` for `platform`; expected one of aws, local, onprem"),
    ("bad_backend_type.yaml", 10, 9, "backend.type", "unknown `type` `s4` in `backend`; expected one of local, s3"),
    ("undefined_var.yaml", 10, 11, "stages.experiments.name", "undefined variable `experiment` in `${var.experiment}`"),
    ("undefined_env.yaml", 10, 11, "stages.experiments.name", "environment variable `GALLEY_TEST_SURELY_UNSET_VARIABLE` is not set (`${env.GALLEY_TEST_SURELY_UNSET_VARIABLE}`)"),
    ("unterminated_substitution.yaml", 10, 11, "stages.experiments.name", "unterminated `${` in `${var.name`"),
    ("unknown_ref_stage.yaml", 14, 12, "stages.serving.model", "unknown stage `registy` in `${stages.registy.outputs.model}`"),
    ("unknown_ref_output.yaml", 14, 12, "stages.serving.model", "stage `registry` has no output `modle`; it has model, model_id"),
    ("ref_cycle.yaml", 10, 12, "stages.registry.model", "reference cycle: registry → serving → registry"),
    ("aws_alias.yaml", 12, 16, "stages.registry.promotion", "platform `aws` cannot honour model aliases (champion, challenger) (stages.registry.promotion: alias)"),
    ("local_autoscaling.yaml", 17, 5, "stages.serving.autoscaling", "platform `local` cannot honour endpoint autoscaling (stages.serving.autoscaling)"),
    ("bad_autoscaling.yaml", 17, 5, "stages.serving.autoscaling", "endpoint `wine`: autoscaling needs 1 <= min <= max instances and a positive target, found min 4, max 2, 70 requests per minute"),
    ("local_managed_compute.yaml", 9, 14, "stages.training.compute", "platform `local` cannot honour managed training jobs (stages.training.compute: managed)"),
    ("managed_without_image.yaml", 10, 14, "stages.training.compute", "`compute: managed` runs the training job in a container, but `stages.training.image` is not set"),
    ("max_runtime_local.yaml", 9, 18, "stages.training.max_runtime", "`max_runtime` bounds a managed training job or your training `command:`, and this built-in algorithm runs in galley's process (`compute: local`)"),
    ("training_names_nothing.yaml", 7, 3, "stages.training", "the training stage names nothing to train"),
    ("training_algorithm_and_command.yaml", 9, 14, "stages.training.command", "`command:` runs your training code, and `algorithm:` a built-in one: give one of them"),
    ("requirements_without_command.yaml", 9, 19, "stages.training.requirements", "`requirements:` belongs to a training `command:`, and this stage trains the built-in algorithm"),
    ("command_unclosed_quote.yaml", 8, 14, "stages.training.command", "cannot split `command:` into arguments: a quote is not closed, or it ends in a backslash"),
    ("requirements_missing.yaml", 9, 19, "stages.training.requirements", "`requirements: requirments.txt` is not a file (DIR/requirments.txt)"),
    ("training_script_missing.yaml", 8, 14, "stages.training.command", "`trian.py` is not a file in the training code's directory (DIR)"),
    ("command_managed.yaml", 10, 14, "stages.training.compute", "`command:` runs on `compute: local` in this Galley; a managed job of your own image is not built yet"),
    ("gpu_builtin_algorithm.yaml", 10, 10, "stages.training.gpu", "`gpu: true` asks for a GPU instance, but the built-in algorithm `decision_tree` runs on CPU only: the GPU would be billed and idle"),
    ("bad_max_runtime.yaml", 12, 18, "stages.training.max_runtime", "invalid max_runtime `two hours`: expected a number and a unit, such as `2h` or `90m`"),
    ("aws_missing_region.yaml", 3, 11, "platform", "platform `aws` is used but platforms.aws.region is not set"),
    ("bad_bucket.yaml", 11, 13, "stages.artifacts.bucket", "invalid S3 bucket name `My_Bucket`: `M` is not allowed; use lower-case letters, digits, `-` and `.`"),
    ("bad_endpoint.yaml", 13, 15, "stages.serving.endpoint", "invalid endpoint name `wine_api`: use 1-63 letters, digits and `-`, not starting with `-`"),
    ("bad_cron.yaml", 11, 15, "stages.pipeline.schedule", "invalid schedule `0 3 * *`: expected 5 fields, found 4"),
    ("canary_zero.yaml", 14, 42, "stages.serving.traffic.percent", "canary percent must be between 1 and 99, found 0"),
    ("bind_without_auth.yaml", 14, 11, "stages.serving.bind", "serving binds `0.0.0.0`, which other machines can reach, without authentication"),
    ("target_as_feature.yaml", 11, 25, "stages.features.features[1]", "the target `quality` is listed as a feature; a model must not see what it predicts"),
    ("bad_api_version.yaml", 1, 13, "apiVersion", "unsupported apiVersion `galley/v2`; this Galley reads `galley/v1`"),
    ("bad_name.yaml", 2, 7, "name", "invalid name `Wine_Quality`: use 1 to 40 lower-case letters, digits and `-`, starting and ending with a letter or digit"),
    ("gate_without_condition.yaml", 11, 5, "stages.registry.gate", "the gate has no condition, so every model would pass"),
    ("gate_metric_for_task.yaml", 11, 20, "stages.registry.gate.metric", "metric `rmse` does not apply to classification; use one of accuracy, f1, roc_auc"),
    ("monitoring_without_serving.yaml", 12, 3, "stages.monitoring", "the monitoring stage needs a serving stage: it watches the endpoint's traffic"),
    ("registry_without_training.yaml", 7, 3, "stages.registry", "the registry stage needs a training stage: nothing would produce models to register"),
    ("retrain_schedule_without_schedule.yaml", 11, 5, "stages.pipeline.retrain_on", "`retrain_on: schedule` needs `stages.pipeline.schedule`"),
];

#[test]
fn every_bad_fixture_reports_its_one_mistake_exactly() {
    let dir = fixture("bad");
    let on_disk = std::fs::read_dir(&dir).unwrap().count();
    // unknown_environment.yaml needs `--env`, so it has its own test.
    assert_eq!(on_disk, CASES.len() + 1, "every fixture in {} must have a case here", dir.display());
    let mut failures = Vec::new();
    for (file, line, column, path, message) in CASES {
        let ds = diagnostics(&format!("bad/{file}"), &LoadOptions::default());
        // Messages that name a file give the fixtures' directory as `DIR`.
        let shown = |m: &str| m.replace(&dir.display().to_string(), "DIR");
        let got: Vec<_> = ds.items().iter().map(|d| (d.line, d.column, d.path.as_str(), shown(&d.message))).collect();
        if got != [(*line, *column, *path, message.to_string())] {
            failures.push(format!("{file}: expected {:?}, got {got:?}", (line, column, path, message)));
        }
        for d in ds.items() {
            assert!(d.file.ends_with(file), "{}", d.file);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn hints_carry_did_you_mean_and_alternatives() {
    let hint = |file: &str| diagnostics(&format!("bad/{file}"), &LoadOptions::default()).items()[0].hint.clone().unwrap_or_default();
    assert_eq!(hint("unknown_field.yaml"), "did you mean `traffic`?");
    assert_eq!(hint("bad_enum.yaml"), "did you mean `alias`?");
    assert_eq!(hint("bad_platform.yaml"), "did you mean `aws`?");
    assert_eq!(hint("bad_backend_type.yaml"), "did you mean `s3`?");
    assert_eq!(hint("undefined_var.yaml"), "did you mean `experiments`?");
    assert_eq!(hint("unknown_ref_stage.yaml"), "did you mean `registry`?");
    assert_eq!(hint("unknown_ref_output.yaml"), "did you mean `model`?");
    assert_eq!(
        hint("aws_alias.yaml"),
        "use `promotion: approval`, or run the registry stage on a platform that supports it (`stages.registry.platform`): local, onprem"
    );
    assert_eq!(hint("tabs.yaml"), "configure your editor to insert spaces in YAML files");
}

#[test]
fn duplicate_key_points_at_both_places() {
    let ds = diagnostics("bad/duplicate_key.yaml", &LoadOptions::default());
    let d = &ds.items()[0];
    assert_eq!(d.related.len(), 1);
    assert_eq!((d.related[0].span.line, d.related[0].span.column), (2, 1));
    let rendered = ds.render(false);
    assert!(rendered.contains("first defined here"), "{rendered}");
}

#[test]
fn unknown_environment_lists_the_defined_ones() {
    let opts = LoadOptions { env: Some("prdo".into()), ..Default::default() };
    let ds = diagnostics("bad/unknown_environment.yaml", &opts);
    let d = &ds.items()[0];
    assert_eq!((d.line, d.column, d.path.as_str()), (9, 1, "environments"));
    assert_eq!(d.message, "unknown environment `prdo`; defined: prod, staging");
    assert_eq!(d.hint.as_deref(), Some("did you mean `prod`?"));
    // The same file validates without `--env` and with a defined one.
    assert!(load_file(&fixture("bad/unknown_environment.yaml"), &LoadOptions::default(), &registry()).is_ok());
    let prod = LoadOptions { env: Some("prod".into()), ..Default::default() };
    assert_eq!(load_file(&fixture("bad/unknown_environment.yaml"), &prod, &registry()).unwrap().blueprint.name, "wine-prod");
}

#[test]
fn three_mistakes_give_three_diagnostics_at_once() {
    let ds = diagnostics("three_mistakes.yaml", &LoadOptions::default());
    let got: Vec<_> = ds.items().iter().map(|d| (d.line, d.column, d.message.as_str())).collect();
    assert_eq!(
        got,
        [
            (6, 32, "unknown field `sed`"),
            (10, 10, "expected a boolean (true or false) for `gpu`, found a string"),
            (12, 15, "undefined variable `endpoint` in `${var.endpoint}`"),
        ]
    );
}

#[test]
fn json_output_has_exactly_the_contract_fields() {
    let ds = diagnostics("bad/unknown_field.yaml", &LoadOptions::default());
    let json = ds.to_json();
    let first = json.as_array().unwrap()[0].as_object().unwrap();
    let mut keys: Vec<&str> = first.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["column", "file", "hint", "line", "message", "path", "severity"]);
    assert_eq!(first["path"], "stages.serving.trafic");
    assert_eq!(first["line"], 14);
    let rendered = ds.render(false);
    assert!(rendered.contains("unknown field `trafic`") && rendered.contains("did you mean `traffic`?") && rendered.contains("trafic: {strategy"), "{rendered}");
}

#[test]
fn oversized_input_is_refused_before_parsing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.yaml");
    let line = "# padding padding padding padding padding padding padding padding padding padding\n";
    let mut text = String::with_capacity(50 * 1024 * 1024 + line.len());
    while text.len() < 50 * 1024 * 1024 {
        text.push_str(line);
    }
    std::fs::write(&path, &text).unwrap();
    let ds = load_file(&path, &LoadOptions::default(), &registry()).unwrap_err();
    let d = &ds.items()[0];
    assert_eq!((d.line, d.column), (1, 1));
    assert_eq!(d.message, format!("the blueprint is 50.0 MiB ({} bytes); the limit is 8 MiB", text.len()));
    let ds = load_str("huge.yaml", &text, &LoadOptions::default(), &registry()).unwrap_err();
    assert!(ds.items()[0].message.ends_with("the limit is 8 MiB"));
}

#[test]
fn non_utf8_is_located_at_the_first_bad_byte() {
    let mut bytes = b"apiVersion: galley/v1\nname: caf".to_vec();
    bytes.push(0xe9); // Latin-1 'é'
    bytes.extend_from_slice(b"\n");
    let ds = load_bytes("latin1.yaml", &bytes, &LoadOptions::default(), &registry()).unwrap_err();
    let d = &ds.items()[0];
    assert_eq!((d.line, d.column), (2, 10));
    assert_eq!(d.message, "the blueprint is not valid UTF-8: byte 0xe9 at line 2, column 10");
}

#[test]
fn deep_nesting_stops_at_the_limit() {
    for (name, text) in [
        ("flow", format!("a: {}{}", "[".repeat(10_000), "]".repeat(10_000))),
        ("block", (0..200).map(|i| format!("{}k{i}:\n", " ".repeat(i))).collect::<String>()),
        ("flow-unclosed", "{a: ".repeat(10_000)),
    ] {
        let ds = load_str(name, &text, &LoadOptions::default(), &registry()).unwrap_err();
        let d = &ds.items()[0];
        assert_eq!(d.message, "the blueprint nests deeper than 64 levels", "{name}");
        assert!(d.line >= 1 && d.column >= 1);
    }
}

#[test]
fn billion_laughs_is_refused_not_expanded() {
    let mut text = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..10 {
        let refs = vec![format!("*a{}", i - 1); 9].join(", ");
        text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    let ds = load_str("laughs.yaml", &text, &LoadOptions::default(), &registry()).unwrap_err();
    let d = &ds.items()[0];
    assert_eq!((d.line, d.column), (2, 10));
    assert_eq!(d.message, "YAML aliases (`*name`) are not supported in blueprints");
}

const MINIMAL: &str = "apiVersion: galley/v1
name: wine
vars:
  canary: 10
data:
  source: builtin:winequality
  target: quality
stages:
  training:
    algorithm: logistic_regression
  registry:
    model: wine
    gate: {metric: accuracy, at_least: 0.7}
  serving:
    endpoint: ${var.endpoint}
    port: ${var.port}
    traffic: {strategy: canary, percent: \"${var.canary}\"}
";

#[test]
fn vars_come_from_file_env_and_overrides_and_keep_number_types() {
    let env: BTreeMap<String, String> = [("GALLEY_VAR_endpoint".to_string(), "from-env".to_string()), ("GALLEY_VAR_port".to_string(), "9000".to_string())].into();
    let opts = LoadOptions { vars: [("port".to_string(), "8080".to_string())].into(), ..Default::default() };
    let loaded = load_str_with_env("vars.yaml", MINIMAL, &opts, &registry(), &env).unwrap_or_else(|d| panic!("{}", d.render(false)));
    let serving = loaded.blueprint.stages.serving.unwrap();
    assert_eq!(serving.endpoint, "from-env");
    assert_eq!(serving.port, Some(8080), "--var wins over GALLEY_VAR_");
    assert_eq!(serving.traffic.unwrap().percent, Some(10));

    // A var that is not a number where a number is needed is a located type error.
    let bad = LoadOptions { vars: [("port".to_string(), "http".to_string()), ("endpoint".to_string(), "e".to_string())].into(), ..Default::default() };
    let ds = load_str_with_env("vars.yaml", MINIMAL, &bad, &registry(), &BTreeMap::new()).unwrap_err();
    let d = &ds.items()[0];
    assert_eq!((d.line, d.column, d.path.as_str()), (16, 11, "stages.serving.port"));
    assert_eq!(d.message, "expected a whole number for `port`, found a string");
}

#[test]
fn env_substitution_defaults_and_escapes() {
    let text = MINIMAL
        .replace("${var.endpoint}", "${env.GALLEY_TEST_EP:-fallback}")
        .replace("model: wine", "model: \"$${literal}-${env.GALLEY_TEST_MODEL}\"");
    let env: BTreeMap<String, String> = [("GALLEY_TEST_MODEL".to_string(), "m1".to_string())].into();
    let opts = LoadOptions { vars: [("port".to_string(), "1".to_string())].into(), ..Default::default() };
    let bp = load_str_with_env("env.yaml", &text, &opts, &registry(), &env).unwrap_or_else(|d| panic!("{}", d.render(false))).blueprint;
    assert_eq!(bp.stages.serving.unwrap().endpoint, "fallback");
    assert_eq!(bp.stages.registry.unwrap().model, "${literal}-m1");
}

#[test]
fn platform_override_is_checked_for_portability() {
    let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../blueprints/quickstart.yaml"));
    let opts = LoadOptions { platform: Some(galley_blueprint::PlatformId::from_static("aws")), ..Default::default() };
    let ds = load_file(&path, &opts, &registry()).unwrap_err();
    let messages: Vec<&str> = ds.items().iter().map(|d| d.message.as_str()).collect();
    // aws honours drift, but only with an image for its drift-check job to run.
    assert!(messages.contains(&"`retrain_on: drift` on aws checks drift hourly in a SageMaker Processing job of Galley's image, and the blueprint names no image"), "{messages:?}");
    assert!(!messages.iter().any(|m| m.contains("cannot honour retraining on drift")), "{messages:?}");
    assert!(messages.contains(&"platform `aws` cannot honour retraining when new data arrives (stages.pipeline.retrain_on: new_data)"), "{messages:?}");
    assert!(messages.contains(&"platform `aws` is used but platforms.aws.region is not set"), "{messages:?}");
}

#[test]
fn a_platform_galley_does_not_know_is_named_with_the_ones_it_does() {
    let text = "apiVersion: galley/v1\nname: w\nplatform: gcp\ndata: {source: builtin:iris, target: species}\nstages: {}\n";
    let ds = load_str("gcp.yaml", text, &LoadOptions::default(), &registry()).unwrap_err();
    assert_eq!(ds.items()[0].message, "unknown value `gcp` for `platform`; expected one of aws, local, onprem");
    // A platform only this test registers is validated by its own rules like any other.
    let toy = registry().with(galley_toy::rules());
    let ds = load_str("toy.yaml", &text.replace("gcp", "toy").replace("stages: {}", "stages: {artifacts: {bucket: wine}}"), &LoadOptions::default(), &toy).unwrap_err();
    assert_eq!(ds.items()[0].message, "toy buckets start with `toy-`, `wine` does not");
    assert!(load_str("toy.yaml", &text.replace("gcp", "toy").replace("stages: {}", "stages: {artifacts: {bucket: toy-wine}}"), &LoadOptions::default(), &toy).is_ok());
}
