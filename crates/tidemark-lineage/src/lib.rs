//! tidemark-lineage: the recovery rules of DESIGN §6 as small pure functions
//! over incremental state.
//!
//! Architecture invariant: no I/O, no clock. State is advanced one event at a
//! time ([`pg::Cluster::apply`]) and every answer takes the state and the
//! question, so the same log and request give the same answer.

pub mod group;
pub mod group_plan;
pub mod pg;
pub mod pg_plan;
pub mod restore_test;
pub mod s3;
pub mod s3_scan;
pub mod status;
pub mod timeline;
