//! The seam to vendor channels: which devices a push reaches through their vendor's push
//! service instead of (or before) Pigeon's own connection, and what the engine records when
//! a vendor took it, failed, or said a token is dead. The engine knows tokens and policy; the router behind
//! [`OfflineRouter`] knows credentials and wire formats.

use crate::app::{AppState, VendorFailures};
use crate::events::{PushStage, Stage};
use crate::live::LivePush;
use crate::{Engine, EngineError};
use pigeon_core::{ChannelStrategy, FcmChoice, Ordinal, Platform, Push};
use roaring::RoaringBitmap;
use serde_json::Value;
use std::sync::Arc;

/// A device a push may reach through a vendor.
#[derive(Debug, Clone, PartialEq)]
pub struct VendorTarget {
    pub ordinal: Ordinal,
    pub registration_id: String,
    pub platform: Platform,
    /// `apns`, `fcm`, `huawei`, `xiaomi`, ..., `webpush`.
    pub vendor: &'static str,
    /// The device's token for that vendor (a Web Push subscription object for `webpush`).
    pub token: Value,
    /// How the push goes to it.
    pub route: Route,
}

/// How a push reaches a device with a vendor token (the push's channel strategy for that
/// vendor, or the platform's default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Pigeon's connection if the device is connected, its vendor if not (the default for
    /// Android, HarmonyOS and web).
    WhenOffline,
    /// Its vendor, connected or not; Pigeon's connection takes over if the vendor fails
    /// (the default of iOS notifications, which go through APNs).
    VendorFirst,
    /// Its vendor only: if the vendor fails the device does not get it.
    VendorOnly,
}

impl Route {
    /// Whether Pigeon's connection stays off the device while the vendor carries it.
    pub fn holds(self) -> bool {
        self != Route::WhenOffline
    }
}

/// Where pushes go for devices Pigeon's own connection does not (or may not) reach.
pub trait OfflineRouter: Send + Sync {
    /// The vendors this app can send through now (it has their credentials).
    fn vendors_of(&self, app_key: &str) -> Vec<&'static str>;
    /// Takes a push for these devices. Must not block: a router that cannot take more
    /// refuses, and the devices fall back to Pigeon's connection.
    fn route(&self, app: Arc<AppState>, push: Arc<LivePush>, targets: Vec<VendorTarget>) -> bool;
    /// The push was recalled: asks the vendors that can take a notification back to do so
    /// on these devices (those it was sent to). Must not block.
    fn revoke(&self, app: Arc<AppState>, push: Arc<LivePush>, targets: Vec<VendorTarget>);
}

/// Phone makers' own services, most preferred first (a device has one maker's).
const MAKERS: [&str; 6] = ["huawei", "honor", "xiaomi", "oppo", "vivo", "meizu"];

/// `PushPlatform` of a vendor (callbacks.md).
pub fn channel_code(vendor: &str) -> u8 {
    match vendor {
        "apns" => 1,
        "xiaomi" => 2,
        "huawei" => 3,
        "fcm" => 4,
        "meizu" => 5,
        "oppo" => 6,
        "vivo" => 7,
        "honor" => 8,
        "webpush" => 9,
        _ => 0,
    }
}

/// The route a channel strategy gives a vendor; `None`: Pigeon's connection only.
fn route_of(strategy: ChannelStrategy) -> Option<Route> {
    match strategy {
        ChannelStrategy::OwnOnly => None,
        ChannelStrategy::OwnFirst => Some(Route::WhenOffline),
        ChannelStrategy::VendorFirst => Some(Route::VendorFirst),
        ChannelStrategy::VendorOnly => Some(Route::VendorOnly),
    }
}

/// The strategy a push gives the vendor channel `key`: its own, else the push's, else
/// `default`.
fn strategy_of(push: &Push, key: &str, default: ChannelStrategy) -> ChannelStrategy {
    push.policy
        .vendors
        .get(key)
        .and_then(|v| v.strategy)
        .or(push.policy.strategy)
        .unwrap_or(default)
}

/// The vendor and route a push takes to a device on `platform` holding tokens of
/// `has_token`, among the vendors `usable` now; `None`: Pigeon's connection only.
///
/// By default iOS notifications go through APNs even to connected devices, unless the push
/// also carries a pass-through message (which only Pigeon's connection delivers, with the
/// notification in the same frame); every other platform gets its vendor when offline.
/// Android prefers the phone maker's service over FCM; a device with both follows the
/// maker's FCM choice. HarmonyOS devices follow the `hmos` channel's strategy.
pub fn route_for(
    push: &Push,
    platform: Platform,
    usable: &[&'static str],
    has_token: impl Fn(&str) -> bool,
) -> Option<(&'static str, Route)> {
    use ChannelStrategy::*;
    let ok = |v: &str| usable.contains(&v) && has_token(v);
    let via = |vendor: &'static str, key: &str, default| {
        route_of(strategy_of(push, key, default)).map(|r| (vendor, r))
    };
    match platform {
        Platform::Ios if ok("apns") => {
            let default = if push.content.message.is_some() {
                OwnFirst
            } else {
                VendorFirst
            };
            via("apns", "apns", default)
        }
        Platform::Web if ok("webpush") => via("webpush", "webpush", OwnFirst),
        Platform::Hmos if ok("huawei") => via("huawei", "hmos", OwnFirst),
        Platform::Android => {
            let maker = MAKERS.iter().copied().find(|v| ok(v));
            match (maker, ok("fcm")) {
                (Some(maker), true) => {
                    let choice = push.policy.vendors.get(maker).and_then(|v| v.with_fcm);
                    match choice {
                        Some(FcmChoice::Fcm(s)) => route_of(s).map(|r| ("fcm", r)),
                        Some(FcmChoice::Maker(s)) => route_of(s).map(|r| (maker, r)),
                        None => via(maker, maker, OwnFirst),
                    }
                }
                (Some(maker), false) => via(maker, maker, OwnFirst),
                (None, true) => via("fcm", "fcm", OwnFirst),
                (None, false) => None,
            }
        }
        _ => None,
    }
}

impl AppState {
    /// Records what a vendor said of one of a push's devices, for its report at expiry.
    fn note_vendor_failure(&self, push: &LivePush, note: impl FnOnce(&mut VendorFailures)) {
        let mut all = self.vendor_failures.lock();
        let failures = all.entry(push.msg_id()).or_insert_with(|| VendorFailures {
            expires_ms: push.expires_ms(),
            ..Default::default()
        });
        note(failures);
    }

    /// Of `ordinals` (callers narrow them to devices with vendor tokens first), the devices a
    /// push goes to through a vendor in `usable`, each with its vendor and route; devices
    /// that are online only where the route holds them.
    pub(crate) fn vendor_targets(
        &self,
        ordinals: &RoaringBitmap,
        online: &RoaringBitmap,
        usable: &[&'static str],
        push: &Push,
    ) -> Vec<VendorTarget> {
        let devices = self.devices.read();
        let mut out = Vec::new();
        for ordinal in ordinals {
            let Some(record) = devices.record(ordinal) else {
                continue;
            };
            if push.vendor_notification_for(record.platform).is_none() {
                continue;
            }
            let chosen = route_for(push, record.platform, usable, |v| {
                record.push_tokens.contains_key(v)
            });
            let Some((vendor, route)) = chosen else {
                continue;
            };
            if !route.holds() && online.contains(ordinal) {
                continue;
            }
            out.push(VendorTarget {
                ordinal,
                registration_id: record.registration_id.clone(),
                platform: record.platform,
                vendor,
                token: record.push_tokens[vendor].clone(),
                route,
            });
        }
        out
    }
}

impl Engine {
    /// The devices a just-accepted push goes to through their vendors: offline ones with a
    /// usable vendor token, and connected ones whose route says vendor first. Those are held
    /// off Pigeon's connection before the push is offered to it. Notifications only, and
    /// not paced pushes (the pace applies to Pigeon's own connection).
    pub(crate) fn plan_vendors(&self, app: &AppState, live: &LivePush) -> Vec<VendorTarget> {
        let Some(router) = self.router.get() else {
            return Vec::new();
        };
        if !live.push.has_vendor_content() || live.is_paced() {
            return Vec::new();
        }
        // Most pushes of most apps: no target has a vendor token.
        let candidates = &live.audience & &app.devices.read().with_vendor_tokens;
        if candidates.is_empty() {
            return Vec::new();
        }
        let mut usable = router.vendors_of(&app.app_key);
        // Web Push needs no credentials of the app's: its VAPID key is the app's own.
        usable.push("webpush");
        let mut online = &candidates & &app.presence.lock().online;
        if self.cluster().is_some() {
            online |= &candidates & &app.online_elsewhere();
        }
        let targets = app.vendor_targets(&candidates, &online, &usable, &live.push);
        let held: RoaringBitmap = targets
            .iter()
            .filter(|t| t.route.holds())
            .map(|t| t.ordinal)
            .collect();
        live.hold(&held);
        targets
    }

    /// Hands the planned devices of a push to the router. If it cannot take them, the
    /// devices it held fall back to Pigeon's connection.
    pub(crate) fn route_to_vendors(
        &self,
        app: &AppState,
        live: &Arc<LivePush>,
        targets: Vec<VendorTarget>,
    ) {
        let (Some(router), false) = (self.router.get(), targets.is_empty()) else {
            return;
        };
        let Some(shared) = self.apps.read().get(&app.app_key).cloned() else {
            return;
        };
        let held: Vec<Ordinal> = targets
            .iter()
            .filter(|t| t.route.holds())
            .map(|t| t.ordinal)
            .collect();
        let n = targets.len();
        if !router.route(shared, live.clone(), targets) {
            tracing::warn!(
                msg_id = live.msg_id(),
                devices = n,
                "vendor channels are full; those devices wait for Pigeon's connection"
            );
            for ordinal in held {
                self.vendor_failed(app, live, ordinal, Route::VendorFirst);
            }
        }
    }

    /// A recalled push: the devices it was sent to that a vendor may have carried it to
    /// are handed to the router, which asks the vendors that can to take it back.
    pub(crate) fn revoke_at_vendors(
        &self,
        app: &AppState,
        push: &Arc<LivePush>,
        sent: &RoaringBitmap,
    ) {
        let Some(router) = self.router.get() else {
            return;
        };
        let candidates = sent & &app.devices.read().with_vendor_tokens;
        if candidates.is_empty() {
            return;
        }
        let usable = router.vendors_of(&app.app_key);
        let targets = app.vendor_targets(&candidates, &RoaringBitmap::new(), &usable, &push.push);
        if targets.is_empty() {
            return;
        }
        if let Some(shared) = self.apps.read().get(&app.app_key).cloned() {
            router.revoke(shared, push.clone(), targets);
        }
    }

    /// A vendor refused a push for a device (or could not be asked): the reason is kept, to
    /// be reported with ErrCode 4 if the device has not got the push when it expires, and
    /// the device falls back to Pigeon's connection if its route allows.
    pub fn vendor_refused(
        &self,
        app: &AppState,
        push: &Arc<LivePush>,
        target: &VendorTarget,
        reason: &str,
    ) {
        app.note_vendor_failure(push, |f| {
            f.refuse(
                target.ordinal,
                format!("{} refused the push: {reason}", target.vendor),
            )
        });
        self.vendor_failed(app, push, target.ordinal, target.route);
    }

    /// A vendor did not take a push for a device. If the push was held off Pigeon's
    /// connection for it and its route allows, the connection takes over (at once if the
    /// device is connected).
    pub fn vendor_failed(
        &self,
        app: &AppState,
        push: &Arc<LivePush>,
        ordinal: Ordinal,
        route: Route,
    ) {
        if route == Route::VendorFirst && push.release(ordinal) {
            let mut one = RoaringBitmap::new();
            one.insert(ordinal);
            app.offer(push, &one);
        }
    }

    /// Sets where pushes go for offline devices with vendor tokens.
    pub fn set_offline_router(&self, router: Arc<dyn OfflineRouter>) {
        let _ = self.router.set(router);
    }

    /// A vendor took the push for this device: it counts as sent through that vendor
    /// (`Push.Event` stage 1 with the vendor's `PushPlatform`) and as delivered, so Pigeon's
    /// connection does not send it again.
    pub fn vendor_sent(
        &self,
        app: &AppState,
        push: &Arc<LivePush>,
        ordinal: Ordinal,
        vendor: &str,
    ) {
        let (newly_sent, first) = push.mark_sent(ordinal);
        if first {
            app.dirty.lock().push(push.clone());
        }
        if newly_sent {
            push.mark_vendor_sent(ordinal, vendor);
        }
        if let Some(channel) = pigeon_telemetry::Channel::vendor(vendor) {
            pigeon_telemetry::deliveries(
                channel,
                pigeon_telemetry::Stage::Sent,
                u64::from(newly_sent),
            );
        }
        if newly_sent && app.reports_stages(&push.push) {
            app.push_events.lock().push(PushStage {
                msg_id: push.msg_id(),
                sent_ms: push.push.sent_ms,
                ordinal,
                stage: Stage::Sent,
                channel: channel_code(vendor),
            });
        }
        let (delivered, first) = push.mark_delivered(ordinal);
        if first {
            app.dirty.lock().push(push.clone());
        }
        if delivered && crate::app::is_narrow(push) {
            app.live.write().delivered(push.msg_id(), ordinal);
        }
    }

    /// A vendor says a device's token is dead while sending it `push`: the token is removed
    /// from the device (not tried through that vendor again), and the device waits for
    /// Pigeon's connection; if it has not got the push when it expires, it is reported
    /// `Push.Undelivered` ErrCode 3.
    pub async fn drop_vendor_token(
        &self,
        app: &AppState,
        push: &LivePush,
        ordinal: Ordinal,
        vendor: &str,
    ) -> Result<(), EngineError> {
        app.note_vendor_failure(push, |f| {
            f.dead.insert(ordinal);
        });
        self.edit_devices(app, &[ordinal], |record, _| {
            Ok(record.push_tokens.remove(vendor).is_some())
        })
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pigeon_core::{Audience, Notification, PlatformSet, VendorPolicy};

    fn push(message: bool, vendors: &[(&str, VendorPolicy)]) -> Push {
        let mut p = Push::new(PlatformSet::all(), Audience::All);
        p.msg_id = 1;
        p.sent_ms = 1_000;
        for platform in Platform::ALL {
            p.content.notifications.insert(
                platform,
                Notification {
                    body: "hi".into(),
                    ..Default::default()
                },
            );
        }
        p.content.message = message.then(Default::default);
        for (key, v) in vendors {
            p.policy.vendors.insert(key.to_string(), v.clone());
        }
        p
    }

    fn strategy(s: ChannelStrategy) -> VendorPolicy {
        VendorPolicy {
            strategy: Some(s),
            ..Default::default()
        }
    }

    const ALL: &[&str] = &[
        "apns", "fcm", "huawei", "honor", "xiaomi", "oppo", "vivo", "meizu", "webpush",
    ];

    fn route(p: &Push, platform: Platform, tokens: &[&str]) -> Option<(&'static str, Route)> {
        route_for(p, platform, ALL, |v| tokens.contains(&v))
    }

    #[test]
    fn each_platform_and_distribution_picks_its_vendor_and_route() {
        use ChannelStrategy::{OwnFirst, OwnOnly};
        use Route::*;
        let plain = push(false, &[]);
        assert_eq!(
            route(&plain, Platform::Ios, &["apns"]),
            Some(("apns", VendorFirst))
        );
        assert_eq!(
            route(&push(true, &[]), Platform::Ios, &["apns"]),
            Some(("apns", WhenOffline))
        );
        assert_eq!(
            route(&plain, Platform::Android, &["fcm", "xiaomi"]),
            Some(("xiaomi", WhenOffline))
        );
        assert_eq!(route(&plain, Platform::Android, &[]), None);
        assert_eq!(
            route(&plain, Platform::Web, &["webpush"]),
            Some(("webpush", WhenOffline))
        );
        let hmos = push(false, &[("hmos", strategy(ChannelStrategy::VendorOnly))]);
        assert_eq!(
            route(&hmos, Platform::Hmos, &["huawei"]),
            Some(("huawei", VendorOnly))
        );
        let xiaomi = push(
            false,
            &[
                (
                    "xiaomi",
                    VendorPolicy {
                        strategy: Some(ChannelStrategy::VendorFirst),
                        with_fcm: Some(FcmChoice::Fcm(OwnFirst)),
                        ..Default::default()
                    },
                ),
                ("fcm", strategy(OwnOnly)),
            ],
        );
        assert_eq!(
            route(&xiaomi, Platform::Android, &["xiaomi"]),
            Some(("xiaomi", VendorFirst))
        );
        assert_eq!(
            route(&xiaomi, Platform::Android, &["xiaomi", "fcm"]),
            Some(("fcm", WhenOffline))
        );
        assert_eq!(route(&xiaomi, Platform::Android, &["fcm"]), None);
        // A push-wide strategy applies to every vendor without one of its own.
        let mut vendor_only = push(false, &[]);
        vendor_only.policy.strategy = Some(ChannelStrategy::VendorOnly);
        assert_eq!(
            route(&vendor_only, Platform::Android, &["oppo"]),
            Some(("oppo", Route::VendorOnly))
        );
        vendor_only.policy.strategy = Some(OwnOnly);
        assert_eq!(route(&vendor_only, Platform::Ios, &["apns"]), None);
        // A vendor without the app's credentials is not usable, whatever the device holds.
        assert_eq!(
            route_for(&plain, Platform::Android, &["fcm"], |v| v == "oppo"),
            None
        );
    }
}
