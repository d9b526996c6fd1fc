//! `tidemark restore` (carry out a group plan, verify each part, record
//! `restore.performed`) and `tidemark drill` (the same into scratch
//! locations, then checks, `drill.completed`, clean-up).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use serde_json::{Value, json};
use tidemark_agents::pg_process::{self, PgProcess};
use tidemark_core::event::{
    ComponentOutcome, DrillCheck, DrillCompleted, DrillResult, EventBody, Outcome, RestorePerformed,
};
use tidemark_core::{ComponentId, Digest32, Name};
use tidemark_lineage::group_plan::PlanRequest;
use tidemark_lineage::pg_plan::{PlanOptions, conf_quote};
use tidemark_lineage::s3::ManifestLine;

use crate::exit::{self, coded};
use crate::pg_cmds::{Signer, Source};
use crate::{Global, group_cmds, s3_cmds, util};

/// How restored PostgreSQL clusters are started to replay and verify.
#[derive(Args, Clone)]
pub struct PgRun {
    /// Directory of the PostgreSQL server binaries (pg_ctl, pg_verifybackup).
    #[arg(long, env = "TIDEMARK_PG_BIN", default_value = "/usr/lib/postgresql/15/bin")]
    pg_bin: PathBuf,
    /// Run the restored server as this user (PostgreSQL refuses to run as root); the data directory is given to it.
    #[arg(long)]
    pg_run_as: Option<String>,
    /// The restored cluster's superuser, to confirm recovery ended.
    #[arg(long, default_value = "postgres")]
    pg_user: String,
    /// Port for the restored server (default: a free one).
    #[arg(long)]
    pg_port: Option<u16>,
    /// Leave `archive_mode` as the backup has it (default: off, so a restored copy never archives into the source's archive).
    #[arg(long)]
    keep_archive_mode: bool,
    /// How long replay may take.
    #[arg(long, default_value = "600s", value_parser = group_cmds::parse_duration_ms)]
    recovery_timeout: u64,
}

/// How a plan's parts are carried out (restore and drill alike).
#[derive(Args)]
pub struct How {
    /// Path-style S3 addressing (MinIO, moto, other non-AWS endpoints).
    #[arg(long)]
    s3_path_style: bool,
    /// S3 copies in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// What to do when a target bucket already holds objects (default: refuse that part, nothing changed in it).
    #[arg(long, value_enum, default_value_t = util::ExistingObjects::Refuse)]
    existing_objects: util::ExistingObjects,
    #[command(flatten)]
    pg: PgRun,
}

#[derive(Args)]
pub struct RestoreArgs {
    /// The plan file (`tidemark plan --group … --out FILE`).
    #[arg(long)]
    plan: PathBuf,
    /// Print the recorded `restore.performed` (with its entry) as one JSON object.
    #[arg(long)]
    json: bool,
    /// Empty or new data directory for the PostgreSQL part (with several clusters: one subdirectory each).
    #[arg(long)]
    pg_data: Option<PathBuf>,
    /// Each bucket is restored into BUCKET + SUFFIX (created, versioned, when absent), e.g. -restored.
    #[arg(long, allow_hyphen_values = true)]
    s3_target_bucket_suffix: Option<String>,
    /// Snapshot files are restored under DIR/NAME/.
    #[arg(long)]
    snapshot_dir: Option<PathBuf>,
    #[command(flatten)]
    how: How,
    /// An operator key: signs `restore.performed`.
    #[command(flatten)]
    signer: Signer,
    /// Leave the restored PostgreSQL running (default: stopped cleanly once verified).
    #[arg(long)]
    keep_running: bool,
}

#[derive(Args)]
pub struct DrillArgs {
    #[arg(long)]
    group: String,
    /// Print the recorded `drill.completed` (with its entry) as one JSON object.
    #[arg(long)]
    json: bool,
    /// A marker id.
    #[arg(long, conflicts_with = "at", required_unless_present = "at")]
    point: Option<String>,
    /// A correlated time (RFC 3339).
    #[arg(long)]
    at: Option<String>,
    /// A check: a shell command run with the restored endpoints in its environment
    /// (TIDEMARK_PG_DSN, PGHOST, PGPORT, PGUSER, TIDEMARK_S3_BUCKET, TIDEMARK_S3_ENDPOINT, TIDEMARK_SNAPSHOT_DIR, …); repeatable.
    #[arg(long = "check", required = true)]
    checks: Vec<String>,
    /// Where scratch data directories and snapshot copies go (default: a new temporary directory).
    #[arg(long)]
    scratch: Option<PathBuf>,
    #[command(flatten)]
    how: How,
    /// Signs `drill.completed`.
    #[command(flatten)]
    signer: Signer,
    /// Leave the scratch data, server and buckets in place (default: everything is removed).
    #[arg(long)]
    keep: bool,
}

/// Checks a plan file's digests (the plan's and each PostgreSQL part's).
pub fn read_plan(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let plan: Value =
        serde_json::from_str(&text).map_err(|e| coded(exit::USAGE, format!("{}: not JSON: {e}", path.display())))?;
    if plan["format"] != tidemark_lineage::group_plan::FORMAT {
        return Err(coded(exit::USAGE, format!("{}: not a group plan (format {})", path.display(), plan["format"])));
    }
    check_digest(&plan, "the plan")?;
    for c in plan["components"].as_array().into_iter().flatten() {
        if c["kind"] == "postgresql" {
            check_digest(&c["plan"], &format!("the {} part", c["component"]))?;
        }
    }
    Ok(plan)
}

fn check_digest(v: &Value, what: &str) -> anyhow::Result<()> {
    let mut body = v.clone();
    let stated = body.as_object_mut().and_then(|m| m.remove("digest")).and_then(|d| d.as_str().map(str::to_owned));
    let bytes =
        tidemark_core::canonical::to_canonical_vec(&body).map_err(|e| coded(exit::USAGE, format!("{what}: {e}")))?;
    let found = Digest32::blake3_of(&bytes).to_string();
    match stated {
        Some(d) if d == found => Ok(()),
        Some(d) => Err(coded(
            exit::VERIFY_FAILED,
            format!("{what} was changed after it was computed: its digest says {d}, its content hashes to {found}"),
        )),
        None => Err(coded(exit::USAGE, format!("{what} has no digest"))),
    }
}

/// Where each component goes.
struct Targets {
    pg_data: Option<PathBuf>,
    bucket_suffix: Option<String>,
    snapshot_dir: Option<PathBuf>,
    s3_path_style: bool,
    concurrency: usize,
    existing: tidemark_s3::Existing,
    keep_running: bool,
    /// No progress bars.
    quiet: bool,
}

/// A restored PostgreSQL server left running.
struct Running {
    data: PathBuf,
    port: u16,
}

#[derive(Default)]
struct Executed {
    /// (component, outcome, detail)
    outcomes: Vec<(String, Outcome, String)>,
    env: BTreeMap<String, String>,
    running: Vec<Running>,
    buckets: Vec<(String, Option<String>, String)>,
}

impl PgRun {
    /// The server binaries and the user to run them as.
    fn process(&self) -> PgProcess {
        PgProcess { bin: self.pg_bin.clone(), run_as: self.pg_run_as.clone() }
    }
}

fn run_ok(c: &mut Command, what: &str) -> anyhow::Result<String> {
    let out = c.output().with_context(|| format!("running {what}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(anyhow::anyhow!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The PostgreSQL part: verify the backup against the ledger, copy it,
/// write the recovery settings, start the server and wait until it has
/// replayed to the target and promoted.
fn restore_pg(
    global: &Global,
    part: &Value,
    data: &Path,
    pg: &PgRun,
    keep_running: bool,
) -> anyhow::Result<(String, Option<Running>)> {
    let plan = &part["plan"];
    let backup = &plan["base_backup"];
    let location = PathBuf::from(backup["location"].as_str().unwrap_or(""));
    if data.exists() && std::fs::read_dir(data)?.next().is_some() {
        return Err(anyhow::anyhow!("{} is not empty: restore into a new or empty directory", data.display()));
    }
    // The backup must still be the one the ledger recorded, file for file.
    let found = tidemark_agents::pg_files::read_backup_dir(&location)?;
    if let Some(expected) = backup["blake3"].as_str()
        && found.blake3.to_string() != expected
    {
        return Err(anyhow::anyhow!(
            "base backup {} at {} differs from the ledger's record (blake3 {} vs {expected})",
            s(&backup["backup_id"]),
            location.display(),
            found.blake3
        ));
    }
    std::fs::create_dir_all(data)?;
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
    let settings = plan["recovery_settings"].as_object().cloned().unwrap_or_default();
    for (k, v) in &settings {
        conf += &format!("{k} = {}\n", conf_quote(v.as_str().unwrap_or("")));
    }
    if !pg.keep_archive_mode {
        conf += "archive_mode = 'off'\n";
    }
    let mut f = std::fs::OpenOptions::new().append(true).create(true).open(data.join("postgresql.auto.conf"))?;
    std::io::Write::write_all(&mut f, conf.as_bytes())?;
    std::fs::write(data.join("recovery.signal"), b"")?;
    std::fs::set_permissions(data, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    let process = pg.process();
    process.give(data)?;
    let port = match pg.pg_port {
        Some(p) => p,
        None => free_port()?,
    };
    let log = data.join("tidemark-restore.log");
    let mut env = vec![("TIDEMARK_LEDGER", global.ledger.clone())];
    if let Some(t) = &global.token {
        env.push(("TIDEMARK_TOKEN", t.clone()));
    }
    let options = format!("-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''");
    process.start(data, &log, &options, &env, Duration::from_secs(120))?;
    let dsn = format!("host=127.0.0.1 port={port} user={} dbname=postgres", pg.pg_user);
    let promoted = match pg_process::wait_promoted(&dsn, data, &log, Duration::from_millis(pg.recovery_timeout)) {
        Ok(d) => d,
        Err(e) => {
            process.stop(data);
            return Err(e.into());
        }
    };
    let detail = format!(
        "base backup {} + {} WAL segments replayed to LSN {} on timeline {}, promoted ({:.1} s) in {}",
        s(&backup["backup_id"]),
        plan["wal_segments"].as_array().map_or(0, Vec::len),
        s(&plan["target_lsn"]),
        plan["timeline"],
        promoted.as_secs_f64(),
        data.display()
    );
    if keep_running {
        Ok((detail, Some(Running { data: data.to_path_buf(), port })))
    } else {
        process.stop(data);
        Ok((detail, None))
    }
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}

fn name_of(component: &str) -> &str {
    component.split_once(':').map_or(component, |(_, n)| n)
}

fn env_name(component: &str) -> String {
    name_of(component).to_uppercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect()
}

fn restore_s3(part: &Value, t: &Targets) -> anyhow::Result<(String, String, Option<String>)> {
    let suffix = t.bucket_suffix.as_deref().ok_or_else(|| anyhow::anyhow!("give --s3-target-bucket-suffix"))?;
    let bucket = s(&part["bucket"]);
    let target = format!("{bucket}{suffix}");
    let endpoint = s(&part["endpoint"]);
    let url = s3_cmds::endpoint_url(endpoint);
    let s3 = tidemark_s3::S3::connect(&tidemark_s3::Endpoint {
        url: url.clone(),
        region: s(&part["region"]).to_owned(),
        path_style: s3_cmds::path_style(endpoint, t.s3_path_style),
        static_credentials: None,
    })?;
    let lines: Vec<ManifestLine> = part["manifest"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| -> anyhow::Result<ManifestLine> {
            let key = s(&l["key"]).to_owned();
            Ok(match l["action"].as_str() {
                Some("restore") => ManifestLine::Restore {
                    key,
                    version_id: s(&l["version_id"]).to_owned(),
                    etag: l["etag"].as_str().map(str::to_owned),
                    size_bytes: l["size_bytes"].as_u64().unwrap_or(0),
                    last_modified: util::parse_time(s(&l["last_modified"])).map_err(anyhow::Error::msg)?,
                },
                Some("remove") => ManifestLine::Remove { key },
                other => anyhow::bail!("manifest line with action {other:?} in a plan"),
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let total = lines.len();
    let created = s3.ensure_bucket(&target)?;
    let progress = std::sync::Mutex::new(crate::progress::Progress::new("restored", "keys", None, t.quiet));
    let report = s3.restore(bucket, &target, lines, t.concurrency, t.existing, &|done, total| {
        let mut p = progress.lock().expect("progress lock");
        p.set_total(total);
        p.set(done);
    })?;
    progress.into_inner().expect("progress lock").finish();
    if !report.failed.is_empty() {
        let shown: Vec<String> = report.failed.iter().take(5).map(|(k, e)| format!("{k}: {e}")).collect();
        anyhow::bail!("{} of {total} keys failed into {target}: {report}; {}", report.failed.len(), shown.join("; "));
    }
    Ok((
        format!("{report} into {target}{} (as of {})", if created { " (created)" } else { "" }, s(&part["at"])),
        target,
        url,
    ))
}

fn restore_snapshot(part: &Value, t: &Targets) -> anyhow::Result<(String, PathBuf)> {
    let dir = t.snapshot_dir.as_ref().ok_or_else(|| anyhow::anyhow!("give --snapshot-dir"))?;
    let snap = &part["snapshot"];
    let component = s(&part["component"]);
    let location = s(&snap["location"]);
    let expected = snap["blake3"].as_str().and_then(|b| Digest32::parse(b).ok()).ok_or_else(|| {
        anyhow::anyhow!("snapshot {} has no recorded blake3: it cannot be verified", s(&snap["snapshot_id"]))
    })?;
    let target_dir = dir.join(name_of(component));
    std::fs::create_dir_all(&target_dir)?;
    let file_name = Path::new(location).file_name().map(|n| n.to_os_string()).unwrap_or_else(|| "snapshot".into());
    let dest = target_dir.join(file_name);
    match tidemark_agents::restore::fetch_verified(s(&snap["snapshot_id"]), location, expected, &dest)? {
        Ok(()) => Ok((
            format!(
                "snapshot {} copied to {} and verified (blake3 {expected})",
                s(&snap["snapshot_id"]),
                dest.display()
            ),
            target_dir,
        )),
        Err(refused) => Err(anyhow::anyhow!("{refused}")),
    }
}

/// Carries out every part of a plan, each verified; never stops at the first failure.
fn execute(global: &Global, plan: &Value, t: &Targets, pg: &PgRun) -> Executed {
    let mut ex = Executed::default();
    let parts = plan["components"].as_array().cloned().unwrap_or_default();
    let pg_count = parts.iter().filter(|p| p["kind"] == "postgresql").count();
    for part in &parts {
        let component = s(&part["component"]).to_owned();
        let started = Instant::now();
        let result: anyhow::Result<String> = match part["kind"].as_str() {
            Some("postgresql") => match &t.pg_data {
                None => Err(anyhow::anyhow!("give --pg-data")),
                Some(dir) => {
                    let data = if pg_count > 1 { dir.join(name_of(&component)) } else { dir.clone() };
                    restore_pg(global, part, &data, pg, t.keep_running).map(|(detail, running)| {
                        if let Some(r) = running {
                            let dsn = format!("host=127.0.0.1 port={} user={} dbname=postgres", r.port, pg.pg_user);
                            ex.env.insert(format!("TIDEMARK_PG_{}_DSN", env_name(&component)), dsn.clone());
                            if pg_count == 1 {
                                ex.env.insert("TIDEMARK_PG_DSN".into(), dsn);
                                ex.env.insert("PGHOST".into(), "127.0.0.1".into());
                                ex.env.insert("PGPORT".into(), r.port.to_string());
                                ex.env.insert("PGUSER".into(), pg.pg_user.clone());
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
            Some("s3") => restore_s3(part, t).map(|(detail, bucket, url)| {
                ex.env.insert(format!("TIDEMARK_S3_{}_BUCKET", env_name(&component)), bucket.clone());
                if parts.iter().filter(|p| p["kind"] == "s3").count() == 1 {
                    ex.env.insert("TIDEMARK_S3_BUCKET".into(), bucket.clone());
                }
                if let Some(u) = &url {
                    ex.env.insert("TIDEMARK_S3_ENDPOINT".into(), u.clone());
                }
                ex.buckets.push((component.clone(), url, bucket));
                detail
            }),
            Some("snapshot") => restore_snapshot(part, t).map(|(detail, dir)| {
                ex.env.insert(format!("TIDEMARK_SNAPSHOT_{}_DIR", env_name(&component)), dir.display().to_string());
                detail
            }),
            other => Err(anyhow::anyhow!("unknown part kind {other:?}")),
        };
        match result {
            Ok(detail) => {
                eprintln!("{component}: restored in {:.1} s: {detail}", started.elapsed().as_secs_f64());
                ex.outcomes.push((component, Outcome::Succeeded, detail));
            }
            Err(e) => {
                eprintln!("{component}: FAILED: {e:#}");
                ex.outcomes.push((component, Outcome::Failed, format!("{e:#}")));
            }
        }
    }
    if let Some(d) = &t.snapshot_dir {
        ex.env.insert("TIDEMARK_SNAPSHOT_DIR".into(), d.display().to_string());
    }
    ex
}

/// Rule: a restore succeeded only when every part did; failed when none did; else partial.
fn overall(outcomes: &[(String, Outcome, String)]) -> Outcome {
    let ok = outcomes.iter().filter(|o| o.1 == Outcome::Succeeded).count();
    match ok {
        n if n == outcomes.len() => Outcome::Succeeded,
        0 => Outcome::Failed,
        _ => Outcome::Partial,
    }
}

fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Succeeded => "succeeded",
        Outcome::Failed => "failed",
        Outcome::Partial => "partial",
    }
}

fn plan_digest(plan: &Value) -> anyhow::Result<Digest32> {
    Digest32::parse(s(&plan["digest"])).map_err(|e| coded(exit::USAGE, format!("the plan's digest: {e}")))
}

fn clip(s: &str) -> String {
    s.chars().take(900).collect()
}

/// The plan must come from this ledger's history: the ledger's tree at the
/// plan's checkpoint size has the plan's root (a plan from another ledger,
/// or from a history since rewritten, is refused).
fn check_plan_checkpoint(global: &Global, plan: &Value) -> anyhow::Result<()> {
    let cp = &plan["computed_at_checkpoint"];
    let size = cp["tree_size"].as_u64().ok_or_else(|| coded(exit::USAGE, "the plan has no checkpoint size"))?;
    let doc = match Source::open(global)? {
        Source::Local(l) => l.consistency_proof_document(size, None)?,
        Source::Remote(c) => c.consistency_proof(size, None).map_err(crate::remote::client_err)?,
    };
    if cp["root_hash"].as_str() != Some(doc.root1.as_str()) {
        return Err(coded(
            exit::VERIFY_FAILED,
            format!(
                "the plan was computed at a checkpoint (size {size}, root {}) that is not in this ledger's history (its tree at {size} has root {}): a plan from another ledger, or a rewritten history; nothing was restored",
                s(&cp["root_hash"]),
                doc.root1
            ),
        ));
    }
    eprintln!("plan checkpoint {size} is in this ledger's history (now {} entries)", doc.size2);
    Ok(())
}

pub fn restore(global: &Global, a: RestoreArgs) -> anyhow::Result<ExitCode> {
    let key = a.signer.key()?;
    Source::open(global)?.check_signer(&key, tidemark_core::Kind::RestorePerformed)?;
    let plan = read_plan(&a.plan)?;
    check_plan_checkpoint(global, &plan)?;
    let started = Instant::now();
    let targets = Targets {
        quiet: global.quiet,
        pg_data: a.pg_data.clone(),
        bucket_suffix: a.s3_target_bucket_suffix.clone(),
        snapshot_dir: a.snapshot_dir.clone(),
        s3_path_style: a.how.s3_path_style,
        concurrency: a.how.concurrency,
        existing: a.how.existing_objects.into(),
        keep_running: a.keep_running,
    };
    let ex = execute(global, &plan, &targets, &a.how.pg);
    let outcome = overall(&ex.outcomes);
    let mut environment = Vec::new();
    if let Some(d) = &a.pg_data {
        environment.push(format!("pg-data {}", d.display()));
    }
    if let Some(x) = &a.s3_target_bucket_suffix {
        environment.push(format!("buckets +{x}"));
    }
    if let Some(d) = &a.snapshot_dir {
        environment.push(format!("snapshots {}", d.display()));
    }
    let components = ex
        .outcomes
        .iter()
        .map(|(c, o, d)| {
            Ok(ComponentOutcome {
                component: ComponentId::parse(c).map_err(|e| coded(exit::USAGE, e))?,
                outcome: *o,
                detail: Some(clip(d)).filter(|d| !d.is_empty()),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let body = EventBody::RestorePerformed(RestorePerformed {
        target: s(&plan["group"]).to_owned(),
        recovery_point: s(&plan["recovery_point"]["id"]).to_owned(),
        plan_digest: plan_digest(&plan)?,
        target_environment: if environment.is_empty() { "none".to_owned() } else { environment.join(", ") },
        outcome,
        components,
        duration_ms: started.elapsed().as_millis() as u64,
    });
    let shown = body.to_value();
    let seq = crate::pg_cmds::record_events(global, &key, vec![body])?;
    let body = shown;
    let outcome = outcome_name(outcome);
    if a.json {
        util::print_json(&json!({"entry": seq[0], "restore": body}));
    } else {
        println!(
            "restore of {} {} ({}): {outcome} in {:.1} s; recorded as entry {}",
            s(&plan["group"]),
            s(&plan["recovery_point"]["id"]),
            s(&plan["digest"]),
            started.elapsed().as_secs_f64(),
            seq[0]
        );
    }
    if outcome == "succeeded" {
        Ok(exit::ok())
    } else {
        Err(coded(exit::FAILURE, format!("restore {outcome}: see the per-component lines above")))
    }
}

pub fn drill(global: &Global, a: DrillArgs) -> anyhow::Result<ExitCode> {
    let key = a.signer.key()?;
    Source::open(global)?.check_signer(&key, tidemark_core::Kind::DrillCompleted)?;
    let request = match (&a.point, &a.at) {
        (Some(p), None) => PlanRequest::Marker(p.clone()),
        (None, Some(t)) => PlanRequest::Time(util::parse_time(t).map_err(|e| coded(exit::USAGE, e))?),
        _ => return Err(coded(exit::USAGE, "give exactly one of --point MARKER or --at TIME")),
    };
    let options =
        PlanOptions { restore_command: group_cmds::default_restore_command(global)?, use_recovery_target_time: false };
    let plan = match group_cmds::group_plan(&Source::open(global)?, &a.group, &request, &options)? {
        Ok(p) => p,
        Err(reasons) => return Err(coded(exit::NOT_RESTORABLE, format!("not restorable: {}", reasons.join("; ")))),
    };
    let mut temp = None;
    let scratch = match &a.scratch {
        Some(d) => d.clone(),
        None => {
            let t = tempfile::Builder::new().prefix("tidemark-drill-").tempdir()?;
            let p = t.path().to_path_buf();
            temp = Some(t);
            p
        }
    };
    if let Some(user) = &a.how.pg.pg_run_as {
        // The scratch directory itself must be reachable by the server's user.
        run_ok(Command::new("chown").arg(format!("{user}:")).arg(&scratch), "chown")?;
    }
    let plan_path = scratch.join("plan.json");
    util::write_file_atomic(&plan_path, (serde_json::to_string_pretty(&plan)? + "\n").as_bytes())?;
    let tag = hex8(&plan["digest"]);
    let targets = Targets {
        quiet: global.quiet,
        pg_data: Some(scratch.join("pg")),
        bucket_suffix: Some(format!("-drill-{tag}")),
        snapshot_dir: Some(scratch.join("snapshots")),
        s3_path_style: a.how.s3_path_style,
        concurrency: a.how.concurrency,
        // Scratch buckets named after the plan: a leftover of an earlier kept drill is made to match T.
        existing: tidemark_s3::Existing::Remove,
        keep_running: true,
    };
    let started = Instant::now();
    let ex = execute(global, &plan, &targets, &a.how.pg);
    let restored = overall(&ex.outcomes) == Outcome::Succeeded;
    let mut checks = vec![DrillCheck {
        command: format!("tidemark restore (plan {})", s(&plan["digest"])),
        exit_code: if restored { 0 } else { 1 },
        passed: restored,
    }];
    for cmd in &a.checks {
        let code = if restored {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(cmd)
                .envs(&ex.env)
                .env("TIDEMARK_PLAN", &plan_path)
                .env("TIDEMARK_DRILL_GROUP", &a.group)
                .env("TIDEMARK_DRILL_POINT", s(&plan["recovery_point"]["id"]));
            match c.status() {
                Ok(st) => st.code().unwrap_or(128),
                Err(e) => {
                    eprintln!("check `{cmd}`: cannot run: {e}");
                    127
                }
            }
        } else {
            // Not run: the restore itself failed.
            -1
        };
        eprintln!(
            "check `{cmd}`: {}",
            match code {
                0 => "passed".to_owned(),
                -1 => "not run (restore failed)".to_owned(),
                c => format!("FAILED (exit {c})"),
            }
        );
        checks.push(DrillCheck { command: cmd.clone(), exit_code: code, passed: code == 0 });
    }
    let passed = checks.iter().all(|c| c.passed);
    // Clean up before recording: the scratch servers and buckets are gone either way.
    if !a.keep {
        for r in &ex.running {
            a.how.pg.process().stop(&r.data);
        }
        for (component, url, bucket) in &ex.buckets {
            let part =
                plan["components"].as_array().into_iter().flatten().find(|p| p["component"] == component.as_str());
            let region = part.map(|p| s(&p["region"]).to_owned()).unwrap_or_else(|| "us-east-1".into());
            let removed = tidemark_s3::S3::connect(&tidemark_s3::Endpoint {
                url: url.clone(),
                region,
                // A URL is a non-AWS endpoint (`s3_cmds::path_style`).
                path_style: a.how.s3_path_style || url.is_some(),
                static_credentials: None,
            })
            .map_err(anyhow::Error::from)
            .and_then(|s3| Ok(s3.remove_bucket(bucket)?));
            if let Err(e) = removed {
                eprintln!("clean-up: could not remove drill bucket {bucket}: {e:#}");
            }
        }
        for sub in ["pg", "snapshots"] {
            let _ = std::fs::remove_dir_all(scratch.join(sub));
        }
    }
    if a.keep {
        // Left for inspection: the temporary directory outlives the command.
        if let Some(t) = temp.take() {
            eprintln!("drill scratch kept in {}", t.keep().display());
        }
    }
    let body = EventBody::DrillCompleted(DrillCompleted {
        group: Name::parse(&a.group).map_err(|e| coded(exit::USAGE, e))?,
        recovery_point: s(&plan["recovery_point"]["id"]).to_owned(),
        plan_digest: plan_digest(&plan)?,
        checks,
        result: if passed { DrillResult::Passed } else { DrillResult::Failed },
        duration_ms: started.elapsed().as_millis() as u64,
    });
    let shown = body.to_value();
    let seq = crate::pg_cmds::record_events(global, &key, vec![body])?;
    let body = shown;
    if a.json {
        util::print_json(&json!({"entry": seq[0], "drill": body}));
    } else {
        println!(
            "drill of {} {}: {} in {:.1} s; recorded as entry {}",
            a.group,
            s(&plan["recovery_point"]["id"]),
            if passed { "passed" } else { "FAILED" },
            started.elapsed().as_secs_f64(),
            seq[0]
        );
    }
    if passed { Ok(exit::ok()) } else { Err(coded(exit::FAILURE, "drill failed (recorded)")) }
}

fn hex8(digest: &Value) -> String {
    s(digest).chars().take(8).collect::<String>().to_lowercase()
}
