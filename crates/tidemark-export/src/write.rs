//! Writing an export from an open ledger.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rayon::prelude::*;
use serde_json::json;
use tidemark_core::proof_file::TlogProof;
use tidemark_core::{Entry, Kind, Timestamp};
use tidemark_store::{EntryFilter, Ledger};

use crate::{EXPORT_FORMAT, ExportError, entry_file, io_err, proof_file};

pub use tidemark_core::api::ExportSelector as Selector;

fn selector_filter(selector: &Selector, last_seq: u64) -> EntryFilter {
    let mut f = EntryFilter { to_seq: Some(last_seq), ..EntryFilter::default() };
    match selector {
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

/// Where an export's files go: a directory, or a tar stream.
trait Sink {
    /// Writes a batch of files (a directory writes them on all cores).
    fn put_all(&mut self, files: Vec<(String, Vec<u8>)>) -> Result<(), ExportError>;
    /// Writes one file from a scratch file of known content.
    fn put_file(&mut self, rel: &str, from: &Path) -> Result<(), ExportError>;
}

struct DirSink<'a> {
    dir: &'a Path,
}

impl Sink for DirSink<'_> {
    fn put_all(&mut self, files: Vec<(String, Vec<u8>)>) -> Result<(), ExportError> {
        files.par_iter().try_for_each(|(rel, bytes)| {
            let path = self.dir.join(rel);
            std::fs::write(&path, bytes).map_err(io_err(&path))
        })
    }

    fn put_file(&mut self, rel: &str, from: &Path) -> Result<(), ExportError> {
        let to = self.dir.join(rel);
        std::fs::rename(from, &to).map_err(io_err(&to))
    }
}

/// A tar of `export/…`, written as the files are produced (deterministic
/// headers: mode 0644/0755, no owner, mtime 0), so nothing is staged.
struct TarSink<W: std::io::Write> {
    builder: tar::Builder<W>,
    out: PathBuf,
}

impl<W: std::io::Write> TarSink<W> {
    fn header(size: u64, dir: bool) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_size(size);
        h.set_mode(if dir { 0o755 } else { 0o644 });
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(if dir { tar::EntryType::Directory } else { tar::EntryType::Regular });
        h
    }

    fn new(out: W, name: PathBuf) -> Result<TarSink<W>, ExportError> {
        let mut sink = TarSink { builder: tar::Builder::new(out), out: name };
        for d in ["export/", "export/consistency/", "export/entries/", "export/proofs/"] {
            let mut h = Self::header(0, true);
            sink.builder.append_data(&mut h, d, std::io::empty()).map_err(io_err(&sink.out))?;
        }
        Ok(sink)
    }

    fn finish(self) -> Result<W, ExportError> {
        let out = self.out.clone();
        self.builder.into_inner().map_err(io_err(&out))
    }
}

impl<W: std::io::Write> Sink for TarSink<W> {
    fn put_all(&mut self, files: Vec<(String, Vec<u8>)>) -> Result<(), ExportError> {
        for (rel, bytes) in files {
            let mut h = Self::header(bytes.len() as u64, false);
            self.builder.append_data(&mut h, format!("export/{rel}"), bytes.as_slice()).map_err(io_err(&self.out))?;
        }
        Ok(())
    }

    fn put_file(&mut self, rel: &str, from: &Path) -> Result<(), ExportError> {
        let file = std::fs::File::open(from).map_err(io_err(from))?;
        let size = file.metadata().map_err(io_err(from))?.len();
        let mut h = Self::header(size, false);
        self.builder.append_data(&mut h, format!("export/{rel}"), file).map_err(io_err(&self.out))?;
        std::fs::remove_file(from).map_err(io_err(from))
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
    scratch: &'a Path,
    sink: &'a mut dyn Sink,
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

/// The MANIFEST line of a file.
fn manifest_line(rel: &str, bytes: &[u8]) -> String {
    format!("{}  {}  {rel}\n", blake3::hash(bytes).to_hex(), bytes.len())
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
        let (ledger, tree_size, note) = (self.ledger, self.tree_size, self.note.as_str());
        let registry = ledger.registry();
        type Rendered = ((String, Vec<u8>), (String, Vec<u8>), String);
        let rendered: Vec<Result<Rendered, ExportError>> = self
            .buffer
            .par_iter()
            .map(|(e, selected)| {
                let leaf = e.leaf_bytes();
                let (_, hashes, _) = ledger.inclusion_proof(e.seq, Some(tree_size))?;
                let proof = TlogProof { extra: None, index: e.seq, hashes, checkpoint: note.to_owned() };
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
                Ok(((entry_file(e.seq), leaf), (proof_file(e.seq), proof.to_text().into_bytes()), row))
            })
            .collect();
        let mut files = Vec::with_capacity(2 * rendered.len());
        for r in rendered {
            let ((entry_rel, leaf), (proof_rel, proof), row) = r?;
            let scratch = self.scratch;
            self.entries_manifest.write_all(manifest_line(&entry_rel, &leaf).as_bytes()).map_err(io_err(scratch))?;
            self.proofs_manifest.write_all(manifest_line(&proof_rel, &proof).as_bytes()).map_err(io_err(scratch))?;
            self.summary.write_all(row.as_bytes()).map_err(io_err(scratch))?;
            files.push((entry_rel, leaf));
            files.push((proof_rel, proof));
            self.files += 2;
        }
        // Entries' files go in sequence order (within the batch, entries before proofs).
        files.sort_by(|a, b| a.0.cmp(&b.0));
        self.sink.put_all(files)?;
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
    write_into(ledger, selector, dir, &mut DirSink { dir }, previous_sizes, now, progress)
}

/// Refuses previous checkpoint sizes that no consistency proof can start
/// from (outside `1..=tree_size`), before anything is written.
pub fn check_previous_sizes(tree_size: u64, previous_sizes: &[u64]) -> Result<(), ExportError> {
    match previous_sizes.iter().find(|m| **m == 0 || **m > tree_size) {
        Some(m) => Err(ExportError::BadRequest(format!("previous checkpoint size {m} is not in 1..={tree_size}"))),
        None => Ok(()),
    }
}

/// Writes an export of `selector` as a tar of `export/…` into `out`, file
/// by file as they are produced (memory stays bounded; only the manifests
/// are kept in a scratch directory under `scratch_parent` until the end).
/// Returns `out` once the tar is complete.
pub fn write_export_tar<W: std::io::Write>(
    ledger: &Ledger,
    selector: &Selector,
    out: W,
    scratch_parent: &Path,
    previous_sizes: &[u64],
    now: Timestamp,
    progress: &mut dyn FnMut(u64),
) -> Result<(ExportSummary, W), ExportError> {
    let scratch = tempfile::tempdir_in(scratch_parent).map_err(io_err(scratch_parent))?;
    let mut sink = TarSink::new(out, PathBuf::from("export.tar"))?;
    let summary = write_into(ledger, selector, scratch.path(), &mut sink, previous_sizes, now, progress)?;
    Ok((summary, sink.finish()?))
}

fn write_into(
    ledger: &Ledger,
    selector: &Selector,
    scratch: &Path,
    sink: &mut dyn Sink,
    previous_sizes: &[u64],
    now: Timestamp,
    progress: &mut dyn FnMut(u64),
) -> Result<ExportSummary, ExportError> {
    let (cp, note) = ledger.latest_checkpoint()?;
    let tree_size = cp.size;
    let last = tree_size - 1;
    check_previous_sizes(tree_size, previous_sizes)?;
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
        let p = scratch.join(name);
        Ok(std::io::BufWriter::new(std::fs::File::create(&p).map_err(io_err(&p))?))
    };
    let mut w = Writer {
        scratch,
        sink: &mut *sink,
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
        .query(&selector_filter(selector, last), |e| {
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
        f.flush().map_err(io_err(scratch))?;
    }
    drop((entries_manifest, proofs_manifest, summary));

    let mut head = String::new();
    let mut put = |rel: &str, bytes: Vec<u8>| -> Result<String, ExportError> {
        let line = manifest_line(rel, &bytes);
        sink.put_all(vec![(rel.to_owned(), bytes)])?;
        Ok(line)
    };
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
    head.push_str(&put(
        "EXPORT.json",
        (serde_json::to_string_pretty(&export_json).expect("JSON") + "\n").into_bytes(),
    )?);
    let summary_head = format!(
        "# tidemark export\n\n* ledger: `{}` (verifier key `{}`)\n* checkpoint: tree size {tree_size}, root `{}`\n* selection: `{}` — {selected} entries, plus {} key-registry entries that authorise their signers\n* exported at {now}\n\nEvery entry below is signed by its actor and proven into the checkpoint; check it all with\n`tidemark verify-export <this directory> --ledger-key <verifier key>`.\n\n| seq | recorded at | actor (roles) | kind | artifact or component |\n|---|---|---|---|---|\n",
        ledger.origin(),
        ledger.note_verifier().to_vkey(),
        B64.encode(cp.root),
        selector.to_json(),
        registry_only.len(),
    );
    let summary_path = scratch.join(".summary");
    let summary_line =
        concat_file(&summary_path, "SUMMARY.md", summary_head.as_bytes(), &scratch.join(".summary-rows"))?;
    sink.put_file("SUMMARY.md", &summary_path)?;
    head.push_str(&summary_line);
    let mut put = |rel: &str, bytes: Vec<u8>| -> Result<String, ExportError> {
        let line = manifest_line(rel, &bytes);
        sink.put_all(vec![(rel.to_owned(), bytes)])?;
        Ok(line)
    };
    head.push_str(&put("checkpoint.txt", note.clone().into_bytes())?);
    let mut consistency_lines = Vec::new();
    let mut sizes = previous_sizes.to_vec();
    sizes.sort_unstable();
    sizes.dedup();
    for m in sizes {
        let (_, proof, root1, root2) = ledger.consistency_proof(m, Some(tree_size))?;
        let body = json!({"size1": m, "size2": tree_size, "root1": B64.encode(root1), "root2": B64.encode(root2),
            "proof": proof.iter().map(|h| B64.encode(h)).collect::<Vec<_>>()});
        consistency_lines
            .push(put(&format!("consistency/{m:012}-{tree_size:012}.json"), (body.to_string() + "\n").into_bytes())?);
    }
    // MANIFEST: sorted by path bytes: EXPORT.json, SUMMARY.md, checkpoint.txt, consistency/, entries/, proofs/.
    let manifest_path = scratch.join(".manifest");
    let mut manifest = std::io::BufWriter::new(std::fs::File::create(&manifest_path).map_err(io_err(&manifest_path))?);
    let mut hasher = blake3::Hasher::new();
    let mut emit = |bytes: &[u8]| -> Result<(), ExportError> {
        hasher.update(bytes);
        manifest.write_all(bytes).map_err(io_err(scratch))
    };
    emit(head.as_bytes())?;
    for l in &consistency_lines {
        emit(l.as_bytes())?;
    }
    for part in [".manifest-entries", ".manifest-proofs"] {
        let p = scratch.join(part);
        copy_chunks(&p, &mut emit)?;
        std::fs::remove_file(&p).map_err(io_err(&p))?;
    }
    manifest.flush().map_err(io_err(scratch))?;
    drop(manifest);
    sink.put_file("MANIFEST", &manifest_path)?;
    let digest = *hasher.finalize().as_bytes();
    let sig = ledger.sign_export_manifest(&digest);
    sink.put_all(vec![("MANIFEST.sig".to_owned(), sig.into_bytes())])?;
    Ok(ExportSummary {
        tree_size,
        selected,
        registry_only: registry_only.len() as u64,
        files: files + 3 + consistency_lines.len() as u64 + 2,
    })
}

/// Feeds a file to `emit` in 64 KiB pieces.
fn copy_chunks(p: &Path, emit: &mut dyn FnMut(&[u8]) -> Result<(), ExportError>) -> Result<(), ExportError> {
    let mut f = std::io::BufReader::new(std::fs::File::open(p).map_err(io_err(p))?);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = std::io::Read::read(&mut f, &mut buf).map_err(io_err(p))?;
        if n == 0 {
            return Ok(());
        }
        emit(&buf[..n])?;
    }
}

/// Writes `head` then the content of `tail` (removed afterwards) into `out`,
/// and returns the MANIFEST line of the result under the name `rel`.
fn concat_file(out: &Path, rel: &str, head: &[u8], tail: &Path) -> Result<String, ExportError> {
    let mut w = std::io::BufWriter::new(std::fs::File::create(out).map_err(io_err(out))?);
    let mut hasher = blake3::Hasher::new();
    let mut len = 0u64;
    let mut emit = |bytes: &[u8]| -> Result<(), ExportError> {
        hasher.update(bytes);
        len += bytes.len() as u64;
        w.write_all(bytes).map_err(io_err(out))
    };
    emit(head)?;
    copy_chunks(tail, &mut emit)?;
    w.flush().map_err(io_err(out))?;
    std::fs::remove_file(tail).map_err(io_err(tail))?;
    Ok(format!("{}  {len}  {rel}\n", hasher.finalize().to_hex()))
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
    // Written beside `out` and renamed into place: a failed export leaves no partial tar.
    let partial = tempfile::NamedTempFile::new_in(&parent).map_err(io_err(&parent))?;
    let file = std::io::BufWriter::new(partial.as_file().try_clone().map_err(io_err(out))?);
    let (summary, file) = write_export_tar(ledger, selector, file, &parent, previous_sizes, now, progress)?;
    file.into_inner().map_err(|e| io_err(out)(e.into_error()))?.sync_all().map_err(io_err(out))?;
    partial.persist_noclobber(out).map_err(|e| io_err(out)(e.error))?;
    Ok(summary)
}
