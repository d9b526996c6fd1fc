//! PostgreSQL server processes: started and stopped with `pg_ctl`, as an
//! unprivileged user when tidemark runs as root (PostgreSQL refuses root),
//! and waited on until recovery has ended. Restores, drills and the
//! end-to-end tests' helpers all use this one place.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tidemark_core::Lsn;

use crate::AgentError;
use crate::pg_db::Db;

/// PostgreSQL's server binaries, and the user to run them as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgProcess {
    /// The directory of `pg_ctl`, `postgres`, `initdb` …
    pub bin: PathBuf,
    /// Run as this user (`runuser -u USER`); none: as ourselves.
    pub run_as: Option<String>,
}

/// How often the promotion wait polls.
const PROMOTION_POLL: Duration = Duration::from_millis(200);

impl PgProcess {
    /// `program` (a binary in `bin`) as the configured user, with `env` set.
    pub fn command(&self, program: &str, env: &[(&str, String)]) -> Command {
        let path = self.bin.join(program);
        match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--", "env"]);
                for (k, v) in env {
                    c.arg(format!("{k}={v}"));
                }
                c.arg(path);
                c
            }
            None => {
                let mut c = Command::new(path);
                for (k, v) in env {
                    c.env(k, v);
                }
                c
            }
        }
    }

    /// Makes `path` (recursively) the run-as user's, so the server can use it.
    pub fn give(&self, path: &Path) -> Result<(), AgentError> {
        match &self.run_as {
            Some(user) => run_ok(Command::new("chown").arg("-R").arg(format!("{user}:")).arg(path), "chown"),
            None => Ok(()),
        }
    }

    /// `pg_ctl start -w` on `data`, logging to `log`, with server `options`
    /// (`-o`) and `env` (e.g. what `restore_command` needs); the error
    /// carries the end of the server log.
    pub fn start(
        &self,
        data: &Path,
        log: &Path,
        options: &str,
        env: &[(&str, String)],
        timeout: Duration,
    ) -> Result<(), AgentError> {
        let mut c = self.command("pg_ctl", env);
        c.arg("-D").arg(data).arg("-l").arg(log);
        if !options.is_empty() {
            c.arg("-o").arg(options);
        }
        c.args(["-w", "-t", &timeout.as_secs().max(1).to_string(), "start"]);
        run_ok(&mut c, "pg_ctl start").map_err(|e| AgentError::Refused(format!("{e}; server log: {}", log_tail(log))))
    }

    /// `pg_ctl stop -m fast -w` (nothing to stop is not an error).
    pub fn stop(&self, data: &Path) {
        let mut c = self.command("pg_ctl", &[]);
        c.arg("-D").arg(data).args(["-m", "fast", "-w", "stop"]);
        let _ = c.output();
    }
}

/// Rule: recovery has ended when the server answers `pg_is_in_recovery()`
/// with false; it has failed when the server is gone (no `postmaster.pid`).
/// Waits up to `timeout` and returns how long promotion took; on failure the
/// error carries the end of `log`. `replayed` sees how far replay has got
/// whenever the server answers during recovery.
pub fn wait_promoted(
    dsn: &str,
    data: &Path,
    log: &Path,
    timeout: Duration,
    replayed: &mut dyn FnMut(Lsn),
) -> Result<Duration, AgentError> {
    let started = Instant::now();
    loop {
        if !data.join("postmaster.pid").exists() {
            return Err(AgentError::Refused(format!("the restored server stopped during recovery: {}", log_tail(log))));
        }
        if let Ok(db) = Db::connect(dsn) {
            match db.in_recovery() {
                Ok(false) => return Ok(started.elapsed()),
                // Hot standby answers during replay: how far it has got.
                Ok(true) => {
                    if let Ok(Some(lsn)) = db.replay_lsn() {
                        replayed(lsn);
                    }
                }
                Err(_) => {}
            }
        }
        if started.elapsed() > timeout {
            return Err(AgentError::Refused(format!(
                "recovery did not end within {} s: {}",
                timeout.as_secs(),
                log_tail(log)
            )));
        }
        std::thread::sleep(PROMOTION_POLL);
    }
}

/// Waits until the server on `data` has exited (its postmaster.pid is gone); false on timeout.
pub fn wait_exited(data: &Path, timeout: Duration) -> bool {
    let started = Instant::now();
    while data.join("postmaster.pid").exists() {
        if started.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    true
}

/// The last lines of a server log, on one line (for error messages).
pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(8)..].join(" | ")
}

fn run_ok(c: &mut Command, what: &str) -> Result<(), AgentError> {
    let out = c.output().map_err(|e| AgentError::Refused(format!("running {what}: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    Err(AgentError::Refused(format!(
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_runs_as_the_configured_user_with_its_environment() {
        let as_pg = PgProcess { bin: "/pg/bin".into(), run_as: Some("postgres".into()) };
        let c = as_pg.command("pg_ctl", &[("TIDEMARK_LEDGER", "http://l".into())]);
        assert_eq!(c.get_program(), "runuser");
        let args: Vec<_> = c.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(args, ["-u", "postgres", "--", "env", "TIDEMARK_LEDGER=http://l", "/pg/bin/pg_ctl"]);
        let me = PgProcess { bin: "/pg/bin".into(), run_as: None };
        assert_eq!(me.command("pg_ctl", &[]).get_program(), "/pg/bin/pg_ctl");
    }

    #[test]
    fn a_server_without_a_pid_file_has_stopped_recovering() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("log"),
            "FATAL: requested recovery stop point is before consistent recovery point\n",
        )
        .unwrap();
        let e = wait_promoted(
            "host=127.0.0.1 port=1",
            dir.path(),
            &dir.path().join("log"),
            Duration::from_secs(5),
            &mut |_| {},
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("stopped during recovery") && e.contains("consistent recovery point"), "{e}");
        assert!(wait_exited(dir.path(), Duration::from_millis(1)));
    }
}
