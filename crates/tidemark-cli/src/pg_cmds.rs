//! The PostgreSQL agents (`tidemark pg …`) and the recovery questions
//! (`tidemark recovery-points`, `tidemark plan`), over a local ledger or a server.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use tidemark_agents::pg_files::{self, ArchivedKind};
use tidemark_agents::{pg_db, pgbackrest, restore};
use tidemark_core::ComponentId;
use tidemark_core::event::{ComponentRegistered, EventBody, PostgresqlIdentity};
use tidemark_core::{Draft, SecretKey, SignedEvent};

use crate::exit::{self, coded};
use crate::{Global, ledger_cmds, util};

#[derive(Args, Clone)]
pub struct Cluster {
    /// Cluster name: the component is pg:NAME.
    #[arg(long)]
    cluster: String,
}

impl Cluster {
    fn component(&self) -> String {
        format!("pg:{}", self.cluster)
    }
}

#[derive(Args, Clone)]
pub struct Signer {
    /// Key that signs what this command records (an agent key; `register` needs an admin key).
    #[arg(long, env = "TIDEMARK_SIGNER")]
    signer: PathBuf,
}

impl Signer {
    pub fn key(&self) -> anyhow::Result<SecretKey> {
        util::read_key(&self.signer)
    }
}

/// An agent that talks to the database.
#[derive(Args, Clone)]
pub struct DbAgent {
    #[command(flatten)]
    cluster: Cluster,
    #[command(flatten)]
    signer: Signer,
    /// libpq-style connection string or URL.
    #[arg(long, env = "TIDEMARK_PG_DSN")]
    dsn: String,
}

#[derive(Subcommand)]
pub enum PgCommand {
    /// Record the cluster's identity (system identifier, WAL segment size) read from the database. Admin key.
    Register {
        #[command(flatten)]
        agent: DbAgent,
        /// Print what was recorded as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// For archive_command, after the file is archived: record it (segment, history file).
    ArchiveHook(ArchiveHookArgs),
    /// After pg_basebackup: read backup_label and backup_manifest, digest the files, record the backup.
    RecordBackup(RecordBackupArgs),
    /// Record every backup of an existing pgBackRest catalog (`pgbackrest info --output=json`).
    ImportPgbackrest(ImportArgs),
    /// Record the position (LSN, timeline, database clock) every interval until stopped.
    Watch(WatchArgs),
    /// Create a restore point with pg_create_restore_point and record it.
    RestorePoint {
        #[command(flatten)]
        agent: DbAgent,
        name: String,
        /// Print what was recorded as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Re-read every archived file at its recorded location and record what was found.
    CheckArchive(CheckArchiveArgs),
    /// For restore_command: fetch %f from its recorded location to %p, only if its blake3 matches the ledger.
    RestoreWal {
        #[command(flatten)]
        cluster: Cluster,
        /// %f: the file PostgreSQL asks for.
        file: String,
        /// %p: where PostgreSQL wants it.
        dest: PathBuf,
    },
}

#[derive(Args)]
pub struct ArchiveHookArgs {
    #[command(flatten)]
    cluster: Cluster,
    #[command(flatten)]
    signer: Signer,
    /// Where the file was archived (/archive/%f); its name is the archived file's name.
    #[arg(long)]
    location: PathBuf,
    /// %p: the file in pg_wal. When given, the archived copy must be byte-identical to it.
    source: Option<PathBuf>,
    /// Print what was recorded as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct RecordBackupArgs {
    #[command(flatten)]
    cluster: Cluster,
    #[command(flatten)]
    signer: Signer,
    /// The pg_basebackup output directory (plain or tar format).
    #[arg(long)]
    dir: PathBuf,
    /// Where the backup is kept, as recorded (default: DIR, absolute).
    #[arg(long)]
    location: Option<String>,
    /// The WAL archive directory holding the backup history file (default: beside the archived start segment).
    #[arg(long)]
    archive: Option<PathBuf>,
    /// How long to wait for the backup history file to be archived.
    #[arg(long, default_value_t = 15)]
    wait_secs: u64,
    /// Print what was recorded as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ImportArgs {
    #[command(flatten)]
    cluster: Cluster,
    #[command(flatten)]
    signer: Signer,
    #[arg(long)]
    stanza: Option<String>,
    /// Read the catalog from this file (- for stdin) instead of running `pgbackrest info --output=json`.
    #[arg(long)]
    info_json: Option<String>,
    /// pgBackRest configuration file for `pgbackrest info`.
    #[arg(long)]
    pgbackrest_config: Option<PathBuf>,
    /// Print what was imported and skipped as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct WatchArgs {
    #[command(flatten)]
    agent: DbAgent,
    /// Seconds between positions.
    #[arg(long, default_value_t = 10.0)]
    interval_secs: f64,
    /// Stop after this many positions (default: until SIGTERM or SIGINT).
    #[arg(long)]
    count: Option<u64>,
    /// One JSON object per recorded position on stdout (NDJSON).
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct CheckArchiveArgs {
    #[command(flatten)]
    cluster: Cluster,
    #[command(flatten)]
    signer: Signer,
    #[arg(long)]
    json: bool,
}

pub fn run(global: &Global, c: PgCommand) -> anyhow::Result<ExitCode> {
    match c {
        PgCommand::Register { agent: a, json } => {
            let db = pg_db::Db::connect(&a.dsn)?;
            let (sysid, size) = db.identity()?;
            let component = a.cluster.component();
            let body = EventBody::ComponentRegistered(ComponentRegistered {
                component: ComponentId::parse(&component).map_err(|e| coded(exit::USAGE, e))?,
                postgresql: Some(PostgresqlIdentity { system_identifier: sysid.clone(), wal_segment_size_bytes: size }),
                s3: None,
                snapshot: None,
            });
            let shown = body.to_value();
            let seq = record_events(global, &a.signer.key()?, vec![body])?;
            util::print_recorded(json, seq[0], &shown, || {
                format!("registered {component} (system identifier {sysid}, {size}-byte segments) as entry {}", seq[0])
            });
            Ok(exit::ok())
        }
        PgCommand::ArchiveHook(a) => archive_hook(global, a),
        PgCommand::RecordBackup(a) => record_backup(global, a),
        PgCommand::ImportPgbackrest(a) => import_pgbackrest(global, a),
        PgCommand::Watch(a) => watch(global, a),
        PgCommand::RestorePoint { agent, name, json } => {
            let key = agent.signer.key()?;
            let db = pg_db::Db::connect(&agent.dsn)?;
            let o = db.create_restore_point(&name)?;
            let component = ComponentId::parse(&agent.cluster.component()).map_err(|e| coded(exit::USAGE, e))?;
            let body = tidemark_ops::pg::restore_point_event(&component, &name, &o);
            let shown = body.to_value();
            let seq = record_events(global, &key, vec![body])?;
            util::print_recorded(json, seq[0], &shown, || {
                format!("restore point {name:?} at {} on timeline {} ({}), entry {}", o.lsn, o.timeline, o.at, seq[0])
            });
            Ok(exit::ok())
        }
        PgCommand::CheckArchive(a) => check_archive(global, a),
        PgCommand::RestoreWal { cluster, file, dest } => restore_wal(global, &cluster.component(), &file, &dest),
    }
}

/// Signs typed event bodies and appends them (through the server and spool when `--ledger` is a URL).
pub fn record_events(global: &Global, key: &SecretKey, bodies: Vec<EventBody>) -> anyhow::Result<Vec<u64>> {
    let events: Vec<SignedEvent> = bodies
        .into_iter()
        .map(|b| util::signed_event(key, b).map_err(|e| coded(exit::REFUSED, e)))
        .collect::<anyhow::Result<_>>()?;
    Ok(ledger_cmds::append_signed(global, events)?.iter().map(|a| a.seq).collect())
}

/// Signs drafts (typed bodies with their own ids and times) and appends
/// them (through the server and spool when `--ledger` is a URL).
pub fn record(global: &Global, key: &SecretKey, drafts: Vec<Draft>) -> anyhow::Result<Vec<u64>> {
    let events: Vec<SignedEvent> =
        drafts.into_iter().map(|d| d.sign(key).map_err(|e| coded(exit::REFUSED, e))).collect::<anyhow::Result<_>>()?;
    Ok(ledger_cmds::append_signed(global, events)?.iter().map(|a| a.seq).collect())
}

fn archive_hook(global: &Global, a: ArchiveHookArgs) -> anyhow::Result<ExitCode> {
    let component = a.cluster.component();
    let file_name = a
        .location
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| coded(exit::USAGE, "--location must end in the archived file's name (/archive/%f)"))?
        .to_owned();
    let kind = pg_files::classify(&file_name).ok_or_else(|| {
        coded(
            exit::USAGE,
            format!("{file_name:?} is not a file PostgreSQL archives (segment, .history, .backup, .partial)"),
        )
    })?;
    let digests = pg_files::digest_file(&a.location)?;
    if let Some(src) = &a.source {
        let original = pg_files::digest_file(src)?;
        if original.blake3 != digests.blake3 {
            return Err(coded(
                exit::FAILURE,
                format!(
                    "the archived copy {} differs from {} (blake3 {} vs {}): archiving failed; PostgreSQL will retry",
                    a.location.display(),
                    src.display(),
                    digests.blake3,
                    original.blake3
                ),
            ));
        }
    }
    let modified = pg_files::modified_micros(a.source.as_deref().unwrap_or(&a.location))?;
    let history_text = match kind {
        ArchivedKind::History { .. } => Some(std::fs::read_to_string(&a.location).context("reading the history file")?),
        ArchivedKind::BackupHistory => {
            // Read by `pg record-backup` for the backup's stop time; nothing to record on its own.
            let text = std::fs::read_to_string(&a.location).context("reading the backup history file")?;
            if pg_files::parse_backup_label(&text).stop_lsn.is_none() {
                eprintln!("tidemark: {file_name}: no STOP WAL LOCATION; `pg record-backup` will not use it");
            }
            None
        }
        _ => None,
    };
    let location = std::path::absolute(&a.location).unwrap_or(a.location.clone());
    let draft = pg_files::archived_file_draft(
        &component,
        &file_name,
        &location.to_string_lossy(),
        &digests,
        modified,
        history_text.as_deref(),
    )?;
    let entry = match draft {
        Some(draft) => record(global, &a.signer.key()?, vec![draft])?.first().copied(),
        None => None,
    };
    if a.json {
        util::print_json(&serde_json::json!({"file": file_name, "recorded": entry.is_some(), "entry": entry}));
    }
    Ok(exit::ok())
}

fn find_backup_history(
    dir: &Path,
    start_segment: &str,
    start_lsn: tidemark_core::Lsn,
) -> Option<pg_files::BackupLabel> {
    let entries = std::fs::read_dir(dir).ok()?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with(start_segment) && name.ends_with(".backup") {
            let label = pg_files::parse_backup_label(&std::fs::read_to_string(e.path()).ok()?);
            if label.start_lsn == Some(start_lsn) && label.stop_lsn.is_some() {
                return Some(label);
            }
        }
    }
    None
}

fn record_backup(global: &Global, a: RecordBackupArgs) -> anyhow::Result<ExitCode> {
    let component = a.cluster.component();
    let key = a.signer.key()?;
    let backup = pg_files::read_backup_dir(&a.dir)?;
    let start_lsn =
        backup.label.start_lsn.ok_or_else(|| coded(exit::USAGE, "backup_label has no START WAL LOCATION"))?;
    let start_segment = backup.label.start_segment.clone().unwrap_or_default();
    // The backup history file is archived once the backup ends, next to its
    // start segment: wait for both to show up.
    let deadline = Instant::now() + Duration::from_secs(a.wait_secs);
    let (history, archive_dir) = loop {
        let archive_dir = match &a.archive {
            Some(d) => Some(d.clone()),
            None => util::open_api(global)?
                .pg_file(&component, &start_segment)
                .map_err(exit::ops_err)?
                .and_then(|f| PathBuf::from(f.location).parent().map(Path::to_path_buf)),
        };
        let found = archive_dir.as_deref().and_then(|d| find_backup_history(d, &start_segment, start_lsn));
        if found.is_some() || Instant::now() >= deadline {
            break (found, archive_dir);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if history.is_none() {
        eprintln!(
            "tidemark: no archived backup history file for {start_segment} found{}; stop LSN from backup_manifest, stop time from its modification time",
            archive_dir.map(|d| format!(" in {}", d.display())).unwrap_or_default()
        );
    }
    let manifest_modified =
        tidemark_core::Timestamp::from_micros(pg_files::modified_micros(&a.dir.join("backup_manifest"))?);
    let location = a
        .location
        .clone()
        .unwrap_or_else(|| std::path::absolute(&a.dir).unwrap_or(a.dir.clone()).to_string_lossy().to_string());
    let segment_size = util::open_api(global)?
        .pg_report(&component)
        .map_or(tidemark_lineage::pg::DEFAULT_SEGMENT_SIZE_BYTES, |r| r.wal_segment_size_bytes);
    let draft =
        pg_files::base_backup_draft(&component, &backup, &location, history.as_ref(), manifest_modified, segment_size)?;
    let EventBody::PgBaseBackup(b) = draft.body.clone() else {
        unreachable!("base_backup_draft builds a pg.base_backup")
    };
    let seq = record(global, &key, vec![draft])?;
    if a.json {
        util::print_recorded(true, seq[0], &b, String::new);
        return Ok(exit::ok());
    }
    println!(
        "recorded base backup {} (timeline {}, {} → {}, {} bytes, blake3 {}) as entry {}",
        b.backup_id,
        b.timeline,
        b.start_lsn,
        b.stop_lsn,
        b.size_bytes,
        b.blake3.map_or("-".to_owned(), |d| d.to_string()),
        seq[0]
    );
    Ok(exit::ok())
}

fn import_pgbackrest(global: &Global, a: ImportArgs) -> anyhow::Result<ExitCode> {
    let text = match a.info_json.as_deref() {
        Some("-") => std::io::read_to_string(std::io::stdin()).context("reading stdin")?,
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?,
        None => {
            let mut cmd = std::process::Command::new("pgbackrest");
            if let Some(c) = &a.pgbackrest_config {
                cmd.arg(format!("--config={}", c.display()));
            }
            if let Some(s) = &a.stanza {
                cmd.arg(format!("--stanza={s}"));
            }
            let out = cmd
                .args(["info", "--output=json"])
                .output()
                .context("running `pgbackrest info` (is pgBackRest installed?)")?;
            if !out.status.success() {
                return Err(coded(
                    exit::FAILURE,
                    format!("pgbackrest info failed: {}", String::from_utf8_lossy(&out.stderr).trim()),
                ));
            }
            String::from_utf8(out.stdout).context("pgbackrest info printed non-UTF-8")?
        }
    };
    let import = pgbackrest::import_info(&a.cluster.component(), a.stanza.as_deref(), &text)?;
    for (label, reason) in &import.skipped {
        eprintln!("tidemark: skipped pgBackRest backup {label}: {reason}");
    }
    let n = import.drafts.len();
    let appended = if n > 0 { record(global, &a.signer.key()?, import.drafts)? } else { Vec::new() };
    if a.json {
        let skipped: Vec<_> = import
            .skipped
            .iter()
            .map(|(label, reason)| serde_json::json!({"label": label, "reason": reason}))
            .collect();
        util::print_json(&serde_json::json!({"imported": n, "entries": appended, "skipped": skipped}));
        return Ok(exit::ok());
    }
    println!("imported {n} backups ({} entries; re-imports are acknowledged as duplicates)", appended.len());
    Ok(exit::ok())
}

/// Set by SIGTERM or SIGINT.
fn stop_flag() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        rt.block_on(async {
            let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
                return;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        });
        flag.store(true, Ordering::SeqCst);
    });
    stop
}

fn watch(global: &Global, a: WatchArgs) -> anyhow::Result<ExitCode> {
    if !(a.interval_secs > 0.0 && a.interval_secs.is_finite()) {
        return Err(coded(exit::USAGE, "--interval-secs must be positive"));
    }
    let key = a.agent.signer.key()?;
    let component = a.agent.cluster.component();
    let db = pg_db::Db::connect(&a.agent.dsn)?;
    let stop = stop_flag();
    let plan = tidemark_ops::pg::WatchPlan {
        component: component.clone(),
        interval: Duration::from_secs_f64(a.interval_secs),
        count: a.count,
    };
    let mut ledger = util::open_api(global)?;
    let quiet = global.quiet;
    let mut each = |o: &pg_db::Observed, entry: Option<u64>| {
        if a.json {
            println!(
                "{}",
                serde_json::json!({"component": component, "lsn": o.lsn, "timeline": o.timeline, "observed_at": o.at, "entry": entry})
            );
        } else if !quiet {
            eprintln!("tidemark: {component} at {} on timeline {} ({})", o.lsn, o.timeline, o.at);
        }
    };
    let n = tidemark_ops::pg::watch_positions(ledger.as_mut(), &util::SystemEnv, &key, &db, &plan, &stop, &mut each)
        .map_err(exit::ops_err)?;
    if !quiet {
        eprintln!("tidemark: recorded {n} positions; stopped");
    }
    Ok(exit::ok())
}

fn check_archive(global: &Global, a: CheckArchiveArgs) -> anyhow::Result<ExitCode> {
    let component = a.cluster.component();
    let key = a.signer.key()?;
    let mut ledger = util::open_api(global)?;
    let mut progress = crate::progress::Progress::new("re-read", "files", None, global.quiet);
    let check = tidemark_ops::pg::check_archive(ledger.as_mut(), &util::SystemEnv, &key, &component, &mut progress)
        .map_err(exit::ops_err)?;
    progress.finish();
    let mut out = std::io::stdout().lock();
    if a.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&check)?)?;
    } else {
        for f in &check.problems {
            writeln!(out, "{:<8} {}  {}", f.outcome.name(), f.file, f.detail)?;
        }
        writeln!(
            out,
            "{component}: {} files sound, {} missing or corrupt (recorded as artifact.verified)",
            check.ok,
            check.problems.len()
        )?;
    }
    Ok(ExitCode::from(if check.problems.is_empty() { exit::OK } else { exit::VERIFY_FAILED }))
}

fn restore_wal(global: &Global, component: &str, file: &str, dest: &Path) -> anyhow::Result<ExitCode> {
    // PostgreSQL treats any exit below 126 as "not available" and stops
    // recovery at that point: exactly what a refusal must do.
    let refuse = |msg: String| -> anyhow::Result<ExitCode> {
        eprintln!("tidemark restore-wal: {msg}");
        Ok(ExitCode::from(exit::FAILURE))
    };
    let Some(record) = util::open_api(global)?.pg_file(component, file).map_err(exit::ops_err)? else {
        return refuse(format!("{file} is not in the ledger for {component}"));
    };
    match restore::fetch_verified(file, &record.location, record.blake3, dest)? {
        Ok(()) => Ok(exit::ok()),
        Err(refused) => refuse(refused.to_string()),
    }
}
