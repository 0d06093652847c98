//! When a fence fires (geofences.md §3), as pure functions of a fence's rules, one device's
//! standing with it, and the time: no storage, no clock of their own.

use pigeon_core::FastMap as HashMap;
use pigeon_store::{FenceState, GeofenceRecord, FENCE_ENTER, FENCE_LEAVE, FENCE_STAY};

/// What a firing reports (`Action` of `Geofence.Event`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Enter,
    Leave,
    Stay,
}

impl Action {
    pub fn bit(self) -> u8 {
        match self {
            Action::Enter => FENCE_ENTER,
            Action::Leave => FENCE_LEAVE,
            Action::Stay => FENCE_STAY,
        }
    }

    /// Its place in [`Track::last_fired_ms`].
    fn index(self) -> usize {
        match self {
            Action::Enter => 0,
            Action::Leave => 1,
            Action::Stay => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Enter => "Enter",
            Action::Leave => "Leave",
            Action::Stay => "Stay",
        }
    }
}

/// A fence's rules in milliseconds of the server's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rules {
    pub events: u8,
    pub stay_ms: Option<u64>,
    pub repeat: bool,
    pub cooldown_ms: u64,
    pub start_ms: Option<u64>,
    pub end_ms: Option<u64>,
}

impl Rules {
    /// The rules of a fence; `second_ms` is how long one of its seconds lasts (1000, but
    /// shorter in tests).
    pub fn of(fence: &GeofenceRecord, second_ms: u64) -> Rules {
        Rules {
            events: fence.events,
            stay_ms: fence
                .stay_s
                .filter(|_| fence.events & FENCE_STAY != 0)
                .map(|s| u64::from(s).saturating_mul(second_ms)),
            repeat: fence.repeat,
            cooldown_ms: u64::from(fence.cooldown_s).saturating_mul(second_ms),
            start_ms: fence.start_ms,
            end_ms: fence.end_ms,
        }
    }

    /// Whether `now_ms` is inside the fence's active window.
    pub fn active(&self, now_ms: u64) -> bool {
        self.start_ms.is_none_or(|s| now_ms >= s) && self.end_ms.is_none_or(|e| now_ms <= e)
    }

    /// Whether `action` may fire now for a device standing as `track` says.
    pub fn may_fire(&self, action: Action, track: &Track, now_ms: u64) -> bool {
        let last = track.last_fired_ms[action.index()];
        self.events & action.bit() != 0
            && self.active(now_ms)
            && (self.repeat || track.fired & action.bit() == 0)
            && (self.cooldown_ms == 0
                || last == 0
                || now_ms.saturating_sub(last) >= self.cooldown_ms)
    }
}

/// One device with one fence: [`FenceState`] without its keys.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Track {
    pub inside: bool,
    pub entered_ms: u64,
    pub stay_due_ms: Option<u64>,
    pub lat: f64,
    pub lon: f64,
    pub fired: u8,
    pub last_fired_ms: [u64; 3],
}

impl Track {
    pub fn of(state: &FenceState) -> Track {
        Track {
            inside: state.inside,
            entered_ms: state.entered_ms,
            stay_due_ms: state.stay_due_ms,
            lat: state.lat,
            lon: state.lon,
            fired: state.fired,
            last_fired_ms: state.last_fired_ms,
        }
    }

    pub fn state(&self, app_key: &str, geofence_id: &str, ordinal: u32) -> FenceState {
        FenceState {
            app_key: app_key.to_string(),
            geofence_id: geofence_id.to_string(),
            ordinal,
            inside: self.inside,
            entered_ms: self.entered_ms,
            stay_due_ms: self.stay_due_ms,
            lat: self.lat,
            lon: self.lon,
            fired: self.fired,
            last_fired_ms: self.last_fired_ms,
        }
    }

    /// Records that `action` fired at `now_ms`.
    pub fn fire(&mut self, action: Action, now_ms: u64) {
        self.fired |= action.bit();
        self.last_fired_ms[action.index()] = now_ms;
    }
}

/// A report at (lat, lon), `inside_now` of the fence or not: the device's new standing and
/// the action that fires, or `None` when the report changes nothing (nothing to write).
pub fn on_report(
    rules: &Rules,
    track: &Track,
    inside_now: bool,
    now_ms: u64,
    (lat, lon): (f64, f64),
) -> Option<(Track, Option<Action>)> {
    if track.inside == inside_now {
        return None;
    }
    let mut next = Track {
        inside: inside_now,
        lat,
        lon,
        ..*track
    };
    let action = if inside_now {
        next.entered_ms = now_ms;
        next.stay_due_ms = rules.stay_ms.map(|s| now_ms.saturating_add(s));
        Action::Enter
    } else {
        next.stay_due_ms = None;
        Action::Leave
    };
    // The standing changes whatever fires: a suppressed enter still starts an entry.
    let fires = rules.may_fire(action, track, now_ms);
    if fires {
        next.fire(action, now_ms);
    }
    Some((next, fires.then_some(action)))
}

/// One device's standing with the fences of its app, by fence slot: only the fences it is
/// inside, and those whose rules still remember a firing (`repeat: false`, a cooldown). A
/// device walking through a city keeps a few entries, not one for every fence it passed.
#[derive(Clone, Debug, Default)]
pub struct Standings {
    tracks: HashMap<u32, Track>,
}

/// One change a report made: the fence's slot, the device's new standing with it, and
/// what fired.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Judged {
    pub slot: u32,
    pub track: Track,
    pub fired: Option<Action>,
}

impl Standings {
    /// Standings read back from the store, each with its fence's slot and rules (`None`:
    /// the fence is gone).
    pub fn from_tracks(tracks: impl IntoIterator<Item = (u32, Track, Rules)>) -> Standings {
        Standings {
            tracks: tracks
                .into_iter()
                .filter(|(_, t, rules)| keeps(rules, t))
                .map(|(slot, t, _)| (slot, t))
                .collect(),
        }
    }

    /// Judges a report at `pos`: `around` is every fence slot containing it, sorted;
    /// `rules_of(slot)` the rules of a fence that watches this device (`None`: it is gone,
    /// or does not watch it, and is left out). Appends each change to `out`.
    pub fn judge(
        &mut self,
        around: &[u32],
        mut rules_of: impl FnMut(u32) -> Option<Rules>,
        now_ms: u64,
        pos: (f64, f64),
        out: &mut Vec<Judged>,
    ) {
        let left: Vec<u32> = self
            .tracks
            .iter()
            .filter(|(slot, t)| t.inside && around.binary_search(slot).is_err())
            .map(|(slot, _)| *slot)
            .collect();
        let judged = around
            .iter()
            .map(|s| (*s, true))
            .chain(left.into_iter().map(|s| (s, false)));
        for (slot, inside_now) in judged {
            let Some(rules) = rules_of(slot) else {
                continue;
            };
            let track = self.tracks.get(&slot).copied().unwrap_or_default();
            let Some((next, fired)) = on_report(&rules, &track, inside_now, now_ms, pos) else {
                continue;
            };
            if keeps(&rules, &next) {
                self.tracks.insert(slot, next);
            } else {
                self.tracks.remove(&slot);
            }
            out.push(Judged {
                slot,
                track: next,
                fired,
            });
        }
    }

    /// Records that the stay of the entry at `entered_ms` fired for the fence at `slot`.
    pub fn stay_fired(&mut self, slot: u32, entered_ms: u64, now_ms: u64) {
        if let Some(t) = self.tracks.get_mut(&slot) {
            if t.inside && t.entered_ms == entered_ms {
                t.stay_due_ms = None;
                t.fire(Action::Stay, now_ms);
            }
        }
    }

    /// Forgets the fence at `slot` (deleted: its slot may be given to another fence).
    pub fn forget(&mut self, slot: u32) {
        self.tracks.remove(&slot);
    }

    pub fn len(&self) -> usize {
        self.tracks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tracks.is_empty()
    }
}

/// Whether a standing must be kept: inside, or remembering a firing the rules look at.
fn keeps(rules: &Rules, t: &Track) -> bool {
    t.inside || (t.fired != 0 && (!rules.repeat || rules.cooldown_ms > 0))
}

/// What to do with a stay found due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StayDue {
    Fire,
    /// Not yet: the fence's `stay_s` grew since the entry.
    Later(u64),
    /// End the pending stay without firing.
    Drop,
}

/// A pending stay of `track` at `now_ms`, under the fence's rules now (`None`: the fence is
/// gone) and whether the fence still watches the device.
pub fn on_stay_due(rules: Option<&Rules>, watches: bool, track: &Track, now_ms: u64) -> StayDue {
    let Some(rules) = rules else {
        return StayDue::Drop;
    };
    let Some(stay_ms) = rules.stay_ms else {
        return StayDue::Drop;
    };
    if !track.inside || !watches {
        return StayDue::Drop;
    }
    let due = track.entered_ms.saturating_add(stay_ms);
    if due > now_ms {
        return StayDue::Later(due);
    }
    if rules.may_fire(Action::Stay, track, now_ms) {
        StayDue::Fire
    } else {
        StayDue::Drop
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(events: u8) -> Rules {
        Rules {
            events,
            stay_ms: (events & FENCE_STAY != 0).then_some(60_000),
            repeat: true,
            cooldown_ms: 0,
            start_ms: None,
            end_ms: None,
        }
    }

    const ALL: u8 = FENCE_ENTER | FENCE_LEAVE | FENCE_STAY;
    const P: (f64, f64) = (1.0, 2.0);

    #[test]
    fn entering_and_leaving_fire_and_a_report_that_changes_nothing_is_none() {
        let r = rules(ALL);
        let out = Track::default();
        assert_eq!(on_report(&r, &out, false, 5, P), None);
        let (inside, fired) = on_report(&r, &out, true, 1000, P).unwrap();
        assert_eq!(fired, Some(Action::Enter));
        assert_eq!(
            (inside.entered_ms, inside.stay_due_ms),
            (1000, Some(61_000))
        );
        assert_eq!(on_report(&r, &inside, true, 2000, (9.0, 9.0)), None);
        let (left, fired) = on_report(&r, &inside, false, 3000, P).unwrap();
        assert_eq!(
            (fired, left.stay_due_ms, left.inside),
            (Some(Action::Leave), None, false)
        );
    }

    #[test]
    fn actions_not_in_events_change_the_standing_but_do_not_fire() {
        let r = rules(FENCE_LEAVE);
        let (inside, fired) = on_report(&r, &Track::default(), true, 1000, P).unwrap();
        assert_eq!(
            (fired, inside.inside, inside.stay_due_ms),
            (None, true, None)
        );
        assert_eq!(
            on_report(&r, &inside, false, 2000, P).unwrap().1,
            Some(Action::Leave)
        );
    }

    #[test]
    fn without_repeat_an_action_fires_once_ever() {
        let r = Rules {
            repeat: false,
            ..rules(FENCE_ENTER | FENCE_LEAVE)
        };
        let (t, f) = on_report(&r, &Track::default(), true, 1, P).unwrap();
        assert_eq!(f, Some(Action::Enter));
        let (t, _) = on_report(&r, &t, false, 2, P).unwrap();
        let (t, f) = on_report(&r, &t, true, 3, P).unwrap();
        assert_eq!((f, t.inside), (None, true));
    }

    #[test]
    fn cooldown_holds_the_same_action_back_for_its_time() {
        let r = Rules {
            cooldown_ms: 10_000,
            ..rules(FENCE_ENTER | FENCE_LEAVE)
        };
        let (t, f) = on_report(&r, &Track::default(), true, 1_000, P).unwrap();
        assert_eq!(f, Some(Action::Enter));
        let (t, f) = on_report(&r, &t, false, 2_000, P).unwrap();
        assert_eq!(f, Some(Action::Leave));
        let (t, f) = on_report(&r, &t, true, 10_999, P).unwrap();
        assert_eq!(f, None, "9,999 ms after the last enter");
        let (t, f) = on_report(&r, &t, false, 11_000, P).unwrap();
        assert_eq!(f, None, "9,000 ms after the last leave");
        let (_, f) = on_report(&r, &t, true, 11_000, P).unwrap();
        assert_eq!(f, Some(Action::Enter), "10,000 ms after the last enter");
    }

    #[test]
    fn the_active_window_bounds_firing_at_both_ends() {
        let r = Rules {
            start_ms: Some(100),
            end_ms: Some(200),
            ..rules(FENCE_ENTER)
        };
        assert_eq!(
            on_report(&r, &Track::default(), true, 99, P).unwrap().1,
            None
        );
        assert_eq!(
            on_report(&r, &Track::default(), true, 100, P).unwrap().1,
            Some(Action::Enter)
        );
        assert_eq!(
            on_report(&r, &Track::default(), true, 200, P).unwrap().1,
            Some(Action::Enter)
        );
        assert_eq!(
            on_report(&r, &Track::default(), true, 201, P).unwrap().1,
            None
        );
    }

    #[test]
    fn standings_keep_only_what_the_rules_need_and_judge_fences_left_behind() {
        let r = rules(FENCE_ENTER | FENCE_LEAVE);
        let once = Rules { repeat: false, ..r };
        let mut s = Standings::default();
        let mut out = Vec::new();
        s.judge(
            &[1, 2],
            |slot| Some(if slot == 2 { once } else { r }),
            10,
            P,
            &mut out,
        );
        let fired: Vec<_> = out.iter().map(|j| (j.slot, j.fired)).collect();
        assert_eq!(fired, [(1, Some(Action::Enter)), (2, Some(Action::Enter))]);
        assert_eq!(s.len(), 2);
        out.clear();
        // Somewhere else: both left; only the fence that fires once remembers the device.
        s.judge(
            &[],
            |slot| Some(if slot == 2 { once } else { r }),
            20,
            P,
            &mut out,
        );
        let fired: Vec<_> = out
            .iter()
            .map(|j| (j.slot, j.track.inside, j.fired))
            .collect();
        assert_eq!(fired.len(), 2);
        assert!(fired.contains(&(1, false, Some(Action::Leave))));
        assert!(fired.contains(&(2, false, Some(Action::Leave))));
        assert_eq!(s.len(), 1);
        out.clear();
        // A fence that does not watch the device (None) is left as it was.
        s.judge(&[2], |_| None, 30, P, &mut out);
        assert!(out.is_empty());
        s.judge(&[2], |_| Some(once), 40, P, &mut out);
        assert_eq!(
            (out[0].track.inside, out[0].fired),
            (true, None),
            "repeat: false"
        );
    }

    #[test]
    fn a_stay_fires_when_due_once_and_only_while_watched_and_inside() {
        let r = rules(ALL);
        let (t, _) = on_report(&r, &Track::default(), true, 1_000, P).unwrap();
        assert_eq!(
            on_stay_due(Some(&r), true, &t, 60_999),
            StayDue::Later(61_000)
        );
        assert_eq!(on_stay_due(Some(&r), true, &t, 61_000), StayDue::Fire);
        assert_eq!(on_stay_due(Some(&r), false, &t, 61_000), StayDue::Drop);
        assert_eq!(on_stay_due(None, true, &t, 61_000), StayDue::Drop);
        assert_eq!(
            on_stay_due(Some(&rules(FENCE_ENTER)), true, &t, 61_000),
            StayDue::Drop
        );
        let once = Rules { repeat: false, ..r };
        let mut fired = t;
        fired.fire(Action::Stay, 61_000);
        assert_eq!(
            on_stay_due(Some(&once), true, &fired, 200_000),
            StayDue::Drop
        );
    }
}
