//! Helpers for tests that drive the real `tidemark` binary.
#![allow(dead_code)]

pub mod moto;
pub mod pg;

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Instant;

pub struct Cli {
    pub dir: tempfile::TempDir,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Cli {
    pub fn new() -> Cli {
        Cli { dir: tempfile::tempdir().unwrap() }
    }

    pub fn ledger(&self) -> PathBuf {
        self.dir.path().join("ledger")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn command(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tidemark"));
        c.env("TIDEMARK_LEDGER", self.ledger()).current_dir(self.dir.path());
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with_input(args, "")
    }

    pub fn run_with_input(&self, args: &[&str], input: &str) -> Run {
        let mut child = self
            .command()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Written from another thread: `append` streams, printing results while it reads.
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_owned();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(input.as_bytes());
        });
        let out: Output = child.wait_with_output().unwrap();
        writer.join().unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `tidemark` through a server: its URL, a read token, `key` as the signer, `env` added.
    pub fn run_remote(&self, url: &str, token: &str, key: &str, env: &[(&str, &str)], args: &[&str]) -> Run {
        let mut c = self.command();
        c.env("TIDEMARK_LEDGER", url).env("TIDEMARK_TOKEN", token).env("TIDEMARK_SIGNER", self.path(key));
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.args(args).output().unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert_eq!(r.code, 0, "tidemark {args:?} failed: {}{}", r.stdout, r.stderr);
        r.stdout
    }

    /// A ledger with an agent key and an operator key enrolled.
    pub fn with_keys() -> Cli {
        let cli = Cli::new();
        cli.ok(&["init", "--origin", "tidemark.test/cli"]);
        for (name, role) in [("agent", "agent"), ("operator", "operator")] {
            let key = format!("{name}.key");
            cli.ok(&["key", "new", "--name", name, "--out", &key]);
            cli.ok(&["key", "enroll", "--pub", &format!("{key}.pub"), "--roles", role, "--signer", &admin_key(&cli)]);
        }
        cli
    }

    /// The latest checkpoint's (size, root) lines.
    pub fn tree_head(&self) -> (String, String) {
        let note = self.ok(&["checkpoint"]);
        let lines: Vec<&str> = note.lines().collect();
        (lines[1].to_owned(), lines[2].to_owned())
    }
}

pub fn admin_key(cli: &Cli) -> String {
    cli.ledger().join("keys/admin.key").display().to_string()
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}

pub struct Server {
    pub child: Child,
    pub url: String,
    pub log: std::path::PathBuf,
}

impl Server {
    pub fn start(cli: &Cli, listen: &str, extra: &[&str]) -> Server {
        let log = cli.path(&format!("serve-{}.log", std::process::id() as u128 + Instant::now().elapsed().as_nanos()));
        let mut child = cli
            .command()
            .args(["serve", "--listen", listen])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let url = loop {
            let line = lines.next().expect("serve printed its URL").unwrap();
            if let Some(rest) = line.strip_prefix("tidemark serving ") {
                break rest.rsplit(" on ").next().unwrap().to_owned();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Server { child, url, log }
    }

    pub fn stop(mut self) -> String {
        sigterm(self.child.id());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "serve exited with {status}");
        std::fs::read_to_string(&self.log).unwrap()
    }
}

/// SIGTERM through the `kill` command (the workspace forbids unsafe code, so no libc::kill).
pub fn sigterm(pid: u32) {
    let ok = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    assert!(ok.success());
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A service a test needs is missing. Under `CI=true` that is a failure (the
/// project's scripts install every service, so CI never passes by skipping);
/// elsewhere the test says so loudly and returns.
pub fn service_missing(what: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{what} (CI=true: a missing service fails the test; scripts/test.sh installs it)");
    }
    eprintln!("\n\n*** SKIPPED: {what} ***\n\n");
}

/// Prometheus' `promtool`, when installed (`TIDEMARK_PROMTOOL`, else the PATH).
pub fn promtool() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("TIDEMARK_PROMTOOL") {
        return Some(p.into());
    }
    let found = Command::new("sh").arg("-c").arg("command -v promtool").output().ok()?;
    let path = String::from_utf8(found.stdout).ok()?.trim().to_owned();
    (found.status.success() && !path.is_empty()).then(|| path.into())
}

/// Headless Chromium, when installed (`TIDEMARK_CHROMIUM`, else `chromium` on the PATH).
pub fn chromium() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("TIDEMARK_CHROMIUM") {
        return Some(p.into());
    }
    let found = Command::new("sh").arg("-c").arg("command -v chromium || command -v chromium-browser").output().ok()?;
    let path = String::from_utf8(found.stdout).ok()?.lines().next()?.trim().to_owned();
    (found.status.success() && !path.is_empty()).then(|| path.into())
}

/// The project's Python (`.venv`, made by scripts/test.sh), with websocket-client for the browser test.
pub fn venv_python() -> Option<std::path::PathBuf> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    let ok = Command::new(&p).args(["-c", "import websocket"]).output().ok()?.status.success();
    ok.then_some(p)
}

/// The real clock and fresh ids, for library calls.
#[derive(Default)]
pub struct LibEnv(std::sync::atomic::AtomicU64);

impl tidemark_ops::Env for LibEnv {
    fn now(&self) -> tidemark_core::Timestamp {
        let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
        tidemark_core::Timestamp::from_micros(d.as_micros() as i64)
    }

    fn new_event_id(&self) -> tidemark_core::EventId {
        let n = self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut random = [0u8; 10];
        random[..2].copy_from_slice(&(std::process::id() as u16).to_be_bytes());
        random[2..].copy_from_slice(&n.to_be_bytes());
        tidemark_core::EventId::new_v7((self.now().as_micros() / 1000) as u64, random)
    }
}
