//! `tidemark bench --pg`: the PostgreSQL window projection at scale —
//! ingest with the projection maintained, "restorable at T?" answered from
//! the persisted state, one more segment moving the windows, reopen, memory.

use std::time::Instant;

use rayon::prelude::*;
use serde_json::{Value, json};
use tidemark_core::event::Event;
use tidemark_core::{EventId, SecretKey, SignedEvent, Timestamp};
use tidemark_lineage::pg::segment_name;
use tidemark_lineage::pg_plan::Target;
use tidemark_store::Ledger;

pub(crate) const SEGMENT_BYTES: u64 = 16 * 1024 * 1024;
/// Simulated seconds between archived segments.
const SEGMENT_EVERY_SECS: i64 = 10;
const T0: i64 = 1_790_000_000;

pub(crate) fn time_of(segno: u64) -> Timestamp {
    Timestamp::from_unix_seconds(T0 + segno as i64 * SEGMENT_EVERY_SECS)
}

pub(crate) fn lsn(segno: u64, offset: u64) -> String {
    let l = segno * SEGMENT_BYTES + offset;
    format!("{:X}/{:X}", l >> 32, l & 0xffff_ffff)
}

/// The synthetic events for segments `from..to`: each segment archived, a
/// position every 10 segments, a base backup every `backup_every` segments.
pub(crate) fn events(agent: &SecretKey, from: u64, to: u64, backup_every: u64) -> Vec<SignedEvent> {
    (from..to)
        .into_par_iter()
        .flat_map_iter(|i| {
            let name = segment_name(1, i, SEGMENT_BYTES);
            let mut drafts: Vec<Value> = vec![json!({"kind": "pg.wal_archived", "body": {"component": "pg:main",
                "timeline": 1, "segment": name, "size_bytes": SEGMENT_BYTES,
                "blake3": blake3::hash(&i.to_le_bytes()).to_hex().to_string(),
                "sha256": blake3::hash(&(i + 1).to_le_bytes()).to_hex().to_string(),
                "location": format!("/archive/{name}")}})];
            if i % 10 == 5 {
                drafts.push(json!({"kind": "pg.position", "body": {"component": "pg:main", "lsn": lsn(i, 0x1000),
                    "timeline": 1, "observed_at": time_of(i).saturating_add_micros(5_000_000)}}));
            }
            if i % backup_every == 1 {
                drafts.push(json!({"kind": "pg.base_backup", "body": {"component": "pg:main", "backup_id": format!("b{i}"),
                    "label": format!("b{i}"), "timeline": 1, "start_lsn": lsn(i, 0x28), "stop_lsn": lsn(i, 0x800),
                    "start_time": time_of(i), "stop_time": time_of(i).saturating_add_micros(1_000_000),
                    "size_bytes": 1_000_000_000u64, "location": format!("/backups/b{i}"), "tool": "pg_basebackup -Fp"}}));
            }
            drafts.into_iter().enumerate().map(move |(k, d)| {
                let mut random = [0u8; 10];
                random[1] = k as u8;
                random[2..].copy_from_slice(&i.to_be_bytes());
                let id = EventId::new_v7(1_790_000_000_000 + i, random);
                Event::from_draft(d, agent.actor_id(), id, time_of(i)).expect("bench events are valid").sign(agent)
            })
        })
        .collect()
}

pub(crate) fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

pub(crate) fn percentile(sorted_us: &[f64], p: f64) -> f64 {
    sorted_us[((sorted_us.len() as f64 - 1.0) * p) as usize]
}

pub fn run(
    segments: u64,
    backups: u64,
    scratch: &std::path::Path,
    new_ledger: &dyn Fn(&std::path::Path) -> anyhow::Result<Ledger>,
    agent: &SecretKey,
) -> anyhow::Result<String> {
    let dir = scratch.join("pg");
    let mut ledger = new_ledger(&dir)?;
    let backup_every = (segments / backups.max(1)).max(2);
    // Ingest with the projection maintained, in chunks to bound memory.
    let chunk = 100_000;
    let mut total_events = 0usize;
    let started = Instant::now();
    let mut from = 0;
    while from < segments {
        let to = (from + chunk).min(segments);
        let batch = events(agent, from, to, backup_every);
        total_events += batch.len();
        crate::bench::ingest(&mut ledger, batch, 1000)?;
        eprintln!("bench --pg: {to} of {segments} segments");
        from = to;
    }
    let ingest_rate = total_events as f64 / started.elapsed().as_secs_f64();
    // Ten holes reported by an archive audit split the windows.
    let mut holes = Vec::new();
    for k in 1..=10u64 {
        let segno = segments * k / 11;
        let artifact = format!("pg:main/wal/{}", segment_name(1, segno, SEGMENT_BYTES));
        let d = json!({"kind": "artifact.verified", "body": {"artifact": artifact, "method": "re-read", "outcome": "missing"}});
        let id = EventId::new_v7(1_800_000_000_000 + k, [9; 10]);
        holes.push(Event::from_draft(d, agent.actor_id(), id, time_of(segments)).expect("valid").sign(agent));
    }
    ledger.append(holes, crate::util::now())?;

    let cluster = ledger.pg_cluster("pg:main")?.ok_or_else(|| anyhow::anyhow!("no projection"))?;
    // "Restorable at T?" for random T over the whole history.
    let mut times = Vec::new();
    let mut restorable = 0;
    let span = segments as i64 * SEGMENT_EVERY_SECS;
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..2000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let at = Timestamp::from_unix_seconds(T0 + (x % span as u64) as i64);
        let q = Instant::now();
        let answer = ledger.pg_answer("pg:main", &Target::Time { at, timeline: None })?;
        times.push(q.elapsed().as_secs_f64() * 1e6);
        restorable += usize::from(answer.restorable);
    }
    times.sort_by(f64::total_cmp);
    let q = Instant::now();
    let report = ledger.pg_report("pg:main")?;
    let report_ms = q.elapsed().as_secs_f64() * 1e3;
    let windows = report.timelines.iter().map(|t| t.windows.len()).sum::<usize>();
    // One more segment: the newest window grows, nothing is replayed.
    let before = report.timelines[0].windows.last().map(|w| w.to_lsn);
    let one = events(agent, segments, segments + 1, u64::MAX);
    let q = Instant::now();
    ledger.append(one, crate::util::now())?;
    let append_ms = q.elapsed().as_secs_f64() * 1e3;
    let after = ledger.pg_report("pg:main")?.timelines[0].windows.last().map(|w| w.to_lsn);
    anyhow::ensure!(after > before, "the window did not move: {before:?} → {after:?}");
    drop(ledger);
    let q = Instant::now();
    let ledger = Ledger::open(&dir)?;
    let answer = ledger.pg_answer("pg:main", &Target::Time { at: time_of(segments / 2 + 3), timeline: None })?;
    let reopen_ms = q.elapsed().as_secs_f64() * 1e3;
    let _ = answer;
    Ok(format!(
        "| measure | value |\n|---|---|\n\
         | synthetic cluster | {segments} WAL segments (16 MiB), {} base backups, {} positions, 10 holes |\n\
         | ingest with the projection maintained | {ingest_rate:.0} events/s (batches of 1000, one flush each) |\n\
         | restorable at T? (2000 random T, {restorable} restorable) | mean {:.1} µs, p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs |\n\
         | full report (all windows, {windows} windows) | {report_ms:.2} ms |\n\
         | append one segment (window end moves) | {append_ms:.2} ms incl. flush |\n\
         | reopen + first answer (no replay) | {reopen_ms:.0} ms |\n\
         | projection state | {} runs, {} backups, {} bytes encoded |\n\
         | peak resident memory of the bench process | {} MiB |\n",
        cluster.backups().count(),
        segments / 10,
        times.iter().sum::<f64>() / times.len() as f64,
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times.last().copied().unwrap_or(0.0),
        cluster.run_count(),
        cluster.backups().count(),
        ledger.pg_cluster_encoded_len("pg:main")?,
        peak_rss_kib() / 1024,
    ))
}
