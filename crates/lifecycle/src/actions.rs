//! What a run does, computed once. `galley plan` shows [`plan_actions`]; the deploy step calls
//! [`traffic`] with what it finds, the same function the plan called with what it observed, so
//! the variant names, versions and weights the plan shows are the ones the run applies.

use std::collections::BTreeMap;

use galley_blueprint::{Blueprint, Compute, Promotion, ServingStage, Strategy};
use galley_core::actions::{LifecycleAction, PlannedVariant};
use galley_core::stages::{Scaling, Variant};
use galley_core::{Capabilities, Result, Stage, StageSet};

use crate::{CHAMPION, DEFAULT_MAX_RUNTIME, StepName, pipeline_name};

/// The canary share of a new version when the blueprint names no percent.
const DEFAULT_CANARY_PERCENT: u32 = 10;

/// A variant's name for a model version.
pub fn variant_name(version: u64) -> String {
    format!("v{version}")
}

/// The variants an endpoint serves once version `new` is deployed, given what it serves now.
/// With a canary and a variant already taking traffic, the heaviest such variant keeps
/// `100 - percent` and the new one takes `percent`; otherwise (the first deploy, or
/// `all_at_once`) the new version takes all traffic.
pub fn traffic(serving: &ServingStage, current: &[Variant], new: Variant) -> Vec<Variant> {
    let stable = current.iter().filter(|v| v.version != new.version && v.weight > 0).max_by_key(|v| v.weight).cloned();
    match (&serving.traffic, stable) {
        (Some(t), Some(mut stable)) if t.strategy == Strategy::Canary => {
            let p = t.percent.unwrap_or(DEFAULT_CANARY_PERCENT);
            stable.weight = 100 - p;
            vec![stable, Variant { weight: p, ..new }]
        }
        _ => vec![Variant { weight: 100, ..new }],
    }
}

/// The autoscaling the deploy step gives each variant, as the plan shows it.
pub fn scaling(serving: &ServingStage) -> Option<Scaling> {
    serving.autoscaling.as_ref().map(|a| a.scaling())
}

/// What the plan needs to know of the live stack: what the endpoint serves and the version the
/// registry will give the next model. A stack not applied yet serves nothing, and numbers from 1.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    pub endpoint_variants: Vec<Variant>,
    pub latest_version: u64,
}

impl Observed {
    /// Reads the endpoint's variants and the registry's latest version through the stages.
    pub async fn read(bp: &Blueprint, stages: &StageSet) -> Result<Observed> {
        let mut observed = Observed::default();
        if let Some(reg) = &bp.stages.registry
            && stages.registry.model_exists(&reg.model).await?
        {
            observed.latest_version = stages.registry.list_versions(&reg.model).await?.iter().map(|v| v.version).max().unwrap_or(0);
        }
        if let Some(sv) = &bp.stages.serving
            && let Some(info) = stages.serving.describe(&sv.endpoint).await?
        {
            observed.endpoint_variants = info.variants;
        }
        Ok(observed)
    }
}

/// The lifecycle actions of a run of `bp` over a stack in the state `observed`; `registry` is
/// the declaration of the registry stage's platform (its native promotion). The gate decides at
/// run time whether a version is registered; the actions after it say what follows if it passes.
/// `runs_on` is where the pipeline's platform runs the steps (`PlatformRules::remote_steps`), as
/// `galley run` will.
pub fn plan_actions(bp: &Blueprint, registry: &Capabilities, observed: &Observed, runs_on: Option<String>) -> Vec<LifecycleAction> {
    let mut actions = Vec::new();
    let Some(training) = &bp.stages.training else { return actions };
    actions.push(LifecycleAction::RunPipeline {
        pipeline: pipeline_name(bp),
        steps: StepName::for_blueprint(bp).iter().map(|s| s.as_str().to_owned()).collect(),
        parameters: BTreeMap::new(),
        runs_on,
    });
    if let Some(command) = &training.command {
        actions.push(LifecycleAction::RunTrainingCommand {
            command: command.clone(),
            code: training.code.clone().unwrap_or_else(|| ".".into()),
            requirements: training.requirements.clone(),
            max_runtime: training.max_runtime.clone(),
        });
    } else if training.compute == Compute::Managed {
        actions.push(LifecycleAction::SubmitTrainingJob {
            platform: bp.stage_platform(Stage::Training).to_string(),
            image: training.image.clone().unwrap_or_default(),
            instance_type: training.instance_type.clone(),
            max_runtime: training.max_runtime.clone().unwrap_or_else(|| DEFAULT_MAX_RUNTIME.into()),
        });
    }
    let Some(reg) = &bp.stages.registry else { return actions };
    actions.push(LifecycleAction::RegisterVersion { model: reg.model.clone() });
    match galley_blueprint::effective_promotion(bp, registry) {
        Promotion::Alias => actions.push(LifecycleAction::MoveAlias { model: reg.model.clone(), alias: CHAMPION.into() }),
        Promotion::Approval => actions.push(LifecycleAction::SetApproval { model: reg.model.clone(), status: "Approved".into() }),
        Promotion::Stage => {}
    }
    if let Some(sv) = &bp.stages.serving {
        let version = observed.latest_version + 1;
        let new = Variant { name: variant_name(version), model: reg.model.clone(), version, artifact_uri: String::new(), weight: 0 };
        let variants = traffic(sv, &observed.endpoint_variants, new)
            .into_iter()
            .map(|v| PlannedVariant { name: v.name, version: v.version, weight: v.weight })
            .collect();
        actions.push(LifecycleAction::ShiftTraffic { endpoint: sv.endpoint.clone(), variants, scaling: scaling(sv) });
        if let Some(m) = &bp.stages.monitoring {
            actions.push(LifecycleAction::AttachMonitor {
                endpoint: sv.endpoint.clone(),
                method: format!("{:?}", m.drift.method).to_lowercase(),
                threshold: m.drift.threshold,
            });
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serving(canary: Option<u32>) -> ServingStage {
        let traffic = match canary {
            Some(p) => serde_json::json!({"strategy": "canary", "percent": p}),
            None => serde_json::json!({"strategy": "all_at_once"}),
        };
        serde_json::from_value(serde_json::json!({"endpoint": "e", "traffic": traffic})).unwrap()
    }

    fn variant(version: u64, weight: u32) -> Variant {
        Variant { name: variant_name(version), model: "m".into(), version, artifact_uri: format!("uri{version}"), weight }
    }

    fn weights(vs: &[Variant]) -> Vec<(String, u32)> {
        vs.iter().map(|v| (v.name.clone(), v.weight)).collect()
    }

    #[test]
    fn the_first_deploy_sends_everything_to_the_new_version_even_with_a_canary() {
        assert_eq!(weights(&traffic(&serving(Some(10)), &[], variant(1, 0))), vec![("v1".into(), 100)]);
    }

    #[test]
    fn a_canary_splits_with_the_heaviest_serving_variant() {
        let current = [variant(1, 90), variant(2, 10)];
        assert_eq!(weights(&traffic(&serving(Some(25)), &current, variant(3, 0))), vec![("v1".into(), 75), ("v3".into(), 25)]);
        assert_eq!(weights(&traffic(&serving(None), &current, variant(3, 0))), vec![("v3".into(), 100)]);
    }

    #[test]
    fn redeploying_the_serving_version_keeps_it_whole() {
        assert_eq!(weights(&traffic(&serving(Some(10)), &[variant(1, 100)], variant(1, 0))), vec![("v1".into(), 100)]);
    }
}
