//! End to end against a real S3 endpoint: `moto_server` (PyPI, in the
//! project's `.venv`, started here on a loopback port, path-style). Every
//! scenario keeps its own ground truth and checks tidemark against it:
//! manifests at several T (same-second ties made on purpose), a restore
//! into a second bucket byte for byte, a re-run that redoes nothing, a
//! version deleted permanently, suspended versioning, Object Lock. One
//! restore re-run goes through the library (`tidemark_ops::s3_restore` over
//! the server's typed API), the rest through the binary.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{BucketVersioningStatus, ObjectLockMode, VersioningConfiguration};
use common::moto::{CREDS, Moto, moto_bin};
use common::{Cli, Run, Server, admin_key};
use serde_json::Value;
use tidemark_core::Timestamp;
use tidemark_s3::S3;

struct World {
    cli: Cli,
    server: Server,
    token: String,
    moto: Moto,
    s3: S3,
}

impl World {
    fn new(moto_bin: &PathBuf) -> World {
        let cli = Cli::with_keys();
        let server = Server::start(&cli, "127.0.0.1:0", &[]);
        let token = cli.ok(&["token", "issue", "--key", "agent.key"]).trim().to_owned();
        let moto = Moto::start(moto_bin);
        let s3 = moto.client();
        World { cli, server, token, moto, s3 }
    }

    fn run_as(&self, key: &str, args: &[&str]) -> Run {
        self.cli.run_remote(&self.server.url, &self.token, key, &CREDS, args)
    }

    fn ok(&self, args: &[&str]) -> String {
        let r = self.run_as("agent.key", args);
        assert_eq!(r.code, 0, "tidemark {args:?}: {}{}", r.stdout, r.stderr);
        r.stdout
    }

    fn bucket_args<'a>(&'a self, component: &'a str, bucket: &'a str) -> Vec<&'a str> {
        vec!["--component", component, "--endpoint", &self.moto.url, "--bucket", bucket, "--path-style"]
    }

    /// `s3 register` (admin) of a bucket.
    fn register(&self, component: &str, bucket: &str) {
        let admin = admin_key(&self.cli);
        let mut args = vec!["s3", "register"];
        args.extend(self.bucket_args(component, bucket));
        args.extend(["--signer", admin.as_str()]);
        self.ok(&args);
    }

    fn scan(&self, component: &str, bucket: &str) -> String {
        let r = self.try_scan(component, bucket);
        assert_eq!(r.code, 0, "s3 scan {component} {bucket}: {}{}", r.stdout, r.stderr);
        r.stdout
    }

    fn try_scan(&self, component: &str, bucket: &str) -> Run {
        let mut args = vec!["s3", "scan"];
        args.extend(self.bucket_args(component, bucket));
        self.run_as("agent.key", &args)
    }

    fn create_bucket(&self, bucket: &str, lock: bool) {
        self.s3
            .block_on(self.s3.client().create_bucket().bucket(bucket).object_lock_enabled_for_bucket(lock).send())
            .unwrap();
    }

    fn versioning(&self, bucket: &str, status: BucketVersioningStatus) {
        let conf = VersioningConfiguration::builder().status(status).build();
        self.s3
            .block_on(self.s3.client().put_bucket_versioning().bucket(bucket).versioning_configuration(conf).send())
            .unwrap();
    }

    /// PUT; returns the version id.
    fn put(&self, bucket: &str, key: &str, body: &str) -> String {
        let out = self
            .s3
            .block_on(
                self.s3
                    .client()
                    .put_object()
                    .bucket(bucket)
                    .key(key)
                    .body(ByteStream::from(body.as_bytes().to_vec()))
                    .send(),
            )
            .unwrap();
        out.version_id().unwrap_or("null").to_owned()
    }

    fn delete(&self, bucket: &str, key: &str) {
        self.s3.block_on(self.s3.client().delete_object().bucket(bucket).key(key).send()).unwrap();
    }

    fn get(&self, bucket: &str, key: &str) -> String {
        let out = self.s3.block_on(self.s3.client().get_object().bucket(bucket).key(key).send()).unwrap();
        let bytes = self.s3.block_on(out.body.collect()).unwrap().into_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    fn keys(&self, bucket: &str) -> Vec<String> {
        let out = self.s3.block_on(self.s3.client().list_objects_v2().bucket(bucket).send()).unwrap();
        out.contents().iter().map(|o| o.key().unwrap().to_owned()).collect()
    }

    fn manifest(&self, component: &str, at: Timestamp) -> (Vec<Value>, Value, i32) {
        let r =
            self.run_as("agent.key", &["s3", "manifest", "--component", component, "--at", &at.to_string(), "--json"]);
        assert!(r.code == 0 || r.code == 6, "{}", r.stderr);
        let mut lines: Vec<Value> = r.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let summary = lines.pop().unwrap()["summary"].clone();
        (lines, summary, r.code)
    }
}

/// Sleeps into the next whole second and returns the end of the one just left
/// (S3's LastModified has whole seconds: a T there separates the phases exactly).
fn second_boundary() -> Timestamp {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let next = Duration::from_secs(now.as_secs() + 1);
    std::thread::sleep(next - now + Duration::from_millis(20));
    Timestamp::from_micros(next.as_micros() as i64 - 1)
}

/// key → (version id, body).
type Truth = BTreeMap<String, (String, String)>;

/// What a manifest says a restore does: key → version, and the keys it removes.
fn actions(lines: &[Value]) -> (BTreeMap<String, String>, Vec<String>, Vec<String>) {
    let mut restore = BTreeMap::new();
    let (mut remove, mut problems) = (Vec::new(), Vec::new());
    for l in lines {
        let key = l["key"].as_str().unwrap().to_owned();
        match l["action"].as_str().unwrap() {
            "restore" => {
                restore.insert(key, l["version_id"].as_str().unwrap().to_owned());
            }
            "remove" => remove.push(key),
            _ => problems.push(key),
        }
    }
    (restore, remove, problems)
}

#[test]
fn s3_lineage_end_to_end() {
    let Some(moto) = moto_bin() else {
        common::service_missing("moto_server not found (scripts/test.sh installs it into .venv)");
        return;
    };
    let w = World::new(&moto);
    w.create_bucket("uploads", false);
    w.versioning("uploads", BucketVersioningStatus::Enabled);
    let mut register = vec!["s3", "register"];
    register.extend(w.bucket_args("s3:uploads", "uploads"));
    let admin = admin_key(&w.cli);
    let r = w.run_as("agent.key", &[&register[..], &["--signer", &admin]].concat());
    assert_eq!(r.code, 0, "{}", r.stderr);

    // Ground truth: key → (version id, body) after each phase.
    let mut truth: Truth = BTreeMap::new();
    let mut snapshots: Vec<(Timestamp, Truth)> = Vec::new();
    second_boundary();
    for (k, b) in [("a", "a1"), ("b", "b1"), ("c", "c1")] {
        truth.insert(k.into(), (w.put("uploads", k, b), b.into()));
    }
    snapshots.push((second_boundary(), truth.clone()));
    truth.insert("a".into(), (w.put("uploads", "a", "a2"), "a2".into()));
    w.delete("uploads", "b");
    truth.remove("b");
    // Two PUTs of one key in one second: the listing orders them.
    second_boundary();
    w.put("uploads", "tie", "t1");
    truth.insert("tie".into(), (w.put("uploads", "tie", "t2"), "t2".into()));
    // A PUT and a DELETE in one second: IsLatest orders them.
    w.put("uploads", "gone", "g1");
    w.delete("uploads", "gone");
    snapshots.push((second_boundary(), truth.clone()));
    std::thread::sleep(Duration::from_millis(1200));
    let out = w.scan("s3:uploads", "uploads");
    assert!(out.contains("new"), "{out}");
    // A re-scan of an unchanged bucket records only the watermark.
    let again = w.scan("s3:uploads", "uploads");
    assert!(again.contains(" 0 new, 0 missing"), "{again}");
    truth.insert("d".into(), (w.put("uploads", "d", "d1"), "d1".into()));
    // A PUT and a DELETE in one second, then — before any scan — a later PUT:
    // neither of the first two is latest, their order is unknown. (Start on a
    // fresh second so that the pair cannot straddle two.)
    second_boundary();
    w.put("uploads", "amb", "m1");
    w.delete("uploads", "amb");
    let t_ambiguous = second_boundary();
    truth.insert("amb".into(), (w.put("uploads", "amb", "m3"), "m3".into()));
    w.delete("uploads", "a");
    truth.remove("a");
    snapshots.push((second_boundary(), truth.clone()));
    std::thread::sleep(Duration::from_millis(1200));
    w.scan("s3:uploads", "uploads");

    for (at, expected) in &snapshots {
        let (lines, summary, code) = w.manifest("s3:uploads", *at);
        let (restore, _remove, problems) = actions(&lines);
        let want: BTreeMap<String, String> = expected.iter().map(|(k, (v, _))| (k.clone(), v.clone())).collect();
        assert_eq!(restore, want, "manifest at {at}: {lines:?}");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!((code, summary["restorable"].as_bool()), (0, Some(true)), "{summary}");
    }
    let (lines, _, code) = w.manifest("s3:uploads", t_ambiguous);
    let (_, _, problems) = actions(&lines);
    assert_eq!((problems, code), (vec!["amb".to_owned()], 6), "the unordered same-second pair is ambiguous");
    let r = w.run_as("agent.key", &["recovery-points", "--component", "s3:uploads", "--at", &t_ambiguous.to_string()]);
    assert_eq!(r.code, 6);
    assert!(r.stdout.contains("amb") && r.stdout.contains("ambiguous"), "{}", r.stdout);

    // Restore the bucket as of the second snapshot into a new bucket, byte for byte.
    let (t2, at_t2) = snapshots[1].clone();
    w.create_bucket("restored", false);
    let mut restore = vec!["s3", "restore"];
    restore.extend(w.bucket_args("s3:uploads", "uploads"));
    let t2s = t2.to_string();
    restore.extend(["--at", t2s.as_str(), "--target-bucket", "restored", "--concurrency", "4"]);
    // A key whose role may not record the restore is refused before any copy (the agent key here).
    let wrong_args: Vec<&str> = restore.iter().map(|a| if *a == "restored" { "never-made" } else { a }).collect();
    let wrong = w.run_as("agent.key", &wrong_args);
    assert_eq!(wrong.code, 3, "{}{}", wrong.stdout, wrong.stderr);
    assert!(
        wrong.stderr.contains("may append restore.performed") || wrong.stderr.contains("none of which may append"),
        "{}",
        wrong.stderr
    );
    assert!(wrong.stderr.contains("nothing was done"), "{}", wrong.stderr);
    let buckets = w.s3.block_on(w.s3.client().list_buckets().send()).unwrap();
    assert!(!buckets.buckets().iter().any(|b| b.name() == Some("never-made")), "no bucket was created");
    let dry = w.run_as("operator.key", &[&restore[..], &["--dry-run"]].concat());
    assert!(dry.code == 0 && dry.stdout.contains("dry run"), "{}{}", dry.stdout, dry.stderr);
    assert!(w.keys("restored").is_empty(), "a dry run changes nothing");
    let r = w.run_as("operator.key", &restore);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let mut got: Vec<String> = w.keys("restored");
    got.sort();
    assert_eq!(got, at_t2.keys().cloned().collect::<Vec<_>>());
    for (k, (_, body)) in &at_t2 {
        assert_eq!(&w.get("restored", k), body, "{k}");
    }
    // A non-empty target is refused before anything changes, unless told what to do with what is there.
    w.delete("restored", "tie");
    let refused = w.run_as("operator.key", &restore);
    assert_ne!(refused.code, 0, "{}", refused.stdout);
    assert!(
        refused.stderr.contains("not empty") && refused.stderr.contains("--existing-objects"),
        "{}",
        refused.stderr
    );
    assert!(!w.keys("restored").contains(&"tie".to_owned()), "the refused restore changed nothing");
    // A re-run after an interruption (one object lost) redoes only that one.
    let rerun = [&restore[..], &["--existing-objects", "remove"]].concat();
    let r = w.run_as("operator.key", &rerun);
    assert!(r.stdout.contains("copied and verified 1,") && r.stdout.contains("failed 0"), "{}", r.stdout);
    assert_eq!(w.get("restored", "tie"), "t2");
    let log = w.ok(&["log", "--kind", "restore.performed", "--json"]);
    assert_eq!(log.lines().count(), 2, "{log}");

    // In place: the bucket itself back to T2 — old versions copied on top,
    // delete markers for keys created later; no version is ever deleted.
    let count_versions = || {
        let out = w.s3.block_on(w.s3.client().list_object_versions().bucket("uploads").send()).unwrap();
        out.versions().len() + out.delete_markers().len()
    };
    let before = count_versions();
    let mut in_place = vec!["s3", "restore"];
    in_place.extend(w.bucket_args("s3:uploads", "uploads"));
    in_place.extend(["--at", t2s.as_str(), "--in-place"]);
    let r = w.run_as("operator.key", &in_place);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let mut now: Vec<String> = w.keys("uploads");
    now.sort();
    assert_eq!(now, at_t2.keys().cloned().collect::<Vec<_>>(), "{}", r.stdout);
    for (k, (_, body)) in &at_t2 {
        assert_eq!(&w.get("uploads", k), body, "{k}");
    }
    assert!(count_versions() > before, "versions were added, none deleted");
    // The re-run as a library call through the server: it redoes nothing and records that.
    let request = tidemark_ops::s3_restore::S3RestoreRequest {
        bucket: tidemark_ops::s3_scan::BucketSpec {
            endpoint: Some(w.moto.url.clone()),
            bucket: Some("uploads".into()),
            path_style: true,
            credentials: tidemark_s3::Credentials::Static {
                access_key_id: "test".into(),
                secret_access_key: "test".into(),
            },
            ..tidemark_ops::s3_scan::BucketSpec::registered("s3:uploads")
        },
        at: t2,
        destination: tidemark_ops::s3_restore::Destination::InPlace,
        existing: tidemark_s3::Existing::Refuse,
        concurrency: 4,
        skip_problem_keys: false,
    };
    let mut api =
        tidemark_ops::Remote::new(tidemark_client::Client::new(&w.server.url, Some(w.token.clone())), None).unwrap();
    let operator = tidemark_store::read_secret_key_file(&w.cli.dir.path().join("operator.key")).unwrap();
    let mut progress = tidemark_ops::progress::Recording::default();
    let prepared = tidemark_ops::s3_restore::prepare(&api, &request, &mut progress).unwrap();
    let env = common::LibEnv::default();
    let done =
        tidemark_ops::s3_restore::restore(&mut api, &env, &operator, &request, &prepared, &mut progress).unwrap();
    assert_eq!((done.report.copied, done.report.removed, done.report.failed.len()), (0, 0, 0), "re-run: {done:?}");
    assert!(done.report.skipped as usize >= at_t2.len(), "every key already as at T2: {done:?}");
    assert_eq!(done.outcome, tidemark_core::event::Outcome::Succeeded);
    assert!(done.entry.is_some() && progress.phases.iter().any(|(p, t)| p == "restored keys" && t.is_some()));
    std::thread::sleep(Duration::from_millis(1100));
    w.scan("s3:uploads", "uploads");

    // A planned version deleted permanently after the last scan: the restore
    // (into a bucket it creates) counts that copy as failed, names the key,
    // exits non-zero and records `partial` with the exact figures.
    let (tie_version, _) = at_t2["tie"].clone();
    w.s3.block_on(w.s3.client().delete_object().bucket("uploads").key("tie").version_id(&tie_version).send()).unwrap();
    let mut failing = vec!["s3", "restore"];
    failing.extend(w.bucket_args("s3:uploads", "uploads"));
    failing.extend(["--at", t2s.as_str(), "--target-bucket", "restored-fail", "--concurrency", "1"]);
    let r = w.run_as("operator.key", &failing);
    assert_ne!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let others = at_t2.len() - 1;
    assert!(
        r.stdout.contains(&format!("copied and verified {others},")) && r.stdout.contains("failed 1 (tie)"),
        "{}{}",
        r.stdout,
        r.stderr
    );
    assert!(
        r.stderr.contains("failed: tie: CopyObject") && r.stderr.lines().filter(|l| l.contains("tie")).count() == 1,
        "{}",
        r.stderr
    );
    let log = w.ok(&["log", "--kind", "restore.performed", "--json"]);
    let last: Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    let body = &last["event"]["body"];
    assert_eq!(body["outcome"], "partial", "{last}");
    let detail = body["components"][0]["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("copied and verified {others},")) && detail.contains("failed 1 (tie)"),
        "{detail}"
    );
    std::thread::sleep(Duration::from_millis(1100));
    w.scan("s3:uploads", "uploads");

    // A recorded version deleted permanently: missing, and its key unrecoverable where it was current.
    let (c_version, _) = snapshots[0].1["c"].clone();
    w.s3.block_on(w.s3.client().delete_object().bucket("uploads").key("c").version_id(&c_version).send()).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let out = w.scan("s3:uploads", "uploads");
    assert!(out.contains("1 missing"), "{out}");
    let (lines, _, code) = w.manifest("s3:uploads", snapshots[0].0);
    assert_eq!((actions(&lines).2, code), (vec!["c".to_owned()], 6), "{lines:?}");
    let report = w.ok(&["recovery-points", "--component", "s3:uploads"]);
    assert!(report.contains("key \"c\"") || report.contains("key c"), "{report}");
}

#[test]
fn suspended_versioning_and_object_lock() {
    let Some(moto) = moto_bin() else {
        common::service_missing("moto_server not found (scripts/test.sh installs it into .venv)");
        return;
    };
    let w = World::new(&moto);
    // A component never registered cannot be scanned: nothing is recorded.
    w.create_bucket("susp", false);
    let r = w.try_scan("s3:susp", "susp");
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("register"), "{}", r.stderr);
    assert!(!w.ok(&["log", "--json"]).contains("s3:susp"), "nothing recorded about it");
    w.register("s3:susp", "susp");
    // A scan of another bucket than the registered one is refused before listing.
    w.create_bucket("other", false);
    let r = w.try_scan("s3:susp", "other");
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("is registered as bucket susp"), "{}", r.stderr);
    // Suspended versioning: a null version overwritten cannot be reconstructed in between.
    w.versioning("susp", BucketVersioningStatus::Enabled);
    second_boundary();
    w.put("susp", "kept", "v1");
    w.put("susp", "s", "s0");
    // Endpoint, bucket, region and path-style addressing default to the registration.
    let out = w.ok(&["s3", "scan", "--component", "s3:susp"]);
    assert!(out.contains("2 new"), "{out}");
    w.versioning("susp", BucketVersioningStatus::Suspended);
    second_boundary();
    assert_eq!(w.put("susp", "s", "s1"), "null");
    let between = second_boundary();
    std::thread::sleep(Duration::from_millis(1200));
    w.scan("s3:susp", "susp");
    // Overwriting under suspended versioning replaces the null version.
    w.put("susp", "s", "s2");
    second_boundary();
    std::thread::sleep(Duration::from_millis(1200));
    w.scan("s3:susp", "susp");
    // Created under suspended versioning and overwritten before any scan saw it:
    // before the overwrite it may have existed, so it is never called absent.
    w.put("susp", "fresh", "f1");
    let unseen = second_boundary();
    w.put("susp", "fresh", "f2");
    second_boundary();
    std::thread::sleep(Duration::from_millis(1200));
    w.scan("s3:susp", "susp");
    let r = w.run_as("agent.key", &["recovery-points", "--component", "s3:susp", "--at", &unseen.to_string()]);
    assert_eq!(r.code, 6, "{}", r.stdout);
    assert!(r.stdout.contains("\"fresh\"") && r.stdout.contains("no scan saw"), "{}", r.stdout);
    let answer = w.run_as("agent.key", &["recovery-points", "--component", "s3:susp", "--at", &between.to_string()]);
    assert_eq!(answer.code, 6, "{}", answer.stdout);
    assert!(
        answer.stdout.contains("overwritten") && answer.stdout.contains("suspended versioning"),
        "{}",
        answer.stdout
    );
    let (lines, _, code) = w.manifest("s3:susp", between);
    let (restore, _, problems) = actions(&lines);
    assert_eq!((problems, code), (vec!["fresh".to_owned(), "s".to_owned()], 6), "{lines:?}");
    assert!(restore.contains_key("kept"), "other keys are fine: {lines:?}");
    let report = w.ok(&["recovery-points", "--component", "s3:susp"]);
    assert!(report.contains("versioning suspended from"), "{report}");
    assert!(report.contains("overwritten") || report.contains("null_replaced"), "{report}");

    // Object Lock: the scan records each version's retention (HEAD).
    w.create_bucket("locked", true);
    w.register("s3:locked", "locked");
    let until = aws_sdk_s3::primitives::DateTime::from_secs(4_102_444_800); // 2100-01-01
    w.s3.block_on(
        w.s3.client()
            .put_object()
            .bucket("locked")
            .key("contract.pdf")
            .body(ByteStream::from(b"signed".to_vec()))
            // S3 requires Content-MD5 on a PUT with Object Lock settings.
            .content_md5({
                use base64::Engine as _;
                use md5::Digest as _;
                base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(b"signed"))
            })
            .object_lock_mode(ObjectLockMode::Governance)
            .object_lock_retain_until_date(until)
            .send(),
    )
    .unwrap();
    w.scan("s3:locked", "locked");
    let log = w.ok(&["log", "--kind", "s3.object_version", "--json"]);
    let locked: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["event"]["body"]["component"] == "s3:locked")
        .collect();
    assert_eq!(locked.len(), 1, "{log}");
    let body = &locked[0]["event"]["body"];
    assert_eq!(body["object_lock_mode"], "governance", "{body}");
    assert_eq!(body["object_lock_retain_until"], "2100-01-01T00:00:00.000000Z", "{body}");
}
