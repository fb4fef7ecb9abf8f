//! The optional abilities a platform may declare, stage by stage.
//!
//! Core holds only the vocabulary ([`Feature`]); each platform declares its own set in its
//! provider folder (`providers/<platform>/src/platform.rs`), next to the code that implements
//! it. The blueprint validator asks [`Capabilities::supports`] before any cloud call, so a
//! blueprint that asks SageMaker for model aliases fails in `validate`, naming the platform and
//! the field. A declaration is a claim that must be proven: the testkit fails a platform whose
//! declared features were not all exercised by a behaviour case that ran and passed on its test
//! substrate (`galley_testkit::Report::assert_capabilities_proven`).

use crate::platform::{PlatformId, Stage};

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
    OnnxModels,
    DriftPsi,
    DriftKs,
    PredictionDrift,
    Alarms,
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
        Feature::OnnxModels,
        Feature::DriftPsi,
        Feature::DriftKs,
        Feature::PredictionDrift,
        Feature::Alarms,
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
            TrafficSplit | ShadowTraffic | Autoscaling | BearerAuth | OnnxModels => Stage::Serving,
            DriftPsi | DriftKs | PredictionDrift | Alarms => Stage::Monitoring,
            ManagedCompute | GpuTraining => Stage::Training,
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
            OnnxModels => "serving ONNX models (what your own training code writes)",
            DriftPsi => "PSI drift",
            DriftKs => "Kolmogorov-Smirnov drift",
            PredictionDrift => "prediction drift",
            Alarms => "alarms on monitoring metrics",
            ManagedCompute => "managed training jobs",
            GpuTraining => "GPU training",
        }
    }
}

/// The set of optional features one platform supports.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Capabilities {
    pub platform: PlatformId,
    features: Vec<Feature>,
}

impl Capabilities {
    /// `platform`'s declaration; duplicates are dropped and the order is [`Feature::ALL`]'s.
    pub fn new(platform: PlatformId, features: &[Feature]) -> Capabilities {
        let features = Feature::ALL.into_iter().filter(|f| features.contains(f)).collect();
        Capabilities { platform, features }
    }

    pub fn supports(&self, feature: Feature) -> bool {
        self.features.contains(&feature)
    }

    pub fn features(&self) -> &[Feature] {
        &self.features
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_declaration_is_a_set_in_a_stable_order() {
        let p = PlatformId::from_static("toy");
        let c = Capabilities::new(p, &[Feature::DriftKs, Feature::OnlineStore, Feature::DriftKs]);
        assert_eq!(c.features(), &[Feature::OnlineStore, Feature::DriftKs]);
        assert!(c.supports(Feature::DriftKs) && !c.supports(Feature::DriftPsi));
    }

    #[test]
    fn every_feature_belongs_to_a_stage_and_says_what_it_is() {
        for f in Feature::ALL {
            assert!(!f.describe().is_empty());
            let _ = f.stage();
        }
    }
}
