//! Recovery rules for groups as data: each `scenarios/*.json` holds the
//! events of a small world (PostgreSQL, S3, snapshots, a group, markers) and
//! the recovery points expected from them. The runner advances the pure
//! state event by event — the store does the same at append time — and
//! compares what `recovery_points` and `latest` say with the expectation.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;
use tidemark_core::event::{Event, EventBody};
use tidemark_core::{ActorId, EventId, Timestamp};
use tidemark_lineage::group::{self, Catalog, Inputs, Latest, PgInput, S3Input};
use tidemark_lineage::pg::{self, Cluster, Position};
use tidemark_lineage::s3::{Bucket, KeyHistory, VersionRecord};

/// One change to a key's history.
type Change = Box<dyn Fn(&mut KeyHistory)>;

#[derive(Default)]
struct World {
    catalog: Catalog,
    clusters: BTreeMap<String, (Cluster, Vec<Position>)>,
    buckets: BTreeMap<String, (Bucket, BTreeMap<String, KeyHistory>)>,
}

impl World {
    fn apply(&mut self, seq: u64, occurred_at: Timestamp, body: &EventBody) -> Result<(), String> {
        if group::concerns_catalog(body) {
            self.catalog.admit(seq, occurred_at, body).map_err(|e| e.to_string())?;
        }
        if let Some(c) = Cluster::component_of(body) {
            self.clusters.entry(c.clone()).or_insert_with(|| (Cluster::new(&c), Vec::new())).0.apply(body);
        }
        if let Some((c, p)) = pg::positions_of(body) {
            self.clusters.entry(c.clone()).or_insert_with(|| (Cluster::new(&c), Vec::new())).1.push(p);
        }
        if let Some(c) = Bucket::component_of(body) {
            let (bucket, keys) = self.buckets.entry(c.clone()).or_insert_with(|| (Bucket::new(&c), BTreeMap::new()));
            let (key, change): (&str, Change) = match body {
                EventBody::S3ObjectVersion(o) => {
                    let record = VersionRecord::from_event(o, seq);
                    (
                        o.key.as_str(),
                        Box::new(move |h: &mut KeyHistory| {
                            h.record(record.clone());
                        }),
                    )
                }
                EventBody::S3VersionMissing(m) => {
                    let id = m.version_id.clone();
                    (
                        m.key.as_str(),
                        Box::new(move |h: &mut KeyHistory| {
                            h.mark_missing(&id);
                        }),
                    )
                }
                other => {
                    bucket.apply_summary(other);
                    return Ok(());
                }
            };
            let h = keys.entry(key.to_owned()).or_default();
            let before = h.entries.len();
            change(h);
            bucket.key_changed(key, before, h);
        }
        Ok(())
    }
}

fn t(v: &Value) -> Timestamp {
    Timestamp::parse_rfc3339(v.as_str().expect("a time")).expect("RFC 3339")
}

fn run(path: &Path) {
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let scenario: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut world = World::default();
    for (i, e) in scenario["events"].as_array().unwrap().iter().enumerate() {
        let at = e.get("occurred_at").map(t).unwrap_or(Timestamp::EPOCH);
        let draft = serde_json::json!({"kind": e["kind"], "body": e["body"]});
        let event = Event::from_draft(draft, ActorId([0; 16]), EventId::new_v7(i as u64 + 1, [0; 10]), at)
            .unwrap_or_else(|err| panic!("{name}: event {i}: {err}"));
        let admitted = world.apply(i as u64 + 1, at, &event.body);
        match (admitted, e.get("refused")) {
            (Ok(()), None) => {}
            (Err(reason), Some(want)) => {
                assert!(
                    reason.contains(want.as_str().unwrap()),
                    "{name}: event {i} refused with {reason:?}, expected {want}"
                )
            }
            (Ok(()), Some(want)) => panic!("{name}: event {i} was admitted; expected a refusal containing {want}"),
            (Err(reason), None) => panic!("{name}: event {i} refused: {reason}"),
        }
    }
    let problems: BTreeMap<String, Vec<(String, KeyHistory)>> = world
        .buckets
        .iter()
        .map(|(c, (b, keys))| (c.clone(), b.problem_keys.iter().map(|k| (k.clone(), keys[k].clone())).collect()))
        .collect();
    let all: BTreeMap<String, Vec<(String, KeyHistory)>> = world
        .buckets
        .iter()
        .map(|(c, (_, keys))| (c.clone(), keys.iter().map(|(k, h)| (k.clone(), h.clone())).collect()))
        .collect();
    let inputs = Inputs {
        pg: world
            .clusters
            .iter()
            .map(|(c, (cluster, positions))| (c.clone(), PgInput { cluster, positions }))
            .collect(),
        s3: world
            .buckets
            .iter()
            .map(|(c, (bucket, _))| (c.clone(), S3Input { bucket, problems: &problems[c], written: &all[c] }))
            .collect(),
    };
    let group = scenario["group"].as_str().unwrap();
    let expect = &scenario["expect"];
    let report = group::recovery_points(&world.catalog, group, &inputs).unwrap();
    // A server's answer parses back into the same report (clients read it typed).
    let wire = serde_json::to_value(&report).unwrap();
    let parsed: group::GroupReport =
        serde_json::from_value(wire.clone()).unwrap_or_else(|e| panic!("{name}: {e}: {wire}"));
    assert_eq!(parsed, report, "{name}: the report survives the wire");
    for (id, want) in expect["markers"].as_object().unwrap() {
        let p = report.markers.iter().find(|m| &m.id == id).unwrap_or_else(|| panic!("{name}: no marker {id}"));
        assert_eq!(p.restorable, want["restorable"].as_bool().unwrap(), "{name}: {id}: {p:?}");
        if let Some(class) = want.get("class") {
            assert_eq!(serde_json::to_value(p.class).unwrap(), *class, "{name}: {id}");
        }
        let reasons: Vec<String> = p.components.iter().filter_map(|c| c.reason.clone()).collect();
        for needle in want.get("reasons_contain").and_then(Value::as_array).into_iter().flatten() {
            let needle = needle.as_str().unwrap();
            assert!(
                reasons.iter().any(|r| r.contains(needle)),
                "{name}: {id}: no reason contains {needle:?}: {reasons:?}"
            );
        }
    }
    let windows: Vec<(String, String)> =
        report.windows.iter().map(|w| (w.from.to_string(), w.to.to_string())).collect();
    let want: Vec<(String, String)> =
        expect["windows"].as_array().unwrap().iter().map(|w| (t(&w[0]).to_string(), t(&w[1]).to_string())).collect();
    assert_eq!(windows, want, "{name}: correlated windows (newest first)");
    // Every time inside a listed window resolves to a restorable point.
    for w in &report.windows {
        let mid = Timestamp::from_micros(w.from.as_micros() + (w.to.as_micros() - w.from.as_micros()) / 2);
        for at in [w.from, mid, w.to] {
            let point = group::time_point(&world.catalog, group, at, &inputs).unwrap();
            assert!(point.is_ok(), "{name}: {at} is inside window {w:?} but {point:?}");
        }
    }
    for (i, needle) in expect.get("gap_reasons_contain").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let needle = needle.as_str().unwrap();
        assert!(
            report.gaps.iter().any(|g| g.reasons.iter().any(|r| r.contains(needle))),
            "{name}: gap reason {i} {needle:?}: {:?}",
            report.gaps
        );
    }
    let latest = group::latest(&world.catalog, group, &inputs).unwrap();
    let got = match latest {
        Some(Latest::Marker { point }) => Value::String(point.id),
        Some(Latest::Time { at, .. }) => Value::String(at.to_string()),
        None => Value::Null,
    };
    let want = match &expect["latest"] {
        Value::String(s) if s.starts_with("20") => Value::String(t(&expect["latest"]).to_string()),
        other => other.clone(),
    };
    assert_eq!(got, want, "{name}: latest");
    // The same state and question give the same bytes.
    let again = group::recovery_points(&world.catalog, group, &inputs).unwrap();
    assert_eq!(serde_json::to_vec(&report).unwrap(), serde_json::to_vec(&again).unwrap());
    assert_eq!(tidemark_lineage::timeline::svg(&report), tidemark_lineage::timeline::svg(&again));
}

#[test]
fn group_recovery_rules_as_data() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios");
    let mut paths: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    paths.sort();
    assert!(paths.len() >= 4, "scenarios in {}", dir.display());
    for p in paths {
        run(&p);
    }
}
