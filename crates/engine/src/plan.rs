//! A plan: what apply will do, resource by resource, plus the lifecycle actions the caller
//! adds. Savable (`--out PLANFILE`) and sealed with a sha256 of its canonical JSON, and tied
//! to the state lineage and serial it was computed from.

use std::fmt::Write as _;
use std::path::Path;

use galley_core::resource::{Address, ChangeKind, ResourceSpec};
use galley_core::{Error, PlatformId, Result, Stage};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

pub const PLAN_FORMAT_VERSION: u32 = 1;

/// One attribute that changes: `old` is what exists (None: absent), `new` what will.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttrDiff {
    pub path: String,
    pub old: Option<Json>,
    pub new: Option<Json>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceChange {
    pub address: Address,
    pub action: ChangeKind,
    pub kind: String,
    pub platform: PlatformId,
    pub stage: Stage,
    pub name: String,
    pub protect: bool,
    /// What this change waits for. For create/update/replace: the resource's dependencies;
    /// for delete: nothing here — deletes are ordered by `dependents` instead.
    pub depends_on: Vec<Address>,
    /// For deletes: resources (in state) that depend on this one and must go first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependents: Vec<Address>,
    pub diffs: Vec<AttrDiff>,
    /// Why, in words: `vanished outside galley`, `replace because name changed`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The desired spec (references unresolved) for create/update/replace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<ResourceSpec>,
}

pub use galley_core::actions::LifecycleAction;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub format_version: u32,
    pub blueprint: String,
    /// The blueprint file the plan was made from, so `galley apply PLANFILE` needs nothing else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blueprint_file: Option<std::path::PathBuf>,
    /// The state this plan was computed from; `None` when there was no state yet.
    pub lineage: Option<String>,
    pub serial: u64,
    pub created_at: String,
    /// Every resource that changes, in dependency order (unchanged ones are only counted).
    pub changes: Vec<ResourceChange>,
    pub unchanged: usize,
    pub lifecycle: Vec<LifecycleAction>,
    /// sha256 of this plan's canonical JSON with `hash` empty; see [`Plan::seal`].
    pub hash: String,
}

/// JSON with object keys sorted at every level: the same document always hashes the same.
pub fn canonical_json(value: &Json) -> String {
    fn sort(v: &Json) -> Json {
        match v {
            Json::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                Json::Object(keys.into_iter().map(|k| (k.clone(), sort(&m[k]))).collect())
            }
            Json::Array(a) => Json::Array(a.iter().map(sort).collect()),
            other => other.clone(),
        }
    }
    sort(value).to_string()
}

impl Plan {
    pub(crate) fn new(blueprint: &str, lineage: Option<String>, serial: u64, changes: Vec<ResourceChange>, unchanged: usize) -> Self {
        let mut p = Plan {
            format_version: PLAN_FORMAT_VERSION,
            blueprint: blueprint.to_string(),
            blueprint_file: None,
            lineage,
            serial,
            created_at: chrono::Utc::now().to_rfc3339(),
            changes,
            unchanged,
            lifecycle: Vec::new(),
            hash: String::new(),
        };
        p.seal();
        p
    }

    /// Whether applying would change any resource. Lifecycle actions are what `galley run`
    /// does on top of the resources; they are shown, but they are not pending changes (every
    /// plan of a blueprint with a training stage has them).
    pub fn has_changes(&self) -> bool {
        !self.changes.is_empty()
    }

    pub fn count(&self, action: ChangeKind) -> usize {
        self.changes.iter().filter(|c| c.action == action).count()
    }

    fn compute_hash(&self) -> String {
        let mut unsealed = self.clone();
        unsealed.hash.clear();
        let value = serde_json::to_value(&unsealed).unwrap_or(Json::Null);
        hex::encode(Sha256::digest(canonical_json(&value).as_bytes()))
    }

    /// Recomputes `hash`; call after changing the plan (e.g. filling `lifecycle`).
    pub fn seal(&mut self) {
        self.hash = self.compute_hash();
    }

    pub fn verify(&self) -> Result<()> {
        if self.hash != self.compute_hash() {
            return Err(Error::corrupt(
                "plan was modified after it was made (its sha256 does not match); make a new plan with `galley plan --out`",
            ));
        }
        Ok(())
    }

    /// The stable JSON schema (`format_version` 1).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    pub fn save(&mut self, path: &Path) -> Result<()> {
        self.seal();
        std::fs::write(path, self.to_json())
            .map_err(|e| Error::from(e).operation(format!("writing plan {}", path.display())))
    }

    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::from(e).operation(format!("reading plan {}", path.display())))?;
        let plan: Plan = serde_json::from_slice(&bytes).map_err(|e| {
            Error::corrupt(format!("plan file {} is not a galley plan ({e}); make a new one with `galley plan --out`", path.display()))
        })?;
        if plan.format_version != PLAN_FORMAT_VERSION {
            return Err(Error::unsupported(format!(
                "plan file {} has format version {}, this galley reads {PLAN_FORMAT_VERSION}",
                path.display(),
                plan.format_version
            )));
        }
        plan.verify().map_err(|e| Error::corrupt(format!("plan file {}: {}", path.display(), e.message())))?;
        Ok(plan)
    }

    pub fn summary(&self) -> String {
        if !self.has_changes() {
            return "No changes. Infrastructure matches the blueprint.".into();
        }
        format!(
            "Plan: {} to create, {} to update, {} to replace, {} to destroy.",
            self.count(ChangeKind::Create),
            self.count(ChangeKind::Update),
            self.count(ChangeKind::Replace),
            self.count(ChangeKind::Delete)
        )
    }

    /// Terraform-like text: one block per change with attribute diffs, lifecycle actions, and
    /// the summary line.
    pub fn render_human(&self) -> String {
        let mut s = String::new();
        if !self.changes.is_empty() {
            s.push_str("Galley will perform the following actions:\n\n");
        }
        for c in &self.changes {
            let (sym, verb) = match c.action {
                ChangeKind::Create => ("+", "will be created"),
                ChangeKind::Update => ("~", "will be updated in place"),
                ChangeKind::Replace => ("-/+", "must be replaced"),
                ChangeKind::Delete => ("-", "will be destroyed"),
                ChangeKind::NoOp => (" ", "is unchanged"),
            };
            let _ = writeln!(s, "  # {} ({} `{}` on {}) {verb}", c.address, c.kind, c.name, c.platform);
            if let Some(reason) = &c.reason {
                let _ = writeln!(s, "  # ({reason})");
            }
            let _ = writeln!(s, "  {sym} {}", c.address);
            for d in &c.diffs {
                let line = match (&d.old, &d.new) {
                    (None, Some(n)) => format!("      + {} = {}", d.path, show(n)),
                    (Some(o), None) => format!("      - {} = {}", d.path, show(o)),
                    (Some(o), Some(n)) => format!("      ~ {} = {} -> {}", d.path, show(o), show(n)),
                    (None, None) => continue,
                };
                s.push_str(&line);
                s.push('\n');
            }
            s.push('\n');
        }
        if !self.lifecycle.is_empty() {
            s.push_str("Lifecycle actions:\n");
            for a in &self.lifecycle {
                let _ = writeln!(s, "  > {}", a.describe());
            }
            s.push('\n');
        }
        s.push_str(&self.summary());
        s.push('\n');
        s
    }
}

fn show(v: &Json) -> String {
    match v {
        Json::String(s) if s.contains("${stages.") => "(known after apply)".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_detects_tampering_and_renders_summary() {
        let mut p = Plan::new("bp", None, 0, vec![], 3);
        assert!(!p.has_changes());
        assert!(p.render_human().contains("No changes"));
        p.lifecycle.push(LifecycleAction::RegisterVersion { model: "wine".into() });
        assert!(p.verify().is_err());
        p.seal();
        p.verify().unwrap();
        assert!(p.render_human().contains("register a new version of model `wine`"));
        // Lifecycle actions alone are not infrastructure changes.
        assert!(!p.has_changes());
        assert!(p.render_human().contains("No changes. Infrastructure matches the blueprint."));
        let back: Plan = serde_json::from_str(&p.to_json()).unwrap();
        back.verify().unwrap();
    }

    #[test]
    fn canonical_json_sorts_keys() {
        let a: Json = serde_json::from_str(r#"{"b":1,"a":{"d":2,"c":3}}"#).unwrap();
        assert_eq!(canonical_json(&a), r#"{"a":{"c":3,"d":2},"b":1}"#);
    }
}
