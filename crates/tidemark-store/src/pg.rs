//! The persisted PostgreSQL projection, maintained at append time in the
//! same sled batch as the entries it derives from.
//!
//! Per cluster: its [`Cluster`] state (runs of sound segments, backups,
//! timelines — small, rewritten when a batch touches the cluster), one
//! record per archived file (what `pg restore-wal` and `pg check-archive`
//! read), and the observed positions indexed by time and by LSN per
//! timeline (what the time rules ask through [`Positions`]). Nothing here
//! replays the log; [`crate::Ledger::open`] rebuilds it once only when the
//! stored projection version is older than this code's.

use std::cell::RefCell;
use std::collections::BTreeMap;

use tidemark_core::event::EventBody;
use tidemark_core::{Digest32, Entry, Lsn, Timestamp};
use tidemark_lineage::pg::{Cluster, Position, PositionSource, Positions, RestorePoints, positions_of};

use crate::layout::{self, name_prefix, time_bytes};
use crate::{StoreError, decode, encode};

/// One file in a cluster's archive as the ledger recorded it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, bincode::Encode, bincode::Decode)]
pub struct ArchivedFile {
    pub component: String,
    /// `TTTTTTTTXXXXXXXXYYYYYYYY` for segments, `TTTTTTTT.history` for history files.
    pub file_name: String,
    pub timeline: u32,
    pub size_bytes: Option<u64>,
    pub blake3: Digest32,
    pub sha256: Option<Digest32>,
    pub location: String,
    /// The entry that recorded it.
    pub seq: u64,
}

fn file_key(component: &str, file_name: &str) -> Vec<u8> {
    let mut k = name_prefix(layout::PG_FILES, component).to_vec();
    k.extend_from_slice(file_name.as_bytes());
    k
}

fn position_key(prefix: u8, component: &str, timeline: u32, order: [u8; 8], seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(37);
    k.extend_from_slice(&name_prefix(prefix, component));
    k.extend_from_slice(&timeline.to_be_bytes());
    k.extend_from_slice(&order);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn restore_point_key(component: &str, name: &str) -> Vec<u8> {
    let mut k = name_prefix(layout::PG_RESTORE_POINTS, component).to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

/// The projection writes of one append batch.
#[derive(Default)]
pub(crate) struct ProjectionBatch {
    clusters: BTreeMap<String, Cluster>,
    puts: Vec<(Vec<u8>, Vec<u8>)>,
}

impl ProjectionBatch {
    /// Folds one new entry into the projections.
    pub(crate) fn apply(&mut self, tree: &sled::Tree, entry: &Entry) -> Result<(), StoreError> {
        let body = &entry.event.body;
        if let Some(component) = Cluster::component_of(body) {
            if !self.clusters.contains_key(&component) {
                let cluster = match tree.get(name_prefix(layout::PG_CLUSTER, &component))? {
                    Some(bytes) => decode(&bytes, "cluster projection")?,
                    None => Cluster::new(&component),
                };
                self.clusters.insert(component.clone(), cluster);
            }
            self.clusters.get_mut(&component).expect("inserted above").apply(body);
        }
        if let Some((component, position)) = positions_of(body) {
            let value = encode(&position);
            let t = time_bytes(position.observed_at);
            let l = position.lsn.0.to_be_bytes();
            let tl = position.timeline;
            self.puts.push((position_key(layout::PG_POSITIONS_BY_TIME, &component, tl, t, entry.seq), value.clone()));
            self.puts.push((position_key(layout::PG_POSITIONS_BY_LSN, &component, tl, l, entry.seq), value.clone()));
            if let PositionSource::RestorePoint(name) = &position.source {
                self.puts.push((restore_point_key(&component, name), value));
            }
        }
        let file = match body {
            EventBody::PgWalArchived(w) => Some(ArchivedFile {
                component: w.component.to_string(),
                file_name: w.segment.clone(),
                timeline: w.timeline,
                size_bytes: Some(w.size_bytes),
                blake3: w.blake3,
                sha256: Some(w.sha256),
                location: w.location.clone(),
                seq: entry.seq,
            }),
            EventBody::PgTimelineHistory(h) => Some(ArchivedFile {
                component: h.component.to_string(),
                file_name: format!("{:08X}.history", h.timeline),
                timeline: h.timeline,
                size_bytes: None,
                blake3: h.blake3,
                sha256: None,
                location: h.location.clone(),
                seq: entry.seq,
            }),
            _ => None,
        };
        if let Some(f) = file {
            self.puts.push((file_key(&f.component, &f.file_name), encode(&f)));
        }
        Ok(())
    }

    pub(crate) fn write(self, batch: &mut sled::Batch) {
        for (component, cluster) in &self.clusters {
            batch.insert(&name_prefix(layout::PG_CLUSTER, component)[..], encode(cluster));
        }
        for (k, v) in self.puts {
            batch.insert(k, v);
        }
    }
}

/// A cluster's observed positions, read from the store's index.
pub struct StorePositions<'a> {
    tree: &'a sled::Tree,
    component: String,
    /// The first storage error met behind the infallible trait; see [`StorePositions::check`].
    error: RefCell<Option<StoreError>>,
}

impl StorePositions<'_> {
    pub(crate) fn new<'t>(tree: &'t sled::Tree, component: &str) -> StorePositions<'t> {
        StorePositions { tree, component: component.to_owned(), error: RefCell::new(None) }
    }

    /// Fails if any lookup failed (answers given after a failure are not to be trusted).
    pub fn check(&self) -> Result<(), StoreError> {
        match self.error.borrow_mut().take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn pick(&self, item: Option<sled::Result<(sled::IVec, sled::IVec)>>) -> Option<Position> {
        match item {
            None => None,
            Some(Ok((_, v))) => match decode(&v, "position") {
                Ok(p) => Some(p),
                Err(e) => {
                    self.error.borrow_mut().get_or_insert(e);
                    None
                }
            },
            Some(Err(e)) => {
                self.error.borrow_mut().get_or_insert(e.into());
                None
            }
        }
    }

    fn bounds(&self, prefix: u8, tl: u32, order: [u8; 8]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let lo = position_key(prefix, &self.component, tl, [0; 8], 0);
        let at = position_key(prefix, &self.component, tl, order, 0);
        let hi = position_key(prefix, &self.component, tl, [0xff; 8], u64::MAX);
        (lo, at, hi)
    }
}

impl Positions for StorePositions<'_> {
    fn last_at_or_before(&self, tl: u32, t: Timestamp) -> Option<Position> {
        let (lo, _, _) = self.bounds(layout::PG_POSITIONS_BY_TIME, tl, [0; 8]);
        let upto = position_key(layout::PG_POSITIONS_BY_TIME, &self.component, tl, time_bytes(t), u64::MAX);
        self.pick(self.tree.range(lo..=upto).next_back())
    }

    fn first_at_or_after(&self, tl: u32, t: Timestamp) -> Option<Position> {
        let (_, at, hi) = self.bounds(layout::PG_POSITIONS_BY_TIME, tl, time_bytes(t));
        self.pick(self.tree.range(at..=hi).next())
    }

    fn last_with_lsn_at_most(&self, tl: u32, lsn: Lsn) -> Option<Position> {
        let (lo, _, _) = self.bounds(layout::PG_POSITIONS_BY_LSN, tl, [0; 8]);
        let upto = position_key(layout::PG_POSITIONS_BY_LSN, &self.component, tl, lsn.0.to_be_bytes(), u64::MAX);
        self.pick(self.tree.range(lo..=upto).next_back())
    }
}

impl RestorePoints for StorePositions<'_> {
    fn restore_point(&self, name: &str) -> Option<Position> {
        match self.tree.get(restore_point_key(&self.component, name)) {
            Ok(v) => self.pick(v.map(|v| Ok((sled::IVec::default(), v)))),
            Err(e) => {
                self.error.borrow_mut().get_or_insert(e.into());
                None
            }
        }
    }
}

impl crate::Ledger {
    /// The persisted state of a PostgreSQL component, if anything was recorded about it.
    pub fn pg_cluster(&self, component: &str) -> Result<Option<Cluster>, StoreError> {
        self.tree
            .get(name_prefix(layout::PG_CLUSTER, component))?
            .map(|bytes| decode(&bytes, "cluster projection"))
            .transpose()
    }

    /// Every PostgreSQL component with recorded state, by name.
    pub fn pg_clusters(&self) -> Result<Vec<Cluster>, StoreError> {
        let mut out: Vec<Cluster> = Vec::new();
        for r in self.tree.scan_prefix([layout::PG_CLUSTER]) {
            let (_, v) = r?;
            out.push(decode(&v, "cluster projection")?);
        }
        out.sort_by(|a, b| a.component.cmp(&b.component));
        Ok(out)
    }

    /// The observed positions of a component.
    pub fn pg_positions(&self, component: &str) -> StorePositions<'_> {
        StorePositions::new(&self.tree, component)
    }

    /// One archived file (segment name or `TTTTTTTT.history`) as recorded.
    pub fn pg_file(&self, component: &str, file_name: &str) -> Result<Option<ArchivedFile>, StoreError> {
        self.tree.get(file_key(component, file_name))?.map(|v| decode(&v, "archived file")).transpose()
    }

    /// The archived files of a component in name order, from just after `after` when given.
    pub fn pg_files(
        &self,
        component: &str,
        after: Option<&str>,
    ) -> impl Iterator<Item = Result<ArchivedFile, StoreError>> + '_ {
        let prefix = name_prefix(layout::PG_FILES, component);
        let mut start = prefix.to_vec();
        if let Some(a) = after {
            start.extend_from_slice(a.as_bytes());
            start.push(0);
        }
        let mut end = prefix.to_vec();
        end.push(0xff);
        self.tree.range(start..end).map(|r| {
            let (_, v) = r?;
            decode(&v, "archived file")
        })
    }

    /// Rebuilds every projection from the log (only when the stored
    /// projection version is older than this code's), then records the version.
    pub(crate) fn rebuild_projections(&mut self) -> Result<(), StoreError> {
        for prefix in layout::PROJECTION_PREFIXES {
            let mut batch = sled::Batch::default();
            for r in self.tree.scan_prefix([prefix]) {
                batch.remove(r?.0);
            }
            self.tree.apply_batch(batch)?;
        }
        let mut from = 0;
        while from < self.size() {
            let mut projection = ProjectionBatch::default();
            let mut next = from;
            for bundle in self.entries_from(from) {
                for e in bundle? {
                    projection.apply(&self.tree, &e)?;
                    next = e.seq + 1;
                }
                if next - from >= 10_000 {
                    break;
                }
            }
            let mut batch = sled::Batch::default();
            projection.write(&mut batch);
            self.tree.apply_batch(batch)?;
            from = next;
        }
        self.tree.insert(layout::PROJECTION_VERSION_KEY, &layout::PROJECTION_VERSION.to_be_bytes())?;
        self.tree.flush()?;
        Ok(())
    }
}

/// Questions over the persisted projection (what the CLI and the HTTP API print).
impl crate::Ledger {
    fn cluster_or_err(&self, component: &str) -> Result<Cluster, StoreError> {
        self.pg_cluster(component)?.ok_or_else(|| {
            StoreError::BadRequest(format!(
                "nothing is recorded about PostgreSQL component {component:?}; is the name right (pg:CLUSTER)?"
            ))
        })
    }

    /// Windows, backups and holes of one cluster.
    pub fn pg_report(&self, component: &str) -> Result<tidemark_lineage::pg_plan::Report, StoreError> {
        let cluster = self.cluster_or_err(component)?;
        let positions = self.pg_positions(component);
        let report = tidemark_lineage::pg_plan::report(&cluster, &positions);
        positions.check()?;
        Ok(report)
    }

    /// "Is this target restorable, and if not, exactly why?"
    pub fn pg_answer(
        &self,
        component: &str,
        target: &tidemark_lineage::pg_plan::Target,
    ) -> Result<tidemark_lineage::pg_plan::Answer, StoreError> {
        let cluster = self.cluster_or_err(component)?;
        let positions = self.pg_positions(component);
        let answer = tidemark_lineage::pg_plan::answer(&cluster, &positions, target);
        positions.check()?;
        Ok(answer)
    }

    /// A restore plan computed at the current checkpoint; `Err(Ok(reason))`
    /// when the target is not restorable.
    pub fn pg_plan(
        &self,
        component: &str,
        target: &tidemark_lineage::pg_plan::Target,
        options: &tidemark_lineage::pg_plan::PlanOptions,
    ) -> Result<Result<tidemark_lineage::pg_plan::Plan, tidemark_lineage::pg::NotRestorable>, StoreError> {
        use base64::Engine as _;
        let cluster = self.cluster_or_err(component)?;
        let positions = self.pg_positions(component);
        let checkpoint = tidemark_lineage::pg_plan::CheckpointRef {
            origin: self.origin().to_owned(),
            tree_size: self.size(),
            root_hash: base64::engine::general_purpose::STANDARD.encode(self.root()),
        };
        let plan = tidemark_lineage::pg_plan::plan(&cluster, &positions, target, options, checkpoint);
        positions.check()?;
        Ok(plan)
    }
}
