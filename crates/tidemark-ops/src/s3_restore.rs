//! `s3 restore`: one bucket as it was at T, into another bucket or in
//! place, every copy verified, never deleting a version; then
//! `restore.performed` saying exactly what was done.

use std::sync::Mutex;
use std::time::Instant;

use tidemark_core::event::{ComponentOutcome, EventBody, Outcome, RestorePerformed};
use tidemark_core::{ComponentId, Kind, SecretKey, Timestamp};
use tidemark_lineage::s3::{Manifest, ManifestLine};
use tidemark_s3::RestoreReport;

use crate::s3_scan::{BucketSpec, ResolvedBucket};
use crate::{Env, LedgerApi, OpsError, Progress};

/// Where the restored state goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// The bucket itself: old versions copied on top, delete markers for keys created after T.
    InPlace,
    /// Another bucket (created, versioned, when absent).
    Bucket(String),
}

/// What to restore and how.
#[derive(Debug, Clone)]
pub struct S3RestoreRequest {
    pub bucket: BucketSpec,
    pub at: Timestamp,
    pub destination: Destination,
    /// What to do when another target bucket already holds objects.
    pub existing: tidemark_s3::Existing,
    /// Copies in flight at once.
    pub concurrency: usize,
    /// Restore the other keys when some cannot be reconstructed at T (those are left alone).
    pub skip_problem_keys: bool,
}

/// A restore that may go ahead: the bucket, the target and the manifest.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub bucket: ResolvedBucket,
    pub target: String,
    pub manifest: Manifest,
    /// Keys that cannot be reconstructed at T (left alone).
    pub problems: Vec<ManifestLine>,
}

impl Prepared {
    /// The lines a restore carries out (restores and removals).
    fn lines(&self) -> Vec<ManifestLine> {
        self.manifest.lines.iter().filter(|l| !matches!(l, ManifestLine::Problem { .. })).cloned().collect()
    }
}

/// What a restore did and recorded.
#[derive(Debug, Clone, serde::Serialize)]
pub struct S3Restored {
    pub component: String,
    pub at: Timestamp,
    pub target: String,
    /// The target bucket was created by this restore.
    pub created: bool,
    pub report: RestoreReport,
    pub problem_keys_left_alone: u64,
    pub outcome: Outcome,
    /// As recorded in `restore.performed`.
    pub detail: String,
    pub requests: u64,
    /// The entry of `restore.performed` (none when it went to the spool).
    pub entry: Option<u64>,
}

/// Rule: a bucket is restored at T only when T is covered — scanned
/// through, versioning on — and every key can be reconstructed, unless the
/// operator chose to leave the keys that cannot alone.
pub fn prepare(
    ledger: &dyn LedgerApi,
    request: &S3RestoreRequest,
    progress: &mut dyn Progress,
) -> Result<Prepared, OpsError> {
    request.bucket.check()?;
    let component = &request.bucket.component;
    let report = ledger.s3_report(component)?;
    let bucket = request.bucket.resolve(report.registered.as_ref())?;
    let manifest = ledger.s3_manifest(component, request.at)?;
    if let Some(bound) = &manifest.summary.bound {
        return Err(OpsError::NotRestorable(format!("{component} is not restorable at {}: {bound}", request.at)));
    }
    let problems: Vec<ManifestLine> =
        manifest.lines.iter().filter(|l| matches!(l, ManifestLine::Problem { .. })).cloned().collect();
    if !problems.is_empty() && !request.skip_problem_keys {
        for p in &problems {
            if let ManifestLine::Problem { key, at } = p {
                progress.note(&format!(
                    "cannot be reconstructed at {}: {key} {}",
                    request.at,
                    serde_json::to_string(at).unwrap_or_default()
                ));
            }
        }
        return Err(OpsError::NotRestorable(format!(
            "{} keys cannot be reconstructed at {}; pass --skip-problem-keys to restore the others",
            problems.len(),
            request.at
        )));
    }
    let target = match &request.destination {
        Destination::InPlace => bucket.bucket.clone(),
        Destination::Bucket(b) => b.clone(),
    };
    Ok(Prepared { bucket, target, manifest, problems })
}

/// Rule: a restore succeeded when no line failed, is partial when some
/// were done, failed when none were.
pub fn outcome_of(report: &RestoreReport) -> Outcome {
    if report.failed.is_empty() {
        Outcome::Succeeded
    } else if report.copied + report.removed + report.skipped > 0 {
        Outcome::Partial
    } else {
        Outcome::Failed
    }
}

/// Carries out a prepared restore and records `restore.performed`. The
/// signer is checked before the bucket is touched.
pub fn restore(
    ledger: &mut dyn LedgerApi,
    env: &dyn Env,
    key: &SecretKey,
    request: &S3RestoreRequest,
    prepared: &Prepared,
    progress: &mut dyn Progress,
) -> Result<S3Restored, OpsError> {
    ledger.check_signer(key, Kind::RestorePerformed)?;
    let started = Instant::now();
    let component = request.bucket.component.clone();
    let target = prepared.target.clone();
    let s3 = prepared.bucket.connect()?;
    let created = request.destination != Destination::InPlace && s3.ensure_bucket(&target)?;
    if created {
        progress.note(&format!("created s3://{target} (versioned)"));
    }
    let lines = prepared.lines();
    progress.begin("restored keys", Some(lines.len() as u64));
    let shared = Mutex::new(progress);
    let report =
        s3.restore(&prepared.bucket.bucket, &target, lines, request.concurrency, request.existing, &|done, _| {
            shared.lock().expect("progress lock").advance(done)
        })?;
    let progress = shared.into_inner().expect("progress lock");
    for (k, why) in &report.failed {
        progress.note(&format!("failed: {k}: {why}"));
    }
    let outcome = outcome_of(&report);
    let problems = prepared.problems.len() as u64;
    let detail = format!(
        "{report}{}",
        if problems == 0 { String::new() } else { format!(", left alone (not reconstructible) {problems}") }
    );
    let body = EventBody::RestorePerformed(RestorePerformed {
        target: component.clone(),
        recovery_point: request.at.to_string(),
        plan_digest: prepared.manifest.summary.digest,
        target_environment: match request.destination {
            Destination::InPlace => format!("s3://{target} (in place)"),
            Destination::Bucket(_) => format!("s3://{target}"),
        },
        outcome,
        components: vec![ComponentOutcome {
            component: ComponentId::parse(&component).map_err(OpsError::Usage)?,
            outcome,
            detail: Some(detail.clone()),
        }],
        duration_ms: started.elapsed().as_millis() as u64,
    });
    let recorded = ledger.record(vec![env.sign(key, body)?], env.now())?;
    Ok(S3Restored {
        component,
        at: request.at,
        target,
        created,
        report,
        problem_keys_left_alone: problems,
        outcome,
        detail,
        requests: s3.requests(),
        entry: recorded.last_seq(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_a_bucket_restore_succeeded_only_when_no_line_failed() {
        let mut r = RestoreReport { copied: 3, ..RestoreReport::default() };
        assert_eq!(outcome_of(&r), Outcome::Succeeded);
        r.failed.push(("k".into(), "denied".into()));
        assert_eq!(outcome_of(&r), Outcome::Partial);
        let none = RestoreReport { failed: vec![("k".into(), "denied".into())], ..RestoreReport::default() };
        assert_eq!(outcome_of(&none), Outcome::Failed);
    }
}
