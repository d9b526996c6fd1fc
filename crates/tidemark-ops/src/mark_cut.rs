//! The exact cut of a marker with S3 parts. S3 stamps versions in whole
//! seconds of its own clock, so a marker cannot say "LastModified ≤ T" for
//! a T inside a second with writes. Instead the mark watches each bucket's
//! clock (copies onto a reserved key, `tidemark_s3::CLOCK_KEY`) until two
//! back-to-back probes are stamped s − 1 and s, cutting every PostgreSQL
//! part concurrently with the second probe: the tick and the cut both lie
//! between sending the first probe and the later of the second's response
//! and the cut's return — that span, a few milliseconds, is the cut's
//! spread. The evidence goes into the marker (`S3ClockEvidence`).

use std::time::Duration;

use tidemark_core::Timestamp;
use tidemark_core::event::{ClockProbe, S3ClockEvidence};
use tidemark_lineage::s3::SECOND_US;
use tidemark_s3::S3;

use crate::{Env, OpsError};

fn failed(msg: impl Into<String>) -> OpsError {
    OpsError::Failed(msg.into())
}

/// An S3 error, said of the component it happened to.
fn of(component: &str) -> impl Fn(tidemark_s3::S3Error) -> OpsError + '_ {
    move |e| failed(format!("{component}: {e}"))
}

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

fn micros_until(env: &dyn Env, t: i64) -> Option<Duration> {
    let now = env.now().as_micros();
    (t > now).then(|| Duration::from_micros((t - now) as u64))
}

/// Probes every bucket once, in order.
fn round(env: &dyn Env, buckets: &[Clocked<'_>], probes: &mut [Vec<String>]) -> Result<Vec<ClockProbe>, OpsError> {
    let now = || env.now();
    let mut out = Vec::with_capacity(buckets.len());
    for (b, ids) in buckets.iter().zip(probes.iter_mut()) {
        let p = b.s3.probe_clock(b.bucket, &now).map_err(of(b.component))?;
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

/// Watches the buckets' clocks and runs `cut` at a tick: first it locates
/// the tick on this clock to within a round trip, then, a second later, it
/// runs `cut` concurrently with each probe from just before the predicted
/// tick until one round of probes is stamped a second after the previous
/// one. The cut then lies between the previous round's sending and its own
/// return, as does the tick. Each attempt gets its number (0 first).
pub fn cut<T: Send>(
    env: &dyn Env,
    buckets: &[Clocked<'_>],
    cut: &(dyn Fn(u32) -> Result<T, OpsError> + Sync),
) -> Result<(Cut, T), OpsError> {
    for b in buckets {
        b.s3.prepare_clock(b.bucket).map_err(of(b.component))?;
    }
    let mut probes = vec![Vec::new(); buckets.len()];
    // Where S3's second ticks on this clock, to within the probe interval…
    let mut prev = round(env, buckets, &mut probes)?;
    let mut tick: Option<i64> = None;
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(40));
        let cur = round(env, buckets, &mut probes)?;
        if second(cur[0].last_modified) != second(prev[0].last_modified) {
            tick = Some(cur[0].sent_at.as_micros());
            break;
        }
        prev = cur;
    }
    let Some(mut tick) = tick else {
        return Err(failed("S3's clock did not tick in 1.6 s of probing: LastModified is not advancing"));
    };
    // …then to within a round trip (back-to-back probes around the next tick),
    // and then the cut, concurrent with the probes, around the one after.
    let mut calibrated = false;
    let mut round_trip = 20_000i64;
    let mut attempt = 0u32;
    for _ in 0..8 {
        let now = env.now().as_micros();
        let mut next = tick + ((now - tick).div_euclid(SECOND_US) + 1) * SECOND_US;
        let early = if calibrated { 2 * round_trip + 2_000 } else { 80_000 };
        if next - early < now + 2_000 {
            next += SECOND_US;
        }
        if let Some(d) = micros_until(env, next - early) {
            std::thread::sleep(d);
        }
        let mut before = round(env, buckets, &mut probes)?;
        loop {
            let (after, attempted) = if calibrated {
                let (done, after) = std::thread::scope(|scope| {
                    let n = attempt;
                    let pg = scope.spawn(move || cut(n).map(|t| (t, env.now())));
                    let after = round(env, buckets, &mut probes);
                    (pg.join().expect("the cut does not panic"), after)
                });
                attempt += 1;
                (after?, Some(done?))
            } else {
                (round(env, buckets, &mut probes)?, None)
            };
            let (first, last) = (&before[0], &after[0]);
            round_trip = round_trip.min(last.received_at.as_micros() - last.sent_at.as_micros()).max(500);
            match (clean_tick(&before, &after), attempted) {
                (Some(s), Some((t, cut_returned_at))) => {
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
                    return Ok((Cut { evidence, probes }, t));
                }
                (Some(_), None) => {
                    // Located to within a round trip: the tick lies between these two probes.
                    tick = (first.sent_at.as_micros() + last.received_at.as_micros()) / 2;
                    calibrated = true;
                    break;
                }
                _ => {}
            }
            if after.iter().zip(&before).any(|(a, b)| second(a.last_modified) != second(b.last_modified)) {
                // A tick, but not one every bucket showed between two rounds: locate it again.
                tick = after[0].sent_at.as_micros();
                calibrated = false;
                break;
            }
            if env.now().as_micros() > next + 250_000 {
                calibrated = false;
                break;
            }
            before = after;
        }
    }
    Err(failed("could not see S3's clock tick between two back-to-back probes in 8 attempts"))
}

/// After the cut: the uploads in progress that could still add versions
/// stamped before the boundary, and a check that the listing stamps the
/// probes exactly as their responses did (the same clock, the same rounding).
pub fn confirm(b: &Clocked<'_>, e: &mut S3ClockEvidence) -> Result<(), OpsError> {
    let mut keys: Vec<String> =
        b.s3.uploads_in_progress(b.bucket, None)
            .map_err(of(b.component))?
            .into_iter()
            .filter(|(k, initiated)| *initiated < e.boundary && !k.starts_with(tidemark_lineage::s3::RESERVED_PREFIX))
            .map(|(k, _)| k)
            .collect();
    keys.sort();
    keys.dedup();
    e.uploads_in_progress = keys;
    let listed = b.s3.listed_probes(b.bucket).map_err(of(b.component))?;
    for p in [&e.before, &e.after] {
        match listed.iter().find(|(id, _)| *id == p.version_id) {
            Some((_, lm)) if *lm == p.last_modified => {}
            Some((_, lm)) => {
                return Err(failed(format!(
                    "{}: the probe {} was stamped {} in its response but {lm} in the listing: S3's LastModified cannot be read exactly here",
                    b.component, p.version_id, p.last_modified
                )));
            }
            None => {
                return Err(failed(format!("{}: the probe version {} is not listed", b.component, p.version_id)));
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
