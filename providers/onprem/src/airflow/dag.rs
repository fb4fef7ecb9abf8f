//! The DAG file Galley writes into Airflow's DAGs folder for a pipeline: one `BashOperator`
//! task per step, each running `galley container step NAME` (the step entrypoint SageMaker's
//! step containers run too) on whichever worker Airflow's executor picks. What a task needs
//! travels as the DAG run's parameters (`conf`): the run bundle `galley run` wrote to the
//! shared artifact store, the experiment run, the first step whose cache must not be reused,
//! and what started it. A run Airflow starts on its own (the schedule) takes the parameters'
//! defaults: the pipeline's current bundle.
//!
//! The pipeline's spec rides in the DAG's `doc_md`, so what Airflow parsed is what
//! [`spec_of`] reads back through Airflow's API.

use galley_core::stages::{PARAM_BUNDLE, PARAM_EXPERIMENT_RUN, PARAM_FORCE_FROM, PARAM_TRIGGER, PipelineSpec};

/// The file a pipeline's DAG lives in, inside the DAGs folder.
pub fn file_name(pipeline: &str) -> String {
    format!("galley_{}.py", pipeline.replace('-', "_"))
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
/// `default_bundle` is the `file://` URI of the pipeline's current run bundle.
pub fn render(spec: &PipelineSpec, galley: &str, default_bundle: &str) -> String {
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
    format!(
        r#"# Written by Galley for pipeline `{name}`; `galley apply` overwrites it and `galley destroy`
# removes it. Each task runs one lifecycle step as `galley container step NAME`.
from airflow.sdk import DAG
from airflow.providers.standard.operators.bash import BashOperator
from airflow.timetables.trigger import CronTriggerTimetable

GALLEY = {galley}

with DAG(
    dag_id={name},
    schedule={schedule},
    catchup=False,
    # One lifecycle run at a time, as `galley run` keeps on every platform.
    max_active_runs=1,
    is_paused_upon_creation=False,
    tags=["galley"],
    doc_md={doc},
    params={{{p_bundle}: {default_bundle}, {p_run}: "", {p_force}: "", {p_trigger}: ""}},
) as dag:

    def step(name):
        return BashOperator(
            task_id=name,
            # The parameters reach the command as variables, never spliced into the shell line.
            bash_command='exec "$GALLEY" container step "$GALLEY_STEP" --run "$GALLEY_RUN" --bundle "$GALLEY_BUNDLE" '
            '--experiment-run "$GALLEY_EXPERIMENT_RUN" --force-from "$GALLEY_FORCE_FROM"',
            env={{
                "GALLEY": GALLEY,
                "GALLEY_STEP": name,
                "GALLEY_RUN": "{{{{ dag_run.dag_id }}}}/{{{{ run_id }}}}",
                "GALLEY_BUNDLE": "{{{{ params.{bundle_param} }}}}",
                "GALLEY_EXPERIMENT_RUN": "{{{{ params.{run_param} }}}}",
                "GALLEY_FORCE_FROM": "{{{{ params.{force_param} }}}}",
            }},
            append_env=True,
            # Galley retries a step inside the task with the blueprint's policy, as on SageMaker.
            retries=0,
        )

    tasks = {{}}
{tasks}{edges}"#,
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
        let file = render(&spec, "/opt/galley", "file:///srv/b.json");
        assert!(file.contains("tasks[\"extract\"] >> tasks[\"train\"]"), "{file}");
        assert!(file.contains("schedule=CronTriggerTimetable(\"0 3 * * *\", timezone=\"UTC\", run_immediately=False)"), "{file}");
        assert_eq!(file_name("churn-train"), "galley_churn_train.py");
    }
}
