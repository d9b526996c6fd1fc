//! `tidemark verify`: re-derive everything from the stored entries.
//!
//! Every leaf is rebuilt from its entry, every signature is checked against
//! the key registry as of that entry (batch verification on all cores), the
//! role and revocation rules are re-applied, the stored Merkle nodes are
//! compared with recomputed ones, and the tree root is checked against
//! every stored, signed checkpoint. The first bad entry is reported by
//! sequence number.

use std::collections::{BTreeMap, HashSet};

use rayon::prelude::*;
use tidemark_core::event::EventBody;
use tidemark_core::keys::{PublicKey, event_signing_message, first_failing_signature};
use tidemark_core::merkle::{self, CompletedNode, Frontier, Hash};
use tidemark_core::note::Checkpoint;
use tidemark_core::registry::Registry;
use tidemark_core::{Entry, Timestamp};

use crate::layout::{self, NODE_BUNDLE_WIDTH};
use crate::{Ledger, StoreError};

/// Entries re-derived together (parallel work unit).
const VERIFY_CHUNK: usize = 8192;

pub use tidemark_core::api::{VerifyFailure, VerifyReport};

struct Run<'a> {
    ledger: &'a Ledger,
    registry: Registry,
    frontier: Frontier,
    ids: HashSet<[u8; 16]>,
    next_seq: u64,
    last_recorded_at: Timestamp,
    checkpoints: BTreeMap<u64, Checkpoint>,
    checkpoints_checked: u64,
    node_cache: BTreeMap<u32, (u64, Vec<u8>)>,
}

fn fail(seq: Option<u64>, reason: impl Into<String>) -> VerifyFailure {
    VerifyFailure { seq, reason: reason.into() }
}

impl Run<'_> {
    fn stored_node(&mut self, level: u32, index: u64) -> Result<Option<Hash>, StoreError> {
        let bundle = index / NODE_BUNDLE_WIDTH;
        let cached = matches!(self.node_cache.get(&level), Some((b, _)) if *b == bundle);
        if !cached {
            let bytes = self.ledger.tree.get(layout::node_key(level, bundle))?.map(|v| v.to_vec()).unwrap_or_default();
            self.node_cache.insert(level, (bundle, bytes));
        }
        let bytes = &self.node_cache[&level].1;
        let offset = ((index % NODE_BUNDLE_WIDTH) * 32) as usize;
        Ok(bytes.get(offset..offset + 32).map(|h| h.try_into().expect("32 bytes")))
    }

    /// Stage A (sequential rules, with the leaf and message derivation done
    /// in parallel first): admits entries in order until the first structural
    /// failure.
    fn admit(&mut self, entries: Vec<Entry>) -> Staged {
        let derived: Vec<(Vec<u8>, Hash)> = entries
            .par_iter()
            .map(|e| {
                let canonical = e.event.canonical_bytes();
                let leaf = Entry::leaf_bytes_from_parts(&canonical, e.seq, e.recorded_at, &e.sig);
                (event_signing_message(&canonical), merkle::leaf_hash(&leaf))
            })
            .collect();
        let mut keys: Vec<PublicKey> = Vec::with_capacity(entries.len());
        let mut structural: Option<VerifyFailure> = None;
        for e in &entries {
            let expected = self.next_seq;
            if let Err(f) = self.rules(e, expected) {
                structural = Some(f);
                break;
            }
            match self.registry.admit(e.seq, &e.event) {
                Ok(k) => keys.push(k),
                Err(reason) => {
                    structural = Some(fail(Some(e.seq), format!("not authorised: {reason}")));
                    break;
                }
            }
            self.last_recorded_at = e.recorded_at;
            self.next_seq += 1;
        }
        Staged { entries, derived, keys, structural }
    }

    fn rules(&mut self, e: &Entry, expected: u64) -> Result<(), VerifyFailure> {
        if e.seq != expected {
            return Err(fail(Some(expected), format!("entry {expected} is missing (found {} in its place)", e.seq)));
        }
        if e.recorded_at < self.last_recorded_at {
            return Err(fail(Some(e.seq), "recorded_at goes backwards"));
        }
        if !self.ids.insert(e.event.id.0) {
            return Err(fail(Some(e.seq), format!("event id {} appears twice in the log", e.event.id)));
        }
        if let Err(reason) = e.event.body.validate() {
            return Err(fail(Some(e.seq), format!("invalid {} body: {reason}", e.event.kind().name())));
        }
        if let EventBody::LedgerGenesis(g) = &e.event.body
            && (g.ledger_public_key != self.ledger.state.ledger_public_key || g.origin != self.ledger.state.origin)
        {
            return Err(fail(Some(e.seq), "ledger.genesis names another ledger key or origin than this ledger's"));
        }
        Ok(())
    }

    /// Stage C (sequential): stored nodes equal recomputed ones; roots match checkpoints.
    fn tree(&mut self, staged: &Staged) -> Result<Option<VerifyFailure>, StoreError> {
        let mut completed: Vec<CompletedNode> = Vec::with_capacity(4);
        let n = staged.keys.len();
        for (e, (_, leaf)) in staged.entries[..n].iter().zip(&staged.derived) {
            completed.clear();
            self.frontier.push(*leaf, &mut completed);
            for node in &completed {
                if self.stored_node(node.level, node.index)? != Some(node.hash) {
                    let what = if node.level == 0 {
                        "the stored leaf hash differs from the hash of the entry".to_owned()
                    } else {
                        format!(
                            "stored tree node (level {}, index {}) differs from the recomputed one",
                            node.level, node.index
                        )
                    };
                    return Ok(Some(fail(Some(e.seq), what)));
                }
            }
            let size = self.frontier.size();
            if let Some(cp) = self.checkpoints.get(&size) {
                self.checkpoints_checked += 1;
                if cp.root != self.frontier.root() {
                    return Ok(Some(fail(
                        Some(e.seq),
                        format!("the signed checkpoint at size {size} has another root than the entries give"),
                    )));
                }
            }
        }
        Ok(None)
    }
}

/// Entries that passed stage A, with what the later stages need.
struct Staged {
    entries: Vec<Entry>,
    /// (signing message, leaf hash) per entry.
    derived: Vec<(Vec<u8>, Hash)>,
    /// The signer key of each admitted entry (a prefix of `entries`).
    keys: Vec<PublicKey>,
    structural: Option<VerifyFailure>,
}

/// Stage B (parallel): the first admitted entry whose signature fails.
fn bad_signature(staged: &Staged) -> Option<VerifyFailure> {
    let n = staged.keys.len();
    staged.entries[..n]
        .par_chunks(256)
        .zip(staged.derived[..n].par_chunks(256))
        .zip(staged.keys.par_chunks(256))
        .filter_map(|((es, ds), ks)| {
            let msgs: Vec<&[u8]> = ds.iter().map(|(m, _)| m.as_slice()).collect();
            let sigs: Vec<_> = es.iter().map(|e| e.sig).collect();
            first_failing_signature(&msgs, &sigs, ks).map(|j| es[j].seq)
        })
        .min()
        .map(|seq| fail(Some(seq), "bad signature: it does not verify with the enrolled key of its actor"))
}

fn earliest(failures: impl IntoIterator<Item = Option<VerifyFailure>>) -> Option<VerifyFailure> {
    failures.into_iter().flatten().min_by_key(|f| f.seq.unwrap_or(u64::MAX))
}

/// Reads the next chunk of about [`VERIFY_CHUNK`] entries.
fn next_chunk(
    bundles: &mut dyn Iterator<Item = Result<Vec<Entry>, StoreError>>,
) -> Result<Option<Vec<Entry>>, StoreError> {
    let mut chunk = Vec::with_capacity(VERIFY_CHUNK + layout::ENTRY_BUNDLE_MAX);
    while chunk.len() < VERIFY_CHUNK {
        match bundles.next().transpose()? {
            Some(b) => chunk.extend(b),
            None => break,
        }
    }
    Ok((!chunk.is_empty()).then_some(chunk))
}

impl Ledger {
    /// Verifies the whole ledger. `progress` receives the number of entries checked so far.
    pub fn verify(&self, progress: &mut dyn FnMut(u64)) -> Result<VerifyReport, StoreError> {
        let verifier = self.note_verifier();
        let mut checkpoints = BTreeMap::new();
        let mut early: Option<VerifyFailure> = None;
        for item in self.checkpoint_notes() {
            let (size, note) = item?;
            match Checkpoint::open(&note, &verifier) {
                Ok(cp) if cp.size == size => {
                    checkpoints.insert(size, cp);
                }
                Ok(cp) => {
                    early =
                        early.or(Some(fail(None, format!("checkpoint stored under size {size} says size {}", cp.size))))
                }
                Err(e) => early = early.or(Some(fail(None, format!("checkpoint at size {size}: {e}")))),
            }
        }
        let mut run = Run {
            ledger: self,
            registry: Registry::default(),
            frontier: Frontier::default(),
            ids: HashSet::with_capacity(self.size() as usize),
            next_seq: 0,
            last_recorded_at: Timestamp::from_micros(i64::MIN),
            checkpoints,
            checkpoints_checked: 0,
            node_cache: BTreeMap::new(),
        };
        let mut failure = early;
        if failure.is_none() {
            // Pipeline: while chunk k's signatures are verified on all cores,
            // the tree of chunk k is checked and chunk k+1 is read and admitted.
            let mut bundles = self.entries_from(0);
            let mut current = next_chunk(&mut bundles)?.map(|c| run.admit(c));
            while let Some(staged) = current.take() {
                let (sig_failure, rest) = rayon::join(
                    || bad_signature(&staged),
                    || -> Result<_, StoreError> {
                        let tree_failure = run.tree(&staged)?;
                        let stop = staged.structural.is_some() || tree_failure.is_some();
                        let next = if stop { None } else { next_chunk(&mut bundles)?.map(|c| run.admit(c)) };
                        Ok((tree_failure, next))
                    },
                );
                let (tree_failure, next) = rest?;
                failure = earliest([staged.structural, sig_failure, tree_failure]);
                if failure.is_some() {
                    break;
                }
                progress(run.next_seq);
                current = next;
            }
        }
        let size = run.frontier.size();
        if failure.is_none() && size != self.size() {
            failure =
                Some(fail(Some(size), format!("the state records {} entries but only {size} are stored", self.size())));
        }
        if failure.is_none() && run.frontier.root() != self.root() {
            failure = Some(fail(None, "the recorded root differs from the root of the entries"));
        }
        if failure.is_none()
            && let Some((&beyond, _)) = run.checkpoints.range(size + 1..).next()
        {
            failure = Some(fail(None, format!("a checkpoint claims size {beyond}, beyond the {size} stored entries")));
        }
        Ok(VerifyReport {
            entries_checked: failure.as_ref().and_then(|f| f.seq).unwrap_or(size),
            checkpoints_checked: run.checkpoints_checked,
            size: self.size(),
            root: hex_root(&self.root()),
            failure,
        })
    }
}

fn hex_root(h: &Hash) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tidemark_core::event::Event;
    use tidemark_core::{EventId, SecretKey, Timestamp};

    use crate::{Genesis, Ledger, decode, encode, layout};

    fn ledger(dir: &std::path::Path) -> Ledger {
        let admin = SecretKey::from_seed("admin", [1; 32]);
        let mut l = Ledger::create(
            dir,
            Genesis {
                origin: "t/l",
                ledger_key: SecretKey::from_seed("l", [2; 32]),
                admin_key: &admin,
                id: EventId::new_v7(1, [0; 10]),
                now: Timestamp::EPOCH,
            },
        )
        .unwrap();
        let events = (0..40u64)
            .map(|i| {
                let draft = json!({"kind": "component.registered", "body": {"component": format!("snap:c{i}"), "snapshot": {"store": "rabbitmq", "description": ""}}});
                Event::from_draft(draft, admin.actor_id(), EventId::new_v7(10 + i, [1; 10]), Timestamp::EPOCH).unwrap().sign(&admin)
            })
            .collect();
        l.append(events, Timestamp::from_micros(1)).unwrap();
        l
    }

    #[test]
    fn a_snapshot_verifies_as_of_its_size_while_the_ledger_grows() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = ledger(dir.path());
        let snap = l.snapshot();
        let size = snap.size();
        let admin = SecretKey::from_seed("admin", [1; 32]);
        let more: Vec<_> = (0..300u64)
            .map(|i| {
                let draft = json!({"kind": "component.registered", "body": {"component": format!("snap:d{i}"), "snapshot": {"store": "rabbitmq", "description": ""}}});
                Event::from_draft(draft, admin.actor_id(), EventId::new_v7(1000 + i, [2; 10]), Timestamp::EPOCH)
                    .unwrap()
                    .sign(&admin)
            })
            .collect();
        l.append(more.clone(), Timestamp::from_micros(2)).unwrap();
        assert_eq!(l.size(), size + 300);
        let report = snap.verify(&mut |_| {}).unwrap();
        assert!(report.ok(), "{report:?}");
        assert_eq!((report.size, report.entries_checked), (size, size));
        let seen: usize = snap.entries_from(0).map(|b| b.unwrap().len()).sum();
        assert_eq!(seen as u64, size);
        assert_eq!(snap.latest_checkpoint().unwrap().0.size, size);
        let mut snap = snap;
        assert!(matches!(snap.append(more, Timestamp::from_micros(3)), Err(crate::StoreError::ReadOnly)));
        assert!(l.verify(&mut |_| {}).unwrap().ok());
    }

    #[test]
    fn a_changed_entry_is_reported_by_its_sequence_number() {
        let dir = tempfile::tempdir().unwrap();
        let l = ledger(dir.path());
        assert!(l.verify(&mut |_| {}).unwrap().ok());
        let key = layout::seq_key(layout::ENTRIES, 1);
        let mut bundle: Vec<tidemark_core::Entry> = decode(&l.tree.get(key).unwrap().unwrap(), "b").unwrap();
        bundle[16].event.occurred_at = Timestamp::from_micros(5);
        l.tree.insert(key, encode(&bundle)).unwrap();
        let report = l.verify(&mut |_| {}).unwrap();
        let failure = report.failure.expect("tampering is caught");
        assert_eq!(failure.seq, Some(17));
        assert!(failure.reason.contains("bad signature"), "{}", failure.reason);
    }

    #[test]
    fn a_changed_tree_node_or_checkpoint_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let l = ledger(dir.path());
        let key = layout::node_key(1, 0);
        let mut nodes = l.tree.get(key).unwrap().unwrap().to_vec();
        nodes[32 * 3] ^= 1;
        l.tree.insert(key, nodes).unwrap();
        let failure = l.verify(&mut |_| {}).unwrap().failure.unwrap();
        assert_eq!(failure.seq, Some(7), "{failure:?}");

        let dir = tempfile::tempdir().unwrap();
        let l = ledger(dir.path());
        let ck = layout::seq_key(layout::CHECKPOINTS, 1);
        let note = String::from_utf8(l.tree.get(ck).unwrap().unwrap().to_vec()).unwrap();
        l.tree.insert(ck, note.replacen("\n1\n", "\n2\n", 1).into_bytes()).unwrap();
        let failure = l.verify(&mut |_| {}).unwrap().failure.unwrap();
        assert!(failure.reason.contains("does not verify"), "{failure:?}");
    }
}
