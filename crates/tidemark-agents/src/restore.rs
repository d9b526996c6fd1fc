//! The verified fetch behind `restore_command`: a file is handed to
//! PostgreSQL only when its blake3 equals the ledger's record of it.

use std::io::Write as _;
use std::path::Path;

use tidemark_core::Digest32;

use crate::{AgentError, io_err};

/// Why a file was not restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchRefused {
    #[error("{file} is not in the ledger: refusing to hand PostgreSQL a file nobody recorded")]
    Unknown { file: String },
    #[error("{file}: the archived copy at {location} cannot be read: {detail}")]
    Unreadable { file: String, location: String, detail: String },
    #[error(
        "{file}: blake3 of the archived copy at {location} is {found}, the ledger recorded {expected}: refusing corrupt WAL"
    )]
    Mismatch { file: String, location: String, expected: Digest32, found: Digest32 },
}

/// Rule: a fetched file is accepted only when its digest equals the recorded one.
pub fn check_digest(file: &str, location: &str, expected: Digest32, found: Digest32) -> Result<(), FetchRefused> {
    if expected == found {
        Ok(())
    } else {
        Err(FetchRefused::Mismatch { file: file.into(), location: location.into(), expected, found })
    }
}

/// Copies `location` to `dest` while hashing it; `dest` appears (by rename)
/// only when the digest matches, so PostgreSQL never sees a bad file.
pub fn fetch_verified(
    file: &str,
    location: &str,
    expected: Digest32,
    dest: &Path,
) -> Result<Result<(), FetchRefused>, AgentError> {
    let unreadable = |e: std::io::Error| FetchRefused::Unreadable {
        file: file.into(),
        location: location.into(),
        detail: e.to_string(),
    };
    let bytes = match std::fs::read(location) {
        Ok(b) => b,
        Err(e) => return Ok(Err(unreadable(e))),
    };
    let found = Digest32(*blake3::hash(&bytes).as_bytes());
    if let Err(refused) = check_digest(file, location, expected, found) {
        return Ok(Err(refused));
    }
    let tmp = dest.with_extension("tidemark-partial");
    let mut f = std::fs::File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
    f.write_all(&bytes).map_err(|e| io_err(&tmp, e))?;
    f.sync_all().map_err(|e| io_err(&tmp, e))?;
    std::fs::rename(&tmp, dest).map_err(|e| io_err(dest, e))?;
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_a_fetched_segment_must_match_the_ledger_digest() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("seg");
        std::fs::write(&src, b"wal bytes").unwrap();
        let good = Digest32(*blake3::hash(b"wal bytes").as_bytes());
        let dest = dir.path().join("RECOVERYXLOG");
        fetch_verified("seg", src.to_str().unwrap(), good, &dest).unwrap().unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"wal bytes");
        std::fs::remove_file(&dest).unwrap();
        std::fs::write(&src, b"wal bytez").unwrap();
        let refused = fetch_verified("seg", src.to_str().unwrap(), good, &dest).unwrap().unwrap_err();
        assert!(matches!(refused, FetchRefused::Mismatch { .. }), "{refused}");
        assert!(!dest.exists(), "nothing is handed over on a mismatch");
        let gone = fetch_verified("seg", "/nonexistent/seg", good, &dest).unwrap().unwrap_err();
        assert!(matches!(gone, FetchRefused::Unreadable { .. }));
    }
}
