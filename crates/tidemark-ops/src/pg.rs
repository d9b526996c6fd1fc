//! PostgreSQL work: positions and restore points as the database reports
//! them, and the archive audit (every recorded file re-read).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tidemark_agents::pg_db::{Db, Observed};
use tidemark_core::event::{ArtifactVerified, EventBody, PgPosition, PgRestorePoint, VerifyOutcome};
use tidemark_core::{ArtifactRef, ComponentId, Digest32, Kind, SecretKey};

use crate::{Env, LedgerApi, OpsError, Progress, Recorded};

fn component_id(c: &str) -> Result<ComponentId, OpsError> {
    ComponentId::parse(c).map_err(OpsError::Usage)
}

/// The event recording a position the database reported.
pub fn position_event(component: &ComponentId, o: &Observed) -> EventBody {
    EventBody::PgPosition(PgPosition {
        component: component.clone(),
        lsn: o.lsn,
        timeline: o.timeline,
        observed_at: o.at,
    })
}

/// The event recording a restore point the database created.
pub fn restore_point_event(component: &ComponentId, name: &str, o: &Observed) -> EventBody {
    EventBody::PgRestorePoint(PgRestorePoint {
        component: component.clone(),
        name: name.to_owned(),
        lsn: o.lsn,
        timeline: o.timeline,
        created_at: o.at,
    })
}

/// One position: the LSN, timeline and database clock now, recorded.
pub fn record_position(
    ledger: &mut dyn LedgerApi,
    env: &dyn Env,
    key: &SecretKey,
    component: &str,
    db: &Db,
) -> Result<(Observed, Recorded), OpsError> {
    let c = component_id(component)?;
    let o = db.position().map_err(|e| OpsError::Usage(e.to_string()))?;
    let recorded = ledger.record(vec![env.sign(key, position_event(&c, &o))?], env.now())?;
    Ok((o, recorded))
}

/// What `watch_positions` watches, and how often.
#[derive(Debug, Clone)]
pub struct WatchPlan {
    pub component: String,
    pub interval: Duration,
    /// Stop after this many positions (none: until `stop`).
    pub count: Option<u64>,
}

/// Records a position every `interval` until `stop` is set (or `count` is
/// reached); returns how many were recorded. Each position goes to
/// `recorded` with its entry (none when spooled). The signer is checked
/// before the first one.
pub fn watch_positions(
    ledger: &mut dyn LedgerApi,
    env: &dyn Env,
    key: &SecretKey,
    db: &Db,
    plan: &WatchPlan,
    stop: &AtomicBool,
    recorded: &mut dyn FnMut(&Observed, Option<u64>),
) -> Result<u64, OpsError> {
    if plan.interval.is_zero() {
        return Err(OpsError::Usage("the interval must be positive".into()));
    }
    ledger.check_signer(key, Kind::PgPosition)?;
    let component = plan.component.as_str();
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) && plan.count.is_none_or(|c| n < c) {
        let started = Instant::now();
        let (o, r) = record_position(ledger, env, key, component, db)?;
        n += 1;
        recorded(&o, r.last_seq());
        if plan.count.is_some_and(|c| n >= c) {
            break;
        }
        while started.elapsed() < plan.interval && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50).min(plan.interval));
        }
    }
    Ok(n)
}

/// One file the archive audit found missing or changed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    pub file: String,
    pub outcome: VerifyOutcome,
    pub detail: String,
}

/// What an archive audit found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ArchiveCheck {
    pub component: String,
    pub ok: u64,
    pub problems: Vec<Finding>,
}

/// The method recorded for a re-read.
pub const REREAD_METHOD: &str = "re-read blake3 at recorded location";

/// Re-reads every archived file at its recorded location and records one
/// `artifact.verified` per file (ok, missing or corrupt): a missing or
/// changed file becomes a hole in the cluster's recovery windows.
pub fn check_archive(
    ledger: &mut dyn LedgerApi,
    env: &dyn Env,
    key: &SecretKey,
    component: &str,
    progress: &mut dyn Progress,
) -> Result<ArchiveCheck, OpsError> {
    component_id(component)?;
    ledger.check_signer(key, Kind::ArtifactVerified)?;
    let mut check = ArchiveCheck { component: component.to_owned(), ok: 0, problems: Vec::new() };
    let mut bodies = Vec::new();
    progress.begin("re-read files", None);
    ledger.pg_files(component, &mut |f| {
        let kind = if f.file_name.ends_with(".history") { "history" } else { "wal" };
        let artifact =
            ArtifactRef::parse(&format!("{component}/{kind}/{}", f.file_name)).map_err(OpsError::BadEvent)?;
        let (outcome, found, detail) = reread(Path::new(&f.location), f.blake3);
        match outcome {
            VerifyOutcome::Ok => check.ok += 1,
            _ => check.problems.push(Finding { file: f.file_name.clone(), outcome, detail: detail.clone() }),
        }
        bodies.push(EventBody::ArtifactVerified(ArtifactVerified {
            artifact,
            method: REREAD_METHOD.to_owned(),
            outcome,
            blake3: found,
            detail: (!detail.is_empty()).then_some(detail),
        }));
        progress.advance(check.ok + check.problems.len() as u64);
        Ok(())
    })?;
    if !bodies.is_empty() {
        let events = bodies.into_iter().map(|b| env.sign(key, b)).collect::<Result<Vec<_>, _>>()?;
        ledger.record(events, env.now())?;
    }
    Ok(check)
}

/// Rule: a file that cannot be read is missing; one whose blake3 differs is corrupt.
pub(crate) fn reread(location: &Path, expected: Digest32) -> (VerifyOutcome, Option<Digest32>, String) {
    match tidemark_agents::pg_files::blake3_file(location) {
        Err(e) => (VerifyOutcome::Missing, None, format!("cannot read {}: {e}", location.display())),
        Ok(d) if d == expected => (VerifyOutcome::Ok, Some(d), String::new()),
        Ok(d) => {
            (VerifyOutcome::Corrupt, Some(d), format!("blake3 {d} at {}, recorded {expected}", location.display()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_cannot_be_read_is_missing_and_one_that_differs_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("000000010000000000000001");
        std::fs::write(&path, b"segment").unwrap();
        let right = Digest32::blake3_of(b"segment");
        assert_eq!(reread(&path, right).0, VerifyOutcome::Ok);
        let (outcome, found, detail) = reread(&path, Digest32::blake3_of(b"other"));
        assert_eq!((outcome, found), (VerifyOutcome::Corrupt, Some(right)));
        assert!(detail.contains("recorded"), "{detail}");
        let (outcome, found, _) = reread(&dir.path().join("gone"), right);
        assert_eq!((outcome, found), (VerifyOutcome::Missing, None));
    }
}
