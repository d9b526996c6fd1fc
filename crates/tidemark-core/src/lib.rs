//! tidemark-core: the pure heart of the ledger.
//!
//! Event types and their strict JSON wire form ([`event`]), canonical JSON
//! ([`canonical`]), Ed25519 keys and actor ids ([`keys`]), the key registry
//! and role rules ([`registry`]), the RFC 6962 Merkle tree and proofs
//! ([`merkle`]) and C2SP checkpoints and signed notes ([`note`]).
//!
//! Architecture invariant: nothing here performs I/O, reads the clock or
//! draws randomness. Time, seeds and ids are arguments, so the same inputs
//! always give byte-identical outputs.

pub mod api;
pub mod canonical;
pub mod canonical_writer;
pub mod event;
pub mod keys;
pub mod merkle;
pub mod note;
pub mod proof_file;
pub mod registry;
pub mod schema;
pub mod time;
pub mod token;
pub mod types;

pub use event::{Draft, Entry, Event, EventBody, EventError, Kind, Role, SignedEvent};
pub use keys::{ActorId, PublicKey, SecretKey, Signature};
pub use time::Timestamp;
pub use types::{ArtifactRef, ComponentId, Digest32, EventId, Lsn, Name};
