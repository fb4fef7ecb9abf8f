//! Showing progress and results: lines and a bar for people, JSON lines for machines.

use std::io::IsTerminal;
use std::sync::Arc;

use galley_core::resource::ChangeKind;
use galley_engine::{ApplyEvent, EventSink};
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::Output;

pub fn verb(action: ChangeKind) -> &'static str {
    match action {
        ChangeKind::Create => "creating",
        ChangeKind::Update => "updating",
        ChangeKind::Replace => "replacing",
        ChangeKind::Delete => "destroying",
        ChangeKind::NoOp => "checking",
    }
}

fn done(action: ChangeKind) -> &'static str {
    match action {
        ChangeKind::Create => "created",
        ChangeKind::Update => "updated",
        ChangeKind::Replace => "replaced",
        ChangeKind::Delete => "destroyed",
        ChangeKind::NoOp => "unchanged",
    }
}

/// A sink that renders engine events: a line per resource (and a bar on a terminal), or one
/// JSON object per line with `--output json`.
pub fn progress(output: Output, total: usize, color: bool) -> (EventSink, Option<ProgressBar>) {
    match output {
        Output::Json => (
            Arc::new(|e: ApplyEvent| {
                if let Ok(line) = serde_json::to_string(&e) {
                    println!("{line}");
                }
            }),
            None,
        ),
        Output::Human => {
            let bar = (std::io::stderr().is_terminal() && color && total > 0).then(|| {
                let b = ProgressBar::new(total as u64);
                b.set_style(
                    ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} {wide_msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                );
                b
            });
            let b = bar.clone();
            let print = move |line: String| match &b {
                Some(b) => b.println(line),
                None => eprintln!("{line}"),
            };
            let b2 = bar.clone();
            let sink: EventSink = Arc::new(move |e: ApplyEvent| match e {
                ApplyEvent::Started { address, action } => {
                    if let Some(b) = &b2 {
                        b.set_message(format!("{} {address}", verb(action)));
                    } else {
                        print(format!("{address}: {}…", verb(action)));
                    }
                }
                ApplyEvent::Retrying { address, attempt, error } => {
                    print(format!("{address}: retrying (attempt {attempt}) after: {error}"))
                }
                ApplyEvent::Finished { address, action, duration } => {
                    print(format!("{address}: {} in {:.1}s", done(action), duration.as_secs_f64()));
                    if let Some(b) = &b2 {
                        b.inc(1);
                    }
                }
                ApplyEvent::Failed { address, error } => {
                    print(format!("{address}: FAILED: {error}"));
                    if let Some(b) = &b2 {
                        b.inc(1);
                    }
                }
                ApplyEvent::Skipped { address, because } => {
                    print(format!("{address}: skipped because {because} failed"));
                    if let Some(b) = &b2 {
                        b.inc(1);
                    }
                }
            });
            (sink, bar)
        }
    }
}

pub fn print_json(value: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string()));
}
