//! The product's promise end to end (DESIGN §1): an application writes an
//! object to S3 (moto_server) and then a row in PostgreSQL 15 that names
//! its key and blake3, continuously, while base backups, archive hooks,
//! scans and markers run. Then disaster. The test restores the latest
//! point and a correlated time with `tidemark restore` and proves every
//! restored row's object is in the restored bucket with its blake3; shows
//! the naive combination (PostgreSQL at the newest time, S3 from an
//! independently timed scan) is inconsistent on the same data; damages one
//! WAL segment and one S3 version and sees exactly the affected points
//! turn unrestorable with reasons naming them; drills (passing and
//! failing) and finds both in `recovery-points` and in a verified export.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
use common::moto::{CREDS, Moto, moto_bin};
use common::pg::{Postgres, archiving_world, pg_bin};
use common::{Cli, Run, Server, admin_key};
use serde_json::Value;
use tidemark_core::Digest32;
use tidemark_s3::S3;

struct World {
    cli: Cli,
    server: Server,
    token: String,
    base: tempfile::TempDir,
    bin: PathBuf,
    env: Vec<(&'static str, String)>,
    moto: Moto,
    s3: S3,
}

impl World {
    fn path(&self, name: &str) -> PathBuf {
        self.base.path().join(name)
    }

    fn run_as(&self, key: &str, args: &[&str]) -> Run {
        self.cli.run_remote(&self.server.url, &self.token, key, &CREDS, args)
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_as("agent.key", args)
    }

    fn ok_as(&self, key: &str, args: &[&str]) -> String {
        let r = self.run_as(key, args);
        assert_eq!(r.code, 0, "tidemark {args:?}: {}{}", r.stdout, r.stderr);
        r.stdout
    }

    fn ok(&self, args: &[&str]) -> String {
        self.ok_as("agent.key", args)
    }

    fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(args)).unwrap()
    }

    fn put(&self, bucket: &str, key: &str, body: &[u8]) -> String {
        let out = self
            .s3
            .block_on(
                self.s3.client().put_object().bucket(bucket).key(key).body(ByteStream::from(body.to_vec())).send(),
            )
            .unwrap();
        out.version_id().unwrap_or("null").to_owned()
    }

    fn get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let out = self.s3.block_on(self.s3.client().get_object().bucket(bucket).key(key).send()).ok()?;
        Some(self.s3.block_on(out.body.collect()).unwrap().into_bytes().to_vec())
    }

    fn mark(&self, group: &str, pg: &Postgres, extra: &[&str]) -> String {
        self.mark_json(group, pg, extra)["marker_id"].as_str().unwrap().to_owned()
    }

    /// `tidemark mark --json`: the marker and the evidence of each S3 cut.
    fn mark_json(&self, group: &str, pg: &Postgres, extra: &[&str]) -> Value {
        let dsn = pg.dsn();
        let mut args =
            vec!["mark", "--group", group, "--pg-dsn", &dsn, "--s3-path-style", "--clock-skew-ms", "300", "--json"];
        args.extend_from_slice(extra);
        let started = std::time::Instant::now();
        let mut v = self.json(&args);
        v["measured_ms"] = Value::from(started.elapsed().as_millis() as u64);
        v
    }

    /// The same marker as a library call (`tidemark_ops::mark::mark` over the
    /// server's typed API): what `mark --json` prints, without a subprocess.
    fn mark_lib(&self, group: &str, pg: &Postgres) -> Value {
        let request = tidemark_ops::mark::MarkRequest {
            group: group.to_owned(),
            id: None,
            pg_dsns: vec![(None, pg.dsn())],
            snapshot_files: vec![],
            snapshot_ids: vec![],
            s3_path_style: true,
            s3_credentials: tidemark_s3::Credentials::Static {
                access_key_id: "test".into(),
                secret_access_key: "test".into(),
            },
            clock_skew_ms: 300,
            quiesce: None,
            archive_timeout: Duration::from_secs(120),
        };
        let mut api =
            tidemark_ops::Remote::new(tidemark_client::Client::new(&self.server.url, Some(self.token.clone())), None)
                .unwrap();
        let key = tidemark_store::read_secret_key_file(&self.cli.dir.path().join("agent.key")).unwrap();
        let mut progress = tidemark_ops::progress::Recording::default();
        let started = std::time::Instant::now();
        let marked = tidemark_ops::mark::mark(&mut api, &common::LibEnv::default(), &key, &request, &mut progress)
            .unwrap_or_else(|e| panic!("mark {group}: {e}; {:?}", progress.notes));
        assert!(marked.entry.is_some() && marked.scans.len() == 1, "{marked:?}");
        let mut v = serde_json::to_value(&marked).unwrap();
        v["measured_ms"] = Value::from(started.elapsed().as_millis() as u64);
        v
    }

    fn scan(&self) -> String {
        self.ok(&[
            "s3",
            "scan",
            "--component",
            "s3:uploads",
            "--endpoint",
            &self.moto.url,
            "--bucket",
            "uploads",
            "--path-style",
            "--clock-skew-ms",
            "300",
        ])
    }

    fn watch(&self, pg: &Postgres) {
        self.ok(&["pg", "watch", "--cluster", "main", "--dsn", &pg.dsn(), "--count", "1"]);
    }

    /// `tidemark restore` of a plan file into a new data directory and suffixed buckets.
    fn restore(&self, plan: &Path, name: &str, suffix: &str) -> Postgres {
        let data = self.path(name);
        self.ok_as(
            "operator.key",
            &[
                "restore",
                "--plan",
                plan.to_str().unwrap(),
                "--pg-data",
                data.to_str().unwrap(),
                "--s3-target-bucket-suffix",
                suffix,
                "--s3-path-style",
                "--pg-run-as",
                "postgres",
                "--pg-bin",
                self.bin.to_str().unwrap(),
            ],
        );
        let pg = Postgres::at(&self.bin, &data, self.env.clone());
        pg.append_conf(&format!("port = {}\n", pg.port));
        pg.start();
        pg
    }

    /// Rows (key, blake3) of a database's `docs` table.
    fn rows(&self, pg: &Postgres) -> Vec<(String, String)> {
        pg.sql("SELECT key || ' ' || b3 FROM docs ORDER BY id")
            .lines()
            .map(|l| {
                let (k, b) = l.split_once(' ').unwrap();
                (k.to_owned(), b.to_owned())
            })
            .collect()
    }

    /// Rows whose object is missing from `bucket` or has other content.
    fn dangling(&self, rows: &[(String, String)], bucket: &str) -> Vec<String> {
        rows.iter()
            .filter(|(k, b3)| self.get(bucket, k).is_none_or(|body| Digest32::blake3_of(&body).to_string() != *b3))
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn plan(&self, group: &str, how: &[&str], out: &str) -> PathBuf {
        let path = self.path(out);
        let mut args = vec!["plan", "--group", group, "--out", path.to_str().unwrap()];
        args.extend_from_slice(how);
        self.ok(&args);
        path
    }
}

/// One operation of the application, timed on this machine's clock.
struct Op {
    key: String,
    overwrite: bool,
    /// Before the object's PUT was sent, and after its row's change committed.
    put_start: i64,
    commit_end: i64,
}

fn now_us() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64
}

fn micros(v: &Value) -> i64 {
    tidemark_core::Timestamp::parse_rfc3339(v.as_str().unwrap()).unwrap().as_micros()
}

/// Keys an overwrite left half done across a cut: its new object written,
/// its row not yet changed. A restore of the cut sees them exactly as a
/// crash at that moment would leave them; every other row must match.
fn in_flight(ops: &[Op], cut: &Value) -> Vec<String> {
    let (from, to) = (micros(&cut["probe_sent_at"]), micros(&cut["cut_returned_at"]));
    ops.iter().filter(|o| o.overwrite && o.put_start < to && o.commit_end > from).map(|o| o.key.clone()).collect()
}

fn point<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["markers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id)
        .unwrap_or_else(|| panic!("marker {id} in {report}"))
}

#[test]
fn an_application_restores_consistently_across_postgresql_and_s3() {
    let (Some(bin), Some(moto)) = (pg_bin(), moto_bin()) else {
        common::service_missing("PostgreSQL 15 or moto_server missing (scripts/test.sh installs moto into .venv)");
        return;
    };
    let cli = Cli::with_keys();
    let server = Server::start(&cli, "127.0.0.1:0", &[]);
    let token = cli.ok(&["token", "issue", "--key", "agent.key"]).trim().to_owned();
    let (base, env) = archiving_world(&cli, &server.url, &token, "tidemark-group-");
    let moto = Moto::start(&moto);
    let s3 = moto.client();
    let w = World { cli, server, token, base, bin, env, moto, s3 };
    let admin = admin_key(&w.cli);

    // The application's parts.
    let script =
        std::fs::canonicalize(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/pg-archive.sh")).unwrap();
    let conf = format!("archive_mode = on\narchive_command = '{} %p %f'\narchive_timeout = 1\n", script.display());
    let pg = Postgres::init(&w.bin, &w.path("primary"), &conf, w.env.clone());
    pg.start();
    w.s3.block_on(w.s3.client().create_bucket().bucket("uploads").send()).unwrap();
    let enabled = VersioningConfiguration::builder().status(BucketVersioningStatus::Enabled).build();
    w.s3.block_on(w.s3.client().put_bucket_versioning().bucket("uploads").versioning_configuration(enabled).send())
        .unwrap();
    pg.sql("CREATE TABLE docs (id int PRIMARY KEY, key text NOT NULL, b3 text NOT NULL)");

    // Topology: a group needs registered components; bad definitions are refused and change nothing.
    let r = w.run_as(
        "agent.key",
        &["group", "define", "app", "--component", "pg:main", "--component", "s3:uploads", "--signer", &admin],
    );
    assert_eq!(r.code, 3, "unregistered components: {}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("pg:main is not registered"), "{}", r.stderr);
    w.ok(&["pg", "register", "--cluster", "main", "--dsn", &pg.dsn(), "--signer", &admin]);
    w.ok(&[
        "s3",
        "register",
        "--component",
        "s3:uploads",
        "--endpoint",
        &w.moto.url,
        "--bucket",
        "uploads",
        "--path-style",
        "--signer",
        &admin,
    ]);
    w.ok(&[
        "snapshot",
        "register",
        "--component",
        "snap:defs",
        "--store",
        "rabbitmq",
        "--description",
        "definitions export",
        "--signer",
        &admin,
    ]);
    w.ok(&[
        "group",
        "define",
        "app",
        "--component",
        "pg:main",
        "--component",
        "s3:uploads",
        "--max-skew",
        "1s",
        "--signer",
        &admin,
    ]);
    w.ok(&[
        "group",
        "define",
        "appq",
        "--component",
        "pg:main",
        "--component",
        "s3:uploads",
        "--component",
        "snap:defs",
        "--max-skew",
        "1s",
        "--signer",
        &admin,
    ]);
    let draft = w.path("bad-marker.json");
    std::fs::write(&draft, r#"{"kind":"marker.point","body":{"group":"nope","marker_id":"x","taken_at":"2026-11-23T00:00:00.000000Z","components":[{"component":"s3:uploads","s3_watermark":"2026-11-23T00:00:00.000000Z"}]}}"#).unwrap();
    let agent = w.cli.path("agent.key");
    let r = w.run(&["append", draft.to_str().unwrap(), "--signer", agent.to_str().unwrap()]);
    assert_eq!(r.code, 3, "a marker of an undefined group: {}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("group nope is not defined"), "{}", r.stderr);

    let backup = w.path("base1");
    pg.base_backup(&backup);
    w.ok(&["pg", "record-backup", "--cluster", "main", "--dir", backup.to_str().unwrap()]);

    // The application: object first, then the row naming it; overwrites
    // (new object, then the row) and deletes (the row, then the object).
    let stop = AtomicBool::new(false);
    let pause = w.path("writers-paused");
    let ops = std::sync::Mutex::new(Vec::<Op>::new());
    let (marks, early_scan, mq) = std::thread::scope(|scope| {
        scope.spawn(|| {
            let (mut i, mut live) = (0u32, Vec::<String>::new());
            while !stop.load(Ordering::Relaxed) {
                if pause.exists() {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                i += 1;
                let body = format!("document {i} written at {:?}", std::time::SystemTime::now()).into_bytes();
                let b3 = Digest32::blake3_of(&body);
                let put_start = now_us();
                if i % 7 == 0 && live.len() > 4 {
                    let key = live.remove(live.len() / 2);
                    pg.sql(&format!("DELETE FROM docs WHERE key = '{key}'"));
                    w.s3.block_on(w.s3.client().delete_object().bucket("uploads").key(&key).send()).unwrap();
                } else if i % 4 == 0 && !live.is_empty() {
                    let key = live[(i as usize * 7) % live.len()].clone();
                    w.put("uploads", &key, &body);
                    pg.sql(&format!("UPDATE docs SET b3 = '{b3}' WHERE key = '{key}'"));
                    ops.lock().unwrap().push(Op { key, overwrite: true, put_start, commit_end: now_us() });
                } else {
                    let key = format!("doc/{i:05}");
                    w.put("uploads", &key, &body);
                    pg.sql(&format!("INSERT INTO docs VALUES ({i}, '{key}', '{b3}')"));
                    ops.lock().unwrap().push(Op {
                        key: key.clone(),
                        overwrite: false,
                        put_start,
                        commit_end: now_us(),
                    });
                    live.push(key);
                }
                std::thread::sleep(Duration::from_millis(30));
            }
        });
        std::thread::sleep(Duration::from_secs(2));
        let early_scan = w.scan();
        w.watch(&pg);
        std::thread::sleep(Duration::from_secs(1));
        let mut marks = vec![w.mark_json("app", &pg, &[])];
        std::thread::sleep(Duration::from_secs(1));
        w.watch(&pg);
        marks.push(w.mark_json("app", &pg, &[]));
        // Maintenance mode with a snapshot-only component; writers must come back even when stopping them fails.
        std::fs::write(w.path("defs.json"), br#"{"queues":["orders"]}"#).unwrap();
        let failed = w.run(&[
            "mark",
            "--group",
            "appq",
            "--pg-dsn",
            &pg.dsn(),
            "--s3-path-style",
            "--quiesced",
            "--exec-before",
            "false",
            "--exec-after",
            &format!("touch {}", w.path("resumed").display()),
            "--snapshot-file",
            &format!("snap:defs={}", w.path("defs.json").display()),
        ]);
        assert_ne!(failed.code, 0);
        assert!(w.path("resumed").exists(), "--exec-after ran after --exec-before failed: {}", failed.stderr);
        let mq = w.mark(
            "appq",
            &pg,
            &[
                "--quiesced",
                "--exec-before",
                &format!("touch {} && sleep 0.3", pause.display()),
                "--exec-after",
                &format!("rm {}", pause.display()),
                "--snapshot-file",
                &format!("snap:defs={}", w.path("defs.json").display()),
            ],
        );
        assert!(!pause.exists(), "writers resumed");
        // Markers while the application writes, every few hundred milliseconds
        // (TIDEMARK_GROUP_MARKS more than the default 6 for a longer measurement).
        let more: u64 = std::env::var("TIDEMARK_GROUP_MARKS").ok().and_then(|v| v.parse().ok()).unwrap_or(6);
        for i in 0..more {
            std::thread::sleep(Duration::from_millis(200 + 150 * (i % 6)));
            if i % 2 == 0 {
                w.watch(&pg);
            }
            // Every other marker through the library, the rest through the binary.
            marks.push(if i % 2 == 0 { w.mark_lib("app", &pg) } else { w.mark_json("app", &pg, &[]) });
        }
        std::thread::sleep(Duration::from_secs(1));
        w.watch(&pg);
        stop.store(true, Ordering::Relaxed);
        (marks, early_scan, mq)
    });
    let ops = ops.into_inner().unwrap();
    let ids: Vec<String> = marks.iter().map(|m| m["marker_id"].as_str().unwrap().to_owned()).collect();
    let (m1, m2, m3) = (ids[0].clone(), ids[1].clone(), ids[2].clone());
    let median_max = |mut v: Vec<i64>| {
        v.sort();
        (v[v.len() / 2], v[v.len() - 1])
    };
    let took = median_max(marks.iter().map(|m| m["measured_ms"].as_i64().unwrap()).collect());
    let spread = median_max(marks.iter().map(|m| m["s3_cuts"][0]["cut_spread_ms"].as_i64().unwrap()).collect());
    eprintln!(
        "{} marks during writes: each took {} ms median, {} ms max (the whole command); cut spread {} ms median, {} ms max",
        marks.len(),
        took.0,
        took.1,
        spread.0,
        spread.1
    );
    for m in &marks {
        let cut = &m["s3_cuts"][0];
        assert!(cut["cut_spread_ms"].as_i64().unwrap() < 1000, "each cut is taken right after S3's clock ticks: {m}");
        assert_eq!(cut["uploads_in_progress"], serde_json::json!([]));
    }
    // Idle: a position observed well after the last write, then everything archived and scanned; then disaster.
    std::thread::sleep(Duration::from_millis(2500));
    w.watch(&pg);
    std::thread::sleep(Duration::from_millis(100));
    let idle_at = tidemark_core::Timestamp::from_micros(now_us()).to_string();
    pg.switch_and_wait_archived();
    std::thread::sleep(Duration::from_millis(2500));
    w.scan();
    let all_rows = w.rows(&pg);
    assert!(all_rows.len() > 40, "the application wrote {} rows", all_rows.len());
    assert!(ops.iter().filter(|o| o.overwrite).count() > 10, "and overwrote objects");
    pg.sql("DROP TABLE docs");
    for (k, _) in all_rows.iter().step_by(3) {
        w.put("uploads", k, b"overwritten by the disaster");
    }
    for (k, _) in all_rows.iter().skip(1).step_by(3) {
        w.s3.block_on(w.s3.client().delete_object().bucket("uploads").key(k).send()).unwrap();
    }

    // Choose: every marker restorable with its class; windows; the quiesced group's point.
    let report = w.json(&["recovery-points", "--group", "app", "--json"]);
    for id in &ids {
        let p = point(&report, id);
        assert_eq!(p["restorable"], true, "every marker taken during writes is exact: {p}");
        assert_eq!(p["class"], "correlated");
    }
    assert!(!report["windows"].as_array().unwrap().is_empty(), "{report}");
    let q = w.json(&["recovery-points", "--group", "appq", "--json"]);
    let qp = point(&q, &mq);
    assert_eq!((qp["class"].as_str(), qp["restorable"].as_bool()), (Some("quiesced"), Some(true)), "{qp}");
    assert!(qp["writers_stopped"].is_array());
    assert!(q["windows"].as_array().unwrap().is_empty(), "a snapshot-only component allows markers only");
    let human = w.ok(&["recovery-points", "--group", "app"]);
    assert!(human.contains(&m1) && human.contains("correlated"), "{human}");

    // Latest point, restored and proven consistent.
    let latest = w.json(&["recovery-points", "--group", "app", "--latest", "--json"]);
    let how: Vec<String> = match latest["kind"].as_str() {
        Some("marker") => vec!["--point".into(), latest["point"]["id"].as_str().unwrap().into()],
        _ => vec!["--at".into(), latest["at"].as_str().unwrap().into()],
    };
    let how: Vec<&str> = how.iter().map(String::as_str).collect();
    // The same log and request give byte-identical plans. The source cluster still runs (its archiver may
    // record a segment between two plans, growing the log): plans at different tree sizes are compared again.
    let checkpoint = |p: &std::path::Path| -> Value {
        serde_json::from_slice::<Value>(&std::fs::read(p).unwrap()).unwrap()["computed_at_checkpoint"].clone()
    };
    let mut tries = 0;
    let plan1 = loop {
        let plan1 = w.plan("app", &how, "plan-latest.json");
        let again = w.plan("app", &how, "plan-latest-again.json");
        let (a, b) = (std::fs::read(&plan1).unwrap(), std::fs::read(&again).unwrap());
        if a == b {
            break plan1;
        }
        assert_ne!(checkpoint(&plan1), checkpoint(&again), "plans of one log differ");
        tries += 1;
        assert!(tries < 10, "the log kept growing between plans");
        std::fs::remove_file(&plan1).unwrap();
        std::fs::remove_file(&again).unwrap();
    };
    // An edited plan is refused before anything is touched.
    let edited = w.path("plan-edited.json");
    let text = std::fs::read_to_string(&plan1).unwrap();
    std::fs::write(&edited, text.replacen("\"doc/0000", "\"doc/9999", 1)).unwrap();
    let data = w.path("never");
    let r = w.run_as(
        "operator.key",
        &[
            "restore",
            "--plan",
            edited.to_str().unwrap(),
            "--pg-data",
            data.to_str().unwrap(),
            "--s3-target-bucket-suffix=-x",
        ],
    );
    assert_eq!(r.code, 4, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("was changed after it was computed") && !data.exists(), "{}", r.stderr);
    let latest_db = w.restore(&plan1, "restored-latest", "-latest");
    let latest_rows = w.rows(&latest_db);
    assert!(latest_rows.len() > 20, "{} rows", latest_rows.len());
    assert_eq!(
        w.dangling(&latest_rows, "uploads-latest"),
        Vec::<String>::new(),
        "every row's object restored with its blake3"
    );

    // Every marker taken while the application wrote, restored and checked row by row.
    for (n, m) in marks.iter().enumerate() {
        let id = m["marker_id"].as_str().unwrap();
        let plan = w.plan("app", &["--point", id], &format!("plan-{n}.json"));
        let db = w.restore(&plan, &format!("restored-{n}"), &format!("-m{n}"));
        let rows = w.rows(&db);
        let allowed = in_flight(&ops, &m["s3_cuts"][0]);
        let wrong = w.dangling(&rows, &format!("uploads-m{n}"));
        assert!(
            wrong.iter().all(|k| allowed.contains(k)),
            "marker {id}: rows {wrong:?} do not match their objects (only {allowed:?} were half done at the cut)"
        );
        eprintln!(
            "marker {id}: {} rows, {} half-done overwrites at the cut, {} rows differ",
            rows.len(),
            allowed.len(),
            wrong.len()
        );
        db.stop();
    }

    // A correlated time while the application wrote is not claimed: S3 gives whole seconds.
    let during = tidemark_core::Timestamp::from_micros(micros(&point(&report, &m2)["at"]) + 400_000).to_string();
    let r = w.run(&["recovery-points", "--group", "app", "--at", &during]);
    assert_eq!(r.code, 6, "{}{}", r.stdout, r.stderr);
    let said = format!("{}{}", r.stdout, r.stderr);
    assert!(said.contains("may have been written before or after it"), "{said}");
    // A correlated time after the writes stopped: one instant for both parts, every row matches.
    let said = w.ok(&["recovery-points", "--group", "app", "--at", &idle_at]);
    assert!(said.starts_with("restorable: app at"), "{said}");
    let plan2 = w.plan("app", &["--at", &idle_at], "plan-idle.json");
    let idle_db = w.restore(&plan2, "restored-idle", "-idle");
    let idle_rows = w.rows(&idle_db);
    assert_eq!(idle_rows, all_rows, "the application as it was when it went idle");
    assert_eq!(w.dangling(&idle_rows, "uploads-idle"), Vec::<String>::new());
    idle_db.stop();

    // The naive combination on the same data: the newest database with the bucket of an earlier, independent scan.
    let through = early_scan.split("complete through ").nth(1).unwrap().split(';').next().unwrap().to_owned();
    w.s3.block_on(w.s3.client().create_bucket().bucket("uploads-naive").send()).unwrap();
    w.ok_as(
        "operator.key",
        &[
            "s3",
            "restore",
            "--component",
            "s3:uploads",
            "--endpoint",
            &w.moto.url,
            "--bucket",
            "uploads",
            "--path-style",
            "--at",
            &through,
            "--target-bucket",
            "uploads-naive",
        ],
    );
    let naive = w.dangling(&latest_rows, "uploads-naive");
    assert!(!naive.is_empty(), "the naive restore leaves rows pointing at missing objects");
    eprintln!(
        "naive: {} of {} rows point at objects the independently timed scan never captured",
        naive.len(),
        latest_rows.len()
    );
    latest_db.stop();

    // Drills: one passing, one failing; both recorded, neither hidden.
    let psql = w.bin.join("psql");
    let check = format!(
        "test \"$({} -X -At -c 'SELECT count(*) FROM docs')\" -gt 0 && test -n \"$TIDEMARK_S3_BUCKET\"",
        psql.display()
    );
    let drill = |check: &str| {
        let bin = w.bin.to_str().unwrap();
        let args = [
            "drill",
            "--group",
            "app",
            "--point",
            &m1,
            "--check",
            check,
            "--s3-path-style",
            "--pg-run-as",
            "postgres",
            "--pg-bin",
            bin,
        ];
        w.run_as("operator.key", &args)
    };
    let passed = drill(&check);
    assert_eq!(passed.code, 0, "{}{}", passed.stdout, passed.stderr);
    let failed = drill("exit 3");
    assert_eq!(failed.code, 1, "a failed check fails the drill: {}{}", failed.stdout, failed.stderr);
    let buckets = w.s3.block_on(w.s3.client().list_buckets().send()).unwrap();
    let left: Vec<&str> = buckets.buckets().iter().filter_map(|b| b.name()).filter(|n| n.contains("-drill-")).collect();
    assert!(left.is_empty(), "drills remove their scratch buckets: {left:?}");
    let report = w.json(&["recovery-points", "--group", "app", "--json"]);
    let p1 = point(&report, &m1);
    assert_eq!((p1["record"]["drills"].as_u64(), p1["record"]["drills_passed"].as_u64()), (Some(2), Some(1)), "{p1}");
    assert_eq!(p1["record"]["last_drill"]["result"], "failed");
    assert_eq!(p1["record"]["restores"].as_u64(), Some(1), "its restore above is on its record: {p1}");

    // A picture, locally rendered by the server as HTML and as SVG.
    let svg = w.path("app.svg");
    w.ok(&["timeline", "--group", "app", "--out", svg.to_str().unwrap()]);
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(
        text.starts_with("<svg") && text.contains(&m1) && text.contains("drill of"),
        "{}",
        &text[..200.min(text.len())]
    );
    let html = w.path("app.html");
    w.ok(&["timeline", "--group", "app", "--out", html.to_str().unwrap(), "--html"]);
    assert!(std::fs::read_to_string(&html).unwrap().contains("<table>"));

    // Damage: one WAL segment between m1 and m2, one S3 version written between m2 and m3.
    let lsn_of = |id: &str| -> u64 {
        let part = point(&report, id)["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["component"] == "pg:main")
            .unwrap()
            .clone();
        assert!(part["base_backup"].is_string() && part["wal"].is_array(), "what it depends on: {part}");
        tidemark_core::Lsn::parse(part["lsn"].as_str().unwrap()).unwrap().0
    };
    let seg_of = |lsn: u64| lsn >> 20;
    let (s1, s2) = (seg_of(lsn_of(&m1)), seg_of(lsn_of(&m2)));
    assert!(s2 > s1 + 1, "segments between the markers: {s1} {s2}");
    let victim = format!("00000001{:08X}{:08X}", (s1 + 1) >> 12, (s1 + 1) & 0xfff);
    std::fs::remove_file(w.path("archive").join(&victim)).unwrap();
    let checked = w.run(&["pg", "check-archive", "--cluster", "main"]);
    assert_eq!(checked.code, 4, "{}{}", checked.stdout, checked.stderr);
    let m2_at = point(&report, &m2)["at"].as_str().unwrap().to_owned();
    let m3_at = point(&report, &m3)["at"].as_str().unwrap().to_owned();
    let (key_between, version_at_m3) = {
        // A key present at m3 and not at m2 (there it is a key "to remove"), and its version at m3.
        let restored = |at: &str| -> Vec<(String, String)> {
            w.ok(&["s3", "manifest", "--component", "s3:uploads", "--at", at])
                .lines()
                .filter(|l| l.starts_with("restore"))
                .map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    (f[1].to_owned(), f[2].to_owned())
                })
                .collect()
        };
        let before: Vec<String> = restored(&m2_at).into_iter().map(|(k, _)| k).collect();
        restored(&m3_at)
            .into_iter()
            .find(|(k, _)| !before.contains(k))
            .unwrap_or_else(|| panic!("no key between {m2_at} and {m3_at}"))
    };
    w.s3.block_on(w.s3.client().delete_object().bucket("uploads").key(&key_between).version_id(&version_at_m3).send())
        .unwrap();
    w.scan();
    let report = w.json(&["recovery-points", "--group", "app", "--json"]);
    assert_eq!(point(&report, &m1)["restorable"], true, "m1 needs neither");
    let p2 = point(&report, &m2).to_string();
    assert!(p2.contains("\"restorable\":false") && p2.contains(&victim), "m2 names the segment: {p2}");
    let p3 = point(&report, &m3).to_string();
    assert!(p3.contains(&victim) && p3.contains(&key_between), "m3 names both: {p3}");
    let r = w.run(&["plan", "--group", "app", "--point", &m2]);
    assert_eq!(r.code, 6, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains(&victim), "{}", r.stderr);

    // The drills are in an export an auditor verifies offline.
    let World { cli, server, .. } = w;
    server.stop();
    let out = cli.path("export");
    cli.ok(&["export", "--all", "--out", out.to_str().unwrap()]);
    let vkey = cli.ok(&["key", "show", "--ledger-key"]);
    let verdict = cli.ok(&["verify-export", out.to_str().unwrap(), "--ledger-key", vkey.trim()]);
    assert!(verdict.contains("\nVERIFIED"), "{verdict}");
    let mut drills = 0;
    for e in std::fs::read_dir(out.join("entries")).unwrap() {
        let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
        if text.contains("\"drill.completed\"") {
            drills += 1;
        }
    }
    assert_eq!(drills, 2);
}
