//! Carrying out a group plan: every component restored and verified —
//! PostgreSQL from its base backup with verified WAL replay, S3 by verified
//! server-side copies, snapshots by verified copies — then
//! `restore.performed`; and drills: the same into scratch locations, checks
//! run against the restored endpoints, `drill.completed`, clean-up.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tidemark_agents::pg_process::{self, PgProcess};
use tidemark_core::event::{
    ComponentOutcome, DrillCheck, DrillCompleted, DrillResult, EventBody, Outcome, RestorePerformed,
};
use tidemark_core::{ComponentId, Kind, Name, SecretKey};
use tidemark_lineage::group::Snapshot;
use tidemark_lineage::group_plan::{ComponentPlan, FORMAT, GroupPlan, S3Part};
use tidemark_lineage::pg_plan::{Plan, conf_quote};
use tidemark_lineage::s3::ManifestLine;

use crate::s3_scan::{endpoint_url, path_style};
use crate::{Env, LedgerApi, OpsError, Progress};

/// How restored PostgreSQL clusters are started to replay and verify.
#[derive(Debug, Clone)]
pub struct PgRestore {
    pub process: PgProcess,
    /// The restored cluster's superuser, to confirm recovery ended.
    pub user: String,
    /// Port for the restored server (none: a free one).
    pub port: Option<u16>,
    /// Leave `archive_mode` as the backup has it (else off, so a restored copy never archives into the source's archive).
    pub keep_archive_mode: bool,
    pub recovery_timeout: Duration,
    /// What the restored server's `restore_command` (`tidemark pg restore-wal`) needs: the ledger and a token.
    pub restore_env: Vec<(String, String)>,
}

/// Where each component goes and how.
#[derive(Debug, Clone)]
pub struct Targets {
    /// Data directory for the PostgreSQL part (with several clusters: one subdirectory each).
    pub pg_data: Option<PathBuf>,
    /// Each bucket is restored into BUCKET + SUFFIX.
    pub bucket_suffix: Option<String>,
    /// Snapshot files go under DIR/NAME/.
    pub snapshot_dir: Option<PathBuf>,
    pub s3_path_style: bool,
    /// Where the buckets' credentials come from.
    pub s3_credentials: tidemark_s3::Credentials,
    pub concurrency: usize,
    pub existing: tidemark_s3::Existing,
    /// Leave restored PostgreSQL servers running.
    pub keep_running: bool,
}

/// A restored PostgreSQL server left running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    pub data: PathBuf,
    pub port: u16,
}

/// What carrying out a plan did.
#[derive(Debug, Default)]
pub struct Executed {
    /// (component, outcome, detail), in plan order.
    pub outcomes: Vec<(String, Outcome, String)>,
    /// The restored endpoints, as checks see them (`TIDEMARK_PG_DSN`, `TIDEMARK_S3_BUCKET`, …).
    pub env: BTreeMap<String, String>,
    pub running: Vec<Running>,
    /// (component, endpoint URL, bucket) of every bucket restored into.
    pub buckets: Vec<(String, Option<String>, String)>,
}

/// Rule: a restore succeeded only when every part did; failed when none did; else partial.
pub fn overall(outcomes: &[(String, Outcome, String)]) -> Outcome {
    let ok = outcomes.iter().filter(|o| o.1 == Outcome::Succeeded).count();
    match ok {
        n if n == outcomes.len() => Outcome::Succeeded,
        0 => Outcome::Failed,
        _ => Outcome::Partial,
    }
}

pub fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Succeeded => "succeeded",
        Outcome::Failed => "failed",
        Outcome::Partial => "partial",
    }
}

fn failed(msg: impl Into<String>) -> OpsError {
    OpsError::Failed(msg.into())
}

fn name_of(component: &str) -> &str {
    component.split_once(':').map_or(component, |(_, n)| n)
}

fn env_name(component: &str) -> String {
    name_of(component).to_uppercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect()
}

fn io(what: &str) -> impl Fn(std::io::Error) -> OpsError + '_ {
    move |e| failed(format!("{what}: {e}"))
}

fn run_ok(c: &mut Command, what: &str) -> Result<(), OpsError> {
    let out = c.output().map_err(|e| failed(format!("running {what}: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    Err(failed(format!(
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )))
}

fn free_port() -> Result<u16, OpsError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(io("a free port"))?;
    Ok(l.local_addr().map_err(io("a free port"))?.port())
}

/// Rule: a plan file is what was computed — a group plan of this format
/// whose digests (the plan's and each PostgreSQL part's) hold.
pub fn check_plan_digests(plan: &GroupPlan) -> Result<(), OpsError> {
    if plan.body.format != FORMAT {
        return Err(OpsError::Usage(format!("not a group plan (format {:?}, expected {FORMAT})", plan.body.format)));
    }
    plan.check_digests().map_err(|e| OpsError::Tampered(e.to_string()))
}

/// Rule: the plan must come from this ledger's history — the ledger's tree
/// at the plan's checkpoint size has the plan's root (a plan from another
/// ledger, or from a history since rewritten, is refused). Returns the
/// ledger's size now.
pub fn check_plan_checkpoint(ledger: &dyn LedgerApi, plan: &GroupPlan) -> Result<u64, OpsError> {
    let cp = &plan.body.computed_at_checkpoint;
    let size = cp.tree_size;
    let doc = ledger.consistency_proof(size, None)?;
    if cp.root_hash != doc.root1 {
        return Err(OpsError::Tampered(format!(
            "the plan was computed at a checkpoint (size {size}, root {}) that is not in this ledger's history (its tree at {size} has root {}): a plan from another ledger, or a rewritten history; nothing was restored",
            cp.root_hash, doc.root1
        )));
    }
    Ok(doc.size2)
}

/// The PostgreSQL part: verify the backup against the ledger, copy it,
/// write the recovery settings, start the server and wait until it has
/// replayed to the target and promoted.
fn restore_pg(
    component: &str,
    plan: &Plan,
    data: &Path,
    pg: &PgRestore,
    keep_running: bool,
    progress: &Mutex<&mut dyn Progress>,
) -> Result<(String, Option<Running>), OpsError> {
    let plan = &plan.body;
    let backup = &plan.base_backup;
    let location = PathBuf::from(&backup.location);
    if data.exists() && std::fs::read_dir(data).map_err(io("the data directory"))?.next().is_some() {
        return Err(OpsError::Usage(format!("{} is not empty: restore into a new or empty directory", data.display())));
    }
    // The backup must still be the one the ledger recorded, file for file.
    let found = tidemark_agents::pg_files::read_backup_dir(&location)?;
    if let Some(expected) = backup.blake3
        && found.blake3 != expected
    {
        return Err(failed(format!(
            "base backup {} at {} differs from the ledger's record (blake3 {} vs {expected})",
            backup.backup_id,
            location.display(),
            found.blake3
        )));
    }
    std::fs::create_dir_all(data).map_err(io("creating the data directory"))?;
    if found.tar_format {
        run_ok(Command::new("tar").arg("-xf").arg(location.join("base.tar")).arg("-C").arg(data), "tar")?;
        if location.join("pg_wal.tar").exists() {
            run_ok(
                Command::new("tar").arg("-xf").arg(location.join("pg_wal.tar")).arg("-C").arg(data.join("pg_wal")),
                "tar",
            )?;
        }
    } else {
        run_ok(Command::new("cp").arg("-a").arg(location.join(".")).arg(data), "cp")?;
    }
    for stale in ["postmaster.pid", "standby.signal", "backup_manifest"] {
        let _ = std::fs::remove_file(data.join(stale));
    }
    let mut conf = String::from("\n# tidemark restore: plan settings\n");
    for (k, v) in &plan.recovery_settings {
        conf += &format!("{k} = {}\n", conf_quote(v));
    }
    if !pg.keep_archive_mode {
        conf += "archive_mode = 'off'\n";
    }
    let auto = data.join("postgresql.auto.conf");
    let mut f =
        std::fs::OpenOptions::new().append(true).create(true).open(&auto).map_err(io("postgresql.auto.conf"))?;
    std::io::Write::write_all(&mut f, conf.as_bytes()).map_err(io("postgresql.auto.conf"))?;
    std::fs::write(data.join("recovery.signal"), b"").map_err(io("recovery.signal"))?;
    std::fs::set_permissions(data, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .map_err(io("the data directory's mode"))?;
    pg.process.give(data)?;
    let port = match pg.port {
        Some(p) => p,
        None => free_port()?,
    };
    let log = data.join("tidemark-restore.log");
    let env: Vec<(&str, String)> = pg.restore_env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    let options = format!("-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''");
    pg.process.start(data, &log, &options, &env, Duration::from_secs(120))?;
    let dsn = format!("host=127.0.0.1 port={port} user={} dbname=postgres", pg.user);
    // Replay progress in WAL bytes, from the backup's start to the target.
    let start = backup.start_lsn.0;
    let total = plan.target_lsn.0.saturating_sub(start);
    progress.lock().expect("progress lock").begin(&format!("{component}: WAL bytes replayed"), Some(total));
    let mut replayed = |lsn: tidemark_core::Lsn| {
        progress.lock().expect("progress lock").advance(lsn.0.saturating_sub(start).min(total));
    };
    let promoted = match pg_process::wait_promoted(&dsn, data, &log, pg.recovery_timeout, &mut replayed) {
        Ok(d) => d,
        Err(e) => {
            pg.process.stop(data);
            return Err(e.into());
        }
    };
    let detail = format!(
        "base backup {} + {} WAL segments replayed to LSN {} on timeline {}, promoted ({:.1} s) in {}",
        backup.backup_id,
        plan.wal_segments.len(),
        plan.target_lsn,
        plan.timeline,
        promoted.as_secs_f64(),
        data.display()
    );
    if keep_running {
        Ok((detail, Some(Running { data: data.to_path_buf(), port })))
    } else {
        pg.process.stop(data);
        Ok((detail, None))
    }
}

fn restore_s3(
    part: &S3Part,
    t: &Targets,
    progress: &Mutex<&mut dyn Progress>,
) -> Result<(String, String, Option<String>), OpsError> {
    let suffix = t.bucket_suffix.as_deref().ok_or_else(|| OpsError::Usage("give a target bucket suffix".into()))?;
    let target = format!("{}{suffix}", part.bucket);
    let url = endpoint_url(&part.endpoint);
    let s3 = tidemark_s3::S3::connect(&tidemark_s3::Endpoint {
        url: url.clone(),
        region: part.region.clone(),
        path_style: path_style(&part.endpoint, t.s3_path_style),
        credentials: t.s3_credentials.clone(),
    })?;
    if let Some(ManifestLine::Problem { key, .. }) =
        part.manifest.iter().find(|l| matches!(l, ManifestLine::Problem { .. }))
    {
        return Err(OpsError::Usage(format!("the plan's manifest has a key that cannot be reconstructed: {key}")));
    }
    let lines = part.manifest.clone();
    let total = lines.len();
    let created = s3.ensure_bucket(&target)?;
    progress.lock().expect("progress lock").begin(&format!("{}: restored keys", part.component), Some(total as u64));
    let report = s3.restore(&part.bucket, &target, lines, t.concurrency, t.existing, &|done, _| {
        progress.lock().expect("progress lock").advance(done);
    })?;
    if !report.failed.is_empty() {
        let shown: Vec<String> = report.failed.iter().take(5).map(|(k, e)| format!("{k}: {e}")).collect();
        return Err(failed(format!(
            "{} of {total} keys failed into {target}: {report}; {}",
            report.failed.len(),
            shown.join("; ")
        )));
    }
    Ok((format!("{report} into {target}{} (as of {})", if created { " (created)" } else { "" }, part.at), target, url))
}

fn restore_snapshot(component: &str, snap: &Snapshot, t: &Targets) -> Result<(String, PathBuf), OpsError> {
    let dir = t.snapshot_dir.as_ref().ok_or_else(|| OpsError::Usage("give a snapshot directory".into()))?;
    let expected = snap.blake3.ok_or_else(|| {
        failed(format!("snapshot {} has no recorded blake3: it cannot be verified", snap.snapshot_id))
    })?;
    let target_dir = dir.join(name_of(component));
    std::fs::create_dir_all(&target_dir).map_err(io("the snapshot directory"))?;
    let file_name =
        Path::new(&snap.location).file_name().map(|n| n.to_os_string()).unwrap_or_else(|| "snapshot".into());
    let dest = target_dir.join(file_name);
    match tidemark_agents::restore::fetch_verified(&snap.snapshot_id, &snap.location, expected, &dest)? {
        Ok(()) => Ok((
            format!("snapshot {} copied to {} and verified (blake3 {expected})", snap.snapshot_id, dest.display()),
            target_dir,
        )),
        Err(refused) => Err(failed(refused.to_string())),
    }
}

/// Carries out every part of a plan, each verified; never stops at the
/// first failure. Each part's result goes to `progress` as a note.
pub fn execute(plan: &GroupPlan, t: &Targets, pg: &PgRestore, progress: &mut dyn Progress) -> Executed {
    let mut ex = Executed::default();
    let parts = &plan.body.components;
    let pg_count = parts.iter().filter(|p| matches!(p, ComponentPlan::Postgresql { .. })).count();
    let s3_count = parts.iter().filter(|p| matches!(p, ComponentPlan::S3(_))).count();
    let progress = Mutex::new(progress);
    for part in parts {
        let component = part_component(part).to_owned();
        let started = Instant::now();
        let result: Result<String, OpsError> = match part {
            ComponentPlan::Postgresql { plan, .. } => match &t.pg_data {
                None => Err(OpsError::Usage("give a PostgreSQL data directory".into())),
                Some(dir) => {
                    let data = if pg_count > 1 { dir.join(name_of(&component)) } else { dir.clone() };
                    progress.lock().expect("progress lock").note(&format!(
                        "{component}: restoring base backup {} and replaying {} WAL segments into {}",
                        plan.body.base_backup.backup_id,
                        plan.body.wal_segments.len(),
                        data.display()
                    ));
                    restore_pg(&component, plan, &data, pg, t.keep_running, &progress).map(|(detail, running)| {
                        if let Some(r) = running {
                            let dsn = format!("host=127.0.0.1 port={} user={} dbname=postgres", r.port, pg.user);
                            ex.env.insert(format!("TIDEMARK_PG_{}_DSN", env_name(&component)), dsn.clone());
                            if pg_count == 1 {
                                ex.env.insert("TIDEMARK_PG_DSN".into(), dsn);
                                ex.env.insert("PGHOST".into(), "127.0.0.1".into());
                                ex.env.insert("PGPORT".into(), r.port.to_string());
                                ex.env.insert("PGUSER".into(), pg.user.clone());
                                ex.env.insert("PGDATABASE".into(), "postgres".into());
                            }
                            ex.env.insert(
                                format!("TIDEMARK_PG_{}_DATA", env_name(&component)),
                                r.data.display().to_string(),
                            );
                            ex.running.push(r);
                        }
                        detail
                    })
                }
            },
            ComponentPlan::S3(part) => restore_s3(part, t, &progress).map(|(detail, bucket, url)| {
                ex.env.insert(format!("TIDEMARK_S3_{}_BUCKET", env_name(&component)), bucket.clone());
                if s3_count == 1 {
                    ex.env.insert("TIDEMARK_S3_BUCKET".into(), bucket.clone());
                }
                if let Some(u) = &url {
                    ex.env.insert("TIDEMARK_S3_ENDPOINT".into(), u.clone());
                }
                ex.buckets.push((component.clone(), url, bucket));
                detail
            }),
            ComponentPlan::Snapshot { snapshot, .. } => {
                restore_snapshot(&component, snapshot, t).map(|(detail, dir)| {
                    ex.env.insert(format!("TIDEMARK_SNAPSHOT_{}_DIR", env_name(&component)), dir.display().to_string());
                    detail
                })
            }
        };
        let mut p = progress.lock().expect("progress lock");
        match result {
            Ok(detail) => {
                p.note(&format!("{component}: restored in {:.1} s: {detail}", started.elapsed().as_secs_f64()));
                ex.outcomes.push((component, Outcome::Succeeded, detail));
            }
            Err(e) => {
                p.note(&format!("{component}: FAILED: {e}"));
                ex.outcomes.push((component, Outcome::Failed, e.to_string()));
            }
        }
    }
    if let Some(d) = &t.snapshot_dir {
        ex.env.insert("TIDEMARK_SNAPSHOT_DIR".into(), d.display().to_string());
    }
    ex
}

fn clip(s: &str) -> String {
    s.chars().take(900).collect()
}

fn part_component(part: &ComponentPlan) -> &str {
    match part {
        ComponentPlan::Postgresql { component, .. } | ComponentPlan::Snapshot { component, .. } => component,
        ComponentPlan::S3(p) => &p.component,
    }
}

/// What a restore did and recorded.
#[derive(Debug)]
pub struct Restored {
    pub outcome: Outcome,
    pub executed: Executed,
    /// The `restore.performed` body as recorded.
    pub recorded: EventBody,
    /// Its entry (none when it went to the spool).
    pub entry: Option<u64>,
    pub seconds: f64,
}

/// `tidemark restore`: the signer may record restores, the plan is intact
/// and from this ledger's history, every part is restored and verified,
/// and `restore.performed` says exactly what happened (per component).
#[allow(clippy::too_many_arguments)]
pub fn restore(
    ledger: &mut dyn LedgerApi,
    env: &dyn Env,
    key: &SecretKey,
    plan: &GroupPlan,
    targets: &Targets,
    pg: &PgRestore,
    environment: &str,
    progress: &mut dyn Progress,
) -> Result<Restored, OpsError> {
    ledger.check_signer(key, Kind::RestorePerformed)?;
    check_plan_digests(plan)?;
    let now_size = check_plan_checkpoint(ledger, plan)?;
    progress.note(&format!(
        "plan checkpoint {} is in this ledger's history (now {now_size} entries)",
        plan.body.computed_at_checkpoint.tree_size
    ));
    let started = Instant::now();
    let executed = execute(plan, targets, pg, progress);
    let outcome = overall(&executed.outcomes);
    let components = executed
        .outcomes
        .iter()
        .map(|(c, o, d)| {
            Ok(ComponentOutcome {
                component: ComponentId::parse(c).map_err(OpsError::Usage)?,
                outcome: *o,
                detail: Some(clip(d)).filter(|d| !d.is_empty()),
            })
        })
        .collect::<Result<Vec<_>, OpsError>>()?;
    let body = EventBody::RestorePerformed(RestorePerformed {
        target: plan.body.group.clone(),
        recovery_point: plan.body.recovery_point.id.clone(),
        plan_digest: plan.digest,
        target_environment: if environment.is_empty() { "none".to_owned() } else { environment.to_owned() },
        outcome,
        components,
        duration_ms: started.elapsed().as_millis() as u64,
    });
    let recorded = ledger.record(vec![env.sign(key, body.clone())?], env.now())?;
    Ok(Restored {
        outcome,
        executed,
        recorded: body,
        entry: recorded.last_seq(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Where a drill restores to and what it checks.
#[derive(Debug, Clone)]
pub struct DrillPlan {
    pub group: String,
    /// Shell commands run with the restored endpoints in their environment.
    pub checks: Vec<String>,
    /// Scratch root: `pg/`, `snapshots/` and `plan.json` go under it.
    pub scratch: PathBuf,
    pub s3_path_style: bool,
    /// Where the buckets' credentials come from.
    pub s3_credentials: tidemark_s3::Credentials,
    pub concurrency: usize,
    /// Leave the scratch data, servers and buckets in place.
    pub keep: bool,
    /// The restore time the application must meet: checked, and recorded as a check.
    pub rto_target: Option<Duration>,
    /// Events recorded in the same batch as `drill.completed` (a scheduled
    /// test's `restore_test.selected`), so both are in the ledger or neither.
    pub also_record: Vec<EventBody>,
}

/// What a drill did and recorded.
#[derive(Debug)]
pub struct Drilled {
    pub passed: bool,
    /// How long restoring every part took (the measured RTO), before the checks.
    pub restore_seconds: f64,
    pub recorded: EventBody,
    pub entry: Option<u64>,
    pub seconds: f64,
}

/// A drill of `plan` (a group plan of this ledger): restored into scratch
/// locations named after the plan, the checks run (only when the restore
/// succeeded), everything removed unless kept, and `drill.completed`
/// recorded with each check's exit code.
pub fn drill(
    ledger: &mut dyn LedgerApi,
    env: &dyn Env,
    key: &SecretKey,
    plan: &GroupPlan,
    d: &DrillPlan,
    pg: &PgRestore,
    progress: &mut dyn Progress,
) -> Result<Drilled, OpsError> {
    ledger.check_signer(key, Kind::DrillCompleted)?;
    let group = Name::parse(&d.group).map_err(OpsError::Usage)?;
    // The scratch directory itself must be reachable by the server's user.
    if let Some(user) = &pg.process.run_as {
        run_ok(Command::new("chown").arg(format!("{user}:")).arg(&d.scratch), "chown")?;
    }
    let plan_path = d.scratch.join("plan.json");
    let text = serde_json::to_string_pretty(plan).map_err(|e| failed(e.to_string()))? + "\n";
    std::fs::write(&plan_path, text).map_err(io("writing the drill's plan"))?;
    let tag: String = plan.digest.to_string().chars().take(8).collect::<String>().to_lowercase();
    let targets = Targets {
        pg_data: Some(d.scratch.join("pg")),
        bucket_suffix: Some(format!("-drill-{tag}")),
        snapshot_dir: Some(d.scratch.join("snapshots")),
        s3_path_style: d.s3_path_style,
        s3_credentials: d.s3_credentials.clone(),
        concurrency: d.concurrency,
        // Scratch buckets named after the plan: a leftover of an earlier kept drill is made to match T.
        existing: tidemark_s3::Existing::Remove,
        keep_running: true,
    };
    let started = Instant::now();
    let ex = execute(plan, &targets, pg, progress);
    let restore_time = started.elapsed();
    let restored = overall(&ex.outcomes) == Outcome::Succeeded;
    let mut checks = vec![DrillCheck {
        command: format!("tidemark restore (plan {})", plan.digest),
        exit_code: if restored { 0 } else { 1 },
        passed: restored,
    }];
    if let Some(target) = d.rto_target {
        let met = restored && restore_time <= target;
        checks.push(DrillCheck {
            command: format!(
                "restore time {:.1} s within the target of {} s",
                restore_time.as_secs_f64(),
                target.as_secs_f64()
            ),
            exit_code: if met { 0 } else { 1 },
            passed: met,
        });
    }
    for cmd in &d.checks {
        let code = if restored {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(cmd)
                .envs(&ex.env)
                .env("TIDEMARK_PLAN", &plan_path)
                .env("TIDEMARK_DRILL_GROUP", &d.group)
                .env("TIDEMARK_DRILL_POINT", &plan.body.recovery_point.id);
            match c.status() {
                Ok(st) => st.code().unwrap_or(128),
                Err(e) => {
                    progress.note(&format!("check `{cmd}`: cannot run: {e}"));
                    127
                }
            }
        } else {
            // Not run: the restore itself failed.
            -1
        };
        progress.note(&format!(
            "check `{cmd}`: {}",
            match code {
                0 => "passed".to_owned(),
                -1 => "not run (restore failed)".to_owned(),
                c => format!("FAILED (exit {c})"),
            }
        ));
        checks.push(DrillCheck { command: cmd.clone(), exit_code: code, passed: code == 0 });
    }
    let passed = checks.iter().all(|c| c.passed);
    // Clean up before recording: the scratch servers and buckets are gone either way.
    if !d.keep {
        for r in &ex.running {
            pg.process.stop(&r.data);
        }
        for (component, url, bucket) in &ex.buckets {
            let region = plan
                .body
                .components
                .iter()
                .find_map(|p| match p {
                    ComponentPlan::S3(p) if p.component == *component => Some(p.region.clone()),
                    _ => None,
                })
                .unwrap_or_else(|| "us-east-1".into());
            let removed = tidemark_s3::S3::connect(&tidemark_s3::Endpoint {
                url: url.clone(),
                region,
                // A URL is a non-AWS endpoint (`path_style`).
                path_style: d.s3_path_style || url.is_some(),
                credentials: d.s3_credentials.clone(),
            })
            .and_then(|s3| s3.remove_bucket(bucket));
            if let Err(e) = removed {
                progress.note(&format!("clean-up: could not remove drill bucket {bucket}: {e}"));
            }
        }
        for sub in ["pg", "snapshots"] {
            let _ = std::fs::remove_dir_all(d.scratch.join(sub));
        }
    }
    let body = EventBody::DrillCompleted(DrillCompleted {
        group,
        recovery_point: plan.body.recovery_point.id.clone(),
        plan_digest: plan.digest,
        checks,
        result: if passed { DrillResult::Passed } else { DrillResult::Failed },
        duration_ms: started.elapsed().as_millis() as u64,
    });
    let mut events = d.also_record.iter().map(|b| env.sign(key, b.clone())).collect::<Result<Vec<_>, _>>()?;
    events.push(env.sign(key, body.clone())?);
    let recorded = ledger.record(events, env.now())?;
    Ok(Drilled {
        passed,
        recorded: body,
        entry: recorded.last_seq(),
        seconds: started.elapsed().as_secs_f64(),
        restore_seconds: restore_time.as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restore_succeeded_only_when_every_part_did() {
        let o = |x: Outcome| ("pg:main".to_owned(), x, String::new());
        assert_eq!(overall(&[o(Outcome::Succeeded), o(Outcome::Succeeded)]), Outcome::Succeeded);
        assert_eq!(overall(&[o(Outcome::Succeeded), o(Outcome::Failed)]), Outcome::Partial);
        assert_eq!(overall(&[o(Outcome::Failed), o(Outcome::Failed)]), Outcome::Failed);
    }

    #[test]
    fn a_plan_of_another_format_or_changed_is_refused() {
        let t = tidemark_core::Timestamp::from_unix_seconds(1_790_000_000);
        let def = tidemark_lineage::group::GroupDef {
            name: "app".into(),
            components: vec![],
            max_skew_ms: 0,
            defined_at: t,
            seq: 1,
        };
        let point = tidemark_lineage::group_plan::PointRef {
            id: "m-1".into(),
            class: tidemark_lineage::group::Class::Quiesced,
            at: t,
        };
        let cp = tidemark_lineage::pg_plan::CheckpointRef { origin: "o".into(), tree_size: 1, root_hash: "r".into() };
        let plan = tidemark_lineage::group_plan::assemble(&def, point, vec![], cp, vec![]);
        assert!(check_plan_digests(&plan).is_ok());
        let mut changed = plan.clone();
        changed.body.group = "other".into();
        assert!(matches!(check_plan_digests(&changed), Err(OpsError::Tampered(_))));
        let mut other = plan;
        other.body.format = "tidemark-group-plan-v0".into();
        assert!(matches!(check_plan_digests(&other), Err(OpsError::Usage(_))));
    }
}
