//! The persisted group catalog (components, groups, markers, snapshots,
//! drills, restores) and the group questions: recovery points, the latest
//! one, plans. The catalog is admitted and updated in the append batch,
//! loaded once on open, and held in memory: questions never replay the log.

use std::collections::BTreeMap;
use std::sync::Arc;

use tidemark_core::Timestamp;
use tidemark_lineage::group::{
    self, Activity, Catalog, CatalogCore, Change, ComponentKind, GroupError, GroupReport, Inputs, Latest, Marker,
    PgInput, S3Input,
};
use tidemark_lineage::group_plan::{self, ComponentPlan, GroupPlan, Pin, Pinned, PlanRequest, S3Part};
use tidemark_lineage::pg::Cluster;
use tidemark_lineage::pg_plan::PlanOptions;
use tidemark_lineage::s3::{Bucket, KeyHistory, ManifestLine};

use crate::layout::{self, name_prefix};
use crate::pg::StorePositions;
use crate::{StoreError, decode, encode};

fn seq_in(prefix: u8, group: &str, seq: u64) -> Vec<u8> {
    let mut k = name_prefix(prefix, group).to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Reads the catalog: the core record, then every marker and activity.
pub(crate) fn load_catalog(tree: &sled::Tree) -> Result<Catalog, StoreError> {
    let core: CatalogCore = match tree.get(layout::CATALOG)? {
        Some(v) => decode(&v, "group catalog")?,
        None => CatalogCore::default(),
    };
    let markers = tree
        .scan_prefix([layout::MARKERS])
        .map(|r| -> Result<Marker, StoreError> { decode(&r?.1, "marker") })
        .collect::<Result<Vec<_>, _>>()?;
    let activities = tree
        .scan_prefix([layout::ACTIVITIES])
        .map(|r| -> Result<Activity, StoreError> { decode(&r?.1, "drill or restore record") })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Catalog::from_parts(core, markers, activities))
}

/// Adds a batch's catalog changes to `batch`.
pub(crate) fn write_changes(batch: &mut sled::Batch, catalog: &Catalog, changes: &[Change]) {
    if changes.iter().any(|c| matches!(c, Change::Core)) {
        batch.insert(layout::CATALOG, encode(&catalog.core()));
    }
    for c in changes {
        match c {
            Change::Core => {}
            Change::Marker(m) => batch.insert(seq_in(layout::MARKERS, &m.group, m.seq), encode(m)),
            Change::Activity(a) => batch.insert(seq_in(layout::ACTIVITIES, &a.group, a.seq), encode(a)),
        }
    }
}

/// What a group question reads, loaded once per question.
struct Loaded<'t> {
    clusters: BTreeMap<String, (Arc<Cluster>, StorePositions<'t>)>,
    buckets: BTreeMap<String, LoadedBucket<'t>>,
}

/// A bucket's summary, its problem keys' histories, and its time index.
struct LoadedBucket<'t> {
    bucket: Bucket,
    problems: Vec<(String, KeyHistory)>,
    written: Written<'t>,
}

/// The time index of one bucket, for the group rules.
struct Written<'t> {
    ledger: &'t crate::Ledger,
    component: String,
}

impl group::WrittenBetween for Written<'_> {
    fn written_between(&self, from: Timestamp, to: Timestamp) -> Result<Vec<(String, KeyHistory)>, String> {
        self.ledger.s3_written_between(&self.component, from, to).map_err(|e| e.to_string())
    }

    fn busy(&self) -> Result<Vec<(Timestamp, Timestamp)>, String> {
        self.ledger.s3_busy(&self.component).map_err(|e| e.to_string())
    }
}

impl Loaded<'_> {
    fn inputs(&self) -> Inputs<'_> {
        Inputs {
            pg: self
                .clusters
                .iter()
                .map(|(c, (cluster, positions))| (c.clone(), PgInput { cluster, positions }))
                .collect(),
            s3: self
                .buckets
                .iter()
                .map(|(c, b)| (c.clone(), S3Input { bucket: &b.bucket, problems: &b.problems, written: &b.written }))
                .collect(),
        }
    }

    fn check(&self) -> Result<(), StoreError> {
        for (_, positions) in self.clusters.values() {
            positions.check()?;
        }
        Ok(())
    }
}

fn group_err(e: GroupError) -> StoreError {
    StoreError::NotFound(e.to_string())
}

impl crate::Ledger {
    fn load_group(&self, name: &str) -> Result<Loaded<'_>, StoreError> {
        let def = self
            .catalog
            .group(name)
            .and_then(|g| g.def.clone())
            .ok_or_else(|| group_err(GroupError::UnknownGroup(name.to_owned())))?;
        let mut loaded = Loaded { clusters: BTreeMap::new(), buckets: BTreeMap::new() };
        for c in &def.components {
            match ComponentKind::of(c) {
                Some(ComponentKind::Postgresql) => {
                    if let Some(cluster) = self.pg_cluster(c)? {
                        loaded.clusters.insert(c.clone(), (cluster, self.pg_positions(c)));
                    }
                }
                Some(ComponentKind::S3) => {
                    if let Some(bucket) = self.s3_bucket(c)? {
                        let problems = self.s3_problem_histories(&bucket)?;
                        let written = Written { ledger: self, component: c.clone() };
                        loaded.buckets.insert(c.clone(), LoadedBucket { bucket, problems, written });
                    }
                }
                _ => {}
            }
        }
        Ok(loaded)
    }

    /// Markers, correlated windows and gaps of a group, newest first.
    pub fn group_report(&self, name: &str) -> Result<GroupReport, StoreError> {
        let loaded = self.load_group(name)?;
        let report = group::recovery_points(&self.catalog, name, &loaded.inputs()).map_err(group_err)?;
        loaded.check()?;
        Ok(report)
    }

    /// The newest restorable point of a group.
    pub fn group_latest(&self, name: &str) -> Result<Option<Latest>, StoreError> {
        let loaded = self.load_group(name)?;
        let latest = group::latest(&self.catalog, name, &loaded.inputs()).map_err(group_err)?;
        loaded.check()?;
        Ok(latest)
    }

    /// A group restore plan at the current checkpoint; `Err(Ok(reasons))` when the point is not restorable.
    pub fn group_plan(
        &self,
        name: &str,
        request: &PlanRequest,
        options: &PlanOptions,
    ) -> Result<Result<GroupPlan, Vec<String>>, StoreError> {
        let loaded = self.load_group(name)?;
        let inputs = loaded.inputs();
        let catalog = &self.catalog;
        let def = catalog.group(name).and_then(|g| g.def.clone()).expect("load_group checked it");
        // The point, judged; and what each component is restored to.
        let pinned = match request {
            PlanRequest::Marker(id) => {
                let (marker, judged) = group::marker_point(catalog, name, id, &inputs).map_err(group_err)?;
                match group_plan::marker_pins(&def, &marker, &judged) {
                    Ok(p) => p,
                    Err(reasons) => return Ok(Err(reasons)),
                }
            }
            PlanRequest::Time(requested) => {
                match group::time_point(catalog, name, *requested, &inputs).map_err(group_err)? {
                    Ok(point) => group_plan::time_pins(&def, &point),
                    Err(reasons) => return Ok(Err(reasons)),
                }
            }
        };
        let Pinned { point, pins, notes: point_notes } = pinned;
        let checkpoint = self.checkpoint_ref();
        let mut components = Vec::new();
        let mut reasons = Vec::new();
        for c in &def.components {
            match pins.get(c) {
                Some(Pin::Pg(target)) => {
                    let (cluster, positions) = &loaded.clusters[c];
                    let mut opts = options.clone();
                    opts.restore_command = options.restore_command.replace("{cluster}", c.trim_start_matches("pg:"));
                    match tidemark_lineage::pg_plan::plan(cluster, positions, target, &opts, checkpoint.clone()) {
                        Ok(plan) => {
                            components.push(ComponentPlan::Postgresql { component: c.clone(), plan: Box::new(plan) })
                        }
                        Err(e) => reasons.push(format!("{c}: {e}")),
                    }
                }
                Some(Pin::S3 { at, skew_us }) => {
                    let identity = catalog.components.get(c).and_then(|r| r.s3.clone());
                    let Some(identity) = identity else {
                        reasons
                            .push(format!("{c}: not registered with its endpoint and bucket (`tidemark s3 register`)"));
                        continue;
                    };
                    let mut manifest = Vec::new();
                    let mut problems = Vec::new();
                    let summary = self.s3_manifest(c, *at, *skew_us, &mut |line| {
                        match line {
                            ManifestLine::Problem { key, .. } => problems.push(key.clone()),
                            other => manifest.push(other.clone()),
                        }
                        Ok(())
                    })?;
                    if !summary.restorable {
                        let bound = summary.bound.as_ref().map(ToString::to_string);
                        reasons.push(format!(
                            "{c}: {}",
                            bound.unwrap_or_else(|| format!(
                                "keys that cannot be reconstructed: {}",
                                problems.join(", ")
                            ))
                        ));
                        continue;
                    }
                    components.push(ComponentPlan::S3(S3Part {
                        component: c.clone(),
                        endpoint: identity.endpoint,
                        bucket: identity.bucket,
                        region: identity.region,
                        at: *at,
                        keys_to_restore: summary.keys_to_restore,
                        keys_to_remove: summary.keys_to_remove,
                        manifest_digest: summary.digest,
                        manifest,
                    }));
                }
                Some(Pin::Snapshot(id)) => match catalog.snapshots.get(&(c.clone(), id.clone())) {
                    Some(s) => components.push(ComponentPlan::Snapshot { component: c.clone(), snapshot: s.clone() }),
                    None => reasons.push(format!("{c}: snapshot {id} is not recorded")),
                },
                None => reasons.push(format!("{c}: the recovery point pins nothing for it")),
            }
        }
        loaded.check()?;
        if !reasons.is_empty() {
            return Ok(Err(reasons));
        }
        Ok(Ok(group_plan::assemble(&def, point, components, checkpoint, point_notes)))
    }

    /// A group's definition, its components' registered identities and
    /// their recorded snapshots (what `GET /v1/groups/{group}` answers); an
    /// undefined group is [`StoreError::NotFound`].
    pub fn group_info(&self, name: &str) -> Result<group::GroupInfo, StoreError> {
        let unknown = || StoreError::NotFound(GroupError::UnknownGroup(name.to_owned()).to_string());
        let def = self.catalog.group(name).and_then(|g| g.def.clone()).ok_or_else(unknown)?;
        let components = def
            .components
            .iter()
            .filter_map(|c| self.catalog.components.get(c).map(|r| (c.clone(), r.clone())))
            .collect();
        let snapshots: Vec<group::Snapshot> =
            self.catalog.snapshots.values().filter(|s| def.components.contains(&s.component)).cloned().collect();
        Ok(group::GroupInfo { definition: def, components, snapshots })
    }

    /// What monitoring exports, from the projections: per group the newest
    /// restorable point and its drills, per component how far its history
    /// is known and how much is unsound. No log replay, no full report: a
    /// group's newest point is [`Ledger::group_latest`].
    pub fn recovery_status(&self) -> Result<tidemark_lineage::status::Status, StoreError> {
        use tidemark_lineage::status::{GroupStatus, PgStatus, S3Status, Status, drills};
        let mut status = Status::default();
        for (name, g) in &self.catalog.groups {
            if g.def.is_none() {
                continue;
            }
            let newest_restorable = match self.group_latest(name)? {
                Some(Latest::Marker { point }) => Some(point.at),
                Some(Latest::Time { at, .. }) => Some(at),
                None => None,
            };
            let (drills_passed, drills_failed, last) = drills(&g.activities);
            // The newest drill's own entry says how long it took (one entry read).
            let last_drill_duration_ms = match last {
                Some((_, _, seq)) => match self.entry(seq)?.event.body {
                    tidemark_core::EventBody::DrillCompleted(d) => Some(d.duration_ms),
                    _ => None,
                },
                None => None,
            };
            status.groups.push(GroupStatus {
                group: name.clone(),
                newest_restorable,
                markers: g.markers.len() as u64,
                drills_passed,
                drills_failed,
                last_drill: last.map(|(at, passed, _)| (at, passed)),
                last_drill_duration_ms,
            });
        }
        for (component, r) in &self.catalog.components {
            if r.postgresql.is_some()
                && let Some(cluster) = self.pg_cluster(component)?
            {
                status.postgresql.push(PgStatus {
                    component: component.clone(),
                    segments_recorded: cluster.segments_recorded(),
                    unsound_segments: cluster.unsound_segments().len() as u64,
                });
            }
            if r.s3.is_some() {
                let bucket = self.s3_bucket(component)?;
                status.s3.push(S3Status {
                    component: component.clone(),
                    complete_through: bucket.as_ref().and_then(|b| b.complete_through),
                    problem_keys: bucket.map_or(0, |b| b.problem_keys.len() as u64),
                });
            }
        }
        Ok(status)
    }
}
