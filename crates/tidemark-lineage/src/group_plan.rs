//! A group restore plan: one deterministic document with every component's
//! part — the PostgreSQL plan, each bucket's manifest, each snapshot — the
//! checkpoint it was computed from and its own digest.

use tidemark_core::{Digest32, Timestamp};

use std::collections::BTreeMap;

use crate::group::{Class, ComponentKind, CorrelatedPoint, GroupDef, Marker, RecoveryPoint, Snapshot, s3_part_skew};
use crate::pg_plan::{CheckpointRef, Plan, Target};
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

/// What a recovery point restores one component to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pin {
    /// A PostgreSQL cluster to a target.
    Pg(Target),
    /// A bucket as of a time, and how far S3's clock may be from it (µs).
    S3 { at: Timestamp, skew_us: i64 },
    /// A snapshot-only store to one of its snapshots.
    Snapshot(String),
}

/// A recovery point resolved for a plan: the point, each component's pin,
/// and what the plan should say about how it was resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pinned {
    pub point: PointRef,
    pub pins: BTreeMap<String, Pin>,
    pub notes: Vec<String>,
}

/// Rule: a restorable marker pins each part as it was taken — PostgreSQL
/// at its LSN (on its timeline), S3 at its watermark (exactly when the
/// bucket's clock was seen ticking or writers were stopped, else within the
/// group's skew), a snapshot store at its snapshot. A marker judged not
/// restorable pins nothing: the reasons are its parts' reasons.
pub fn marker_pins(def: &GroupDef, marker: &Marker, judged: &RecoveryPoint) -> Result<Pinned, Vec<String>> {
    if !judged.restorable {
        return Err(judged
            .components
            .iter()
            .filter_map(|p| p.reason.as_ref().map(|r| format!("{}: {r}", p.component)))
            .collect());
    }
    let skew_us = (def.max_skew_ms as i64).saturating_mul(1000);
    let quiesced = marker.quiesced.is_some();
    let pins = marker
        .parts
        .iter()
        .map(|p| {
            let pin = match (p.pg_lsn, p.pg_timeline, p.s3_watermark, &p.snapshot_id) {
                (Some(lsn), tl, _, _) => Pin::Pg(Target::Lsn { lsn, timeline: tl }),
                (_, _, Some(w), _) => Pin::S3 { at: w, skew_us: s3_part_skew(p, skew_us, quiesced) },
                (_, _, _, Some(id)) => Pin::Snapshot(id.clone()),
                _ => Pin::S3 { at: marker.at, skew_us },
            };
            (p.component.to_string(), pin)
        })
        .collect();
    let point = PointRef { id: marker.marker_id.clone(), class: judged.class, at: marker.at };
    Ok(Pinned { point, pins, notes: Vec::new() })
}

/// Rule: a correlated time pins every PostgreSQL cluster at the position
/// observed at or before it (its time and timeline), every bucket at the
/// resolved instant within the group's skew; the plan says so when the
/// instant is not the time asked for.
pub fn time_pins(def: &GroupDef, point: &CorrelatedPoint) -> Pinned {
    let skew_us = (point.s3_skew_ms as i64).saturating_mul(1000);
    let pins = def
        .components
        .iter()
        .map(|c| {
            let pin = match (ComponentKind::of(c), point.pg.get(c)) {
                (Some(ComponentKind::Postgresql), Some(p)) => {
                    Pin::Pg(Target::Time { at: p.observed_at, timeline: Some(p.timeline) })
                }
                _ => Pin::S3 { at: point.at, skew_us },
            };
            (c.clone(), pin)
        })
        .collect();
    let mut notes = Vec::new();
    if point.at != point.requested {
        notes.push(format!(
            "every part is restored as of {}, the newest PostgreSQL position observed at or before the requested {} (a cluster's state is known exactly only where it was observed)",
            point.at, point.requested
        ));
    }
    Pinned { point: PointRef { id: point.requested.to_string(), class: Class::Correlated, at: point.at }, pins, notes }
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

    fn part(c: &str) -> tidemark_core::event::MarkerPart {
        tidemark_core::event::MarkerPart::new(tidemark_core::ComponentId::parse(c).unwrap())
    }

    fn judged(restorable: bool) -> RecoveryPoint {
        let t = Timestamp::from_unix_seconds(1_790_000_000);
        let status = |c: &str, reason: Option<&str>| crate::group::PartStatus {
            component: c.into(),
            kind: ComponentKind::of(c).unwrap(),
            lsn: None,
            timeline: None,
            at: None,
            snapshot_id: None,
            restorable: reason.is_none(),
            reason: reason.map(str::to_owned),
            base_backup: None,
            wal: None,
        };
        RecoveryPoint {
            id: "m-1".into(),
            class: Class::Correlated,
            at: t,
            writers_stopped: None,
            restorable,
            status: if restorable { "restorable" } else { "not_restorable" }.into(),
            components: vec![status("pg:main", None), status("s3:up", (!restorable).then_some("not scanned through"))],
            record: crate::group::Record::default(),
            seq: 9,
        }
    }

    #[test]
    fn rule_a_marker_pins_each_part_as_it_was_taken() {
        let t = Timestamp::from_unix_seconds(1_790_000_000);
        let def = GroupDef {
            name: "app".into(),
            components: vec!["pg:main".into(), "s3:up".into(), "snap:mq".into()],
            max_skew_ms: 2000,
            defined_at: t,
            seq: 1,
        };
        let lsn = tidemark_core::Lsn::parse("0/3000028").unwrap();
        let marker = Marker {
            group: "app".into(),
            marker_id: "m-1".into(),
            at: t,
            quiesced: None,
            parts: vec![
                tidemark_core::event::MarkerPart { pg_lsn: Some(lsn), pg_timeline: Some(1), ..part("pg:main") },
                tidemark_core::event::MarkerPart { s3_watermark: Some(t), ..part("s3:up") },
                tidemark_core::event::MarkerPart { snapshot_id: Some("b3-1".into()), ..part("snap:mq") },
            ],
            seq: 9,
        };
        let pinned = marker_pins(&def, &marker, &judged(true)).unwrap();
        assert_eq!(pinned.pins["pg:main"], Pin::Pg(Target::Lsn { lsn, timeline: Some(1) }));
        assert_eq!(pinned.pins["s3:up"], Pin::S3 { at: t, skew_us: 2_000_000 }, "no clock evidence: within the skew");
        assert_eq!(pinned.pins["snap:mq"], Pin::Snapshot("b3-1".into()));
        let quiesced = Marker { quiesced: Some((t, t)), ..marker.clone() };
        assert_eq!(marker_pins(&def, &quiesced, &judged(true)).unwrap().pins["s3:up"], Pin::S3 { at: t, skew_us: 0 });
        assert_eq!(marker_pins(&def, &marker, &judged(false)).unwrap_err(), vec!["s3:up: not scanned through"]);
    }

    #[test]
    fn rule_a_correlated_time_pins_each_cluster_at_its_observed_position() {
        let t = Timestamp::from_unix_seconds(1_790_000_000);
        let def = GroupDef {
            name: "app".into(),
            components: vec!["pg:main".into(), "s3:up".into()],
            max_skew_ms: 2000,
            defined_at: t,
            seq: 1,
        };
        let observed = t.saturating_add_micros(-300_000);
        let position = crate::pg::Position {
            lsn: tidemark_core::Lsn::parse("0/3000028").unwrap(),
            timeline: 2,
            observed_at: observed,
            source: crate::pg::PositionSource::Position,
        };
        let point = CorrelatedPoint {
            requested: t,
            at: observed,
            window: crate::group::CorrelatedWindow {
                from: t,
                to: t,
                class: Class::Correlated,
                record: crate::group::Record::default(),
            },
            pg: [("pg:main".to_owned(), position)].into(),
            s3_skew_ms: 2000,
        };
        let pinned = time_pins(&def, &point);
        assert_eq!(pinned.pins["pg:main"], Pin::Pg(Target::Time { at: observed, timeline: Some(2) }));
        assert_eq!(pinned.pins["s3:up"], Pin::S3 { at: observed, skew_us: 2_000_000 });
        assert_eq!((pinned.point.id, pinned.point.at), (t.to_string(), observed));
        assert_eq!(pinned.notes.len(), 1, "the plan says the instant is not the time asked for");
    }

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
