//! Platform ids and the stages of an MLOps stack.

use std::fmt;
use std::str::FromStr;

/// A platform's name as blueprints, state files and plans spell it (`local`, `aws`, …).
///
/// The set is open: a platform exists because its provider registers it (see
/// `galley_blueprint::platform`), not because core lists it. Ids are interned, so the type is
/// `Copy` and compares by name.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PlatformId(&'static str);

/// Names every id already handed out, so each distinct name is leaked once.
static INTERNED: std::sync::LazyLock<std::sync::Mutex<std::collections::BTreeSet<&'static str>>> =
    std::sync::LazyLock::new(Default::default);

impl PlatformId {
    /// The longest platform name accepted.
    pub const MAX_LEN: usize = 32;

    /// An id for a name known at compile time (a provider's own). The name must satisfy
    /// [`PlatformId::check`]; registration asserts it.
    pub const fn from_static(name: &'static str) -> PlatformId {
        PlatformId(name)
    }

    /// The id for `name`: lower-case letters, digits and `-`, starting with a letter.
    pub fn new(name: &str) -> Result<PlatformId, String> {
        Self::check(name)?;
        let mut interned = INTERNED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = interned.get(name) {
            return Ok(PlatformId(existing));
        }
        let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
        interned.insert(leaked);
        Ok(PlatformId(leaked))
    }

    /// Why `name` cannot name a platform, if it cannot.
    pub fn check(name: &str) -> Result<(), String> {
        let b = name.as_bytes();
        let ok = (1..=Self::MAX_LEN).contains(&b.len())
            && b[0].is_ascii_lowercase()
            && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-');
        if ok {
            Ok(())
        } else {
            Err(format!(
                "`{name}` is not a platform name: use 1-{} lower-case letters, digits and `-`, starting with a letter",
                Self::MAX_LEN
            ))
        }
    }

    pub fn as_str(self) -> &'static str {
        self.0
    }
}

impl fmt::Display for PlatformId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl fmt::Debug for PlatformId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl FromStr for PlatformId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        PlatformId::new(s)
    }
}

impl serde::Serialize for PlatformId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0)
    }
}

impl<'de> serde::Deserialize<'de> for PlatformId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        PlatformId::new(&s).map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for PlatformId {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "PlatformId".into()
    }
    /// The shape of any name; the blueprint's published schema narrows it to the platforms
    /// registered in the binary.
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[a-z][a-z0-9-]{0,31}$",
            "description": "A platform registered in this galley (`galley platforms` lists them)."
        })
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
