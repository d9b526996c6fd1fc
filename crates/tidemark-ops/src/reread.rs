//! Re-reading what the ledger says exists, beyond the WAL archive
//! ([`crate::pg::check_archive`]): a seeded sample of a bucket's recorded
//! versions (HEAD by version id: still there, same ETag and size?) and every
//! recorded snapshot of a group (its file's blake3). Each result is an
//! `artifact.verified`; a snapshot found missing or changed stops being
//! restorable, as the catalog rules say.

use tidemark_core::event::{ArtifactVerified, EventBody, VerifyOutcome};
use tidemark_core::{ArtifactRef, Kind, SecretKey};

use crate::pg::Finding;
use crate::s3_scan::BucketSpec;
use crate::{Env, LedgerApi, OpsError};

/// What a re-read found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Reread {
    pub what: String,
    pub ok: u64,
    pub problems: Vec<Finding>,
}

/// Rule: a sample of `n` among `total`, drawn with `seed` — the indexes,
/// ascending (a partial Fisher–Yates over a SplitMix64 stream).
pub fn sample(total: u64, n: u64, seed: u64) -> Vec<u64> {
    let n = n.min(total);
    let mut picked: std::collections::BTreeMap<u64, u64> = std::collections::BTreeMap::new();
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n {
        let j = i + next() % (total - i);
        let at_j = *picked.get(&j).unwrap_or(&j);
        let at_i = *picked.get(&i).unwrap_or(&i);
        picked.insert(j, at_i);
        out.push(at_j);
    }
    out.sort_unstable();
    out
}

/// Rule: a recorded version is ok when the bucket still has it with the
/// recorded ETag and size, missing when it is gone, corrupt otherwise.
pub fn version_outcome(recorded: (Option<&str>, u64), found: Option<(Option<String>, u64)>) -> (VerifyOutcome, String) {
    match found {
        None => (VerifyOutcome::Missing, "the version is gone from the bucket".into()),
        Some((etag, size)) if etag.as_deref() == recorded.0 && size == recorded.1 => (VerifyOutcome::Ok, String::new()),
        Some((etag, size)) => (
            VerifyOutcome::Corrupt,
            format!(
                "the bucket has ETag {} and {size} bytes, recorded {} and {} bytes",
                etag.unwrap_or_default(),
                recorded.0.unwrap_or(""),
                recorded.1
            ),
        ),
    }
}

/// HEADs a seeded sample of `n` recorded versions of a bucket (delete
/// markers and versions already reported missing are not sampled) and
/// records one `artifact.verified` each.
pub fn sample_versions(
    ledger: &mut dyn LedgerApi,
    env: &dyn Env,
    key: &SecretKey,
    spec: &BucketSpec,
    n: u64,
    seed: u64,
) -> Result<Reread, OpsError> {
    spec.check()?;
    ledger.check_signer(key, Kind::ArtifactVerified)?;
    let report = ledger.s3_report(&spec.component)?;
    let bucket = spec.resolve(report.registered.as_ref())?;
    // (key, version, etag, size) of every live recorded version, in key order.
    let mut versions: Vec<(String, String, Option<String>, u64)> = Vec::new();
    ledger.s3_histories(&spec.component, &mut |k, h| {
        for e in h.entries.into_iter().filter(|e| !e.is_delete_marker && !e.missing) {
            versions.push((k.clone(), e.version_id, e.etag, e.size_bytes));
        }
    })?;
    let s3 = bucket.connect()?;
    let mut out = Reread {
        what: format!("{} ({} of {} versions)", spec.component, n.min(versions.len() as u64), versions.len()),
        ok: 0,
        problems: Vec::new(),
    };
    let mut bodies = Vec::new();
    for i in sample(versions.len() as u64, n, seed) {
        let (k, v, etag, size) = &versions[i as usize];
        let found = s3.head_version(&bucket.bucket, k, v)?;
        let (outcome, detail) = version_outcome((etag.as_deref(), *size), found);
        let artifact = ArtifactRef::parse(&format!("{}/v/{k}@{v}", spec.component)).map_err(OpsError::BadEvent)?;
        match outcome {
            VerifyOutcome::Ok => out.ok += 1,
            _ => out.problems.push(Finding { file: format!("{k}@{v}"), outcome, detail: detail.clone() }),
        }
        bodies.push(EventBody::ArtifactVerified(ArtifactVerified {
            artifact,
            method: format!("HEAD by version id (sample seed {seed})"),
            outcome,
            blake3: None,
            detail: (!detail.is_empty()).then_some(detail),
        }));
    }
    if !bodies.is_empty() {
        let events = bodies.into_iter().map(|b| env.sign(key, b)).collect::<Result<Vec<_>, _>>()?;
        ledger.record(events, env.now())?;
    }
    Ok(out)
}

/// Re-reads every present snapshot of a group at its recorded location
/// (blake3) and records one `artifact.verified` each.
pub fn reread_snapshots(
    ledger: &mut dyn LedgerApi,
    env: &dyn Env,
    key: &SecretKey,
    group: &str,
) -> Result<Reread, OpsError> {
    ledger.check_signer(key, Kind::ArtifactVerified)?;
    let info = ledger.group_info(group)?;
    let present: Vec<_> = info
        .snapshots
        .iter()
        .filter(|s| s.state == tidemark_lineage::group::SnapshotState::Present && s.blake3.is_some())
        .collect();
    let mut out = Reread { what: format!("{} snapshots of {group}", present.len()), ok: 0, problems: Vec::new() };
    let mut bodies = Vec::new();
    for s in present {
        let expected = s.blake3.expect("filtered");
        let (outcome, found, detail) = crate::pg::reread(std::path::Path::new(&s.location), expected);
        let artifact =
            ArtifactRef::parse(&format!("{}/snapshot/{}", s.component, s.snapshot_id)).map_err(OpsError::BadEvent)?;
        match outcome {
            VerifyOutcome::Ok => out.ok += 1,
            _ => out.problems.push(Finding { file: s.snapshot_id.clone(), outcome, detail: detail.clone() }),
        }
        bodies.push(EventBody::ArtifactVerified(ArtifactVerified {
            artifact,
            method: crate::pg::REREAD_METHOD.to_owned(),
            outcome,
            blake3: found,
            detail: (!detail.is_empty()).then_some(detail),
        }));
    }
    if !bodies.is_empty() {
        let events = bodies.into_iter().map(|b| env.sign(key, b)).collect::<Result<Vec<_>, _>>()?;
        ledger.record(events, env.now())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_a_sample_is_distinct_bounded_and_the_same_for_a_seed() {
        let s = sample(1000, 50, 7);
        assert_eq!(s.len(), 50);
        assert!(s.windows(2).all(|w| w[0] < w[1]) && s.iter().all(|i| *i < 1000), "{s:?}");
        assert_eq!(s, sample(1000, 50, 7));
        assert_ne!(s, sample(1000, 50, 8));
        assert_eq!(sample(3, 10, 1), vec![0, 1, 2], "a sample larger than the whole is the whole");
        assert!(sample(0, 5, 1).is_empty());
    }

    #[test]
    fn rule_a_recorded_version_is_ok_missing_or_corrupt() {
        let rec = (Some("\"abc\""), 10);
        assert_eq!(version_outcome(rec, Some((Some("\"abc\"".into()), 10))).0, VerifyOutcome::Ok);
        assert_eq!(version_outcome(rec, None).0, VerifyOutcome::Missing);
        assert_eq!(version_outcome(rec, Some((Some("\"abd\"".into()), 10))).0, VerifyOutcome::Corrupt);
        assert_eq!(version_outcome(rec, Some((Some("\"abc\"".into()), 11))).0, VerifyOutcome::Corrupt);
    }
}
