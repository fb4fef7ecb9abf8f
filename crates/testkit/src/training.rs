//! Managed training (`Orchestrator::run_training_job`, `training.compute: managed`): a job runs
//! its container on the input the harness staged and hands back the model it wrote; a second
//! job of the same inputs hands back the same model; a platform without managed compute says
//! so instead of training somewhere else.
//!
//! Only the platform can put a job's input where its jobs read it, so the platform supplies a
//! [`TrainingFixture`]: a job whose `input_prefix` holds the `train` channel (Galley's container
//! contract, `galley_lifecycle::container`) and the model bytes that input must produce,
//! trained without the platform.

use std::sync::{Arc, Mutex};

use galley_core::ErrorKind;
use galley_core::capability::Feature;
use galley_core::stages::{Orchestrator, StepLogger, TrainingJob};

use crate::runner::{Case, Report, Skip, TestResult, run_cases};
use crate::support::expect_kind;
use crate::{case, ensure_eq};

/// What the platform supplies so the suite can run a real job.
#[derive(Debug, Clone)]
pub struct TrainingFixture {
    /// A job whose input is already staged under `input_prefix`.
    pub job: TrainingJob,
    /// The model the job must hand back, computed without the platform.
    pub expected_model: Vec<u8>,
}

#[derive(Clone)]
pub struct TrainingCtx {
    pub orchestrator: Arc<dyn Orchestrator>,
    pub fixture: Option<Arc<TrainingFixture>>,
}

pub fn cases() -> Vec<Case<TrainingCtx>> {
    vec![
        case!(a_job_hands_back_the_model_its_container_wrote, needs = [Feature::ManagedCompute]),
        case!(a_second_job_of_the_same_inputs_gives_the_same_model, needs = [Feature::ManagedCompute]),
        case!(without_managed_compute_a_job_is_refused, needs = [], absent = [Feature::ManagedCompute]),
    ]
}

/// The training suite; `fixture` may be `None` on platforms without managed compute.
pub async fn run_training(orchestrator: Arc<dyn Orchestrator>, fixture: Option<TrainingFixture>) -> Report {
    let caps = orchestrator.capabilities();
    run_cases("training", TrainingCtx { orchestrator, fixture: fixture.map(Arc::new) }, &caps, cases()).await
}

#[derive(Default)]
struct Lines(Mutex<Vec<String>>);

impl StepLogger for Lines {
    fn line(&self, message: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(message.to_owned());
    }
}

fn fixture(ctx: &TrainingCtx) -> anyhow::Result<Arc<TrainingFixture>> {
    ctx.fixture.clone().ok_or_else(|| Skip("no TrainingFixture was given: a job needs input the platform staged".into()).into())
}

async fn a_job_hands_back_the_model_its_container_wrote(ctx: TrainingCtx) -> TestResult {
    let fx = fixture(&ctx)?;
    let log = Lines::default();
    let done = ctx.orchestrator.run_training_job(&fx.job, &log).await?;
    ensure_eq!(done.model, fx.expected_model, "the model job `{}` handed back", fx.job.name);
    anyhow::ensure!(!done.job_id.is_empty(), "the job has no id");
    anyhow::ensure!(!done.output_uri.is_empty(), "the job names no output");
    anyhow::ensure!(!log.0.lock().unwrap().is_empty(), "a long job must report progress, and this one logged nothing");
    Ok(())
}

async fn a_second_job_of_the_same_inputs_gives_the_same_model(ctx: TrainingCtx) -> TestResult {
    let fx = fixture(&ctx)?;
    let first = ctx.orchestrator.run_training_job(&fx.job, &Lines::default()).await?;
    let second = ctx.orchestrator.run_training_job(&fx.job, &Lines::default()).await?;
    ensure_eq!(second.model, first.model, "the model of a second job of the same inputs (reused or retrained)");
    Ok(())
}

async fn without_managed_compute_a_job_is_refused(ctx: TrainingCtx) -> TestResult {
    let job = TrainingJob {
        name: "galley-testkit-refused".into(),
        image: "galley:test".into(),
        instance_type: None,
        input_prefix: "galley/training/refused/input/".into(),
        output_prefix: "galley/training/refused/output/".into(),
        model_file: "model.json".into(),
        hyperparameters: Default::default(),
        max_runtime_secs: 60,
    };
    expect_kind(ctx.orchestrator.run_training_job(&job, &Lines::default()).await.map(|_| ()), ErrorKind::Unsupported, "run_training_job")
}
