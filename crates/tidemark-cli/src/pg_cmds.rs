//! The PostgreSQL agents (`tidemark pg …`) and the recovery questions
//! (`tidemark recovery-points`, `tidemark plan`), over a local ledger or a server.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use tidemark_agents::{pg_db, restore};
use tidemark_core::ComponentId;
use tidemark_core::event::{ComponentRegistered, EventBody, PostgresqlIdentity};
use tidemark_core::{SecretKey, SignedEvent};
use tidemark_ops::Recorded;

use crate::exit::{self, coded};
use crate::{Global, util};

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
            let recorded = record_events(global, &a.signer.key()?, vec![body])?;
            util::print_recorded(json, &recorded, &shown, |at| {
                format!("registered {component} (system identifier {sysid}, {size}-byte segments) as {at}")
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
            let recorded = record_events(global, &key, vec![body])?;
            util::print_recorded(json, &recorded, &shown, |at| {
                format!("restore point {name:?} at {} on timeline {} ({}), {at}", o.lsn, o.timeline, o.at)
            });
            Ok(exit::ok())
        }
        PgCommand::CheckArchive(a) => check_archive(global, a),
        PgCommand::RestoreWal { cluster, file, dest } => restore_wal(global, &cluster.component(), &file, &dest),
    }
}

/// Signs typed event bodies and records them in one batch: in the ledger,
/// or through the server (with `--spool`, in the spool when it cannot be reached).
pub fn record_events(global: &Global, key: &SecretKey, bodies: Vec<EventBody>) -> anyhow::Result<Recorded> {
    let events: Vec<SignedEvent> = bodies
        .into_iter()
        .map(|b| util::signed_event(key, b).map_err(|e| coded(exit::REFUSED, e)))
        .collect::<anyhow::Result<_>>()?;
    record_signed(global, events)
}

/// One batch through the typed ledger API; a refusal is exit 3 wherever the ledger is.
pub fn record_signed(global: &Global, events: Vec<SignedEvent>) -> anyhow::Result<Recorded> {
    let mut ledger = util::open_api(global)?;
    let recorded = ledger.record(events, util::now()).map_err(record_err)?;
    spool_notes(ledger.as_mut(), &recorded);
    Ok(recorded)
}

/// An error of work that records: the server's refusal is exit 3, as a
/// local ledger's is; an unreachable server without a spool says how to keep events safe.
fn record_err(e: tidemark_ops::OpsError) -> anyhow::Error {
    match e {
        tidemark_ops::OpsError::Client(tidemark_client::ClientError::Refused { status, detail, .. })
            if status != 401 && status != 404 =>
        {
            crate::remote::RemoteRefusal { detail }.into()
        }
        tidemark_ops::OpsError::Client(e) if e.is_retryable() => {
            coded(exit::FAILURE, format!("{e}; pass --spool DIR to keep events safe while the server is down"))
        }
        e => exit::ops_err(e),
    }
}

/// Says on stderr what waited in the spool and was delivered first, and
/// where events wait when the server could not be reached.
pub fn spool_notes(ledger: &mut dyn tidemark_ops::LedgerApi, recorded: &Recorded) {
    if let Some(report) = ledger.take_spool_delivery() {
        crate::remote::say_delivered(&report);
    }
    if let Recorded::Spooled { events, spool, why } = recorded {
        eprintln!(
            "tidemark: {why}; spooled {events} events to {} (delivered by the next write or `tidemark spool flush`)",
            spool.display()
        );
    }
}

fn archive_hook(global: &Global, a: ArchiveHookArgs) -> anyhow::Result<ExitCode> {
    let key = a.signer.key()?;
    let request = tidemark_ops::pg_archive::ArchivedFileRequest {
        component: a.cluster.component(),
        location: a.location.clone(),
        source: a.source.clone(),
    };
    let mut ledger = util::open_api(global)?;
    let mut progress = crate::progress::Progress::new("archived", "files", None, true);
    let archived =
        tidemark_ops::pg_archive::archive_file(ledger.as_mut(), &util::SystemEnv, &key, &request, &mut progress)
            .map_err(record_err)?;
    if let Some(r) = &archived.recorded {
        spool_notes(ledger.as_mut(), r);
    }
    if a.json {
        util::print_json(&archived);
    }
    Ok(exit::ok())
}

fn record_backup(global: &Global, a: RecordBackupArgs) -> anyhow::Result<ExitCode> {
    let key = a.signer.key()?;
    let request = tidemark_ops::pg_archive::BackupRequest {
        component: a.cluster.component(),
        dir: a.dir.clone(),
        location: a.location.clone(),
        archive: a.archive.clone(),
        wait: Duration::from_secs(a.wait_secs),
    };
    let mut ledger = util::open_api(global)?;
    let mut progress = crate::progress::Progress::new("recorded", "backups", None, global.quiet);
    let (b, recorded) =
        tidemark_ops::pg_archive::record_backup(ledger.as_mut(), &util::SystemEnv, &key, &request, &mut progress)
            .map_err(record_err)?;
    spool_notes(ledger.as_mut(), &recorded);
    util::print_recorded(a.json, &recorded, &b, |at| {
        format!(
            "recorded base backup {} (timeline {}, {} → {}, {} bytes, blake3 {}) as {at}",
            b.backup_id,
            b.timeline,
            b.start_lsn,
            b.stop_lsn,
            b.size_bytes,
            b.blake3.map_or("-".to_owned(), |d| d.to_string()),
        )
    });
    Ok(exit::ok())
}

fn import_pgbackrest(global: &Global, a: ImportArgs) -> anyhow::Result<ExitCode> {
    let text = match a.info_json.as_deref() {
        Some("-") => std::io::read_to_string(std::io::stdin()).context("reading stdin")?,
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?,
        None => tidemark_ops::pg_archive::pgbackrest_info(a.pgbackrest_config.as_deref(), a.stanza.as_deref())
            .map_err(exit::ops_err)?,
    };
    let key = a.signer.key()?;
    let mut ledger = util::open_api(global)?;
    let done = tidemark_ops::pg_archive::import_pgbackrest(
        ledger.as_mut(),
        &util::SystemEnv,
        &key,
        &a.cluster.component(),
        a.stanza.as_deref(),
        &text,
    )
    .map_err(record_err)?;
    if a.json {
        util::print_json(&done);
        return Ok(exit::ok());
    }
    for (label, reason) in &done.skipped {
        eprintln!("tidemark: skipped pgBackRest backup {label}: {reason}");
    }
    println!(
        "imported {} backups ({} entries; re-imports are acknowledged as duplicates)",
        done.imported,
        done.entries.len()
    );
    Ok(exit::ok())
}

/// Set by SIGTERM or SIGINT.
pub fn stop_flag() -> Arc<AtomicBool> {
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
