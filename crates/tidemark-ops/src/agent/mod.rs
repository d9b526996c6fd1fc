//! The agent: an application declared once in `tidemark.toml`
//! ([`config`]), checked against the ledger ([`check`]), and its jobs —
//! positions, scans, markers, archive checks — run once or on their
//! schedules ([`jobs`]) by the same functions the CLI calls.

pub mod check;
pub mod config;
pub mod jobs;

use std::path::{Path, PathBuf};

use tidemark_core::SecretKey;

pub use config::{Config, Parsed, Problem};

use crate::{LedgerApi, OpsError, Remote};

/// A configuration and the directory its relative paths are relative to.
#[derive(Debug, Clone)]
pub struct Agent {
    pub parsed: Parsed,
    pub base: PathBuf,
}

impl Agent {
    /// Reads and parses a configuration file; `Err` carries the file's
    /// first problem (malformed, unknown field, wrong type) with its line.
    pub fn load(path: &Path) -> Result<Agent, OpsError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| OpsError::Usage(format!("reading {}: {e}", path.display())))?;
        let parsed = Parsed::parse(&text).map_err(|p| OpsError::Usage(format!("{}: {p}", path.display())))?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(Agent { parsed, base })
    }

    pub fn config(&self) -> &Config {
        &self.parsed.config
    }

    /// A path of the file, relative to the file's directory.
    pub fn path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() { p.to_path_buf() } else { self.base.join(p) }
    }

    /// The read token, from the file or the environment variable it names.
    pub fn token(&self) -> Result<Option<String>, OpsError> {
        let l = &self.config().ledger;
        match (&l.token, &l.token_env) {
            (Some(t), _) => Ok(Some(t.clone())),
            (None, Some(var)) => config::from_env(var, "ledger.token_env").map(Some),
            (None, None) => Ok(None),
        }
    }

    /// The ledger the file names: a server (with its spool), or a directory.
    pub fn ledger(&self) -> Result<Box<dyn LedgerApi>, OpsError> {
        let l = &self.config().ledger;
        if l.url.starts_with("http://") || l.url.starts_with("https://") {
            let client = tidemark_client::Client::new(&l.url, self.token()?);
            Ok(Box::new(Remote::new(client, l.spool.as_ref().map(|p| self.path(p)))?))
        } else {
            Ok(Box::new(tidemark_store::Ledger::open(&self.path(Path::new(&l.url)))?))
        }
    }

    /// The agent's signing key.
    pub fn agent_key(&self) -> Result<SecretKey, OpsError> {
        Ok(tidemark_store::read_secret_key_file(&self.path(&self.config().keys.agent))?)
    }

    /// The operator's signing key (restore tests).
    pub fn operator_key(&self) -> Result<SecretKey, OpsError> {
        let p =
            self.config().keys.operator.as_ref().ok_or_else(|| OpsError::Usage("keys.operator is not given".into()))?;
        Ok(tidemark_store::read_secret_key_file(&self.path(p))?)
    }

    /// A cluster's DSN, from the file or the environment variable it names.
    pub fn dsn(&self, pg: &config::PgComponent) -> Result<String, OpsError> {
        match (&pg.dsn, &pg.dsn_env) {
            (Some(d), _) => Ok(d.clone()),
            (None, Some(var)) => config::from_env(var, &pg.component),
            (None, None) => Err(OpsError::Usage(format!("{}: give dsn or dsn_env", pg.component))),
        }
    }

    /// A bucket as the file names it, with its credentials.
    pub fn bucket(&self, s: &config::S3Component) -> Result<crate::s3_scan::BucketSpec, OpsError> {
        let credentials = match (&s.profile, &s.access_key_id_env, &s.secret_access_key_env) {
            (Some(p), _, _) => tidemark_s3::Credentials::Profile(p.clone()),
            (None, Some(id), Some(secret)) => tidemark_s3::Credentials::Static {
                access_key_id: config::from_env(id, &s.component)?,
                secret_access_key: config::from_env(secret, &s.component)?,
            },
            _ => tidemark_s3::Credentials::Chain,
        };
        Ok(crate::s3_scan::BucketSpec {
            component: s.component.clone(),
            endpoint: s.endpoint.clone(),
            bucket: s.bucket.clone(),
            region: s.region.clone(),
            path_style: s.path_style,
            credentials,
        })
    }
}
