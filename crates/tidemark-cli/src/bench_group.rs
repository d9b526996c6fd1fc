//! `tidemark bench --group`: a group over a synthetic PostgreSQL cluster
//! (1,000 backups, a million WAL segments) and a synthetic bucket (a million
//! object versions), with 10,000 markers: recovery points, the latest
//! point, and a plan over every key, all from the persisted projections.

use std::time::Instant;

use rayon::prelude::*;
use serde_json::{Value, json};
use tidemark_core::event::Event;
use tidemark_core::{EventId, SecretKey, SignedEvent, Timestamp};
use tidemark_lineage::group::Latest;
use tidemark_lineage::group_plan::PlanRequest;
use tidemark_lineage::pg::segment_name;
use tidemark_lineage::pg_plan::PlanOptions;
use tidemark_store::Ledger;

use crate::bench_pg::{SEGMENT_BYTES, events, lsn, percentile, time_of};

fn sign(key: &SecretKey, n: u64, draft: Value, at: Timestamp) -> SignedEvent {
    Event::from_draft(draft, key.actor_id(), EventId::new_v7(1_900_000_000_000 + n, [6; 10]), at)
        .expect("valid")
        .sign(key)
}

/// Times a question `n` times; (mean, p99, max) in ms.
fn time(n: usize, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<(f64, f64, f64)> {
    let mut ms = Vec::with_capacity(n);
    for _ in 0..n {
        let q = Instant::now();
        f()?;
        ms.push(q.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    Ok((ms.iter().sum::<f64>() / n as f64, percentile(&ms, 0.99), ms.last().copied().unwrap_or(0.0)))
}

#[allow(clippy::too_many_arguments)]
pub fn run(
    segments: u64,
    backups: u64,
    versions: u64,
    keys: u64,
    markers: u64,
    scratch: &std::path::Path,
    new_ledger: &dyn Fn(&std::path::Path) -> anyhow::Result<Ledger>,
    admin: &SecretKey,
    agent: &SecretKey,
) -> anyhow::Result<String> {
    let dir = scratch.join("group");
    let mut ledger = new_ledger(&dir)?;
    let t0 = time_of(0);
    let end = time_of(segments);
    let topology = vec![
        json!({"kind": "component.registered", "body": {"component": "pg:main", "postgresql": {"system_identifier": "7300000000000000001", "wal_segment_size_bytes": SEGMENT_BYTES}}}),
        json!({"kind": "component.registered", "body": {"component": "s3:bench", "s3": {"endpoint": "https://s3.amazonaws.com", "bucket": "bench", "region": "us-east-1"}}}),
        json!({"kind": "group.defined", "body": {"group": "app", "components": ["pg:main", "s3:bench"], "max_skew_ms": 2000}}),
    ];
    let e: Vec<SignedEvent> = topology.into_iter().enumerate().map(|(i, d)| sign(admin, i as u64, d, t0)).collect();
    ledger.append(e, crate::util::now())?;
    let started = Instant::now();
    let backup_every = (segments / backups.max(1)).max(2);
    let chunk = 100_000;
    let mut from = 0;
    while from < segments {
        let to = (from + chunk).min(segments);
        crate::bench::ingest(&mut ledger, events(agent, from, to, backup_every), 1000)?;
        from = to;
    }
    let versioning =
        json!({"kind": "s3.versioning", "body": {"component": "s3:bench", "status": "enabled", "observed_at": t0}});
    ledger.append(vec![sign(agent, 10, versioning, t0)], crate::util::now())?;
    let mut from = 0;
    while from < versions {
        let to = (from + chunk).min(versions);
        let batch: Vec<SignedEvent> =
            (from..to).into_par_iter().map(|i| crate::bench_s3::version(agent, i, keys)).collect();
        crate::bench::ingest(&mut ledger, batch, 1000)?;
        from = to;
    }
    let done = json!({"kind": "s3.scan_complete", "body": {"component": "s3:bench", "complete_through": end,
        "started_at": end, "finished_at": end, "versions_listed": versions}});
    ledger.append(vec![sign(agent, 11, done, end)], crate::util::now())?;
    // Markers spread over the history, each pinning a position's LSN and the bucket at its time.
    let step = (segments / markers.max(1)).max(1);
    let marker_events: Vec<SignedEvent> = (0..markers)
        .into_par_iter()
        .map(|k| {
            let segno = 5 + k * step;
            let at = time_of(segno).saturating_add_micros(5_000_000);
            // As `tidemark mark` takes them: the bucket cut at a tick of S3's clock, with the evidence.
            let boundary = Timestamp::from_micros((at.as_micros().div_euclid(1_000_000) + 1) * 1_000_000);
            let probe = |lm: i64, sent: i64| json!({"version_id": format!("p{k}-{lm}"), "last_modified": boundary.saturating_add_micros(lm),
                "sent_at": at.saturating_add_micros(sent), "received_at": at.saturating_add_micros(sent + 3_000)});
            let clock = json!({"boundary": boundary, "before": probe(-1_000_000, 0), "after": probe(0, 4_000),
                "cut_returned_at": at.saturating_add_micros(12_000)});
            let d = json!({"kind": "marker.point", "body": {"group": "app", "marker_id": format!("m{k:05}"), "taken_at": at,
                "components": [{"component": "pg:main", "pg_lsn": lsn(segno, 0x1000), "pg_timeline": 1},
                    {"component": "s3:bench", "s3_watermark": boundary.saturating_add_micros(-1), "s3_clock": clock}]}});
            sign(agent, 100 + k, d, at)
        })
        .collect();
    crate::bench::ingest(&mut ledger, marker_events, 1000)?;
    // Ten holes split the windows and make the markers behind them unrestorable.
    let holes: Vec<SignedEvent> = (1..=10u64)
        .map(|k| {
            let artifact = format!("pg:main/wal/{}", segment_name(1, segments * k / 11, SEGMENT_BYTES));
            let d = json!({"kind": "artifact.verified", "body": {"artifact": artifact, "method": "re-read", "outcome": "missing"}});
            sign(agent, 20 + k, d, end)
        })
        .collect();
    ledger.append(holes, crate::util::now())?;
    let ingest_s = started.elapsed().as_secs_f64();

    let report = ledger.group_report("app")?;
    let restorable = report.markers.iter().filter(|m| m.restorable).count();
    let points = time(20, || ledger.group_report("app").map(|_| ()).map_err(Into::into))?;
    let latest_value = ledger.group_latest("app")?;
    let latest = time(200, || ledger.group_latest("app").map(|_| ()).map_err(Into::into))?;
    // What a `/metrics` scrape computes: every group's newest point and every component's state.
    let status = time(200, || ledger.recovery_status().map(|_| ()).map_err(Into::into))?;
    let options = PlanOptions {
        restore_command: "tidemark pg restore-wal --cluster {cluster} %f %p".into(),
        use_recovery_target_time: false,
    };
    // A plan at a correlated time late in the history: every key is in its manifest.
    let request = match &latest_value {
        Some(Latest::Time { at, .. }) => PlanRequest::Time(*at),
        Some(Latest::Marker { point }) => PlanRequest::Marker(point.id.clone()),
        None => anyhow::bail!("nothing restorable in the synthetic group"),
    };
    let mut keys_in_plan = 0u64;
    let plan = time(3, || {
        let p = ledger.group_plan("app", &request, &options)?.map_err(|r| anyhow::anyhow!("{}", r.join("; ")))?;
        keys_in_plan = p
            .body
            .components
            .iter()
            .map(|c| match c {
                tidemark_lineage::group_plan::ComponentPlan::S3(s) => s.keys_to_restore,
                _ => 0,
            })
            .sum();
        Ok(())
    })?;
    let serialized = time(3, || {
        let p = ledger.group_plan("app", &request, &options)?.map_err(|r| anyhow::anyhow!("{}", r.join("; ")))?;
        let text = serde_json::to_string_pretty(&p)?;
        anyhow::ensure!(!text.is_empty());
        Ok(())
    })?;
    Ok(format!(
        "| measure | value |\n|---|---|\n\
         | synthetic group | pg:main: {segments} WAL segments, {} base backups, 10 holes; s3:bench: {versions} versions over {keys} keys; {markers} markers ({restorable} restorable), {} correlated windows |\n\
         | setup ingest (everything above) | {ingest_s:.0} s |\n\
         | recovery-points --group (20 runs) | mean {:.2} ms, p99 {:.2} ms, max {:.2} ms |\n\
         | recovery-points --group --latest (200 runs) | mean {:.3} ms, p99 {:.3} ms, max {:.3} ms |\n\
         | the recovery metrics of a `/metrics` scrape (`recovery_status`, 200 runs) | mean {:.3} ms, p99 {:.3} ms, max {:.3} ms |\n\
         | plan --group for the latest point ({keys_in_plan} keys to restore; 3 runs) | mean {:.0} ms, max {:.0} ms |\n\
         | the same plan, serialised as the CLI writes it | mean {:.0} ms, max {:.0} ms |\n\
         | peak resident memory of the bench process | {} MiB |\n",
        segments / backup_every,
        report.windows.len(),
        points.0,
        points.1,
        points.2,
        latest.0,
        latest.1,
        latest.2,
        status.0,
        status.1,
        status.2,
        plan.0,
        plan.2,
        serialized.0,
        serialized.2,
        crate::bench_pg::peak_rss_kib() / 1024,
    ))
}
