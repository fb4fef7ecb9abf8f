//! Retraining triggers (`Orchestrator::watch_triggers`): a due schedule starts one run, new data
//! starts a run, drift starts one run per episode; each trigger fires only when asked for; a
//! platform whose triggers fire on its own side says so instead.
//!
//! The cases drive the watch with an explicit clock and probes they control, so a schedule is
//! checked across days without waiting, and what starts is seen through the launcher.
//!
//! Where triggers fire on the platform (a cloud scheduler, an alarm), the test substrate gives
//! [`PlatformEvents`]: it lets the platform's clock pass and its monitor report drift, and the
//! platform fires what it holds as it would. What started is read back through the
//! orchestrator's own run history (`list_runs`, each run's trigger), so a schedule registered
//! for the wrong weekday or an alarm that never fires fails the case.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use galley_core::capability::Feature;
use async_trait::async_trait;
use galley_core::stages::{Launch, Orchestrator, PipelineSpec, Probes, StepSpec, TimestampMs, Trigger, TriggerWatch};
use galley_core::{ErrorKind, Result};

use crate::runner::{Case, Report, Skip, TestResult, run_cases};
use crate::support::{expect_kind, unique};
use crate::{case, ensure_eq};

type Orch = Arc<dyn Orchestrator>;

/// What makes a platform's own triggers fire, played by its test substrate: each call makes the
/// platform do what it does on that event, and returns once the runs it starts are listed.
#[async_trait]
pub trait PlatformEvents: Send + Sync + std::fmt::Debug {
    /// The platform's clock runs from `from` (exclusive) to `to` (inclusive): whatever the
    /// platform holds for `pipeline` fires at each due time on the way.
    async fn pass_time(&self, pipeline: &str, from: TimestampMs, to: TimestampMs) -> anyhow::Result<()>;
    /// `monitor` publishes its drift verdict as the platform's monitor does, and the platform
    /// evaluates whatever watches it.
    async fn drift_verdict(&self, monitor: &str, drifted: bool) -> anyhow::Result<()>;
}

#[derive(Clone)]
pub struct TriggersCtx {
    pub orchestrator: Orch,
    /// Given where triggers fire on the platform; `None` where `galley watch` fires them.
    pub events: Option<Arc<dyn PlatformEvents>>,
}

pub fn cases() -> Vec<Case<TriggersCtx>> {
    vec![
        case!(a_due_schedule_starts_one_run, needs = [Feature::Schedules]),
        case!(new_data_starts_a_run, needs = [Feature::NewDataTrigger]),
        case!(drift_starts_one_run_per_episode, needs = [Feature::DriftTrigger]),
        case!(the_platform_starts_a_due_schedule, needs = [Feature::Schedules]),
        case!(the_platform_retrains_once_per_drift_episode, needs = [Feature::DriftTrigger]),
        case!(watching_is_refused_where_triggers_fire_on_the_platform),
    ]
}

/// The triggers suite; `events` is the substrate's [`PlatformEvents`] where triggers fire on
/// the platform.
pub async fn run_triggers(orchestrator: Orch, events: Option<Arc<dyn PlatformEvents>>) -> Report {
    let caps = orchestrator.capabilities();
    run_cases("triggers", TriggersCtx { orchestrator, events }, &caps, cases()).await
}

/// The watch cases' orchestrator, where `galley watch` fires the triggers.
fn watched(ctx: TriggersCtx) -> anyhow::Result<Orch> {
    match ctx.events {
        None => Ok(ctx.orchestrator),
        Some(_) => Err(Skip("this platform fires its triggers itself; the `the_platform_*` cases check them".into()).into()),
    }
}

/// The platform-side cases' orchestrator and events.
fn on_the_platform(ctx: TriggersCtx) -> anyhow::Result<(Orch, Arc<dyn PlatformEvents>)> {
    match ctx.events {
        Some(events) => Ok((ctx.orchestrator, events)),
        None => Err(Skip("no PlatformEvents were given: this platform's triggers fire from `galley watch`, which the watch cases check".into()).into()),
    }
}

/// The triggers of `pipeline`'s runs, oldest first.
async fn run_triggers_of(o: &Orch, pipeline: &str) -> Result<Vec<Option<Trigger>>> {
    Ok(o.list_runs(pipeline).await?.into_iter().map(|r| r.trigger).collect())
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
    PipelineSpec { name: unique("gtk-trig-"), steps: vec![StepSpec::new("train", &[])], schedule: schedule.map(str::to_owned), triggers, monitor: None }
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

pub async fn a_due_schedule_starts_one_run(ctx: TriggersCtx) -> TestResult {
    let o = watched(ctx)?;
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

pub async fn new_data_starts_a_run(ctx: TriggersCtx) -> TestResult {
    let o = watched(ctx)?;
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

pub async fn drift_starts_one_run_per_episode(ctx: TriggersCtx) -> TestResult {
    let o = watched(ctx)?;
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

pub async fn watching_is_refused_where_triggers_fire_on_the_platform(ctx: TriggersCtx) -> TestResult {
    let o = ctx.orchestrator;
    let caps = o.capabilities();
    let watched_here = [Feature::Schedules, Feature::NewDataTrigger, Feature::DriftTrigger].iter().any(|f| caps.supports(*f));
    if ctx.events.is_none() && watched_here {
        return Err(Skip("this platform's triggers fire from `galley watch`".into()).into());
    }
    let launched = Launched::default();
    let p = spec(None, vec![]);
    o.upsert_pipeline(&p).await?;
    let out = expect_kind(o.watch_triggers(&p.name, Probes::default(), launched.launcher()).await.map(|_| ()), ErrorKind::Unsupported, "watch_triggers");
    let _ = o.delete_pipeline(&p.name).await;
    out
}

/// Upserts `spec`, runs `body`, then deletes the pipeline whatever the outcome.
async fn with_pipeline<F: Future<Output = TestResult>>(o: &Orch, spec: &PipelineSpec, body: F) -> TestResult {
    o.upsert_pipeline(spec).await?;
    let out = body.await;
    let _ = o.delete_pipeline(&spec.name).await;
    out
}

pub async fn the_platform_starts_a_due_schedule(ctx: TriggersCtx) -> TestResult {
    let (o, events) = on_the_platform(ctx)?;
    // Mondays at 03:30 UTC: a weekday is where cron dialects differ (0 or 1 for Sunday).
    let scheduled = spec(Some("30 3 * * 1"), vec![Trigger::Schedule]);
    let name = scheduled.name.clone();
    with_pipeline(&o, &scheduled, async {
        ensure_eq!(o.describe_pipeline(&name).await?, Some(scheduled.clone()), "the pipeline described with its schedule");
        let monday_0329 = T0 + 3 * HOUR + 29 * MINUTE;
        events.pass_time(&name, T0, monday_0329).await?;
        ensure_eq!(run_triggers_of(&o, &name).await?, vec![], "runs before Monday 03:30");
        events.pass_time(&name, monday_0329, monday_0329 + 2 * MINUTE).await?;
        ensure_eq!(run_triggers_of(&o, &name).await?, vec![Some(Trigger::Schedule)], "runs after Monday 03:30");
        events.pass_time(&name, monday_0329 + 2 * MINUTE, T0 + 7 * DAY).await?;
        ensure_eq!(run_triggers_of(&o, &name).await?, vec![Some(Trigger::Schedule)], "runs over the rest of the week");
        events.pass_time(&name, T0 + 7 * DAY, T0 + 7 * DAY + 4 * HOUR).await?;
        ensure_eq!(run_triggers_of(&o, &name).await?, vec![Some(Trigger::Schedule); 2], "runs after the next Monday 03:30");

        let unscheduled = PipelineSpec { schedule: None, triggers: vec![], ..scheduled.clone() };
        o.upsert_pipeline(&unscheduled).await?;
        ensure_eq!(o.describe_pipeline(&name).await?, Some(unscheduled), "the pipeline described after its schedule was dropped");
        events.pass_time(&name, T0 + 14 * DAY, T0 + 14 * DAY + 4 * HOUR).await?;
        ensure_eq!(run_triggers_of(&o, &name).await?, vec![Some(Trigger::Schedule); 2], "runs once the schedule was dropped");
        Ok(())
    })
    .await
}

pub async fn the_platform_retrains_once_per_drift_episode(ctx: TriggersCtx) -> TestResult {
    let (o, events) = on_the_platform(ctx)?;
    let monitor = unique("gtk-mon-");
    let watched = PipelineSpec { monitor: Some(monitor.clone()), ..spec(None, vec![Trigger::Drift]) };
    let name = watched.name.clone();
    with_pipeline(&o, &watched, async {
        ensure_eq!(o.describe_pipeline(&name).await?, Some(watched.clone()), "the pipeline described with its drift trigger");
        events.drift_verdict(&monitor, false).await?;
        ensure_eq!(run_triggers_of(&o, &name).await?, vec![], "runs while the monitor sees no drift");
        events.drift_verdict(&monitor, true).await?;
        ensure_eq!(run_triggers_of(&o, &name).await?, vec![Some(Trigger::Drift)], "runs once the monitor reports drift");
        events.drift_verdict(&monitor, true).await?;
        ensure_eq!(run_triggers_of(&o, &name).await?, vec![Some(Trigger::Drift)], "runs while the same drift goes on");
        events.drift_verdict(&monitor, false).await?;
        events.drift_verdict(&monitor, true).await?;
        ensure_eq!(run_triggers_of(&o, &name).await?, vec![Some(Trigger::Drift); 2], "runs after drift cleared and came back");

        let unwatched = PipelineSpec { monitor: None, triggers: vec![], ..watched.clone() };
        o.upsert_pipeline(&unwatched).await?;
        ensure_eq!(o.describe_pipeline(&name).await?, Some(unwatched), "the pipeline described after its drift trigger was dropped");
        events.drift_verdict(&monitor, false).await?;
        events.drift_verdict(&monitor, true).await?;
        ensure_eq!(run_triggers_of(&o, &name).await?, vec![Some(Trigger::Drift); 2], "runs once the drift trigger was dropped");
        Ok(())
    })
    .await
}
