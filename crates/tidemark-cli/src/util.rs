//! The shell's inputs from the outside world: clock, randomness, files.

use std::path::Path;

use anyhow::Context as _;
use tidemark_core::{EventId, SecretKey, Timestamp};
use tidemark_store::Ledger;

/// The wall clock, read only here.
pub fn now() -> Timestamp {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970");
    Timestamp::from_micros(d.as_micros() as i64)
}

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("the OS random generator works");
    b
}

pub fn new_event_id() -> EventId {
    let ms = (now().as_micros() / 1000) as u64;
    EventId::new_v7(ms, random_bytes())
}

/// A new event of `body`, signed by `key`: the typed way to record a fact
/// (a body that breaks its rules or an event over the size limit is refused here).
pub fn signed_event(key: &SecretKey, body: tidemark_core::EventBody) -> Result<tidemark_core::SignedEvent, String> {
    tidemark_ops::Env::sign(&SystemEnv, key, body).map_err(|e| e.to_string())
}

pub fn new_key(name: &str) -> SecretKey {
    SecretKey::from_seed(name, random_bytes())
}

pub fn read_key(path: &Path) -> anyhow::Result<SecretKey> {
    tidemark_store::read_secret_key_file(path)
        .with_context(|| "reading the signer key (a file written by `tidemark key new` or `tidemark init`)")
}

/// The system's clock and random event ids, for `tidemark_ops`.
pub struct SystemEnv;

impl tidemark_ops::Env for SystemEnv {
    fn now(&self) -> Timestamp {
        now()
    }

    fn new_event_id(&self) -> EventId {
        new_event_id()
    }
}

/// The ledger `--ledger` names, behind the one typed API: the local
/// directory, or the server (with `--spool`, writes survive it being down).
pub fn open_api(global: &crate::Global) -> anyhow::Result<Box<dyn tidemark_ops::LedgerApi>> {
    Ok(match global.client() {
        Some(client) => {
            Box::new(tidemark_ops::Remote::new(client, global.spool.clone()).map_err(crate::exit::ops_err)?)
        }
        None => Box::new(open_ledger(global)?),
    })
}

/// Opens the local ledger; when a server holds it, says where to go instead.
pub fn open_ledger(global: &crate::Global) -> anyhow::Result<Ledger> {
    open_ledger_with_cache(global, tidemark_store::SLED_CACHE_BYTES)
}

/// The page cache of a streaming `append`: it writes, and reads only the
/// idempotency records and the state (measured in docs/performance.md).
pub const APPEND_CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// [`open_ledger`] with another page cache size.
pub fn open_ledger_with_cache(global: &crate::Global, cache_bytes: u64) -> anyhow::Result<Ledger> {
    let dir = global.dir()?;
    match Ledger::open_with_cache(&dir, cache_bytes) {
        Ok(l) => Ok(l),
        Err(e @ tidemark_store::StoreError::Locked { .. }) => match tidemark_server::read_server_info(&dir) {
            Some(info) => Err(crate::exit::coded(
                crate::exit::LEDGER_STATE,
                format!(
                    "the ledger {} is held by `tidemark serve` at {} (pid {}); pass --ledger {} to go through it",
                    dir.display(),
                    info.url,
                    info.pid,
                    info.url
                ),
            )),
            None => Err(e.into()),
        },
        Err(e) => Err(e.into()),
    }
}

pub fn parse_time(s: &str) -> Result<Timestamp, String> {
    Timestamp::parse_rfc3339(s).map_err(|e| e.to_string())
}

/// What a command that records one fact prints: `{"entry": N, "recorded": BODY}`
/// with `--json`, else its sentence.
pub fn print_recorded(
    json: bool,
    recorded: &tidemark_ops::Recorded,
    body: &impl serde::Serialize,
    text: impl FnOnce(&str) -> String,
) {
    if json {
        let spooled = matches!(recorded, tidemark_ops::Recorded::Spooled { .. });
        print_json(&serde_json::json!({"entry": recorded.last_seq(), "spooled": spooled, "recorded": body}));
    } else {
        println!("{}", text(&recorded_text(recorded)));
    }
}

/// Where a recorded fact is, in words: `entry 12`, or the spool it waits in.
pub fn recorded_text(recorded: &tidemark_ops::Recorded) -> String {
    match recorded {
        tidemark_ops::Recorded::Appended(a) => match a.last() {
            Some(a) if a.duplicate => format!("entry {} (already recorded)", a.seq),
            Some(a) => format!("entry {}", a.seq),
            None => "no entry".to_owned(),
        },
        tidemark_ops::Recorded::Spooled { spool, .. } => {
            format!("spooled in {} (not in the ledger until delivered)", spool.display())
        }
    }
}

pub fn print_json(value: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(value).expect("output serialises"));
}

/// Writes a file whole or not at all (temporary file, fsync, rename).
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp-tidemark");
    let mut f = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// `--existing-objects`: what a restore does with objects already in its target bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ExistingObjects {
    /// Refuse a non-empty target before changing anything.
    #[default]
    Refuse,
    /// Make the target match T: keys not in the manifest get a delete marker (also for re-runs).
    Remove,
    /// Leave keys not in the manifest as they are (the bucket then holds more than T).
    Keep,
}

impl From<ExistingObjects> for tidemark_s3::Existing {
    fn from(e: ExistingObjects) -> tidemark_s3::Existing {
        match e {
            ExistingObjects::Refuse => tidemark_s3::Existing::Refuse,
            ExistingObjects::Remove => tidemark_s3::Existing::Remove,
            ExistingObjects::Keep => tidemark_s3::Existing::Keep,
        }
    }
}
