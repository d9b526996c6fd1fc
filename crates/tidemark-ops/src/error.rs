//! The errors of orchestration, by what the caller should do about them.

use tidemark_client::ClientError;
use tidemark_store::StoreError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpsError {
    /// The local ledger failed or refused (its own kinds: refusals, missing, damaged…).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The server could not be reached, refused, or answered nonsense.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The request itself is wrong (a name, a bucket that is not the registered one…); nothing was done.
    #[error("{0}")]
    Usage(String),
    /// The signer may not record what the work records; nothing was done.
    #[error("{0}; nothing was done")]
    NotAuthorised(String),
    /// An event could not be built from what was observed (it breaks a body rule).
    #[error("cannot record this: {0}")]
    BadEvent(String),
    /// Object storage failed.
    #[error(transparent)]
    S3(#[from] tidemark_s3::S3Error),
    /// PostgreSQL or its files failed (a server that would not start or promote, an unreadable backup).
    #[error(transparent)]
    Agent(#[from] tidemark_agents::AgentError),
    /// The recovery target cannot be restored (the message says why); nothing was changed.
    #[error("{0}")]
    NotRestorable(String),
    /// A plan or other document was changed after it was made, or is not of this ledger's history.
    #[error("{0}")]
    Tampered(String),
    /// The work ran and failed (the message says which step and why).
    #[error("{0}")]
    Failed(String),
}
