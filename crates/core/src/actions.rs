//! The lifecycle actions a plan shows next to its resource changes: what `galley run` will do
//! on top of what `galley apply` provisions. `galley-lifecycle` computes them with the same
//! functions its steps execute, so the plan is the run.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One variant an endpoint will serve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedVariant {
    pub name: String,
    pub version: u64,
    pub weight: u32,
}

/// What the lifecycle runner will do after (or instead of) provisioning. The plan only carries
/// and renders these; the lifecycle runner computes and executes them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum LifecycleAction {
    RegisterVersion { model: String },
    MoveAlias { model: String, alias: String },
    SetApproval { model: String, status: String },
    /// The variants the endpoint serves once a new version passes the gate: all traffic to it
    /// on the first deploy, the canary's split with the serving variant after.
    ShiftTraffic {
        endpoint: String,
        variants: Vec<PlannedVariant>,
        /// The autoscaling each variant gets (`serving.autoscaling`); `None`: one instance each.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scaling: Option<crate::stages::Scaling>,
    },
    AttachMonitor { endpoint: String, method: String, threshold: f64 },
    /// The pipeline's steps, in the order the run starts them.
    RunPipeline {
        pipeline: String,
        #[serde(default)]
        steps: Vec<String>,
        #[serde(default)]
        parameters: BTreeMap<String, String>,
        /// Where the steps run when not in Galley's process (`PlatformRules::remote_steps`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        runs_on: Option<String>,
    },
    /// `training.command`: the train step runs the user's code here, under SageMaker's
    /// script-mode contract, in a uv environment when `requirements` is set.
    RunTrainingCommand {
        command: String,
        code: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        requirements: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_runtime: Option<String>,
    },
    /// `compute: managed`: the train step runs as the platform's training job, which is billed.
    SubmitTrainingJob { platform: String, image: String, instance_type: Option<String>, max_runtime: String },
}

impl LifecycleAction {
    pub fn describe(&self) -> String {
        match self {
            LifecycleAction::RegisterVersion { model } => format!("register a new version of model `{model}`"),
            LifecycleAction::MoveAlias { model, alias } => format!("move alias `{alias}` of model `{model}`"),
            LifecycleAction::SetApproval { model, status } => format!("set approval of model `{model}` to `{status}`"),
            LifecycleAction::ShiftTraffic { endpoint, variants, scaling } => {
                let w: Vec<String> = variants.iter().map(|v| format!("{} (version {})={}%", v.name, v.version, v.weight)).collect();
                let scaled = scaling.as_ref().map(|s| format!(", autoscaled {}", s.describe())).unwrap_or_default();
                format!("if the gate passes a new version: serve it on endpoint `{endpoint}` as {}{scaled}", w.join(", "))
            }
            LifecycleAction::AttachMonitor { endpoint, method, threshold } => {
                format!("attach {method} monitor (threshold {threshold}) to endpoint `{endpoint}`")
            }
            LifecycleAction::RunTrainingCommand { command, code, requirements, max_runtime } => {
                let env = requirements.as_deref().map(|r| format!(" in a uv environment from {r}")).unwrap_or_default();
                let stop = max_runtime.as_deref().map(|m| format!(", stopped after {m}")).unwrap_or_default();
                format!("train with your code: `{command}` in {code}{env}{stop}; its model.onnx is checked against the prepared data")
            }
            LifecycleAction::SubmitTrainingJob { platform, image, instance_type, max_runtime } => {
                let on = instance_type.as_deref().unwrap_or("the platform's default instance");
                format!("train as a managed {platform} training job: image `{image}` on {on}, stopped after {max_runtime} at most")
            }
            LifecycleAction::RunPipeline { pipeline, steps, parameters, runs_on } => {
                let with = if parameters.is_empty() {
                    String::new()
                } else {
                    let p: Vec<String> = parameters.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    format!(" with {}", p.join(", "))
                };
                let on = runs_on.as_deref().map(|r| format!(", on {r}")).unwrap_or_else(|| ", in Galley's process".to_owned());
                format!("run pipeline `{pipeline}`{with}: {}{on}", steps.join(" → "))
            }
        }
    }
}

