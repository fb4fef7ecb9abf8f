//! What each platform can honour, stage by stage.
//!
//! The blueprint validator asks [`Capabilities::supports`] before any cloud call, so a blueprint
//! that asks SageMaker for model aliases (it has approval status instead) fails in `validate`,
//! naming the platform and the field, instead of half-way through an apply.
//!
//! The declarations describe the native service behind each platform (SageMaker, Vertex AI, …),
//! so they hold whether or not that platform's provider is compiled into this binary. A provider
//! must return exactly its declaration from here; the testkit checks that and skips behaviour
//! tests by it.

use crate::platform::{PlatformKind, Stage};

/// One optional ability. Mandatory behaviour (put/get an artifact, log a metric, …) is not
/// listed: every platform must have it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Feature {
    ArtifactVersioning,
    ArtifactEncryption,
    OnlineStore,
    PointInTimeFetch,
    FeatureTtl,
    RunSearch,
    NestedRuns,
    Schedules,
    NewDataTrigger,
    DriftTrigger,
    StepCaching,
    StepRetries,
    ModelAliases,
    ApprovalStatus,
    ModelStages,
    TrafficSplit,
    ShadowTraffic,
    Autoscaling,
    BearerAuth,
    DriftPsi,
    DriftKs,
    PredictionDrift,
    Alarms,
    LocalCompute,
    ManagedCompute,
    GpuTraining,
}

impl Feature {
    pub const ALL: [Feature; 26] = [
        Feature::ArtifactVersioning,
        Feature::ArtifactEncryption,
        Feature::OnlineStore,
        Feature::PointInTimeFetch,
        Feature::FeatureTtl,
        Feature::RunSearch,
        Feature::NestedRuns,
        Feature::Schedules,
        Feature::NewDataTrigger,
        Feature::DriftTrigger,
        Feature::StepCaching,
        Feature::StepRetries,
        Feature::ModelAliases,
        Feature::ApprovalStatus,
        Feature::ModelStages,
        Feature::TrafficSplit,
        Feature::ShadowTraffic,
        Feature::Autoscaling,
        Feature::BearerAuth,
        Feature::DriftPsi,
        Feature::DriftKs,
        Feature::PredictionDrift,
        Feature::Alarms,
        Feature::LocalCompute,
        Feature::ManagedCompute,
        Feature::GpuTraining,
    ];

    pub fn stage(self) -> Stage {
        use Feature::*;
        match self {
            ArtifactVersioning | ArtifactEncryption => Stage::Artifacts,
            OnlineStore | PointInTimeFetch | FeatureTtl => Stage::Features,
            RunSearch | NestedRuns => Stage::Experiments,
            Schedules | NewDataTrigger | DriftTrigger | StepCaching | StepRetries => Stage::Pipeline,
            ModelAliases | ApprovalStatus | ModelStages => Stage::Registry,
            TrafficSplit | ShadowTraffic | Autoscaling | BearerAuth => Stage::Serving,
            DriftPsi | DriftKs | PredictionDrift | Alarms => Stage::Monitoring,
            LocalCompute | ManagedCompute | GpuTraining => Stage::Training,
        }
    }

    /// Human wording for diagnostics ("platform `aws` cannot honour model aliases").
    pub fn describe(self) -> &'static str {
        use Feature::*;
        match self {
            ArtifactVersioning => "object versioning",
            ArtifactEncryption => "default encryption at rest",
            OnlineStore => "an online feature store",
            PointInTimeFetch => "point-in-time historical feature fetch",
            FeatureTtl => "feature time-to-live",
            RunSearch => "searching runs by metric and tag",
            NestedRuns => "nested runs",
            Schedules => "scheduled pipeline runs",
            NewDataTrigger => "retraining when new data arrives",
            DriftTrigger => "retraining on drift",
            StepCaching => "caching of unchanged pipeline steps",
            StepRetries => "per-step retries",
            ModelAliases => "model aliases (champion, challenger)",
            ApprovalStatus => "model approval status",
            ModelStages => "model lifecycle stages",
            TrafficSplit => "traffic split between model versions (canary)",
            ShadowTraffic => "shadow traffic",
            Autoscaling => "endpoint autoscaling",
            BearerAuth => "bearer-token endpoint authentication",
            DriftPsi => "PSI drift",
            DriftKs => "Kolmogorov-Smirnov drift",
            PredictionDrift => "prediction drift",
            Alarms => "alarms on monitoring metrics",
            LocalCompute => "in-process training",
            ManagedCompute => "managed training jobs",
            GpuTraining => "GPU training",
        }
    }
}

/// The set of optional features one platform supports.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Capabilities {
    pub platform: PlatformKind,
    features: Vec<Feature>,
}

impl Capabilities {
    /// The declaration for `platform`'s native services.
    pub fn of(platform: PlatformKind) -> Capabilities {
        use Feature::*;
        let features: &[Feature] = match platform {
            // Embedded: files, SQLite, an in-process server. Content-addressed, not versioned.
            PlatformKind::Local => &[
                OnlineStore, PointInTimeFetch, RunSearch, Schedules, NewDataTrigger, DriftTrigger,
                StepCaching, StepRetries, ModelAliases, ApprovalStatus, TrafficSplit, BearerAuth,
                DriftPsi, DriftKs, PredictionDrift, LocalCompute,
            ],
            // MLflow + Feast + Airflow + Prometheus. MLflow's model server hosts one model.
            PlatformKind::Onprem => &[
                OnlineStore, PointInTimeFetch, FeatureTtl, RunSearch, NestedRuns, Schedules,
                NewDataTrigger, DriftTrigger, StepRetries, ModelAliases, ModelStages, DriftPsi,
                DriftKs, PredictionDrift, Alarms, LocalCompute,
            ],
            // S3 + SageMaker + CloudWatch. The registry promotes by ModelApprovalStatus, no aliases.
            PlatformKind::Aws => &[
                ArtifactVersioning, ArtifactEncryption, OnlineStore, PointInTimeFetch, FeatureTtl,
                RunSearch, Schedules, NewDataTrigger, DriftTrigger, StepCaching, StepRetries,
                ApprovalStatus, ModelStages, TrafficSplit, ShadowTraffic, Autoscaling, DriftPsi,
                DriftKs, PredictionDrift, Alarms, LocalCompute, ManagedCompute, GpuTraining,
            ],
            // Cloud Storage + Vertex AI. Vertex model versions carry aliases.
            PlatformKind::Gcp => &[
                ArtifactVersioning, ArtifactEncryption, OnlineStore, PointInTimeFetch, FeatureTtl,
                RunSearch, NestedRuns, Schedules, DriftTrigger, StepCaching, StepRetries,
                ModelAliases, TrafficSplit, Autoscaling, DriftPsi, DriftKs, PredictionDrift,
                Alarms, LocalCompute, ManagedCompute, GpuTraining,
            ],
            // Blob Storage + Azure ML. Online endpoints split and mirror traffic; keys or tokens.
            PlatformKind::Azure => &[
                ArtifactVersioning, ArtifactEncryption, OnlineStore, PointInTimeFetch, FeatureTtl,
                RunSearch, NestedRuns, Schedules, DriftTrigger, StepCaching, StepRetries,
                ModelStages, TrafficSplit, ShadowTraffic, Autoscaling, BearerAuth, DriftPsi,
                DriftKs, PredictionDrift, Alarms, LocalCompute, ManagedCompute, GpuTraining,
            ],
        };
        Capabilities { platform, features: features.to_vec() }
    }

    pub fn supports(&self, feature: Feature) -> bool {
        self.features.contains(&feature)
    }

    pub fn features(&self) -> &[Feature] {
        &self.features
    }

    /// The platforms (of all five) that do support `feature`, for "use X instead" hints.
    pub fn platforms_supporting(feature: Feature) -> Vec<PlatformKind> {
        PlatformKind::ALL.into_iter().filter(|p| Capabilities::of(*p).supports(feature)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_platform_trains_somewhere_and_computes_drift() {
        for p in PlatformKind::ALL {
            let c = Capabilities::of(p);
            assert!(c.supports(Feature::LocalCompute), "{p}");
            assert!(c.supports(Feature::DriftPsi), "{p}");
        }
    }

    #[test]
    fn sagemaker_promotes_by_approval_not_alias() {
        let aws = Capabilities::of(PlatformKind::Aws);
        assert!(aws.supports(Feature::ApprovalStatus));
        assert!(!aws.supports(Feature::ModelAliases));
        assert!(Capabilities::platforms_supporting(Feature::ModelAliases).contains(&PlatformKind::Gcp));
    }
}
