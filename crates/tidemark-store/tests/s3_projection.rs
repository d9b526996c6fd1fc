//! The persisted S3 projection: key histories and the bucket summary are
//! advanced in the append batch; manifests stream them in key order.

use serde_json::{Value, json};
use tidemark_core::event::Event;
use tidemark_core::{EventId, SecretKey, SignedEvent, Timestamp};
use tidemark_lineage::s3::ManifestLine;
use tidemark_store::{Genesis, Ledger};

fn t(s: i64) -> Timestamp {
    Timestamp::from_unix_seconds(1_790_000_000 + s)
}

struct Fixture {
    _dir: tempfile::TempDir,
    ledger: Ledger,
    key: SecretKey,
    n: u64,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let key = SecretKey::from_seed("admin", [1; 32]);
        let genesis = Genesis {
            origin: "tidemark.test/ledger",
            ledger_key: SecretKey::from_seed("ledger", [2; 32]),
            admin_key: &key,
            id: EventId::new_v7(1, [0; 10]),
            now: t(0),
        };
        Fixture { ledger: Ledger::create(dir.path(), genesis).unwrap(), _dir: dir, key, n: 10 }
    }

    fn sign(&mut self, draft: Value) -> SignedEvent {
        self.n += 1;
        Event::from_draft(draft, self.key.actor_id(), EventId::new_v7(self.n, [5; 10]), t(self.n as i64))
            .unwrap()
            .sign(&self.key)
    }

    fn version(&mut self, key: &str, id: &str, lm: i64, pos: u64, seen: i64, delete: bool) -> SignedEvent {
        self.sign(json!({"kind": "s3.object_version", "body": {"component": "s3:uploads", "key": key, "version_id": id,
            "etag": if delete { Value::Null } else { json!(format!("\"{id}\"")) }, "size_bytes": if delete { 0 } else { 3 },
            "last_modified": t(lm), "is_delete_marker": delete, "listing_position": pos, "first_seen_at": t(seen)}}))
    }

    fn register(&mut self) -> SignedEvent {
        self.sign(json!({"kind": "component.registered", "body": {"component": "s3:uploads",
            "s3": {"endpoint": "http://127.0.0.1:1", "bucket": "uploads", "region": "us-east-1"}}}))
    }

    /// Registers the bucket, observes versioning enabled, records `versions`
    /// and a scan complete through t(50), in one batch.
    fn scanned(&mut self, versions: &[(&str, &str, i64, u64, bool)]) {
        let mut events = vec![
            self.register(),
            self.sign(
                json!({"kind": "s3.versioning", "body": {"component": "s3:uploads", "status": "enabled", "observed_at": t(1)}}),
            ),
        ];
        for (key, id, lm, pos, delete) in versions {
            events.push(self.version(key, id, *lm, *pos, 100, *delete));
        }
        events.push(self.sign(json!({"kind": "s3.scan_complete", "body": {"component": "s3:uploads",
            "complete_through": t(50), "started_at": t(100), "finished_at": t(101), "versions_listed": versions.len()}})));
        self.ledger.append(events, t(102)).unwrap();
    }

    fn manifest(&self, at: i64) -> (Vec<ManifestLine>, tidemark_lineage::s3::ManifestSummary) {
        let mut lines = Vec::new();
        let summary = self
            .ledger
            .s3_manifest("s3:uploads", t(at), 0, &mut |l| {
                lines.push(l.clone());
                Ok(())
            })
            .unwrap();
        (lines, summary)
    }
}

#[test]
fn manifests_answers_and_windows_come_from_the_projection() {
    let mut f = Fixture::new();
    f.scanned(&[
        ("a.txt", "a1", 10, 1, false),
        ("a.txt", "a2", 20, 0, false),
        ("b.txt", "b1", 10, 1, false),
        ("b.txt", "bd", 30, 0, true),
        ("c.txt", "c1", 40, 0, false),
    ]);

    let (lines, summary) = f.manifest(25);
    assert!(summary.restorable, "{summary:?}");
    assert_eq!((summary.keys_to_restore, summary.keys_to_remove), (2, 1), "{lines:?}");
    assert!(matches!(&lines[0], ManifestLine::Restore { key, version_id, .. } if key == "a.txt" && version_id == "a2"));
    assert!(matches!(&lines[2], ManifestLine::Remove { key } if key == "c.txt"));
    assert_eq!(f.manifest(25).1.digest, summary.digest, "same log, same manifest");
    assert!(!f.ledger.s3_answer("s3:uploads", t(60)).unwrap().restorable, "beyond the watermark");

    // A recorded version deleted permanently: the key is unrecoverable while it was current.
    let missing = f.sign(json!({"kind": "s3.version_missing", "body": {"component": "s3:uploads", "key": "a.txt", "version_id": "a1", "observed_at": t(103)}}));
    f.ledger.append(vec![missing], t(104)).unwrap();
    let answer = f.ledger.s3_answer("s3:uploads", t(15)).unwrap();
    assert!(!answer.restorable);
    assert!(answer.explanation.unwrap().contains("a1"));
    assert!(f.ledger.s3_answer("s3:uploads", t(25)).unwrap().restorable);
    let report = f.ledger.s3_report("s3:uploads").unwrap();
    assert_eq!(report.windows.len(), 4, "a hole, and the seconds with writes: {report:?}");
    assert_eq!((report.keys, report.entries_recorded), (3, 5));
}

#[test]
fn s3_facts_about_an_unregistered_component_are_refused_and_change_nothing() {
    let mut f = Fixture::new();
    let before = f.ledger.size();
    let v = f.version("a.txt", "a1", 10, 0, 100, false);
    let err = f.ledger.append(vec![v], t(102)).unwrap_err().to_string();
    assert!(err.contains("s3:uploads is not registered"), "{err}");
    assert_eq!(f.ledger.size(), before, "nothing appended");
    assert!(f.ledger.s3_bucket("s3:uploads").unwrap().is_none());
    // Registered earlier in the same batch: admitted.
    let events = vec![f.register(), f.version("a.txt", "a1", 10, 0, 100, false)];
    f.ledger.append(events, t(103)).unwrap();
}

#[test]
fn answers_find_the_keys_written_in_the_second_of_t_through_the_time_index() {
    let mut f = Fixture::new();
    f.scanned(&[
        ("a.txt", "a1", 10, 1, false),
        ("a.txt", "a2", 20, 0, false),
        ("new.txt", "n1", 20, 0, false),
        ("quiet.txt", "q1", 5, 0, false),
    ]);
    let inside = t(20).saturating_add_micros(400_000);
    let a = f.ledger.s3_answer("s3:uploads", inside).unwrap();
    assert!(!a.restorable, "{a:?}");
    let keys: Vec<String> = a
        .problems
        .iter()
        .filter_map(|l| match l {
            ManifestLine::Problem { key, .. } => Some(key.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(keys, vec!["a.txt".to_owned(), "new.txt".to_owned()], "only the keys written in that second");
    let (lines, summary) = {
        let mut lines = Vec::new();
        let s = f.ledger.s3_manifest("s3:uploads", inside, 0, &mut |l| {
            lines.push(l.clone());
            Ok(())
        });
        (lines, s.unwrap())
    };
    assert!(!summary.restorable && summary.keys_with_problems == 2, "{lines:?}");
    // Just before the second and at its last microsecond the answer is exact.
    assert!(f.ledger.s3_answer("s3:uploads", t(20).saturating_add_micros(-1)).unwrap().restorable);
    assert!(f.ledger.s3_answer("s3:uploads", t(21).saturating_add_micros(-1)).unwrap().restorable);
    assert_eq!(f.ledger.s3_written_between("s3:uploads", t(20), t(20)).unwrap().len(), 2);
    // The seconds with writes, as runs, merged across batches.
    assert_eq!(f.ledger.s3_busy("s3:uploads").unwrap(), vec![(t(5), t(5)), (t(10), t(10)), (t(20), t(20))]);
    let more = vec![f.version("b.txt", "b1", 21, 0, 110, false), f.version("c.txt", "c1", 19, 0, 110, false)];
    f.ledger.append(more, t(111)).unwrap();
    assert_eq!(f.ledger.s3_busy("s3:uploads").unwrap(), vec![(t(5), t(5)), (t(10), t(10)), (t(19), t(21))]);
    // The component's windows leave those seconds out (their last microsecond is exact).
    let report = f.ledger.s3_report("s3:uploads").unwrap();
    let spans: Vec<(Timestamp, Timestamp)> = report.windows.iter().map(|w| (w.from, w.to)).collect();
    let end = |s: i64| t(s).saturating_add_micros(999_999);
    assert_eq!(spans, vec![(t(1), t(5)), (end(5), t(10)), (end(10), t(19)), (end(21), t(50))], "{report:?}");
}
