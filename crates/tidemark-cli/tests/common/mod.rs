//! Helpers for tests that drive the real `tidemark` binary.
#![allow(dead_code)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

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
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        let out: Output = child.wait_with_output().unwrap();
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
