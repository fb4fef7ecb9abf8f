//! Triggers for `galley watch` (MLOps level 2: retraining without a human).
//!
//! Three sources start a pipeline: a five-field cron **schedule** (evaluated in UTC), **new
//! data** (a probe returns the source's content hash; a run starts when it differs from the
//! hash the last watcher-started run saw), and **drift** (a probe asks the monitor; a run
//! starts when drift is reported, at most once per cooldown so one drift episode causes one
//! retrain). A pipeline never runs twice at once: triggers that come due while a run is active
//! are coalesced into it (schedule and drift count as served; new data is kept pending and
//! fires after the run if the data changed meanwhile).
//!
//! The decision is the pure [`Watcher::decide`] over an explicit clock, persisted
//! [`WatchState`] and probe [`Observation`]s, so it is tested without waiting real time;
//! [`Watcher::tick`] is the thin I/O around it; `galley watch` loops over it through
//! [`TriggerWatch`].

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
pub use galley_core::stages::{DataProbe, DriftProbe, Launch, Probes, TickReport};
use galley_core::stages::{Orchestrator, PipelineSpec, TimestampMs, Trigger, TriggerWatch};
use galley_core::{Error, Result};
use serde::{Deserialize, Serialize};

use super::LocalOrchestrator;
use super::store::{read_json, write_json_atomic};

/// Parses a standard five-field cron expression (minute hour day-of-month month day-of-week);
/// day-of-month and day-of-week combine with OR, as in Vixie cron.
pub(crate) fn parse_schedule(expr: &str) -> Result<Cron> {
    let fields = expr.split_whitespace().count();
    // `@daily`, `@hourly`, ... are the usual shorthands for five-field expressions.
    if fields != 5 && !(fields == 1 && expr.trim_start().starts_with('@')) {
        return Err(Error::invalid(format!(
            "schedule `{expr}` has {fields} fields; use five (minute hour day-of-month month day-of-week), e.g. `0 3 * * *`"
        )));
    }
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(expr)
        .map_err(|e| {
            Error::invalid(format!(
                "schedule `{expr}` is not a valid cron expression: {e}"
            ))
        })
}

#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// How often the probes are asked. The schedule wakes the loop on time regardless.
    pub poll_interval: Duration,
    /// After a drift-triggered run, further drift reports are ignored for this long.
    pub drift_cooldown: Duration,
    /// Parameters of every run the watcher starts.
    pub params: BTreeMap<String, String>,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            poll_interval: Duration::from_secs(30),
            drift_cooldown: Duration::from_secs(6 * 3600),
            params: BTreeMap::new(),
        }
    }
}

/// What the watcher remembers between ticks and across restarts (`watch.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchState {
    /// When the schedule last fired, or when watching began; the next fire is the first cron
    /// time after it, so a restart neither double-fires nor forgets a missed time.
    pub schedule_anchor_ms: Option<i64>,
    /// Content hash of the data when the last watcher-started run began (or when watching
    /// began: data present at that point is not "new").
    pub data_hash: Option<String>,
    /// When drift last started (or was coalesced into) a run.
    pub last_drift_fire_ms: Option<i64>,
}

/// What the probes reported this tick. `None` means not configured or the probe failed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observation {
    pub data_hash: Option<String>,
    pub drift: Option<bool>,
    /// A pending or running run of the pipeline, if any.
    pub active_run: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Every trigger that is due now, most urgent first (drift, new data, schedule).
    pub due: Vec<Trigger>,
    /// The trigger to record on the run to start, if one starts.
    pub fire: Option<Trigger>,
    /// The active run the due triggers were coalesced into.
    pub coalesced_into: Option<String>,
    pub next_state: WatchState,
}

/// Watches one pipeline's triggers and starts its runs.
pub struct Watcher {
    orch: LocalOrchestrator,
    spec: PipelineSpec,
    cron: Option<Cron>,
    probes: Probes,
    opts: WatchOptions,
    launch: Option<Launch>,
}

impl Watcher {
    /// Watches `pipeline` as currently defined. Fails when the pipeline does not exist or
    /// retrains on `new_data`/`drift` without the matching probe.
    pub async fn new(
        orch: LocalOrchestrator,
        pipeline: &str,
        probes: Probes,
        opts: WatchOptions,
    ) -> Result<Self> {
        let spec = orch.describe_pipeline(pipeline).await?.ok_or_else(|| {
            Error::not_found(format!(
                "pipeline `{pipeline}` does not exist; `galley apply` creates it"
            ))
            .resource(pipeline)
        })?;
        let cron = spec.schedule.as_deref().map(parse_schedule).transpose()?;
        if spec.triggers.contains(&Trigger::NewData) && probes.data.is_none() {
            return Err(Error::invalid(format!(
                "pipeline `{pipeline}` retrains on new data but no data probe was given to the watcher"
            )));
        }
        if spec.triggers.contains(&Trigger::Drift) && probes.drift.is_none() {
            return Err(Error::invalid(format!(
                "pipeline `{pipeline}` retrains on drift but no drift probe was given to the watcher"
            )));
        }
        if opts.poll_interval.is_zero() {
            return Err(Error::invalid(
                "the watch poll interval must be greater than zero",
            ));
        }
        Ok(Watcher {
            orch,
            spec,
            cron,
            probes,
            opts,
            launch: None,
        })
    }

    /// Starts fired runs through `launch` instead of [`Orchestrator::start`].
    pub fn with_launcher(mut self, launch: Launch) -> Self {
        self.launch = Some(launch);
        self
    }

    pub fn pipeline(&self) -> &str {
        &self.spec.name
    }

    /// The triggers due at `now` (pure; see [`Watcher::decide`]).
    pub fn due_triggers(
        &self,
        now: DateTime<Utc>,
        state: &WatchState,
        obs: &Observation,
    ) -> Vec<Trigger> {
        self.decide(now, state, obs).due
    }

    /// Decides what to do at `now` and the state to remember afterwards. Pure: no clock, no
    /// I/O, so the rules are tested directly.
    pub fn decide(&self, now: DateTime<Utc>, state: &WatchState, obs: &Observation) -> Decision {
        let now_ms = now.timestamp_millis();
        let mut next = state.clone();
        let mut due = Vec::new();

        let drift_due = self.spec.triggers.contains(&Trigger::Drift)
            && obs.drift == Some(true)
            && state.last_drift_fire_ms.is_none_or(|t| {
                now_ms.saturating_sub(t)
                    >= i64::try_from(self.opts.drift_cooldown.as_millis()).unwrap_or(i64::MAX)
            });
        if drift_due {
            due.push(Trigger::Drift);
        }

        let data_due = self.spec.triggers.contains(&Trigger::NewData)
            && match (&state.data_hash, &obs.data_hash) {
                (Some(old), Some(new)) => old != new,
                _ => false,
            };
        if data_due {
            due.push(Trigger::NewData);
        }
        if state.data_hash.is_none() && self.spec.triggers.contains(&Trigger::NewData) {
            next.data_hash = obs.data_hash.clone(); // first sight: a baseline, not new data
        }

        let schedule_due = match (&self.cron, state.schedule_anchor_ms) {
            (Some(cron), Some(anchor)) => next_fire(cron, anchor).is_some_and(|t| t <= now),
            _ => false,
        };
        if schedule_due {
            due.push(Trigger::Schedule);
        }
        if self.cron.is_some() && (schedule_due || state.schedule_anchor_ms.is_none()) {
            // Anchoring at `now` (not at the missed time) means downtime that spanned several
            // scheduled times catches up with one run, not a burst.
            next.schedule_anchor_ms = Some(now_ms);
        }
        if drift_due {
            next.last_drift_fire_ms = Some(now_ms);
        }

        let mut fire = None;
        let mut coalesced_into = None;
        if !due.is_empty() {
            if let Some(active) = &obs.active_run {
                coalesced_into = Some(active.clone());
            } else {
                fire = due.first().copied();
                // The run reads the data as it is now, whatever triggered it.
                if obs.data_hash.is_some() {
                    next.data_hash = obs.data_hash.clone();
                }
            }
        }
        Decision {
            due,
            fire,
            coalesced_into,
            next_state: next,
        }
    }

    /// When the loop should look again: the next scheduled time or the poll interval,
    /// whichever is sooner.
    pub fn next_wake(&self, now: DateTime<Utc>, state: &WatchState) -> DateTime<Utc> {
        self.wake_within(now, state, self.opts.poll_interval)
    }

    fn wake_within(&self, now: DateTime<Utc>, state: &WatchState, poll: Duration) -> DateTime<Utc> {
        let poll = now + chrono::Duration::from_std(poll).unwrap_or(chrono::Duration::seconds(30));
        let scheduled = match (&self.cron, state.schedule_anchor_ms) {
            (Some(cron), Some(anchor)) => next_fire(cron, anchor),
            _ => None,
        };
        scheduled.map_or(poll, |t| t.clamp(now, poll))
    }

    pub fn load_state(&self) -> Result<WatchState> {
        Ok(read_json(&self.orch.store().watch_path(&self.spec.name))?.unwrap_or_default())
    }

    fn save_state(&self, state: &WatchState) -> Result<()> {
        write_json_atomic(&self.orch.store().watch_path(&self.spec.name), state)
    }

    /// Asks the probes and the orchestrator; probe failures are returned, not fatal.
    pub async fn observe(&self) -> Result<(Observation, Vec<String>)> {
        let mut errors = Vec::new();
        let mut obs = Observation::default();
        if self.spec.triggers.contains(&Trigger::NewData)
            && let Some(p) = &self.probes.data
        {
            match p.content_hash().await {
                Ok(h) => obs.data_hash = Some(h),
                Err(e) => errors.push(format!("data probe failed: {e}")),
            }
        }
        if self.spec.triggers.contains(&Trigger::Drift)
            && let Some(p) = &self.probes.drift
        {
            match p.drifted().await {
                Ok(d) => obs.drift = Some(d),
                Err(e) => errors.push(format!("drift probe failed: {e}")),
            }
        }
        obs.active_run = self.orch.active_run(&self.spec.name).await?;
        Ok((obs, errors))
    }

    /// One round at `now`: observe, decide, remember, start a run if one is due.
    pub async fn tick(&self, now: DateTime<Utc>) -> Result<TickReport> {
        let state = self.load_state()?;
        let (obs, probe_errors) = self.observe().await?;
        let decision = self.decide(now, &state, &obs);
        if decision.next_state != state {
            self.save_state(&decision.next_state)?;
        }
        let mut report = TickReport {
            due: decision.due.clone(),
            fired: None,
            run: None,
            coalesced_into: decision.coalesced_into.clone(),
            probe_errors,
        };
        if let Some(trigger) = decision.fire {
            // State is saved before the start so a crash cannot fire twice; if the start
            // fails, the old state comes back so the trigger is tried again next tick.
            report.fired = Some(trigger);
            if let Some(launch) = &self.launch {
                let run = launch(trigger);
                let pipeline = self.spec.name.clone();
                tokio::spawn(async move {
                    if let Err(e) = run.await {
                        tracing::warn!(%pipeline, ?trigger, error = %e, "the triggered run failed to launch");
                    }
                });
            } else {
                match self
                    .orch
                    .start(&self.spec.name, Some(trigger), &self.opts.params)
                    .await
                {
                    Ok(id) => report.run = Some(id),
                    Err(e) => {
                        let _ = self.save_state(&state);
                        return Err(e.operation("watch"));
                    }
                }
            }
        }
        Ok(report)
    }
}

/// The first scheduled time strictly after `anchor_ms`.
fn next_fire(cron: &Cron, anchor_ms: i64) -> Option<DateTime<Utc>> {
    let anchor = Utc.timestamp_millis_opt(anchor_ms).single()?;
    cron.find_next_occurrence(&anchor, false).ok()
}

#[async_trait]
impl TriggerWatch for Watcher {
    fn pipeline(&self) -> &str {
        &self.spec.name
    }

    async fn tick(&self, now_ms: TimestampMs) -> Result<TickReport> {
        let now = Utc.timestamp_millis_opt(now_ms).single().ok_or_else(|| Error::invalid(format!("{now_ms} is not a time")))?;
        Watcher::tick(self, now).await
    }

    fn next_wake(&self, now_ms: TimestampMs, poll: Duration) -> TimestampMs {
        let now = Utc.timestamp_millis_opt(now_ms).single().unwrap_or_else(Utc::now);
        let state = self.load_state().unwrap_or_default();
        self.wake_within(now, &state, poll).timestamp_millis()
    }
}
