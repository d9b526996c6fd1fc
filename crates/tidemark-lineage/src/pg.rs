//! PostgreSQL continuous recovery (DESIGN §6).
//!
//! The rules, each a function with tests named after it:
//!
//! * [`segment_name`] / [`parse_segment_name`]: WAL segment naming for any
//!   segment size (`TTTTTTTTXXXXXXXXYYYYYYYY`).
//! * [`Cluster::timeline_of_segment`]: which timeline's file holds a segment
//!   when recovering on timeline `tl`, following archived history files (the
//!   segment holding the switch point, and everything after, is on the child).
//! * [`Cluster::lsn_restorable`]: LSN L on timeline `tl` is restorable when a
//!   base backup on `tl`'s history has `stop_lsn ≤ L` and every segment from
//!   the one holding the backup's `start_lsn` through the one holding L is
//!   archived and not reported missing, deleted or corrupt. Only the newest
//!   such backup needs checking: an older one needs a superset of segments.
//! * [`Cluster::windows`]: the maximal restorable LSN ranges per timeline, and
//!   the gaps that split them, with the missing segment names.

use std::collections::{BTreeMap, BTreeSet};

use tidemark_core::event::EventBody;
use tidemark_core::{Lsn, Timestamp};

/// PostgreSQL's default segment size, used until `component.registered` says otherwise.
pub const DEFAULT_SEGMENT_SIZE_BYTES: u64 = 16 * 1024 * 1024;

/// A segment's name: timeline, then the segment number split at 4 GiB of WAL.
pub fn segment_name(timeline: u32, segno: u64, segment_size_bytes: u64) -> String {
    let per_id = 0x1_0000_0000 / segment_size_bytes;
    format!("{timeline:08X}{:08X}{:08X}", segno / per_id, segno % per_id)
}

/// (timeline, segment number) of a segment name.
pub fn parse_segment_name(name: &str, segment_size_bytes: u64) -> Option<(u32, u64)> {
    if name.len() != 24 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let tl = u32::from_str_radix(&name[..8], 16).ok()?;
    let hi = u64::from_str_radix(&name[8..16], 16).ok()?;
    let lo = u64::from_str_radix(&name[16..], 16).ok()?;
    let per_id = 0x1_0000_0000 / segment_size_bytes;
    (lo < per_id).then_some((tl, hi * per_id + lo))
}

/// The segment holding `lsn`.
pub fn segment_of(lsn: Lsn, segment_size_bytes: u64) -> u64 {
    lsn.0 / segment_size_bytes
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SegmentState {
    Archived,
    Missing,
    Corrupt,
    Deleted,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BaseBackup {
    pub backup_id: String,
    pub timeline: u32,
    pub start_lsn: Lsn,
    pub stop_lsn: Lsn,
    pub stop_time: Timestamp,
    pub deleted: bool,
}

/// One cluster's recovery state, advanced event by event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    pub component: String,
    pub segment_size_bytes: u64,
    segments: BTreeMap<(u32, u64), SegmentState>,
    backups: BTreeMap<String, BaseBackup>,
    /// timeline → (parent, switch LSN).
    history: BTreeMap<u32, (u32, Lsn)>,
}

/// Why an LSN cannot be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum NotRestorable {
    #[error("no base backup on timeline {timeline}'s history finished at or before {lsn}")]
    NoBaseBackup { timeline: u32, lsn: Lsn },
    #[error("WAL needed from base backup {backup_id} is not all in the archive: {}", segments.join(", "))]
    MissingSegments { backup_id: String, segments: Vec<String> },
}

/// What restoring to an LSN takes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Restorable {
    pub backup_id: String,
    pub timeline: u32,
    pub target_lsn: Lsn,
    /// Every segment to replay, in order.
    pub segments: Vec<String>,
}

/// A maximal restorable LSN range on one timeline.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Window {
    pub timeline: u32,
    pub from_lsn: Lsn,
    /// The end of the last archived segment of the contiguous run.
    pub to_lsn: Lsn,
    pub from_time: Timestamp,
    /// Backups whose stop falls inside the window.
    pub backups: Vec<String>,
    /// The missing segments that end this window, if a gap ends it.
    pub gap_after: Vec<String>,
}

impl Cluster {
    pub fn new(component: &str) -> Cluster {
        Cluster {
            component: component.to_owned(),
            segment_size_bytes: DEFAULT_SEGMENT_SIZE_BYTES,
            segments: BTreeMap::new(),
            backups: BTreeMap::new(),
            history: BTreeMap::new(),
        }
    }

    fn wal_ref_segment(&self, artifact: &str) -> Option<(u32, u64)> {
        let rest = artifact.strip_prefix(&self.component)?.strip_prefix("/wal/")?;
        parse_segment_name(rest, self.segment_size_bytes)
    }

    /// Advances the state by one event (events of other components are ignored).
    pub fn apply(&mut self, body: &EventBody) {
        let mine = |c: &tidemark_core::ComponentId| c.as_str() == self.component;
        match body {
            EventBody::ComponentRegistered(r) if mine(&r.component) => {
                if let Some(pg) = &r.postgresql {
                    self.segment_size_bytes = pg.wal_segment_size_bytes;
                }
            }
            EventBody::PgWalArchived(w) if mine(&w.component) => {
                if let Some(key) = parse_segment_name(&w.segment, self.segment_size_bytes) {
                    self.segments.insert(key, SegmentState::Archived);
                }
            }
            EventBody::PgTimelineHistory(h) if mine(&h.component) => {
                self.history.insert(h.timeline, (h.parent_timeline, h.switch_lsn));
            }
            EventBody::PgBaseBackup(b) if mine(&b.component) => {
                self.backups.insert(
                    b.backup_id.clone(),
                    BaseBackup {
                        backup_id: b.backup_id.clone(),
                        timeline: b.timeline,
                        start_lsn: b.start_lsn,
                        stop_lsn: b.stop_lsn,
                        stop_time: b.stop_time,
                        deleted: false,
                    },
                );
            }
            EventBody::ArtifactVerified(v) => {
                if let Some(key) = self.wal_ref_segment(v.artifact.as_str()) {
                    let state = match v.outcome {
                        tidemark_core::event::VerifyOutcome::Ok => SegmentState::Archived,
                        tidemark_core::event::VerifyOutcome::Missing => SegmentState::Missing,
                        tidemark_core::event::VerifyOutcome::Corrupt => SegmentState::Corrupt,
                    };
                    self.segments.insert(key, state);
                }
            }
            EventBody::ArtifactDeleted(d) => {
                if let Some(key) = self.wal_ref_segment(d.artifact.as_str()) {
                    self.segments.insert(key, SegmentState::Deleted);
                }
                let base = format!("{}/base/", self.component);
                if let Some(b) = d.artifact.as_str().strip_prefix(&base).and_then(|id| self.backups.get_mut(id)) {
                    b.deleted = true;
                }
            }
            _ => {}
        }
    }

    /// The timelines of `tl`'s history, newest first; each ancestor comes
    /// with the LSN at which its child branched off it.
    fn lineage(&self, tl: u32) -> Vec<(u32, Option<Lsn>)> {
        let mut out = vec![(tl, None)];
        let mut current = tl;
        let mut seen = BTreeSet::from([tl]);
        while let Some(&(parent, switch)) = self.history.get(&current) {
            if !seen.insert(parent) {
                break;
            }
            out.push((parent, Some(switch)));
            current = parent;
        }
        out
    }

    /// Rule: the file holding segment `segno` when recovering on `tl` is on
    /// the oldest timeline of `tl`'s history that was not yet left at that
    /// segment: PostgreSQL writes the segment holding a switch point, and all
    /// later ones, under the new timeline's id.
    pub fn timeline_of_segment(&self, tl: u32, segno: u64) -> u32 {
        let mut chosen = tl;
        for (timeline, left_at) in self.lineage(tl).into_iter().skip(1) {
            match left_at {
                Some(s) if segno < segment_of(s, self.segment_size_bytes) => chosen = timeline,
                _ => break,
            }
        }
        chosen
    }

    fn segment_ok(&self, tl: u32, segno: u64) -> bool {
        self.segments.get(&(self.timeline_of_segment(tl, segno), segno)) == Some(&SegmentState::Archived)
    }

    /// Backups usable for recovery on `tl`: on a timeline of its history,
    /// finished before that timeline was left, not deleted.
    fn backups_for(&self, tl: u32) -> Vec<&BaseBackup> {
        let lineage = self.lineage(tl);
        self.backups
            .values()
            .filter(|b| !b.deleted)
            .filter(|b| lineage.iter().any(|(t, left_at)| *t == b.timeline && left_at.is_none_or(|s| b.stop_lsn <= s)))
            .collect()
    }

    /// Rule: is `lsn` restorable on timeline `tl`, and from what.
    pub fn lsn_restorable(&self, tl: u32, lsn: Lsn) -> Result<Restorable, NotRestorable> {
        let backup = self
            .backups_for(tl)
            .into_iter()
            .filter(|b| b.stop_lsn <= lsn)
            .max_by_key(|b| (b.start_lsn, b.backup_id.clone()))
            .ok_or(NotRestorable::NoBaseBackup { timeline: tl, lsn })?;
        let first = segment_of(backup.start_lsn, self.segment_size_bytes);
        let last = segment_of(lsn, self.segment_size_bytes);
        let mut segments = Vec::with_capacity((last - first + 1) as usize);
        let mut missing = Vec::new();
        for segno in first..=last {
            let on = self.timeline_of_segment(tl, segno);
            let name = segment_name(on, segno, self.segment_size_bytes);
            if self.segment_ok(tl, segno) {
                segments.push(name);
            } else {
                missing.push(name);
            }
        }
        if !missing.is_empty() {
            return Err(NotRestorable::MissingSegments { backup_id: backup.backup_id.clone(), segments: missing });
        }
        Ok(Restorable { backup_id: backup.backup_id.clone(), timeline: tl, target_lsn: lsn, segments })
    }

    /// Rule: the maximal restorable ranges on `tl`, oldest first, each with
    /// the gap (missing segment names) that ends it, if any.
    pub fn windows(&self, tl: u32) -> Vec<Window> {
        let mut backups = self.backups_for(tl);
        backups.sort_by_key(|b| (b.start_lsn, b.backup_id.clone()));
        let size = self.segment_size_bytes;
        let mut windows: Vec<Window> = Vec::new();
        for b in backups {
            let first = segment_of(b.start_lsn, size);
            let stop = segment_of(b.stop_lsn, size);
            let mut end = first;
            if !self.segment_ok(tl, first) {
                continue;
            }
            while self.segment_ok(tl, end + 1) {
                end += 1;
            }
            if end < stop {
                continue;
            }
            let to_lsn = Lsn((end + 1) * size - 1);
            // The segments after the run that are recorded at all tell where the next run starts.
            let next_known = self.segments.range((0, end + 1)..).map(|((_, s), _)| *s).filter(|s| *s > end).min();
            let gap_after: Vec<String> = match next_known {
                Some(next) => (end + 1..next.max(end + 2))
                    .filter(|s| !self.segment_ok(tl, *s))
                    .map(|s| segment_name(self.timeline_of_segment(tl, s), s, size))
                    .collect(),
                None => Vec::new(),
            };
            match windows.last_mut() {
                Some(w) if w.to_lsn == to_lsn => w.backups.push(b.backup_id.clone()),
                _ => windows.push(Window {
                    timeline: tl,
                    from_lsn: b.stop_lsn,
                    to_lsn,
                    from_time: b.stop_time,
                    backups: vec![b.backup_id.clone()],
                    gap_after,
                }),
            }
        }
        windows
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tidemark_core::event::Event;
    use tidemark_core::{ActorId, EventId};

    const MIB: u64 = 1024 * 1024;

    fn body(kind: &str, body: serde_json::Value) -> EventBody {
        let draft = json!({"kind": kind, "body": body});
        Event::from_draft(draft, ActorId([0; 16]), EventId::new_v7(1, [0; 10]), Timestamp::EPOCH).unwrap().body
    }

    fn lsn(s: &str) -> Lsn {
        Lsn::parse(s).unwrap()
    }

    /// A cluster with 1 MiB segments; `segments` archived on timeline 1.
    fn cluster(segments: impl IntoIterator<Item = u64>) -> Cluster {
        let mut c = Cluster::new("pg:main");
        c.apply(&body(
            "component.registered",
            json!({"component": "pg:main", "postgresql": {"system_identifier": "7", "wal_segment_size_bytes": MIB}}),
        ));
        for s in segments {
            archive(&mut c, 1, s);
        }
        c
    }

    fn archive(c: &mut Cluster, tl: u32, segno: u64) {
        let name = segment_name(tl, segno, MIB);
        c.apply(&body(
            "pg.wal_archived",
            json!({"component": "pg:main", "timeline": tl, "segment": name, "size_bytes": MIB,
            "blake3": "aa".repeat(32), "sha256": "bb".repeat(32), "location": format!("/a/{name}")}),
        ));
    }

    fn backup(c: &mut Cluster, id: &str, tl: u32, start: &str, stop: &str) {
        c.apply(&body("pg.base_backup", json!({"component": "pg:main", "backup_id": id, "label": id, "timeline": tl,
            "start_lsn": start, "stop_lsn": stop, "start_time": "2026-11-23T01:00:00.000000Z", "stop_time": "2026-11-23T01:05:00.000000Z",
            "size_bytes": 1, "location": "/b", "tool": "pg_basebackup"})));
    }

    #[test]
    fn rule_segment_names_follow_postgres_for_any_segment_size() {
        assert_eq!(segment_name(1, 3, 16 * MIB), "000000010000000000000003");
        assert_eq!(segment_name(1, 256, 16 * MIB), "000000010000000100000000");
        assert_eq!(segment_name(2, 4096, MIB), "000000020000000100000000");
        assert_eq!(parse_segment_name("000000020000000100000000", MIB), Some((2, 4096)));
        assert_eq!(parse_segment_name("000000010000000000000100", 16 * MIB), None, "no segment 0x100 at 16 MiB");
        assert_eq!(segment_of(lsn("0/3000028"), 16 * MIB), 3);
    }

    #[test]
    fn rule_lsn_restorable_needs_a_backup_stopped_before_it_and_every_segment_since_its_start() {
        let mut c = cluster(2..=9);
        backup(&mut c, "b1", 1, "0/200028", "0/300100");
        let r = c.lsn_restorable(1, lsn("0/800000")).unwrap();
        assert_eq!(r.backup_id, "b1");
        assert_eq!(r.segments.first().unwrap(), "000000010000000000000002");
        assert_eq!(r.segments.len(), 7);
        assert_eq!(
            c.lsn_restorable(1, lsn("0/300000")),
            Err(NotRestorable::NoBaseBackup { timeline: 1, lsn: lsn("0/300000") })
        );
        assert!(
            matches!(c.lsn_restorable(1, lsn("0/A00000")), Err(NotRestorable::MissingSegments { segments, .. }) if segments == vec!["00000001000000000000000A"])
        );
    }

    #[test]
    fn rule_a_missing_or_corrupt_segment_is_a_hole_named_by_its_segment() {
        let mut c = cluster(2..=9);
        backup(&mut c, "b1", 1, "0/200028", "0/300100");
        c.apply(&body(
            "artifact.verified",
            json!({"artifact": "pg:main/wal/000000010000000000000005", "method": "re-read", "outcome": "missing"}),
        ));
        let err = c.lsn_restorable(1, lsn("0/700000")).unwrap_err();
        assert_eq!(
            err,
            NotRestorable::MissingSegments {
                backup_id: "b1".into(),
                segments: vec!["000000010000000000000005".into()]
            }
        );
        assert!(err.to_string().contains("000000010000000000000005"));
        assert!(c.lsn_restorable(1, lsn("0/4FFFFF")).is_ok(), "before the hole is still restorable");
        c.apply(&body(
            "artifact.verified",
            json!({"artifact": "pg:main/wal/000000010000000000000005", "method": "re-read", "outcome": "ok"}),
        ));
        assert!(c.lsn_restorable(1, lsn("0/700000")).is_ok(), "re-verified: the hole is closed");
    }

    #[test]
    fn rule_a_gap_splits_the_windows_and_names_the_missing_segments() {
        let mut c = cluster((2..=5).chain(8..=12));
        backup(&mut c, "b1", 1, "0/200028", "0/300100");
        backup(&mut c, "b2", 1, "0/800028", "0/900100");
        let w = c.windows(1);
        assert_eq!(w.len(), 2, "{w:?}");
        assert_eq!((w[0].from_lsn, w[0].to_lsn), (lsn("0/300100"), lsn("0/5FFFFF")));
        assert_eq!(w[0].gap_after, vec!["000000010000000000000006", "000000010000000000000007"]);
        assert_eq!(
            (w[1].from_lsn, w[1].to_lsn, w[1].backups.clone()),
            (lsn("0/900100"), lsn("0/CFFFFF"), vec!["b2".to_owned()])
        );
        assert!(w[1].gap_after.is_empty());
    }

    #[test]
    fn rule_a_deleted_backup_anchors_nothing() {
        let mut c = cluster(2..=9);
        backup(&mut c, "b1", 1, "0/200028", "0/300100");
        c.apply(&body("artifact.deleted", json!({"artifact": "pg:main/base/b1", "reason": "retention"})));
        assert!(matches!(c.lsn_restorable(1, lsn("0/800000")), Err(NotRestorable::NoBaseBackup { .. })));
        assert!(c.windows(1).is_empty());
    }

    #[test]
    fn rule_timeline_switches_follow_the_history_file() {
        // Timeline 2 branched from 1 at 0/550000: segment 5 onwards is on timeline 2.
        let mut c = cluster(2..=6);
        backup(&mut c, "b1", 1, "0/200028", "0/300100");
        c.apply(&body(
            "pg.timeline_history",
            json!({"component": "pg:main", "timeline": 2, "parent_timeline": 1, "switch_lsn": "0/550000",
            "blake3": "cc".repeat(32), "location": "/a/00000002.history"}),
        ));
        for s in 5..=8 {
            archive(&mut c, 2, s);
        }
        assert_eq!(c.timeline_of_segment(2, 4), 1);
        assert_eq!(c.timeline_of_segment(2, 5), 2);
        let r = c.lsn_restorable(2, lsn("0/800000")).unwrap();
        assert_eq!(
            r.segments,
            vec![
                "000000010000000000000002",
                "000000010000000000000003",
                "000000010000000000000004",
                "000000020000000000000005",
                "000000020000000000000006",
                "000000020000000000000007",
                "000000020000000000000008"
            ]
        );
        assert_eq!(c.windows(2)[0].to_lsn, lsn("0/8FFFFF"));
        assert_eq!(c.windows(1)[0].to_lsn, lsn("0/6FFFFF"), "timeline 1 keeps its own window");
    }
}
