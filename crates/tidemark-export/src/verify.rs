//! `tidemark verify-export`: everything checked offline, from the export
//! and the ledger's public key alone.

use std::io::BufRead as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rayon::prelude::*;
use serde_json::Value;
use tidemark_core::Entry;
use tidemark_core::keys::{PublicKey, Signature, event_signing_message, first_failing_signature};
use tidemark_core::merkle::{self, Hash, verify_consistency, verify_inclusion};
use tidemark_core::note::{Checkpoint, NoteVerifier};
use tidemark_core::proof_file::TlogProof;
use tidemark_core::registry::Registry;

use crate::{EXPORT_FORMAT, ExportError, io_err, proof_file};

/// Signatures verified together.
const SIGNATURE_CHUNK: usize = 4096;

/// One verdict.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VerifyReport {
    pub checks: Vec<Check>,
    pub entries: u64,
    pub tree_size: u64,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }
}

pub struct VerifyOptions<'a> {
    pub verifier: &'a NoteVerifier,
    /// A checkpoint note the auditor kept from earlier.
    pub previous_checkpoint: Option<&'a str>,
}

struct Fail(String);

fn fail<T>(s: impl Into<String>) -> Result<T, Fail> {
    Err(Fail(s.into()))
}

struct ManifestLine {
    digest: String,
    size: u64,
    path: String,
}

fn parse_manifest_line(line: &str) -> Result<ManifestLine, Fail> {
    let mut parts = line.splitn(3, "  ");
    let (Some(digest), Some(size), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
        return fail(format!("MANIFEST: malformed line {line:?}"));
    };
    let size: u64 = size.parse().map_err(|_| Fail(format!("MANIFEST: bad size in {line:?}")))?;
    let safe = !path.is_empty()
        && !path.starts_with('/')
        && path.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
        && path.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'/'));
    if digest.len() != 64 || !safe {
        return fail(format!("MANIFEST: malformed line {line:?}"));
    }
    Ok(ManifestLine { digest: digest.to_owned(), size, path: path.to_owned() })
}

fn read(dir: &Path, rel: &str) -> Result<Vec<u8>, Fail> {
    std::fs::read(dir.join(rel)).map_err(|e| Fail(format!("{rel}: {e}")))
}

fn count_files(dir: &Path) -> std::io::Result<u64> {
    let mut n = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let t = e.file_type()?;
        n += if t.is_dir() { count_files(&e.path())? } else { 1 };
    }
    Ok(n)
}

fn manifest_lines(dir: &Path) -> Result<impl Iterator<Item = Result<ManifestLine, Fail>>, Fail> {
    let f = std::fs::File::open(dir.join("MANIFEST")).map_err(|e| Fail(format!("MANIFEST: {e}")))?;
    Ok(std::io::BufReader::new(f)
        .lines()
        .map(|l| l.map_err(|e| Fail(format!("MANIFEST: {e}"))).and_then(|l| parse_manifest_line(&l))))
}

/// A: the manifest is the one the ledger signed.
fn check_manifest_signature(dir: &Path, o: &VerifyOptions<'_>) -> Result<String, Fail> {
    let sig = String::from_utf8(read(dir, "MANIFEST.sig")?).map_err(|_| Fail("MANIFEST.sig is not UTF-8".into()))?;
    let body = o.verifier.open(&sig).map_err(|e| Fail(format!("MANIFEST.sig: {e}")))?;
    let lines: Vec<&str> = body.trim_end_matches('\n').split('\n').collect();
    if lines.len() != 3 || lines[0] != EXPORT_FORMAT || lines[1] != o.verifier.name {
        return fail("MANIFEST.sig: not a tidemark-export-v1 manifest signature of this ledger");
    }
    let actual = blake3::hash(&read(dir, "MANIFEST")?).to_hex().to_string();
    if actual != lines[2] {
        return fail(format!("MANIFEST: blake3 {actual} differs from the signed {}", lines[2]));
    }
    Ok(format!("signed by {} ({})", o.verifier.name, hex::encode(o.verifier.key_id())))
}

/// B: every file is listed with its digest, nothing is missing or added.
fn check_file(dir: &Path, line: &ManifestLine) -> Result<(), Fail> {
    let bytes =
        read(dir, &line.path).map_err(|Fail(m)| Fail(format!("{m} (listed in MANIFEST, missing from the export)")))?;
    if bytes.len() as u64 != line.size || blake3::hash(&bytes).to_hex().as_str() != line.digest {
        return fail(format!("{}: contents differ from the MANIFEST digest", line.path));
    }
    Ok(())
}

/// Lines read and checked together (bounded memory, all cores).
const LINE_CHUNK: usize = 4096;

fn chunks_of<T, E>(iter: impl Iterator<Item = Result<T, E>>, n: usize) -> impl Iterator<Item = Result<Vec<T>, E>> {
    let mut iter = iter.peekable();
    std::iter::from_fn(move || {
        iter.peek()?;
        let mut chunk = Vec::with_capacity(n);
        for item in iter.by_ref().take(n) {
            match item {
                Ok(x) => chunk.push(x),
                Err(e) => return Some(Err(e)),
            }
        }
        Some(Ok(chunk))
    })
}

/// B: every file is listed with its digest, nothing is missing or added.
fn check_files(dir: &Path) -> Result<String, Fail> {
    let mut previous: Option<String> = None;
    let mut listed = 0u64;
    for chunk in chunks_of(manifest_lines(dir)?, LINE_CHUNK) {
        let chunk = chunk?;
        for line in &chunk {
            if previous.as_ref().is_some_and(|p| *p >= line.path) {
                return fail(format!("MANIFEST: {} is out of order or listed twice", line.path));
            }
            previous = Some(line.path.clone());
        }
        // Entry and proof files are hashed by the entries check, which reads them anyway.
        let results: Vec<Result<(), Fail>> = chunk
            .par_iter()
            .filter(|line| !line.path.starts_with("entries/") && !line.path.starts_with("proofs/"))
            .map(|line| check_file(dir, line))
            .collect();
        if let Some(Err(f)) = results.into_iter().find(Result::is_err) {
            return Err(f);
        }
        listed += chunk.len() as u64;
    }
    let present = count_files(dir).map_err(|e| Fail(e.to_string()))?;
    if present != listed + 2 {
        return fail(format!(
            "the export holds {present} files but MANIFEST lists {listed} (+ MANIFEST and MANIFEST.sig): a file was added"
        ));
    }
    Ok(format!("{listed} files listed, none added; digests of all but entries/ and proofs/ checked here"))
}

struct Pending {
    seq: u64,
    file: String,
    message: Vec<u8>,
    sig: Signature,
    key: PublicKey,
}

fn flush_signatures(pending: &mut Vec<Pending>) -> Result<(), Fail> {
    let bad = pending
        .par_chunks(256)
        .filter_map(|chunk| {
            let msgs: Vec<&[u8]> = chunk.iter().map(|p| p.message.as_slice()).collect();
            let sigs: Vec<Signature> = chunk.iter().map(|p| p.sig).collect();
            let keys: Vec<PublicKey> = chunk.iter().map(|p| p.key).collect();
            first_failing_signature(&msgs, &sigs, &keys).map(|j| (chunk[j].seq, chunk[j].file.clone()))
        })
        .min();
    pending.clear();
    match bad {
        Some((seq, file)) => {
            fail(format!("{file}: entry {seq}: bad signature (does not verify with its signer's enrolled key)"))
        }
        None => Ok(()),
    }
}

/// One entry read and checked on its own (any core): canonical form, file
/// name, proof file, inclusion in the checkpoint.
fn read_listed(dir: &Path, line: &ManifestLine) -> Result<Vec<u8>, Fail> {
    let bytes =
        read(dir, &line.path).map_err(|Fail(m)| Fail(format!("{m} (listed in MANIFEST, missing from the export)")))?;
    if bytes.len() as u64 != line.size || blake3::hash(&bytes).to_hex().as_str() != line.digest {
        return fail(format!("{}: contents differ from the MANIFEST digest", line.path));
    }
    Ok(bytes)
}

fn check_one_entry(
    dir: &Path,
    line: &ManifestLine,
    proof_line: &ManifestLine,
    cp: &Checkpoint,
    note: &str,
) -> Result<(Entry, Vec<u8>), Fail> {
    let rel = line.path.as_str();
    let seq: u64 = rel
        .strip_prefix("entries/")
        .and_then(|n| n.strip_suffix(".json"))
        .filter(|s| s.len() == 12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Fail(format!("{rel}: not an entry file name")))?;
    let bytes = read_listed(dir, line)?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| Fail(format!("{rel}: not JSON: {e}")))?;
    let entry = Entry::from_value(value).map_err(|e| Fail(format!("{rel}: {e}")))?;
    if entry.seq != seq {
        return fail(format!("{rel}: holds entry {}, not {seq}", entry.seq));
    }
    let canonical_event = entry.event.canonical_bytes();
    let leaf = Entry::leaf_bytes_from_parts(&canonical_event, entry.seq, entry.recorded_at, &entry.sig);
    if leaf != bytes {
        return fail(format!("{rel}: entry {seq} is not in canonical form"));
    }
    if seq >= cp.size {
        return fail(format!("{rel}: entry {seq} is beyond the checkpoint's {} entries", cp.size));
    }
    let proof_rel = proof_file(seq);
    if proof_line.path != proof_rel {
        return fail(format!("{rel}: MANIFEST lists {} where {proof_rel} belongs", proof_line.path));
    }
    let proof_text =
        String::from_utf8(read_listed(dir, proof_line)?).map_err(|_| Fail(format!("{proof_rel}: not UTF-8")))?;
    let proof = TlogProof::parse(&proof_text).map_err(|e| Fail(format!("{proof_rel}: {e}")))?;
    if proof.index != seq {
        return fail(format!("{proof_rel}: proves index {}, not {seq}", proof.index));
    }
    if proof.checkpoint != note {
        return fail(format!("{proof_rel}: proves into another checkpoint than checkpoint.txt"));
    }
    let leaf_hash: Hash = merkle::leaf_hash(&leaf);
    verify_inclusion(seq, cp.size, &leaf_hash, &proof.hashes, &cp.root)
        .map_err(|e| Fail(format!("{proof_rel}: entry {seq} is not included in the checkpoint: {e}")))?;
    Ok((entry, event_signing_message(&canonical_event)))
}

/// D: each entry is canonical, signed by an enrolled key with the role for
/// its kind and not revoked before it, and proven into the checkpoint.
/// Chunks of entries are read and checked on all cores; the registry is
/// replayed in order; signatures are batch-verified on all cores.
fn check_entries(
    dir: &Path,
    cp: &Checkpoint,
    note: &str,
    progress: &mut dyn FnMut(u64),
) -> Result<(u64, Vec<u64>), Fail> {
    let mut registry = Registry::default();
    let mut pending: Vec<Pending> = Vec::with_capacity(SIGNATURE_CHUNK);
    let mut seqs = Vec::new();
    let entry_lines = manifest_lines(dir)?.filter(|l| !matches!(l, Ok(l) if !l.path.starts_with("entries/")));
    // The proofs/ lines follow in the same order: walk them in step.
    let mut proof_lines = manifest_lines(dir)?.filter(|l| !matches!(l, Ok(l) if !l.path.starts_with("proofs/")));
    for chunk in chunks_of(entry_lines, LINE_CHUNK) {
        let chunk = chunk?;
        let proofs = proof_lines.by_ref().take(chunk.len()).collect::<Result<Vec<_>, _>>()?;
        if proofs.len() != chunk.len() {
            return fail(format!("{}: its tlog-proof is not listed in MANIFEST", chunk[proofs.len()].path));
        }
        let checked: Vec<Result<(Entry, Vec<u8>), Fail>> =
            chunk.par_iter().zip(&proofs).map(|(line, proof)| check_one_entry(dir, line, proof, cp, note)).collect();
        for (line, result) in chunk.iter().zip(checked) {
            let (entry, message) = result?;
            let seq = entry.seq;
            let key = registry.admit(seq, &entry.event).map_err(|e| {
                Fail(format!("{}: entry {seq} ({}): not authorised: {e}", line.path, entry.event.kind().name()))
            })?;
            pending.push(Pending { seq, file: line.path.clone(), message, sig: entry.sig, key });
            seqs.push(seq);
        }
        if pending.len() >= SIGNATURE_CHUNK {
            flush_signatures(&mut pending)?;
        }
        progress(seqs.len() as u64);
    }
    flush_signatures(&mut pending)?;
    if let Some(extra) = proof_lines.next() {
        return fail(format!("{}: listed without its entry", extra?.path));
    }
    let count = seqs.len() as u64;
    progress(count);
    if seqs.first() != Some(&0) {
        return fail(
            "entries/000000000000.json (ledger.genesis) is missing: the signers' keys cannot be traced to the ledger",
        );
    }
    Ok((count, seqs))
}

fn decode_hashes(v: &Value) -> Result<Vec<Hash>, Fail> {
    v.as_array()
        .ok_or_else(|| Fail("proof is not a list".into()))?
        .iter()
        .map(|h| {
            h.as_str()
                .and_then(|s| B64.decode(s).ok())
                .and_then(|b| Hash::try_from(b.as_slice()).ok())
                .ok_or_else(|| Fail("proof hash is not base64 SHA-256".into()))
        })
        .collect()
}

/// Verifies an export directory. `Err` only for I/O trouble outside the export's own files.
pub fn verify_export(
    dir: &Path,
    o: &VerifyOptions<'_>,
    progress: &mut dyn FnMut(u64),
) -> Result<VerifyReport, ExportError> {
    if !dir.is_dir() {
        return Err(ExportError::Io { path: dir.to_path_buf(), detail: "not a directory".into() });
    }
    let mut checks = Vec::new();
    let mut push = |name: &'static str, r: Result<String, Fail>| {
        let ok = r.is_ok();
        checks.push(Check { name, ok, detail: r.unwrap_or_else(|Fail(m)| m) });
        ok
    };
    push("manifest signature", check_manifest_signature(dir, o));
    push("files", check_files(dir));
    let checkpoint = (|| {
        let note =
            String::from_utf8(read(dir, "checkpoint.txt")?).map_err(|_| Fail("checkpoint.txt is not UTF-8".into()))?;
        let cp = Checkpoint::open(&note, o.verifier).map_err(|e| Fail(format!("checkpoint.txt: {e}")))?;
        let meta: Value =
            serde_json::from_slice(&read(dir, "EXPORT.json")?).map_err(|e| Fail(format!("EXPORT.json: {e}")))?;
        if meta["format"] != EXPORT_FORMAT
            || meta["tree_size"].as_u64() != Some(cp.size)
            || meta["origin"] != cp.origin.as_str()
        {
            return fail("EXPORT.json does not describe checkpoint.txt (format, origin or tree size differ)");
        }
        Ok((note, cp, meta))
    })();
    let (note, cp, meta) = match checkpoint {
        Ok((note, cp, meta)) => {
            push("checkpoint", Ok(format!("{} at tree size {}, signature valid", cp.origin, cp.size)));
            (note, cp, meta)
        }
        Err(f) => {
            push("checkpoint", Err(f));
            return Ok(VerifyReport { checks, entries: 0, tree_size: 0 });
        }
    };
    let mut entries = 0;
    match check_entries(dir, &cp, &note, progress) {
        Ok((n, seqs)) => {
            entries = n;
            push(
                "entries",
                Ok(format!(
                    "{n} entries canonical, included in the checkpoint, signed by enrolled keys with the role for their kind"
                )),
            );
            let registry_only: Vec<u64> = meta["registry_entries"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_u64).collect())
                .unwrap_or_default();
            let selection = (|| {
                if registry_only.iter().any(|s| seqs.binary_search(s).is_err()) {
                    return fail("EXPORT.json names registry entries the export does not hold");
                }
                let selected = n - registry_only.len() as u64;
                if meta["selected_entries"].as_u64() != Some(selected) {
                    return fail(format!(
                        "EXPORT.json claims {} selected entries, the export holds {selected}",
                        meta["selected_entries"]
                    ));
                }
                if meta["selector"]["type"] == "all" && (n != cp.size || seqs.last() != Some(&(cp.size - 1))) {
                    return fail(format!("a full export must hold all {} entries, it holds {n}", cp.size));
                }
                Ok(format!(
                    "{selected} selected entries ({}) and {} authorising registry entries",
                    meta["selector"],
                    registry_only.len()
                ))
            })();
            push("selection", selection);
        }
        Err(f) => {
            push("entries", Err(f));
        }
    }
    if let Some(previous) = o.previous_checkpoint {
        let r = (|| {
            let old = Checkpoint::open(previous, o.verifier).map_err(|e| Fail(format!("previous checkpoint: {e}")))?;
            if old.size > cp.size {
                return fail(format!(
                    "the previous checkpoint (size {}) is newer than the export's ({})",
                    old.size, cp.size
                ));
            }
            if old.size == cp.size {
                return if old.root == cp.root {
                    Ok("the same tree as the previous checkpoint".into())
                } else {
                    fail("forked history: the previous checkpoint has the same size and another root")
                };
            }
            let rel = format!("consistency/{:012}-{:012}.json", old.size, cp.size);
            let v: Value = serde_json::from_slice(
                &read(dir, &rel)
                    .map_err(|_| Fail(format!("{rel} is missing: export again with --previous-checkpoint")))?,
            )
            .map_err(|e| Fail(format!("{rel}: {e}")))?;
            let proof = decode_hashes(&v["proof"]).map_err(|Fail(m)| Fail(format!("{rel}: {m}")))?;
            verify_consistency(old.size, cp.size, &proof, &old.root, &cp.root).map_err(|e| {
                Fail(format!(
                    "forked history: the export's checkpoint does not extend the previous one (size {}): {e}",
                    old.size
                ))
            })?;
            Ok(format!("the log of size {} was only appended to (consistency proof to {})", old.size, cp.size))
        })();
        push("consistency", r);
    }
    Ok(VerifyReport { checks, entries, tree_size: cp.size })
}

/// Verifies a directory or a `.tar` of one (unpacked into a temporary directory).
pub fn verify_export_path(
    path: &Path,
    o: &VerifyOptions<'_>,
    progress: &mut dyn FnMut(u64),
) -> Result<VerifyReport, ExportError> {
    if path.is_dir() {
        return verify_export(path, o, progress);
    }
    let staging = tempfile::tempdir().map_err(io_err(path))?;
    let file = std::fs::File::open(path).map_err(io_err(path))?;
    tar::Archive::new(std::io::BufReader::new(file)).unpack(staging.path()).map_err(io_err(path))?;
    let mut roots: Vec<PathBuf> =
        std::fs::read_dir(staging.path()).map_err(io_err(path))?.filter_map(Result::ok).map(|e| e.path()).collect();
    let root = if roots.len() == 1 && roots[0].is_dir() { roots.remove(0) } else { staging.path().to_path_buf() };
    verify_export(&root, o, progress)
}
