//! `tidemark group …`, `snapshot …`, `mark`, `timeline`, and the group side
//! of `recovery-points` and `plan`.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use tidemark_core::event::{ComponentRegistered, EventBody, GroupDefined, SnapshotStoreIdentity, SnapshotTaken};
use tidemark_core::{ComponentId, Digest32, Name, Timestamp};
use tidemark_lineage::group::{Latest, Record, RecoveryPoint};
use tidemark_lineage::group_plan::{ComponentPlan, PlanRequest};
use tidemark_lineage::pg_plan::PlanOptions;
use tidemark_ops::mark::{MarkRequest, Quiesce};

use crate::exit::{self, coded, ops_err};
use crate::pg_cmds::{Signer, record_events};
use crate::progress::Progress;
use crate::{Global, util};

/// `2s`, `500ms`, `1m`, `0`: a duration in milliseconds (the rule of `tidemark.toml`'s durations).
pub fn parse_duration_ms(s: &str) -> Result<u64, String> {
    tidemark_ops::agent::config::parse_duration(s).map(|d| d.as_millis() as u64)
}

#[derive(Subcommand)]
pub enum GroupCommand {
    /// Define (or redefine) an application: the components restored together and the clock-skew tolerance. Admin key.
    Define {
        name: String,
        /// A registered component (pg:…, s3:…, snap:…); repeat for each.
        #[arg(long = "component", required = true)]
        components: Vec<String>,
        /// Largest clock difference between the components' clocks, e.g. 2s.
        #[arg(long, default_value = "2s", value_parser = parse_duration_ms)]
        max_skew: u64,
        #[command(flatten)]
        signer: Signer,
        /// Print what was recorded as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// A group's definition, its components' identities and snapshots.
    Show { name: String },
}

#[derive(Subcommand)]
pub enum SnapshotCommand {
    /// Register a snapshot-only store (RabbitMQ definitions, a Redis RDB, a volume). Admin key.
    Register {
        /// The component, e.g. snap:rabbit-defs.
        #[arg(long)]
        component: String,
        /// What kind of store it is, e.g. rabbitmq.
        #[arg(long)]
        store: String,
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        signer: Signer,
        /// Print what was recorded as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Record a snapshot: a file (its blake3 and size are read) or a location with its checksum.
    Record(SnapshotArgs),
}

#[derive(Args)]
pub struct SnapshotArgs {
    #[arg(long)]
    component: String,
    /// Snapshot id (default: derived from the file's blake3).
    #[arg(long)]
    snapshot_id: Option<String>,
    /// The snapshot file: its blake3 and size are recorded and its absolute path is the location.
    #[arg(long, conflicts_with = "location")]
    file: Option<PathBuf>,
    /// Where the snapshot lives when it is not a local file (then give --blake3 and --size).
    #[arg(long, requires = "size")]
    location: Option<String>,
    #[arg(long)]
    blake3: Option<String>,
    #[arg(long)]
    size: Option<u64>,
    /// How it was taken, e.g. `rabbitmqctl export_definitions`.
    #[arg(long, default_value = "file")]
    method: String,
    /// When it was taken (default: now).
    #[arg(long, value_parser = util::parse_time)]
    taken_at: Option<Timestamp>,
    #[command(flatten)]
    signer: Signer,
    /// Print what was recorded as one JSON object.
    #[arg(long)]
    json: bool,
}

fn component_id(c: &str) -> anyhow::Result<ComponentId> {
    ComponentId::parse(c).map_err(|e| coded(exit::USAGE, e))
}

pub fn group(global: &Global, c: GroupCommand) -> anyhow::Result<ExitCode> {
    match c {
        GroupCommand::Define { name, components, max_skew, signer, json } => {
            let body = EventBody::GroupDefined(GroupDefined {
                group: Name::parse(&name).map_err(|e| coded(exit::USAGE, e))?,
                components: components.iter().map(|c| component_id(c)).collect::<anyhow::Result<_>>()?,
                max_skew_ms: max_skew,
            });
            let shown = body.to_value();
            let recorded = record_events(global, &signer.key()?, vec![body])?;
            util::print_recorded(json, &recorded, &shown, |at| {
                format!("group {name} defined as {at}: {} (max skew {max_skew} ms)", components.join(", "))
            });
            Ok(exit::ok())
        }
        GroupCommand::Show { name } => {
            let info = util::open_api(global)?.group_info(&name).map_err(ops_err)?;
            println!("{}", serde_json::to_string_pretty(&info)?);
            Ok(exit::ok())
        }
    }
}

pub fn snapshot(global: &Global, c: SnapshotCommand) -> anyhow::Result<ExitCode> {
    match c {
        SnapshotCommand::Register { component, store, description, signer, json } => {
            if !component.starts_with("snap:") {
                return Err(coded(exit::USAGE, format!("{component}: snapshot-only components are named snap:NAME")));
            }
            let body = EventBody::ComponentRegistered(ComponentRegistered {
                component: component_id(&component)?,
                postgresql: None,
                s3: None,
                snapshot: Some(SnapshotStoreIdentity { store, description }),
            });
            let shown = body.to_value();
            let recorded = record_events(global, &signer.key()?, vec![body])?;
            util::print_recorded(json, &recorded, &shown, |at| format!("registered {component} as {at}"));
            Ok(exit::ok())
        }
        SnapshotCommand::Record(a) => {
            let at = a.taken_at.unwrap_or_else(util::now);
            let (id, body) = match (&a.file, &a.location) {
                (Some(f), _) => {
                    tidemark_ops::mark::snapshot_file_event(&a.component, a.snapshot_id.as_deref(), f, &a.method, at)
                        .map_err(ops_err)?
                }
                (None, Some(loc)) => {
                    let id =
                        a.snapshot_id.clone().ok_or_else(|| coded(exit::USAGE, "--location needs --snapshot-id"))?;
                    let blake3 = a
                        .blake3
                        .as_deref()
                        .map(Digest32::parse)
                        .transpose()
                        .map_err(|e| coded(exit::USAGE, format!("--blake3: {e}")))?;
                    let body = EventBody::SnapshotTaken(SnapshotTaken {
                        component: component_id(&a.component)?,
                        snapshot_id: id.clone(),
                        taken_at: at,
                        method: a.method.clone(),
                        size_bytes: a.size.unwrap_or(0),
                        blake3,
                        location: loc.clone(),
                    });
                    (id, body)
                }
                (None, None) => {
                    return Err(coded(exit::USAGE, "give --file, or --location with --snapshot-id and --size"));
                }
            };
            let shown = body.to_value();
            let recorded = record_events(global, &a.signer.key()?, vec![body])?;
            util::print_recorded(a.json, &recorded, &shown, |at| {
                format!("snapshot {id} of {} recorded as {at}", a.component)
            });
            Ok(exit::ok())
        }
    }
}

/// The default `restore_command` of plans: this tidemark, the same ledger, `{cluster}` filled per component.
pub fn default_restore_command(global: &Global) -> anyhow::Result<String> {
    let exe = std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| "tidemark".into());
    let ledger = match global.url() {
        Some(url) => url.to_owned(),
        None => std::path::absolute(&global.ledger)?.display().to_string(),
    };
    Ok(format!("{exe} pg restore-wal --cluster {{cluster}} --ledger {ledger} %f %p"))
}

fn record_text(r: &Record) -> String {
    let mut out = match &r.last_drill {
        Some(last) if r.drills > 0 => {
            format!("drilled {}× ({} passed), last {} at {}", r.drills, r.drills_passed, last.result, last.at)
        }
        _ => "never drilled".to_owned(),
    };
    if r.restores > 0 {
        out += &format!(
            ", restored {}× (last {})",
            r.restores,
            r.last_restore.as_ref().map_or("-", |l| l.result.as_str())
        );
    }
    out
}

fn print_point(out: &mut impl std::io::Write, p: &RecoveryPoint) -> std::io::Result<()> {
    writeln!(out, "  {}  {}  {:<10}  {:<14}  {}", p.id, p.at, p.class.name(), p.status, record_text(&p.record))?;
    for c in &p.components {
        let pinned = match (&c.lsn, &c.at, &c.snapshot_id) {
            (Some(lsn), _, _) => format!("LSN {lsn} on timeline {}", c.timeline.map_or("-".into(), |t| t.to_string())),
            (_, Some(at), _) => format!("as of {at}"),
            (_, _, Some(id)) => format!("snapshot {id}"),
            _ => "nothing pinned".to_owned(),
        };
        match &c.reason {
            Some(r) => writeln!(out, "      {}: NOT restorable ({pinned}): {r}", c.component)?,
            None => {
                let reads = match (&c.base_backup, &c.wal) {
                    (Some(b), Some((first, last))) => format!("; base backup {b}, WAL {first} … {last}"),
                    _ => String::new(),
                };
                writeln!(out, "      {}: {pinned}{reads}", c.component)?
            }
        }
    }
    Ok(())
}

pub fn recovery_points(global: &Global, group: &str, latest: bool, json_out: bool) -> anyhow::Result<ExitCode> {
    let api = util::open_api(global)?;
    let mut out = std::io::stdout().lock();
    if latest {
        let Some(l) = api.group_latest(group).map_err(ops_err)? else {
            if json_out {
                writeln!(out, "null")?;
            } else {
                writeln!(
                    out,
                    "group {group}: nothing is restorable yet (see `tidemark recovery-points --group {group}`)"
                )?;
            }
            return Ok(ExitCode::from(exit::NOT_RESTORABLE));
        };
        if json_out {
            writeln!(out, "{}", serde_json::to_string_pretty(&l)?)?;
            return Ok(exit::ok());
        }
        match &l {
            Latest::Marker { point: p } => writeln!(
                out,
                "latest: marker {} at {} ({}); plan it with `tidemark plan --group {group} --point {}`",
                p.id,
                p.at,
                p.class.name(),
                p.id
            )?,
            Latest::Time { at, window } => writeln!(
                out,
                "latest: {at} (the end of the correlated window from {}); plan it with `tidemark plan --group {group} --at {at}`",
                window.from
            )?,
        }
        return Ok(exit::ok());
    }
    let r = api.group_report(group).map_err(ops_err)?;
    if json_out {
        writeln!(out, "{}", serde_json::to_string_pretty(&r)?)?;
        return Ok(exit::ok());
    }
    writeln!(out, "group {}  components {}  max skew {} ms", r.group, r.components.join(", "), r.max_skew_ms)?;
    for n in &r.notes {
        writeln!(out, "note: {n}")?;
    }
    writeln!(out, "correlated windows (newest first): {}", r.windows.len())?;
    for (i, w) in r.windows.iter().enumerate() {
        writeln!(out, "  {} … {}  correlated  {}", w.from, w.to, record_text(&w.record))?;
        if let Some(g) = r.gaps.get(i) {
            writeln!(out, "  gap {} … {}: {}", g.from, g.to, g.reasons.join("; "))?;
        }
    }
    writeln!(out, "markers (newest first): {}", r.markers.len())?;
    for p in &r.markers {
        print_point(&mut out, p)?;
    }
    Ok(exit::ok())
}

pub fn plan(
    global: &Global,
    group: &str,
    point: Option<String>,
    at: Option<&str>,
    restore_command: Option<String>,
    out: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    let request = match (point, at) {
        (Some(p), None) => PlanRequest::Marker(p),
        (None, Some(t)) => PlanRequest::Time(util::parse_time(t).map_err(|e| coded(exit::USAGE, e))?),
        _ => return Err(coded(exit::USAGE, "give exactly one of --point MARKER or --at TIME")),
    };
    let options = PlanOptions {
        restore_command: match restore_command {
            Some(c) => c,
            None => default_restore_command(global)?,
        },
        use_recovery_target_time: false,
    };
    match util::open_api(global)?.group_plan(group, &request, &options).map_err(ops_err)? {
        Ok(plan) => {
            let text = serde_json::to_string_pretty(&plan)? + "\n";
            match out {
                Some(p) => util::write_file_atomic(p, text.as_bytes())?,
                None => std::io::stdout().lock().write_all(text.as_bytes())?,
            }
            let parts: Vec<String> = plan
                .body
                .components
                .iter()
                .map(|c| match c {
                    ComponentPlan::Postgresql { component, plan } => format!(
                        "{component}: base backup {} + {} WAL segments to LSN {}",
                        plan.body.base_backup.backup_id,
                        plan.body.wal_segments.len(),
                        plan.body.target_lsn
                    ),
                    ComponentPlan::S3(p) => format!(
                        "{}: {} keys to restore, {} to remove as of {}",
                        p.component, p.keys_to_restore, p.keys_to_remove, p.at
                    ),
                    ComponentPlan::Snapshot { component, snapshot } => {
                        format!("{component}: snapshot {}", snapshot.snapshot_id)
                    }
                })
                .collect();
            eprintln!(
                "plan {} for {} {} ({}): {}",
                plan.digest,
                group,
                plan.body.recovery_point.id,
                plan.body.recovery_point.class.name(),
                parts.join("; ")
            );
            Ok(exit::ok())
        }
        Err(reasons) => Err(coded(exit::NOT_RESTORABLE, format!("not restorable: {}", reasons.join("; ")))),
    }
}

#[derive(Args)]
pub struct TimelineArgs {
    #[arg(long)]
    group: String,
    /// Write the SVG (or, with --html, the HTML page) here.
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    html: bool,
    /// Print what was written as one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn timeline(global: &Global, a: TimelineArgs) -> anyhow::Result<ExitCode> {
    // The same page whatever holds the ledger: drawn here from the typed report.
    let r = util::open_api(global)?.group_report(&a.group).map_err(ops_err)?;
    let text = if a.html { tidemark_lineage::timeline::html(&r) } else { tidemark_lineage::timeline::svg(&r) };
    util::write_file_atomic(&a.out, text.as_bytes())?;
    if a.json {
        util::print_json(&serde_json::json!({"path": a.out.display().to_string(), "bytes": text.len()}));
    } else {
        println!("wrote {} ({} bytes)", a.out.display(), text.len());
    }
    Ok(exit::ok())
}

// ---------------------------------------------------------------- mark

#[derive(Args)]
pub struct MarkArgs {
    #[arg(long)]
    group: String,
    #[command(flatten)]
    signer: Signer,
    /// Marker id (default: m- and the UTC time to the second, e.g. m-20261123T101500Z).
    #[arg(long)]
    id: Option<String>,
    /// Connection string of a PostgreSQL component: pg:NAME=DSN (or just the DSN when the group has one).
    #[arg(long = "pg-dsn")]
    pg_dsn: Vec<String>,
    /// Path-style S3 addressing (MinIO, moto, other non-AWS endpoints).
    #[arg(long)]
    s3_path_style: bool,
    /// Allowance for the difference between this clock and S3's (as for `s3 scan`).
    #[arg(long, default_value_t = 1000)]
    clock_skew_ms: u64,
    /// A snapshot-only component's snapshot, taken by now: snap:NAME=FILE (recorded with its blake3).
    #[arg(long = "snapshot-file")]
    snapshot_file: Vec<String>,
    /// A snapshot already recorded: snap:NAME=ID.
    #[arg(long = "snapshot-id")]
    snapshot_id: Vec<String>,
    /// Maintenance mode: stop writers (--exec-before), pin every component, resume writers (--exec-after).
    #[arg(long)]
    quiesced: bool,
    /// Shell command that stops the writers (run first; the marker is taken once it exits 0).
    #[arg(long, requires = "quiesced")]
    exec_before: Option<String>,
    /// Shell command that resumes the writers (always run once --exec-before ran, even when a step failed).
    #[arg(long, requires = "quiesced")]
    exec_after: Option<String>,
    /// How long to wait for PostgreSQL to archive the marked segment.
    #[arg(long, default_value = "120s", value_parser = parse_duration_ms)]
    archive_timeout: u64,
    /// Print the marker and each S3 cut's evidence as JSON.
    #[arg(long)]
    json: bool,
}

fn pairs(values: &[String], what: &str) -> anyhow::Result<Vec<(String, String)>> {
    values
        .iter()
        .map(|v| {
            v.split_once('=')
                .filter(|(c, _)| c.contains(':'))
                .map(|(c, x)| (c.to_owned(), x.to_owned()))
                .ok_or_else(|| coded(exit::USAGE, format!("{what} {v:?}: expected COMPONENT=VALUE")))
        })
        .collect()
}

/// `--pg-dsn pg:NAME=DSN`, or a bare DSN for a group with one cluster.
fn pg_dsn(v: &str) -> (Option<String>, String) {
    match v.split_once('=') {
        Some((c, dsn)) if c.starts_with("pg:") && !c.contains(' ') => (Some(c.to_owned()), dsn.to_owned()),
        _ => (None, v.to_owned()),
    }
}

pub fn mark(global: &Global, a: MarkArgs) -> anyhow::Result<ExitCode> {
    let key = a.signer.key()?;
    let request = MarkRequest {
        group: a.group.clone(),
        id: a.id.clone(),
        pg_dsns: a.pg_dsn.iter().map(|v| pg_dsn(v)).collect(),
        snapshot_files: pairs(&a.snapshot_file, "--snapshot-file")?
            .into_iter()
            .map(|(c, f)| (c, PathBuf::from(f)))
            .collect(),
        snapshot_ids: pairs(&a.snapshot_id, "--snapshot-id")?,
        s3_path_style: a.s3_path_style,
        s3_credentials: tidemark_s3::Credentials::Chain,
        clock_skew_ms: a.clock_skew_ms,
        quiesce: a.quiesced.then(|| Quiesce { exec_before: a.exec_before.clone(), exec_after: a.exec_after.clone() }),
        archive_timeout: Duration::from_millis(a.archive_timeout),
    };
    let mut ledger = util::open_api(global)?;
    let mut progress = Progress::new("scanned", "versions", None, global.quiet);
    let marked =
        tidemark_ops::mark::mark(ledger.as_mut(), &util::SystemEnv, &key, &request, &mut progress).map_err(ops_err)?;
    progress.finish();
    if a.json {
        util::print_json(&marked);
        return Ok(exit::ok());
    }
    println!(
        "marker {} of group {} at {}{} recorded as entry {}",
        marked.marker_id,
        marked.group,
        marked.at,
        match (marked.writers_stopped_at, marked.writers_resumed_at) {
            (Some(x), Some(y)) => format!(" (quiesced: writers stopped {x} … {y})"),
            _ => String::new(),
        },
        marked.entry.map_or("(spooled)".to_owned(), |e| e.to_string())
    );
    Ok(exit::ok())
}
