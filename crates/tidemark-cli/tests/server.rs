//! `tidemark serve` over real HTTP on loopback: signed writes and their
//! refusals as problem details, authenticated reads, the one client with its
//! spool, graceful shutdown under load, limits and metrics.

mod common;

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Cli, Server, admin_key, free_port};
use serde_json::{Value, json};
use tidemark_core::event::Event;
use tidemark_core::{EventId, SecretKey, SignedEvent, Timestamp};

fn agent(cli: &Cli) -> SecretKey {
    tidemark_store::read_secret_key_file(&cli.path("agent.key")).unwrap()
}

fn position(key: &SecretKey, n: u64) -> SignedEvent {
    let draft = json!({"kind": "pg.position", "body": {"component": "pg:main", "lsn": format!("0/{:X}", n + 1), "timeline": 1, "observed_at": "2026-11-23T02:00:00.000000Z"}});
    let mut random = [0u8; 10];
    random[2..].copy_from_slice(&n.to_be_bytes());
    Event::from_draft(
        draft,
        key.actor_id(),
        EventId::new_v7(1_790_000_000_000 + n / 100, random),
        Timestamp::from_unix_seconds(1_790_000_000),
    )
    .unwrap()
    .sign(key)
}

fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

fn post(url: &str, content_type: &str, body: &str) -> (u16, Value) {
    let mut r =
        http().post(&format!("{url}/v1/events")).header("content-type", content_type).send(body.as_bytes()).unwrap();
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn get(url: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut req = http().get(&format!("{url}{path}"));
    if let Some(t) = token {
        req = req.header("authorization", &format!("Bearer {t}"));
    }
    let mut r = req.call().unwrap();
    (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
}

fn token(cli: &Cli, key: &str) -> String {
    cli.ok(&["token", "issue", "--key", key]).trim().to_owned()
}

fn tree_size(url: &str, token: &str) -> u64 {
    let (status, note) = get(url, "/v1/checkpoint", Some(token));
    assert_eq!(status, 200, "{note}");
    note.lines().nth(1).unwrap().parse().unwrap()
}

#[test]
fn writes_are_signed_and_refusals_are_problem_details() {
    let cli = Cli::with_keys();
    let server = Server::start(&cli, "127.0.0.1:0", &[]);
    let url = server.url.clone();
    let key = agent(&cli);
    let tok = token(&cli, "agent.key");
    // The agent may read too: every enrolled key may hold a token.
    let start = tree_size(&url, &tok);

    let (status, body) = post(&url, "application/json", &position(&key, 1).to_json_line());
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["seq"], start);
    let array = format!("[{},{}]", position(&key, 2).to_json_line(), position(&key, 3).to_json_line());
    let (status, body) = post(&url, "application/json", &array);
    assert_eq!((status, body["results"].as_array().unwrap().len()), (200, 2));
    let ndjson = format!("{}\n{}\n", position(&key, 4).to_json_line(), position(&key, 1).to_json_line());
    let (status, body) = post(&url, "application/x-ndjson", &ndjson);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][1], json!({"seq": start, "duplicate": true}));
    let size = tree_size(&url, &tok);
    assert_eq!(size, start + 4);

    let mut forged: Value = serde_json::from_str(&position(&key, 5).to_json_line()).unwrap();
    forged["event"]["body"]["lsn"] = json!("0/FF");
    let cases: Vec<(String, &str, u16, &str)> = vec![
        (format!("[{},{forged}]", position(&key, 6).to_json_line()), "application/json", 403, "bad_signature"),
        ("{\"event\": ".into(), "application/json", 400, "bad_request"),
        (json!({"event": {"kind": "pg.nope"}, "sig": "x"}).to_string(), "application/json", 400, "invalid_event"),
        (
            format!("[{}]", vec![position(&key, 1).to_json_line(); 10_001].join(",")),
            "application/json",
            413,
            "batch_too_large",
        ),
    ];
    for (body, ct, want_status, code) in cases {
        let (status, problem) = post(&url, ct, &body);
        assert_eq!(status, want_status, "{problem}");
        if !code.is_empty() {
            assert_eq!(problem["type"], format!("https://tidemark.dev/problems/{code}"), "{problem}");
            assert!(problem["detail"].as_str().unwrap().len() > 10);
        }
    }
    // A body over the limit is refused from its Content-Length, before it is read.
    let mut stream = std::net::TcpStream::connect(url.trim_start_matches("http://")).unwrap();
    write!(
        stream,
        "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        17 * 1024 * 1024
    )
    .unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 413", "an oversized body is refused with 413");
    let (_, problem) = post(&url, "application/json", &format!("[{},{forged}]", position(&key, 6).to_json_line()));
    assert_eq!(problem["event_index"], 1, "the problem names the bad event: {problem}");
    let operator = tidemark_store::read_secret_key_file(&cli.path("operator.key")).unwrap();
    let (status, problem) = post(&url, "application/json", &position(&operator, 7).to_json_line());
    assert_eq!(status, 403);
    assert!(problem["detail"].as_str().unwrap().contains("none of which may append pg.position"));
    let mut conflicting = position(&key, 1);
    conflicting.event.occurred_at = Timestamp::from_unix_seconds(5);
    let (status, _) = post(&url, "application/json", &conflicting.event.clone().sign(&key).to_json_line());
    assert_eq!(status, 409);
    assert_eq!(tree_size(&url, &tok), size, "refused requests change nothing");

    let (_, metrics) = get(&url, "/metrics", Some(&tok));
    for needle in [
        "tidemark_refusals_total{reason=\"bad_signature\"} 2",
        "tidemark_refusals_total{reason=\"conflict\"} 1",
        "tidemark_entries_appended_total 4",
        "tidemark_duplicate_events_total 1",
        &format!("tidemark_tree_size {size}"),
        "tidemark_append_latency_seconds_count",
        "tidemark_last_checkpoint_age_seconds",
    ] {
        assert!(metrics.contains(needle), "metrics lack {needle}:\n{metrics}");
    }
    let log = server.stop();
    assert!(!log.contains(&tok), "tokens never appear in logs");
    assert!(log.contains("batch committed"), "{log}");
}

#[test]
fn reads_need_a_token_of_an_enrolled_unrevoked_key() {
    let cli = Cli::with_keys();
    cli.ok(&["key", "new", "--name", "auditor", "--out", "auditor.key"]);
    cli.ok(&["key", "enroll", "--pub", "auditor.key.pub", "--roles", "auditor", "--signer", &admin_key(&cli)]);
    let server = Server::start(&cli, "127.0.0.1:0", &[]);
    let url = server.url.clone();
    // Every route exists; only /healthz is open.
    for (method, path) in tidemark_server::ROUTES {
        let path = path.replace("{seq}", "0");
        let status = if *method == "get" { get(&url, &path, None).0 } else { post(&url, "application/json", "").0 };
        let want = match (*method, path.as_str()) {
            (_, "/healthz") => 200,
            ("post", _) => 400,
            _ => 401,
        };
        assert_eq!(status, want, "{method} {path}");
    }
    let auditor = token(&cli, "auditor.key");
    let (status, body) = get(&url, "/v1/entries?kind=key.enrolled", Some(&auditor));
    assert_eq!(status, 200, "{body}");
    let page: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["entries"].as_array().unwrap().len(), 3);
    let (status, body) = get(&url, "/v1/entries/1", Some(&auditor));
    assert_eq!(status, 200);
    let entry: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(entry["inclusion"]["leafIdx"], 1);
    assert_eq!(get(&url, "/v1/entries/99", Some(&auditor)).0, 404);
    assert_eq!(get(&url, "/v1/proof/consistency?from=1", Some(&auditor)).0, 200);
    let (status, body) = get(&url, "/v1/audit?kind=key.enrolled", Some(&auditor));
    assert_eq!(status, 200, "{body}");
    let audit: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(audit["events"].as_array().unwrap().len(), 3);
    assert_eq!(audit["events"][0]["actor_name"], "admin");
    assert_eq!(audit["events"][0]["actor_roles"], "admin");
    let (status, body) = get(&url, "/v1/custody?artifact=pg:main/wal/000000010000000000000001", Some(&auditor));
    assert_eq!(status, 200, "{body}");
    let custody =
        cli.ok(&["custody", "--ledger", &url, "--token", &auditor, "--json", "pg:main/wal/000000010000000000000001"]);
    assert_eq!(serde_json::from_str::<Value>(&custody).unwrap(), json!([]));
    // `log` over the URL pages through /v1/entries and prints what a local log prints.
    let remote_log = cli.ok(&["log", "--ledger", &url, "--token", &auditor, "--json", "--kind", "key.enrolled"]);
    assert_eq!(remote_log.lines().count(), 3, "{remote_log}");
    let table = cli.ok(&["log", "--ledger", &url, "--token", &auditor, "--limit", "2"]);
    assert!(table.lines().nth(1).unwrap().contains("ledger.genesis") && table.lines().count() == 3, "{table}");
    let (_, vkey) = get(&url, "/v1/ledger-key", Some(&auditor));
    assert_eq!(vkey.trim(), cli.ok(&["key", "show", "--ledger-key", "--ledger", &url, "--token", &auditor]).trim());
    assert_eq!(get(&url, "/v1/keys", Some("tmk1.garbage.x")).0, 401);
    let stranger = SecretKey::from_seed("stranger", [77; 32]);
    std::fs::write(cli.path("stranger.key"), stranger.to_file_text()).unwrap();
    let (status, body) = get(&url, "/v1/keys", Some(&token(&cli, "stranger.key")));
    assert_eq!(status, 401);
    assert!(body.contains("not enrolled"), "{body}");
    // Revoking the key revokes its tokens at once.
    cli.ok(&[
        "key",
        "revoke",
        "--ledger",
        &url,
        "--pub",
        "auditor.key.pub",
        "--reason",
        "left",
        "--signer",
        &admin_key(&cli),
    ]);
    let (status, body) = get(&url, "/v1/keys", Some(&auditor));
    assert_eq!(status, 401);
    assert!(body.contains("revoked"), "{body}");
    server.stop();
}

#[test]
fn local_writes_are_pointed_at_the_running_server() {
    let cli = Cli::with_keys();
    let server = Server::start(&cli, "127.0.0.1:0", &[]);
    let r = cli.run_with_input(&["append", "--signer", "agent.key"], &format!("{}\n", json!({"kind": "pg.position", "body": {"component": "pg:main", "lsn": "0/1", "timeline": 1, "observed_at": "2026-11-23T02:00:00.000000Z"}})));
    assert_eq!(r.code, 5, "{}", r.stderr);
    assert!(r.stderr.contains(&server.url) && r.stderr.contains("held by `tidemark serve`"), "{}", r.stderr);
    let through = cli.run_with_input(&["append", "--ledger", &server.url, "--signer", "agent.key"], &format!("{}\n", json!({"kind": "pg.position", "body": {"component": "pg:main", "lsn": "0/1", "timeline": 1, "observed_at": "2026-11-23T02:00:00.000000Z"}})));
    assert_eq!((through.code, through.stdout.as_str()), (0, "3\n"), "{}", through.stderr);
    server.stop();
}

#[test]
fn the_spool_keeps_events_while_the_server_is_down_and_delivers_them_once_in_order() {
    let cli = Cli::with_keys();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let key = agent(&cli);
    let spool = cli.path("spool");
    let spool = spool.to_str().unwrap();
    let mut sent = Vec::new();
    for n in 0..3 {
        let batch: String = (0..4).map(|i| position(&key, n * 10 + i).to_json_line() + "\n").collect();
        sent.extend((0..4).map(|i| position(&key, n * 10 + i).event.id.to_string()));
        let r = cli.run_with_input(&["append", "--ledger", &url, "--spool", spool], &batch);
        assert_eq!(r.code, 0, "unreachable server + spool still succeeds: {}", r.stderr);
        assert!(r.stderr.contains("spooled 4 events"), "{}", r.stderr);
    }
    let without =
        cli.run_with_input(&["append", "--ledger", &url], &format!("{}\n", position(&key, 99).to_json_line()));
    assert_eq!(without.code, 1);
    assert!(without.stderr.contains("--spool"), "{}", without.stderr);

    let server = Server::start(&cli, &format!("127.0.0.1:{port}"), &[]);
    let out = cli.ok(&["spool", "flush", "--ledger", &url, "--spool", spool]);
    assert!(out.contains("delivered 12 events in 3 batches"), "{out}");
    let out = cli.ok(&["spool", "flush", "--ledger", &url, "--spool", spool]);
    assert!(out.contains("delivered 0 events"), "{out}");
    let tok = token(&cli, "agent.key");
    let (_, body) = get(&url, "/v1/entries?kind=pg.position", Some(&tok));
    let ids: Vec<String> = serde_json::from_str::<Value>(&body).unwrap()["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"]["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, sent, "delivered exactly once, in spool order");

    // Spooled while down again; the next write through the same spool delivers it first.
    let server_log = server.stop();
    assert!(server_log.contains("stopped"));
    let r = cli.run_with_input(
        &["append", "--ledger", &url, "--spool", spool],
        &format!("{}\n", position(&key, 50).to_json_line()),
    );
    assert_eq!(r.code, 0);
    let server = Server::start(&cli, &format!("127.0.0.1:{port}"), &[]);
    let r = cli.run_with_input(
        &["append", "--ledger", &url, "--spool", spool, "--json"],
        &format!("{}\n", position(&key, 51).to_json_line()),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("delivered 1 spooled events first"), "{}", r.stderr);
    let seq: Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(seq["seq"], 3 + 12 + 1, "the spooled event came first");
    server.stop();
}

/// Writers hammer the server while it receives SIGTERM: every acknowledged
/// event survives, and the ledger verifies.
#[test]
fn sigterm_finishes_in_flight_batches_and_loses_nothing_acknowledged() {
    let cli = Cli::with_keys();
    let server = Server::start(&cli, "127.0.0.1:0", &[]);
    let url = server.url.clone();
    let key = Arc::new(agent(&cli));
    let acked: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let writers: Vec<_> = (0..4u64)
        .map(|w| {
            let (url, key, acked) = (url.clone(), key.clone(), acked.clone());
            std::thread::spawn(move || {
                let client = tidemark_client::Client::new(&url, None);
                for b in 0..10_000u64 {
                    let batch: Vec<SignedEvent> =
                        (0..50).map(|i| position(&key, w * 10_000_000 + b * 50 + i)).collect();
                    match client.append(&batch) {
                        Ok(results) => {
                            let mut a = acked.lock().unwrap();
                            for (e, r) in batch.iter().zip(results) {
                                a.insert(e.event.id.to_string(), r.seq);
                            }
                        }
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let log = server.stop();
    for w in writers {
        w.join().unwrap();
    }
    assert!(log.contains("writer stopped: queue drained"), "{log}");
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 100, "the writers got going before the signal: {}", acked.len());
    assert_eq!(cli.run(&["verify"]).code, 0);
    let logged: BTreeMap<String, u64> = cli
        .ok(&["log", "--json", "--kind", "pg.position"])
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["event"]["id"].as_str().unwrap().to_owned(), v["seq"].as_u64().unwrap())
        })
        .collect();
    for (id, seq) in &acked {
        assert_eq!(logged.get(id), Some(seq), "acknowledged {id} lost");
    }
    eprintln!("{} events acknowledged before SIGTERM, all present", acked.len());
}

/// Bounded load on loopback: concurrent writers (batches of 1000) and
/// readers, no errors, everything acknowledged present, ledger verifies.
#[test]
fn load_concurrent_writers_and_readers() {
    const WRITERS: u64 = 3;
    const BATCHES_PER_WRITER: u64 = 6;
    let cli = Cli::with_keys();
    let server = Server::start(&cli, "127.0.0.1:0", &[]);
    let url = server.url.clone();
    let key = Arc::new(agent(&cli));
    let tok = token(&cli, "agent.key");
    let batches: Vec<Vec<Vec<SignedEvent>>> = (0..WRITERS)
        .map(|w| {
            (0..BATCHES_PER_WRITER)
                .map(|b| (0..1000).map(|i| position(&key, w * 1_000_000 + b * 1000 + i)).collect())
                .collect()
        })
        .collect();
    let total: usize = batches.iter().flatten().map(Vec::len).sum();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (url, tok, done) = (url.clone(), tok.clone(), done.clone());
            std::thread::spawn(move || {
                let mut reads = 0;
                while !done.load(std::sync::atomic::Ordering::Relaxed) && reads < 2000 {
                    assert_eq!(get(&url, "/v1/entries?limit=50&kind=pg.position", Some(&tok)).0, 200);
                    assert_eq!(get(&url, "/v1/checkpoint", Some(&tok)).0, 200);
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    let started = Instant::now();
    let writers: Vec<_> = batches
        .into_iter()
        .map(|mine| {
            let url = url.clone();
            std::thread::spawn(move || {
                let client = tidemark_client::Client::new(&url, None);
                mine.iter().map(|b| client.append(b).expect("no write errors under load").len()).sum::<usize>()
            })
        })
        .collect();
    let written: usize = writers.into_iter().map(|w| w.join().unwrap()).sum();
    let secs = started.elapsed().as_secs_f64();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads: usize = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert_eq!(written, total);
    assert_eq!(tree_size(&url, &tok), 3 + total as u64);
    eprintln!(
        "load: {total} events over HTTP in {secs:.2}s = {:.0} events/s (debug build) with {reads} read pairs",
        total as f64 / secs
    );
    server.stop();
    assert_eq!(cli.run(&["verify"]).code, 0);
}

#[test]
fn a_slow_client_is_cut_off() {
    let cli = Cli::with_keys();
    let server = Server::start(&cli, "127.0.0.1:0", &["--header-read-timeout-secs", "1"]);
    let addr = server.url.trim_start_matches("http://").to_owned();
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let _ = stream.read_to_end(&mut buf);
    assert!(started.elapsed() < Duration::from_secs(5), "the connection was closed by the header timeout");
    server.stop();
}

#[test]
fn an_oversized_request_head_is_refused() {
    let cli = Cli::with_keys();
    let server = Server::start(&cli, "127.0.0.1:0", &[]);
    let mut stream = std::net::TcpStream::connect(server.url.trim_start_matches("http://")).unwrap();
    let big = "x".repeat(tidemark_server::MAX_HEADER_BYTES + 6 * 1024);
    // The server may close before the whole head is written: only its answer matters.
    let _ = write!(stream, "GET /v1/keys HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: {big}\r\n\r\n");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "an oversized head gets 431: {answer}");
    // The server is unharmed.
    assert_eq!(get(&server.url, "/healthz", None).0, 200);
    server.stop();
}

/// An auditor works on a running ledger through its URL while writers go on
/// appending: verify, export + verify-export, proofs, the key registry and
/// checkpoints all answer, and agree with the same commands on the stopped
/// ledger at the same tree size.
#[test]
fn a_live_ledger_is_verified_exported_and_proven_through_its_url() {
    let cli = Cli::with_keys();
    let server = Server::start(&cli, "127.0.0.1:0", &[]);
    let url = server.url.clone();
    let key = Arc::new(agent(&cli));
    let auditor = token(&cli, "operator.key");
    let client = tidemark_client::Client::new(&url, None);
    client.append(&(0..3000).map(|i| position(&key, i)).collect::<Vec<_>>()).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (url, key, stop) = (url.clone(), key.clone(), stop.clone());
        std::thread::spawn(move || {
            let client = tidemark_client::Client::new(&url, None);
            let mut n = 10_000u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                client.append(&(n..n + 200).map(|i| position(&key, i)).collect::<Vec<_>>()).unwrap();
                n += 200;
            }
            n - 10_000
        })
    };
    let remote = |args: &[&str]| {
        let r = cli.run_remote(&url, &auditor, "operator.key", &[], args);
        assert_eq!(r.code, 0, "tidemark {args:?} through the server: {}{}", r.stdout, r.stderr);
        r.stdout
    };
    let verdict: Value = serde_json::from_str(&remote(&["verify", "--json"])).unwrap();
    assert!(verdict["failure"].is_null(), "{verdict}");
    let verified_size = verdict["size"].as_u64().unwrap();
    assert!(verified_size >= 3003, "{verdict}");
    assert_eq!(verdict["entries_checked"].as_u64(), Some(verified_size));

    let exported: Value = serde_json::from_str(&remote(&["export", "--all", "--out", "live.tar", "--json"])).unwrap();
    let export_size = exported["tree_size"].as_u64().unwrap();
    assert_eq!(exported["selected_entries"].as_u64(), Some(export_size));
    remote(&["export", "--component", "pg:main", "--out", "live-dir"]);
    let vkey = remote(&["key", "show", "--ledger-key"]).trim().to_owned();
    for path in ["live.tar", "live-dir"] {
        let r = cli.run(&["verify-export", path, "--ledger-key", &vkey]);
        assert_eq!(r.code, 0, "verify-export {path}: {}{}", r.stdout, r.stderr);
        assert!(r.stdout.contains("VERIFIED"), "{}", r.stdout);
    }
    let size_text = export_size.to_string();
    let proof_live = remote(&["proof", "inclusion", "--seq", "1500", "--size", &size_text]);
    let consistency_live = remote(&["proof", "consistency", "--from", "3", "--to", &size_text]);
    let keys_live = remote(&["key", "list", "--json"]);
    let checkpoint_live = remote(&["checkpoint", "--size", &size_text]);
    let verified_checkpoint = remote(&["checkpoint", "--size", &verified_size.to_string()]);

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let appended_meanwhile = writer.join().unwrap();
    assert!(appended_meanwhile > 0, "the writer appended while the auditor read");
    server.stop();

    assert_eq!(cli.ok(&["proof", "inclusion", "--seq", "1500", "--size", &size_text]), proof_live);
    assert_eq!(cli.ok(&["proof", "consistency", "--from", "3", "--to", &size_text]), consistency_live);
    assert_eq!(cli.ok(&["key", "list", "--json"]), keys_live);
    assert_eq!(cli.ok(&["checkpoint", "--size", &size_text]), checkpoint_live);
    let root_hex = {
        let b64 = verified_checkpoint.lines().nth(2).unwrap();
        use base64::Engine as _;
        hex::encode(base64::engine::general_purpose::STANDARD.decode(b64).unwrap())
    };
    assert_eq!(verdict["root"].as_str(), Some(root_hex.as_str()), "the live verdict's root is the checkpoint's");
    let local: Value = serde_json::from_str(&cli.ok(&["verify", "--json"])).unwrap();
    assert!(local["failure"].is_null(), "{local}");
    assert!(local["size"].as_u64().unwrap() > verified_size);
}

/// Every error answer is an RFC 9457 problem document, whichever layer made
/// it: unknown routes and methods, extractor rejections, bounds the OpenAPI
/// document states, an unknown group on any of its routes, oversized bodies.
#[test]
fn every_error_answer_is_a_problem_document() {
    let cli = Cli::with_keys();
    let server = Server::start(&cli, "127.0.0.1:0", &[]);
    let url = server.url.clone();
    let tok = token(&cli, "operator.key");
    let problem = |status: u16, body: &str, needle: &str| {
        let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
        assert_eq!(v["status"], status, "{v}");
        assert!(v["type"].as_str().unwrap().starts_with("https://tidemark.dev/problems/"), "{v}");
        assert!(v["detail"].as_str().unwrap().contains(needle), "{needle:?} in {v}");
    };
    for (path, status, needle) in [
        ("/v1/nope", 404, "no route /v1/nope"),
        ("/v1/entries?limit=abc", 400, "invalid digit"),
        ("/v1/entries?limit=10001", 400, "outside 1..=10000"),
        ("/v1/entries?limit=0", 400, "outside 1..=10000"),
        ("/v1/entries/zz", 400, "zz"),
        ("/v1/groups/nosuch", 404, "no group named"),
        ("/v1/groups/nosuch/recovery-points", 404, "no group named"),
        ("/v1/groups/nosuch/plan?at=2026-01-01T00:00:00Z", 404, "no group named"),
        ("/v1/groups/nosuch/timeline", 404, "no group named"),
        ("/v1/export", 400, "name what to export"),
        ("/v1/export?all=true&component=pg:main", 400, "name one selection"),
    ] {
        let mut r =
            http().get(&format!("{url}{path}")).header("authorization", &format!("Bearer {tok}")).call().unwrap();
        assert_eq!(r.status().as_u16(), status, "{path}");
        assert_eq!(r.headers()["content-type"], "application/problem+json", "{path}");
        problem(status, &r.body_mut().read_to_string().unwrap(), needle);
    }
    let mut r = http().delete(&format!("{url}/v1/events")).call().unwrap();
    assert_eq!(r.status().as_u16(), 405);
    assert_eq!(r.headers()["allow"], "POST");
    problem(405, &r.body_mut().read_to_string().unwrap(), "DELETE is not allowed");
    // Refused from its Content-Length before the body is read: read the answer off the socket.
    let mut stream = std::net::TcpStream::connect(url.trim_start_matches("http://")).unwrap();
    write!(
        stream,
        "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        tidemark_server::MAX_BODY_BYTES + 1
    )
    .unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("content-type: application/problem+json"), "{answer}");
    problem(413, answer.split("\r\n\r\n").nth(1).unwrap(), "over 16777216 bytes");
    server.stop();
}
