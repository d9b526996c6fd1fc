//! The group catalog in the store: admitted in the append batch (a refused
//! event leaves the log untouched), persisted, loaded on open and rebuilt
//! with the other projections; plans are byte-identical for one state.

use serde_json::{Value, json};
use tidemark_core::event::Event;
use tidemark_core::{EventId, SecretKey, SignedEvent, Timestamp};
use tidemark_lineage::group_plan::PlanRequest;
use tidemark_lineage::pg_plan::PlanOptions;
use tidemark_store::{Genesis, Ledger, StoreError};

fn t(s: i64) -> Timestamp {
    Timestamp::from_unix_seconds(1_790_000_000 + s)
}

fn sign(key: &SecretKey, n: u64, draft: Value) -> SignedEvent {
    Event::from_draft(draft, key.actor_id(), EventId::new_v7(n, [7; 10]), t(n as i64)).unwrap().sign(key)
}

fn world(key: &SecretKey) -> Vec<SignedEvent> {
    let mut drafts = vec![
        json!({"kind": "component.registered", "body": {"component": "s3:uploads", "s3": {"endpoint": "http://127.0.0.1:9", "bucket": "uploads", "region": "us-east-1"}}}),
        json!({"kind": "component.registered", "body": {"component": "snap:defs", "snapshot": {"store": "rabbitmq", "description": ""}}}),
        json!({"kind": "group.defined", "body": {"group": "app", "components": ["s3:uploads", "snap:defs"], "max_skew_ms": 1000}}),
        json!({"kind": "s3.versioning", "body": {"component": "s3:uploads", "status": "enabled", "observed_at": t(1)}}),
        json!({"kind": "snapshot.taken", "body": {"component": "snap:defs", "snapshot_id": "s1", "taken_at": t(30), "method": "export", "size_bytes": 3, "blake3": "aa".repeat(32), "location": "/snap/s1"}}),
    ];
    for i in 0..5 {
        drafts.push(json!({"kind": "s3.object_version", "body": {"component": "s3:uploads", "key": format!("k{i}"), "version_id": format!("v{i}"),
            "etag": format!("\"v{i}\""), "size_bytes": 3, "last_modified": t(10 + i), "is_delete_marker": false, "listing_position": 0, "first_seen_at": t(90)}}));
    }
    drafts.push(json!({"kind": "s3.scan_complete", "body": {"component": "s3:uploads", "complete_through": t(80), "started_at": t(90), "finished_at": t(91), "versions_listed": 5}}));
    drafts.push(json!({"kind": "marker.point", "body": {"group": "app", "marker_id": "m1", "taken_at": t(30),
        "components": [{"component": "s3:uploads", "s3_watermark": t(30)}, {"component": "snap:defs", "snapshot_id": "s1"}]}}));
    drafts.into_iter().enumerate().map(|(i, d)| sign(key, 10 + i as u64, d)).collect()
}

#[test]
fn the_catalog_is_admitted_persisted_and_answers_without_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::from_seed("admin", [1; 32]);
    let genesis = Genesis {
        origin: "tidemark.test/ledger",
        ledger_key: SecretKey::from_seed("ledger", [2; 32]),
        admin_key: &key,
        id: EventId::new_v7(1, [0; 10]),
        now: t(0),
    };
    let mut ledger = Ledger::create(dir.path(), genesis).unwrap();
    ledger.append(world(&key), t(100)).unwrap();
    let size = ledger.size();

    // Refused against the state: nothing written.
    let dup = sign(
        &key,
        99,
        json!({"kind": "marker.point", "body": {"group": "app", "marker_id": "m1", "taken_at": t(40),
        "components": [{"component": "s3:uploads", "s3_watermark": t(40)}, {"component": "snap:defs", "snapshot_id": "s1"}]}}),
    );
    match ledger.append(vec![dup], t(101)) {
        Err(StoreError::Refused(e)) => {
            assert_eq!(e.reason.code(), "conflict");
            assert!(e.to_string().contains("marker m1 of group app is already entry"), "{e}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(ledger.size(), size);

    let report = ledger.group_report("app").unwrap();
    let m1 = &report.markers[0];
    assert!(m1.restorable, "{m1:?}");
    assert_eq!(serde_json::to_value(m1.class).unwrap(), "crash");
    let request = PlanRequest::Marker("m1".into());
    let options = PlanOptions { restore_command: "x".into(), use_recovery_target_time: false };
    let plan = ledger.group_plan("app", &request, &options).unwrap().unwrap();
    assert_eq!(plan.body.components.len(), 2);
    let again = ledger.group_plan("app", &request, &options).unwrap().unwrap();
    assert_eq!(serde_json::to_vec(&plan).unwrap(), serde_json::to_vec(&again).unwrap());
    assert!(ledger.group_plan("app", &PlanRequest::Marker("nope".into()), &options).is_err());

    // Reopen: the same answers from the persisted catalog.
    let before = serde_json::to_vec(&report).unwrap();
    drop(ledger);
    let ledger = Ledger::open(dir.path()).unwrap();
    assert_eq!(serde_json::to_vec(&ledger.group_report("app").unwrap()).unwrap(), before);
    assert_eq!(ledger.group_plan("app", &request, &options).unwrap().unwrap().digest, plan.digest);
}
