//! The ledger's contract: appends are atomic and idempotent, bad input is
//! refused with a reason and leaves size and root unchanged, proofs verify,
//! reopening restores everything, and verify finds the first bad entry.

use serde_json::{Value, json};
use tidemark_core::event::{Event, MAX_EVENT_BYTES, Role};
use tidemark_core::merkle::{verify_consistency, verify_inclusion};
use tidemark_core::note::Checkpoint;
use tidemark_core::{EventId, Kind, SecretKey, SignedEvent, Timestamp};
use tidemark_store::{EntryFilter, Genesis, Ledger, Refusal, StoreError};

struct Fixture {
    _dir: tempfile::TempDir,
    ledger: Ledger,
    admin: SecretKey,
    agent: SecretKey,
    operator: SecretKey,
    counter: u64,
}

fn t(s: i64) -> Timestamp {
    Timestamp::from_unix_seconds(1_790_000_000 + s)
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let admin = SecretKey::from_seed("admin", [1; 32]);
        let ledger = Ledger::create(
            dir.path(),
            Genesis {
                origin: "tidemark.test/ledger",
                ledger_key: SecretKey::from_seed("ledger", [2; 32]),
                admin_key: &admin,
                id: EventId::new_v7(1, [0; 10]),
                now: t(0),
            },
        )
        .unwrap();
        let mut f = Fixture {
            _dir: dir,
            ledger,
            admin,
            agent: SecretKey::from_seed("agent", [3; 32]),
            operator: SecretKey::from_seed("operator", [4; 32]),
            counter: 100,
        };
        let enrol = |k: &SecretKey, role: &str| json!({"kind": "key.enrolled", "body": {"public_key": k.public_key().to_base64(), "name": k.name, "roles": [role]}});
        let a = f.sign(&f.admin.name.clone(), enrol(&f.agent, "agent"));
        let o = f.sign("admin", enrol(&f.operator, "operator"));
        f.ledger.append(vec![a, o], t(1)).unwrap();
        f
    }

    fn key(&self, name: &str) -> &SecretKey {
        match name {
            "admin" => &self.admin,
            "agent" => &self.agent,
            "operator" => &self.operator,
            other => panic!("no key {other}"),
        }
    }

    fn sign(&mut self, signer: &str, draft: Value) -> SignedEvent {
        self.counter += 1;
        let key = self.key(signer);
        Event::from_draft(draft, key.actor_id(), EventId::new_v7(self.counter, [7; 10]), t(self.counter as i64))
            .unwrap()
            .sign(key)
    }

    fn wal(&mut self, n: u64) -> SignedEvent {
        let segment = format!("00000001{:016X}", n);
        self.sign(
            "agent",
            json!({"kind": "pg.wal_archived", "body": {
            "component": "pg:main", "timeline": 1, "segment": segment, "size_bytes": 16_777_216,
            "blake3": "aa".repeat(32), "sha256": "bb".repeat(32), "location": format!("/archive/{segment}")}}),
        )
    }

    fn refused(&mut self, events: Vec<SignedEvent>) -> Refusal {
        let (size, root) = (self.ledger.size(), self.ledger.root());
        let checkpoint = self.ledger.latest_checkpoint().unwrap();
        let err = self.ledger.append(events, t(50)).unwrap_err();
        assert_eq!((self.ledger.size(), self.ledger.root()), (size, root), "a refused batch changes nothing");
        assert_eq!(self.ledger.latest_checkpoint().unwrap(), checkpoint);
        match err {
            StoreError::Refused(e) => {
                eprintln!("refused as expected: {e}");
                e.reason
            }
            other => panic!("expected a refusal, got {other}"),
        }
    }
}

#[test]
fn append_assigns_sequence_numbers_and_signs_a_checkpoint() {
    let mut f = Fixture::new();
    assert_eq!(f.ledger.size(), 3);
    let batch: Vec<_> = (1..=5).map(|n| f.wal(n)).collect();
    let out = f.ledger.append(batch, t(10)).unwrap();
    assert_eq!(out.iter().map(|a| a.seq).collect::<Vec<_>>(), vec![3, 4, 5, 6, 7]);
    let (cp, note) = f.ledger.latest_checkpoint().unwrap();
    assert_eq!((cp.size, cp.root), (8, f.ledger.root()));
    assert_eq!(Checkpoint::open(&note, &f.ledger.note_verifier()).unwrap(), cp);
    assert!(f.ledger.verify(&mut |_| {}).unwrap().ok());
}

#[test]
fn the_same_event_twice_is_accepted_once() {
    let mut f = Fixture::new();
    let e = f.wal(1);
    let first = f.ledger.append(vec![e.clone()], t(10)).unwrap()[0];
    let size = f.ledger.size();
    let again = f.ledger.append(vec![e.clone(), e], t(11)).unwrap();
    assert_eq!(
        again.iter().map(|a| (a.seq, a.duplicate)).collect::<Vec<_>>(),
        vec![(first.seq, true), (first.seq, true)]
    );
    assert_eq!(f.ledger.size(), size);
    // Twice inside one new batch: one entry, both answered with its seq.
    let e2 = f.wal(2);
    let out = f.ledger.append(vec![e2.clone(), e2], t(12)).unwrap();
    assert_eq!(out[0].seq, out[1].seq);
    assert_eq!(f.ledger.size(), size + 1);
}

#[test]
fn conflicting_content_under_one_id_is_refused() {
    let mut f = Fixture::new();
    let e = f.wal(1);
    f.ledger.append(vec![e.clone()], t(10)).unwrap();
    let mut other = e.event.clone();
    if let tidemark_core::EventBody::PgWalArchived(w) = &mut other.body {
        w.size_bytes += 1;
    }
    let other = other.sign(&f.agent);
    assert!(matches!(f.refused(vec![other]), Refusal::Conflict { existing_seq: 3, .. }));
}

#[test]
fn bad_signature_unknown_key_and_role_are_refused_and_batches_are_all_or_nothing() {
    let mut f = Fixture::new();
    let good = f.wal(1);
    let mut forged = f.wal(2);
    forged.sig.0[10] ^= 1;
    let r = f.refused(vec![good.clone(), forged]);
    assert!(matches!(r, Refusal::BadSignature { .. }), "{r}");

    let stranger = SecretKey::from_seed("stranger", [9; 32]);
    let draft = json!({"kind": "pg.position", "body": {"component": "pg:main", "lsn": "0/1", "timeline": 1, "observed_at": "2026-01-01T00:00:00.000000Z"}});
    let unknown = Event::from_draft(draft.clone(), stranger.actor_id(), EventId::new_v7(5, [1; 10]), t(5))
        .unwrap()
        .sign(&stranger);
    assert!(matches!(f.refused(vec![unknown]), Refusal::Auth(tidemark_core::registry::AuthError::UnknownKey { .. })));

    let by_operator = f.sign("operator", draft);
    let r = f.refused(vec![by_operator]);
    assert!(r.to_string().contains("none of which may append pg.position"), "{r}");
    let enrol_by_agent = f.sign("agent", json!({"kind": "key.enrolled", "body": {"public_key": stranger.public_key().to_base64(), "name": "x", "roles": ["admin"]}}));
    assert!(matches!(f.refused(vec![enrol_by_agent]), Refusal::Auth(_)));
}

#[test]
fn a_revoked_key_signs_nothing_after_its_revocation() {
    let mut f = Fixture::new();
    let before = f.wal(1);
    let revoke = f.sign("admin", json!({"kind": "key.revoked", "body": {"key": f.agent.actor_id().to_string(), "reason": "host decommissioned"}}));
    let after = f.wal(2);
    f.ledger.append(vec![before.clone(), revoke], t(10)).unwrap();
    let r = f.refused(vec![after]);
    assert!(
        matches!(r, Refusal::Auth(tidemark_core::registry::AuthError::RevokedKey { revoked_at_seq: 4, .. })),
        "{r}"
    );
    // The event it signed before its revocation is still answered idempotently.
    assert_eq!(f.ledger.append(vec![before], t(11)).unwrap()[0].seq, 3);
    assert!(f.ledger.verify(&mut |_| {}).unwrap().ok());
}

#[test]
fn oversized_events_are_refused() {
    let mut f = Fixture::new();
    let big = f.sign("operator", json!({"kind": "artifact.legal_hold", "body": {"artifact": "pg:main/base/1", "status": "set", "reason": "x".repeat(4000)}}));
    assert!(f.ledger.append(vec![big], t(10)).is_ok(), "4000 bytes is within limits");
    let parts: Vec<Value> = (0..20)
        .map(|i| json!({"component": format!("pg:c{i:03}"), "outcome": "failed", "detail": "d".repeat(4000)}))
        .collect();
    let huge = f.sign("operator", json!({"kind": "restore.performed", "body": {"target": "app", "recovery_point": "m1",
        "plan_digest": "cc".repeat(32), "target_environment": "scratch", "outcome": "failed", "components": parts, "duration_ms": 1}}));
    assert!(huge.to_json_line().len() > MAX_EVENT_BYTES);
    assert!(matches!(f.refused(vec![huge]), Refusal::Event(tidemark_core::EventError::TooLarge { .. })));
}

#[test]
fn proofs_verify_against_checkpoints() {
    let mut f = Fixture::new();
    let mut sizes = vec![f.ledger.size()];
    for b in 0..20u64 {
        let batch: Vec<_> = (0..(b % 7 + 1)).map(|i| f.wal(b * 10 + i)).collect();
        f.ledger.append(batch, t(100 + b as i64)).unwrap();
        sizes.push(f.ledger.size());
    }
    let size = f.ledger.size();
    for seq in 0..size {
        let (s, proof, root) = f.ledger.inclusion_proof(seq, None).unwrap();
        assert_eq!((s, root), (size, f.ledger.root()));
        verify_inclusion(seq, size, &f.ledger.leaf_hash(seq).unwrap(), &proof, &root).unwrap();
        let entry = f.ledger.entry(seq).unwrap();
        assert_eq!(entry.leaf_hash(), f.ledger.leaf_hash(seq).unwrap());
    }
    for &m in &sizes {
        let (cp_m, _) = f.ledger.checkpoint_at(m).unwrap().expect("a checkpoint per batch");
        for &n in sizes.iter().filter(|n| **n >= m) {
            let (cp_n, _) = f.ledger.checkpoint_at(n).unwrap().unwrap();
            let (_, proof, r1, r2) = f.ledger.consistency_proof(m, Some(n)).unwrap();
            assert_eq!((r1, r2), (cp_m.root, cp_n.root));
            verify_consistency(m, n, &proof, &cp_m.root, &cp_n.root).unwrap();
        }
        let (_, proof, root) = f.ledger.inclusion_proof(m - 1, Some(m)).unwrap();
        assert_eq!(root, cp_m.root);
        verify_inclusion(m - 1, m, &f.ledger.leaf_hash(m - 1).unwrap(), &proof, &root).unwrap();
    }
}

#[test]
fn reopen_restores_state_without_replay_and_continues() {
    let mut f = Fixture::new();
    for b in 0..3 {
        let batch: Vec<_> = (0..300).map(|i| f.wal(b * 1000 + i)).collect();
        f.ledger.append(batch, t(10 + b as i64)).unwrap();
    }
    let (size, root) = (f.ledger.size(), f.ledger.root());
    let dir = f.ledger.paths().dir.clone();
    let Fixture { _dir, ledger, .. } = f;
    drop(ledger);
    let mut reopened = Ledger::open(&dir).unwrap();
    assert_eq!((reopened.size(), reopened.root()), (size, root));
    let key = SecretKey::from_seed("agent", [3; 32]);
    let draft = json!({"kind": "pg.position", "body": {"component": "pg:main", "lsn": "0/1", "timeline": 1, "observed_at": "2026-01-01T00:00:00.000000Z"}});
    let e = Event::from_draft(draft, key.actor_id(), EventId::new_v7(999_999, [1; 10]), t(9)).unwrap().sign(&key);
    assert_eq!(reopened.append(vec![e], t(20)).unwrap()[0].seq, size);
    assert!(reopened.verify(&mut |_| {}).unwrap().ok());
    drop(_dir);
}

#[test]
fn queries_use_indexes_and_filters_combine() {
    let mut f = Fixture::new();
    let w: Vec<_> = (0..10).map(|n| f.wal(n)).collect();
    f.ledger.append(w, t(10)).unwrap();
    let hold = f.sign("operator", json!({"kind": "artifact.legal_hold", "body": {"artifact": "pg:main/base/1", "status": "set", "reason": "audit"}}));
    f.ledger.append(vec![hold], t(20)).unwrap();
    let collect = |l: &Ledger, filter: EntryFilter| {
        let mut seqs = Vec::new();
        l.query(&filter, |e| {
            seqs.push(e.seq);
            Ok(())
        })
        .unwrap();
        seqs
    };
    assert_eq!(
        collect(&f.ledger, EntryFilter { kinds: vec![Kind::ArtifactLegalHold], ..Default::default() }),
        vec![13]
    );
    assert_eq!(collect(&f.ledger, EntryFilter { actor: Some(f.operator.actor_id()), ..Default::default() }), vec![13]);
    assert_eq!(collect(&f.ledger, EntryFilter { kinds: vec![Kind::KeyEnrolled], ..Default::default() }), vec![1, 2]);
    assert_eq!(
        collect(&f.ledger, EntryFilter { from_seq: Some(5), to_seq: Some(7), ..Default::default() }),
        vec![5, 6, 7]
    );
    assert_eq!(collect(&f.ledger, EntryFilter { since: Some(t(20)), ..Default::default() }), vec![13]);
    assert_eq!(collect(&f.ledger, EntryFilter { until: Some(t(1)), ..Default::default() }), vec![0, 1, 2]);
    assert_eq!(
        collect(
            &f.ledger,
            EntryFilter { kinds: vec![Kind::PgWalArchived], limit: Some(2), from_seq: Some(8), ..Default::default() }
        ),
        vec![8, 9]
    );
    assert_eq!(f.ledger.registry().get(&f.agent.actor_id()).unwrap().roles, vec![Role::Agent]);
}

#[test]
fn init_twice_refuses_and_changes_nothing() {
    let f = Fixture::new();
    let dir = f.ledger.paths().dir.clone();
    let admin = SecretKey::from_seed("admin2", [5; 32]);
    let err = Ledger::create(
        &dir,
        Genesis {
            origin: "o",
            ledger_key: SecretKey::from_seed("l", [6; 32]),
            admin_key: &admin,
            id: EventId::new_v7(1, [0; 10]),
            now: t(0),
        },
    );
    assert!(matches!(err, Err(StoreError::AlreadyInitialised { .. })));
    assert_eq!(f.ledger.size(), 3);
}

#[test]
fn a_stream_verifies_ahead_and_learns_keys_enrolled_in_it() {
    let mut f = Fixture::new();
    let newcomer = SecretKey::from_seed("newcomer", [8; 32]);
    let enrol = f.sign(
        "admin",
        json!({"kind": "key.enrolled", "body": {"public_key": newcomer.public_key().to_base64(), "name": "newcomer", "roles": ["agent"]}}),
    );
    let draft = json!({"kind": "pg.position", "body": {"component": "pg:main", "lsn": "0/5", "timeline": 1, "observed_at": "2026-01-01T00:00:00.000000Z"}});
    let by_newcomer =
        Event::from_draft(draft, newcomer.actor_id(), EventId::new_v7(77, [1; 10]), t(3)).unwrap().sign(&newcomer);
    let mut forged = f.wal(9);
    forged.sig.0[0] ^= 1;
    let batches = vec![vec![f.wal(1), enrol], vec![by_newcomer, f.wal(2)], vec![forged], vec![f.wal(3)]];
    let mut results = Vec::new();
    f.ledger.append_stream(batches.into_iter(), &|| t(30), |r| {
        let go_on = r.is_ok();
        results.push(r);
        go_on
    });
    assert_eq!(results.len(), 3, "the stream stops at the refused batch");
    assert_eq!(results[0].as_ref().unwrap().iter().map(|a| a.seq).collect::<Vec<_>>(), vec![3, 4]);
    assert_eq!(results[1].as_ref().unwrap().iter().map(|a| a.seq).collect::<Vec<_>>(), vec![5, 6]);
    assert!(matches!(&results[2], Err(StoreError::Refused(e)) if matches!(e.reason, Refusal::BadSignature { .. })));
    assert_eq!(f.ledger.size(), 7);
    assert!(f.ledger.verify(&mut |_| {}).unwrap().ok());
}

#[test]
fn check_and_split_makes_a_large_input_all_or_nothing() {
    let mut f = Fixture::new();
    let mut events: Vec<_> = (0..50).map(|n| f.wal(n)).collect();
    let known = f.ledger.known_keys();
    let batches = f.ledger.check_and_split(Ledger::digest(events.clone(), &|a| known.get(a).copied()), 7).unwrap();
    assert_eq!(batches.iter().map(|b| b.len()).collect::<Vec<_>>(), vec![7, 7, 7, 7, 7, 7, 7, 1]);
    // One bad event at the end refuses the whole input before anything is written.
    events[49].sig.0[3] ^= 1;
    let size = f.ledger.size();
    let err = f.ledger.check_and_split(Ledger::digest(events, &|a| known.get(a).copied()), 7).unwrap_err();
    assert!(matches!(err, StoreError::Refused(e) if e.index == 49));
    assert_eq!(f.ledger.size(), size);
    for b in batches {
        f.ledger.append_digested(b, t(40)).unwrap();
    }
    assert_eq!(f.ledger.size(), size + 50);
    assert!(f.ledger.verify(&mut |_| {}).unwrap().ok());
}
