//! End to end against a real PostgreSQL 15: archive_command with the
//! documented script and `pg archive-hook`, base backups, positions and a
//! restore point, then restores driven only by `tidemark plan` and
//! `tidemark pg restore-wal` — to a time, an LSN and a restore point —
//! checked row by row; a deleted segment splitting the windows; a flipped
//! byte stopping recovery; a promotion to timeline 2.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::pg::{Postgres, archiving_world, copy_backup, give_to_postgres, pg_bin};
use common::{Cli, Run, Server, admin_key};
use serde_json::Value;
use tidemark_core::Timestamp;

struct World {
    cli: Cli,
    server: Server,
    token: String,
    base: tempfile::TempDir,
    bin: PathBuf,
    env: Vec<(&'static str, String)>,
}

/// One observation printed by `pg watch` / `pg restore-point`.
#[derive(Debug, Clone)]
struct Seen {
    lsn: String,
    at: Timestamp,
}

impl World {
    fn new(bin: PathBuf) -> World {
        let cli = Cli::with_keys();
        let server = Server::start(&cli, "127.0.0.1:0", &[]);
        let token = cli.ok(&["token", "issue", "--key", "agent.key"]).trim().to_owned();
        let (base, env) = archiving_world(&cli, &server.url, &token, "tidemark-pg-");
        World { cli, server, token, base, bin, env }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.base.path().join(name)
    }

    /// `tidemark` through the server, with the agent key and a read token.
    fn run(&self, args: &[&str]) -> Run {
        let out = self
            .cli
            .command()
            .env("TIDEMARK_LEDGER", &self.server.url)
            .env("TIDEMARK_TOKEN", &self.token)
            .env("TIDEMARK_SIGNER", self.cli.path("agent.key"))
            .args(args)
            .output()
            .unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn ok(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert_eq!(r.code, 0, "tidemark {args:?}: {}{}", r.stdout, r.stderr);
        r.stdout
    }

    fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(args)).unwrap()
    }

    fn watch(&self, pg: &Postgres) -> Seen {
        let r = self.run(&["pg", "watch", "--cluster", "main", "--dsn", &pg.dsn(), "--count", "1"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        // "tidemark: pg:main at 0/3000148 on timeline 1 (2026-11-23T…Z)"
        let line = r.stderr.lines().find(|l| l.contains(" at ") && l.contains("on timeline")).unwrap();
        let lsn = line.split(" at ").nth(1).unwrap().split_whitespace().next().unwrap().to_owned();
        let at = line.rsplit('(').next().unwrap().trim_end_matches(')');
        Seen { lsn, at: Timestamp::parse_rfc3339(at).unwrap() }
    }

    fn primary(&self) -> Postgres {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/pg-archive.sh");
        let script = std::fs::canonicalize(script).unwrap();
        let conf = format!("archive_mode = on\narchive_command = '{} %p %f'\narchive_timeout = 1\n", script.display());
        Postgres::init(&self.bin, &self.path("primary"), &conf, self.env.clone())
    }

    fn backup(&self, pg: &Postgres, name: &str) -> PathBuf {
        let dir = self.path(name);
        pg.base_backup(&dir);
        let r = self.run(&["pg", "record-backup", "--cluster", "main", "--dir", dir.to_str().unwrap()]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert!(r.stdout.contains("recorded base backup"), "{}", r.stdout);
        assert!(!r.stderr.contains("no archived backup history file"), "stop time from the .backup file: {}", r.stderr);
        dir
    }

    /// A new data directory from a plan: the base backup, the plan's
    /// settings in postgresql.auto.conf, recovery.signal. Nothing else.
    fn restore(&self, plan: &Value, name: &str, archive: bool) -> Postgres {
        let data = self.path(name);
        copy_backup(Path::new(plan["base_backup"]["location"].as_str().unwrap()), &data);
        let pg = Postgres::at(&self.bin, &data, self.env.clone());
        let mut conf = format!("port = {}\n", pg.port);
        for (k, v) in plan["recovery_settings"].as_object().unwrap() {
            conf += &format!("{k} = '{}'\n", v.as_str().unwrap().replace('\'', "''"));
        }
        if !archive {
            conf += "archive_mode = off\n";
        }
        pg.append_conf(&conf);
        std::fs::write(data.join("recovery.signal"), "").unwrap();
        give_to_postgres(&data.join("recovery.signal"));
        pg
    }

    fn plan(&self, args: &[&str]) -> Value {
        let mut all = vec!["plan", "--component", "pg:main"];
        all.extend_from_slice(args);
        self.json(&all)
    }
}

fn rows(pg: &Postgres) -> String {
    pg.sql("SELECT count(*) || ',' || coalesce(min(id), 0) || ',' || coalesce(max(id), 0) FROM t")
}

fn insert(pg: &Postgres, from: i32, to: i32) {
    pg.sql(&format!("INSERT INTO t SELECT g, 'row ' || g FROM generate_series({from}, {to}) g"));
}

fn restored_rows(w: &World, plan: &Value, name: &str) -> String {
    let pg = w.restore(plan, name, false);
    pg.start();
    pg.wait_promoted();
    let r = rows(&pg);
    pg.stop();
    r
}

#[test]
fn postgres_lineage_end_to_end() {
    let Some(bin) = pg_bin() else {
        common::service_missing("PostgreSQL 15 server binaries not found (set TIDEMARK_PG_BIN)");
        return;
    };
    let w = World::new(bin);
    let pg = w.primary();
    pg.start();
    let admin = admin_key(&w.cli);
    w.ok(&["pg", "register", "--cluster", "main", "--dsn", &pg.dsn(), "--signer", &admin]);

    pg.sql("CREATE TABLE t (id int PRIMARY KEY, note text)");
    insert(&pg, 1, 10);
    let b1 = w.backup(&pg, "b1");
    insert(&pg, 11, 20);
    let p1 = w.watch(&pg);
    insert(&pg, 21, 30);
    let rp = w.ok(&["pg", "restore-point", "--cluster", "main", "--dsn", &pg.dsn(), "before-31"]);
    assert!(rp.contains("before-31"), "{rp}");
    insert(&pg, 31, 40);
    let p2 = w.watch(&pg);
    insert(&pg, 41, 50);
    pg.switch_and_wait_archived();
    let p3 = w.watch(&pg);
    pg.switch_and_wait_archived();

    // `pg watch` without --count runs until SIGTERM and then stops cleanly.
    let child = w
        .cli
        .command()
        .env("TIDEMARK_LEDGER", &w.server.url)
        .env("TIDEMARK_SIGNER", w.cli.path("agent.key"))
        .args(["pg", "watch", "--cluster", "main", "--dsn", &pg.dsn(), "--interval-secs", "0.2"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1200));
    common::sigterm(child.id());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.contains("; stopped"), "{stderr}");

    // The hook recorded segments, the restore point and positions: windows exist.
    let report = w.json(&["recovery-points", "--component", "pg:main", "--json"]);
    assert_eq!(report["wal_segment_size_bytes"], 1 << 20, "{report}");
    assert_eq!(report["timelines"][0]["windows"].as_array().unwrap().len(), 1, "{report}");
    let human = w.ok(&["recovery-points", "--component", "pg:main"]);
    assert!(human.contains("timeline 1") && human.contains("restorable"), "{human}");

    // Restore to a time just after P1: exactly rows 1..20 (committed before it).
    let t = p1.at.saturating_add_micros(1).to_string();
    let answer = w.run(&["recovery-points", "--component", "pg:main", "--at", &t]);
    assert_eq!(answer.code, 0, "{}{}", answer.stdout, answer.stderr);
    let plan_t = w.plan(&["--at", &t]);
    assert_eq!(plan_t["target_lsn"].as_str().unwrap(), p1.lsn);
    assert_eq!(plan_t, w.plan(&["--at", &t]), "the same ledger and request give the same plan");
    assert_eq!(plan_t["base_backup"]["location"].as_str().unwrap(), b1.to_str().unwrap());
    assert_eq!(restored_rows(&w, &plan_t, "r-time"), "20,1,20");
    // To an LSN and to a restore point.
    assert_eq!(restored_rows(&w, &w.plan(&["--lsn", &p2.lsn]), "r-lsn"), "40,1,40");
    assert_eq!(restored_rows(&w, &w.plan(&["--restore-point", "before-31"]), "r-rp"), "30,1,30");

    // One flipped byte in a segment the restore needs: restore-wal refuses it and recovery stops.
    let seg = pg.sql(&format!("SELECT pg_walfile_name('{}')", p2.lsn));
    let seg_path = w.path("archive").join(&seg);
    let original = std::fs::read(&seg_path).unwrap();
    let mut flipped = original.clone();
    flipped[300_000] ^= 0x01;
    std::fs::write(&seg_path, &flipped).unwrap();
    let bad = w.restore(&w.plan(&["--lsn", &p2.lsn]), "r-flipped", false);
    // `pg_ctl start -w` may return while the server still replays (hot standby
    // accepts connections); recovery must then stop and the server exit.
    bad.try_start();
    assert!(bad.wait_exited(Duration::from_secs(60)), "recovery must not complete on bad WAL: {}", bad.log_text());
    let log = bad.log_text();
    assert!(log.contains("refusing corrupt WAL") && log.contains(&seg), "{log}");
    assert!(log.contains("recovery ended before configured recovery target was reached"), "{log}");
    bad.stop();
    std::fs::write(&seg_path, &original).unwrap();

    // A second backup, then one archived segment between the two deleted.
    let _b2 = w.backup(&pg, "b2");
    insert(&pg, 51, 60);
    let p4 = w.watch(&pg);
    pg.switch_and_wait_archived();
    std::fs::rename(&seg_path, w.path("saved-segment")).unwrap();
    let check = w.run(&["pg", "check-archive", "--cluster", "main"]);
    assert_eq!(check.code, 4, "{}{}", check.stdout, check.stderr);
    assert!(check.stdout.contains(&seg) && check.stdout.contains("missing"), "{}", check.stdout);
    let report = w.json(&["recovery-points", "--component", "pg:main", "--json"]);
    let windows = report["timelines"][0]["windows"].as_array().unwrap();
    assert_eq!(windows.len(), 2, "the missing segment splits the window: {report}");
    assert!(windows[0]["gap_after"].as_array().unwrap().iter().any(|s| s == seg.as_str()), "{report}");
    let refused = w.run(&["recovery-points", "--component", "pg:main", "--lsn", &p2.lsn]);
    assert_eq!(refused.code, 6, "{}", refused.stdout);
    assert!(refused.stdout.contains(&seg), "{}", refused.stdout);
    let refused = w.run(&["plan", "--component", "pg:main", "--at", &p3.at.to_string()]);
    assert_eq!(refused.code, 6, "{}", refused.stderr);
    assert!(refused.stderr.contains(&seg), "{}", refused.stderr);
    assert_eq!(w.run(&["recovery-points", "--component", "pg:main", "--lsn", &p4.lsn]).code, 0, "after b2 is fine");
    std::fs::rename(w.path("saved-segment"), &seg_path).unwrap();
    assert_eq!(w.run(&["pg", "check-archive", "--cluster", "main"]).code, 0, "re-verified: the hole is closed");
    assert_eq!(w.run(&["recovery-points", "--component", "pg:main", "--lsn", &p2.lsn]).code, 0);

    // Promote a restored server: it archives timeline 2 and both timelines have windows.
    let promoted = w.restore(&w.plan(&["--lsn", &p2.lsn]), "r-promoted", true);
    promoted.start();
    promoted.wait_promoted();
    assert_eq!(promoted.sql("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)"), "00000002");
    insert(&promoted, 1001, 1010);
    promoted.switch_and_wait_archived();
    let q = w.watch(&promoted);
    promoted.switch_and_wait_archived();
    let report = w.json(&["recovery-points", "--component", "pg:main", "--json"]);
    let timelines: Vec<u64> =
        report["timelines"].as_array().unwrap().iter().map(|t| t["timeline"].as_u64().unwrap()).collect();
    assert_eq!(timelines, vec![1, 2], "{report}");
    for tl in report["timelines"].as_array().unwrap() {
        assert!(!tl["windows"].as_array().unwrap().is_empty(), "windows on timeline {}: {report}", tl["timeline"]);
    }
    let plan2 = w.plan(&["--lsn", &q.lsn, "--timeline", "2"]);
    let segs: Vec<&str> = plan2["wal_segments"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    assert!(segs.first().unwrap().starts_with("00000001") && segs.last().unwrap().starts_with("00000002"), "{segs:?}");
    assert_eq!(restored_rows(&w, &plan2, "r-tl2"), "50,1,1010");
    promoted.stop();
    pg.stop();
    let log = w.server.log.clone();
    drop(w);
    let _ = log;
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(program)).find(|p| p.exists())
}

/// Runs pgBackRest as the postgres user; returns stdout and the wall time.
fn pgbackrest(bin: &Path, conf: &Path, args: &[&str]) -> (String, f64) {
    let mut c = common::pg::as_postgres(bin, &[]);
    c.arg(format!("--config={}", conf.display())).args(args);
    let started = std::time::Instant::now();
    let out = c.output().unwrap();
    let secs = started.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "pgbackrest {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (String::from_utf8_lossy(&out.stdout).into_owned(), secs)
}

/// pgBackRest archives the same cluster: its catalog imports into tidemark
/// (idempotently), and both tools answer "what is restorable, is any WAL
/// missing" for the same archive; their times are printed side by side.
#[test]
fn pgbackrest_catalog_imports_and_both_tools_answer_the_same_questions() {
    let (Some(bin), Some(pgbr)) = (pg_bin(), which("pgbackrest")) else {
        common::service_missing("PostgreSQL 15 or pgbackrest not found (scripts/test.sh installs pgbackrest)");
        return;
    };
    let w = World::new(bin);
    let conf = w.path("pgbackrest.conf");
    let data = w.path("primary");
    std::fs::write(
        &conf,
        format!(
            "[global]\nrepo1-path={}\nlog-path={}\nlock-path={}\nlog-level-console=warn\nlog-level-file=off\nstart-fast=y\ncompress-type=none\n\n[main]\npg1-path={}\npg1-socket-path={}\npg1-user=postgres\n",
            w.path("pgbr-repo").display(),
            w.path("pgbr-log").display(),
            w.path("pgbr-lock").display(),
            data.display(),
            w.base.path().display()
        ),
    )
    .unwrap();
    give_to_postgres(&conf);
    let script =
        std::fs::canonicalize(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/pg-archive.sh")).unwrap();
    let archive = format!(
        "archive_mode = on\narchive_command = '{} %p %f && {} --config={} --stanza=main archive-push %p'\narchive_timeout = 1\n",
        script.display(),
        pgbr.display(),
        conf.display()
    );
    let pg = Postgres::init(&w.bin, &data, &archive, w.env.clone());
    // pgBackRest finds the server through pg1-port too.
    std::fs::write(&conf, std::fs::read_to_string(&conf).unwrap() + &format!("pg1-port={}\n", pg.port)).unwrap();
    pg.start();
    w.ok(&["pg", "register", "--cluster", "main", "--dsn", &pg.dsn(), "--signer", &admin_key(&w.cli)]);
    pgbackrest(&pgbr, &conf, &["--stanza=main", "stanza-create"]);
    pg.sql("CREATE TABLE t (id int PRIMARY KEY, note text)");
    insert(&pg, 1, 1000);
    pgbackrest(&pgbr, &conf, &["--stanza=main", "--type=full", "backup"]);
    // A tar-format pg_basebackup is read too (backup_label from base.tar).
    let tar_dir = w.path("b-tar");
    let mut c = common::pg::as_postgres(&w.bin.join("pg_basebackup"), &[]);
    c.arg("-D").arg(&tar_dir).args(["-h", "127.0.0.1", "-U", "postgres", "-Ft", "-X", "stream", "-c", "fast"]);
    c.arg("-p").arg(pg.port.to_string());
    assert!(c.status().unwrap().success());
    let r = w.run(&["pg", "record-backup", "--cluster", "main", "--dir", tar_dir.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let tar_id = r.stdout.split_whitespace().nth(3).unwrap().to_owned();
    // More WAL for a side-by-side measurement: TIDEMARK_SIDE_BY_SIDE_SEGMENTS=200.
    let switches: i32 = std::env::var("TIDEMARK_SIDE_BY_SIDE_SEGMENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    for k in 0..switches {
        insert(&pg, 1001 + k * 100, 1100 + k * 100);
        pg.switch_and_wait_archived();
    }
    w.watch(&pg);
    let last = pg.switch_and_wait_archived();

    let (info, info_secs) = pgbackrest(&pgbr, &conf, &["--stanza=main", "--output=json", "info"]);
    let info_path = w.path("info.json");
    std::fs::write(&info_path, &info).unwrap();
    for attempt in ["first import", "re-import (duplicates)"] {
        let args = ["pg", "import-pgbackrest", "--cluster", "main", "--stanza", "main", "--info-json"];
        let out = w.ok(&[&args[..], &[info_path.to_str().unwrap()]].concat());
        assert!(out.contains("imported 1 backups"), "{attempt}: {out}");
    }
    let label = serde_json::from_str::<Value>(&info).unwrap()[0]["backup"][0]["label"].as_str().unwrap().to_owned();
    let archive_max =
        serde_json::from_str::<Value>(&info).unwrap()[0]["archive"][0]["max"].as_str().unwrap().to_owned();

    // The same questions: what is restorable, and is any WAL missing.
    let started = std::time::Instant::now();
    let report = w.json(&["recovery-points", "--component", "pg:main", "--json"]);
    let report_secs = started.elapsed().as_secs_f64();
    let backups: Vec<&str> =
        report["base_backups"].as_array().unwrap().iter().map(|b| b["backup_id"].as_str().unwrap()).collect();
    assert_eq!(backups.len(), 2, "{report}");
    assert!(backups.contains(&label.as_str()) && backups.contains(&tar_id.as_str()), "{backups:?} {label} {tar_id}");
    let tools: Vec<&str> =
        report["base_backups"].as_array().unwrap().iter().map(|b| b["tool"].as_str().unwrap()).collect();
    assert!(tools.contains(&"pgbackrest full") && tools.contains(&"pg_basebackup -Ft"), "{tools:?}");
    let window = &report["timelines"][0]["windows"][0];
    let to_segment = tidemark_lineage::pg::segment_of(
        tidemark_core::Lsn::parse(window["to_lsn"].as_str().unwrap()).unwrap(),
        1 << 20,
    );
    let max_segment = tidemark_lineage::pg::parse_segment_name(&archive_max, 1 << 20).unwrap().1;
    assert!(
        to_segment >= max_segment && archive_max.as_str() >= last.as_str(),
        "{report} vs archive max {archive_max}"
    );
    let (_, verify_secs) = pgbackrest(&pgbr, &conf, &["--stanza=main", "verify"]);
    let started = std::time::Instant::now();
    let check = w.run(&["pg", "check-archive", "--cluster", "main"]);
    let check_secs = started.elapsed().as_secs_f64();
    assert_eq!(check.code, 0, "{}", check.stdout);
    let segments = report["segments_recorded"].as_u64().unwrap();
    let line = format!(
        "{{\"segments\": {segments}, \"pgbackrest_info_s\": {info_secs:.4}, \"tidemark_recovery_points_s\": {report_secs:.4}, \"pgbackrest_verify_s\": {verify_secs:.4}, \"tidemark_check_archive_s\": {check_secs:.4}}}"
    );
    eprintln!("SIDE-BY-SIDE {line}");
    std::fs::write(Path::new(env!("CARGO_TARGET_TMPDIR")).join("pg-vs-pgbackrest.json"), line).unwrap();
    pg.stop();
}

/// PostgreSQL retries a failing archive_command forever: with a spool, an
/// unreachable ledger must not fail the hook, and the next hook (or a flush)
/// delivers the spooled event first.
#[test]
fn the_archive_hook_spools_while_the_ledger_is_down() {
    let cli = Cli::with_keys();
    let archive = cli.path("archive");
    std::fs::create_dir(&archive).unwrap();
    let segment = |name: &str, byte: u8| {
        let p = archive.join(name);
        std::fs::write(&p, vec![byte; 1 << 20]).unwrap();
        p
    };
    let port = common::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let spool = cli.path("spool");
    let hook = |path: &Path| {
        cli.run(&[
            "pg",
            "archive-hook",
            "--cluster",
            "main",
            "--ledger",
            &url,
            "--spool",
            spool.to_str().unwrap(),
            "--signer",
            "agent.key",
            "--location",
            path.to_str().unwrap(),
        ])
    };
    let first = segment("000000010000000000000002", 1);
    let r = hook(&first);
    assert_eq!(r.code, 0, "an unreachable ledger must not fail archiving: {}", r.stderr);
    assert!(r.stderr.contains("spooled 1 events"), "{}", r.stderr);
    assert_eq!(hook(&first).code, 0, "a retry spools again, harmlessly");
    let server = Server::start(&cli, &format!("127.0.0.1:{port}"), &[]);
    let second = segment("000000010000000000000003", 2);
    let r = hook(&second);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("delivered 2 spooled events first"), "{}", r.stderr);
    let token = cli.ok(&["token", "issue", "--key", "agent.key"]).trim().to_owned();
    let report = cli.ok(&["recovery-points", "--component", "pg:main", "--json", "--ledger", &url, "--token", &token]);
    let report: Value = serde_json::from_str(&report).unwrap();
    assert_eq!(report["segments_recorded"], 2, "the retried event was recorded once: {report}");
    // A file that is not PostgreSQL's is refused with a clear message.
    let r = hook(&segment("postgresql.conf", 0));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("not a file PostgreSQL archives"), "{}", r.stderr);
    server.stop();
}
