//! Device platforms and sets of them, as a push targets them.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A platform a device runs on, or a push may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Android,
    Ios,
    Hmos,
    Quickapp,
    Web,
    /// Legacy JPush platform: a push may name it, no device registers as it.
    Winphone,
}

impl Platform {
    pub const ALL: [Platform; 6] = [
        Platform::Android,
        Platform::Ios,
        Platform::Hmos,
        Platform::Quickapp,
        Platform::Web,
        Platform::Winphone,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Platform::Android => "android",
            Platform::Ios => "ios",
            Platform::Hmos => "hmos",
            Platform::Quickapp => "quickapp",
            Platform::Web => "web",
            Platform::Winphone => "winphone",
        }
    }

    pub fn parse(s: &str) -> Option<Platform> {
        Platform::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// Platforms a device may register as (winphone is gone).
    pub fn is_device_platform(self) -> bool {
        self != Platform::Winphone
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of platforms; `PlatformSet::all()` is what `"platform": "all"` means.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PlatformSet(u8);

impl PlatformSet {
    pub fn all() -> PlatformSet {
        Platform::ALL.into_iter().collect()
    }

    pub fn empty() -> PlatformSet {
        PlatformSet(0)
    }

    pub fn insert(&mut self, p: Platform) {
        self.0 |= p.bit();
    }

    pub fn contains(self, p: Platform) -> bool {
        self.0 & p.bit() != 0
    }

    pub fn is_all(self) -> bool {
        self == PlatformSet::all()
    }

    pub fn iter(self) -> impl Iterator<Item = Platform> {
        Platform::ALL.into_iter().filter(move |p| self.contains(*p))
    }
}

impl FromIterator<Platform> for PlatformSet {
    fn from_iter<I: IntoIterator<Item = Platform>>(iter: I) -> Self {
        let mut set = PlatformSet::empty();
        for p in iter {
            set.insert(p);
        }
        set
    }
}

impl Serialize for PlatformSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.is_all() {
            s.serialize_str("all")
        } else {
            s.collect_seq(self.iter())
        }
    }
}

impl<'de> Deserialize<'de> for PlatformSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            All(String),
            List(Vec<Platform>),
        }
        match Repr::deserialize(d)? {
            Repr::All(s) if s == "all" => Ok(PlatformSet::all()),
            Repr::All(s) => Err(serde::de::Error::custom(format!(
                "unknown platform set {s:?}"
            ))),
            Repr::List(l) => Ok(l.into_iter().collect()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_set_round_trips_through_json() {
        let all = PlatformSet::all();
        assert_eq!(serde_json::to_string(&all).unwrap(), "\"all\"");
        let some: PlatformSet = [Platform::Ios, Platform::Web].into_iter().collect();
        let json = serde_json::to_string(&some).unwrap();
        assert_eq!(json, r#"["ios","web"]"#);
        let back: PlatformSet = serde_json::from_str(&json).unwrap();
        assert_eq!(back, some);
        assert!(back.contains(Platform::Web) && !back.contains(Platform::Android));
    }
}
