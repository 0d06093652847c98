//! Which app a device belongs to, found from its registration id alone (what a device says
//! when it connects).

use crate::app::AppState;
use pigeon_core::{FastHashState, FastMap as HashMap};
use std::hash::BuildHasher;
use std::sync::Arc;

/// An app number meaning "more than one app has a device whose id has this hash".
const SEVERAL: u32 = u32::MAX;

/// The app of every device by a keyed 32-bit hash of its registration id, not by the id:
/// each app's own index holds the ids and confirms a match, so a million devices cost
/// ~18 MB here where a second copy of every id with its app cost ~105 MB. A hash that
/// devices of several apps share (by chance or on purpose) sends the lookup to every app.
/// Devices are never forgotten here: an entry for a device that is gone only costs a miss
/// in its app's index.
#[derive(Default)]
pub(crate) struct DeviceApps {
    hasher: FastHashState,
    app_by_hash: HashMap<u32, u32>,
    /// The apps by number.
    apps: Vec<Arc<AppState>>,
    numbers: HashMap<String, u32>,
}

impl DeviceApps {
    fn hash(&self, registration_id: &str) -> u32 {
        // The high half: hashbrown takes a bucket from the low bits of its own hash of this.
        (self.hasher.hash_one(registration_id) >> 32) as u32
    }

    fn number_of(&mut self, app: &Arc<AppState>) -> u32 {
        if let Some(n) = self.numbers.get(&app.app_key) {
            return *n;
        }
        let n = self.apps.len() as u32;
        self.apps.push(app.clone());
        self.numbers.insert(app.app_key.clone(), n);
        n
    }

    /// Notes that these devices belong to `app`.
    pub fn insert<'a>(
        &mut self,
        app: &Arc<AppState>,
        registration_ids: impl IntoIterator<Item = &'a str>,
    ) {
        let number = self.number_of(app);
        for rid in registration_ids {
            let hash = self.hash(rid);
            let entry = self.app_by_hash.entry(hash).or_insert(number);
            if *entry != number {
                *entry = SEVERAL;
            }
        }
    }

    /// The apps that may have a device with this id: none, one, or every app.
    pub fn candidates(&self, registration_id: &str) -> Vec<Arc<AppState>> {
        match self.app_by_hash.get(&self.hash(registration_id)) {
            None => Vec::new(),
            Some(&SEVERAL) => self.apps.clone(),
            Some(&n) => self.apps.get(n as usize).cloned().into_iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pigeon_store::AppRecord;

    fn app(key: &str) -> Arc<AppState> {
        Arc::new(AppState::new(AppRecord {
            app_key: key.into(),
            master_secret: "s".into(),
            name: key.into(),
            created_ms: 0,
        }))
    }

    fn keys(apps: Vec<Arc<AppState>>) -> Vec<String> {
        apps.iter().map(|a| a.app_key.clone()).collect()
    }

    #[test]
    fn an_id_leads_to_its_app_and_a_shared_hash_to_every_app() {
        let (a, b) = (app("a"), app("b"));
        let mut apps = DeviceApps::default();
        let ids: Vec<String> = (0..10_000).map(|i| format!("rid{i}")).collect();
        apps.insert(&a, ids.iter().map(String::as_str));
        apps.insert(&b, ["only-in-b"]);
        assert_eq!(keys(apps.candidates("rid42")), ["a"]);
        assert_eq!(keys(apps.candidates("only-in-b")), ["b"]);
        // An unknown id finds nothing, unless its hash happens to be taken.
        let unknown = (0..100)
            .filter(|i| apps.candidates(&format!("nobody{i}")).is_empty())
            .count();
        assert!(unknown >= 99, "{unknown} of 100 unknown ids found no app");
        // The same hash under two apps (here: the same id) is looked up in both.
        apps.insert(&b, ["rid7"]);
        assert_eq!(keys(apps.candidates("rid7")), ["a", "b"]);
        assert_eq!(keys(apps.candidates("rid8")), ["a"]);
    }
}
