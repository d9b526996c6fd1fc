//! `tidemark bench`: the speed figures of docs/performance.md, measured on
//! the machine it runs on, as ratios of the raw Ed25519 batch-verify rate
//! (the physical limit for ingest here).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Args;
use rayon::prelude::*;
use serde_json::json;
use tidemark_core::event::Event;
use tidemark_core::keys::verify_batch;
use tidemark_core::merkle::verify_inclusion;
use tidemark_core::{EventId, PublicKey, SecretKey, SignedEvent, Timestamp};
use tidemark_store::{Genesis, Ledger};

use crate::exit;

#[derive(Args)]
pub struct BenchArgs {
    /// Entries in the large ledger used for sustained ingest, full verify, proofs and reopen.
    #[arg(long, default_value_t = 1_000_000)]
    entries: u64,
    /// Scratch directory (removed afterwards); default: a new directory under the system temp dir.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Also write the markdown table to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Instead: compare ingest through `tidemark serve` (HTTP, concurrent
    /// writers, batches of 1000) with library ingest, --entries events each.
    #[arg(long)]
    http: bool,
    /// Also export the whole large ledger and verify the export (one file per
    /// entry and per proof: needs about 5 KiB of disk per entry).
    #[arg(long)]
    export: bool,
    /// Instead: the PostgreSQL window projection with --pg-backups base backups
    /// over --entries WAL segments (a position every 10 segments).
    #[arg(long)]
    pg: bool,
    #[arg(long, default_value_t = 1000)]
    pg_backups: u64,
    /// Instead: the S3 projection with --entries object versions over --s3-keys keys.
    #[arg(long)]
    s3: bool,
    #[arg(long, default_value_t = 200_000)]
    s3_keys: u64,
    /// Instead: a group over --entries WAL segments (--pg-backups backups) and
    /// --group-versions object versions (--s3-keys keys) with --group-markers markers.
    #[arg(long)]
    group: bool,
    #[arg(long, default_value_t = 1_000_000)]
    group_versions: u64,
    #[arg(long, default_value_t = 10_000)]
    group_markers: u64,
    /// Instead: `tidemark append` of --entries NDJSON lines (signed, and drafts)
    /// against `Ledger::append_stream`, with the command's peak resident memory.
    #[arg(long)]
    append: bool,
    /// Concurrent HTTP writers for --http.
    #[arg(long, default_value_t = 4)]
    writers: usize,
}

struct Setup {
    admin: SecretKey,
    agent: SecretKey,
}

pub(crate) fn agent_events(agent: &SecretKey, start: u64, n: u64) -> Vec<SignedEvent> {
    (start..start + n)
        .into_par_iter()
        .map(|i| {
            let segment = format!("00000001{:016X}", i);
            let draft = json!({"kind": "pg.wal_archived", "body": {
                "component": "pg:main", "timeline": 1, "segment": segment, "size_bytes": 16_777_216,
                "blake3": blake3::hash(&i.to_le_bytes()).to_hex().to_string(),
                "sha256": blake3::hash(&(i + 1).to_le_bytes()).to_hex().to_string(),
                "location": format!("/var/lib/pgbackrest/archive/main/{segment}")}});
            let mut random = [0u8; 10];
            random[2..].copy_from_slice(&i.to_be_bytes());
            let id = EventId::new_v7(1_790_000_000_000 + i / 64, random);
            Event::from_draft(draft, agent.actor_id(), id, Timestamp::from_unix_seconds(1_790_000_000 + i as i64))
                .expect("bench events are valid")
                .sign(agent)
        })
        .collect()
}

fn new_ledger(dir: &std::path::Path, s: &Setup) -> anyhow::Result<Ledger> {
    let mut l = Ledger::create(
        dir,
        Genesis {
            origin: "tidemark.bench/ledger",
            ledger_key: SecretKey::from_seed("ledger", [2; 32]),
            admin_key: &s.admin,
            id: EventId::new_v7(1, [0; 10]),
            now: crate::util::now(),
        },
    )?;
    let draft = json!({"kind": "key.enrolled", "body": {"public_key": s.agent.public_key().to_base64(), "name": "agent", "roles": ["agent"]}});
    let e =
        Event::from_draft(draft, s.admin.actor_id(), EventId::new_v7(2, [0; 10]), crate::util::now())?.sign(&s.admin);
    l.append(vec![e], crate::util::now())?;
    Ok(l)
}

/// Appends `events` in batches of `batch` through the pipelined library
/// path (verification one batch ahead of the writer); returns events per second.
pub fn ingest(l: &mut Ledger, events: Vec<SignedEvent>, batch: usize) -> anyhow::Result<f64> {
    let n = events.len();
    let mut batches: Vec<Vec<SignedEvent>> = Vec::with_capacity(n / batch + 1);
    let mut events = events.into_iter().peekable();
    while events.peek().is_some() {
        batches.push(events.by_ref().take(batch).collect());
    }
    let started = Instant::now();
    let mut failure = None;
    l.append_stream(batches.into_iter(), &crate::util::now, |r| match r {
        Ok(_) => true,
        Err(e) => {
            failure = Some(e);
            false
        }
    });
    let secs = started.elapsed().as_secs_f64();
    if let Some(e) = failure {
        return Err(e.into());
    }
    Ok(n as f64 / secs)
}

pub fn run(a: BenchArgs) -> anyhow::Result<ExitCode> {
    let scratch =
        a.dir.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("tidemark-bench-{}", std::process::id())));
    std::fs::create_dir_all(&scratch)?;
    let result = if a.http {
        run_http(&a, &scratch)
    } else if a.pg {
        let s = Setup { admin: SecretKey::from_seed("admin", [1; 32]), agent: SecretKey::from_seed("agent", [3; 32]) };
        crate::bench_pg::run(a.entries, a.pg_backups, &scratch, &|dir| new_ledger(dir, &s), &s.agent)
    } else if a.group {
        let s = Setup { admin: SecretKey::from_seed("admin", [1; 32]), agent: SecretKey::from_seed("agent", [3; 32]) };
        crate::bench_group::run(
            a.entries,
            a.pg_backups,
            a.group_versions,
            a.s3_keys,
            a.group_markers,
            &scratch,
            &|dir| new_ledger(dir, &s),
            &s.admin,
            &s.agent,
        )
    } else if a.append {
        let s = Setup { admin: SecretKey::from_seed("admin", [1; 32]), agent: SecretKey::from_seed("agent", [3; 32]) };
        crate::bench_append::run(a.entries, &scratch, &|dir| new_ledger(dir, &s), &s.agent)
    } else if a.s3 {
        let s = Setup { admin: SecretKey::from_seed("admin", [1; 32]), agent: SecretKey::from_seed("agent", [3; 32]) };
        crate::bench_s3::run(a.entries, a.s3_keys, &scratch, &|dir| new_ledger(dir, &s), &s.admin, &s.agent)
    } else {
        run_in(&a, &scratch)
    };
    let _ = std::fs::remove_dir_all(&scratch);
    let table = result?;
    println!("{table}");
    if let Some(out) = a.out {
        std::fs::write(out, &table)?;
    }
    Ok(exit::ok())
}

fn run_in(a: &BenchArgs, scratch: &std::path::Path) -> anyhow::Result<String> {
    let s = Setup { admin: SecretKey::from_seed("admin", [1; 32]), agent: SecretKey::from_seed("agent", [3; 32]) };
    let threads = rayon::current_num_threads();
    eprintln!("bench: {threads} threads, scratch {}", scratch.display());

    // 1. Raw batch verification (chunks of 256), one core and all cores.
    let sample = agent_events(&s.agent, 0, 51_200);
    let msgs: Vec<Vec<u8>> = sample.par_iter().map(|e| e.event.signing_message()).collect();
    let sigs: Vec<_> = sample.iter().map(|e| e.sig).collect();
    let keys: Vec<PublicKey> = vec![s.agent.public_key(); sample.len()];
    let verify_chunks = |parallel: bool| -> f64 {
        let started = Instant::now();
        let check = |(i, m): (usize, &[Vec<u8>])| {
            let refs: Vec<&[u8]> = m.iter().map(Vec::as_slice).collect();
            assert!(verify_batch(&refs, &sigs[i * 256..i * 256 + m.len()], &keys[i * 256..i * 256 + m.len()]));
        };
        if parallel {
            msgs.par_chunks(256).enumerate().for_each(check);
        } else {
            msgs.chunks(256).enumerate().for_each(check);
        }
        msgs.len() as f64 / started.elapsed().as_secs_f64()
    };
    // Median of three runs each: the rate on a shared two-core VM varies by ±15 %.
    let median = |f: &dyn Fn() -> f64| {
        let mut runs = [f(), f(), f()];
        runs.sort_by(f64::total_cmp);
        runs[1]
    };
    let raw_one = median(&|| verify_chunks(false));
    let raw_all = median(&|| verify_chunks(true));
    eprintln!("raw batch verify: {raw_one:.0}/s one core, {raw_all:.0}/s all cores");
    drop(sample);

    // 2. Durable ingest of pre-signed events at batch sizes 1 and 100 (fresh ledgers).
    let mut rows: Vec<(String, String, Option<f64>)> = Vec::new();
    rows.push((
        "ed25519 batch verify (256/batch), 1 core".into(),
        format!("{raw_one:.0} sig/s"),
        Some(raw_one / raw_all),
    ));
    rows.push((format!("ed25519 batch verify (256/batch), {threads} cores"), format!("{raw_all:.0} sig/s"), Some(1.0)));
    for (batch, n) in [(1usize, 2_000u64), (100, 50_000)] {
        let mut l = new_ledger(&scratch.join(format!("ingest-{batch}")), &s)?;
        let rate = ingest(&mut l, agent_events(&s.agent, 10_000_000, n), batch)?;
        eprintln!("ingest batch {batch}: {rate:.0}/s over {n} events");
        rows.push((
            format!("durable ingest, batch {batch} ({n} events)"),
            format!("{rate:.0} events/s"),
            Some(rate / raw_all),
        ));
    }

    // 3. Sustained ingest at batch 1000 while building the large ledger.
    let big_dir = scratch.join("large");
    let mut l = new_ledger(&big_dir, &s)?;
    let mut appended = 0u64;
    let mut ingest_secs = 0.0;
    while appended < a.entries {
        let n = (a.entries - appended).min(100_000);
        let events = agent_events(&s.agent, 20_000_000 + appended, n);
        ingest_secs += n as f64 / ingest(&mut l, events, 1000)?;
        appended += n;
        eprintln!("large ledger: {appended}/{}", a.entries);
    }
    let rate = a.entries as f64 / ingest_secs;
    rows.push((
        format!("durable ingest, batch 1000 ({} events, sustained)", a.entries),
        format!("{rate:.0} events/s"),
        Some(rate / raw_all),
    ));

    // 4. Full verify.
    let started = Instant::now();
    let report = l.verify(&mut |_| {})?;
    let secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(report.ok(), "verify failed on the benchmark ledger: {:?}", report.failure);
    let rate = l.size() as f64 / secs;
    rows.push((
        format!("full verify ({} entries)", l.size()),
        format!("{secs:.2} s = {rate:.0} entries/s"),
        Some(rate / raw_all),
    ));

    // 5. Inclusion proofs at full size.
    let size = l.size();
    let root = l.root();
    let probes = 10_000u64;
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let started = Instant::now();
    for _ in 0..probes {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let seq = x % size;
        let (_, proof, _) = l.inclusion_proof(seq, None)?;
        std::hint::black_box(proof);
    }
    let per_proof_us = started.elapsed().as_secs_f64() * 1e6 / probes as f64;
    let (_, proof, r) = l.inclusion_proof(size / 3, None)?;
    anyhow::ensure!(r == root && verify_inclusion(size / 3, size, &l.leaf_hash(size / 3)?, &proof, &root).is_ok());
    rows.push((format!("inclusion proof at {size} entries (mean of {probes})"), format!("{per_proof_us:.1} µs"), None));

    // 6. Reopen.
    drop(l);
    let started = Instant::now();
    let l = Ledger::open(&big_dir)?;
    let reopen_ms = started.elapsed().as_secs_f64() * 1e3;
    anyhow::ensure!(l.size() == size && l.root() == root);
    rows.push((format!("reopen at {size} entries"), format!("{reopen_ms:.1} ms"), None));
    let disk: u64 = walk_size(&big_dir);
    rows.push(("ledger size on disk".into(), format!("{:.0} MiB", disk as f64 / 1048576.0), None));

    // 7. Export everything, then verify the export offline.
    if a.export {
        let out = scratch.join("export");
        let started = Instant::now();
        let summary = tidemark_export::write_export(
            &l,
            &tidemark_export::Selector::All,
            &out,
            &[],
            crate::util::now(),
            &mut |_| {},
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        let secs = started.elapsed().as_secs_f64();
        let rate = summary.selected as f64 / secs;
        rows.push((
            format!("export --all ({} entries)", summary.selected),
            format!("{secs:.1} s = {rate:.0} entries/s"),
            Some(rate / raw_all),
        ));
        let verifier = l.note_verifier();
        drop(l);
        let started = Instant::now();
        let report = tidemark_export::verify_export(
            &out,
            &tidemark_export::VerifyOptions { verifier: &verifier, previous_checkpoint: None },
            &mut |_| {},
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        let secs = started.elapsed().as_secs_f64();
        anyhow::ensure!(report.ok(), "the benchmark export does not verify: {:?}", report.checks);
        let rate = report.entries as f64 / secs;
        rows.push((
            format!("verify-export ({} entries)", report.entries),
            format!("{secs:.1} s = {rate:.0} entries/s"),
            Some(rate / raw_all),
        ));
    }

    let mut table = String::from("| measurement | result | ratio to raw batch verify (all cores) |\n|---|---|---|\n");
    for (what, result, ratio) in rows {
        table.push_str(&format!("| {what} | {result} | {} |\n", ratio.map_or("—".into(), |r| format!("{r:.2}"))));
    }
    Ok(table)
}

fn run_http(a: &BenchArgs, scratch: &std::path::Path) -> anyhow::Result<String> {
    let s = Setup { admin: SecretKey::from_seed("admin", [1; 32]), agent: SecretKey::from_seed("agent", [3; 32]) };
    let n = a.entries;
    // Library, same events, same batch size.
    let mut l = new_ledger(&scratch.join("library"), &s)?;
    let library = ingest(&mut l, agent_events(&s.agent, 30_000_000, n), 1000)?;
    drop(l);
    eprintln!("library ingest: {library:.0}/s");
    // HTTP: a real server process, `writers` clients posting batches of 1000.
    let dir = scratch.join("http");
    drop(new_ledger(&dir, &s)?);
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args(["serve", "--ledger", dir.to_str().expect("UTF-8 path"), "--listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()?;
    let url = format!("http://127.0.0.1:{port}");
    let started_wait = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        anyhow::ensure!(started_wait.elapsed().as_secs() < 30, "the server did not start");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let events = agent_events(&s.agent, 40_000_000, n);
    // Bodies are encoded before the clock starts: the load generator shares
    // the two cores with the server, and its own JSON encoding is not the server's cost.
    let mut per_writer: Vec<Vec<(usize, String)>> = (0..a.writers).map(|_| Vec::new()).collect();
    for (k, chunk) in events.chunks(1000).enumerate() {
        let body: String = chunk.iter().map(|e| e.to_json_line() + "\n").collect();
        per_writer[k % a.writers].push((chunk.len(), body));
    }
    let started = Instant::now();
    let results: Vec<anyhow::Result<usize>> = std::thread::scope(|scope| {
        let handles: Vec<_> = per_writer
            .iter()
            .map(|mine| {
                let url = url.clone();
                scope.spawn(move || -> anyhow::Result<usize> {
                    let client = tidemark_client::Client::new(&url, None);
                    let mut n = 0;
                    for (count, body) in mine {
                        let results = client.append_ndjson(body)?;
                        anyhow::ensure!(results.len() == *count, "short reply");
                        n += count;
                    }
                    Ok(n)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("writer thread")).collect()
    });
    let secs = started.elapsed().as_secs_f64();
    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    child.wait()?;
    let mut total = 0;
    for r in results {
        total += r?;
    }
    anyhow::ensure!(total as u64 == n, "the server acknowledged {total} of {n} events");
    let http = n as f64 / secs;
    eprintln!("http ingest: {http:.0}/s");
    let mut table = String::from("| measurement | result | ratio to library ingest |\n|---|---|---|\n");
    table.push_str(&format!("| library ingest, batch 1000 ({n} events) | {library:.0} events/s | 1.00 |\n"));
    table.push_str(&format!(
        "| HTTP ingest, batch 1000, {} concurrent writers ({n} events) | {http:.0} events/s | {:.2} |\n",
        a.writers,
        http / library
    ));
    Ok(table)
}

fn walk_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| {
                    let p = e.path();
                    if p.is_dir() { walk_size(&p) } else { e.metadata().map(|m| m.len()).unwrap_or(0) }
                })
                .sum()
        })
        .unwrap_or(0)
}
