//! Prometheus text-format metrics, kept with atomics (no registry crate).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the batch-size histogram (events per committed batch).
const BATCH_BUCKETS: [u64; 6] = [1, 10, 100, 1000, 5000, 10_000];
/// Upper bounds of the append-latency histogram, in seconds.
const LATENCY_BUCKETS: [f64; 11] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

#[derive(Default)]
pub struct Metrics {
    pub entries_appended: AtomicU64,
    pub duplicates: AtomicU64,
    pub batches_committed: AtomicU64,
    pub requests_appended: AtomicU64,
    refusals: Mutex<BTreeMap<&'static str, u64>>,
    batch_counts: [AtomicU64; BATCH_BUCKETS.len()],
    batch_sum: AtomicU64,
    latency_counts: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_sum_micros: AtomicU64,
    latency_total: AtomicU64,
    pub tree_size: AtomicU64,
    /// Microseconds since the epoch of the latest checkpoint.
    pub last_checkpoint_micros: AtomicU64,
}

impl Metrics {
    pub fn refused(&self, reason: &'static str) {
        *self.refusals.lock().expect("metrics lock").entry(reason).or_default() += 1;
    }

    pub fn batch(&self, events: usize) {
        self.batches_committed.fetch_add(1, Ordering::Relaxed);
        self.batch_sum.fetch_add(events as u64, Ordering::Relaxed);
        for (i, bound) in BATCH_BUCKETS.iter().enumerate() {
            if events as u64 <= *bound {
                self.batch_counts[i].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub fn latency(&self, seconds: f64) {
        self.latency_total.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_micros.fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                self.latency_counts[i].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The exposition text; `now_micros` makes the checkpoint age.
    pub fn render(&self, now_micros: i64) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, body: String| {
            let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{body}");
        };
        metric(
            "tidemark_entries_appended_total",
            "counter",
            "Entries appended through this server.",
            format!("tidemark_entries_appended_total {}\n", g(&self.entries_appended)),
        );
        metric(
            "tidemark_duplicate_events_total",
            "counter",
            "Events re-sent and answered with their earlier sequence number.",
            format!("tidemark_duplicate_events_total {}\n", g(&self.duplicates)),
        );
        metric(
            "tidemark_append_requests_total",
            "counter",
            "Write requests acknowledged.",
            format!("tidemark_append_requests_total {}\n", g(&self.requests_appended)),
        );
        let refusals = self.refusals.lock().expect("metrics lock").clone();
        let mut body = String::new();
        for (reason, n) in &refusals {
            let _ = writeln!(body, "tidemark_refusals_total{{reason=\"{reason}\"}} {n}");
        }
        metric("tidemark_refusals_total", "counter", "Write requests refused, by reason.", body);
        let mut body = String::new();
        for (i, bound) in BATCH_BUCKETS.iter().enumerate() {
            let _ = writeln!(body, "tidemark_batch_events_bucket{{le=\"{bound}\"}} {}", g(&self.batch_counts[i]));
        }
        let _ = writeln!(body, "tidemark_batch_events_bucket{{le=\"+Inf\"}} {}", g(&self.batches_committed));
        let _ = writeln!(body, "tidemark_batch_events_sum {}", g(&self.batch_sum));
        let _ = writeln!(body, "tidemark_batch_events_count {}", g(&self.batches_committed));
        metric(
            "tidemark_batch_events",
            "histogram",
            "Events per committed batch (one sled batch and one flush each).",
            body,
        );
        let mut body = String::new();
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            let _ = writeln!(
                body,
                "tidemark_append_latency_seconds_bucket{{le=\"{bound}\"}} {}",
                g(&self.latency_counts[i])
            );
        }
        let _ = writeln!(body, "tidemark_append_latency_seconds_bucket{{le=\"+Inf\"}} {}", g(&self.latency_total));
        let _ = writeln!(body, "tidemark_append_latency_seconds_sum {}", g(&self.latency_sum_micros) as f64 / 1e6);
        let _ = writeln!(body, "tidemark_append_latency_seconds_count {}", g(&self.latency_total));
        metric(
            "tidemark_append_latency_seconds",
            "histogram",
            "Time from receiving a write request to its durable acknowledgement.",
            body,
        );
        metric(
            "tidemark_tree_size",
            "gauge",
            "Entries in the log.",
            format!("tidemark_tree_size {}\n", g(&self.tree_size)),
        );
        let age = (now_micros - g(&self.last_checkpoint_micros) as i64).max(0) as f64 / 1e6;
        metric(
            "tidemark_last_checkpoint_age_seconds",
            "gauge",
            "Seconds since the latest checkpoint was signed.",
            format!("tidemark_last_checkpoint_age_seconds {age}\n"),
        );
        out
    }
}
