//! Every blueprint shipped in /blueprints (and each `examples/*/blueprint.yaml`) validates, with and without its `prod` overlay, and
//! (independently of the loader) against the published JSON Schema. `blueprints/planned/` holds
//! blueprints for platforms not built yet; they are not validated.

mod common;

use common::registry;
use std::path::PathBuf;

use galley_blueprint::{LoadOptions, Promotion, Stage, effective_promotion, json_schema, load_file};

fn shipped() -> Vec<PathBuf> {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../blueprints"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    let examples = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples"));
    files.extend(std::fs::read_dir(&examples).unwrap().map(|e| e.unwrap().path().join("blueprint.yaml")).filter(|p| p.is_file()));
    files.sort();
    files
}

#[test]
fn every_shipped_blueprint_validates() {
    let files = shipped();
    assert!(files.len() >= 2, "expected the quickstart and the aws blueprint, found {files:?}");
    for file in files {
        let loaded = load_file(&file, &LoadOptions::default(), &registry()).unwrap_or_else(|d| panic!("{}", d.render(false)));
        assert_eq!(loaded.blueprint.api_version, "galley/v1");
        assert_eq!(loaded.hash.len(), 64);
        if loaded.blueprint.stages.serving.is_some() {
            assert!(
                loaded.references.iter().any(|r| r.from == Stage::Serving && r.to == Stage::Registry && r.output == "model"),
                "{}: serving.model should reference the registry",
                file.display()
            );
            assert_eq!(loaded.blueprint.stages.serving.as_ref().unwrap().model.as_deref(), Some("${stages.registry.outputs.model}"));
        }
        if loaded.source.contains("\n  prod:") {
            let prod = LoadOptions { env: Some("prod".into()), ..Default::default() };
            let with_prod = load_file(&file, &prod, &registry()).unwrap_or_else(|d| panic!("{}", d.render(false)));
            assert_ne!(with_prod.blueprint, loaded.blueprint, "{}: prod overlay changed nothing", file.display());
            assert_ne!(with_prod.hash, loaded.hash);
        }
    }
}

#[test]
fn shipped_blueprints_match_the_published_schema() {
    let schema = json_schema(&registry());
    let validator = jsonschema::validator_for(&schema).expect("the published schema compiles");
    for file in shipped() {
        let loaded = load_file(&file, &LoadOptions::default(), &registry()).unwrap();
        let json = serde_json::to_value(&loaded.blueprint).unwrap();
        let errors: Vec<String> = validator.iter_errors(&json).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{}: {errors:?}", file.display());
    }
}

#[test]
fn quickstart_is_the_local_wine_classifier() {
    let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../blueprints/quickstart.yaml"));
    let bp = load_file(&path, &LoadOptions::default(), &registry()).unwrap().blueprint;
    assert_eq!(bp.platform, galley_blueprint::PlatformId::from_static("local"));
    assert_eq!(bp.data.source, "builtin:winequality");
    assert_eq!(bp.data.target, "quality");
    assert_eq!(bp.data.positive_when.as_ref().map(|p| p.at_least), Some(6.0));
    let params = &bp.stages.training.as_ref().unwrap().params;
    // A var substituted into a params value keeps the var's number type.
    assert_eq!(params["max_iterations"], galley_blueprint::VarValue::Number(200.0));
    assert_eq!(effective_promotion(&bp, &galley_local::capabilities()), Promotion::Alias);
}

#[test]
fn native_promotion_per_platform() {
    for (file, expected) in [("aws.yaml", Promotion::Approval), ("quickstart.yaml", Promotion::Alias)] {
        let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../blueprints/")).join(file);
        let mut bp = load_file(&path, &LoadOptions::default(), &registry()).unwrap().blueprint;
        bp.stages.registry.as_mut().unwrap().promotion = None;
        let caps = registry().get(bp.stage_platform(Stage::Registry)).unwrap().capabilities();
        assert_eq!(effective_promotion(&bp, &caps), expected, "{file}");
    }
}

#[test]
fn schema_describes_each_stage_by_its_own_docs() {
    let schema = json_schema(&registry());
    assert_eq!(schema["$defs"]["ServingStage"]["description"], "The prediction endpoint.");
    assert_eq!(schema["required"], serde_json::json!(["apiVersion", "name", "data", "stages"]));
    assert_eq!(schema["$defs"]["ServingStage"]["additionalProperties"], false);
}
