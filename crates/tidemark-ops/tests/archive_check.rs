//! The archive audit as a library call over a real ledger directory and
//! real archived files (no subprocess): a deleted segment is recorded
//! missing, a changed one corrupt, the rest ok, and the findings land in
//! the ledger as `artifact.verified`.

use std::sync::atomic::{AtomicU64, Ordering};

use tidemark_core::event::{EventBody, KeyEnrolled, PgWalArchived, Role, VerifyOutcome};
use tidemark_core::{ComponentId, Digest32, EventId, Kind, Name, SecretKey, Timestamp};
use tidemark_ops::progress::Recording;
use tidemark_ops::{Env, LedgerApi};
use tidemark_store::{EntryFilter, Genesis, Ledger};

struct TestEnv(AtomicU64);

impl Env for TestEnv {
    fn now(&self) -> Timestamp {
        Timestamp::from_unix_seconds(1_790_000_000)
    }

    fn new_event_id(&self) -> EventId {
        let n = self.0.fetch_add(1, Ordering::Relaxed);
        let mut random = [0u8; 10];
        random[2..].copy_from_slice(&n.to_be_bytes());
        EventId::new_v7(1_790_000_000_000 + n, random)
    }
}

#[test]
fn the_archive_audit_records_missing_and_corrupt_segments() {
    let dir = tempfile::tempdir().unwrap();
    let admin = SecretKey::from_seed("admin", [1; 32]);
    let agent = SecretKey::from_seed("agent", [2; 32]);
    let env = TestEnv(AtomicU64::new(10));
    let mut ledger = Ledger::create(
        &dir.path().join("ledger"),
        Genesis {
            origin: "tidemark.test/ops",
            ledger_key: SecretKey::from_seed("ledger", [3; 32]),
            admin_key: &admin,
            id: EventId::new_v7(1, [0; 10]),
            now: env.now(),
        },
    )
    .unwrap();
    let enrol = EventBody::KeyEnrolled(KeyEnrolled {
        public_key: agent.public_key(),
        name: Name::parse("agent").unwrap(),
        roles: vec![Role::Agent],
    });
    ledger.record(vec![env.sign(&admin, enrol).unwrap()], env.now()).unwrap();

    let archive = dir.path().join("archive");
    std::fs::create_dir_all(&archive).unwrap();
    let component = ComponentId::parse("pg:main").unwrap();
    let mut events = Vec::new();
    for i in 1..=4u64 {
        let segment = format!("00000001000000000000000{i}");
        let bytes = vec![i as u8; 4096];
        let path = archive.join(&segment);
        std::fs::write(&path, &bytes).unwrap();
        let body = EventBody::PgWalArchived(PgWalArchived {
            component: component.clone(),
            timeline: 1,
            segment,
            size_bytes: bytes.len() as u64,
            blake3: Digest32::blake3_of(&bytes),
            sha256: Digest32::blake3_of(b"not checked here"),
            location: path.display().to_string(),
        });
        events.push(env.sign(&agent, body).unwrap());
    }
    ledger.record(events, env.now()).unwrap();
    std::fs::remove_file(archive.join("000000010000000000000002")).unwrap();
    std::fs::write(archive.join("000000010000000000000003"), b"other bytes").unwrap();

    let mut progress = Recording::default();
    let check = tidemark_ops::pg::check_archive(&mut ledger, &env, &agent, "pg:main", &mut progress).unwrap();
    assert_eq!(check.ok, 2);
    let found: Vec<(&str, VerifyOutcome)> = check.problems.iter().map(|f| (f.file.as_str(), f.outcome)).collect();
    assert_eq!(
        found,
        vec![
            ("000000010000000000000002", VerifyOutcome::Missing),
            ("000000010000000000000003", VerifyOutcome::Corrupt)
        ]
    );
    assert_eq!(progress.last, 4, "progress saw every file");

    let mut recorded = Vec::new();
    let filter = EntryFilter { kinds: vec![Kind::ArtifactVerified], ..EntryFilter::default() };
    ledger
        .query(&filter, |e| {
            if let EventBody::ArtifactVerified(v) = e.event.body {
                recorded.push((v.artifact.to_string(), v.outcome));
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(recorded.len(), 4);
    assert!(recorded.contains(&("pg:main/wal/000000010000000000000003".into(), VerifyOutcome::Corrupt)));

    // The operator key may not record archive audits: refused before anything is read.
    let stranger = SecretKey::from_seed("stranger", [9; 32]);
    let refused = tidemark_ops::pg::check_archive(&mut ledger, &env, &stranger, "pg:main", &mut progress).unwrap_err();
    assert!(refused.to_string().contains("nothing was done"), "{refused}");
    assert!(ledger.verify(&mut |_| {}).unwrap().ok());
}
