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
pub use write::{ExportSummary, Selector, write_export, write_export_path};

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

/// One row of `custody` and `audit` output (CLI and HTTP alike): who
/// (name and roles from the registry) did what, to which artifacts, when.
pub fn audit_row(e: &tidemark_core::Entry, registry: &tidemark_core::registry::Registry) -> serde_json::Value {
    let who = registry.get(&e.event.actor);
    serde_json::json!({
        "seq": e.seq,
        "recorded_at": e.recorded_at.to_string(),
        "occurred_at": e.event.occurred_at.to_string(),
        "kind": e.event.kind().name(),
        "action": custody_action(e.event.kind()),
        "actor": e.event.actor.to_string(),
        "actor_name": who.map(|k| k.name.to_string()),
        "actor_roles": who.map(|k| k.roles_text()),
        "artifacts": e.event.body.artifacts(),
        "body": e.event.to_value()["body"],
    })
}
