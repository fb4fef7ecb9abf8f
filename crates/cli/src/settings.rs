//! Layered CLI settings: defaults < `galley.toml` in the project directory < `GALLEY_*`
//! environment variables. Command-line flags are applied on top by the CLI.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use galley_core::{Error, PlatformId};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    #[default]
    Human,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Overrides the blueprint's `platform:`.
    pub platform: Option<PlatformId>,
    /// The environment overlay to apply (`--env`).
    pub env: Option<String>,
    /// Where the local state file lives, when the blueprint has no `backend`.
    pub state_path: Option<PathBuf>,
    pub output: OutputFormat,
    /// How many resources the engine works on at once.
    pub parallelism: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { platform: None, env: None, state_path: None, output: OutputFormat::Human, parallelism: 10 }
    }
}

/// Reads `galley.toml` (optional) from `project_dir` and `GALLEY_*` from the process environment.
pub fn settings(project_dir: &Path) -> Result<Settings, Error> {
    let env: BTreeMap<String, String> = std::env::vars().collect();
    settings_with_env(project_dir, &env)
}

/// [`settings`] with an explicit environment, so tests do not touch the process's.
pub fn settings_with_env(project_dir: &Path, env: &BTreeMap<String, String>) -> Result<Settings, Error> {
    const FIELDS: [&str; 5] = ["platform", "env", "state_path", "output", "parallelism"];
    // Only the known keys: GALLEY_VAR_* and other GALLEY_ variables belong to other features.
    let known: config::Map<String, String> = env
        .iter()
        .filter_map(|(k, v)| {
            let key = k.strip_prefix("GALLEY_")?.to_ascii_lowercase();
            FIELDS.contains(&key.as_str()).then(|| (format!("GALLEY_{}", key.to_ascii_uppercase()), v.clone()))
        })
        .collect();
    let file = project_dir.join("galley.toml");
    let built = config::Config::builder()
        .add_source(config::File::from(file.clone()).format(config::FileFormat::Toml).required(false))
        .add_source(config::Environment::with_prefix("GALLEY").source(Some(known)).try_parsing(true))
        .build()
        .map_err(|e| Error::invalid(format!("cannot read settings from {} or GALLEY_* variables: {e}", file.display())))?;
    let settings: Settings = built
        .try_deserialize()
        .map_err(|e| Error::invalid(format!("invalid settings in {} or GALLEY_* variables: {e}", file.display())))?;
    if settings.parallelism == 0 {
        return Err(Error::invalid("parallelism must be at least 1 (galley.toml or GALLEY_PARALLELISM)"));
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_file_then_env() {
        let dir = tempfile::tempdir().unwrap();
        let none = BTreeMap::new();
        assert_eq!(settings_with_env(dir.path(), &none).unwrap(), Settings::default());

        std::fs::write(dir.path().join("galley.toml"), "platform = \"aws\"\nparallelism = 8\noutput = \"json\"\n").unwrap();
        let s = settings_with_env(dir.path(), &none).unwrap();
        assert_eq!((s.platform, s.parallelism, s.output), (Some(PlatformId::from_static("aws")), 8, OutputFormat::Json));

        let env: BTreeMap<String, String> = [
            ("GALLEY_PARALLELISM".to_string(), "2".to_string()),
            ("GALLEY_STATE_PATH".to_string(), "/tmp/s.json".to_string()),
            ("GALLEY_VAR_region".to_string(), "x".to_string()),
        ]
        .into();
        let s = settings_with_env(dir.path(), &env).unwrap();
        assert_eq!(s.parallelism, 2);
        assert_eq!(s.platform, Some(PlatformId::from_static("aws")));
        assert_eq!(s.state_path, Some(PathBuf::from("/tmp/s.json")));
    }

    #[test]
    fn bad_values_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("galley.toml"), "platform = \"Mars!\"\n").unwrap();
        let e = settings_with_env(dir.path(), &BTreeMap::new()).unwrap_err();
        assert!(e.to_string().contains("galley.toml"), "{e}");
        std::fs::write(dir.path().join("galley.toml"), "parallelism = 0\n").unwrap();
        assert!(settings_with_env(dir.path(), &BTreeMap::new()).is_err());
    }
}
