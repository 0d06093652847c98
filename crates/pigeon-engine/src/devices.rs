//! What the Device API changes and asks: tags, aliases and mobile numbers of devices, and
//! who is online. Every change is durable before it is applied in memory, and applied to the
//! audience index at once, so the next push sees it.

use crate::app::AppState;
use crate::{now_ms, Engine, EngineError};
use pigeon_core::FastMap as HashMap;
use pigeon_core::{Ordinal, PlatformSet};
use pigeon_store::DeviceRecord;
use roaring::RoaringBitmap;
use serde_json::Value;

/// Most devices one alias may be bound to.
pub const MAX_DEVICES_PER_ALIAS: u64 = 10;
/// Most tags one device may carry.
pub const MAX_TAGS_PER_DEVICE: usize = 1000;

/// A change to a device's tags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TagEdit {
    #[default]
    Clear,
    Change {
        add: Vec<String>,
        remove: Vec<String>,
    },
}

/// A change to one device; `None` leaves that part as it is, `Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct DeviceEdit {
    pub tags: Option<TagEdit>,
    pub alias: Option<Option<String>>,
    pub mobile: Option<Option<String>>,
    /// Where the device is, for audiences by region (a Pigeon extension).
    pub region: Option<Option<String>>,
}

/// Whether a device is connected, or when it last was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    Online,
    /// Offline; the time it was last connected, if it ever was.
    Offline(Option<u64>),
}

impl Engine {
    /// [`Engine::find_device`], reading the cluster's change feed first if the device is
    /// not known here yet (it registered through another node a moment ago).
    pub async fn find_device_caught_up(
        &self,
        app: &AppState,
        registration_id: &str,
    ) -> Option<DeviceRecord> {
        if let Some(found) = self.find_device(app, registration_id) {
            return Some(found);
        }
        self.cluster()?;
        if let Err(e) = self.learn_device(registration_id).await {
            tracing::warn!(error = %e, "could not read a device from the store");
        }
        self.find_device(app, registration_id)
    }

    /// A device of this app by registration id.
    pub fn find_device(&self, app: &AppState, registration_id: &str) -> Option<DeviceRecord> {
        let devices = app.devices.read();
        let ordinal = devices.ordinal_of(registration_id)?;
        devices.record(ordinal).cloned()
    }

    /// The devices of an app with these registration ids, and the ids that are none.
    pub fn ordinals_of(
        &self,
        app: &AppState,
        registration_ids: &[String],
    ) -> (Vec<Ordinal>, Vec<String>) {
        let devices = app.devices.read();
        let mut found = Vec::new();
        let mut unknown = Vec::new();
        for rid in registration_ids {
            match devices.ordinal_of(rid) {
                Some(o) => found.push(o),
                None => unknown.push(rid.clone()),
            }
        }
        (found, unknown)
    }

    /// The devices of an app with these APNs device tokens (hex, any case), and the tokens
    /// no device has.
    pub fn ordinals_by_apns_token(
        &self,
        app: &AppState,
        tokens: &[String],
    ) -> (Vec<Ordinal>, Vec<String>) {
        let wanted: HashMap<String, usize> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_ascii_lowercase(), i))
            .collect();
        let mut seen = vec![false; tokens.len()];
        let mut found = Vec::new();
        let devices = app.devices.read();
        for record in devices.records.iter().flatten() {
            let token = record.push_tokens.get("apns").and_then(Value::as_str);
            if let Some(&i) = token.and_then(|t| wanted.get(&t.to_ascii_lowercase())) {
                seen[i] = true;
                found.push(record.ordinal);
            }
        }
        let unknown = tokens
            .iter()
            .zip(seen)
            .filter(|(_, seen)| !seen)
            .map(|(t, _)| t.clone())
            .collect();
        (found, unknown)
    }

    /// Applies `change` to each of `ordinals`, stores the devices it changed (all or none),
    /// then makes them current. Edits of one app are serialized, so two concurrent edits of
    /// one device cannot lose each other.
    pub(crate) async fn edit_devices(
        &self,
        app: &AppState,
        ordinals: &[Ordinal],
        mut change: impl FnMut(&mut DeviceRecord, &AppState) -> Result<bool, EngineError>,
    ) -> Result<usize, EngineError> {
        let _serial = app.edits.lock().await;
        let mut changed = Vec::new();
        for &ordinal in ordinals {
            let Some(mut record) = app.device(ordinal) else {
                continue;
            };
            if change(&mut record, app)? {
                record.updated_ms = now_ms();
                changed.push(record);
            }
        }
        if changed.is_empty() {
            return Ok(0);
        }
        let n = changed.len();
        self.store.put_devices(changed.clone()).await?;
        {
            let mut devices = app.devices.write();
            for record in changed {
                devices.apply_edit(record, self.next_device_edit());
            }
        }
        self.announce_change();
        Ok(n)
    }

    /// Changes one device's tags, alias and mobile number (Device API `POST /v3/devices/{rid}`).
    pub async fn edit_device(
        &self,
        app: &AppState,
        registration_id: &str,
        edit: DeviceEdit,
    ) -> Result<(), EngineError> {
        let ordinal = app
            .devices
            .read()
            .ordinal_of(registration_id)
            .ok_or(EngineError::UnknownDevice)?;
        self.edit_devices(app, &[ordinal], |record, app| {
            if let Some(tags) = &edit.tags {
                apply_tags(record, tags)?;
            }
            if let Some(alias) = &edit.alias {
                bind_alias(app, record, alias.clone())?;
            }
            if let Some(mobile) = &edit.mobile {
                record.mobile = mobile.clone();
            }
            if let Some(region) = &edit.region {
                record.region = region.clone();
            }
            Ok(true)
        })
        .await?;
        Ok(())
    }

    /// Devices bound to `alias` on `platforms`, oldest first.
    pub fn alias_devices(
        &self,
        app: &AppState,
        alias: &str,
        platforms: PlatformSet,
    ) -> Vec<DeviceRecord> {
        let devices = app.devices.read();
        let members = devices.index.alias_members(alias) & devices.index.on_platforms(platforms);
        members
            .iter()
            .filter_map(|o| devices.record(o).cloned())
            .collect()
    }

    /// Unbinds `alias` from every device on `platforms`. Returns how many it was bound to.
    pub async fn delete_alias(
        &self,
        app: &AppState,
        alias: &str,
        platforms: PlatformSet,
    ) -> Result<usize, EngineError> {
        let members: Vec<Ordinal> = {
            let devices = app.devices.read();
            (devices.index.alias_members(alias) & devices.index.on_platforms(platforms))
                .iter()
                .collect()
        };
        self.edit_devices(app, &members, |record, _| {
            let bound = record.alias.as_deref() == Some(alias);
            if bound {
                record.alias = None;
            }
            Ok(bound)
        })
        .await
    }

    /// Unbinds `alias` from some devices. Returns the registration ids that are not devices
    /// of this app bound to it.
    pub async fn unbind_alias(
        &self,
        app: &AppState,
        alias: &str,
        registration_ids: &[String],
    ) -> Result<Vec<String>, EngineError> {
        let (ordinals, mut illegal) = self.ordinals_of(app, registration_ids);
        let mut not_bound = Vec::new();
        self.edit_devices(app, &ordinals, |record, _| {
            let bound = record.alias.as_deref() == Some(alias);
            if bound {
                record.alias = None;
            } else {
                not_bound.push(record.registration_id.clone());
            }
            Ok(bound)
        })
        .await?;
        illegal.extend(not_bound);
        Ok(illegal)
    }

    /// The app's tags that at least one device on `platforms` carries, sorted.
    pub fn tag_names(&self, app: &AppState, platforms: PlatformSet) -> Vec<String> {
        let devices = app.devices.read();
        let on = devices.index.on_platforms(platforms);
        let mut tags: Vec<String> = devices.index.tags_among(&on).map(str::to_string).collect();
        tags.sort();
        tags
    }

    /// Whether the device carries `tag`; `None` if it is not a device of this app.
    pub fn device_has_tag(&self, app: &AppState, tag: &str, registration_id: &str) -> Option<bool> {
        let devices = app.devices.read();
        let ordinal = devices.ordinal_of(registration_id)?;
        Some(devices.index.tag_members(tag).contains(ordinal))
    }

    /// Adds a tag to some devices and removes it from others. Returns the registration ids
    /// that are not devices of this app, and those a device's tag limit refused.
    pub async fn edit_tag(
        &self,
        app: &AppState,
        tag: &str,
        add: &[String],
        remove: &[String],
    ) -> Result<Vec<String>, EngineError> {
        let (adding, mut illegal) = self.ordinals_of(app, add);
        let (removing, unknown) = self.ordinals_of(app, remove);
        illegal.extend(unknown);
        let adding: RoaringBitmap = adding.into_iter().collect();
        let mut all: Vec<Ordinal> = adding.iter().collect();
        all.extend(removing.iter().filter(|o| !adding.contains(**o)));
        let mut full = Vec::new();
        self.edit_devices(app, &all, |record, _| {
            let has = record.tags.iter().any(|t| t == tag);
            if adding.contains(record.ordinal) {
                if has {
                    return Ok(false);
                }
                if record.tags.len() >= MAX_TAGS_PER_DEVICE {
                    full.push(record.registration_id.clone());
                    return Ok(false);
                }
                record.tags.push(tag.to_string());
                Ok(true)
            } else {
                record.tags.retain(|t| t != tag);
                Ok(has)
            }
        })
        .await?;
        illegal.extend(full);
        Ok(illegal)
    }

    /// Removes `tag` from every device on `platforms`. Returns how many carried it.
    pub async fn delete_tag(
        &self,
        app: &AppState,
        tag: &str,
        platforms: PlatformSet,
    ) -> Result<usize, EngineError> {
        let members: Vec<Ordinal> = {
            let devices = app.devices.read();
            (devices.index.tag_members(tag) & devices.index.on_platforms(platforms))
                .iter()
                .collect()
        };
        self.edit_devices(app, &members, |record, _| {
            let before = record.tags.len();
            record.tags.retain(|t| t != tag);
            Ok(record.tags.len() != before)
        })
        .await
    }

    /// How many devices of the app an audience reaches on `platforms` (blocked devices left
    /// out).
    pub fn audience_size(
        &self,
        app: &AppState,
        audience: &pigeon_core::Audience,
        platforms: PlatformSet,
    ) -> u64 {
        let reached = app.devices.read().resolve(audience, platforms);
        reached.difference_len(&app.blocked.read())
    }

    /// Blocks or unblocks devices (Getui's black list), durably: pushes the app makes while a
    /// device is blocked leave it out, through every door (pushes accepted before still
    /// reach it).
    pub async fn set_blocked(
        &self,
        app: &AppState,
        ordinals: &[Ordinal],
        blocked: bool,
    ) -> Result<(), EngineError> {
        let _serial = app.edits.lock().await;
        self.store
            .set_blocked(&app.app_key, ordinals.to_vec(), blocked)
            .await?;
        app.apply_blocked(ordinals, blocked);
        self.announce_blocked(app, ordinals, blocked);
        Ok(())
    }

    /// Stops the SMS fallback of a push of this app: devices it has not reached get no SMS
    /// for it (Getui's `stop_sms`). `Ok(false)` when nothing was still to go; an error when
    /// it is not a push of this app.
    pub async fn stop_sms(&self, app: &AppState, msg_id: u64) -> Result<bool, EngineError> {
        if app.live_push(msg_id).is_none()
            && self.store.load_push(&app.app_key, msg_id).await?.is_none()
        {
            return Err(EngineError::UnknownPush(msg_id));
        }
        Ok(self.store.stop_sms(msg_id).await?)
    }

    /// Devices with `tag`, oldest first, at most `limit`, and how many have it.
    pub fn tag_devices(&self, app: &AppState, tag: &str, limit: usize) -> (Vec<DeviceRecord>, u64) {
        let devices = app.devices.read();
        let members = devices.index.tag_members(tag);
        let found = members
            .iter()
            .take(limit)
            .filter_map(|o| devices.record(o).cloned())
            .collect();
        (found, members.len())
    }

    /// The badge number the server keeps for a device.
    pub fn badge_of(&self, app: &AppState, ordinal: Ordinal) -> u32 {
        app.badges.lock().get(ordinal)
    }

    /// Presence of each registration id; `None` where it is not a device of this app.
    pub async fn device_presence(
        &self,
        app: &AppState,
        registration_ids: &[String],
    ) -> Result<Vec<Option<Presence>>, EngineError> {
        let ordinals: Vec<Option<Ordinal>> = {
            let devices = app.devices.read();
            registration_ids
                .iter()
                .map(|r| devices.ordinal_of(r))
                .collect()
        };
        let mut online: Vec<bool> = {
            let p = app.presence.lock();
            ordinals
                .iter()
                .map(|o| o.is_some_and(|o| p.online.contains(o)))
                .collect()
        };
        // In a cluster, a device not connected here may be connected to another node.
        let not_here: Vec<Ordinal> = ordinals
            .iter()
            .zip(&online)
            .filter_map(|(o, on)| o.filter(|_| !on))
            .collect();
        let elsewhere = self.connected_elsewhere(app, not_here).await?;
        if !elsewhere.is_empty() {
            for (o, on) in ordinals.iter().zip(online.iter_mut()) {
                *on |= o.is_some_and(|o| elsewhere.contains(o));
            }
        }
        let offline: Vec<Ordinal> = ordinals
            .iter()
            .zip(&online)
            .filter_map(|(o, on)| o.filter(|_| !on))
            .collect();
        // Connected devices need no lookup (an answer to every push asks this of its targets).
        let seen: pigeon_core::FastMap<Ordinal, u64> = if offline.is_empty() {
            Default::default()
        } else {
            self.store
                .last_online(&app.app_key, offline)
                .await?
                .into_iter()
                .collect()
        };
        Ok(ordinals
            .iter()
            .zip(online)
            .map(|(o, on)| {
                let o = (*o)?;
                Some(if on {
                    Presence::Online
                } else {
                    Presence::Offline(seen.get(&o).copied())
                })
            })
            .collect())
    }
}

/// Applies a tag change to a record, within the per-device limit.
pub(crate) fn apply_tags(record: &mut DeviceRecord, edit: &TagEdit) -> Result<(), EngineError> {
    match edit {
        TagEdit::Clear => record.tags.clear(),
        TagEdit::Change { add, remove } => {
            record.tags.retain(|t| !remove.contains(t));
            for tag in add {
                if !record.tags.contains(tag) {
                    record.tags.push(tag.clone());
                }
            }
            if record.tags.len() > MAX_TAGS_PER_DEVICE {
                return Err(EngineError::Invalid(format!(
                    "a device can carry at most {MAX_TAGS_PER_DEVICE} tags"
                )));
            }
        }
    }
    Ok(())
}

/// Binds a record to `alias` (or none), refusing an alias already bound to
/// [`MAX_DEVICES_PER_ALIAS`] other devices.
pub(crate) fn bind_alias(
    app: &AppState,
    record: &mut DeviceRecord,
    alias: Option<String>,
) -> Result<(), EngineError> {
    if let Some(a) = &alias {
        if record.alias.as_deref() != Some(a.as_str()) {
            let mut members = app.devices.read().index.alias_members(a);
            members.remove(record.ordinal);
            if members.len() >= MAX_DEVICES_PER_ALIAS {
                return Err(EngineError::AliasFull(a.clone()));
            }
        }
    }
    record.alias = alias;
    Ok(())
}
