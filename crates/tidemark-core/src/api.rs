//! The typed answers of the ledger's read API.
//!
//! A local ledger (`tidemark-store`) produces them, the server sends them as
//! JSON, and `tidemark-client` reads them back into the same types: callers
//! see one set of values whether the ledger is a directory or a URL, and a
//! change of shape breaks the build instead of a parse at run time. The
//! JSON field names are the wire format (`schemas/openapi.json`).

use serde::{Deserialize, Serialize};

use crate::registry::KeyRecord;
use crate::{ActorId, Kind, Timestamp};

/// Which entries to list (`tidemark log`, `audit`, `custody`; `GET
/// /v1/entries`, `/v1/audit`). Empty fields match everything; bounds are inclusive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryFilter {
    /// Entries touching this artifact reference (e.g. `pg:main/wal/000000010000000000000003`).
    pub artifact: Option<String>,
    /// Entries about this component (e.g. `pg:main`).
    pub component: Option<String>,
    pub kinds: Vec<Kind>,
    pub actor: Option<ActorId>,
    /// On the ledger's `recorded_at` clock.
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    pub from_seq: Option<u64>,
    pub to_seq: Option<u64>,
    pub limit: Option<usize>,
}

/// Which entries an export holds (plus every key-registry entry up to its
/// checkpoint, so a verifier replays the whole registry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportSelector {
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

impl ExportSelector {
    /// The `selector` object of EXPORT.json (docs/formats.md §9).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            ExportSelector::All => json!({"type": "all"}),
            ExportSelector::Artifact(a) => json!({"type": "artifact", "value": a}),
            ExportSelector::Component(c) => json!({"type": "component", "value": c}),
            ExportSelector::Actor(a) => json!({"type": "actor", "value": a.to_string()}),
            ExportSelector::Time { since, until } => {
                json!({"type": "time", "since": since.map(|t| t.to_string()), "until": until.map(|t| t.to_string())})
            }
        }
    }

    /// The query parameters of `GET /v1/export` that select the same entries.
    pub fn query_pairs(&self) -> Vec<(&'static str, String)> {
        match self {
            ExportSelector::All => vec![("all", "true".into())],
            ExportSelector::Artifact(a) => vec![("artifact", a.clone())],
            ExportSelector::Component(c) => vec![("component", c.clone())],
            ExportSelector::Actor(a) => vec![("actor", a.to_string())],
            ExportSelector::Time { since, until } => {
                let mut v = Vec::new();
                if let Some(t) = since {
                    v.push(("since", t.to_string()));
                }
                if let Some(t) = until {
                    v.push(("until", t.to_string()));
                }
                v
            }
        }
    }

    /// The selector named by exactly one of the parts (`since` and `until`
    /// go together); an error saying what is wrong otherwise.
    pub fn from_parts(
        all: bool,
        artifact: Option<String>,
        component: Option<String>,
        actor: Option<ActorId>,
        since: Option<Timestamp>,
        until: Option<Timestamp>,
    ) -> Result<ExportSelector, String> {
        let time = since.is_some() || until.is_some();
        let named = [all, artifact.is_some(), component.is_some(), actor.is_some(), time];
        match named.iter().filter(|n| **n).count() {
            0 => return Err("name what to export: all, artifact, component, actor, or since/until".into()),
            1 => {}
            _ => return Err("name one selection: all, artifact, component, actor, or since/until".into()),
        }
        Ok(if all {
            ExportSelector::All
        } else if let Some(a) = artifact {
            ExportSelector::Artifact(a)
        } else if let Some(c) = component {
            ExportSelector::Component(c)
        } else if let Some(a) = actor {
            ExportSelector::Actor(a)
        } else {
            ExportSelector::Time { since, until }
        })
    }
}

/// Where a full verification failed first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyFailure {
    /// The first bad entry, when the failure belongs to one.
    pub seq: Option<u64>,
    pub reason: String,
}

/// The verdict of `tidemark verify`: every leaf, signature, registry rule,
/// tree node and checkpoint of a ledger of `size` entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyReport {
    pub entries_checked: u64,
    pub checkpoints_checked: u64,
    pub size: u64,
    /// The tree root at `size`, lowercase hex.
    pub root: String,
    pub failure: Option<VerifyFailure>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.failure.is_none()
    }
}

/// One line of a streamed verification (`GET /v1/verify`, NDJSON): progress
/// lines while it runs, then exactly one report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum VerifyLine {
    Progress { entries_checked: u64, size: u64 },
    Report { report: VerifyReport },
}

/// An inclusion proof, in the field names of the transparency-dev proof
/// vectors (hashes in standard base64), with the checkpoint signed at that
/// size and, when asked for, the entry's leaf (its canonical JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InclusionProof {
    pub leaf_idx: u64,
    pub tree_size: u64,
    pub leaf_hash: String,
    pub proof: Vec<String>,
    pub root: String,
    pub checkpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaf: Option<String>,
}

/// A consistency proof between two tree sizes, with the checkpoints signed
/// at both sizes when there are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyProof {
    pub size1: u64,
    pub size2: u64,
    pub root1: String,
    pub root2: String,
    pub proof: Vec<String>,
    pub checkpoint1: Option<String>,
    pub checkpoint2: Option<String>,
}

/// The key registry (`GET /v1/keys`, `tidemark key list --json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyList {
    pub keys: Vec<KeyRecord>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verify_stream_line_names_its_type() {
        let line = VerifyLine::Progress { entries_checked: 5, size: 9 };
        let text = serde_json::to_string(&line).unwrap();
        assert_eq!(text, r#"{"type":"progress","entries_checked":5,"size":9}"#);
        assert_eq!(serde_json::from_str::<VerifyLine>(&text).unwrap(), line);
        assert!(serde_json::from_str::<VerifyLine>(r#"{"type":"progress","entries_checked":5}"#).is_err());
    }

    #[test]
    fn inclusion_proofs_use_the_proof_vector_field_names() {
        let p = InclusionProof {
            leaf_idx: 1,
            tree_size: 2,
            leaf_hash: "h".into(),
            proof: vec![],
            root: "r".into(),
            checkpoint: None,
            leaf: None,
        };
        let v: serde_json::Value = serde_json::to_value(&p).unwrap();
        assert_eq!(v["leafIdx"], 1);
        assert_eq!(v["treeSize"], 2);
        assert!(v.get("leaf").is_none());
    }
}

/// One row of `custody` and `audit` (CLI and `GET /v1/custody`, `GET /v1/audit`
/// alike): who — name and roles from the registry — did what, to which
/// artifacts, when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRow {
    pub seq: u64,
    pub recorded_at: Timestamp,
    pub occurred_at: Timestamp,
    /// The event's kind name (`pg.wal_archived`, …).
    pub kind: String,
    /// What the event did to its artifacts ("created", "verified", "restored from"…).
    pub action: String,
    pub actor: ActorId,
    /// None when the actor is not enrolled.
    pub actor_name: Option<String>,
    pub actor_roles: Option<String>,
    pub artifacts: Vec<String>,
    /// The event's body exactly as signed: its shape is the kind's
    /// (`schemas/events/`); rows only carry it for display and `--json`.
    pub body: serde_json::Value,
}
