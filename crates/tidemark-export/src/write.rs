//! Writing an export from an open ledger.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rayon::prelude::*;
use serde_json::json;
use tidemark_core::proof_file::TlogProof;
use tidemark_core::{ActorId, Entry, Kind, Timestamp};
use tidemark_store::{EntryFilter, Ledger};

use crate::{EXPORT_FORMAT, ExportError, entry_file, io_err, proof_file};

/// Which entries an export holds (plus the key-registry entries that
/// authorise their signers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    All,
    Artifact(String),
    Component(String),
    Actor(ActorId),
    /// On the ledger's recorded_at clock, both inclusive.
    Time {
        since: Option<Timestamp>,
        until: Option<Timestamp>,
    },
}

impl Selector {
    fn filter(&self, last_seq: u64) -> EntryFilter {
        let mut f = EntryFilter { to_seq: Some(last_seq), ..EntryFilter::default() };
        match self {
            Selector::All => {}
            Selector::Artifact(a) => f.artifact = Some(a.clone()),
            Selector::Component(c) => f.component = Some(c.clone()),
            Selector::Actor(a) => f.actor = Some(*a),
            Selector::Time { since, until } => {
                f.since = *since;
                f.until = *until;
            }
        }
        f
    }

    fn to_json(&self) -> serde_json::Value {
        match self {
            Selector::All => json!({"type": "all"}),
            Selector::Artifact(a) => json!({"type": "artifact", "value": a}),
            Selector::Component(c) => json!({"type": "component", "value": c}),
            Selector::Actor(a) => json!({"type": "actor", "value": a.to_string()}),
            Selector::Time { since, until } => {
                json!({"type": "time", "since": since.map(|t| t.to_string()), "until": until.map(|t| t.to_string())})
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ExportSummary {
    pub tree_size: u64,
    pub selected: u64,
    /// Key-registry entries included only to authorise signers.
    pub registry_only: u64,
    pub files: u64,
}

struct Writer<'a> {
    dir: &'a Path,
    ledger: &'a Ledger,
    tree_size: u64,
    note: String,
    entries_manifest: std::io::BufWriter<std::fs::File>,
    proofs_manifest: std::io::BufWriter<std::fs::File>,
    summary: std::io::BufWriter<std::fs::File>,
    files: u64,
    buffer: Vec<(Entry, bool)>,
}

/// Entries rendered together on all cores.
const RENDER_CHUNK: usize = 2048;

fn put(dir: &Path, rel: &str, bytes: &[u8]) -> Result<String, ExportError> {
    let path = dir.join(rel);
    std::fs::write(&path, bytes).map_err(io_err(&path))?;
    Ok(format!("{}  {}  {rel}\n", blake3::hash(bytes).to_hex(), bytes.len()))
}

impl Writer<'_> {
    fn entry(&mut self, e: Entry, selected: bool) -> Result<(), ExportError> {
        self.buffer.push((e, selected));
        if self.buffer.len() >= RENDER_CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the buffered entries' files in parallel, then their manifest
    /// and summary lines in order.
    fn flush(&mut self) -> Result<(), ExportError> {
        let (ledger, dir, tree_size, note) = (self.ledger, self.dir, self.tree_size, self.note.as_str());
        let registry = ledger.registry();
        let rendered: Vec<Result<(String, String, String), ExportError>> = self
            .buffer
            .par_iter()
            .map(|(e, selected)| {
                let entry_line = put(dir, &entry_file(e.seq), &e.leaf_bytes())?;
                let (_, hashes, _) = ledger.inclusion_proof(e.seq, Some(tree_size))?;
                let proof = TlogProof { extra: None, index: e.seq, hashes, checkpoint: note.to_owned() };
                let proof_line = put(dir, &proof_file(e.seq), proof.to_text().as_bytes())?;
                let who = registry
                    .get(&e.event.actor)
                    .map_or_else(|| e.event.actor.to_string(), |k| format!("{} ({})", k.name, k.roles_text()));
                let what = e
                    .event
                    .body
                    .artifacts()
                    .first()
                    .cloned()
                    .or_else(|| e.event.body.components().first().cloned())
                    .unwrap_or_default();
                let mark = if *selected { "" } else { " *(authorises a signer)*" };
                let row =
                    format!("| {} | {} | {who} | `{}` | {what}{mark} |\n", e.seq, e.recorded_at, e.event.kind().name());
                Ok((entry_line, proof_line, row))
            })
            .collect();
        for r in rendered {
            let (entry_line, proof_line, row) = r?;
            self.entries_manifest.write_all(entry_line.as_bytes()).map_err(io_err(self.dir))?;
            self.proofs_manifest.write_all(proof_line.as_bytes()).map_err(io_err(self.dir))?;
            self.summary.write_all(row.as_bytes()).map_err(io_err(self.dir))?;
            self.files += 2;
        }
        self.buffer.clear();
        Ok(())
    }
}

/// Writes an export of `selector` into `dir` (created; it must not exist or be empty).
/// `previous_sizes` are tree sizes of checkpoints the auditor kept: a
/// consistency proof from each to the export's checkpoint is included.
pub fn write_export(
    ledger: &Ledger,
    selector: &Selector,
    dir: &Path,
    previous_sizes: &[u64],
    now: Timestamp,
    progress: &mut dyn FnMut(u64),
) -> Result<ExportSummary, ExportError> {
    if dir.exists() && std::fs::read_dir(dir).map_err(io_err(dir))?.next().is_some() {
        return Err(ExportError::BadRequest(format!("{} exists and is not empty", dir.display())));
    }
    for sub in ["entries", "proofs", "consistency"] {
        std::fs::create_dir_all(dir.join(sub)).map_err(io_err(dir))?;
    }
    let (cp, note) = ledger.latest_checkpoint()?;
    let tree_size = cp.size;
    let last = tree_size - 1;
    // Every registry entry up to the checkpoint: a verifier replays them all,
    // so a revocation before a selected entry cannot be left out.
    let mut registry: BTreeMap<u64, Entry> = BTreeMap::new();
    let filter = EntryFilter {
        kinds: vec![Kind::LedgerGenesis, Kind::KeyEnrolled, Kind::KeyRevoked],
        to_seq: Some(last),
        ..EntryFilter::default()
    };
    ledger.query(&filter, |e| {
        registry.insert(e.seq, e);
        Ok(())
    })?;
    let tmp = |name: &str| -> Result<std::io::BufWriter<std::fs::File>, ExportError> {
        let p = dir.join(name);
        Ok(std::io::BufWriter::new(std::fs::File::create(&p).map_err(io_err(&p))?))
    };
    let mut w = Writer {
        dir,
        ledger,
        tree_size,
        note: note.clone(),
        entries_manifest: tmp(".manifest-entries")?,
        proofs_manifest: tmp(".manifest-proofs")?,
        summary: tmp(".summary-rows")?,
        files: 0,
        buffer: Vec::with_capacity(RENDER_CHUNK),
    };
    let mut selected = 0u64;
    let mut registry_only = Vec::new();
    let mut pending = registry.into_iter().peekable();
    let mut failure: Option<ExportError> = None;
    ledger
        .query(&selector.filter(last), |e| {
            let result = (|| {
                while let Some((seq, _)) = pending.peek() {
                    if *seq >= e.seq {
                        break;
                    }
                    let (seq, r) = pending.next().expect("peeked");
                    registry_only.push(seq);
                    w.entry(r, false)?;
                }
                if pending.peek().is_some_and(|(seq, _)| *seq == e.seq) {
                    pending.next();
                }
                w.entry(e.clone(), true)?;
                selected += 1;
                if selected.is_multiple_of(10_000) {
                    progress(selected);
                }
                Ok::<(), ExportError>(())
            })();
            if let Err(err) = result {
                failure.get_or_insert(err);
                return Err(tidemark_store::StoreError::BadRequest("export failed".into()));
            }
            Ok(())
        })
        .map_err(|e| failure.take().unwrap_or(ExportError::Store(e)))?;
    for (seq, r) in pending {
        registry_only.push(seq);
        w.entry(r, false)?;
    }
    w.flush()?;
    progress(selected);
    let Writer { mut entries_manifest, mut proofs_manifest, mut summary, files, .. } = w;
    for f in [&mut entries_manifest, &mut proofs_manifest, &mut summary] {
        f.flush().map_err(io_err(dir))?;
    }
    drop((entries_manifest, proofs_manifest, summary));

    let mut head = String::new();
    let put = |rel: &str, bytes: &[u8]| put(dir, rel, bytes);
    let export_json = json!({
        "format": EXPORT_FORMAT,
        "origin": ledger.origin(),
        "ledger_key": ledger.note_verifier().to_vkey(),
        "tree_size": tree_size,
        "root": B64.encode(cp.root),
        "selector": selector.to_json(),
        "selected_entries": selected,
        "registry_entries": registry_only,
        "consistency_from": previous_sizes,
        "created_at": now.to_string(),
    });
    head.push_str(&put("EXPORT.json", (serde_json::to_string_pretty(&export_json).expect("JSON") + "\n").as_bytes())?);
    let rows_path = dir.join(".summary-rows");
    let rows = std::fs::read(&rows_path).map_err(io_err(&rows_path))?;
    let mut summary_text = format!(
        "# tidemark export\n\n* ledger: `{}` (verifier key `{}`)\n* checkpoint: tree size {tree_size}, root `{}`\n* selection: `{}` — {selected} entries, plus {} key-registry entries that authorise their signers\n* exported at {now}\n\nEvery entry below is signed by its actor and proven into the checkpoint; check it all with\n`tidemark verify-export <this directory> --ledger-key <verifier key>`.\n\n| seq | recorded at | actor (roles) | kind | artifact or component |\n|---|---|---|---|---|\n",
        ledger.origin(),
        ledger.note_verifier().to_vkey(),
        B64.encode(cp.root),
        selector.to_json(),
        registry_only.len(),
    )
    .into_bytes();
    summary_text.extend_from_slice(&rows);
    head.push_str(&put("SUMMARY.md", &summary_text)?);
    std::fs::remove_file(&rows_path).map_err(io_err(&rows_path))?;
    head.push_str(&put("checkpoint.txt", note.as_bytes())?);
    let mut consistency_lines = Vec::new();
    let mut sizes = previous_sizes.to_vec();
    sizes.sort_unstable();
    sizes.dedup();
    for m in sizes {
        if m == 0 || m > tree_size {
            return Err(ExportError::BadRequest(format!("previous checkpoint size {m} is not in 1..={tree_size}")));
        }
        let (_, proof, root1, root2) = ledger.consistency_proof(m, Some(tree_size))?;
        let body = json!({"size1": m, "size2": tree_size, "root1": B64.encode(root1), "root2": B64.encode(root2),
            "proof": proof.iter().map(|h| B64.encode(h)).collect::<Vec<_>>()});
        consistency_lines
            .push(put(&format!("consistency/{m:012}-{tree_size:012}.json"), (body.to_string() + "\n").as_bytes())?);
    }
    // MANIFEST: sorted by path bytes: EXPORT.json, SUMMARY.md, checkpoint.txt, consistency/, entries/, proofs/.
    let manifest_path = dir.join("MANIFEST");
    let mut manifest = std::io::BufWriter::new(std::fs::File::create(&manifest_path).map_err(io_err(&manifest_path))?);
    let mut hasher = blake3::Hasher::new();
    let mut emit = |bytes: &[u8]| -> Result<(), ExportError> {
        hasher.update(bytes);
        manifest.write_all(bytes).map_err(io_err(dir))
    };
    emit(head.as_bytes())?;
    for l in &consistency_lines {
        emit(l.as_bytes())?;
    }
    for part in [".manifest-entries", ".manifest-proofs"] {
        let p = dir.join(part);
        let mut f = std::io::BufReader::new(std::fs::File::open(&p).map_err(io_err(&p))?);
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = std::io::Read::read(&mut f, &mut buf).map_err(io_err(&p))?;
            if n == 0 {
                break;
            }
            emit(&buf[..n])?;
        }
        std::fs::remove_file(&p).map_err(io_err(&p))?;
    }
    manifest.flush().map_err(io_err(dir))?;
    let digest = *hasher.finalize().as_bytes();
    let sig = ledger.sign_export_manifest(&digest);
    std::fs::write(dir.join("MANIFEST.sig"), sig).map_err(io_err(dir))?;
    Ok(ExportSummary {
        tree_size,
        selected,
        registry_only: registry_only.len() as u64,
        files: files + 3 + consistency_lines.len() as u64 + 2,
    })
}

/// Writes to `out`: a directory, or — when it ends in `.tar` — a tar of one.
pub fn write_export_path(
    ledger: &Ledger,
    selector: &Selector,
    out: &Path,
    previous_sizes: &[u64],
    now: Timestamp,
    progress: &mut dyn FnMut(u64),
) -> Result<ExportSummary, ExportError> {
    if out.extension().is_none_or(|e| e != "tar") {
        return write_export(ledger, selector, out, previous_sizes, now, progress);
    }
    if out.exists() {
        return Err(ExportError::BadRequest(format!("{} exists", out.display())));
    }
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).map_or(PathBuf::from("."), Path::to_path_buf);
    let staging = tempfile::tempdir_in(&parent).map_err(io_err(&parent))?;
    let root = staging.path().join("export");
    let summary = write_export(ledger, selector, &root, previous_sizes, now, progress)?;
    let file = std::fs::File::create(out).map_err(io_err(out))?;
    let mut builder = tar::Builder::new(std::io::BufWriter::new(file));
    builder.mode(tar::HeaderMode::Deterministic);
    builder.append_dir_all("export", &root).map_err(io_err(out))?;
    builder.into_inner().and_then(|mut w| w.flush()).map_err(io_err(out))?;
    Ok(summary)
}
