//! Records scored requests for the monitor without slowing the hot path: handlers `try_send`
//! to a bounded channel and a background thread batches the lines into `inferences.jsonl`.
//! When the writer falls behind, records are dropped and counted, never waited for.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use galley_core::stages::now_ms;
use galley_core::table::Value;
use serde::Serialize;

use crate::capture::{INFERENCES_FILE, InferenceLineRef, append_lines, encode_line};
use crate::metrics::Metrics;

/// Batches waiting to be written; past this, records are dropped.
const CAPACITY: usize = 4096;
/// Lines written per `write` call at most.
const MAX_BATCH: usize = 256;
/// How long the writer waits after the first record of a batch for more to arrive.
const COALESCE: Duration = Duration::from_millis(5);

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
    tx: SyncSender<Entry>,
    stop: Arc<AtomicBool>,
    /// Taken once by `shutdown`; never touched on the scoring path.
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Recorder {
    /// Starts the writer thread appending to `dir/inferences.jsonl`.
    pub fn start(dir: &Path) -> std::io::Result<Recorder> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(INFERENCES_FILE);
        let (tx, rx) = sync_channel(CAPACITY);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let writer = std::thread::Builder::new()
            .name("inference-recorder".into())
            .spawn(move || write_loop(rx, path, flag))?;
        Ok(Recorder {
            tx,
            stop,
            writer: Mutex::new(Some(writer)),
        })
    }

    /// Queues one entry; never blocks.
    #[inline]
    pub fn record(&self, entry: Entry, metrics: &Metrics) {
        match self.tx.try_send(entry) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                metrics.records_dropped.fetch_add(1, Relaxed);
            }
        }
    }

    /// Writes what is queued, then stops the writer; later records are dropped.
    pub fn shutdown(&self) {
        self.stop.store(true, SeqCst);
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(w) = writer {
            let _ = w.join();
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn write_loop(rx: Receiver<Entry>, path: PathBuf, stop: Arc<AtomicBool>) {
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut backlog = false;
    loop {
        let first = match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(entry) => entry,
            // Stop only once the queue is empty, so a shutdown loses nothing queued.
            Err(RecvTimeoutError::Timeout) if stop.load(SeqCst) => return,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        // Unless a backlog is already waiting, let a batch gather before draining: waking
        // this thread (and opening the file) once per request costs the scoring workers a
        // futex wake each and, under load, about a quarter of the CPU. Records reach the file
        // at most this much later.
        if !backlog {
            std::thread::sleep(COALESCE);
        }
        buf.clear();
        encode(&mut buf, &first);
        let mut lines = 1;
        for entry in rx.try_iter().take(MAX_BATCH - 1) {
            encode(&mut buf, &entry);
            lines += 1;
        }
        backlog = lines == MAX_BATCH;
        if let Err(e) = append_lines(&path, &buf) {
            eprintln!(
                "galley endpoint: cannot record inferences to {}: {e}",
                path.display()
            );
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
