//! Carrying out a plan's changes: a dependency-ordered walk with a global and a per-platform
//! concurrency limit, retries, and the journal (intent recorded before every handler call,
//! result recorded after).

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use galley_core::resource::{Address, ChangeKind, Observed, OwnerTag, ResourceHandler, ResourceSpec};
use galley_core::{Error, PlatformId, Result};
use tokio::sync::Semaphore;

use crate::engine::{ApplyEvent, ApplyReport, Engine, EventSink, Journal};
use crate::graph::resolve_refs;
use crate::plan::ResourceChange;
use crate::state::{PendingEntry, PendingOp, spec_hash};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Status {
    Waiting,
    Running,
    Done,
    Failed,
    Skipped,
}

pub(crate) async fn execute(engine: &Engine, journal: &Journal<'_>, changes: &[ResourceChange], events: EventSink) -> ApplyReport {
    let mut report = ApplyReport::default();
    let n = changes.len();
    let index: HashMap<&str, usize> = changes.iter().enumerate().map(|(i, c)| (c.address.as_str(), i)).collect();
    // Edges: `waits[i]` counts unfinished prerequisites of i, `unblocks[j]` the changes j gates.
    let mut waits = vec![0usize; n];
    let mut unblocks: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, c) in changes.iter().enumerate() {
        let prerequisites: Vec<usize> = if c.action == ChangeKind::Delete {
            c.dependents.iter().filter_map(|a| index.get(a.as_str()).copied()).collect()
        } else {
            c.depends_on
                .iter()
                .filter_map(|a| index.get(a.as_str()).copied())
                .filter(|&j| changes[j].action != ChangeKind::Delete)
                .collect()
        };
        for j in prerequisites {
            waits[i] += 1;
            unblocks[j].push(i);
        }
    }

    let global = Semaphore::new(engine.opts.parallelism.max(1));
    let per_platform: HashMap<PlatformId, Semaphore> = changes
        .iter()
        .map(|c| (c.platform, Semaphore::new(engine.opts.per_platform.max(1))))
        .collect();
    let lineage = journal.read(|s| s.lineage.clone());
    let mut status = vec![Status::Waiting; n];
    let mut ready: VecDeque<usize> = (0..n).filter(|&i| waits[i] == 0).collect();
    let mut running = FuturesUnordered::new();

    loop {
        while let Some(i) = ready.pop_front() {
            if status[i] != Status::Waiting {
                continue;
            }
            status[i] = Status::Running;
            let c = &changes[i];
            let (global, platform, events, lineage) = (&global, &per_platform[&c.platform], events.clone(), &lineage);
            running.push(async move {
                // Platform first: a task queued behind a busy platform must not hold a global
                // slot another platform could use.
                let _p = platform.acquire().await;
                let _g = global.acquire().await;
                events(ApplyEvent::Started { address: c.address.clone(), action: c.action });
                let started = Instant::now();
                let result = run_change(engine, journal, c, lineage, &events).await;
                match &result {
                    Ok(()) => events(ApplyEvent::Finished {
                        address: c.address.clone(),
                        action: c.action,
                        duration: started.elapsed(),
                    }),
                    Err(e) => events(ApplyEvent::Failed { address: c.address.clone(), error: e.to_string() }),
                }
                (i, result)
            });
        }
        let Some((i, result)) = running.next().await else { break };
        let c = &changes[i];
        match result {
            Ok(()) => {
                status[i] = Status::Done;
                let list = match c.action {
                    ChangeKind::Create => &mut report.created,
                    ChangeKind::Update => &mut report.updated,
                    ChangeKind::Replace => &mut report.replaced,
                    ChangeKind::Delete => &mut report.deleted,
                    ChangeKind::NoOp => continue,
                };
                list.push(c.address.clone());
                for &j in &unblocks[i] {
                    waits[j] -= 1;
                    if waits[j] == 0 {
                        ready.push_back(j);
                    }
                }
            }
            Err(e) => {
                status[i] = Status::Failed;
                report.failed.push((c.address.clone(), e.to_string()));
                // Everything downstream is skipped; the rest of the graph carries on.
                let mut stack = unblocks[i].clone();
                while let Some(j) = stack.pop() {
                    if status[j] == Status::Waiting {
                        status[j] = Status::Skipped;
                        report.skipped.push(changes[j].address.clone());
                        events(ApplyEvent::Skipped { address: changes[j].address.clone(), because: c.address.clone() });
                        stack.extend(unblocks[j].iter().copied());
                    }
                }
            }
        }
    }
    report
}

async fn run_change(
    engine: &Engine,
    journal: &Journal<'_>,
    c: &ResourceChange,
    lineage: &str,
    events: &EventSink,
) -> Result<()> {
    let ctx = |e: Error| e.resource(c.address.clone()).platform(c.platform).stage(c.stage);
    let handler = engine.handler(&c.kind, c.platform).map_err(ctx)?;
    let desired = || {
        c.spec.clone().ok_or_else(|| Error::internal(format!("plan change for `{}` carries no spec", c.address)))
    };
    match c.action {
        ChangeKind::NoOp => Ok(()),
        ChangeKind::Create => create(engine, journal, &*handler, desired()?, lineage, events).await.map_err(ctx),
        ChangeKind::Update => update(engine, journal, &*handler, desired()?, !c.diffs.is_empty(), events).await.map_err(ctx),
        ChangeKind::Replace => {
            delete(engine, journal, &c.address, events).await.map_err(ctx)?;
            create(engine, journal, &*handler, desired()?, lineage, events).await.map_err(ctx)
        }
        ChangeKind::Delete => delete(engine, journal, &c.address, events).await.map_err(ctx),
    }
}

fn on_retry<'a>(events: &'a EventSink, address: &'a str) -> impl FnMut(u32, &Error) + 'a {
    move |attempt, e| {
        events(ApplyEvent::Retrying { address: address.to_string(), attempt, error: e.to_string() })
    }
}

fn resolve(journal: &Journal<'_>, mut spec: ResourceSpec) -> Result<ResourceSpec> {
    if crate::graph::find_refs(&spec.desired)?.is_empty() {
        return Ok(spec);
    }
    let outputs = journal.read(|s| s.stage_outputs());
    resolve_refs(&mut spec.desired, &outputs)?;
    Ok(spec)
}

fn pending(op: PendingOp, spec: &ResourceSpec) -> PendingEntry {
    PendingEntry { operation: op, spec: spec.clone(), started_at: chrono::Utc::now().to_rfc3339() }
}

async fn create(
    engine: &Engine,
    journal: &Journal<'_>,
    handler: &dyn ResourceHandler,
    spec: ResourceSpec,
    lineage: &str,
    events: &EventSink,
) -> Result<()> {
    let spec = resolve(journal, spec)?;
    let hash = spec_hash(&spec);
    let address = spec.address.clone();
    // The intent goes to disk before the call: if we die during it, the next run reads what
    // exists under the deterministic name and adopts it instead of creating a twin.
    journal.update(|s| s.pending.insert(address.clone(), pending(PendingOp::Create, &spec))).await?;
    let owner = OwnerTag { blueprint: engine.graph.blueprint().to_string(), address: address.clone(), lineage: lineage.to_string() };
    let result = engine.opts.retry.run(|| handler.create(&spec, &owner), on_retry(events, &address)).await;
    match result {
        Ok(observed) => completed(journal, &spec, observed, hash).await,
        Err(e) => {
            // A failed create may still have left something behind; state records exactly
            // what exists. If even the read fails, the pending entry stays for the next run.
            let Ok(left) = handler.read(&spec).await else { return Err(e) };
            journal.update(|s| {
                s.pending.remove(&address);
                if let Some(observed) = left {
                    s.record(&spec, observed, String::new());
                }
            })
            .await?;
            Err(e)
        }
    }
}

/// A create or update went through: the journal entry is closed and the result recorded, in
/// one save.
async fn completed(journal: &Journal<'_>, spec: &ResourceSpec, observed: Observed, hash: String) -> Result<()> {
    journal
        .update(|s| {
            s.pending.remove(&spec.address);
            s.record(spec, observed, hash);
        })
        .await
}

async fn update(
    engine: &Engine,
    journal: &Journal<'_>,
    handler: &dyn ResourceHandler,
    spec: ResourceSpec,
    planned_diffs: bool,
    events: &EventSink,
) -> Result<()> {
    let spec = resolve(journal, spec)?;
    let hash = spec_hash(&spec);
    let address = spec.address.clone();
    let current = journal
        .read(|s| s.resources.get(&address).map(|r| r.observed()))
        .ok_or_else(|| Error::not_found(format!("`{address}` is not in state any more; run `galley plan` again")))?;
    // The plan's diffs are against reality when it refreshed: a change made outside Galley
    // (state still records the old attributes) must be undone, as the plan showed.
    if !planned_diffs && crate::diff::desired_vs_actual(&spec.desired, &current.attributes).is_empty() {
        // Nothing for the platform to do (e.g. only protection changed): record it.
        return journal.update(|s| s.record(&spec, current, hash)).await;
    }
    journal.update(|s| s.pending.insert(address.clone(), pending(PendingOp::Update, &spec))).await?;
    let result = engine.opts.retry.run(|| handler.update(&spec, &current), on_retry(events, &address)).await;
    match result {
        Ok(observed) => completed(journal, &spec, observed, hash).await,
        Err(e) => {
            journal.update(|s| s.pending.remove(&address)).await?;
            Err(e)
        }
    }
}

/// Deletes what state records at `address`, with the handler of the kind state records (a
/// replacement may change the kind).
async fn delete(engine: &Engine, journal: &Journal<'_>, address: &Address, events: &EventSink) -> Result<()> {
    let Some((spec, current)) = journal.read(|s| s.resources.get(address).map(|r| (r.to_spec(address), r.observed())))
    else {
        return Ok(());
    };
    let handler = engine.handler(&spec.kind, spec.platform)?;
    journal.update(|s| s.pending.insert(address.clone(), pending(PendingOp::Delete, &spec))).await?;
    let result = engine.opts.retry.run(|| handler.delete(&spec, &current), on_retry(events, address)).await;
    journal.update(|s| {
        s.pending.remove(address);
        if result.is_ok() {
            s.resources.remove(address);
        }
    })
    .await?;
    result
}

