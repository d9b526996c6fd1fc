//! tidemark-s3: the only crate that speaks S3 (`aws-sdk-s3`, rustls with
//! ring, credentials from the standard AWS chain). It lists every object
//! version and delete marker of a bucket, reads Object Lock details, and
//! restores a manifest into another bucket or in place — each copy verified,
//! re-runs idempotent, copies concurrent with a bound. What to record and
//! what a manifest holds are decided by `tidemark-lineage`; this crate only
//! moves bytes and reports what it saw.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_s3::Client;
use aws_sdk_s3::types::{BucketVersioningStatus, ObjectLockLegalHoldStatus, ObjectLockMode};
use tidemark_core::Timestamp;
use tidemark_core::event::{RetentionMode, VersioningStatus};
use tidemark_lineage::s3::ManifestLine;
use tidemark_lineage::s3_scan::Listed;

mod clock;
pub use clock::{CLOCK_KEY, CLOCK_SOURCE_KEY};

/// Errors, each naming the request that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum S3Error {
    #[error(
        "S3 {operation} on {bucket}: {detail} (check --endpoint, the bucket name, credentials in the AWS environment, and --path-style for non-AWS endpoints)"
    )]
    Request { operation: &'static str, bucket: String, detail: String },
    #[error("S3 client setup: {0}")]
    Setup(String),
    #[error(
        "the target bucket {bucket} is not empty ({objects} objects, {not_in_manifest} of them not in the manifest): nothing was changed; pass --existing-objects remove to make it match T (re-runs after an interruption too) or --existing-objects keep to leave other keys as they are"
    )]
    TargetNotEmpty { bucket: String, objects: u64, not_in_manifest: u64 },
}

fn req(operation: &'static str, bucket: &str, e: impl std::fmt::Display) -> S3Error {
    S3Error::Request { operation, bucket: bucket.to_owned(), detail: e.to_string() }
}

fn ts(d: &aws_sdk_s3::primitives::DateTime) -> Timestamp {
    Timestamp::from_micros(d.secs() * 1_000_000 + i64::from(d.subsec_nanos() / 1000))
}

/// Where the bucket is.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// e.g. `http://127.0.0.1:5000`; `None` = AWS.
    pub url: Option<String>,
    pub region: String,
    pub path_style: bool,
    /// Where the credentials come from.
    pub credentials: Credentials,
}

/// Where S3 credentials come from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Credentials {
    /// The standard AWS chain: environment, the default profile, instance metadata.
    #[default]
    Chain,
    /// A named profile of the shared AWS config and credentials files.
    Profile(String),
    /// An access key id and secret given directly (tools and tests).
    Static { access_key_id: String, secret_access_key: String },
}

/// A connected S3 client with its own small runtime (callers stay blocking).
pub struct S3 {
    runtime: tokio::runtime::Runtime,
    client: Client,
    requests: Arc<AtomicU64>,
}

impl std::fmt::Debug for S3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("S3")
    }
}

/// Object Lock details of one version (from HEAD).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lock {
    pub mode: Option<RetentionMode>,
    pub retain_until: Option<Timestamp>,
    pub legal_hold: Option<bool>,
}

impl S3 {
    pub fn connect(endpoint: &Endpoint) -> Result<S3, S3Error> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| S3Error::Setup(e.to_string()))?;
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(http)
            .region(aws_config::Region::new(endpoint.region.clone()));
        if let Credentials::Profile(name) = &endpoint.credentials {
            loader = loader.profile_name(name);
        }
        let shared = runtime.block_on(loader.load());
        let mut config = aws_sdk_s3::config::Builder::from(&shared).force_path_style(endpoint.path_style);
        if let Some(url) = &endpoint.url {
            config = config.endpoint_url(url);
        }
        if let Credentials::Static { access_key_id, secret_access_key } = &endpoint.credentials {
            config = config.credentials_provider(aws_sdk_s3::config::Credentials::new(
                access_key_id,
                secret_access_key,
                None,
                None,
                "static",
            ));
        }
        Ok(S3 { runtime, client: Client::from_conf(config.build()), requests: Arc::new(AtomicU64::new(0)) })
    }

    /// The SDK client and a way to run it, for tools and tests that need
    /// S3 calls this crate does not wrap.
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    /// Requests made so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn count(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub fn versioning(&self, bucket: &str) -> Result<VersioningStatus, S3Error> {
        self.count();
        let out = self
            .runtime
            .block_on(self.client.get_bucket_versioning().bucket(bucket).send())
            .map_err(|e| req("GetBucketVersioning", bucket, aws_sdk_s3::error::DisplayErrorContext(e)))?;
        Ok(match out.status() {
            Some(BucketVersioningStatus::Enabled) => VersioningStatus::Enabled,
            Some(BucketVersioningStatus::Suspended) => VersioningStatus::Suspended,
            _ => VersioningStatus::Unversioned,
        })
    }

    /// Creates `bucket` (in the client's region) with versioning enabled,
    /// unless it exists already; returns whether it was created.
    pub fn ensure_bucket(&self, bucket: &str) -> Result<bool, S3Error> {
        self.count();
        if self.runtime.block_on(self.client.head_bucket().bucket(bucket).send()).is_ok() {
            return Ok(false);
        }
        self.count();
        let mut create = self.client.create_bucket().bucket(bucket);
        if let Some(region) = self.client.config().region().map(ToString::to_string).filter(|r| r != "us-east-1") {
            let constraint = aws_sdk_s3::types::BucketLocationConstraint::from(region.as_str());
            create = create.create_bucket_configuration(
                aws_sdk_s3::types::CreateBucketConfiguration::builder().location_constraint(constraint).build(),
            );
        }
        self.runtime
            .block_on(create.send())
            .map_err(|e| req("CreateBucket", bucket, aws_sdk_s3::error::DisplayErrorContext(e)))?;
        self.count();
        let enabled =
            aws_sdk_s3::types::VersioningConfiguration::builder().status(BucketVersioningStatus::Enabled).build();
        self.runtime
            .block_on(self.client.put_bucket_versioning().bucket(bucket).versioning_configuration(enabled).send())
            .map_err(|e| req("PutBucketVersioning", bucket, aws_sdk_s3::error::DisplayErrorContext(e)))?;
        Ok(true)
    }

    /// Deletes every version and delete marker of `bucket`, then the bucket
    /// (a drill's scratch bucket; never called on a source).
    pub fn remove_bucket(&self, bucket: &str) -> Result<u64, S3Error> {
        let mut doomed: Vec<(String, String)> = Vec::new();
        self.list_versions(bucket, None, &mut |entries| {
            doomed.extend(entries.into_iter().map(|l| (l.key, l.version_id)));
            Ok(())
        })?;
        self.delete_versions(bucket, &doomed)?;
        self.count();
        self.runtime
            .block_on(self.client.delete_bucket().bucket(bucket).send())
            .map_err(|e| req("DeleteBucket", bucket, aws_sdk_s3::error::DisplayErrorContext(e)))?;
        Ok(doomed.len() as u64)
    }

    /// Deletes these versions permanently (DeleteObjects, up to 1000 a request).
    pub fn delete_versions(&self, bucket: &str, versions: &[(String, String)]) -> Result<(), S3Error> {
        for chunk in versions.chunks(1000) {
            let objects = chunk
                .iter()
                .map(|(key, version)| {
                    aws_sdk_s3::types::ObjectIdentifier::builder()
                        .key(key)
                        .version_id(version)
                        .build()
                        .map_err(|e| req("DeleteObjects", bucket, e))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let delete = aws_sdk_s3::types::Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| req("DeleteObjects", bucket, e))?;
            self.count();
            let out = self
                .runtime
                .block_on(self.client.delete_objects().bucket(bucket).delete(delete).send())
                .map_err(|e| req("DeleteObjects", bucket, aws_sdk_s3::error::DisplayErrorContext(e)))?;
            if let Some(e) = out.errors().first() {
                let detail = format!(
                    "{} of {} versions not deleted, e.g. {:?}: {:?}",
                    out.errors().len(),
                    chunk.len(),
                    e.key(),
                    e.message()
                );
                return Err(req("DeleteObjects", bucket, detail));
            }
        }
        Ok(())
    }

    /// Whether the bucket has Object Lock enabled.
    pub fn object_lock_enabled(&self, bucket: &str) -> bool {
        self.count();
        self.runtime
            .block_on(self.client.get_object_lock_configuration().bucket(bucket).send())
            .ok()
            .and_then(|o| o.object_lock_configuration().and_then(|c| c.object_lock_enabled().cloned()))
            .is_some_and(|e| e.as_str() == "Enabled")
    }

    /// When the oldest multipart upload still in progress started.
    pub fn oldest_upload_in_progress(&self, bucket: &str, prefix: Option<&str>) -> Result<Option<Timestamp>, S3Error> {
        Ok(self.uploads_in_progress(bucket, prefix)?.into_iter().map(|(_, t)| t).min())
    }

    /// Every multipart upload in progress: its key and when it was initiated.
    pub fn uploads_in_progress(&self, bucket: &str, prefix: Option<&str>) -> Result<Vec<(String, Timestamp)>, S3Error> {
        let mut found = Vec::new();
        let (mut key_marker, mut id_marker): (Option<String>, Option<String>) = (None, None);
        loop {
            self.count();
            let out = self
                .runtime
                .block_on(
                    self.client
                        .list_multipart_uploads()
                        .bucket(bucket)
                        .set_prefix(prefix.map(str::to_owned))
                        .set_key_marker(key_marker.clone())
                        .set_upload_id_marker(id_marker.clone())
                        .send(),
                )
                .map_err(|e| req("ListMultipartUploads", bucket, aws_sdk_s3::error::DisplayErrorContext(e)))?;
            for u in out.uploads() {
                if let Some(t) = u.initiated() {
                    found.push((u.key().unwrap_or_default().to_owned(), ts(t)));
                }
            }
            if out.is_truncated() != Some(true) {
                return Ok(found);
            }
            key_marker = out.next_key_marker().map(str::to_owned);
            id_marker = out.next_upload_id_marker().map(str::to_owned);
            if key_marker.is_none() {
                return Ok(found);
            }
        }
    }

    /// Lists every version and delete marker (all pages), handing over each
    /// key's entries once they are all listed, in key order.
    pub fn list_versions(
        &self,
        bucket: &str,
        prefix: Option<&str>,
        each_key: &mut dyn FnMut(Vec<Listed>) -> Result<(), S3Error>,
    ) -> Result<u64, S3Error> {
        let (mut key_marker, mut version_marker): (Option<String>, Option<String>) = (None, None);
        let mut pending: Vec<Listed> = Vec::new();
        let mut listed = 0u64;
        // (versions, delete markers) of the pending key listed so far.
        let mut counts = (0usize, 0usize);
        loop {
            self.count();
            let out = self
                .runtime
                .block_on(
                    self.client
                        .list_object_versions()
                        .bucket(bucket)
                        .set_prefix(prefix.map(str::to_owned))
                        .set_key_marker(key_marker.clone())
                        .set_version_id_marker(version_marker.clone())
                        .send(),
                )
                .map_err(|e| req("ListObjectVersions", bucket, aws_sdk_s3::error::DisplayErrorContext(e)))?;
            let mut page: Vec<Listed> = Vec::new();
            for v in out.versions() {
                page.push(Listed {
                    key: v.key().unwrap_or_default().to_owned(),
                    version_id: v.version_id().unwrap_or("null").to_owned(),
                    etag: v.e_tag().map(str::to_owned),
                    size_bytes: v.size().unwrap_or(0).max(0) as u64,
                    last_modified: v.last_modified().map(ts).unwrap_or(Timestamp::EPOCH),
                    is_delete_marker: false,
                    is_latest: v.is_latest().unwrap_or(false),
                    index_in_kind: 0,
                });
            }
            for d in out.delete_markers() {
                page.push(Listed {
                    key: d.key().unwrap_or_default().to_owned(),
                    version_id: d.version_id().unwrap_or("null").to_owned(),
                    etag: None,
                    size_bytes: 0,
                    last_modified: d.last_modified().map(ts).unwrap_or(Timestamp::EPOCH),
                    is_delete_marker: true,
                    is_latest: d.is_latest().unwrap_or(false),
                    index_in_kind: 0,
                });
            }
            listed += page.len() as u64;
            // Stable: within a kind, the listing's order is kept.
            page.sort_by(|a, b| a.key.cmp(&b.key).then(a.is_delete_marker.cmp(&b.is_delete_marker)));
            for mut e in page {
                if pending.first().is_some_and(|p| p.key != e.key) {
                    each_key(std::mem::take(&mut pending))?;
                    counts = (0, 0);
                }
                let c = if e.is_delete_marker { &mut counts.1 } else { &mut counts.0 };
                e.index_in_kind = *c;
                *c += 1;
                pending.push(e);
            }
            if out.is_truncated() != Some(true) {
                break;
            }
            key_marker = out.next_key_marker().map(str::to_owned);
            version_marker = out.next_version_id_marker().map(str::to_owned);
        }
        if !pending.is_empty() {
            each_key(pending)?;
        }
        Ok(listed)
    }

    /// One version's ETag and size as the bucket reports them now (HEAD by
    /// version id); `None` when the version is gone (404, no such version).
    pub fn head_version(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
    ) -> Result<Option<(Option<String>, u64)>, S3Error> {
        self.count();
        match self.runtime.block_on(self.client.head_object().bucket(bucket).key(key).version_id(version_id).send()) {
            Ok(out) => Ok(Some((out.e_tag().map(str::to_owned), out.content_length().unwrap_or(0).max(0) as u64))),
            Err(e) => {
                let gone = e.raw_response().is_some_and(|r| matches!(r.status().as_u16(), 404 | 400 | 405));
                if gone { Ok(None) } else { Err(req("HeadObject", bucket, aws_sdk_s3::error::DisplayErrorContext(e))) }
            }
        }
    }

    /// Object Lock details of one version.
    pub fn lock_of(&self, bucket: &str, key: &str, version_id: &str) -> Result<Lock, S3Error> {
        self.count();
        let out = self
            .runtime
            .block_on(self.client.head_object().bucket(bucket).key(key).version_id(version_id).send())
            .map_err(|e| req("HeadObject", bucket, aws_sdk_s3::error::DisplayErrorContext(e)))?;
        Ok(Lock {
            mode: out.object_lock_mode().and_then(|m| match m {
                ObjectLockMode::Governance => Some(RetentionMode::Governance),
                ObjectLockMode::Compliance => Some(RetentionMode::Compliance),
                _ => None,
            }),
            retain_until: out.object_lock_retain_until_date().map(ts),
            legal_hold: out.object_lock_legal_hold_status().map(|s| *s == ObjectLockLegalHoldStatus::On),
        })
    }

    /// Carries out a manifest: copies each version (server-side, by version
    /// id) into `target`, removes keys absent at T (a delete marker, never a
    /// version deletion), verifies every copy, skips what is already done.
    ///
    /// A target that already holds objects is refused unless `existing`
    /// says what to do with them (nothing has been changed when it is).
    /// `target == source` is a restore in place: what is there is the
    /// bucket's own later history, which the manifest accounts for.
    pub fn restore(
        &self,
        source: &str,
        target: &str,
        mut lines: Vec<ManifestLine>,
        concurrency: usize,
        existing: Existing,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<RestoreReport, S3Error> {
        // What the target holds now, in one listing (a HEAD per key would triple the requests).
        let mut present = self.current_objects(target)?;
        // tidemark's own clock probes are not the application's objects.
        present.retain(|k, _| !k.starts_with(tidemark_lineage::s3::RESERVED_PREFIX));
        let in_manifest: std::collections::HashSet<String> = lines.iter().map(line_key).collect();
        let mut others: Vec<String> = present.keys().filter(|k| !in_manifest.contains(*k)).cloned().collect();
        others.sort();
        let mut kept = 0;
        if source != target && !present.is_empty() {
            match existing {
                Existing::Refuse => {
                    return Err(S3Error::TargetNotEmpty {
                        bucket: target.to_owned(),
                        objects: present.len() as u64,
                        not_in_manifest: others.len() as u64,
                    });
                }
                Existing::Keep => kept = others.len() as u64,
                Existing::Remove => lines.extend(others.iter().map(|k| ManifestLine::Remove { key: k.clone() })),
            }
        }
        let present = Arc::new(present);
        let total = lines.len() as u64;
        let done = Arc::new(AtomicU64::new(0));
        let results: Vec<(String, Result<Done, String>)> = self.runtime.block_on(async {
            // At most `concurrency` copies in flight: a new one starts only when one has been
            // joined, and every joined result is kept (by its task's id, so a task that
            // panicked still counts as its key's failure).
            let limit = concurrency.max(1);
            let mut set = tokio::task::JoinSet::new();
            let mut line_of: HashMap<tokio::task::Id, (usize, String)> = HashMap::new();
            let mut out: Vec<(usize, String, Result<Done, String>)> = Vec::with_capacity(lines.len());
            let mut join_one = |r: Joined, line_of: &mut HashMap<tokio::task::Id, (usize, String)>| {
                let (id, result) = match r {
                    Ok((id, result)) => (id, result),
                    Err(e) => (e.id(), Err(format!("the copy task failed: {e}"))),
                };
                let (i, key) = line_of.remove(&id).expect("every task is registered when spawned");
                out.push((i, key, result));
                progress(done.load(Ordering::Relaxed), total);
            };
            for (i, line) in lines.into_iter().enumerate() {
                while set.len() >= limit {
                    match set.join_next_with_id().await {
                        Some(r) => join_one(r, &mut line_of),
                        None => break,
                    }
                }
                let (client, requests, counter, present) =
                    (self.client.clone(), self.requests.clone(), done.clone(), present.clone());
                let (source, target) = (source.to_owned(), target.to_owned());
                let key = line_key(&line);
                let handle = set.spawn(async move {
                    let r = apply_line(&client, &requests, &source, &target, &present, line).await;
                    counter.fetch_add(1, Ordering::Relaxed);
                    r
                });
                line_of.insert(handle.id(), (i, key));
            }
            while let Some(r) = set.join_next_with_id().await {
                join_one(r, &mut line_of);
            }
            out.sort_by_key(|(i, _, _)| *i);
            debug_assert_eq!(out.len() as u64, total, "every line has a result");
            out.into_iter().map(|(_, k, r)| (k, r)).collect()
        });
        let mut report = RestoreReport { kept_not_in_manifest: kept, ..RestoreReport::default() };
        for (key, r) in results {
            match r {
                Ok(Done::Copied) => report.copied += 1,
                Ok(Done::AlreadyThere) => report.skipped += 1,
                Ok(Done::Removed) => report.removed += 1,
                Ok(Done::AlreadyAbsent) => report.skipped += 1,
                Err(e) => report.failed.push((key, e)),
            }
        }
        Ok(report)
    }
}

impl S3 {
    /// Every current object of a bucket: key → (ETag, size).
    fn current_objects(
        &self,
        bucket: &str,
    ) -> Result<std::collections::HashMap<String, (Option<String>, u64)>, S3Error> {
        let mut out = std::collections::HashMap::new();
        let mut token: Option<String> = None;
        loop {
            self.count();
            let page = self
                .runtime
                .block_on(self.client.list_objects_v2().bucket(bucket).set_continuation_token(token.clone()).send())
                .map_err(|e| req("ListObjectsV2", bucket, aws_sdk_s3::error::DisplayErrorContext(e)))?;
            for o in page.contents() {
                if let Some(k) = o.key() {
                    out.insert(k.to_owned(), (o.e_tag().map(str::to_owned), o.size().unwrap_or(0).max(0) as u64));
                }
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_owned()),
                _ => return Ok(out),
            }
        }
    }
}

/// What a restore did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RestoreReport {
    /// Versions copied and verified.
    pub copied: u64,
    /// Keys already as the manifest wants them (a re-run after an interruption).
    pub skipped: u64,
    /// Keys given a delete marker.
    pub removed: u64,
    /// Objects of the target outside the manifest left as they were (`Existing::Keep`).
    pub kept_not_in_manifest: u64,
    /// Every line that failed, with why (one line each).
    pub failed: Vec<(String, String)>,
}

/// Exactly what was done, as the restore's output and its signed
/// `restore.performed` detail say it: every count, and the failed keys (the
/// first ten named).
impl std::fmt::Display for RestoreReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "copied and verified {}, already in place {}, removed {}, failed {}",
            self.copied,
            self.skipped,
            self.removed,
            self.failed.len()
        )?;
        if !self.failed.is_empty() {
            let keys: Vec<&str> = self.failed.iter().take(10).map(|(k, _)| k.as_str()).collect();
            write!(f, " ({}", keys.join(", "))?;
            if self.failed.len() > 10 {
                write!(f, ", … {} more", self.failed.len() - 10)?;
            }
            f.write_str(")")?;
        }
        if self.kept_not_in_manifest > 0 {
            write!(f, ", other keys left in the target {}", self.kept_not_in_manifest)?;
        }
        Ok(())
    }
}

/// What a restore does with objects already in a target bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Existing {
    /// Refuse before changing anything.
    #[default]
    Refuse,
    /// Make the target match T: keys outside the manifest get a delete marker
    /// (identical objects already there are skipped, so a re-run is cheap).
    Remove,
    /// Leave keys outside the manifest as they are (the bucket then holds more than T).
    Keep,
}

/// A finished copy task as the join set returns it.
type Joined = Result<(tokio::task::Id, Result<Done, String>), tokio::task::JoinError>;

enum Done {
    Copied,
    AlreadyThere,
    Removed,
    AlreadyAbsent,
}

fn line_key(l: &ManifestLine) -> String {
    match l {
        ManifestLine::Restore { key, .. } | ManifestLine::Remove { key } | ManifestLine::Problem { key, .. } => {
            key.clone()
        }
    }
}

/// One line for an SDK error: the service's code and message when S3 answered,
/// else the first line of the transport error (never the SDK's multi-line debug text).
fn sdk_line<E, R>(e: &aws_sdk_s3::error::SdkError<E, R>) -> String
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    if let Some(service) = e.as_service_error() {
        let code = service.code().unwrap_or("error");
        return match service.message() {
            Some(m) => format!("{code}: {m}"),
            None => code.to_owned(),
        };
    }
    let full = aws_sdk_s3::error::DisplayErrorContext(e).to_string();
    full.lines().next().unwrap_or("request failed").chars().take(300).collect()
}

fn encode_path(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn blake3_of(client: &Client, bucket: &str, key: &str, version: Option<&str>) -> Result<[u8; 32], String> {
    let out = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .set_version_id(version.map(str::to_owned))
        .send()
        .await
        .map_err(|e| format!("GetObject {key}: {}", sdk_line(&e)))?;
    let bytes = out.body.collect().await.map_err(|e| format!("reading {key}: {e}"))?.into_bytes();
    Ok(*blake3::hash(&bytes).as_bytes())
}

/// The current (ETag, size) of a key, or `None` when absent or a delete marker.
async fn current(client: &Client, bucket: &str, key: &str) -> Result<Option<(Option<String>, u64)>, String> {
    match client.head_object().bucket(bucket).key(key).send().await {
        Ok(h) => Ok(Some((h.e_tag().map(str::to_owned), h.content_length().unwrap_or(0).max(0) as u64))),
        Err(e) => {
            let not_found = e.as_service_error().is_some_and(|s| s.is_not_found())
                || e.raw_response().is_some_and(|r| r.status().as_u16() == 404 || r.status().as_u16() == 405);
            if not_found { Ok(None) } else { Err(format!("HeadObject {key}: {}", sdk_line(&e))) }
        }
    }
}

/// The same bytes: by ETag when it is a plain MD5, else by reading both.
async fn same_content(
    client: &Client,
    requests: &AtomicU64,
    (source, key, version_id): (&str, &str, &str),
    target: &str,
    manifest_etag: Option<&str>,
    size: u64,
    now: (Option<String>, u64),
) -> Result<bool, String> {
    if now.1 != size {
        return Ok(false);
    }
    match (manifest_etag, now.0.as_deref()) {
        (Some(m), Some(n)) if !m.contains('-') => Ok(m == n),
        _ => {
            requests.fetch_add(2, Ordering::Relaxed);
            Ok(blake3_of(client, source, key, Some(version_id)).await? == blake3_of(client, target, key, None).await?)
        }
    }
}

async fn apply_line(
    client: &Client,
    requests: &AtomicU64,
    source: &str,
    target: &str,
    present: &std::collections::HashMap<String, (Option<String>, u64)>,
    line: ManifestLine,
) -> Result<Done, String> {
    match line {
        ManifestLine::Restore { key, version_id, etag, size_bytes, .. } => {
            if let Some(now) = present.get(&key)
                && same_content(
                    client,
                    requests,
                    (source, &key, &version_id),
                    target,
                    etag.as_deref(),
                    size_bytes,
                    now.clone(),
                )
                .await?
            {
                return Ok(Done::AlreadyThere);
            }
            requests.fetch_add(1, Ordering::Relaxed);
            let copied = client
                .copy_object()
                .bucket(target)
                .key(&key)
                .copy_source(format!("{}/{}?versionId={}", source, encode_path(&key), encode_path(&version_id)))
                .send()
                .await
                .map_err(|e| format!("CopyObject {key}@{version_id}: {}", sdk_line(&e)))?;
            // A single-part object's ETag is its MD5: the copy's ETag must equal the
            // version's. Otherwise read both and compare blake3.
            let copy_etag = copied.copy_object_result().and_then(|r| r.e_tag()).map(str::to_owned);
            let verified = match (etag.as_deref(), copy_etag.as_deref()) {
                (Some(m), Some(c)) if !m.contains('-') => m == c,
                _ => {
                    requests.fetch_add(1, Ordering::Relaxed);
                    let now = current(client, target, &key)
                        .await?
                        .ok_or_else(|| format!("{key}: not there after the copy"))?;
                    same_content(
                        client,
                        requests,
                        (source, &key, &version_id),
                        target,
                        etag.as_deref(),
                        size_bytes,
                        now,
                    )
                    .await?
                }
            };
            if !verified {
                return Err(format!("{key}: the copy does not match version {version_id} (ETag/size/blake3)"));
            }
            Ok(Done::Copied)
        }
        ManifestLine::Remove { key } => {
            if !present.contains_key(&key) {
                return Ok(Done::AlreadyAbsent);
            }
            requests.fetch_add(1, Ordering::Relaxed);
            client
                .delete_object()
                .bucket(target)
                .key(&key)
                .send()
                .await
                .map_err(|e| format!("DeleteObject {key}: {}", sdk_line(&e)))?;
            Ok(Done::Removed)
        }
        ManifestLine::Problem { key, .. } => Err(format!("{key} cannot be reconstructed at T; not restored")),
    }
}
