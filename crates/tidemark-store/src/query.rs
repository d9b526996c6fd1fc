//! Reading the log through its indexes: by kind, by actor, by time and by
//! sequence range. Queries never replay the log; they read posting lists
//! written per batch and then only the bundles that hold matching entries.

use std::collections::BTreeSet;

use tidemark_core::{Entry, Timestamp};

use crate::layout;
use crate::{Ledger, StoreError, decode, kind_index};

pub use tidemark_core::api::EntryFilter;

impl Ledger {
    /// The first sequence number recorded at or after `t`, if any.
    fn first_seq_at_or_after(&self, t: Timestamp) -> Result<Option<u64>, StoreError> {
        let start = layout::time_key(t, 0);
        let end = layout::time_key(Timestamp::from_micros(i64::MAX), u64::MAX);
        Ok(self.tree.range(start..=end).next().transpose()?.map(|(k, _)| layout::seq_from_key_suffix(&k)))
    }

    fn seq_bounds(&self, f: &EntryFilter) -> Result<Option<(u64, u64)>, StoreError> {
        let size = self.size();
        if size == 0 {
            return Ok(None);
        }
        let mut lo = f.from_seq.unwrap_or(0);
        let mut hi = f.to_seq.unwrap_or(u64::MAX).min(size - 1);
        if let Some(since) = f.since {
            match self.first_seq_at_or_after(since)? {
                Some(seq) => lo = lo.max(seq),
                None => return Ok(None),
            }
        }
        if let Some(until) = f.until {
            match self.first_seq_at_or_after(until.saturating_add_micros(1))? {
                Some(0) => return Ok(None),
                Some(seq) => hi = hi.min(seq - 1),
                None => {}
            }
        }
        Ok((lo <= hi).then_some((lo, hi)))
    }

    fn postings(&self, prefix: &[u8], lo: u64, hi: u64, out: &mut BTreeSet<u64>) -> Result<(), StoreError> {
        for r in self.tree.scan_prefix(prefix) {
            let (k, v) = r?;
            if layout::seq_from_key_suffix(&k) > hi {
                break;
            }
            let seqs: Vec<u64> = decode(&v, "index posting list")?;
            out.extend(seqs.into_iter().filter(|s| (lo..=hi).contains(s)));
        }
        Ok(())
    }

    fn artifact_postings(&self, artifact: &str, lo: u64, hi: u64, out: &mut BTreeSet<u64>) -> Result<(), StoreError> {
        let (hash, bucket) = layout::artifact_hash(artifact);
        for r in self.tree.scan_prefix([layout::BY_ARTIFACT, bucket]) {
            let (k, v) = r?;
            if layout::seq_from_key_suffix(&k) > hi {
                break;
            }
            let pairs: Vec<([u8; 16], u64)> = decode(&v, "artifact index")?;
            out.extend(pairs.into_iter().filter(|(h, s)| *h == hash && (lo..=hi).contains(s)).map(|(_, s)| s));
        }
        Ok(())
    }

    /// Calls `visit` with every matching entry in sequence order.
    pub fn query(
        &self,
        f: &EntryFilter,
        mut visit: impl FnMut(Entry) -> Result<(), StoreError>,
    ) -> Result<usize, StoreError> {
        let Some((lo, hi)) = self.seq_bounds(f)? else {
            return Ok(0);
        };
        let limit = f.limit.unwrap_or(usize::MAX);
        let mut count = 0;
        let matches = |e: &Entry| {
            (f.kinds.is_empty() || f.kinds.contains(&e.event.kind()))
                && f.actor.is_none_or(|a| a == e.event.actor)
                && f.artifact.as_ref().is_none_or(|a| e.event.body.artifacts().contains(a))
                && f.component.as_ref().is_none_or(|c| e.event.body.components().contains(c))
        };
        if f.kinds.is_empty() && f.actor.is_none() && f.artifact.is_none() && f.component.is_none() {
            for bundle in self.entries_from(lo) {
                for e in bundle? {
                    if e.seq > hi || count >= limit {
                        return Ok(count);
                    }
                    visit(e)?;
                    count += 1;
                }
            }
            return Ok(count);
        }
        let mut seqs = BTreeSet::new();
        if let Some(artifact) = &f.artifact {
            self.artifact_postings(artifact, lo, hi, &mut seqs)?;
        } else if let Some(component) = &f.component {
            self.postings(&layout::name_prefix(layout::BY_COMPONENT, component), lo, hi, &mut seqs)?;
        } else if !f.kinds.is_empty() {
            for kind in &f.kinds {
                self.postings(&[layout::BY_KIND, kind_index(*kind)], lo, hi, &mut seqs)?;
            }
        } else if let Some(actor) = f.actor {
            let mut prefix = vec![layout::BY_ACTOR];
            prefix.extend_from_slice(&actor.0);
            self.postings(&prefix, lo, hi, &mut seqs)?;
        }
        // Read each holding bundle once.
        let mut cached: Option<(u64, Vec<Entry>)> = None;
        for seq in seqs {
            if count >= limit {
                break;
            }
            let hit = cached
                .as_ref()
                .and_then(|(first, es)| seq.checked_sub(*first).and_then(|o| es.get(o as usize)))
                .filter(|e| e.seq == seq)
                .cloned();
            let entry = match hit {
                Some(e) => e,
                None => {
                    let bundle = self.entries_from(seq).next().transpose()?.unwrap_or_default();
                    let e = bundle
                        .first()
                        .filter(|e| e.seq == seq)
                        .cloned()
                        .ok_or_else(|| StoreError::Corrupt(format!("index names entry {seq}, which is missing")))?;
                    cached = Some((seq, bundle));
                    e
                }
            };
            if matches(&entry) {
                visit(entry)?;
                count += 1;
            }
        }
        Ok(count)
    }
}
