//! S3 continuous recovery (DESIGN §6): which version of each key was current
//! at T, and whether a bucket can be reconstructed at T.
//!
//! The rules, each a function with tests named after it:
//!
//! * [`recency_cmp`]: the order of a key's entries, newest first — by
//!   LastModified, then (same second) by the scan that first saw them (a later
//!   scan saw a later write), then by position in that scan's listing.
//!   Entries with equal LastModified, first-seen scan and position have no
//!   known order.
//! * [`version_at`]: the entry current at T (T inclusive): drop entries with
//!   LastModified > T, the newest remaining decides — a version means that
//!   version, a delete marker or nothing means absent; an unresolved tie is
//!   *ambiguous*, never guessed; a `null` version replaced after T (suspended
//!   versioning overwrites it) and a version reported missing are
//!   *unrecoverable*.
//! * [`Bucket::answer`]: bucket B is restorable at T when versioning was
//!   enabled by T, a scan has completed through ≥ T, and no key is ambiguous
//!   or unrecoverable at T.
//! * [`Bucket::windows`]: the restorable ranges, bounded by versioning, the
//!   scan watermark and the keys whose history has holes.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use tidemark_core::Timestamp;
use tidemark_core::event::{EventBody, RetentionMode, VersioningStatus};

/// One recorded entry (version or delete marker) of a key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, bincode::Encode, bincode::Decode)]
pub struct VersionRecord {
    pub version_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    pub size_bytes: u64,
    pub last_modified: Timestamp,
    pub is_delete_marker: bool,
    pub listing_position: u64,
    pub first_seen_at: Timestamp,
    /// Reported gone from the bucket (`s3.version_missing`).
    pub missing: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_lock_mode: Option<RetentionMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_lock_retain_until: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_lock_legal_hold: Option<bool>,
    /// The entry that recorded it.
    pub seq: u64,
}

impl VersionRecord {
    /// The stored form of an `s3.object_version` event recorded as entry `seq`.
    pub fn from_event(o: &tidemark_core::event::S3ObjectVersion, seq: u64) -> VersionRecord {
        VersionRecord {
            version_id: o.version_id.clone(),
            etag: o.etag.clone(),
            size_bytes: o.size_bytes,
            last_modified: o.last_modified,
            is_delete_marker: o.is_delete_marker,
            listing_position: o.listing_position,
            first_seen_at: o.first_seen_at,
            missing: false,
            object_lock_mode: o.object_lock_mode,
            object_lock_retain_until: o.object_lock_retain_until,
            object_lock_legal_hold: o.object_lock_legal_hold,
            seq,
        }
    }
}

pub const NULL_VERSION: &str = "null";

/// The fields of an entry the rules look at (fixed size: stored first, so a
/// manifest judges a key without decoding its version strings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub last_modified: Timestamp,
    pub first_seen_at: Timestamp,
    pub listing_position: u64,
    pub is_delete_marker: bool,
    pub missing: bool,
    pub is_null: bool,
}

impl Head {
    pub fn of(e: &VersionRecord) -> Head {
        Head {
            last_modified: e.last_modified,
            first_seen_at: e.first_seen_at,
            listing_position: e.listing_position,
            is_delete_marker: e.is_delete_marker,
            missing: e.missing,
            is_null: e.version_id == NULL_VERSION,
        }
    }
}

fn head_cmp(a: &Head, b: &Head) -> Ordering {
    b.last_modified
        .cmp(&a.last_modified)
        .then(b.first_seen_at.cmp(&a.first_seen_at))
        .then(a.listing_position.cmp(&b.listing_position))
}

/// Rule: recency order, newest first; `Equal` means the order is unknown.
pub fn recency_cmp(a: &VersionRecord, b: &VersionRecord) -> Ordering {
    head_cmp(&Head::of(a), &Head::of(b))
}

/// What a key was at T.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum KeyAt {
    Present {
        version: VersionRecord,
    },
    /// No entry at or before T, or a delete marker.
    Absent,
    /// Entries in the same second whose order is unknown.
    Ambiguous {
        version_ids: Vec<String>,
        last_modified: Timestamp,
    },
    /// The version current at T is gone.
    Unrecoverable {
        version_id: String,
        reason: Unrecoverable,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "why", rename_all = "snake_case")]
pub enum Unrecoverable {
    /// Reported missing by a scan (deleted permanently or lost).
    Missing,
    /// Overwritten under suspended versioning at `replaced_at`: the `null` version current at T no longer exists.
    NullReplaced { replaced_at: Timestamp },
}

impl KeyAt {
    pub fn is_problem(&self) -> bool {
        matches!(self, KeyAt::Ambiguous { .. } | KeyAt::Unrecoverable { .. })
    }
}

/// A key's recorded history, kept in recency order.
#[derive(Debug, Clone, Default, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct KeyHistory {
    pub entries: Vec<VersionRecord>,
}

impl KeyHistory {
    /// Records an entry; returns false when it was already known (same version id and LastModified).
    pub fn record(&mut self, v: VersionRecord) -> bool {
        if let Some(known) =
            self.entries.iter_mut().find(|e| e.version_id == v.version_id && e.last_modified == v.last_modified)
        {
            // A rescan may add lock details learned later; the rest stands.
            if known.object_lock_mode.is_none() && v.object_lock_mode.is_some() {
                known.object_lock_mode = v.object_lock_mode;
                known.object_lock_retain_until = v.object_lock_retain_until;
            }
            return false;
        }
        let at = self.entries.partition_point(|e| recency_cmp(e, &v) != Ordering::Greater);
        self.entries.insert(at, v);
        true
    }

    /// Marks the newest entry of `version_id` missing.
    pub fn mark_missing(&mut self, version_id: &str) -> bool {
        match self.entries.iter_mut().find(|e| e.version_id == version_id && !e.missing) {
            Some(e) => {
                e.missing = true;
                true
            }
            None => false,
        }
    }

    /// Whether any T could give an ambiguous or unrecoverable answer.
    pub fn has_problems(&self) -> bool {
        self.entries.iter().any(|e| e.missing)
            || self.entries.iter().filter(|e| e.version_id == NULL_VERSION && !e.is_delete_marker).count() > 1
            || self.entries.windows(2).any(|w| recency_cmp(&w[0], &w[1]) == Ordering::Equal)
    }

    /// The key as it is now (newest entry): present unless a delete marker, missing, or nothing.
    pub fn exists_now(&self) -> bool {
        self.entries.first().is_some_and(|e| !e.is_delete_marker && !e.missing)
    }
}

/// What the rule decided, by position in the recency-ordered entries.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Decision {
    Present(usize),
    Absent,
    Ambiguous(Vec<usize>, Timestamp),
    NullReplaced(usize, Timestamp),
    Missing(usize),
}

/// Rule: the entry current at `t` (inclusive), over heads in recency order.
fn decide(heads: &[Head], t: Timestamp) -> Decision {
    let Some(top_at) = heads.iter().position(|e| e.last_modified <= t) else { return Decision::Absent };
    let top = &heads[top_at];
    let tied = heads[top_at..].iter().take_while(|e| e.last_modified == top.last_modified).count();
    if tied > 1 && head_cmp(&heads[top_at], &heads[top_at + 1]) == Ordering::Equal {
        let unordered =
            (top_at..top_at + tied).filter(|&i| head_cmp(&heads[i], top) == Ordering::Equal).collect::<Vec<_>>();
        return Decision::Ambiguous(unordered, top.last_modified);
    }
    if top.is_delete_marker {
        return Decision::Absent;
    }
    if top.is_null
        && let Some(later) =
            heads.iter().filter(|e| e.is_null && e.last_modified > top.last_modified).map(|e| e.last_modified).min()
    {
        return Decision::NullReplaced(top_at, later);
    }
    if top.missing {
        return Decision::Missing(top_at);
    }
    Decision::Present(top_at)
}

fn key_at<E>(d: Decision, entry: &dyn Fn(usize) -> Result<VersionRecord, E>) -> Result<KeyAt, E> {
    Ok(match d {
        Decision::Present(i) => KeyAt::Present { version: entry(i)? },
        Decision::Absent => KeyAt::Absent,
        Decision::Ambiguous(is, last_modified) => KeyAt::Ambiguous {
            version_ids: is.into_iter().map(|i| entry(i).map(|e| e.version_id)).collect::<Result<_, E>>()?,
            last_modified,
        },
        Decision::NullReplaced(i, replaced_at) => KeyAt::Unrecoverable {
            version_id: entry(i)?.version_id,
            reason: Unrecoverable::NullReplaced { replaced_at },
        },
        Decision::Missing(i) => {
            KeyAt::Unrecoverable { version_id: entry(i)?.version_id, reason: Unrecoverable::Missing }
        }
    })
}

/// Rule: the entry current at `t` (inclusive) — see [`decide`].
pub fn version_at(h: &KeyHistory, t: Timestamp) -> KeyAt {
    let heads: Vec<Head> = h.entries.iter().map(Head::of).collect();
    let entry = |i: usize| -> Result<VersionRecord, std::convert::Infallible> { Ok(h.entries[i].clone()) };
    match key_at(decide(&heads, t), &entry) {
        Ok(k) => k,
        Err(never) => match never {},
    }
}

/// `[from, to)` of T at which a key is ambiguous or unrecoverable (`to = None`: still now), and how.
pub type ProblemInterval = (Timestamp, Option<Timestamp>, KeyAt);

/// The intervals at which a key is ambiguous or unrecoverable.
pub fn problem_intervals(h: &KeyHistory) -> Vec<ProblemInterval> {
    let mut times: Vec<Timestamp> = h.entries.iter().map(|e| e.last_modified).collect();
    times.sort();
    times.dedup();
    let mut out = Vec::new();
    for (i, t) in times.iter().enumerate() {
        let at = version_at(h, *t);
        if at.is_problem() {
            out.push((*t, times.get(i + 1).copied(), at));
        }
    }
    out
}

/// One bucket's summary state (the per-key histories live beside it in the store).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, bincode::Encode, bincode::Decode)]
pub struct Bucket {
    pub component: String,
    /// Versioning status as observed, oldest first.
    pub versioning: Vec<(Timestamp, VersioningStatus)>,
    /// The newest scan watermark: every version with LastModified ≤ it is recorded.
    pub complete_through: Option<Timestamp>,
    pub scans_completed: u64,
    pub entries_recorded: u64,
    pub keys: u64,
    /// The oldest LastModified recorded.
    pub earliest_last_modified: Option<Timestamp>,
    /// Keys whose history can make some T ambiguous or unrecoverable.
    pub problem_keys: BTreeSet<String>,
}

/// Why a bucket is not restorable at T (beyond per-key problems).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum BucketBound {
    #[error("no scan has completed through {at}{}", complete_through.map(|w| format!(" (the watermark is {w})")).unwrap_or_default())]
    NotScannedThrough { at: Timestamp, complete_through: Option<Timestamp> },
    #[error("versioning was not observed enabled by {at}: the history before it is incomplete{}", enabled_since.map(|w| format!(" (enabled since {w})")).unwrap_or_default())]
    VersioningNotEnabled { at: Timestamp, enabled_since: Option<Timestamp> },
}

/// A maximal range of restorable T.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct S3Window {
    pub from: Timestamp,
    /// Exclusive end when a problem begins there; else the scan watermark (inclusive).
    pub to: Timestamp,
    /// What ends the window: "scan watermark" or the problem keys starting at `to`.
    pub bounded_by: Vec<String>,
}

impl Bucket {
    pub fn new(component: &str) -> Bucket {
        Bucket {
            component: component.to_owned(),
            versioning: Vec::new(),
            complete_through: None,
            scans_completed: 0,
            entries_recorded: 0,
            keys: 0,
            earliest_last_modified: None,
            problem_keys: BTreeSet::new(),
        }
    }

    /// The component an event changes, for S3 events.
    pub fn component_of(body: &EventBody) -> Option<String> {
        match body {
            EventBody::S3Versioning(_)
            | EventBody::S3ObjectVersion(_)
            | EventBody::S3ScanComplete(_)
            | EventBody::S3VersionMissing(_) => body.components().into_iter().next(),
            _ => None,
        }
    }

    /// Advances the summary for events that do not touch one key's history.
    pub fn apply_summary(&mut self, body: &EventBody) {
        match body {
            EventBody::S3Versioning(v) => {
                self.versioning.push((v.observed_at, v.status));
                self.versioning.sort_by_key(|(t, _)| *t);
            }
            EventBody::S3ScanComplete(s) => {
                self.scans_completed += 1;
                self.complete_through =
                    Some(self.complete_through.map_or(s.complete_through, |w| w.max(s.complete_through)));
            }
            _ => {}
        }
    }

    /// After a key's history changed: counts and the problem-key set.
    pub fn key_changed(&mut self, key: &str, before_len: usize, h: &KeyHistory) {
        if before_len == 0 && !h.entries.is_empty() {
            self.keys += 1;
        }
        self.entries_recorded += (h.entries.len() - before_len) as u64;
        if let Some(oldest) = h.entries.iter().map(|e| e.last_modified).min() {
            self.earliest_last_modified = Some(self.earliest_last_modified.map_or(oldest, |e| e.min(oldest)));
        }
        if h.has_problems() {
            self.problem_keys.insert(key.to_owned());
        } else {
            self.problem_keys.remove(key);
        }
    }

    /// Rule: since when versioning vouches for the history. A bucket first
    /// observed with versioning enabled keeps every version S3 still lists,
    /// so its whole recorded history counts (from the oldest LastModified);
    /// otherwise, from the first observation of it enabled.
    pub fn enabled_since(&self) -> Option<Timestamp> {
        match self.versioning.first() {
            Some((_, VersioningStatus::Enabled)) => {
                Some(self.earliest_last_modified.map_or(self.versioning[0].0, |e| e.min(self.versioning[0].0)))
            }
            _ => self.versioning.iter().find(|(_, s)| *s == VersioningStatus::Enabled).map(|(t, _)| *t),
        }
    }

    /// Periods in which versioning was observed suspended: `[from, to)`, `to = None` while still suspended.
    pub fn suspended_periods(&self) -> Vec<(Timestamp, Option<Timestamp>)> {
        let mut out = Vec::new();
        let mut open: Option<Timestamp> = None;
        for (t, s) in &self.versioning {
            match (s, open) {
                (VersioningStatus::Suspended, None) => open = Some(*t),
                (VersioningStatus::Enabled, Some(from)) => {
                    out.push((from, Some(*t)));
                    open = None;
                }
                _ => {}
            }
        }
        if let Some(from) = open {
            out.push((from, None));
        }
        out
    }

    /// Rule: the bucket-level conditions for T (versioning, watermark).
    pub fn bounds_at(&self, at: Timestamp) -> Result<(), BucketBound> {
        match self.enabled_since() {
            Some(e) if e <= at => {}
            enabled_since => return Err(BucketBound::VersioningNotEnabled { at, enabled_since }),
        }
        match self.complete_through {
            Some(w) if at <= w => Ok(()),
            complete_through => Err(BucketBound::NotScannedThrough { at, complete_through }),
        }
    }

    /// Rule: restorable ranges within [versioning enabled, watermark],
    /// split where a problem key is ambiguous or unrecoverable.
    pub fn windows(&self, problems: &[(String, KeyHistory)]) -> Vec<S3Window> {
        let (Some(from), Some(to)) = (self.enabled_since(), self.complete_through) else { return Vec::new() };
        if to < from {
            return Vec::new();
        }
        // Bad intervals [a, b) with the keys that make them bad.
        let mut bad: Vec<(Timestamp, Option<Timestamp>, String)> = Vec::new();
        for (key, h) in problems {
            for (a, b, _) in problem_intervals(h) {
                bad.push((a, b, key.clone()));
            }
        }
        bad.sort_by_key(|x| x.0);
        let mut windows = Vec::new();
        let mut cursor = from;
        let mut i = 0;
        while i < bad.len() && cursor <= to {
            let (a, _, _) = bad[i];
            // Every interval starting at `a`, merged with what overlaps it.
            let mut keys = Vec::new();
            let mut end = bad[i].1;
            let start = a;
            while i < bad.len() && (bad[i].0 == start || end.is_none_or(|e| bad[i].0 < e)) {
                keys.push(bad[i].2.clone());
                end = match (end, bad[i].1) {
                    (Some(x), Some(y)) => Some(x.max(y)),
                    _ => None,
                };
                i += 1;
            }
            if start > cursor {
                windows.push(S3Window {
                    from: cursor,
                    to: start.min(to.saturating_add_micros(1)),
                    bounded_by: keys.clone(),
                });
            }
            match end {
                Some(e) => cursor = cursor.max(e),
                None => return windows,
            }
        }
        if cursor <= to {
            windows.push(S3Window { from: cursor, to, bounded_by: vec!["scan watermark".into()] });
        }
        windows
    }
}

/// Bytes of one stored head: LastModified, first seen, position, flags, record offset and length.
const HEAD_BYTES: usize = 8 + 8 + 8 + 1 + 4 + 4;

/// A key history as stored: `u32` count, then one fixed-size head per entry
/// (recency order), then each entry's full record (bincode), so the rules
/// run on the heads and only chosen entries are decoded.
pub fn encode_history(h: &KeyHistory) -> Vec<u8> {
    let records: Vec<Vec<u8>> = h
        .entries
        .iter()
        .map(|e| bincode::encode_to_vec(e, bincode::config::standard()).expect("in-memory values encode"))
        .collect();
    let mut out = Vec::with_capacity(4 + h.entries.len() * HEAD_BYTES + records.iter().map(Vec::len).sum::<usize>());
    out.extend_from_slice(&(h.entries.len() as u32).to_be_bytes());
    let mut offset = 0u32;
    for (e, r) in h.entries.iter().zip(&records) {
        let head = Head::of(e);
        out.extend_from_slice(&head.last_modified.as_micros().to_be_bytes());
        out.extend_from_slice(&head.first_seen_at.as_micros().to_be_bytes());
        out.extend_from_slice(&head.listing_position.to_be_bytes());
        out.push(u8::from(head.is_delete_marker) | u8::from(head.missing) << 1 | u8::from(head.is_null) << 2);
        out.extend_from_slice(&offset.to_be_bytes());
        out.extend_from_slice(&(r.len() as u32).to_be_bytes());
        offset += r.len() as u32;
    }
    for r in records {
        out.extend_from_slice(&r);
    }
    out
}

/// A stored key history, read in place.
#[derive(Debug, Clone, Copy)]
pub struct StoredHistory<'a> {
    bytes: &'a [u8],
    count: usize,
}

impl<'a> StoredHistory<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<StoredHistory<'a>, String> {
        let count =
            u32::from_be_bytes(bytes.get(..4).ok_or("truncated history")?.try_into().expect("4 bytes")) as usize;
        if bytes.len() < 4 + count * HEAD_BYTES {
            return Err("truncated history heads".into());
        }
        Ok(StoredHistory { bytes, count })
    }

    fn field(&self, i: usize, at: usize) -> [u8; 8] {
        let start = 4 + i * HEAD_BYTES + at;
        self.bytes[start..start + 8].try_into().expect("8 bytes")
    }

    pub fn heads(&self) -> Vec<Head> {
        (0..self.count)
            .map(|i| {
                let flags = self.bytes[4 + i * HEAD_BYTES + 24];
                Head {
                    last_modified: Timestamp::from_micros(i64::from_be_bytes(self.field(i, 0))),
                    first_seen_at: Timestamp::from_micros(i64::from_be_bytes(self.field(i, 8))),
                    listing_position: u64::from_be_bytes(self.field(i, 16)),
                    is_delete_marker: flags & 1 != 0,
                    missing: flags & 2 != 0,
                    is_null: flags & 4 != 0,
                }
            })
            .collect()
    }

    /// The full record of entry `i`.
    pub fn entry(&self, i: usize) -> Result<VersionRecord, String> {
        let h = 4 + i * HEAD_BYTES + 25;
        let offset = u32::from_be_bytes(self.bytes[h..h + 4].try_into().expect("4 bytes")) as usize;
        let len = u32::from_be_bytes(self.bytes[h + 4..h + 8].try_into().expect("4 bytes")) as usize;
        let start = 4 + self.count * HEAD_BYTES + offset;
        let record = self.bytes.get(start..start + len).ok_or("truncated history record")?;
        bincode::decode_from_slice(record, bincode::config::standard()).map(|(v, _)| v).map_err(|e| e.to_string())
    }

    pub fn decode(&self) -> Result<KeyHistory, String> {
        Ok(KeyHistory { entries: (0..self.count).map(|i| self.entry(i)).collect::<Result<_, _>>()? })
    }
}

/// One line of the manifest at T: what a restore does with a key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ManifestLine {
    /// Make this version current.
    Restore { key: String, version_id: String, etag: Option<String>, size_bytes: u64, last_modified: Timestamp },
    /// The key exists now but did not at T.
    Remove { key: String },
    /// The key cannot be reconstructed at T (ambiguous or unrecoverable): why.
    Problem { key: String, at: KeyAt },
}

/// Rule: the manifest line of one key at T (`None`: absent then and now, nothing to do).
pub fn manifest_line(key: &str, h: &KeyHistory, t: Timestamp) -> Option<ManifestLine> {
    line_for(key, version_at(h, t), h.exists_now())
}

/// The manifest line of one key straight from its stored bytes: the rule
/// runs on the fixed-size heads; only the chosen entries are decoded.
pub fn manifest_line_stored(
    key: &str,
    stored: &StoredHistory<'_>,
    t: Timestamp,
) -> Result<Option<ManifestLine>, String> {
    let heads = stored.heads();
    let exists_now = heads.first().is_some_and(|e| !e.is_delete_marker && !e.missing);
    let at = key_at(decide(&heads, t), &|i| stored.entry(i))?;
    Ok(line_for(key, at, exists_now))
}

fn line_for(key: &str, at: KeyAt, exists_now: bool) -> Option<ManifestLine> {
    match at {
        KeyAt::Present { version } => Some(ManifestLine::Restore {
            key: key.to_owned(),
            version_id: version.version_id,
            etag: version.etag,
            size_bytes: version.size_bytes,
            last_modified: version.last_modified,
        }),
        KeyAt::Absent if exists_now => Some(ManifestLine::Remove { key: key.to_owned() }),
        KeyAt::Absent => None,
        problem => Some(ManifestLine::Problem { key: key.to_owned(), at: problem }),
    }
}

/// Counts of a streamed manifest, and its digest (blake3 of the NDJSON lines, in key order).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ManifestSummary {
    pub component: String,
    pub at: Timestamp,
    pub keys_to_restore: u64,
    pub keys_to_remove: u64,
    pub keys_with_problems: u64,
    pub restorable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bound: Option<BucketBound>,
    pub digest: tidemark_core::Digest32,
}

/// "Is the bucket restorable at T, and if not, why?"
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct S3Answer {
    pub component: String,
    pub at: Timestamp,
    pub restorable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bound: Option<BucketBound>,
    /// Keys ambiguous or unrecoverable at T.
    pub problems: Vec<ManifestLine>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explanation: Option<String>,
}

/// Rule: bucket bounds first, then every key whose history has holes.
pub fn answer(bucket: &Bucket, problems: &[(String, KeyHistory)], at: Timestamp) -> S3Answer {
    let bound = bucket.bounds_at(at).err();
    let lines: Vec<ManifestLine> = problems
        .iter()
        .filter_map(|(k, h)| manifest_line(k, h, at))
        .filter(|l| matches!(l, ManifestLine::Problem { .. }))
        .collect();
    let mut explanation: Vec<String> = bound.iter().map(ToString::to_string).collect();
    for l in lines.iter().take(20) {
        if let ManifestLine::Problem { key, at } = l {
            explanation.push(match at {
                KeyAt::Ambiguous { version_ids, last_modified } => {
                    format!("key {key:?} is ambiguous at {last_modified}: versions {} in one second, order unknown", version_ids.join(", "))
                }
                KeyAt::Unrecoverable { version_id, reason: Unrecoverable::Missing } => {
                    format!("key {key:?}: version {version_id} current then is missing from the bucket")
                }
                KeyAt::Unrecoverable { version_id, reason: Unrecoverable::NullReplaced { replaced_at } } => format!(
                    "key {key:?}: its {version_id} version current then was overwritten at {replaced_at} under suspended versioning"
                ),
                _ => String::new(),
            });
        }
    }
    if lines.len() > 20 {
        explanation.push(format!("… and {} more keys", lines.len() - 20));
    }
    S3Answer {
        component: bucket.component.clone(),
        at,
        restorable: bound.is_none() && lines.is_empty(),
        bound,
        explanation: (!explanation.is_empty()).then(|| explanation.join("; ")),
        problems: lines,
    }
}

/// Everything `recovery-points --component s3:…` shows.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct S3Report {
    pub component: String,
    pub versioning: Vec<(Timestamp, VersioningStatus)>,
    pub versioning_enabled_since: Option<Timestamp>,
    pub suspended_periods: Vec<(Timestamp, Option<Timestamp>)>,
    pub complete_through: Option<Timestamp>,
    pub scans_completed: u64,
    pub keys: u64,
    pub entries_recorded: u64,
    pub windows: Vec<S3Window>,
    /// Per problem key: the T ranges `[from, to)` at which it is ambiguous or unrecoverable.
    pub problem_keys: Vec<(String, Vec<ProblemInterval>)>,
}

pub fn report(bucket: &Bucket, problems: &[(String, KeyHistory)]) -> S3Report {
    S3Report {
        component: bucket.component.clone(),
        versioning: bucket.versioning.clone(),
        versioning_enabled_since: bucket.enabled_since(),
        suspended_periods: bucket.suspended_periods(),
        complete_through: bucket.complete_through,
        scans_completed: bucket.scans_completed,
        keys: bucket.keys,
        entries_recorded: bucket.entries_recorded,
        windows: bucket.windows(problems),
        problem_keys: problems.iter().map(|(k, h)| (k.clone(), problem_intervals(h))).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_unix_seconds(1_790_000_000 + s)
    }

    fn v(id: &str, lm: i64, seen: i64, pos: u64) -> VersionRecord {
        VersionRecord {
            version_id: id.into(),
            etag: Some(format!("\"{id}\"")),
            size_bytes: 3,
            last_modified: t(lm),
            is_delete_marker: false,
            listing_position: pos,
            first_seen_at: t(seen),
            missing: false,
            object_lock_mode: None,
            object_lock_retain_until: None,
            object_lock_legal_hold: None,
            seq: 0,
        }
    }

    fn dm(id: &str, lm: i64, seen: i64, pos: u64) -> VersionRecord {
        VersionRecord { is_delete_marker: true, size_bytes: 0, etag: None, ..v(id, lm, seen, pos) }
    }

    fn history(entries: Vec<VersionRecord>) -> KeyHistory {
        let mut h = KeyHistory::default();
        for e in entries {
            h.record(e);
        }
        h
    }

    fn present(at: &KeyAt) -> &str {
        match at {
            KeyAt::Present { version } => &version.version_id,
            other => panic!("expected present, got {other:?}"),
        }
    }

    #[test]
    fn rule_t_is_inclusive_and_the_newest_entry_at_or_before_t_decides() {
        let h = history(vec![v("a", 10, 100, 1), v("b", 20, 100, 0)]);
        assert_eq!(version_at(&h, t(9)), KeyAt::Absent);
        assert_eq!(present(&version_at(&h, t(10))), "a", "T is inclusive");
        assert_eq!(present(&version_at(&h, t(19))), "a");
        assert_eq!(present(&version_at(&h, t(20))), "b");
    }

    #[test]
    fn rule_a_delete_marker_means_absent() {
        let h = history(vec![v("a", 10, 100, 1), dm("d", 20, 100, 0)]);
        assert_eq!(version_at(&h, t(25)), KeyAt::Absent);
        assert!(!h.exists_now());
    }

    #[test]
    fn rule_same_second_ties_follow_the_listing_order_when_known() {
        // Two PUTs in one second, listed newest first in one scan.
        let h = history(vec![v("old", 10, 100, 1), v("new", 10, 100, 0)]);
        assert_eq!(present(&version_at(&h, t(10))), "new");
        // Seen by different scans: the later scan saw the later write.
        let h = history(vec![v("first", 10, 100, 0), v("second", 10, 200, 0)]);
        assert_eq!(present(&version_at(&h, t(10))), "second");
    }

    #[test]
    fn rule_unordered_ties_are_ambiguous_never_guessed() {
        // A version and a delete marker in one second, neither the latest: same position.
        let h = history(vec![v("a", 10, 100, 1), dm("d", 10, 100, 1), v("c", 30, 100, 0)]);
        let at = version_at(&h, t(15));
        assert!(matches!(&at, KeyAt::Ambiguous { version_ids, .. } if version_ids.len() == 2), "{at:?}");
        assert!(h.has_problems());
        assert_eq!(present(&version_at(&h, t(30))), "c", "a later entry settles it");
        assert_eq!(problem_intervals(&h).len(), 1);
        assert_eq!((problem_intervals(&h)[0].0, problem_intervals(&h)[0].1), (t(10), Some(t(30))));
    }

    #[test]
    fn rule_a_null_version_replaced_after_t_cannot_be_reconstructed() {
        let h = history(vec![v("v1", 5, 100, 2), v("null", 10, 100, 1), v("null", 20, 200, 0)]);
        assert_eq!(present(&version_at(&h, t(7))), "v1", "versioned history before is intact");
        let at = version_at(&h, t(15));
        assert_eq!(
            at,
            KeyAt::Unrecoverable {
                version_id: "null".into(),
                reason: Unrecoverable::NullReplaced { replaced_at: t(20) }
            }
        );
        assert_eq!(present(&version_at(&h, t(20))), "null", "the current null version is still there");
    }

    #[test]
    fn rule_a_version_reported_missing_is_unrecoverable_while_current() {
        let mut h = history(vec![v("a", 10, 100, 1), v("b", 20, 100, 0)]);
        assert!(h.mark_missing("a"));
        assert_eq!(
            version_at(&h, t(15)),
            KeyAt::Unrecoverable { version_id: "a".into(), reason: Unrecoverable::Missing }
        );
        assert_eq!(present(&version_at(&h, t(25))), "b");
    }

    #[test]
    fn stored_histories_judge_exactly_like_decoded_ones() {
        let mut h = history(vec![
            v("v1", 5, 100, 3),
            v("null", 10, 100, 2),
            dm("d", 12, 100, 1),
            v("x", 12, 100, 1),
            v("null", 20, 200, 0),
            v("y", 30, 300, 0),
        ]);
        h.mark_missing("y");
        let bytes = encode_history(&h);
        let stored = StoredHistory::parse(&bytes).unwrap();
        assert_eq!(stored.decode().unwrap(), h);
        for at in 0..40 {
            assert_eq!(manifest_line_stored("k", &stored, t(at)).unwrap(), manifest_line("k", &h, t(at)), "at {at}");
        }
        assert!(StoredHistory::parse(&bytes[..10]).is_err());
    }

    #[test]
    fn rule_a_bucket_needs_versioning_enabled_and_a_scan_through_t() {
        let mut b = Bucket::new("s3:uploads");
        assert!(matches!(b.bounds_at(t(10)), Err(BucketBound::VersioningNotEnabled { .. })));
        b.versioning.push((t(5), VersioningStatus::Unversioned));
        b.versioning.push((t(5), VersioningStatus::Enabled));
        assert!(matches!(b.bounds_at(t(10)), Err(BucketBound::NotScannedThrough { .. })));
        b.complete_through = Some(t(50));
        assert!(b.bounds_at(t(10)).is_ok());
        assert!(b.bounds_at(t(50)).is_ok(), "the watermark is inclusive");
        assert!(b.bounds_at(t(51)).is_err());
        assert!(b.bounds_at(t(4)).is_err());
    }

    #[test]
    fn rule_a_bucket_first_seen_versioned_vouches_for_its_whole_recorded_history() {
        let mut b = Bucket::new("s3:uploads");
        b.versioning.push((t(100), VersioningStatus::Enabled));
        b.complete_through = Some(t(100));
        b.key_changed("k", 0, &history(vec![v("a", 10, 100, 0)]));
        assert_eq!(b.enabled_since(), Some(t(10)));
        assert!(b.bounds_at(t(10)).is_ok());
        assert!(b.bounds_at(t(9)).is_err());
    }

    #[test]
    fn rule_windows_are_split_by_problem_keys_and_end_at_the_watermark() {
        let mut b = Bucket::new("s3:uploads");
        b.versioning = vec![(t(0), VersioningStatus::Enabled), (t(30), VersioningStatus::Suspended)];
        b.complete_through = Some(t(100));
        let mut h = history(vec![v("a", 10, 100, 1), v("b", 20, 100, 0)]);
        h.mark_missing("a");
        let w = b.windows(&[("k".into(), h)]);
        assert_eq!(w.len(), 2, "{w:?}");
        assert_eq!((w[0].from, w[0].to, w[0].bounded_by.clone()), (t(0), t(10), vec!["k".to_owned()]));
        assert_eq!((w[1].from, w[1].to), (t(20), t(100)));
        assert_eq!(b.suspended_periods(), vec![(t(30), None)]);
    }
}
