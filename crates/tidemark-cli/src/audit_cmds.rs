//! Auditor commands: export, verify-export, custody, audit.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{ArgGroup, Args};
use tidemark_core::note::{Checkpoint, NoteVerifier};
use tidemark_core::{ActorId, Kind, Timestamp};
use tidemark_export::{AuditRow, Selector};
use tidemark_store::EntryFilter;

use crate::exit::{self, coded};
use crate::progress::Progress;
use crate::{Global, util};

#[derive(Args)]
#[command(group(ArgGroup::new("selector").required(true).args(["artifact", "component", "actor", "since", "until", "all"]).multiple(true)))]
pub struct ExportArgs {
    /// Every event touching this artifact (custody of one backup).
    #[arg(long, conflicts_with_all = ["component", "actor", "since", "until", "all"])]
    artifact: Option<String>,
    /// Every event about this component.
    #[arg(long, conflicts_with_all = ["actor", "since", "until", "all"])]
    component: Option<String>,
    /// Every event signed by this actor id.
    #[arg(long, conflicts_with_all = ["since", "until", "all"])]
    actor: Option<String>,
    /// Entries recorded at or after this time.
    #[arg(long, value_parser = util::parse_time, conflicts_with = "all")]
    since: Option<Timestamp>,
    /// Entries recorded at or before this time.
    #[arg(long, value_parser = util::parse_time, conflicts_with = "all")]
    until: Option<Timestamp>,
    /// The whole ledger.
    #[arg(long)]
    all: bool,
    /// Output directory, or FILE.tar.
    #[arg(long)]
    out: PathBuf,
    /// A checkpoint the auditor kept: include a consistency proof from it (repeatable).
    #[arg(long)]
    previous_checkpoint: Vec<PathBuf>,
    /// Print what was exported as one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn export(global: &Global, a: ExportArgs) -> anyhow::Result<ExitCode> {
    let selector = if let Some(x) = a.artifact {
        Selector::Artifact(x)
    } else if let Some(c) = a.component {
        Selector::Component(c)
    } else if let Some(actor) = a.actor {
        Selector::Actor(ActorId::parse(&actor).map_err(|e| coded(exit::USAGE, e.to_string()))?)
    } else if a.all {
        Selector::All
    } else {
        Selector::Time { since: a.since, until: a.until }
    };
    let mut sizes = Vec::new();
    for p in &a.previous_checkpoint {
        let note = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        let body = note.split("\n\n").next().unwrap_or("").to_owned() + "\n";
        let cp = Checkpoint::parse_body(&body).map_err(|e| coded(exit::USAGE, format!("{}: {e}", p.display())))?;
        sizes.push(cp.size);
    }
    if let Some(client) = global.client() {
        return export_remote(global, &client, &selector, &sizes, &a.out, a.json);
    }
    let ledger = util::open_ledger(global)?;
    let mut progress = Progress::new("exported", "entries", None, global.quiet);
    let summary =
        tidemark_export::write_export_path(&ledger, &selector, &a.out, &sizes, util::now(), &mut |n| progress.set(n))
            .map_err(|e| coded(exit::USAGE, e.to_string()))?;
    progress.finish();
    let head = ExportPrinted {
        out: a.out.display().to_string(),
        tree_size: summary.tree_size,
        selected_entries: summary.selected,
        registry_entries: summary.registry_only,
        ledger_key: ledger.note_verifier().to_vkey(),
    };
    head.print(a.json);
    Ok(exit::ok())
}

/// What `export` prints (`--json`: this object).
#[derive(serde::Serialize)]
struct ExportPrinted {
    out: String,
    tree_size: u64,
    selected_entries: u64,
    /// Key-registry entries included only to authorise signers.
    registry_entries: u64,
    ledger_key: String,
}

impl ExportPrinted {
    fn print(&self, json: bool) {
        if json {
            util::print_json(self);
            return;
        }
        println!(
            "exported {} entries (+{} authorising registry entries) proven into the checkpoint at tree size {} to {}",
            self.selected_entries, self.registry_entries, self.tree_size, self.out
        );
        println!("verify with: tidemark verify-export {} --ledger-key '{}'", self.out, self.ledger_key);
    }
}

/// An export of a running ledger: streamed by the server as a tar, written
/// whole or not at all (into FILE.tar, or unpacked into a directory).
fn export_remote(
    global: &Global,
    client: &tidemark_client::Client,
    selector: &Selector,
    sizes: &[u64],
    out: &std::path::Path,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let is_tar = out.extension().is_some_and(|e| e == "tar");
    if is_tar && out.exists() {
        return Err(coded(exit::USAGE, format!("{} exists", out.display())));
    }
    if !is_tar && out.exists() && std::fs::read_dir(out)?.next().is_some() {
        return Err(coded(exit::USAGE, format!("{} exists and is not empty", out.display())));
    }
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let partial =
        tempfile::NamedTempFile::new_in(parent).with_context(|| format!("writing into {}", parent.display()))?;
    let mut progress = Progress::bytes("received", global.quiet);
    let mut writer = std::io::BufWriter::new(partial.as_file());
    client.export(selector, sizes, &mut writer, &mut |n| progress.set(n)).map_err(crate::remote::client_err)?;
    writer.flush()?;
    drop(writer);
    progress.finish();
    partial.as_file().sync_all()?;
    if is_tar {
        partial.persist_noclobber(out).map_err(|e| e.error).with_context(|| format!("writing {}", out.display()))?;
    } else {
        tidemark_export::unpack_tar(partial.path(), out).map_err(|e| coded(exit::FAILURE, e.to_string()))?;
    }
    let head = tidemark_export::read_head(out).map_err(|e| coded(exit::FAILURE, e.to_string()))?;
    ExportPrinted {
        out: out.display().to_string(),
        tree_size: head.tree_size,
        selected_entries: head.selected_entries,
        registry_entries: head.registry_entries.len() as u64,
        ledger_key: head.ledger_key,
    }
    .print(json);
    Ok(exit::ok())
}

#[derive(Args)]
pub struct VerifyExportArgs {
    /// Export directory or FILE.tar.
    path: PathBuf,
    /// The ledger's verifier key (C2SP vkey text, or a file holding it).
    #[arg(long)]
    ledger_key: String,
    /// A checkpoint note kept from earlier: prove the ledger was only appended to since.
    #[arg(long)]
    previous_checkpoint: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

pub fn verify_export(global: &Global, a: VerifyExportArgs) -> anyhow::Result<ExitCode> {
    let vkey = match std::fs::read_to_string(&a.ledger_key) {
        Ok(text) => text,
        Err(_) => a.ledger_key.clone(),
    };
    let verifier =
        NoteVerifier::from_vkey(vkey.trim()).map_err(|e| coded(exit::USAGE, format!("--ledger-key: {e}")))?;
    let previous = a
        .previous_checkpoint
        .as_ref()
        .map(|p| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display())))
        .transpose()?;
    let options = tidemark_export::VerifyOptions { verifier: &verifier, previous_checkpoint: previous.as_deref() };
    let mut progress = Progress::new("verified", "entries", None, global.quiet || a.json);
    let report = tidemark_export::verify_export_path(&a.path, &options, &mut |n| progress.set(n))
        .map_err(|e| coded(exit::USAGE, e.to_string()))?;
    progress.finish();
    if a.json {
        util::print_json(&report);
    } else {
        for c in &report.checks {
            println!("{} {}: {}", if c.ok { "ok  " } else { "FAIL" }, c.name, c.detail);
        }
        println!("{}", if report.ok() { "VERIFIED" } else { "NOT VERIFIED" });
    }
    Ok(ExitCode::from(if report.ok() { exit::OK } else { exit::VERIFY_FAILED }))
}

fn print_rows(rows: &[AuditRow], json_out: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json_out {
        writeln!(out, "{}", serde_json::to_string_pretty(rows)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "{:>8}  {:<27}  {:<18}  {:<20}  {:<22}  ACTOR (ROLES)",
        "SEQ", "RECORDED_AT", "ACTION", "KIND", "ARTIFACT"
    )?;
    for r in rows {
        writeln!(
            out,
            "{:>8}  {:<27}  {:<18}  {:<20}  {:<22}  {} ({})",
            r.seq,
            r.recorded_at.to_string(),
            r.action,
            r.kind,
            r.artifacts.first().map_or("-", String::as_str),
            r.actor_name.clone().unwrap_or_else(|| r.actor.to_string()),
            r.actor_roles.as_deref().unwrap_or("not enrolled"),
        )?;
    }
    Ok(())
}

#[derive(Args)]
pub struct CustodyArgs {
    /// The artifact, e.g. pg:main/wal/000000010000000000000003 or s3:uploads/v/KEY@VERSION.
    artifact: String,
    #[arg(long)]
    json: bool,
}

pub fn custody(global: &Global, a: CustodyArgs) -> anyhow::Result<ExitCode> {
    let rows = util::open_api(global)?.custody(&a.artifact).map_err(exit::ops_err)?;
    if rows.is_empty() && !a.json {
        eprintln!("no events touch {} (artifact references are listed in docs/formats.md)", a.artifact);
    }
    print_rows(&rows, a.json)?;
    Ok(exit::ok())
}

#[derive(Args)]
pub struct AuditArgs {
    #[arg(long)]
    actor: Option<String>,
    /// Repeatable.
    #[arg(long)]
    kind: Vec<String>,
    #[arg(long, value_parser = util::parse_time)]
    since: Option<Timestamp>,
    #[arg(long, value_parser = util::parse_time)]
    until: Option<Timestamp>,
    #[arg(long)]
    limit: Option<usize>,
    #[arg(long)]
    json: bool,
}

pub fn audit(global: &Global, a: AuditArgs) -> anyhow::Result<ExitCode> {
    let kinds = a
        .kind
        .iter()
        .map(|k| Kind::from_name(k).ok_or_else(|| coded(exit::USAGE, format!("unknown kind {k:?}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let actor = a.actor.as_deref().map(ActorId::parse).transpose().map_err(|e| coded(exit::USAGE, e.to_string()))?;
    let filter = EntryFilter { kinds, actor, since: a.since, until: a.until, limit: a.limit, ..EntryFilter::default() };
    print_rows(&util::open_api(global)?.audit(&filter).map_err(exit::ops_err)?, a.json)?;
    Ok(exit::ok())
}
