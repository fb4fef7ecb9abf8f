//! The platforms Galley targets and the stages of an MLOps stack.

use std::fmt;
use std::str::FromStr;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
    schemars::JsonSchema, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum PlatformKind {
    #[default]
    Local,
    Onprem,
    Aws,
    Gcp,
    Azure,
}

impl PlatformKind {
    pub const ALL: [PlatformKind; 5] =
        [PlatformKind::Local, PlatformKind::Onprem, PlatformKind::Aws, PlatformKind::Gcp, PlatformKind::Azure];

    pub fn as_str(self) -> &'static str {
        match self {
            PlatformKind::Local => "local",
            PlatformKind::Onprem => "onprem",
            PlatformKind::Aws => "aws",
            PlatformKind::Gcp => "gcp",
            PlatformKind::Azure => "azure",
        }
    }
}

impl fmt::Display for PlatformKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PlatformKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        PlatformKind::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown platform `{s}`; expected one of local, onprem, aws, gcp, azure"))
    }
}

/// A stage of the stack, in lifecycle order.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Artifacts,
    Features,
    Experiments,
    Pipeline,
    Training,
    Registry,
    Serving,
    Monitoring,
}

impl Stage {
    pub const ALL: [Stage; 8] = [
        Stage::Artifacts,
        Stage::Features,
        Stage::Experiments,
        Stage::Pipeline,
        Stage::Training,
        Stage::Registry,
        Stage::Serving,
        Stage::Monitoring,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Artifacts => "artifacts",
            Stage::Features => "features",
            Stage::Experiments => "experiments",
            Stage::Pipeline => "pipeline",
            Stage::Training => "training",
            Stage::Registry => "registry",
            Stage::Serving => "serving",
            Stage::Monitoring => "monitoring",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Stage {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Stage::ALL.into_iter().find(|p| p.as_str() == s).ok_or_else(|| format!("unknown stage `{s}`"))
    }
}
