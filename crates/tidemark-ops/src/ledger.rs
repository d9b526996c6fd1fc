//! One typed API over a ledger, wherever it is: a directory opened here
//! ([`tidemark_store::Ledger`]) or a server ([`Remote`], through
//! `tidemark-client`, the only code that knows URLs and statuses). Both
//! return the same typed values, so orchestration never walks JSON.

use std::path::PathBuf;

use tidemark_client::{Client, ClientError, FlushReport, Spool};
use tidemark_core::api::{AuditRow, ConsistencyProof, EntryFilter, InclusionProof};
use tidemark_core::registry::{AuthError, KeyRecord};
use tidemark_core::{Entry, Kind, SecretKey, SignedEvent, Timestamp};
use tidemark_lineage::group::{GroupInfo, GroupReport, Latest};
use tidemark_lineage::group_plan::{GroupPlan, PlanRequest};
use tidemark_lineage::pg::{ArchivedFile, NotRestorable};
use tidemark_lineage::pg_plan::{Answer, Plan, PlanOptions, Report, Target};
use tidemark_lineage::s3::{KeyHistory, Manifest, S3Answer, S3Report};
use tidemark_store::{Appended, Ledger, StoreError};

use crate::OpsError;

/// What became of events handed to [`LedgerApi::record`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// Durable in the ledger, in order.
    Appended(Vec<Appended>),
    /// The server could not be reached: stored durably in the spool, to be
    /// delivered (in order) by the next write or `tidemark spool flush`.
    Spooled { events: usize, spool: PathBuf, why: String },
}

impl Recorded {
    /// The entry of the last event, when the events are in the ledger already.
    pub fn last_seq(&self) -> Option<u64> {
        match self {
            Recorded::Appended(a) => a.last().map(|a| a.seq),
            Recorded::Spooled { .. } => None,
        }
    }
}

/// The leaf of an entry as proofs show it (its canonical JSON).
fn leaf_text(e: &Entry) -> String {
    String::from_utf8(e.leaf_bytes()).expect("JSON is UTF-8")
}

/// Page size for reading key histories and archived files from a server.
const KEYS_PAGE: usize = 10_000;

/// The questions and the one write every front end needs: what the CLI
/// prints, what orchestration plans from. An unknown group or component is
/// [`StoreError::NotFound`](tidemark_store::StoreError::NotFound) locally and
/// a 404 problem remotely.
pub trait LedgerApi {
    /// Every enrolled key, with its roles and revocation.
    fn keys(&self) -> Result<Vec<KeyRecord>, OpsError>;
    /// Appends `events` all-or-nothing (one batch).
    fn record(&mut self, events: Vec<SignedEvent>, now: Timestamp) -> Result<Recorded, OpsError>;
    /// An S3 component's report: registration, versioning, watermark, windows.
    fn s3_report(&self, component: &str) -> Result<S3Report, OpsError>;
    /// Every recorded key history of an S3 component, in key order.
    fn s3_histories(&self, component: &str, each: &mut dyn FnMut(String, KeyHistory)) -> Result<(), OpsError>;
    /// A consistency proof from tree size `from` to `to` (default: now).
    fn consistency_proof(&self, from: u64, to: Option<u64>) -> Result<ConsistencyProof, OpsError>;
    /// Every archived file recorded for a PostgreSQL cluster, in name order.
    fn pg_files(
        &self,
        component: &str,
        each: &mut dyn FnMut(ArchivedFile) -> Result<(), OpsError>,
    ) -> Result<(), OpsError>;

    /// The ledger's note verifier key (C2SP vkey): what auditors verify with.
    fn ledger_key(&self) -> Result<String, OpsError>;
    /// The signed checkpoint note at `size` (default: the newest).
    fn checkpoint_note(&self, size: Option<u64>) -> Result<String, OpsError>;
    /// One entry by sequence number.
    fn entry(&self, seq: u64) -> Result<Entry, OpsError>;
    /// Every entry `filter` selects, in order, to `each` until it answers false.
    fn entries(
        &self,
        filter: &EntryFilter,
        each: &mut dyn FnMut(Entry) -> Result<bool, OpsError>,
    ) -> Result<(), OpsError>;
    /// An inclusion proof of entry `seq` in the tree of `size` (default: now), with the leaf.
    fn inclusion_proof(&self, seq: u64, size: Option<u64>) -> Result<InclusionProof, OpsError>;
    /// Who did what to one artifact (every event touching it, with actor names and roles).
    fn custody(&self, artifact: &str) -> Result<Vec<AuditRow>, OpsError>;
    /// Audit rows of the entries `filter` selects.
    fn audit(&self, filter: &EntryFilter) -> Result<Vec<AuditRow>, OpsError>;
    /// A group's definition, its components' identities and snapshots.
    fn group_info(&self, group: &str) -> Result<GroupInfo, OpsError>;
    /// A group's markers, correlated windows, gaps and drills.
    fn group_report(&self, group: &str) -> Result<GroupReport, OpsError>;
    /// A group's newest restorable point, if it has one.
    fn group_latest(&self, group: &str) -> Result<Option<Latest>, OpsError>;
    /// A group plan, or the reasons the point is not restorable.
    fn group_plan(
        &self,
        group: &str,
        request: &PlanRequest,
        options: &PlanOptions,
    ) -> Result<Result<GroupPlan, Vec<String>>, OpsError>;
    /// A PostgreSQL component's report: windows, backups, holes.
    fn pg_report(&self, component: &str) -> Result<Report, OpsError>;
    /// Whether one target of a PostgreSQL component is restorable, and why not.
    fn pg_answer(&self, component: &str, target: &Target) -> Result<Answer, OpsError>;
    /// A PostgreSQL restore plan, or why the target is not restorable.
    fn pg_plan(
        &self,
        component: &str,
        target: &Target,
        options: &PlanOptions,
    ) -> Result<Result<Plan, NotRestorable>, OpsError>;
    /// One archived file of a PostgreSQL component, if the ledger has it.
    fn pg_file(&self, component: &str, name: &str) -> Result<Option<ArchivedFile>, OpsError>;
    /// Whether an S3 component is restorable at `at`, and why not.
    fn s3_answer(&self, component: &str, at: Timestamp) -> Result<S3Answer, OpsError>;
    /// An S3 component's manifest at `at`: every key's version then.
    fn s3_manifest(&self, component: &str, at: Timestamp) -> Result<Manifest, OpsError>;

    /// What the last writes delivered from the spool first (a server's
    /// spool: events that waited while it was down), once; none for a local ledger.
    fn take_spool_delivery(&mut self) -> Option<FlushReport> {
        None
    }

    /// Rule: before long work, the signer may append what the work records
    /// (enrolled, unrevoked, a role allowing `kind`), so a wrong key is
    /// refused before anything is touched rather than after.
    fn check_signer(&self, key: &SecretKey, kind: Kind) -> Result<(), OpsError> {
        signer_may(self.keys()?, key, kind)
    }
}

/// Rule: the key is enrolled, unrevoked, and one of its roles may append `kind`.
pub fn signer_may(keys: Vec<KeyRecord>, key: &SecretKey, kind: Kind) -> Result<(), OpsError> {
    let actor = key.actor_id();
    let refused = |e: AuthError| OpsError::NotAuthorised(e.to_string());
    keys.into_iter()
        .find(|r| r.actor == actor)
        .ok_or(AuthError::UnknownKey { actor })
        .map_err(refused)?
        .may_append(kind)
        .map_err(refused)
}

impl LedgerApi for Ledger {
    fn keys(&self) -> Result<Vec<KeyRecord>, OpsError> {
        Ok(self.registry().keys().cloned().collect())
    }

    fn record(&mut self, events: Vec<SignedEvent>, now: Timestamp) -> Result<Recorded, OpsError> {
        Ok(Recorded::Appended(self.append(events, now)?))
    }

    fn s3_report(&self, component: &str) -> Result<S3Report, OpsError> {
        Ok(Ledger::s3_report(self, component)?)
    }

    fn s3_histories(&self, component: &str, each: &mut dyn FnMut(String, KeyHistory)) -> Result<(), OpsError> {
        for item in Ledger::s3_histories(self, component, None) {
            let (k, h) = item?;
            each(k, h);
        }
        Ok(())
    }

    fn consistency_proof(&self, from: u64, to: Option<u64>) -> Result<ConsistencyProof, OpsError> {
        Ok(self.consistency_proof_document(from, to)?)
    }

    fn pg_files(
        &self,
        component: &str,
        each: &mut dyn FnMut(ArchivedFile) -> Result<(), OpsError>,
    ) -> Result<(), OpsError> {
        for f in Ledger::pg_files(self, component, None) {
            each(f?)?;
        }
        Ok(())
    }

    fn ledger_key(&self) -> Result<String, OpsError> {
        Ok(self.note_verifier().to_vkey())
    }

    fn checkpoint_note(&self, size: Option<u64>) -> Result<String, OpsError> {
        match size {
            None => Ok(self.latest_checkpoint()?.1),
            Some(size) => Ok(self
                .checkpoint_at(size)?
                .ok_or_else(|| {
                    StoreError::NotFound(format!(
                        "no checkpoint was signed at size {size} (one is signed after every append batch)"
                    ))
                })?
                .1),
        }
    }

    fn entry(&self, seq: u64) -> Result<Entry, OpsError> {
        Ok(Ledger::entry(self, seq)?)
    }

    fn entries(
        &self,
        filter: &EntryFilter,
        each: &mut dyn FnMut(Entry) -> Result<bool, OpsError>,
    ) -> Result<(), OpsError> {
        let mut open = true;
        let mut failure = None;
        self.query(filter, |e| {
            if open {
                match each(e) {
                    Ok(go_on) => open = go_on,
                    Err(err) => {
                        failure = Some(err);
                        open = false;
                    }
                }
            }
            Ok(())
        })?;
        failure.map_or(Ok(()), Err)
    }

    fn inclusion_proof(&self, seq: u64, size: Option<u64>) -> Result<InclusionProof, OpsError> {
        let mut doc = self.inclusion_proof_document(seq, size)?;
        doc.leaf = Some(leaf_text(&Ledger::entry(self, seq)?));
        Ok(doc)
    }

    fn custody(&self, artifact: &str) -> Result<Vec<AuditRow>, OpsError> {
        LedgerApi::audit(self, &EntryFilter { artifact: Some(artifact.to_owned()), ..EntryFilter::default() })
    }

    fn audit(&self, filter: &EntryFilter) -> Result<Vec<AuditRow>, OpsError> {
        let registry = self.registry().clone();
        let mut rows = Vec::new();
        self.query(filter, |e| {
            rows.push(tidemark_export::audit_row(&e, &registry));
            Ok(())
        })?;
        Ok(rows)
    }

    fn group_info(&self, group: &str) -> Result<GroupInfo, OpsError> {
        Ok(Ledger::group_info(self, group)?)
    }

    fn group_report(&self, group: &str) -> Result<GroupReport, OpsError> {
        Ok(Ledger::group_report(self, group)?)
    }

    fn group_latest(&self, group: &str) -> Result<Option<Latest>, OpsError> {
        Ok(Ledger::group_latest(self, group)?)
    }

    fn group_plan(
        &self,
        group: &str,
        request: &PlanRequest,
        options: &PlanOptions,
    ) -> Result<Result<GroupPlan, Vec<String>>, OpsError> {
        Ok(Ledger::group_plan(self, group, request, options)?)
    }

    fn pg_report(&self, component: &str) -> Result<Report, OpsError> {
        Ok(Ledger::pg_report(self, component)?)
    }

    fn pg_answer(&self, component: &str, target: &Target) -> Result<Answer, OpsError> {
        Ok(Ledger::pg_answer(self, component, target)?)
    }

    fn pg_plan(
        &self,
        component: &str,
        target: &Target,
        options: &PlanOptions,
    ) -> Result<Result<Plan, NotRestorable>, OpsError> {
        Ok(Ledger::pg_plan(self, component, target, options)?)
    }

    fn pg_file(&self, component: &str, name: &str) -> Result<Option<ArchivedFile>, OpsError> {
        Ok(Ledger::pg_file(self, component, name)?)
    }

    fn s3_answer(&self, component: &str, at: Timestamp) -> Result<S3Answer, OpsError> {
        Ok(Ledger::s3_answer(self, component, at)?)
    }

    fn s3_manifest(&self, component: &str, at: Timestamp) -> Result<Manifest, OpsError> {
        let mut lines = Vec::new();
        let summary = Ledger::s3_manifest(self, component, at, 0, &mut |line| {
            lines.push(line.clone());
            Ok(())
        })?;
        Ok(Manifest { summary, lines })
    }
}

/// A ledger held by a server: reads and writes through `tidemark-client`;
/// with a spool, writes survive the server being down.
pub struct Remote {
    pub client: Client,
    pub spool: Option<(Spool, PathBuf)>,
    /// What writes delivered from the spool since it was last taken.
    delivered: Option<FlushReport>,
}

impl Remote {
    pub fn new(client: Client, spool: Option<PathBuf>) -> Result<Remote, OpsError> {
        let spool = spool.map(|dir| Spool::open(&dir).map(|s| (s, dir))).transpose()?;
        Ok(Remote { client, spool, delivered: None })
    }

    fn spool_it(&self, events: &[SignedEvent], why: &ClientError) -> Result<Recorded, OpsError> {
        let (spool, dir) = self.spool.as_ref().expect("only called with a spool");
        spool.store(events)?;
        Ok(Recorded::Spooled { events: events.len(), spool: dir.clone(), why: why.to_string() })
    }
}

impl LedgerApi for Remote {
    fn keys(&self) -> Result<Vec<KeyRecord>, OpsError> {
        Ok(self.client.keys()?.keys)
    }

    /// A writer holding no read token cannot read the registry: then the
    /// server's own check at the append (signature and role) is the check.
    fn check_signer(&self, key: &SecretKey, kind: Kind) -> Result<(), OpsError> {
        match self.client.keys() {
            Ok(list) => signer_may(list.keys, key, kind),
            Err(ClientError::Refused { status: 401, .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The spool is delivered first, so order holds; when the server cannot
    /// be reached and there is a spool, the events go to it.
    fn record(&mut self, events: Vec<SignedEvent>, _now: Timestamp) -> Result<Recorded, OpsError> {
        if let Some((spool, _)) = &self.spool {
            match spool.flush(&self.client) {
                Ok(report) => {
                    if report.batches > 0 || !report.rejected.is_empty() {
                        let d = self.delivered.get_or_insert_with(FlushReport::default);
                        d.batches += report.batches;
                        d.events += report.events;
                        d.rejected.extend(report.rejected);
                    }
                }
                Err(e) if e.is_retryable() => return self.spool_it(&events, &e),
                Err(e) => return Err(e.into()),
            }
        }
        match self.client.append(&events) {
            Ok(results) => Ok(Recorded::Appended(
                results.into_iter().map(|r| Appended { seq: r.seq, duplicate: r.duplicate }).collect(),
            )),
            Err(e) if e.is_retryable() && self.spool.is_some() => self.spool_it(&events, &e),
            Err(e) => Err(e.into()),
        }
    }

    fn take_spool_delivery(&mut self) -> Option<FlushReport> {
        self.delivered.take()
    }

    fn s3_report(&self, component: &str) -> Result<S3Report, OpsError> {
        Ok(self.client.s3_report(component)?)
    }

    fn s3_histories(&self, component: &str, each: &mut dyn FnMut(String, KeyHistory)) -> Result<(), OpsError> {
        let mut after: Option<String> = None;
        loop {
            let page = self.client.s3_keys(component, after.as_deref(), KEYS_PAGE)?;
            for k in page.keys {
                each(k.key, KeyHistory { entries: k.entries });
            }
            match page.next_after {
                Some(n) => after = Some(n),
                None => return Ok(()),
            }
        }
    }

    fn consistency_proof(&self, from: u64, to: Option<u64>) -> Result<ConsistencyProof, OpsError> {
        Ok(self.client.consistency_proof(from, to)?)
    }

    fn pg_files(
        &self,
        component: &str,
        each: &mut dyn FnMut(ArchivedFile) -> Result<(), OpsError>,
    ) -> Result<(), OpsError> {
        let mut after: Option<String> = None;
        loop {
            let page = self.client.pg_files(component, after.as_deref(), KEYS_PAGE)?;
            for f in page.files {
                each(f)?;
            }
            match page.next_after {
                Some(n) => after = Some(n),
                None => return Ok(()),
            }
        }
    }

    fn ledger_key(&self) -> Result<String, OpsError> {
        Ok(self.client.ledger_key()?)
    }

    fn checkpoint_note(&self, size: Option<u64>) -> Result<String, OpsError> {
        Ok(self.client.checkpoint(size)?)
    }

    fn entry(&self, seq: u64) -> Result<Entry, OpsError> {
        Ok(self.client.entry(seq)?)
    }

    /// Page by page; paging stops when `each` answers false.
    fn entries(
        &self,
        filter: &EntryFilter,
        each: &mut dyn FnMut(Entry) -> Result<bool, OpsError>,
    ) -> Result<(), OpsError> {
        let mut failure = None;
        let mut stopped = false;
        let paged = self.client.entries(filter, &mut |e| match each(e) {
            Ok(true) => Ok(()),
            Ok(false) => {
                stopped = true;
                Err(ClientError::Protocol("stopped by the reader".into()))
            }
            Err(err) => {
                failure = Some(err);
                Err(ClientError::Protocol("stopped by the reader".into()))
            }
        });
        match (failure, paged) {
            (Some(err), _) => Err(err),
            (None, Err(_)) if stopped => Ok(()),
            (None, r) => Ok(r?),
        }
    }

    fn inclusion_proof(&self, seq: u64, size: Option<u64>) -> Result<InclusionProof, OpsError> {
        let mut doc = self.client.inclusion_proof(seq, size)?;
        doc.leaf = Some(leaf_text(&self.client.entry(seq)?));
        Ok(doc)
    }

    fn custody(&self, artifact: &str) -> Result<Vec<AuditRow>, OpsError> {
        Ok(self.client.custody(artifact)?)
    }

    fn audit(&self, filter: &EntryFilter) -> Result<Vec<AuditRow>, OpsError> {
        Ok(self.client.audit(filter)?)
    }

    fn group_info(&self, group: &str) -> Result<GroupInfo, OpsError> {
        Ok(self.client.group_info(group)?)
    }

    fn group_report(&self, group: &str) -> Result<GroupReport, OpsError> {
        Ok(self.client.group_report(group)?)
    }

    fn group_latest(&self, group: &str) -> Result<Option<Latest>, OpsError> {
        Ok(self.client.group_latest(group)?)
    }

    fn group_plan(
        &self,
        group: &str,
        request: &PlanRequest,
        options: &PlanOptions,
    ) -> Result<Result<GroupPlan, Vec<String>>, OpsError> {
        Ok(self.client.group_plan(group, request, options)?)
    }

    fn pg_report(&self, component: &str) -> Result<Report, OpsError> {
        Ok(self.client.pg_report(component)?)
    }

    fn pg_answer(&self, component: &str, target: &Target) -> Result<Answer, OpsError> {
        Ok(self.client.pg_answer(component, target)?)
    }

    fn pg_plan(
        &self,
        component: &str,
        target: &Target,
        options: &PlanOptions,
    ) -> Result<Result<Plan, NotRestorable>, OpsError> {
        Ok(self.client.pg_plan(component, target, options)?.map_err(|(_, reason)| reason))
    }

    fn pg_file(&self, component: &str, name: &str) -> Result<Option<ArchivedFile>, OpsError> {
        Ok(self.client.pg_file(component, name)?)
    }

    fn s3_answer(&self, component: &str, at: Timestamp) -> Result<S3Answer, OpsError> {
        Ok(self.client.s3_answer(component, at)?)
    }

    fn s3_manifest(&self, component: &str, at: Timestamp) -> Result<Manifest, OpsError> {
        Ok(self.client.s3_manifest(component, at)?)
    }
}
