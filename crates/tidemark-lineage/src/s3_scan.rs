//! What a scan of an S3 bucket records (DESIGN §6), as pure rules the
//! scanner applies to one listing:
//!
//! * [`listing_positions`]: S3 lists a key's versions and its delete markers
//!   newest first, but in two separate lists; their interleaving is known
//!   only through LastModified and the one `IsLatest` entry. Entries whose
//!   order the listing does not establish get the same position.
//! * [`diff_key`]: which listed entries are new to the ledger, and which
//!   recorded entries the bucket no longer lists (missing: a hole).
//! * [`watermark`]: the instant through which a scan proves every version is
//!   recorded — before the scan started (whole seconds, minus the clock-skew
//!   allowance) and before the oldest multipart upload still in progress
//!   (whose LastModified will be when it *started*).

use tidemark_core::Timestamp;

use crate::s3::{KeyHistory, NULL_VERSION};

/// One entry of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub version_id: String,
    pub etag: Option<String>,
    pub size_bytes: u64,
    pub last_modified: Timestamp,
    pub is_delete_marker: bool,
    pub is_latest: bool,
    /// Index among the key's versions (or among its delete markers) in the listing.
    pub index_in_kind: usize,
}

/// Rule: listing positions of one key's entries (0 = newest); entries whose
/// relative order is unknown share a position.
pub fn listing_positions(entries: &[Listed]) -> Vec<u64> {
    let mut order: Vec<usize> = (0..entries.len()).collect();
    let rank = |e: &Listed| (std::cmp::Reverse(e.last_modified), !e.is_latest, e.is_delete_marker, e.index_in_kind);
    order.sort_by_key(|i| rank(&entries[*i]));
    let mut positions = vec![0u64; entries.len()];
    let mut pos = 0u64;
    let mut n = 0;
    while n < order.len() {
        let lm = entries[order[n]].last_modified;
        let group_end = n + order[n..].iter().take_while(|&&i| entries[i].last_modified == lm).count();
        // The latest entry (sorted first in its second) is ordered by IsLatest.
        let mut rest = n;
        if entries[order[n]].is_latest {
            positions[order[n]] = pos;
            pos += 1;
            rest += 1;
        }
        // Among the others of one second, a version and a delete marker are
        // in two lists S3 does not interleave: a mixed group has no known order.
        let group = &order[rest..group_end];
        let mixed =
            group.iter().any(|&i| entries[i].is_delete_marker) && group.iter().any(|&i| !entries[i].is_delete_marker);
        for &i in group {
            positions[i] = pos;
            if !mixed {
                pos += 1;
            }
        }
        if mixed {
            pos += 1;
        }
        n = group_end;
    }
    positions
}

/// What a scan records for one key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyDiff {
    /// Indices into the listed entries that the ledger does not know yet.
    pub new: Vec<usize>,
    /// Version ids the ledger holds (not already missing) that the bucket no longer lists.
    pub missing: Vec<String>,
}

/// Rule: new entries are those whose (version id, LastModified) is not
/// recorded (a `null` version overwritten under suspended versioning comes
/// back with a new LastModified); a recorded entry is missing when its
/// version id is no longer listed — for `null`, only the newest `null`
/// record counts, older ones were replaced, not lost.
pub fn diff_key(listed: &[Listed], known: Option<&KeyHistory>) -> KeyDiff {
    let mut d = KeyDiff::default();
    let empty = KeyHistory::default();
    let known = known.unwrap_or(&empty);
    for (i, l) in listed.iter().enumerate() {
        if !known.entries.iter().any(|e| e.version_id == l.version_id && e.last_modified == l.last_modified) {
            d.new.push(i);
        }
    }
    let mut seen_null = false;
    for e in &known.entries {
        if e.version_id == NULL_VERSION {
            if seen_null {
                continue;
            }
            seen_null = true;
        }
        if !e.missing && !listed.iter().any(|l| l.version_id == e.version_id) {
            d.missing.push(e.version_id.clone());
        }
    }
    d
}

/// Rule: the scan watermark — the whole second before the scan started on
/// S3's clock (this clock minus the skew allowance), or a later one the
/// caller proved (`proven_through`: a mark saw S3's clock tick before the
/// scan began), and never past the oldest multipart upload in progress.
pub fn watermark(
    started_at: Timestamp,
    clock_skew_ms: u64,
    proven_through: Option<Timestamp>,
    oldest_upload_in_progress: Option<Timestamp>,
) -> Timestamp {
    let skewed = started_at.saturating_add_micros(-(clock_skew_ms as i64) * 1000);
    // LastModified has whole seconds: a write in the scan's first second may be listed or not.
    let second = skewed.as_micros().div_euclid(1_000_000) * 1_000_000;
    let mut w = Timestamp::from_micros(second - 1);
    if let Some(p) = proven_through {
        w = w.max(p);
    }
    if let Some(u) = oldest_upload_in_progress {
        w = w.min(u.saturating_add_micros(-1));
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::s3::VersionRecord;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_unix_seconds(1_790_000_000 + s)
    }

    fn l(id: &str, lm: i64, dm: bool, latest: bool, idx: usize) -> Listed {
        Listed {
            key: "k".into(),
            version_id: id.into(),
            etag: None,
            size_bytes: 0,
            last_modified: t(lm),
            is_delete_marker: dm,
            is_latest: latest,
            index_in_kind: idx,
        }
    }

    #[test]
    fn rule_listing_positions_follow_s3_order_and_share_a_position_when_unknown() {
        // Versions v3 (latest), v2, v1 at distinct seconds.
        let e = vec![l("v3", 30, false, true, 0), l("v2", 20, false, false, 1), l("v1", 10, false, false, 2)];
        assert_eq!(listing_positions(&e), vec![0, 1, 2]);
        // Two versions in one second: the versions list orders them.
        let e = vec![l("b", 10, false, true, 0), l("a", 10, false, false, 1)];
        assert_eq!(listing_positions(&e), vec![0, 1]);
        // A delete marker (latest) and a version in one second: IsLatest orders them.
        let e = vec![l("v", 10, false, false, 0), l("d", 10, true, true, 0)];
        assert_eq!(listing_positions(&e), vec![1, 0]);
        // A version and a delete marker in one second, a later version latest: unknown order.
        let e = vec![l("v9", 20, false, true, 0), l("v", 10, false, false, 1), l("d", 10, true, false, 0)];
        let p = listing_positions(&e);
        assert_eq!(p[0], 0);
        assert_eq!(p[1], p[2], "same position: order unknown");
    }

    fn rec(id: &str, lm: i64, missing: bool) -> VersionRecord {
        VersionRecord {
            version_id: id.into(),
            etag: None,
            size_bytes: 0,
            last_modified: t(lm),
            is_delete_marker: false,
            listing_position: 0,
            first_seen_at: t(100),
            missing,
            object_lock_mode: None,
            object_lock_retain_until: None,
            object_lock_legal_hold: None,
            seq: 0,
        }
    }

    #[test]
    fn rule_a_scan_records_only_what_is_new_and_what_went_missing() {
        let mut h = KeyHistory::default();
        h.record(rec("v1", 10, false));
        h.record(rec("v2", 20, false));
        let listed = vec![l("v3", 30, false, true, 0), l("v2", 20, false, false, 1)];
        let d = diff_key(&listed, Some(&h));
        assert_eq!(d.new, vec![0]);
        assert_eq!(d.missing, vec!["v1".to_owned()]);
        assert_eq!(diff_key(&[l("v2", 20, false, true, 0)], Some(&h)).new, Vec::<usize>::new());
    }

    #[test]
    fn rule_a_replaced_null_version_is_new_not_missing() {
        let mut h = KeyHistory::default();
        h.record(rec("null", 10, false));
        let listed = vec![l("null", 20, false, true, 0)];
        let d = diff_key(&listed, Some(&h));
        assert_eq!(d.new, vec![0], "a new LastModified: the null version was overwritten");
        assert!(d.missing.is_empty());
        h.record(rec("null", 20, false));
        assert_eq!(diff_key(&[], Some(&h)).missing, vec!["null".to_owned()], "the current null version deleted");
    }

    #[test]
    fn rule_the_watermark_precedes_the_scan_second_and_uploads_in_progress() {
        let started = Timestamp::from_micros(t(100).as_micros() + 400_000);
        assert_eq!(watermark(started, 0, None, None), Timestamp::from_micros(t(100).as_micros() - 1));
        assert_eq!(watermark(started, 1000, None, None), Timestamp::from_micros(t(99).as_micros() - 1));
        assert_eq!(watermark(started, 0, None, Some(t(50))), Timestamp::from_micros(t(50).as_micros() - 1));
        let proven = Timestamp::from_micros(t(120).as_micros() - 1);
        assert_eq!(watermark(started, 1000, Some(proven), None), proven, "a proven tick moves it on");
        assert_eq!(watermark(started, 0, Some(proven), Some(t(50))), Timestamp::from_micros(t(50).as_micros() - 1));
    }
}
