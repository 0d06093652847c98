//! The seam to vendor channels: which devices a push may reach through their vendor's push
//! service instead of Pigeon's own connection, and what the engine records when a vendor
//! took it or said a token is dead. The engine knows tokens and policy; the router behind
//! [`OfflineRouter`] knows credentials and wire formats.

use crate::app::AppState;
use crate::events::{PushStage, Stage};
use crate::live::LivePush;
use crate::{Engine, EngineError};
use pigeon_core::{Ordinal, Platform, Push};
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
}

/// Where pushes go for devices Pigeon's own connection does not reach when they are sent.
pub trait OfflineRouter: Send + Sync {
    /// The vendors this app can send through now (it has their credentials).
    fn vendors_of(&self, app_key: &str) -> Vec<&'static str>;
    /// Takes a push for these devices. Must not block: a router that cannot take more
    /// refuses, and the devices keep waiting for Pigeon's connection.
    fn route(&self, app: Arc<AppState>, push: Arc<LivePush>, targets: Vec<VendorTarget>) -> bool;
}

/// The vendors a device on `platform` can be reached through, most preferred first: the
/// phone maker's own service, then FCM.
fn vendors_for(platform: Platform) -> &'static [&'static str] {
    match platform {
        Platform::Ios => &["apns"],
        Platform::Android => &["huawei", "honor", "xiaomi", "oppo", "vivo", "meizu", "fcm"],
        Platform::Hmos => &["huawei"],
        Platform::Web => &["webpush"],
        _ => &[],
    }
}

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

/// Whether the push's `options.third_party_channel.<vendor>.distribution` keeps it off
/// that vendor (`jpush`: Pigeon's own connection only).
fn kept_off(push: &Push, vendor: &str) -> bool {
    let tpc = push.options.other.get("third_party_channel");
    tpc.and_then(|t| t.get(vendor))
        .and_then(|v| v.get("distribution"))
        .and_then(Value::as_str)
        == Some("jpush")
}

impl AppState {
    /// Of `ordinals`, the devices that have a token of a vendor in `usable` that their
    /// platform can use, each with the first such vendor.
    pub(crate) fn vendor_targets(
        &self,
        ordinals: &RoaringBitmap,
        usable: &[&'static str],
        push: &Push,
    ) -> Vec<VendorTarget> {
        let devices = self.devices.read();
        let mut out = Vec::new();
        for ordinal in &(ordinals & &devices.with_vendor_tokens) {
            let Some(record) = devices.record(ordinal) else {
                continue;
            };
            let chosen = vendors_for(record.platform).iter().find(|v| {
                usable.contains(v) && !kept_off(push, v) && record.push_tokens.contains_key(**v)
            });
            if let Some(vendor) = chosen {
                out.push(VendorTarget {
                    ordinal,
                    registration_id: record.registration_id.clone(),
                    platform: record.platform,
                    vendor,
                    token: record.push_tokens[*vendor].clone(),
                });
            }
        }
        out
    }
}

impl Engine {
    /// Offers a just-accepted push to the router for its targets that are offline and have a
    /// usable vendor token. Notifications only, and not paced pushes (the pace applies to
    /// Pigeon's own connection).
    pub(crate) fn offer_to_vendors(&self, app: &AppState, live: &Arc<LivePush>) {
        let Some(router) = self.router.get() else {
            return;
        };
        if live.push.notification.is_none() || live.is_paced() {
            return;
        }
        // Most pushes of most apps: no target has a vendor token.
        if app
            .devices
            .read()
            .with_vendor_tokens
            .is_disjoint(&live.audience)
        {
            return;
        }
        let mut usable = router.vendors_of(&app.app_key);
        // Web Push needs no credentials of the app's: its VAPID key is the app's own.
        usable.push("webpush");
        let offline = {
            let presence = app.presence.lock();
            &live.audience - &presence.online
        };
        let targets = app.vendor_targets(&offline, &usable, &live.push);
        if targets.is_empty() {
            return;
        }
        let Some(app) = self.apps.read().get(&app.app_key).cloned() else {
            return;
        };
        let n = targets.len();
        if !router.route(app, live.clone(), targets) {
            tracing::warn!(
                msg_id = live.msg_id(),
                devices = n,
                "vendor channels are full; those devices wait for Pigeon's connection"
            );
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
        if newly_sent && app.reports_stages(&push.push) {
            app.push_events.lock().push(PushStage {
                msg_id: push.msg_id(),
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
        app.dead_tokens
            .lock()
            .entry(push.msg_id())
            .or_insert_with(|| (push.expires_ms(), RoaringBitmap::new()))
            .1
            .insert(ordinal);
        self.edit_devices(app, &[ordinal], |record, _| {
            Ok(record.push_tokens.remove(vendor).is_some())
        })
        .await?;
        Ok(())
    }
}
