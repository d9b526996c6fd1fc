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
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use tidemark_core::event::EventBody;
use tidemark_core::{Entry, Lsn, Timestamp};
use tidemark_lineage::pg::{Cluster, Position, PositionSource, Positions, RestorePoints, positions_of};

use crate::layout::{self, name_prefix, time_bytes};
use crate::{StoreError, decode, encode};

pub use tidemark_lineage::pg::{ArchivedFile, FilesPage};

/// Archived files are stored in buckets of up to 256 consecutive segments
/// (the name without its last two hex digits), so that a batch of segments
/// costs a few keys, not one per segment; history files get their own bucket.
fn file_bucket_key(component: &str, file_name: &str) -> Vec<u8> {
    let mut k = name_prefix(layout::PG_FILES, component).to_vec();
    let stem = if file_name.len() == 24 && !file_name.contains('.') { &file_name[..22] } else { file_name };
    k.extend_from_slice(stem.as_bytes());
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

/// Decoded cluster states by component, shared by questions and appends.
#[derive(Default)]
pub(crate) struct ClusterCache(Mutex<HashMap<String, Arc<Cluster>>>);

impl ClusterCache {
    /// The cluster's state: from the cache, else decoded from `tree` once.
    fn get(&self, tree: &sled::Tree, component: &str) -> Result<Option<Arc<Cluster>>, StoreError> {
        if let Some(c) = self.0.lock().expect("cache lock").get(component) {
            return Ok(Some(c.clone()));
        }
        let Some(bytes) = tree.get(name_prefix(layout::PG_CLUSTER, component))? else { return Ok(None) };
        let cluster: Arc<Cluster> = Arc::new(decode(&bytes, "cluster projection")?);
        self.0.lock().expect("cache lock").insert(component.to_owned(), cluster.clone());
        Ok(Some(cluster))
    }

    /// Takes the cluster out for a batch to advance (no copy when nobody else
    /// holds it); if the batch fails, the next `get` decodes the stored state.
    fn take(&self, tree: &sled::Tree, component: &str) -> Result<Option<Cluster>, StoreError> {
        let taken = self.0.lock().expect("cache lock").remove(component);
        let arc = match taken {
            Some(c) => c,
            None => match tree.get(name_prefix(layout::PG_CLUSTER, component))? {
                Some(bytes) => return Ok(Some(decode(&bytes, "cluster projection")?)),
                None => return Ok(None),
            },
        };
        Ok(Some(Arc::try_unwrap(arc).unwrap_or_else(|shared| Cluster::clone(&shared))))
    }

    /// After a commit is durable: its clusters become current.
    pub(crate) fn update(&self, clusters: BTreeMap<String, Cluster>) {
        let mut cache = self.0.lock().expect("cache lock");
        for (component, cluster) in clusters {
            cache.insert(component, Arc::new(cluster));
        }
    }

    pub(crate) fn clear(&self) {
        self.0.lock().expect("cache lock").clear();
    }
}

/// The projection writes of one append batch.
#[derive(Default)]
pub(crate) struct ProjectionBatch {
    clusters: BTreeMap<String, Cluster>,
    /// File buckets touched by the batch, sorted by file name.
    files: BTreeMap<Vec<u8>, Vec<ArchivedFile>>,
    puts: Vec<(Vec<u8>, Vec<u8>)>,
}

impl ProjectionBatch {
    /// Folds one new entry into the projections.
    pub(crate) fn apply(&mut self, tree: &sled::Tree, cache: &ClusterCache, entry: &Entry) -> Result<(), StoreError> {
        let body = &entry.event.body;
        if let Some(component) = Cluster::component_of(body) {
            if !self.clusters.contains_key(&component) {
                let cluster = cache.take(tree, &component)?.unwrap_or_else(|| Cluster::new(&component));
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
            let key = file_bucket_key(&f.component, &f.file_name);
            if !self.files.contains_key(&key) {
                let bucket = match tree.get(&key)? {
                    Some(bytes) => decode(&bytes, "archived file bucket")?,
                    None => Vec::new(),
                };
                self.files.insert(key.clone(), bucket);
            }
            let bucket = self.files.get_mut(&key).expect("inserted above");
            // The newest record of a name wins (a file archived again).
            match bucket.binary_search_by(|x| x.file_name.cmp(&f.file_name)) {
                Ok(i) => bucket[i] = f,
                Err(i) => bucket.insert(i, f),
            }
        }
        Ok(())
    }

    /// Adds the writes to `batch`; returns the new cluster states, to be
    /// made current once the batch is durable.
    pub(crate) fn write(self, batch: &mut sled::Batch) -> BTreeMap<String, Cluster> {
        for (component, cluster) in &self.clusters {
            batch.insert(&name_prefix(layout::PG_CLUSTER, component)[..], encode(cluster));
        }
        for (key, bucket) in &self.files {
            batch.insert(key.as_slice(), encode(bucket));
        }
        for (k, v) in self.puts {
            batch.insert(k, v);
        }
        self.clusters
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

    fn key(&self, prefix: u8, tl: u32, order: [u8; 8], seq: u64) -> Vec<u8> {
        position_key(prefix, &self.component, tl, order, seq)
    }
}

impl Positions for StorePositions<'_> {
    fn last_at_or_before(&self, tl: u32, t: Timestamp) -> Option<Position> {
        let (p, upto) = (layout::PG_POSITIONS_BY_TIME, time_bytes(t));
        self.pick(self.tree.range(self.key(p, tl, [0; 8], 0)..=self.key(p, tl, upto, u64::MAX)).next_back())
    }

    fn first_at_or_after(&self, tl: u32, t: Timestamp) -> Option<Position> {
        let (p, from) = (layout::PG_POSITIONS_BY_TIME, time_bytes(t));
        self.pick(self.tree.range(self.key(p, tl, from, 0)..=self.key(p, tl, [0xff; 8], u64::MAX)).next())
    }

    fn last_with_lsn_at_most(&self, tl: u32, lsn: Lsn) -> Option<Position> {
        let (p, upto) = (layout::PG_POSITIONS_BY_LSN, lsn.0.to_be_bytes());
        self.pick(self.tree.range(self.key(p, tl, [0; 8], 0)..=self.key(p, tl, upto, u64::MAX)).next_back())
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
    pub fn pg_cluster(&self, component: &str) -> Result<Option<Arc<Cluster>>, StoreError> {
        self.pg_cache.get(&self.tree, component)
    }

    /// Bytes of a cluster's persisted state (what every question decodes).
    pub fn pg_cluster_encoded_len(&self, component: &str) -> Result<usize, StoreError> {
        Ok(self.tree.get(name_prefix(layout::PG_CLUSTER, component))?.map_or(0, |v| v.len()))
    }

    /// The observed positions of a component.
    pub fn pg_positions(&self, component: &str) -> StorePositions<'_> {
        StorePositions::new(&self.tree, component)
    }

    /// One archived file (segment name or `TTTTTTTT.history`) as recorded.
    pub fn pg_file(&self, component: &str, file_name: &str) -> Result<Option<ArchivedFile>, StoreError> {
        let Some(bytes) = self.tree.get(file_bucket_key(component, file_name))? else { return Ok(None) };
        let bucket: Vec<ArchivedFile> = decode(&bytes, "archived file bucket")?;
        Ok(bucket.into_iter().find(|f| f.file_name == file_name))
    }

    /// The archived files of a component in name order, from just after `after` when given.
    pub fn pg_files(
        &self,
        component: &str,
        after: Option<&str>,
    ) -> impl Iterator<Item = Result<ArchivedFile, StoreError>> + '_ {
        let prefix = name_prefix(layout::PG_FILES, component);
        let start = match after {
            Some(a) => file_bucket_key(component, a),
            None => prefix.to_vec(),
        };
        let mut end = prefix.to_vec();
        end.push(0xff);
        let after = after.map(str::to_owned);
        self.tree
            .range(start..end)
            .map(|r| -> Result<Vec<ArchivedFile>, StoreError> {
                let (_, v) = r?;
                decode(&v, "archived file bucket")
            })
            .flat_map(|bucket: Result<Vec<ArchivedFile>, StoreError>| match bucket {
                Ok(files) => files.into_iter().map(Ok).collect::<Vec<_>>(),
                Err(e) => vec![Err(e)],
            })
            .filter(move |f| match (f, &after) {
                (Ok(f), Some(a)) => f.file_name.as_str() > a.as_str(),
                _ => true,
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
        self.pg_cache.clear();
        let mut catalog = tidemark_lineage::group::Catalog::default();
        let mut from = 0;
        while from < self.size() {
            let mut projection = ProjectionBatch::default();
            let mut s3_projection = crate::s3::S3Batch::default();
            let mut next = from;
            let mut changes = Vec::new();
            for bundle in self.entries_from(from) {
                for e in bundle? {
                    projection.apply(&self.tree, &self.pg_cache, &e)?;
                    s3_projection.apply(&self.tree, &e)?;
                    if tidemark_lineage::group::concerns_catalog(&e.event.body) {
                        changes.extend(catalog.apply(e.seq, e.event.occurred_at, &e.event.body));
                    }
                    next = e.seq + 1;
                }
                if next - from >= 10_000 {
                    break;
                }
            }
            let mut batch = sled::Batch::default();
            let clusters = projection.write(&mut batch);
            s3_projection.write(&self.tree, &mut batch)?;
            crate::group::write_changes(&mut batch, &catalog, &changes);
            self.tree.apply_batch(batch)?;
            self.pg_cache.update(clusters);
            from = next;
        }
        self.tree.insert(layout::PROJECTION_VERSION_KEY, &layout::PROJECTION_VERSION.to_be_bytes())?;
        self.tree.flush()?;
        Ok(())
    }
}

/// Questions over the persisted projection (what the CLI and the HTTP API print).
impl crate::Ledger {
    /// The log state a plan computed now is computed from.
    pub(crate) fn checkpoint_ref(&self) -> tidemark_lineage::pg_plan::CheckpointRef {
        use base64::Engine as _;
        tidemark_lineage::pg_plan::CheckpointRef {
            origin: self.origin().to_owned(),
            tree_size: self.size(),
            root_hash: base64::engine::general_purpose::STANDARD.encode(self.root()),
        }
    }

    pub(crate) fn cluster_or_err(&self, component: &str) -> Result<Arc<Cluster>, StoreError> {
        self.pg_cluster(component)?.ok_or_else(|| {
            StoreError::NotFound(format!(
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
        let cluster = self.cluster_or_err(component)?;
        let positions = self.pg_positions(component);
        let plan = tidemark_lineage::pg_plan::plan(&cluster, &positions, target, options, self.checkpoint_ref());
        positions.check()?;
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tidemark_core::event::Event;
    use tidemark_core::{EventId, SecretKey, Timestamp};

    use crate::{Genesis, Ledger, layout};

    #[test]
    fn an_older_ledger_gets_its_projections_rebuilt_once_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let admin = SecretKey::from_seed("admin", [1; 32]);
        let genesis = Genesis {
            origin: "tidemark.test/ledger",
            ledger_key: SecretKey::from_seed("ledger", [2; 32]),
            admin_key: &admin,
            id: EventId::new_v7(1, [0; 10]),
            now: Timestamp::from_unix_seconds(1_790_000_000),
        };
        let mut ledger = Ledger::create(dir.path(), genesis).unwrap();
        let draft = json!({"kind": "pg.wal_archived", "body": {"component": "pg:main", "timeline": 1,
            "segment": "000000010000000000000002", "size_bytes": 1 << 20, "blake3": "aa".repeat(32),
            "sha256": "bb".repeat(32), "location": "/a/000000010000000000000002"}});
        let e =
            Event::from_draft(draft, admin.actor_id(), EventId::new_v7(2, [1; 10]), Timestamp::from_unix_seconds(1))
                .unwrap()
                .sign(&admin);
        ledger.append(vec![e], Timestamp::from_unix_seconds(1_790_000_001)).unwrap();
        let before = ledger.pg_cluster("pg:main").unwrap().unwrap();
        // Make it look like a ledger written before projections existed.
        for prefix in layout::PROJECTION_PREFIXES {
            for k in ledger.tree.scan_prefix([prefix]).keys() {
                ledger.tree.remove(k.unwrap()).unwrap();
            }
        }
        ledger.tree.remove(layout::PROJECTION_VERSION_KEY).unwrap();
        ledger.tree.flush().unwrap();
        ledger.pg_cache.clear();
        assert!(ledger.pg_cluster("pg:main").unwrap().is_none());
        drop(ledger);
        let ledger = Ledger::open(dir.path()).unwrap();
        assert_eq!(*ledger.pg_cluster("pg:main").unwrap().unwrap(), *before);
        assert!(ledger.pg_file("pg:main", "000000010000000000000002").unwrap().is_some());
    }
}
