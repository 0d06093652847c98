//! The spatial index of an app's fences: which fences contain a point, without scanning
//! them.
//!
//! Each fence is kept as an axis-aligned box around its circle in 3-D: the centre is a unit
//! vector on the sphere, and every point within the fence lies within the chord
//! `2·sin(θ/2)` of it (θ = radius / earth radius), so a cube of that half-side holds the
//! whole circle. An R-tree (`rstar`) of these boxes is the pre-filter; the exact haversine
//! test follows. Working on the sphere rather than in latitude/longitude means a fence over
//! a pole or across the antimeridian needs no special case: its box is just a box.
//!
//! Boxes are `f32` (half the memory of `f64`); each is widened by [`BOX_MARGIN`], far more
//! than `f32`'s rounding on a unit vector (~6e-8), so the pre-filter never drops a fence the
//! exact test would keep.
//!
//! The exact test compares the squared chord between the two unit vectors with the fence's
//! squared chord: the same order as the haversine distance (chord = 2·sin(d / 2R) grows with
//! d), with no trigonometry per candidate. Only a point within a hair (1e-9 relative) of the
//! edge is judged by haversine itself, so the answer is always the contract's.

use rstar::{RStarInsertionStrategy, RTree, RTreeObject, RTreeParams, AABB};

/// Wider nodes than rstar's default (6): fences overlap heavily where they are dense, so a
/// point query visits many leaves either way, and fewer, wider nodes mean fewer pointer
/// hops for the same boxes tested.
struct Wide;

impl RTreeParams for Wide {
    const MIN_SIZE: usize = 6;
    const MAX_SIZE: usize = 16;
    const REINSERTION_COUNT: usize = 4;
    type DefaultInsertionStrategy = RStarInsertionStrategy;
}

/// The mean earth radius of the contract (geofences.md §3).
pub const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// Widening of every box, in unit-sphere lengths (~6 m on the ground).
const BOX_MARGIN: f32 = 1e-6;

/// Great-circle distance in metres between two points given in degrees (haversine).
pub fn haversine_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * a.sqrt().min(1.0).asin()
}

fn unit_vector(lat: f64, lon: f64) -> [f64; 3] {
    let (phi, lambda) = (lat.to_radians(), lon.to_radians());
    [
        phi.cos() * lambda.cos(),
        phi.cos() * lambda.sin(),
        phi.sin(),
    ]
}

/// One fence in the tree: its box, its slot, and what the exact test needs.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Boxed {
    slot: u32,
    min: [f32; 3],
    max: [f32; 3],
    centre: [f64; 3],
    /// The squared chord of the fence's radius.
    chord2: f64,
}

impl RTreeObject for Boxed {
    type Envelope = AABB<[f32; 3]>;

    fn envelope(&self) -> Self::Envelope {
        AABB::from_corners(self.min, self.max)
    }
}

/// The circle of a fence, for the exact test.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Circle {
    lat: f64,
    lon: f64,
    radius_m: f64,
}

/// Fences by slot (a small integer the index hands out and takes back), found by point.
#[derive(Default)]
pub struct FenceIndex {
    tree: RTree<Boxed, Wide>,
    circles: Vec<Option<Circle>>,
    free: Vec<u32>,
    /// Circles inserted one by one since the tree was last built in one pass.
    inserted: usize,
}

impl FenceIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// An index of many circles at once (`(lat, lon, radius_m)`), built in one pass (a
    /// tree that answers faster than one built by inserts): their slots are their positions
    /// in `circles`.
    pub fn bulk(circles: &[(f64, f64, f64)]) -> Self {
        let boxes = circles
            .iter()
            .enumerate()
            .map(|(slot, &(lat, lon, r))| boxed(slot as u32, lat, lon, r))
            .collect();
        FenceIndex {
            tree: RTree::bulk_load_with_params(boxes),
            circles: circles
                .iter()
                .map(|&(lat, lon, radius_m)| Some(Circle { lat, lon, radius_m }))
                .collect(),
            free: Vec::new(),
            inserted: 0,
        }
    }

    /// Adds a circle; returns its slot.
    pub fn insert(&mut self, lat: f64, lon: f64, radius_m: f64) -> u32 {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.circles.push(None);
                (self.circles.len() - 1) as u32
            }
        };
        self.circles[slot as usize] = Some(Circle { lat, lon, radius_m });
        self.tree.insert(boxed(slot, lat, lon, radius_m));
        self.inserted += 1;
        // A tree grown by inserts answers ~20% slower than one built in one pass: build it
        // again once a quarter of it came by inserts (amortized, a few passes in all).
        if self.inserted >= REBUILD_AFTER && self.inserted * 4 >= self.len() {
            self.rebuild();
        }
        slot
    }

    /// Builds the tree again in one pass, every circle keeping its slot.
    pub fn rebuild(&mut self) {
        let boxes: Vec<Boxed> = self.tree.iter().copied().collect();
        self.tree = RTree::bulk_load_with_params(boxes);
        self.inserted = 0;
    }

    /// Moves or resizes the circle at `slot` (which keeps its slot).
    pub fn replace(&mut self, slot: u32, lat: f64, lon: f64, radius_m: f64) {
        let Some(Some(old)) = self.circles.get(slot as usize).copied() else {
            return;
        };
        self.tree
            .remove(&boxed(slot, old.lat, old.lon, old.radius_m));
        self.circles[slot as usize] = Some(Circle { lat, lon, radius_m });
        self.tree.insert(boxed(slot, lat, lon, radius_m));
    }

    /// Takes a circle out; its slot may be handed out again.
    pub fn remove(&mut self, slot: u32) {
        let Some(Some(c)) = self.circles.get(slot as usize).copied() else {
            return;
        };
        self.tree.remove(&boxed(slot, c.lat, c.lon, c.radius_m));
        self.circles[slot as usize] = None;
        self.free.push(slot);
    }

    /// How many circles are indexed.
    pub fn len(&self) -> usize {
        self.tree.size()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends to `out` the slot of every circle containing the point (distance to its
    /// centre ≤ its radius). `out` is the caller's, so a hot loop allocates nothing.
    pub fn containing(&self, lat: f64, lon: f64, out: &mut Vec<u32>) {
        let p = unit_vector(lat, lon);
        let probe = AABB::from_point(p.map(|v| v as f32));
        for b in self.tree.locate_in_envelope_intersecting(probe) {
            let d2 = (p[0] - b.centre[0]).powi(2)
                + (p[1] - b.centre[1]).powi(2)
                + (p[2] - b.centre[2]).powi(2);
            let inside = if d2 < b.chord2 * (1.0 - EDGE) {
                true
            } else if d2 > b.chord2 * (1.0 + EDGE) {
                false
            } else {
                self.circles
                    .get(b.slot as usize)
                    .copied()
                    .flatten()
                    .is_some_and(|c| haversine_m(c.lat, c.lon, lat, lon) <= c.radius_m)
            };
            if inside {
                out.push(b.slot);
            }
        }
    }

    /// Heap bytes of the boxes and circles: a lower bound, without the tree's node
    /// allocations (`pigeon bench geofence` measures the RSS growth).
    pub fn heap_bytes(&self) -> usize {
        // rstar keeps each object once in a leaf, inside nodes of up to 6 children with an
        // envelope each; a node's overhead spread over its children is about one envelope.
        let per_box = std::mem::size_of::<Boxed>() + std::mem::size_of::<AABB<[f32; 3]>>();
        self.len() * per_box
            + self.circles.capacity() * std::mem::size_of::<Option<Circle>>()
            + self.free.capacity() * 4
    }
}

/// Inserts before the tree may be built again in one pass.
const REBUILD_AFTER: usize = 64;

/// How near the edge (relative to the squared chord) a point is judged by haversine.
const EDGE: f64 = 1e-9;

fn boxed(slot: u32, lat: f64, lon: f64, radius_m: f64) -> Boxed {
    let centre = unit_vector(lat, lon);
    let theta = (radius_m / EARTH_RADIUS_M).min(std::f64::consts::PI);
    let chord = 2.0 * (theta / 2.0).sin();
    let half = chord as f32 + BOX_MARGIN;
    let (mut min, mut max) = ([0f32; 3], [0f32; 3]);
    for i in 0..3 {
        min[i] = centre[i] as f32 - half;
        max[i] = centre[i] as f32 + half;
    }
    Boxed {
        slot,
        min,
        max,
        centre,
        chord2: chord * chord,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The point `distance_m` from (lat, lon) along `bearing_deg`, on the contract's sphere.
    fn destination(lat: f64, lon: f64, bearing_deg: f64, distance_m: f64) -> (f64, f64) {
        let d = distance_m / EARTH_RADIUS_M;
        let (p1, l1, b) = (lat.to_radians(), lon.to_radians(), bearing_deg.to_radians());
        let p2 = (p1.sin() * d.cos() + p1.cos() * d.sin() * b.cos()).asin();
        let l2 = l1 + (b.sin() * d.sin() * p1.cos()).atan2(d.cos() - p1.sin() * p2.sin());
        let lon2 = (l2.to_degrees() + 540.0) % 360.0 - 180.0;
        (p2.to_degrees(), lon2)
    }

    fn found(index: &FenceIndex, lat: f64, lon: f64) -> Vec<u32> {
        let mut out = Vec::new();
        index.containing(lat, lon, &mut out);
        out.sort_unstable();
        out
    }

    #[test]
    fn the_edge_of_a_fence_is_inside_and_a_metre_past_it_is_not() {
        for (lat, lon) in [
            (31.2304, 121.4737),
            (-33.9, 151.2),
            (0.0, 0.0),
            (64.1, -21.9),
        ] {
            let mut index = FenceIndex::new();
            let slot = index.insert(lat, lon, 300.0);
            for bearing in [0.0, 45.0, 90.0, 180.0, 270.0, 333.0] {
                let (a, b) = destination(lat, lon, bearing, 299.0);
                assert_eq!(found(&index, a, b), vec![slot], "299 m at {bearing}°");
                let (a, b) = destination(lat, lon, bearing, 301.0);
                assert!(found(&index, a, b).is_empty(), "301 m at {bearing}°");
            }
        }
    }

    #[test]
    fn fences_over_a_pole_and_across_the_antimeridian_are_found() {
        let mut index = FenceIndex::new();
        let pole = index.insert(89.999, 0.0, 300.0);
        let date_line = index.insert(0.0, 179.9995, 300.0);
        // 89.999° N on the opposite meridian: ~222 m away, across the pole.
        assert_eq!(found(&index, 89.999, 180.0), vec![pole]);
        assert_eq!(found(&index, 90.0, 0.0), vec![pole]);
        assert!(found(&index, 89.99, 180.0).is_empty());
        // ~111 m west across ±180°.
        assert_eq!(found(&index, 0.0, -179.9995), vec![date_line]);
        assert!(found(&index, 0.0, -179.99).is_empty());
    }

    #[test]
    fn removed_fences_are_gone_and_slots_come_back() {
        let mut index = FenceIndex::new();
        let a = index.insert(10.0, 10.0, 1000.0);
        let b = index.insert(10.0, 10.0, 2000.0);
        assert_eq!(found(&index, 10.0, 10.0), vec![a, b]);
        index.replace(a, 20.0, 20.0, 1000.0);
        assert_eq!(found(&index, 10.0, 10.0), vec![b]);
        assert_eq!(found(&index, 20.0, 20.0), vec![a]);
        index.replace(a, 10.0, 10.0, 1000.0);
        index.remove(a);
        assert_eq!(found(&index, 10.0, 10.0), vec![b]);
        assert_eq!(index.insert(50.0, 50.0, 100.0), a);
        assert_eq!(index.len(), 2);
    }

    #[test]
    fn bulk_loading_finds_what_a_scan_finds() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let circles: Vec<(f64, f64, f64)> = (0..5000)
            .map(|_| {
                (
                    rng.gen_range(31.0..31.4),
                    rng.gen_range(121.2..121.7),
                    rng.gen_range(50.0..2000.0),
                )
            })
            .collect();
        let index = FenceIndex::bulk(&circles);
        // The same circles one by one: the tree is built again on the way, slots kept.
        let mut grown = FenceIndex::new();
        for &(lat, lon, r) in &circles {
            grown.insert(lat, lon, r);
        }
        for _ in 0..2000 {
            let (lat, lon) = (rng.gen_range(31.0..31.4), rng.gen_range(121.2..121.7));
            let scan: Vec<u32> = circles
                .iter()
                .enumerate()
                .filter(|(_, c)| haversine_m(c.0, c.1, lat, lon) <= c.2)
                .map(|(i, _)| i as u32)
                .collect();
            assert_eq!(found(&index, lat, lon), scan);
            assert_eq!(found(&grown, lat, lon), scan);
        }
    }
}
