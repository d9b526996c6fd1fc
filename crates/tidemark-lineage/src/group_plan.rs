//! A group restore plan: one deterministic document with every component's
//! part — the PostgreSQL plan, each bucket's manifest, each snapshot — the
//! checkpoint it was computed from and its own digest.

use tidemark_core::{Digest32, Timestamp};

use crate::group::{Class, GroupDef, Snapshot};
use crate::pg_plan::{CheckpointRef, Plan};
use crate::s3::ManifestLine;

/// Format name of group plans.
pub const FORMAT: &str = "tidemark-group-plan-v1";

/// What a plan is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanRequest {
    /// A marker, by id.
    Marker(String),
    /// A correlated time inside a window.
    Time(Timestamp),
}

/// The recovery point a plan restores to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PointRef {
    /// The marker id, or the time (RFC 3339) of a correlated point.
    pub id: String,
    pub class: Class,
    pub at: Timestamp,
}

/// One bucket's part: where it lives, the time, and the manifest to carry out.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct S3Part {
    pub component: String,
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    pub at: Timestamp,
    pub keys_to_restore: u64,
    pub keys_to_remove: u64,
    /// blake3 of the manifest's NDJSON lines in key order (as `s3 manifest` prints it).
    pub manifest_digest: Digest32,
    pub manifest: Vec<ManifestLine>,
}

/// One component's part of a group plan.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ComponentPlan {
    Postgresql { component: String, plan: Box<Plan> },
    S3(S3Part),
    Snapshot { component: String, snapshot: Snapshot },
}

/// The plan body: everything but its own digest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GroupPlanBody {
    pub format: String,
    pub group: String,
    pub recovery_point: PointRef,
    pub max_skew_ms: u64,
    pub components: Vec<ComponentPlan>,
    pub notes: Vec<String>,
    pub computed_at_checkpoint: CheckpointRef,
}

/// A group plan: its body and the blake3 of the body's canonical JSON.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GroupPlan {
    #[serde(flatten)]
    pub body: GroupPlanBody,
    pub digest: Digest32,
}

/// Rule: a plan is its parts in the group's component order, digested; the
/// same log and request give the same bytes.
pub fn assemble(
    def: &GroupDef,
    point: PointRef,
    components: Vec<ComponentPlan>,
    checkpoint: CheckpointRef,
    point_notes: Vec<String>,
) -> GroupPlan {
    let mut notes =
        vec!["restore every component's part; a part alone is not a consistent state of the application".to_owned()];
    notes.extend(point_notes);
    match point.class {
        Class::Quiesced => notes.push("quiesced: writers were stopped while every part was pinned".to_owned()),
        Class::Correlated => notes.push(format!(
            "correlated: every continuous component is restorable within ±{} ms of {} (the group's max skew)",
            def.max_skew_ms, point.at
        )),
        Class::Crash => notes.push("crash-consistent: snapshots were taken while writers ran".to_owned()),
    }
    let body = GroupPlanBody {
        format: FORMAT.to_owned(),
        group: def.name.clone(),
        recovery_point: point,
        max_skew_ms: def.max_skew_ms,
        components,
        notes,
        computed_at_checkpoint: checkpoint,
    };
    GroupPlan { digest: body_digest(&body), body }
}

fn body_digest(body: &GroupPlanBody) -> Digest32 {
    let bytes = tidemark_core::canonical_writer::to_canonical(body).expect("plans hold integers and strings only");
    Digest32::blake3_of(&bytes)
}

/// A plan whose content does not hash to the digest it states: it was
/// changed after it was computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} was changed after it was computed: its digest says {stated}, its content hashes to {found}")]
pub struct DigestMismatch {
    pub what: String,
    pub stated: Digest32,
    pub found: Digest32,
}

impl GroupPlan {
    /// Rule: a plan is what was computed — its digest is the blake3 of its
    /// body's canonical JSON, and each PostgreSQL part's digest that of its
    /// own body. (What is checked is what is carried out: a file is read
    /// into this type first, so a field the type does not have is never
    /// acted on.)
    pub fn check_digests(&self) -> Result<(), DigestMismatch> {
        let found = body_digest(&self.body);
        if found != self.digest {
            return Err(DigestMismatch { what: "the plan".into(), stated: self.digest, found });
        }
        for c in &self.body.components {
            if let ComponentPlan::Postgresql { component, plan } = c {
                let found = plan.body_digest();
                if found != plan.digest {
                    return Err(DigestMismatch { what: format!("the {component} part"), stated: plan.digest, found });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> GroupPlan {
        let t = Timestamp::from_unix_seconds(1_790_000_000);
        let def = GroupDef { name: "app".into(), components: vec![], max_skew_ms: 2000, defined_at: t, seq: 1 };
        let point = PointRef { id: "m-1".into(), class: Class::Quiesced, at: t };
        let checkpoint = CheckpointRef { origin: "o".into(), tree_size: 3, root_hash: "r".into() };
        assemble(&def, point, vec![], checkpoint, vec![])
    }

    #[test]
    fn rule_a_plan_is_what_was_computed_its_digest_holds() {
        assert_eq!(plan().check_digests(), Ok(()));
        let mut changed = plan();
        changed.body.recovery_point.id = "m-2".into();
        let e = changed.check_digests().unwrap_err();
        assert_eq!(e.what, "the plan");
        assert_eq!(e.stated, plan().digest);
    }

    #[test]
    fn a_plan_read_back_from_its_file_has_the_same_digest() {
        let p = plan();
        let read: GroupPlan = serde_json::from_str(&serde_json::to_string_pretty(&p).unwrap()).unwrap();
        assert_eq!(read, p);
        assert_eq!(read.check_digests(), Ok(()));
    }
}
