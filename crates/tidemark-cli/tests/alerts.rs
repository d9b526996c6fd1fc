//! The shipped alerting rules (`examples/alerts.yml`) are valid and fire
//! when they should: `promtool check rules` and `promtool test rules` on
//! `tests/prometheus/alerts_test.yml` (promtool from Debian's `prometheus`,
//! installed by scripts/test.sh). The agent test feeds them the real
//! server's series too.

mod common;

use std::path::Path;

#[test]
fn the_alert_rules_check_and_their_unit_tests_pass() {
    let Some(promtool) = common::promtool() else {
        common::service_missing("promtool missing (Debian package prometheus; scripts/test.sh installs it)");
        return;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for args in [&["check", "rules", "examples/alerts.yml"][..], &["test", "rules", "tests/prometheus/alerts_test.yml"]]
    {
        let out = std::process::Command::new(&promtool).args(args).current_dir(&root).output().unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The metric names an expression uses (`tidemark_…`, without histogram suffixes).
fn names(text: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("tidemark_") {
        let start = i + at;
        let end = start
            + text[start..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(text.len() - start);
        let preceded = start > 0
            && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_' || bytes[start - 1] == b'-');
        if !preceded {
            let n = &text[start..end];
            out.insert(n.trim_end_matches("_bucket").trim_end_matches("_sum").trim_end_matches("_count").to_owned());
        }
        i = end;
    }
    out
}

#[test]
fn the_rules_and_the_dashboard_name_only_metrics_that_exist() {
    let cli = common::Cli::with_keys();
    let server = common::Server::start(&cli, "127.0.0.1:0", &[]);
    let token = cli.ok(&["token", "issue", "--key", "agent.key"]).trim().to_owned();
    let mut r = ureq::get(&format!("{}/metrics", server.url))
        .header("authorization", &format!("Bearer {token}"))
        .call()
        .unwrap();
    let text = r.body_mut().read_to_string().unwrap();
    let mut exported: std::collections::BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_owned)
        .collect();
    // The agent's own (its --metrics-file; the agent test reads a real one).
    for n in
        ["runs_total", "failures_total", "skipped_total", "last_success_timestamp_seconds", "last_duration_seconds"]
    {
        exported.insert(format!("tidemark_agent_job_{n}"));
    }
    assert!(exported.contains("tidemark_group_rpo_seconds"), "{text}");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for file in ["examples/alerts.yml", "examples/grafana-dashboard.json"] {
        let used = names(&std::fs::read_to_string(root.join(file)).unwrap());
        assert!(!used.is_empty(), "{file}");
        let unknown: Vec<&String> = used.iter().filter(|n| !exported.contains(*n)).collect();
        assert!(unknown.is_empty(), "{file} names metrics nothing exports: {unknown:?}");
    }
}
