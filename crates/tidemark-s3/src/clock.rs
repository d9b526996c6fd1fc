//! Reading a bucket's own clock. S3 stamps every version with LastModified
//! in whole seconds of its clock; a `CopyObject` onto a reserved key returns
//! the new version's stamp, so two back-to-back copies whose stamps differ by
//! one second show where S3's second ticked. The probe keys live under
//! `tidemark_lineage::s3::RESERVED_PREFIX`, which scans never record.

use tidemark_core::Timestamp;
use tidemark_core::event::ClockProbe;
use tidemark_lineage::s3::SECOND_US;

use crate::{S3, S3Error, req, ts};

/// The object each probe copies (created once, empty).
pub const CLOCK_SOURCE_KEY: &str = ".tidemark/clock-source";
/// The key each probe writes a new version of.
pub const CLOCK_KEY: &str = ".tidemark/clock";

impl S3 {
    /// Creates the probe's source object unless it exists.
    pub fn prepare_clock(&self, bucket: &str) -> Result<(), S3Error> {
        self.count();
        if self.block_on(self.client.head_object().bucket(bucket).key(CLOCK_SOURCE_KEY).send()).is_ok() {
            return Ok(());
        }
        self.count();
        self.block_on(
            self.client
                .put_object()
                .bucket(bucket)
                .key(CLOCK_SOURCE_KEY)
                .body(aws_sdk_s3::primitives::ByteStream::from_static(b""))
                .send(),
        )
        .map_err(|e| req("PutObject", bucket, aws_sdk_s3::error::DisplayErrorContext(e)))?;
        Ok(())
    }

    /// One probe: copies the source onto [`CLOCK_KEY`] and returns the new
    /// version's LastModified (to the whole second, as listings give it) with
    /// the caller's clock at sending and at the response.
    pub fn probe_clock(&self, bucket: &str, now: &dyn Fn() -> Timestamp) -> Result<ClockProbe, S3Error> {
        self.count();
        let sent_at = now();
        let out = self
            .block_on(
                self.client
                    .copy_object()
                    .bucket(bucket)
                    .key(CLOCK_KEY)
                    .copy_source(format!("{bucket}/{CLOCK_SOURCE_KEY}"))
                    .send(),
            )
            .map_err(|e| req("CopyObject", bucket, aws_sdk_s3::error::DisplayErrorContext(e)))?;
        let received_at = now();
        let stamped = out
            .copy_object_result()
            .and_then(|r| r.last_modified())
            .ok_or_else(|| req("CopyObject", bucket, "the response carries no LastModified"))?;
        let version_id = out
            .version_id()
            .filter(|v| !v.is_empty() && *v != "null")
            .ok_or_else(|| req("CopyObject", bucket, "the response carries no version id: is versioning enabled?"))?
            .to_owned();
        let micros = ts(stamped).as_micros();
        Ok(ClockProbe {
            version_id,
            last_modified: Timestamp::from_micros(micros.div_euclid(SECOND_US) * SECOND_US),
            sent_at,
            received_at,
        })
    }

    /// The probe key's versions as a listing shows them: (version id, LastModified).
    pub fn listed_probes(&self, bucket: &str) -> Result<Vec<(String, Timestamp)>, S3Error> {
        let mut out = Vec::new();
        self.list_versions(bucket, Some(CLOCK_KEY), &mut |entries| {
            out.extend(entries.into_iter().filter(|l| l.key == CLOCK_KEY).map(|l| (l.version_id, l.last_modified)));
            Ok(())
        })?;
        Ok(out)
    }
}
