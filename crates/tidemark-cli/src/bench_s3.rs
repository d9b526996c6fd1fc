//! `tidemark bench --s3`: the S3 projection at scale — ingest of object
//! versions with key histories maintained, the manifest at T streamed over
//! every key, "restorable at T?" from the summary, one more version.

use std::time::Instant;

use rayon::prelude::*;
use serde_json::json;
use tidemark_core::event::Event;
use tidemark_core::{EventId, SecretKey, SignedEvent, Timestamp};
use tidemark_store::Ledger;

const T0: i64 = 1_790_000_000;

pub(crate) fn version(agent: &SecretKey, i: u64, keys: u64) -> SignedEvent {
    // Version i belongs to key i % keys; versions of a key are 1 s apart per round.
    let key = format!("uploads/{:08}.bin", i % keys);
    let round = i / keys;
    let lm = Timestamp::from_unix_seconds(T0 + (round * keys + i % keys) as i64 / 10);
    let draft = json!({"kind": "s3.object_version", "body": {"component": "s3:bench", "key": key,
        "version_id": format!("{:032x}", blake3::hash(&i.to_le_bytes()).as_bytes()[0..16].iter().fold(0u128, |a, b| (a << 8) | u128::from(*b))),
        "etag": format!("\"{}\"", &blake3::hash(&i.to_be_bytes()).to_hex()[..32]), "size_bytes": 1000 + i % 5000,
        "last_modified": lm, "is_delete_marker": false, "listing_position": 0,
        "first_seen_at": Timestamp::from_unix_seconds(T0 + 1_000_000)}});
    // Distinct from `bench --pg`'s ids (`bench --group` ingests both).
    let mut random = [b'S', 0, 0, 0, 0, 0, 0, 0, 0, 0];
    random[2..].copy_from_slice(&i.to_be_bytes());
    Event::from_draft(draft, agent.actor_id(), EventId::new_v7(1_790_000_000_000 + i, random), lm)
        .expect("bench events are valid")
        .sign(agent)
}

pub fn run(
    versions: u64,
    keys: u64,
    scratch: &std::path::Path,
    new_ledger: &dyn Fn(&std::path::Path) -> anyhow::Result<Ledger>,
    admin: &SecretKey,
    agent: &SecretKey,
) -> anyhow::Result<String> {
    let dir = scratch.join("s3");
    let mut ledger = new_ledger(&dir)?;
    let register = json!({"kind": "component.registered", "body": {"component": "s3:bench", "s3": {"endpoint": "https://s3.amazonaws.com", "bucket": "bench", "region": "us-east-1"}}});
    let registered =
        Event::from_draft(register, admin.actor_id(), EventId::new_v7(1, [7; 10]), Timestamp::from_unix_seconds(T0))
            .expect("valid")
            .sign(admin);
    ledger.append(vec![registered], crate::util::now())?;
    let setup = [
        json!({"kind": "s3.versioning", "body": {"component": "s3:bench", "status": "enabled", "observed_at": Timestamp::from_unix_seconds(T0)}}),
    ];
    let e: Vec<SignedEvent> = setup
        .iter()
        .map(|d| {
            Event::from_draft(
                d.clone(),
                agent.actor_id(),
                EventId::new_v7(1, [8; 10]),
                Timestamp::from_unix_seconds(T0),
            )
            .expect("valid")
            .sign(agent)
        })
        .collect();
    ledger.append(e, crate::util::now())?;
    let started = Instant::now();
    let chunk = 100_000;
    let mut from = 0;
    while from < versions {
        let to = (from + chunk).min(versions);
        let batch: Vec<SignedEvent> = (from..to).into_par_iter().map(|i| version(agent, i, keys)).collect();
        crate::bench::ingest(&mut ledger, batch, 1000)?;
        eprintln!("bench --s3: {to} of {versions} versions");
        from = to;
    }
    let ingest_rate = versions as f64 / started.elapsed().as_secs_f64();
    let end = Timestamp::from_unix_seconds(T0 + versions as i64 / 10 + 1);
    let done = json!({"kind": "s3.scan_complete", "body": {"component": "s3:bench", "complete_through": end,
        "started_at": end, "finished_at": end, "versions_listed": versions}});
    let e = Event::from_draft(done, agent.actor_id(), EventId::new_v7(2, [8; 10]), end).expect("valid").sign(agent);
    ledger.append(vec![e], crate::util::now())?;

    // The manifest at a T in the middle of the history, streamed over every key (twice; the second warm).
    let mid = Timestamp::from_unix_seconds(T0 + versions as i64 / 20);
    let mut rates = Vec::new();
    let mut summary = None;
    for _ in 0..2 {
        let q = Instant::now();
        let mut lines = 0u64;
        let s = ledger.s3_manifest("s3:bench", mid, 0, &mut |_| {
            lines += 1;
            Ok(())
        })?;
        rates.push((lines, keys as f64 / q.elapsed().as_secs_f64(), q.elapsed().as_secs_f64()));
        summary = Some(s);
    }
    let summary = summary.expect("ran");
    let mut answer_us = Vec::new();
    for k in 0..1000 {
        let at = Timestamp::from_unix_seconds(T0 + (k * versions as i64 / 10_000) % (versions as i64 / 10));
        let q = Instant::now();
        ledger.s3_answer("s3:bench", at)?;
        answer_us.push(q.elapsed().as_secs_f64() * 1e6);
    }
    answer_us.sort_by(f64::total_cmp);
    let q = Instant::now();
    ledger.append(vec![version(agent, versions, keys)], crate::util::now())?;
    let append_ms = q.elapsed().as_secs_f64() * 1e3;
    Ok(format!(
        "| measure | value |\n|---|---|\n\
         | synthetic bucket | {versions} object versions over {keys} keys |\n\
         | ingest with key histories maintained | {ingest_rate:.0} versions/s (batches of 1000, one flush each) |\n\
         | manifest at T over every key (cold) | {:.2} s = {:.0} keys/s ({} lines: {} restore, {} remove) |\n\
         | manifest at T over every key (warm) | {:.2} s = {:.0} keys/s |\n\
         | restorable at T? (1000 T) | p50 {:.1} µs, p99 {:.1} µs |\n\
         | append one version | {append_ms:.2} ms incl. flush |\n",
        rates[0].2,
        rates[0].1,
        rates[0].0,
        summary.keys_to_restore,
        summary.keys_to_remove,
        rates[1].2,
        rates[1].1,
        answer_us[answer_us.len() / 2],
        answer_us[answer_us.len() * 99 / 100],
    ))
}
