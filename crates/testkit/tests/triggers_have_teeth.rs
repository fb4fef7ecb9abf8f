//! Checks the platform-side trigger cases themselves: an in-memory "platform" that fires its
//! schedule and its drift alarm as a cloud would passes them, and one that makes either of the
//! classic mistakes fails the case that guards it: a weekday read in the other cron dialect
//! (Quartz numbers Sunday 1, classic cron 0), and an alarm that starts a run on every drifted
//! verdict instead of once per episode. These doubles test the suite, they are not platforms.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use galley_core::capability::{Capabilities, Feature};
use galley_core::stages::{Described, Orchestrator, PipelineRun, PipelineSpec, RunState, TimestampMs, Trigger};
use galley_core::{Error, PlatformId, Result};
use galley_testkit::PlatformEvents;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Flaw {
    None,
    /// Reads the schedule's weekday as Quartz does (1 = Sunday) though it is classic cron.
    QuartzWeekdays,
    /// Starts a run on every drifted verdict, not on the change to drift.
    EveryDriftedVerdict,
}

#[derive(Debug)]
struct Cloud {
    flaw: Flaw,
    pipelines: Mutex<HashMap<String, PipelineSpec>>,
    runs: Mutex<Vec<PipelineRun>>,
    /// The alarm state per monitor.
    drifted: Mutex<HashMap<String, bool>>,
}

impl Cloud {
    fn new(flaw: Flaw) -> Arc<Cloud> {
        Arc::new(Cloud { flaw, pipelines: Mutex::default(), runs: Mutex::default(), drifted: Mutex::default() })
    }

    fn start_run(&self, pipeline: &str, trigger: Trigger) {
        let mut runs = self.runs.lock().unwrap();
        let n = runs.len() as TimestampMs;
        runs.push(PipelineRun {
            id: format!("run-{n}"),
            pipeline: pipeline.to_owned(),
            state: RunState::Succeeded,
            trigger: Some(trigger),
            started_ms: n,
            ended_ms: Some(n),
            steps: Vec::new(),
            params: BTreeMap::new(),
        });
    }
}

impl Described for Cloud {
    fn capabilities(&self) -> Capabilities {
        Capabilities::new(PlatformId::from_static("cloud-double"), &[Feature::Schedules, Feature::DriftTrigger])
    }
}

#[async_trait]
impl Orchestrator for Cloud {
    async fn upsert_pipeline(&self, spec: &PipelineSpec) -> Result<()> {
        self.pipelines.lock().unwrap().insert(spec.name.clone(), spec.clone());
        Ok(())
    }
    async fn describe_pipeline(&self, name: &str) -> Result<Option<PipelineSpec>> {
        Ok(self.pipelines.lock().unwrap().get(name).cloned())
    }
    async fn delete_pipeline(&self, name: &str) -> Result<()> {
        self.pipelines.lock().unwrap().remove(name);
        Ok(())
    }
    async fn start(&self, pipeline: &str, trigger: Option<Trigger>, _: &BTreeMap<String, String>) -> Result<String> {
        self.start_run(pipeline, trigger.unwrap_or(Trigger::Schedule));
        Ok(format!("run-{}", self.runs.lock().unwrap().len() - 1))
    }
    async fn status(&self, run: &str) -> Result<PipelineRun> {
        self.runs.lock().unwrap().iter().find(|r| r.id == run).cloned().ok_or_else(|| Error::not_found(run.to_owned()))
    }
    async fn list_runs(&self, pipeline: &str) -> Result<Vec<PipelineRun>> {
        Ok(self.runs.lock().unwrap().iter().filter(|r| r.pipeline == pipeline).cloned().collect())
    }
    async fn logs(&self, _: &str, _: Option<&str>) -> Result<String> {
        Ok(String::new())
    }
    async fn cancel(&self, _: &str) -> Result<()> {
        Ok(())
    }
}

#[derive(Debug)]
struct Events(Arc<Cloud>);

#[async_trait]
impl PlatformEvents for Events {
    async fn pass_time(&self, pipeline: &str, from: TimestampMs, to: TimestampMs) -> anyhow::Result<()> {
        let Some(cron) = self.0.pipelines.lock().unwrap().get(pipeline).and_then(|p| p.schedule.clone()) else { return Ok(()) };
        let alternative = self.0.flaw == Flaw::QuartzWeekdays;
        let parser = croner::parser::CronParser::builder().seconds(croner::parser::Seconds::Disallowed).alternative_weekdays(alternative).build();
        let cron = parser.parse(&cron)?;
        let mut at = chrono::DateTime::from_timestamp_millis(from).unwrap();
        while let Ok(next) = cron.find_next_occurrence(&at, false) {
            if next.timestamp_millis() > to {
                break;
            }
            self.0.start_run(pipeline, Trigger::Schedule);
            at = next;
        }
        Ok(())
    }

    async fn drift_verdict(&self, monitor: &str, drifted: bool) -> anyhow::Result<()> {
        let was = self.0.drifted.lock().unwrap().insert(monitor.to_owned(), drifted).unwrap_or(false);
        let fires = drifted && (!was || self.0.flaw == Flaw::EveryDriftedVerdict);
        let watching: Vec<String> = self
            .0
            .pipelines
            .lock()
            .unwrap()
            .values()
            .filter(|p| p.monitor.as_deref() == Some(monitor) && p.triggers.contains(&Trigger::Drift))
            .map(|p| p.name.clone())
            .collect();
        for p in watching.iter().filter(|_| fires) {
            self.0.start_run(p, Trigger::Drift);
        }
        Ok(())
    }
}

async fn run(flaw: Flaw) -> galley_testkit::Report {
    let cloud = Cloud::new(flaw);
    galley_testkit::run_triggers(cloud.clone(), Some(Arc::new(Events(cloud)))).await
}

fn failed(r: &galley_testkit::Report) -> Vec<&str> {
    r.failed.iter().map(|(n, _)| n.as_str()).collect()
}

#[tokio::test]
async fn a_faithful_cloud_passes_the_platform_trigger_cases() {
    let r = run(Flaw::None).await;
    r.assert_ok();
    for case in ["triggers::the_platform_starts_a_due_schedule", "triggers::the_platform_retrains_once_per_drift_episode"] {
        assert!(r.passed.iter().any(|p| p == case), "{case} did not run: {}", r.summary());
    }
}

#[tokio::test]
async fn each_classic_mistake_fails_its_own_case() {
    let r = run(Flaw::QuartzWeekdays).await;
    assert_eq!(failed(&r), ["triggers::the_platform_starts_a_due_schedule"], "{}", r.summary());
    let r = run(Flaw::EveryDriftedVerdict).await;
    assert_eq!(failed(&r), ["triggers::the_platform_retrains_once_per_drift_episode"], "{}", r.summary());
}
