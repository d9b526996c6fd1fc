//! `tidemark group …`, `snapshot …`, `mark`, `timeline`, and the group side
//! of `recovery-points` and `plan`.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use tidemark_agents::pg_db::{self, Db};
use tidemark_core::event::{ComponentRegistered, EventBody, GroupDefined, SnapshotStoreIdentity, SnapshotTaken};
use tidemark_core::{ComponentId, Digest32, Name, Timestamp};
use tidemark_lineage::group_plan::PlanRequest;
use tidemark_lineage::pg_plan::PlanOptions;

use crate::exit::{self, coded};
use crate::pg_cmds::{Signer, Source, client_err, local_err, record, record_events};
use crate::{Global, mark_cut, s3_cmds, util};

/// `2s`, `500ms`, `1m`, `0`: a duration in milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let (num, unit) = s.find(|c: char| !c.is_ascii_digit()).map_or((s, "ms"), |i| (&s[..i], &s[i..]));
    let n: u64 = num.parse().map_err(|_| format!("{s:?}: expected a number with a unit (500ms, 2s, 1m)"))?;
    let factor = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        other => return Err(format!("{s:?}: unknown unit {other:?} (ms, s, m, h)")),
    };
    Ok(n * factor)
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

/// The `snapshot.taken` body for a local file (its blake3 and size read now).
fn snapshot_file_event(
    component: &str,
    id: Option<&str>,
    file: &std::path::Path,
    method: &str,
    at: Timestamp,
) -> anyhow::Result<(String, EventBody)> {
    let digest = tidemark_agents::pg_files::blake3_file(file)?;
    let size = std::fs::metadata(file).with_context(|| format!("reading {}", file.display()))?.len();
    let location = std::path::absolute(file)?.display().to_string();
    let id = id.map(str::to_owned).unwrap_or_else(|| format!("b3-{}", &digest.to_string()[..16]));
    let body = EventBody::SnapshotTaken(SnapshotTaken {
        component: component_id(component)?,
        snapshot_id: id.clone(),
        taken_at: at,
        method: method.to_owned(),
        size_bytes: size,
        blake3: Some(digest),
        location,
    });
    Ok((id, body))
}

fn component_id(c: &str) -> anyhow::Result<ComponentId> {
    ComponentId::parse(c).map_err(|e| coded(exit::USAGE, e))
}

/// A typed body as the draft the marker's batch is built from.
fn draft_of(body: &EventBody) -> Value {
    json!({"kind": body.kind().name(), "body": body.to_value()})
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
            let seq = record_events(global, &signer.key()?, vec![body])?;
            util::print_recorded(json, seq[0], &shown, || {
                format!("group {name} defined as entry {}: {} (max skew {max_skew} ms)", seq[0], components.join(", "))
            });
            Ok(exit::ok())
        }
        GroupCommand::Show { name } => {
            let info = group_info(&Source::open(global)?, &name)?;
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
            let seq = record_events(global, &signer.key()?, vec![body])?;
            util::print_recorded(json, seq[0], &shown, || format!("registered {component} as entry {}", seq[0]));
            Ok(exit::ok())
        }
        SnapshotCommand::Record(a) => {
            let at = a.taken_at.unwrap_or_else(util::now);
            let (id, body) = match (&a.file, &a.location) {
                (Some(f), _) => snapshot_file_event(&a.component, a.snapshot_id.as_deref(), f, &a.method, at)?,
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
            let seq = record_events(global, &a.signer.key()?, vec![body])?;
            util::print_recorded(a.json, seq[0], &shown, || {
                format!("snapshot {id} of {} recorded as entry {}", a.component, seq[0])
            });
            Ok(exit::ok())
        }
    }
}

/// A group's definition and its components' identities.
pub fn group_info(source: &Source, name: &str) -> anyhow::Result<Value> {
    match source {
        Source::Local(l) => Ok(serde_json::to_value(l.group_info(name).ok_or_else(|| {
            coded(exit::USAGE, tidemark_lineage::group::GroupError::UnknownGroup(name.to_owned()).to_string())
        })?)?),
        Source::Remote(c) => Ok(serde_json::to_value(c.group_info(name).map_err(client_err)?)?),
    }
}

fn group_report(source: &Source, name: &str) -> anyhow::Result<Value> {
    match source {
        Source::Local(l) => Ok(serde_json::to_value(l.group_report(name).map_err(local_err)?)?),
        Source::Remote(c) => Ok(serde_json::to_value(c.group_report(name).map_err(client_err)?)?),
    }
}

fn group_latest(source: &Source, name: &str) -> anyhow::Result<Option<Value>> {
    match source {
        Source::Local(l) => {
            Ok(l.group_latest(name).map_err(local_err)?.map(|x| serde_json::to_value(x).expect("serialises")))
        }
        Source::Remote(c) => {
            Ok(c.group_latest(name).map_err(client_err)?.map(|x| serde_json::to_value(x).expect("serialises")))
        }
    }
}

/// The group plan, or the reasons the point is not restorable.
pub fn group_plan(
    source: &Source,
    name: &str,
    request: &PlanRequest,
    options: &PlanOptions,
) -> anyhow::Result<Result<Value, Vec<String>>> {
    match source {
        Source::Local(l) => Ok(match l.group_plan(name, request, options).map_err(local_err)? {
            Ok(p) => Ok(serde_json::to_value(p)?),
            Err(reasons) => Err(reasons),
        }),
        Source::Remote(c) => Ok(match c.group_plan(name, request, options).map_err(client_err)? {
            Ok(p) => Ok(serde_json::to_value(p)?),
            Err(reasons) => Err(reasons),
        }),
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

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}

fn record_text(r: &Value) -> String {
    let drills = r["drills"].as_u64().unwrap_or(0);
    let mut out = if drills == 0 {
        "never drilled".to_owned()
    } else {
        format!(
            "drilled {drills}× ({} passed), last {} at {}",
            r["drills_passed"],
            s(&r["last_drill"]["result"]),
            s(&r["last_drill"]["at"])
        )
    };
    if let Some(n) = r["restores"].as_u64().filter(|n| *n > 0) {
        out += &format!(", restored {n}× (last {})", s(&r["last_restore"]["result"]));
    }
    out
}

fn print_point(out: &mut impl std::io::Write, p: &Value) -> std::io::Result<()> {
    writeln!(
        out,
        "  {}  {}  {:<10}  {:<14}  {}",
        s(&p["id"]),
        s(&p["at"]),
        s(&p["class"]),
        s(&p["status"]),
        record_text(&p["record"])
    )?;
    for c in p["components"].as_array().into_iter().flatten() {
        let pinned = match (c["lsn"].as_str(), c["at"].as_str(), c["snapshot_id"].as_str()) {
            (Some(lsn), _, _) => format!("LSN {lsn} on timeline {}", c["timeline"]),
            (_, Some(at), _) => format!("as of {at}"),
            (_, _, Some(id)) => format!("snapshot {id}"),
            _ => "nothing pinned".to_owned(),
        };
        match c["reason"].as_str() {
            Some(r) => writeln!(out, "      {}: NOT restorable ({pinned}): {r}", s(&c["component"]))?,
            None => {
                let reads = match (c["base_backup"].as_str(), c["wal"].as_array()) {
                    (Some(b), Some(w)) => format!("; base backup {b}, WAL {} … {}", s(&w[0]), s(&w[1])),
                    _ => String::new(),
                };
                writeln!(out, "      {}: {pinned}{reads}", s(&c["component"]))?
            }
        }
    }
    Ok(())
}

pub fn recovery_points(global: &Global, group: &str, latest: bool, json_out: bool) -> anyhow::Result<ExitCode> {
    let source = Source::open(global)?;
    let mut out = std::io::stdout().lock();
    if latest {
        let Some(l) = group_latest(&source, group)? else {
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
        } else if l["kind"] == "marker" {
            let p = &l["point"];
            writeln!(
                out,
                "latest: marker {} at {} ({}); plan it with `tidemark plan --group {group} --point {}`",
                s(&p["id"]),
                s(&p["at"]),
                s(&p["class"]),
                s(&p["id"])
            )?;
        } else {
            writeln!(
                out,
                "latest: {} (the end of the correlated window from {}); plan it with `tidemark plan --group {group} --at {}`",
                s(&l["at"]),
                s(&l["window"]["from"]),
                s(&l["at"])
            )?;
        }
        return Ok(exit::ok());
    }
    let r = group_report(&source, group)?;
    if json_out {
        writeln!(out, "{}", serde_json::to_string_pretty(&r)?)?;
        return Ok(exit::ok());
    }
    let names: Vec<&str> = r["components"].as_array().into_iter().flatten().map(s).collect();
    writeln!(out, "group {}  components {}  max skew {} ms", s(&r["group"]), names.join(", "), r["max_skew_ms"])?;
    for n in r["notes"].as_array().into_iter().flatten() {
        writeln!(out, "note: {}", s(n))?;
    }
    let windows = r["windows"].as_array().cloned().unwrap_or_default();
    let gaps = r["gaps"].as_array().cloned().unwrap_or_default();
    writeln!(out, "correlated windows (newest first): {}", windows.len())?;
    for (i, w) in windows.iter().enumerate() {
        writeln!(out, "  {} … {}  correlated  {}", s(&w["from"]), s(&w["to"]), record_text(&w["record"]))?;
        if let Some(g) = gaps.get(i) {
            writeln!(
                out,
                "  gap {} … {}: {}",
                s(&g["from"]),
                s(&g["to"]),
                g["reasons"].as_array().into_iter().flatten().map(s).collect::<Vec<_>>().join("; ")
            )?;
        }
    }
    let markers = r["markers"].as_array().cloned().unwrap_or_default();
    writeln!(out, "markers (newest first): {}", markers.len())?;
    for p in &markers {
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
    match group_plan(&Source::open(global)?, group, &request, &options)? {
        Ok(plan) => {
            let text = serde_json::to_string_pretty(&plan)? + "\n";
            match out {
                Some(p) => util::write_file_atomic(p, text.as_bytes())?,
                None => std::io::stdout().lock().write_all(text.as_bytes())?,
            }
            let parts: Vec<String> = plan["components"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| match c["kind"].as_str() {
                    Some("postgresql") => format!(
                        "{}: base backup {} + {} WAL segments to LSN {}",
                        s(&c["component"]),
                        s(&c["plan"]["base_backup"]["backup_id"]),
                        c["plan"]["wal_segments"].as_array().map_or(0, Vec::len),
                        s(&c["plan"]["target_lsn"])
                    ),
                    Some("s3") => format!(
                        "{}: {} keys to restore, {} to remove as of {}",
                        s(&c["component"]),
                        c["keys_to_restore"],
                        c["keys_to_remove"],
                        s(&c["at"])
                    ),
                    _ => format!("{}: snapshot {}", s(&c["component"]), s(&c["snapshot"]["snapshot_id"])),
                })
                .collect();
            eprintln!(
                "plan {} for {} {} ({}): {}",
                s(&plan["digest"]),
                group,
                s(&plan["recovery_point"]["id"]),
                s(&plan["recovery_point"]["class"]),
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
}

pub fn timeline(global: &Global, a: TimelineArgs) -> anyhow::Result<ExitCode> {
    let text = match Source::open(global)? {
        Source::Local(l) => {
            let r = l.group_report(&a.group).map_err(local_err)?;
            if a.html { tidemark_lineage::timeline::html(&r) } else { tidemark_lineage::timeline::svg(&r) }
        }
        Source::Remote(c) => {
            let format = if a.html { "html" } else { "svg" };
            c.group_timeline(&a.group, format).map_err(client_err)?
        }
    };
    util::write_file_atomic(&a.out, text.as_bytes())?;
    println!("wrote {} ({} bytes)", a.out.display(), text.len());
    Ok(exit::ok())
}

// ---------------------------------------------------------------- mark

#[derive(Args)]
pub struct MarkArgs {
    #[arg(long)]
    group: String,
    #[command(flatten)]
    signer: Signer,
    /// Marker id (default: m- and the UTC time, e.g. m-20261123T101500.123Z).
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

fn sh(cmd: &str, what: &str) -> anyhow::Result<()> {
    let status =
        std::process::Command::new("sh").arg("-c").arg(cmd).status().with_context(|| format!("running {what}"))?;
    if status.success() { Ok(()) } else { Err(coded(exit::FAILURE, format!("{what} `{cmd}` failed ({status})"))) }
}

/// Runs `--exec-after` exactly once: when asked, or when dropped on an error path.
struct Resume {
    cmd: Option<String>,
}

impl Resume {
    fn now(&mut self) -> anyhow::Result<Timestamp> {
        if let Some(cmd) = self.cmd.take() {
            sh(&cmd, "--exec-after")?;
        }
        Ok(util::now())
    }
}

impl Drop for Resume {
    fn drop(&mut self) {
        if let Some(cmd) = self.cmd.take() {
            eprintln!("tidemark mark: a step failed; resuming writers with --exec-after");
            if let Err(e) = sh(&cmd, "--exec-after") {
                eprintln!("tidemark mark: {e:#}; THE WRITERS MAY STILL BE STOPPED");
            }
        }
    }
}

pub fn mark(global: &Global, a: MarkArgs) -> anyhow::Result<ExitCode> {
    let key = a.signer.key()?;
    let source = Source::open(global)?;
    source.check_signer(
        &key,
        if a.quiesced { tidemark_core::Kind::MarkerQuiesced } else { tidemark_core::Kind::MarkerPoint },
    )?;
    let info = group_info(&source, &a.group)?;
    drop(source);
    let components: Vec<String> =
        info["definition"]["components"].as_array().into_iter().flatten().map(|c| s(c).to_owned()).collect();
    let max_skew_ms = info["definition"]["max_skew_ms"].as_u64().unwrap_or(0);
    let mut dsns = pairs(&a.pg_dsn.iter().filter(|v| v.starts_with("pg:")).cloned().collect::<Vec<_>>(), "--pg-dsn")?;
    let bare: Vec<&String> = a.pg_dsn.iter().filter(|v| !v.starts_with("pg:")).collect();
    let pg: Vec<&String> = components.iter().filter(|c| c.starts_with("pg:")).collect();
    if let [dsn] = bare.as_slice() {
        match pg.as_slice() {
            [only] => dsns.push(((*only).clone(), (*dsn).clone())),
            _ => {
                return Err(coded(
                    exit::USAGE,
                    "the group has several PostgreSQL components: give --pg-dsn pg:NAME=DSN for each",
                ));
            }
        }
    }
    let files = pairs(&a.snapshot_file, "--snapshot-file")?;
    let ids = pairs(&a.snapshot_id, "--snapshot-id")?;
    for c in &components {
        let given = match c.split(':').next() {
            Some("pg") => dsns.iter().any(|(x, _)| x == c),
            Some("snap") => files.iter().chain(ids.iter()).any(|(x, _)| x == c),
            _ => true,
        };
        if !given {
            return Err(coded(
                exit::USAGE,
                format!(
                    "{c}: give {} for it",
                    if c.starts_with("pg:") { "--pg-dsn" } else { "--snapshot-file or --snapshot-id" }
                ),
            ));
        }
    }
    let marker_id = a.id.clone().unwrap_or_else(|| {
        let t = util::now().to_string();
        format!(
            "m-{}",
            t.replace(['-', ':'], "").trim_end_matches('Z').split('.').next().unwrap_or("").to_owned() + "Z"
        )
    });
    // Connect first: nothing is stopped while a connection can still fail.
    let mut dbs = Vec::new();
    for (c, dsn) in &dsns {
        let db = Db::connect(dsn).with_context(|| format!("{c}: connecting"))?;
        let (system, _) = db.identity()?;
        let registered = info["components"][c]["postgresql"]["system_identifier"].as_str();
        if registered.is_some_and(|r| r != system) {
            return Err(coded(
                exit::USAGE,
                format!(
                    "{c}: the database at that DSN is system {system}, but {c} is registered as {}",
                    registered.unwrap_or("")
                ),
            ));
        }
        dbs.push((c.clone(), db));
    }
    // The buckets, connected before anything is stopped too.
    let mut buckets = Vec::new();
    for c in components.iter().filter(|c| c.starts_with("s3:")) {
        let b = s3_cmds::Bucket::registered(c, a.s3_path_style).resolve(&info["components"][c.as_str()]["s3"])?;
        let s3 = b.connect()?;
        buckets.push((c.clone(), b, s3));
    }
    let mut resume = Resume { cmd: a.exec_after.clone() };
    let stopped_at = if a.quiesced {
        if let Some(cmd) = &a.exec_before {
            // On failure writers may be half stopped: the guard resumes them.
            sh(cmd, "--exec-before")?;
        }
        Some(util::now())
    } else {
        None
    };
    let mut drafts = Vec::new();
    let mut parts = Vec::new();
    let restore_point = format!("tidemark-{}-{marker_id}", a.group);
    // One restore point per cluster; an attempt that S3's clock did not bracket
    // leaves its (harmless, differently named) restore points unrecorded.
    let cut_pg = |attempt: u32| -> anyhow::Result<(String, Vec<pg_db::Observed>)> {
        let name = if attempt == 0 { restore_point.clone() } else { format!("{restore_point}.{attempt}") };
        let observed = dbs
            .iter()
            .map(|(c, db)| db.create_restore_point(&name).with_context(|| c.clone()))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok((name, observed))
    };
    let clocked: Vec<mark_cut::Clocked<'_>> =
        buckets.iter().map(|(c, b, s3)| mark_cut::Clocked { component: c, s3, bucket: b.bucket_name() }).collect();
    // With buckets, PostgreSQL is cut while S3's clock is seen ticking.
    let (mut cut, (restore_point, observed)) = if clocked.is_empty() {
        (None, cut_pg(0)?)
    } else {
        let (cut, pg) = mark_cut::cut(&clocked, &cut_pg)?;
        (Some(cut), pg)
    };
    if let Some(cut) = cut.as_mut() {
        for (b, e) in clocked.iter().zip(cut.evidence.iter_mut()) {
            mark_cut::confirm(b, e)?;
        }
    }
    for ((c, _), o) in dbs.iter().zip(&observed) {
        drafts.push(pg_db::restore_point_draft(c, &restore_point, o));
        parts.push(
            json!({"component": c, "pg_lsn": o.lsn, "pg_timeline": o.timeline, "pg_restore_point": restore_point}),
        );
    }
    let at = observed.iter().map(|o| o.at).min().unwrap_or_else(util::now);
    for (c, file) in &files {
        let (id, body) =
            snapshot_file_event(c, Some(marker_id.as_str()), std::path::Path::new(file), "file", util::now())?;
        drafts.push(draft_of(&body));
        parts.push(json!({"component": c, "snapshot_id": id}));
    }
    for (c, id) in &ids {
        parts.push(json!({"component": c, "snapshot_id": id}));
    }
    let resumed_at = if a.quiesced { Some(resume.now()?) } else { None };
    drop(resume);
    // Writers run again; what follows only makes the pinned state durable and visible.
    for ((c, db), o) in dbs.iter().zip(&observed) {
        let seg = db
            .switch_and_wait_archived(o.lsn, Duration::from_millis(a.archive_timeout))
            .with_context(|| c.to_string())?;
        eprintln!("{c}: restore point {restore_point:?} at LSN {} ({}); segment {seg} archived", o.lsn, o.at);
    }
    let mut cuts = Vec::new();
    if let Some(cut) = cut {
        for ((b, e), ids) in clocked.iter().zip(cut.evidence).zip(cut.probes) {
            let versions: Vec<(String, String)> =
                ids.into_iter().map(|v| (tidemark_s3::CLOCK_KEY.to_owned(), v)).collect();
            if let Err(err) = b.s3.delete_versions(b.bucket, &versions) {
                eprintln!("{}: the clock probes were not removed ({err}); they are never recorded", b.component);
            }
            let watermark = e.boundary.saturating_add_micros(-1);
            if e.cut_spread_us() > (max_skew_ms as i64).saturating_mul(1000) {
                eprintln!(
                    "{}: WARNING: the cut took longer than the group's max skew of {max_skew_ms} ms: this marker will not be restorable",
                    b.component
                );
            }
            eprintln!(
                "{}: S3's clock ticked to {} between two probes; PostgreSQL cut within {} ms of it{}",
                b.component,
                e.boundary,
                e.cut_spread_us() / 1000,
                if e.uploads_in_progress.is_empty() {
                    String::new()
                } else {
                    format!("; UPLOADS IN PROGRESS across the cut: {}", e.uploads_in_progress.join(", "))
                }
            );
            // The scan starts after the tick: every version stamped before it is listed.
            let (_, bucket, _) = buckets.iter().find(|(c, _, _)| c == b.component).expect("connected above");
            eprintln!("{}", s3_cmds::scan_bucket(global, &key, bucket, None, a.clock_skew_ms, Some(watermark))?);
            cuts.push(json!({"component": b.component, "boundary": e.boundary, "cut_spread_ms": e.cut_spread_us() / 1000,
                "probe_sent_at": e.before.sent_at, "cut_returned_at": e.cut_returned_at, "uploads_in_progress": e.uploads_in_progress}));
            parts.push(json!({"component": b.component, "s3_watermark": watermark, "s3_clock": e}));
        }
    }
    parts.sort_by(|x, y| s(&x["component"]).cmp(s(&y["component"])));
    drafts.push(match (stopped_at, resumed_at) {
        (Some(stopped), Some(resumed)) => json!({"kind": "marker.quiesced", "body": {"group": a.group, "marker_id": marker_id,
            "writers_stopped_at": stopped, "writers_resumed_at": resumed, "components": parts}}),
        _ => json!({"kind": "marker.point", "body": {"group": a.group, "marker_id": marker_id, "taken_at": at, "components": parts}}),
    });
    let seqs = record(global, &key, drafts)?;
    if a.json {
        println!(
            "{}",
            json!({"marker_id": marker_id, "group": a.group, "at": at, "entry": seqs.last().copied().unwrap_or(0),
                "writers_stopped_at": stopped_at, "writers_resumed_at": resumed_at, "s3_cuts": cuts})
        );
        return Ok(exit::ok());
    }
    println!(
        "marker {marker_id} of group {} at {at}{} recorded as entry {}",
        a.group,
        match (stopped_at, resumed_at) {
            (Some(x), Some(y)) => format!(" (quiesced: writers stopped {x} … {y})"),
            _ => String::new(),
        },
        seqs.last().copied().unwrap_or(0)
    );
    Ok(exit::ok())
}
