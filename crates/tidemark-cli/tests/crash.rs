//! Crash safety with the real binary: `tidemark append` is killed with
//! SIGKILL at random moments, round after round. Afterwards the ledger
//! must verify, and every event the binary acknowledged (printed its
//! sequence number for) must be in the log at that sequence number.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::process::Stdio;
use std::time::Duration;

use common::Cli;
use serde_json::{Value, json};
use tidemark_core::event::Event;
use tidemark_core::{EventId, Timestamp};

const ROUNDS: u64 = 6;
const EVENTS_PER_ROUND: u64 = 3000;

/// xorshift: reproducible from the seed printed at the start.
fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_event() {
    let cli = Cli::with_keys();
    let agent = tidemark_store::read_secret_key_file(&cli.path("agent.key")).unwrap();
    let mut seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    eprintln!("crash test seed {seed}");
    // event id -> acknowledged seq
    let mut acknowledged: BTreeMap<String, u64> = BTreeMap::new();
    let mut kills = 0;
    for round in 0..ROUNDS {
        let mut lines = String::new();
        let mut ids = Vec::new();
        for i in 0..EVENTS_PER_ROUND {
            let n = round * EVENTS_PER_ROUND + i;
            let draft = json!({"kind": "pg.position", "body": {"component": "pg:main", "lsn": format!("0/{:X}", n + 1), "timeline": 1, "observed_at": "2026-11-23T02:00:00.000000Z"}});
            let signed = Event::from_draft(
                draft,
                agent.actor_id(),
                EventId::new_v7(1_000 + n, [9; 10]),
                Timestamp::from_unix_seconds(1_790_000_000),
            )
            .unwrap()
            .sign(&agent);
            ids.push(signed.event.id.to_string());
            lines.push_str(&signed.to_json_line());
            lines.push('\n');
        }
        let input = cli.path(&format!("round-{round}.ndjson"));
        std::fs::write(&input, lines).unwrap();
        let mut child = cli
            .command()
            .args(["append", "--json", "--batch-size", "25", input.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Kill after a random number of acknowledged batches, plus a random
        // few milliseconds so the kill lands inside the next batch's work.
        let batches = EVENTS_PER_ROUND / 25;
        let kill_after_acks = 1 + next(&mut seed) % (batches - 1) * 25;
        let extra_delay = Duration::from_micros(next(&mut seed) % 3000);
        let mut acks = Vec::new();
        let mut lines_out = BufReader::new(child.stdout.take().unwrap()).lines();
        while (acks.len() as u64) < kill_after_acks {
            let Some(Ok(line)) = lines_out.next() else { break };
            let v: Value = serde_json::from_str(&line).unwrap();
            acks.push((v["line"].as_u64().unwrap(), v["seq"].as_u64().unwrap()));
        }
        std::thread::sleep(extra_delay);
        if child.try_wait().unwrap().is_none() {
            // SIGKILL: no chance to clean up.
            child.kill().unwrap();
            kills += 1;
        }
        child.wait().unwrap();
        // Lines printed before the kill landed are acknowledged too.
        for line in lines_out {
            let Ok(line) = line else { break };
            let Ok(v) = serde_json::from_str::<Value>(&line) else { break };
            acks.push((v["line"].as_u64().unwrap(), v["seq"].as_u64().unwrap()));
        }
        for (line, seq) in acks {
            acknowledged.insert(ids[(line - 1) as usize].clone(), seq);
        }
        let verify = cli.run(&["verify"]);
        assert_eq!(verify.code, 0, "round {round}: verify after SIGKILL: {}", verify.stdout);
    }
    assert!(kills >= 1, "the binary was never killed mid-append: make the rounds longer");

    let log = cli.ok(&["log", "--json", "--kind", "pg.position"]);
    let mut logged: BTreeMap<String, u64> = BTreeMap::new();
    for line in log.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        logged.insert(v["event"]["id"].as_str().unwrap().to_owned(), v["seq"].as_u64().unwrap());
    }
    for (id, seq) in &acknowledged {
        assert_eq!(logged.get(id), Some(seq), "acknowledged event {id} (seq {seq}) is missing after the crashes");
    }
    eprintln!("{kills} kills, {} acknowledged events all present, {} entries logged", acknowledged.len(), logged.len());

    // Re-sending everything after the crashes is safe: duplicates answer with their seqs.
    let all = (0..ROUNDS)
        .map(|r| std::fs::read_to_string(cli.path(&format!("round-{r}.ndjson"))).unwrap())
        .collect::<String>();
    let r = cli.run_with_input(&["append", "--json"], &all);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(cli.run(&["verify"]).code, 0);
}
