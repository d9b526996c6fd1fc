//! `tidemark s3 …`: register a bucket, scan its versions, print the
//! manifest at T, restore it; and the S3 side of `recovery-points`.

use std::io::Write as _;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use tidemark_core::event::{ComponentRegistered, EventBody, S3Identity};
use tidemark_core::{ComponentId, Timestamp};
use tidemark_lineage::s3::ManifestLine;
use tidemark_ops::s3_restore::{self, Destination, S3RestoreRequest};
use tidemark_ops::s3_scan::{BucketSpec, ScanRequest, Scanned};

use crate::exit::{self, coded, ops_err};
use crate::pg_cmds::{Signer, record_events};
use crate::progress::Progress;
use crate::{Global, util};

#[derive(Args, Clone)]
pub struct Bucket {
    /// The component, e.g. s3:uploads.
    #[arg(long)]
    component: String,
    /// S3 endpoint URL (default: the registered one; AWS when registering without it).
    #[arg(long)]
    endpoint: Option<String>,
    /// The bucket (default: the registered one; required to register).
    #[arg(long)]
    bucket: Option<String>,
    /// Region (default: the registered one, else AWS_REGION, else us-east-1).
    #[arg(long, env = "AWS_REGION")]
    region: Option<String>,
    /// Path-style addressing (http://endpoint/bucket/key), for MinIO, moto and other
    /// non-AWS endpoints (default: on for a registered endpoint that is not AWS).
    #[arg(long)]
    path_style: bool,
}

impl Bucket {
    /// What the operator named, for the rules in `tidemark_ops::s3_scan`.
    pub fn spec(&self) -> BucketSpec {
        BucketSpec {
            component: self.component.clone(),
            endpoint: self.endpoint.clone(),
            bucket: self.bucket.clone(),
            region: self.region.clone(),
            path_style: self.path_style,
            credentials: tidemark_s3::Credentials::Chain,
        }
    }

    fn check(&self) -> anyhow::Result<()> {
        self.spec().check().map_err(crate::exit::ops_err)
    }
}

pub use tidemark_ops::s3_scan::AWS_ENDPOINT;

#[derive(Subcommand)]
pub enum S3Command {
    /// Record the bucket's identity (endpoint, bucket, region). Admin key.
    Register {
        #[command(flatten)]
        bucket: Bucket,
        #[command(flatten)]
        signer: Signer,
        /// Print what was recorded as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// List every version and delete marker and record what is new, what went missing, and the watermark.
    Scan(ScanArgs),
    /// The key → version map current at T, keys to remove, and keys that cannot be reconstructed.
    Manifest(ManifestArgs),
    /// Restore the bucket as it was at T into another bucket, or in place (never deleting a version).
    Restore(RestoreArgs),
}

#[derive(Args)]
pub struct ScanArgs {
    /// Print what the scan recorded as one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    bucket: Bucket,
    #[command(flatten)]
    signer: Signer,
    #[arg(long)]
    prefix: Option<String>,
    /// Allowance for the difference between this clock and S3's, taken off the watermark.
    #[arg(long, default_value_t = 1000)]
    clock_skew_ms: u64,
}

#[derive(Args)]
pub struct ManifestArgs {
    #[arg(long)]
    component: String,
    /// RFC 3339; inclusive.
    #[arg(long, value_parser = util::parse_time)]
    at: Timestamp,
    /// NDJSON lines, then the summary line.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    bucket: Bucket,
    #[command(flatten)]
    signer: Signer,
    #[arg(long, value_parser = util::parse_time)]
    at: Timestamp,
    /// Copy into this bucket (created, versioned, when absent).
    #[arg(long, conflicts_with = "in_place", required_unless_present = "in_place")]
    target_bucket: Option<String>,
    /// What to do when the target bucket already holds objects (default: refuse, nothing changed).
    #[arg(long, value_enum, default_value_t = util::ExistingObjects::Refuse)]
    existing_objects: util::ExistingObjects,
    /// Restore the bucket itself: copy old versions on top, delete markers for keys created after T.
    #[arg(long)]
    in_place: bool,
    /// Print what would be done, change nothing, record nothing.
    #[arg(long)]
    dry_run: bool,
    /// Copies in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Restore the other keys even when some cannot be reconstructed at T (they are listed and left alone).
    #[arg(long)]
    skip_problem_keys: bool,
    /// Print what was restored and recorded as one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn run(global: &Global, c: S3Command) -> anyhow::Result<ExitCode> {
    match c {
        S3Command::Register { bucket, signer, json } => {
            bucket.check()?;
            let Some(name) = &bucket.bucket else {
                return Err(coded(exit::USAGE, "s3 register needs --bucket"));
            };
            let body = EventBody::ComponentRegistered(ComponentRegistered {
                component: ComponentId::parse(&bucket.component).map_err(|e| coded(exit::USAGE, e))?,
                postgresql: None,
                s3: Some(S3Identity {
                    endpoint: bucket.endpoint.clone().unwrap_or_else(|| AWS_ENDPOINT.into()),
                    bucket: name.clone(),
                    region: bucket.region.clone().unwrap_or_else(|| "us-east-1".into()),
                }),
                snapshot: None,
            });
            let shown = body.to_value();
            let recorded = record_events(global, &signer.key()?, vec![body])?;
            util::print_recorded(json, &recorded, &shown, |at| format!("registered {} as {at}", bucket.component));
            Ok(exit::ok())
        }
        S3Command::Scan(a) => scan(global, a),
        S3Command::Manifest(a) => manifest(global, a),
        S3Command::Restore(a) => restore(global, a),
    }
}

fn scan(global: &Global, a: ScanArgs) -> anyhow::Result<ExitCode> {
    let scanned = scan_bucket(global, &a.signer.key()?, &a.bucket, a.prefix.as_deref(), a.clock_skew_ms, None)?;
    if a.json {
        util::print_json(&scanned);
    } else {
        println!("{scanned}");
    }
    Ok(exit::ok())
}

/// Lists every version and records what is new, what went missing and the
/// watermark (`tidemark_ops::s3_scan::scan`). `proven_through`: a watermark
/// the caller has proof of (a mark saw S3's clock tick before the scan began).
pub fn scan_bucket(
    global: &Global,
    key: &tidemark_core::SecretKey,
    b: &Bucket,
    prefix: Option<&str>,
    clock_skew_ms: u64,
    proven_through: Option<Timestamp>,
) -> anyhow::Result<Scanned> {
    let mut ledger = util::open_api(global)?;
    let request = ScanRequest { bucket: b.spec(), prefix: prefix.map(str::to_owned), clock_skew_ms, proven_through };
    let mut progress = Progress::new("scanned", "versions", None, global.quiet);
    let scanned = tidemark_ops::s3_scan::scan(ledger.as_mut(), &util::SystemEnv, key, &request, &mut progress)
        .map_err(crate::exit::ops_err)?;
    progress.finish();
    Ok(scanned)
}

fn print_line(out: &mut impl std::io::Write, l: &ManifestLine) -> anyhow::Result<()> {
    match l {
        ManifestLine::Restore { key, version_id, size_bytes, last_modified, .. } => {
            writeln!(out, "restore  {key}  {version_id}  {size_bytes} bytes  {last_modified}")?
        }
        ManifestLine::Remove { key } => writeln!(out, "remove   {key}")?,
        ManifestLine::Problem { key, at } => writeln!(out, "PROBLEM  {key}  {}", serde_json::to_string(at)?)?,
    }
    Ok(())
}

fn manifest(global: &Global, a: ManifestArgs) -> anyhow::Result<ExitCode> {
    let m = util::open_api(global)?.s3_manifest(&a.component, a.at).map_err(ops_err)?;
    let mut out = std::io::stdout().lock();
    for l in &m.lines {
        if a.json {
            writeln!(out, "{}", serde_json::to_string(l)?)?;
        } else {
            print_line(&mut out, l)?;
        }
    }
    let summary = &m.summary;
    if a.json {
        writeln!(out, "{}", serde_json::to_string(&ManifestEnd { summary })?)?;
    } else {
        writeln!(
            out,
            "{} at {}: {} keys to restore, {} to remove, {} that cannot be reconstructed; digest {}{}",
            a.component,
            a.at,
            summary.keys_to_restore,
            summary.keys_to_remove,
            summary.keys_with_problems,
            summary.digest,
            summary.bound.as_ref().map(|r| format!("; NOT restorable: {r}")).unwrap_or_default()
        )?;
    }
    Ok(ExitCode::from(if summary.restorable { exit::OK } else { exit::NOT_RESTORABLE }))
}

/// The last line of `s3 manifest --json`.
#[derive(serde::Serialize)]
struct ManifestEnd<'a> {
    summary: &'a tidemark_lineage::s3::ManifestSummary,
}

fn restore(global: &Global, a: RestoreArgs) -> anyhow::Result<ExitCode> {
    let request = S3RestoreRequest {
        bucket: a.bucket.spec(),
        at: a.at,
        destination: match (&a.target_bucket, a.in_place) {
            (_, true) => Destination::InPlace,
            (Some(b), false) => Destination::Bucket(b.clone()),
            (None, false) => return Err(coded(exit::USAGE, "give --target-bucket or --in-place")),
        },
        existing: a.existing_objects.into(),
        concurrency: a.concurrency,
        skip_problem_keys: a.skip_problem_keys,
    };
    let mut ledger = util::open_api(global)?;
    let mut progress = Progress::new("restored", "keys", None, global.quiet);
    let prepared = s3_restore::prepare(ledger.as_ref(), &request, &mut progress).map_err(ops_err)?;
    if a.dry_run {
        let mut out = std::io::stdout().lock();
        for l in &prepared.manifest.lines {
            print_line(&mut out, l)?;
        }
        writeln!(
            out,
            "dry run: would restore {} keys and remove {} in s3://{}; nothing changed",
            prepared.manifest.summary.keys_to_restore, prepared.manifest.summary.keys_to_remove, prepared.target
        )?;
        return Ok(exit::ok());
    }
    let operator = a.signer.key()?;
    let done = s3_restore::restore(ledger.as_mut(), &util::SystemEnv, &operator, &request, &prepared, &mut progress)
        .map_err(ops_err)?;
    progress.finish();
    if a.json {
        util::print_json(&done);
    } else {
        println!(
            "{} at {} → s3://{}: {}; {} requests; recorded as entry {}",
            done.component,
            done.at,
            done.target,
            done.detail,
            done.requests,
            done.entry.map_or("(spooled)".to_owned(), |e| e.to_string())
        );
    }
    Ok(ExitCode::from(if done.report.failed.is_empty() { exit::OK } else { exit::FAILURE }))
}

/// `recovery-points --component s3:…`.
pub fn recovery_points(global: &Global, component: &str, at: Option<&str>, json_out: bool) -> anyhow::Result<ExitCode> {
    let api = util::open_api(global)?;
    let mut out = std::io::stdout().lock();
    if let Some(at) = at {
        let at = util::parse_time(at).map_err(|e| coded(exit::USAGE, format!("--at: {e}")))?;
        let answer = api.s3_answer(component, at).map_err(ops_err)?;
        if json_out {
            writeln!(out, "{}", serde_json::to_string_pretty(&answer)?)?;
        } else if answer.restorable {
            writeln!(
                out,
                "restorable: {component} at {at} (every key's version known; `tidemark s3 manifest` lists them)"
            )?;
        } else {
            writeln!(out, "NOT restorable: {}", answer.explanation.as_deref().unwrap_or(""))?;
        }
        return Ok(ExitCode::from(if answer.restorable { exit::OK } else { exit::NOT_RESTORABLE }));
    }
    let r = api.s3_report(component).map_err(ops_err)?;
    if json_out {
        writeln!(out, "{}", serde_json::to_string_pretty(&r)?)?;
        return Ok(exit::ok());
    }
    let or = |t: Option<Timestamp>, none: &str| t.map_or(none.to_owned(), |t| t.to_string());
    writeln!(
        out,
        "{component}  {} keys  {} versions and delete markers  {} scans  complete through {}  versioning enabled since {}",
        r.keys,
        r.entries_recorded,
        r.scans_completed,
        or(r.complete_through, "-"),
        or(r.versioning_enabled_since, "never observed")
    )?;
    for (from, to) in &r.suspended_periods {
        writeln!(out, "  versioning suspended from {from} to {}", or(*to, "now"))?;
    }
    for w in &r.windows {
        writeln!(out, "  restorable {} … {}   bounded by {}", w.from, w.to, w.bounded_by.join(", "))?;
    }
    for (k, intervals) in &r.problem_keys {
        for (from, to, at) in intervals {
            writeln!(
                out,
                "  key {k:?} cannot be reconstructed from {from} to {}: {}",
                or(*to, "now"),
                serde_json::to_string(at)?
            )?;
        }
    }
    Ok(exit::ok())
}
