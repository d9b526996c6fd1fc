//! The persisted PostgreSQL projection: maintained at append time, answered
//! without replaying the log, identical after reopening, and rebuilt once
//! when an older ledger lacks it.

use serde_json::{Value, json};
use tidemark_core::event::Event;
use tidemark_core::{EventId, Lsn, SecretKey, SignedEvent, Timestamp};
use tidemark_lineage::pg::segment_name;
use tidemark_lineage::pg_plan::{PlanOptions, Target};
use tidemark_store::{Genesis, Ledger};

const MIB: u64 = 1024 * 1024;

fn t(s: i64) -> Timestamp {
    Timestamp::from_unix_seconds(1_790_000_000 + s)
}

struct Fixture {
    dir: tempfile::TempDir,
    admin: SecretKey,
    agent: SecretKey,
    counter: u64,
}

impl Fixture {
    fn new() -> (Fixture, Ledger) {
        let dir = tempfile::tempdir().unwrap();
        let admin = SecretKey::from_seed("admin", [1; 32]);
        let mut ledger = Ledger::create(
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
        let mut f = Fixture { dir, admin, agent: SecretKey::from_seed("agent", [3; 32]), counter: 10 };
        let enrol = json!({"kind": "key.enrolled", "body": {"public_key": f.agent.public_key().to_base64(), "name": "agent", "roles": ["agent"]}});
        let e = f.sign(true, enrol);
        let reg = f.sign(
            true,
            json!({"kind": "component.registered", "body": {"component": "pg:main",
            "postgresql": {"system_identifier": "7301", "wal_segment_size_bytes": MIB}}}),
        );
        ledger.append(vec![e, reg], t(1)).unwrap();
        (f, ledger)
    }

    fn sign(&mut self, admin: bool, draft: Value) -> SignedEvent {
        self.counter += 1;
        let key = if admin { &self.admin } else { &self.agent };
        Event::from_draft(draft, key.actor_id(), EventId::new_v7(self.counter, [7; 10]), t(self.counter as i64))
            .unwrap()
            .sign(key)
    }

    fn wal(&mut self, segno: u64) -> SignedEvent {
        let name = segment_name(1, segno, MIB);
        self.sign(false, json!({"kind": "pg.wal_archived", "body": {"component": "pg:main", "timeline": 1, "segment": name,
            "size_bytes": MIB, "blake3": "aa".repeat(32), "sha256": "bb".repeat(32), "location": format!("/archive/{name}")}}))
    }
}

fn at(s: i64) -> String {
    t(s).to_string()
}

#[test]
fn windows_and_answers_come_from_the_persisted_projection_and_survive_reopen() {
    let (mut f, mut ledger) = Fixture::new();
    let mut events: Vec<SignedEvent> = (2..=6).map(|s| f.wal(s)).collect();
    events.push(f.sign(
        false,
        json!({"kind": "pg.base_backup", "body": {"component": "pg:main", "backup_id": "b1", "label": "b1",
        "timeline": 1, "start_lsn": "0/200028", "stop_lsn": "0/300100", "start_time": at(100), "stop_time": at(110),
        "size_bytes": 10, "location": "/backups/b1", "tool": "pg_basebackup"}}),
    ));
    events.push(f.sign(false, json!({"kind": "pg.position", "body": {"component": "pg:main", "lsn": "0/400000", "timeline": 1, "observed_at": at(200)}})));
    events.push(f.sign(false, json!({"kind": "pg.restore_point", "body": {"component": "pg:main", "name": "rp1", "lsn": "0/500100", "timeline": 1, "created_at": at(250)}})));
    events.push(f.sign(false, json!({"kind": "pg.position", "body": {"component": "pg:main", "lsn": "0/600000", "timeline": 1, "observed_at": at(300)}})));
    ledger.append(events, t(400)).unwrap();

    let report = ledger.pg_report("pg:main").unwrap();
    assert_eq!(report.wal_segment_size_bytes, MIB);
    assert_eq!(report.timelines[0].windows.len(), 1);
    assert_eq!(report.timelines[0].windows[0].to_time, t(300));

    let by_time = ledger.pg_answer("pg:main", &Target::Time { at: t(220), timeline: None }).unwrap();
    assert!(by_time.restorable, "{by_time:?}");
    assert_eq!(by_time.resolved.as_ref().unwrap().target_lsn, Lsn::parse("0/400000").unwrap());
    let rp = ledger.pg_answer("pg:main", &Target::RestorePoint { name: "rp1".into() }).unwrap();
    assert!(rp.restorable);

    // Archiving one more segment moves the window's end: incremental, no replay.
    let e = f.wal(7);
    ledger.append(vec![e], t(401)).unwrap();
    let w = &ledger.pg_report("pg:main").unwrap().timelines[0].windows[0];
    assert_eq!(w.to_lsn, Lsn::parse("0/7FFFFF").unwrap());

    let options = PlanOptions { restore_command: "x %f %p".into(), use_recovery_target_time: false };
    let plan = ledger.pg_plan("pg:main", &Target::Time { at: t(220), timeline: None }, &options).unwrap().unwrap();
    // A missing segment splits nothing here but refuses targets beyond it, naming it.
    let missing = f.sign(
        false,
        json!({"kind": "artifact.verified", "body": {"artifact": "pg:main/wal/000000010000000000000005",
        "method": "re-read", "outcome": "missing"}}),
    );
    ledger.append(vec![missing], t(402)).unwrap();
    let no = ledger.pg_answer("pg:main", &Target::Time { at: t(290), timeline: None }).unwrap();
    assert!(!no.restorable);
    assert!(no.explanation.unwrap().contains("000000010000000000000005"));

    let file = ledger.pg_file("pg:main", "000000010000000000000003").unwrap().unwrap();
    assert_eq!(file.location, "/archive/000000010000000000000003");
    assert_eq!(ledger.pg_files("pg:main", None).count(), 6);
    assert_eq!(ledger.pg_files("pg:main", Some("000000010000000000000005")).count(), 2);

    let dir = f.dir.path().to_path_buf();
    drop(ledger);
    let ledger = Ledger::open(&dir).unwrap();
    let again = ledger.pg_plan("pg:main", &Target::Time { at: t(220), timeline: None }, &options).unwrap();
    assert!(again.is_err(), "the proof observation's segment is missing now");
    let before = ledger
        .pg_plan("pg:main", &Target::Lsn { lsn: Lsn::parse("0/400000").unwrap(), timeline: None }, &options)
        .unwrap()
        .unwrap();
    let before_again = ledger
        .pg_plan("pg:main", &Target::Lsn { lsn: Lsn::parse("0/400000").unwrap(), timeline: None }, &options)
        .unwrap()
        .unwrap();
    assert_eq!(
        serde_json::to_string(&before).unwrap(),
        serde_json::to_string(&before_again).unwrap(),
        "same log, same plan"
    );
    assert_eq!(plan.body.base_backup.backup_id, before.body.base_backup.backup_id);
    assert!(
        ledger
            .pg_answer("pg:main", &Target::Lsn { lsn: Lsn::parse("0/4FFFFF").unwrap(), timeline: Some(1) })
            .unwrap()
            .restorable
    );
}

#[test]
fn an_unknown_component_is_a_clear_error() {
    let (_f, ledger) = Fixture::new();
    let err = ledger.pg_report("pg:nope").unwrap_err();
    assert!(err.to_string().contains("pg:nope"), "{err}");
}
