//! The agent's jobs, by name, run once or on their schedules: each calls
//! the same `tidemark-ops` function as its CLI command, with everything
//! taken from the configuration.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::Agent;
use super::config::parse_duration;
use crate::{Env, LedgerApi, NoProgress, OpsError};

/// A job of the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Job {
    /// A position of every PostgreSQL cluster (`pg watch`, once).
    Positions,
    /// A scan of every bucket (`s3 scan`).
    Scans,
    /// A marker of the group (`mark`), snapshots taken first.
    Marks,
    /// The archive audit of every cluster (`pg check-archive`).
    ArchiveChecks,
    /// A restore test: a point picked within the window, drilled, checked, cleaned up (`drill`).
    RestoreTests,
}

impl Job {
    pub const ALL: [Job; 5] = [Job::Positions, Job::Scans, Job::Marks, Job::ArchiveChecks, Job::RestoreTests];

    /// The job's name (as in `[schedule]` and `agent run-once`).
    pub fn name(self) -> &'static str {
        match self {
            Job::Positions => "positions",
            Job::Scans => "scans",
            Job::Marks => "marks",
            Job::ArchiveChecks => "archive_checks",
            Job::RestoreTests => "restore_tests",
        }
    }

    pub fn from_name(name: &str) -> Option<Job> {
        Job::ALL.into_iter().find(|j| j.name() == name.replace('-', "_"))
    }

    /// How often the configuration runs it (none: it does not).
    pub fn interval(self, agent: &Agent) -> Option<Duration> {
        let s = &agent.config().schedule;
        let v = match self {
            Job::Positions => &s.positions,
            Job::Scans => &s.scans,
            Job::Marks => &s.marks,
            Job::ArchiveChecks => &s.archive_checks,
            Job::RestoreTests => &s.restore_tests,
        };
        v.as_deref().and_then(|v| parse_duration(v).ok()).filter(|d| !d.is_zero())
    }
}

/// What one run of a job did, in a line.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Ran {
    pub job: &'static str,
    /// One line per component (what was recorded, or why not).
    pub done: Vec<String>,
}

/// Runs a job once over every component it concerns; the first failure
/// ends it. `run` numbers the runs of one agent (a restore test's seed is
/// the configured one plus it).
pub fn run_once(agent: &Agent, ledger: &mut dyn LedgerApi, env: &dyn Env, job: Job, run: u64) -> Result<Ran, OpsError> {
    let c = agent.config();
    let mut done = Vec::new();
    match job {
        Job::Positions => {
            let key = agent.agent_key()?;
            for pg in &c.postgresql {
                let db = tidemark_agents::pg_db::Db::connect(&agent.dsn(pg)?)?;
                let (o, r) = crate::pg::record_position(ledger, env, &key, &pg.component, &db)?;
                done.push(format!(
                    "{} at {} on timeline {}, entry {:?}",
                    pg.component,
                    o.lsn,
                    o.timeline,
                    r.last_seq()
                ));
            }
        }
        Job::Scans => {
            let key = agent.agent_key()?;
            for s3 in &c.s3 {
                let request = crate::s3_scan::ScanRequest {
                    bucket: agent.bucket(s3)?,
                    prefix: None,
                    clock_skew_ms: 1000,
                    proven_through: None,
                };
                done.push(crate::s3_scan::scan(ledger, env, &key, &request, &mut NoProgress)?.to_string());
            }
        }
        Job::Marks => {
            let key = agent.agent_key()?;
            for s in &c.snapshot {
                let status = std::process::Command::new("sh")
                    .arg("-c")
                    .arg(&s.command)
                    .status()
                    .map_err(|e| OpsError::Failed(format!("{}: running `{}`: {e}", s.component, s.command)))?;
                if !status.success() {
                    return Err(OpsError::Failed(format!("{}: `{}` failed ({status})", s.component, s.command)));
                }
            }
            let credentials = match c.s3.first() {
                Some(s3) => agent.bucket(s3)?.credentials,
                None => tidemark_s3::Credentials::Chain,
            };
            let request = crate::mark::MarkRequest {
                group: c.group.name.clone(),
                id: None,
                pg_dsns: c
                    .postgresql
                    .iter()
                    .map(|pg| Ok((Some(pg.component.clone()), agent.dsn(pg)?)))
                    .collect::<Result<_, OpsError>>()?,
                snapshot_files: c.snapshot.iter().map(|s| (s.component.clone(), agent.path(&s.file))).collect(),
                snapshot_ids: Vec::new(),
                s3_path_style: c.s3.iter().any(|s| s.path_style),
                s3_credentials: credentials,
                clock_skew_ms: 1000,
                quiesce: None,
                archive_timeout: Duration::from_secs(120),
            };
            let m = crate::mark::mark(ledger, env, &key, &request, &mut NoProgress)?;
            done.push(format!("marker {} at {}, entry {:?}", m.marker_id, m.at, m.entry));
        }
        Job::ArchiveChecks => {
            let key = agent.agent_key()?;
            for pg in &c.postgresql {
                let check = crate::pg::check_archive(ledger, env, &key, &pg.component, &mut NoProgress)?;
                done.push(format!("{}: {} sound, {} missing or corrupt", pg.component, check.ok, check.problems.len()));
            }
            let seed = (env.now().as_micros() as u64).wrapping_add(run);
            for s3 in &c.s3 {
                if c.archive_check.s3_sample > 0 {
                    let spec = agent.bucket(s3)?;
                    let r = crate::reread::sample_versions(ledger, env, &key, &spec, c.archive_check.s3_sample, seed)?;
                    done.push(format!("{}: {} sound, {} missing or corrupt", r.what, r.ok, r.problems.len()));
                }
            }
            if c.archive_check.snapshots && !c.snapshot.is_empty() {
                let r = crate::reread::reread_snapshots(ledger, env, &key, &c.group.name)?;
                done.push(format!("{}: {} sound, {} missing or corrupt", r.what, r.ok, r.problems.len()));
            }
        }
        Job::RestoreTests => done.push(restore_test(agent, ledger, env, run)?),
    }
    Ok(Ran { job: job.name(), done })
}

/// One restore test: the point picked (the seed recorded), the group plan,
/// the drill into scratch locations with the configured checks and the
/// restore-time target, clean-up, and `restore_test.selected` with
/// `drill.completed` in one batch. `run` numbers the tests of one agent
/// (the seed of each is the configured seed plus it).
pub fn restore_test(agent: &Agent, ledger: &mut dyn LedgerApi, env: &dyn Env, run: u64) -> Result<String, OpsError> {
    use tidemark_core::event::{EventBody, RestoreTestSelected, TestPick};
    let c = agent.config();
    let t = c.restore_test.as_ref().ok_or_else(|| OpsError::Usage("no [restore_test] section".into()))?;
    let key = agent.operator_key()?;
    let window = parse_duration(&t.window).map_err(OpsError::Usage)?;
    let pick = match t.pick {
        super::config::Pick::Latest => TestPick::Latest,
        super::config::Pick::Random => TestPick::Random,
    };
    let seed = t.seed.unwrap_or_else(|| env.now().as_micros() as u64).wrapping_add(run);
    let report = ledger.group_report(&c.group.name)?;
    let now = env.now();
    let window_ms = window.as_millis() as u64;
    let (point, candidates) = tidemark_lineage::restore_test::pick(&report.markers, now, window_ms, pick, seed)
        .ok_or_else(|| {
            OpsError::NotRestorable(format!(
                "group {}: no restorable marker within the last {}: nothing to test",
                c.group.name, t.window
            ))
        })?;
    let point_id = point.id.clone();
    let exe = std::env::current_exe().map_err(|e| OpsError::Failed(format!("this program's path: {e}")))?;
    let options = tidemark_lineage::pg_plan::PlanOptions {
        restore_command: format!(
            "{} pg restore-wal --cluster {{cluster}} --ledger {} %f %p",
            exe.display(),
            c.ledger.url
        ),
        use_recovery_target_time: false,
    };
    let plan = ledger
        .group_plan(&c.group.name, &tidemark_lineage::group_plan::PlanRequest::Marker(point_id.clone()), &options)?
        .map_err(|reasons| OpsError::NotRestorable(format!("{point_id}: {}", reasons.join("; "))))?;
    let selected = EventBody::RestoreTestSelected(RestoreTestSelected {
        group: tidemark_core::Name::parse(&c.group.name).map_err(OpsError::Usage)?,
        recovery_point: point_id.clone(),
        pick,
        window_ms,
        seed: (pick == TestPick::Random).then_some(seed),
        candidates,
    });
    let scratch_root = match &t.scratch {
        Some(p) => agent.path(p),
        None => std::env::temp_dir(),
    };
    std::fs::create_dir_all(&scratch_root).map_err(|e| OpsError::Failed(format!("{}: {e}", scratch_root.display())))?;
    let scratch = scratch_root.join(format!("tidemark-restore-test-{}-{}", c.group.name, now.as_micros()));
    std::fs::create_dir_all(&scratch).map_err(|e| OpsError::Failed(format!("{}: {e}", scratch.display())))?;
    let credentials = match c.s3.first() {
        Some(s3) => agent.bucket(s3)?.credentials,
        None => tidemark_s3::Credentials::Chain,
    };
    let drill = crate::restore::DrillPlan {
        group: c.group.name.clone(),
        checks: t.checks.clone(),
        scratch: scratch.clone(),
        s3_path_style: c.s3.iter().any(|s| s.path_style),
        s3_credentials: credentials,
        concurrency: 16,
        keep: false,
        rto_target: t.target.as_deref().map(parse_duration).transpose().map_err(OpsError::Usage)?,
        also_record: vec![selected],
    };
    let mut restore_env = vec![("TIDEMARK_LEDGER".to_owned(), c.ledger.url.clone())];
    if let Some(token) = agent.token()? {
        restore_env.push(("TIDEMARK_TOKEN".to_owned(), token));
    }
    let pg = crate::restore::PgRestore {
        process: tidemark_agents::pg_process::PgProcess { bin: t.pg_bin.clone(), run_as: t.run_as.clone() },
        user: t.pg_user.clone(),
        port: None,
        keep_archive_mode: false,
        recovery_timeout: t
            .recovery_timeout
            .as_deref()
            .map(parse_duration)
            .transpose()
            .map_err(OpsError::Usage)?
            .unwrap_or(Duration::from_secs(600)),
        restore_env,
    };
    let result = crate::restore::drill(ledger, env, &key, &plan, &drill, &pg, &mut NoProgress);
    // The scratch directory itself goes too, whatever happened.
    let _ = std::fs::remove_dir_all(&scratch);
    let drilled = result?;
    Ok(format!(
        "{} {point_id} ({} of {candidates} in the window): restored in {:.1} s, {}; entry {:?}",
        c.group.name,
        match pick {
            TestPick::Latest => "latest".to_owned(),
            TestPick::Random => format!("random, seed {seed}"),
        },
        drilled.restore_seconds,
        if drilled.passed { "passed" } else { "FAILED" },
        drilled.entry
    ))
}

/// One line of the agent's log.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LogLine {
    pub at: tidemark_core::Timestamp,
    pub job: &'static str,
    /// `ok`, `failed` (retried), `gave_up`, `skipped` (a run still going when the next was due), `stopped`.
    pub event: &'static str,
    pub detail: String,
    pub seconds: f64,
}

/// Counts of one job since the agent started.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Counts {
    pub runs: u64,
    pub failures: u64,
    pub skipped: u64,
    pub last_success: Option<tidemark_core::Timestamp>,
}

/// Rule: a failed run is retried after 1 s, 2 s, 4 s … but never later
/// than the job's next run is due; after that the next scheduled run is the retry.
pub fn backoff(attempt: u32, interval: Duration) -> Option<Duration> {
    let wait = Duration::from_secs(1u64 << attempt.min(16));
    (wait < interval).then_some(wait)
}

/// Runs `job` on its schedule until `stop`: a run that fails is retried
/// with [`backoff`]; ticks that pass while a run is still going are
/// skipped and counted; a stop lets the current run finish (so nothing is
/// left half done) and then returns.
pub fn run_scheduled(
    agent: &Agent,
    ledger: &mut dyn LedgerApi,
    env: &dyn Env,
    job: Job,
    interval: Duration,
    stop: &AtomicBool,
    log: &(dyn Fn(LogLine) + Sync),
) -> Counts {
    let mut counts = Counts::default();
    let started = Instant::now();
    let mut next = Duration::ZERO;
    while !stop.load(Ordering::SeqCst) {
        let elapsed = started.elapsed();
        if elapsed < next {
            std::thread::sleep((next - elapsed).min(Duration::from_millis(100)));
            continue;
        }
        let mut attempt = 0;
        loop {
            let t = Instant::now();
            counts.runs += 1;
            let result = run_once(agent, ledger, env, job, counts.runs - 1);
            let seconds = t.elapsed().as_secs_f64();
            match result {
                Ok(ran) => {
                    counts.last_success = Some(env.now());
                    log(LogLine { at: env.now(), job: job.name(), event: "ok", detail: ran.done.join("; "), seconds });
                    break;
                }
                Err(e) => {
                    counts.failures += 1;
                    let retry = backoff(attempt, interval).filter(|_| !stop.load(Ordering::SeqCst));
                    let event = if retry.is_some() { "failed" } else { "gave_up" };
                    log(LogLine { at: env.now(), job: job.name(), event, detail: e.to_string(), seconds });
                    let Some(wait) = retry else { break };
                    let until = Instant::now() + wait;
                    while Instant::now() < until && !stop.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    attempt += 1;
                }
            }
        }
        // The next tick after now; the ticks passed meanwhile were skipped.
        let now = started.elapsed();
        let ticks = (now.as_nanos() / interval.as_nanos().max(1)) as u64;
        let due = next.as_nanos() / interval.as_nanos().max(1);
        let missed = ticks.saturating_sub(due as u64);
        if missed > 0 {
            counts.skipped += missed;
            log(LogLine {
                at: env.now(),
                job: job.name(),
                event: "skipped",
                detail: format!("{missed} run(s) skipped: the previous run was still going when they were due"),
                seconds: 0.0,
            });
        }
        next = interval * (ticks as u32 + 1);
    }
    log(LogLine { at: env.now(), job: job.name(), event: "stopped", detail: String::new(), seconds: 0.0 });
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_retries_back_off_but_never_past_the_next_run() {
        let minute = Duration::from_secs(60);
        assert_eq!(backoff(0, minute), Some(Duration::from_secs(1)));
        assert_eq!(backoff(3, minute), Some(Duration::from_secs(8)));
        assert_eq!(backoff(6, minute), None, "64 s is past the next run");
        assert_eq!(backoff(0, Duration::from_millis(500)), None);
    }

    #[test]
    fn jobs_are_named_as_in_the_schedule() {
        for j in Job::ALL {
            assert_eq!(Job::from_name(j.name()), Some(j));
        }
        assert_eq!(Job::from_name("archive-checks"), Some(Job::ArchiveChecks));
        assert_eq!(Job::from_name("drills"), None);
    }
}
