//! Files PostgreSQL writes: archived WAL segments, timeline history files,
//! backup history files (`*.backup`), `backup_label` and `backup_manifest`.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use serde_json::Value;
use tidemark_core::event::{EventBody, PgBaseBackup, PgTimelineHistory, PgWalArchived};
use tidemark_core::{ComponentId, Digest32, Draft, EventId, Lsn, Timestamp};
use tidemark_lineage::pg::parse_history_file;

use crate::{AgentError, io_err, parse_err};

/// Read buffer for hashing (large reads keep blake3 on its fast path).
const HASH_BUFFER_BYTES: usize = 1 << 20;

/// blake3 and SHA-256 of a file, and its size, in one pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileDigests {
    pub blake3: Digest32,
    pub sha256: Digest32,
    pub size_bytes: u64,
}

pub fn digest_file(path: &Path) -> Result<FileDigests, AgentError> {
    use sha2::Digest as _;
    let mut file = std::fs::File::open(path).map_err(|e| io_err(path, e))?;
    let mut b3 = blake3::Hasher::new();
    let mut sha = sha2::Sha256::new();
    let mut buf = vec![0u8; HASH_BUFFER_BYTES];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(|e| io_err(path, e))?;
        if n == 0 {
            break;
        }
        b3.update(&buf[..n]);
        sha.update(&buf[..n]);
        size += n as u64;
    }
    Ok(FileDigests {
        blake3: Digest32(*b3.finalize().as_bytes()),
        sha256: Digest32(sha.finalize().into()),
        size_bytes: size,
    })
}

/// blake3 of a file only.
pub fn blake3_file(path: &Path) -> Result<Digest32, AgentError> {
    let mut file = std::fs::File::open(path).map_err(|e| io_err(path, e))?;
    let mut h = blake3::Hasher::new();
    std::io::copy(&mut file, &mut h).map_err(|e| io_err(path, e))?;
    Ok(Digest32(*h.finalize().as_bytes()))
}

/// What an archived file is, by its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchivedKind {
    /// `TTTTTTTTXXXXXXXXYYYYYYYY`.
    Segment { timeline: u32 },
    /// `TTTTTTTT.history`.
    History { timeline: u32 },
    /// `TTTTTTTTXXXXXXXXYYYYYYYY.OOOOOOOO.backup`: a backup history file.
    BackupHistory,
    /// `….partial`: the last, incomplete segment of a timeline left at promotion.
    Partial,
}

/// Rule: archived file names as PostgreSQL writes them.
pub fn classify(file_name: &str) -> Option<ArchivedKind> {
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_lowercase());
    if file_name.len() == 24 && hex(file_name) {
        return Some(ArchivedKind::Segment { timeline: u32::from_str_radix(&file_name[..8], 16).ok()? });
    }
    if let Some(tl) = file_name.strip_suffix(".history")
        && tl.len() == 8
        && hex(tl)
    {
        return Some(ArchivedKind::History { timeline: u32::from_str_radix(tl, 16).ok()? });
    }
    if let Some(stem) = file_name.strip_suffix(".backup")
        && stem.len() == 33
        && hex(&stem[..24])
        && stem.as_bytes()[24] == b'.'
        && hex(&stem[25..])
    {
        return Some(ArchivedKind::BackupHistory);
    }
    if let Some(stem) = file_name.strip_suffix(".partial")
        && stem.len() == 24
        && hex(stem)
    {
        return Some(ArchivedKind::Partial);
    }
    None
}

/// The draft event for one archived file, or `None` for files the ledger
/// does not record on their own (`.backup`, `.partial`).
///
/// The id and `occurred_at` derive from the file itself (its modification
/// time and digest), so running the hook again for the same file — as
/// PostgreSQL does after any failure — sends the very same event, which the
/// ledger acknowledges as a duplicate.
pub fn archived_file_draft(
    component: &str,
    file_name: &str,
    location: &str,
    digests: &FileDigests,
    modified_micros: i64,
    history_text: Option<&str>,
) -> Result<Option<Draft>, AgentError> {
    let kind = classify(file_name).ok_or_else(|| {
        AgentError::Refused(format!(
            "{file_name:?} is not a WAL segment, timeline history, backup history or partial segment name"
        ))
    })?;
    let occurred_at = Timestamp::from_micros(modified_micros);
    let id = deterministic_id(modified_micros, &[component.as_bytes(), file_name.as_bytes(), &digests.blake3.0]);
    let component_id = ComponentId::parse(component).map_err(AgentError::Refused)?;
    let body = match kind {
        ArchivedKind::Segment { timeline } => EventBody::PgWalArchived(PgWalArchived {
            component: component_id,
            timeline,
            segment: file_name.to_owned(),
            size_bytes: digests.size_bytes,
            blake3: digests.blake3,
            sha256: digests.sha256,
            location: location.to_owned(),
        }),
        ArchivedKind::History { timeline } => {
            let text = history_text.unwrap_or("");
            let (parent, switch) = parse_history_file(text).ok_or_else(|| AgentError::Parse {
                path: file_name.to_owned(),
                detail: "a timeline history file needs a last line `PARENT_TLI<TAB>SWITCH_LSN<TAB>REASON`".into(),
            })?;
            EventBody::PgTimelineHistory(PgTimelineHistory {
                component: component_id,
                timeline,
                parent_timeline: parent,
                switch_lsn: switch,
                blake3: digests.blake3,
                location: location.to_owned(),
            })
        }
        ArchivedKind::BackupHistory | ArchivedKind::Partial => return Ok(None),
    };
    Ok(Some(Draft { id, occurred_at, body }))
}

/// A UUIDv7 whose time is `micros` and whose random bits are a hash of `parts`.
pub fn deterministic_id(micros: i64, parts: &[&[u8]]) -> EventId {
    let mut h = blake3::Hasher::new();
    for p in parts {
        h.update(&(p.len() as u64).to_be_bytes());
        h.update(p);
    }
    let mut random = [0u8; 10];
    random.copy_from_slice(&h.finalize().as_bytes()[..10]);
    EventId::new_v7((micros.max(0) / 1000) as u64, random)
}

/// The modification time of a file in microseconds since the epoch.
pub fn modified_micros(path: &Path) -> Result<i64, AgentError> {
    let m = std::fs::metadata(path).map_err(|e| io_err(path, e))?.modified().map_err(|e| io_err(path, e))?;
    let d = m.duration_since(std::time::UNIX_EPOCH).map_err(|e| io_err(path, e))?;
    Ok(d.as_micros() as i64)
}

/// `backup_label` / backup history file fields.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BackupLabel {
    pub start_lsn: Option<Lsn>,
    pub start_segment: Option<String>,
    pub stop_lsn: Option<Lsn>,
    pub start_time: Option<Timestamp>,
    pub stop_time: Option<Timestamp>,
    pub label: Option<String>,
    pub start_timeline: Option<u32>,
    pub stop_timeline: Option<u32>,
}

/// Rule: PostgreSQL prints label times as `YYYY-MM-DD HH:MM:SS ZONE`; UTC,
/// GMT and numeric offsets are understood (set `log_timezone = 'UTC'`).
pub fn parse_label_time(s: &str) -> Option<Timestamp> {
    let s = s.trim();
    let (date_time, zone) = s.rsplit_once(' ')?;
    let (date, time) = date_time.split_once(' ')?;
    let offset = match zone {
        "UTC" | "GMT" | "Z" => "Z".to_owned(),
        z if (z.starts_with('+') || z.starts_with('-')) && z[1..].bytes().all(|b| b.is_ascii_digit()) => {
            match z.len() {
                3 => format!("{z}:00"),
                5 => format!("{}:{}", &z[..3], &z[3..]),
                _ => return None,
            }
        }
        _ => return None,
    };
    Timestamp::parse_rfc3339(&format!("{date}T{time}{offset}")).ok()
}

/// Reads `backup_label` or a `.backup` history file.
pub fn parse_backup_label(text: &str) -> BackupLabel {
    let mut out = BackupLabel::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(": ") else { continue };
        let first_word = value.split_whitespace().next().unwrap_or("");
        match key {
            "START WAL LOCATION" => {
                out.start_lsn = Lsn::parse(first_word).ok();
                out.start_segment = value.split("(file ").nth(1).map(|f| f.trim_end_matches(')').trim().to_owned());
            }
            "STOP WAL LOCATION" => out.stop_lsn = Lsn::parse(first_word).ok(),
            "START TIME" => out.start_time = parse_label_time(value),
            "STOP TIME" => out.stop_time = parse_label_time(value),
            "LABEL" => out.label = Some(value.to_owned()),
            "START TIMELINE" => out.start_timeline = value.trim().parse().ok(),
            "STOP TIMELINE" => out.stop_timeline = value.trim().parse().ok(),
            _ => {}
        }
    }
    out
}

/// What `backup_manifest` says about the WAL a backup needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestSummary {
    pub timeline: u32,
    pub start_lsn: Lsn,
    pub end_lsn: Lsn,
    pub checksum: String,
    pub files: usize,
}

pub fn parse_manifest(path: &Path, text: &str) -> Result<ManifestSummary, AgentError> {
    let v: Value = serde_json::from_str(text).map_err(|e| parse_err(path, format!("not JSON: {e}")))?;
    let ranges = v["WAL-Ranges"]
        .as_array()
        .filter(|r| !r.is_empty())
        .ok_or_else(|| parse_err(path, "no WAL-Ranges: was the backup taken with a manifest (pg_basebackup ≥ 13)?"))?;
    let lsn = |r: &Value, k: &str| {
        r[k].as_str().and_then(|s| Lsn::parse(s).ok()).ok_or_else(|| parse_err(path, format!("bad {k} in WAL-Ranges")))
    };
    let first = &ranges[0];
    let last = &ranges[ranges.len() - 1];
    Ok(ManifestSummary {
        timeline: last["Timeline"].as_u64().ok_or_else(|| parse_err(path, "WAL-Ranges without Timeline"))? as u32,
        start_lsn: lsn(first, "Start-LSN")?,
        end_lsn: lsn(last, "End-LSN")?,
        checksum: v["Manifest-Checksum"].as_str().unwrap_or("").to_owned(),
        files: v["Files"].as_array().map_or(0, Vec::len),
    })
}

/// A base backup directory as `pg_basebackup` left it (plain or tar format).
#[derive(Debug, Clone)]
pub struct BackupDir {
    pub dir: PathBuf,
    pub label: BackupLabel,
    pub manifest: ManifestSummary,
    pub size_bytes: u64,
    /// blake3 over the sorted list of `relative path NUL blake3-hex LF` lines.
    pub blake3: Digest32,
    pub tar_format: bool,
}

fn walk(dir: &Path, base: &Path, out: &mut Vec<PathBuf>) -> Result<(), AgentError> {
    for e in std::fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
        let e = e.map_err(|e| io_err(dir, e))?;
        let p = e.path();
        let ft = e.file_type().map_err(|e| io_err(&p, e))?;
        if ft.is_dir() {
            walk(&p, base, out)?;
        } else if ft.is_file() {
            out.push(p.strip_prefix(base).expect("under base").to_path_buf());
        }
    }
    Ok(())
}

/// Reads a backup directory: `backup_label` (from the directory or from
/// `base.tar`), `backup_manifest`, and the digest of every file.
pub fn read_backup_dir(dir: &Path) -> Result<BackupDir, AgentError> {
    let manifest_path = dir.join("backup_manifest");
    let manifest_text = std::fs::read_to_string(&manifest_path).map_err(|e| io_err(&manifest_path, e))?;
    let manifest = parse_manifest(&manifest_path, &manifest_text)?;
    let plain = dir.join("backup_label");
    let tar_path = dir.join("base.tar");
    let (label_text, tar_format) = if plain.exists() {
        (std::fs::read_to_string(&plain).map_err(|e| io_err(&plain, e))?, false)
    } else if tar_path.exists() {
        (read_from_tar(&tar_path, "backup_label")?, true)
    } else if dir.join("base.tar.gz").exists() || dir.join("base.tar.lz4").exists() || dir.join("base.tar.zst").exists()
    {
        return Err(parse_err(dir, "compressed tar backups are not read; take the backup with -Ft without -z, or -Fp"));
    } else {
        return Err(parse_err(dir, "neither backup_label nor base.tar: is this a pg_basebackup directory?"));
    };
    let label = parse_backup_label(&label_text);
    let mut files = Vec::new();
    walk(dir, dir, &mut files)?;
    files.sort();
    let mut listing = blake3::Hasher::new();
    let mut size = 0u64;
    for f in &files {
        let p = dir.join(f);
        size += std::fs::metadata(&p).map_err(|e| io_err(&p, e))?.len();
        let d = blake3_file(&p)?;
        listing.update(f.to_string_lossy().as_bytes());
        listing.update(b"\0");
        listing.update(d.to_string().as_bytes());
        listing.update(b"\n");
    }
    Ok(BackupDir {
        dir: dir.to_path_buf(),
        label,
        manifest,
        size_bytes: size,
        blake3: Digest32(*listing.finalize().as_bytes()),
        tar_format,
    })
}

fn read_from_tar(tar_path: &Path, member: &str) -> Result<String, AgentError> {
    let file = std::fs::File::open(tar_path).map_err(|e| io_err(tar_path, e))?;
    let mut archive = tar::Archive::new(file);
    for entry in archive.entries().map_err(|e| io_err(tar_path, e))? {
        let mut entry = entry.map_err(|e| io_err(tar_path, e))?;
        let path = entry.path().map_err(|e| io_err(tar_path, e))?.to_path_buf();
        if path == Path::new(member) || path == Path::new(".").join(member) {
            let mut s = String::new();
            entry.read_to_string(&mut s).map_err(|e| io_err(tar_path, e))?;
            return Ok(s);
        }
    }
    Err(parse_err(tar_path, format!("no {member} inside")))
}

/// The `pg.base_backup` event for a backup directory. The stop time comes
/// from the archived backup history file when given (PostgreSQL writes
/// `STOP TIME` there), else from the manifest's modification time (written last).
pub fn base_backup_draft(
    component: &str,
    backup: &BackupDir,
    location: &str,
    history: Option<&BackupLabel>,
    manifest_modified: Timestamp,
    segment_size_bytes: u64,
) -> Result<Draft, AgentError> {
    let l = &backup.label;
    let start_lsn = l.start_lsn.ok_or_else(|| parse_err(&backup.dir, "backup_label has no START WAL LOCATION"))?;
    let start_time = l.start_time.ok_or_else(|| {
        parse_err(&backup.dir, "backup_label START TIME is not in UTC or a numeric offset (set log_timezone = 'UTC')")
    })?;
    let stop_lsn = history.and_then(|h| h.stop_lsn).unwrap_or(backup.manifest.end_lsn);
    let stop_time = history.and_then(|h| h.stop_time).unwrap_or(manifest_modified).max(start_time);
    let timeline = l.start_timeline.unwrap_or(backup.manifest.timeline);
    // PostgreSQL's own name for the backup: its backup history file's stem.
    let backup_id = format!(
        "{}.{:08X}",
        l.start_segment.clone().unwrap_or_else(|| format!("{:016X}", start_lsn.0)),
        start_lsn.0 % segment_size_bytes
    );
    Ok(Draft {
        id: deterministic_id(stop_time.as_micros(), &[component.as_bytes(), backup_id.as_bytes(), &backup.blake3.0]),
        occurred_at: stop_time,
        body: EventBody::PgBaseBackup(PgBaseBackup {
            component: ComponentId::parse(component).map_err(AgentError::Refused)?,
            backup_id,
            label: l.label.clone().unwrap_or_default(),
            timeline,
            start_lsn,
            stop_lsn,
            start_time,
            stop_time,
            size_bytes: backup.size_bytes,
            manifest_checksum: Some(backup.manifest.checksum.clone()),
            blake3: Some(backup.blake3),
            location: location.to_owned(),
            tool: if backup.tar_format { "pg_basebackup -Ft" } else { "pg_basebackup -Fp" }.to_owned(),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LABEL: &str = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nCHECKPOINT LOCATION: 0/2000060\nBACKUP METHOD: streamed\nBACKUP FROM: primary\nSTART TIME: 2026-11-23 19:40:00 UTC\nLABEL: nightly\nSTART TIMELINE: 1\n";

    #[test]
    fn rule_archived_file_names_are_classified_as_postgres_writes_them() {
        assert_eq!(classify("000000010000000000000002"), Some(ArchivedKind::Segment { timeline: 1 }));
        assert_eq!(classify("00000002.history"), Some(ArchivedKind::History { timeline: 2 }));
        assert_eq!(classify("000000010000000000000002.00000028.backup"), Some(ArchivedKind::BackupHistory));
        assert_eq!(classify("000000010000000000000005.partial"), Some(ArchivedKind::Partial));
        assert_eq!(classify("00000001000000000000000a"), None, "PostgreSQL writes upper case");
        assert_eq!(classify("postgresql.conf"), None);
    }

    #[test]
    fn rule_backup_label_and_backup_history_files_are_read() {
        let l = parse_backup_label(LABEL);
        assert_eq!(l.start_lsn, Some(Lsn::parse("0/2000028").unwrap()));
        assert_eq!(l.start_segment.as_deref(), Some("000000010000000000000002"));
        assert_eq!(l.start_time, Some(Timestamp::parse_rfc3339("2026-11-23T19:40:00Z").unwrap()));
        assert_eq!((l.label.as_deref(), l.start_timeline), (Some("nightly"), Some(1)));
        let h = parse_backup_label(&format!(
            "{LABEL}STOP WAL LOCATION: 0/2000138 (file 000000010000000000000002)\nSTOP TIME: 2026-11-23 19:40:02 +01\nSTOP TIMELINE: 1\n"
        ));
        assert_eq!(h.stop_lsn, Some(Lsn::parse("0/2000138").unwrap()));
        assert_eq!(h.stop_time, Some(Timestamp::parse_rfc3339("2026-11-23T18:40:02Z").unwrap()));
        assert_eq!(parse_label_time("2026-11-23 19:40:00 CET"), None, "zone names are not guessed");
    }

    #[test]
    fn rule_manifest_wal_ranges_give_the_wal_a_backup_needs() {
        let text = r#"{"PostgreSQL-Backup-Manifest-Version": 1, "Files": [{"Path": "PG_VERSION"}],
            "WAL-Ranges": [{"Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100"}], "Manifest-Checksum": "abc"}"#;
        let m = parse_manifest(Path::new("backup_manifest"), text).unwrap();
        assert_eq!(
            (m.timeline, m.end_lsn, m.checksum.as_str(), m.files),
            (1, Lsn::parse("0/2000100").unwrap(), "abc", 1)
        );
        assert!(parse_manifest(Path::new("m"), "{}").unwrap_err().to_string().contains("WAL-Ranges"));
    }

    #[test]
    fn the_hook_sends_the_same_event_for_the_same_file() {
        let d = FileDigests { blake3: Digest32([1; 32]), sha256: Digest32([2; 32]), size_bytes: 1 << 20 };
        let a = archived_file_draft("pg:main", "000000010000000000000002", "/a/x", &d, 1_790_000_000_000_000, None)
            .unwrap();
        let b = archived_file_draft("pg:main", "000000010000000000000002", "/a/x", &d, 1_790_000_000_000_000, None)
            .unwrap();
        assert_eq!(a, b);
        let other = FileDigests { blake3: Digest32([3; 32]), ..d };
        let c = archived_file_draft("pg:main", "000000010000000000000002", "/a/x", &other, 1_790_000_000_000_000, None)
            .unwrap();
        assert_ne!(a.unwrap().id, c.unwrap().id, "other content, other event");
        let h = archived_file_draft(
            "pg:main",
            "00000002.history",
            "/a/h",
            &d,
            1,
            Some("1\t0/5000000\tno recovery target specified\n"),
        )
        .unwrap()
        .unwrap();
        let EventBody::PgTimelineHistory(h) = h.body else { panic!("a timeline history") };
        assert_eq!(h.parent_timeline, 1);
        assert_eq!(h.switch_lsn.to_string(), "0/5000000");
        assert!(
            archived_file_draft("pg:main", "000000010000000000000002.00000028.backup", "/a", &d, 1, None)
                .unwrap()
                .is_none()
        );
    }
}
