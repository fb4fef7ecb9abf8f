//! What the `onprem` platform is, as validation and the testkit see it: its id, the features it
//! declares (each proven by a behaviour case in `tests/onprem.rs` against a real MLflow
//! server), its `platforms.onprem` settings and the naming rules it inherits from the
//! directory it keeps its files in.

use std::sync::Arc;

use galley_blueprint::{Blueprint, Finding, PlatformRules};
use galley_core::capability::{Capabilities, Feature};
use galley_core::{PlatformId, Stage};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const ONPREM: PlatformId = PlatformId::from_static("onprem");

/// MLflow's own variable for the tracking server, read when the blueprint names none.
pub const TRACKING_URI_ENV: &str = "MLFLOW_TRACKING_URI";
/// The Feast feature repository, its Python and its feature server, read when the blueprint
/// names none (`scripts/stack up onprem` prints all three).
pub const FEAST_REPO_ENV: &str = "GALLEY_FEAST_REPO";
pub const FEAST_PYTHON_ENV: &str = "GALLEY_FEAST_PYTHON";
pub const FEAST_SERVER_ENV: &str = "FEAST_FEATURE_SERVER_URL";
/// Airflow's api-server (`scripts/stack up onprem` prints it), read when the blueprint names none.
pub const AIRFLOW_API_URL_ENV: &str = "AIRFLOW_API_URL";
/// Airflow's own variable for its DAGs folder.
pub const AIRFLOW_DAGS_FOLDER_ENV: &str = "AIRFLOW__CORE__DAGS_FOLDER";
/// The galley Airflow's workers run, when not this one.
pub const AIRFLOW_GALLEY_ENV: &str = "GALLEY_AIRFLOW_GALLEY";
/// The Prometheus server and the directory it reads `targets/*.json` and `rules/*.yml` from
/// (`scripts/stack up onprem` prints both), read when the blueprint names none.
pub const PROMETHEUS_URL_ENV: &str = "PROMETHEUS_URL";
pub const PROMETHEUS_CONFIG_DIR_ENV: &str = "GALLEY_PROMETHEUS_CONFIG_DIR";

/// The features the onprem stages implement. Experiments and registry: MLflow's search and
/// aliases, and the approval status as a version tag; features: Feast's online store and
/// point-in-time join; the rest: what the stages kept under the
/// shared directory do. Removing one makes validate refuse it; adding one without a behaviour
/// case that needs it fails `onprem_proves_every_declared_capability`.
pub fn capabilities() -> Capabilities {
    use Feature::*;
    Capabilities::new(
        ONPREM,
        &[
            OnlineStore, PointInTimeFetch, RunSearch, Schedules, NewDataTrigger, DriftTrigger, StepCaching, StepRetries,
            ModelAliases, ApprovalStatus, TrafficSplit, BearerAuth, OnnxModels, DriftPsi, DriftKs, PredictionDrift,
        ],
    )
}

/// `platforms.onprem`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OnpremSettings {
    /// The shared directory for artifacts, feature data, pipeline runs, endpoints and monitors,
    /// relative to the blueprint (default `.galley/onprem`). Point every machine at the same
    /// mount (NFS, SMB) to share one stack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
    /// The MLflow tracking server, `http(s)://host:port` (default: `MLFLOW_TRACKING_URI`).
    /// Credentials come from MLflow's own variables, `MLFLOW_TRACKING_USERNAME` and
    /// `MLFLOW_TRACKING_PASSWORD` (or `MLFLOW_TRACKING_TOKEN`), never from the blueprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlflow_tracking_uri: Option<String>,
    /// The Feast feature repository Galley writes its feature views into, relative to the
    /// blueprint (default: `GALLEY_FEAST_REPO`, else `feast` under `dir`). Galley writes a
    /// `feature_store.yaml` there when it has none; one of yours must use Feast's `file`
    /// offline store, which reads the Parquet files Galley ingests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feast_repo: Option<String>,
    /// A Python with `feast` installed (default: `GALLEY_FEAST_PYTHON`, else `python3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feast_python: Option<String>,
    /// Feast's feature server (`feast serve` in the repository), for online features
    /// (default: `FEAST_FEATURE_SERVER_URL`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feast_feature_server_url: Option<String>,
    /// Airflow 3's api-server, `http(s)://host:port` (default: `AIRFLOW_API_URL`). With one,
    /// `galley run` runs the pipeline as an Airflow DAG, each step a task on Airflow's workers;
    /// without, in Galley's process. Credentials come from `AIRFLOW_USERNAME` and
    /// `AIRFLOW_PASSWORD`, never from the blueprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub airflow_api_url: Option<String>,
    /// The DAGs folder Airflow's dag-processor reads, relative to the blueprint (default:
    /// Airflow's own `AIRFLOW__CORE__DAGS_FOLDER`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub airflow_dags_folder: Option<String>,
    /// The galley binary Airflow's workers run, an absolute path on them (default:
    /// `GALLEY_AIRFLOW_GALLEY`, else this galley). The workers must also see `dir` at the same path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub airflow_galley: Option<String>,
    /// The Prometheus server that watches the endpoint, `http(s)://host:port` (default:
    /// `PROMETHEUS_URL`). With one, `galley apply` loads the endpoint's recording and alerting
    /// rules into it (its reload API needs `--web.enable-lifecycle`), and the endpoint's
    /// address is written where its file service discovery reads it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_url: Option<String>,
    /// The directory that Prometheus's configuration reads rules (`rules/*.yml`) and file-SD
    /// targets (`targets/*.json`) from, relative to the blueprint (default:
    /// `GALLEY_PROMETHEUS_CONFIG_DIR`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_config_dir: Option<String>,
}

/// The Airflow the blueprint's pipelines run on, if any: its setting, else `AIRFLOW_API_URL`.
pub fn airflow_api_url(bp: &Blueprint) -> Option<String> {
    let settings: OnpremSettings = bp.platform_settings(ONPREM).ok().flatten().unwrap_or_default();
    settings.airflow_api_url.filter(|u| !u.trim().is_empty()).or_else(|| std::env::var(AIRFLOW_API_URL_ENV).ok().filter(|v| !v.trim().is_empty()))
}

pub struct OnpremRules;

pub fn rules() -> Arc<dyn PlatformRules> {
    Arc::new(OnpremRules)
}

impl PlatformRules for OnpremRules {
    fn id(&self) -> PlatformId {
        ONPREM
    }

    fn summary(&self) -> &'static str {
        "your own servers: MLflow tracking and registry; Feast features; Galley's model server as a managed service; artifacts, runs and monitors on a shared directory"
    }

    fn capabilities(&self) -> Capabilities {
        capabilities()
    }

    /// The state in an S3-compatible store (`endpoint_url`), the aws platform's backend and code.
    fn state_backends(&self) -> Vec<galley_blueprint::platform::BackendRule> {
        galley_aws::rules().state_backends()
    }

    fn cargo_feature(&self) -> &'static str {
        "onprem"
    }

    fn settings_schema(&self) -> Option<serde_json::Value> {
        Some(schemars::schema_for!(OnpremSettings).to_value())
    }

    fn remote_steps(&self, bp: &Blueprint) -> Option<String> {
        airflow_api_url(bp).map(|url| format!("Airflow at {url}, each step a task running `galley container step` on Airflow's workers"))
    }

    /// The directory-kept stages impose the local platform's rules on their names; MLflow
    /// accepts any experiment and model name.
    fn check(&self, bp: &Blueprint, stages: &[Stage]) -> Vec<Finding> {
        galley_local::rules()
            .check(bp, stages)
            .into_iter()
            .map(|f| Finding { message: f.message.replace("on the local platform", "on the onprem platform"), ..f })
            .collect()
    }
}
