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
//! * [`written_within`]: S3 gives LastModified in whole seconds, so an entry
//!   stamped second s was written somewhere in [s, s + 1 s − 1 µs] of S3's
//!   clock, widened by σ when T comes from another clock (a group's max skew).
//!   An entry whose range holds T may be before or after it.
//! * [`version_at`]: the entry current at T (T inclusive): when an entry that
//!   changes the answer may be before or after T, the key is *uncertain*;
//!   otherwise drop entries with LastModified > T, the newest remaining decides — a version means that
//!   version, a delete marker or nothing means absent; an unresolved tie is
//!   *ambiguous*, never guessed; a `null` version replaced after T (suspended
//!   versioning overwrites it) and a version reported missing are
//!   *unrecoverable*.
//! * [`answer`]: bucket B is restorable at T when versioning was
//!   enabled by T, a scan has completed through ≥ T, and no key is ambiguous,
//!   uncertain or unrecoverable at T (the keys written near T — [`uncertain_band`] —
//!   and the keys whose history has holes are the only ones that can be).
//! * [`Bucket::windows`]: the ranges bounded by versioning, the scan
//!   watermark and the keys whose history has holes. Inside a window a T is
//!   restorable unless a write within its own second (± σ) makes a key
//!   uncertain: every whole-second boundary s − 1 µs with no skew is exact.

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

/// Keys under this prefix are tidemark's own (the bucket clock probes): scans never record them.
pub const RESERVED_PREFIX: &str = ".tidemark/";

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
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    /// Entries that change the answer may have been written before or after T:
    /// LastModified has whole seconds (and the clocks may differ by `skew_ms`).
    Uncertain {
        version_ids: Vec<String>,
        last_modified: Vec<Timestamp>,
        skew_ms: u64,
    },
    /// The version current at T is gone.
    Unrecoverable {
        version_id: String,
        reason: Unrecoverable,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "why", rename_all = "snake_case")]
pub enum Unrecoverable {
    /// Reported missing by a scan (deleted permanently or lost).
    Missing,
    /// Overwritten under suspended versioning at `replaced_at`: the `null` version current at T no longer exists.
    NullReplaced { replaced_at: Timestamp },
    /// A `null` version written at `replaced_at` under suspended versioning
    /// may have replaced a `null` version no scan saw, written after `since`
    /// (when the key was last provably versioned).
    UnseenNull { since: Timestamp, replaced_at: Timestamp },
}

impl KeyAt {
    pub fn is_problem(&self) -> bool {
        matches!(self, KeyAt::Ambiguous { .. } | KeyAt::Uncertain { .. } | KeyAt::Unrecoverable { .. })
    }
}

/// One page of recorded key histories in key order (`GET /v1/s3/keys`):
/// what a scanner compares a listing with.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeysPage {
    pub keys: Vec<KeyEntries>,
    /// Pass as `after` for the next page; none on the last page.
    pub next_after: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyEntries {
    pub key: String,
    pub entries: Vec<VersionRecord>,
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

/// One second of S3's LastModified, in microseconds.
pub const SECOND_US: i64 = 1_000_000;

/// Rule: the instants at which an entry stamped `last_modified` may have been
/// written, on a clock that differs from S3's by at most `skew_us`:
/// `[lm − σ, lm + 1 s − 1 µs + σ]` (LastModified has whole seconds).
pub fn written_within(last_modified: Timestamp, skew_us: i64) -> (Timestamp, Timestamp) {
    let second = last_modified.as_micros().div_euclid(SECOND_US) * SECOND_US;
    (
        Timestamp::from_micros(second).saturating_add_micros(-skew_us),
        Timestamp::from_micros(second).saturating_add_micros(SECOND_US - 1 + skew_us),
    )
}

/// Rule: the LastModified range of entries that may be written on either side
/// of T (what [`written_within`] says holds T): `[T − σ − 1 s + 1 µs, T + σ]`,
/// empty (`from > to`) at the last microsecond of a second with no skew —
/// there every entry's side is known.
pub fn uncertain_band(t: Timestamp, skew_us: i64) -> (Timestamp, Timestamp) {
    if skew_us == 0 && t.as_micros().rem_euclid(SECOND_US) == SECOND_US - 1 {
        return (t.saturating_add_micros(1), t);
    }
    (t.saturating_add_micros(-skew_us - SECOND_US + 1), t.saturating_add_micros(skew_us))
}

/// What the rule decided, by position in the recency-ordered entries.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Decision {
    Present(usize),
    Absent,
    Ambiguous(Vec<usize>, Timestamp),
    Uncertain(Vec<usize>, i64),
    NullReplaced(usize, Timestamp),
    UnseenNull(Timestamp, Timestamp),
    Missing(usize),
}

/// Rule: under suspended versioning a write replaces the key's `null`
/// version, so each `null` entry R may have replaced a `null` version no scan
/// saw, written after the key was last provably versioned — the bucket's
/// last observation as enabled at or before R, or the key's newest versioned
/// entry before R (only enabled versioning makes those). Spans `[since, R)`.
fn unseen_null_spans(heads: &[Head], versioning: &[(Timestamp, VersioningStatus)]) -> Vec<(Timestamp, Timestamp)> {
    heads
        .iter()
        .filter(|r| r.is_null)
        .filter_map(|r| {
            let enabled = versioning
                .iter()
                .filter(|(t, st)| *st == VersioningStatus::Enabled && *t <= r.last_modified)
                .map(|(t, _)| *t)
                .max();
            let versioned =
                heads.iter().filter(|h| !h.is_null && h.last_modified < r.last_modified).map(|h| h.last_modified).max();
            let since = enabled.max(versioned).unwrap_or(Timestamp::from_micros(i64::MIN));
            (since < r.last_modified).then_some((since, r.last_modified))
        })
        .collect()
}

/// Rule: the entry current at `t` (inclusive), over heads in recency order,
/// with `t` on a clock within `skew_us` of S3's.
fn decide(heads: &[Head], t: Timestamp, skew_us: i64, versioning: &[(Timestamp, VersioningStatus)]) -> Decision {
    // Entries that may be on either side of T: a run in recency order.
    let maybe: Vec<usize> = (0..heads.len())
        .filter(|&i| {
            let (from, to) = written_within(heads[i].last_modified, skew_us);
            from <= t && t < to
        })
        .collect();
    if let (Some(&first), Some(&last)) = (maybe.first(), maybe.last()) {
        // Any of them, or the newest entry surely before T, may be current.
        let absent = |h: Option<&Head>| h.is_none_or(|h| h.is_delete_marker);
        if !(heads[first..=last].iter().all(|h| h.is_delete_marker) && absent(heads.get(last + 1))) {
            return Decision::Uncertain(maybe, skew_us);
        }
        return Decision::Absent;
    }
    match decide_exact(heads, t) {
        d @ (Decision::Present(_) | Decision::Absent) => {
            // The earliest null entry after T is the one that would have replaced it.
            match unseen_null_spans(heads, versioning).into_iter().filter(|(a, b)| *a < t && t < *b).min_by_key(|x| x.1)
            {
                Some((since, replaced_at)) => Decision::UnseenNull(since, replaced_at),
                None => d,
            }
        }
        known_problem => known_problem,
    }
}

/// Rule: the entry current at `t` when every entry's side of `t` is known.
fn decide_exact(heads: &[Head], t: Timestamp) -> Decision {
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
        Decision::Uncertain(is, skew_us) => {
            let entries = is.into_iter().map(entry).collect::<Result<Vec<_>, E>>()?;
            KeyAt::Uncertain {
                version_ids: entries.iter().map(|e| e.version_id.clone()).collect(),
                last_modified: entries.iter().map(|e| e.last_modified).collect(),
                skew_ms: (skew_us / 1000) as u64,
            }
        }
        Decision::NullReplaced(i, replaced_at) => KeyAt::Unrecoverable {
            version_id: entry(i)?.version_id,
            reason: Unrecoverable::NullReplaced { replaced_at },
        },
        Decision::UnseenNull(since, replaced_at) => KeyAt::Unrecoverable {
            version_id: NULL_VERSION.to_owned(),
            reason: Unrecoverable::UnseenNull { since, replaced_at },
        },
        Decision::Missing(i) => {
            KeyAt::Unrecoverable { version_id: entry(i)?.version_id, reason: Unrecoverable::Missing }
        }
    })
}

/// Rule: the entry current at `t` (inclusive) on S3's own clock — see [`decide`].
pub fn version_at(h: &KeyHistory, t: Timestamp) -> KeyAt {
    version_at_within(h, t, 0, &[])
}

/// Rule: the entry current at `t` (inclusive) on a clock within `skew_us` of
/// S3's, given the bucket's versioning observations.
pub fn version_at_within(
    h: &KeyHistory,
    t: Timestamp,
    skew_us: i64,
    versioning: &[(Timestamp, VersioningStatus)],
) -> KeyAt {
    let heads: Vec<Head> = h.entries.iter().map(Head::of).collect();
    let entry = |i: usize| -> Result<VersionRecord, std::convert::Infallible> { Ok(h.entries[i].clone()) };
    match key_at(decide(&heads, t, skew_us, versioning), &entry) {
        Ok(k) => k,
        Err(never) => match never {},
    }
}

/// `[from, to)` of T at which a key is ambiguous or unrecoverable (`to = None`: still now), and how.
pub type ProblemInterval = (Timestamp, Option<Timestamp>, KeyAt);

/// The intervals at which a key's history has holes: ambiguous or
/// unrecoverable whatever the second's uncertainty (which [`version_at`]
/// adds around each entry).
pub fn problem_intervals(h: &KeyHistory, versioning: &[(Timestamp, VersioningStatus)]) -> Vec<ProblemInterval> {
    let mut times: Vec<Timestamp> = h.entries.iter().map(|e| e.last_modified).collect();
    times.sort();
    times.dedup();
    let heads: Vec<Head> = h.entries.iter().map(Head::of).collect();
    let mut unseen: Vec<ProblemInterval> = unseen_null_spans(&heads, versioning)
        .into_iter()
        .map(|(since, replaced_at)| {
            let at = KeyAt::Unrecoverable {
                version_id: NULL_VERSION.to_owned(),
                reason: Unrecoverable::UnseenNull { since, replaced_at },
            };
            (since.saturating_add_micros(1), Some(replaced_at), at)
        })
        .collect();
    let entry = |i: usize| -> Result<VersionRecord, std::convert::Infallible> { Ok(h.entries[i].clone()) };
    let mut out = Vec::new();
    for (i, t) in times.iter().enumerate() {
        let at = match key_at(decide_exact(&heads, *t), &entry) {
            Ok(k) => k,
            Err(never) => match never {},
        };
        if at.is_problem() {
            out.push((*t, times.get(i + 1).copied(), at));
        }
    }
    out.append(&mut unseen);
    out.sort_by_key(|x| x.0);
    out
}

/// One bucket's summary state (the per-key histories live beside it in the store).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, bincode::Encode, bincode::Decode)]
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
    /// The newest `null` entry written before versioning was first observed
    /// enabled: until then an unseen overwrite may have replaced any key.
    pub unversioned_until: Option<Timestamp>,
}

/// Why a bucket is not restorable at T (beyond per-key problems).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum BucketBound {
    #[error("no scan has completed through {at}{}", complete_through.map(|w| format!(" (the watermark is {w})")).unwrap_or_default())]
    NotScannedThrough { at: Timestamp, complete_through: Option<Timestamp> },
    #[error("versioning was not observed enabled by {at}: the history before it is incomplete{}", enabled_since.map(|w| format!(" (enabled since {w})")).unwrap_or_default())]
    VersioningNotEnabled { at: Timestamp, enabled_since: Option<Timestamp> },
}

/// A maximal range of restorable T.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct S3Window {
    pub from: Timestamp,
    /// Exclusive end when a problem begins there; else the scan watermark (inclusive).
    pub to: Timestamp,
    /// What ends the window: "scan watermark" or the problem keys starting at `to`.
    pub bounded_by: Vec<String>,
}

impl S3Window {
    /// The last restorable instant: `to` itself at the scan watermark, else just before it.
    pub fn inclusive_end(&self) -> Timestamp {
        if self.bounded_by.len() == 1 && self.bounded_by[0] == "scan watermark" {
            self.to
        } else {
            self.to.saturating_add_micros(-1)
        }
    }
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
            unversioned_until: None,
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
        // A null entry from before versioning was first observed enabled
        // bounds the whole bucket (the unversioned era kept only the latest);
        // one after it makes the key a problem key (a suspension).
        let mut suspended_null = false;
        for e in h.entries.iter().filter(|e| e.version_id == NULL_VERSION) {
            let enabled_before =
                self.versioning.iter().any(|(t, st)| *st == VersioningStatus::Enabled && *t <= e.last_modified);
            if enabled_before {
                suspended_null = true;
            } else {
                self.unversioned_until =
                    Some(self.unversioned_until.map_or(e.last_modified, |u| u.max(e.last_modified)));
            }
        }
        if h.has_problems() || suspended_null {
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
        let since = match self.versioning.first() {
            Some((_, VersioningStatus::Enabled)) => {
                Some(self.earliest_last_modified.map_or(self.versioning[0].0, |e| e.min(self.versioning[0].0)))
            }
            _ => self.versioning.iter().find(|(_, s)| *s == VersioningStatus::Enabled).map(|(t, _)| *t),
        };
        // The unversioned era's keys are known only from their last write on.
        since.map(|s| self.unversioned_until.map_or(s, |u| s.max(u.saturating_add_micros(SECOND_US - 1))))
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
    /// split where a problem key is ambiguous or unrecoverable, and without
    /// the seconds in which something was written (`busy`: runs of whole
    /// seconds `[first, last]`; a T inside such a second is uncertain, its
    /// last microsecond is exact) — see [`without_busy`].
    pub fn windows(&self, problems: &[(String, KeyHistory)], busy: &[(Timestamp, Timestamp)]) -> Vec<S3Window> {
        without_busy(self.hole_windows(problems), busy)
    }

    fn hole_windows(&self, problems: &[(String, KeyHistory)]) -> Vec<S3Window> {
        let (Some(from), Some(to)) = (self.enabled_since(), self.complete_through) else { return Vec::new() };
        if to < from {
            return Vec::new();
        }
        // Bad intervals [a, b) with the keys that make them bad.
        let mut bad: Vec<(Timestamp, Option<Timestamp>, String)> = Vec::new();
        for (key, h) in problems {
            for (a, b, _) in problem_intervals(h, &self.versioning) {
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

/// Rule: windows minus the T that a write makes uncertain: for a run of busy
/// seconds `[first, last]`, every T in `[first, last + 1 s − 1 µs)`.
pub fn without_busy(windows: Vec<S3Window>, busy: &[(Timestamp, Timestamp)]) -> Vec<S3Window> {
    let mut out = Vec::new();
    for w in windows {
        let end = w.inclusive_end();
        let mut from = w.from;
        let first = busy.partition_point(|(_, last)| last.saturating_add_micros(SECOND_US - 1) <= from);
        for (a, b) in &busy[first..] {
            if *a > end {
                break;
            }
            let busy_end = b.saturating_add_micros(SECOND_US - 1); // exact again from here
            if *a > from {
                out.push(S3Window { from, to: *a, bounded_by: vec![format!("writes from {a} to {busy_end}")] });
            }
            from = from.max(busy_end);
        }
        if from <= end {
            out.push(S3Window { from, to: w.to, bounded_by: w.bounded_by });
        }
    }
    out
}

/// Rule: runs of busy seconds from the seconds entries were stamped in (sorted, merged when adjacent).
pub fn busy_runs(seconds: impl IntoIterator<Item = Timestamp>) -> Vec<(Timestamp, Timestamp)> {
    let seconds = seconds.into_iter().map(|t| t.as_micros().div_euclid(SECOND_US)).map(|s| (s, s)).collect();
    merge_runs(seconds)
        .into_iter()
        .map(|(a, b)| (Timestamp::from_micros(a * SECOND_US), Timestamp::from_micros(b * SECOND_US)))
        .collect()
}

/// Runs `[first, last]` of whole seconds (Unix), sorted and merged where they overlap or touch.
pub fn merge_runs(mut runs: Vec<(i64, i64)>) -> Vec<(i64, i64)> {
    runs.sort_unstable();
    let mut merged: Vec<(i64, i64)> = Vec::with_capacity(runs.len());
    for (a, b) in runs {
        match merged.last_mut() {
            Some((_, last)) if a <= last.saturating_add(1) => *last = (*last).max(b),
            _ => merged.push((a, b)),
        }
    }
    merged
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
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ManifestLine {
    /// Make this version current.
    Restore { key: String, version_id: String, etag: Option<String>, size_bytes: u64, last_modified: Timestamp },
    /// The key exists now but did not at T.
    Remove { key: String },
    /// The key cannot be reconstructed at T (ambiguous or unrecoverable): why.
    Problem { key: String, at: KeyAt },
}

/// Rule: the manifest line of one key at T, on a clock within `skew_us` of
/// S3's (`None`: absent then and now, nothing to do).
pub fn manifest_line(
    key: &str,
    h: &KeyHistory,
    t: Timestamp,
    skew_us: i64,
    versioning: &[(Timestamp, VersioningStatus)],
) -> Option<ManifestLine> {
    line_for(key, version_at_within(h, t, skew_us, versioning), h.exists_now())
}

/// The manifest line of one key straight from its stored bytes: the rule
/// runs on the fixed-size heads; only the chosen entries are decoded.
pub fn manifest_line_stored(
    key: &str,
    stored: &StoredHistory<'_>,
    t: Timestamp,
    skew_us: i64,
    versioning: &[(Timestamp, VersioningStatus)],
) -> Result<Option<ManifestLine>, String> {
    let heads = stored.heads();
    let exists_now = heads.first().is_some_and(|e| !e.is_delete_marker && !e.missing);
    let at = key_at(decide(&heads, t, skew_us, versioning), &|i| stored.entry(i))?;
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

/// A whole manifest at T: its lines in key order and its summary
/// (`GET /v1/s3/manifest`; `tidemark s3 manifest --json` streams the same lines).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    pub summary: ManifestSummary,
    pub lines: Vec<ManifestLine>,
}

/// Counts of a streamed manifest, and its digest (blake3 of the NDJSON lines, in key order).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ManifestSummary {
    pub component: String,
    pub at: Timestamp,
    pub keys_to_restore: u64,
    pub keys_to_remove: u64,
    pub keys_with_problems: u64,
    pub restorable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound: Option<BucketBound>,
    pub digest: tidemark_core::Digest32,
}

/// "Is the bucket restorable at T, and if not, why?"
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct S3Answer {
    pub component: String,
    pub at: Timestamp,
    pub restorable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound: Option<BucketBound>,
    /// Keys ambiguous or unrecoverable at T.
    pub problems: Vec<ManifestLine>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explanation: Option<String>,
}

/// Rule: bucket bounds first, then every key that can be a problem at T:
/// those whose history has holes and those written near T ([`uncertain_band`]),
/// judged on a clock within `skew_us` of S3's.
pub fn answer(bucket: &Bucket, candidates: &[(String, KeyHistory)], at: Timestamp, skew_us: i64) -> S3Answer {
    let bound = bucket.bounds_at(at).err();
    let when = at;
    let mut seen = BTreeSet::new();
    let lines: Vec<ManifestLine> = candidates
        .iter()
        .filter(|(k, _)| seen.insert(k.as_str()))
        .filter_map(|(k, h)| manifest_line(k, h, at, skew_us, &bucket.versioning))
        .filter(|l| matches!(l, ManifestLine::Problem { .. }))
        .collect();
    let mut explanation: Vec<String> = bound.iter().map(ToString::to_string).collect();
    // Keys written near T, in one sentence (under live writes there are many).
    let uncertain: Vec<&str> = lines
        .iter()
        .filter_map(|l| match l {
            ManifestLine::Problem { key, at: KeyAt::Uncertain { .. } } => Some(key.as_str()),
            _ => None,
        })
        .collect();
    if !uncertain.is_empty() {
        explanation.push(format!(
            "{} key{} written within {} of {when} may have been written before or after it (S3 gives LastModified in whole seconds{}): {}{}",
            uncertain.len(),
            if uncertain.len() == 1 { "" } else { "s" },
            if skew_us > 0 { format!("1 s + {} ms", skew_us / 1000) } else { "the same second".to_owned() },
            if skew_us > 0 { ", and the clocks may differ by the group's max skew" } else { "" },
            uncertain.iter().take(10).map(|k| format!("{k:?}")).collect::<Vec<_>>().join(", "),
            if uncertain.len() > 10 { format!(" and {} more", uncertain.len() - 10) } else { String::new() }
        ));
    }
    let others: Vec<&ManifestLine> =
        lines.iter().filter(|l| !matches!(l, ManifestLine::Problem { at: KeyAt::Uncertain { .. }, .. })).collect();
    for l in others.iter().take(20) {
        if let ManifestLine::Problem { key, at } = l {
            explanation.push(match at {
                KeyAt::Ambiguous { version_ids, last_modified } => {
                    format!("key {key:?} is ambiguous at {last_modified}: versions {} in one second, order unknown", version_ids.join(", "))
                }
                KeyAt::Unrecoverable { version_id, reason: Unrecoverable::Missing } => {
                    format!("key {key:?}: version {version_id} current then is missing from the bucket")
                }
                KeyAt::Unrecoverable { reason: Unrecoverable::UnseenNull { since, replaced_at }, .. } => format!(
                    "key {key:?}: its null version written at {replaced_at} under suspended versioning may have replaced a null version no scan saw, written after {since}"
                ),
                KeyAt::Unrecoverable { version_id, reason: Unrecoverable::NullReplaced { replaced_at } } => format!(
                    "key {key:?}: its {version_id} version current then was overwritten at {replaced_at} under suspended versioning"
                ),
                _ => String::new(),
            });
        }
    }
    if others.len() > 20 {
        explanation.push(format!("… and {} more keys", others.len() - 20));
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
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    /// Where the bucket is, as registered (scans are checked against it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered: Option<tidemark_core::event::S3Identity>,
}

pub fn report(
    bucket: &Bucket,
    problems: &[(String, KeyHistory)],
    busy: &[(Timestamp, Timestamp)],
    registered: Option<tidemark_core::event::S3Identity>,
) -> S3Report {
    S3Report {
        registered,
        component: bucket.component.clone(),
        versioning: bucket.versioning.clone(),
        versioning_enabled_since: bucket.enabled_since(),
        suspended_periods: bucket.suspended_periods(),
        complete_through: bucket.complete_through,
        scans_completed: bucket.scans_completed,
        keys: bucket.keys,
        entries_recorded: bucket.entries_recorded,
        windows: bucket.windows(problems, busy),
        problem_keys: problems.iter().map(|(k, h)| (k.clone(), problem_intervals(h, &bucket.versioning))).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_unix_seconds(1_790_000_000 + s)
    }

    /// The last microsecond of second `s`: every entry stamped `s` was written by then.
    fn end(s: i64) -> Timestamp {
        t(s).saturating_add_micros(SECOND_US - 1)
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
        assert_eq!(version_at(&h, end(9)), KeyAt::Absent);
        assert_eq!(present(&version_at(&h, end(10))), "a", "T is inclusive");
        assert_eq!(present(&version_at(&h, end(19))), "a");
        assert_eq!(present(&version_at(&h, end(20))), "b");
    }

    #[test]
    fn rule_a_delete_marker_means_absent() {
        let h = history(vec![v("a", 10, 100, 1), dm("d", 20, 100, 0)]);
        assert_eq!(version_at(&h, end(25)), KeyAt::Absent);
        assert!(!h.exists_now());
    }

    #[test]
    fn rule_same_second_ties_follow_the_listing_order_when_known() {
        // Two PUTs in one second, listed newest first in one scan.
        let h = history(vec![v("old", 10, 100, 1), v("new", 10, 100, 0)]);
        assert_eq!(present(&version_at(&h, end(10))), "new");
        // Seen by different scans: the later scan saw the later write.
        let h = history(vec![v("first", 10, 100, 0), v("second", 10, 200, 0)]);
        assert_eq!(present(&version_at(&h, end(10))), "second");
    }

    #[test]
    fn rule_unordered_ties_are_ambiguous_never_guessed() {
        // A version and a delete marker in one second, neither the latest: same position.
        let h = history(vec![v("a", 10, 100, 1), dm("d", 10, 100, 1), v("c", 30, 100, 0)]);
        let at = version_at(&h, t(15));
        assert!(matches!(&at, KeyAt::Ambiguous { version_ids, .. } if version_ids.len() == 2), "{at:?}");
        assert!(h.has_problems());
        assert_eq!(present(&version_at(&h, end(30))), "c", "a later entry settles it");
        assert_eq!(problem_intervals(&h, &[]).len(), 1);
        assert_eq!((problem_intervals(&h, &[])[0].0, problem_intervals(&h, &[])[0].1), (t(10), Some(t(30))));
    }

    #[test]
    fn rule_a_null_version_replaced_after_t_cannot_be_reconstructed() {
        let h = history(vec![v("v1", 5, 100, 2), v("null", 10, 100, 1), v("null", 20, 200, 0)]);
        assert!(
            matches!(
                version_at(&h, end(7)),
                KeyAt::Unrecoverable { reason: Unrecoverable::UnseenNull { since, replaced_at }, .. }
                    if since == t(5) && replaced_at == t(10)
            ),
            "after v1 a suspension may have written a null version the null at 10 replaced"
        );
        let at = version_at(&h, t(15));
        assert_eq!(
            at,
            KeyAt::Unrecoverable {
                version_id: "null".into(),
                reason: Unrecoverable::NullReplaced { replaced_at: t(20) }
            }
        );
        assert_eq!(present(&version_at(&h, end(20))), "null", "the current null version is still there");
    }

    #[test]
    fn rule_a_version_reported_missing_is_unrecoverable_while_current() {
        let mut h = history(vec![v("a", 10, 100, 1), v("b", 20, 100, 0)]);
        assert!(h.mark_missing("a"));
        assert_eq!(
            version_at(&h, t(15)),
            KeyAt::Unrecoverable { version_id: "a".into(), reason: Unrecoverable::Missing }
        );
        assert_eq!(present(&version_at(&h, end(25))), "b");
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
            for when in [t(at), end(at), t(at).saturating_add_micros(300_000)] {
                for skew in [0, 400_000] {
                    assert_eq!(
                        manifest_line_stored("k", &stored, when, skew, &[]).unwrap(),
                        manifest_line("k", &h, when, skew, &[]),
                        "at {when} ± {skew} µs"
                    );
                }
            }
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
        let w = b.windows(&[("k".into(), h)], &[]);
        assert_eq!(w.len(), 2, "{w:?}");
        assert_eq!((w[0].from, w[0].to, w[0].bounded_by.clone()), (t(0), t(10), vec!["k".to_owned()]));
        assert_eq!((w[1].from, w[1].to), (t(20), t(100)));
        assert_eq!(b.suspended_periods(), vec![(t(30), None)]);
    }

    #[test]
    fn rule_an_entry_stamped_s_was_written_within_that_second_widened_by_the_skew() {
        assert_eq!(written_within(t(10), 0), (t(10), end(10)));
        assert_eq!(
            written_within(t(10), 250_000),
            (t(10).saturating_add_micros(-250_000), end(10).saturating_add_micros(250_000))
        );
        assert_eq!(
            uncertain_band(t(10).saturating_add_micros(200_000), 0),
            (t(9).saturating_add_micros(200_001), t(10).saturating_add_micros(200_000))
        );
    }

    #[test]
    fn rule_a_write_in_the_second_of_t_makes_the_key_uncertain_never_guessed() {
        // Overwritten in second 20: at 20.3 the write may be before or after T.
        let h = history(vec![v("a", 10, 100, 1), v("b", 20, 100, 0)]);
        let at = version_at(&h, t(20).saturating_add_micros(300_000));
        assert!(
            matches!(&at, KeyAt::Uncertain { version_ids, skew_ms: 0, .. } if version_ids == &["b".to_owned()]),
            "{at:?}"
        );
        assert!(at.is_problem());
        // At the second's boundaries the answer is exact.
        assert_eq!(present(&version_at(&h, t(20).saturating_add_micros(-1))), "a");
        assert_eq!(present(&version_at(&h, end(20))), "b");
        // A key created in T's second: present or absent, unknown.
        let h = history(vec![v("new", 20, 100, 0)]);
        assert!(matches!(version_at(&h, t(20)), KeyAt::Uncertain { .. }));
        assert_eq!(version_at(&h, t(20).saturating_add_micros(-1)), KeyAt::Absent);
        // Not a problem of the history: no hole, so no problem interval.
        assert!(problem_intervals(&h, &[]).is_empty());
        assert!(!h.has_problems());
    }

    #[test]
    fn rule_the_skew_widens_the_uncertainty_to_neighbouring_seconds() {
        let h = history(vec![v("a", 10, 100, 1), v("b", 20, 100, 0)]);
        let just_before = t(20).saturating_add_micros(-1);
        assert_eq!(present(&version_at_within(&h, just_before, 0, &[])), "a");
        assert!(matches!(version_at_within(&h, just_before, 300_000, &[]), KeyAt::Uncertain { skew_ms: 300, .. }));
        assert!(matches!(version_at_within(&h, end(20), 300_000, &[]), KeyAt::Uncertain { .. }));
        assert_eq!(present(&version_at_within(&h, end(20).saturating_add_micros(300_000), 300_000, &[])), "b");
    }

    #[test]
    fn rule_deletes_of_an_absent_key_change_nothing_so_stay_certain() {
        let h = history(vec![v("a", 10, 100, 2), dm("d1", 15, 100, 1), dm("d2", 20, 100, 0)]);
        assert_eq!(version_at(&h, t(20).saturating_add_micros(500_000)), KeyAt::Absent);
        assert!(matches!(version_at(&h, t(15).saturating_add_micros(500_000)), KeyAt::Uncertain { .. }));
    }

    #[test]
    fn rule_answer_names_the_keys_written_near_t() {
        let mut b = Bucket::new("s3:uploads");
        b.versioning.push((t(0), VersioningStatus::Enabled));
        b.complete_through = Some(t(100));
        let near = vec![("k".to_owned(), history(vec![v("a", 10, 100, 1), v("b", 20, 100, 0)]))];
        let a = answer(&b, &near, t(20).saturating_add_micros(400_000), 0);
        assert!(!a.restorable);
        assert!(a.explanation.as_deref().unwrap_or("").contains("may have been written before or after it"), "{a:?}");
        assert!(answer(&b, &near, end(20), 0).restorable);
        assert!(answer(&b, &near, t(20).saturating_add_micros(-1), 0).restorable);
    }

    #[test]
    fn rule_a_null_version_may_have_replaced_one_no_scan_saw() {
        // Created while versioning was suspended, overwritten before any scan: only the overwrite is recorded.
        let versioning = vec![(t(0), VersioningStatus::Enabled), (t(25), VersioningStatus::Suspended)];
        let h = history(vec![v("null", 20, 100, 0)]);
        let at = version_at_within(&h, end(12), 0, &versioning);
        assert_eq!(
            at,
            KeyAt::Unrecoverable {
                version_id: "null".into(),
                reason: Unrecoverable::UnseenNull { since: t(0), replaced_at: t(20) }
            },
            "not absent: the key may have existed"
        );
        assert_eq!(present(&version_at_within(&h, end(20), 0, &versioning)), "null");
        let intervals = problem_intervals(&h, &versioning);
        assert_eq!((intervals[0].0, intervals[0].1), (t(0).saturating_add_micros(1), Some(t(20))));
        // The bucket knows it is a problem key.
        let mut b = Bucket::new("s3:uploads");
        b.versioning = versioning;
        b.key_changed("k", 0, &h);
        assert!(b.problem_keys.contains("k"));
        // A null version from before versioning was ever enabled bounds the whole bucket instead.
        let mut old = Bucket::new("s3:old");
        old.versioning = vec![(t(100), VersioningStatus::Enabled)];
        old.key_changed("a", 0, &history(vec![v("null", 30, 100, 0)]));
        old.key_changed("b", 0, &history(vec![v("v2", 40, 100, 0)]));
        assert!(old.problem_keys.is_empty());
        assert_eq!(old.enabled_since(), Some(end(30)));
    }

    #[test]
    fn rule_windows_leave_out_the_seconds_with_writes_but_keep_their_last_microsecond() {
        let mut b = Bucket::new("s3:uploads");
        b.versioning = vec![(t(0), VersioningStatus::Enabled)];
        b.complete_through = Some(t(100));
        let busy = busy_runs([t(10), t(11).saturating_add_micros(500), t(12), t(40)]);
        assert_eq!(busy, vec![(t(10), t(12)), (t(40), t(40))]);
        let w = b.windows(&[], &busy);
        let spans: Vec<(Timestamp, Timestamp)> = w.iter().map(|w| (w.from, w.to)).collect();
        assert_eq!(spans, vec![(t(0), t(10)), (end(12), t(40)), (end(40), t(100))], "{w:?}");
        assert!(w[0].bounded_by[0].starts_with("writes from"));
        assert_eq!(w[2].bounded_by, vec!["scan watermark".to_owned()]);
    }
}
