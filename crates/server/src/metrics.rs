//! The server's Prometheus metrics: plain atomics on the hot path, text rendered on scrape.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Status codes counted individually; anything else lands in `other`.
const STATUSES: [u16; 10] = [200, 400, 401, 403, 404, 405, 413, 415, 500, 503];
/// Latency histogram bucket bounds in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The label used for requests that never reached a variant (bad input, auth, limits).
pub const NO_VARIANT: &str = "none";

/// Counters for one variant label.
#[derive(Default)]
pub struct VariantCounters {
    by_status: [AtomicU64; STATUSES.len() + 1],
    buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_ns: AtomicU64,
}

impl VariantCounters {
    #[inline]
    pub fn observe(&self, status: u16, elapsed: Duration) {
        let slot = STATUSES
            .iter()
            .position(|&s| s == status)
            .unwrap_or(STATUSES.len());
        self.by_status[slot].fetch_add(1, Relaxed);
        let secs = elapsed.as_secs_f64();
        if let Some(b) = BUCKETS.iter().position(|&le| secs <= le) {
            self.buckets[b].fetch_add(1, Relaxed);
        }
        self.latency_count.fetch_add(1, Relaxed);
        self.latency_sum_ns
            .fetch_add(elapsed.as_nanos().min(u64::MAX as u128) as u64, Relaxed);
    }

    pub fn count(&self, status: u16) -> u64 {
        let slot = STATUSES
            .iter()
            .position(|&s| s == status)
            .unwrap_or(STATUSES.len());
        self.by_status[slot].load(Relaxed)
    }
}

#[derive(Default)]
pub struct Metrics {
    /// Counters by variant name; kept across reloads so counts never go backwards. Locked
    /// only at reload and scrape time, never per request.
    variants: Mutex<HashMap<String, Arc<VariantCounters>>>,
    unrouted: Arc<VariantCounters>,
    pub in_flight: AtomicI64,
    pub records_dropped: AtomicU64,
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
}

impl Metrics {
    /// The counters for `variant`, created on first use.
    pub fn variant(&self, variant: &str) -> Arc<VariantCounters> {
        let mut map = self.variants.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(variant.to_owned()).or_default().clone()
    }

    pub fn unrouted(&self) -> &VariantCounters {
        &self.unrouted
    }

    /// Renders everything in the Prometheus text exposition format (version 0.0.4).
    /// `info` holds one `(label set)` per served variant for the model info gauge.
    pub fn render(&self, endpoint: &str, info: &[String], generation: u64) -> String {
        let mut out = String::with_capacity(4096);
        let ep = escape(endpoint);
        let mut variants: Vec<(String, Arc<VariantCounters>)> = {
            let map = self.variants.lock().unwrap_or_else(|p| p.into_inner());
            map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        variants.sort_by(|a, b| a.0.cmp(&b.0));
        variants.push((NO_VARIANT.to_owned(), self.unrouted.clone()));

        out.push_str(
            "# HELP galley_requests_total Scoring requests by variant and HTTP status code.\n",
        );
        out.push_str("# TYPE galley_requests_total counter\n");
        for (name, c) in &variants {
            let name = escape(name);
            for (i, code) in STATUSES
                .iter()
                .map(|s| s.to_string())
                .chain(["other".to_owned()])
                .enumerate()
            {
                let n = c.by_status[i].load(Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "galley_requests_total{{endpoint=\"{ep}\",variant=\"{name}\",code=\"{code}\"}} {n}"
                    );
                }
            }
        }
        out.push_str("# HELP galley_request_duration_seconds Scoring request latency.\n");
        out.push_str("# TYPE galley_request_duration_seconds histogram\n");
        for (name, c) in &variants {
            let name = escape(name);
            let mut cumulative = 0;
            for (i, le) in BUCKETS.iter().enumerate() {
                cumulative += c.buckets[i].load(Relaxed);
                let _ = writeln!(
                    out,
                    "galley_request_duration_seconds_bucket{{endpoint=\"{ep}\",variant=\"{name}\",le=\"{le}\"}} {cumulative}"
                );
            }
            let count = c.latency_count.load(Relaxed);
            let sum = c.latency_sum_ns.load(Relaxed) as f64 / 1e9;
            let _ = writeln!(
                out,
                "galley_request_duration_seconds_bucket{{endpoint=\"{ep}\",variant=\"{name}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "galley_request_duration_seconds_sum{{endpoint=\"{ep}\",variant=\"{name}\"}} {sum}"
            );
            let _ = writeln!(
                out,
                "galley_request_duration_seconds_count{{endpoint=\"{ep}\",variant=\"{name}\"}} {count}"
            );
        }
        let _ = write!(
            out,
            "# HELP galley_requests_in_flight Scoring requests being served now.\n\
             # TYPE galley_requests_in_flight gauge\n\
             galley_requests_in_flight{{endpoint=\"{ep}\"}} {}\n\
             # HELP galley_model_info The model versions served, one series per variant.\n\
             # TYPE galley_model_info gauge\n",
            self.in_flight.load(Relaxed)
        );
        for labels in info {
            let _ = writeln!(out, "galley_model_info{{endpoint=\"{ep}\",{labels}}} 1");
        }
        let _ = write!(
            out,
            "# HELP galley_config_generation Configurations loaded since start (1 = the first).\n\
             # TYPE galley_config_generation gauge\n\
             galley_config_generation{{endpoint=\"{ep}\"}} {generation}\n\
             # HELP galley_reloads_total Successful hot reloads.\n\
             # TYPE galley_reloads_total counter\n\
             galley_reloads_total{{endpoint=\"{ep}\"}} {}\n\
             # HELP galley_reload_failures_total Reloads refused (the old models kept serving).\n\
             # TYPE galley_reload_failures_total counter\n\
             galley_reload_failures_total{{endpoint=\"{ep}\"}} {}\n\
             # HELP galley_inference_records_dropped_total Inference records dropped because the recorder was behind.\n\
             # TYPE galley_inference_records_dropped_total counter\n\
             galley_inference_records_dropped_total{{endpoint=\"{ep}\"}} {}\n",
            self.reloads.load(Relaxed),
            self.reload_failures.load(Relaxed),
            self.records_dropped.load(Relaxed),
        );
        out
    }
}

/// Escapes a Prometheus label value.
pub fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
