//! `tidemark agent`: the application of a `tidemark.toml`, checked, its
//! jobs run once, or run on their schedules until SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use clap::{Args, Subcommand};
use tidemark_ops::agent::jobs::{self, Job, LogLine};
use tidemark_ops::agent::{Agent, check};

use crate::exit::{self, coded, ops_err};
use crate::{Global, util};

#[derive(Args)]
pub struct AgentArgs {
    /// The application's configuration (`examples/tidemark.toml` is an annotated one).
    #[arg(long, global = true, default_value = "tidemark.toml")]
    config: PathBuf,
    /// Print results as JSON (check: one object; runs: one log line per job run, NDJSON).
    #[arg(long, global = true)]
    json: bool,
    /// With no subcommand (run): keep the agent's job metrics in this file (as for `agent run`).
    #[arg(long)]
    metrics_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<AgentCommand>,
}

#[derive(Subcommand)]
pub enum AgentCommand {
    /// Check the configuration against the ledger: components registered and reachable, the group, the keys' roles.
    Check {
        /// Check the file and the ledger only; do not connect to databases and buckets.
        #[arg(long)]
        offline: bool,
    },
    /// Run one job now over every component it concerns: positions, scans, marks, archive_checks, restore_tests.
    RunOnce { job: String },
    /// Run every scheduled job until SIGTERM or SIGINT (the default).
    Run {
        /// Keep the agent's own job metrics in this file (Prometheus text, replaced
        /// atomically after every run: point node_exporter's textfile collector at it).
        #[arg(long)]
        metrics_file: Option<PathBuf>,
    },
}

pub fn run(_global: &Global, a: AgentArgs) -> anyhow::Result<ExitCode> {
    let agent = Agent::load(&a.config).map_err(ops_err)?;
    match a.command.unwrap_or(AgentCommand::Run { metrics_file: a.metrics_file.clone() }) {
        AgentCommand::Check { offline } => {
            let ledger = agent.ledger().map_err(ops_err)?;
            let problems = check::check(&agent, ledger.as_ref(), !offline);
            let file = a.config.display().to_string();
            if a.json {
                let list: Vec<_> = problems
                    .iter()
                    .map(|p| serde_json::json!({"file": file, "line": p.line, "message": p.message}))
                    .collect();
                util::print_json(&serde_json::json!({"ok": problems.is_empty(), "problems": list}));
            } else if problems.is_empty() {
                println!("{file}: ok (group {})", agent.config().group.name);
            } else {
                for p in &problems {
                    match p.line {
                        Some(l) => println!("{file}:{l}: {}", p.message),
                        None => println!("{file}: {}", p.message),
                    }
                }
            }
            Ok(ExitCode::from(if problems.is_empty() { exit::OK } else { exit::USAGE }))
        }
        AgentCommand::RunOnce { job } => {
            let job = Job::from_name(&job).ok_or_else(|| {
                let names: Vec<&str> = Job::ALL.iter().map(|j| j.name()).collect();
                coded(exit::USAGE, format!("{job:?}: the jobs are {}", names.join(", ")))
            })?;
            let mut ledger = agent.ledger().map_err(ops_err)?;
            let ran = jobs::run_once(&agent, ledger.as_mut(), &util::SystemEnv, job, 0).map_err(ops_err)?;
            if a.json {
                util::print_json(&ran);
            } else {
                for line in &ran.done {
                    println!("{}: {line}", ran.job);
                }
            }
            Ok(exit::ok())
        }
        AgentCommand::Run { metrics_file } => run_scheduled(&agent, a.json, metrics_file.as_deref()),
    }
}

/// Every scheduled job in its own thread with its own connection to the
/// server, until SIGTERM or SIGINT; each finishes its current run first.
fn run_scheduled(agent: &Agent, json: bool, metrics_file: Option<&std::path::Path>) -> anyhow::Result<ExitCode> {
    let url = &agent.config().ledger.url;
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(coded(
            exit::USAGE,
            "the agent runs its jobs side by side against a server (ledger.url = http://…); a ledger directory opens in one process and thread only — use `agent run-once` for it",
        ));
    }
    let scheduled: Vec<(Job, std::time::Duration)> =
        Job::ALL.into_iter().filter_map(|j| j.interval(agent).map(|i| (j, i))).collect();
    if scheduled.is_empty() {
        return Err(coded(exit::USAGE, "nothing is scheduled: give [schedule] intervals"));
    }
    let stop: std::sync::Arc<AtomicBool> = crate::pg_cmds::stop_flag();
    let stats = std::sync::Mutex::new(std::collections::BTreeMap::<&'static str, JobStats>::new());
    for (job, _) in &scheduled {
        stats.lock().expect("stats lock").insert(job.name(), JobStats::default());
    }
    let log = |l: LogLine| {
        if let Some(path) = metrics_file {
            let mut all = stats.lock().expect("stats lock");
            all.entry(l.job).or_default().count(&l);
            if let Err(e) = util::write_file_atomic(path, render(&all).as_bytes()) {
                eprintln!("tidemark agent: the metrics file {}: {e:#}", path.display());
            }
        }
        if json {
            eprintln!("{}", serde_json::to_string(&l).expect("log lines serialise"));
        } else {
            eprintln!(
                "{} {} {}{}",
                l.at,
                l.job,
                l.event,
                if l.detail.is_empty() { String::new() } else { format!(": {}", l.detail) }
            );
        }
    };
    let counts = std::thread::scope(|scope| {
        let handles: Vec<_> = scheduled
            .iter()
            .map(|(job, interval)| {
                let (stop, log) = (&stop, &log);
                scope.spawn(move || -> Result<jobs::Counts, tidemark_ops::OpsError> {
                    let mut ledger = agent.ledger()?;
                    Ok(jobs::run_scheduled(agent, ledger.as_mut(), &util::SystemEnv, *job, *interval, stop, log))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a job thread does not panic")).collect::<Vec<_>>()
    });
    for ((job, _), c) in scheduled.iter().zip(counts) {
        let c = c.map_err(ops_err)?;
        log(LogLine {
            at: tidemark_ops::Env::now(&util::SystemEnv),
            job: job.name(),
            event: "summary",
            detail: format!("{} runs, {} failures, {} skipped", c.runs, c.failures, c.skipped),
            seconds: 0.0,
        });
    }
    Ok(exit::ok())
}

/// One job's counts since the agent started, for its metrics file.
#[derive(Default)]
struct JobStats {
    runs: u64,
    failures: u64,
    skipped: u64,
    last_success: Option<f64>,
    last_duration: Option<f64>,
}

impl JobStats {
    fn count(&mut self, l: &LogLine) {
        match l.event {
            "ok" => {
                self.runs += 1;
                self.last_success = Some(l.at.as_micros() as f64 / 1e6);
                self.last_duration = Some(l.seconds);
            }
            "failed" | "gave_up" => {
                self.runs += 1;
                self.failures += 1;
                self.last_duration = Some(l.seconds);
            }
            "skipped" => self.skipped += l.detail.split(' ').next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(1),
            _ => {}
        }
    }
}

/// The agent's job metrics in the Prometheus text format.
fn render(all: &std::collections::BTreeMap<&'static str, JobStats>) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: &dyn Fn(&JobStats) -> Option<f64>| {
        out += &format!("# HELP {name} {help}\n# TYPE {name} {kind}\n");
        for (job, s) in all {
            if let Some(v) = value(s) {
                out += &format!("{name}{{job=\"{job}\"}} {v}\n");
            }
        }
    };
    metric("tidemark_agent_job_runs_total", "counter", "Runs of the job (retries included).", &|s| Some(s.runs as f64));
    metric("tidemark_agent_job_failures_total", "counter", "Runs of the job that failed.", &|s| {
        Some(s.failures as f64)
    });
    metric(
        "tidemark_agent_job_skipped_total",
        "counter",
        "Runs skipped because the previous one was still going when they were due.",
        &|s| Some(s.skipped as f64),
    );
    metric("tidemark_agent_job_last_success_timestamp_seconds", "gauge", "When the job last ran successfully.", &|s| {
        s.last_success
    });
    metric("tidemark_agent_job_last_duration_seconds", "gauge", "How long the job's last run took.", &|s| {
        s.last_duration
    });
    out
}
