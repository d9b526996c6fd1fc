//! Questions about one PostgreSQL cluster and their answers as documents:
//! the recovery report (`tidemark recovery-points --component pg:…`), the
//! "restorable?" answer for a time, LSN or restore point, and the restore
//! plan (`tidemark plan`). Pure: the caller hands in the state, the position
//! index and the checkpoint; the same inputs give byte-identical plans.

use std::collections::BTreeMap;

use tidemark_core::{Digest32, Lsn, Timestamp};

use crate::pg::{
    BaseBackup, Cluster, NotRestorable, Position, Positions, Restorable, RestorePoints, SegmentState, Window,
};

/// The position index a question needs.
pub trait PositionIndex: Positions + RestorePoints {}
impl<T: Positions + RestorePoints> PositionIndex for T {}

/// What to restore to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Target {
    /// A time: the database as of the newest observation at or before it.
    Time {
        at: Timestamp,
        timeline: Option<u32>,
    },
    Lsn {
        lsn: Lsn,
        timeline: Option<u32>,
    },
    RestorePoint {
        name: String,
    },
}

impl Target {
    /// Builds a target from at most one of a time, an LSN or a restore-point
    /// name (as the CLI flags and the HTTP query give them); `None` when none is given.
    pub fn from_parts(
        at: Option<&str>,
        lsn: Option<&str>,
        restore_point: Option<&str>,
        timeline: Option<u32>,
    ) -> Result<Option<Target>, String> {
        let given = [at.is_some(), lsn.is_some(), restore_point.is_some()].iter().filter(|x| **x).count();
        if given > 1 {
            return Err("give at most one of at, lsn and restore_point".into());
        }
        if let Some(at) = at {
            let at = Timestamp::parse_rfc3339(at).map_err(|e| format!("at: {e}"))?;
            return Ok(Some(Target::Time { at, timeline }));
        }
        if let Some(lsn) = lsn {
            return Ok(Some(Target::Lsn { lsn: Lsn::parse(lsn)?, timeline }));
        }
        if let Some(name) = restore_point {
            if timeline.is_some() {
                return Err("a restore point names its own timeline; drop timeline".into());
            }
            return Ok(Some(Target::RestorePoint { name: name.to_owned() }));
        }
        if timeline.is_some() {
            return Err("timeline goes with at or lsn".into());
        }
        Ok(None)
    }
}

/// A resolved target: what to restore from and to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Resolved {
    pub timeline: u32,
    pub base_backup: BaseBackup,
    pub target_lsn: Lsn,
    /// The observation the target LSN comes from (times and restore points).
    pub target_observation: Option<Position>,
    /// For a time: the observation at or after it that proves the WAL covering it is archived.
    pub proof_observation: Option<Position>,
    pub first_segment: String,
    pub last_segment: String,
    pub segment_count: u64,
}

/// Rule: answers "is this target restorable, and from what?".
pub fn resolve(cluster: &Cluster, positions: &dyn PositionIndex, target: &Target) -> Result<Resolved, NotRestorable> {
    let (r, target_observation, proof_observation): (Restorable, _, _) = match target {
        Target::Time { at, timeline } => {
            let a = cluster.time_restorable(*at, *timeline, positions)?;
            (a.restorable, Some(a.target), Some(a.proof))
        }
        Target::Lsn { lsn, timeline } => {
            let tl = match timeline {
                Some(tl) => *tl,
                None => cluster.timelines().last().ok_or(NotRestorable::UnknownTimeline { timeline: 1 })?,
            };
            (cluster.lsn_restorable(tl, *lsn)?, None, None)
        }
        Target::RestorePoint { name } => {
            let (p, r) = cluster.restore_point_restorable(name, positions)?;
            (r, Some(p), None)
        }
    };
    let size = cluster.segment_size_bytes();
    let name = |s: u64| crate::pg::segment_name(cluster.timeline_of_segment(r.timeline, s), s, size);
    Ok(Resolved {
        timeline: r.timeline,
        target_lsn: r.target_lsn,
        first_segment: name(r.first_segment),
        last_segment: name(r.last_segment),
        segment_count: r.last_segment - r.first_segment + 1,
        base_backup: r.backup,
        target_observation,
        proof_observation,
    })
}

/// The answer document for one question.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Answer {
    pub component: String,
    pub target: Target,
    pub restorable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<Resolved>,
    /// Why not, as data…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<NotRestorable>,
    /// …and in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explanation: Option<String>,
}

pub fn answer(cluster: &Cluster, positions: &dyn PositionIndex, target: &Target) -> Answer {
    let result = resolve(cluster, positions, target);
    let (resolved, reason) = match result {
        Ok(r) => (Some(r), None),
        Err(e) => (None, Some(e)),
    };
    Answer {
        component: cluster.component.clone(),
        target: target.clone(),
        restorable: resolved.is_some(),
        explanation: reason.as_ref().map(ToString::to_string),
        resolved,
        reason,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TimelineWindows {
    pub timeline: u32,
    pub windows: Vec<Window>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UnsoundSegment {
    pub segment: String,
    pub state: SegmentState,
}

/// Everything `recovery-points --component pg:…` shows.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Report {
    pub component: String,
    pub system_identifier: Option<String>,
    pub wal_segment_size_bytes: u64,
    pub segments_recorded: u64,
    pub base_backups: Vec<BaseBackup>,
    pub timelines: Vec<TimelineWindows>,
    pub unsound_segments: Vec<UnsoundSegment>,
}

pub fn report(cluster: &Cluster, positions: &dyn PositionIndex) -> Report {
    Report {
        component: cluster.component.clone(),
        system_identifier: cluster.system_identifier().map(str::to_owned),
        wal_segment_size_bytes: cluster.segment_size_bytes(),
        segments_recorded: cluster.segments_recorded(),
        base_backups: cluster.backups().cloned().collect(),
        timelines: cluster
            .timelines()
            .map(|tl| TimelineWindows { timeline: tl, windows: cluster.windows(tl, positions) })
            .collect(),
        unsound_segments: cluster
            .unsound_segments()
            .into_iter()
            .map(|(segment, state)| UnsoundSegment { segment, state })
            .collect(),
    }
}

/// The log state a plan was computed from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CheckpointRef {
    pub origin: String,
    pub tree_size: u64,
    /// The root hash, base64 as in the checkpoint note.
    pub root_hash: String,
}

/// How the plan is to be carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanOptions {
    /// `restore_command` for PostgreSQL, with `%f` and `%p`.
    pub restore_command: String,
    /// Offer `recovery_target_time` (with its caveat) instead of the LSN target.
    pub use_recovery_target_time: bool,
}

/// The plan body: everything but its own digest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PlanBody {
    pub format: String,
    pub component: String,
    pub target: Target,
    pub timeline: u32,
    pub base_backup: BaseBackup,
    pub target_lsn: Lsn,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_observation: Option<Position>,
    pub wal_segments: Vec<String>,
    /// `postgresql.auto.conf` settings, plus an empty `recovery.signal` file.
    pub recovery_settings: BTreeMap<String, String>,
    pub notes: Vec<String>,
    pub computed_at_checkpoint: CheckpointRef,
}

/// A restore plan: its body and the blake3 of the body's canonical JSON.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Plan {
    #[serde(flatten)]
    pub body: PlanBody,
    pub digest: Digest32,
}

impl PlanBody {
    /// The blake3 of the body's canonical JSON: the plan's digest.
    pub fn digest(&self) -> Digest32 {
        let bytes = tidemark_core::canonical::to_canonical_vec(self).expect("plans hold integers and strings only");
        Digest32::blake3_of(&bytes)
    }
}

impl Plan {
    /// What the digest of this plan's body is (equal to `digest` unless it was changed).
    pub fn body_digest(&self) -> Digest32 {
        self.body.digest()
    }
}

/// Single-quotes a value for `postgresql.auto.conf`.
pub fn conf_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Rule: a plan targets an LSN (PostgreSQL always reaches it when the WAL
/// through it is archived) and stops just before the first record at or
/// after it, so the database is exactly as it was when that LSN was observed.
pub fn plan(
    cluster: &Cluster,
    positions: &dyn PositionIndex,
    target: &Target,
    options: &PlanOptions,
    checkpoint: CheckpointRef,
) -> Result<Plan, NotRestorable> {
    let r = resolve(cluster, positions, target)?;
    let size = cluster.segment_size_bytes();
    let first = crate::pg::parse_segment_name(&r.first_segment, size).map(|(_, s)| s).unwrap_or(0);
    let wal_segments: Vec<String> = (first..first + r.segment_count)
        .map(|s| crate::pg::segment_name(cluster.timeline_of_segment(r.timeline, s), s, size))
        .collect();
    let mut settings = BTreeMap::new();
    settings.insert("restore_command".to_owned(), options.restore_command.clone());
    settings.insert("recovery_target_timeline".to_owned(), r.timeline.to_string());
    settings.insert("recovery_target_action".to_owned(), "promote".to_owned());
    let mut notes = vec![
        "copy the base backup into an empty data directory, write these settings to postgresql.auto.conf and create recovery.signal".to_owned(),
        "restore_command refuses any segment whose blake3 differs from the ledger's: recovery then stops instead of replaying bad WAL".to_owned(),
    ];
    match (target, options.use_recovery_target_time) {
        (Target::Time { at, .. }, true) => {
            settings.insert("recovery_target_time".to_owned(), at.to_string());
            settings.insert("recovery_target_inclusive".to_owned(), "on".to_owned());
            notes.push(format!(
                "recovery_target_time stops at the first commit after {at}; PostgreSQL fails when the archive holds no commit after it — the LSN target ({}) does not have that caveat",
                r.target_lsn
            ));
        }
        _ => {
            settings.insert("recovery_target_lsn".to_owned(), r.target_lsn.to_string());
            settings.insert("recovery_target_inclusive".to_owned(), "off".to_owned());
        }
    }
    if let (Target::Time { at, .. }, Some(obs)) = (target, &r.target_observation) {
        notes.push(format!(
            "the database is restored as of {} (the newest observed position at or before {at}); denser `pg watch` positions give finer targets",
            obs.observed_at
        ));
    }
    let body = PlanBody {
        format: "tidemark-pg-plan-v1".to_owned(),
        component: cluster.component.clone(),
        target: target.clone(),
        timeline: r.timeline,
        base_backup: r.base_backup,
        target_lsn: r.target_lsn,
        target_observation: r.target_observation,
        wal_segments,
        recovery_settings: settings,
        notes,
        computed_at_checkpoint: checkpoint,
    };
    Ok(Plan { digest: PlanBody::digest(&body), body })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::{PositionSource, segment_name};
    use serde_json::json;
    use tidemark_core::event::{Event, EventBody};
    use tidemark_core::{ActorId, EventId};

    const MIB: u64 = 1024 * 1024;

    fn apply(c: &mut Cluster, kind: &str, body: serde_json::Value) -> EventBody {
        let draft = json!({"kind": kind, "body": body});
        let b = Event::from_draft(draft, ActorId([0; 16]), EventId::new_v7(1, [0; 10]), Timestamp::EPOCH).unwrap().body;
        c.apply(&b);
        b
    }

    fn t(s: &str) -> Timestamp {
        Timestamp::parse_rfc3339(&format!("2026-11-23T{s}Z")).unwrap()
    }

    fn fixture() -> (Cluster, Vec<Position>) {
        let mut c = Cluster::new("pg:main");
        for s in 2..=9 {
            let name = segment_name(1, s, MIB);
            apply(
                &mut c,
                "pg.wal_archived",
                json!({"component": "pg:main", "timeline": 1, "segment": name, "size_bytes": MIB,
                "blake3": "aa".repeat(32), "sha256": "bb".repeat(32), "location": format!("/a/{name}")}),
            );
        }
        let b = apply(
            &mut c,
            "pg.base_backup",
            json!({"component": "pg:main", "backup_id": "b1", "label": "b1", "timeline": 1,
            "start_lsn": "0/200028", "stop_lsn": "0/300100", "start_time": t("01:00:00"), "stop_time": t("01:05:00"),
            "size_bytes": 1, "location": "/backups/b1", "tool": "pg_basebackup"}),
        );
        let mut positions = vec![crate::pg::positions_of(&b).unwrap().1];
        for (l, at) in [("0/500000", "01:10:00"), ("0/700000", "01:20:00")] {
            positions.push(Position {
                lsn: Lsn::parse(l).unwrap(),
                timeline: 1,
                observed_at: t(at),
                source: PositionSource::Position,
            });
        }
        (c, positions)
    }

    fn checkpoint() -> CheckpointRef {
        CheckpointRef { origin: "example.org/ledger".into(), tree_size: 42, root_hash: "AAAA".into() }
    }

    fn options() -> PlanOptions {
        PlanOptions {
            restore_command: "tidemark pg restore-wal --cluster main %f %p".into(),
            use_recovery_target_time: false,
        }
    }

    #[test]
    fn rule_plans_are_deterministic_and_carry_their_checkpoint_and_digest() {
        let (c, p) = fixture();
        let target = Target::Time { at: t("01:15:00"), timeline: None };
        let a = plan(&c, &p, &target, &options(), checkpoint()).unwrap();
        let b = plan(&c, &p, &target, &options(), checkpoint()).unwrap();
        assert_eq!(serde_json::to_vec(&a).unwrap(), serde_json::to_vec(&b).unwrap());
        let mut other = checkpoint();
        other.tree_size = 43;
        assert_ne!(plan(&c, &p, &target, &options(), other).unwrap().digest, a.digest);
        assert_eq!(a.body.target_lsn, Lsn::parse("0/500000").unwrap());
        assert_eq!(a.body.recovery_settings["recovery_target_lsn"], "0/500000");
        assert_eq!(a.body.recovery_settings["recovery_target_inclusive"], "off");
        assert_eq!(a.body.recovery_settings["recovery_target_action"], "promote");
        assert_eq!(a.body.wal_segments, (2..=5).map(|s| segment_name(1, s, MIB)).collect::<Vec<_>>());
    }

    #[test]
    fn rule_recovery_target_time_is_offered_only_on_request_with_its_caveat() {
        let (c, p) = fixture();
        let target = Target::Time { at: t("01:15:00"), timeline: None };
        let o = PlanOptions { use_recovery_target_time: true, ..options() };
        let a = plan(&c, &p, &target, &o, checkpoint()).unwrap();
        assert!(a.body.recovery_settings.contains_key("recovery_target_time"));
        assert!(!a.body.recovery_settings.contains_key("recovery_target_lsn"));
        assert!(a.body.notes.iter().any(|n| n.contains("first commit after")));
    }

    #[test]
    fn rule_an_answer_says_why_not() {
        let (c, p) = fixture();
        let a = answer(&c, &p, &Target::Lsn { lsn: Lsn::parse("0/A00000").unwrap(), timeline: None });
        assert!(!a.restorable);
        assert!(a.explanation.unwrap().contains("00000001000000000000000A"));
        let ok = answer(&c, &p, &Target::Lsn { lsn: Lsn::parse("0/900000").unwrap(), timeline: Some(1) });
        assert!(ok.restorable);
        let r = report(&c, &p);
        assert_eq!(r.timelines[0].windows[0].to_time, t("01:20:00"));
    }
}
