//! The exact cut of a marker with S3 parts. S3 stamps versions in whole
//! seconds of its own clock, so a marker cannot say "LastModified ≤ T" for
//! a T inside a second with writes. Instead the mark watches each bucket's
//! clock (copies onto a reserved key, `tidemark_s3::CLOCK_KEY`) until two
//! back-to-back probes are stamped s − 1 and s, and cuts every PostgreSQL
//! part at once: versions stamped before s were written before the cut,
//! none stamped s or later was written before the last probe stamped s − 1
//! was sent. The evidence goes into the marker (`S3ClockEvidence`).

use std::time::Duration;

use anyhow::Context as _;
use tidemark_core::Timestamp;
use tidemark_core::event::{ClockProbe, S3ClockEvidence};
use tidemark_lineage::s3::SECOND_US;
use tidemark_s3::S3;

use crate::exit::{self, coded};
use crate::util;

/// A bucket whose clock the cut watches.
pub struct Clocked<'a> {
    pub component: &'a str,
    pub s3: &'a S3,
    pub bucket: &'a str,
}

/// What the cut saw, per bucket in the order given.
pub struct Cut {
    pub evidence: Vec<S3ClockEvidence>,
    /// Every probe version written, per bucket (deleted afterwards).
    pub probes: Vec<Vec<String>>,
}

fn second(t: Timestamp) -> i64 {
    t.as_micros().div_euclid(SECOND_US)
}

fn micros_until(t: i64) -> Option<Duration> {
    let now = util::now().as_micros();
    (t > now).then(|| Duration::from_micros((t - now) as u64))
}

/// Probes every bucket once, in order.
fn round(buckets: &[Clocked<'_>], probes: &mut [Vec<String>]) -> anyhow::Result<Vec<ClockProbe>> {
    let now = || util::now();
    let mut out = Vec::with_capacity(buckets.len());
    for (b, ids) in buckets.iter().zip(probes.iter_mut()) {
        let p = b.s3.probe_clock(b.bucket, &now).with_context(|| b.component.to_owned())?;
        ids.push(p.version_id.clone());
        out.push(p);
    }
    Ok(out)
}

/// Rule: a clean tick — every bucket's probe of one round stamped s − 1 and
/// of the next round stamped s.
fn clean_tick(before: &[ClockProbe], after: &[ClockProbe]) -> Option<i64> {
    let s = second(after.first()?.last_modified);
    (before.iter().all(|p| second(p.last_modified) == s - 1) && after.iter().all(|p| second(p.last_modified) == s))
        .then_some(s)
}

/// Watches the buckets' clocks and runs `cut` right after a clean tick.
pub fn cut(buckets: &[Clocked<'_>], cut: &mut dyn FnMut() -> anyhow::Result<()>) -> anyhow::Result<Cut> {
    for b in buckets {
        b.s3.prepare_clock(b.bucket).with_context(|| b.component.to_owned())?;
    }
    let mut probes = vec![Vec::new(); buckets.len()];
    // Where S3's second ticks on this clock, to within the probe interval.
    let mut prev = round(buckets, &mut probes)?;
    let mut tick: Option<i64> = None;
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(40));
        let cur = round(buckets, &mut probes)?;
        if second(cur[0].last_modified) != second(prev[0].last_modified) {
            tick = Some(cur[0].sent_at.as_micros());
            break;
        }
        prev = cur;
    }
    let Some(mut tick) = tick else {
        return Err(coded(exit::FAILURE, "S3's clock did not tick in 1.6 s of probing: LastModified is not advancing"));
    };
    for _ in 0..6 {
        // Wake a little before the next tick, then probe back to back.
        let now = util::now().as_micros();
        let mut next = tick + ((now - tick).div_euclid(SECOND_US) + 1) * SECOND_US;
        if next - 80_000 < now + 5_000 {
            next += SECOND_US;
        }
        if let Some(d) = micros_until(next - 80_000) {
            std::thread::sleep(d);
        }
        let mut before = round(buckets, &mut probes)?;
        loop {
            let after = round(buckets, &mut probes)?;
            if let Some(s) = clean_tick(&before, &after) {
                cut()?;
                let cut_returned_at = util::now();
                let boundary = Timestamp::from_micros(s * SECOND_US);
                let evidence = before
                    .into_iter()
                    .zip(after)
                    .map(|(b, a)| S3ClockEvidence {
                        boundary,
                        before: b,
                        after: a,
                        cut_returned_at,
                        uploads_in_progress: Vec::new(),
                    })
                    .collect();
                return Ok(Cut { evidence, probes });
            }
            if after.iter().zip(&before).any(|(a, b)| second(a.last_modified) != second(b.last_modified)) {
                // A tick, but not one every bucket showed between two rounds: try the next second.
                tick = after[0].sent_at.as_micros();
                break;
            }
            if util::now().as_micros() > next + 250_000 {
                break;
            }
            before = after;
        }
    }
    Err(coded(exit::FAILURE, "could not see S3's clock tick between two back-to-back probes in 6 attempts"))
}

/// After the cut: the uploads in progress that could still add versions
/// stamped before the boundary, and a check that the listing stamps the
/// probes exactly as their responses did (the same clock, the same rounding).
pub fn confirm(b: &Clocked<'_>, e: &mut S3ClockEvidence) -> anyhow::Result<()> {
    let mut keys: Vec<String> =
        b.s3.uploads_in_progress(b.bucket, None)?
            .into_iter()
            .filter(|(k, initiated)| *initiated < e.boundary && !k.starts_with(tidemark_lineage::s3::RESERVED_PREFIX))
            .map(|(k, _)| k)
            .collect();
    keys.sort();
    keys.dedup();
    e.uploads_in_progress = keys;
    let listed = b.s3.listed_probes(b.bucket)?;
    for p in [&e.before, &e.after] {
        match listed.iter().find(|(id, _)| *id == p.version_id) {
            Some((_, lm)) if *lm == p.last_modified => {}
            Some((_, lm)) => {
                return Err(coded(
                    exit::FAILURE,
                    format!(
                        "{}: the probe {} was stamped {} in its response but {lm} in the listing: S3's LastModified cannot be read exactly here",
                        b.component, p.version_id, p.last_modified
                    ),
                ));
            }
            None => {
                return Err(coded(
                    exit::FAILURE,
                    format!("{}: the probe version {} is not listed", b.component, p.version_id),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(lm: i64) -> ClockProbe {
        let t = Timestamp::from_unix_seconds(lm);
        ClockProbe { version_id: "v".into(), last_modified: t, sent_at: t, received_at: t }
    }

    #[test]
    fn rule_a_clean_tick_is_every_bucket_one_second_apart_between_two_rounds() {
        assert_eq!(clean_tick(&[p(9), p(9)], &[p(10), p(10)]), Some(10));
        assert_eq!(clean_tick(&[p(9), p(10)], &[p(10), p(10)]), None, "one bucket ticked early");
        assert_eq!(clean_tick(&[p(9)], &[p(9)]), None, "no tick");
        assert_eq!(clean_tick(&[p(8)], &[p(10)]), None, "a second skipped");
    }
}
