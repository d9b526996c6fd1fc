//! schemathesis (PyPI, in the project's `.venv`, installed by
//! `scripts/test.sh`) against a running `tidemark serve` with a read token:
//! no 5xx, no response that violates `schemas/openapi.json`, no request
//! valid by the document that is refused, no invalid request accepted.
//!
//! The read API (every GET) is fuzzed. `POST /v1/events` is not: a request
//! valid by any schema still needs an Ed25519 signature by an enrolled key,
//! which no generator can produce, and the body rules the event schemas do
//! not state yet belong to the auditor-evidence issue; the write path is
//! tested with real signed events in `server.rs` and `cli.rs`.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{Cli, Server, admin_key};

fn schemathesis_bin() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/schemathesis");
    p.exists().then_some(p)
}

#[test]
fn the_read_api_keeps_to_its_openapi_document() {
    let Some(st) = schemathesis_bin() else {
        common::service_missing("schemathesis is not in .venv (scripts/test.sh installs it)");
        return;
    };
    let cli = Cli::with_keys();
    let admin = admin_key(&cli);
    // Something to find: a snapshot store, a group of it, a snapshot, positions.
    cli.ok(&["snapshot", "register", "--component", "snap:defs", "--store", "rabbitmq", "--signer", &admin]);
    cli.ok(&["group", "define", "app", "--component", "snap:defs", "--max-skew", "2s", "--signer", &admin]);
    std::fs::write(cli.path("defs.json"), b"{\"queues\":[]}").unwrap();
    cli.ok(&["snapshot", "record", "--component", "snap:defs", "--file", "defs.json", "--signer", "agent.key"]);
    let positions: String = (1..=20)
        .map(|i| format!("{{\"kind\":\"pg.position\",\"body\":{{\"component\":\"pg:main\",\"lsn\":\"0/{i:X}000\",\"timeline\":1,\"observed_at\":\"2026-11-23T02:00:{i:02}.000000Z\"}}}}\n"))
        .collect();
    let r = cli.run_with_input(&["append", "--signer", "agent.key"], &positions);
    assert_eq!(r.code, 0, "{}", r.stderr);

    let server = Server::start(&cli, "127.0.0.1:0", &[]);
    let token = cli.ok(&["token", "issue", "--key", "operator.key"]).trim().to_owned();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new(&st)
        .arg("--config-file")
        .arg(root.join("tests/schemathesis/schemathesis.toml"))
        .arg("run")
        .arg(root.join("schemas/openapi.json"))
        .args(["--url", &server.url])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--include-method", "GET", "--checks", "all", "--max-examples", "25", "--seed", "20261204"])
        .args(["--report-dir"])
        .arg(cli.path("schemathesis-report"))
        .env("NO_COLOR", "1")
        // schemathesis keeps a cache in its working directory: the test's own.
        .current_dir(cli.dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found violations of schemas/openapi.json:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = stdout.lines().filter(|l| l.contains("generated")).collect::<Vec<_>>().join(" ");
    eprintln!("schemathesis: {summary}");
    assert!(summary.contains("passed"), "schemathesis ran cases: {stdout}");
    server.stop();
}
