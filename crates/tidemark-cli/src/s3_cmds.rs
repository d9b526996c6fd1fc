//! `tidemark s3 …`: register a bucket, scan its versions, print the
//! manifest at T, restore it; and the S3 side of `recovery-points`.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Subcommand};
use serde_json::{Value, json};
use tidemark_core::Timestamp;
use tidemark_core::event::{ComponentOutcome, ComponentRegistered, EventBody, Outcome, RestorePerformed, S3Identity};
use tidemark_core::{ComponentId, Digest32};
use tidemark_lineage::s3::ManifestLine;
use tidemark_ops::s3_scan::{BucketSpec, ScanRequest, Scanned};
use tidemark_s3::{Endpoint, S3};

use crate::progress::Progress;
use crate::remote::client_err;

use crate::exit::{self, coded};
use crate::pg_cmds::{Signer, Source, local_err, record_events};
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
    /// A bucket known only by its component: everything else from its registration (`resolve`).
    pub fn registered(component: &str, path_style: bool) -> Bucket {
        Bucket { component: component.to_owned(), endpoint: None, bucket: None, region: None, path_style }
    }

    /// What the operator named, for the rules in `tidemark_ops::s3_scan`.
    pub fn spec(&self) -> BucketSpec {
        BucketSpec {
            component: self.component.clone(),
            endpoint: self.endpoint.clone(),
            bucket: self.bucket.clone(),
            region: self.region.clone(),
            path_style: self.path_style,
        }
    }

    /// The whole address from the registration (`BucketSpec::resolve`'s rules).
    pub fn resolve(&self, registered: &Value) -> anyhow::Result<Bucket> {
        let identity: Option<S3Identity> =
            if registered.is_null() { None } else { Some(serde_json::from_value(registered.clone())?) };
        let r = self.spec().resolve(identity.as_ref()).map_err(crate::exit::ops_err)?;
        Ok(Bucket {
            component: r.component,
            endpoint: r.endpoint,
            bucket: Some(r.bucket),
            region: Some(r.region),
            path_style: r.path_style,
        })
    }

    fn check(&self) -> anyhow::Result<()> {
        self.spec().check().map_err(crate::exit::ops_err)
    }

    pub fn bucket_name(&self) -> &str {
        self.bucket.as_deref().unwrap_or("")
    }

    pub fn connect(&self) -> anyhow::Result<S3> {
        Ok(S3::connect(&Endpoint {
            url: self.endpoint.clone(),
            region: self.region.clone().unwrap_or_else(|| "us-east-1".to_owned()),
            path_style: self.path_style,
            static_credentials: None,
        })?)
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
            let seq = record_events(global, &signer.key()?, vec![body])?;
            util::print_recorded(json, seq[0], &shown, || {
                format!("registered {} as entry {}", bucket.component, seq[0])
            });
            Ok(exit::ok())
        }
        S3Command::Scan(a) => scan(global, a),
        S3Command::Manifest(a) => manifest(global, a),
        S3Command::Restore(a) => restore(global, a),
    }
}

impl Source {
    pub fn s3_report(&self, component: &str) -> anyhow::Result<Value> {
        match self {
            Source::Local(l) => Ok(serde_json::to_value(l.s3_report(component).map_err(local_err)?)?),
            Source::Remote(c) => Ok(serde_json::to_value(c.s3_report(component).map_err(client_err)?)?),
        }
    }

    pub fn s3_answer(&self, component: &str, at: Timestamp) -> anyhow::Result<Value> {
        match self {
            Source::Local(l) => Ok(serde_json::to_value(l.s3_answer(component, at).map_err(local_err)?)?),
            Source::Remote(c) => Ok(serde_json::to_value(c.s3_answer(component, at).map_err(client_err)?)?),
        }
    }

    /// `{summary, lines}`.
    pub fn s3_manifest(&self, component: &str, at: Timestamp) -> anyhow::Result<Value> {
        match self {
            Source::Local(l) => {
                let mut lines = Vec::new();
                let summary = l
                    .s3_manifest(component, at, 0, &mut |line| {
                        lines.push(line.clone());
                        Ok(())
                    })
                    .map_err(local_err)?;
                Ok(json!({"summary": summary, "lines": lines}))
            }
            Source::Remote(c) => Ok(serde_json::to_value(c.s3_manifest(component, at).map_err(client_err)?)?),
        }
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

fn print_line(out: &mut impl std::io::Write, l: &Value) -> std::io::Result<()> {
    let s = |k: &str| l[k].as_str().unwrap_or("").to_owned();
    match l["action"].as_str() {
        Some("restore") => writeln!(
            out,
            "restore  {}  {}  {} bytes  {}",
            s("key"),
            s("version_id"),
            l["size_bytes"],
            s("last_modified")
        ),
        Some("remove") => writeln!(out, "remove   {}", s("key")),
        _ => writeln!(out, "PROBLEM  {}  {}", s("key"), l["at"]),
    }
}

fn manifest(global: &Global, a: ManifestArgs) -> anyhow::Result<ExitCode> {
    let m = Source::open(global)?.s3_manifest(&a.component, a.at)?;
    let mut out = std::io::stdout().lock();
    for l in m["lines"].as_array().into_iter().flatten() {
        if a.json {
            writeln!(out, "{l}")?;
        } else {
            print_line(&mut out, l)?;
        }
    }
    let summary = &m["summary"];
    if a.json {
        writeln!(out, "{}", json!({"summary": summary}))?;
    } else {
        writeln!(
            out,
            "{} at {}: {} keys to restore, {} to remove, {} that cannot be reconstructed; digest {}{}",
            a.component,
            a.at,
            summary["keys_to_restore"],
            summary["keys_to_remove"],
            summary["keys_with_problems"],
            summary["digest"].as_str().unwrap_or(""),
            summary["bound"]["reason"].as_str().map(|r| format!("; NOT restorable: {r}")).unwrap_or_default()
        )?;
    }
    Ok(ExitCode::from(if summary["restorable"].as_bool() == Some(true) { exit::OK } else { exit::NOT_RESTORABLE }))
}

fn restore(global: &Global, a: RestoreArgs) -> anyhow::Result<ExitCode> {
    a.bucket.check()?;
    let component = a.bucket.component.clone();
    let started = Instant::now();
    let source = Source::open(global)?;
    let report = source.s3_report(&component).map_err(|e| coded(exit::USAGE, format!("{e:#}")))?;
    let bucket = a.bucket.resolve(&report["registered"])?;
    let m = source.s3_manifest(&component, a.at)?;
    drop(source);
    let summary = m["summary"].clone();
    if let Some(reason) = summary["bound"]["reason"].as_str() {
        return Err(coded(
            exit::NOT_RESTORABLE,
            format!("{component} is not restorable at {}: {reason} ({})", a.at, summary["bound"]),
        ));
    }
    let lines: Vec<ManifestLine> = m["lines"].as_array().into_iter().flatten().filter_map(manifest_line_from).collect();
    let problems: Vec<&Value> =
        m["lines"].as_array().into_iter().flatten().filter(|l| l["action"] == "problem").collect();
    if !problems.is_empty() && !a.skip_problem_keys {
        for p in &problems {
            eprintln!("cannot be reconstructed at {}: {} {}", a.at, p["key"].as_str().unwrap_or(""), p["at"]);
        }
        return Err(coded(
            exit::NOT_RESTORABLE,
            format!(
                "{} keys cannot be reconstructed at {}; pass --skip-problem-keys to restore the others",
                problems.len(),
                a.at
            ),
        ));
    }
    let target =
        if a.in_place { bucket.bucket_name().to_owned() } else { a.target_bucket.clone().expect("clap requires one") };
    if a.dry_run {
        let mut out = std::io::stdout().lock();
        for l in m["lines"].as_array().into_iter().flatten() {
            print_line(&mut out, l)?;
        }
        writeln!(
            out,
            "dry run: would restore {} keys and remove {} in s3://{target}; nothing changed",
            summary["keys_to_restore"], summary["keys_to_remove"]
        )?;
        return Ok(exit::ok());
    }
    let operator = a.signer.key()?;
    Source::open(global)?.check_signer(&operator, tidemark_core::Kind::RestorePerformed)?;
    let s3 = bucket.connect()?;
    let created = if a.in_place { false } else { s3.ensure_bucket(&target)? };
    if created {
        eprintln!("created s3://{target} (versioned)");
    }
    let progress = std::sync::Mutex::new(Progress::new("restored", "keys", None, global.quiet));
    let report =
        s3.restore(bucket.bucket_name(), &target, lines, a.concurrency, a.existing_objects.into(), &|done, total| {
            let mut p = progress.lock().expect("progress lock");
            p.set_total(total);
            p.set(done);
        })?;
    progress.into_inner().expect("progress lock").finish();
    for (key, why) in &report.failed {
        eprintln!("failed: {key}: {why}");
    }
    let outcome = if report.failed.is_empty() {
        Outcome::Succeeded
    } else if report.copied + report.removed + report.skipped > 0 {
        Outcome::Partial
    } else {
        Outcome::Failed
    };
    let detail = format!(
        "{report}{}",
        if problems.is_empty() {
            String::new()
        } else {
            format!(", left alone (not reconstructible) {}", problems.len())
        }
    );
    let component_id = ComponentId::parse(&component).map_err(|e| coded(exit::USAGE, e))?;
    let body = EventBody::RestorePerformed(RestorePerformed {
        target: component.clone(),
        recovery_point: a.at.to_string(),
        plan_digest: Digest32::parse(summary["digest"].as_str().unwrap_or(""))
            .map_err(|e| coded(exit::FAILURE, format!("the manifest's digest: {e}")))?,
        target_environment: if a.in_place { format!("s3://{target} (in place)") } else { format!("s3://{target}") },
        outcome,
        components: vec![ComponentOutcome { component: component_id, outcome, detail: Some(detail.clone()) }],
        duration_ms: started.elapsed().as_millis() as u64,
    });
    let seq = record_events(global, &operator, vec![body])?;
    println!(
        "{component} at {} → s3://{target}: {detail}; {} requests; recorded as entry {}",
        a.at,
        s3.requests(),
        seq[0]
    );
    Ok(ExitCode::from(if report.failed.is_empty() { exit::OK } else { exit::FAILURE }))
}

fn manifest_line_from(l: &Value) -> Option<ManifestLine> {
    let key = l["key"].as_str()?.to_owned();
    match l["action"].as_str()? {
        "restore" => Some(ManifestLine::Restore {
            key,
            version_id: l["version_id"].as_str()?.to_owned(),
            etag: l["etag"].as_str().map(str::to_owned),
            size_bytes: l["size_bytes"].as_u64()?,
            last_modified: Timestamp::parse_rfc3339(l["last_modified"].as_str()?).ok()?,
        }),
        "remove" => Some(ManifestLine::Remove { key }),
        _ => None,
    }
}

/// `recovery-points --component s3:…`.
pub fn recovery_points(global: &Global, component: &str, at: Option<&str>, json_out: bool) -> anyhow::Result<ExitCode> {
    let source = Source::open(global)?;
    let mut out = std::io::stdout().lock();
    if let Some(at) = at {
        let at = util::parse_time(at).map_err(|e| coded(exit::USAGE, format!("--at: {e}")))?;
        let answer = source.s3_answer(component, at)?;
        let ok = answer["restorable"].as_bool() == Some(true);
        if json_out {
            writeln!(out, "{}", serde_json::to_string_pretty(&answer)?)?;
        } else if ok {
            writeln!(
                out,
                "restorable: {component} at {at} (every key's version known; `tidemark s3 manifest` lists them)"
            )?;
        } else {
            writeln!(out, "NOT restorable: {}", answer["explanation"].as_str().unwrap_or(""))?;
        }
        return Ok(ExitCode::from(if ok { exit::OK } else { exit::NOT_RESTORABLE }));
    }
    let r = source.s3_report(component)?;
    if json_out {
        writeln!(out, "{}", serde_json::to_string_pretty(&r)?)?;
        return Ok(exit::ok());
    }
    writeln!(
        out,
        "{component}  {} keys  {} versions and delete markers  {} scans  complete through {}  versioning enabled since {}",
        r["keys"],
        r["entries_recorded"],
        r["scans_completed"],
        r["complete_through"].as_str().unwrap_or("-"),
        r["versioning_enabled_since"].as_str().unwrap_or("never observed")
    )?;
    for p in r["suspended_periods"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "  versioning suspended from {} to {}",
            p[0].as_str().unwrap_or(""),
            p[1].as_str().unwrap_or("now")
        )?;
    }
    for w in r["windows"].as_array().into_iter().flatten() {
        let bounded: Vec<String> =
            w["bounded_by"].as_array().into_iter().flatten().map(|x| x.as_str().unwrap_or("").to_owned()).collect();
        writeln!(
            out,
            "  restorable {} … {}   bounded by {}",
            w["from"].as_str().unwrap_or(""),
            w["to"].as_str().unwrap_or(""),
            bounded.join(", ")
        )?;
    }
    for (k, intervals) in r["problem_keys"].as_array().into_iter().flatten().map(|p| (p[0].clone(), p[1].clone())) {
        for i in intervals.as_array().into_iter().flatten() {
            writeln!(
                out,
                "  key {} cannot be reconstructed from {} to {}: {}",
                k,
                i[0].as_str().unwrap_or(""),
                i[1].as_str().unwrap_or("now"),
                i[2]
            )?;
        }
    }
    Ok(exit::ok())
}
