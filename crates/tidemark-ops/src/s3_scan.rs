//! Scanning an S3 bucket: list every version and delete marker, record
//! what is new and what went missing, and the watermark the listing proves.

use std::collections::BTreeMap;
use std::time::Instant;

use tidemark_core::event::{
    EventBody, S3Identity, S3ObjectVersion, S3ScanComplete, S3VersionMissing, S3Versioning, VersioningStatus,
};
use tidemark_core::{ComponentId, Kind, SecretKey, SignedEvent, Timestamp};
use tidemark_lineage::s3::KeyHistory;
use tidemark_lineage::s3_scan::{self, Listed};
use tidemark_s3::{Endpoint, S3};

use crate::{Env, LedgerApi, OpsError, Progress, Recorded};

/// The endpoint a bucket registered without one is recorded with.
pub const AWS_ENDPOINT: &str = "https://s3.amazonaws.com";

/// The URL to connect to for a registered endpoint (`None`: AWS's own).
pub fn endpoint_url(registered: &str) -> Option<String> {
    (registered != AWS_ENDPOINT).then(|| registered.to_owned())
}

/// Rule: path-style addressing when asked for, or for an endpoint that is not AWS.
pub fn path_style(registered: &str, asked: bool) -> bool {
    asked || registered != AWS_ENDPOINT
}

/// A bucket as the operator names it: the component, and whatever of its
/// address was given (the rest comes from the registration).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BucketSpec {
    pub component: String,
    pub endpoint: Option<String>,
    pub bucket: Option<String>,
    pub region: Option<String>,
    pub path_style: bool,
    /// Where the credentials come from (default: the standard AWS chain).
    pub credentials: tidemark_s3::Credentials,
}

/// A bucket with its whole address, checked against its registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedBucket {
    pub component: String,
    /// `None`: AWS's own endpoint.
    pub endpoint: Option<String>,
    pub bucket: String,
    pub region: String,
    pub path_style: bool,
    pub credentials: tidemark_s3::Credentials,
}

impl BucketSpec {
    /// A bucket known only by its component.
    pub fn registered(component: &str) -> BucketSpec {
        BucketSpec { component: component.to_owned(), ..BucketSpec::default() }
    }

    /// S3 components are named `s3:NAME`.
    pub fn check(&self) -> Result<(), OpsError> {
        if self.component.starts_with("s3:") {
            Ok(())
        } else {
            Err(OpsError::Usage(format!("{}: S3 components are named s3:NAME", self.component)))
        }
    }

    /// Rule: what is not given comes from the registration — the endpoint,
    /// bucket and region; path-style addressing for an endpoint that is not
    /// AWS. Rule: what is given must match the registration — a wrong
    /// bucket's listing would record every key of the real one missing.
    pub fn resolve(&self, registered: Option<&S3Identity>) -> Result<ResolvedBucket, OpsError> {
        let Some(r) = registered else {
            return Err(OpsError::Usage(format!(
                "{} is not registered as an S3 bucket (`tidemark s3 register` first)",
                self.component
            )));
        };
        let norm = |e: &str| e.trim_end_matches('/').to_owned();
        let want_endpoint = norm(&r.endpoint);
        let given_bucket = self.bucket.as_deref().unwrap_or(&r.bucket);
        let given = self.endpoint.as_deref().map_or_else(|| want_endpoint.clone(), norm);
        if given_bucket != r.bucket || given != want_endpoint {
            return Err(OpsError::Usage(format!(
                "{} is registered as bucket {} at {want_endpoint}, not {given_bucket} at {given}: nothing was done",
                self.component, r.bucket
            )));
        }
        Ok(ResolvedBucket {
            component: self.component.clone(),
            endpoint: self.endpoint.clone().or_else(|| endpoint_url(&r.endpoint)),
            bucket: r.bucket.clone(),
            region: self
                .region
                .clone()
                .or_else(|| (!r.region.is_empty()).then(|| r.region.clone()))
                .unwrap_or_else(|| "us-east-1".to_owned()),
            path_style: path_style(&r.endpoint, self.path_style),
            credentials: self.credentials.clone(),
        })
    }
}

impl ResolvedBucket {
    pub fn connect(&self) -> Result<S3, OpsError> {
        Ok(S3::connect(&Endpoint {
            url: self.endpoint.clone(),
            region: self.region.clone(),
            path_style: self.path_style,
            credentials: self.credentials.clone(),
        })?)
    }
}

/// What to scan.
#[derive(Debug, Clone)]
pub struct ScanRequest {
    pub bucket: BucketSpec,
    /// Only keys under this prefix (the watermark then covers only them).
    pub prefix: Option<String>,
    /// How far the bucket's clock may be ahead of ours, in ms (the watermark stays that far behind).
    pub clock_skew_ms: u64,
    /// A watermark the caller has proof of (a mark saw S3's clock tick before the scan began).
    pub proven_through: Option<Timestamp>,
}

/// What one scan listed and recorded.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Scanned {
    pub component: String,
    pub versions_listed: u64,
    pub new_versions: u64,
    pub missing_versions: u64,
    pub versioning: VersioningStatus,
    pub complete_through: Timestamp,
    pub requests: u64,
    pub seconds: f64,
    /// The entry of `s3.scan_complete`, or none when it went to the spool.
    pub entry: Option<u64>,
}

impl std::fmt::Display for Scanned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: listed {} versions and delete markers, {} new, {} missing, versioning {}; complete through {}; {} requests in {:.2} s ({:.0} versions/s)",
            self.component,
            self.versions_listed,
            self.new_versions,
            self.missing_versions,
            self.versioning.name(),
            self.complete_through,
            self.requests,
            self.seconds,
            self.versions_listed as f64 / self.seconds.max(1e-9)
        )
    }
}

fn component_id(c: &str) -> Result<ComponentId, OpsError> {
    ComponentId::parse(c).map_err(OpsError::Usage)
}

/// The event recording one listed version or delete marker.
pub fn version_event(
    component: &ComponentId,
    l: &Listed,
    position: u64,
    first_seen_at: Timestamp,
    lock: tidemark_s3::Lock,
) -> EventBody {
    EventBody::S3ObjectVersion(S3ObjectVersion {
        component: component.clone(),
        key: l.key.clone(),
        version_id: l.version_id.clone(),
        etag: l.etag.clone(),
        size_bytes: l.size_bytes,
        last_modified: l.last_modified,
        is_delete_marker: l.is_delete_marker,
        listing_position: position,
        first_seen_at,
        object_lock_mode: lock.mode,
        object_lock_retain_until: lock.retain_until,
        object_lock_legal_hold: lock.legal_hold,
    })
}

/// Lists every version and records, in one batch, what is new, what went
/// missing, and the watermark; returns what it did. The signer is checked
/// before the bucket is touched.
pub fn scan(
    ledger: &mut dyn LedgerApi,
    env: &dyn Env,
    key: &SecretKey,
    request: &ScanRequest,
    progress: &mut dyn Progress,
) -> Result<Scanned, OpsError> {
    request.bucket.check()?;
    ledger.check_signer(key, Kind::S3ScanComplete)?;
    let component = component_id(&request.bucket.component)?;
    let report = ledger.s3_report(component.as_str())?;
    let b = request.bucket.resolve(report.registered.as_ref())?;
    let s3 = b.connect()?;
    let bucket = b.bucket.as_str();
    let prefix = request.prefix.as_deref();
    let started_at = env.now();
    let clock = Instant::now();
    let last_status = report.versioning.last().map(|(_, s)| *s);
    let mut known: BTreeMap<String, KeyHistory> = BTreeMap::new();
    ledger.s3_histories(component.as_str(), &mut |k, h| {
        known.insert(k, h);
    })?;
    let mut bodies = Vec::new();
    let status = s3.versioning(bucket)?;
    if last_status != Some(status) {
        bodies.push(EventBody::S3Versioning(S3Versioning {
            component: component.clone(),
            status,
            observed_at: started_at,
        }));
    }
    let lock_enabled = s3.object_lock_enabled(bucket);
    let oldest_upload = s3.oldest_upload_in_progress(bucket, prefix)?;
    let (mut new, mut missing, mut seen) = (0u64, 0u64, 0u64);
    let mut missing_bodies = Vec::new();
    let missing_event = |k: &str, v: String| {
        EventBody::S3VersionMissing(S3VersionMissing {
            component: component.clone(),
            key: k.to_owned(),
            version_id: v,
            observed_at: started_at,
        })
    };
    progress.begin("scanned versions", None);
    let listed = s3.list_versions(bucket, prefix, &mut |entries| {
        let k = entries[0].key.clone();
        if k.starts_with(tidemark_lineage::s3::RESERVED_PREFIX) {
            return Ok(());
        }
        let positions = s3_scan::listing_positions(&entries);
        let history = known.remove(&k);
        let diff = s3_scan::diff_key(&entries, history.as_ref());
        for i in diff.new {
            let l = &entries[i];
            let lock = if lock_enabled && !l.is_delete_marker {
                s3.lock_of(bucket, &l.key, &l.version_id)?
            } else {
                tidemark_s3::Lock::default()
            };
            bodies.push(version_event(&component, l, positions[i], started_at, lock));
            new += 1;
        }
        for v in diff.missing {
            missing_bodies.push(missing_event(&k, v));
            missing += 1;
        }
        seen += entries.len() as u64;
        progress.advance(seen);
        Ok(())
    })?;
    // Keys recorded but no longer listed at all.
    for (k, h) in known {
        if prefix.is_some_and(|p| !k.starts_with(p)) {
            continue;
        }
        for v in s3_scan::diff_key(&[], Some(&h)).missing {
            missing_bodies.push(missing_event(&k, v));
            missing += 1;
        }
    }
    bodies.extend(missing_bodies);
    let through = s3_scan::watermark(started_at, request.clock_skew_ms, request.proven_through, oldest_upload);
    let finished_at = env.now().max(started_at);
    bodies.push(EventBody::S3ScanComplete(S3ScanComplete {
        component: component.clone(),
        complete_through: through,
        started_at,
        finished_at,
        versions_listed: listed,
    }));
    let events: Vec<SignedEvent> = bodies.into_iter().map(|b| env.sign(key, b)).collect::<Result<_, _>>()?;
    let recorded = ledger.record(events, env.now())?;
    if let Recorded::Spooled { events, spool, why } = &recorded {
        progress.note(&format!("{why}; spooled {events} events to {}", spool.display()));
    }
    Ok(Scanned {
        component: component.to_string(),
        versions_listed: listed,
        new_versions: new,
        missing_versions: missing,
        versioning: status,
        complete_through: through,
        requests: s3.requests(),
        seconds: clock.elapsed().as_secs_f64(),
        entry: recorded.last_seq(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(endpoint: &str) -> S3Identity {
        S3Identity { endpoint: endpoint.into(), bucket: "uploads".into(), region: "eu-west-1".into() }
    }

    #[test]
    fn what_is_not_given_comes_from_the_registration() {
        let b = BucketSpec::registered("s3:uploads").resolve(Some(&identity("http://127.0.0.1:9000/"))).unwrap();
        assert_eq!(b.endpoint.as_deref(), Some("http://127.0.0.1:9000/"));
        assert_eq!((b.bucket.as_str(), b.region.as_str(), b.path_style), ("uploads", "eu-west-1", true));
        let aws = BucketSpec::registered("s3:uploads").resolve(Some(&identity(AWS_ENDPOINT))).unwrap();
        assert_eq!((aws.endpoint, aws.path_style), (None, false));
    }

    #[test]
    fn what_is_given_must_match_the_registration() {
        let wrong = BucketSpec { bucket: Some("other".into()), ..BucketSpec::registered("s3:uploads") };
        let e = wrong.resolve(Some(&identity(AWS_ENDPOINT))).unwrap_err().to_string();
        assert!(e.contains("registered as bucket uploads") && e.contains("nothing was done"), "{e}");
        let e = BucketSpec::registered("s3:uploads").resolve(None).unwrap_err().to_string();
        assert!(e.contains("not registered"), "{e}");
        let slash = BucketSpec { endpoint: Some("http://h:1".into()), ..BucketSpec::registered("s3:uploads") };
        assert!(slash.resolve(Some(&identity("http://h:1/"))).is_ok(), "a trailing slash is the same endpoint");
    }
}
