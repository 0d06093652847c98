//! A/B tests as pure functions: which variant a device is in, the bucket bitmaps that make a
//! push's split a few intersections, and the two-proportion z-test of the report.
//!
//! A device's bucket is a stable hash of the test and its registration id into 100 buckets;
//! the buckets are laid out in the order of the variants (each takes as many as its
//! weight), then the control group. Nothing about a device is stored: the same inputs give
//! the same variant on every node, across restarts, for the life of the test.

use crate::model::Content;
use crate::Ordinal;
use roaring::RoaringBitmap;
use serde::{Deserialize, Serialize};

/// Buckets a test splits devices into; the weights of its variants and control add up to it.
pub const BUCKETS: u8 = 100;

/// One variant of an A/B test: its share of the buckets and what its devices get.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Variant {
    pub name: String,
    pub weight: u8,
    /// What the variant gives: an empty `notifications` or a missing `message` takes that part
    /// from the push that uses the test.
    #[serde(default)]
    pub content: Content,
}

/// The bucket (0..100) of a device in a test: FNV-1a over the test id, a zero byte and the
/// registration id, finished with SplitMix64's mixer (FNV alone is weak in its low bits),
/// modulo 100. Written out here rather than taken from a hashing crate because it must never
/// change: devices keep their variant for the life of the test.
pub fn bucket_of(abtest_id: &str, registration_id: &str) -> u8 {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = FNV_OFFSET;
    let bytes = abtest_id
        .bytes()
        .chain(std::iter::once(0))
        .chain(registration_id.bytes());
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h % u64::from(BUCKETS)) as u8
}

/// The variant a bucket falls in, given the variants' weights in order; `None`: control.
pub fn variant_of_bucket(weights: impl IntoIterator<Item = u8>, bucket: u8) -> Option<usize> {
    let mut end = 0u16;
    for (i, w) in weights.into_iter().enumerate() {
        end += u16::from(w);
        if u16::from(bucket) < end {
            return Some(i);
        }
    }
    None
}

/// The devices of an app in each variant of one test, and in its control group, kept as the
/// app's devices come: a push's split is its audience intersected with these.
#[derive(Clone, Debug, Default)]
pub struct VariantBuckets {
    abtest_id: String,
    weights: Vec<u8>,
    pub variants: Vec<RoaringBitmap>,
    pub control: RoaringBitmap,
}

impl VariantBuckets {
    pub fn new(abtest_id: &str, weights: Vec<u8>) -> VariantBuckets {
        VariantBuckets {
            abtest_id: abtest_id.to_string(),
            variants: vec![RoaringBitmap::new(); weights.len()],
            weights,
            control: RoaringBitmap::new(),
        }
    }

    /// Places a device (it never moves: its registration id is fixed for its ordinal).
    pub fn add(&mut self, ordinal: Ordinal, registration_id: &str) {
        let bucket = bucket_of(&self.abtest_id, registration_id);
        match variant_of_bucket(self.weights.iter().copied(), bucket) {
            Some(i) => self.variants[i].insert(ordinal),
            None => self.control.insert(ordinal),
        };
    }

    /// Splits a resolved audience: the targets of each variant, and how many fell in control.
    pub fn split(&self, audience: &RoaringBitmap) -> (Vec<RoaringBitmap>, u64) {
        let variants = self.variants.iter().map(|v| audience & v).collect();
        (variants, audience.intersection_len(&self.control))
    }
}

/// A push's A/B test, stored with the push: each variant's content as it went out, so that
/// the push is delivered the same way after a restart, on another node, or after the test
/// is deleted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Split {
    pub abtest_id: String,
    /// Each with the content its devices get (the push's content with the variant's parts
    /// put in).
    pub variants: Vec<Variant>,
    /// Devices of the push's audience left out as the test's control group.
    #[serde(default)]
    pub control_targeted: u64,
}

impl Split {
    /// The variant a device is in, `None` for control.
    pub fn variant_of(&self, registration_id: &str) -> Option<usize> {
        variant_of_bucket(
            self.variants.iter().map(|v| v.weight),
            bucket_of(&self.abtest_id, registration_id),
        )
    }
}

/// `p` of the two-sided two-proportion z-test between `a` and `b`, each `(successes,
/// trials)`: the chance of a difference at least this large if both had the same rate.
/// `None` when either has no trials; 1 when the pooled rate is 0 or 1 (no difference can
/// show).
pub fn two_proportion_p_value(a: (u64, u64), b: (u64, u64)) -> Option<f64> {
    let ((x1, n1), (x2, n2)) = (a, b);
    if n1 == 0 || n2 == 0 {
        return None;
    }
    let (x1, n1, x2, n2) = (x1 as f64, n1 as f64, x2 as f64, n2 as f64);
    let pooled = (x1 + x2) / (n1 + n2);
    let se = (pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)).sqrt();
    if se == 0.0 || !se.is_finite() {
        return Some(1.0);
    }
    let z = ((x1 / n1 - x2 / n2) / se).abs();
    Some(libm::erfc(z / std::f64::consts::SQRT_2).clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_stable_and_spread() {
        assert_eq!(bucket_of("t1", "rid-1"), bucket_of("t1", "rid-1"));
        let mut counts = [0u32; BUCKETS as usize];
        for i in 0..100_000 {
            counts[bucket_of("spring-sale", &format!("rid{i:08}")) as usize] += 1;
        }
        // 1,000 expected per bucket; a fair hash stays well inside ±20 %.
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
        // Another test splits the same devices differently.
        let same = (0..1000)
            .filter(|i| {
                let rid = format!("rid{i:08}");
                bucket_of("a", &rid) == bucket_of("b", &rid)
            })
            .count();
        assert!(same < 50, "{same}");
    }

    #[test]
    fn buckets_follow_the_weights_in_order_then_control() {
        let w = [45u8, 45];
        assert_eq!(variant_of_bucket(w, 0), Some(0));
        assert_eq!(variant_of_bucket(w, 44), Some(0));
        assert_eq!(variant_of_bucket(w, 45), Some(1));
        assert_eq!(variant_of_bucket(w, 89), Some(1));
        assert_eq!(variant_of_bucket(w, 90), None);
        assert_eq!(variant_of_bucket([50u8, 50], 99), Some(1));
    }

    #[test]
    fn a_split_is_the_audience_over_the_buckets() {
        let mut b = VariantBuckets::new("t", vec![30, 30, 30]);
        for o in 0..3000u32 {
            b.add(o, &format!("device-{o}"));
        }
        let audience: RoaringBitmap = (0..3000u32).filter(|o| o % 2 == 0).collect();
        let (variants, control) = b.split(&audience);
        let total: u64 = variants.iter().map(|v| v.len()).sum::<u64>() + control;
        assert_eq!(total, 1500);
        let split = Split {
            abtest_id: "t".into(),
            variants: ["A", "B", "C"]
                .iter()
                .map(|n| Variant {
                    name: n.to_string(),
                    weight: 30,
                    content: Content::default(),
                })
                .collect(),
            control_targeted: control,
        };
        for (i, v) in variants.iter().enumerate() {
            assert!((400..600).contains(&v.len()), "{}", v.len());
            for o in v.iter() {
                assert_eq!(split.variant_of(&format!("device-{o}")), Some(i));
            }
        }
    }

    #[test]
    fn the_p_value_matches_a_hand_computed_one() {
        // 120/1000 against 90/1000: pooled 0.105, se = sqrt(.105*.895*(2/1000)) = 0.013709,
        // z = 0.03 / 0.013709 = 2.18835, two-sided p = erfc(z/√2) = 0.028646.
        let p = two_proportion_p_value((120, 1000), (90, 1000)).unwrap_or(f64::NAN);
        assert!((p - 0.028_646).abs() < 1e-5, "{p}");
        assert_eq!(two_proportion_p_value((1, 0), (1, 10)), None);
        assert_eq!(two_proportion_p_value((0, 10), (0, 10)), Some(1.0));
        let same = two_proportion_p_value((5, 10), (5, 10)).unwrap_or(f64::NAN);
        assert!((same - 1.0).abs() < 1e-12);
    }
}
