//! Groups (DESIGN §6, "Groups"): the moments at which a whole application —
//! PostgreSQL clusters, S3 buckets and snapshot-only stores — can be
//! restored *consistently*, each with its consistency class.
//!
//! [`Catalog`] is the incremental state: registered components, group
//! definitions, markers, snapshots, drills and restores. Its
//! [`Catalog::admit`] is the admission rule the store applies to every new
//! event (a marker for an unknown group, or one that leaves a component
//! unpinned, is refused before it reaches the log). [`recovery_points`]
//! judges markers and correlated windows against the continuous components'
//! state; nothing here reads a clock or a file.

use std::collections::BTreeMap;

use rayon::prelude::*;

use tidemark_core::event::{
    ComponentRegistered, DrillResult, EventBody, MarkerPart, Outcome, S3ClockEvidence, VerifyOutcome,
};
use tidemark_core::{Digest32, Lsn, Timestamp};

use crate::pg::{self, Cluster};
use crate::pg_plan::PositionIndex;
use crate::s3::{self, Bucket, KeyHistory};

/// What kind of store a component is, from its name's prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ComponentKind {
    Postgresql,
    S3,
    Snapshot,
}

impl ComponentKind {
    pub fn of(component: &str) -> Option<ComponentKind> {
        match component.split(':').next() {
            Some("pg") => Some(ComponentKind::Postgresql),
            Some("s3") => Some(ComponentKind::S3),
            Some("snap") => Some(ComponentKind::Snapshot),
            _ => None,
        }
    }
}

/// A group as last defined.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, bincode::Encode, bincode::Decode)]
pub struct GroupDef {
    pub name: String,
    pub components: Vec<String>,
    pub max_skew_ms: u64,
    pub defined_at: Timestamp,
    pub seq: u64,
}

/// A recorded marker: a coordinated point, or a quiesced one (writers stopped).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, bincode::Encode, bincode::Decode)]
pub struct Marker {
    pub group: String,
    pub marker_id: String,
    /// The marked moment: the pinned S3 time when there is one, else when it was taken
    /// (a quiesced marker without S3: when writers were stopped).
    pub at: Timestamp,
    /// `(stopped, resumed)` for a quiesced marker.
    pub quiesced: Option<(Timestamp, Timestamp)>,
    pub parts: Vec<MarkerPart>,
    pub seq: u64,
}

/// Where a recorded snapshot stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, bincode::Encode, bincode::Decode)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotState {
    Present,
    Deleted,
    Missing,
    Corrupt,
}

/// A snapshot of a snapshot-only component, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, bincode::Encode, bincode::Decode)]
pub struct Snapshot {
    pub component: String,
    pub snapshot_id: String,
    pub taken_at: Timestamp,
    pub method: String,
    pub size_bytes: u64,
    pub blake3: Option<Digest32>,
    pub location: String,
    pub seq: u64,
    pub state: SnapshotState,
}

/// A drill or a restore of one of a group's recovery points.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, bincode::Encode, bincode::Decode)]
pub struct Activity {
    pub kind: ActivityKind,
    pub group: String,
    /// A marker id, or the RFC 3339 time of a correlated point.
    pub recovery_point: String,
    pub plan_digest: Digest32,
    pub passed: bool,
    /// "passed"/"failed" for drills, the outcome for restores.
    pub result: String,
    pub at: Timestamp,
    pub seq: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, bincode::Encode, bincode::Decode)]
#[serde(rename_all = "snake_case")]
pub enum ActivityKind {
    Drill,
    Restore,
}

/// One group: its definition and what was recorded about it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Group {
    pub def: Option<GroupDef>,
    /// Sorted by (at, seq).
    pub markers: Vec<Marker>,
    pub marker_ids: BTreeMap<String, u64>,
    /// In log order.
    pub activities: Vec<Activity>,
}

/// The small part of the catalog, stored whole; markers and activities are stored one per key.
#[derive(Debug, Clone, PartialEq, Eq, Default, bincode::Encode, bincode::Decode)]
pub struct CatalogCore {
    pub components: BTreeMap<String, ComponentRegistered>,
    pub groups: BTreeMap<String, GroupDef>,
    pub snapshots: BTreeMap<(String, String), Snapshot>,
}

/// What one admitted event changed, for the store to persist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Core,
    Marker(Marker),
    Activity(Activity),
}

/// The catalog of components, groups, markers, snapshots, drills and restores.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Catalog {
    pub components: BTreeMap<String, ComponentRegistered>,
    pub groups: BTreeMap<String, Group>,
    pub snapshots: BTreeMap<(String, String), Snapshot>,
}

/// True for the events the catalog keeps (everything else passes it by untouched).
pub fn concerns_catalog(body: &EventBody) -> bool {
    match body {
        EventBody::ComponentRegistered(_)
        | EventBody::GroupDefined(_)
        | EventBody::SnapshotTaken(_)
        | EventBody::MarkerPoint(_)
        | EventBody::MarkerQuiesced(_)
        | EventBody::DrillCompleted(_)
        | EventBody::RestoreTestSelected(_)
        | EventBody::RestorePerformed(_) => true,
        EventBody::ArtifactDeleted(a) => a.artifact.as_str().contains("/snapshot/"),
        EventBody::ArtifactVerified(a) => a.artifact.as_str().contains("/snapshot/"),
        _ => false,
    }
}

fn snapshot_ref(artifact: &str) -> Option<(String, String)> {
    let (component, id) = artifact.split_once("/snapshot/")?;
    Some((component.to_owned(), id.to_owned()))
}

fn marker_at(parts: &[MarkerPart], fallback: Timestamp) -> Timestamp {
    parts.iter().filter_map(|p| p.s3_watermark).min().unwrap_or(fallback)
}

impl Catalog {
    pub fn from_parts(core: CatalogCore, markers: Vec<Marker>, activities: Vec<Activity>) -> Catalog {
        let mut groups: BTreeMap<String, Group> =
            core.groups.into_iter().map(|(name, def)| (name, Group { def: Some(def), ..Group::default() })).collect();
        for m in markers {
            let g = groups.entry(m.group.clone()).or_default();
            g.marker_ids.insert(m.marker_id.clone(), m.seq);
            g.markers.push(m);
        }
        for a in activities {
            groups.entry(a.group.clone()).or_default().activities.push(a);
        }
        for g in groups.values_mut() {
            g.markers.sort_by_key(|m| (m.at, m.seq));
            g.activities.sort_by_key(|a| a.seq);
        }
        Catalog { components: core.components, groups, snapshots: core.snapshots }
    }

    pub fn core(&self) -> CatalogCore {
        CatalogCore {
            components: self.components.clone(),
            groups: self.groups.iter().filter_map(|(n, g)| g.def.clone().map(|d| (n.clone(), d))).collect(),
            snapshots: self.snapshots.clone(),
        }
    }

    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.get(name).filter(|g| g.def.is_some())
    }

    /// The small part of the catalog — components, group definitions,
    /// snapshots — without markers, drills or restores: what one append
    /// batch's admission works on (see [`Catalog::admit_over`]), so a batch
    /// never copies a history that only grows.
    pub fn scratch(&self) -> Catalog {
        Catalog {
            components: self.components.clone(),
            groups: self
                .groups
                .iter()
                .filter(|(_, g)| g.def.is_some())
                .map(|(n, g)| (n.clone(), Group { def: g.def.clone(), ..Group::default() }))
                .collect(),
            snapshots: self.snapshots.clone(),
        }
    }

    /// Takes in a batch admitted on [`Catalog::scratch`]: its small part,
    /// then its new markers, drills and restores.
    pub fn absorb(&mut self, scratch: Catalog, changes: Vec<Change>) {
        self.components = scratch.components;
        self.snapshots = scratch.snapshots;
        for (name, g) in scratch.groups {
            self.groups.entry(name).or_default().def = g.def;
        }
        for c in changes {
            match c {
                Change::Core => {}
                Change::Marker(m) => {
                    self.add_marker(m);
                }
                Change::Activity(a) => {
                    self.add_activity(a);
                }
            }
        }
    }

    /// Rule (admission): refuses an event that contradicts what the catalog
    /// knows, with the reason; otherwise applies it.
    pub fn admit(&mut self, seq: u64, occurred_at: Timestamp, body: &EventBody) -> Result<Option<Change>, AdmitError> {
        self.admit_over(&Catalog::default(), seq, occurred_at, body)
    }

    /// [`Catalog::admit`] on a scratch copy (`self`) whose markers live in `base`.
    pub fn admit_over(
        &mut self,
        base: &Catalog,
        seq: u64,
        occurred_at: Timestamp,
        body: &EventBody,
    ) -> Result<Option<Change>, AdmitError> {
        match body {
            EventBody::GroupDefined(g) => {
                for c in &g.components {
                    let Some(kind) = ComponentKind::of(c.as_str()) else {
                        return Err(AdmitError::Contradicts(format!(
                            "component {c} is not of a kind a group can hold (pg:, s3:, snap:)"
                        )));
                    };
                    if !self.components.contains_key(c.as_str()) {
                        let how = match kind {
                            ComponentKind::Postgresql => "tidemark pg register",
                            ComponentKind::S3 => "tidemark s3 register",
                            ComponentKind::Snapshot => "tidemark snapshot register",
                        };
                        return Err(AdmitError::Contradicts(format!(
                            "group {}: component {c} is not registered; register it first (`{how}`)",
                            g.group
                        )));
                    }
                }
            }
            EventBody::MarkerPoint(m) => {
                self.check_marker(base, m.group.as_str(), m.marker_id.as_str(), &m.components)?
            }
            EventBody::MarkerQuiesced(m) => {
                self.check_marker(base, m.group.as_str(), m.marker_id.as_str(), &m.components)?
            }
            EventBody::SnapshotTaken(s) => {
                if let Some(existing) = self.snapshots.get(&(s.component.to_string(), s.snapshot_id.clone())) {
                    return Err(AdmitError::IdReused(format!(
                        "snapshot {} of {} is already recorded (entry {}); a new snapshot needs a new id",
                        s.snapshot_id, s.component, existing.seq
                    )));
                }
            }
            EventBody::DrillCompleted(d) if self.group(d.group.as_str()).is_none() => {
                return Err(AdmitError::Contradicts(format!("drill of group {}: no such group is defined", d.group)));
            }
            EventBody::RestoreTestSelected(t) => {
                let known = self.group(t.group.as_str()).or_else(|| base.group(t.group.as_str()));
                let Some(g) = known else {
                    return Err(AdmitError::Contradicts(format!(
                        "restore test of group {}: no such group is defined",
                        t.group
                    )));
                };
                let marked = g.marker_ids.contains_key(&t.recovery_point)
                    || base.group(t.group.as_str()).is_some_and(|b| b.marker_ids.contains_key(&t.recovery_point));
                if !marked {
                    return Err(AdmitError::Contradicts(format!(
                        "restore test of group {}: no marker {} is recorded",
                        t.group, t.recovery_point
                    )));
                }
            }
            _ => {}
        }
        Ok(self.apply(seq, occurred_at, body))
    }

    /// Rule: S3 facts are admitted only about a component registered with
    /// its endpoint and bucket (so a scan cannot invent one, and a restore
    /// always knows where the bucket is).
    pub fn check_s3_registered(&self, component: &str) -> Result<(), AdmitError> {
        match self.components.get(component) {
            Some(r) if r.s3.is_some() => Ok(()),
            Some(_) => Err(AdmitError::Contradicts(format!("{component} is registered, but not as an S3 bucket"))),
            None => Err(AdmitError::Contradicts(format!(
                "{component} is not registered; register its endpoint and bucket first (`tidemark s3 register --component {component} …`)"
            ))),
        }
    }

    fn check_marker(
        &self,
        base: &Catalog,
        group: &str,
        marker_id: &str,
        parts: &[MarkerPart],
    ) -> Result<(), AdmitError> {
        let Some(g) = self.group(group) else {
            return Err(AdmitError::Contradicts(format!(
                "marker {marker_id}: group {group} is not defined (`tidemark group define` first)"
            )));
        };
        let earlier = base.groups.get(group).and_then(|b| b.marker_ids.get(marker_id));
        if let Some(seq) = g.marker_ids.get(marker_id).or(earlier) {
            return Err(AdmitError::IdReused(format!(
                "marker {marker_id} of group {group} is already entry {seq}; a new marker needs a new id"
            )));
        }
        let def = g.def.as_ref().expect("group() only returns defined groups");
        for p in parts {
            let c = p.component.as_str();
            if !def.components.iter().any(|x| x == c) {
                return Err(AdmitError::Contradicts(format!(
                    "marker {marker_id}: component {c} is not in group {group}"
                )));
            }
            let kind = ComponentKind::of(c);
            let fits = match kind {
                Some(ComponentKind::Postgresql) => p.pg_lsn.is_some(),
                Some(ComponentKind::S3) => p.s3_watermark.is_some(),
                Some(ComponentKind::Snapshot) => p.snapshot_id.is_some(),
                None => false,
            };
            if !fits {
                return Err(AdmitError::Contradicts(format!(
                    "marker {marker_id}: component {c} must be pinned by its own kind (pg: pg_lsn, s3: s3_watermark, snap: snapshot_id)"
                )));
            }
            if let Some(id) = &p.snapshot_id
                && !self.snapshots.contains_key(&(c.to_owned(), id.clone()))
            {
                return Err(AdmitError::Contradicts(format!(
                    "marker {marker_id}: snapshot {id} of {c} is not recorded (`tidemark snapshot record` first)"
                )));
            }
        }
        for c in &def.components {
            if !parts.iter().any(|p| p.component.as_str() == c) {
                return Err(AdmitError::Contradicts(format!(
                    "marker {marker_id}: component {c} of group {group} is not pinned"
                )));
            }
        }
        Ok(())
    }

    /// Applies an event without judging it (rebuilding from a log that was admitted already).
    pub fn apply(&mut self, seq: u64, occurred_at: Timestamp, body: &EventBody) -> Option<Change> {
        match body {
            EventBody::ComponentRegistered(r) => {
                self.components.insert(r.component.to_string(), r.clone());
                Some(Change::Core)
            }
            EventBody::GroupDefined(g) => {
                let def = GroupDef {
                    name: g.group.to_string(),
                    components: g.components.iter().map(ToString::to_string).collect(),
                    max_skew_ms: g.max_skew_ms,
                    defined_at: occurred_at,
                    seq,
                };
                let name = def.name.clone();
                self.groups.entry(name).or_default().def = Some(def);
                Some(Change::Core)
            }
            EventBody::SnapshotTaken(s) => {
                self.snapshots.insert(
                    (s.component.to_string(), s.snapshot_id.clone()),
                    Snapshot {
                        component: s.component.to_string(),
                        snapshot_id: s.snapshot_id.clone(),
                        taken_at: s.taken_at,
                        method: s.method.clone(),
                        size_bytes: s.size_bytes,
                        blake3: s.blake3,
                        location: s.location.clone(),
                        seq,
                        state: SnapshotState::Present,
                    },
                );
                Some(Change::Core)
            }
            EventBody::ArtifactDeleted(a) => self.snapshot_state(a.artifact.as_str(), SnapshotState::Deleted),
            EventBody::ArtifactVerified(a) => self.snapshot_state(
                a.artifact.as_str(),
                match a.outcome {
                    VerifyOutcome::Ok => SnapshotState::Present,
                    VerifyOutcome::Missing => SnapshotState::Missing,
                    VerifyOutcome::Corrupt => SnapshotState::Corrupt,
                },
            ),
            EventBody::MarkerPoint(m) => Some(self.add_marker(Marker {
                group: m.group.to_string(),
                marker_id: m.marker_id.to_string(),
                at: marker_at(&m.components, m.taken_at),
                quiesced: None,
                parts: m.components.clone(),
                seq,
            })),
            EventBody::MarkerQuiesced(m) => Some(self.add_marker(Marker {
                group: m.group.to_string(),
                marker_id: m.marker_id.to_string(),
                at: marker_at(&m.components, m.writers_stopped_at),
                quiesced: Some((m.writers_stopped_at, m.writers_resumed_at)),
                parts: m.components.clone(),
                seq,
            })),
            EventBody::DrillCompleted(d) => Some(self.add_activity(Activity {
                kind: ActivityKind::Drill,
                group: d.group.to_string(),
                recovery_point: d.recovery_point.clone(),
                plan_digest: d.plan_digest,
                passed: d.result == DrillResult::Passed,
                result: if d.result == DrillResult::Passed { "passed" } else { "failed" }.into(),
                at: occurred_at,
                seq,
            })),
            EventBody::RestorePerformed(r) if self.group(&r.target).is_some() => Some(
                self.add_activity(Activity {
                    kind: ActivityKind::Restore,
                    group: r.target.clone(),
                    recovery_point: r.recovery_point.clone(),
                    plan_digest: r.plan_digest,
                    passed: r.outcome == Outcome::Succeeded,
                    result: match r.outcome {
                        Outcome::Succeeded => "succeeded",
                        Outcome::Failed => "failed",
                        Outcome::Partial => "partial",
                    }
                    .into(),
                    at: occurred_at,
                    seq,
                }),
            ),
            _ => None,
        }
    }

    fn snapshot_state(&mut self, artifact: &str, state: SnapshotState) -> Option<Change> {
        let key = snapshot_ref(artifact)?;
        let s = self.snapshots.get_mut(&key)?;
        if s.state == SnapshotState::Deleted {
            return None;
        }
        s.state = state;
        Some(Change::Core)
    }

    fn add_marker(&mut self, m: Marker) -> Change {
        let g = self.groups.entry(m.group.clone()).or_default();
        g.marker_ids.insert(m.marker_id.clone(), m.seq);
        let i = g.markers.partition_point(|x| (x.at, x.seq) <= (m.at, m.seq));
        g.markers.insert(i, m.clone());
        Change::Marker(m)
    }

    fn add_activity(&mut self, a: Activity) -> Change {
        self.groups.entry(a.group.clone()).or_default().activities.push(a.clone());
        Change::Activity(a)
    }
}

// ---------------------------------------------------------------- judging

/// A PostgreSQL component's state, as the store hands it over.
pub struct PgInput<'a> {
    pub cluster: &'a Cluster,
    pub positions: &'a dyn PositionIndex,
}

/// An S3 component's state: its summary, the histories of its problem keys,
/// and where to find the keys written near a time.
pub struct S3Input<'a> {
    pub bucket: &'a Bucket,
    pub problems: &'a [(String, KeyHistory)],
    pub written: &'a dyn WrittenBetween,
}

/// The keys with an entry stamped within `[from, to]`, with their histories
/// (the store reads its time index; tests hold histories in memory).
pub trait WrittenBetween: Sync {
    fn written_between(&self, from: Timestamp, to: Timestamp) -> Result<Vec<(String, KeyHistory)>, String>;
    /// Every run of whole seconds in which some entry was stamped (`s3::busy_runs`).
    fn busy(&self) -> Result<Vec<(Timestamp, Timestamp)>, String>;
}

impl WrittenBetween for Vec<(String, KeyHistory)> {
    fn written_between(&self, from: Timestamp, to: Timestamp) -> Result<Vec<(String, KeyHistory)>, String> {
        Ok(self
            .iter()
            .filter(|(_, h)| h.entries.iter().any(|e| from <= e.last_modified && e.last_modified <= to))
            .cloned()
            .collect())
    }

    fn busy(&self) -> Result<Vec<(Timestamp, Timestamp)>, String> {
        Ok(s3::busy_runs(self.iter().flat_map(|(_, h)| h.entries.iter().map(|e| e.last_modified))))
    }
}

impl S3Input<'_> {
    /// Rule: the bucket at T on a clock within `skew_us` of S3's — the
    /// problem keys and every key written near T judged (see `s3::answer`).
    pub fn answer_at(&self, t: Timestamp, skew_us: i64) -> s3::S3Answer {
        let (from, to) = s3::uncertain_band(t, skew_us);
        match self.written.written_between(from, to) {
            Ok(mut candidates) => {
                candidates.extend(self.problems.iter().cloned());
                s3::answer(self.bucket, &candidates, t, skew_us)
            }
            Err(e) => s3::S3Answer {
                component: self.bucket.component.clone(),
                at: t,
                restorable: false,
                bound: None,
                problems: Vec::new(),
                explanation: Some(format!("the keys written near {t} cannot be read: {e}")),
            },
        }
    }
}

/// Every continuous component's state a group needs.
#[derive(Default)]
pub struct Inputs<'a> {
    pub pg: BTreeMap<String, PgInput<'a>>,
    pub s3: BTreeMap<String, S3Input<'a>>,
}

/// Consistency class of a recovery point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// Writers were stopped: every component's part is exact.
    Quiesced,
    /// Continuous histories correlated at one moment (within the group's skew).
    Correlated,
    /// Snapshots taken while writers ran: crash-consistent only.
    Crash,
}

impl Class {
    /// The class as reports and plans name it.
    pub fn name(self) -> &'static str {
        match self {
            Class::Quiesced => "quiesced",
            Class::Correlated => "correlated",
            Class::Crash => "crash",
        }
    }
}

/// One component's part of a recovery point.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PartStatus {
    pub component: String,
    pub kind: ComponentKind,
    /// What pins it: PostgreSQL an LSN on a timeline, S3 a time, a snapshot-only store a snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lsn: Option<Lsn>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
    pub restorable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What a restore of it reads (PostgreSQL): the base backup, and the
    /// first and last WAL segment it replays. S3 parts read the version of
    /// every key current at `at`; snapshot parts their snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_backup: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal: Option<(String, String)>,
}

/// Drills and restores of one recovery point.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
pub struct Record {
    pub drills: u64,
    pub drills_passed: u64,
    pub restores: u64,
    /// The newest drill: its result, time and plan digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_drill: Option<ActivityRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_restore: Option<ActivityRef>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ActivityRef {
    pub result: String,
    pub at: Timestamp,
    pub plan_digest: Digest32,
    pub seq: u64,
}

/// A marker, judged.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RecoveryPoint {
    pub id: String,
    pub class: Class,
    pub at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writers_stopped: Option<(Timestamp, Timestamp)>,
    pub restorable: bool,
    /// The worst component status: "restorable" or "not_restorable".
    pub status: String,
    pub components: Vec<PartStatus>,
    pub record: Record,
    pub seq: u64,
}

/// A maximal interval of correlated points: every continuous component
/// restorable over `[T − max_skew, T + max_skew]` for every T in it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CorrelatedWindow {
    pub from: Timestamp,
    pub to: Timestamp,
    pub class: Class,
    pub record: Record,
}

/// Why the times between two windows are not restorable.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Gap {
    pub from: Timestamp,
    pub to: Timestamp,
    pub reasons: Vec<String>,
}

/// One component's restorable intervals (inclusive), for the report and the timeline.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ComponentWindows {
    pub component: String,
    pub kind: ComponentKind,
    pub intervals: Vec<(Timestamp, Timestamp)>,
    /// Snapshot times for snapshot-only components.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// A PostgreSQL cluster that has had more than one timeline: the
    /// intervals of each (told apart in the timeline picture).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timelines: Vec<TimelineIntervals>,
}

/// One PostgreSQL timeline's restorable intervals.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TimelineIntervals {
    pub timeline: u32,
    pub intervals: Vec<(Timestamp, Timestamp)>,
}

/// The newest restorable point: a marker or a correlated time near the end of the newest window.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Latest {
    Marker { point: RecoveryPoint },
    Time { at: Timestamp, window: CorrelatedWindow },
}

/// A correlated time resolved to the one instant every part is restored to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CorrelatedPoint {
    /// The time asked for.
    pub requested: Timestamp,
    /// The instant restored: the newest PostgreSQL position observed at or
    /// before the requested time (the requested time when the group has no PostgreSQL).
    pub at: Timestamp,
    pub window: CorrelatedWindow,
    /// Per PostgreSQL component, the observed position it is restored to.
    pub pg: BTreeMap<String, pg::Position>,
    /// How far S3's clock may be from the instant (the group's max skew): S3
    /// parts are judged with it.
    pub s3_skew_ms: u64,
}

/// Everything `recovery-points --group` shows; newest first.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GroupReport {
    pub group: String,
    pub components: Vec<String>,
    pub max_skew_ms: u64,
    pub markers: Vec<RecoveryPoint>,
    pub windows: Vec<CorrelatedWindow>,
    pub gaps: Vec<Gap>,
    pub component_windows: Vec<ComponentWindows>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    pub activities: Vec<Activity>,
}

/// Why a group question cannot be answered at all.
/// A group's definition, its components' registered identities and their
/// recorded snapshots (`GET /v1/groups/{group}`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GroupInfo {
    pub definition: GroupDef,
    pub components: BTreeMap<String, ComponentRegistered>,
    pub snapshots: Vec<Snapshot>,
}

/// Why the catalog refuses an event (the store refuses its batch with it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum AdmitError {
    /// A marker or snapshot id already names another fact.
    #[error("conflict: {0}")]
    IdReused(String),
    /// The event contradicts what the catalog knows (an unknown group or
    /// component, an unpinned or foreign component, a snapshot never recorded).
    #[error("{0}")]
    Contradicts(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    #[error("no group named {0:?} is defined (`tidemark group define {0} --component …`)")]
    UnknownGroup(String),
    #[error("group {group} has no marker {marker:?}")]
    UnknownMarker { group: String, marker: String },
}

/// A PostgreSQL window by LSN, with its backups sorted by stop.
struct LsnWindow {
    from: Lsn,
    to: Lsn,
    backups: Vec<WindowBackup>,
}

struct WindowBackup {
    stop: Lsn,
    start: Lsn,
    id: String,
    /// The name of the segment holding its start (the first a restore from
    /// it replays), made when a marker first needs it.
    first_segment: std::sync::OnceLock<String>,
}

/// A continuous component's state prepared once per question: its
/// restorable intervals, so each marker is judged by a binary search.
enum Prepared<'a> {
    Pg {
        cluster: &'a Cluster,
        lsn_windows: BTreeMap<u32, Vec<LsnWindow>>,
        times: Vec<(Timestamp, Timestamp)>,
        by_timeline: Vec<TimelineIntervals>,
    },
    S3 {
        input: &'a S3Input<'a>,
        times: Vec<(Timestamp, Timestamp)>,
        window_times: Vec<(Timestamp, Timestamp)>,
    },
    Snapshot {
        times: Vec<Timestamp>,
    },
    Unknown,
}

fn merge(mut v: Vec<(Timestamp, Timestamp)>) -> Vec<(Timestamp, Timestamp)> {
    v.sort();
    let mut out: Vec<(Timestamp, Timestamp)> = Vec::with_capacity(v.len());
    for (a, b) in v {
        match out.last_mut() {
            Some(last) if a <= last.1.saturating_add_micros(1) => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// Rule: is the whole of `[a, b]` inside one of the (merged, sorted) intervals?
pub fn covered(intervals: &[(Timestamp, Timestamp)], a: Timestamp, b: Timestamp) -> bool {
    let i = intervals.partition_point(|(from, _)| *from <= a);
    i > 0 && intervals[i - 1].1 >= b
}

/// Rule: the intersection of sorted, merged interval lists.
pub fn intersect(x: &[(Timestamp, Timestamp)], y: &[(Timestamp, Timestamp)]) -> Vec<(Timestamp, Timestamp)> {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < x.len() && j < y.len() {
        let a = x[i].0.max(y[j].0);
        let b = x[i].1.min(y[j].1);
        if a <= b {
            out.push((a, b));
        }
        if x[i].1 < y[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

fn prepare<'a>(catalog: &Catalog, component: &str, inputs: &'a Inputs<'a>) -> Prepared<'a> {
    match ComponentKind::of(component) {
        Some(ComponentKind::Postgresql) => match inputs.pg.get(component) {
            Some(input) => {
                let by_id: BTreeMap<&str, &pg::BaseBackup> =
                    input.cluster.backups().map(|b| (b.backup_id.as_str(), b)).collect();
                let mut lsn_windows: BTreeMap<u32, Vec<LsnWindow>> = BTreeMap::new();
                let mut times = Vec::new();
                let mut by_timeline = Vec::new();
                for tl in input.cluster.timelines() {
                    let mut own = Vec::new();
                    for w in input.cluster.windows(tl, input.positions) {
                        times.push((w.from_time, w.to_time));
                        own.push((w.from_time, w.to_time));
                        let mut backups: Vec<WindowBackup> = w
                            .backups
                            .iter()
                            .filter_map(|id| by_id.get(id.as_str()))
                            .map(|b| WindowBackup {
                                stop: b.stop_lsn,
                                start: b.start_lsn,
                                id: b.backup_id.clone(),
                                first_segment: std::sync::OnceLock::new(),
                            })
                            .collect();
                        backups.sort_by(|x, y| (x.stop, &x.id).cmp(&(y.stop, &y.id)));
                        lsn_windows.entry(tl).or_default().push(LsnWindow { from: w.from_lsn, to: w.to_lsn, backups });
                    }
                    by_timeline.push(TimelineIntervals { timeline: tl, intervals: merge(own) });
                }
                // One timeline needs no telling apart.
                if by_timeline.len() < 2 {
                    by_timeline.clear();
                }
                Prepared::Pg { cluster: input.cluster, lsn_windows, times: merge(times), by_timeline }
            }
            None => Prepared::Unknown,
        },
        Some(ComponentKind::S3) => match inputs.s3.get(component) {
            Some(input) => {
                let inclusive = |windows: Vec<s3::S3Window>| -> Vec<(Timestamp, Timestamp)> {
                    let times = windows.iter().map(|w| (w.from, w.inclusive_end())).filter(|(a, b)| a <= b).collect();
                    merge(times)
                };
                // Markers are points: judged on the holes, then exactly at their time
                // (a second boundary inside a run of busy seconds is exact). Correlated
                // windows are ranges: they leave out every second with writes. A bucket
                // whose busy seconds cannot be read has no correlated windows.
                let times = inclusive(input.bucket.windows(input.problems, &[]));
                let window_times = match input.written.busy() {
                    Ok(busy) => inclusive(input.bucket.windows(input.problems, &busy)),
                    Err(_) => Vec::new(),
                };
                Prepared::S3 { input, times, window_times }
            }
            None => Prepared::Unknown,
        },
        Some(ComponentKind::Snapshot) => Prepared::Snapshot {
            times: catalog
                .snapshots
                .values()
                .filter(|s| s.component == component && s.state == SnapshotState::Present)
                .map(|s| s.taken_at)
                .collect(),
        },
        None => Prepared::Unknown,
    }
}

fn skew(def: &GroupDef) -> i64 {
    i64::try_from(def.max_skew_ms.saturating_mul(1000)).unwrap_or(i64::MAX)
}

/// Rule: one marker part, judged against its component's state.
fn judge_part(catalog: &Catalog, part: &MarkerPart, prepared: &Prepared<'_>, skew_us: i64, exact: bool) -> PartStatus {
    let component = part.component.to_string();
    let kind = ComponentKind::of(&component).unwrap_or(ComponentKind::Snapshot);
    let mut status = PartStatus {
        component,
        kind,
        lsn: part.pg_lsn,
        timeline: part.pg_timeline,
        at: part.s3_watermark,
        snapshot_id: part.snapshot_id.clone(),
        restorable: false,
        reason: None,
        base_backup: None,
        wal: None,
    };
    match (prepared, part) {
        (Prepared::Pg { cluster, lsn_windows, .. }, MarkerPart { pg_lsn: Some(lsn), pg_timeline: Some(tl), .. }) => {
            let hit =
                lsn_windows.get(tl).and_then(|ws| ws.iter().find(|w| w.from <= *lsn && *lsn <= w.to)).and_then(|w| {
                    // The newest backup of the window that stopped at or before the LSN.
                    let n = w.backups.partition_point(|b| b.stop <= *lsn);
                    n.checked_sub(1).map(|i| &w.backups[i])
                });
            match hit {
                Some(b) => {
                    status.restorable = true;
                    let size = cluster.segment_size_bytes();
                    let name = |s: u64| pg::segment_name(cluster.timeline_of_segment(*tl, s), s, size);
                    let first = b.first_segment.get_or_init(|| name(pg::segment_of(b.start, size)));
                    status.base_backup = Some(b.id.clone());
                    status.wal = Some((first.clone(), name(pg::segment_of(*lsn, size))));
                }
                None => {
                    status.reason = Some(match cluster.lsn_restorable(*tl, *lsn) {
                        Err(e) => e.to_string(),
                        Ok(_) => "the LSN is outside every restorable window".to_owned(),
                    })
                }
            }
        }
        (Prepared::S3 { input, times, .. }, MarkerPart { s3_watermark: Some(w), .. }) => {
            let sigma = s3_part_skew(part, skew_us, exact);
            let (a, b) = (w.saturating_add_micros(-sigma), w.saturating_add_micros(sigma));
            if let Some(reason) = part.s3_clock.as_ref().and_then(|c| clock_evidence_problem(c, skew_us)) {
                status.reason = Some(reason);
            } else if !covered(times, a, b) {
                status.reason = Some(s3_reason(input, a, *w, b, sigma));
            } else {
                let ans = input.answer_at(*w, sigma);
                match ans.restorable {
                    true => status.restorable = true,
                    false => {
                        status.reason =
                            Some(format!("at {w}: {}", ans.explanation.unwrap_or_else(|| "not restorable".into())))
                    }
                }
            }
        }
        (_, MarkerPart { snapshot_id: Some(id), .. }) => {
            match catalog.snapshots.get(&(status.component.clone(), id.clone())) {
                Some(s) if s.state == SnapshotState::Present => status.restorable = true,
                Some(s) => {
                    status.reason = Some(format!(
                        "snapshot {id} is {} (entry {} recorded it)",
                        match s.state {
                            SnapshotState::Deleted => "deleted",
                            SnapshotState::Missing => "reported missing",
                            _ => "reported corrupt",
                        },
                        s.seq
                    ))
                }
                None => status.reason = Some(format!("snapshot {id} was never recorded")),
            }
        }
        (Prepared::Unknown, _) => {
            status.reason = Some(format!("nothing is recorded about {}", status.component));
        }
        _ => status.reason = Some(format!("{} is pinned by a part of another kind", status.component)),
    }
    status
}

/// Rule: how far an S3 part's time may be from the moment the other parts
/// were cut — nothing when S3's own clock was observed at the cut (or the
/// writers were stopped), else the group's max skew.
pub fn s3_part_skew(part: &MarkerPart, skew_us: i64, quiesced: bool) -> i64 {
    if part.s3_clock.is_some() || quiesced { 0 } else { skew_us }
}

/// Rule: the clock evidence of an S3 part vouches for an exact cut unless
/// uploads were in progress across it or the cut took longer than the group's max skew.
fn clock_evidence_problem(c: &S3ClockEvidence, skew_us: i64) -> Option<String> {
    if !c.uploads_in_progress.is_empty() {
        return Some(format!(
            "multipart uploads of {} were in progress at the cut: initiated before {}, they would carry a LastModified before the cut if completed after it",
            c.uploads_in_progress.join(", "),
            c.boundary
        ));
    }
    let spread = c.cut_spread_us();
    (spread > skew_us).then(|| {
        format!(
            "the PostgreSQL parts and S3's tick to {1} may be up to {0} ms apart, more than the group's max skew of {2} ms",
            spread / 1000,
            c.boundary,
            skew_us / 1000
        )
    })
}

/// The first S3 reason found at the pinned time or the ends of the skew range.
fn s3_reason(input: &S3Input<'_>, a: Timestamp, w: Timestamp, b: Timestamp, skew_us: i64) -> String {
    for (t, label) in [(w, ""), (a, " (the start of the skew range)"), (b, " (the end of the skew range)")] {
        let ans = s3::answer(input.bucket, input.problems, t, 0);
        if !ans.restorable {
            return format!("at {t}{label}: {}", ans.explanation.unwrap_or_else(|| "not restorable".into()));
        }
    }
    format!("the bucket is not restorable throughout ±{} ms around {w}", skew_us / 1000)
}

fn record_of<'a>(acts: impl Iterator<Item = &'a Activity>) -> Record {
    let mut r = Record::default();
    for a in acts {
        let aref = ActivityRef { result: a.result.clone(), at: a.at, plan_digest: a.plan_digest, seq: a.seq };
        match a.kind {
            ActivityKind::Drill => {
                r.drills += 1;
                r.drills_passed += u64::from(a.passed);
                r.last_drill = Some(aref);
            }
            ActivityKind::Restore => {
                r.restores += 1;
                r.last_restore = Some(aref);
            }
        }
    }
    r
}

fn judge_marker(
    catalog: &Catalog,
    def: &GroupDef,
    m: &Marker,
    prepared: &BTreeMap<&str, Prepared<'_>>,
    acts: &BTreeMap<&str, Vec<&Activity>>,
) -> RecoveryPoint {
    let exact = m.quiesced.is_some();
    let mut components: Vec<PartStatus> = Vec::with_capacity(def.components.len());
    for c in &def.components {
        match m.parts.iter().find(|p| p.component.as_str() == c) {
            Some(p) => components.push(judge_part(catalog, p, &prepared[c.as_str()], skew(def), exact)),
            None => components.push(PartStatus {
                component: c.clone(),
                kind: ComponentKind::of(c).unwrap_or(ComponentKind::Snapshot),
                lsn: None,
                timeline: None,
                at: None,
                snapshot_id: None,
                restorable: false,
                reason: Some(format!(
                    "the marker pins nothing for {c} (added to the group after the marker was taken)"
                )),
                base_backup: None,
                wal: None,
            }),
        }
    }
    let restorable = components.iter().all(|p| p.restorable);
    let class = if exact {
        Class::Quiesced
    } else if m.parts.iter().any(|p| p.snapshot_id.is_some()) {
        Class::Crash
    } else {
        Class::Correlated
    };
    RecoveryPoint {
        id: m.marker_id.clone(),
        class,
        at: m.at,
        writers_stopped: m.quiesced,
        restorable,
        status: if restorable { "restorable" } else { "not_restorable" }.to_owned(),
        components,
        record: record_of(acts.get(m.marker_id.as_str()).into_iter().flatten().copied()),
        seq: m.seq,
    }
}

struct Judge<'a> {
    def: &'a GroupDef,
    group: &'a Group,
    prepared: BTreeMap<&'a str, Prepared<'a>>,
    inputs: &'a Inputs<'a>,
    /// Drills and restores by recovery point (marker id or time), in log order.
    by_point: BTreeMap<&'a str, Vec<&'a Activity>>,
}

fn judge<'a>(catalog: &'a Catalog, name: &str, inputs: &'a Inputs<'a>) -> Result<Judge<'a>, GroupError> {
    let group = catalog.group(name).ok_or_else(|| GroupError::UnknownGroup(name.to_owned()))?;
    let def = group.def.as_ref().expect("group() only returns defined groups");
    let prepared = def.components.iter().map(|c| (c.as_str(), prepare(catalog, c, inputs))).collect();
    let mut by_point: BTreeMap<&str, Vec<&Activity>> = BTreeMap::new();
    for a in &group.activities {
        by_point.entry(a.recovery_point.as_str()).or_default().push(a);
    }
    Ok(Judge { def, group, prepared, inputs, by_point })
}

impl Judge<'_> {
    /// Correlated windows, oldest first (none when a snapshot-only component is in the group).
    /// PostgreSQL is restored to an observed position (exact on its own
    /// clock); a bucket must be restorable within the max skew of it, so its
    /// intervals are shortened by the skew at both ends.
    fn windows(&self) -> Vec<(Timestamp, Timestamp)> {
        let s = skew(self.def);
        let mut acc: Option<Vec<(Timestamp, Timestamp)>> = None;
        for p in self.prepared.values() {
            let times = match p {
                Prepared::Pg { times, .. } => times.clone(),
                Prepared::S3 { window_times, .. } => window_times
                    .iter()
                    .map(|(a, b)| (a.saturating_add_micros(s), b.saturating_add_micros(-s)))
                    .filter(|(a, b)| a <= b)
                    .collect(),
                Prepared::Snapshot { .. } | Prepared::Unknown => Vec::new(),
            };
            acc = Some(match acc {
                None => times,
                Some(a) => intersect(&a, &times),
            });
        }
        // A time is restored as of the newest PostgreSQL observation at or
        // before it: a window's points begin at its first observation.
        acc.unwrap_or_default()
            .into_iter()
            .filter_map(|(a, b)| {
                let mut from = a;
                for (c, p) in &self.prepared {
                    if let Prepared::Pg { cluster, .. } = p {
                        let positions = self.inputs.pg[*c].positions;
                        let first = cluster
                            .timelines()
                            .filter_map(|tl| positions.first_at_or_after(tl, a))
                            .map(|o| o.observed_at)
                            .min()?;
                        from = from.max(first);
                    }
                }
                (from <= b).then_some((from, b))
            })
            .collect()
    }

    fn window_record(&self, from: Timestamp, to: Timestamp) -> Record {
        record_of(
            self.group
                .activities
                .iter()
                .filter(|a| Timestamp::parse_rfc3339(&a.recovery_point).is_ok_and(|t| from <= t && t <= to)),
        )
    }

    /// Rule: a correlated time T is restored as of one instant O — the newest
    /// PostgreSQL position observed at or before T (every cluster's state is
    /// exactly known only at its observations) — and is a point when O lies
    /// in a correlated window, every other cluster was observed at O or wrote
    /// no WAL between its observations around O, and every S3 part is
    /// certain at O within the group's max skew.
    fn correlated_at(&self, requested: Timestamp) -> Result<CorrelatedPoint, Vec<String>> {
        let mut latest: Vec<(&str, u32, pg::Position)> = Vec::new();
        for (c, p) in &self.prepared {
            if let Prepared::Pg { cluster, .. } = p {
                let positions = self.inputs.pg[*c].positions;
                let found = cluster
                    .timeline_at(requested, positions)
                    .and_then(|tl| positions.last_at_or_before(tl, requested).map(|p| (tl, p)));
                match found {
                    Some((tl, p)) => latest.push((c, tl, p)),
                    None => return Err(vec![format!("{c}: no position observed at or before {requested}")]),
                }
            }
        }
        let at = latest.iter().map(|(_, _, p)| p.observed_at).min().unwrap_or(requested);
        let mut reasons = Vec::new();
        let mut pg_at = BTreeMap::new();
        for (c, tl, _) in &latest {
            let positions = self.inputs.pg[*c].positions;
            let before = positions.last_at_or_before(*tl, at).expect("an observation at or before the minimum exists");
            if before.observed_at != at {
                let after = positions.first_at_or_after(*tl, at);
                if after.as_ref().is_none_or(|a| a.lsn != before.lsn) {
                    reasons.push(format!(
                        "{c}: not observed at {at} (the instant another cluster was): its nearest positions around it are {}{} and WAL was written between them — a marker pins several clusters at one moment",
                        before.observed_at,
                        after.map(|a| format!(" and {}", a.observed_at)).unwrap_or_default()
                    ));
                    continue;
                }
            }
            pg_at.insert((*c).to_owned(), before);
        }
        let windows = self.windows();
        let window = match windows.iter().find(|(a, b)| *a <= at && at <= *b) {
            Some((a, b)) => {
                CorrelatedWindow { from: *a, to: *b, class: Class::Correlated, record: self.window_record(*a, *b) }
            }
            None => {
                reasons.extend(self.reasons_at(at));
                return Err(reasons);
            }
        };
        let sigma = skew(self.def);
        for (c, p) in &self.prepared {
            if let Prepared::S3 { input, .. } = p {
                let a = input.answer_at(at, sigma);
                if !a.restorable {
                    reasons.push(format!("{c}: {}", a.explanation.unwrap_or_else(|| "not restorable".into())));
                }
            }
        }
        if !reasons.is_empty() {
            return Err(reasons);
        }
        Ok(CorrelatedPoint { requested, at, window, pg: pg_at, s3_skew_ms: self.def.max_skew_ms })
    }

    /// Why a time is not restorable, per component.
    fn reasons_at(&self, t: Timestamp) -> Vec<String> {
        let mut out = Vec::new();
        for (c, p) in &self.prepared {
            match p {
                Prepared::Pg { cluster, .. } => {
                    let positions = self.inputs.pg[*c].positions;
                    if let Err(e) = cluster.time_restorable(t, None, positions) {
                        out.push(format!("{c}: {e}"));
                    }
                }
                Prepared::S3 { input, .. } => {
                    let a = input.answer_at(t, skew(self.def));
                    if !a.restorable {
                        out.push(format!("{c}: {}", a.explanation.unwrap_or_else(|| "not restorable".into())));
                    }
                }
                Prepared::Snapshot { .. } => out.push(format!(
                    "{c}: a snapshot-only component is restorable only at markers that pin its snapshots"
                )),
                Prepared::Unknown => out.push(format!("{c}: nothing is recorded about it")),
            }
        }
        if out.is_empty() {
            out.push(format!(
                "every component is restorable at {t}, but not throughout ±{} ms around it (the group's max skew)",
                self.def.max_skew_ms
            ));
        }
        out
    }
}

/// Rule: every marker judged, and the correlated windows with the gaps between them; newest first.
pub fn recovery_points(catalog: &Catalog, name: &str, inputs: &Inputs<'_>) -> Result<GroupReport, GroupError> {
    let j = judge(catalog, name, inputs)?;
    // Markers are judged on all cores (each alone; collected in order, so the output is the same).
    let markers: Vec<RecoveryPoint> =
        j.group.markers.par_iter().rev().map(|m| judge_marker(catalog, j.def, m, &j.prepared, &j.by_point)).collect();
    let windows = j.windows();
    let mut gaps = Vec::new();
    for pair in windows.windows(2) {
        let (from, to) = (pair[0].1.saturating_add_micros(1), pair[1].0.saturating_add_micros(-1));
        let mid = Timestamp::from_micros(from.as_micros() + (to.as_micros() - from.as_micros()) / 2);
        gaps.push(Gap { from, to, reasons: j.reasons_at(mid) });
    }
    gaps.reverse();
    let mut notes = Vec::new();
    let mut component_windows = Vec::new();
    for (c, p) in &j.prepared {
        let kind = ComponentKind::of(c).unwrap_or(ComponentKind::Snapshot);
        let timelines = match p {
            Prepared::Pg { by_timeline, .. } => by_timeline.clone(),
            _ => Vec::new(),
        };
        let (intervals, snapshots, note) = match p {
            Prepared::Pg { times, .. } | Prepared::S3 { window_times: times, .. } => (times.clone(), Vec::new(), None),
            Prepared::Snapshot { times } => {
                notes.push(format!(
                    "{c} is snapshot-only: the group's recovery points are the markers that pin one of its snapshots"
                ));
                (Vec::new(), times.clone(), None)
            }
            Prepared::Unknown => (Vec::new(), Vec::new(), Some("nothing recorded".to_owned())),
        };
        component_windows.push(ComponentWindows {
            component: (*c).to_owned(),
            kind,
            intervals,
            snapshots,
            note,
            timelines,
        });
    }
    Ok(GroupReport {
        group: j.def.name.clone(),
        components: j.def.components.clone(),
        max_skew_ms: j.def.max_skew_ms,
        windows: windows
            .iter()
            .rev()
            .map(|(a, b)| CorrelatedWindow {
                from: *a,
                to: *b,
                class: Class::Correlated,
                record: j.window_record(*a, *b),
            })
            .collect(),
        markers,
        gaps,
        component_windows,
        notes,
        activities: j.group.activities.clone(),
    })
}

/// Rule: the newest restorable point — the newest restorable marker or the
/// end of the newest correlated window, whichever is later (a marker on a tie:
/// it pins an exact LSN).
pub fn latest(catalog: &Catalog, name: &str, inputs: &Inputs<'_>) -> Result<Option<Latest>, GroupError> {
    let j = judge(catalog, name, inputs)?;
    let marker = j
        .group
        .markers
        .iter()
        .rev()
        .map(|m| judge_marker(catalog, j.def, m, &j.prepared, &j.by_point))
        .find(|p| p.restorable);
    // The end of the newest window, when it resolves to a certain instant.
    let window = j.windows().last().and_then(|(_, b)| j.correlated_at(*b).ok());
    Ok(match (marker, window) {
        (Some(m), Some(p)) if p.at > m.at => Some(Latest::Time { at: p.at, window: p.window }),
        (Some(m), _) => Some(Latest::Marker { point: m }),
        (None, Some(p)) => Some(Latest::Time { at: p.at, window: p.window }),
        (None, None) => None,
    })
}

/// One marker judged (what a plan for it starts from).
pub fn marker_point(
    catalog: &Catalog,
    name: &str,
    marker: &str,
    inputs: &Inputs<'_>,
) -> Result<(Marker, RecoveryPoint), GroupError> {
    let j = judge(catalog, name, inputs)?;
    let m = j
        .group
        .markers
        .iter()
        .find(|m| m.marker_id == marker)
        .ok_or_else(|| GroupError::UnknownMarker { group: name.to_owned(), marker: marker.to_owned() })?;
    Ok((m.clone(), judge_marker(catalog, j.def, m, &j.prepared, &j.by_point)))
}

/// Rule: a time T is a correlated point when it resolves to one instant
/// every part is certain at (see `Judge::correlated_at`); `Err` carries the
/// reasons when it does not.
pub fn time_point(
    catalog: &Catalog,
    name: &str,
    at: Timestamp,
    inputs: &Inputs<'_>,
) -> Result<Result<CorrelatedPoint, Vec<String>>, GroupError> {
    Ok(judge(catalog, name, inputs)?.correlated_at(at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_a_class_is_named_as_it_serialises() {
        for c in [Class::Quiesced, Class::Correlated, Class::Crash] {
            assert_eq!(serde_json::to_value(c).unwrap(), c.name());
        }
    }

    fn t(s: i64) -> Timestamp {
        Timestamp::from_unix_seconds(1_790_000_000 + s)
    }

    #[test]
    fn rule_a_range_is_covered_only_inside_one_interval() {
        let v = vec![(t(0), t(10)), (t(20), t(30))];
        assert!(covered(&v, t(1), t(9)));
        assert!(covered(&v, t(20), t(30)));
        assert!(!covered(&v, t(9), t(21)), "a gap in between");
        assert!(!covered(&v, t(-1), t(2)));
        assert!(!covered(&[], t(0), t(0)));
    }

    #[test]
    fn rule_correlated_times_are_the_intersection_of_every_component() {
        let a = vec![(t(0), t(10)), (t(20), t(30))];
        let b = vec![(t(5), t(25))];
        assert_eq!(intersect(&a, &b), vec![(t(5), t(10)), (t(20), t(25))]);
        assert_eq!(intersect(&a, &[]), vec![]);
    }

    #[test]
    fn adjacent_intervals_merge() {
        let m = merge(vec![(t(10), t(20)), (t(0), t(10)), (t(30), t(40))]);
        assert_eq!(m, vec![(t(0), t(20)), (t(30), t(40))]);
    }

    #[test]
    fn component_kinds_come_from_the_name() {
        assert_eq!(ComponentKind::of("pg:main"), Some(ComponentKind::Postgresql));
        assert_eq!(ComponentKind::of("snap:defs"), Some(ComponentKind::Snapshot));
        assert_eq!(ComponentKind::of("redis"), None);
    }
}
