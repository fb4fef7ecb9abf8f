//! `galley watch`: MLOps level 2. Watches the pipeline's triggers — its cron schedule, new data
//! (the source's content hash changed), drift (the monitor says so) — and runs the lifecycle
//! when one fires. The trigger logic is the pipeline platform's
//! (`Orchestrator::watch_triggers`); this file wires the lifecycle into it as the data probe,
//! the drift probe and the launcher.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use galley_core::stages::{Probes, Trigger, now_ms};
use galley_engine::EngineOptions;

use crate::app::App;
use crate::cli::BlueprintArgs;
use crate::commands::{Ctx, report_run, sample_prediction};
use crate::error::CliError;

pub async fn watch(
    ctx: &Ctx,
    args: &BlueprintArgs,
    interval: Duration,
    max_runs: Option<usize>,
    timeout: Option<Duration>,
) -> Result<ExitCode, CliError> {
    let app = App::load(args)?;
    let bp = &app.loaded.blueprint;
    let engine = app.engine(EngineOptions::default())?;
    app.require_applied(&engine)?;
    let stages = app.stages(&engine).await?;
    let lifecycle = app.lifecycle(stages.clone())?;

    let mut probes = Probes::default();
    let lc = lifecycle.clone();
    probes.data = Some(Arc::new(move || {
        let lc = lc.clone();
        async move { lc.source_hash().await }
    }));
    if bp.stages.monitoring.is_some() {
        let lc = lifecycle.clone();
        probes.drift = Some(Arc::new(move || {
            let lc = lc.clone();
            async move { Ok(lc.check_drift().await?.is_some_and(|r| r.drifted)) }
        }));
    }

    let runs = Arc::new(AtomicUsize::new(0));
    // The exit code of the last run: a CI job running `watch --max-runs 1` branches on it.
    let last_code = Arc::new(std::sync::atomic::AtomicU8::new(0));
    let done = Arc::new(tokio::sync::Notify::new());
    let output = ctx.output;
    let color = ctx.color;
    let launch = {
        let (lifecycle, stages, runs, done, last_code) = (lifecycle.clone(), stages.clone(), runs.clone(), done.clone(), last_code.clone());
        Arc::new(move |trigger: Trigger| {
            let (lifecycle, stages, runs, done, last_code) = (lifecycle.clone(), stages.clone(), runs.clone(), done.clone(), last_code.clone());
            Box::pin(async move {
                eprintln!("trigger `{}` fired: running the lifecycle", format!("{trigger:?}").to_lowercase());
                let outcome = match lifecycle.run(Some(trigger), false).await {
                    Ok(summary) => {
                        let sample = sample_prediction(&lifecycle, &stages, &summary).await;
                        let code = match summary.state {
                            galley_core::stages::RunState::Succeeded if summary.gate.as_ref().is_some_and(|g| !g.passed) => crate::commands::EXIT_GATE_REJECTED,
                            galley_core::stages::RunState::Succeeded => 0,
                            _ => 1,
                        };
                        let _ = report_run(&Ctx { output, color }, &summary, sample);
                        last_code.store(code, Ordering::SeqCst);
                        Ok(())
                    }
                    Err(e) => {
                        eprintln!("lifecycle run failed: {e}");
                        last_code.store(1, Ordering::SeqCst);
                        Err(e)
                    }
                };
                // Counted only once reported, so `--max-runs` never cuts a report short.
                runs.fetch_add(1, Ordering::SeqCst);
                done.notify_one();
                outcome
            }) as futures::future::BoxFuture<'static, galley_core::Result<()>>
        })
    };
    let watcher = stages.orchestrator.watch_triggers(&galley_lifecycle::pipeline_name(bp), probes, launch).await?;
    eprintln!(
        "watching pipeline `{}` (triggers: {:?}); checking every {}s",
        watcher.pipeline(),
        galley_lifecycle::pipeline_spec(bp).triggers,
        interval.as_secs_f64()
    );

    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    loop {
        // One failed tick (a store briefly unavailable) does not end a long-lived watcher.
        match watcher.tick(now_ms()).await {
            Ok(report) => {
                for e in &report.probe_errors {
                    eprintln!("probe failed: {e}");
                }
            }
            Err(e) => eprintln!("watch: this check failed, trying again in {}s: {e}", interval.as_secs_f64()),
        }
        if max_runs.is_some_and(|m| runs.load(Ordering::SeqCst) >= m) {
            break;
        }
        // Sleep until the schedule's next time, or one poll interval, whichever comes first.
        let wake_ms = watcher.next_wake(now_ms(), interval);
        let sleep = tokio::time::sleep(std::time::Duration::from_millis(wake_ms.saturating_sub(now_ms()).max(200) as u64));
        tokio::select! {
            _ = sleep => {}
            _ = done.notified() => {}
            _ = tokio::signal::ctrl_c() => break,
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => break,
        }
        if max_runs.is_some_and(|m| runs.load(Ordering::SeqCst) >= m) {
            break;
        }
    }
    Ok(ExitCode::from(last_code.load(Ordering::SeqCst)))
}
