//! Audience expressions and the roaring-bitmap index that resolves them.
//!
//! Each device of an app has a dense [`Ordinal`]; tags, aliases and platforms are bitmaps over
//! those ordinals, so resolving `tag_and [a, b]` + `tag_not [c]` over millions of devices is a
//! few bitmap operations with no per-device work.

use crate::FastMap as HashMap;
use crate::{FastHashState, Ordinal, Platform, PlatformSet};
use roaring::RoaringBitmap;
use serde::{Deserialize, Serialize};
use std::hash::BuildHasher;

/// Whom a push is for.
// One per push, never per device: boxing the expression would save ~200 bytes a push and
// cost a pointer chase on every resolve.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Audience {
    /// Every device of the app (on the push's platforms).
    All,
    /// Keys AND together; see [`AudienceExpr`].
    Expr(AudienceExpr),
}

/// An audience expression. Empty lists are "not given". Within a key: `tag` is OR, `tag_and` is
/// AND, `tag_not` is NOT(t1 OR t2 ...), `alias`, `registration_id` and `region` are OR,
/// `region_not` is NOT(r1 OR r2 ...). Keys AND together.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AudienceExpr {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tag: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tag_and: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tag_not: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alias: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub registration_id: Vec<String>,
    /// Devices whose region (as they registered it) is one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub region: Vec<String>,
    /// Devices whose region is none of these (devices without a region included).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub region_not: Vec<String>,
    /// A segment (a saved audience) by id. The index does not resolve it: the engine
    /// resolves the segment's own audience and ANDs it in ([`AudienceIndex::resolve_saved`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<String>,
    /// An A/B test by id: the test's audience, split into its variants, ANDed in the same way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abtest: Option<String>,
}

impl AudienceExpr {
    /// True when no key is given (which a valid push never has).
    pub fn is_empty(&self) -> bool {
        !self.has_own_keys() && self.segment.is_none() && self.abtest.is_none()
    }

    /// Whether it has keys the index resolves itself (all but `segment` and `abtest`).
    pub fn has_own_keys(&self) -> bool {
        !(self.tag.is_empty()
            && self.tag_and.is_empty()
            && self.tag_not.is_empty()
            && self.alias.is_empty()
            && self.registration_id.is_empty()
            && self.region.is_empty()
            && self.region_not.is_empty())
    }
}

/// What a push's `segment` and `abtest` keys refer to, looked up by the engine.
#[derive(Clone, Copy, Default)]
pub struct SavedAudiences<'a> {
    /// The segment's own audience.
    pub segment: Option<&'a Audience>,
    /// The test's own audience and its bucket bitmaps.
    pub abtest: Option<(&'a Audience, &'a crate::abtest::VariantBuckets)>,
}

/// An audience resolved with its saved parts: the devices it reaches and, for an A/B test,
/// the targets of each variant (which together are `targets`) and how many fell in control.
#[derive(Debug, Default)]
pub struct Resolved {
    pub targets: RoaringBitmap,
    pub variants: Option<(Vec<RoaringBitmap>, u64)>,
}

/// The attributes of one device an audience can select on, borrowed from wherever the
/// device's record lives: the index keeps no copy of them, only bitmaps and the id lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceAttrs<'a> {
    pub registration_id: &'a str,
    pub platform: Platform,
    pub alias: Option<&'a str>,
    pub tags: &'a [String],
    /// Where the device is (a province or region code, as the app registered it).
    pub region: Option<&'a str>,
}

/// The audience index of one app.
#[derive(Default)]
pub struct AudienceIndex {
    all: RoaringBitmap,
    by_platform: HashMap<Platform, RoaringBitmap>,
    by_tag: HashMap<Box<str>, Members>,
    by_alias: HashMap<Box<str>, Members>,
    by_region: HashMap<Box<str>, Members>,
    by_registration_id: OrdinalsById,
}

/// Where the devices' registration ids live (their records): the index keeps a hash of each
/// id, not a copy, and reads the id back to confirm a lookup.
pub trait DeviceIds {
    fn registration_id(&self, ordinal: Ordinal) -> Option<&str>;
}

/// Ids by ordinal, as a plain list (benchmarks, tests).
impl DeviceIds for Vec<String> {
    fn registration_id(&self, ordinal: Ordinal) -> Option<&str> {
        self.get(ordinal as usize).map(String::as_str)
    }
}

/// Ordinals by registration id, holding a keyed 32-bit hash of each id beside its ordinal
/// (8 bytes a device) and confirming a match against the id the records hold: a map of
/// owned ids cost ~100 bytes a device, a second copy of every id.
#[derive(Default)]
struct OrdinalsById {
    hasher: FastHashState,
    table: hashbrown::HashTable<(u32, Ordinal)>,
}

impl OrdinalsById {
    fn hash(&self, registration_id: &str) -> u32 {
        (self.hasher.hash_one(registration_id) >> 32) as u32
    }

    /// The table's hash of an entry, spread from the 32 bits kept: the table takes a bucket
    /// from the low bits and a tag from the top ones.
    fn spread(hash: u32) -> u64 {
        u64::from(hash).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    fn insert(&mut self, registration_id: &str, ordinal: Ordinal) {
        let hash = self.hash(registration_id);
        let same = |e: &(u32, Ordinal)| *e == (hash, ordinal);
        if self.table.find(Self::spread(hash), same).is_none() {
            self.table
                .insert_unique(Self::spread(hash), (hash, ordinal), |e| Self::spread(e.0));
        }
    }

    fn remove(&mut self, registration_id: &str, ordinal: Ordinal) {
        let hash = self.hash(registration_id);
        let same = |e: &(u32, Ordinal)| *e == (hash, ordinal);
        if let Ok(entry) = self.table.find_entry(Self::spread(hash), same) {
            entry.remove();
        }
    }

    fn get(&self, registration_id: &str, ids: &dyn DeviceIds) -> Option<Ordinal> {
        let hash = self.hash(registration_id);
        let matches =
            |e: &(u32, Ordinal)| e.0 == hash && ids.registration_id(e.1) == Some(registration_id);
        self.table.find(Self::spread(hash), matches).map(|e| e.1)
    }
}

impl AudienceIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of devices indexed.
    pub fn len(&self) -> u64 {
        self.all.len()
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// Every device indexed.
    pub fn all(&self) -> &RoaringBitmap {
        &self.all
    }

    /// The device with this registration id; `ids` are where the ids live.
    pub fn ordinal_of(&self, registration_id: &str, ids: &dyn DeviceIds) -> Option<Ordinal> {
        self.by_registration_id.get(registration_id, ids)
    }

    /// Bytes the tag bitmaps take (their serialized size, which tracks their heap size).
    pub fn tag_index_bytes(&self) -> u64 {
        self.by_tag.values().map(Members::serialized_size).sum()
    }

    /// The tags at least one of `devices` carries.
    pub fn tags_among<'a>(&'a self, devices: &'a RoaringBitmap) -> impl Iterator<Item = &'a str> {
        self.by_tag
            .iter()
            .filter(|(_, m)| m.any_in(devices))
            .map(|(tag, _)| &**tag)
    }

    /// Devices that carry `tag`.
    pub fn tag_members(&self, tag: &str) -> RoaringBitmap {
        members_of(&self.by_tag, tag)
    }

    /// Devices bound to `alias`.
    pub fn alias_members(&self, alias: &str) -> RoaringBitmap {
        members_of(&self.by_alias, alias)
    }

    /// Devices in `region`.
    pub fn region_members(&self, region: &str) -> RoaringBitmap {
        members_of(&self.by_region, region)
    }

    /// Whether `audience` selects the device `ordinal`: the same rules as
    /// [`AudienceIndex::resolve`], judged for one device with a few bitmap lookups.
    pub fn watches(&self, ordinal: Ordinal, audience: &Audience, ids: &dyn DeviceIds) -> bool {
        if !self.all.contains(ordinal) {
            return false;
        }
        let Audience::Expr(e) = audience else {
            return true;
        };
        let has = |map: &HashMap<Box<str>, Members>, key: &String| {
            map.get(key.as_str()).is_some_and(|m| m.contains(ordinal))
        };
        (e.tag.is_empty() || e.tag.iter().any(|t| has(&self.by_tag, t)))
            && e.tag_and.iter().all(|t| has(&self.by_tag, t))
            && !e.tag_not.iter().any(|t| has(&self.by_tag, t))
            && (e.alias.is_empty() || e.alias.iter().any(|a| has(&self.by_alias, a)))
            && (e.registration_id.is_empty()
                || e.registration_id
                    .iter()
                    .any(|r| ids.registration_id(ordinal) == Some(r.as_str())))
            && (e.region.is_empty() || e.region.iter().any(|r| has(&self.by_region, r)))
            && !e.region_not.iter().any(|r| has(&self.by_region, r))
    }

    /// Indexes a device; `old` is what was indexed for this ordinal before, if anything.
    pub fn upsert(&mut self, ordinal: Ordinal, old: Option<DeviceAttrs<'_>>, new: DeviceAttrs<'_>) {
        if let Some(old) = old {
            self.remove(ordinal, old);
        }
        self.all.insert(ordinal);
        self.by_platform
            .entry(new.platform)
            .or_default()
            .insert(ordinal);
        for tag in new.tags {
            add_to(&mut self.by_tag, tag, ordinal);
        }
        if let Some(alias) = new.alias {
            add_to(&mut self.by_alias, alias, ordinal);
        }
        if let Some(region) = new.region {
            add_to(&mut self.by_region, region, ordinal);
        }
        self.by_registration_id.insert(new.registration_id, ordinal);
    }

    /// Forgets a device, given what was indexed for it.
    pub fn remove(&mut self, ordinal: Ordinal, old: DeviceAttrs<'_>) {
        self.all.remove(ordinal);
        if let Some(b) = self.by_platform.get_mut(&old.platform) {
            b.remove(ordinal);
        }
        for tag in old.tags {
            remove_from(&mut self.by_tag, tag.as_str(), ordinal);
        }
        if let Some(alias) = old.alias {
            remove_from(&mut self.by_alias, alias, ordinal);
        }
        if let Some(region) = old.region {
            remove_from(&mut self.by_region, region, ordinal);
        }
        self.by_registration_id.remove(old.registration_id, ordinal);
    }

    /// The devices on `platforms`.
    pub fn on_platforms(&self, platforms: PlatformSet) -> RoaringBitmap {
        if platforms.is_all() {
            return self.all.clone();
        }
        let mut out = RoaringBitmap::new();
        for p in platforms.iter() {
            if let Some(b) = self.by_platform.get(&p) {
                out |= b;
            }
        }
        out
    }

    /// Resolves an audience on some platforms to the set of device ordinals it reaches; `ids`
    /// are where the devices' registration ids live.
    pub fn resolve(
        &self,
        audience: &Audience,
        platforms: PlatformSet,
        ids: &dyn DeviceIds,
    ) -> RoaringBitmap {
        let expr = match audience {
            Audience::All => return self.on_platforms(platforms),
            Audience::Expr(expr) => expr,
        };
        let mut acc: Option<RoaringBitmap> = None;
        let mut and_with = |b: RoaringBitmap| {
            acc = Some(match acc.take() {
                None => b,
                Some(a) => a & b,
            });
        };
        if !expr.tag.is_empty() {
            and_with(self.union_of(&self.by_tag, &expr.tag));
        }
        if !expr.tag_and.is_empty() {
            // Smallest first keeps the intermediate results small.
            let mut sets: Vec<&Members> = Vec::with_capacity(expr.tag_and.len());
            for t in &expr.tag_and {
                match self.by_tag.get(t.as_str()) {
                    Some(b) => sets.push(b),
                    None => {
                        sets.clear();
                        and_with(RoaringBitmap::new());
                        break;
                    }
                }
            }
            if !sets.is_empty() {
                sets.sort_by_key(|m| m.len());
                let mut inter = sets[0].to_bitmap();
                for m in &sets[1..] {
                    m.keep_in(&mut inter);
                }
                and_with(inter);
            }
        }
        if !expr.alias.is_empty() {
            and_with(self.union_of(&self.by_alias, &expr.alias));
        }
        if !expr.region.is_empty() {
            and_with(self.union_of(&self.by_region, &expr.region));
        }
        if !expr.registration_id.is_empty() {
            and_with(
                expr.registration_id
                    .iter()
                    .filter_map(|r| self.by_registration_id.get(r, ids))
                    .collect(),
            );
        }
        // tag_not alone means "everyone but", so it starts from all devices.
        let mut result = acc.unwrap_or_else(|| self.all.clone());
        if !expr.tag_not.is_empty() {
            result -= self.union_of(&self.by_tag, &expr.tag_not);
        }
        if !expr.region_not.is_empty() {
            result -= self.union_of(&self.by_region, &expr.region_not);
        }
        if !platforms.is_all() {
            result &= self.on_platforms(platforms);
        }
        result
    }

    /// [`AudienceIndex::resolve`] with the push's segment and A/B test: the push's own keys,
    /// the segment's audience and the test's audience AND together; a test then keeps only
    /// its variants' devices (control gets nothing) and says which variant each target is in.
    /// A segment push costs what its expression costs, plus one intersection per part.
    pub fn resolve_saved(
        &self,
        audience: &Audience,
        platforms: PlatformSet,
        saved: SavedAudiences<'_>,
        ids: &dyn DeviceIds,
    ) -> Resolved {
        let own = match audience {
            Audience::Expr(e) if !e.has_own_keys() => None,
            _ => Some(audience),
        };
        let mut parts = own
            .into_iter()
            .chain(saved.segment)
            .chain(saved.abtest.map(|(a, _)| a));
        let first = parts.next().unwrap_or(&Audience::All);
        let mut targets = self.resolve(first, platforms, ids);
        for part in parts {
            if targets.is_empty() {
                break;
            }
            // Each part is resolved on every platform: the first already kept only the
            // push's platforms, and one intersection does the rest.
            targets &= self.resolve(part, PlatformSet::all(), ids);
        }
        let variants = saved.abtest.map(|(_, buckets)| {
            let (variants, control) = buckets.split(&targets);
            targets -= &buckets.control;
            (variants, control)
        });
        Resolved { targets, variants }
    }

    fn union_of(&self, map: &HashMap<Box<str>, Members>, keys: &[String]) -> RoaringBitmap {
        let mut out = RoaringBitmap::new();
        for k in keys {
            if let Some(m) = map.get(k.as_str()) {
                m.add_into(&mut out);
            }
        }
        out
    }
}

/// The devices under one tag, alias or region. Most aliases (and per-user tags) name one
/// device, and a roaring bitmap of one value costs ~130 bytes of heap beside its key (half
/// a million aliases: 64 MB), so a single device is held inline, until a second one comes
/// and again once one is left.
#[derive(Clone, Debug)]
enum Members {
    One(Ordinal),
    Many(RoaringBitmap),
}

impl Members {
    fn len(&self) -> u64 {
        match self {
            Members::One(_) => 1,
            Members::Many(b) => b.len(),
        }
    }

    fn contains(&self, ordinal: Ordinal) -> bool {
        match self {
            Members::One(o) => *o == ordinal,
            Members::Many(b) => b.contains(ordinal),
        }
    }

    fn insert(&mut self, ordinal: Ordinal) {
        match self {
            Members::One(o) if *o == ordinal => {}
            Members::One(o) => *self = Members::Many([*o, ordinal].into_iter().collect()),
            Members::Many(b) => {
                b.insert(ordinal);
            }
        }
    }

    /// Removes `ordinal`; true when no device is left.
    fn remove(&mut self, ordinal: Ordinal) -> bool {
        match self {
            Members::One(o) => *o == ordinal,
            Members::Many(b) => {
                b.remove(ordinal);
                let (left, last) = (b.len(), b.min());
                if let (1, Some(last)) = (left, last) {
                    *self = Members::One(last);
                }
                left == 0
            }
        }
    }

    fn any_in(&self, devices: &RoaringBitmap) -> bool {
        match self {
            Members::One(o) => devices.contains(*o),
            Members::Many(b) => !b.is_disjoint(devices),
        }
    }

    fn to_bitmap(&self) -> RoaringBitmap {
        match self {
            Members::One(o) => std::iter::once(*o).collect(),
            Members::Many(b) => b.clone(),
        }
    }

    /// `out |= self`.
    fn add_into(&self, out: &mut RoaringBitmap) {
        match self {
            Members::One(o) => {
                out.insert(*o);
            }
            Members::Many(b) => *out |= b,
        }
    }

    /// `out &= self`.
    fn keep_in(&self, out: &mut RoaringBitmap) {
        match self {
            Members::One(o) => {
                let kept = out.contains(*o);
                out.clear();
                if kept {
                    out.insert(*o);
                }
            }
            Members::Many(b) => *out &= b,
        }
    }

    fn serialized_size(&self) -> u64 {
        match self {
            Members::One(_) => std::mem::size_of::<Ordinal>() as u64,
            Members::Many(b) => b.serialized_size() as u64,
        }
    }
}

fn members_of(map: &HashMap<Box<str>, Members>, key: &str) -> RoaringBitmap {
    map.get(key).map(Members::to_bitmap).unwrap_or_default()
}

fn add_to(map: &mut HashMap<Box<str>, Members>, key: &str, ordinal: Ordinal) {
    match map.get_mut(key) {
        Some(m) => m.insert(ordinal),
        None => {
            map.insert(Box::from(key), Members::One(ordinal));
        }
    }
}

fn remove_from(map: &mut HashMap<Box<str>, Members>, key: &str, ordinal: Ordinal) {
    if map.get_mut(key).is_some_and(|m| m.remove(ordinal)) {
        map.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dev {
        rid: String,
        platform: Platform,
        alias: Option<String>,
        tags: Vec<String>,
        region: Option<String>,
    }

    impl Dev {
        fn attrs(&self) -> DeviceAttrs<'_> {
            DeviceAttrs {
                registration_id: &self.rid,
                platform: self.platform,
                alias: self.alias.as_deref(),
                tags: &self.tags,
                region: self.region.as_deref(),
            }
        }
    }

    fn dev(rid: &str, platform: Platform, alias: Option<&str>, tags: &[&str]) -> Dev {
        Dev {
            rid: rid.into(),
            platform,
            alias: alias.map(String::from),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            region: None,
        }
    }

    fn devices() -> Vec<Dev> {
        vec![
            dev("r0", Platform::Android, Some("alice"), &["a", "b"]),
            dev("r1", Platform::Ios, Some("bob"), &["a"]),
            dev("r2", Platform::Ios, None, &["b", "c"]),
            dev("r3", Platform::Web, Some("alice"), &[]),
        ]
    }

    /// The devices' registration ids by ordinal, as their records hold them.
    fn ids() -> Vec<String> {
        devices().into_iter().map(|d| d.rid).collect()
    }

    fn index() -> AudienceIndex {
        let mut ix = AudienceIndex::new();
        for (i, d) in devices().iter().enumerate() {
            ix.upsert(i as u32, None, d.attrs());
        }
        ix
    }

    fn expr(f: impl FnOnce(&mut AudienceExpr)) -> Audience {
        let mut e = AudienceExpr::default();
        f(&mut e);
        Audience::Expr(e)
    }

    fn ords(b: RoaringBitmap) -> Vec<u32> {
        b.iter().collect()
    }

    #[test]
    fn all_respects_platforms() {
        let ix = index();
        assert_eq!(
            ords(ix.resolve(&Audience::All, PlatformSet::all(), &ids())),
            [0, 1, 2, 3]
        );
        let ios: PlatformSet = [Platform::Ios].into_iter().collect();
        assert_eq!(ords(ix.resolve(&Audience::All, ios, &ids())), [1, 2]);
    }

    #[test]
    fn tag_is_or_tag_and_is_and_tag_not_subtracts() {
        let ix = index();
        let all = PlatformSet::all();
        let a = expr(|e| e.tag = vec!["a".into(), "c".into()]);
        assert_eq!(ords(ix.resolve(&a, all, &ids())), [0, 1, 2]);
        let a = expr(|e| e.tag_and = vec!["a".into(), "b".into()]);
        assert_eq!(ords(ix.resolve(&a, all, &ids())), [0]);
        let a = expr(|e| {
            e.tag = vec!["a".into(), "b".into()];
            e.tag_not = vec!["c".into()];
        });
        assert_eq!(ords(ix.resolve(&a, all, &ids())), [0, 1]);
        let a = expr(|e| e.tag_not = vec!["a".into()]);
        assert_eq!(ords(ix.resolve(&a, all, &ids())), [2, 3]);
        let a = expr(|e| e.tag_and = vec!["a".into(), "nope".into()]);
        assert!(ix.resolve(&a, all, &ids()).is_empty());
    }

    #[test]
    fn keys_and_together() {
        let ix = index();
        let a = expr(|e| {
            e.alias = vec!["alice".into()];
            e.tag = vec!["b".into()];
        });
        assert_eq!(ords(ix.resolve(&a, PlatformSet::all(), &ids())), [0]);
        let a = expr(|e| e.registration_id = vec!["r1".into(), "r3".into(), "zz".into()]);
        assert_eq!(ords(ix.resolve(&a, PlatformSet::all(), &ids())), [1, 3]);
        let web: PlatformSet = [Platform::Web].into_iter().collect();
        let a = expr(|e| e.alias = vec!["alice".into()]);
        assert_eq!(ords(ix.resolve(&a, web, &ids())), [3]);
    }

    #[test]
    fn regions_select_and_exclude() {
        let mut ix = AudienceIndex::new();
        let mut devs = devices();
        devs[0].region = Some("11000000".into());
        devs[1].region = Some("33000000".into());
        devs[2].region = Some("11000000".into());
        for (i, d) in devs.iter().enumerate() {
            ix.upsert(i as u32, None, d.attrs());
        }
        let all = PlatformSet::all();
        let a = expr(|e| e.region = vec!["11000000".into()]);
        assert_eq!(ords(ix.resolve(&a, all, &ids())), [0, 2]);
        let a = expr(|e| e.region_not = vec!["11000000".into()]);
        assert_eq!(ords(ix.resolve(&a, all, &ids())), [1, 3]);
        let a = expr(|e| {
            e.region = vec!["11000000".into(), "33000000".into()];
            e.tag = vec!["a".into()];
        });
        assert_eq!(ords(ix.resolve(&a, all, &ids())), [0, 1]);
        // A device that moves leaves its old region.
        let mut moved = dev("r0", Platform::Android, Some("alice"), &["a", "b"]);
        moved.region = Some("44000000".into());
        ix.upsert(0, Some(devs[0].attrs()), moved.attrs());
        assert_eq!(ords(ix.region_members("11000000")), [2]);
        assert_eq!(ords(ix.region_members("44000000")), [0]);
    }

    #[test]
    fn a_key_of_one_device_grows_to_many_and_back() {
        let mut ix = index();
        let all = PlatformSet::all();
        // "c" and "bob" have one device each; "alice" and "a" have two.
        assert_eq!(ords(ix.tag_members("c")), [2]);
        assert_eq!(ords(ix.alias_members("bob")), [1]);
        let both = expr(|e| e.tag_and = vec!["a".into(), "c".into()]);
        assert_eq!(ords(ix.resolve(&both, all, &ids())), Vec::<u32>::new());
        let c_and_b = expr(|e| e.tag_and = vec!["c".into(), "b".into()]);
        assert_eq!(ords(ix.resolve(&c_and_b, all, &ids())), [2]);
        let on: RoaringBitmap = [2, 3].into_iter().collect();
        let mut among: Vec<&str> = ix.tags_among(&on).collect();
        among.sort();
        assert_eq!(among, ["b", "c"]);

        // A second device joins "bob" and "c", then the first leaves them.
        let old = devices();
        let joined = dev("r0", Platform::Android, Some("bob"), &["c"]);
        ix.upsert(0, Some(old[0].attrs()), joined.attrs());
        assert_eq!(ords(ix.alias_members("bob")), [0, 1]);
        assert_eq!(ords(ix.tag_members("c")), [0, 2]);
        assert!(ix.watches(0, &expr(|e| e.alias = vec!["bob".into()]), &ids()));
        ix.remove(1, old[1].attrs());
        assert_eq!(ords(ix.alias_members("bob")), [0]);
        assert_eq!(ords(ix.alias_members("alice")), [3]);
        ix.remove(0, joined.attrs());
        assert!(ix.alias_members("bob").is_empty());
        assert!(!ix.watches(0, &expr(|e| e.alias = vec!["bob".into()]), &ids()));
        assert_eq!(ords(ix.tag_members("c")), [2]);
        assert_eq!(
            ix.tag_index_bytes(),
            2 * 4,
            "two tags (b, c) of one device each"
        );
    }

    #[test]
    fn ids_are_found_by_their_hash_and_confirmed_against_the_records() {
        let ids: Vec<String> = (0..100_000).map(|i| format!("rid{i}")).collect();
        let mut ix = AudienceIndex::new();
        for (i, rid) in ids.iter().enumerate() {
            let attrs = DeviceAttrs {
                registration_id: rid,
                platform: Platform::Android,
                alias: None,
                tags: &[],
                region: None,
            };
            ix.upsert(i as u32, None, attrs);
        }
        let found = (0..ids.len())
            .filter(|&i| ix.ordinal_of(&ids[i], &ids) == Some(i as u32))
            .count();
        assert_eq!(found, ids.len());
        assert_eq!(ix.ordinal_of("rid100000", &ids), None);
        // The records have the last word: a device whose id is not that (any more) is not it.
        let mut changed = ids.clone();
        changed[7] = "someone-else".into();
        assert_eq!(ix.ordinal_of("rid7", &changed), None);
        let a = expr(|e| {
            e.registration_id = vec!["rid5".into(), "rid99999".into(), "nobody".into()];
        });
        assert_eq!(ords(ix.resolve(&a, PlatformSet::all(), &ids)), [5, 99_999]);
        assert!(ix.watches(5, &a, &ids));
        assert!(!ix.watches(6, &a, &ids));
    }

    #[test]
    fn upsert_replaces_old_attributes() {
        let mut ix = index();
        let before = devices();
        let after = dev("r0", Platform::Android, None, &["z"]);
        ix.upsert(0, Some(before[0].attrs()), after.attrs());
        let a = expr(|e| e.tag = vec!["a".into()]);
        assert_eq!(ords(ix.resolve(&a, PlatformSet::all(), &ids())), [1]);
        assert!(ix.alias_members("alice").contains(3));
        assert!(!ix.alias_members("alice").contains(0));
        assert_eq!(ix.ordinal_of("r0", &ids()), Some(0));
        ix.remove(0, after.attrs());
        assert_eq!(ix.ordinal_of("r0", &ids()), None);
        assert_eq!(ix.len(), 3);
        let z = expr(|e| e.tag = vec!["z".into()]);
        assert!(ix.resolve(&z, PlatformSet::all(), &ids()).is_empty());
    }

    #[test]
    fn saved_audiences_and_with_the_push_and_a_test_splits_it() {
        // r0 android {a,b}, r1 ios {a}, r2 ios {b,c}, r3 web {}.
        let ix = index();
        let all = PlatformSet::all();
        let segment = expr(|e| e.tag = vec!["a".into(), "c".into()]); // 0, 1, 2
        let by_segment = expr(|e| e.segment = Some("s".into()));
        let saved = SavedAudiences {
            segment: Some(&segment),
            abtest: None,
        };
        let r = ix.resolve_saved(&by_segment, all, saved, &ids());
        assert_eq!(
            (ords(r.targets), r.variants.is_none()),
            (vec![0, 1, 2], true)
        );
        // The push's own keys and platforms AND in.
        let narrower = expr(|e| {
            e.segment = Some("s".into());
            e.tag_not = vec!["b".into()];
        });
        assert_eq!(
            ords(ix.resolve_saved(&narrower, all, saved, &ids()).targets),
            [1]
        );
        let ios: PlatformSet = [Platform::Ios].into_iter().collect();
        assert_eq!(
            ords(ix.resolve_saved(&by_segment, ios, saved, &ids()).targets),
            [1, 2]
        );
        // A test: its audience, split by its buckets; control is left out of the targets.
        let mut buckets = crate::abtest::VariantBuckets::new("t", vec![40, 40]);
        for (o, d) in devices().iter().enumerate() {
            buckets.add(o as u32, &d.rid);
        }
        let test_audience = Audience::All;
        let by_test = expr(|e| {
            e.abtest = Some("t".into());
            e.segment = Some("s".into());
        });
        let saved = SavedAudiences {
            segment: Some(&segment),
            abtest: Some((&test_audience, &buckets)),
        };
        let r = ix.resolve_saved(&by_test, all, saved, &ids());
        let (variants, control) = r.variants.unwrap_or_default();
        let mut union = RoaringBitmap::new();
        for (v, b) in variants.iter().zip(&buckets.variants) {
            assert!(v.is_subset(b) && v.is_subset(&r.targets));
            union |= v;
        }
        assert_eq!(union, r.targets);
        let in_control = [0u32, 1, 2]
            .iter()
            .filter(|o| buckets.control.contains(**o))
            .count() as u64;
        assert_eq!((control, r.targets.len()), (in_control, 3 - in_control));
    }
}
