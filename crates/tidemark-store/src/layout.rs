//! Key layout of the single sled tree that holds a ledger.
//!
//! Everything lives in one tree under one-byte prefixes so that an append
//! batch — entries, tree nodes, indexes, state and checkpoint — is one
//! atomic `apply_batch` followed by one `flush` (sled batches are per tree).
//! Integers are big-endian so that byte order is numeric order.

use tidemark_core::{ActorId, EventId, Timestamp};

/// `E ‖ first_seq` → bincode `Vec<Entry>` (a bundle of up to [`ENTRY_BUNDLE_MAX`] entries).
pub const ENTRIES: u8 = b'E';
/// `N ‖ level ‖ bundle` → up to 256 concatenated 32-byte hashes of complete subtrees.
pub const NODES: u8 = b'N';
/// `I ‖ id[0..6]` → bincode `Vec<IdRecord>` (ids bucketed by their UUIDv7 millisecond).
pub const IDS: u8 = b'I';
/// `K ‖ kind ‖ first_seq` → bincode `Vec<u64>`: seqs of that kind appended in one batch.
pub const BY_KIND: u8 = b'K';
/// `A ‖ actor ‖ first_seq` → bincode `Vec<u64>`: seqs signed by that actor in one batch.
pub const BY_ACTOR: u8 = b'A';
/// `R ‖ bucket ‖ first_seq` → bincode `Vec<([u8; 16], u64)>`: (blake3(artifact)[..16], seq)
/// for every artifact one batch touched whose hash falls in that bucket. Nearly every
/// event names its own artifact, so a key per artifact would cost sled's per-key
/// price per event; [`ARTIFACT_BUCKETS`] keys per batch at most keep ingest batched.
pub const BY_ARTIFACT: u8 = b'R';
/// Buckets of the artifact index (a power of two ≤ 256).
pub const ARTIFACT_BUCKETS: u8 = 16;
/// `P ‖ blake3(component)[..16] ‖ first_seq` → bincode `Vec<u64>`: seqs about that component in one batch.
pub const BY_COMPONENT: u8 = b'P';
/// `T ‖ recorded_at ‖ first_seq` → empty: where each batch starts in time.
pub const BY_TIME: u8 = b'T';
/// `C ‖ size` → the signed checkpoint note at that tree size.
pub const CHECKPOINTS: u8 = b'C';
/// `S` → bincode [`crate::State`].
pub const STATE: &[u8] = b"S";
/// `V` → the projection layout version the persisted projections were built with.
pub const PROJECTION_VERSION_KEY: &[u8] = b"V";
/// Bumped whenever a projection's stored shape changes: opening an older
/// ledger rebuilds the projections once from the log.
pub const PROJECTION_VERSION: u32 = 8;
/// `G ‖ blake3(component)[..16]` → bincode `tidemark_lineage::pg::Cluster`.
pub const PG_CLUSTER: u8 = b'G';
/// `W ‖ blake3(component)[..16] ‖ bucket` → bincode `Vec<crate::pg::ArchivedFile>` sorted by name:
/// a bucket is a segment name without its last two hex digits (up to 256 segments),
/// or a history file's whole name (`TTTTTTTT.history`).
pub const PG_FILES: u8 = b'W';
/// `Q ‖ blake3(component)[..16] ‖ timeline ‖ time ‖ seq` → bincode `Position`.
pub const PG_POSITIONS_BY_TIME: u8 = b'Q';
/// `L ‖ blake3(component)[..16] ‖ timeline ‖ lsn ‖ seq` → bincode `Position`.
pub const PG_POSITIONS_BY_LSN: u8 = b'L';
/// `X ‖ blake3(component)[..16] ‖ name` → bincode `Position` of the newest restore point of that name.
pub const PG_RESTORE_POINTS: u8 = b'X';
/// `B ‖ blake3(component)[..16]` → bincode `tidemark_lineage::s3::Bucket` (the bucket's summary).
pub const S3_BUCKET: u8 = b'B';
/// `O ‖ blake3(component)[..16] ‖ S3 key` → `tidemark_lineage::s3::encode_history` (newest first:
/// fixed-size heads the rules read in place, then each entry's bincode record).
pub const S3_KEYS: u8 = b'O';
/// `Z ‖ blake3(component)[..16] ‖ second` → bincode sorted `Vec<String>`: the keys with an entry
/// stamped in that second, so a question at T reads only the keys whose entries may lie on either side of T.
pub const S3_TIMES: u8 = b'Z';
/// `U ‖ blake3(component)[..16] ‖ first second` → the last second (i64, big-endian) of a run of
/// whole seconds in which something was written: the times those writes make uncertain.
pub const S3_BUSY: u8 = b'U';
/// `Y` → bincode `tidemark_lineage::group::CatalogCore`: registered components, group
/// definitions and snapshots (small; rewritten when a batch changes it).
pub const CATALOG: &[u8] = b"Y";
/// `M ‖ blake3(group)[..16] ‖ seq` → bincode `tidemark_lineage::group::Marker`.
pub const MARKERS: u8 = b'M';
/// `D ‖ blake3(group)[..16] ‖ seq` → bincode `tidemark_lineage::group::Activity` (drills and restores).
pub const ACTIVITIES: u8 = b'D';
/// Every projection prefix (cleared and rebuilt together).
pub const PROJECTION_PREFIXES: [u8; 12] = [
    PG_CLUSTER,
    PG_FILES,
    PG_POSITIONS_BY_TIME,
    PG_POSITIONS_BY_LSN,
    PG_RESTORE_POINTS,
    S3_BUCKET,
    S3_KEYS,
    S3_TIMES,
    S3_BUSY,
    b'Y',
    MARKERS,
    ACTIVITIES,
];

/// Most entries in one stored bundle: bounds the work of reading one entry.
pub const ENTRY_BUNDLE_MAX: usize = 256;
/// Hashes per node bundle.
pub const NODE_BUNDLE_WIDTH: u64 = 256;

pub fn seq_key(prefix: u8, seq: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = prefix;
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

pub fn node_key(level: u32, bundle: u64) -> [u8; 10] {
    let mut k = [0u8; 10];
    k[0] = NODES;
    k[1] = level as u8;
    k[2..].copy_from_slice(&bundle.to_be_bytes());
    k
}

pub fn id_bucket_key(id: &EventId) -> [u8; 7] {
    let mut k = [0u8; 7];
    k[0] = IDS;
    k[1..].copy_from_slice(&id.0[..6]);
    k
}

pub fn kind_key(kind_index: u8, first_seq: u64) -> [u8; 10] {
    let mut k = [0u8; 10];
    k[0] = BY_KIND;
    k[1] = kind_index;
    k[2..].copy_from_slice(&first_seq.to_be_bytes());
    k
}

pub fn actor_key(actor: &ActorId, first_seq: u64) -> [u8; 25] {
    let mut k = [0u8; 25];
    k[0] = BY_ACTOR;
    k[1..17].copy_from_slice(&actor.0);
    k[17..].copy_from_slice(&first_seq.to_be_bytes());
    k
}

/// Prefix of a name-keyed posting list (artifact or component).
pub fn name_prefix(prefix: u8, name: &str) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = prefix;
    k[1..].copy_from_slice(&blake3::hash(name.as_bytes()).as_bytes()[..16]);
    k
}

pub fn name_key(prefix: u8, name: &str, first_seq: u64) -> [u8; 25] {
    let mut k = [0u8; 25];
    k[..17].copy_from_slice(&name_prefix(prefix, name));
    k[17..].copy_from_slice(&first_seq.to_be_bytes());
    k
}

/// The artifact's index hash and bucket.
pub fn artifact_hash(artifact: &str) -> ([u8; 16], u8) {
    let mut h = [0u8; 16];
    h.copy_from_slice(&blake3::hash(artifact.as_bytes()).as_bytes()[..16]);
    (h, h[0] % ARTIFACT_BUCKETS)
}

pub fn artifact_key(bucket: u8, first_seq: u64) -> [u8; 10] {
    let mut k = [0u8; 10];
    k[0] = BY_ARTIFACT;
    k[1] = bucket;
    k[2..].copy_from_slice(&first_seq.to_be_bytes());
    k
}

/// Timestamps sort as unsigned after flipping the sign bit.
pub fn time_bytes(t: Timestamp) -> [u8; 8] {
    ((t.as_micros() as u64) ^ (1 << 63)).to_be_bytes()
}

pub fn time_key(t: Timestamp, first_seq: u64) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = BY_TIME;
    k[1..9].copy_from_slice(&time_bytes(t));
    k[9..].copy_from_slice(&first_seq.to_be_bytes());
    k
}

pub fn seq_from_key_suffix(key: &[u8]) -> u64 {
    let tail: [u8; 8] = key[key.len() - 8..].try_into().expect("keys end in a u64");
    u64::from_be_bytes(tail)
}

/// One event id as the idempotency index holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct IdRecord {
    pub id: [u8; 16],
    pub seq: u64,
    /// blake3 of the canonical event: equal digests mean the same event.
    pub digest: [u8; 32],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_keys_sort_numerically_across_the_epoch() {
        let a = time_key(Timestamp::from_micros(-5), 9);
        let b = time_key(Timestamp::from_micros(3), 1);
        assert!(a < b);
    }
}
