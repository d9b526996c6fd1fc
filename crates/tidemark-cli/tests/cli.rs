//! The `tidemark` binary end to end: init, keys, append, log, verify,
//! checkpoint and proofs — and every kind of bad input refused with a
//! message that names the problem, leaving the log's size and root as they were.

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::{Cli, admin_key};
use serde_json::{Value, json};
use tidemark_core::event::Event;
use tidemark_core::note::{Checkpoint, NoteVerifier};
use tidemark_core::{EventId, SecretKey, Timestamp};

fn position(lsn: &str) -> String {
    json!({"kind": "pg.position", "body": {"component": "pg:main", "lsn": lsn, "timeline": 1, "observed_at": "2026-11-23T02:00:00.000000Z"}}).to_string()
}

fn agent_key(cli: &Cli) -> SecretKey {
    tidemark_store::read_secret_key_file(&cli.path("agent.key")).unwrap()
}

fn signed_line(key: &SecretKey, draft: &str, ms: u64) -> String {
    let v: Value = serde_json::from_str(draft).unwrap();
    Event::from_draft(v, key.actor_id(), EventId::new_v7(ms, [4; 10]), Timestamp::from_unix_seconds(1_790_000_000))
        .unwrap()
        .sign(key)
        .to_json_line()
}

#[test]
fn init_creates_keys_with_0600_and_refuses_to_run_twice() {
    let cli = Cli::new();
    let out = cli.ok(&["init"]);
    assert!(out.contains("admin key"), "{out}");
    for f in ["keys/admin.key", "keys/ledger.key"] {
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(cli.ledger().join(f)).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    let head = cli.tree_head();
    let admin_before = std::fs::read(cli.ledger().join("keys/admin.key")).unwrap();
    let again = cli.run(&["init"]);
    assert_eq!(again.code, 5, "{}", again.stderr);
    assert!(again.stderr.contains("already holds a ledger"), "{}", again.stderr);
    assert_eq!(cli.tree_head(), head);
    assert_eq!(std::fs::read(cli.ledger().join("keys/admin.key")).unwrap(), admin_before);
}

#[test]
fn append_log_verify_checkpoint_and_proofs() {
    let cli = Cli::with_keys();
    let input = format!("{}\n{}\n\n{}\n", position("0/1"), position("0/2"), position("0/3"));
    let r = cli.run_with_input(&["append", "--signer", "agent.key"], &input);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "3\n4\n5\n");

    let log = cli.ok(&["log", "--kind", "pg.position"]);
    assert_eq!(log.lines().count(), 4, "{log}");
    let json_log = cli.ok(&["log", "--json", "--from-seq", "4", "--to-seq", "4"]);
    let entry: Value = serde_json::from_str(json_log.trim()).unwrap();
    assert_eq!(entry["seq"], 4);
    assert_eq!(entry["event"]["body"]["lsn"], "0/2");

    let verify = cli.ok(&["verify"]);
    assert!(verify.starts_with("ok: 6 entries"), "{verify}");

    // The checkpoint verifies with the vkey, as a third party would check it.
    let vkey = cli.ok(&["key", "show", "--ledger-key"]);
    let verifier = NoteVerifier::from_vkey(vkey.trim()).unwrap();
    let note = cli.ok(&["checkpoint"]);
    let cp = Checkpoint::open(&note, &verifier).unwrap();
    assert_eq!((cp.origin.as_str(), cp.size), ("tidemark.test/cli", 6));

    // Inclusion proof: the leaf is the logged entry; the proof leads to the checkpoint's root.
    let proof: Value = serde_json::from_str(&cli.ok(&["proof", "inclusion", "--seq", "4"])).unwrap();
    let leaf_hash = tidemark_core::merkle::leaf_hash(proof["leaf"].as_str().unwrap().as_bytes());
    assert_eq!(B64.encode(leaf_hash), proof["leafHash"]);
    assert_eq!(proof["root"], B64.encode(cp.root));
    let hashes: Vec<[u8; 32]> = proof["proof"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| B64.decode(h.as_str().unwrap()).unwrap().try_into().unwrap())
        .collect();
    tidemark_core::merkle::verify_inclusion(4, 6, &leaf_hash, &hashes, &cp.root).unwrap();

    let c: Value = serde_json::from_str(&cli.ok(&["proof", "consistency", "--from", "3", "--to", "6"])).unwrap();
    let hashes: Vec<[u8; 32]> = c["proof"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| B64.decode(h.as_str().unwrap()).unwrap().try_into().unwrap())
        .collect();
    let root1 = B64.decode(c["root1"].as_str().unwrap()).unwrap();
    let old = Checkpoint::open(c["checkpoint1"].as_str().unwrap(), &verifier).unwrap();
    assert_eq!(old.root.to_vec(), root1);
    tidemark_core::merkle::verify_consistency(3, 6, &hashes, &root1, &cp.root).unwrap();
}

#[test]
fn the_same_signed_event_twice_returns_the_first_sequence_number() {
    let cli = Cli::with_keys();
    let line = signed_line(&agent_key(&cli), &position("0/9"), 7);
    let first = cli.run_with_input(&["append"], &format!("{line}\n"));
    assert_eq!(first.stdout, "3\n", "{}", first.stderr);
    let head = cli.tree_head();
    let second = cli.run_with_input(&["append", "--json"], &format!("{line}\n"));
    assert_eq!(second.code, 0);
    let v: Value = serde_json::from_str(second.stdout.trim()).unwrap();
    assert_eq!((v["seq"].as_u64(), v["duplicate"].as_bool()), (Some(3), Some(true)));
    assert_eq!(cli.tree_head(), head);
}

/// Appends `input`, expects exit 3 with `needle` in the message, and an unchanged tree head.
fn refused(cli: &Cli, args: &[&str], input: &str, needle: &str) {
    let head = cli.tree_head();
    let r = cli.run_with_input(args, input);
    assert_eq!(r.code, 3, "expected a refusal for {needle:?}; stdout {} stderr {}", r.stdout, r.stderr);
    assert!(r.stderr.contains(needle), "message should name {needle:?}: {}", r.stderr);
    assert!(r.stdout.is_empty(), "nothing acknowledged: {}", r.stdout);
    assert_eq!(cli.tree_head(), head, "size and root unchanged after: {}", r.stderr);
}

#[test]
fn bad_input_is_refused_with_a_reason_and_changes_nothing() {
    let cli = Cli::with_keys();
    let agent = agent_key(&cli);
    let good = position("0/1");
    let signer = ["append", "--signer", "agent.key"];

    // A good first line proves the whole input is refused, not just the bad line.
    refused(&cli, &signer, &format!("{good}\n{{\"kind\": \"pg.position\", \n"), "line 2: malformed JSON");
    refused(
        &cli,
        &signer,
        &format!("{good}\n{}\n", json!({"kind": "pg.teleport", "body": {}})),
        "unknown kind \"pg.teleport\"",
    );
    refused(
        &cli,
        &signer,
        &format!("{}\n", json!({"kind": "pg.position", "body": {"component": "pg:main", "lsn": "0/1", "timeline": 1}})),
        "missing field `observed_at`",
    );
    refused(
        &cli,
        &signer,
        &format!(
            "{}\n",
            json!({"kind": "pg.position", "body": {"component": "pg:main", "lsn": "0/1", "timeline": 1, "observed_at": "2026-11-23T02:00:00.000000Z", "color": 1}})
        ),
        "unknown field `color`",
    );
    refused(
        &cli,
        &signer,
        &format!("{}\n", json!({"kind": "pg.position", "extra": 1, "body": {}})),
        "unknown field `extra`",
    );
    let huge = json!({"kind": "artifact.verified", "body": {"artifact": "pg:main/wal/1", "method": "reread", "outcome": "ok", "detail": "x".repeat(70_000)}});
    refused(&cli, &signer, &format!("{huge}\n"), "bytes");

    // Already-signed lines: bad signature, unknown key, revoked key, role, conflict, unsigned.
    let mut forged: Value = serde_json::from_str(&signed_line(&agent, &good, 1)).unwrap();
    forged["event"]["body"]["lsn"] = json!("0/2");
    refused(&cli, &["append"], &format!("{forged}\n"), "bad signature");
    let stranger = SecretKey::from_seed("stranger", [42; 32]);
    refused(
        &cli,
        &["append"],
        &format!("{}\n", signed_line(&stranger, &good, 2)),
        &format!("unknown key {}", stranger.actor_id()),
    );
    refused(
        &cli,
        &["append", "--signer", "operator.key"],
        &format!("{good}\n"),
        "none of which may append pg.position",
    );
    refused(&cli, &["append"], &format!("{good}\n"), "unsigned");

    let original = signed_line(&agent, &good, 3);
    cli.run_with_input(&["append"], &format!("{original}\n"));
    let conflicting = signed_line(&agent, &position("0/7"), 3);
    refused(&cli, &["append"], &format!("{conflicting}\n"), "conflict");

    let before_revocation = signed_line(&agent, &position("0/8"), 4);
    cli.ok(&["key", "revoke", "--pub", "agent.key.pub", "--reason", "rotated", "--signer", &admin_key(&cli)]);
    refused(&cli, &signer, &format!("{good}\n"), "was revoked at entry");
    refused(&cli, &["append"], &format!("{before_revocation}\n"), "was revoked at entry");

    let verify = cli.run(&["verify"]);
    assert_eq!(verify.code, 0, "{}", verify.stdout);
}

/// `append` streams in batches, each all-or-nothing: a bad line in a later
/// batch stops there, and the message says exactly what before it landed;
/// re-running the fixed input appends only what is missing.
#[test]
fn a_refusal_in_a_later_batch_says_what_was_recorded_before_it() {
    let cli = Cli::with_keys();
    let lines: Vec<String> = (1..=25).map(|i| position(&format!("0/{i:X}"))).collect();
    let mut input = lines.join("\n") + "\n";
    input = input.replacen(&lines[21], "{\"kind\": \"pg.position\", ", 1);
    let (size_before, _) = cli.tree_head();
    let r = cli.run_with_input(&["append", "--signer", "agent.key", "--batch-size", "10", "--json"], &input);
    assert_eq!(r.code, 3, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("line 22: malformed JSON"), "{}", r.stderr);
    assert!(r.stderr.contains("the 20 events before it (lines up to 20) are recorded"), "{}", r.stderr);
    assert_eq!(r.stdout.lines().count(), 20, "each recorded event was acknowledged: {}", r.stdout);
    let (size_after, _) = cli.tree_head();
    assert_eq!(size_after.parse::<u64>().unwrap(), size_before.parse::<u64>().unwrap() + 20);

    // Signed lines keep their ids: re-running the fixed input records only what is missing.
    let signed: Vec<String> = r
        .stdout
        .lines()
        .map(|l| {
            let seq = serde_json::from_str::<Value>(l).unwrap()["seq"].as_u64().unwrap();
            let entry = cli.ok(&["log", "--json", "--from-seq", &seq.to_string(), "--limit", "1"]);
            let v: Value = serde_json::from_str(entry.trim()).unwrap();
            json!({"event": v["event"], "sig": v["sig"]}).to_string()
        })
        .collect();
    let again = signed.join("\n") + "\n";
    let r = cli.run_with_input(&["append", "--json"], &again);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.lines().all(|l| l.contains("\"duplicate\":true")), "{}", r.stdout);
    assert_eq!(cli.run(&["verify"]).code, 0);
}

#[test]
fn usage_errors_and_missing_ledgers_have_their_own_exit_codes() {
    let cli = Cli::new();
    let r = cli.run(&["log"]);
    assert_eq!(r.code, 5);
    assert!(r.stderr.contains("tidemark init"), "{}", r.stderr);
    let cli = Cli::with_keys();
    let r = cli.run(&["log", "--kind", "nope"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    let r = cli.run(&["proof", "inclusion", "--seq", "99"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
}

#[test]
fn custody_and_audit_name_actors_and_roles() {
    let cli = Cli::with_keys();
    let seg = "000000010000000000000007";
    let wal = json!({"kind": "pg.wal_archived", "body": {"component": "pg:main", "timeline": 1, "segment": seg, "size_bytes": 16,
        "blake3": "aa".repeat(32), "sha256": "bb".repeat(32), "location": format!("/archive/{seg}")}});
    cli.run_with_input(&["append", "--signer", "agent.key"], &format!("{wal}\n"));
    let hold = json!({"kind": "artifact.legal_hold", "body": {"artifact": format!("pg:main/wal/{seg}"), "status": "set", "reason": "case 1"}});
    cli.run_with_input(&["append", "--signer", "operator.key"], &format!("{hold}\n"));
    let rows: Value = serde_json::from_str(&cli.ok(&["custody", "--json", &format!("pg:main/wal/{seg}")])).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (rows[0]["action"].as_str(), rows[0]["actor_name"].as_str(), rows[0]["actor_roles"].as_str()),
        (Some("created"), Some("agent"), Some("agent"))
    );
    assert_eq!((rows[1]["action"].as_str(), rows[1]["actor_name"].as_str()), (Some("legal hold"), Some("operator")));
    let text = cli.ok(&["audit", "--kind", "artifact.legal_hold"]);
    assert!(text.contains("operator (operator)") && text.contains("legal hold"), "{text}");
    let out = cli.ok(&["export", "--artifact", &format!("pg:main/wal/{seg}"), "--out", "custody.tar"]);
    assert!(out.contains("exported 2 entries"), "{out}");
    let vkey = cli.ok(&["key", "show", "--ledger-key"]);
    let verified = cli.run(&["verify-export", "custody.tar", "--ledger-key", vkey.trim()]);
    assert_eq!(verified.code, 0, "{}", verified.stdout);
    assert!(verified.stdout.ends_with("VERIFIED\n"));
    let wrong = SecretKey::from_seed("x", [8; 32]);
    let wrong_vkey = NoteVerifier::new("tidemark.test/cli", wrong.public_key()).unwrap().to_vkey();
    let refused = cli.run(&["verify-export", "custody.tar", "--ledger-key", &wrong_vkey]);
    assert_eq!(refused.code, 4, "{}", refused.stdout);
}

/// `checkpoint --json` names the size and root of the signed note it carries.
#[test]
fn a_checkpoint_as_json_carries_its_note() {
    let cli = Cli::with_keys();
    let (size, root) = cli.tree_head();
    let v: Value = serde_json::from_str(&cli.ok(&["checkpoint", "--json"])).unwrap();
    assert_eq!(v["size"].as_u64().unwrap().to_string(), size);
    assert_eq!(v["root"].as_str(), Some(root.as_str()));
    assert_eq!(v["note"].as_str(), Some(cli.ok(&["checkpoint"]).as_str()));
    assert_eq!(v["origin"], "tidemark.test/cli");
}

/// Every subcommand path of `tidemark`, from its own help (`Commands:` sections).
fn subcommands(cli: &Cli, path: &[&str]) -> Vec<Vec<String>> {
    let mut args: Vec<&str> = path.to_vec();
    args.push("--help");
    let help = cli.run(&args).stdout;
    let mut out = Vec::new();
    let mut in_commands = false;
    for line in help.lines() {
        if line.starts_with("Commands:") {
            in_commands = true;
            continue;
        }
        if in_commands {
            let Some(name) = line.strip_prefix("  ").and_then(|l| l.split_whitespace().next()) else {
                in_commands = false;
                continue;
            };
            if name == "help" {
                continue;
            }
            let mut sub: Vec<String> = path.iter().map(|s| s.to_string()).collect();
            sub.push(name.to_owned());
            let refs: Vec<&str> = sub.iter().map(String::as_str).collect();
            let deeper = subcommands(cli, &refs);
            if deeper.is_empty() { out.push(sub) } else { out.extend(deeper) }
        }
    }
    out
}

#[test]
fn every_command_that_prints_a_result_takes_json() {
    let cli = Cli::new();
    // JSON always, nothing to print, or not a result (a server, a benchmark's
    // Markdown table, the JSON Schema files written for the repository).
    let exempt =
        ["plan", "proof inclusion", "proof consistency", "group show", "pg restore-wal", "serve", "bench", "schemas"];
    let all = subcommands(&cli, &[]);
    assert!(all.len() > 30, "found the commands: {all:?}");
    let missing: Vec<String> = all
        .iter()
        .map(|c| c.join(" "))
        .filter(|c| !exempt.contains(&c.as_str()))
        .filter(|c| {
            let mut args: Vec<&str> = c.split(' ').collect();
            args.push("--help");
            !cli.run(&args).stdout.contains("--json")
        })
        .collect();
    assert_eq!(missing, Vec::<String>::new(), "commands without --json");
}
