//! Exit codes, one per class of failure, so scripts can react.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | unexpected error (I/O, damaged files) |
//! | 2 | usage error (bad flags or arguments) |
//! | 3 | input refused: malformed, unsigned, wrongly signed, unauthorised or conflicting events; nothing was written |
//! | 4 | verification failed: the ledger (or a proof) does not hold |
//! | 5 | the ledger is missing, already exists, or is held by another process |
//! | 6 | not restorable: the asked recovery target cannot be restored (the reason is printed) |

use std::process::ExitCode;

use tidemark_store::StoreError;

pub const OK: u8 = 0;
pub const FAILURE: u8 = 1;
pub const USAGE: u8 = 2;
pub const REFUSED: u8 = 3;
pub const VERIFY_FAILED: u8 = 4;
pub const LEDGER_STATE: u8 = 5;
pub const NOT_RESTORABLE: u8 = 6;

/// An error the CLI itself raises with a chosen exit code.
#[derive(Debug)]
pub struct Coded {
    pub code: u8,
    pub message: String,
}

impl std::fmt::Display for Coded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Coded {}

pub fn coded(code: u8, message: impl Into<String>) -> anyhow::Error {
    Coded { code, message: message.into() }.into()
}

fn code_of(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if let Some(c) = cause.downcast_ref::<Coded>() {
            return c.code;
        }
        if cause.downcast_ref::<crate::remote::RemoteRefusal>().is_some() {
            return REFUSED;
        }
        if let Some(s) = cause.downcast_ref::<StoreError>() {
            return match s {
                StoreError::Refused(_) => REFUSED,
                StoreError::AlreadyInitialised { .. }
                | StoreError::NotInitialised { .. }
                | StoreError::Locked { .. } => LEDGER_STATE,
                StoreError::NoSuchEntry { .. } | StoreError::BadRequest(_) | StoreError::NotFound(_) => USAGE,
                _ => FAILURE,
            };
        }
    }
    FAILURE
}

/// An orchestration error, with its exit code: the one table from
/// `tidemark_ops::OpsError` to exit codes (store and client errors inside
/// it keep their own codes, see `code_of`).
pub fn ops_err(e: tidemark_ops::OpsError) -> anyhow::Error {
    use tidemark_ops::OpsError;
    match e {
        OpsError::Store(s) => s.into(),
        OpsError::Client(c) => crate::remote::client_err(c),
        OpsError::Usage(m) => coded(USAGE, m),
        e @ (OpsError::NotAuthorised(_) | OpsError::BadEvent(_)) => coded(REFUSED, e.to_string()),
        OpsError::Tampered(m) => coded(VERIFY_FAILED, m),
        OpsError::NotRestorable(m) => coded(NOT_RESTORABLE, m),
        e @ OpsError::S3(_) => coded(FAILURE, e.to_string()),
        e => coded(FAILURE, e.to_string()),
    }
}

pub fn report(e: &anyhow::Error) -> ExitCode {
    eprintln!("tidemark: error: {e:#}");
    ExitCode::from(code_of(e))
}

pub fn ok() -> ExitCode {
    ExitCode::from(OK)
}
