//! Which recovery point a scheduled restore test restores: the newest
//! restorable marker within a window, or one drawn at random among them
//! with a seed that is recorded (so anyone can redraw it).

use tidemark_core::Timestamp;
use tidemark_core::event::TestPick;

use crate::group::RecoveryPoint;

/// A deterministic draw from `seed` (SplitMix64): the same seed and
/// candidates give the same point on every machine.
pub fn draw(seed: u64, n: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) % n.max(1)
}

/// Rule: the candidates are the restorable markers taken within the
/// window before `now`, oldest first; `latest` takes the newest, `random`
/// the one [`draw`] names. Returns the point and how many candidates there were.
pub fn pick(
    markers: &[RecoveryPoint],
    now: Timestamp,
    window_ms: u64,
    pick: TestPick,
    seed: u64,
) -> Option<(&RecoveryPoint, u64)> {
    let from = now.saturating_add_micros(-(window_ms.min(i64::MAX as u64 / 1000) as i64) * 1000);
    let mut candidates: Vec<&RecoveryPoint> =
        markers.iter().filter(|m| m.restorable && m.at >= from && m.at <= now).collect();
    candidates.sort_by_key(|m| (m.at, m.seq));
    let n = candidates.len() as u64;
    let chosen = match pick {
        TestPick::Latest => candidates.last().copied()?,
        TestPick::Random => *candidates.get(draw(seed, n) as usize)?,
    };
    Some((chosen, n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::{Class, Record};

    fn point(id: &str, at: i64, restorable: bool, seq: u64) -> RecoveryPoint {
        RecoveryPoint {
            id: id.into(),
            class: Class::Correlated,
            at: Timestamp::from_unix_seconds(at),
            writers_stopped: None,
            restorable,
            status: String::new(),
            components: vec![],
            record: Record::default(),
            seq,
        }
    }

    #[test]
    fn rule_a_restore_test_picks_a_restorable_marker_within_its_window() {
        let markers = vec![
            point("old", 100, true, 1),
            point("a", 1000, true, 2),
            point("bad", 1500, false, 3),
            point("b", 1800, true, 4),
        ];
        let now = Timestamp::from_unix_seconds(2000);
        let (p, n) = pick(&markers, now, 1_500_000, TestPick::Latest, 0).unwrap();
        assert_eq!((p.id.as_str(), n), ("b", 2), "the newest restorable in the window");
        let drawn: Vec<&str> =
            (0..8).map(|seed| pick(&markers, now, 1_500_000, TestPick::Random, seed).unwrap().0.id.as_str()).collect();
        assert!(drawn.iter().all(|id| *id == "a" || *id == "b") && drawn.contains(&"a") && drawn.contains(&"b"));
        assert_eq!(
            pick(&markers, now, 1_500_000, TestPick::Random, 7),
            pick(&markers, now, 1_500_000, TestPick::Random, 7)
        );
        assert!(pick(&markers, now, 100_000, TestPick::Latest, 0).is_none(), "nothing within 100 s");
    }
}
