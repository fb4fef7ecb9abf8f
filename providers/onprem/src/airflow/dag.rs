//! The DAG file Galley writes into Airflow's DAGs folder for a pipeline: one `BashOperator`
//! task per step, each running `galley container step NAME` (the step entrypoint SageMaker's
//! step containers run too) on whichever worker Airflow's executor picks. What a task needs
//! travels as the DAG run's parameters (`conf`): the run bundle `galley run` wrote to the
//! shared artifact store, the experiment run, the first step whose cache must not be reused,
//! and what started it. A run Airflow starts on its own (the schedule) takes the parameters'
//! defaults: the pipeline's current bundle.
//!
//! A pipeline retrained on drift, with a Prometheus watching its endpoint, gets a second DAG in
//! the same file, [`drift_dag_id`], Airflow's side of the drift trigger (as CloudWatch and
//! EventBridge are on aws): every hour `galley container check-drift` publishes the monitor's
//! verdict as the `galley_drift_detected` gauge the endpoint's `/metrics` serves; a sensor then
//! waits (two minutes at most) for Prometheus to fire the `GalleyDriftDetected` alert of that
//! monitor, and a new alert (one Prometheus had not fired before: its `activeAt`, kept in the
//! Airflow Variable [`drift_variable`]) starts a run of the pipeline's DAG with
//! `trigger=drift`, `force_from=train`. One drift episode starts one retrain; the first check
//! after it (no drift against the new baseline) resolves the alert.
//!
//! The pipeline's spec rides in the DAG's `doc_md`, so what Airflow parsed is what
//! [`spec_of`] reads back through Airflow's API.

use galley_core::stages::{PARAM_BUNDLE, PARAM_EXPERIMENT_RUN, PARAM_FORCE_FROM, PARAM_TRIGGER, PipelineSpec, Trigger};

/// The file a pipeline's DAG lives in, inside the DAGs folder.
pub fn file_name(pipeline: &str) -> String {
    format!("galley_{}.py", pipeline.replace('-', "_"))
}

/// The DAG that checks `pipeline`'s monitor for drift.
pub fn drift_dag_id(pipeline: &str) -> String {
    format!("{pipeline}.drift-check")
}

/// The Airflow Variable holding the `activeAt` of the last drift alert that started a retrain.
pub fn drift_variable(pipeline: &str) -> String {
    format!("galley.{pipeline}.drift-alert")
}

/// When the drift check runs (as on aws: hourly).
pub const DRIFT_CHECK_CRON: &str = "0 * * * *";

/// What Airflow runs for `spec`'s triggers, as `plan` shows them.
pub fn triggers(spec: &PipelineSpec, prometheus_url: Option<&str>) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(cron) = &spec.schedule {
        out.push(format!("DAG {} on schedule {cron} (UTC)", spec.name));
    }
    if let (Some(url), Some(monitor)) = (drift_watch(spec, prometheus_url), &spec.monitor) {
        out.push(format!(
            "DAG {} ({DRIFT_CHECK_CRON}): `galley container check-drift`, then Prometheus at {url} alert {} for monitor {monitor} starts {} with trigger=drift",
            drift_dag_id(&spec.name),
            galley_server::prometheus::DRIFT_ALERT,
            spec.name
        ));
    }
    out
}

/// The Prometheus whose drift alert retrains `spec`, when it is retrained on drift.
pub fn drift_watch<'a>(spec: &PipelineSpec, prometheus_url: Option<&'a str>) -> Option<&'a str> {
    prometheus_url.filter(|_| spec.triggers.contains(&Trigger::Drift) && spec.monitor.is_some())
}

const SPEC_OPEN: &str = "<!-- galley.spec ";
const SPEC_CLOSE: &str = " -->";

/// The DAG's `doc_md`: a line for people and the spec for Galley.
fn doc(spec: &PipelineSpec) -> String {
    let spec_json = serde_json::to_string(spec).expect("a pipeline spec serializes");
    format!("Galley's lifecycle pipeline `{}`: written by `galley apply`, overwritten on every apply.\n\n{SPEC_OPEN}{spec_json}{SPEC_CLOSE}", spec.name)
}

/// The spec a DAG's `doc_md` carries, when Galley wrote it.
pub fn spec_of(doc_md: &str) -> Option<PipelineSpec> {
    let start = doc_md.find(SPEC_OPEN)? + SPEC_OPEN.len();
    let end = start + doc_md[start..].find(SPEC_CLOSE)?;
    serde_json::from_str(&doc_md[start..end]).ok()
}

/// A Python string literal of `s` (JSON's escapes are Python's for every string JSON makes).
fn py(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

/// The DAG file of `spec`: tasks run `galley` (an absolute path on the workers),
/// `default_bundle` is the `file://` URI of the pipeline's current run bundle, `prometheus_url`
/// the Prometheus whose drift alert starts a retrain.
pub fn render(spec: &PipelineSpec, galley: &str, default_bundle: &str, prometheus_url: Option<&str>) -> String {
    // `run_immediately=False` and no start date: a DAG applied at noon with a 04:00 schedule
    // waits for tomorrow's 04:00 instead of running the one it "missed" (which the plan never showed).
    let schedule = spec
        .schedule
        .as_deref()
        .map(|cron| format!("CronTriggerTimetable({}, timezone=\"UTC\", run_immediately=False)", py(cron)))
        .unwrap_or_else(|| "None".into());
    let mut tasks = String::new();
    for step in &spec.steps {
        tasks.push_str(&format!("    tasks[{name}] = step({name})\n", name = py(&step.name)));
    }
    let mut edges = String::new();
    for step in &spec.steps {
        for dep in &step.depends_on {
            edges.push_str(&format!("    tasks[{}] >> tasks[{}]\n", py(dep), py(&step.name)));
        }
    }
    let drift = match (drift_watch(spec, prometheus_url), &spec.monitor) {
        (Some(url), Some(monitor)) => drift_dag(spec, url, monitor),
        _ => String::new(),
    };
    format!(
        r#"# Written by Galley for pipeline `{name}`; `galley apply` overwrites it and `galley destroy`
# removes it. Each task runs one lifecycle step as `galley container step NAME`.
from airflow.sdk import DAG
from airflow.providers.standard.operators.bash import BashOperator
from airflow.timetables.trigger import CronTriggerTimetable

GALLEY = {galley}
DEFAULT_BUNDLE = {default_bundle}

with DAG(
    dag_id={name},
    schedule={schedule},
    catchup=False,
    # One lifecycle run at a time, as `galley run` keeps on every platform.
    max_active_runs=1,
    is_paused_upon_creation=False,
    tags=["galley"],
    doc_md={doc},
    params={{{p_bundle}: DEFAULT_BUNDLE, {p_run}: "", {p_force}: "", {p_trigger}: ""}},
) as dag:

    def step(name):
        return BashOperator(
            task_id=name,
            # The parameters reach the command as variables, never spliced into the shell line.
            bash_command='exec "$GALLEY" container step "$GALLEY_STEP" --run "$GALLEY_RUN" --bundle "$GALLEY_BUNDLE" '
            '--experiment-run "$GALLEY_EXPERIMENT_RUN" --force-from "$GALLEY_FORCE_FROM" --trigger "$GALLEY_TRIGGER"',
            env={{
                "GALLEY": GALLEY,
                "GALLEY_STEP": name,
                "GALLEY_RUN": "{{{{ dag_run.dag_id }}}}/{{{{ run_id }}}}",
                "GALLEY_BUNDLE": "{{{{ params.{bundle_param} }}}}",
                "GALLEY_EXPERIMENT_RUN": "{{{{ params.{run_param} }}}}",
                "GALLEY_FORCE_FROM": "{{{{ params.{force_param} }}}}",
                # A run Airflow's scheduler started carries no `trigger` parameter: it says `schedule`.
                "GALLEY_TRIGGER": "{{{{ params.{trigger_param} or ('schedule' if dag_run.run_type == 'scheduled' else '') }}}}",
            }},
            append_env=True,
            # Galley retries a step inside the task with the blueprint's policy, as on SageMaker.
            retries=0,
        )

    tasks = {{}}
{tasks}{edges}{drift}"#,
        name = py(&spec.name),
        galley = py(galley),
        doc = py(&doc(spec)),
        p_bundle = py(PARAM_BUNDLE),
        p_run = py(PARAM_EXPERIMENT_RUN),
        p_force = py(PARAM_FORCE_FROM),
        p_trigger = py(PARAM_TRIGGER),
        default_bundle = py(default_bundle),
        bundle_param = PARAM_BUNDLE,
        run_param = PARAM_EXPERIMENT_RUN,
        force_param = PARAM_FORCE_FROM,
        trigger_param = PARAM_TRIGGER,
    )
}

/// The drift-check DAG (see the module's documentation), appended to the pipeline's file.
fn drift_dag(spec: &PipelineSpec, prometheus_url: &str, monitor: &str) -> String {
    format!(
        r#"

# The drift trigger: the monitor's verdict published for Prometheus, Prometheus's alert answered
# with one retrain per drift episode.
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.providers.standard.sensors.python import PythonSensor

PROMETHEUS = {prometheus}


def new_drift_alert():
    import json
    import urllib.request

    from airflow.sdk import Variable
    from airflow.sdk.exceptions import AirflowSkipException

    with urllib.request.urlopen(PROMETHEUS + "/api/v1/alerts", timeout=30) as answer:
        alerts = json.load(answer)["data"]["alerts"]
    active = sorted(
        a["activeAt"]
        for a in alerts
        if a["state"] == "firing" and a["labels"].get("alertname") == {alert} and a["labels"].get("monitor") == {monitor}
    )
    if not active:
        return False
    if Variable.get({variable}, default=None) == active[-1]:
        raise AirflowSkipException("this drift alert has started its retrain already")
    Variable.set({variable}, active[-1])
    return True


with DAG(
    dag_id={drift_dag},
    schedule=CronTriggerTimetable({cron}, timezone="UTC", run_immediately=False),
    catchup=False,
    max_active_runs=1,
    is_paused_upon_creation=False,
    tags=["galley"],
    doc_md="Galley's drift check of pipeline `{plain}`: written by `galley apply` with it.",
    params={{{p_bundle}: DEFAULT_BUNDLE}},
) as drift_dag:
    check = BashOperator(
        task_id="check_drift",
        bash_command='exec "$GALLEY" container check-drift --bundle "$GALLEY_BUNDLE"',
        env={{"GALLEY": GALLEY, "GALLEY_BUNDLE": "{{{{ params.{bundle_param} }}}}"}},
        append_env=True,
        retries=0,
    )
    # Prometheus needs a scrape and a rule evaluation to see the verdict: the sensor waits for
    # them, and no alert within two minutes means no drift (skipped, not failed); an alert
    # that started a retrain before skips at once.
    alert = PythonSensor(task_id="drift_alert", python_callable=new_drift_alert, poke_interval=3, timeout=120, soft_fail=True)
    retrain = TriggerDagRunOperator(task_id="retrain", trigger_dag_id={name}, conf={{{p_trigger}: "drift", {p_force}: "train"}})
    check >> alert >> retrain
"#,
        prometheus = py(prometheus_url),
        alert = py(galley_server::prometheus::DRIFT_ALERT),
        monitor = py(monitor),
        variable = py(&drift_variable(&spec.name)),
        drift_dag = py(&drift_dag_id(&spec.name)),
        cron = py(DRIFT_CHECK_CRON),
        plain = spec.name,
        name = py(&spec.name),
        p_bundle = py(PARAM_BUNDLE),
        p_trigger = py(PARAM_TRIGGER),
        p_force = py(PARAM_FORCE_FROM),
        bundle_param = PARAM_BUNDLE,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use galley_core::stages::StepSpec;

    #[test]
    fn the_spec_survives_the_doc() {
        let spec = PipelineSpec {
            name: "churn-train".into(),
            steps: vec![StepSpec::new("extract", &[]), StepSpec::new("train", &["extract"])],
            schedule: Some("0 3 * * *".into()),
            triggers: vec![],
            monitor: None,
        };
        assert_eq!(spec_of(&doc(&spec)), Some(spec.clone()));
        let file = render(&spec, "/opt/galley", "file:///srv/b.json", Some("http://prom:9090"));
        assert!(!file.contains("drift-check"), "no drift trigger, no drift DAG: {file}");
        assert!(file.contains("tasks[\"extract\"] >> tasks[\"train\"]"), "{file}");
        assert!(file.contains("schedule=CronTriggerTimetable(\"0 3 * * *\", timezone=\"UTC\", run_immediately=False)"), "{file}");
        assert_eq!(file_name("churn-train"), "galley_churn_train.py");
    }
}
