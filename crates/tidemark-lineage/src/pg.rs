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
//! * [`Cluster::time_restorable`]: time T is restorable when a backup finished
//!   at or before T and an observed position at or after T has a restorable
//!   LSN (that proves the WAL covering T is archived); the plan then targets
//!   the newest observed position at or before T.
//! * [`Cluster::windows`]: the maximal restorable ranges per timeline, with
//!   their earliest and latest restorable time and LSN, and the gaps that
//!   split them, with the missing segment names.
//!
//! State is small and incremental: sound archived segments are kept as runs
//! of consecutive segment numbers per timeline, so a million segments with
//! few holes are a handful of intervals, and every question is answered in
//! time proportional to the number of backups, timelines and holes — never
//! the number of segments. Observed positions (which grow without bound)
//! stay outside, behind the [`Positions`] trait the store implements.

use std::collections::{BTreeMap, BTreeSet};

use tidemark_core::event::{EventBody, VerifyOutcome};
use tidemark_core::{Digest32, Lsn, Timestamp};

/// PostgreSQL's default segment size, used until `component.registered` or
/// the first archived segment says otherwise.
pub const DEFAULT_SEGMENT_SIZE_BYTES: u64 = 16 * 1024 * 1024;
/// Most segment names spelled out in one "missing" answer; the rest are counted.
pub const MAX_NAMED_SEGMENTS: usize = 64;

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

/// Rule: a timeline history file (`TTTTTTTT.history`) lists, one line per
/// ancestor, `parent_tli <TAB> switch_lsn <TAB> reason`; the last line is
/// where this timeline branched off its parent. Returns (parent, switch LSN).
pub fn parse_history_file(text: &str) -> Option<(u32, Lsn)> {
    let line = text.lines().map(str::trim).rfind(|l| !l.is_empty() && !l.starts_with('#'))?;
    let mut fields = line.split_whitespace();
    let parent = fields.next()?.parse().ok()?;
    let lsn = Lsn::parse(fields.next()?).ok()?;
    Some((parent, lsn))
}

/// The state of one segment that was recorded at some point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, bincode::Encode, bincode::Decode)]
#[serde(rename_all = "snake_case")]
pub enum SegmentState {
    Archived,
    Missing,
    Corrupt,
    Deleted,
}

impl SegmentState {
    /// The state as the reports name it (`archived`, `missing`, …).
    pub fn name(self) -> &'static str {
        match self {
            SegmentState::Archived => "archived",
            SegmentState::Missing => "missing",
            SegmentState::Corrupt => "corrupt",
            SegmentState::Deleted => "deleted",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, bincode::Encode, bincode::Decode)]
pub struct BaseBackup {
    pub backup_id: String,
    pub label: String,
    pub timeline: u32,
    pub start_lsn: Lsn,
    pub stop_lsn: Lsn,
    pub start_time: Timestamp,
    pub stop_time: Timestamp,
    pub size_bytes: u64,
    pub location: String,
    pub tool: String,
    pub blake3: Option<Digest32>,
    pub deleted: bool,
}

/// Where an observed (LSN, time) pair came from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, bincode::Encode, bincode::Decode)]
#[serde(tag = "source", content = "name", rename_all = "snake_case")]
pub enum PositionSource {
    Position,
    RestorePoint(String),
    BackupStop(String),
}

/// One observation of the database: this LSN on this timeline at this database time.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, bincode::Encode, bincode::Decode)]
pub struct Position {
    pub lsn: Lsn,
    pub timeline: u32,
    pub observed_at: Timestamp,
    #[serde(flatten)]
    pub source: PositionSource,
}

/// The observed positions of one cluster, ordered by time and by LSN per
/// timeline. The store implements it over its index; tests over a `Vec`.
pub trait Positions {
    /// The newest observation on `tl` at or before `t`.
    fn last_at_or_before(&self, tl: u32, t: Timestamp) -> Option<Position>;
    /// The oldest observation on `tl` at or after `t`.
    fn first_at_or_after(&self, tl: u32, t: Timestamp) -> Option<Position>;
    /// The observation on `tl` with the highest LSN ≤ `lsn` (newest on ties).
    fn last_with_lsn_at_most(&self, tl: u32, lsn: Lsn) -> Option<Position>;
}

/// Positions in memory, for tests and small tools.
impl Positions for Vec<Position> {
    fn last_at_or_before(&self, tl: u32, t: Timestamp) -> Option<Position> {
        self.iter().filter(|p| p.timeline == tl && p.observed_at <= t).max_by_key(|p| (p.observed_at, p.lsn)).cloned()
    }
    fn first_at_or_after(&self, tl: u32, t: Timestamp) -> Option<Position> {
        self.iter()
            .filter(|p| p.timeline == tl && p.observed_at >= t)
            .min_by_key(|p| (p.observed_at, std::cmp::Reverse(p.lsn)))
            .cloned()
    }
    fn last_with_lsn_at_most(&self, tl: u32, lsn: Lsn) -> Option<Position> {
        self.iter().filter(|p| p.timeline == tl && p.lsn <= lsn).max_by_key(|p| (p.lsn, p.observed_at)).cloned()
    }
}

/// The positions an event adds, if any (positions, restore points, backup stops).
pub fn positions_of(body: &EventBody) -> Option<(String, Position)> {
    match body {
        EventBody::PgPosition(p) => Some((
            p.component.to_string(),
            Position { lsn: p.lsn, timeline: p.timeline, observed_at: p.observed_at, source: PositionSource::Position },
        )),
        EventBody::PgRestorePoint(r) => Some((
            r.component.to_string(),
            Position {
                lsn: r.lsn,
                timeline: r.timeline,
                observed_at: r.created_at,
                source: PositionSource::RestorePoint(r.name.clone()),
            },
        )),
        EventBody::PgBaseBackup(b) => Some((
            b.component.to_string(),
            Position {
                lsn: b.stop_lsn,
                timeline: b.timeline,
                observed_at: b.stop_time,
                source: PositionSource::BackupStop(b.backup_id.clone()),
            },
        )),
        _ => None,
    }
}

/// Consecutive segment numbers held as `start → end` (inclusive) intervals.
#[derive(Debug, Clone, Default, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Runs(BTreeMap<u64, u64>);

impl Runs {
    /// The run holding `segno`, as (start, end).
    pub fn run_of(&self, segno: u64) -> Option<(u64, u64)> {
        let (&s, &e) = self.0.range(..=segno).next_back()?;
        (e >= segno).then_some((s, e))
    }

    pub fn contains(&self, segno: u64) -> bool {
        self.run_of(segno).is_some()
    }

    pub fn insert(&mut self, segno: u64) {
        if self.contains(segno) {
            return;
        }
        let mut start = segno;
        let mut end = segno;
        if segno > 0
            && let Some((s, _)) = self.run_of(segno - 1)
        {
            start = s;
        }
        if let Some(e) = self.0.remove(&(segno + 1)) {
            end = e;
        }
        self.0.insert(start, end);
    }

    pub fn remove(&mut self, segno: u64) {
        let Some((s, e)) = self.run_of(segno) else { return };
        self.0.remove(&s);
        if s < segno {
            self.0.insert(s, segno - 1);
        }
        if segno < e {
            self.0.insert(segno + 1, e);
        }
    }

    /// The first segment ≥ `segno` that is in a run.
    pub fn next_present(&self, segno: u64) -> Option<u64> {
        if self.contains(segno) {
            return Some(segno);
        }
        self.0.range(segno..).next().map(|(s, _)| *s)
    }

    pub fn intervals(&self) -> usize {
        self.0.len()
    }
}

/// One cluster's recovery state, advanced event by event and persisted by the store.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Cluster {
    pub component: String,
    segment_size_bytes: u64,
    /// True once `component.registered` or an archived segment fixed the segment size.
    segment_size_known: bool,
    system_identifier: Option<String>,
    /// Per timeline: the segments archived and not since reported missing, corrupt or deleted.
    sound: BTreeMap<u32, Runs>,
    /// Segments reported missing, corrupt or deleted after being recorded.
    bad: BTreeMap<(u32, u64), SegmentState>,
    backups: BTreeMap<String, BaseBackup>,
    /// timeline → (parent, switch LSN).
    history: BTreeMap<u32, (u32, Lsn)>,
    timelines: BTreeSet<u32>,
    segments_recorded: u64,
}

/// Why an LSN or a time cannot be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum NotRestorable {
    #[error("no base backup on timeline {timeline}'s history finished at or before {lsn}")]
    NoBaseBackup { timeline: u32, lsn: Lsn },
    #[error("no base backup on timeline {timeline}'s history finished at or before {at}")]
    NoBackupBefore { timeline: u32, at: Timestamp },
    #[error(
        "WAL needed from base backup {backup_id} is not all in the archive: {missing_count} segment(s) missing: {}{}",
        segments.join(", "),
        if *missing_count as usize > segments.len() { ", …" } else { "" }
    )]
    MissingSegments { backup_id: String, segments: Vec<String>, missing_count: u64 },
    #[error("nothing was observed on timeline {timeline} at or before {at}: no position to restore to")]
    NoPositionBefore { timeline: u32, at: Timestamp },
    #[error(
        "no position observed at or after {at} on timeline {timeline}, so nothing proves the WAL covering {at} is archived{}",
        latest.as_ref().map(|p| format!(" (the newest is {} at {})", p.lsn, p.observed_at)).unwrap_or_default()
    )]
    NotYetObserved { timeline: u32, at: Timestamp, latest: Option<Position> },
    #[error("no restore point named {name:?} was recorded")]
    UnknownRestorePoint { name: String },
    #[error("nothing was ever recorded on timeline {timeline}")]
    UnknownTimeline { timeline: u32 },
}

/// What restoring to an LSN takes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Restorable {
    pub backup: BaseBackup,
    pub timeline: u32,
    pub target_lsn: Lsn,
    /// Segment numbers to replay: from the backup's start through the target.
    pub first_segment: u64,
    pub last_segment: u64,
}

/// The answer for a time: restore to `target` (the newest observation at or
/// before the time); `proof` is the observation at or after the time whose
/// LSN is restorable.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TimeRestorable {
    pub restorable: Restorable,
    pub target: Position,
    pub proof: Position,
}

/// A maximal restorable range on one timeline.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Window {
    pub timeline: u32,
    /// The earliest restorable LSN: the stop of the oldest backup anchoring the window.
    pub from_lsn: Lsn,
    /// The end of the last sound segment of the contiguous run.
    pub to_lsn: Lsn,
    pub from_time: Timestamp,
    /// The newest observed time whose LSN falls in the window: the latest restorable time.
    pub to_time: Timestamp,
    /// Backups whose stop falls inside the window.
    pub backups: Vec<String>,
    /// The missing segments right after the window (first [`MAX_NAMED_SEGMENTS`]), when WAL resumes after them.
    pub gap_after: Vec<String>,
    pub gap_after_count: u64,
}

impl Cluster {
    pub fn new(component: &str) -> Cluster {
        Cluster {
            component: component.to_owned(),
            segment_size_bytes: DEFAULT_SEGMENT_SIZE_BYTES,
            segment_size_known: false,
            system_identifier: None,
            sound: BTreeMap::new(),
            bad: BTreeMap::new(),
            backups: BTreeMap::new(),
            history: BTreeMap::new(),
            timelines: BTreeSet::new(),
            segments_recorded: 0,
        }
    }

    pub fn segment_size_bytes(&self) -> u64 {
        self.segment_size_bytes
    }

    pub fn system_identifier(&self) -> Option<&str> {
        self.system_identifier.as_deref()
    }

    pub fn timelines(&self) -> impl Iterator<Item = u32> + '_ {
        self.timelines.iter().copied()
    }

    pub fn backups(&self) -> impl Iterator<Item = &BaseBackup> {
        self.backups.values()
    }

    pub fn segments_recorded(&self) -> u64 {
        self.segments_recorded
    }

    /// Segments reported missing, corrupt or deleted, by name.
    pub fn unsound_segments(&self) -> Vec<(String, SegmentState)> {
        self.bad.iter().map(|((tl, s), st)| (segment_name(*tl, *s, self.segment_size_bytes), *st)).collect()
    }

    /// Intervals of sound segments over all timelines (a measure of the state's size).
    pub fn run_count(&self) -> usize {
        self.sound.values().map(Runs::intervals).sum()
    }

    /// The PostgreSQL component an event changes the state of, if any
    /// (called for every appended event: no allocation unless it is one).
    pub fn component_of(body: &EventBody) -> Option<String> {
        fn wal_or_base(a: &tidemark_core::ArtifactRef) -> Option<&str> {
            let path = &a.as_str()[a.component().len() + 1..];
            (path.starts_with("wal/") || path.starts_with("base/")).then(|| a.component())
        }
        let c = match body {
            EventBody::ComponentRegistered(r) if r.postgresql.is_some() => r.component.as_str(),
            EventBody::PgWalArchived(b) => b.component.as_str(),
            EventBody::PgTimelineHistory(b) => b.component.as_str(),
            EventBody::PgBaseBackup(b) => b.component.as_str(),
            EventBody::PgPosition(b) => b.component.as_str(),
            EventBody::PgRestorePoint(b) => b.component.as_str(),
            EventBody::ArtifactVerified(v) => wal_or_base(&v.artifact)?,
            EventBody::ArtifactDeleted(d) => wal_or_base(&d.artifact)?,
            _ => return None,
        };
        c.starts_with("pg:").then(|| c.to_owned())
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
                    self.segment_size_known = true;
                    self.system_identifier = Some(pg.system_identifier.clone());
                }
            }
            EventBody::PgWalArchived(w) if mine(&w.component) => {
                // A segment file is exactly one segment long: the first one tells the size
                // when the cluster was not registered first.
                if !self.segment_size_known
                    && w.size_bytes.is_power_of_two()
                    && (1 << 20..=1 << 30).contains(&w.size_bytes)
                {
                    self.segment_size_bytes = w.size_bytes;
                    self.segment_size_known = true;
                }
                if let Some((tl, segno)) = parse_segment_name(&w.segment, self.segment_size_bytes) {
                    self.sound.entry(tl).or_default().insert(segno);
                    self.bad.remove(&(tl, segno));
                    self.timelines.insert(tl);
                    self.segments_recorded += 1;
                }
            }
            EventBody::PgTimelineHistory(h) if mine(&h.component) => {
                self.history.insert(h.timeline, (h.parent_timeline, h.switch_lsn));
                self.timelines.extend([h.timeline, h.parent_timeline]);
            }
            EventBody::PgBaseBackup(b) if mine(&b.component) => {
                self.timelines.insert(b.timeline);
                self.backups.insert(
                    b.backup_id.clone(),
                    BaseBackup {
                        backup_id: b.backup_id.clone(),
                        label: b.label.clone(),
                        timeline: b.timeline,
                        start_lsn: b.start_lsn,
                        stop_lsn: b.stop_lsn,
                        start_time: b.start_time,
                        stop_time: b.stop_time,
                        size_bytes: b.size_bytes,
                        location: b.location.clone(),
                        tool: b.tool.clone(),
                        blake3: b.blake3,
                        deleted: false,
                    },
                );
            }
            EventBody::PgPosition(p) if mine(&p.component) => {
                self.timelines.insert(p.timeline);
            }
            EventBody::PgRestorePoint(p) if mine(&p.component) => {
                self.timelines.insert(p.timeline);
            }
            EventBody::ArtifactVerified(v) => {
                if let Some(key) = self.wal_ref_segment(v.artifact.as_str()) {
                    match v.outcome {
                        VerifyOutcome::Ok => {
                            // Sound again only if it was recorded and then reported bad.
                            if self.bad.remove(&key).is_some() {
                                self.sound.entry(key.0).or_default().insert(key.1);
                            }
                        }
                        VerifyOutcome::Missing | VerifyOutcome::Corrupt => {
                            let state = if v.outcome == VerifyOutcome::Missing {
                                SegmentState::Missing
                            } else {
                                SegmentState::Corrupt
                            };
                            if let Some(r) = self.sound.get_mut(&key.0) {
                                r.remove(key.1);
                            }
                            self.bad.insert(key, state);
                        }
                    }
                }
            }
            EventBody::ArtifactDeleted(d) => {
                if let Some(key) = self.wal_ref_segment(d.artifact.as_str()) {
                    if let Some(r) = self.sound.get_mut(&key.0) {
                        r.remove(key.1);
                    }
                    self.bad.insert(key, SegmentState::Deleted);
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

    /// The first segment number at which recovery on `tl` no longer reads
    /// timeline `t`'s files (`u64::MAX` for `tl` itself).
    fn piece_end(&self, tl: u32, t: u32) -> u64 {
        self.lineage(tl)
            .into_iter()
            .find(|(x, _)| *x == t)
            .and_then(|(_, left)| left)
            .map_or(u64::MAX, |s| segment_of(s, self.segment_size_bytes))
    }

    /// The last segment `e ≥ segno` such that every segment `segno..=e` is
    /// sound for recovery on `tl`; `None` when `segno` itself is not.
    fn sound_end_from(&self, tl: u32, segno: u64) -> Option<u64> {
        let mut s = segno;
        let mut end = None;
        loop {
            let t = self.timeline_of_segment(tl, s);
            let Some((_, run_end)) = self.sound.get(&t).and_then(|r| r.run_of(s)) else { return end };
            let piece_end = self.piece_end(tl, t);
            if run_end.saturating_add(1) < piece_end || piece_end == u64::MAX {
                return Some(run_end.min(piece_end.saturating_sub(1)));
            }
            end = Some(piece_end - 1);
            s = piece_end;
        }
    }

    /// The next sound segment ≥ `segno` for recovery on `tl`.
    fn next_sound(&self, tl: u32, segno: u64) -> Option<u64> {
        let mut s = segno;
        loop {
            let t = self.timeline_of_segment(tl, s);
            let piece_end = self.piece_end(tl, t);
            if let Some(n) = self.sound.get(&t).and_then(|r| r.next_present(s))
                && n < piece_end
            {
                return Some(n);
            }
            if piece_end == u64::MAX {
                return None;
            }
            s = piece_end;
        }
    }

    /// The segments of `from..=to` that are not sound on `tl`: the first
    /// [`MAX_NAMED_SEGMENTS`] names and the total count.
    fn missing_between(&self, tl: u32, from: u64, to: u64) -> (Vec<String>, u64) {
        let mut names = Vec::new();
        let mut count = 0u64;
        let mut s = from;
        while s <= to {
            if let Some(e) = self.sound_end_from(tl, s) {
                s = e.saturating_add(1);
                continue;
            }
            let resume = self.next_sound(tl, s).unwrap_or(u64::MAX).min(to.saturating_add(1));
            count += resume - s;
            let mut k = s;
            while k < resume && names.len() < MAX_NAMED_SEGMENTS {
                names.push(segment_name(self.timeline_of_segment(tl, k), k, self.segment_size_bytes));
                k += 1;
            }
            s = resume;
        }
        (names, count)
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

    fn restorable_from(&self, tl: u32, lsn: Lsn, backup: &BaseBackup) -> Result<Restorable, NotRestorable> {
        let first = segment_of(backup.start_lsn, self.segment_size_bytes);
        let last = segment_of(lsn, self.segment_size_bytes);
        if self.sound_end_from(tl, first).is_some_and(|e| e >= last) {
            return Ok(Restorable {
                backup: backup.clone(),
                timeline: tl,
                target_lsn: lsn,
                first_segment: first,
                last_segment: last,
            });
        }
        let (segments, missing_count) = self.missing_between(tl, first, last);
        Err(NotRestorable::MissingSegments { backup_id: backup.backup_id.clone(), segments, missing_count })
    }

    /// Rule: is `lsn` restorable on timeline `tl`, and from what.
    pub fn lsn_restorable(&self, tl: u32, lsn: Lsn) -> Result<Restorable, NotRestorable> {
        if !self.timelines.contains(&tl) {
            return Err(NotRestorable::UnknownTimeline { timeline: tl });
        }
        let backup = self
            .backups_for(tl)
            .into_iter()
            .filter(|b| b.stop_lsn <= lsn)
            .max_by_key(|b| (b.start_lsn, b.backup_id.clone()))
            .ok_or(NotRestorable::NoBaseBackup { timeline: tl, lsn })?;
        self.restorable_from(tl, lsn, backup)
    }

    /// The timeline a time refers to when none is named: the one with the
    /// newest observation at or before it (the timeline that was live then).
    pub fn timeline_at(&self, at: Timestamp, positions: &dyn Positions) -> Option<u32> {
        self.timelines
            .iter()
            .filter_map(|tl| positions.last_at_or_before(*tl, at).map(|p| ((p.observed_at, *tl), *tl)))
            .max()
            .map(|(_, tl)| tl)
    }

    /// Rule: time `at` is restorable on `tl` when a backup finished at or
    /// before it and an observation at or after it has a restorable LSN; the
    /// target is the newest observation at or before `at`.
    pub fn time_restorable(
        &self,
        at: Timestamp,
        timeline: Option<u32>,
        positions: &dyn Positions,
    ) -> Result<TimeRestorable, NotRestorable> {
        let tl = match timeline {
            Some(tl) if !self.timelines.contains(&tl) => return Err(NotRestorable::UnknownTimeline { timeline: tl }),
            Some(tl) => tl,
            None => self
                .timeline_at(at, positions)
                .ok_or(NotRestorable::NoPositionBefore { timeline: self.timelines.last().copied().unwrap_or(1), at })?,
        };
        let target = positions.last_at_or_before(tl, at).ok_or(NotRestorable::NoPositionBefore { timeline: tl, at })?;
        let proof = positions.first_at_or_after(tl, at).ok_or_else(|| NotRestorable::NotYetObserved {
            timeline: tl,
            at,
            latest: Some(target.clone()),
        })?;
        let backup = self
            .backups_for(tl)
            .into_iter()
            .filter(|b| b.stop_time <= at && b.stop_lsn <= target.lsn)
            .max_by_key(|b| (b.start_lsn, b.backup_id.clone()))
            .ok_or(NotRestorable::NoBackupBefore { timeline: tl, at })?;
        let mut restorable = self.restorable_from(tl, proof.lsn.max(target.lsn), backup)?;
        restorable.target_lsn = target.lsn;
        restorable.last_segment = segment_of(target.lsn, self.segment_size_bytes);
        Ok(TimeRestorable { restorable, target, proof })
    }

    /// Rule: a restore point is restorable when its LSN is, on its timeline.
    pub fn restore_point_restorable(
        &self,
        name: &str,
        positions: &dyn RestorePoints,
    ) -> Result<(Position, Restorable), NotRestorable> {
        let p =
            positions.restore_point(name).ok_or_else(|| NotRestorable::UnknownRestorePoint { name: name.into() })?;
        let r = self.lsn_restorable(p.timeline, p.lsn)?;
        Ok((p, r))
    }

    /// Every segment name a restore replays, in order.
    pub fn segment_names(&self, r: &Restorable) -> Vec<String> {
        (r.first_segment..=r.last_segment)
            .map(|s| segment_name(self.timeline_of_segment(r.timeline, s), s, self.segment_size_bytes))
            .collect()
    }

    /// The newest observed time on `tl`'s history whose LSN is ≤ `lsn`.
    fn observed_time_for(&self, tl: u32, lsn: Lsn, positions: &dyn Positions) -> Option<Timestamp> {
        for (t, left_at) in self.lineage(tl) {
            let cap = left_at.map_or(lsn, |s| Lsn(s.0.saturating_sub(1)).min(lsn));
            if let Some(p) = positions.last_with_lsn_at_most(t, cap) {
                return Some(p.observed_at);
            }
        }
        None
    }

    /// Rule: the maximal restorable ranges on `tl`, oldest first, each with
    /// the gap (missing segment names) that ends it, if WAL resumes after it.
    pub fn windows(&self, tl: u32, positions: &dyn Positions) -> Vec<Window> {
        let mut backups = self.backups_for(tl);
        backups.sort_by_key(|b| (b.start_lsn, b.backup_id.clone()));
        let size = self.segment_size_bytes;
        let mut windows: Vec<Window> = Vec::new();
        for b in backups {
            let first = segment_of(b.start_lsn, size);
            let stop = segment_of(b.stop_lsn, size);
            let Some(end) = self.sound_end_from(tl, first) else { continue };
            if end < stop {
                continue;
            }
            let to_lsn = Lsn((end + 1) * size - 1);
            match windows.last_mut() {
                Some(w) if w.to_lsn == to_lsn => w.backups.push(b.backup_id.clone()),
                _ => {
                    let (gap_after, gap_after_count) = match self.next_sound(tl, end + 1) {
                        Some(next) => self.missing_between(tl, end + 1, next - 1),
                        None => (Vec::new(), 0),
                    };
                    let to_time = self.observed_time_for(tl, to_lsn, positions).unwrap_or(b.stop_time).max(b.stop_time);
                    windows.push(Window {
                        timeline: tl,
                        from_lsn: b.stop_lsn,
                        to_lsn,
                        from_time: b.stop_time,
                        to_time,
                        backups: vec![b.backup_id.clone()],
                        gap_after,
                        gap_after_count,
                    })
                }
            }
        }
        windows
    }
}

/// Restore points by name (the newest one of a name wins, as in the ledger).
pub trait RestorePoints {
    fn restore_point(&self, name: &str) -> Option<Position>;
}

impl RestorePoints for Vec<Position> {
    fn restore_point(&self, name: &str) -> Option<Position> {
        self.iter()
            .filter(|p| matches!(&p.source, PositionSource::RestorePoint(n) if n == name))
            .max_by_key(|p| p.observed_at)
            .cloned()
    }
}

/// One file in a cluster's archive as the ledger recorded it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, bincode::Encode, bincode::Decode)]
pub struct ArchivedFile {
    pub component: String,
    /// `TTTTTTTTXXXXXXXXYYYYYYYY` for segments, `TTTTTTTT.history` for history files.
    pub file_name: String,
    pub timeline: u32,
    pub size_bytes: Option<u64>,
    pub blake3: tidemark_core::Digest32,
    pub sha256: Option<tidemark_core::Digest32>,
    pub location: String,
    /// The entry that recorded it.
    pub seq: u64,
}

/// One page of a cluster's archived files in name order (`GET /v1/pg/files`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FilesPage {
    pub files: Vec<ArchivedFile>,
    /// Pass as `after` for the next page; none on the last page.
    pub next_after: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tidemark_core::event::Event;
    use tidemark_core::{ActorId, EventId};

    #[test]
    fn rule_a_segment_state_is_named_as_it_serialises() {
        for s in [SegmentState::Archived, SegmentState::Missing, SegmentState::Corrupt, SegmentState::Deleted] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.name());
        }
    }

    const MIB: u64 = 1024 * 1024;

    fn body(kind: &str, body: serde_json::Value) -> EventBody {
        let draft = json!({"kind": kind, "body": body});
        Event::from_draft(draft, ActorId([0; 16]), EventId::new_v7(1, [0; 10]), Timestamp::EPOCH).unwrap().body
    }

    fn lsn(s: &str) -> Lsn {
        Lsn::parse(s).unwrap()
    }

    fn t(s: &str) -> Timestamp {
        Timestamp::parse_rfc3339(&format!("2026-11-23T{s}Z")).unwrap()
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

    fn backup_at(c: &mut Cluster, id: &str, tl: u32, start: &str, stop: &str, stop_time: &str) -> Position {
        let b = body(
            "pg.base_backup",
            json!({"component": "pg:main", "backup_id": id, "label": id, "timeline": tl,
            "start_lsn": start, "stop_lsn": stop, "start_time": "2026-11-23T00:00:00.000000Z", "stop_time": t(stop_time),
            "size_bytes": 1, "location": "/b", "tool": "pg_basebackup"}),
        );
        c.apply(&b);
        positions_of(&b).unwrap().1
    }

    fn backup(c: &mut Cluster, id: &str, tl: u32, start: &str, stop: &str) {
        backup_at(c, id, tl, start, stop, "01:05:00");
    }

    fn pos(tl: u32, l: &str, at: &str) -> Position {
        Position { lsn: lsn(l), timeline: tl, observed_at: t(at), source: PositionSource::Position }
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
    fn rule_history_file_last_line_names_parent_and_switch_point() {
        let text = "1\t0/5000000\tno recovery target specified\n\n2\t0/9A000A0\tbefore 2026-11-23 02:00:00+00\n";
        assert_eq!(parse_history_file(text), Some((2, lsn("0/9A000A0"))));
        assert_eq!(parse_history_file(""), None);
    }

    #[test]
    fn runs_merge_and_split_like_sets_of_segments() {
        let mut r = Runs::default();
        for s in [1, 2, 3, 5, 4, 9] {
            r.insert(s);
        }
        assert_eq!(r.intervals(), 2);
        assert_eq!(r.run_of(3), Some((1, 5)));
        r.remove(3);
        assert_eq!((r.run_of(2), r.run_of(4), r.contains(3)), (Some((1, 2)), Some((4, 5)), false));
        assert_eq!(r.next_present(6), Some(9));
        assert_eq!(r.next_present(10), None);
    }

    #[test]
    fn rule_segment_size_comes_from_the_first_segment_when_not_registered() {
        let mut c = Cluster::new("pg:main");
        archive(&mut c, 1, 0x1F0); // beyond 16 MiB's 0xFF per id: must be read as 1 MiB
        assert_eq!(c.segment_size_bytes(), MIB);
        assert_eq!(c.run_count(), 1);
    }

    #[test]
    fn rule_lsn_restorable_needs_a_backup_stopped_before_it_and_every_segment_since_its_start() {
        let mut c = cluster(2..=9);
        backup(&mut c, "b1", 1, "0/200028", "0/300100");
        let r = c.lsn_restorable(1, lsn("0/800000")).unwrap();
        assert_eq!(r.backup.backup_id, "b1");
        let names = c.segment_names(&r);
        assert_eq!(names.first().unwrap(), "000000010000000000000002");
        assert_eq!(names.len(), 7);
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
                segments: vec!["000000010000000000000005".into()],
                missing_count: 1
            }
        );
        assert!(err.to_string().contains("000000010000000000000005"));
        assert!(c.lsn_restorable(1, lsn("0/4FFFFF")).is_ok(), "before the hole is still restorable");
        assert_eq!(c.unsound_segments(), vec![("000000010000000000000005".to_owned(), SegmentState::Missing)]);
        c.apply(&body(
            "artifact.verified",
            json!({"artifact": "pg:main/wal/000000010000000000000005", "method": "re-read", "outcome": "ok"}),
        ));
        assert!(c.lsn_restorable(1, lsn("0/700000")).is_ok(), "re-verified: the hole is closed");
        c.apply(&body(
            "artifact.verified",
            json!({"artifact": "pg:main/wal/000000010000000000000006", "method": "re-read", "outcome": "corrupt"}),
        ));
        assert!(c.lsn_restorable(1, lsn("0/700000")).is_err(), "a corrupt segment is a hole too");
    }

    #[test]
    fn rule_missing_segment_lists_are_bounded_and_counted() {
        let mut c = cluster([2, 3, 500]);
        backup(&mut c, "b1", 1, "0/200028", "0/300100");
        let Err(NotRestorable::MissingSegments { segments, missing_count, .. }) =
            c.lsn_restorable(1, lsn("0/1F400000"))
        else {
            panic!("expected missing segments")
        };
        assert_eq!(segments.len(), MAX_NAMED_SEGMENTS);
        assert_eq!(missing_count, 500 - 4);
    }

    #[test]
    fn rule_a_gap_splits_the_windows_and_names_the_missing_segments() {
        let mut c = cluster((2..=5).chain(8..=12));
        backup(&mut c, "b1", 1, "0/200028", "0/300100");
        backup(&mut c, "b2", 1, "0/800028", "0/900100");
        let positions = vec![pos(1, "0/5F0000", "01:30:00"), pos(1, "0/C00000", "02:30:00")];
        let w = c.windows(1, &positions);
        assert_eq!(w.len(), 2, "{w:?}");
        assert_eq!((w[0].from_lsn, w[0].to_lsn), (lsn("0/300100"), lsn("0/5FFFFF")));
        assert_eq!(w[0].to_time, t("01:30:00"), "latest restorable time: the newest observation inside the window");
        assert_eq!(w[0].gap_after, vec!["000000010000000000000006", "000000010000000000000007"]);
        assert_eq!(
            (w[1].from_lsn, w[1].to_lsn, w[1].backups.clone()),
            (lsn("0/900100"), lsn("0/CFFFFF"), vec!["b2".to_owned()])
        );
        assert_eq!(w[1].to_time, t("02:30:00"));
        assert!(w[1].gap_after.is_empty());
    }

    #[test]
    fn rule_a_deleted_backup_anchors_nothing() {
        let mut c = cluster(2..=9);
        backup(&mut c, "b1", 1, "0/200028", "0/300100");
        c.apply(&body("artifact.deleted", json!({"artifact": "pg:main/base/b1", "reason": "retention"})));
        assert!(matches!(c.lsn_restorable(1, lsn("0/800000")), Err(NotRestorable::NoBaseBackup { .. })));
        assert!(c.windows(1, &Vec::new()).is_empty());
    }

    #[test]
    fn rule_a_deleted_segment_is_a_hole() {
        let mut c = cluster(2..=9);
        backup(&mut c, "b1", 1, "0/200028", "0/300100");
        c.apply(&body(
            "artifact.deleted",
            json!({"artifact": "pg:main/wal/000000010000000000000004", "reason": "retention"}),
        ));
        assert!(matches!(c.lsn_restorable(1, lsn("0/800000")), Err(NotRestorable::MissingSegments { .. })));
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
            c.segment_names(&r),
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
        assert_eq!(c.windows(2, &Vec::new())[0].to_lsn, lsn("0/8FFFFF"));
        assert_eq!(c.windows(1, &Vec::new())[0].to_lsn, lsn("0/6FFFFF"), "timeline 1 keeps its own window");
        // A hole in timeline 1 before the switch breaks timeline 2 too; one after it does not.
        c.apply(&body(
            "artifact.verified",
            json!({"artifact": "pg:main/wal/000000010000000000000006", "method": "re-read", "outcome": "missing"}),
        ));
        assert!(c.lsn_restorable(2, lsn("0/800000")).is_ok());
        c.apply(&body(
            "artifact.verified",
            json!({"artifact": "pg:main/wal/000000010000000000000003", "method": "re-read", "outcome": "missing"}),
        ));
        assert!(c.lsn_restorable(2, lsn("0/800000")).is_err());
    }

    #[test]
    fn rule_time_is_restorable_when_an_observation_after_it_is_and_targets_the_one_before() {
        let mut c = cluster(2..=9);
        let stop = backup_at(&mut c, "b1", 1, "0/200028", "0/300100", "01:05:00");
        let positions =
            vec![stop, pos(1, "0/500000", "01:10:00"), pos(1, "0/700000", "01:20:00"), pos(1, "0/A00000", "01:30:00")];
        let a = c.time_restorable(t("01:15:00"), None, &positions).unwrap();
        assert_eq!(a.target.lsn, lsn("0/500000"), "the newest observation at or before T is the target");
        assert_eq!(a.proof.lsn, lsn("0/700000"));
        assert_eq!(a.restorable.last_segment, 5);
        // After 01:20 the next observation is at 0/A00000, whose segment is not archived.
        let err = c.time_restorable(t("01:25:00"), None, &positions).unwrap_err();
        assert!(
            matches!(&err, NotRestorable::MissingSegments { segments, .. } if segments == &vec!["00000001000000000000000A"]),
            "{err}"
        );
        // After the newest observation nothing proves WAL is archived.
        assert!(matches!(
            c.time_restorable(t("01:31:00"), None, &positions),
            Err(NotRestorable::NotYetObserved { .. })
        ));
        // Before the backup finished there is nothing to restore from.
        let early = vec![pos(1, "0/250000", "01:00:00"), pos(1, "0/500000", "01:10:00")];
        assert!(matches!(c.time_restorable(t("01:01:00"), None, &early), Err(NotRestorable::NoBackupBefore { .. })));
        assert!(matches!(c.time_restorable(t("00:01:00"), None, &early), Err(NotRestorable::NoPositionBefore { .. })));
    }

    #[test]
    fn rule_a_time_defaults_to_the_timeline_live_at_that_time() {
        let mut c = cluster(2..=9);
        c.apply(&body(
            "pg.timeline_history",
            json!({"component": "pg:main", "timeline": 2, "parent_timeline": 1, "switch_lsn": "0/550000",
            "blake3": "cc".repeat(32), "location": "/a/00000002.history"}),
        ));
        let positions = vec![pos(1, "0/400000", "01:00:00"), pos(2, "0/600000", "02:00:00")];
        assert_eq!(c.timeline_at(t("01:30:00"), &positions), Some(1));
        assert_eq!(c.timeline_at(t("02:30:00"), &positions), Some(2));
    }

    #[test]
    fn rule_a_restore_point_is_restorable_when_its_lsn_is() {
        let mut c = cluster(2..=9);
        backup(&mut c, "b1", 1, "0/200028", "0/300100");
        let rp = Position {
            lsn: lsn("0/600100"),
            timeline: 1,
            observed_at: t("01:40:00"),
            source: PositionSource::RestorePoint("before-migration".into()),
        };
        let positions = vec![rp];
        let (p, r) = c.restore_point_restorable("before-migration", &positions).unwrap();
        assert_eq!((p.lsn, r.last_segment), (lsn("0/600100"), 6));
        assert_eq!(
            c.restore_point_restorable("nope", &positions).unwrap_err(),
            NotRestorable::UnknownRestorePoint { name: "nope".into() }
        );
    }
}
