//! Exports: round trips for every selector, the tamper matrix, and a
//! property test over random ledgers, selections and byte flips.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use tidemark_core::event::Event;
use tidemark_core::merkle::{self, InMemoryLeaves};
use tidemark_core::note::{Checkpoint, NoteVerifier};
use tidemark_core::proof_file::TlogProof;
use tidemark_core::{Entry, EventId, SecretKey, SignedEvent, Timestamp};
use tidemark_export::{Selector, VerifyOptions, VerifyReport, verify_export_path, write_export_path};
use tidemark_store::{Genesis, Ledger};

const LEDGER_SEED: [u8; 32] = [2; 32];

struct World {
    _dir: tempfile::TempDir,
    ledger: Ledger,
    admin: SecretKey,
    agent: SecretKey,
    operator: SecretKey,
    n: u64,
}

fn t(s: i64) -> Timestamp {
    Timestamp::from_unix_seconds(1_790_000_000 + s)
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let admin = SecretKey::from_seed("admin", [1; 32]);
        let ledger = Ledger::create(
            &dir.path().join("ledger"),
            Genesis {
                origin: "tidemark.test/export",
                ledger_key: SecretKey::from_seed("ledger", LEDGER_SEED),
                admin_key: &admin,
                id: EventId::new_v7(1, [0; 10]),
                now: t(0),
            },
        )
        .unwrap();
        let mut w = World {
            _dir: dir,
            ledger,
            admin,
            agent: SecretKey::from_seed("agent", [3; 32]),
            operator: SecretKey::from_seed("operator", [4; 32]),
            n: 10,
        };
        for (k, role) in [(w.agent.public_key(), "agent"), (w.operator.public_key(), "operator")] {
            let name = role.to_owned();
            let e = w.sign(
                "admin",
                json!({"kind": "key.enrolled", "body": {"public_key": k.to_base64(), "name": name, "roles": [role]}}),
            );
            w.ledger.append(vec![e], t(1)).unwrap();
        }
        w
    }

    fn key(&self, who: &str) -> &SecretKey {
        match who {
            "admin" => &self.admin,
            "agent" => &self.agent,
            _ => &self.operator,
        }
    }

    fn sign(&mut self, who: &str, draft: Value) -> SignedEvent {
        self.n += 1;
        let key = self.key(who);
        Event::from_draft(draft, key.actor_id(), EventId::new_v7(self.n, [5; 10]), t(self.n as i64)).unwrap().sign(key)
    }

    fn wal(&mut self, n: u64) -> SignedEvent {
        let segment = format!("00000001{n:016X}");
        self.sign("agent", json!({"kind": "pg.wal_archived", "body": {"component": "pg:main", "timeline": 1, "segment": segment,
            "size_bytes": 16, "blake3": "aa".repeat(32), "sha256": "bb".repeat(32), "location": format!("/archive/{segment}")}}))
    }

    fn hold(&mut self, artifact: &str) -> SignedEvent {
        self.sign("operator", json!({"kind": "artifact.legal_hold", "body": {"artifact": artifact, "status": "set", "reason": "audit 2026"}}))
    }

    fn append(&mut self, events: Vec<SignedEvent>, at: i64) {
        self.ledger.append(events, t(at)).unwrap();
    }

    fn verifier(&self) -> NoteVerifier {
        self.ledger.note_verifier()
    }

    fn export(&self, selector: Selector, out: &Path, previous: &[u64]) {
        write_export_path(&self.ledger, &selector, out, previous, t(100), &mut |_| {}).unwrap();
    }
}

fn verify(path: &Path, verifier: &NoteVerifier, previous: Option<&str>) -> VerifyReport {
    verify_export_path(path, &VerifyOptions { verifier, previous_checkpoint: previous }, &mut |_| {}).unwrap()
}

fn failure(report: &VerifyReport) -> String {
    report.checks.iter().filter(|c| !c.ok).map(|c| format!("{}: {}", c.name, c.detail)).collect::<Vec<_>>().join("; ")
}

/// A ledger with WAL segments, holds, and a revoked key.
fn populated() -> World {
    let mut w = World::new();
    let batch: Vec<_> = (1..=5).map(|n| w.wal(n)).collect();
    w.append(batch, 10);
    let h = w.hold("pg:main/wal/000000010000000000000002");
    w.append(vec![h], 11);
    let batch: Vec<_> = (6..=8).map(|n| w.wal(n)).collect();
    w.append(batch, 20);
    w
}

#[test]
fn round_trip_for_every_selector_as_directory_and_tar() {
    let w = populated();
    let out = tempfile::tempdir().unwrap();
    let selectors = [
        (Selector::All, 12u64),
        (Selector::Artifact("pg:main/wal/000000010000000000000002".into()), 2),
        // Eight WAL segments and the legal hold on one of them.
        (Selector::Component("pg:main".into()), 9),
        (Selector::Actor(w.operator.actor_id()), 1),
        (Selector::Time { since: Some(t(20)), until: None }, 3),
        (Selector::Time { since: None, until: Some(t(10)) }, 8),
    ];
    for (i, (selector, want)) in selectors.into_iter().enumerate() {
        for ext in ["", ".tar"] {
            let path = out.path().join(format!("e{i}{ext}"));
            w.export(selector.clone(), &path, &[]);
            let report = verify(&path, &w.verifier(), None);
            assert!(report.ok(), "{selector:?}: {}", failure(&report));
            let selected = report.checks.iter().find(|c| c.name == "selection").unwrap();
            assert!(selected.detail.starts_with(&format!("{want} selected")), "{selector:?}: {}", selected.detail);
        }
    }
}

/// Recomputes MANIFEST and re-signs it with the ledger key: an insider who
/// holds the ledger key, so every deeper check must stand on its own.
fn reseal(w: &World, dir: &Path) {
    let mut files = Vec::new();
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().to_str().unwrap().to_owned());
            }
        }
    }
    walk(dir, dir, &mut files);
    files.retain(|f| f != "MANIFEST" && f != "MANIFEST.sig");
    files.sort();
    let manifest: String = files
        .iter()
        .map(|f| {
            let b = std::fs::read(dir.join(f)).unwrap();
            format!("{}  {}  {f}\n", blake3::hash(&b).to_hex(), b.len())
        })
        .collect();
    std::fs::write(dir.join("MANIFEST"), &manifest).unwrap();
    std::fs::write(
        dir.join("MANIFEST.sig"),
        w.ledger.sign_export_manifest(blake3::hash(manifest.as_bytes()).as_bytes()),
    )
    .unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let target = to.join(p.file_name().unwrap());
        if p.is_dir() { copy_dir(&p, &target) } else { std::fs::copy(&p, &target).map(|_| ()).unwrap() }
    }
}

fn edit(path: &Path, f: impl FnOnce(String) -> String) {
    let text = std::fs::read_to_string(path).unwrap();
    std::fs::write(path, f(text)).unwrap();
}

#[test]
fn tamper_matrix() {
    let w = populated();
    let base = tempfile::tempdir().unwrap();
    let original = base.path().join("original");
    w.export(Selector::All, &original, &[]);
    assert!(verify(&original, &w.verifier(), None).ok());
    let entry = |d: &Path, seq: u64| d.join(format!("entries/{seq:012}.json"));
    let proof = |d: &Path, seq: u64| d.join(format!("proofs/{seq:012}.tlog-proof"));
    type Tamper = Box<dyn Fn(&Path)>;
    // (name, tamper, re-sign the manifest?, what the failure must say)
    let cases: Vec<(&str, Tamper, bool, &str)> = vec![
        (
            "entry byte, unsealed",
            Box::new(move |d| {
                edit(&entry(d, 4), |s| {
                    s.replacen("16777216", "16777217", 1).replacen("\"size_bytes\":16", "\"size_bytes\":17", 1)
                })
            }),
            false,
            "entries/000000000004.json: contents differ",
        ),
        (
            "entry byte, resealed",
            Box::new(move |d| edit(&entry(d, 4), |s| s.replacen("\"size_bytes\":16", "\"size_bytes\":17", 1))),
            true,
            "entry 4 is not included in the checkpoint",
        ),
        (
            "signature",
            Box::new(move |d| {
                edit(&entry(d, 5), |s| {
                    let i = s.find("\"sig\":\"").unwrap() + 8;
                    let c = if &s[i..i + 1] == "A" { "B" } else { "A" };
                    format!("{}{c}{}", &s[..i], &s[i + 1..])
                })
            }),
            true,
            "entry 5",
        ),
        (
            "proof hash",
            Box::new(move |d| {
                edit(&proof(d, 6), |s| {
                    let lines: Vec<&str> = s.lines().collect();
                    let mut h = B64.decode(lines[2]).unwrap();
                    h[0] ^= 1;
                    s.replacen(lines[2], &B64.encode(h), 1)
                })
            }),
            true,
            "not included in the checkpoint",
        ),
        (
            "checkpoint size",
            Box::new(|d| edit(&d.join("checkpoint.txt"), |s| s.replacen("\n12\n", "\n13\n", 1))),
            true,
            "checkpoint.txt",
        ),
        (
            "checkpoint signature",
            Box::new(|d| {
                edit(&d.join("checkpoint.txt"), |s| {
                    let i = s.rfind(' ').unwrap() + 5;
                    let c = if &s[i..i + 1] == "A" { "B" } else { "A" };
                    format!("{}{c}{}", &s[..i], &s[i + 1..])
                })
            }),
            true,
            "checkpoint.txt",
        ),
        (
            "entry removed",
            Box::new(move |d| {
                std::fs::remove_file(entry(d, 7)).unwrap();
            }),
            false,
            "missing from the export",
        ),
        (
            "entry removed, resealed",
            Box::new(move |d| {
                std::fs::remove_file(entry(d, 7)).unwrap();
                std::fs::remove_file(proof(d, 7)).unwrap();
            }),
            true,
            "claims 12 selected entries, the export holds 11",
        ),
        (
            "entry duplicated",
            Box::new(move |d| {
                std::fs::copy(entry(d, 7), d.join("entries/000000000099.json")).unwrap();
            }),
            false,
            "a file was added",
        ),
        (
            "entry duplicated, resealed",
            Box::new(move |d| {
                std::fs::copy(entry(d, 7), entry(d, 8)).unwrap();
            }),
            true,
            "entries/000000000008.json: holds entry 7, not 8",
        ),
        (
            "entries reordered, resealed",
            Box::new(move |d| {
                let (a, b) = (std::fs::read(entry(d, 3)).unwrap(), std::fs::read(entry(d, 4)).unwrap());
                std::fs::write(entry(d, 3), b).unwrap();
                std::fs::write(entry(d, 4), a).unwrap();
            }),
            true,
            "holds entry 4, not 3",
        ),
        ("file added", Box::new(|d| std::fs::write(d.join("notes.txt"), "hi").unwrap()), false, "a file was added"),
        ("file removed", Box::new(|d| std::fs::remove_file(d.join("SUMMARY.md")).unwrap()), false, "SUMMARY.md"),
        ("manifest edited", Box::new(|d| edit(&d.join("MANIFEST"), |s| s.replacen("  ", "   ", 1))), false, "MANIFEST"),
    ];
    for (i, (name, tamper, resealed, needle)) in cases.into_iter().enumerate() {
        let d = base.path().join(format!("case{i}"));
        copy_dir(&original, &d);
        tamper(&d);
        if resealed {
            reseal(&w, &d);
        }
        let report = verify(&d, &w.verifier(), None);
        let why = failure(&report);
        assert!(!report.ok(), "{name}: tampering not caught");
        assert!(why.contains(needle), "{name}: the failure should say {needle:?}, it says: {why}");
    }
    // A checkpoint from another ledger key: nothing verifies under the wrong key.
    let other = NoteVerifier::new("tidemark.test/export", SecretKey::from_seed("other", [9; 32]).public_key()).unwrap();
    let why = failure(&verify(&original, &other, None));
    assert!(why.contains("MANIFEST.sig") && why.contains("checkpoint.txt"), "{why}");
}

/// Writes an export of arbitrary entries, proofs computed in memory and
/// signed with the ledger key: how an attacker holding that key would forge
/// one. The registry rules must still catch entries the ledger would refuse.
fn forge(entries: &[Entry], dir: &Path, ledger_key: &SecretKey, origin: &str, w: &World) {
    std::fs::create_dir_all(dir.join("entries")).unwrap();
    std::fs::create_dir_all(dir.join("proofs")).unwrap();
    let leaves: Vec<_> = entries.iter().map(Entry::leaf_hash).collect();
    let source = InMemoryLeaves(&leaves);
    let size = leaves.len() as u64;
    let root = merkle::root_at(&source, size).unwrap();
    let note = Checkpoint { origin: origin.into(), size, root }.sign(ledger_key).unwrap();
    std::fs::write(dir.join("checkpoint.txt"), &note).unwrap();
    for e in entries {
        std::fs::write(dir.join(format!("entries/{:012}.json", e.seq)), e.leaf_bytes()).unwrap();
        let hashes = merkle::inclusion_proof(&source, e.seq, size).unwrap();
        let p = TlogProof { extra: None, index: e.seq, hashes, checkpoint: note.clone() };
        std::fs::write(dir.join(format!("proofs/{:012}.tlog-proof", e.seq)), p.to_text()).unwrap();
    }
    let meta = json!({"format": "tidemark-export-v1", "origin": origin, "tree_size": size, "selector": {"type": "all"}, "selected_entries": size, "registry_entries": []});
    std::fs::write(dir.join("EXPORT.json"), meta.to_string()).unwrap();
    reseal(w, dir);
}

#[test]
fn entries_the_registry_rules_forbid_are_caught_even_in_a_forged_export() {
    let w = populated();
    let ledger_key = SecretKey::from_seed("ledger", LEDGER_SEED);
    let mut entries: Vec<Entry> = Vec::new();
    w.ledger
        .query(&tidemark_store::EntryFilter { to_seq: Some(2), ..Default::default() }, |e| {
            entries.push(e);
            Ok(())
        })
        .unwrap();
    let stamp = |seq: u64, s: SignedEvent| Entry { seq, recorded_at: t(50), event: s.event, sig: s.sig };
    let base = tempfile::tempdir().unwrap();

    // The agent's key is revoked at 3; the agent signs 4.
    let mut w2 = populated();
    let revoke = w2.sign(
        "admin",
        json!({"kind": "key.revoked", "body": {"key": w2.agent.actor_id().to_string(), "reason": "stolen"}}),
    );
    let after = w2.wal(40);
    let mut revoked = entries.clone();
    revoked.push(stamp(3, revoke));
    revoked.push(stamp(4, after));
    let d = base.path().join("revoked");
    forge(&revoked, &d, &ledger_key, "tidemark.test/export", &w);
    let why = failure(&verify(&d, &w.verifier(), None));
    assert!(why.contains("entries/000000000004.json") && why.contains("revoked at entry 3"), "{why}");

    // The operator signs a WAL record: its role may not.
    let mut w3 = populated();
    let draft = json!({"kind": "pg.position", "body": {"component": "pg:main", "lsn": "0/1", "timeline": 1, "observed_at": "2026-01-01T00:00:00.000000Z"}});
    let by_operator = w3.sign("operator", draft);
    let mut roles = entries.clone();
    roles.push(stamp(3, by_operator));
    let d = base.path().join("role");
    forge(&roles, &d, &ledger_key, "tidemark.test/export", &w);
    let why = failure(&verify(&d, &w.verifier(), None));
    assert!(why.contains("none of which may append pg.position"), "{why}");
}

#[test]
fn consistency_with_the_auditors_previous_checkpoint_and_forks() {
    let mut w = populated();
    let (old, old_note) = w.ledger.latest_checkpoint().unwrap();
    let more: Vec<_> = (20..25).map(|n| w.wal(n)).collect();
    w.append(more, 30);
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("e");
    w.export(Selector::Component("pg:main".into()), &path, &[old.size]);
    let report = verify(&path, &w.verifier(), Some(&old_note));
    assert!(report.ok(), "{}", failure(&report));
    // Without the consistency proof in the export, say what to do.
    let bare = out.path().join("bare");
    w.export(Selector::Component("pg:main".into()), &bare, &[]);
    assert!(failure(&verify(&bare, &w.verifier(), Some(&old_note))).contains("--previous-checkpoint"));
    // A fork: the same ledger key signed a checkpoint of another history at that size.
    let mut fork = World::new();
    let batch: Vec<_> = (100..110).map(|n| fork.wal(n)).collect();
    fork.append(batch, 10);
    // The fork has no checkpoint at exactly that size; its latest one is as damning.
    let (_, forked_note) = fork.ledger.latest_checkpoint().unwrap();
    let forked = Checkpoint::open(&forked_note, &w.verifier()).unwrap();
    let path2 = out.path().join("e2");
    w.export(Selector::All, &path2, &[forked.size]);
    let why = failure(&verify(&path2, &w.verifier(), Some(&forked_note)));
    assert!(why.contains("forked history"), "{why}");
}

mod property {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
        #[test]
        fn every_export_verifies_and_every_byte_flip_is_caught(
            plan in proptest::collection::vec((0u8..3, 0u64..6), 1..25),
            selector_pick in 0u8..4,
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>(), 1u8..=255), 8),
        ) {
            let mut w = World::new();
            for (i, (what, n)) in plan.iter().enumerate() {
                let e = match what {
                    0 => w.wal(*n + 100 * i as u64),
                    1 => w.hold(&format!("pg:main/wal/00000001{:016X}", n)),
                    _ => w.sign("agent", json!({"kind": "snapshot.taken", "body": {"component": "snap:defs", "snapshot_id": format!("s{i}"), "taken_at": "2026-01-01T00:00:00.000000Z", "method": "export", "size_bytes": 1, "location": "/snap"}})),
                };
                w.append(vec![e], 10 + i as i64);
            }
            let selector = match selector_pick {
                0 => Selector::All,
                1 => Selector::Component("pg:main".into()),
                2 => Selector::Actor(w.agent.actor_id()),
                _ => Selector::Time { since: Some(t(12)), until: None },
            };
            let out = tempfile::tempdir().unwrap();
            let dir = out.path().join("e");
            w.export(selector, &dir, &[]);
            let report = verify(&dir, &w.verifier(), None);
            prop_assert!(report.ok(), "{}", failure(&report));
            let mut files: Vec<PathBuf> = Vec::new();
            fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
                for e in std::fs::read_dir(dir).unwrap() {
                    let p = e.unwrap().path();
                    if p.is_dir() { walk(&p, out) } else { out.push(p) }
                }
            }
            walk(&dir, &mut files);
            files.sort();
            for (file_pick, byte_pick, mask) in flips {
                let file = file_pick.get(&files);
                let mut bytes = std::fs::read(file).unwrap();
                if bytes.is_empty() { continue; }
                let at = byte_pick.index(bytes.len());
                bytes[at] ^= mask;
                let original = std::fs::read(file).unwrap();
                std::fs::write(file, &bytes).unwrap();
                let report = verify(&dir, &w.verifier(), None);
                std::fs::write(file, original).unwrap();
                prop_assert!(!report.ok(), "flipping byte {at} of {} went unnoticed", file.display());
            }
        }
    }
}

/// A second implementation, in Python from docs/formats.md (hashlib and
/// `cryptography` only), accepts our exports and rejects a broken proof.
#[test]
fn an_independent_python_verifier_agrees() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/verify_export.py");
    let w = populated();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("e");
    w.export(Selector::All, &dir, &[]);
    let vkey = w.verifier().to_vkey();
    let run = |d: &Path| {
        std::process::Command::new("python3")
            .arg(&script)
            .arg(d)
            .arg(&vkey)
            .output()
            .expect("python3 runs (scripts/test.sh installs `cryptography`)")
    };
    let ok = run(&dir);
    assert!(ok.status.success(), "{}{}", String::from_utf8_lossy(&ok.stdout), String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).starts_with("OK: 12 entries"));
    // The same export as a tar (streamed member by member, docs/formats.md §9).
    let tar = out.path().join("e.tar");
    w.export(Selector::All, &tar, &[]);
    let ok = run(&tar);
    assert!(ok.status.success(), "{}{}", String::from_utf8_lossy(&ok.stdout), String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).starts_with("OK: 12 entries"));
    // A path given twice is refused (which copy would count is ambiguous).
    let twice = out.path().join("twice.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&twice).unwrap());
    for m in tar::Archive::new(std::fs::File::open(&tar).unwrap()).entries().unwrap() {
        let mut m = m.unwrap();
        let (mut h, path) = (m.header().clone(), m.path().unwrap().into_owned());
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut m, &mut bytes).unwrap();
        b.append_data(&mut h, &path, bytes.as_slice()).unwrap();
        if path.ends_with("checkpoint.txt") {
            b.append_data(&mut h, &path, bytes.as_slice()).unwrap();
        }
    }
    b.finish().unwrap();
    let bad = run(&twice);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stdout).contains("appears twice"), "{}", String::from_utf8_lossy(&bad.stdout));
    let proof = dir.join("proofs/000000000006.tlog-proof");
    edit(&proof, |s| {
        let line = s.lines().nth(3).unwrap().to_owned();
        let mut h = B64.decode(&line).unwrap();
        h[5] ^= 0x40;
        s.replacen(&line, &B64.encode(h), 1)
    });
    let bad = run(&dir);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stdout).contains("000000000006.json: not included"),
        "{}",
        String::from_utf8_lossy(&bad.stdout)
    );
}
