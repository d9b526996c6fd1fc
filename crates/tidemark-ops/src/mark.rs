//! A marker: one recovery point of a whole group, pinned on every
//! component at one moment — a restore point on each PostgreSQL cluster,
//! each bucket's watermark at a tick of S3's own clock ([`crate::mark_cut`]),
//! each snapshot-only store's snapshot — recorded in one batch with the
//! marker. Quiesced markers stop the writers first and resume them after,
//! on every path.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tidemark_agents::pg_db::{Db, Observed};
use tidemark_core::event::{EventBody, MarkerPart, MarkerPoint, MarkerQuiesced, SnapshotTaken};
use tidemark_core::{ComponentId, Kind, Name, SecretKey, Timestamp};
use tidemark_lineage::group::GroupInfo;

use crate::mark_cut::{self, Clocked};
use crate::s3_scan::{self, BucketSpec, ScanRequest, Scanned};
use crate::{Env, LedgerApi, OpsError, Progress};

/// How writers are stopped and resumed for a quiesced marker.
#[derive(Debug, Clone, Default)]
pub struct Quiesce {
    /// Shell command that stops the writers (the marker is taken once it exits 0).
    pub exec_before: Option<String>,
    /// Shell command that resumes them: run exactly once when `exec_before`
    /// was given, whatever fails after it.
    pub exec_after: Option<String>,
}

/// What to mark and how.
#[derive(Debug, Clone)]
pub struct MarkRequest {
    pub group: String,
    /// The marker id (default: [`default_marker_id`] of now).
    pub id: Option<String>,
    /// DSNs of the PostgreSQL components: `(Some(component), dsn)`, or
    /// `(None, dsn)` when the group has exactly one.
    pub pg_dsns: Vec<(Option<String>, String)>,
    /// Snapshot files taken by now, recorded with their blake3: (component, file).
    pub snapshot_files: Vec<(String, PathBuf)>,
    /// Snapshots already recorded: (component, snapshot id).
    pub snapshot_ids: Vec<(String, String)>,
    /// Path-style S3 addressing for registered endpoints that are AWS's.
    pub s3_path_style: bool,
    /// Where the buckets' credentials come from.
    pub s3_credentials: tidemark_s3::Credentials,
    /// Allowance for the difference between this clock and S3's (as for a scan).
    pub clock_skew_ms: u64,
    /// Writers stopped and resumed around the marker (a quiesced marker).
    pub quiesce: Option<Quiesce>,
    /// How long PostgreSQL may take to archive the marked segment.
    pub archive_timeout: Duration,
}

/// One bucket's cut, as the marker's evidence shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct S3Cut {
    pub component: String,
    /// The tick of S3's clock the watermark is just before.
    pub boundary: Timestamp,
    /// How far apart the tick and the PostgreSQL cut can be, at most.
    pub cut_spread_ms: i64,
    pub probe_sent_at: Timestamp,
    pub cut_returned_at: Timestamp,
    /// Multipart uploads begun before the boundary and not finished at the cut.
    pub uploads_in_progress: Vec<String>,
}

/// What a mark did and recorded.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Marked {
    pub marker_id: String,
    pub group: String,
    /// The marker's time: the earliest PostgreSQL cut (or when it was taken).
    pub at: Timestamp,
    /// The marker's entry (none when it went to the spool).
    pub entry: Option<u64>,
    pub writers_stopped_at: Option<Timestamp>,
    pub writers_resumed_at: Option<Timestamp>,
    pub s3_cuts: Vec<S3Cut>,
    /// Each bucket's scan after its cut (it records the versions the watermark covers).
    pub scans: Vec<Scanned>,
    /// Each PostgreSQL part: (component, restore point, segment archived).
    pub pg_parts: Vec<(String, String, String)>,
}

/// Rule: a marker id by default is `m-` and the UTC time to the second,
/// e.g. `m-20261123T101500Z`.
pub fn default_marker_id(t: Timestamp) -> String {
    let text = t.to_string().replace(['-', ':'], "");
    let whole = text.trim_end_matches('Z').split('.').next().unwrap_or("");
    format!("m-{whole}Z")
}

/// Rule: every PostgreSQL component of the group has a DSN — named, or the
/// one bare DSN when the group has exactly one cluster — and every
/// snapshot-only component a snapshot; nothing names a component twice.
pub fn assign_dsns(
    components: &[String],
    given: &[(Option<String>, String)],
    snapshots: &[&str],
) -> Result<Vec<(String, String)>, OpsError> {
    let pg: Vec<&String> = components.iter().filter(|c| c.starts_with("pg:")).collect();
    let mut dsns: Vec<(String, String)> = Vec::new();
    for (c, dsn) in given {
        let c = match (c, pg.as_slice()) {
            (Some(c), _) => c.clone(),
            (None, [only]) => (*only).clone(),
            (None, _) => {
                return Err(OpsError::Usage(
                    "the group has several PostgreSQL components: give --pg-dsn pg:NAME=DSN for each".into(),
                ));
            }
        };
        if !pg.contains(&&c) {
            return Err(OpsError::Usage(format!("{c} is not a PostgreSQL component of the group")));
        }
        if dsns.iter().any(|(x, _)| *x == c) {
            return Err(OpsError::Usage(format!("{c}: given more than one DSN")));
        }
        dsns.push((c, dsn.clone()));
    }
    for c in components {
        let given = match c.split(':').next() {
            Some("pg") => dsns.iter().any(|(x, _)| x == c),
            Some("snap") => snapshots.contains(&c.as_str()),
            _ => true,
        };
        if !given {
            return Err(OpsError::Usage(format!(
                "{c}: give {} for it",
                if c.starts_with("pg:") { "--pg-dsn" } else { "--snapshot-file or --snapshot-id" }
            )));
        }
    }
    Ok(dsns)
}

/// The `snapshot.taken` body for a local file (its blake3 and size read
/// now); the id defaults to `b3-` and the digest's first 16 hex digits.
pub fn snapshot_file_event(
    component: &str,
    id: Option<&str>,
    file: &Path,
    method: &str,
    at: Timestamp,
) -> Result<(String, EventBody), OpsError> {
    let digest = tidemark_agents::pg_files::blake3_file(file)?;
    let size = std::fs::metadata(file).map_err(|e| failed(format!("reading {}: {e}", file.display())))?.len();
    let location = std::path::absolute(file).map_err(|e| failed(format!("{}: {e}", file.display())))?;
    let id = id.map(str::to_owned).unwrap_or_else(|| format!("b3-{}", &digest.to_string()[..16]));
    let body = EventBody::SnapshotTaken(SnapshotTaken {
        component: component_id(component)?,
        snapshot_id: id.clone(),
        taken_at: at,
        method: method.to_owned(),
        size_bytes: size,
        blake3: Some(digest),
        location: location.display().to_string(),
    });
    Ok((id, body))
}

fn failed(msg: impl Into<String>) -> OpsError {
    OpsError::Failed(msg.into())
}

fn component_id(c: &str) -> Result<ComponentId, OpsError> {
    ComponentId::parse(c).map_err(OpsError::Usage)
}

fn sh(cmd: &str, what: &str) -> Result<(), OpsError> {
    let status =
        Command::new("sh").arg("-c").arg(cmd).status().map_err(|e| failed(format!("running {what} `{cmd}`: {e}")))?;
    if status.success() { Ok(()) } else { Err(failed(format!("{what} `{cmd}` failed ({status})"))) }
}

/// Resumes the writers exactly once: when asked, on an error path, and
/// (as a last resort) when dropped during a panic.
struct Resume {
    cmd: Option<String>,
}

impl Resume {
    fn now(&mut self, env: &dyn Env) -> Result<Timestamp, OpsError> {
        if let Some(cmd) = self.cmd.take() {
            sh(&cmd, "--exec-after")?;
        }
        Ok(env.now())
    }

    /// After a failed step: resume, and say so.
    fn after_failure(&mut self, progress: &mut dyn Progress) {
        if let Some(cmd) = self.cmd.take() {
            progress.note("a step failed; resuming writers with --exec-after");
            if let Err(e) = sh(&cmd, "--exec-after") {
                progress.note(&format!("{e}; THE WRITERS MAY STILL BE STOPPED"));
            }
        }
    }
}

impl Drop for Resume {
    fn drop(&mut self) {
        if let Some(cmd) = self.cmd.take() {
            let _ = sh(&cmd, "--exec-after");
        }
    }
}

/// What the cut pinned, before anything is recorded.
struct Pinned {
    at: Timestamp,
    stopped_at: Option<Timestamp>,
    resumed_at: Option<Timestamp>,
    restore_point: String,
    observed: Vec<Observed>,
    cut: Option<mark_cut::Cut>,
    events: Vec<EventBody>,
    parts: Vec<MarkerPart>,
}

/// Takes a marker of `request.group`: checks the signer, connects to every
/// component before anything is stopped, cuts, resumes writers, waits for
/// the marked WAL to be archived, scans each bucket through its watermark,
/// and records the marker with its restore points and snapshots.
pub fn mark(
    ledger: &mut dyn LedgerApi,
    env: &dyn Env,
    key: &SecretKey,
    request: &MarkRequest,
    progress: &mut dyn Progress,
) -> Result<Marked, OpsError> {
    let kind = if request.quiesce.is_some() { Kind::MarkerQuiesced } else { Kind::MarkerPoint };
    ledger.check_signer(key, kind)?;
    let group = Name::parse(&request.group).map_err(OpsError::Usage)?;
    let info = ledger.group_info(&request.group)?;
    let components = &info.definition.components;
    let snapshots: Vec<&str> = request
        .snapshot_files
        .iter()
        .map(|(c, _)| c.as_str())
        .chain(request.snapshot_ids.iter().map(|(c, _)| c.as_str()))
        .collect();
    let dsns = assign_dsns(components, &request.pg_dsns, &snapshots)?;
    let marker_id = request.id.clone().unwrap_or_else(|| default_marker_id(env.now()));
    Name::parse(&marker_id).map_err(|e| OpsError::Usage(format!("marker id {marker_id:?}: {e}")))?;
    // Connect first: nothing is stopped while a connection can still fail.
    let dbs = connect_clusters(&info, &dsns)?;
    let mut buckets = Vec::new();
    for c in components.iter().filter(|c| c.starts_with("s3:")) {
        let spec = BucketSpec {
            path_style: request.s3_path_style,
            credentials: request.s3_credentials.clone(),
            ..BucketSpec::registered(c)
        };
        let b = spec.resolve(info.components.get(c).and_then(|r| r.s3.as_ref()))?;
        let s3 = b.connect()?;
        buckets.push((spec, b, s3));
    }
    let clocked: Vec<Clocked<'_>> =
        buckets.iter().map(|(spec, b, s3)| Clocked { component: &spec.component, s3, bucket: &b.bucket }).collect();
    let mut resume = Resume { cmd: request.quiesce.as_ref().and_then(|q| q.exec_after.clone()) };
    let pinned = match pin(env, request, &marker_id, &dbs, &clocked, &mut resume) {
        Ok(p) => p,
        Err(e) => {
            resume.after_failure(progress);
            return Err(e);
        }
    };
    drop(resume);
    let Pinned { at, stopped_at, resumed_at, restore_point, observed, cut, mut events, mut parts } = pinned;
    // Writers run again; what follows only makes the pinned state durable and visible.
    let mut pg_parts = Vec::new();
    for ((c, db), o) in dbs.iter().zip(&observed) {
        let seg =
            db.switch_and_wait_archived(o.lsn, request.archive_timeout).map_err(|e| failed(format!("{c}: {e}")))?;
        progress
            .note(&format!("{c}: restore point {restore_point:?} at LSN {} ({}); segment {seg} archived", o.lsn, o.at));
        pg_parts.push((c.clone(), restore_point.clone(), seg));
    }
    let mut s3_cuts = Vec::new();
    let mut scans = Vec::new();
    if let Some(cut) = cut {
        for (((spec, _, _), b), (e, ids)) in buckets.iter().zip(&clocked).zip(cut.evidence.into_iter().zip(cut.probes))
        {
            let versions: Vec<(String, String)> =
                ids.into_iter().map(|v| (tidemark_s3::CLOCK_KEY.to_owned(), v)).collect();
            if let Err(err) = b.s3.delete_versions(b.bucket, &versions) {
                progress.note(&format!(
                    "{}: the clock probes were not removed ({err}); they are never recorded",
                    b.component
                ));
            }
            let watermark = e.boundary.saturating_add_micros(-1);
            if e.cut_spread_us() > (info.definition.max_skew_ms as i64).saturating_mul(1000) {
                progress.note(&format!(
                    "{}: WARNING: the cut took longer than the group's max skew of {} ms: this marker will not be restorable",
                    b.component, info.definition.max_skew_ms
                ));
            }
            progress.note(&format!(
                "{}: S3's clock ticked to {} between two probes; PostgreSQL cut within {} ms of it{}",
                b.component,
                e.boundary,
                e.cut_spread_us() / 1000,
                if e.uploads_in_progress.is_empty() {
                    String::new()
                } else {
                    format!("; UPLOADS IN PROGRESS across the cut: {}", e.uploads_in_progress.join(", "))
                }
            ));
            // The scan starts after the tick: every version stamped before it is listed.
            let scan = ScanRequest {
                bucket: spec.clone(),
                prefix: None,
                clock_skew_ms: request.clock_skew_ms,
                proven_through: Some(watermark),
            };
            let scanned = s3_scan::scan(ledger, env, key, &scan, progress)?;
            progress.note(&scanned.to_string());
            scans.push(scanned);
            s3_cuts.push(S3Cut {
                component: spec.component.clone(),
                boundary: e.boundary,
                cut_spread_ms: e.cut_spread_us() / 1000,
                probe_sent_at: e.before.sent_at,
                cut_returned_at: e.cut_returned_at,
                uploads_in_progress: e.uploads_in_progress.clone(),
            });
            parts.push(MarkerPart {
                s3_watermark: Some(watermark),
                s3_clock: Some(e),
                ..MarkerPart::new(component_id(&spec.component)?)
            });
        }
    }
    parts.sort_by(|x, y| x.component.as_str().cmp(y.component.as_str()));
    let marker_name = Name::parse(&marker_id).map_err(OpsError::Usage)?;
    events.push(match (stopped_at, resumed_at) {
        (Some(writers_stopped_at), Some(writers_resumed_at)) => EventBody::MarkerQuiesced(MarkerQuiesced {
            group: group.clone(),
            marker_id: marker_name,
            writers_stopped_at,
            writers_resumed_at,
            components: parts,
        }),
        _ => EventBody::MarkerPoint(MarkerPoint {
            group: group.clone(),
            marker_id: marker_name,
            taken_at: at,
            components: parts,
        }),
    });
    let signed = events.into_iter().map(|b| env.sign(key, b)).collect::<Result<Vec<_>, _>>()?;
    let recorded = ledger.record(signed, env.now())?;
    Ok(Marked {
        marker_id,
        group: request.group.clone(),
        at,
        entry: recorded.last_seq(),
        writers_stopped_at: stopped_at,
        writers_resumed_at: resumed_at,
        s3_cuts,
        scans,
        pg_parts,
    })
}

/// Connects to each cluster and checks it is the one registered.
fn connect_clusters(info: &GroupInfo, dsns: &[(String, String)]) -> Result<Vec<(String, Db)>, OpsError> {
    let mut dbs = Vec::new();
    for (c, dsn) in dsns {
        let db = Db::connect(dsn).map_err(|e| failed(format!("{c}: connecting: {e}")))?;
        let (system, _) = db.identity()?;
        if let Some(registered) = info.components.get(c).and_then(|r| r.postgresql.as_ref())
            && registered.system_identifier != system
        {
            return Err(OpsError::Usage(format!(
                "{c}: the database at that DSN is system {system}, but {c} is registered as {}",
                registered.system_identifier
            )));
        }
        dbs.push((c.clone(), db));
    }
    Ok(dbs)
}

/// Stops the writers (quiesced), cuts every component, resumes the writers.
fn pin(
    env: &dyn Env,
    request: &MarkRequest,
    marker_id: &str,
    dbs: &[(String, Db)],
    clocked: &[Clocked<'_>],
    resume: &mut Resume,
) -> Result<Pinned, OpsError> {
    let stopped_at = match &request.quiesce {
        Some(q) => {
            if let Some(cmd) = &q.exec_before {
                // On failure writers may be half stopped: the caller resumes them.
                sh(cmd, "--exec-before")?;
            }
            Some(env.now())
        }
        None => None,
    };
    let base = format!("tidemark-{}-{marker_id}", request.group);
    // One restore point per cluster; an attempt that S3's clock did not bracket
    // leaves its (harmless, differently named) restore points unrecorded.
    let cut_pg = |attempt: u32| -> Result<(String, Vec<Observed>), OpsError> {
        let name = if attempt == 0 { base.clone() } else { format!("{base}.{attempt}") };
        let observed = dbs
            .iter()
            .map(|(c, db)| db.create_restore_point(&name).map_err(|e| failed(format!("{c}: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((name, observed))
    };
    // With buckets, PostgreSQL is cut while S3's clock is seen ticking.
    let (mut cut, (restore_point, observed)) = if clocked.is_empty() {
        (None, cut_pg(0)?)
    } else {
        let (cut, pg) = mark_cut::cut(env, clocked, &cut_pg)?;
        (Some(cut), pg)
    };
    if let Some(cut) = cut.as_mut() {
        for (b, e) in clocked.iter().zip(cut.evidence.iter_mut()) {
            mark_cut::confirm(b, e)?;
        }
    }
    let mut events = Vec::new();
    let mut parts = Vec::new();
    for ((c, _), o) in dbs.iter().zip(&observed) {
        let component = component_id(c)?;
        events.push(crate::pg::restore_point_event(&component, &restore_point, o));
        parts.push(MarkerPart {
            pg_lsn: Some(o.lsn),
            pg_timeline: Some(o.timeline),
            pg_restore_point: Some(restore_point.clone()),
            ..MarkerPart::new(component)
        });
    }
    let at = observed.iter().map(|o| o.at).min().unwrap_or_else(|| env.now());
    for (c, file) in &request.snapshot_files {
        let (id, body) = snapshot_file_event(c, Some(marker_id), file, "file", env.now())?;
        events.push(body);
        parts.push(MarkerPart { snapshot_id: Some(id), ..MarkerPart::new(component_id(c)?) });
    }
    for (c, id) in &request.snapshot_ids {
        parts.push(MarkerPart { snapshot_id: Some(id.clone()), ..MarkerPart::new(component_id(c)?) });
    }
    let resumed_at = if request.quiesce.is_some() { Some(resume.now(env)?) } else { None };
    Ok(Pinned { at, stopped_at, resumed_at, restore_point, observed, cut, events, parts })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_a_default_marker_id_is_the_utc_second() {
        let t = Timestamp::parse_rfc3339("2026-11-23T10:15:00.123456Z").unwrap();
        assert_eq!(default_marker_id(t), "m-20261123T101500Z");
        assert!(Name::parse(&default_marker_id(t)).is_ok());
    }

    #[test]
    fn rule_every_cluster_has_one_dsn_and_every_snapshot_store_a_snapshot() {
        let group: Vec<String> = ["pg:main", "s3:up", "snap:mq"].map(String::from).to_vec();
        let bare = vec![(None, "host=a".to_owned())];
        assert_eq!(assign_dsns(&group, &bare, &["snap:mq"]).unwrap(), vec![("pg:main".into(), "host=a".into())]);
        let e = assign_dsns(&group, &bare, &[]).unwrap_err();
        assert!(e.to_string().contains("snap:mq: give --snapshot-file"), "{e}");
        let e = assign_dsns(&group, &[], &["snap:mq"]).unwrap_err();
        assert!(e.to_string().contains("pg:main: give --pg-dsn"), "{e}");
        let two: Vec<String> = ["pg:a", "pg:b"].map(String::from).to_vec();
        let e = assign_dsns(&two, &bare, &[]).unwrap_err();
        assert!(e.to_string().contains("several PostgreSQL components"), "{e}");
        let named = vec![(Some("pg:a".to_owned()), "x".to_owned()), (Some("pg:a".to_owned()), "y".to_owned())];
        assert!(assign_dsns(&two, &named, &[]).unwrap_err().to_string().contains("more than one DSN"));
        let foreign = vec![(Some("pg:c".to_owned()), "x".to_owned())];
        assert!(assign_dsns(&two, &foreign, &[]).unwrap_err().to_string().contains("not a PostgreSQL component"));
    }
}
