//! `tidemark agent` end to end: real PostgreSQL 15 archiving through the
//! hook, moto, `tidemark serve`, and a `tidemark.toml`. The file is checked
//! against the ledger (and a wrong one named line by line), every job runs
//! once, then every job runs on a short schedule until SIGTERM, which it
//! answers by finishing its runs and exiting 0.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
use common::moto::{CREDS, Moto, moto_bin};
use common::pg::{Postgres, archiving_world, pg_bin};
use common::{Cli, Server, admin_key};
use serde_json::Value;

/// Restore tests into scratch under `scratch`, run as postgres, with a check and a target.
fn restore_test(bin: &Path, scratch: &Path) -> String {
    format!(
        r#"
[restore_test]
pick = "latest"
window = "1d"
checks = ["test -n \"$TIDEMARK_PG_DSN\" && test -n \"$TIDEMARK_S3_BUCKET\""]
target = "5m"
scratch = "{}"
pg_bin = "{}"
run_as = "postgres"
recovery_timeout = "2m"
"#,
        scratch.display(),
        bin.display()
    )
}

fn config(server: &str, token: &str, key: &Path, dsn: &str, moto: &str, bucket: &str, schedule: &str) -> String {
    format!(
        r#"# written by the agent test
[ledger]
url = "{server}"
token = "{token}"

[keys]
agent = "{key}"
operator = "{operator}"

[group]
name = "app"
max_skew = "1s"

[[postgresql]]
component = "pg:main"
dsn = "{dsn}"

[[s3]]
component = "s3:uploads"
endpoint = "{moto}"
bucket = "{bucket}"
path_style = true
access_key_id_env = "AWS_ACCESS_KEY_ID"
secret_access_key_env = "AWS_SECRET_ACCESS_KEY"

[schedule]
{schedule}
"#,
        key = key.display(),
        operator = key.with_file_name("operator.key").display()
    )
}

#[test]
fn the_agent_checks_its_file_and_runs_every_job_until_sigterm() {
    let (Some(bin), Some(moto_bin)) = (pg_bin(), moto_bin()) else {
        common::service_missing("PostgreSQL 15 or moto_server missing (scripts/test.sh installs moto into .venv)");
        return;
    };
    let cli = Cli::with_keys();
    let server = Server::start(&cli, "127.0.0.1:0", &[]);
    let token = cli.ok(&["token", "issue", "--key", "agent.key"]).trim().to_owned();
    let (base, env) = archiving_world(&cli, &server.url, &token, "tidemark-agent-");
    let moto = Moto::start(&moto_bin);
    let s3 = moto.client();
    let run = |args: &[&str]| cli.run_remote(&server.url, &token, "agent.key", &CREDS, args);
    let ok = |args: &[&str]| {
        let r = run(args);
        assert_eq!(r.code, 0, "tidemark {args:?}: {}{}", r.stdout, r.stderr);
        r.stdout
    };
    let admin = admin_key(&cli);
    let script =
        std::fs::canonicalize(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/pg-archive.sh")).unwrap();
    let conf = format!("archive_mode = on\narchive_command = '{} %p %f'\narchive_timeout = 1\n", script.display());
    let pg = Postgres::init(&bin, &base.path().join("primary"), &conf, env.clone());
    pg.start();
    pg.sql("CREATE TABLE t (id int)");
    s3.block_on(s3.client().create_bucket().bucket("uploads").send()).unwrap();
    let enabled = VersioningConfiguration::builder().status(BucketVersioningStatus::Enabled).build();
    s3.block_on(s3.client().put_bucket_versioning().bucket("uploads").versioning_configuration(enabled).send())
        .unwrap();
    s3.block_on(s3.client().put_object().bucket("uploads").key("a").body(ByteStream::from_static(b"a")).send())
        .unwrap();
    ok(&["pg", "register", "--cluster", "main", "--dsn", &pg.dsn(), "--signer", &admin]);
    ok(&[
        "s3",
        "register",
        "--component",
        "s3:uploads",
        "--endpoint",
        &moto.url,
        "--bucket",
        "uploads",
        "--path-style",
        "--signer",
        &admin,
    ]);
    ok(&[
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
    // A base backup, so markers have something to restore from.
    let backup = base.path().join("base");
    let status = std::process::Command::new(bin.join("pg_basebackup"))
        .args(["-d", &pg.dsn(), "-D", backup.to_str().unwrap(), "-X", "none", "-c", "fast"])
        .status()
        .unwrap();
    assert!(status.success());
    ok(&["pg", "record-backup", "--cluster", "main", "--dir", backup.to_str().unwrap()]);

    let key = cli.path("agent.key");
    let file = base.path().join("tidemark.toml");
    let write = |bucket: &str, schedule: &str| {
        std::fs::write(&file, config(&server.url, &token, &key, &pg.dsn(), &moto.url, bucket, schedule)).unwrap()
    };
    let file_arg = file.to_str().unwrap().to_owned();

    // The file against the ledger: right, then wrong in two places, each named with its line.
    write("uploads", "positions = \"1s\"");
    let out = ok(&["agent", "check", "--config", &file_arg]);
    assert!(out.contains(": ok (group app)"), "{out}");
    write("other", "positions = \"1s\"\nscans = \"0s\"");
    let r = run(&["agent", "check", "--config", &file_arg, "--json"]);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    let report: Value = serde_json::from_str(&r.stdout).unwrap();
    let problems = report["problems"].as_array().unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p["line"] == 21 && p["message"].as_str().unwrap().contains("registered as bucket uploads")),
        "{report}"
    );
    assert!(problems.iter().any(|p| p["line"] == 28 && p["message"] == "must be positive"), "{report}");
    std::fs::write(&file, std::fs::read_to_string(&file).unwrap().replace("[group]", "[group]\nnmae = \"x\"")).unwrap();
    let r = run(&["agent", "check", "--config", &file_arg]);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("line 11") && r.stderr.contains("nmae"),
        "an unknown field is refused with its line: {}",
        r.stderr
    );

    // Every job once.
    let scratch = base.path().join("scratch");
    let tests = restore_test(&bin, &scratch);
    let schedule = format!(
        "positions = \"1s\"\nscans = \"2s\"\nmarks = \"3s\"\narchive_checks = \"5s\"\nrestore_tests = \"30s\"\n{tests}"
    );
    write("uploads", &schedule);
    for job in ["positions", "scans", "marks", "archive_checks"] {
        let out = ok(&["agent", "run-once", job, "--config", &file_arg, "--json"]);
        let ran: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(ran["job"], job, "{ran}");
        assert!(!ran["done"].as_array().unwrap().is_empty(), "{ran}");
    }
    let markers = |/* as the ledger has them */| -> usize {
        let report: Value = serde_json::from_str(&ok(&["recovery-points", "--group", "app", "--json"])).unwrap();
        report["markers"].as_array().unwrap().len()
    };
    assert_eq!(markers(), 1);
    // A restore test of that marker: restored, checked, removed, recorded with how it was picked.
    let out = ok(&["agent", "run-once", "restore_tests", "--config", &file_arg, "--json"]);
    let ran: Value = serde_json::from_str(&out).unwrap();
    assert!(ran["done"][0].as_str().unwrap().contains("passed"), "{ran}");
    let selected = ok(&["log", "--kind", "restore_test.selected", "--json"]);
    let selected: Value = serde_json::from_str(selected.lines().last().unwrap()).unwrap();
    let body = &selected["event"]["body"];
    assert_eq!((body["pick"].as_str(), body["candidates"].as_u64()), (Some("latest"), Some(1)), "{selected}");
    let drill = ok(&["log", "--kind", "drill.completed", "--json"]);
    let drill: Value = serde_json::from_str(drill.lines().last().unwrap()).unwrap();
    assert_eq!(drill["seq"], selected["seq"].as_u64().unwrap() + 1, "one batch: the selection, then the drill");
    let checks = drill["event"]["body"]["checks"].as_array().unwrap();
    assert_eq!(drill["event"]["body"]["result"], "passed", "{drill}");
    assert!(checks.iter().any(|c| c["command"].as_str().unwrap().contains("within the target of 300 s")), "{drill}");
    let leftovers = |what: &str| -> Vec<String> {
        let buckets = s3.block_on(s3.client().list_buckets().send()).unwrap();
        let mut left: Vec<String> = buckets
            .buckets()
            .iter()
            .filter_map(|b| b.name())
            .filter(|n| n.contains("-drill-"))
            .map(str::to_owned)
            .collect();
        if let Ok(dir) = std::fs::read_dir(&scratch) {
            left.extend(dir.flatten().map(|e| e.path().display().to_string()));
        }
        let pgs = std::process::Command::new("pgrep").args(["-f", scratch.to_str().unwrap()]).output().unwrap();
        left.extend(String::from_utf8_lossy(&pgs.stdout).lines().map(|l| format!("process {l}")));
        eprintln!("{what}: {left:?}");
        left
    };
    assert_eq!(leftovers("after a restore test"), Vec::<String>::new(), "no scratch directory, bucket or server left");

    // Every job on its schedule, side by side, until SIGTERM.
    let mut c = cli.command();
    c.env("TIDEMARK_LEDGER", &server.url).env("TIDEMARK_TOKEN", &token);
    for (k, v) in CREDS {
        c.env(k, v);
    }
    let child = c
        .args(["agent", "--config", &file_arg, "--json", "--metrics-file"])
        .arg(base.path().join("agent.prom"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(8));
    let kill = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "SIGTERM ends the agent cleanly: {stderr}");
    assert!(started.elapsed() < Duration::from_secs(30), "it stopped promptly");
    let lines: Vec<Value> =
        stderr.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    for job in ["positions", "scans", "marks", "archive_checks"] {
        let ok_runs = lines.iter().filter(|l| l["job"] == job && l["event"] == "ok").count();
        assert!(ok_runs >= 1, "{job} ran: {stderr}");
        assert!(lines.iter().any(|l| l["job"] == job && l["event"] == "stopped"), "{job} stopped: {stderr}");
        assert!(lines.iter().any(|l| l["job"] == job && l["event"] == "summary"), "{job} summary: {stderr}");
    }
    let positions = lines.iter().filter(|l| l["job"] == "positions" && l["event"] == "ok").count();
    assert!(positions >= 4, "positions every second for 8 s: {positions}: {stderr}");
    assert!(!lines.iter().any(|l| l["event"] == "gave_up"), "{stderr}");
    assert!(markers() >= 2, "the scheduled marks are in the ledger");
    // The agent's own job metrics, in a file node_exporter's textfile collector reads.
    let prom = std::fs::read_to_string(base.path().join("agent.prom")).unwrap();
    let runs = prom
        .lines()
        .find_map(|l| l.strip_prefix("tidemark_agent_job_runs_total{job=\"positions\"} "))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("positions runs in:\n{prom}"));
    assert!(runs >= positions as f64, "{prom}");
    assert!(prom.contains("tidemark_agent_job_last_success_timestamp_seconds{job=\"restore_tests\"}"), "{prom}");
    assert!(
        lines.iter().any(|l| l["job"] == "restore_tests" && l["event"] == "ok"),
        "the scheduled restore test ran and finished: {stderr}"
    );
    assert_eq!(
        leftovers("after SIGTERM during a restore test"),
        Vec::<String>::new(),
        "SIGTERM let the test finish and clean up"
    );
    let v: Value = serde_json::from_str(&ok(&["verify", "--json"])).unwrap();
    assert!(v["failure"].is_null(), "{v}");

    // The recovery metrics, from the ledger's projections.
    let scrape = || -> String {
        let mut r = ureq::get(&format!("{}/metrics", server.url))
            .header("authorization", &format!("Bearer {token}"))
            .call()
            .unwrap();
        r.body_mut().read_to_string().unwrap()
    };
    let read = |text: &str, line: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(line).map(|v| v.trim().parse::<f64>().unwrap()))
            .unwrap_or_else(|| panic!("{line} in:\n{text}"))
    };
    let text = scrape();
    let metric = |line: &str| read(&text, line);
    assert_eq!(metric("tidemark_group_last_restore_test_passed{group=\"app\"}"), 1.0);
    assert!(metric("tidemark_group_last_restore_test_duration_seconds{group=\"app\"}") > 0.0);
    assert!(metric("tidemark_group_restore_tests{group=\"app\",result=\"passed\"}") >= 2.0);
    let rpo = metric("tidemark_group_rpo_seconds{group=\"app\"}");
    assert!(rpo < 30.0, "the newest restorable point is seconds old after marks every 3 s: {rpo}");
    assert!(metric("tidemark_group_markers{group=\"app\"}") >= 2.0);
    assert!(metric("tidemark_pg_segments_recorded{component=\"pg:main\"}") >= 1.0);
    assert_eq!(metric("tidemark_pg_unsound_segments{component=\"pg:main\"}"), 0.0);
    assert!(metric("tidemark_s3_watermark_lag_seconds{component=\"s3:uploads\"}") < 30.0);

    // The shipped alert rules, fed this server's own series (held for 20 minutes,
    // WAL still arriving): a healthy application raises none of them.
    let Some(promtool) = common::promtool() else {
        common::service_missing("promtool missing (Debian package prometheus; scripts/test.sh installs it)");
        return;
    };
    let rules = std::fs::canonicalize(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/alerts.yml")).unwrap();
    let mut series = String::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, v)) = line.rsplit_once(' ') else { continue };
        if ["tidemark_group_", "tidemark_pg_", "tidemark_s3_"].iter().any(|p| name.starts_with(p)) {
            let step = if name.starts_with("tidemark_pg_segments_recorded") { 1 } else { 0 };
            series += &format!("      - series: '{name}'\n        values: '{v}+{step}x20'\n");
        }
    }
    let alerts =
        ["TidemarkRPOAboveTarget", "TidemarkScansStalled", "TidemarkArchiveStalled", "TidemarkArtifactsMissing"];
    let expect: String =
        alerts.iter().map(|a| format!("      - {{eval_time: 10m, alertname: {a}, exp_alerts: []}}\n")).collect();
    let test = format!(
        "rule_files:\n  - {}\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n{series}    alert_rule_test:\n{expect}",
        rules.display()
    );
    let test_file = base.path().join("alerts_test.yml");
    std::fs::write(&test_file, &test).unwrap();
    let out = std::process::Command::new(&promtool).args(["test", "rules"]).arg(&test_file).output().unwrap();
    assert!(
        out.status.success(),
        "{}{}\n{test}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The agent's metrics file is valid exposition text.
    let out = std::process::Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(base.path().join("agent.prom")).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));

    // Faults. A restore test whose check fails is recorded failed, and says so.
    write("uploads", &schedule.replace("&& test -n \\\"$TIDEMARK_S3_BUCKET\\\"", "&& false"));
    let out = ok(&["agent", "run-once", "restore_tests", "--config", &file_arg]);
    assert!(out.contains("FAILED"), "{out}");
    assert_eq!(read(&scrape(), "tidemark_group_last_restore_test_passed{group=\"app\"}"), 0.0);
    assert_eq!(leftovers("after a failed restore test"), Vec::<String>::new());

    // Archiving stopped: positions and scans go on, nothing newer becomes restorable, the RPO grows.
    pg.sql("ALTER SYSTEM SET archive_command = 'false'");
    pg.sql("SELECT pg_reload_conf()");
    pg.sql("SELECT pg_switch_wal()");
    std::thread::sleep(Duration::from_secs(2));
    let rpo_stopped = read(&scrape(), "tidemark_group_rpo_seconds{group=\"app\"}");
    for _ in 0..3 {
        std::thread::sleep(Duration::from_secs(1));
        pg.sql("INSERT INTO t VALUES (1)");
        ok(&["agent", "run-once", "positions", "--config", &file_arg]);
        ok(&["agent", "run-once", "scans", "--config", &file_arg]);
    }
    let rpo_later = read(&scrape(), "tidemark_group_rpo_seconds{group=\"app\"}");
    assert!(rpo_later >= rpo_stopped + 3.0, "the RPO grows while archiving is stopped: {rpo_stopped} then {rpo_later}");
    let script_cmd = format!("{} %p %f", script.display());
    pg.sql(&format!("ALTER SYSTEM SET archive_command = '{script_cmd}'"));
    pg.sql("SELECT pg_reload_conf()");

    // An archived segment deleted: the archive check records it missing, the metric and the alert see it.
    let archive = base.path().join("archive");
    // The base backup's start segment: every marker's restore replays it.
    let history = std::fs::read_dir(&archive)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.ends_with(".backup"))
        .expect("the backup history file is archived");
    let victim = archive.join(&history[..24]);
    std::fs::remove_file(&victim).unwrap();
    let out = ok(&["agent", "run-once", "archive_checks", "--config", &file_arg]);
    assert!(out.contains("1 missing or corrupt"), "{out}");
    let text = scrape();
    assert_eq!(read(&text, "tidemark_pg_unsound_segments{component=\"pg:main\"}"), 1.0);
    let report: Value = serde_json::from_str(&ok(&["recovery-points", "--group", "app", "--json"])).unwrap();
    assert!(
        report["markers"].as_array().unwrap().iter().all(|m| m["restorable"] == false),
        "every marker replays the deleted segment: {report}"
    );
    let mut series = String::new();
    for line in text.lines().filter(|l| l.starts_with("tidemark_pg_unsound_segments")) {
        let (name, v) = line.rsplit_once(' ').unwrap();
        series += &format!("      - series: '{name}'\n        values: '{v}+0x5'\n");
    }
    let test = format!(
        "rule_files:\n  - {}\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n{series}    alert_rule_test:\n      - eval_time: 2m\n        alertname: TidemarkArtifactsMissing\n        exp_alerts:\n          - exp_labels: {{severity: critical, component: \"pg:main\"}}\n            exp_annotations: {{summary: \"pg:main: 1 recorded artifacts are missing, corrupt or unrecoverable\"}}\n",
        rules.display()
    );
    std::fs::write(&test_file, &test).unwrap();
    let out = std::process::Command::new(&promtool).args(["test", "rules"]).arg(&test_file).output().unwrap();
    assert!(
        out.status.success(),
        "the alert fires on the real series: {}{}\n{test}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // A recorded object version deleted permanently: the archive check's sample HEADs it and records it missing.
    let versions = s3.block_on(s3.client().list_object_versions().bucket("uploads").prefix("a").send()).unwrap();
    let va = versions.versions().iter().find(|v| v.key() == Some("a")).and_then(|v| v.version_id()).unwrap().to_owned();
    s3.block_on(s3.client().delete_object().bucket("uploads").key("a").version_id(&va).send()).unwrap();
    let out = ok(&["agent", "run-once", "archive_checks", "--config", &file_arg]);
    assert!(out.contains("s3:uploads (1 of 1 versions): 0 sound, 1 missing or corrupt"), "{out}");
    let verified = ok(&["custody", &format!("s3:uploads/v/a@{va}"), "--json"]);
    let rows: Value = serde_json::from_str(&verified).unwrap();
    assert!(
        rows.as_array().unwrap().iter().any(|r| r["kind"] == "artifact.verified" && r["body"]["outcome"] == "missing"),
        "{rows}"
    );

    // The pages a person opens, in headless Chromium: login with the token
    // (a form; never in a URL), the overview, the timeline, logout.
    let (Some(chromium), Some(python)) = (common::chromium(), common::venv_python()) else {
        common::service_missing("chromium or websocket-client missing (scripts/test.sh installs them)");
        return;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/browser/ui_check.py");
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-overview.png");
    let out = std::process::Command::new(python)
        .arg(script)
        .arg(chromium)
        .args([&server.url, &token, "app"])
        .arg(&shot)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(seen["title"].as_str().unwrap().starts_with("app"), "{seen}");
    assert!(seen["groups"].as_str().unwrap().contains("app"), "{seen}");
    assert!(!seen["rpo"].as_str().unwrap().is_empty(), "{seen}");
    assert!(seen["last_test"].as_str().unwrap().contains("FAILED"), "the failed restore test shows: {seen}");
    assert!(seen["points"].as_u64().unwrap() >= 2, "{seen}");
    assert!(seen["problems"].as_str().unwrap().contains("not restorable"), "the deleted segment's markers: {seen}");
    assert_eq!(seen["cookie"]["httpOnly"], true, "{seen}");
    assert_eq!(seen["cookie"]["sameSite"], "Strict", "{seen}");
    assert_eq!(seen["url_has_token"], false, "{seen}");
    assert!(seen["timeline_svg"].as_u64().unwrap() >= 1, "{seen}");
    assert_eq!(seen["after_logout"], "/ui/login", "{seen}");
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "a screenshot of the overview: {} bytes", png.len());
    eprintln!("overview screenshot: {}", shot.display());
}
