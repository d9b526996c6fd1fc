//! What PostgreSQL's archive and its backups are, recorded: one archived
//! file (the `archive_command` hook), one base backup directory, and an
//! existing pgBackRest catalog. Every event is a [`Draft`] whose id and time
//! derive from what was read, so PostgreSQL's retries and re-imports send
//! the same events, which the ledger acknowledges as duplicates.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tidemark_agents::pg_files::{self, ArchivedKind, BackupLabel};
use tidemark_agents::pgbackrest;
use tidemark_core::event::{EventBody, PgBaseBackup};
use tidemark_core::{Draft, Lsn, SecretKey};

use crate::{Env, LedgerApi, OpsError, Progress, Recorded};

/// A file PostgreSQL's `archive_command` archived.
#[derive(Debug, Clone)]
pub struct ArchivedFileRequest {
    pub component: String,
    /// Where it was archived; its name is the archived file's name (`/archive/%f`).
    pub location: PathBuf,
    /// `%p`, the file in `pg_wal`: when given, the archived copy must be byte-identical to it.
    pub source: Option<PathBuf>,
}

/// What the hook recorded.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ArchivedFile {
    pub file: String,
    /// None for files recorded only through others (`.backup`, `.partial`).
    #[serde(skip)]
    pub recorded: Option<Recorded>,
    /// The entry (none when nothing was recorded, or it went to the spool).
    pub entry: Option<u64>,
    /// It went to the spool (the server could not be reached).
    pub spooled: bool,
}

fn failed(msg: impl Into<String>) -> OpsError {
    OpsError::Failed(msg.into())
}

fn sign(draft: Draft, key: &SecretKey) -> Result<tidemark_core::SignedEvent, OpsError> {
    draft.sign(key).map_err(OpsError::BadEvent)
}

/// Records one archived file (segment or timeline history) with its
/// digests. Refused when the archived copy differs from PostgreSQL's own
/// (`source`): then archiving failed, and PostgreSQL retries.
pub fn archive_file(
    ledger: &mut dyn LedgerApi,
    env: &dyn Env,
    key: &SecretKey,
    request: &ArchivedFileRequest,
    progress: &mut dyn Progress,
) -> Result<ArchivedFile, OpsError> {
    let location = &request.location;
    let file = location
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| OpsError::Usage("--location must end in the archived file's name (/archive/%f)".into()))?
        .to_owned();
    let kind = pg_files::classify(&file).ok_or_else(|| {
        OpsError::Usage(format!("{file:?} is not a file PostgreSQL archives (segment, .history, .backup, .partial)"))
    })?;
    let digests = pg_files::digest_file(location)?;
    if let Some(src) = &request.source {
        let original = pg_files::digest_file(src)?;
        if original.blake3 != digests.blake3 {
            return Err(failed(format!(
                "the archived copy {} differs from {} (blake3 {} vs {}): archiving failed; PostgreSQL will retry",
                location.display(),
                src.display(),
                digests.blake3,
                original.blake3
            )));
        }
    }
    let modified = pg_files::modified_micros(request.source.as_deref().unwrap_or(location))?;
    let read = |what: &str| std::fs::read_to_string(location).map_err(|e| failed(format!("reading the {what}: {e}")));
    let history_text = match kind {
        ArchivedKind::History { .. } => Some(read("history file")?),
        ArchivedKind::BackupHistory => {
            // Read by `record_backup` for the backup's stop time; nothing to record on its own.
            if pg_files::parse_backup_label(&read("backup history file")?).stop_lsn.is_none() {
                progress.note(&format!("{file}: no STOP WAL LOCATION; recording the backup will not use it"));
            }
            None
        }
        _ => None,
    };
    let absolute = std::path::absolute(location).unwrap_or(location.clone());
    let draft = pg_files::archived_file_draft(
        &request.component,
        &file,
        &absolute.to_string_lossy(),
        &digests,
        modified,
        history_text.as_deref(),
    )?;
    let Some(draft) = draft else { return Ok(ArchivedFile { file, recorded: None, entry: None, spooled: false }) };
    let recorded = ledger.record(vec![sign(draft, key)?], env.now())?;
    let spooled = matches!(recorded, Recorded::Spooled { .. });
    Ok(ArchivedFile { file, entry: recorded.last_seq(), spooled, recorded: Some(recorded) })
}

/// A `pg_basebackup` output directory to record.
#[derive(Debug, Clone)]
pub struct BackupRequest {
    pub component: String,
    /// The backup directory (plain or tar format).
    pub dir: PathBuf,
    /// Where the backup is kept, as recorded (default: `dir`, absolute).
    pub location: Option<String>,
    /// The WAL archive holding the backup history file (default: beside the archived start segment).
    pub archive: Option<PathBuf>,
    /// How long to wait for the backup history file to be archived.
    pub wait: Duration,
}

/// Rule: a backup's history file is the `.backup` file archived next to its
/// start segment with the same start LSN and a stop LSN.
fn find_backup_history(dir: &Path, start_segment: &str, start_lsn: Lsn) -> Option<BackupLabel> {
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with(start_segment) && name.ends_with(".backup") {
            let label = pg_files::parse_backup_label(&std::fs::read_to_string(e.path()).ok()?);
            if label.start_lsn == Some(start_lsn) && label.stop_lsn.is_some() {
                return Some(label);
            }
        }
    }
    None
}

/// Records a base backup: its files digested, its stop LSN and time from
/// the archived backup history file (waited for, since PostgreSQL archives
/// it once the backup ends), else from its manifest.
pub fn record_backup(
    ledger: &mut dyn LedgerApi,
    env: &dyn Env,
    key: &SecretKey,
    request: &BackupRequest,
    progress: &mut dyn Progress,
) -> Result<(PgBaseBackup, Recorded), OpsError> {
    let component = &request.component;
    let backup = pg_files::read_backup_dir(&request.dir)?;
    let start_lsn =
        backup.label.start_lsn.ok_or_else(|| OpsError::Usage("backup_label has no START WAL LOCATION".into()))?;
    let start_segment = backup.label.start_segment.clone().unwrap_or_default();
    let deadline = Instant::now() + request.wait;
    let (history, archive_dir) = loop {
        let archive_dir = match &request.archive {
            Some(d) => Some(d.clone()),
            None => ledger
                .pg_file(component, &start_segment)?
                .and_then(|f| PathBuf::from(f.location).parent().map(Path::to_path_buf)),
        };
        let found = archive_dir.as_deref().and_then(|d| find_backup_history(d, &start_segment, start_lsn));
        if found.is_some() || Instant::now() >= deadline {
            break (found, archive_dir);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if history.is_none() {
        progress.note(&format!(
            "no archived backup history file for {start_segment} found{}; stop LSN from backup_manifest, stop time from its modification time",
            archive_dir.map(|d| format!(" in {}", d.display())).unwrap_or_default()
        ));
    }
    let manifest_modified =
        tidemark_core::Timestamp::from_micros(pg_files::modified_micros(&request.dir.join("backup_manifest"))?);
    let location = request.location.clone().unwrap_or_else(|| {
        std::path::absolute(&request.dir).unwrap_or(request.dir.clone()).to_string_lossy().to_string()
    });
    let segment_size = ledger
        .pg_report(component)
        .map_or(tidemark_lineage::pg::DEFAULT_SEGMENT_SIZE_BYTES, |r| r.wal_segment_size_bytes);
    let draft =
        pg_files::base_backup_draft(component, &backup, &location, history.as_ref(), manifest_modified, segment_size)?;
    let EventBody::PgBaseBackup(body) = draft.body.clone() else {
        unreachable!("base_backup_draft builds a pg.base_backup")
    };
    let recorded = ledger.record(vec![sign(draft, key)?], env.now())?;
    Ok((body, recorded))
}

/// What an import of a pgBackRest catalog recorded.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Imported {
    pub imported: usize,
    /// The entries (none when nothing was imported, or they went to the spool).
    pub entries: Vec<u64>,
    /// (label, reason) for backups that could not be imported.
    pub skipped: Vec<(String, String)>,
}

/// `pgbackrest info --output=json`, run here.
pub fn pgbackrest_info(config: Option<&Path>, stanza: Option<&str>) -> Result<String, OpsError> {
    let mut cmd = std::process::Command::new("pgbackrest");
    if let Some(c) = config {
        cmd.arg(format!("--config={}", c.display()));
    }
    if let Some(s) = stanza {
        cmd.arg(format!("--stanza={s}"));
    }
    let out = cmd
        .args(["info", "--output=json"])
        .output()
        .map_err(|e| failed(format!("running `pgbackrest info` (is pgBackRest installed?): {e}")))?;
    if !out.status.success() {
        return Err(failed(format!("pgbackrest info failed: {}", String::from_utf8_lossy(&out.stderr).trim())));
    }
    String::from_utf8(out.stdout).map_err(|_| failed("pgbackrest info printed non-UTF-8"))
}

/// Records every backup of a pgBackRest catalog (`info_json`) as
/// `pg.base_backup`, in one batch; backups that cannot be mapped are skipped
/// and named.
pub fn import_pgbackrest(
    ledger: &mut dyn LedgerApi,
    env: &dyn Env,
    key: &SecretKey,
    component: &str,
    stanza: Option<&str>,
    info_json: &str,
) -> Result<Imported, OpsError> {
    let import = pgbackrest::import_info(component, stanza, info_json)?;
    let imported = import.drafts.len();
    let entries = if imported == 0 {
        Vec::new()
    } else {
        let events = import.drafts.into_iter().map(|d| sign(d, key)).collect::<Result<Vec<_>, _>>()?;
        match ledger.record(events, env.now())? {
            Recorded::Appended(a) => a.iter().map(|a| a.seq).collect(),
            Recorded::Spooled { .. } => Vec::new(),
        }
    };
    Ok(Imported { imported, entries, skipped: import.skipped })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_a_backup_history_file_has_the_start_lsn_and_a_stop() {
        let dir = tempfile::tempdir().unwrap();
        let start = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n";
        let stop = "STOP WAL LOCATION: 0/2000138 (file 000000010000000000000002)\n";
        std::fs::write(dir.path().join("000000010000000000000002.00000028.backup"), format!("{start}{stop}")).unwrap();
        std::fs::write(dir.path().join("000000010000000000000002.00000099.backup"), start).unwrap();
        let lsn = Lsn::parse("0/2000028").unwrap();
        let found = find_backup_history(dir.path(), "000000010000000000000002", lsn).unwrap();
        assert_eq!(found.stop_lsn, Some(Lsn::parse("0/2000138").unwrap()));
        assert!(
            find_backup_history(dir.path(), "000000010000000000000002", Lsn::parse("0/2000099").unwrap()).is_none()
        );
    }
}
