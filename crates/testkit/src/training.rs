//! Managed training (`Orchestrator::run_training_job`, `training.compute: managed`): a job runs
//! its container on the input the harness staged and hands back the model it wrote; a second
//! job of the same inputs hands back the same model; a platform without managed compute says
//! so instead of training somewhere else.
//!
//! The [`TrainingFixture`] is a small regression job and the model bytes it must produce,
//! trained by galley-ml without the platform ([`TrainingFixture::standard`]); the platform
//! only names the image its jobs run.

use std::sync::{Arc, Mutex};

use galley_core::ErrorKind;
use galley_core::capability::Feature;
use galley_core::stages::{TrainingData, Orchestrator, StepLogger, TrainingJob};

use crate::runner::{Case, Report, Skip, TestResult, run_cases};
use crate::support::expect_kind;
use crate::{case, ensure_eq};

/// A job the suite runs on the platform, and the model it must hand back.
#[derive(Debug, Clone)]
pub struct TrainingFixture {
    pub job: TrainingJob,
    /// The model the job must hand back, computed without the platform.
    pub expected_model: Vec<u8>,
}

impl TrainingFixture {
    /// 120 rows of `0.6·alcohol − 1.5·ph + 3` and the linear model galley-ml fits to them in
    /// this process; the job runs `image`, named `name` (unique per test run on shared
    /// emulators).
    pub fn standard(name: &str, image: &str) -> TrainingFixture {
        use galley_core::ml::{Algorithm, Task};
        use galley_core::stages::Signature;
        use galley_core::table::Column;
        let signature = Signature {
            inputs: vec![Column::new("alcohol", galley_core::DType::Float), Column::new("ph", galley_core::DType::Float)],
            output: None,
        };
        let mut rng = fastrand::Rng::with_seed(5);
        let x: Vec<Vec<f64>> = (0..120).map(|_| vec![8.0 + 6.0 * rng.f64(), 2.8 + 0.8 * rng.f64()]).collect();
        let y: Vec<f64> = x.iter().map(|r| 0.6 * r[0] - 1.5 * r[1] + 3.0).collect();
        let features = vec!["alcohol".to_owned(), "ph".to_owned()];
        let frame = galley_ml::Frame { features: features.clone(), x: x.clone(), y: y.clone() };
        let params = Default::default();
        let expected_model = galley_ml::train(Algorithm::LinearRegression, &params, Task::Regression, &frame, &signature)
            .expect("the standard job trains in-process")
            .to_bytes();
        let job = TrainingJob {
            name: name.to_owned(),
            image: image.to_owned(),
            instance_type: Some("ml.m5.large".into()),
            max_runtime_secs: 600,
            algorithm: Algorithm::LinearRegression,
            params,
            task: Task::Regression,
            data: TrainingData { label: "quality".into(), features, x, y, signature },
        };
        TrainingFixture { job, expected_model }
    }
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
        max_runtime_secs: 60,
        algorithm: galley_core::ml::Algorithm::LinearRegression,
        params: Default::default(),
        task: galley_core::ml::Task::Regression,
        data: TrainingData {
            label: "y".into(),
            features: vec!["x".into()],
            x: vec![vec![1.0], vec![2.0]],
            y: vec![1.0, 2.0],
            signature: Default::default(),
        },
    };
    expect_kind(ctx.orchestrator.run_training_job(&job, &Lines::default()).await.map(|_| ()), ErrorKind::Unsupported, "run_training_job")
}
