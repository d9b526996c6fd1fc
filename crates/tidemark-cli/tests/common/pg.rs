//! A real PostgreSQL 15 for end-to-end tests: started as the unprivileged
//! `postgres` user when the tests run as root (PostgreSQL refuses root),
//! in a temporary directory, on a loopback port, with 1 MiB WAL segments.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tidemark_agents::pg_process::PgProcess;

/// PostgreSQL's server binaries, or `None` (the caller skips loudly).
pub fn pg_bin() -> Option<PathBuf> {
    let dir = std::env::var_os("TIDEMARK_PG_BIN").map(PathBuf::from).unwrap_or("/usr/lib/postgresql/15/bin".into());
    dir.join("initdb").exists().then_some(dir)
}

pub fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

/// The server binaries in `bin`, run as the postgres user when we are root
/// (the same process control `tidemark restore` and `drill` use).
pub fn process(bin: &Path) -> PgProcess {
    PgProcess { bin: bin.to_path_buf(), run_as: is_root().then(|| "postgres".to_owned()) }
}

/// Runs `program` as the postgres user when we are root, with `env` set.
pub fn as_postgres(program: &Path, env: &[(&str, String)]) -> Command {
    let bin = program.parent().expect("a binary in a directory");
    process(bin).command(&program.file_name().expect("a binary").to_string_lossy(), env)
}

/// Makes a path usable by the postgres user (owner when root, else nothing to do).
pub fn give_to_postgres(path: &Path) {
    process(Path::new("/")).give(path).unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
}

fn check(mut c: Command, what: &str) -> String {
    let out = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub struct Postgres {
    pub bin: PathBuf,
    pub data: PathBuf,
    pub port: u16,
    pub log: PathBuf,
    pub env: Vec<(&'static str, String)>,
}

impl Postgres {
    /// `initdb` with 1 MiB segments and trust authentication on loopback.
    pub fn init(bin: &Path, data: &Path, conf: &str, env: Vec<(&'static str, String)>) -> Postgres {
        let mut c = as_postgres(&bin.join("initdb"), &[]);
        c.arg("-D").arg(data).args(["--wal-segsize=1", "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C"]);
        check(c, "initdb");
        let pg = Postgres::at(bin, data, env);
        pg.append_conf(&format!(
            "port = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nwal_level = replica\nmax_wal_senders = 4\ntimezone = 'UTC'\nlog_timezone = 'UTC'\nfsync = off\n{conf}\n",
            pg.port,
            data.parent().unwrap().display()
        ));
        pg
    }

    /// A data directory made by copying a base backup (its own port, same binaries).
    pub fn at(bin: &Path, data: &Path, env: Vec<(&'static str, String)>) -> Postgres {
        let log = data.with_extension("log");
        Postgres { bin: bin.to_path_buf(), data: data.to_path_buf(), port: super::free_port(), log, env }
    }

    /// Appends to postgresql.auto.conf (read last, so it wins).
    pub fn append_conf(&self, text: &str) {
        let path = self.data.join("postgresql.auto.conf");
        let mut old = std::fs::read_to_string(&path).unwrap_or_default();
        old.push_str(text);
        std::fs::write(&path, old).unwrap();
        give_to_postgres(&path);
    }

    pub fn dsn(&self) -> String {
        format!("host=127.0.0.1 port={} user=postgres dbname=postgres", self.port)
    }

    /// `pg_ctl start -w`; false when the server did not come up (e.g. recovery stopped).
    pub fn try_start(&self) -> bool {
        let mut c = as_postgres(&self.bin.join("pg_ctl"), &self.env);
        c.arg("-D").arg(&self.data).arg("-l").arg(&self.log).args(["-w", "-t", "60", "start"]);
        c.status().unwrap().success()
    }

    pub fn start(&self) {
        assert!(self.try_start(), "pg_ctl start failed: {}", self.log_text());
    }

    pub fn stop(&self) {
        process(&self.bin).stop(&self.data);
    }

    /// Waits until the server has exited (its postmaster.pid is gone); false on timeout.
    pub fn wait_exited(&self, timeout: Duration) -> bool {
        tidemark_agents::pg_process::wait_exited(&self.data, timeout)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One statement through psql (the tests' own client; tidemark itself uses tokio-postgres).
    pub fn sql(&self, sql: &str) -> String {
        let mut c = Command::new(self.bin.join("psql"));
        c.args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres"])
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-c")
            .arg(sql);
        check(c, &format!("psql {sql}")).trim().to_owned()
    }

    /// Waits until recovery has ended (promotion), as `pg_ctl start -w` returns before it.
    pub fn wait_promoted(&self) {
        let started = Instant::now();
        while self.sql("SELECT pg_is_in_recovery()") != "f" {
            assert!(started.elapsed() < Duration::from_secs(60), "no promotion: {}", self.log_text());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Switches to a new segment and waits until the finished one is archived.
    pub fn switch_and_wait_archived(&self) -> String {
        // A switch with nothing written since the last one is a no-op: write a WAL record first.
        self.sql("SELECT pg_logical_emit_message(false, 'tidemark-test', 'tick')");
        let seg = self.sql("SELECT pg_walfile_name(pg_switch_wal())");
        let started = Instant::now();
        loop {
            let last = self.sql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver");
            if last.len() >= 24 && last[..24] >= *seg {
                return seg;
            }
            let failed = self.sql("SELECT coalesce(last_failed_wal, '') FROM pg_stat_archiver");
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "segment {seg} not archived (last failed {failed}): {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `pg_basebackup -Fp -X stream` into `dir`.
    pub fn base_backup(&self, dir: &Path) {
        let mut c = as_postgres(&self.bin.join("pg_basebackup"), &[]);
        c.arg("-D").arg(dir).args(["-h", "127.0.0.1", "-U", "postgres", "-Fp", "-X", "stream", "-c", "fast"]);
        c.arg("-p").arg(self.port.to_string());
        check(c, "pg_basebackup");
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let mut c = as_postgres(&self.bin.join("pg_ctl"), &[]);
        c.arg("-D").arg(&self.data).args(["-m", "immediate", "stop"]);
        let _ = c.output();
    }
}

/// Copies a base backup into a fresh data directory owned by postgres.
pub fn copy_backup(backup: &Path, data: &Path) {
    let ok = Command::new("cp").arg("-a").arg(backup).arg(data).status().unwrap();
    assert!(ok.success());
    give_to_postgres(data);
    let ok = Command::new("chmod").arg("700").arg(data).status().unwrap();
    assert!(ok.success());
}

/// A directory for a cluster that archives through a real `tidemark serve`:
/// `archive/` and `spool/` owned by postgres, a copy of the agent key, and
/// the environment `examples/pg-archive.sh` reads.
pub fn archiving_world(
    cli: &super::Cli,
    server_url: &str,
    token: &str,
    prefix: &str,
) -> (tempfile::TempDir, Vec<(&'static str, String)>) {
    let base = tempfile::Builder::new().prefix(prefix).tempdir_in("/tmp").unwrap();
    Command::new("chmod").arg("755").arg(base.path()).status().unwrap();
    for d in ["archive", "spool"] {
        std::fs::create_dir(base.path().join(d)).unwrap();
        give_to_postgres(&base.path().join(d));
    }
    std::fs::copy(cli.path("agent.key"), base.path().join("agent.key")).unwrap();
    give_to_postgres(base.path());
    let env = vec![
        ("TIDEMARK_ARCHIVE_DIR", base.path().join("archive").display().to_string()),
        ("TIDEMARK_CLUSTER", "main".to_owned()),
        ("TIDEMARK_LEDGER", server_url.to_owned()),
        ("TIDEMARK_SPOOL", base.path().join("spool").display().to_string()),
        ("TIDEMARK_SIGNER", base.path().join("agent.key").display().to_string()),
        ("TIDEMARK_BIN", env!("CARGO_BIN_EXE_tidemark").to_owned()),
        ("TIDEMARK_TOKEN", token.to_owned()),
    ];
    (base, env)
}
