//! tidemark-ops: the orchestration every front end shares.
//!
//! Scans, marks, restores, drills, archive checks and positions are
//! functions over typed inputs and outputs, called by the CLI, the server
//! and the agent alike:
//!
//! * the ledger is reached through one typed API ([`ledger::LedgerApi`]),
//!   implemented by a local [`tidemark_store::Ledger`] and by a server's
//!   [`ledger::Remote`] (the one `tidemark-client`, with its spool);
//! * the clock and event ids come from an injected [`Env`], so a test or a
//!   scheduler decides what time it is;
//! * progress goes to a [`Progress`] sink (ripgrep's `Sink` is the model):
//!   the CLI draws a bar, the agent logs, a test records;
//! * the S3 scan ([`s3_scan`]) and bucket restores ([`s3_restore`]), markers ([`mark`], with the S3 clock cut in
//!   [`mark_cut`]), PostgreSQL positions and the archive audit ([`pg`]), archived files,
//!   base backups and pgBackRest catalogs ([`pg_archive`]),
//!   restores and drills of group plans ([`restore`]);
//! * errors are [`OpsError`], one enum the CLI maps to exit codes and the
//!   server to HTTP statuses.
//!
//! Nothing here parses arguments, prints, or reads the wall clock.

pub mod agent;
pub mod env;
pub mod error;
pub mod ledger;
pub mod mark;
pub mod mark_cut;
pub mod pg;
pub mod pg_archive;
pub mod progress;
pub mod reread;
pub mod restore;
pub mod s3_restore;
pub mod s3_scan;

pub use env::Env;
pub use error::OpsError;
pub use ledger::{LedgerApi, Recorded, Remote};
pub use progress::{NoProgress, Progress};
