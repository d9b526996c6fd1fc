//! `tidemark bench --append`: the `append` command against the library it
//! drives, in one run: `Ledger::append_stream` over N pre-signed events,
//! then this binary's `append` over the same events as NDJSON (signed
//! lines), and over N drafts signed by `--signer`, each into a fresh ledger,
//! with the child's peak resident memory (VmHWM, sampled from /proc).

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use tidemark_core::{SecretKey, SignedEvent};

use crate::bench::{agent_events, ingest};

/// One `tidemark append` run: events per second and peak RSS in bytes.
struct ChildRun {
    rate: f64,
    peak_rss: u64,
}

fn vm_hwm(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn run_append(ledger: &Path, input: &Path, n: u64, signer: Option<&Path>) -> anyhow::Result<ChildRun> {
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.args(["append", "--quiet", "--ledger"]).arg(ledger).arg(input);
    if let Some(s) = signer {
        cmd.arg("--signer").arg(s);
    }
    let started = Instant::now();
    let mut child = cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).spawn()?;
    let pid = child.id();
    let mut peak = 0;
    let status = loop {
        if let Some(hwm) = vm_hwm(pid) {
            peak = peak.max(hwm);
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let secs = started.elapsed().as_secs_f64();
    if !status.success() {
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().expect("piped"), &mut err)?;
        anyhow::bail!("tidemark append failed ({status}): {err}");
    }
    Ok(ChildRun { rate: n as f64 / secs, peak_rss: peak })
}

fn write_lines(path: &Path, lines: impl Iterator<Item = String>) -> anyhow::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    for l in lines {
        writeln!(f, "{l}")?;
    }
    f.flush()?;
    Ok(())
}

/// Drafts of the same shape as the signed events (the CLI signs them).
fn draft_line(i: u64) -> String {
    let segment = format!("00000002{i:016X}");
    serde_json::json!({"kind": "pg.wal_archived", "body": {
        "component": "pg:main", "timeline": 2, "segment": segment, "size_bytes": 16_777_216,
        "blake3": blake3::hash(&i.to_le_bytes()).to_hex().to_string(),
        "sha256": blake3::hash(&(i + 1).to_le_bytes()).to_hex().to_string(),
        "location": format!("/var/lib/pgbackrest/archive/main/{segment}")}})
    .to_string()
}

pub fn run(
    n: u64,
    scratch: &Path,
    new_ledger: &dyn Fn(&Path) -> anyhow::Result<tidemark_store::Ledger>,
    agent: &SecretKey,
) -> anyhow::Result<String> {
    eprintln!("bench --append: generating {n} signed events");
    let mut events: Vec<SignedEvent> = Vec::with_capacity(n as usize);
    for start in (0..n).step_by(100_000) {
        events.extend(agent_events(agent, 30_000_000 + start, (n - start).min(100_000)));
    }
    let signed_file = scratch.join("signed.ndjson");
    write_lines(&signed_file, events.iter().map(SignedEvent::to_json_line))?;
    let drafts_file = scratch.join("drafts.ndjson");
    write_lines(&drafts_file, (0..n).map(draft_line))?;
    let key_file = scratch.join("agent.key");
    tidemark_store::write_secret_key_file(&key_file, agent)?;

    let mut lib = new_ledger(&scratch.join("library"))?;
    let library = ingest(&mut lib, events, crate::ledger_cmds::DEFAULT_BATCH_SIZE)?;
    drop(lib);
    eprintln!("library append_stream: {library:.0}/s");
    let signed_dir = scratch.join("cli-signed");
    drop(new_ledger(&signed_dir)?);
    let signed = run_append(&signed_dir, &signed_file, n, None)?;
    eprintln!("tidemark append (signed lines): {:.0}/s, peak {} MiB", signed.rate, signed.peak_rss >> 20);
    let drafts_dir = scratch.join("cli-drafts");
    drop(new_ledger(&drafts_dir)?);
    let drafts = run_append(&drafts_dir, &drafts_file, n, Some(&key_file))?;
    eprintln!("tidemark append (drafts): {:.0}/s, peak {} MiB", drafts.rate, drafts.peak_rss >> 20);

    let mut table = String::from("| measurement | result | ratio to the library |\n|---|---|---|\n");
    table.push_str(&format!(
        "| `Ledger::append_stream`, batch 1000, {n} pre-signed events | {library:.0} events/s | 1.00 |\n"
    ));
    for (what, r) in [("signed NDJSON lines", &signed), ("drafts signed with `--signer`", &drafts)] {
        table.push_str(&format!(
            "| `tidemark append`, {n} {what} | {:.0} events/s, peak RSS {:.0} MiB | {:.2} |\n",
            r.rate,
            r.peak_rss as f64 / 1048576.0,
            r.rate / library
        ));
    }
    Ok(table)
}
