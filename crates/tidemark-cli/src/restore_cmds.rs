//! `tidemark restore` (carry out a group plan, verify each part, record
//! `restore.performed`) and `tidemark drill` (the same into scratch
//! locations, then checks, `drill.completed`, clean-up).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use serde_json::json;
use tidemark_agents::pg_process::PgProcess;
use tidemark_core::event::Outcome;
use tidemark_lineage::group_plan::{GroupPlan, PlanRequest};
use tidemark_lineage::pg_plan::PlanOptions;
use tidemark_ops::OpsError;
use tidemark_ops::restore::{DrillPlan, PgRestore, Targets};

use crate::exit::{self, coded};
use crate::pg_cmds::Signer;
use crate::progress::Progress;
use crate::{Global, group_cmds, util};

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
    /// The restore time the application must meet (e.g. 10m): recorded as a check that fails when exceeded.
    #[arg(long, value_parser = group_cmds::parse_duration_ms)]
    rto_target: Option<u64>,
}

impl PgRun {
    /// The server binaries and the user to run them as.
    fn process(&self) -> PgProcess {
        PgProcess { bin: self.pg_bin.clone(), run_as: self.pg_run_as.clone() }
    }

    /// How `tidemark_ops::restore` starts restored clusters; their
    /// `restore_command` reaches this ledger (and its token).
    fn to_ops(&self, global: &Global) -> PgRestore {
        let mut restore_env = vec![("TIDEMARK_LEDGER".to_owned(), global.ledger.clone())];
        if let Some(t) = &global.token {
            restore_env.push(("TIDEMARK_TOKEN".to_owned(), t.clone()));
        }
        PgRestore {
            process: self.process(),
            user: self.pg_user.clone(),
            port: self.pg_port,
            keep_archive_mode: self.keep_archive_mode,
            recovery_timeout: Duration::from_millis(self.recovery_timeout),
            restore_env,
        }
    }
}

/// Reads a plan file and checks its digests (the plan's and each PostgreSQL part's).
pub fn read_plan(path: &Path) -> anyhow::Result<GroupPlan> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let plan: GroupPlan = serde_json::from_str(&text)
        .map_err(|e| coded(exit::USAGE, format!("{}: not a group plan: {e}", path.display())))?;
    tidemark_ops::restore::check_plan_digests(&plan).map_err(|e| {
        let code = if matches!(e, OpsError::Tampered(_)) { exit::VERIFY_FAILED } else { exit::USAGE };
        coded(code, format!("{}: {e}", path.display()))
    })?;
    Ok(plan)
}

pub fn restore(global: &Global, a: RestoreArgs) -> anyhow::Result<ExitCode> {
    let key = a.signer.key()?;
    let plan = read_plan(&a.plan)?;
    let targets = Targets {
        pg_data: a.pg_data.clone(),
        bucket_suffix: a.s3_target_bucket_suffix.clone(),
        snapshot_dir: a.snapshot_dir.clone(),
        s3_path_style: a.how.s3_path_style,
        s3_credentials: tidemark_s3::Credentials::Chain,
        concurrency: a.how.concurrency,
        existing: a.how.existing_objects.into(),
        keep_running: a.keep_running,
    };
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
    let mut ledger = util::open_api(global)?;
    let mut progress = Progress::new("restored", "keys", None, global.quiet);
    let done = tidemark_ops::restore::restore(
        ledger.as_mut(),
        &util::SystemEnv,
        &key,
        &plan,
        &targets,
        &a.how.pg.to_ops(global),
        &environment.join(", "),
        &mut progress,
    )
    .map_err(exit::ops_err)?;
    progress.finish();
    let outcome = tidemark_ops::restore::outcome_name(done.outcome);
    if a.json {
        util::print_json(&json!({"entry": done.entry, "restore": done.recorded.to_value()}));
    } else {
        println!(
            "restore of {} {} ({}): {outcome} in {:.1} s; recorded as entry {}",
            plan.body.group,
            plan.body.recovery_point.id,
            plan.digest,
            done.seconds,
            done.entry.map_or("(spooled)".to_owned(), |e| e.to_string())
        );
    }
    if done.outcome == Outcome::Succeeded {
        Ok(exit::ok())
    } else {
        Err(coded(exit::FAILURE, format!("restore {outcome}: see the per-component lines above")))
    }
}

pub fn drill(global: &Global, a: DrillArgs) -> anyhow::Result<ExitCode> {
    let key = a.signer.key()?;
    // The signer is checked by `tidemark_ops::restore::drill` before anything is restored.
    let request = match (&a.point, &a.at) {
        (Some(p), None) => PlanRequest::Marker(p.clone()),
        (None, Some(t)) => PlanRequest::Time(util::parse_time(t).map_err(|e| coded(exit::USAGE, e))?),
        _ => return Err(coded(exit::USAGE, "give exactly one of --point MARKER or --at TIME")),
    };
    let options =
        PlanOptions { restore_command: group_cmds::default_restore_command(global)?, use_recovery_target_time: false };
    let plan = match util::open_api(global)?.group_plan(&a.group, &request, &options).map_err(exit::ops_err)? {
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
    let d = DrillPlan {
        group: a.group.clone(),
        checks: a.checks.clone(),
        scratch,
        s3_path_style: a.how.s3_path_style,
        s3_credentials: tidemark_s3::Credentials::Chain,
        concurrency: a.how.concurrency,
        keep: a.keep,
        rto_target: a.rto_target.map(Duration::from_millis),
        also_record: Vec::new(),
    };
    let mut ledger = util::open_api(global)?;
    let mut progress = Progress::new("restored", "keys", None, global.quiet);
    let done = tidemark_ops::restore::drill(
        ledger.as_mut(),
        &util::SystemEnv,
        &key,
        &plan,
        &d,
        &a.how.pg.to_ops(global),
        &mut progress,
    )
    .map_err(exit::ops_err)?;
    progress.finish();
    if a.keep {
        // Left for inspection: the temporary directory outlives the command.
        if let Some(t) = temp.take() {
            eprintln!("drill scratch kept in {}", t.keep().display());
        }
    }
    if a.json {
        util::print_json(&json!({"entry": done.entry, "drill": done.recorded.to_value()}));
    } else {
        println!(
            "drill of {} {}: {} in {:.1} s; recorded as entry {}",
            a.group,
            plan.body.recovery_point.id,
            if done.passed { "passed" } else { "FAILED" },
            done.seconds,
            done.entry.map_or("(spooled)".to_owned(), |e| e.to_string())
        );
    }
    if done.passed { Ok(exit::ok()) } else { Err(coded(exit::FAILURE, "drill failed (recorded)")) }
}
