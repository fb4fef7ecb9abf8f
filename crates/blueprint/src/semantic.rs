//! Checks the schema cannot express: cross-stage requirements, portability (does the platform
//! a stage runs on support what it asks for), each platform's own rules (bucket and endpoint
//! names, required settings), all asked of the [`PlatformRegistry`].

use std::net::IpAddr;

use galley_core::capability::{Capabilities, Feature};
use galley_core::stages::DriftMethod;
use galley_core::Stage;

use crate::diag::Diagnostic;
use crate::model::*;
use crate::platform::{PlatformRegistry, native_promotion};
use crate::span::{Node, dotted, keys};

struct Checker<'a> {
    root: &'a Node,
    registry: &'a PlatformRegistry,
    out: Vec<Diagnostic>,
}

impl Checker<'_> {
    fn err(&mut self, path: &[&str], message: impl Into<String>, hint: Option<String>) {
        let p = keys(path);
        self.out.push(Diagnostic::error(self.root.locate(&p), dotted(&p), message).with_hint_opt(hint));
    }
}

/// The promotion a registry uses: the blueprint's, else the native one of the platform whose
/// capabilities are `registry_platform` (alias where aliases exist, else approval status).
pub fn effective_promotion(bp: &Blueprint, registry_platform: &Capabilities) -> Promotion {
    bp.stages.registry.as_ref().and_then(|r| r.promotion).unwrap_or_else(|| native_promotion(registry_platform))
}

impl Checker<'_> {
    /// The declaration of the platform a stage runs on (every used platform is known by now).
    fn caps(&self, stage: Stage, bp: &Blueprint) -> Capabilities {
        let p = bp.stage_platform(stage);
        self.registry.get(p).map(|r| r.capabilities()).unwrap_or_else(|| Capabilities::new(p, &[]))
    }
}

/// Whether a value is still a `${stages.…}` reference (resolved at apply time, so not checkable now).
pub fn is_reference(s: &str) -> bool {
    s.contains("${")
}

pub fn check(bp: &Blueprint, root: &Node, registry: &PlatformRegistry) -> Vec<Diagnostic> {
    let mut c = Checker { root, registry, out: Vec::new() };
    identity(bp, &mut c);
    data(bp, &mut c);
    stages(bp, &mut c);
    dependencies(bp, &mut c);
    portability(bp, &mut c);
    platform_rules(bp, &mut c);
    credentials(&mut c);
    c.out
}

fn identity(bp: &Blueprint, c: &mut Checker) {
    if bp.api_version != API_VERSION {
        c.err(&["apiVersion"], format!("unsupported apiVersion `{}`; this Galley reads `{API_VERSION}`", bp.api_version), Some(format!("set `apiVersion: {API_VERSION}`")));
    }
    if !valid_name(&bp.name) {
        c.err(&["name"], format!("invalid name `{}`: use 1 to 40 lower-case letters, digits and `-`, starting and ending with a letter or digit", bp.name), None);
    }
}

fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    (1..=40).contains(&b.len())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

fn data(bp: &Blueprint, c: &mut Checker) {
    let d = &bp.data;
    if !(d.split.test_size > 0.0 && d.split.test_size < 1.0) {
        c.err(&["data", "split", "test_size"], format!("test_size must be between 0 and 1 (exclusive), found {}", d.split.test_size), Some("0.2 holds out a fifth of the rows".into()));
    }
    if d.positive_when.is_some() && d.task != Task::Classification {
        c.err(&["data", "positive_when"], "`positive_when` turns the target into a class label; it only applies to `task: classification`", None);
    }
    if let Some(f) = &bp.stages.features
        && let Some(i) = f.features.iter().position(|x| *x == d.target)
    {
        let path = format!("stages.features.features[{i}]");
        let p = vec![
            crate::span::PathSeg::Key("stages".into()),
            crate::span::PathSeg::Key("features".into()),
            crate::span::PathSeg::Key("features".into()),
            crate::span::PathSeg::Index(i),
        ];
        c.out.push(
            Diagnostic::error(c.root.locate(&p), path, format!("the target `{}` is listed as a feature; a model must not see what it predicts", d.target))
                .with_hint(format!("remove `{}` from stages.features.features", d.target)),
        );
    }
}

/// What trains: a built-in `algorithm`, or the user's `command` with its `code` and
/// `requirements` (paths the lifecycle resolves against the blueprint's directory).
fn training_code(t: &crate::model::TrainingStage, c: &mut Checker) {
    let at = |f: &'static str| ["stages", "training", f];
    match (&t.algorithm, &t.command) {
        (None, None) => c.err(&["stages", "training"], "the training stage names nothing to train", Some("set `algorithm:` to a built-in (logistic_regression, linear_regression, decision_tree) or `command:` to your training code, e.g. `python train.py`".into())),
        (Some(_), Some(_)) => c.err(&at("command"), "`command:` runs your training code, and `algorithm:` a built-in one: give one of them", Some("remove `algorithm:` to train with your code, or `command:` to use the built-in".into())),
        (Some(_), None) => {
            for f in ["code", "requirements"] {
                let set = if f == "code" { t.code.is_some() } else { t.requirements.is_some() };
                if set {
                    c.err(&at(f), format!("`{f}:` belongs to a training `command:`, and this stage trains the built-in algorithm"), Some(format!("remove `{f}:`, or replace `algorithm:` with `command:`")));
                }
            }
        }
        (None, Some(cmd)) => {
            if cmd.trim().is_empty() {
                c.err(&at("command"), "`command:` is empty", Some("name the program and its arguments, e.g. `python train.py`".into()));
            } else if let Err(why) = split_command(cmd) {
                c.err(&at("command"), format!("cannot split `command:` into arguments: {why}"), Some("close the quote (the command is split like a shell splits words, with no expansion)".into()));
            }
            // The container runner and managed jobs of the user's image come with their own
            // contract checks; until they are built, refuse them here rather than at run time.
            if t.compute == Compute::Managed {
                c.err(&at("compute"), "`command:` runs on `compute: local` in this Galley; a managed job of your own image is not built yet", Some("use `compute: local`, or a built-in `algorithm:` for managed training".into()));
            } else if t.image.is_some() {
                c.err(&at("image"), "running `command:` in a container (`image:` with `compute: local`) is not built yet; it runs as a local process, in a virtualenv from `requirements:`", Some("remove `image:`".into()));
            }
        }
    }
}

/// The files a blueprint names relative to its own directory, checked where it is loaded from a
/// file: the training code's directory, its requirements, and the script a Python command runs.
pub fn files(bp: &Blueprint, root: &Node, base: &std::path::Path) -> Vec<Diagnostic> {
    // No platform question is asked here.
    let none = PlatformRegistry::default();
    let mut c = Checker { root, registry: &none, out: Vec::new() };
    let Some(t) = &bp.stages.training else { return c.out };
    let Some(command) = &t.command else { return c.out };
    let code = t.code.as_deref().map_or_else(|| base.to_path_buf(), |c| base.join(c));
    if !code.is_dir() {
        c.err(&["stages", "training", "code"], format!("`code: {}` is not a directory ({})", t.code.as_deref().unwrap_or("."), code.display()), Some("name the directory holding your training code, relative to the blueprint".into()));
        return c.out;
    }
    if let Some(r) = &t.requirements
        && !base.join(r).is_file()
    {
        c.err(&["stages", "training", "requirements"], format!("`requirements: {r}` is not a file ({})", base.join(r).display()), Some("name a pip requirements file, relative to the blueprint".into()));
    }
    // `python train.py …`: the script is a file in `code`, so a typo is caught here, not after
    // the environment is built.
    if let Ok(words) = split_command(command)
        && let [program, script, ..] = words.as_slice()
        && std::path::Path::new(program).file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("python"))
        && script.ends_with(".py")
        && !code.join(script).is_file()
    {
        c.err(&["stages", "training", "command"], format!("`{script}` is not a file in the training code's directory ({})", code.display()), Some("check the script's name, or set `code:` to the directory holding it".into()));
    }
    c.out
}

/// Splits a `command:` as a POSIX shell splits words (quotes, backslashes), with no expansion:
/// the one tokenizer the validator and the lifecycle share.
pub fn split_command(command: &str) -> std::result::Result<Vec<String>, String> {
    shlex::split(command).ok_or_else(|| "a quote is not closed, or it ends in a backslash".to_owned())
}

fn stages(bp: &Blueprint, c: &mut Checker) {
    let s = &bp.stages;
    if let Some(f) = &s.features
        && let Some(ttl) = &f.ttl
        && !valid_duration(ttl)
    {
        c.err(&["stages", "features", "ttl"], format!("invalid ttl `{ttl}`: expected a number and a unit, such as `30d`, `12h`, `45m` or `90s`"), None);
    }
    if let Some(p) = &s.pipeline
        && let Some(cron) = &p.schedule
        && let Err(why) = check_cron(cron)
    {
        c.err(&["stages", "pipeline", "schedule"], format!("invalid schedule `{cron}`: {why}"), Some("use five fields: minute hour day-of-month month day-of-week, e.g. `0 3 * * *` for 03:00 daily".into()));
    }
    if let Some(t) = &s.training {
        // Where managed training is not offered at all, portability says so instead.
        let managed_here = c.caps(Stage::Training, bp).supports(Feature::ManagedCompute);
        if t.compute == Compute::Managed && t.image.is_none() && managed_here {
            c.err(&["stages", "training", "compute"], "`compute: managed` runs the training job in a container, but `stages.training.image` is not set", Some("set `image:` to an image that follows SageMaker's training contract, such as one built from Galley's Dockerfile (`galley container train`), or use `compute: local`".into()));
        }
        training_code(t, c);
        if let Some(m) = &t.max_runtime {
            if !valid_duration(m) || duration_secs(m) == Some(0) {
                c.err(&["stages", "training", "max_runtime"], format!("invalid max_runtime `{m}`: expected a number and a unit, such as `2h` or `90m`"), None);
            } else if t.compute != Compute::Managed && t.command.is_none() {
                c.err(&["stages", "training", "max_runtime"], "`max_runtime` bounds a managed training job or your training `command:`, and this built-in algorithm runs in galley's process (`compute: local`)", Some("remove `max_runtime`, or set `compute: managed`".into()));
            }
        }
        // A built-in algorithm runs on CPU only, and a local command on this machine's hardware:
        // a GPU asked for either would be billed and idle, or not there at all.
        if t.gpu {
            match t.algorithm {
                Some(a) => c.err(&["stages", "training", "gpu"], format!("`gpu: true` asks for a GPU instance, but the built-in algorithm `{}` runs on CPU only: the GPU would be billed and idle", algorithm_name(a)), Some("remove `gpu: true`".into())),
                None if t.compute == Compute::Local => c.err(&["stages", "training", "gpu"], "`gpu: true` asks for a GPU instance, but `compute: local` runs your command on this machine", Some("remove `gpu: true`".into())),
                None => {}
            }
        }
        let fits = match (t.algorithm, bp.data.task) {
            (Some(Algorithm::LogisticRegression), Task::Regression) => Some("logistic_regression is a classifier; use linear_regression or decision_tree for regression"),
            (Some(Algorithm::LinearRegression), Task::Classification) => Some("linear_regression predicts numbers; use logistic_regression or decision_tree for classification"),
            _ => None,
        };
        if let (Some(why), Some(a)) = (fits, t.algorithm) {
            c.err(&["stages", "training", "algorithm"], format!("algorithm `{}` does not fit task `{}`", algorithm_name(a), task_name(bp.data.task)), Some(why.into()));
        }
    }
    if let Some(r) = &s.registry {
        let g = &r.gate;
        if g.at_least.is_none() && g.at_most.is_none() && g.beat_champion_by.is_none() {
            c.err(&["stages", "registry", "gate"], "the gate has no condition, so every model would pass", Some("set at least one of `at_least`, `at_most`, `beat_champion_by`".into()));
        }
        let metrics: &[&str] = match bp.data.task {
            Task::Classification => &["accuracy", "f1", "roc_auc"],
            Task::Regression => &["rmse", "r2", "mae"],
        };
        if !metrics.contains(&g.metric.as_str()) {
            let hint = crate::span::did_you_mean(&g.metric, metrics.iter().copied());
            c.err(&["stages", "registry", "gate", "metric"], format!("metric `{}` does not apply to {} ; use one of {}", g.metric, task_name(bp.data.task), metrics.join(", ")).replace(" ;", ";"), hint);
        }
    }
    if let Some(sv) = &s.serving {
        if let Some(t) = &sv.traffic {
            match (t.strategy, t.percent) {
                (Strategy::Canary, None) => c.err(&["stages", "serving", "traffic"], "a canary needs `percent`: the new version's share of traffic, 1-99", None),
                (Strategy::Canary, Some(p)) if !(1..=99).contains(&p) => c.err(&["stages", "serving", "traffic", "percent"], format!("canary percent must be between 1 and 99, found {p}"), Some("use `strategy: all_at_once` to send all traffic to the new version".into())),
                (Strategy::AllAtOnce, Some(_)) => c.err(&["stages", "serving", "traffic", "percent"], "`percent` only applies to `strategy: canary`", None),
                _ => {}
            }
        }
        if let Some(bind) = &sv.bind {
            let loopback = bind == "localhost" || bind.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
            if !loopback && sv.auth.is_none() {
                c.err(&["stages", "serving", "bind"], format!("serving binds `{bind}`, which other machines can reach, without authentication"), Some("add `auth: {token_env: GALLEY_SERVING_TOKEN}`, or bind 127.0.0.1".into()));
            }
        }
        if let Some(a) = &sv.autoscaling
            && let Err(e) = a.scaling().check(&sv.endpoint)
        {
            c.err(&["stages", "serving", "autoscaling"], e.message().to_owned(), Some("set `min` to at least 1 and no more than `max`, and `requests_per_minute` above 0".into()));
        }
    }
    if let Some(m) = &s.monitoring
        && !(m.drift.threshold > 0.0)
    {
        c.err(&["stages", "monitoring", "drift", "threshold"], format!("drift threshold must be positive, found {}", m.drift.threshold), None);
    }
}

fn dependencies(bp: &Blueprint, c: &mut Checker) {
    let s = &bp.stages;
    if s.registry.is_some() && s.training.is_none() {
        c.err(&["stages", "registry"], "the registry stage needs a training stage: nothing would produce models to register", Some("add `stages.training`".into()));
    }
    if s.serving.is_some() && s.registry.is_none() {
        c.err(&["stages", "serving"], "the serving stage needs a registry stage: it serves the registry's champion", Some("add `stages.registry`".into()));
    }
    if s.monitoring.is_some() && s.serving.is_none() {
        c.err(&["stages", "monitoring"], "the monitoring stage needs a serving stage: it watches the endpoint's traffic", Some("add `stages.serving`, or remove `stages.monitoring`".into()));
    }
    if let Some(p) = &s.pipeline {
        if p.retrain_on.contains(&RetrainTrigger::Schedule) && p.schedule.is_none() {
            c.err(&["stages", "pipeline", "retrain_on"], "`retrain_on: schedule` needs `stages.pipeline.schedule`", Some("add e.g. `schedule: \"0 3 * * *\"`".into()));
        }
        if p.retrain_on.contains(&RetrainTrigger::Drift) && s.monitoring.is_none() {
            c.err(&["stages", "pipeline", "retrain_on"], "`retrain_on: drift` needs a monitoring stage to detect drift", Some("add `stages.monitoring`".into()));
        }
    }
}

/// Each requirement: the stage, the feature, the field that asks for it, and a concrete
/// alternative on the same platform when there is one.
fn portability(bp: &Blueprint, c: &mut Checker) {
    let s = &bp.stages;
    let mut asks: Vec<(Stage, Feature, Vec<&str>, String, Option<String>)> = Vec::new();
    if let Some(a) = &s.artifacts {
        if a.versioning == Some(true) {
            asks.push((Stage::Artifacts, Feature::ArtifactVersioning, vec!["stages", "artifacts", "versioning"], "versioning: true".into(), Some("remove `versioning: true`".into())));
        }
        if a.encryption == Some(true) {
            asks.push((Stage::Artifacts, Feature::ArtifactEncryption, vec!["stages", "artifacts", "encryption"], "encryption: true".into(), Some("remove `encryption: true`".into())));
        }
    }
    if let Some(f) = &s.features {
        if f.online {
            asks.push((Stage::Features, Feature::OnlineStore, vec!["stages", "features", "online"], "online: true".into(), Some("set `online: false`".into())));
        }
        if f.ttl.is_some() {
            asks.push((Stage::Features, Feature::FeatureTtl, vec!["stages", "features", "ttl"], "ttl".into(), Some("remove `ttl`".into())));
        }
    }
    if let Some(p) = &s.pipeline {
        if p.schedule.is_some() {
            asks.push((Stage::Pipeline, Feature::Schedules, vec!["stages", "pipeline", "schedule"], "schedule".into(), None));
        }
        if p.retrain_on.contains(&RetrainTrigger::NewData) {
            asks.push((Stage::Pipeline, Feature::NewDataTrigger, vec!["stages", "pipeline", "retrain_on"], "retrain_on: new_data".into(), Some("retrain on `schedule` instead".into())));
        }
        if p.retrain_on.contains(&RetrainTrigger::Drift) {
            asks.push((Stage::Pipeline, Feature::DriftTrigger, vec!["stages", "pipeline", "retrain_on"], "retrain_on: drift".into(), None));
        }
        if p.cache == Some(true) {
            asks.push((Stage::Pipeline, Feature::StepCaching, vec!["stages", "pipeline", "cache"], "cache: true".into(), Some("remove `cache: true`".into())));
        }
        if p.retries.is_some_and(|r| r > 0) {
            asks.push((Stage::Pipeline, Feature::StepRetries, vec!["stages", "pipeline", "retries"], "retries".into(), None));
        }
    }
    if let Some(t) = &s.training {
        if t.compute == Compute::Managed {
            asks.push((Stage::Training, Feature::ManagedCompute, vec!["stages", "training", "compute"], "compute: managed".into(), Some("use `compute: local`".into())));
        }
    }
    if let Some(r) = &s.registry {
        let caps = c.caps(Stage::Registry, bp);
        let native = native_promotion(&caps);
        let asked = r.promotion.unwrap_or(native);
        let (feature, name) = (promotion_feature(asked), promotion_name(asked));
        let alt = (native != asked && caps.supports(promotion_feature(native))).then(|| format!("use `promotion: {}`", promotion_name(native)));
        // Without `promotion:` the path is the registry stage itself: its platform has no way to promote.
        let path = if r.promotion.is_some() { vec!["stages", "registry", "promotion"] } else { vec!["stages", "registry"] };
        asks.push((Stage::Registry, feature, path, format!("promotion: {name}"), alt));
    }
    if let Some(sv) = &s.serving {
        if sv.traffic.as_ref().is_some_and(|t| t.strategy == Strategy::Canary) {
            asks.push((Stage::Serving, Feature::TrafficSplit, vec!["stages", "serving", "traffic", "strategy"], "traffic.strategy: canary".into(), Some("use `strategy: all_at_once`".into())));
        }
        if sv.auth.is_some() {
            asks.push((Stage::Serving, Feature::BearerAuth, vec!["stages", "serving", "auth"], "auth".into(), None));
        }
        // The user's training code writes an ONNX model, which this endpoint must then serve.
        if s.training.as_ref().is_some_and(|t| t.command.is_some()) {
            asks.push((Stage::Serving, Feature::OnnxModels, vec!["stages", "training", "command"], "training.command".into(), Some("train with a built-in `algorithm:`, or serve on a platform that serves ONNX".into())));
        }
        if sv.autoscaling.is_some() {
            asks.push((Stage::Serving, Feature::Autoscaling, vec!["stages", "serving", "autoscaling"], "autoscaling".into(), Some("remove `autoscaling`".into())));
        }
    }
    if let Some(m) = &s.monitoring {
        if m.drift.method == DriftMethod::Ks {
            asks.push((Stage::Monitoring, Feature::DriftKs, vec!["stages", "monitoring", "drift", "method"], "drift.method: ks".into(), Some("use `method: psi`".into())));
        }
        if !m.alarms.is_empty() {
            asks.push((Stage::Monitoring, Feature::Alarms, vec!["stages", "monitoring", "alarms"], "alarms".into(), None));
        }
    }

    for (stage, feature, path, field, alternative) in asks {
        let platform = bp.stage_platform(stage);
        if c.caps(stage, bp).supports(feature) {
            continue;
        }
        let others: Vec<String> = c.registry.platforms_supporting(feature).iter().map(|p| p.to_string()).collect();
        let elsewhere = if others.is_empty() {
            "no platform supports it yet".to_string()
        } else {
            format!("run the {stage} stage on a platform that supports it (`stages.{stage}.platform`): {}", others.join(", "))
        };
        let hint = match alternative {
            Some(alt) => format!("{alt}, or {elsewhere}"),
            None => elsewhere,
        };
        c.err(&path, format!("platform `{platform}` cannot honour {} ({}.{field})", feature.describe(), dotted(&keys(&path[..2]))), Some(hint));
    }
}

/// Each used platform's required settings and its own rules, for the stages it runs.
fn platform_rules(bp: &Blueprint, c: &mut Checker) {
    for platform in bp.platforms_used() {
        let Some(rules) = c.registry.get(platform).cloned() else { continue };
        let section_missing = !bp.platforms.contains_key(platform.as_str());
        if let Some(schema) = rules.settings_schema().filter(|_| section_missing) {
            let required: Vec<&str> =
                schema.get("required").and_then(|r| r.as_array()).into_iter().flatten().filter_map(|v| v.as_str()).collect();
            if !required.is_empty() {
                let fields: Vec<String> = required.iter().map(|f| format!("platforms.{platform}.{f}")).collect();
                let at: &[&str] = if c.root.get("platforms").is_some() { &["platforms"] } else { &["platform"] };
                c.err(at, format!("platform `{platform}` is used but {} is not set", fields.join(", ")), Some(format!("add a `platforms.{platform}` section")));
            }
        }
        let stages: Vec<Stage> = bp.declared_stages().into_iter().filter(|s| bp.stage_platform(*s) == platform).collect();
        for f in rules.check(bp, &stages) {
            let path: Vec<&str> = f.path.iter().map(String::as_str).collect();
            c.err(&path, f.message, f.hint);
        }
    }
}

/// A credential a platform declares must come from the environment, never sit in the file:
/// blueprints are committed, shared and pasted into issues.
fn credentials(c: &mut Checker) {
    let Some(sections) = c.root.get("platforms") else { return };
    let mut literal = Vec::new();
    for rules in c.registry.all() {
        let id = rules.id();
        for field in rules.credential_fields() {
            if let Some(node) = sections.get(id.as_str()).and_then(|s| s.get(field))
                && !node.substituted
            {
                literal.push((id, *field));
            }
        }
    }
    for (id, field) in literal {
        let env = format!("{id}_{field}").to_uppercase().replace('-', "_");
        c.err(
            &["platforms", id.as_str(), field],
            format!("`platforms.{id}.{field}` is a credential and is written into the blueprint; it would be committed with it"),
            Some(format!("read it from the environment: `{field}: ${{env.{env}}}`, and remove the value from the file (and from its history if it was committed)")),
        );
    }
}

fn promotion_feature(p: Promotion) -> Feature {
    match p {
        Promotion::Alias => Feature::ModelAliases,
        Promotion::Approval => Feature::ApprovalStatus,
        Promotion::Stage => Feature::ModelStages,
    }
}

fn promotion_name(p: Promotion) -> &'static str {
    match p {
        Promotion::Alias => "alias",
        Promotion::Approval => "approval",
        Promotion::Stage => "stage",
    }
}

fn algorithm_name(a: Algorithm) -> &'static str {
    match a {
        Algorithm::LogisticRegression => "logistic_regression",
        Algorithm::DecisionTree => "decision_tree",
        Algorithm::LinearRegression => "linear_regression",
    }
}

fn task_name(t: Task) -> &'static str {
    match t {
        Task::Classification => "classification",
        Task::Regression => "regression",
    }
}

fn valid_duration(s: &str) -> bool {
    duration_secs(s).is_some()
}

/// Seconds in a blueprint duration: a number and a unit, `90s`, `45m`, `12h`, `30d`.
pub fn duration_secs(s: &str) -> Option<u64> {
    let unit = s.chars().last()?;
    let digits = &s[..s.len() - unit.len_utf8()];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let scale = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        _ => return None,
    };
    digits.parse::<u64>().ok()?.checked_mul(scale)
}

/// Five-field cron: each field a list of `*`, `n`, `n-m`, each optionally `/step`, in range.
pub fn check_cron(expr: &str) -> Result<(), String> {
    const FIELDS: [(&str, u32, u32); 5] = [("minute", 0, 59), ("hour", 0, 23), ("day-of-month", 1, 31), ("month", 1, 12), ("day-of-week", 0, 7)];
    let parts: Vec<&str> = expr.split_whitespace().collect();
    if parts.len() != 5 {
        return Err(format!("expected 5 fields, found {}", parts.len()));
    }
    for (part, (name, lo, hi)) in parts.iter().zip(FIELDS) {
        for item in part.split(',') {
            let (range, step) = match item.split_once('/') {
                Some((r, s)) => (r, Some(s)),
                None => (item, None),
            };
            if let Some(step) = step
                && step.parse::<u32>().map_or(true, |s| s == 0)
            {
                return Err(format!("bad step `{step}` in the {name} field"));
            }
            if range == "*" {
                continue;
            }
            let (a, b) = range.split_once('-').unwrap_or((range, range));
            for v in [a, b] {
                let n = cron_value(v, name).ok_or_else(|| format!("`{v}` is not a valid {name}"))?;
                if n < lo || n > hi {
                    return Err(format!("{name} `{v}` is out of range {lo}-{hi}"));
                }
            }
        }
    }
    Ok(())
}

fn cron_value(v: &str, field: &str) -> Option<u32> {
    if let Ok(n) = v.parse::<u32>() {
        return Some(n);
    }
    let upper = v.to_ascii_uppercase();
    let names: &[&str] = match field {
        "month" => &["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"],
        "day-of-week" => &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
        _ => return None,
    };
    let base = if field == "month" { 1 } else { 0 };
    names.iter().position(|n| *n == upper).map(|i| i as u32 + base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_shapes() {
        for ok in ["0 3 * * *", "*/15 * * * *", "30 2 * * MON-FRI", "0 0 1,15 jan-jun 0", "0 0 * * 7"] {
            assert_eq!(check_cron(ok), Ok(()), "{ok}");
        }
        assert_eq!(check_cron("0 3 * *"), Err("expected 5 fields, found 4".into()));
        assert_eq!(check_cron("60 * * * *"), Err("minute `60` is out of range 0-59".into()));
        assert_eq!(check_cron("0 0 0 * *"), Err("day-of-month `0` is out of range 1-31".into()));
        assert_eq!(check_cron("*/0 * * * *"), Err("bad step `0` in the minute field".into()));
        assert_eq!(check_cron("@daily"), Err("expected 5 fields, found 1".into()));
    }

}
