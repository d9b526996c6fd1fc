//! tidemark-agents: where tidemark touches PostgreSQL and the files it
//! archives. Each function reads the outside world and returns a draft
//! event body (`serde_json::Value` with `kind` and `body`) or a typed
//! finding; signing and sending stay with the caller.
//!
//! * [`pg_files`] — archived files (segments, history files, backup
//!   history files), `backup_label` and `backup_manifest`, digests.
//! * [`pg_db`] — a real PostgreSQL connection (`tokio-postgres`): identity,
//!   positions, restore points.
//! * [`pg_process`] — PostgreSQL servers started and stopped (as an
//!   unprivileged user when run as root) and waited on until promoted.
//! * [`pgbackrest`] — importing an existing pgBackRest catalog.
//! * [`restore`] — the verified fetch behind `restore_command`.
//!
//! Architecture invariant: this is the only crate that depends on
//! `tokio-postgres`; the rules about what is restorable stay in
//! `tidemark-lineage`.

pub mod pg_db;
pub mod pg_files;
pub mod pg_process;
pub mod pgbackrest;
pub mod restore;

/// Errors of the agents, each saying what to check.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    #[error("{path}: {detail}")]
    Io { path: String, detail: String },
    #[error("{path}: {detail}")]
    Parse { path: String, detail: String },
    #[error("PostgreSQL: {0} (check the --dsn, that the server runs, and that the role may connect)")]
    Database(String),
    #[error("{0}")]
    Refused(String),
}

pub(crate) fn io_err(path: &std::path::Path, e: impl std::fmt::Display) -> AgentError {
    AgentError::Io { path: path.display().to_string(), detail: e.to_string() }
}

pub(crate) fn parse_err(path: &std::path::Path, detail: impl Into<String>) -> AgentError {
    AgentError::Parse { path: path.display().to_string(), detail: detail.into() }
}
