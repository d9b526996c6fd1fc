//! Importing an existing pgBackRest catalog (`pgbackrest info --output=json`)
//! so a team adopts tidemark without changing tools: every backup becomes a
//! `pg.base_backup` with the same label, LSNs, times and size. Re-importing
//! sends the same events (ids derive from stanza and label): no duplicates.

use serde_json::Value;
use tidemark_core::event::{EventBody, PgBaseBackup};
use tidemark_core::{ComponentId, Draft, Lsn, Timestamp};

use crate::AgentError;
use crate::pg_files::deterministic_id;

fn bad(detail: impl Into<String>) -> AgentError {
    AgentError::Parse { path: "pgbackrest info --output=json".into(), detail: detail.into() }
}

/// One imported backup and why others were skipped.
#[derive(Debug, Clone, PartialEq)]
pub struct Import {
    pub drafts: Vec<Draft>,
    /// (label, reason) for backups that could not be imported.
    pub skipped: Vec<(String, String)>,
}

/// Rule: a pgBackRest backup maps to `pg.base_backup` with timeline from
/// its first archived segment, LSNs from `lsn.start/stop`, times from
/// `timestamp.start/stop` (Unix seconds) and location `pgbackrest:STANZA/LABEL`.
pub fn import_info(component: &str, stanza: Option<&str>, info_json: &str) -> Result<Import, AgentError> {
    let v: Value = serde_json::from_str(info_json).map_err(|e| bad(format!("not JSON: {e}")))?;
    let stanzas = v.as_array().ok_or_else(|| bad("expected an array of stanzas"))?;
    let mut out = Import { drafts: Vec::new(), skipped: Vec::new() };
    let mut matched = false;
    for s in stanzas {
        let name = s["name"].as_str().unwrap_or("");
        if stanza.is_some_and(|want| want != name) {
            continue;
        }
        matched = true;
        for b in s["backup"].as_array().into_iter().flatten() {
            let label = b["label"].as_str().unwrap_or("").to_owned();
            match backup_draft(component, name, b) {
                Ok(d) => out.drafts.push(d),
                Err(reason) => out.skipped.push((label, reason)),
            }
        }
    }
    if !matched {
        return Err(bad(match stanza {
            Some(s) => format!("no stanza {s:?} in the catalog"),
            None => "the catalog has no stanza".into(),
        }));
    }
    Ok(out)
}

fn backup_draft(component: &str, stanza: &str, b: &Value) -> Result<Draft, String> {
    let label = b["label"].as_str().filter(|l| !l.is_empty()).ok_or("no label")?;
    if b["error"].as_bool() == Some(true) {
        return Err("pgBackRest marks this backup as having page checksum errors".into());
    }
    let lsn = |k: &str| {
        b["lsn"][k]
            .as_str()
            .and_then(|s| Lsn::parse(s).ok())
            .ok_or(format!("no lsn.{k} (pgBackRest ≥ 2.30 reports it)"))
    };
    let secs = |k: &str| b["timestamp"][k].as_i64().ok_or(format!("no timestamp.{k}"));
    let start_segment = b["archive"]["start"].as_str().filter(|s| s.len() == 24).ok_or("no archive.start")?;
    let timeline = u32::from_str_radix(&start_segment[..8], 16).map_err(|_| "bad archive.start")?;
    let start_time = Timestamp::from_unix_seconds(secs("start")?);
    let stop_time = Timestamp::from_unix_seconds(secs("stop")?);
    let kind = b["type"].as_str().unwrap_or("full");
    Ok(Draft {
        id: deterministic_id(stop_time.as_micros(), &[component.as_bytes(), stanza.as_bytes(), label.as_bytes()]),
        occurred_at: stop_time,
        body: EventBody::PgBaseBackup(PgBaseBackup {
            component: ComponentId::parse(component)?,
            backup_id: label.to_owned(),
            label: label.to_owned(),
            timeline,
            start_lsn: lsn("start")?,
            stop_lsn: lsn("stop")?,
            start_time,
            stop_time,
            size_bytes: b["info"]["size"].as_u64().unwrap_or(0),
            manifest_checksum: None,
            blake3: None,
            location: format!("pgbackrest:{stanza}/{label}"),
            tool: format!("pgbackrest {kind}"),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = r#"[{"name":"main","status":{"code":0,"message":"ok"},"db":[{"id":1,"system-id":7301,"version":"15"}],
      "archive":[{"id":"15-1","min":"000000010000000000000002","max":"000000010000000000000009"}],
      "backup":[
        {"label":"20261123-020000F","type":"full","error":false,"archive":{"start":"000000010000000000000003","stop":"000000010000000000000003"},
         "lsn":{"start":"0/3000028","stop":"0/3000100"},"timestamp":{"start":1795399200,"stop":1795399210},"info":{"size":23456789}},
        {"label":"20261123-030000F","type":"full","archive":{"start":"000000010000000000000005"},"timestamp":{"start":1,"stop":2}}
      ]}]"#;

    #[test]
    fn rule_pgbackrest_backups_map_to_base_backups() {
        let import = import_info("pg:main", Some("main"), INFO).unwrap();
        assert_eq!(import.drafts.len(), 1);
        let EventBody::PgBaseBackup(b) = &import.drafts[0].body else { panic!("a base backup") };
        assert_eq!(b.backup_id, "20261123-020000F");
        assert_eq!((b.start_lsn.to_string(), b.stop_lsn.to_string()), ("0/3000028".into(), "0/3000100".into()));
        assert_eq!(b.timeline, 1);
        assert_eq!(b.location, "pgbackrest:main/20261123-020000F");
        assert_eq!(import.skipped.len(), 1, "a backup without LSNs is reported, not guessed");
        assert!(import.skipped[0].1.contains("lsn.start"));
        assert_eq!(
            import_info("pg:main", Some("main"), INFO).unwrap().drafts,
            import.drafts,
            "re-import is idempotent"
        );
        assert!(import_info("pg:main", Some("other"), INFO).is_err());
    }
}
