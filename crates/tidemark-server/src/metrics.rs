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

/// A label value as the text format writes it.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn seconds(t: tidemark_core::Timestamp) -> f64 {
    t.as_micros() as f64 / 1e6
}

/// A float as the text format writes it (`+Inf` for an unbounded value).
fn value(v: f64) -> String {
    if v.is_infinite() { "+Inf".to_owned() } else { format!("{v}") }
}

/// The recovery metrics, from the ledger's projections (they survive
/// restarts: nothing here is the server's memory).
pub fn render_status(status: &tidemark_lineage::status::Status, now: tidemark_core::Timestamp) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, rows: Vec<(String, String)>| {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
        for (labels, v) in rows {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    };
    let g = |s: &tidemark_lineage::status::GroupStatus| format!("group=\"{}\"", label(&s.group));
    metric(
        "tidemark_group_rpo_seconds",
        "gauge",
        "Age of the group's newest restorable point (the application's live RPO); +Inf when nothing is restorable.",
        status
            .groups
            .iter()
            .map(|s| (g(s), value(tidemark_lineage::status::rpo_seconds(now, s.newest_restorable))))
            .collect(),
    );
    metric(
        "tidemark_group_newest_restorable_timestamp_seconds",
        "gauge",
        "Time of the group's newest restorable point (a marker, or the end of a correlated window).",
        status.groups.iter().filter_map(|s| s.newest_restorable.map(|t| (g(s), value(seconds(t))))).collect(),
    );
    metric(
        "tidemark_group_markers",
        "gauge",
        "Markers recorded for the group.",
        status.groups.iter().map(|s| (g(s), s.markers.to_string())).collect(),
    );
    metric(
        "tidemark_group_restore_tests",
        "gauge",
        "Restore tests (drills) recorded for the group, by result.",
        status
            .groups
            .iter()
            .flat_map(|s| {
                [
                    (format!("{},result=\"passed\"", g(s)), s.drills_passed.to_string()),
                    (format!("{},result=\"failed\"", g(s)), s.drills_failed.to_string()),
                ]
            })
            .collect(),
    );
    metric(
        "tidemark_group_last_restore_test_timestamp_seconds",
        "gauge",
        "Time of the group's newest restore test.",
        status.groups.iter().filter_map(|s| s.last_drill.map(|(t, _)| (g(s), value(seconds(t))))).collect(),
    );
    metric(
        "tidemark_group_last_restore_test_duration_seconds",
        "gauge",
        "How long the group's newest restore test took (restore and checks; a restore-time target is one of its checks).",
        status
            .groups
            .iter()
            .filter_map(|s| s.last_drill_duration_ms.map(|ms| (g(s), value(ms as f64 / 1000.0))))
            .collect(),
    );
    metric(
        "tidemark_group_last_restore_test_passed",
        "gauge",
        "1 when the group's newest restore test passed, 0 when it failed.",
        status.groups.iter().filter_map(|s| s.last_drill.map(|(_, p)| (g(s), u8::from(p).to_string()))).collect(),
    );
    let c = |component: &str| format!("component=\"{}\"", label(component));
    metric(
        "tidemark_pg_segments_recorded",
        "gauge",
        "WAL segments recorded as archived.",
        status.postgresql.iter().map(|p| (c(&p.component), p.segments_recorded.to_string())).collect(),
    );
    metric(
        "tidemark_pg_unsound_segments",
        "gauge",
        "Archived WAL segments since reported missing, corrupt or deleted (each a hole in the recovery window).",
        status.postgresql.iter().map(|p| (c(&p.component), p.unsound_segments.to_string())).collect(),
    );
    metric(
        "tidemark_s3_watermark_lag_seconds",
        "gauge",
        "Age of the bucket's scan watermark (every version stamped before it is recorded); +Inf before the first scan.",
        status
            .s3
            .iter()
            .map(|b| {
                let lag = b.complete_through.map_or(f64::INFINITY, |t| (seconds(now) - seconds(t)).max(0.0));
                (c(&b.component), value(lag))
            })
            .collect(),
    );
    metric(
        "tidemark_s3_problem_keys",
        "gauge",
        "Keys whose recorded history has holes (ambiguous or unrecoverable at some times).",
        status.s3.iter().map(|b| (c(&b.component), b.problem_keys.to_string())).collect(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidemark_core::Timestamp;
    use tidemark_lineage::status::{GroupStatus, PgStatus, S3Status, Status};

    #[test]
    fn the_recovery_metrics_are_the_status_in_the_text_format() {
        let t = Timestamp::from_unix_seconds(1_790_000_000);
        let status = Status {
            groups: vec![
                GroupStatus {
                    group: "app".into(),
                    newest_restorable: Some(t),
                    markers: 3,
                    drills_passed: 1,
                    drills_failed: 1,
                    last_drill: Some((t, false)),
                    last_drill_duration_ms: Some(1500),
                },
                GroupStatus {
                    group: "empty".into(),
                    newest_restorable: None,
                    markers: 0,
                    drills_passed: 0,
                    drills_failed: 0,
                    last_drill: None,
                    last_drill_duration_ms: None,
                },
            ],
            postgresql: vec![PgStatus { component: "pg:main".into(), segments_recorded: 9, unsound_segments: 1 }],
            s3: vec![S3Status { component: "s3:up".into(), complete_through: None, problem_keys: 0 }],
        };
        let text = render_status(&status, t.saturating_add_micros(4_000_000));
        for line in [
            "tidemark_group_rpo_seconds{group=\"app\"} 4",
            "tidemark_group_rpo_seconds{group=\"empty\"} +Inf",
            "tidemark_group_last_restore_test_passed{group=\"app\"} 0",
            "tidemark_group_last_restore_test_duration_seconds{group=\"app\"} 1.5",
            "tidemark_group_restore_tests{group=\"app\",result=\"failed\"} 1",
            "tidemark_pg_unsound_segments{component=\"pg:main\"} 1",
            "tidemark_s3_watermark_lag_seconds{component=\"s3:up\"} +Inf",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
        assert!(!text.contains("newest_restorable_timestamp_seconds{group=\"empty\"}"), "no point, no time");
    }
}
