//! `tidemark`: the command-line tool over the ledger.
//!
//! A thin shell: argument parsing, files, the clock and the OS random
//! generator live here; every rule lives in `tidemark-core` and every byte
//! on disk goes through `tidemark-store`. Errors map to exit codes that
//! scripts can use (see [`exit`]).

mod agent_cmds;
mod audit_cmds;
mod bench;
mod bench_append;
mod bench_group;
mod bench_pg;
mod bench_s3;
mod exit;
mod group_cmds;
mod keys;
mod ledger_cmds;
mod pg_cmds;
mod progress;
mod recovery_cmds;
mod remote;
mod restore_cmds;
mod s3_cmds;
mod util;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// mimalloc: glibc malloc's arena locks were measured to throttle small
/// allocations on two threads (DESIGN §11); signing and hashing allocate a lot.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `purge_delay` option: its index in `mi_option_e` of the
/// mimalloc that libmimalloc-sys (pinned in Cargo.lock) builds, which the
/// bindings do not name; a test checks the index by its default (1000 ms
/// in mimalloc v3).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// For long streaming commands: freed pages go back to the OS after 1 ms
/// instead of mimalloc v3's 1000 ms, so the peak follows what is live. Measured
/// on `append` of 1,000,000 lines (docs/performance.md): about 45 MiB lower
/// at about 10 % of the rate.
#[allow(unsafe_code)]
pub fn return_freed_memory_promptly() {
    // SAFETY: sets one integer option; mimalloc reads options atomically.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 1) }
}

#[cfg(test)]
mod allocator_tests {
    #[test]
    #[allow(unsafe_code)]
    fn the_purge_delay_option_is_the_one_set() {
        // SAFETY: reads one integer option.
        let default = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert_eq!(
            default,
            1000,
            "mi_option_e index {} is not purge_delay (default 1000 ms)",
            super::MI_OPTION_PURGE_DELAY
        );
    }
}

/// tidemark — a signed, tamper-evident ledger of backup lineage.
#[derive(Parser)]
#[command(name = "tidemark", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
pub struct Global {
    /// Ledger directory, or the URL of a `tidemark serve` (http:// or https://).
    #[arg(long, global = true, env = "TIDEMARK_LEDGER", default_value = "./tidemark-data")]
    pub ledger: String,
    /// Writers: when the server cannot be reached, store signed events here
    /// durably and exit 0; they are delivered first by the next write or `tidemark spool flush`.
    #[arg(long, global = true, env = "TIDEMARK_SPOOL")]
    pub spool: Option<PathBuf>,
    /// Read credential for a server (`tidemark token issue`).
    #[arg(long, global = true, env = "TIDEMARK_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// No progress on stderr (results and errors are still printed).
    #[arg(long, short, global = true)]
    pub quiet: bool,
}

impl Global {
    /// The server URL, when `--ledger` names one.
    pub fn url(&self) -> Option<&str> {
        (self.ledger.starts_with("http://") || self.ledger.starts_with("https://")).then_some(self.ledger.as_str())
    }

    /// The client of the server `--ledger` names, if it names one.
    pub fn client(&self) -> Option<tidemark_client::Client> {
        self.url().map(|url| tidemark_client::Client::new(url, self.token.clone()))
    }

    /// The ledger directory; an error naming the command's need when `--ledger` is a URL.
    pub fn dir(&self) -> anyhow::Result<PathBuf> {
        match self.url() {
            Some(url) => Err(exit::coded(
                exit::USAGE,
                format!(
                    "this command works on a ledger directory, not a server ({url}); run it where the ledger lives"
                ),
            )),
            None => Ok(PathBuf::from(&self.ledger)),
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Create a new ledger: its key, a first admin key and the genesis entry.
    Init(ledger_cmds::InitArgs),
    /// Create, enrol, revoke and show keys.
    #[command(subcommand)]
    Key(keys::KeyCommand),
    /// Append events read as NDJSON (signed, or unsigned drafts signed with --signer).
    Append(ledger_cmds::AppendArgs),
    /// List entries (filters use the ledger's indexes).
    Log(ledger_cmds::LogArgs),
    /// Verify every entry, signature, role rule, tree node and checkpoint.
    Verify(ledger_cmds::VerifyArgs),
    /// Print the latest signed checkpoint (or the one at --size).
    Checkpoint(ledger_cmds::CheckpointArgs),
    /// Print inclusion and consistency proofs.
    #[command(subcommand)]
    Proof(ledger_cmds::ProofCommand),
    /// Write the JSON Schemas of every event kind and envelope.
    Schemas(ledger_cmds::SchemasArgs),
    /// Measure verification, ingest, full verify, proofs and reopen on this machine.
    Bench(bench::BenchArgs),
    /// Write a chain-of-custody export an auditor verifies offline.
    Export(audit_cmds::ExportArgs),
    /// Verify an export with nothing but it and the ledger's public key.
    VerifyExport(audit_cmds::VerifyExportArgs),
    /// Every event touching one artifact, in order, with actors and roles.
    Custody(audit_cmds::CustodyArgs),
    /// Who did what: entries by actor, kind and time, with names and roles.
    Audit(audit_cmds::AuditArgs),
    /// PostgreSQL agents: archive hook, base backups, positions, restore points, archive audit, verified WAL restore.
    #[command(subcommand)]
    Pg(pg_cmds::PgCommand),
    /// The application of a tidemark.toml: check it, run a job once, or run every job on its schedule.
    Agent(agent_cmds::AgentArgs),
    /// S3 agents: register, scan versions, manifest at T, restore.
    #[command(subcommand)]
    S3(s3_cmds::S3Command),
    /// Restorable windows of a component, or whether one target (--at, --lsn, --restore-point) is restorable and why not.
    RecoveryPoints(recovery_cmds::RecoveryPointsArgs),
    /// A deterministic restore plan: base backup, WAL segments, recovery settings.
    Plan(recovery_cmds::PlanArgs),
    /// Groups: applications whose components are restored together.
    #[command(subcommand)]
    Group(group_cmds::GroupCommand),
    /// Snapshot-only components: register them, record their snapshots.
    #[command(subcommand)]
    Snapshot(group_cmds::SnapshotCommand),
    /// Take a coordinated point of a group: a PostgreSQL restore point, a scan of each bucket through it,
    /// snapshots, one marker tying them together (--quiesced: with writers stopped).
    Mark(group_cmds::MarkArgs),
    /// Carry out a group plan: every component restored and verified, `restore.performed` recorded.
    Restore(restore_cmds::RestoreArgs),
    /// Restore a group's recovery point into scratch locations, run checks, record `drill.completed`, clean up.
    Drill(restore_cmds::DrillArgs),
    /// Draw a group's timeline (windows, gaps, markers, drills, restores) as SVG or HTML.
    Timeline(group_cmds::TimelineArgs),
    /// Serve the ledger over HTTP (initialises it on first start).
    Serve(remote::ServeArgs),
    /// Issue read credentials (bearer tokens signed by an enrolled key).
    #[command(subcommand)]
    Token(remote::TokenCommand),
    /// Deliver events spooled while the server was unreachable.
    #[command(subcommand)]
    Spool(remote::SpoolCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Init(a) => ledger_cmds::init(&cli.global, a),
        Command::Key(c) => keys::run(&cli.global, c),
        Command::Append(a) => ledger_cmds::append(&cli.global, a),
        Command::Log(a) => ledger_cmds::log(&cli.global, a),
        Command::Verify(a) => ledger_cmds::verify(&cli.global, a),
        Command::Checkpoint(a) => ledger_cmds::checkpoint(&cli.global, a),
        Command::Proof(c) => ledger_cmds::proof(&cli.global, c),
        Command::Schemas(a) => ledger_cmds::schemas(a),
        Command::Bench(a) => bench::run(a),
        Command::Serve(a) => remote::serve(&cli.global, a),
        Command::Pg(c) => pg_cmds::run(&cli.global, c),
        Command::Agent(a) => agent_cmds::run(&cli.global, a),
        Command::S3(c) => s3_cmds::run(&cli.global, c),
        Command::RecoveryPoints(a) => recovery_cmds::recovery_points(&cli.global, a),
        Command::Plan(a) => recovery_cmds::plan(&cli.global, a),
        Command::Group(c) => group_cmds::group(&cli.global, c),
        Command::Snapshot(c) => group_cmds::snapshot(&cli.global, c),
        Command::Mark(a) => group_cmds::mark(&cli.global, a),
        Command::Restore(a) => restore_cmds::restore(&cli.global, a),
        Command::Drill(a) => restore_cmds::drill(&cli.global, a),
        Command::Timeline(a) => group_cmds::timeline(&cli.global, a),
        Command::Export(a) => audit_cmds::export(&cli.global, a),
        Command::VerifyExport(a) => audit_cmds::verify_export(&cli.global, a),
        Command::Custody(a) => audit_cmds::custody(&cli.global, a),
        Command::Audit(a) => audit_cmds::audit(&cli.global, a),
        Command::Token(c) => remote::token(c),
        Command::Spool(c) => remote::spool(&cli.global, c),
    };
    match result {
        Ok(code) => code,
        Err(e) => exit::report(&e),
    }
}
