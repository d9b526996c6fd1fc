//! `tidemark recovery-points` and `tidemark plan`.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use tidemark_lineage::pg_plan::{PlanOptions, Target};

use crate::exit::{self, coded, ops_err};
use crate::{Global, util};

#[derive(Args)]
pub struct TargetArgs {
    /// A time (RFC 3339): restorable as of then? The target is the newest observed position at or before it.
    #[arg(long)]
    at: Option<String>,
    /// An LSN, e.g. 0/3000028.
    #[arg(long)]
    lsn: Option<String>,
    /// A restore point name.
    #[arg(long)]
    restore_point: Option<String>,
    /// Timeline for --at or --lsn (default: the one live at that time, or the newest).
    #[arg(long)]
    timeline: Option<u32>,
}

impl TargetArgs {
    fn target(&self) -> anyhow::Result<Option<Target>> {
        Target::from_parts(self.at.as_deref(), self.lsn.as_deref(), self.restore_point.as_deref(), self.timeline)
            .map_err(|e| coded(exit::USAGE, e))
    }
}

#[derive(Args)]
pub struct RecoveryPointsArgs {
    /// The component, e.g. pg:main or s3:uploads.
    #[arg(long, required_unless_present = "group", conflicts_with = "group")]
    component: Option<String>,
    /// A group: its markers and correlated windows, newest first.
    #[arg(long)]
    group: Option<String>,
    /// With --group: only the newest restorable point (exit 6 when there is none).
    #[arg(long, requires = "group")]
    latest: bool,
    #[command(flatten)]
    target: TargetArgs,
    #[arg(long)]
    json: bool,
}

fn check_component(c: &str) -> anyhow::Result<()> {
    if c.starts_with("pg:") {
        Ok(())
    } else {
        Err(coded(
            exit::USAGE,
            format!("{c}: recovery points are answered for PostgreSQL (pg:NAME) and S3 (s3:NAME) components"),
        ))
    }
}

/// `recovery-points --group G --at T`: is T a restorable correlated time of
/// the group, and if not, why — the same judgement `plan --group G --at T` makes.
fn group_at(global: &Global, group: &str, at: &str, json_out: bool) -> anyhow::Result<ExitCode> {
    let t = util::parse_time(at).map_err(|e| coded(exit::USAGE, format!("--at: {e}")))?;
    let options = PlanOptions {
        restore_command: crate::group_cmds::default_restore_command(global)?,
        use_recovery_target_time: false,
    };
    let judged = util::open_api(global)?
        .group_plan(group, &tidemark_lineage::group_plan::PlanRequest::Time(t), &options)
        .map_err(ops_err)?;
    let (restorable, reasons) = match &judged {
        Ok(_) => (true, Vec::new()),
        Err(reasons) => (false, reasons.clone()),
    };
    let mut out = std::io::stdout().lock();
    if json_out {
        let answer = serde_json::json!({"group": group, "at": t, "restorable": restorable, "reasons": reasons});
        writeln!(out, "{}", serde_json::to_string_pretty(&answer)?)?;
    } else if restorable {
        writeln!(out, "restorable: {group} at {t} (`tidemark plan --group {group} --at {t}` writes its plan)")?;
    } else {
        writeln!(out, "NOT restorable: {group} at {t}: {}", reasons.join("; "))?;
    }
    Ok(ExitCode::from(if restorable { exit::OK } else { exit::NOT_RESTORABLE }))
}

pub fn recovery_points(global: &Global, a: RecoveryPointsArgs) -> anyhow::Result<ExitCode> {
    if let Some(group) = &a.group {
        if a.target.lsn.is_some() || a.target.restore_point.is_some() || a.target.timeline.is_some() {
            return Err(coded(
                exit::USAGE,
                "--group takes --at T (a correlated time) or nothing (every point); --lsn, --restore-point and --timeline are for one PostgreSQL component",
            ));
        }
        if let Some(at) = &a.target.at {
            return group_at(global, group, at, a.json);
        }
        return crate::group_cmds::recovery_points(global, group, a.latest, a.json);
    }
    let component = a.component.clone().unwrap_or_default();
    let component = component.as_str();
    if component.starts_with("s3:") {
        if a.target.lsn.is_some() || a.target.restore_point.is_some() || a.target.timeline.is_some() {
            return Err(coded(exit::USAGE, "an S3 component takes --at only"));
        }
        return crate::s3_cmds::recovery_points(global, component, a.target.at.as_deref(), a.json);
    }
    check_component(component)?;
    let api = util::open_api(global)?;
    let mut out = std::io::stdout().lock();
    if let Some(target) = a.target.target()? {
        let answer = api.pg_answer(component, &target).map_err(ops_err)?;
        if a.json {
            writeln!(out, "{}", serde_json::to_string_pretty(&answer)?)?;
        } else if let Some(r) = answer.resolved.as_ref().filter(|_| answer.restorable) {
            writeln!(
                out,
                "restorable: base backup {} then WAL {} … {} ({} segments) on timeline {} to LSN {}{}",
                r.base_backup.backup_id,
                r.first_segment,
                r.last_segment,
                r.segment_count,
                r.timeline,
                r.target_lsn,
                r.target_observation
                    .as_ref()
                    .map(|o| format!(" (the database as observed at {})", o.observed_at))
                    .unwrap_or_default()
            )?;
        } else {
            writeln!(out, "NOT restorable: {}", answer.explanation.as_deref().unwrap_or("-"))?;
        }
        return Ok(ExitCode::from(if answer.restorable { exit::OK } else { exit::NOT_RESTORABLE }));
    }
    let report = api.pg_report(component).map_err(ops_err)?;
    if a.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
        return Ok(exit::ok());
    }
    writeln!(
        out,
        "{}  system {}  {} segments recorded  segment size {} bytes  {} base backups",
        report.component,
        report.system_identifier.as_deref().unwrap_or("-"),
        report.segments_recorded,
        report.wal_segment_size_bytes,
        report.base_backups.len()
    )?;
    for tl in &report.timelines {
        writeln!(out, "timeline {}", tl.timeline)?;
        if tl.windows.is_empty() {
            writeln!(out, "  no restorable window (no base backup with all its WAL archived)")?;
        }
        for w in &tl.windows {
            writeln!(
                out,
                "  restorable {} … {}   LSN {} … {}   backups {}",
                w.from_time,
                w.to_time,
                w.from_lsn,
                w.to_lsn,
                w.backups.join(",")
            )?;
            if !w.gap_after.is_empty() {
                writeln!(out, "  gap: {} missing segment(s): {}", w.gap_after_count, w.gap_after.join(", "))?;
            }
        }
    }
    for u in &report.unsound_segments {
        writeln!(out, "unsound: {} {}", u.segment, u.state.name())?;
    }
    Ok(exit::ok())
}

#[derive(Args)]
pub struct PlanArgs {
    /// The component, e.g. pg:main.
    #[arg(long, required_unless_present = "group", conflicts_with = "group")]
    component: Option<String>,
    /// A group: one plan for every component (with --point or --at).
    #[arg(long)]
    group: Option<String>,
    /// With --group: a marker id.
    #[arg(long, requires = "group")]
    point: Option<String>,
    #[command(flatten)]
    target: TargetArgs,
    /// Use recovery_target_time instead of the LSN target (PostgreSQL then stops at the first commit after it).
    #[arg(long)]
    recovery_target_time: bool,
    /// restore_command for the plan (default: this tidemark with the same --ledger).
    #[arg(long)]
    restore_command: Option<String>,
    /// Write the plan here instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn plan(global: &Global, a: PlanArgs) -> anyhow::Result<ExitCode> {
    if let Some(group) = &a.group {
        if a.target.lsn.is_some() || a.target.restore_point.is_some() || a.recovery_target_time {
            return Err(coded(exit::USAGE, "a group plan takes --point MARKER or --at TIME"));
        }
        return crate::group_cmds::plan(
            global,
            group,
            a.point.clone(),
            a.target.at.as_deref(),
            a.restore_command.clone(),
            a.out.as_deref(),
        );
    }
    let component = a.component.clone().unwrap_or_default();
    check_component(&component)?;
    let target = a.target.target()?.ok_or_else(|| coded(exit::USAGE, "give one of --at, --lsn or --restore-point"))?;
    let cluster = component.trim_start_matches("pg:");
    let restore_command = match a.restore_command {
        Some(c) => c,
        None => crate::group_cmds::default_restore_command(global)?.replace("{cluster}", cluster),
    };
    let options = PlanOptions { restore_command, use_recovery_target_time: a.recovery_target_time };
    match util::open_api(global)?.pg_plan(&component, &target, &options).map_err(ops_err)? {
        Ok(plan) => {
            let text = serde_json::to_string_pretty(&plan)? + "\n";
            match &a.out {
                Some(p) => util::write_file_atomic(p, text.as_bytes())?,
                None => std::io::stdout().lock().write_all(text.as_bytes())?,
            }
            eprintln!(
                "plan {}: base backup {}, {} WAL segments, recovery_target_lsn {} on timeline {}",
                plan.digest,
                plan.body.base_backup.backup_id,
                plan.body.wal_segments.len(),
                plan.body.target_lsn,
                plan.body.timeline
            );
            Ok(exit::ok())
        }
        Err(reason) => Err(coded(exit::NOT_RESTORABLE, format!("not restorable: {reason}"))),
    }
}
