//! Ledger commands: init, append, log, verify, checkpoint, proof, schemas.

use std::io::{BufRead as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use tidemark_core::event::Event;
use tidemark_core::{ActorId, Entry, Kind, SignedEvent, Timestamp};
use tidemark_store::{Appended, EntryFilter, Genesis, Ledger, LedgerPaths, StoreError};

use crate::Global;
use crate::exit::{self, coded};
use crate::progress::Progress;
use crate::util::{self, print_json};

/// Events per append batch unless `--batch-size` says otherwise.
pub const DEFAULT_BATCH_SIZE: usize = 1000;

#[derive(Args, Default)]
pub struct InitArgs {
    /// Checkpoint origin (the ledger key's name), e.g. backups.example.com/ledger.
    /// Default: tidemark/<first 8 hex digits of the ledger key's id>.
    #[arg(long)]
    pub origin: Option<String>,
    /// Name of the first admin key.
    #[arg(long, default_value = "admin")]
    pub admin_name: String,
    /// Where to write the first admin's private key (default: LEDGER/keys/admin.key).
    #[arg(long)]
    pub admin_key_out: Option<PathBuf>,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub fn init(global: &Global, a: InitArgs) -> anyhow::Result<ExitCode> {
    create_ledger(&global.dir()?, a)?;
    Ok(exit::ok())
}

/// What `init` (and `serve` on first start) prints; `--json`: this object.
#[derive(serde::Serialize)]
struct Initialised {
    ledger: String,
    origin: String,
    ledger_key: String,
    admin_actor: String,
    admin_name: String,
    admin_key_file: String,
}

/// Creates a ledger in `dir` and prints where its keys went. Refuses (and
/// changes nothing) when `dir` already holds one.
pub fn create_ledger(dir: &std::path::Path, a: InitArgs) -> anyhow::Result<Ledger> {
    let paths = LedgerPaths::new(dir);
    if paths.db.exists() || paths.ledger_key.exists() {
        return Err(StoreError::AlreadyInitialised { dir: dir.to_path_buf() }.into());
    }
    let admin_out = a.admin_key_out.unwrap_or_else(|| paths.keys.join("admin.key"));
    let admin_pub = PathBuf::from(format!("{}.pub", admin_out.display()));
    if admin_out.exists() || admin_pub.exists() {
        return Err(coded(exit::USAGE, format!("{} already exists; refusing to overwrite a key", admin_out.display())));
    }
    let ledger_key = util::new_key("ledger");
    let admin = util::new_key(&a.admin_name);
    let origin = a.origin.unwrap_or_else(|| format!("tidemark/{}", &ledger_key.actor_id().to_string()[..8]));
    if let Some(parent) = admin_out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    tidemark_store::write_secret_key_file(&admin_out, &admin)?;
    std::fs::write(&admin_pub, admin.public_file().to_file_text())?;
    let genesis =
        Genesis { origin: &origin, ledger_key, admin_key: &admin, id: util::new_event_id(), now: util::now() };
    let ledger = match Ledger::create(dir, genesis) {
        Ok(l) => l,
        Err(e) => {
            let _ = std::fs::remove_file(&admin_out);
            let _ = std::fs::remove_file(&admin_pub);
            return Err(e.into());
        }
    };
    let done = Initialised {
        ledger: dir.display().to_string(),
        origin,
        ledger_key: ledger.note_verifier().to_vkey(),
        admin_actor: admin.actor_id().to_string(),
        admin_name: a.admin_name,
        admin_key_file: admin_out.display().to_string(),
    };
    if a.json {
        print_json(&done);
    } else {
        println!("initialised ledger {} (origin {})", done.ledger, done.origin);
        println!("ledger verifier key: {}", done.ledger_key);
        println!("admin key ({}, actor {}): {}", done.admin_name, done.admin_actor, done.admin_key_file);
        println!("keep the admin key off this host once you have enrolled other keys with it");
    }
    Ok(ledger)
}

#[derive(Args)]
pub struct AppendArgs {
    /// NDJSON input file, or - for standard input.
    #[arg(default_value = "-")]
    input: String,
    /// Key that signs unsigned drafts (lines without "sig").
    #[arg(long)]
    signer: Option<PathBuf>,
    /// Events per batch (default 1000 locally; over HTTP, the whole input in one
    /// request when it fits, so that it is all-or-nothing).
    #[arg(long)]
    batch_size: Option<usize>,
    /// One JSON object per input event instead of plain sequence numbers.
    #[arg(long)]
    json: bool,
}

/// Parses one NDJSON line: a signed event, or a draft completed and signed by `signer`.
fn parse_line(line: &str, signer: Option<&tidemark_core::SecretKey>) -> Result<SignedEvent, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("malformed JSON: {e}"))?;
    if value.get("sig").is_some() {
        return SignedEvent::from_value(value).map_err(|e| e.to_string());
    }
    let key = signer.ok_or("the event is unsigned (no \"sig\"): pass --signer KEY to sign drafts")?;
    sign_draft(value, key)
}

/// Completes a draft (`kind`, `body`, and `id` / `occurred_at` when the
/// writer chose them) and signs it.
pub fn sign_draft(draft: Value, key: &tidemark_core::SecretKey) -> Result<SignedEvent, String> {
    let event =
        Event::from_draft(draft, key.actor_id(), util::new_event_id(), util::now()).map_err(|e| e.to_string())?;
    let signed = event.sign(key);
    signed.check_size().map_err(|e| e.to_string())?;
    Ok(signed)
}

/// One batch of input lines, parsed and signed: the events and the line each came from.
struct ParsedBatch {
    events: Vec<SignedEvent>,
    lines: Vec<usize>,
    /// Input bytes the batch's lines took (progress).
    bytes: u64,
}

/// A line the input could not give an event for.
struct BadLine {
    line: usize,
    reason: String,
}

/// Reads the input in batches of `batch_size` non-empty lines and parses
/// and signs each batch on all cores, one batch ahead of the writer (a
/// channel of one batch): memory holds a few batches, never the input.
fn parse_batches(
    reader: Box<dyn std::io::BufRead + Send>,
    signer: Option<tidemark_core::SecretKey>,
    batch_size: usize,
) -> (std::sync::mpsc::Receiver<Result<ParsedBatch, BadLine>>, std::thread::JoinHandle<()>) {
    use rayon::prelude::*;
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let handle = std::thread::spawn(move || {
        let mut lines = reader.lines().enumerate();
        loop {
            let mut raw: Vec<(usize, String)> = Vec::with_capacity(batch_size);
            let mut bytes = 0u64;
            for (n, line) in lines.by_ref() {
                let line = match line {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = tx.send(Err(BadLine { line: n + 1, reason: format!("cannot read the input: {e}") }));
                        return;
                    }
                };
                bytes += line.len() as u64 + 1;
                if line.trim().is_empty() {
                    continue;
                }
                raw.push((n + 1, line));
                if raw.len() == batch_size {
                    break;
                }
            }
            if raw.is_empty() {
                return;
            }
            let parsed: Result<Vec<SignedEvent>, BadLine> = raw
                .par_iter()
                .map(|(n, line)| {
                    if line.len() > 2 * tidemark_core::event::MAX_EVENT_BYTES {
                        return Err(BadLine {
                            line: *n,
                            reason: format!("{} bytes is beyond the event size limit", line.len()),
                        });
                    }
                    parse_line(line, signer.as_ref()).map_err(|reason| BadLine { line: *n, reason })
                })
                .collect();
            let batch =
                parsed.map(|events| ParsedBatch { events, lines: raw.iter().map(|(n, _)| *n).collect(), bytes });
            let stop = batch.is_err();
            if tx.send(batch).is_err() || stop {
                return;
            }
        }
    });
    (rx, handle)
}

/// What `append` has recorded so far, for the message when it stops.
#[derive(Default)]
struct AppendTally {
    appended: u64,
    duplicates: u64,
    last_line: usize,
}

impl AppendTally {
    fn stopped(&self, line: usize, reason: impl std::fmt::Display) -> String {
        if self.appended + self.duplicates == 0 {
            return format!("line {line}: {reason}; nothing was appended");
        }
        format!(
            "line {line}: {reason}; nothing from its batch on was appended; the {} events before it (lines up to {}) are recorded ({} new, {} already there) — re-running the same input appends only what is missing",
            self.appended + self.duplicates,
            self.last_line,
            self.appended,
            self.duplicates
        )
    }
}

/// `tidemark append`: a pipeline — lines are read and parsed (drafts
/// signed) on all cores one batch ahead, signatures are batch-verified one
/// batch ahead of the writer, and each batch is written all-or-nothing
/// (one sled batch and flush locally; one request through a server).
/// Memory holds a few batches whatever the input's size. An input that
/// fits in one batch is all-or-nothing; a refusal in a later batch stops
/// there and says what before it is recorded.
pub fn append(global: &Global, a: AppendArgs) -> anyhow::Result<ExitCode> {
    // A stream of any length: memory follows what is live (docs/performance.md).
    crate::return_freed_memory_promptly();
    let batch_size = a.batch_size.unwrap_or(if global.url().is_some() {
        tidemark_store::MAX_BATCH_EVENTS
    } else {
        DEFAULT_BATCH_SIZE
    });
    if batch_size == 0 || batch_size > tidemark_store::MAX_BATCH_EVENTS {
        return Err(coded(exit::USAGE, format!("--batch-size must be 1..={}", tidemark_store::MAX_BATCH_EVENTS)));
    }
    let signer = a.signer.as_deref().map(util::read_key).transpose()?;
    let (reader, total): (Box<dyn std::io::BufRead + Send>, Option<u64>) = if a.input == "-" {
        (Box::new(std::io::BufReader::with_capacity(1 << 20, std::io::stdin())), None)
    } else {
        let file = std::fs::File::open(&a.input).with_context(|| format!("opening {}", a.input))?;
        let len = file.metadata().ok().map(|m| m.len());
        (Box::new(std::io::BufReader::with_capacity(1 << 20, file)), len)
    };
    let mut progress = Progress::bytes_of("appended", total, global.quiet);
    let (batches, reader_thread) = parse_batches(reader, signer, batch_size);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut tally = AppendTally::default();
    let mut print = |lines: &[usize], appended: &[Appended], tally: &mut AppendTally| -> anyhow::Result<()> {
        for (line, ap) in lines.iter().zip(appended) {
            if a.json {
                writeln!(out, "{}", json!({"line": line, "seq": ap.seq, "duplicate": ap.duplicate}))?;
            } else if ap.duplicate {
                writeln!(out, "{}\t(already recorded)", ap.seq)?;
            } else {
                writeln!(out, "{}", ap.seq)?;
            }
            if ap.duplicate {
                tally.duplicates += 1;
            } else {
                tally.appended += 1;
            }
            tally.last_line = *line;
        }
        out.flush()?;
        Ok(())
    };
    let mut on_batch = |b: &ParsedBatch, appended: &[Appended], tally: &mut AppendTally| {
        print(&b.lines, appended, tally)?;
        progress.inc(b.bytes);
        Ok(())
    };
    let result = match global.url() {
        Some(url) => append_stream_remote(global, url, batches, &mut on_batch, &mut tally),
        None => append_stream_local(global, batches, &mut on_batch, &mut tally),
    };
    let _ = reader_thread.join();
    progress.finish();
    result?;
    Ok(exit::ok())
}

type OnBatch<'a> = dyn FnMut(&ParsedBatch, &[Appended], &mut AppendTally) -> anyhow::Result<()> + 'a;

fn append_stream_local(
    global: &Global,
    batches: std::sync::mpsc::Receiver<Result<ParsedBatch, BadLine>>,
    on_batch: &mut OnBatch<'_>,
    tally: &mut AppendTally,
) -> anyhow::Result<()> {
    let mut ledger = util::open_ledger_with_cache(global, util::APPEND_CACHE_BYTES)?;
    // The ledger digests (batch-verifies) batch k+1 while batch k is written;
    // the lines of each batch wait here in order.
    let pending: std::sync::Mutex<std::collections::VecDeque<ParsedBatch>> = Default::default();
    let bad: std::sync::Mutex<Option<BadLine>> = Default::default();
    let (pending_in, bad_in) = (&pending, &bad);
    let events = std::iter::from_fn(move || match batches.recv().ok()? {
        Ok(mut b) => {
            let events = std::mem::take(&mut b.events);
            pending_in.lock().expect("pending lock").push_back(b);
            Some(events)
        }
        Err(line) => {
            *bad_in.lock().expect("bad lock") = Some(line);
            None
        }
    });
    let mut failure: Option<anyhow::Error> = None;
    ledger.append_stream(events, &util::now, |result| {
        let batch = pending.lock().expect("pending lock").pop_front().expect("a batch per result");
        let outcome = match result {
            Ok(appended) => on_batch(&batch, &appended, tally),
            Err(StoreError::Refused(r)) => {
                let line = batch.lines.get(r.index).copied().unwrap_or(0);
                Err(coded(exit::REFUSED, tally.stopped(line, &r.reason)))
            }
            Err(e) => Err(e.into()),
        };
        match outcome {
            Ok(()) => true,
            Err(e) => {
                failure = Some(e);
                false
            }
        }
    });
    if let Some(e) = failure {
        return Err(e);
    }
    if let Some(b) = bad.into_inner().expect("bad lock") {
        return Err(coded(exit::REFUSED, tally.stopped(b.line, b.reason)));
    }
    Ok(())
}

/// Through a server: one request per batch, the next batch parsed while one
/// is in flight. The spool (if any) is delivered first so order holds; when
/// the server cannot be reached and `--spool` is given, the rest of the
/// input goes to the spool and the command still succeeds.
fn append_stream_remote(
    global: &Global,
    url: &str,
    batches: std::sync::mpsc::Receiver<Result<ParsedBatch, BadLine>>,
    on_batch: &mut OnBatch<'_>,
    tally: &mut AppendTally,
) -> anyhow::Result<()> {
    let client = tidemark_client::Client::new(url, global.token.clone());
    let spool = global.spool.as_deref().map(tidemark_client::Spool::open).transpose()?;
    if let Some(s) = &spool {
        match crate::remote::deliver_spool_first(s, &client) {
            Ok(()) => {}
            Err(e) if e.is_retryable() => return spool_rest(global, s, None, &batches, &e, tally),
            Err(e) => return Err(e.into()),
        }
    }
    for batch in batches.iter() {
        let batch = batch.map_err(|b| coded(exit::REFUSED, tally.stopped(b.line, b.reason)))?;
        match client.append(&batch.events) {
            Ok(results) => {
                let appended: Vec<Appended> =
                    results.iter().map(|r| Appended { seq: r.seq, duplicate: r.duplicate }).collect();
                on_batch(&batch, &appended, tally)?;
            }
            Err(e) if e.is_retryable() && spool.is_some() => {
                return spool_rest(global, spool.as_ref().expect("checked"), Some(batch), &batches, &e, tally);
            }
            Err(tidemark_client::ClientError::Refused { detail, problem, .. }) => {
                let message = match problem.event_index.and_then(|i| batch.lines.get(i)) {
                    Some(line) => tally.stopped(*line, detail),
                    None => tally.stopped(batch.lines[0], format!("the batch starting here was refused: {detail}")),
                };
                return Err(coded(exit::REFUSED, message));
            }
            Err(e) => {
                return Err(coded(
                    exit::FAILURE,
                    format!("{e}; pass --spool DIR to keep events safe while the server is down"),
                ));
            }
        }
    }
    Ok(())
}

/// Stores `first` and every batch still to come in the spool.
fn spool_rest(
    global: &Global,
    spool: &tidemark_client::Spool,
    first: Option<ParsedBatch>,
    batches: &std::sync::mpsc::Receiver<Result<ParsedBatch, BadLine>>,
    why: &tidemark_client::ClientError,
    tally: &AppendTally,
) -> anyhow::Result<()> {
    let mut n = 0;
    for batch in first.into_iter().map(Ok).chain(batches.iter()) {
        let batch = batch.map_err(|b| coded(exit::REFUSED, tally.stopped(b.line, b.reason)))?;
        spool.store(&batch.events)?;
        n += batch.events.len();
    }
    eprintln!(
        "tidemark: {why}; spooled {n} events to {} (delivered by the next write or `tidemark spool flush`)",
        global.spool.as_ref().expect("spool given").display()
    );
    Ok(())
}

#[derive(Args)]
pub struct LogArgs {
    /// Only entries touching this artifact, e.g. pg:main/wal/000000010000000000000003.
    #[arg(long)]
    artifact: Option<String>,
    /// Only entries about this component, e.g. pg:main.
    #[arg(long)]
    component: Option<String>,
    /// Only these kinds (repeatable), e.g. --kind pg.wal_archived.
    #[arg(long)]
    kind: Vec<String>,
    /// Only entries signed by this actor id.
    #[arg(long)]
    actor: Option<String>,
    /// Recorded at or after this time (RFC 3339).
    #[arg(long, value_parser = util::parse_time)]
    since: Option<Timestamp>,
    /// Recorded at or before this time (RFC 3339).
    #[arg(long, value_parser = util::parse_time)]
    until: Option<Timestamp>,
    /// From this sequence number (inclusive).
    #[arg(long)]
    from_seq: Option<u64>,
    /// To this sequence number (inclusive).
    #[arg(long)]
    to_seq: Option<u64>,
    /// At most this many entries.
    #[arg(long)]
    limit: Option<usize>,
    /// NDJSON: one entry (its canonical JSON, the Merkle leaf) per line.
    #[arg(long)]
    json: bool,
}

fn summary(entry: &Entry) -> String {
    let body = &entry.event.to_value()["body"];
    let mut s = serde_json::to_string(body).unwrap_or_default();
    if s.len() > 90 {
        let mut cut = 87;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

pub fn log(global: &Global, a: LogArgs) -> anyhow::Result<ExitCode> {
    let kinds = a
        .kind
        .iter()
        .map(|k| {
            Kind::from_name(k)
                .ok_or_else(|| coded(exit::USAGE, format!("unknown kind {k:?}; kinds are listed in schemas/events/")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let actor = a.actor.as_deref().map(ActorId::parse).transpose().map_err(|e| coded(exit::USAGE, e.to_string()))?;
    let filter = EntryFilter {
        artifact: a.artifact,
        component: a.component,
        kinds,
        actor,
        since: a.since,
        until: a.until,
        from_seq: a.from_seq,
        to_seq: a.to_seq,
        limit: a.limit,
    };
    let mut out = std::io::stdout().lock();
    if !a.json {
        writeln!(out, "{:>8}  {:<27}  {:<20}  {:<14}  BODY", "SEQ", "RECORDED_AT", "KIND", "ACTOR")?;
    }
    let render = |e: &Entry, names: &std::collections::HashMap<ActorId, String>| {
        if a.json {
            return String::from_utf8(e.leaf_bytes()).expect("JSON is UTF-8");
        }
        let actor = names.get(&e.event.actor).cloned().unwrap_or_else(|| e.event.actor.to_string()[..12].to_owned());
        format!(
            "{:>8}  {:<27}  {:<20}  {:<14}  {}",
            e.seq,
            e.recorded_at.to_string(),
            e.event.kind().name(),
            actor,
            summary(e)
        )
    };
    let api = util::open_api(global)?;
    let names: std::collections::HashMap<ActorId, String> =
        api.keys().map_err(exit::ops_err)?.into_iter().map(|k| (k.actor, k.name.to_string())).collect();
    // Streamed as it is read; a closed pipe (`| head`) ends the reading.
    let mut failure: Option<std::io::Error> = None;
    api.entries(&filter, &mut |e| match writeln!(out, "{}", render(&e, &names)) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(err) => {
            failure = Some(err);
            Ok(false)
        }
    })
    .map_err(exit::ops_err)?;
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(exit::ok()),
    }
}

#[derive(Args)]
pub struct VerifyArgs {
    #[arg(long)]
    json: bool,
}

/// Verifies the ledger: locally, or — through a server's URL — on the
/// server, as of the moment asked (appends go on meanwhile).
pub fn verify(global: &Global, a: VerifyArgs) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    let mut progress = Progress::new("verified", "entries", None, global.quiet);
    let report = match global.client() {
        Some(client) => client
            .verify(&mut |done, size| {
                progress.set_total(size);
                progress.set(done);
            })
            .map_err(crate::remote::client_err)?,
        None => {
            let ledger = util::open_ledger(global)?;
            progress.set_total(ledger.size());
            ledger.verify(&mut |done| progress.set(done))?
        }
    };
    progress.finish();
    if a.json {
        print_json(&report);
    } else if let Some(f) = &report.failure {
        match f.seq {
            Some(seq) => println!("FAILED at entry {seq}: {}", f.reason),
            None => println!("FAILED: {}", f.reason),
        }
        println!("entries before the failure verified: {}", report.entries_checked);
    } else {
        println!(
            "ok: {} entries, {} checkpoints, root {} ({:.2}s)",
            report.size,
            report.checkpoints_checked,
            report.root,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(ExitCode::from(if report.ok() { exit::OK } else { exit::VERIFY_FAILED }))
}

#[derive(Args)]
pub struct CheckpointArgs {
    /// The checkpoint signed at exactly this tree size.
    #[arg(long)]
    size: Option<u64>,
    /// `{"origin","size","root" (base64),"note"}` instead of the signed note.
    #[arg(long)]
    json: bool,
}

/// Prints a checkpoint note, or with `--json` its parts and the note.
fn print_checkpoint(note: &str, json: bool) -> anyhow::Result<()> {
    if !json {
        print!("{note}");
        return Ok(());
    }
    let body = note.split("\n\n").next().unwrap_or("").to_owned() + "\n";
    let cp = tidemark_core::note::Checkpoint::parse_body(&body)
        .map_err(|e| coded(exit::FAILURE, format!("the checkpoint note: {e}")))?;
    use base64::Engine as _;
    print_json(&json!({"origin": cp.origin, "size": cp.size,
        "root": base64::engine::general_purpose::STANDARD.encode(cp.root), "note": note}));
    Ok(())
}

pub fn checkpoint(global: &Global, a: CheckpointArgs) -> anyhow::Result<ExitCode> {
    let note = util::open_api(global)?.checkpoint_note(a.size).map_err(exit::ops_err)?;
    print_checkpoint(&note, a.json)?;
    Ok(exit::ok())
}

#[derive(Subcommand)]
pub enum ProofCommand {
    /// Inclusion proof of one entry (field names as the transparency-dev proof vectors).
    Inclusion {
        #[arg(long)]
        seq: u64,
        /// Tree size to prove into (default: the current size).
        #[arg(long)]
        size: Option<u64>,
    },
    /// Consistency proof between two tree sizes.
    Consistency {
        #[arg(long)]
        from: u64,
        #[arg(long)]
        to: Option<u64>,
    },
}

pub fn proof(global: &Global, c: ProofCommand) -> anyhow::Result<ExitCode> {
    let api = util::open_api(global)?;
    match c {
        ProofCommand::Inclusion { seq, size } => print_json(&api.inclusion_proof(seq, size).map_err(exit::ops_err)?),
        ProofCommand::Consistency { from, to } => print_json(&api.consistency_proof(from, to).map_err(exit::ops_err)?),
    }
    Ok(exit::ok())
}

#[derive(Args)]
pub struct SchemasArgs {
    /// Directory to write into.
    #[arg(long, default_value = "schemas")]
    out: PathBuf,
    /// Compare instead of writing; exit 1 when a schema differs.
    #[arg(long)]
    check: bool,
}

pub fn schemas(a: SchemasArgs) -> anyhow::Result<ExitCode> {
    let mut stale = Vec::new();
    let config = ("config/tidemark.toml.json".to_owned(), tidemark_ops::agent::config::json_schema());
    for (rel, text) in tidemark_core::schema::all_schemas().into_iter().chain([config]) {
        let path = a.out.join(&rel);
        if a.check {
            if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                stale.push(rel);
            }
        } else {
            std::fs::create_dir_all(path.parent().expect("schema paths have parents"))?;
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    if !stale.is_empty() {
        return Err(coded(exit::FAILURE, format!("schemas out of date: {}; run `tidemark schemas`", stale.join(", "))));
    }
    Ok(exit::ok())
}
