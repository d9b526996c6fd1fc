//! Events (schema v1): the typed form of every kind in DESIGN §3, their JSON
//! wire form, strict parsing, signing, and the entries the log stores.
//!
//! On the wire an event is
//! `{"v":1,"id":UUIDv7,"kind":K,"occurred_at":T,"actor":ACTOR,"body":{...}}`;
//! a signed event is `{"event":EVENT,"sig":BASE64}`; an entry (the Merkle
//! leaf) is `{"event":EVENT,"recorded_at":T,"seq":N,"sig":BASE64}`. The signed
//! and hashed bytes are always the canonical JSON (see [`crate::canonical`]).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::canonical::{CanonicalError, check_integers_only};
use crate::keys::{ActorId, PublicKey, SecretKey, Signature, event_signing_message};
use crate::merkle::{Hash, leaf_hash};
use crate::time::Timestamp;
use crate::types::{ArtifactRef, ComponentId, Digest32, EventId, Lsn, Name};

/// The only schema version this build writes and accepts.
pub const SCHEMA_VERSION: u64 = 1;
/// Largest canonical signed event, in bytes. Larger events are refused.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;
/// Longest free-text field (reasons, locations, commands), in bytes.
pub const MAX_TEXT_BYTES: usize = 4096;
/// Bytes a signed event adds around its event: `{"event":` … `,"sig":"` + 88 base64 + `"}`.
pub const SIGNED_EVENT_OVERHEAD_BYTES: usize = 9 + 8 + 88 + 2;
/// Most items in any list inside an event body.
pub const MAX_LIST_ITEMS: usize = 256;

/// What an actor may do (DESIGN §5).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    JsonSchema,
    bincode::Encode,
    bincode::Decode,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Agent,
    Operator,
    Auditor,
}

impl Role {
    pub fn parse(s: &str) -> Result<Role, String> {
        match s {
            "admin" => Ok(Role::Admin),
            "agent" => Ok(Role::Agent),
            "operator" => Ok(Role::Operator),
            "auditor" => Ok(Role::Auditor),
            _ => Err(format!("unknown role {s:?}: expected admin, agent, operator or auditor")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Agent => "agent",
            Role::Operator => "operator",
            Role::Auditor => "auditor",
        }
    }
}

/// Kinds grouped by who may append them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    Identity,
    Topology,
    Evidence,
    Operation,
}

impl Category {
    /// The role rule of DESIGN §5: admin may append anything; agents the
    /// evidence of backups; operators restores, drills and lifecycle decisions.
    pub fn allows(self, role: Role) -> bool {
        match role {
            Role::Admin => true,
            Role::Agent => self == Category::Evidence,
            Role::Operator => self == Category::Operation,
            Role::Auditor => false,
        }
    }
}

fn text(field: &str, s: &str) -> Result<(), String> {
    if s.len() > MAX_TEXT_BYTES {
        return Err(format!("{field} is {} bytes; the maximum is {MAX_TEXT_BYTES}", s.len()));
    }
    if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(format!("{field} contains control characters"));
    }
    Ok(())
}

fn non_empty(field: &str, s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err(format!("{field} must not be empty"));
    }
    text(field, s)
}

fn list<T>(field: &str, items: &[T]) -> Result<(), String> {
    if items.len() > MAX_LIST_ITEMS {
        return Err(format!("{field} has {} items; the maximum is {MAX_LIST_ITEMS}", items.len()));
    }
    Ok(())
}

fn wal_segment_name(s: &str) -> Result<(), String> {
    if s.len() == 24 && s.bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)) {
        Ok(())
    } else {
        Err(format!("segment {s:?} is not a WAL segment name (24 uppercase hex digits)"))
    }
}

/// Semantic checks beyond the types: lengths, formats, orderings.
pub trait Validate {
    fn validate(&self) -> Result<(), String>;
}

// ---------------------------------------------------------------- identity

/// The first entry of every ledger: who the ledger is and its first admin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, bincode::Encode, bincode::Decode)]
#[serde(deny_unknown_fields)]
pub struct LedgerGenesis {
    /// Checkpoint origin and signed-note key name of the ledger key.
    pub origin: String,
    pub ledger_public_key: PublicKey,
    pub admin_public_key: PublicKey,
    pub admin_name: Name,
}

impl Validate for LedgerGenesis {
    fn validate(&self) -> Result<(), String> {
        if self.origin.is_empty()
            || self.origin.contains('+')
            || self.origin.chars().any(char::is_whitespace)
            || self.origin.len() > 256
        {
            return Err(format!("origin {:?} must be 1 to 256 bytes with no white space or '+'", self.origin));
        }
        if self.ledger_public_key == self.admin_public_key {
            return Err("the ledger key and the admin key must differ".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, bincode::Encode, bincode::Decode)]
#[serde(deny_unknown_fields)]
pub struct KeyEnrolled {
    pub public_key: PublicKey,
    pub name: Name,
    pub roles: Vec<Role>,
}

impl Validate for KeyEnrolled {
    fn validate(&self) -> Result<(), String> {
        if self.roles.is_empty() {
            return Err("roles must name at least one role".into());
        }
        let mut sorted = self.roles.clone();
        sorted.sort();
        sorted.dedup();
        if sorted != self.roles {
            return Err("roles must be sorted (admin, agent, operator, auditor) without repeats".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, bincode::Encode, bincode::Decode)]
#[serde(deny_unknown_fields)]
pub struct KeyRevoked {
    /// The actor id of the revoked key.
    pub key: ActorId,
    pub reason: String,
}

impl Validate for KeyRevoked {
    fn validate(&self) -> Result<(), String> {
        non_empty("reason", &self.reason)
    }
}

// ---------------------------------------------------------------- topology

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, bincode::Encode, bincode::Decode)]
#[serde(deny_unknown_fields)]
pub struct ComponentRegistered {
    pub component: ComponentId,
    /// PostgreSQL: `system_identifier` (decimal) and `wal_segment_size_bytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgresql: Option<PostgresqlIdentity>,
    /// S3: endpoint, bucket, region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Identity>,
    /// Snapshot-only store: what it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotStoreIdentity>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, bincode::Encode, bincode::Decode)]
#[serde(deny_unknown_fields)]
pub struct PostgresqlIdentity {
    pub system_identifier: String,
    pub wal_segment_size_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, bincode::Encode, bincode::Decode)]
#[serde(deny_unknown_fields)]
pub struct S3Identity {
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, bincode::Encode, bincode::Decode)]
#[serde(deny_unknown_fields)]
pub struct SnapshotStoreIdentity {
    pub store: String,
    pub description: String,
}

impl Validate for ComponentRegistered {
    fn validate(&self) -> Result<(), String> {
        let prefix = self.component.as_str().split(':').next().unwrap_or("");
        match (prefix, &self.postgresql, &self.s3, &self.snapshot) {
            ("pg", Some(pg), None, None) => {
                if pg.system_identifier.is_empty() || !pg.system_identifier.bytes().all(|b| b.is_ascii_digit()) {
                    return Err("postgresql.system_identifier must be decimal digits".into());
                }
                let size = pg.wal_segment_size_bytes;
                if !size.is_power_of_two() || !(1 << 20..=1 << 30).contains(&size) {
                    return Err("postgresql.wal_segment_size_bytes must be a power of two from 1 MiB to 1 GiB".into());
                }
                Ok(())
            }
            ("s3", None, Some(s3), None) => {
                non_empty("s3.endpoint", &s3.endpoint)?;
                non_empty("s3.bucket", &s3.bucket)?;
                text("s3.region", &s3.region)
            }
            ("snap", None, None, Some(snap)) => {
                non_empty("snapshot.store", &snap.store)?;
                text("snapshot.description", &snap.description)
            }
            _ => Err(format!(
                "component {} needs exactly the identity block of its type (pg: postgresql, s3: s3, snap: snapshot)",
                self.component
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, bincode::Encode, bincode::Decode)]
#[serde(deny_unknown_fields)]
pub struct GroupDefined {
    pub group: Name,
    pub components: Vec<ComponentId>,
    pub max_skew_ms: u64,
}

impl Validate for GroupDefined {
    fn validate(&self) -> Result<(), String> {
        list("components", &self.components)?;
        if self.components.is_empty() {
            return Err("a group needs at least one component".into());
        }
        let mut sorted = self.components.clone();
        sorted.sort();
        sorted.dedup();
        if sorted.len() != self.components.len() {
            return Err("components are repeated".into());
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- PostgreSQL

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, bincode::Encode, bincode::Decode)]
#[serde(deny_unknown_fields)]
pub struct PgBaseBackup {
    pub component: ComponentId,
    pub backup_id: String,
    pub label: String,
    pub timeline: u32,
    pub start_lsn: Lsn,
    pub stop_lsn: Lsn,
    pub start_time: Timestamp,
    pub stop_time: Timestamp,
    pub size_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_checksum: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blake3: Option<Digest32>,
    pub location: String,
    pub tool: String,
}

impl Validate for PgBaseBackup {
    fn validate(&self) -> Result<(), String> {
        non_empty("backup_id", &self.backup_id)?;
        text("label", &self.label)?;
        non_empty("location", &self.location)?;
        non_empty("tool", &self.tool)?;
        if let Some(c) = &self.manifest_checksum {
            text("manifest_checksum", c)?;
        }
        if self.timeline == 0 {
            return Err("timeline starts at 1".into());
        }
        if self.stop_lsn < self.start_lsn {
            return Err(format!("stop_lsn {} is before start_lsn {}", self.stop_lsn, self.start_lsn));
        }
        if self.stop_time < self.start_time {
            return Err("stop_time is before start_time".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, bincode::Encode, bincode::Decode)]
#[serde(deny_unknown_fields)]
pub struct PgWalArchived {
    pub component: ComponentId,
    pub timeline: u32,
    pub segment: String,
    pub size_bytes: u64,
    pub blake3: Digest32,
    pub sha256: Digest32,
    pub location: String,
}

impl Validate for PgWalArchived {
    fn validate(&self) -> Result<(), String> {
        wal_segment_name(&self.segment)?;
        if u32::from_str_radix(&self.segment[..8], 16).ok() != Some(self.timeline) {
            return Err(format!("segment {} does not belong to timeline {}", self.segment, self.timeline));
        }
        non_empty("location", &self.location)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, bincode::Encode, bincode::Decode)]
#[serde(deny_unknown_fields)]
pub struct PgTimelineHistory {
    pub component: ComponentId,
    pub timeline: u32,
    pub parent_timeline: u32,
    pub switch_lsn: Lsn,
    pub blake3: Digest32,
    pub location: String,
}

impl Validate for PgTimelineHistory {
    fn validate(&self) -> Result<(), String> {
        if self.parent_timeline == 0 || self.parent_timeline >= self.timeline {
            return Err("parent_timeline must be at least 1 and below timeline".into());
        }
        non_empty("location", &self.location)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, bincode::Encode, bincode::Decode)]
#[serde(deny_unknown_fields)]
pub struct PgPosition {
    pub component: ComponentId,
    pub lsn: Lsn,
    pub timeline: u32,
    /// The database server's clock when it reported `lsn`.
    pub observed_at: Timestamp,
}

impl Validate for PgPosition {
    fn validate(&self) -> Result<(), String> {
        if self.timeline == 0 { Err("timeline starts at 1".into()) } else { Ok(()) }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, bincode::Encode, bincode::Decode)]
#[serde(deny_unknown_fields)]
pub struct PgRestorePoint {
    pub component: ComponentId,
    pub name: String,
    pub lsn: Lsn,
    pub timeline: u32,
    pub created_at: Timestamp,
}

impl Validate for PgRestorePoint {
    fn validate(&self) -> Result<(), String> {
        non_empty("name", &self.name)?;
        if self.name.len() > 63 {
            return Err("name is longer than PostgreSQL's 63-byte restore point name".into());
        }
        if self.timeline == 0 { Err("timeline starts at 1".into()) } else { Ok(()) }
    }
}

// ---------------------------------------------------------------- S3

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, bincode::Encode, bincode::Decode)]
#[serde(rename_all = "snake_case")]
pub enum VersioningStatus {
    Unversioned,
    Enabled,
    Suspended,
}

impl VersioningStatus {
    /// The wire name (`unversioned`, `enabled`, `suspended`).
    pub fn name(self) -> &'static str {
        match self {
            VersioningStatus::Unversioned => "unversioned",
            VersioningStatus::Enabled => "enabled",
            VersioningStatus::Suspended => "suspended",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, bincode::Encode, bincode::Decode)]
#[serde(deny_unknown_fields)]
pub struct S3Versioning {
    pub component: ComponentId,
    pub status: VersioningStatus,
    pub observed_at: Timestamp,
}

impl Validate for S3Versioning {
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, bincode::Encode, bincode::Decode)]
#[serde(deny_unknown_fields)]
pub struct S3ObjectVersion {
    pub component: ComponentId,
    pub key: String,
    /// `null` for objects written while versioning was off or suspended.
    pub version_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    pub size_bytes: u64,
    pub last_modified: Timestamp,
    pub is_delete_marker: bool,
    /// Position of this version among the key's versions in the listing, 0 = newest.
    /// Entries whose relative order the listing does not establish (a version and a
    /// delete marker in the same second, neither the latest) share a position.
    pub listing_position: u64,
    pub first_seen_at: Timestamp,
    /// S3 Object Lock retention on this version (HEAD), when the bucket has Object Lock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_lock_mode: Option<RetentionMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_lock_retain_until: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_lock_legal_hold: Option<bool>,
}

impl Validate for S3ObjectVersion {
    fn validate(&self) -> Result<(), String> {
        if self.key.is_empty() || self.key.len() > 1024 {
            return Err("key must be 1 to 1024 bytes".into());
        }
        non_empty("version_id", &self.version_id)?;
        if self.version_id.len() > 1024 {
            return Err("version_id is longer than 1024 bytes".into());
        }
        if let Some(e) = &self.etag {
            text("etag", e)?;
        }
        if self.is_delete_marker && self.size_bytes != 0 {
            return Err("a delete marker has no size".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, bincode::Encode, bincode::Decode)]
#[serde(deny_unknown_fields)]
pub struct S3ScanComplete {
    pub component: ComponentId,
    /// Every version with LastModified ≤ this instant has been recorded.
    pub complete_through: Timestamp,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
    pub versions_listed: u64,
}

impl Validate for S3ScanComplete {
    fn validate(&self) -> Result<(), String> {
        if self.finished_at < self.started_at {
            return Err("finished_at is before started_at".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, bincode::Encode, bincode::Decode)]
#[serde(deny_unknown_fields)]
pub struct S3VersionMissing {
    pub component: ComponentId,
    pub key: String,
    pub version_id: String,
    pub observed_at: Timestamp,
}

impl Validate for S3VersionMissing {
    fn validate(&self) -> Result<(), String> {
        // An S3 key may hold any UTF-8, control characters included.
        if self.key.is_empty() || self.key.len() > 1024 {
            return Err("key must be 1 to 1024 bytes".into());
        }
        non_empty("version_id", &self.version_id)
    }
}

// ---------------------------------------------------------------- snapshots

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, bincode::Encode, bincode::Decode)]
#[serde(deny_unknown_fields)]
pub struct SnapshotTaken {
    pub component: ComponentId,
    pub snapshot_id: String,
    pub taken_at: Timestamp,
    pub method: String,
    pub size_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blake3: Option<Digest32>,
    pub location: String,
}

impl Validate for SnapshotTaken {
    fn validate(&self) -> Result<(), String> {
        non_empty("snapshot_id", &self.snapshot_id)?;
        non_empty("method", &self.method)?;
        non_empty("location", &self.location)
    }
}

// ---------------------------------------------------------------- consistency

/// One component's part of a marker: what pins it at the marked moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, bincode::Encode, bincode::Decode)]
#[serde(deny_unknown_fields)]
pub struct MarkerPart {
    pub component: ComponentId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pg_lsn: Option<Lsn>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pg_timeline: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pg_restore_point: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_watermark: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
    /// How the S3 watermark was taken: the bucket's own clock observed
    /// ticking to a whole second just before the PostgreSQL parts were cut.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_clock: Option<S3ClockEvidence>,
}

impl MarkerPart {
    /// A part of `component` pinning nothing yet (the pins are set by field).
    pub fn new(component: ComponentId) -> MarkerPart {
        MarkerPart {
            component,
            pg_lsn: None,
            pg_timeline: None,
            pg_restore_point: None,
            s3_watermark: None,
            snapshot_id: None,
            s3_clock: None,
        }
    }
}

/// One probe of a bucket's clock: a `CopyObject` under `.tidemark/`, whose
/// response carries the new version's LastModified (whole seconds, S3's clock).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, bincode::Encode, bincode::Decode)]
#[serde(deny_unknown_fields)]
pub struct ClockProbe {
    pub version_id: String,
    pub last_modified: Timestamp,
    /// The recorder's clock when the request was sent and the response received.
    pub sent_at: Timestamp,
    pub received_at: Timestamp,
}

/// The evidence of an exact S3 cut: probe `before` was stamped in the
/// second before `boundary`, probe `after` (the next request) in the second
/// starting at it, and every PostgreSQL part was cut after `before`'s
/// response and before `cut_returned_at` (concurrently with `after`). The
/// tick and the cut both lie within [`S3ClockEvidence::cut_spread_us`] of
/// `before.sent_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, bincode::Encode, bincode::Decode)]
#[serde(deny_unknown_fields)]
pub struct S3ClockEvidence {
    /// A whole second of S3's clock.
    pub boundary: Timestamp,
    pub before: ClockProbe,
    pub after: ClockProbe,
    /// When the last PostgreSQL restore point of the marker returned (recorder's clock).
    pub cut_returned_at: Timestamp,
    /// Multipart uploads in progress at the cut that were initiated before `boundary`
    /// (their versions would carry a LastModified before it): their keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub uploads_in_progress: Vec<String>,
}

impl S3ClockEvidence {
    /// Rule: the longest the cut can be from the S3 boundary: from sending
    /// the last probe stamped before it to the later of the next probe's
    /// response and the last restore point's return (both the tick and the
    /// cut lie in that span).
    pub fn cut_spread_us(&self) -> i64 {
        self.cut_returned_at.max(self.after.received_at).as_micros() - self.before.sent_at.as_micros()
    }

    /// Rule: the evidence is self-consistent and pins `watermark` (= boundary − 1 µs).
    pub fn check(&self, watermark: Timestamp) -> Result<(), String> {
        const SECOND: i64 = 1_000_000;
        let b = self.boundary.as_micros();
        if b.rem_euclid(SECOND) != 0 {
            return Err(format!("s3_clock.boundary {} is not a whole second", self.boundary));
        }
        if watermark.as_micros() != b - 1 {
            return Err(format!("s3_watermark must be 1 µs before s3_clock.boundary {}", self.boundary));
        }
        if self.before.last_modified.as_micros() != b - SECOND || self.after.last_modified.as_micros() != b {
            return Err("s3_clock probes must be stamped in the second before the boundary and the second at it".into());
        }
        non_empty("s3_clock.before.version_id", &self.before.version_id)?;
        non_empty("s3_clock.after.version_id", &self.after.version_id)?;
        let order = [self.before.sent_at, self.before.received_at, self.after.sent_at, self.after.received_at];
        if order.windows(2).any(|w| w[1] < w[0]) || self.cut_returned_at < self.before.received_at {
            return Err("s3_clock times must be in order: before sent ≤ received ≤ after sent ≤ received, and the cut returned after before was received".into());
        }
        list("s3_clock.uploads_in_progress", &self.uploads_in_progress)
    }
}

fn marker_parts(parts: &[MarkerPart]) -> Result<(), String> {
    list("components", parts)?;
    if parts.is_empty() {
        return Err("a marker needs at least one component".into());
    }
    for p in parts {
        let pinned = [p.pg_lsn.is_some(), p.s3_watermark.is_some(), p.snapshot_id.is_some()];
        if pinned.iter().filter(|x| **x).count() != 1 {
            return Err(format!(
                "component {} must be pinned by exactly one of pg_lsn, s3_watermark, snapshot_id",
                p.component
            ));
        }
        if p.pg_lsn.is_some() != p.pg_timeline.is_some() {
            return Err(format!("component {}: pg_lsn and pg_timeline go together", p.component));
        }
        match (&p.s3_clock, p.s3_watermark) {
            (Some(c), Some(w)) => c.check(w).map_err(|e| format!("component {}: {e}", p.component))?,
            (Some(_), None) => return Err(format!("component {}: s3_clock goes with s3_watermark", p.component)),
            _ => {}
        }
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, bincode::Encode, bincode::Decode)]
#[serde(deny_unknown_fields)]
pub struct MarkerQuiesced {
    pub group: Name,
    pub marker_id: Name,
    pub writers_stopped_at: Timestamp,
    pub writers_resumed_at: Timestamp,
    pub components: Vec<MarkerPart>,
}

impl Validate for MarkerQuiesced {
    fn validate(&self) -> Result<(), String> {
        if self.writers_resumed_at < self.writers_stopped_at {
            return Err("writers_resumed_at is before writers_stopped_at".into());
        }
        marker_parts(&self.components)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, bincode::Encode, bincode::Decode)]
#[serde(deny_unknown_fields)]
pub struct MarkerPoint {
    pub group: Name,
    pub marker_id: Name,
    pub taken_at: Timestamp,
    pub components: Vec<MarkerPart>,
}

impl Validate for MarkerPoint {
    fn validate(&self) -> Result<(), String> {
        marker_parts(&self.components)
    }
}

// ---------------------------------------------------------------- lifecycle

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, bincode::Encode, bincode::Decode)]
#[serde(rename_all = "snake_case")]
pub enum VerifyOutcome {
    Ok,
    Missing,
    Corrupt,
}

impl VerifyOutcome {
    /// The outcome as events name it.
    pub fn name(self) -> &'static str {
        match self {
            VerifyOutcome::Ok => "ok",
            VerifyOutcome::Missing => "missing",
            VerifyOutcome::Corrupt => "corrupt",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, bincode::Encode, bincode::Decode)]
#[serde(deny_unknown_fields)]
pub struct ArtifactVerified {
    pub artifact: ArtifactRef,
    pub method: String,
    pub outcome: VerifyOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blake3: Option<Digest32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Validate for ArtifactVerified {
    fn validate(&self) -> Result<(), String> {
        non_empty("method", &self.method)?;
        self.detail.as_deref().map_or(Ok(()), |d| text("detail", d))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, bincode::Encode, bincode::Decode)]
#[serde(deny_unknown_fields)]
pub struct ArtifactCopied {
    pub artifact: ArtifactRef,
    pub to_location: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blake3: Option<Digest32>,
}

impl Validate for ArtifactCopied {
    fn validate(&self) -> Result<(), String> {
        non_empty("to_location", &self.to_location)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, bincode::Encode, bincode::Decode)]
#[serde(rename_all = "snake_case")]
pub enum RetentionMode {
    Governance,
    Compliance,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, bincode::Encode, bincode::Decode)]
#[serde(deny_unknown_fields)]
pub struct ArtifactRetention {
    pub artifact: ArtifactRef,
    pub until: Timestamp,
    pub mode: RetentionMode,
}

impl Validate for ArtifactRetention {
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, bincode::Encode, bincode::Decode)]
#[serde(rename_all = "snake_case")]
pub enum HoldStatus {
    Set,
    Released,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, bincode::Encode, bincode::Decode)]
#[serde(deny_unknown_fields)]
pub struct ArtifactLegalHold {
    pub artifact: ArtifactRef,
    pub status: HoldStatus,
    pub reason: String,
}

impl Validate for ArtifactLegalHold {
    fn validate(&self) -> Result<(), String> {
        non_empty("reason", &self.reason)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, bincode::Encode, bincode::Decode)]
#[serde(deny_unknown_fields)]
pub struct ArtifactDeleted {
    pub artifact: ArtifactRef,
    pub reason: String,
}

impl Validate for ArtifactDeleted {
    fn validate(&self) -> Result<(), String> {
        non_empty("reason", &self.reason)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, bincode::Encode, bincode::Decode)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Succeeded,
    Failed,
    Partial,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, bincode::Encode, bincode::Decode)]
#[serde(deny_unknown_fields)]
pub struct ComponentOutcome {
    pub component: ComponentId,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, bincode::Encode, bincode::Decode)]
#[serde(deny_unknown_fields)]
pub struct RestorePerformed {
    /// A group name or a component id.
    pub target: String,
    pub recovery_point: String,
    pub plan_digest: Digest32,
    pub target_environment: String,
    pub outcome: Outcome,
    pub components: Vec<ComponentOutcome>,
    pub duration_ms: u64,
}

impl Validate for RestorePerformed {
    fn validate(&self) -> Result<(), String> {
        non_empty("target", &self.target)?;
        non_empty("recovery_point", &self.recovery_point)?;
        non_empty("target_environment", &self.target_environment)?;
        list("components", &self.components)?;
        for c in &self.components {
            if let Some(d) = &c.detail {
                text("detail", d)?;
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, bincode::Encode, bincode::Decode)]
#[serde(deny_unknown_fields)]
pub struct DrillCheck {
    pub command: String,
    pub exit_code: i32,
    pub passed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, bincode::Encode, bincode::Decode)]
#[serde(rename_all = "snake_case")]
pub enum DrillResult {
    Passed,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, bincode::Encode, bincode::Decode)]
#[serde(deny_unknown_fields)]
pub struct DrillCompleted {
    pub group: Name,
    pub recovery_point: String,
    pub plan_digest: Digest32,
    pub checks: Vec<DrillCheck>,
    pub result: DrillResult,
    pub duration_ms: u64,
}

impl Validate for DrillCompleted {
    fn validate(&self) -> Result<(), String> {
        non_empty("recovery_point", &self.recovery_point)?;
        list("checks", &self.checks)?;
        for c in &self.checks {
            non_empty("command", &c.command)?;
        }
        let all_passed = self.checks.iter().all(|c| c.passed);
        if (self.result == DrillResult::Passed) != all_passed {
            return Err("result must be passed exactly when every check passed".into());
        }
        Ok(())
    }
}

/// How a scheduled restore test chose its recovery point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, bincode::Encode, bincode::Decode)]
#[serde(rename_all = "snake_case")]
pub enum TestPick {
    /// The newest restorable marker within the window.
    Latest,
    /// A restorable marker within the window, drawn with `seed`.
    Random,
}

/// The recovery point a scheduled restore test chose, and how: recorded in
/// the batch of the test's `drill.completed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, bincode::Encode, bincode::Decode)]
#[serde(deny_unknown_fields)]
pub struct RestoreTestSelected {
    pub group: Name,
    /// The marker the test restored.
    pub recovery_point: String,
    pub pick: TestPick,
    /// How far back the point could be, in milliseconds.
    pub window_ms: u64,
    /// The seed of a random pick (present exactly when `pick` is `random`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// How many restorable markers lay within the window.
    pub candidates: u64,
}

impl Validate for RestoreTestSelected {
    fn validate(&self) -> Result<(), String> {
        non_empty("recovery_point", &self.recovery_point)?;
        if self.candidates == 0 {
            return Err("candidates must be at least 1: a point was chosen among them".into());
        }
        if self.seed.is_some() != (self.pick == TestPick::Random) {
            return Err("seed is given exactly when pick is random".into());
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- the kind table

macro_rules! event_kinds {
    ($( $variant:ident => $name:literal, $body:ty, $category:ident; )*) => {
        /// Every event kind of schema v1.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Kind { $( $variant, )* }

        impl Kind {
            pub const ALL: &'static [Kind] = &[ $( Kind::$variant, )* ];

            pub fn name(self) -> &'static str {
                match self { $( Kind::$variant => $name, )* }
            }

            pub fn category(self) -> Category {
                match self { $( Kind::$variant => Category::$category, )* }
            }

            pub fn from_name(name: &str) -> Option<Kind> {
                match name { $( $name => Some(Kind::$variant), )* _ => None }
            }

            /// JSON Schema of this kind's body.
            pub fn body_schema(self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
                match self { $( Kind::$variant => generator.subschema_for::<$body>(), )* }
            }
        }

        /// A typed event body; the variant is the event's kind.
        #[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
        pub enum EventBody { $( $variant($body), )* }

        impl EventBody {
            pub fn kind(&self) -> Kind {
                match self { $( EventBody::$variant(_) => Kind::$variant, )* }
            }

            /// The body's JSON (what `body` holds in the wire form).
            pub fn to_value(&self) -> Value {
                match self { $( EventBody::$variant(b) => serde_json::to_value(b), )* }
                    .expect("event bodies serialise to JSON")
            }

            /// The body's canonical JSON, written directly.
            fn canonical_body(&self) -> Vec<u8> {
                match self { $( EventBody::$variant(b) => crate::canonical_writer::to_canonical(b), )* }
                    .expect("typed bodies have a canonical form")
            }

            fn from_value(kind: Kind, value: Value) -> Result<EventBody, serde_json::Error> {
                match kind { $( Kind::$variant => serde_json::from_value::<$body>(value).map(EventBody::$variant), )* }
            }

            pub fn validate(&self) -> Result<(), String> {
                match self { $( EventBody::$variant(b) => b.validate(), )* }
            }
        }
    };
}

event_kinds! {
    LedgerGenesis => "ledger.genesis", LedgerGenesis, Identity;
    KeyEnrolled => "key.enrolled", KeyEnrolled, Identity;
    KeyRevoked => "key.revoked", KeyRevoked, Identity;
    ComponentRegistered => "component.registered", ComponentRegistered, Topology;
    GroupDefined => "group.defined", GroupDefined, Topology;
    PgBaseBackup => "pg.base_backup", PgBaseBackup, Evidence;
    PgWalArchived => "pg.wal_archived", PgWalArchived, Evidence;
    PgTimelineHistory => "pg.timeline_history", PgTimelineHistory, Evidence;
    PgPosition => "pg.position", PgPosition, Evidence;
    PgRestorePoint => "pg.restore_point", PgRestorePoint, Evidence;
    S3Versioning => "s3.versioning", S3Versioning, Evidence;
    S3ObjectVersion => "s3.object_version", S3ObjectVersion, Evidence;
    S3ScanComplete => "s3.scan_complete", S3ScanComplete, Evidence;
    S3VersionMissing => "s3.version_missing", S3VersionMissing, Evidence;
    SnapshotTaken => "snapshot.taken", SnapshotTaken, Evidence;
    MarkerQuiesced => "marker.quiesced", MarkerQuiesced, Evidence;
    MarkerPoint => "marker.point", MarkerPoint, Evidence;
    ArtifactVerified => "artifact.verified", ArtifactVerified, Evidence;
    ArtifactCopied => "artifact.copied", ArtifactCopied, Evidence;
    ArtifactRetention => "artifact.retention", ArtifactRetention, Operation;
    ArtifactLegalHold => "artifact.legal_hold", ArtifactLegalHold, Operation;
    ArtifactDeleted => "artifact.deleted", ArtifactDeleted, Operation;
    RestorePerformed => "restore.performed", RestorePerformed, Operation;
    DrillCompleted => "drill.completed", DrillCompleted, Operation;
    RestoreTestSelected => "restore_test.selected", RestoreTestSelected, Operation;
}

// ---------------------------------------------------------------- events

/// Why an event was refused before it reached any ledger state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    #[error("{what} must be a JSON object")]
    NotAnObject { what: &'static str },
    #[error("missing field `{field}` in {what}")]
    MissingField { what: &'static str, field: &'static str },
    #[error("unknown field `{field}` in {what}")]
    UnknownField { what: &'static str, field: String },
    #[error("unsupported schema version {0}: this build reads v{SCHEMA_VERSION}")]
    UnsupportedVersion(String),
    #[error("unknown kind {0:?}: see schemas/ for the kinds of schema v1")]
    UnknownKind(String),
    #[error("invalid `{field}`: {detail}")]
    BadHeader { field: &'static str, detail: String },
    #[error("invalid {kind} body: {detail}")]
    BadBody { kind: &'static str, detail: String },
    #[error("not canonical: {0}")]
    NonCanonical(String),
    #[error("event is {bytes} bytes; the maximum is {max} bytes")]
    TooLarge { bytes: usize, max: usize },
}

impl From<CanonicalError> for EventError {
    fn from(e: CanonicalError) -> Self {
        EventError::NonCanonical(e.to_string())
    }
}

/// An event: a signed statement by one actor.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Event {
    pub id: EventId,
    pub occurred_at: Timestamp,
    pub actor: ActorId,
    pub body: EventBody,
}

const EVENT_FIELDS: [&str; 6] = ["actor", "body", "id", "kind", "occurred_at", "v"];

fn take_object(value: Value, what: &'static str) -> Result<Map<String, Value>, EventError> {
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(EventError::NotAnObject { what }),
    }
}

fn check_fields(
    map: &Map<String, Value>,
    what: &'static str,
    required: &[&'static str],
    optional: &[&'static str],
) -> Result<(), EventError> {
    if let Some(extra) = map.keys().find(|k| !required.contains(&k.as_str()) && !optional.contains(&k.as_str())) {
        return Err(EventError::UnknownField { what, field: extra.clone() });
    }
    if let Some(missing) = required.iter().find(|f| !map.contains_key(**f)) {
        return Err(EventError::MissingField { what, field: missing });
    }
    Ok(())
}

fn header<T: serde::de::DeserializeOwned>(map: &mut Map<String, Value>, field: &'static str) -> Result<T, EventError> {
    let v = map.remove(field).unwrap_or(Value::Null);
    serde_json::from_value(v).map_err(|e| EventError::BadHeader { field, detail: e.to_string() })
}

impl Event {
    pub fn kind(&self) -> Kind {
        self.body.kind()
    }

    /// The JSON wire form.
    pub fn to_value(&self) -> Value {
        let mut map = Map::new();
        map.insert("v".into(), Value::from(SCHEMA_VERSION));
        map.insert("id".into(), Value::String(self.id.to_string()));
        map.insert("kind".into(), Value::String(self.kind().name().into()));
        map.insert("occurred_at".into(), Value::String(self.occurred_at.to_string()));
        map.insert("actor".into(), Value::String(self.actor.to_string()));
        map.insert("body".into(), self.body.to_value());
        Value::Object(map)
    }

    /// The canonical JSON bytes of the event. The header's values (hex, a
    /// UUID, a kind name, a timestamp) never need escaping, so they are
    /// written in place around the body's canonical bytes; keys sort as
    /// `actor < body < id < kind < occurred_at < v`.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let body = self.body.canonical_body();
        let mut out = Vec::with_capacity(body.len() + 192);
        out.extend_from_slice(b"{\"actor\":\"");
        out.extend_from_slice(self.actor.to_string().as_bytes());
        out.extend_from_slice(b"\",\"body\":");
        out.extend_from_slice(&body);
        out.extend_from_slice(b",\"id\":\"");
        out.extend_from_slice(self.id.to_string().as_bytes());
        out.extend_from_slice(b"\",\"kind\":\"");
        out.extend_from_slice(self.kind().name().as_bytes());
        out.extend_from_slice(b"\",\"occurred_at\":\"");
        out.extend_from_slice(self.occurred_at.to_string().as_bytes());
        out.extend_from_slice(b"\",\"v\":");
        out.extend_from_slice(SCHEMA_VERSION.to_string().as_bytes());
        out.push(b'}');
        out
    }

    /// The bytes a signature covers: `tidemark-event-v1\n` ‖ canonical event.
    pub fn signing_message(&self) -> Vec<u8> {
        event_signing_message(&self.canonical_bytes())
    }

    /// blake3 of the canonical event: two sends of the same event have the same digest.
    pub fn content_digest(&self) -> Digest32 {
        Digest32::blake3_of(&self.canonical_bytes())
    }

    /// Parses and checks an event's wire form strictly: exact fields, known
    /// kind, valid body, canonical representation.
    pub fn from_value(value: Value) -> Result<Event, EventError> {
        let original = value.clone();
        let mut map = take_object(value, "event")?;
        check_fields(&map, "event", &EVENT_FIELDS, &[])?;
        let event = Event::from_map(&mut map, None, None, None)?;
        check_integers_only(&original, &mut String::from("$"))?;
        // Equal JSON values have equal canonical bytes (sorted maps, integers
        // only), so comparing values is the canonical check without encoding.
        if original != event.to_value() {
            return Err(EventError::NonCanonical(
                "re-encoding the parsed event changes it (explicit null for an absent optional field, or a value written in a non-canonical form, e.g. a lowercase LSN)".into(),
            ));
        }
        Ok(event)
    }

    /// Completes an unsigned draft — `kind` and `body`, with `v`, `id`,
    /// `occurred_at` and `actor` optional — into an event of `actor`.
    /// Missing ids and times come from the caller (randomness and time are inputs).
    pub fn from_draft(value: Value, actor: ActorId, id: EventId, now: Timestamp) -> Result<Event, EventError> {
        let mut map = take_object(value, "event")?;
        check_fields(&map, "event", &["kind", "body"], &["v", "id", "occurred_at", "actor"])?;
        if let Some(given) = map.get("actor")
            && given.as_str() != Some(actor.to_string().as_str())
        {
            return Err(EventError::BadHeader {
                field: "actor",
                detail: format!("the draft names actor {given} but the signer is {actor}"),
            });
        }
        map.insert("actor".into(), Value::String(actor.to_string()));
        Event::from_map(&mut map, Some(id), Some(now), Some(SCHEMA_VERSION))
    }

    fn from_map(
        map: &mut Map<String, Value>,
        default_id: Option<EventId>,
        default_time: Option<Timestamp>,
        default_v: Option<u64>,
    ) -> Result<Event, EventError> {
        let v = match map.remove("v") {
            None => default_v.unwrap_or(0),
            Some(Value::Number(n)) if n.as_u64() == Some(SCHEMA_VERSION) => SCHEMA_VERSION,
            Some(other) => return Err(EventError::UnsupportedVersion(other.to_string())),
        };
        if v != SCHEMA_VERSION {
            return Err(EventError::UnsupportedVersion(v.to_string()));
        }
        let kind_name: String = header(map, "kind")?;
        let kind = Kind::from_name(&kind_name).ok_or(EventError::UnknownKind(kind_name))?;
        let id = match (map.contains_key("id"), default_id) {
            (false, Some(id)) => id,
            _ => header(map, "id")?,
        };
        let occurred_at = match (map.contains_key("occurred_at"), default_time) {
            (false, Some(t)) => t,
            _ => header(map, "occurred_at")?,
        };
        let actor: ActorId = header(map, "actor")?;
        let body_value = map.remove("body").unwrap_or(Value::Null);
        if !body_value.is_object() {
            return Err(EventError::BadBody { kind: kind.name(), detail: "body must be a JSON object".into() });
        }
        check_integers_only(&body_value, &mut String::from("$.body"))?;
        let body = EventBody::from_value(kind, body_value)
            .map_err(|e| EventError::BadBody { kind: kind.name(), detail: e.to_string() })?;
        body.validate().map_err(|detail| EventError::BadBody { kind: kind.name(), detail })?;
        Ok(Event { id, occurred_at, actor, body })
    }

    /// Signs this event with `key`. The event's actor must be the key's actor id.
    pub fn sign(self, key: &SecretKey) -> SignedEvent {
        assert_eq!(self.actor, key.actor_id(), "callers build events with the signer's actor id");
        let sig = key.sign(&self.signing_message());
        SignedEvent { event: self, sig }
    }
}

/// An event not signed yet: a typed body with the id and time it is to
/// carry. Agents derive both from what they observed (a file's modification
/// time and digest), so observing the same thing again gives the very same
/// event, which the ledger acknowledges as a duplicate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    pub id: EventId,
    pub occurred_at: Timestamp,
    pub body: EventBody,
}

impl Draft {
    /// Signed by `key`: refused here when the body breaks one of its rules
    /// or the event is over [`MAX_EVENT_BYTES`], before anything is sent.
    pub fn sign(self, key: &SecretKey) -> Result<SignedEvent, String> {
        self.body.validate()?;
        let event = Event { id: self.id, occurred_at: self.occurred_at, actor: key.actor_id(), body: self.body };
        let signed = event.sign(key);
        signed.check_size().map_err(|e| e.to_string())?;
        Ok(signed)
    }
}

/// An event and its signature, as writers send it.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct SignedEvent {
    pub event: Event,
    pub sig: Signature,
}

impl SignedEvent {
    pub fn to_value(&self) -> Value {
        let mut map = Map::new();
        map.insert("event".into(), self.event.to_value());
        map.insert("sig".into(), Value::String(self.sig.to_base64()));
        Value::Object(map)
    }

    /// Canonical `{"event":E,"sig":"…"}` around an event's canonical bytes
    /// (keys sort as `event < sig`; base64 never needs escaping).
    pub fn bytes_from_parts(canonical_event: &[u8], sig: &Signature) -> Vec<u8> {
        let mut out = Vec::with_capacity(canonical_event.len() + SIGNED_EVENT_OVERHEAD_BYTES);
        out.extend_from_slice(b"{\"event\":");
        out.extend_from_slice(canonical_event);
        out.extend_from_slice(b",\"sig\":\"");
        out.extend_from_slice(sig.to_base64().as_bytes());
        out.extend_from_slice(b"\"}");
        out
    }

    pub fn to_json_line(&self) -> String {
        String::from_utf8(SignedEvent::bytes_from_parts(&self.event.canonical_bytes(), &self.sig))
            .expect("JSON is UTF-8")
    }

    /// Parses `{"event":{...},"sig":"..."}` strictly and enforces [`MAX_EVENT_BYTES`].
    /// The signature itself is checked by the ledger, against its key registry.
    pub fn from_value(value: Value) -> Result<SignedEvent, EventError> {
        let mut map = take_object(value, "signed event")?;
        check_fields(&map, "signed event", &["event", "sig"], &[])?;
        let sig: Signature = header(&mut map, "sig")?;
        let event = Event::from_value(map.remove("event").unwrap_or(Value::Null))?;
        let signed = SignedEvent { event, sig };
        signed.check_size()?;
        Ok(signed)
    }

    pub fn check_size(&self) -> Result<(), EventError> {
        let bytes = self.event.canonical_bytes().len() + SIGNED_EVENT_OVERHEAD_BYTES;
        if bytes > MAX_EVENT_BYTES {
            return Err(EventError::TooLarge { bytes, max: MAX_EVENT_BYTES });
        }
        Ok(())
    }

    pub fn from_json(text: &str) -> Result<SignedEvent, EventError> {
        if text.len() > 2 * MAX_EVENT_BYTES {
            return Err(EventError::TooLarge { bytes: text.len(), max: MAX_EVENT_BYTES });
        }
        let value: Value = serde_json::from_str(text).map_err(|e| EventError::MalformedJson(e.to_string()))?;
        SignedEvent::from_value(value)
    }
}

/// An event as the log stores it: the Merkle leaf is its canonical JSON.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Entry {
    pub seq: u64,
    pub recorded_at: Timestamp,
    pub event: Event,
    pub sig: Signature,
}

impl Entry {
    pub fn to_value(&self) -> Value {
        let mut map = Map::new();
        map.insert("seq".into(), Value::from(self.seq));
        map.insert("recorded_at".into(), Value::String(self.recorded_at.to_string()));
        map.insert("event".into(), self.event.to_value());
        map.insert("sig".into(), Value::String(self.sig.to_base64()));
        Value::Object(map)
    }

    /// The leaf bytes: canonical JSON of the entry.
    pub fn leaf_bytes(&self) -> Vec<u8> {
        Entry::leaf_bytes_from_parts(&self.event.canonical_bytes(), self.seq, self.recorded_at, &self.sig)
    }

    pub fn leaf_hash(&self) -> Hash {
        leaf_hash(&self.leaf_bytes())
    }

    /// The leaf bytes built from an event's canonical bytes, without
    /// re-encoding the event: the entry's keys sort as
    /// `event < recorded_at < seq < sig`, so this is its canonical JSON.
    pub fn leaf_bytes_from_parts(canonical_event: &[u8], seq: u64, recorded_at: Timestamp, sig: &Signature) -> Vec<u8> {
        let mut out = Vec::with_capacity(canonical_event.len() + 160);
        out.extend_from_slice(b"{\"event\":");
        out.extend_from_slice(canonical_event);
        out.extend_from_slice(b",\"recorded_at\":\"");
        out.extend_from_slice(recorded_at.to_string().as_bytes());
        out.extend_from_slice(b"\",\"seq\":");
        out.extend_from_slice(seq.to_string().as_bytes());
        out.extend_from_slice(b",\"sig\":\"");
        out.extend_from_slice(sig.to_base64().as_bytes());
        out.extend_from_slice(b"\"}");
        out
    }

    pub fn signed_event(&self) -> SignedEvent {
        SignedEvent { event: self.event.clone(), sig: self.sig }
    }

    /// Parses an entry's JSON (as exported) strictly.
    pub fn from_value(value: Value) -> Result<Entry, EventError> {
        let mut map = take_object(value, "entry")?;
        check_fields(&map, "entry", &["event", "recorded_at", "seq", "sig"], &[])?;
        let seq: u64 = header(&mut map, "seq")?;
        let recorded_at: Timestamp = header(&mut map, "recorded_at")?;
        let sig: Signature = header(&mut map, "sig")?;
        let event = Event::from_value(map.remove("event").unwrap_or(Value::Null))?;
        Ok(Entry { seq, recorded_at, event, sig })
    }
}

/// What an event is about: the artifacts and components it touches. The
/// store indexes these so custody and export queries never scan the log.
/// Artifact references follow one convention per kind (see docs/formats.md).
impl EventBody {
    pub fn artifacts(&self) -> Vec<String> {
        match self {
            EventBody::PgWalArchived(b) => vec![format!("{}/wal/{}", b.component, b.segment)],
            EventBody::PgTimelineHistory(b) => vec![format!("{}/history/{:08X}.history", b.component, b.timeline)],
            EventBody::PgBaseBackup(b) => vec![format!("{}/base/{}", b.component, b.backup_id)],
            EventBody::S3ObjectVersion(b) => vec![format!("{}/v/{}@{}", b.component, b.key, b.version_id)],
            EventBody::S3VersionMissing(b) => vec![format!("{}/v/{}@{}", b.component, b.key, b.version_id)],
            EventBody::SnapshotTaken(b) => vec![format!("{}/snapshot/{}", b.component, b.snapshot_id)],
            EventBody::MarkerQuiesced(MarkerQuiesced { components, .. })
            | EventBody::MarkerPoint(MarkerPoint { components, .. }) => components
                .iter()
                .filter_map(|p| p.snapshot_id.as_ref().map(|s| format!("{}/snapshot/{s}", p.component)))
                .collect(),
            EventBody::ArtifactVerified(b) => vec![b.artifact.to_string()],
            EventBody::ArtifactCopied(b) => vec![b.artifact.to_string()],
            EventBody::ArtifactRetention(b) => vec![b.artifact.to_string()],
            EventBody::ArtifactLegalHold(b) => vec![b.artifact.to_string()],
            EventBody::ArtifactDeleted(b) => vec![b.artifact.to_string()],
            _ => Vec::new(),
        }
    }

    pub fn components(&self) -> Vec<String> {
        let one = |c: &ComponentId| vec![c.to_string()];
        match self {
            EventBody::ComponentRegistered(b) => one(&b.component),
            EventBody::GroupDefined(b) => b.components.iter().map(ToString::to_string).collect(),
            EventBody::PgBaseBackup(b) => one(&b.component),
            EventBody::PgWalArchived(b) => one(&b.component),
            EventBody::PgTimelineHistory(b) => one(&b.component),
            EventBody::PgPosition(b) => one(&b.component),
            EventBody::PgRestorePoint(b) => one(&b.component),
            EventBody::S3Versioning(b) => one(&b.component),
            EventBody::S3ObjectVersion(b) => one(&b.component),
            EventBody::S3ScanComplete(b) => one(&b.component),
            EventBody::S3VersionMissing(b) => one(&b.component),
            EventBody::SnapshotTaken(b) => one(&b.component),
            EventBody::MarkerQuiesced(MarkerQuiesced { components, .. })
            | EventBody::MarkerPoint(MarkerPoint { components, .. }) => {
                components.iter().map(|p| p.component.to_string()).collect()
            }
            EventBody::RestorePerformed(b) => b.components.iter().map(|c| c.component.to_string()).collect(),
            EventBody::ArtifactVerified(_)
            | EventBody::ArtifactCopied(_)
            | EventBody::ArtifactRetention(_)
            | EventBody::ArtifactLegalHold(_)
            | EventBody::ArtifactDeleted(_) => {
                self.artifacts().iter().map(|a| a.split('/').next().unwrap_or("").to_owned()).collect()
            }
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::value_to_canonical_vec;
    use serde_json::json;

    #[test]
    fn rule_a_verify_outcome_is_named_as_it_serialises() {
        for o in [VerifyOutcome::Ok, VerifyOutcome::Missing, VerifyOutcome::Corrupt] {
            assert_eq!(serde_json::to_value(o).unwrap(), o.name());
        }
    }

    fn key() -> SecretKey {
        SecretKey::from_seed("agent-1", [3; 32])
    }

    fn wal_draft() -> Value {
        json!({"kind": "pg.wal_archived", "body": {
            "component": "pg:main", "timeline": 1, "segment": "000000010000000000000003",
            "size_bytes": 16777216, "blake3": "aa".repeat(32), "sha256": "bb".repeat(32),
            "location": "/archive/000000010000000000000003"}})
    }

    fn event() -> Event {
        Event::from_draft(wal_draft(), key().actor_id(), EventId::new_v7(1, [1; 10]), Timestamp::from_micros(5))
            .unwrap()
    }

    #[test]
    fn wire_round_trip_is_exact() {
        let signed = event().sign(&key());
        let line = signed.to_json_line();
        let back = SignedEvent::from_json(&line).unwrap();
        assert_eq!(back, signed);
        assert_eq!(back.to_json_line(), line);
        assert!(line.starts_with(r#"{"event":{"actor":""#), "keys sorted: {line}");
    }

    #[test]
    fn signature_covers_context_and_canonical_bytes() {
        let e = event();
        let mut expected = b"tidemark-event-v1\n".to_vec();
        expected.extend_from_slice(&e.canonical_bytes());
        assert_eq!(e.signing_message(), expected);
        let signed = e.sign(&key());
        assert!(key().public_key().verify(&signed.event.signing_message(), &signed.sig));
    }

    fn refuse(mutate: impl FnOnce(&mut Value)) -> EventError {
        let mut v = event().sign(&key()).to_value();
        mutate(&mut v);
        SignedEvent::from_value(v).unwrap_err()
    }

    #[test]
    fn refusals_name_the_problem() {
        assert!(
            matches!(refuse(|v| v["event"]["kind"] = json!("pg.nope")), EventError::UnknownKind(k) if k == "pg.nope")
        );
        assert!(matches!(
            refuse(|v| { v["event"]["body"].as_object_mut().unwrap().remove("segment"); }),
            EventError::BadBody { detail, .. } if detail.contains("missing field `segment`")
        ));
        assert!(matches!(
            refuse(|v| v["event"]["body"]["colour"] = json!("red")),
            EventError::BadBody { detail, .. } if detail.contains("unknown field `colour`")
        ));
        assert!(
            matches!(refuse(|v| v["event"]["extra"] = json!(1)), EventError::UnknownField { field, .. } if field == "extra")
        );
        assert!(matches!(
            refuse(|v| {
                v["event"].as_object_mut().unwrap().remove("actor");
            }),
            EventError::MissingField { field: "actor", .. }
        ));
        assert!(matches!(refuse(|v| v["event"]["v"] = json!(2)), EventError::UnsupportedVersion(_)));
        assert!(matches!(
            refuse(|v| v["event"]["body"]["size_bytes"] = json!(1.5)),
            EventError::NonCanonical(m) if m.contains("$.body.size_bytes") && m.contains("integers only")
        ));
        assert!(matches!(refuse(|v| v["event"]["body"]["segment"] = json!("xyz")), EventError::BadBody { .. }));
        assert!(matches!(refuse(|v| v["sig"] = json!("AAAA")), EventError::BadHeader { field: "sig", .. }));
        assert!(matches!(
            refuse(|v| v["event"]["body"]["location"] = json!("x".repeat(MAX_EVENT_BYTES))),
            EventError::BadBody { .. } | EventError::TooLarge { .. }
        ));
        assert!(matches!(SignedEvent::from_json("{not json"), Err(EventError::MalformedJson(_))));
    }

    #[test]
    fn explicit_null_for_optional_field_is_not_canonical() {
        let mut draft = json!({"kind": "artifact.verified", "body": {"artifact": "pg:main/wal/1", "method": "reread", "outcome": "ok"}});
        let e =
            Event::from_draft(draft.clone(), key().actor_id(), EventId::new_v7(1, [1; 10]), Timestamp::EPOCH).unwrap();
        let mut v = e.sign(&key()).to_value();
        v["event"]["body"]["detail"] = Value::Null;
        assert!(matches!(SignedEvent::from_value(v), Err(EventError::NonCanonical(_))));
        draft["body"]["outcome"] = json!("maybe");
        assert!(Event::from_draft(draft, key().actor_id(), EventId::new_v7(1, [1; 10]), Timestamp::EPOCH).is_err());
    }

    /// One valid event body per kind (also the examples for other implementers).
    pub(crate) fn sample_bodies() -> Vec<Value> {
        let d = "ab".repeat(32);
        let t = "2026-11-23T02:00:00.000000Z";
        let pk = SecretKey::from_seed("k", [9; 32]).public_key().to_base64();
        let pk2 = SecretKey::from_seed("k2", [10; 32]).public_key().to_base64();
        vec![
            json!({"kind": "ledger.genesis", "body": {"origin": "o/x", "ledger_public_key": pk, "admin_public_key": pk2, "admin_name": "admin"}}),
            json!({"kind": "key.enrolled", "body": {"public_key": pk, "name": "agent-1", "roles": ["agent", "operator"]}}),
            json!({"kind": "key.revoked", "body": {"key": "0".repeat(32), "reason": "lost \"laptop\"\n\t/é✓"}}),
            json!({"kind": "component.registered", "body": {"component": "pg:main", "postgresql": {"system_identifier": "7312", "wal_segment_size_bytes": 16777216}}}),
            json!({"kind": "component.registered", "body": {"component": "s3:uploads", "s3": {"endpoint": "http://127.0.0.1:5000", "bucket": "b", "region": ""}}}),
            json!({"kind": "group.defined", "body": {"group": "app", "components": ["pg:main", "s3:uploads"], "max_skew_ms": 2000}}),
            json!({"kind": "pg.base_backup", "body": {"component": "pg:main", "backup_id": "20261123T020000F", "label": "l", "timeline": 1, "start_lsn": "0/2000028", "stop_lsn": "0/2000138", "start_time": t, "stop_time": t, "size_bytes": 1, "manifest_checksum": "sha256:x", "blake3": d, "location": "/b", "tool": "pg_basebackup"}}),
            json!({"kind": "pg.wal_archived", "body": {"component": "pg:main", "timeline": 1, "segment": "000000010000000000000003", "size_bytes": 16777216, "blake3": d, "sha256": d, "location": "/a"}}),
            json!({"kind": "pg.timeline_history", "body": {"component": "pg:main", "timeline": 2, "parent_timeline": 1, "switch_lsn": "0/3000000", "blake3": d, "location": "/a/00000002.history"}}),
            json!({"kind": "pg.position", "body": {"component": "pg:main", "lsn": "16/B374D848", "timeline": 1, "observed_at": t}}),
            json!({"kind": "pg.restore_point", "body": {"component": "pg:main", "name": "before-migration", "lsn": "0/3000100", "timeline": 1, "created_at": t}}),
            json!({"kind": "s3.versioning", "body": {"component": "s3:uploads", "status": "suspended", "observed_at": t}}),
            json!({"kind": "s3.object_version", "body": {"component": "s3:uploads", "key": "a/ключ ✓ \u{7f}", "version_id": "null", "etag": "\"abc\"", "size_bytes": 3, "last_modified": t, "is_delete_marker": false, "listing_position": 0, "first_seen_at": t}}),
            json!({"kind": "s3.scan_complete", "body": {"component": "s3:uploads", "complete_through": t, "started_at": t, "finished_at": t, "versions_listed": 12}}),
            json!({"kind": "s3.version_missing", "body": {"component": "s3:uploads", "key": "k", "version_id": "v1", "observed_at": t}}),
            json!({"kind": "snapshot.taken", "body": {"component": "snap:defs", "snapshot_id": "s1", "taken_at": t, "method": "export", "size_bytes": 9, "location": "/s"}}),
            json!({"kind": "marker.quiesced", "body": {"group": "app", "marker_id": "m1", "writers_stopped_at": t, "writers_resumed_at": t, "components": [{"component": "pg:main", "pg_lsn": "0/3000000", "pg_timeline": 1, "pg_restore_point": "m1"}, {"component": "s3:uploads", "s3_watermark": t}]}}),
            json!({"kind": "marker.point", "body": {"group": "app", "marker_id": "m2", "taken_at": t, "components": [{"component": "snap:defs", "snapshot_id": "s1"}]}}),
            json!({"kind": "artifact.verified", "body": {"artifact": "pg:main/wal/000000010000000000000003", "method": "reread", "outcome": "corrupt", "blake3": d, "detail": "byte 7"}}),
            json!({"kind": "artifact.copied", "body": {"artifact": "pg:main/base/b1", "to_location": "s3://offsite/b1"}}),
            json!({"kind": "artifact.retention", "body": {"artifact": "pg:main/base/b1", "until": t, "mode": "compliance"}}),
            json!({"kind": "artifact.legal_hold", "body": {"artifact": "pg:main/base/b1", "status": "released", "reason": "case closed"}}),
            json!({"kind": "artifact.deleted", "body": {"artifact": "pg:main/base/b1", "reason": "retention"}}),
            json!({"kind": "restore.performed", "body": {"target": "app", "recovery_point": "m1", "plan_digest": d, "target_environment": "scratch", "outcome": "partial", "components": [{"component": "pg:main", "outcome": "succeeded"}, {"component": "s3:uploads", "outcome": "failed", "detail": "copy failed"}], "duration_ms": 12}}),
            json!({"kind": "drill.completed", "body": {"group": "app", "recovery_point": "m1", "plan_digest": d, "checks": [{"command": "psql -c 'select 1'", "exit_code": 0, "passed": true}], "result": "passed", "duration_ms": 5}}),
            json!({"kind": "restore_test.selected", "body": {"group": "app", "recovery_point": "m1", "pick": "random", "window_ms": 86_400_000u64, "seed": 42, "candidates": 3}}),
        ]
    }

    #[test]
    fn rule_a_restore_test_selection_has_a_seed_exactly_when_random_and_candidates() {
        let sel = |pick: TestPick, seed: Option<u64>, candidates: u64| RestoreTestSelected {
            group: Name::parse("app").unwrap(),
            recovery_point: "m1".into(),
            pick,
            window_ms: 1000,
            seed,
            candidates,
        };
        assert!(sel(TestPick::Random, Some(1), 2).validate().is_ok());
        assert!(sel(TestPick::Latest, None, 1).validate().is_ok());
        assert!(sel(TestPick::Random, None, 2).validate().is_err());
        assert!(sel(TestPick::Latest, Some(1), 2).validate().is_err());
        assert!(sel(TestPick::Latest, None, 0).validate().is_err());
    }

    #[test]
    fn the_direct_canonical_writer_agrees_with_the_reference_for_every_kind() {
        let mut kinds = std::collections::BTreeSet::new();
        for draft in sample_bodies() {
            let e = Event::from_draft(
                draft.clone(),
                key().actor_id(),
                EventId::new_v7(9, [3; 10]),
                Timestamp::from_micros(77),
            )
            .unwrap_or_else(|err| panic!("{draft}: {err}"));
            kinds.insert(e.kind());
            let reference = value_to_canonical_vec(&e.to_value()).unwrap();
            assert_eq!(String::from_utf8(e.canonical_bytes()).unwrap(), String::from_utf8(reference).unwrap());
        }
        assert_eq!(kinds.len(), Kind::ALL.len(), "a sample for every kind");
    }

    proptest::proptest! {
        #[test]
        fn the_direct_canonical_writer_escapes_any_string_like_the_reference(reason in "\\PC*", control in 0u32..0x20) {
            // S3 keys may hold any character, control characters included.
            let text = format!("{reason}{}", char::from_u32(control).unwrap());
            let draft = json!({"kind": "s3.version_missing", "body": {"component": "s3:b", "key": text, "version_id": "v", "observed_at": "2026-11-23T02:00:00.000000Z"}});
            if text.len() <= 1024 {
                let e = Event::from_draft(draft, key().actor_id(), EventId::new_v7(1, [1; 10]), Timestamp::EPOCH).unwrap();
                let reference = value_to_canonical_vec(&e.to_value()).unwrap();
                proptest::prop_assert_eq!(e.canonical_bytes(), reference);
            }
        }
    }

    #[test]
    fn every_kind_has_a_category_and_unique_name() {
        let mut names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Kind::ALL.len());
        for k in Kind::ALL {
            assert_eq!(Kind::from_name(k.name()), Some(*k));
        }
    }

    #[test]
    fn role_rules_follow_design_section_5() {
        use Category::*;
        assert!(Identity.allows(Role::Admin) && !Identity.allows(Role::Agent));
        assert!(Evidence.allows(Role::Agent) && !Evidence.allows(Role::Operator));
        assert!(Operation.allows(Role::Operator) && !Operation.allows(Role::Agent));
        for c in [Identity, Topology, Evidence, Operation] {
            assert!(!c.allows(Role::Auditor));
            assert!(c.allows(Role::Admin));
        }
    }

    #[test]
    fn entry_leaf_is_canonical_entry_json() {
        let signed = event().sign(&key());
        let entry = Entry { seq: 7, recorded_at: Timestamp::from_micros(9), event: signed.event, sig: signed.sig };
        let leaf = String::from_utf8(entry.leaf_bytes()).unwrap();
        assert!(
            leaf.starts_with(r#"{"event":{"#)
                && leaf.contains(r#""recorded_at":"1970-01-01T00:00:00.000009Z","seq":7,"sig":""#)
        );
        assert_eq!(Entry::from_value(serde_json::from_str(&leaf).unwrap()).unwrap(), entry);
    }

    #[test]
    fn rule_clock_evidence_pins_its_watermark_and_is_in_order() {
        let t = |s: &str| Timestamp::parse_rfc3339(s).unwrap();
        let probe = |lm: &str, sent: &str, recv: &str| ClockProbe {
            version_id: "v".into(),
            last_modified: t(lm),
            sent_at: t(sent),
            received_at: t(recv),
        };
        let good = S3ClockEvidence {
            boundary: t("2026-11-23T01:10:01Z"),
            before: probe("2026-11-23T01:10:00Z", "2026-11-23T01:10:00.980Z", "2026-11-23T01:10:00.985Z"),
            after: probe("2026-11-23T01:10:01Z", "2026-11-23T01:10:00.986Z", "2026-11-23T01:10:00.992Z"),
            cut_returned_at: t("2026-11-23T01:10:00.999Z"),
            uploads_in_progress: vec![],
        };
        let w = t("2026-11-23T01:10:00.999999Z");
        assert_eq!(good.check(w), Ok(()));
        assert_eq!(good.cut_spread_us(), 19_000);
        assert!(good.check(t("2026-11-23T01:10:00.5Z")).unwrap_err().contains("1 µs before"));
        let off = S3ClockEvidence { boundary: t("2026-11-23T01:10:01.5Z"), ..good.clone() };
        assert!(off.check(w).unwrap_err().contains("whole second"));
        let skipped = S3ClockEvidence {
            before: probe("2026-11-23T01:09:58Z", "2026-11-23T01:10:00.980Z", "2026-11-23T01:10:00.985Z"),
            ..good.clone()
        };
        assert!(skipped.check(w).unwrap_err().contains("stamped in the second before"));
        let early = S3ClockEvidence { cut_returned_at: t("2026-11-23T01:10:00.984Z"), ..good };
        assert!(early.check(w).unwrap_err().contains("in order"));
    }
}
