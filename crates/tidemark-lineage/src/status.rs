//! What monitoring asks of a ledger, answered from the projections (never
//! by replaying the log): per group, the newest restorable point — whose
//! age is the application's live RPO — and its restore tests; per
//! component, how far its history is known and how much of it is unsound.

use tidemark_core::Timestamp;

use crate::group::{Activity, ActivityKind};

/// One group's recovery state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GroupStatus {
    pub group: String,
    /// The newest restorable point (a marker or the end of a correlated window); none: nothing is restorable.
    pub newest_restorable: Option<Timestamp>,
    pub markers: u64,
    pub drills_passed: u64,
    pub drills_failed: u64,
    /// The newest drill (restore test): when, and whether it passed.
    pub last_drill: Option<(Timestamp, bool)>,
    /// How long the newest drill took, restore and checks (its `duration_ms`).
    pub last_drill_duration_ms: Option<u64>,
}

/// One PostgreSQL cluster's archive.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PgStatus {
    pub component: String,
    pub segments_recorded: u64,
    /// Segments reported missing, corrupt or deleted after being recorded.
    pub unsound_segments: u64,
}

/// One bucket's history.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct S3Status {
    pub component: String,
    /// The scan watermark: every version stamped at or before it is recorded.
    pub complete_through: Option<Timestamp>,
    /// Keys whose history has holes (ambiguous, unrecoverable).
    pub problem_keys: u64,
}

/// Everything `/metrics` exports about recovery.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Status {
    pub groups: Vec<GroupStatus>,
    pub postgresql: Vec<PgStatus>,
    pub s3: Vec<S3Status>,
}

/// Rule: the live RPO is the age of the newest restorable point; with no
/// restorable point it is unbounded (so an alert on it fires).
pub fn rpo_seconds(now: Timestamp, newest_restorable: Option<Timestamp>) -> f64 {
    match newest_restorable {
        Some(t) => (now.as_micros() - t.as_micros()).max(0) as f64 / 1e6,
        None => f64::INFINITY,
    }
}

/// Rule: a group's drills, counted by result, and the newest one (with its entry).
pub fn drills(activities: &[Activity]) -> (u64, u64, Option<(Timestamp, bool, u64)>) {
    let drills: Vec<&Activity> = activities.iter().filter(|a| a.kind == ActivityKind::Drill).collect();
    let passed = drills.iter().filter(|a| a.passed).count() as u64;
    let last = drills.iter().max_by_key(|a| (a.at, a.seq)).map(|a| (a.at, a.passed, a.seq));
    (passed, drills.len() as u64 - passed, last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_the_rpo_is_the_age_of_the_newest_restorable_point() {
        let t = Timestamp::from_unix_seconds(1_790_000_000);
        assert_eq!(rpo_seconds(t.saturating_add_micros(2_500_000), Some(t)), 2.5);
        assert_eq!(rpo_seconds(t, Some(t.saturating_add_micros(1))), 0.0, "a clock behind the point is not negative");
        assert!(rpo_seconds(t, None).is_infinite());
    }
}
