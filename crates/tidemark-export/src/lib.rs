//! tidemark-export: chain-of-custody exports.
//!
//! An export is a directory (or a tar of one) that an auditor verifies with
//! nothing but it and the ledger's public key (layout in docs/formats.md §9):
//!
//! ```text
//! EXPORT.json                  what was exported, from which ledger, at which tree size
//! SUMMARY.md                   who did what, when, in order (for people)
//! checkpoint.txt               the signed checkpoint every proof leads to
//! entries/<seq>.json           each entry's canonical JSON (its Merkle leaf)
//! proofs/<seq>.tlog-proof      a C2SP tlog-proof of that entry into checkpoint.txt
//! consistency/<m>-<n>.json     consistency proofs from checkpoints the auditor kept
//! MANIFEST                     "<blake3> <bytes> <path>" for every file above, sorted
//! MANIFEST.sig                 the manifest's blake3, signed by the ledger key
//! ```
//!
//! Writing streams entry by entry (memory does not grow with the export);
//! verifying streams too, with signatures batch-verified on all cores.

mod verify;
mod write;

pub use verify::{Check, VerifyOptions, VerifyReport, verify_export, verify_export_path};
pub use write::{ExportSummary, Selector, check_previous_sizes, write_export, write_export_path, write_export_tar};

/// Format name in EXPORT.json and the manifest signature.
pub const EXPORT_FORMAT: &str = "tidemark-export-v1";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    #[error("{path}: {detail}")]
    Io { path: std::path::PathBuf, detail: String },
    #[error(transparent)]
    Store(#[from] tidemark_store::StoreError),
    #[error("{0}")]
    BadRequest(String),
}

pub(crate) fn io_err(path: &std::path::Path) -> impl Fn(std::io::Error) -> ExportError + '_ {
    move |e| ExportError::Io { path: path.to_path_buf(), detail: e.to_string() }
}

/// File name of entry `seq` (zero-padded, so names sort by sequence number).
pub fn entry_file(seq: u64) -> String {
    format!("entries/{seq:012}.json")
}

pub fn proof_file(seq: u64) -> String {
    format!("proofs/{seq:012}.tlog-proof")
}

/// What an event means for the artifacts it touches, in custody terms.
pub fn custody_action(kind: tidemark_core::Kind) -> &'static str {
    use tidemark_core::Kind;
    match kind {
        Kind::PgWalArchived
        | Kind::PgBaseBackup
        | Kind::PgTimelineHistory
        | Kind::S3ObjectVersion
        | Kind::SnapshotTaken => "created",
        Kind::ArtifactVerified => "verified",
        Kind::ArtifactCopied => "copied",
        Kind::ArtifactRetention => "retention set",
        Kind::ArtifactLegalHold => "legal hold",
        Kind::ArtifactDeleted => "deleted",
        Kind::S3VersionMissing => "reported missing",
        Kind::MarkerQuiesced | Kind::MarkerPoint => "pinned by a marker",
        Kind::RestorePerformed => "restored from",
        _ => "recorded",
    }
}

pub use tidemark_core::api::AuditRow;

/// One row of `custody` and `audit` output (CLI and HTTP alike): who
/// (name and roles from the registry) did what, to which artifacts, when.
pub fn audit_row(e: &tidemark_core::Entry, registry: &tidemark_core::registry::Registry) -> AuditRow {
    let who = registry.get(&e.event.actor);
    AuditRow {
        seq: e.seq,
        recorded_at: e.recorded_at,
        occurred_at: e.event.occurred_at,
        kind: e.event.kind().name().to_owned(),
        action: custody_action(e.event.kind()).to_owned(),
        actor: e.event.actor,
        actor_name: who.map(|k| k.name.to_string()),
        actor_roles: who.map(|k| k.roles_text()),
        artifacts: e.event.body.artifacts(),
        body: e.event.body.to_value(),
    }
}

/// What EXPORT.json says about an export (for printing a summary).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct ExportHead {
    pub tree_size: u64,
    pub selected_entries: u64,
    pub registry_entries: Vec<u64>,
    pub ledger_key: String,
}

fn parse_head(bytes: &[u8], path: &std::path::Path) -> Result<ExportHead, ExportError> {
    serde_json::from_slice(bytes).map_err(|e| ExportError::BadRequest(format!("{}: EXPORT.json: {e}", path.display())))
}

/// Reads EXPORT.json of an export directory or tar (the tar is read through once).
pub fn read_head(path: &std::path::Path) -> Result<ExportHead, ExportError> {
    if path.is_dir() {
        let p = path.join("EXPORT.json");
        return parse_head(&std::fs::read(&p).map_err(io_err(&p))?, path);
    }
    let file = std::fs::File::open(path).map_err(io_err(path))?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    for entry in archive.entries().map_err(io_err(path))? {
        let mut entry = entry.map_err(io_err(path))?;
        if entry.path().map_err(io_err(path))?.as_ref() == std::path::Path::new("export/EXPORT.json") {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut bytes).map_err(io_err(path))?;
            return parse_head(&bytes, path);
        }
    }
    Err(ExportError::BadRequest(format!("{}: no export/EXPORT.json in the tar", path.display())))
}

/// Unpacks an export tar (as `GET /v1/export` sends it) into `dir`, which
/// must not exist or be empty. Only regular files and directories under
/// `export/` with plain path components are accepted; anything else (links,
/// absolute names, `..`, a path given twice) is refused before it is written.
pub fn unpack_tar(tar_path: &std::path::Path, dir: &std::path::Path) -> Result<u64, ExportError> {
    use std::path::Component;
    if dir.exists() && std::fs::read_dir(dir).map_err(io_err(dir))?.next().is_some() {
        return Err(ExportError::BadRequest(format!("{} exists and is not empty", dir.display())));
    }
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let file = std::fs::File::open(tar_path).map_err(io_err(tar_path))?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    let mut seen = std::collections::HashSet::new();
    let mut files = 0;
    for entry in archive.entries().map_err(io_err(tar_path))? {
        let mut entry = entry.map_err(io_err(tar_path))?;
        let name = entry.path().map_err(io_err(tar_path))?.into_owned();
        let bad =
            |why: &str| ExportError::BadRequest(format!("{}: member {}: {why}", tar_path.display(), name.display()));
        let rel = name.strip_prefix("export").map_err(|_| bad("not under export/"))?.to_path_buf();
        if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(bad("only plain path components are allowed"));
        }
        if !seen.insert(rel.clone()) {
            return Err(bad("appears twice"));
        }
        let target = dir.join(&rel);
        match entry.header().entry_type() {
            tar::EntryType::Directory => std::fs::create_dir_all(&target).map_err(io_err(&target))?,
            tar::EntryType::Regular => {
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent).map_err(io_err(parent))?;
                }
                let mut out = std::fs::File::create(&target).map_err(io_err(&target))?;
                std::io::copy(&mut entry, &mut out).map_err(io_err(&target))?;
                files += 1;
            }
            _ => return Err(bad("only regular files and directories are allowed")),
        }
    }
    Ok(files)
}
