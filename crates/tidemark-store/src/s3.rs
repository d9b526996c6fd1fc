//! The persisted S3 projection, maintained in the append batch: per bucket a
//! small summary (`tidemark_lineage::s3::Bucket`), per key its history in
//! recency order. The manifest at T streams the histories in key order;
//! answers read only the summary and the keys whose history has holes.

use std::collections::BTreeMap;

use tidemark_core::event::EventBody;
use tidemark_core::{Entry, Timestamp};
use tidemark_lineage::s3::{self, Bucket, KeyHistory, ManifestLine, StoredHistory, VersionRecord};

use crate::layout::{self, name_prefix};
use crate::{StoreError, decode, encode};

fn decode_history(bytes: &[u8]) -> Result<KeyHistory, StoreError> {
    StoredHistory::parse(bytes)
        .and_then(|h| h.decode())
        .map_err(|e| StoreError::Corrupt(format!("cannot decode key history: {e}")))
}

fn history_key(component: &str, key: &str) -> Vec<u8> {
    let mut k = name_prefix(layout::S3_KEYS, component).to_vec();
    k.extend_from_slice(key.as_bytes());
    k
}

/// The time-index key of one second (Unix seconds, sign-flipped big-endian).
fn second_key(prefix: u8, component: &str, second: i64) -> Vec<u8> {
    let mut k = name_prefix(prefix, component).to_vec();
    k.extend_from_slice(&((second as u64) ^ (1 << 63)).to_be_bytes());
    k
}

fn decode_keys(v: &[u8]) -> Result<Vec<String>, StoreError> {
    decode(v, "time index")
}

/// A manifest line and its canonical bytes, or nothing to do for a key.
type Judged = Option<(ManifestLine, Vec<u8>)>;

/// The S3 projection writes of one append batch.
#[derive(Default)]
pub(crate) struct S3Batch {
    buckets: BTreeMap<String, Bucket>,
    histories: BTreeMap<Vec<u8>, (String, String, KeyHistory, usize)>,
    /// Per component and second (Unix), the keys this batch recorded entries of.
    seconds: BTreeMap<String, BTreeMap<i64, Vec<String>>>,
}

/// The key of a busy run starting at `second`.
fn busy_key(component: &str, second: i64) -> Vec<u8> {
    second_key(layout::S3_BUSY, component, second)
}

/// A stored run as (first, last) Unix seconds.
fn busy_run(prefix_len: usize, k: &[u8], v: &[u8]) -> Result<(i64, i64), StoreError> {
    let start: [u8; 8] = k[prefix_len..].try_into().map_err(|_| StoreError::Corrupt("a busy-run key".into()))?;
    let end: [u8; 8] = v.try_into().map_err(|_| StoreError::Corrupt("a busy-run value".into()))?;
    Ok(((u64::from_be_bytes(start) ^ (1 << 63)) as i64, i64::from_be_bytes(end)))
}

/// The stored run that holds or ends just before `second`, if any.
fn run_before(tree: &sled::Tree, component: &str, second: i64) -> Result<Option<(i64, i64)>, StoreError> {
    let prefix = name_prefix(layout::S3_BUSY, component);
    match tree.range(prefix.to_vec()..=busy_key(component, second)).next_back() {
        Some(r) => {
            let (k, v) = r?;
            Ok(Some(busy_run(prefix.len(), &k, &v)?))
        }
        None => Ok(None),
    }
}

impl S3Batch {
    fn bucket(&mut self, tree: &sled::Tree, component: &str) -> Result<&mut Bucket, StoreError> {
        if !self.buckets.contains_key(component) {
            let b = match tree.get(name_prefix(layout::S3_BUCKET, component))? {
                Some(v) => decode(&v, "bucket projection")?,
                None => Bucket::new(component),
            };
            self.buckets.insert(component.to_owned(), b);
        }
        Ok(self.buckets.get_mut(component).expect("inserted above"))
    }

    fn history(&mut self, tree: &sled::Tree, component: &str, key: &str) -> Result<&mut KeyHistory, StoreError> {
        let hk = history_key(component, key);
        if !self.histories.contains_key(&hk) {
            let h: KeyHistory = match tree.get(&hk)? {
                Some(v) => decode_history(&v)?,
                None => KeyHistory::default(),
            };
            let len = h.entries.len();
            self.histories.insert(hk.clone(), (component.to_owned(), key.to_owned(), h, len));
        }
        Ok(&mut self.histories.get_mut(&hk).expect("inserted above").2)
    }

    pub(crate) fn apply(&mut self, tree: &sled::Tree, entry: &Entry) -> Result<(), StoreError> {
        let body = &entry.event.body;
        let Some(component) = Bucket::component_of(body) else { return Ok(()) };
        match body {
            EventBody::S3ObjectVersion(o) => {
                let record = VersionRecord::from_event(o, entry.seq);
                self.bucket(tree, &component)?;
                if self.history(tree, &component, &o.key)?.record(record) {
                    let second = o.last_modified.as_micros().div_euclid(s3::SECOND_US);
                    self.seconds.entry(component.clone()).or_default().entry(second).or_default().push(o.key.clone());
                }
            }
            EventBody::S3VersionMissing(m) => {
                self.bucket(tree, &component)?;
                self.history(tree, &component, &m.key)?.mark_missing(&m.version_id);
            }
            other => self.bucket(tree, &component)?.apply_summary(other),
        }
        Ok(())
    }

    pub(crate) fn write(mut self, tree: &sled::Tree, batch: &mut sled::Batch) -> Result<(), StoreError> {
        for (component, seconds) in &self.seconds {
            // The time index: one key per second, its keys sorted.
            for (second, keys) in seconds {
                let k = second_key(layout::S3_TIMES, component, *second);
                let mut all = match tree.get(&k)? {
                    Some(v) => decode_keys(&v)?,
                    None => Vec::new(),
                };
                all.extend(keys.iter().cloned());
                all.sort_unstable();
                all.dedup();
                batch.insert(k, encode(&all));
            }
            // Busy runs: the batch's runs of seconds merged with the stored runs they touch.
            let batch_runs = s3::merge_runs(seconds.keys().map(|s| (*s, *s)).collect());
            let mut runs = batch_runs.clone();
            let mut stored = Vec::new();
            for &(a, b) in &batch_runs {
                // The stored run holding or ending just before `a`, and those starting inside `[a, b + 1]`.
                if let Some((x, y)) = run_before(tree, component, a)?
                    && y.saturating_add(1) >= a
                {
                    stored.push(x);
                    runs.push((x, y));
                }
                for r in tree.range(busy_key(component, a.saturating_add(1))..=busy_key(component, b.saturating_add(1)))
                {
                    let (k, v) = r?;
                    let (x, y) = busy_run(name_prefix(layout::S3_BUSY, component).len(), &k, &v)?;
                    stored.push(x);
                    runs.push((x, y));
                }
            }
            let merged = s3::merge_runs(runs);
            for a in stored {
                batch.remove(busy_key(component, a));
            }
            for (a, b) in merged {
                batch.insert(busy_key(component, a), &b.to_be_bytes()[..]);
            }
        }
        for (hk, (component, key, h, before)) in &self.histories {
            if let Some(b) = self.buckets.get_mut(component) {
                b.key_changed(key, *before, h);
            }
            batch.insert(hk.as_slice(), s3::encode_history(h));
        }
        for (component, b) in &self.buckets {
            batch.insert(&name_prefix(layout::S3_BUCKET, component)[..], encode(b));
        }
        Ok(())
    }
}

impl crate::Ledger {
    /// The summary of an S3 component, if anything was recorded about it.
    pub fn s3_bucket(&self, component: &str) -> Result<Option<Bucket>, StoreError> {
        self.tree.get(name_prefix(layout::S3_BUCKET, component))?.map(|v| decode(&v, "bucket projection")).transpose()
    }

    pub(crate) fn s3_bucket_or_err(&self, component: &str) -> Result<Bucket, StoreError> {
        self.s3_bucket(component)?.ok_or_else(|| {
            StoreError::NotFound(format!(
                "nothing is recorded about S3 component {component:?}: register it (`tidemark s3 register --component {component} …`) and scan it (`tidemark s3 scan --component {component} …`) first"
            ))
        })
    }

    /// One key's recorded history, newest first.
    pub fn s3_history(&self, component: &str, key: &str) -> Result<Option<KeyHistory>, StoreError> {
        self.tree.get(history_key(component, key))?.map(|v| decode_history(&v)).transpose()
    }

    /// Every key's history in key order (after `after`, when given).
    pub fn s3_histories(
        &self,
        component: &str,
        after: Option<&str>,
    ) -> impl Iterator<Item = Result<(String, KeyHistory), StoreError>> + '_ {
        let prefix = name_prefix(layout::S3_KEYS, component);
        let mut start = prefix.to_vec();
        if let Some(a) = after {
            start.extend_from_slice(a.as_bytes());
            start.push(0);
        }
        let mut end = prefix.to_vec();
        end.push(0xff);
        self.tree.range(start..end).map(move |r| {
            let (k, v) = r?;
            let key = String::from_utf8(k[prefix.len()..].to_vec())
                .map_err(|_| StoreError::Corrupt("an S3 key in the index is not UTF-8".into()))?;
            Ok((key, decode_history(&v)?))
        })
    }

    pub(crate) fn s3_problem_histories(&self, bucket: &Bucket) -> Result<Vec<(String, KeyHistory)>, StoreError> {
        bucket
            .problem_keys
            .iter()
            .map(|k| Ok((k.clone(), self.s3_history(&bucket.component, k)?.unwrap_or_default())))
            .collect()
    }

    /// The histories of every key with an entry stamped within `[from, to]`, in key order.
    pub fn s3_written_between(
        &self,
        component: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<(String, KeyHistory)>, StoreError> {
        if from > to {
            return Ok(Vec::new());
        }
        let (first, last) = (from.as_micros().div_euclid(s3::SECOND_US), to.as_micros().div_euclid(s3::SECOND_US));
        let mut keys = std::collections::BTreeSet::new();
        for r in self
            .tree
            .range(second_key(layout::S3_TIMES, component, first)..=second_key(layout::S3_TIMES, component, last))
        {
            keys.extend(decode_keys(&r?.1)?);
        }
        keys.into_iter().map(|k| Ok((k.clone(), self.s3_history(component, &k)?.unwrap_or_default()))).collect()
    }

    /// Every run of whole seconds `[first, last]` in which an entry of the bucket was stamped.
    pub fn s3_busy(&self, component: &str) -> Result<Vec<(Timestamp, Timestamp)>, StoreError> {
        let prefix = name_prefix(layout::S3_BUSY, component);
        self.tree
            .scan_prefix(prefix)
            .map(|r| {
                let (k, v) = r?;
                let (a, b) = busy_run(prefix.len(), &k, &v)?;
                Ok((Timestamp::from_micros(a * s3::SECOND_US), Timestamp::from_micros(b * s3::SECOND_US)))
            })
            .collect()
    }

    /// The keys that can be a problem at T: those whose history has holes and
    /// those with an entry that may lie on either side of T.
    pub(crate) fn s3_candidates(
        &self,
        bucket: &Bucket,
        at: Timestamp,
        skew_us: i64,
    ) -> Result<Vec<(String, KeyHistory)>, StoreError> {
        let (from, to) = s3::uncertain_band(at, skew_us);
        let mut out = self.s3_problem_histories(bucket)?;
        out.extend(self.s3_written_between(&bucket.component, from, to)?);
        Ok(out)
    }

    /// "Is the bucket restorable at T (on S3's clock)?" — from the summary,
    /// the problem keys and the keys written in T's second only.
    pub fn s3_answer(&self, component: &str, at: Timestamp) -> Result<s3::S3Answer, StoreError> {
        let bucket = self.s3_bucket_or_err(component)?;
        Ok(s3::answer(&bucket, &self.s3_candidates(&bucket, at, 0)?, at, 0))
    }

    /// Windows, versioning, watermark and problem keys of a bucket, and its
    /// registered identity (a registered bucket not yet scanned has an empty report).
    pub fn s3_report(&self, component: &str) -> Result<s3::S3Report, StoreError> {
        let registered = self.catalog.components.get(component).and_then(|r| r.s3.clone());
        let bucket = match (self.s3_bucket(component)?, &registered) {
            (Some(b), _) => b,
            (None, Some(_)) => Bucket::new(component),
            (None, None) => self.s3_bucket_or_err(component)?,
        };
        Ok(s3::report(&bucket, &self.s3_problem_histories(&bucket)?, &self.s3_busy(component)?, registered))
    }

    /// Streams the manifest at T (on a clock within `skew_us` of S3's) in key
    /// order; returns its summary and digest.
    /// Histories are read in chunks and decoded and judged on all cores; lines
    /// are handed over and hashed in key order.
    pub fn s3_manifest(
        &self,
        component: &str,
        at: Timestamp,
        skew_us: i64,
        each: &mut dyn FnMut(&ManifestLine) -> Result<(), StoreError>,
    ) -> Result<s3::ManifestSummary, StoreError> {
        use rayon::prelude::*;
        const CHUNK: usize = 8192;
        let bucket = self.s3_bucket_or_err(component)?;
        let prefix = name_prefix(layout::S3_KEYS, component);
        let mut digest = blake3::Hasher::new();
        let (mut restore, mut remove, mut problems) = (0u64, 0u64, 0u64);
        // Reading runs one chunk ahead of judging: sled's scan on one thread,
        // decoding and the rules on the others.
        let raw = self.tree.scan_prefix(prefix);
        std::thread::scope(|scope| -> Result<(), StoreError> {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Vec<(sled::IVec, sled::IVec)>, StoreError>>(2);
            scope.spawn(move || {
                let mut raw = raw;
                loop {
                    let chunk: Result<Vec<_>, _> = raw.by_ref().take(CHUNK).collect();
                    let chunk = chunk.map_err(StoreError::from);
                    let stop = chunk.as_ref().map_or(true, Vec::is_empty);
                    if tx.send(chunk).is_err() || stop {
                        return;
                    }
                }
            });
            for chunk in rx {
                let chunk = chunk?;
                if chunk.is_empty() {
                    break;
                }
                let judged: Vec<Result<Judged, StoreError>> = chunk
                    .par_iter()
                    .map(|(k, v)| {
                        let key = std::str::from_utf8(&k[prefix.len()..])
                            .map_err(|_| StoreError::Corrupt("an S3 key in the index is not UTF-8".into()))?;
                        let corrupt = |e: String| StoreError::Corrupt(format!("key history of {key:?}: {e}"));
                        let stored = StoredHistory::parse(v).map_err(corrupt)?;
                        let Some(line) =
                            s3::manifest_line_stored(key, &stored, at, skew_us, &bucket.versioning).map_err(corrupt)?
                        else {
                            return Ok(None);
                        };
                        let mut bytes = tidemark_core::canonical_writer::to_canonical(&line)
                            .map_err(|e| StoreError::Corrupt(format!("manifest line: {e}")))?;
                        bytes.push(b'\n');
                        Ok(Some((line, bytes)))
                    })
                    .collect();
                for item in judged {
                    let Some((line, bytes)) = item? else { continue };
                    match &line {
                        ManifestLine::Restore { .. } => restore += 1,
                        ManifestLine::Remove { .. } => remove += 1,
                        ManifestLine::Problem { .. } => problems += 1,
                    }
                    digest.update(&bytes);
                    each(&line)?;
                }
            }
            Ok(())
        })?;
        let bound = bucket.bounds_at(at).err();
        Ok(s3::ManifestSummary {
            component: component.to_owned(),
            at,
            keys_to_restore: restore,
            keys_to_remove: remove,
            keys_with_problems: problems,
            restorable: bound.is_none() && problems == 0,
            bound,
            digest: tidemark_core::Digest32(*digest.finalize().as_bytes()),
        })
    }
}
