//! Retraining triggers (`Orchestrator::watch_triggers`): a due schedule starts one run, new data
//! starts a run, drift starts one run per episode; each trigger fires only when asked for; a
//! platform whose triggers fire on its own side says so instead.
//!
//! The cases drive the watch with an explicit clock and probes they control, so a schedule is
//! checked across days without waiting, and what starts is seen through the launcher.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use galley_core::capability::Feature;
use galley_core::stages::{Launch, Orchestrator, PipelineSpec, Probes, StepSpec, TimestampMs, Trigger, TriggerWatch};
use galley_core::{ErrorKind, Result};

use crate::runner::{Case, Report, TestResult, run_cases};
use crate::support::{expect_kind, unique};
use crate::{case, ensure_eq};

type Orch = Arc<dyn Orchestrator>;

pub fn cases() -> Vec<Case<Orch>> {
    vec![
        case!(a_due_schedule_starts_one_run, needs = [Feature::Schedules]),
        case!(new_data_starts_a_run, needs = [Feature::NewDataTrigger]),
        case!(drift_starts_one_run_per_episode, needs = [Feature::DriftTrigger]),
        case!(watching_is_refused_where_triggers_fire_on_the_platform, needs = [], absent = [Feature::Schedules]),
    ]
}

pub async fn run_triggers(orchestrator: Orch) -> Report {
    let caps = orchestrator.capabilities();
    run_cases("triggers", orchestrator, &caps, cases()).await
}

/// 2026-01-05T00:00:00Z, a Monday.
const T0: TimestampMs = 1_767_571_200_000;
const MINUTE: TimestampMs = 60_000;
const HOUR: TimestampMs = 60 * MINUTE;
const DAY: TimestampMs = 24 * HOUR;

/// What the launcher saw.
#[derive(Clone, Default)]
struct Launched(Arc<Mutex<Vec<Trigger>>>);

impl Launched {
    fn launcher(&self) -> Launch {
        let seen = self.0.clone();
        Arc::new(move |t| {
            seen.lock().unwrap_or_else(|p| p.into_inner()).push(t);
            Box::pin(async { Ok(()) })
        })
    }
    fn get(&self) -> Vec<Trigger> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn spec(schedule: Option<&str>, triggers: Vec<Trigger>) -> PipelineSpec {
    PipelineSpec { name: unique("gtk-trig-"), steps: vec![StepSpec::new("train", &[])], schedule: schedule.map(str::to_owned), triggers }
}

/// Upserts `spec`, watches it, runs `body`, then deletes the pipeline whatever the outcome.
async fn watching<F: Future<Output = TestResult>>(
    o: Orch,
    spec: PipelineSpec,
    probes: Probes,
    body: impl FnOnce(Box<dyn TriggerWatch>, Launched) -> F,
) -> TestResult {
    o.upsert_pipeline(&spec).await?;
    let launched = Launched::default();
    let out = async {
        let watch = o.watch_triggers(&spec.name, probes, launched.launcher()).await?;
        body(watch, launched).await
    }
    .await;
    let _ = o.delete_pipeline(&spec.name).await;
    out
}

async fn fired(watch: &dyn TriggerWatch, at: TimestampMs) -> Result<Option<Trigger>> {
    Ok(watch.tick(at).await?.fired)
}

pub async fn a_due_schedule_starts_one_run(o: Orch) -> TestResult {
    watching(o, spec(Some("0 3 * * *"), vec![Trigger::Schedule]), Probes::default(), |w, launched| async move {
        ensure_eq!(fired(&*w, T0).await?, None, "at midnight, before 03:00");
        ensure_eq!(fired(&*w, T0 + 3 * HOUR - MINUTE).await?, None, "at 02:59");
        ensure_eq!(fired(&*w, T0 + 3 * HOUR + MINUTE / 2).await?, Some(Trigger::Schedule), "at 03:00:30");
        ensure_eq!(fired(&*w, T0 + 3 * HOUR + MINUTE).await?, None, "at 03:01, the day's run already started");
        ensure_eq!(fired(&*w, T0 + 12 * HOUR).await?, None, "at noon");
        ensure_eq!(fired(&*w, T0 + DAY + 3 * HOUR + MINUTE).await?, Some(Trigger::Schedule), "the next day at 03:01");
        ensure_eq!(launched.get(), vec![Trigger::Schedule, Trigger::Schedule], "runs launched over two days");
        let wake = w.next_wake(T0 + DAY + 4 * HOUR, std::time::Duration::from_secs(7 * 24 * 3600));
        ensure_eq!(wake, T0 + 2 * DAY + 3 * HOUR, "the next wake-up with a week's poll interval: the next 03:00");
        Ok(())
    })
    .await
}

pub async fn new_data_starts_a_run(o: Orch) -> TestResult {
    let hash = Arc::new(Mutex::new("sha-a".to_owned()));
    let probe = hash.clone();
    let probes = Probes {
        data: Some(Arc::new(move || {
            let h = probe.lock().unwrap_or_else(|p| p.into_inner()).clone();
            async move { Ok(h) }
        })),
        drift: None,
    };
    watching(o, spec(None, vec![Trigger::NewData]), probes, |w, launched| async move {
        ensure_eq!(fired(&*w, T0).await?, None, "the data present when watching starts is not new");
        ensure_eq!(fired(&*w, T0 + MINUTE).await?, None, "unchanged data");
        *hash.lock().unwrap_or_else(|p| p.into_inner()) = "sha-b".into();
        ensure_eq!(fired(&*w, T0 + 2 * MINUTE).await?, Some(Trigger::NewData), "after the data changed");
        ensure_eq!(fired(&*w, T0 + 3 * MINUTE).await?, None, "the same new data a minute later");
        ensure_eq!(launched.get(), vec![Trigger::NewData], "runs launched");
        Ok(())
    })
    .await
}

pub async fn drift_starts_one_run_per_episode(o: Orch) -> TestResult {
    let drifted = Arc::new(AtomicBool::new(false));
    let probe = drifted.clone();
    let probes = Probes {
        data: None,
        drift: Some(Arc::new(move || {
            let d = probe.load(Ordering::SeqCst);
            async move { Ok(d) }
        })),
    };
    watching(o, spec(None, vec![Trigger::Drift]), probes, |w, launched| async move {
        ensure_eq!(fired(&*w, T0).await?, None, "no drift");
        drifted.store(true, Ordering::SeqCst);
        ensure_eq!(fired(&*w, T0 + MINUTE).await?, Some(Trigger::Drift), "when the monitor reports drift");
        ensure_eq!(fired(&*w, T0 + 2 * MINUTE).await?, None, "the same drift episode a minute later");
        ensure_eq!(launched.get(), vec![Trigger::Drift], "runs launched");
        Ok(())
    })
    .await
}

pub async fn watching_is_refused_where_triggers_fire_on_the_platform(o: Orch) -> TestResult {
    let launched = Launched::default();
    let p = spec(None, vec![]);
    o.upsert_pipeline(&p).await?;
    let out = expect_kind(o.watch_triggers(&p.name, Probes::default(), launched.launcher()).await.map(|_| ()), ErrorKind::Unsupported, "watch_triggers");
    let _ = o.delete_pipeline(&p.name).await;
    out
}
