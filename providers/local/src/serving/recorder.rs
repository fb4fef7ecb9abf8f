//! Records scored requests for the monitor without slowing the hot path: handlers `try_send`
//! to a bounded channel and a background thread batches the lines into `inferences.jsonl`.
//! When the writer falls behind, records are dropped and counted, never waited for.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::Arc;
use std::thread::JoinHandle;

use galley_core::stages::now_ms;
use galley_core::table::Value;
use serde::Serialize;

use super::metrics::Metrics;
use crate::monitor::{INFERENCES_FILE, InferenceLineRef, append_lines, encode_line};

/// Batches waiting to be written; past this, records are dropped.
const CAPACITY: usize = 4096;
/// Lines written per `write` call at most.
const MAX_BATCH: usize = 256;

#[derive(Serialize)]
#[serde(untagged)]
pub enum Rows {
    Numeric(Vec<Vec<f64>>),
    Values(Vec<Vec<Value>>),
}

pub struct Entry {
    pub variant: Arc<str>,
    pub columns: Arc<[String]>,
    pub rows: Rows,
    pub predictions: Vec<f64>,
}

pub struct Recorder {
    tx: Option<SyncSender<Entry>>,
    writer: Option<JoinHandle<()>>,
}

impl Recorder {
    /// Starts the writer thread appending to `dir/inferences.jsonl`.
    pub fn start(dir: &Path) -> std::io::Result<Recorder> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(INFERENCES_FILE);
        let (tx, rx) = sync_channel(CAPACITY);
        let writer = std::thread::Builder::new().name("inference-recorder".into()).spawn(move || write_loop(rx, path))?;
        Ok(Recorder { tx: Some(tx), writer: Some(writer) })
    }

    /// Queues one entry; never blocks.
    #[inline]
    pub fn record(&self, entry: Entry, metrics: &Metrics) {
        if let Some(tx) = &self.tx {
            match tx.try_send(entry) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    metrics.records_dropped.fetch_add(1, Relaxed);
                }
            }
        }
    }

    /// Closes the channel and waits for the writer to flush what it holds.
    pub fn shutdown(&mut self) {
        self.tx.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn write_loop(rx: Receiver<Entry>, path: PathBuf) {
    let mut buf = Vec::with_capacity(64 * 1024);
    while let Ok(first) = rx.recv() {
        buf.clear();
        encode(&mut buf, &first);
        for entry in rx.try_iter().take(MAX_BATCH - 1) {
            encode(&mut buf, &entry);
        }
        if let Err(e) = append_lines(&path, &buf) {
            eprintln!("galley endpoint: cannot record inferences to {}: {e}", path.display());
        }
    }
}

fn encode(buf: &mut Vec<u8>, e: &Entry) {
    encode_line(
        buf,
        &InferenceLineRef {
            ts_ms: now_ms(),
            variant: Some(&e.variant),
            columns: &e.columns,
            rows: &e.rows,
            predictions: &e.predictions,
        },
    );
}
