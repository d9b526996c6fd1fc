//! tidemark-store: the embedded ledger on sled.
//!
//! A [`Ledger`] owns one directory: `db/` (sled) and `keys/ledger.key`
//! (the key that signs checkpoints). Appends are group commits: a batch of
//! signed events is validated in order against the key registry, its
//! signatures are batch-verified on all cores, and then entries, Merkle
//! nodes, indexes, state and a new signed checkpoint go to sled in one
//! atomic batch and one flush. Only then is the batch acknowledged.
//!
//! Architecture invariants: this is the only crate that depends on sled;
//! reopening reads the persisted state and never replays the log; the
//! ledger never signs a checkpoint that does not extend the previous one
//! (the frontier only ever grows by pushing leaves).

pub mod group;
mod layout;
pub mod pg;
mod query;
pub mod s3;
mod verify;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;
use tidemark_core::event::{Event, EventBody, EventError, Kind, LedgerGenesis};
use tidemark_core::keys::{PublicKey, SecretKey, failing_signatures, first_failing_signature};
use tidemark_core::merkle::{self, CompletedNode, Frontier, Hash, SubtreeHashes};
use tidemark_core::note::{Checkpoint, NoteVerifier};
use tidemark_core::registry::{AuthError, Registry};
use tidemark_core::{ActorId, Entry, EventId, Name, SignedEvent, Timestamp};

use layout::{IdRecord, NODE_BUNDLE_WIDTH};
pub use query::EntryFilter;
pub use verify::{VerifyFailure, VerifyReport};

/// Most events in one append call; larger inputs are split by the caller.
pub const MAX_BATCH_EVENTS: usize = 10_000;
/// sled page cache (the default is 1 GB; this machine class has small budgets).
pub const SLED_CACHE_BYTES: u64 = 128 * 1024 * 1024;
/// Events whose signatures are checked together in one batch verification.
const SIGNATURE_CHUNK: usize = 256;

/// Why an event in a batch was refused. The whole batch is refused with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    #[error(transparent)]
    Event(#[from] EventError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(
        "bad signature: the signature does not verify with the public key of actor {actor} over \"tidemark-event-v1\\n\" + the canonical event"
    )]
    BadSignature { actor: ActorId },
    #[error(
        "conflict: event id {id} is already entry {existing_seq} with different content; a new fact needs a new id"
    )]
    Conflict { id: EventId, existing_seq: u64 },
    #[error("conflict: event id {id} appears twice in this batch with different content")]
    ConflictInBatch { id: EventId },
    #[error("batch has {count} events; the maximum is {max}")]
    BatchTooLarge { count: usize, max: usize },
    /// The event contradicts what the ledger already knows (an unknown
    /// group, an unpinned component, a marker or snapshot id reused).
    #[error("refused against the ledger's state: {reason}")]
    Inconsistent { reason: tidemark_lineage::group::AdmitError },
}

impl Refusal {
    /// A short stable label, for metrics and problem types.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Event(EventError::MalformedJson(_)) => "malformed",
            Refusal::Event(EventError::UnknownKind(_)) => "unknown_kind",
            Refusal::Event(EventError::TooLarge { .. }) => "too_large",
            Refusal::Event(EventError::NonCanonical(_)) => "non_canonical",
            Refusal::Event(_) => "invalid_event",
            Refusal::Auth(AuthError::UnknownKey { .. }) => "unknown_key",
            Refusal::Auth(AuthError::RevokedKey { .. }) => "revoked_key",
            Refusal::Auth(AuthError::RoleMayNotAppend { .. }) => "role",
            Refusal::Auth(_) => "registry",
            Refusal::BadSignature { .. } => "bad_signature",
            Refusal::Conflict { .. } | Refusal::ConflictInBatch { .. } => "conflict",
            Refusal::BatchTooLarge { .. } => "batch_too_large",
            Refusal::Inconsistent { reason: tidemark_lineage::group::AdmitError::IdReused(_) } => "conflict",
            Refusal::Inconsistent { .. } => "inconsistent",
        }
    }
}

/// A refused batch: which event, and why. The log is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event #{index}{} refused: {reason}", id.map(|i| format!(" (id {i})")).unwrap_or_default())]
pub struct AppendError {
    /// Position of the offending event in the batch, from 0.
    pub index: usize,
    pub id: Option<EventId>,
    pub reason: Refusal,
}

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("{dir} already holds a ledger; refusing to initialise it again (nothing was changed)")]
    AlreadyInitialised { dir: PathBuf },
    #[error("no ledger at {dir}: run `tidemark init --ledger {dir}` first")]
    NotInitialised { dir: PathBuf },
    #[error(
        "the ledger at {dir} is in use by another process (a running `tidemark serve`? send writes to its URL instead): {detail}"
    )]
    Locked { dir: PathBuf, detail: String },
    #[error("storage error: {0}")]
    Storage(String),
    #[error("the ledger is damaged: {0}; run `tidemark verify` to locate the first bad entry")]
    Corrupt(String),
    #[error(transparent)]
    Refused(#[from] AppendError),
    #[error("entry {seq} does not exist: the ledger has {size} entries")]
    NoSuchEntry { seq: u64, size: u64 },
    #[error("{0}")]
    BadRequest(String),
    /// The question names a group, marker or component the ledger knows nothing about.
    #[error("{0}")]
    NotFound(String),
    #[error("the ledger key in {path} does not match the key recorded in ledger.genesis")]
    WrongLedgerKey { path: PathBuf },
    #[error("an earlier write failed to reach the disk; reopen the ledger before appending again")]
    Poisoned,
    #[error("this is a read-only snapshot of the ledger; appends go to the ledger itself")]
    ReadOnly,
    #[error("key file {path}: {detail}")]
    KeyFile { path: PathBuf, detail: String },
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Storage(e.to_string())
    }
}

fn decode<T: bincode::Decode<()>>(bytes: &[u8], what: &str) -> Result<T, StoreError> {
    bincode::decode_from_slice(bytes, bincode::config::standard())
        .map(|(v, _)| v)
        .map_err(|e| StoreError::Corrupt(format!("cannot decode {what}: {e}")))
}

fn encode<T: bincode::Encode + ?Sized>(value: &T) -> Vec<u8> {
    bincode::encode_to_vec(value, bincode::config::standard()).expect("in-memory values encode")
}

/// What the ledger knows about itself, rewritten with every batch.
#[derive(Debug, Clone, bincode::Encode, bincode::Decode)]
struct State {
    frontier: Frontier,
    last_recorded_at: Timestamp,
    registry: Registry,
    origin: String,
    ledger_public_key: PublicKey,
}

/// The result of appending one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Appended {
    pub seq: u64,
    /// True when the same event was already in the log: nothing was written for it.
    pub duplicate: bool,
}

/// A batch with its state-independent work done (see [`Ledger::digest`]).
#[derive(Debug)]
pub struct Digested {
    events: Vec<SignedEvent>,
    canonical: Vec<Vec<u8>>,
    digests: Vec<[u8; 32]>,
    /// The key each signature was verified under, where it was.
    verified_with: Vec<Option<PublicKey>>,
}

impl Digested {
    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Joins batches (in order) into one, e.g. to commit several writers'
    /// requests with one flush. Results come back in the same order.
    pub fn concat(parts: Vec<Digested>) -> Digested {
        let n = parts.iter().map(Digested::len).sum();
        let mut out = Digested {
            events: Vec::with_capacity(n),
            canonical: Vec::with_capacity(n),
            digests: Vec::with_capacity(n),
            verified_with: Vec::with_capacity(n),
        };
        for p in parts {
            out.events.extend(p.events);
            out.canonical.extend(p.canonical);
            out.digests.extend(p.digests);
            out.verified_with.extend(p.verified_with);
        }
        out
    }
}

/// Validation done before anything is written.
struct Prepared {
    events: Vec<SignedEvent>,
    canonical: Vec<Vec<u8>>,
    digests: Vec<[u8; 32]>,
    verified_with: Vec<Option<PublicKey>>,
    /// Per input event: `Ok(position among new events)` or `Err(seq of the earlier copy)`.
    placement: Vec<Result<usize, u64>>,
    /// Indices of the events that become new entries, ascending.
    new_indices: Vec<usize>,
    registry: Registry,
    id_buckets: HashMap<[u8; 7], Vec<IdRecord>>,
    /// When the batch touches the catalog: its admission scratch (the small
    /// part of the catalog after the batch) and what changed.
    catalog: Option<(tidemark_lineage::group::Catalog, Vec<tidemark_lineage::group::Change>)>,
}

/// Files inside a ledger directory.
#[derive(Debug, Clone)]
pub struct LedgerPaths {
    pub dir: PathBuf,
    pub db: PathBuf,
    pub keys: PathBuf,
    pub ledger_key: PathBuf,
}

impl LedgerPaths {
    pub fn new(dir: &Path) -> LedgerPaths {
        LedgerPaths {
            dir: dir.to_path_buf(),
            db: dir.join("db"),
            keys: dir.join("keys"),
            ledger_key: dir.join("keys").join("ledger.key"),
        }
    }
}

/// Writes a private key file readable only by its owner.
pub fn write_secret_key_file(path: &Path, key: &SecretKey) -> Result<(), StoreError> {
    use std::io::Write as _;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt as _;
    let io = |e: std::io::Error| StoreError::KeyFile { path: path.to_path_buf(), detail: e.to_string() };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path).map_err(io)?;
    file.write_all(key.to_file_text().as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)
}

pub fn read_secret_key_file(path: &Path) -> Result<SecretKey, StoreError> {
    let err = |detail: String| StoreError::KeyFile { path: path.to_path_buf(), detail };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    SecretKey::from_file_text(&text).map_err(|e| err(e.to_string()))
}

/// Inputs to [`Ledger::create`]: who the ledger and its first admin are.
pub struct Genesis<'a> {
    pub origin: &'a str,
    pub ledger_key: SecretKey,
    pub admin_key: &'a SecretKey,
    pub id: EventId,
    pub now: Timestamp,
}

/// An open ledger. One process at a time (sled holds a lock on `db/`).
pub struct Ledger {
    paths: LedgerPaths,
    _db: sled::Db,
    tree: sled::Tree,
    state: State,
    ledger_key: Arc<SecretKey>,
    /// The newest, partly filled node bundle of each level: (bundle index, hashes).
    open_bundles: BTreeMap<u32, (u64, Vec<u8>)>,
    poisoned: bool,
    /// A snapshot ([`Ledger::snapshot`]): reads see the log as of its size; appends are refused.
    read_only: bool,
    /// Decoded cluster states, kept current by every commit (questions and
    /// appends then never decode the persisted state twice).
    pg_cache: pg::ClusterCache,
    /// Components, groups, markers, snapshots, drills and restores (small; loaded on open).
    catalog: Arc<tidemark_lineage::group::Catalog>,
}

/// How long opening waits for a lock that a just-closed handle may still hold.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

fn open_db(paths: &LedgerPaths, cache_bytes: u64) -> Result<sled::Db, StoreError> {
    let started = std::time::Instant::now();
    loop {
        let result =
            sled::Config::new().path(&paths.db).cache_capacity(cache_bytes).mode(sled::Mode::HighThroughput).open();
        match result {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(io))
                if io.kind() == std::io::ErrorKind::WouldBlock || io.to_string().contains("lock") =>
            {
                // sled releases its file lock when its background flusher ends, which
                // can trail the drop of the last handle in this process by a moment.
                if started.elapsed() < LOCK_WAIT {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    continue;
                }
                return Err(StoreError::Locked { dir: paths.dir.clone(), detail: io.to_string() });
            }
            Err(other) => return Err(StoreError::Storage(other.to_string())),
        }
    }
}

impl Ledger {
    /// Creates a new ledger in `dir`: writes the ledger key (0600) and appends
    /// `ledger.genesis` signed by the admin key. Refuses a directory that
    /// already holds a ledger, and then changes nothing.
    pub fn create(dir: &Path, genesis: Genesis<'_>) -> Result<Ledger, StoreError> {
        let paths = LedgerPaths::new(dir);
        if paths.db.exists() || paths.ledger_key.exists() {
            return Err(StoreError::AlreadyInitialised { dir: dir.to_path_buf() });
        }
        let body = EventBody::LedgerGenesis(LedgerGenesis {
            origin: genesis.origin.to_owned(),
            ledger_public_key: genesis.ledger_key.public_key(),
            admin_public_key: genesis.admin_key.public_key(),
            admin_name: Name::parse(&genesis.admin_key.name).map_err(StoreError::BadRequest)?,
        });
        body.validate().map_err(StoreError::BadRequest)?;
        let event = Event { id: genesis.id, occurred_at: genesis.now, actor: genesis.admin_key.actor_id(), body };
        let signed = event.sign(genesis.admin_key);
        std::fs::create_dir_all(&paths.keys)
            .map_err(|e| StoreError::Storage(format!("create {}: {e}", paths.keys.display())))?;
        write_secret_key_file(&paths.ledger_key, &genesis.ledger_key)?;
        let db = open_db(&paths, SLED_CACHE_BYTES)?;
        let tree = db.open_tree("ledger")?;
        let state = State {
            frontier: Frontier::default(),
            last_recorded_at: Timestamp::EPOCH,
            registry: Registry::default(),
            origin: genesis.origin.to_owned(),
            ledger_public_key: genesis.ledger_key.public_key(),
        };
        let mut ledger = Ledger {
            paths,
            _db: db,
            tree,
            state,
            ledger_key: Arc::new(genesis.ledger_key),
            open_bundles: BTreeMap::new(),
            poisoned: false,
            read_only: false,
            pg_cache: pg::ClusterCache::default(),
            catalog: Arc::new(tidemark_lineage::group::Catalog::default()),
        };
        ledger.append(vec![signed], genesis.now)?;
        Ok(ledger)
    }

    /// Opens an existing ledger. Reads the persisted state and the newest node
    /// bundle of each level; the log itself is not read.
    pub fn open(dir: &Path) -> Result<Ledger, StoreError> {
        Ledger::open_with_cache(dir, SLED_CACHE_BYTES)
    }

    /// Opens with a page cache of `cache_bytes` instead of [`SLED_CACHE_BYTES`]:
    /// a process that mostly writes (a streaming `append`) needs little cache,
    /// and its resident memory is mostly this cache.
    pub fn open_with_cache(dir: &Path, cache_bytes: u64) -> Result<Ledger, StoreError> {
        let paths = LedgerPaths::new(dir);
        if !paths.db.exists() {
            return Err(StoreError::NotInitialised { dir: dir.to_path_buf() });
        }
        let ledger_key = read_secret_key_file(&paths.ledger_key)?;
        let db = open_db(&paths, cache_bytes)?;
        let tree = db.open_tree("ledger")?;
        let state_bytes = tree.get(layout::STATE)?.ok_or_else(|| {
            StoreError::Corrupt(
                "the ledger has no state record (was `init` interrupted? remove the directory and run init again)"
                    .into(),
            )
        })?;
        let state: State = decode(&state_bytes, "ledger state")?;
        if state.ledger_public_key != ledger_key.public_key() {
            return Err(StoreError::WrongLedgerKey { path: paths.ledger_key.clone() });
        }
        let mut open_bundles = BTreeMap::new();
        let size = state.frontier.size();
        let mut level = 0u32;
        while size >> level > 0 {
            let count = size >> level;
            let bundle = count / NODE_BUNDLE_WIDTH;
            if !count.is_multiple_of(NODE_BUNDLE_WIDTH) {
                let bytes = tree.get(layout::node_key(level, bundle))?.map(|v| v.to_vec()).unwrap_or_default();
                if bytes.len() as u64 != (count % NODE_BUNDLE_WIDTH) * 32 {
                    return Err(StoreError::Corrupt(format!(
                        "node bundle {bundle} of level {level} has the wrong length"
                    )));
                }
                open_bundles.insert(level, (bundle, bytes));
            } else {
                open_bundles.insert(level, (bundle, Vec::new()));
            }
            level += 1;
        }
        let mut ledger = Ledger {
            paths,
            _db: db,
            tree,
            state,
            ledger_key: Arc::new(ledger_key),
            open_bundles,
            poisoned: false,
            read_only: false,
            pg_cache: pg::ClusterCache::default(),
            catalog: Arc::new(tidemark_lineage::group::Catalog::default()),
        };
        let version = ledger.tree.get(layout::PROJECTION_VERSION_KEY)?;
        if version.as_deref() != Some(&layout::PROJECTION_VERSION.to_be_bytes()[..]) {
            ledger.rebuild_projections()?;
        }
        ledger.catalog = Arc::new(group::load_catalog(&ledger.tree)?);
        let (latest, _) = ledger.latest_checkpoint()?;
        if latest.size != ledger.size() || latest.root != ledger.root() {
            return Err(StoreError::Corrupt("the latest checkpoint does not match the ledger state".into()));
        }
        Ok(ledger)
    }

    pub fn paths(&self) -> &LedgerPaths {
        &self.paths
    }

    /// A read-only view of the ledger as of now, to read without holding
    /// the ledger: every read answers as of its size, while the ledger goes
    /// on appending. Entries, complete tree nodes and checkpoints up to that
    /// size never change once written, and every read of a snapshot stops at
    /// its size, so a long `verify` or export of a running ledger sees one
    /// consistent log and never blocks the writer.
    pub fn snapshot(&self) -> Ledger {
        Ledger {
            paths: self.paths.clone(),
            _db: self._db.clone(),
            tree: self.tree.clone(),
            state: self.state.clone(),
            ledger_key: self.ledger_key.clone(),
            open_bundles: self.open_bundles.clone(),
            poisoned: self.poisoned,
            read_only: true,
            pg_cache: pg::ClusterCache::default(),
            catalog: self.catalog.clone(),
        }
    }

    /// Number of entries.
    pub fn size(&self) -> u64 {
        self.state.frontier.size()
    }

    pub fn root(&self) -> Hash {
        self.state.frontier.root()
    }

    pub fn origin(&self) -> &str {
        &self.state.origin
    }

    pub fn registry(&self) -> &Registry {
        &self.state.registry
    }

    /// The signed-note verifier of this ledger's checkpoints.
    pub fn note_verifier(&self) -> NoteVerifier {
        NoteVerifier::new(&self.state.origin, self.state.ledger_public_key).expect("origin was validated at genesis")
    }

    /// Signs an export manifest digest as a signed note by the ledger key:
    /// body `tidemark-export-v1\n<origin>\n<hex digest>\n`. Its second line
    /// is never a decimal tree size, so it can never pass for a checkpoint.
    pub fn sign_export_manifest(&self, manifest_blake3: &[u8; 32]) -> String {
        let body = format!("tidemark-export-v1\n{}\n{}\n", self.state.origin, hex_digest(manifest_blake3));
        tidemark_core::note::sign_note(&self.state.origin, &self.ledger_key, &body)
            .expect("origin validated at genesis")
    }

    /// Appends a batch atomically: all events or none. Returns each event's
    /// sequence number (the earlier one for an event already in the log).
    /// Acknowledged only after the batch is flushed to disk.
    pub fn append(&mut self, events: Vec<SignedEvent>, now: Timestamp) -> Result<Vec<Appended>, StoreError> {
        let known = self.known_keys();
        self.append_digested(Self::digest(events, &|a| known.get(a).copied()), now)
    }

    fn refuse(index: usize, id: Option<EventId>, reason: impl Into<Refusal>) -> StoreError {
        StoreError::Refused(AppendError { index, id, reason: reason.into() })
    }

    /// The public key of every enrolled actor (revoked ones too: the registry,
    /// not this map, decides who may sign).
    pub fn known_keys(&self) -> HashMap<ActorId, PublicKey> {
        self.state.registry.keys().map(|k| (k.actor, k.public_key)).collect()
    }

    /// The part of appending that needs no ledger state, done on all cores:
    /// canonical bytes, content digests, and batch signature verification for
    /// every event whose signer `known` names. It can run ahead of the writer
    /// (see [`Ledger::append_stream`]); the writer re-checks everything that
    /// depends on the registry.
    pub fn digest(events: Vec<SignedEvent>, known: &(dyn Fn(&ActorId) -> Option<PublicKey> + Sync)) -> Digested {
        let canonical: Vec<Vec<u8>> = events.par_iter().map(|e| e.event.canonical_bytes()).collect();
        let digests: Vec<[u8; 32]> = canonical.par_iter().map(|c| *blake3::hash(c).as_bytes()).collect();
        let candidates: Vec<(usize, PublicKey)> =
            events.iter().enumerate().filter_map(|(i, e)| known(&e.event.actor).map(|k| (i, k))).collect();
        let good: Vec<Vec<(usize, PublicKey)>> = candidates
            .par_chunks(SIGNATURE_CHUNK)
            .map(|chunk| {
                let msgs: Vec<Vec<u8>> =
                    chunk.iter().map(|(i, _)| tidemark_core::keys::event_signing_message(&canonical[*i])).collect();
                let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
                let sigs: Vec<_> = chunk.iter().map(|(i, _)| events[*i].sig).collect();
                let keys: Vec<PublicKey> = chunk.iter().map(|(_, k)| *k).collect();
                let bad = failing_signatures(&refs, &sigs, &keys);
                chunk.iter().enumerate().filter(|(j, _)| !bad.contains(j)).map(|(_, c)| *c).collect()
            })
            .collect();
        let mut verified_with = vec![None; events.len()];
        for (i, k) in good.into_iter().flatten() {
            verified_with[i] = Some(k);
        }
        Digested { events, canonical, digests, verified_with }
    }

    /// Appends a digested batch: the registry, idempotency and any signature
    /// not yet verified under the signer's enrolled key are checked here.
    pub fn append_digested(&mut self, digested: Digested, now: Timestamp) -> Result<Vec<Appended>, StoreError> {
        if self.poisoned {
            return Err(StoreError::Poisoned);
        }
        if self.read_only {
            return Err(StoreError::ReadOnly);
        }
        if digested.events.len() > MAX_BATCH_EVENTS {
            let count = digested.events.len();
            return Err(Self::refuse(0, None, Refusal::BatchTooLarge { count, max: MAX_BATCH_EVENTS }));
        }
        let prepared = self.prepare(digested)?;
        self.commit(prepared, now)
    }

    /// Appends a stream of batches with verification running one batch ahead
    /// of the writer: while batch k is written and flushed, batch k+1's
    /// signatures are being checked. `on_batch` sees each batch's result once
    /// it is durable (or refused) and returns whether to go on.
    pub fn append_stream<I>(
        &mut self,
        batches: I,
        now: &(dyn Fn() -> Timestamp + Sync),
        mut on_batch: impl FnMut(Result<Vec<Appended>, StoreError>) -> bool,
    ) where
        I: Iterator<Item = Vec<SignedEvent>> + Send,
    {
        let mut known = self.known_keys();
        std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Digested>(1);
            scope.spawn(move || {
                for batch in batches {
                    // Keys enrolled in the stream can sign later events of it.
                    for e in &batch {
                        if let EventBody::KeyEnrolled(k) = &e.event.body {
                            known.insert(k.public_key.actor_id(), k.public_key);
                        }
                    }
                    let digested = Self::digest(batch, &|a| known.get(a).copied());
                    if tx.send(digested).is_err() {
                        break;
                    }
                }
            });
            for digested in rx {
                let result = self.append_digested(digested, now());
                if !on_batch(result) {
                    break;
                }
            }
        });
    }

    /// Checks a whole input as if it were one batch, writing nothing, then
    /// splits it into batches of `batch_size` whose signatures are already
    /// verified: appending them in order re-checks the registry and ids but
    /// verifies no signature twice. This is how a large input is made
    /// all-or-nothing without holding one huge sled batch.
    pub fn check_and_split(&self, digested: Digested, batch_size: usize) -> Result<Vec<Digested>, StoreError> {
        let prepared = self.prepare(digested)?;
        let Prepared { events, canonical, digests, verified_with, .. } = prepared;
        let mut out = Vec::new();
        let mut rest = (events, canonical, digests, verified_with);
        while !rest.0.is_empty() {
            let at = rest.0.len().min(batch_size.max(1));
            let tail = (rest.0.split_off(at), rest.1.split_off(at), rest.2.split_off(at), rest.3.split_off(at));
            out.push(Digested { events: rest.0, canonical: rest.1, digests: rest.2, verified_with: rest.3 });
            rest = tail;
        }
        Ok(out)
    }

    fn prepare(&self, d: Digested) -> Result<Prepared, StoreError> {
        let Digested { events, canonical, digests, mut verified_with } = d;
        for (i, c) in canonical.iter().enumerate() {
            let bytes = c.len() + tidemark_core::event::SIGNED_EVENT_OVERHEAD_BYTES;
            if bytes > tidemark_core::event::MAX_EVENT_BYTES {
                let max = tidemark_core::event::MAX_EVENT_BYTES;
                return Err(Self::refuse(i, Some(events[i].event.id), EventError::TooLarge { bytes, max }));
            }
        }
        // In order: idempotency, conflicts, and the registry as of each entry.
        let mut registry = self.state.registry.clone();
        let mut id_buckets: HashMap<[u8; 7], Vec<IdRecord>> = HashMap::new();
        let mut in_batch: HashMap<EventId, (usize, [u8; 32])> = HashMap::new();
        let mut placement = Vec::with_capacity(events.len());
        let mut to_verify: Vec<(usize, PublicKey)> = Vec::with_capacity(events.len());
        let mut new_indices = Vec::with_capacity(events.len());
        let mut next_seq = self.size();
        let mut catalog: Option<(tidemark_lineage::group::Catalog, Vec<tidemark_lineage::group::Change>)> = None;
        for (i, signed) in events.iter().enumerate() {
            let id = signed.event.id;
            if let Some(&(first, digest)) = in_batch.get(&id) {
                if digest != digests[i] {
                    return Err(Self::refuse(i, Some(id), Refusal::ConflictInBatch { id }));
                }
                placement.push(placement[first]);
                continue;
            }
            let bucket_key = layout::id_bucket_key(&id);
            let bucket = match id_buckets.entry(bucket_key) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => v.insert(match self.tree.get(bucket_key)? {
                    Some(bytes) => decode(&bytes, "event id index")?,
                    None => Vec::new(),
                }),
            };
            if let Some(existing) = bucket.iter().find(|r| r.id == id.0) {
                if existing.digest != digests[i] {
                    return Err(Self::refuse(i, Some(id), Refusal::Conflict { id, existing_seq: existing.seq }));
                }
                placement.push(Err(existing.seq));
                in_batch.insert(id, (i, digests[i]));
                continue;
            }
            let key = registry.admit(next_seq, &signed.event).map_err(|e| Self::refuse(i, Some(id), e))?;
            if let Some(c) = tidemark_lineage::s3::Bucket::component_of(&signed.event.body) {
                // Registered before this batch, or earlier in it.
                let known = self.catalog.check_s3_registered(&c).or_else(|e| match &catalog {
                    Some((scratch, _)) => scratch.check_s3_registered(&c),
                    None => Err(e),
                });
                if let Err(reason) = known {
                    return Err(Self::refuse(i, Some(id), Refusal::Inconsistent { reason }));
                }
            }
            if tidemark_lineage::group::concerns_catalog(&signed.event.body) {
                let (scratch, changes) = catalog.get_or_insert_with(|| (self.catalog.scratch(), Vec::new()));
                match scratch.admit_over(&self.catalog, next_seq, signed.event.occurred_at, &signed.event.body) {
                    Ok(Some(change)) => changes.push(change),
                    Ok(None) => {}
                    Err(reason) => return Err(Self::refuse(i, Some(id), Refusal::Inconsistent { reason })),
                }
            }
            if verified_with[i] != Some(key) {
                to_verify.push((i, key));
            }
            new_indices.push(i);
            placement.push(Ok((next_seq - self.size()) as usize));
            in_batch.insert(id, (i, digests[i]));
            next_seq += 1;
        }
        // Signatures: batch verification in parallel chunks; a failing chunk is
        // re-checked one by one to name the first bad event.
        let messages: Vec<Vec<u8>> =
            to_verify.par_iter().map(|(i, _)| tidemark_core::keys::event_signing_message(&canonical[*i])).collect();
        let bad: Option<usize> = to_verify
            .par_chunks(SIGNATURE_CHUNK)
            .zip(messages.par_chunks(SIGNATURE_CHUNK))
            .filter_map(|(chunk, msgs)| first_bad_signature(chunk, msgs, &events))
            .min();
        if let Some(i) = bad {
            let e = &events[i].event;
            return Err(Self::refuse(i, Some(e.id), Refusal::BadSignature { actor: e.actor }));
        }
        for (i, key) in to_verify {
            verified_with[i] = Some(key);
        }
        Ok(Prepared {
            events,
            canonical,
            digests,
            verified_with,
            placement,
            new_indices,
            registry,
            id_buckets,
            catalog,
        })
    }

    fn commit(&mut self, p: Prepared, now: Timestamp) -> Result<Vec<Appended>, StoreError> {
        let first_seq = self.size();
        let recorded_at = now.max(self.state.last_recorded_at);
        let new_indices = p.new_indices;
        let results: Vec<Appended> = p
            .placement
            .iter()
            .map(|pl| match pl {
                Ok(pos) => Appended { seq: first_seq + *pos as u64, duplicate: false },
                Err(seq) => Appended { seq: *seq, duplicate: true },
            })
            .collect();
        if new_indices.is_empty() {
            return Ok(results);
        }
        let leaf_hashes: Vec<Hash> = new_indices
            .par_iter()
            .enumerate()
            .map(|(k, &i)| {
                let leaf =
                    Entry::leaf_bytes_from_parts(&p.canonical[i], first_seq + k as u64, recorded_at, &p.events[i].sig);
                merkle::leaf_hash(&leaf)
            })
            .collect();
        let mut frontier = self.state.frontier.clone();
        let mut completed: Vec<CompletedNode> = Vec::with_capacity(new_indices.len() * 2 + 64);
        for h in &leaf_hashes {
            frontier.push(*h, &mut completed);
        }

        let mut batch = sled::Batch::default();
        // Entries, in bundles.
        let mut is_new = vec![false; p.events.len()];
        for &i in &new_indices {
            is_new[i] = true;
        }
        let entries: Vec<Entry> = p
            .events
            .into_iter()
            .enumerate()
            .filter(|(i, _)| is_new[*i])
            .enumerate()
            .map(|(k, (_, signed))| Entry {
                seq: first_seq + k as u64,
                recorded_at,
                event: signed.event,
                sig: signed.sig,
            })
            .collect();
        for chunk in entries.chunks(layout::ENTRY_BUNDLE_MAX) {
            batch.insert(&layout::seq_key(layout::ENTRIES, chunk[0].seq)[..], encode(chunk));
        }
        // Merkle nodes: each touched bundle is written once, whole.
        let mut pending: BTreeMap<(u32, u64), Vec<u8>> = BTreeMap::new();
        for node in &completed {
            let bundle = node.index / NODE_BUNDLE_WIDTH;
            let slot = (node.index % NODE_BUNDLE_WIDTH) as usize;
            let bytes =
                pending.entry((node.level, bundle)).or_insert_with(|| match self.open_bundles.get(&node.level) {
                    Some((open, bytes)) if *open == bundle => bytes.clone(),
                    _ => Vec::with_capacity(NODE_BUNDLE_WIDTH as usize * 32),
                });
            assert_eq!(bytes.len(), slot * 32, "nodes of a level complete in index order");
            bytes.extend_from_slice(&node.hash);
        }
        let mut bundles = self.open_bundles.clone();
        for ((level, bundle), bytes) in &pending {
            batch.insert(&layout::node_key(*level, *bundle)[..], bytes.clone());
            // Ascending order: the last write per level is its newest bundle.
            bundles.insert(*level, (*bundle, bytes.clone()));
        }
        // Idempotency index.
        let mut id_buckets = p.id_buckets;
        for (k, &i) in new_indices.iter().enumerate() {
            let id = entries[k].event.id;
            id_buckets
                .get_mut(&layout::id_bucket_key(&id))
                .expect("prepare loaded every bucket it consulted")
                .push(IdRecord { id: id.0, seq: first_seq + k as u64, digest: p.digests[i] });
        }
        let touched: std::collections::BTreeSet<[u8; 7]> =
            entries.iter().map(|e| layout::id_bucket_key(&e.event.id)).collect();
        for key in touched {
            batch.insert(&key[..], encode(&id_buckets[&key]));
        }
        // Kind and actor postings, time index.
        let mut by_kind: BTreeMap<u8, Vec<u64>> = BTreeMap::new();
        let mut by_actor: BTreeMap<ActorId, Vec<u64>> = BTreeMap::new();
        for e in &entries {
            by_kind.entry(kind_index(e.event.kind())).or_default().push(e.seq);
            by_actor.entry(e.event.actor).or_default().push(e.seq);
        }
        let mut by_name: BTreeMap<(u8, String), Vec<u64>> = BTreeMap::new();
        let mut by_artifact: BTreeMap<u8, Vec<([u8; 16], u64)>> = BTreeMap::new();
        for e in &entries {
            for a in e.event.body.artifacts() {
                let (hash, bucket) = layout::artifact_hash(&a);
                by_artifact.entry(bucket).or_default().push((hash, e.seq));
            }
            for c in e.event.body.components() {
                let list = by_name.entry((layout::BY_COMPONENT, c)).or_default();
                if list.last() != Some(&e.seq) {
                    list.push(e.seq);
                }
            }
        }
        for ((prefix, name), seqs) in &by_name {
            batch.insert(&layout::name_key(*prefix, name, first_seq)[..], encode(seqs));
        }
        for (bucket, pairs) in &by_artifact {
            batch.insert(&layout::artifact_key(*bucket, first_seq)[..], encode(pairs));
        }
        for (kind, seqs) in &by_kind {
            batch.insert(&layout::kind_key(*kind, first_seq)[..], encode(seqs));
        }
        for (actor, seqs) in &by_actor {
            batch.insert(&layout::actor_key(actor, first_seq)[..], encode(seqs));
        }
        batch.insert(&layout::time_key(recorded_at, first_seq)[..], Vec::new());
        // Projections, in the same batch: a crash leaves both or neither.
        let mut projection = pg::ProjectionBatch::default();
        let mut s3_projection = s3::S3Batch::default();
        for e in &entries {
            projection.apply(&self.tree, &self.pg_cache, e)?;
            s3_projection.apply(&self.tree, e)?;
        }
        let clusters = projection.write(&mut batch);
        s3_projection.write(&self.tree, &mut batch)?;
        if let Some((scratch, changes)) = &p.catalog {
            group::write_changes(&mut batch, scratch, changes);
        }
        batch.insert(layout::PROJECTION_VERSION_KEY, &layout::PROJECTION_VERSION.to_be_bytes());
        // State and the checkpoint that commits to it.
        let new_state = State {
            frontier,
            last_recorded_at: recorded_at,
            registry: p.registry,
            origin: self.state.origin.clone(),
            ledger_public_key: self.state.ledger_public_key,
        };
        let checkpoint = Checkpoint {
            origin: new_state.origin.clone(),
            size: new_state.frontier.size(),
            root: new_state.frontier.root(),
        };
        let note = checkpoint.sign(&self.ledger_key).map_err(|e| StoreError::Storage(e.to_string()))?;
        batch.insert(&layout::seq_key(layout::CHECKPOINTS, checkpoint.size)[..], note.into_bytes());
        batch.insert(layout::STATE, encode(&new_state));

        if let Err(e) = self.tree.apply_batch(batch).and_then(|()| self.tree.flush().map(|_| ())) {
            // What reached sled may or may not be durable: refuse further writes until reopened.
            self.poisoned = true;
            return Err(e.into());
        }
        self.state = new_state;
        self.open_bundles = bundles;
        self.pg_cache.update(clusters);
        if let Some((scratch, changes)) = p.catalog {
            // In place unless a reader holds the catalog right now.
            Arc::make_mut(&mut self.catalog).absorb(scratch, changes);
        }
        Ok(results)
    }

    /// The newest checkpoint and its signed note.
    pub fn latest_checkpoint(&self) -> Result<(Checkpoint, String), StoreError> {
        let (_, note) = self
            .tree
            .range(layout::seq_key(layout::CHECKPOINTS, 0)..=layout::seq_key(layout::CHECKPOINTS, self.size()))
            .next_back()
            .transpose()?
            .ok_or_else(|| StoreError::Corrupt("no checkpoint".into()))?;
        self.parse_note(&note)
    }

    /// The checkpoint signed at exactly `size`, if the ledger signed one there.
    pub fn checkpoint_at(&self, size: u64) -> Result<Option<(Checkpoint, String)>, StoreError> {
        match self.tree.get(layout::seq_key(layout::CHECKPOINTS, size))? {
            Some(note) => self.parse_note(&note).map(Some),
            None => Ok(None),
        }
    }

    fn parse_note(&self, bytes: &[u8]) -> Result<(Checkpoint, String), StoreError> {
        let note = String::from_utf8(bytes.to_vec())
            .map_err(|_| StoreError::Corrupt("checkpoint note is not UTF-8".into()))?;
        let checkpoint = Checkpoint::open(&note, &self.note_verifier())
            .map_err(|e| StoreError::Corrupt(format!("checkpoint: {e}")))?;
        Ok((checkpoint, note))
    }

    /// Every stored checkpoint's note, oldest first.
    pub fn checkpoint_notes(&self) -> impl Iterator<Item = Result<(u64, String), StoreError>> + '_ {
        let upto = layout::seq_key(layout::CHECKPOINTS, self.size());
        self.tree.range(layout::seq_key(layout::CHECKPOINTS, 0)..=upto).map(|r| {
            let (k, v) = r?;
            let note = String::from_utf8(v.to_vec())
                .map_err(|_| StoreError::Corrupt("checkpoint note is not UTF-8".into()))?;
            Ok((layout::seq_from_key_suffix(&k), note))
        })
    }

    /// One entry by sequence number.
    pub fn entry(&self, seq: u64) -> Result<Entry, StoreError> {
        let size = self.size();
        if seq >= size {
            return Err(StoreError::NoSuchEntry { seq, size });
        }
        let (key, bundle) = self
            .tree
            .range(..=layout::seq_key(layout::ENTRIES, seq))
            .next_back()
            .transpose()?
            .ok_or_else(|| StoreError::Corrupt(format!("no bundle holds entry {seq}")))?;
        if key[0] != layout::ENTRIES {
            return Err(StoreError::Corrupt(format!("no bundle holds entry {seq}")));
        }
        let first = layout::seq_from_key_suffix(&key);
        let entries: Vec<Entry> = decode(&bundle, "entry bundle")?;
        entries
            .into_iter()
            .nth((seq - first) as usize)
            .filter(|e| e.seq == seq)
            .ok_or_else(|| StoreError::Corrupt(format!("bundle at {first} does not hold entry {seq}")))
    }

    /// Entries from `from` on, in order, bundle by bundle.
    pub fn entries_from(&self, from: u64) -> impl Iterator<Item = Result<Vec<Entry>, StoreError>> + '_ {
        let start = match self.tree.range(..=layout::seq_key(layout::ENTRIES, from)).next_back() {
            Some(Ok((k, _))) if k[0] == layout::ENTRIES => layout::seq_from_key_suffix(&k),
            _ => 0,
        };
        // Bounded by the size: a snapshot never sees bundles appended after it.
        let size = self.size();
        let end = layout::seq_key(layout::ENTRIES, size.saturating_sub(1));
        let bundles =
            if size == 0 { None } else { Some(self.tree.range(layout::seq_key(layout::ENTRIES, start)..=end)) };
        bundles.into_iter().flatten().map(move |r| {
            let (_, v) = r?;
            let mut entries: Vec<Entry> = decode(&v, "entry bundle")?;
            entries.retain(|e| e.seq >= from && e.seq < size);
            Ok(entries)
        })
    }

    /// Inclusion proof of entry `seq` in the tree of `size` entries (default: current).
    pub fn inclusion_proof(&self, seq: u64, size: Option<u64>) -> Result<(u64, Vec<Hash>, Hash), StoreError> {
        let size = size.unwrap_or(self.size());
        if size > self.size() {
            return Err(StoreError::NotFound(format!(
                "no such proof: tree size {size} is beyond the ledger's {} entries",
                self.size()
            )));
        }
        if seq >= size {
            return Err(StoreError::NotFound(format!("no such proof: entry {seq} is not in a tree of size {size}")));
        }
        let proof = merkle::inclusion_proof(self, seq, size)?;
        let root = merkle::root_at(self, size)?;
        Ok((size, proof, root))
    }

    /// Consistency proof from tree size `from` to `to` (default: current).
    pub fn consistency_proof(&self, from: u64, to: Option<u64>) -> Result<(u64, Vec<Hash>, Hash, Hash), StoreError> {
        let to = to.unwrap_or(self.size());
        if to > self.size() {
            return Err(StoreError::NotFound(format!(
                "no such proof: tree size {to} is beyond the ledger's {} entries",
                self.size()
            )));
        }
        if from == 0 || from > to {
            return Err(StoreError::NotFound(format!(
                "no such proof: a consistency proof needs 0 < from ≤ to, got from {from}, to {to}"
            )));
        }
        let proof = merkle::consistency_proof(self, from, to)?;
        Ok((to, proof, merkle::root_at(self, from)?, merkle::root_at(self, to)?))
    }

    /// The inclusion proof in the field names of the transparency-dev
    /// proof vectors (hashes in base64), with the checkpoint signed at that
    /// size when there is one. The CLI and the HTTP API print exactly this.
    pub fn inclusion_proof_document(
        &self,
        seq: u64,
        size: Option<u64>,
    ) -> Result<tidemark_core::api::InclusionProof, StoreError> {
        let (size, proof, root) = self.inclusion_proof(seq, size)?;
        Ok(tidemark_core::api::InclusionProof {
            leaf_idx: seq,
            tree_size: size,
            leaf_hash: b64(&self.leaf_hash(seq)?),
            proof: proof.iter().map(b64).collect(),
            root: b64(&root),
            checkpoint: self.checkpoint_at(size)?.map(|(_, n)| n),
            leaf: None,
        })
    }

    /// The consistency proof (`size1`, `size2`, `root1`, `root2`, `proof`,
    /// and the checkpoints signed at both sizes when there are).
    pub fn consistency_proof_document(
        &self,
        from: u64,
        to: Option<u64>,
    ) -> Result<tidemark_core::api::ConsistencyProof, StoreError> {
        let (to, proof, root1, root2) = self.consistency_proof(from, to)?;
        Ok(tidemark_core::api::ConsistencyProof {
            size1: from,
            size2: to,
            root1: b64(&root1),
            root2: b64(&root2),
            proof: proof.iter().map(b64).collect(),
            checkpoint1: self.checkpoint_at(from)?.map(|(_, n)| n),
            checkpoint2: self.checkpoint_at(to)?.map(|(_, n)| n),
        })
    }

    /// Leaf hash of entry `seq`, from the stored tree.
    pub fn leaf_hash(&self, seq: u64) -> Result<Hash, StoreError> {
        if seq >= self.size() {
            return Err(StoreError::NoSuchEntry { seq, size: self.size() });
        }
        self.subtree_hash(0, seq)
    }

    fn stored_node(&self, level: u32, index: u64) -> Result<Option<Hash>, StoreError> {
        let bundle = index / NODE_BUNDLE_WIDTH;
        let offset = ((index % NODE_BUNDLE_WIDTH) * 32) as usize;
        let read = |bytes: &[u8]| bytes.get(offset..offset + 32).map(|h| h.try_into().expect("32 bytes"));
        if let Some((open, bytes)) = self.open_bundles.get(&level)
            && *open == bundle
        {
            return Ok(read(bytes));
        }
        Ok(self.tree.get(layout::node_key(level, bundle))?.and_then(|b| read(&b)))
    }
}

fn b64(h: &Hash) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(h)
}

fn hex_digest(d: &[u8; 32]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Position of `kind` in [`Kind::ALL`]: the index key byte.
pub fn kind_index(kind: Kind) -> u8 {
    Kind::ALL.iter().position(|k| *k == kind).expect("every kind is in ALL") as u8
}

/// The first event (by batch index) in `chunk` whose signature fails, if any.
fn first_bad_signature(chunk: &[(usize, PublicKey)], msgs: &[Vec<u8>], events: &[SignedEvent]) -> Option<usize> {
    let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
    let sigs: Vec<_> = chunk.iter().map(|(i, _)| events[*i].sig).collect();
    let keys: Vec<PublicKey> = chunk.iter().map(|(_, k)| *k).collect();
    first_failing_signature(&refs, &sigs, &keys).map(|j| chunk[j].0)
}

impl SubtreeHashes for Ledger {
    type Error = StoreError;
    fn subtree_hash(&self, level: u32, index: u64) -> Result<Hash, StoreError> {
        self.stored_node(level, index)?
            .ok_or_else(|| StoreError::Corrupt(format!("missing tree node at level {level}, index {index}")))
    }
}
