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
}

impl Job {
    pub const ALL: [Job; 4] = [Job::Positions, Job::Scans, Job::Marks, Job::ArchiveChecks];

    /// The job's name (as in `[schedule]` and `agent run-once`).
    pub fn name(self) -> &'static str {
        match self {
            Job::Positions => "positions",
            Job::Scans => "scans",
            Job::Marks => "marks",
            Job::ArchiveChecks => "archive_checks",
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

/// Runs a job once over every component it concerns; the first failure ends it.
pub fn run_once(agent: &Agent, ledger: &mut dyn LedgerApi, env: &dyn Env, job: Job) -> Result<Ran, OpsError> {
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
        }
    }
    Ok(Ran { job: job.name(), done })
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
            let result = run_once(agent, ledger, env, job);
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
