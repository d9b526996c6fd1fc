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
