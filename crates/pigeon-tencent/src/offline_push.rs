//! `Push.OfflinePush`, Tencent Cloud IM's push callback (seed `001`): the body is
//! `{"Events": [ 1 to 100 event objects ]}`, posted to
//! `<url>?SdkAppid=..&CallbackCommand=Push.OfflinePush&contenttype=json`, and answered with
//! `{"ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": ""}` (the answer Pigeon's own
//! callbacks take too).
//!
//! Each Pigeon event of a push's stage on one device becomes one event object, with the
//! seed's field names, types and numbering:
//!
//! | Tencent | from Pigeon's event |
//! |---|---|
//! | `CallbackCommand` | always `Push.OfflinePush` |
//! | `EventType` | always 1, single chat: every event is about one recipient |
//! | `EventTime` | `EventTime` |
//! | `From_Account` | `""`: a push has no sending user |
//! | `To_Account` | the device's alias (`To_Account`), or its `RegistrationId` when it has none |
//! | `PushPlatform` | `PushPlatform` 0–8 as is (the seed numbers them the same); Web Push (9) and Pigeon's own connection (10) are no vendor of the seed's: 0 |
//! | `PushStage` | `Push.Event`: its `PushStage` (1 sent, 2 delivered, 3 clicked); `Push.Undelivered`: 2, the delivery stage, failed |
//! | `MsgSeq`, `MsgRandom` | the low and the high 32 bits of the push's `msg_id` |
//! | `MsgTime` | `MsgTime`, when the push was accepted |
//! | `MsgKey` | `<MsgSeq>_<MsgRandom>_<MsgTime>`, the form of the seed's example |
//! | `PushID` | the push's `msg_id`, as text |
//! | `ErrCode` | `ErrCode`: 0, or why the push will never reach the device (1 expired, 2 recalled, 3 token rejected, 4 no channel, 5 device deleted) |
//! | `ErrInfo` | `ErrInfo`; `OK` for a success that says nothing, as in the seed's example |
//!
//! `GroupID` is for group chats only (`EventType` 2), so it is never sent.

use serde::Serialize;
use serde_json::{Map, Value};

/// The `CallbackCommand` of every event and of the request's query.
pub const CALLBACK_COMMAND: &str = "Push.OfflinePush";

/// Most events in one request ("the length of the events array ranges from 1 to 100").
pub const MAX_EVENTS: usize = 100;

/// Pigeon's commands whose events have a place in `Push.OfflinePush`: a device's stage of a
/// push, and a push that will never reach a device. The others (`Push.Accepted`, about a
/// push and no recipient; `Device.OnlineStatus`; `Geofence.Event`; `Sms.Result`) have none
/// and are not sent to an endpoint of this format.
pub const COMMANDS: [&str; 2] = ["Push.Event", "Push.Undelivered"];

/// `EventType` of a single chat: the event is about one recipient (`To_Account`).
pub const SINGLE_CHAT: u8 = 1;

/// `PushPlatform` of an unknown vendor.
pub const UNKNOWN_VENDOR: u8 = 0;
/// `PushPlatform`s the seed numbers (0 unknown, 1 APNs, 2 Xiaomi, 3 Huawei, 4 FCM, 5 Meizu,
/// 6 OPPO, 7 vivo, 8 Honor): Pigeon's numbers of the same vendors.
const LAST_VENDOR: u64 = 8;

/// `PushStage`: sending, delivery, click.
pub const STAGE_SENDING: u8 = 1;
pub const STAGE_DELIVERY: u8 = 2;
pub const STAGE_CLICK: u8 = 3;

/// One event object of the seed, its fields in the seed's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    #[serde(rename = "CallbackCommand")]
    pub callback_command: &'static str,
    #[serde(rename = "EventType")]
    pub event_type: u8,
    #[serde(rename = "EventTime")]
    pub event_time: u64,
    #[serde(rename = "From_Account")]
    pub from_account: String,
    #[serde(rename = "To_Account")]
    pub to_account: String,
    #[serde(rename = "PushPlatform")]
    pub push_platform: u8,
    #[serde(rename = "PushStage")]
    pub push_stage: u8,
    #[serde(rename = "MsgKey")]
    pub msg_key: String,
    #[serde(rename = "MsgSeq")]
    pub msg_seq: u32,
    #[serde(rename = "MsgRandom")]
    pub msg_random: u32,
    #[serde(rename = "MsgTime")]
    pub msg_time: u64,
    #[serde(rename = "PushID")]
    pub push_id: String,
    #[serde(rename = "ErrCode")]
    pub err_code: i64,
    #[serde(rename = "ErrInfo")]
    pub err_info: String,
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "Events")]
    events: &'a [Event],
}

/// `MsgSeq` and `MsgRandom` of a push: the low and the high 32 bits of its `msg_id`, so
/// `msg_id = MsgRandom << 32 | MsgSeq`.
pub fn msg_seq_random(msg_id: u64) -> (u32, u32) {
    ((msg_id & 0xffff_ffff) as u32, (msg_id >> 32) as u32)
}

/// The request body of a batch: Pigeon's events (a JSON array of objects, as batched from
/// the outbox) as `{"Events": [..]}` of the seed's event objects, in the same order.
pub fn body(pigeon_events: &str) -> Result<String, String> {
    let events: Vec<Value> = serde_json::from_str(pigeon_events)
        .map_err(|e| format!("the events are not a JSON array: {e}"))?;
    if events.is_empty() || events.len() > MAX_EVENTS {
        return Err(format!(
            "{} events; {CALLBACK_COMMAND} takes 1 to {MAX_EVENTS}",
            events.len()
        ));
    }
    let events = events.iter().map(event).collect::<Result<Vec<_>, _>>()?;
    serde_json::to_string(&Body { events: &events }).map_err(|e| e.to_string())
}

/// The seed's event object for one of Pigeon's events (`Push.Event` or
/// `Push.Undelivered`, callbacks.md §3).
pub fn event(pigeon: &Value) -> Result<Event, String> {
    let fields = pigeon
        .as_object()
        .ok_or_else(|| format!("an event is not a JSON object: {}", excerpt(pigeon)))?;
    let command = text(fields, "CallbackCommand")?;
    let push_stage = match command {
        "Push.Event" => match number(fields, "PushStage")? {
            1 => STAGE_SENDING,
            2 => STAGE_DELIVERY,
            3 => STAGE_CLICK,
            other => return Err(format!("PushStage {other} is not 1, 2 or 3")),
        },
        // Never delivered: the delivery stage, and ErrCode says why.
        "Push.Undelivered" => STAGE_DELIVERY,
        other => return Err(format!("{other} has no place in {CALLBACK_COMMAND}")),
    };
    let msg_id: u64 = text(fields, "MsgId")?
        .parse()
        .map_err(|_| format!("MsgId is not a msg_id: {}", excerpt(pigeon)))?;
    let msg_time = number(fields, "MsgTime")?;
    let alias = text(fields, "To_Account")?;
    let to_account = if alias.is_empty() {
        text(fields, "RegistrationId")?
    } else {
        alias
    };
    let push_platform = match number(fields, "PushPlatform")? {
        p @ 0..=LAST_VENDOR => p as u8,
        _ => UNKNOWN_VENDOR,
    };
    let err_code = fields
        .get("ErrCode")
        .and_then(Value::as_i64)
        .ok_or_else(|| format!("ErrCode is not a number: {}", excerpt(pigeon)))?;
    let err_info = match text(fields, "ErrInfo")? {
        "" if err_code == 0 => "OK",
        info => info,
    };
    let (msg_seq, msg_random) = msg_seq_random(msg_id);
    Ok(Event {
        callback_command: CALLBACK_COMMAND,
        event_type: SINGLE_CHAT,
        event_time: number(fields, "EventTime")?,
        from_account: String::new(),
        to_account: to_account.to_string(),
        push_platform,
        push_stage,
        msg_key: format!("{msg_seq}_{msg_random}_{msg_time}"),
        msg_seq,
        msg_random,
        msg_time,
        push_id: msg_id.to_string(),
        err_code,
        err_info: err_info.to_string(),
    })
}

fn text<'a>(fields: &'a Map<String, Value>, name: &str) -> Result<&'a str, String> {
    fields
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{name} is not a string in {}", excerpt_map(fields)))
}

fn number(fields: &Map<String, Value>, name: &str) -> Result<u64, String> {
    fields
        .get(name)
        .and_then(Value::as_u64)
        .ok_or_else(|| format!("{name} is not a whole number in {}", excerpt_map(fields)))
}

/// At most 200 characters of an event, for an error message.
fn excerpt(v: &Value) -> String {
    v.to_string().chars().take(200).collect()
}

fn excerpt_map(fields: &Map<String, Value>) -> String {
    excerpt(&Value::Object(fields.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The seed's sample request packet as printed, comments and elision included.
    const SEED_SAMPLE: &str = r#"{
    "Events": [ // The length of the events array ranges from 1 to 100
    {
    "CallbackCommand":"Push.OfflinePush",
    "EventType": 1, // Event type, EventType=1 indicates single chat
    "EventTime": 1557481127, // Event timestamp in seconds
    "From_Account": "user1", // Sender
    "To_Account": "user2", // Recipient
    "PushPlatform": 1, // Vendor
    "PushStage": 1, // Push stage
    "MsgKey": "48374_2837546_1557481126", // Unique identifier of the single chat message
    "MsgSeq": 48374, // Sequence number of the message
    "MsgRandom": 2837546, // Random number of the message
    "MsgTime": 1557481126, // Timestamp in seconds indicating when the message is sent
    "PushID": "67120c46_6a4086c0_9bf5fb50_200002d1089b322_2000005d8d46421", // Unique identifier of the push
    "ErrCode": 0, // Push event result
    "ErrInfo": "OK" // Push event result description, may be empty
    },
    {
    "CallbackCommand":"Push.OfflinePush",
    "EventType": 2, // Event type, EventType=2 indicates group chat
    "EventTime": 1557481127, // Event timestamp in seconds
    "From_Account": "user2", // Sender
    "To_Account": "user3", // Recipient
    "PushPlatform": 1, // Vendor
    "PushStage": 1, // Push stage
    "GroupID": "@TGS#12DEVUDHQ", // Group chat ID
    "MsgSeq": 48375, // Sequence number of the message
    "MsgRandom": 2837546, // Random number of the message
    "MsgTime": 1557481126, // Timestamp in seconds indicating when the message is sent
    "PushID": "6710c631_85_392fcbcff_200000b2f2c6820_200002c869bfb81", // Unique identifier of the push
    "ErrCode": 0, // Push event result
    "ErrInfo": "OK" // Push event result description, may be empty
    },
    ....
    ]
    }"#;

    /// The seed's sample as JSON: its `//` comments (never inside its strings) and the
    /// `....` standing for more events taken out.
    fn seed_sample() -> Value {
        let lines: Vec<&str> = SEED_SAMPLE
            .lines()
            .map(|l| l.split(" //").next().unwrap_or(l).trim_end())
            .filter(|l| l.trim() != "....")
            .collect();
        let text = lines.join("\n").replace("},\n    ]", "}\n    ]");
        serde_json::from_str(&text).expect("the seed's sample is JSON once uncommented")
    }

    /// The msg_id whose MsgSeq and MsgRandom are the seed's first event's.
    const SEED_MSG_ID: u64 = (2_837_546 << 32) | 48_374;

    /// Pigeon's `Push.Event` of the seed's first event: sent through APNs (1) at stage 1 to
    /// a device whose alias is user2, as the outbox holds it (with its EventId, Platform and
    /// Params, which the seed has no place for).
    fn pigeon_event() -> Value {
        json!({"EventId": "7", "CallbackCommand": "Push.Event", "EventTime": 1_557_481_127u64,
               "MsgId": SEED_MSG_ID.to_string(), "PushID": SEED_MSG_ID.to_string(),
               "MsgTime": 1_557_481_126u64, "RegistrationId": "1a0018970a8f1b2c",
               "To_Account": "user2", "Platform": "ios", "PushPlatform": 1, "PushStage": 1,
               "ErrCode": 0, "ErrInfo": "", "Params": {"campaign": "c1"}})
    }

    fn json_type(v: &Value) -> &'static str {
        match v {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Number(n) if n.is_u64() || n.is_i64() => "integer",
            Value::Number(_) => "float",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        }
    }

    #[test]
    fn the_seeds_single_chat_event_field_by_field() {
        let seed = seed_sample();
        let seed_event = &seed["Events"][0];
        let body = body(&Value::Array(vec![pigeon_event()]).to_string()).expect("encodes");
        let ours: Value = serde_json::from_str(&body).expect("JSON");
        // The body: an object with only Events, an array of one.
        assert_eq!(
            ours.as_object().map(|o| o.keys().collect::<Vec<_>>()),
            Some(vec![&"Events".to_string()])
        );
        let event = &ours["Events"][0];
        let (Some(theirs), Some(mine)) = (seed_event.as_object(), event.as_object()) else {
            panic!("events are objects");
        };
        // The very fields of the seed's single chat event, no more, no fewer, in its order.
        assert_eq!(
            mine.keys().collect::<std::collections::BTreeSet<_>>(),
            theirs.keys().collect::<std::collections::BTreeSet<_>>()
        );
        // The order in which the seed's single chat event lists them.
        let order = [
            "CallbackCommand",
            "EventType",
            "EventTime",
            "From_Account",
            "To_Account",
            "PushPlatform",
            "PushStage",
            "MsgKey",
            "MsgSeq",
            "MsgRandom",
            "MsgTime",
            "PushID",
            "ErrCode",
            "ErrInfo",
        ];
        let in_seed: Vec<usize> = order
            .iter()
            .filter_map(|name| SEED_SAMPLE.find(&format!("\"{name}\":")))
            .collect();
        assert!(in_seed.windows(2).all(|w| w[0] < w[1]));
        let positions: Vec<usize> = order
            .iter()
            .filter_map(|name| body.find(&format!("\"{name}\":")))
            .collect();
        assert_eq!(
            (positions.len(), in_seed.len()),
            (theirs.len(), theirs.len())
        );
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{body}");
        for (name, value) in theirs {
            assert_eq!(json_type(&mine[name]), json_type(value), "{name}");
        }
        // The same values, but for the two that name things Pigeon names otherwise.
        for (name, value) in theirs {
            match name.as_str() {
                // A push has no sending user.
                "From_Account" => assert_eq!(mine[name], ""),
                // Pigeon's msg_id: what its report API takes.
                "PushID" => assert_eq!(mine[name], json!(SEED_MSG_ID.to_string())),
                _ => assert_eq!(&mine[name], value, "{name}"),
            }
        }
        // MsgKey is MsgSeq_MsgRandom_MsgTime, as in the seed; msg_id comes back from them.
        assert_eq!(event["MsgKey"], "48374_2837546_1557481126");
        let (seq, random) = (
            event["MsgSeq"].as_u64().unwrap_or(0),
            event["MsgRandom"].as_u64().unwrap_or(0),
        );
        assert_eq!(random << 32 | seq, SEED_MSG_ID);
    }

    #[test]
    fn the_seeds_group_chat_event_is_the_one_shape_not_sent() {
        // EventType 2 carries GroupID and no MsgKey: Pigeon's events are all about one
        // recipient, so none looks like it.
        let seed = seed_sample();
        let group = &seed["Events"][1];
        assert_eq!(group["EventType"], 2);
        let ours = serde_json::to_value(event(&pigeon_event()).expect("encodes")).expect("JSON");
        assert!(ours.get("GroupID").is_none() && ours.get("MsgKey").is_some());
        assert_eq!(ours["EventType"], SINGLE_CHAT);
    }

    #[test]
    fn every_stage_channel_and_reason_maps_as_documented() {
        let with = |changes: Value| {
            let mut e = pigeon_event();
            if let (Some(e), Some(changes)) = (e.as_object_mut(), changes.as_object()) {
                for (k, v) in changes {
                    e.insert(k.clone(), v.clone());
                }
            }
            event(&e).expect("encodes")
        };
        for (stage, want) in [(1, STAGE_SENDING), (2, STAGE_DELIVERY), (3, STAGE_CLICK)] {
            assert_eq!(with(json!({"PushStage": stage})).push_stage, want);
        }
        // Vendors keep their numbers; Web Push (9) and Pigeon's own connection (10) are no
        // vendor of the seed's.
        for (pigeon, tencent) in [(0, 0), (1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (6, 6)] {
            assert_eq!(with(json!({"PushPlatform": pigeon})).push_platform, tencent);
        }
        for (pigeon, tencent) in [(7, 7), (8, 8), (9, 0), (10, 0), (99, 0)] {
            assert_eq!(with(json!({"PushPlatform": pigeon})).push_platform, tencent);
        }
        // No alias: the registration id is the recipient.
        assert_eq!(
            with(json!({"To_Account": ""})).to_account,
            "1a0018970a8f1b2c"
        );
        // Never delivered: the delivery stage, failed, with Pigeon's reason.
        let mut undelivered = pigeon_event();
        if let Some(e) = undelivered.as_object_mut() {
            e.remove("PushStage");
            e.insert("CallbackCommand".into(), json!("Push.Undelivered"));
            e.insert("PushPlatform".into(), json!(10));
            e.insert("ErrCode".into(), json!(1));
            e.insert(
                "ErrInfo".into(),
                json!("expired: time_to_live ran out before the device received it"),
            );
        }
        let e = event(&undelivered).expect("encodes");
        assert_eq!(
            (
                e.push_stage,
                e.err_code,
                e.push_platform,
                e.err_info.as_str()
            ),
            (
                STAGE_DELIVERY,
                1,
                0,
                "expired: time_to_live ran out before the device received it"
            )
        );
        assert_eq!(e.callback_command, CALLBACK_COMMAND);
        // A success that says nothing says OK, as the seed's example does.
        assert_eq!(with(json!({"ErrInfo": ""})).err_info, "OK");
        assert_eq!(with(json!({"ErrInfo": "fine"})).err_info, "fine");
        // Strings are escaped as JSON.
        let text = body(
            &json!([pigeon_event()
                .as_object()
                .map(|o| {
                    let mut o = o.clone();
                    o.insert("To_Account".into(), json!("quote\" 用户\n"));
                    Value::Object(o)
                })
                .unwrap_or_default()])
            .to_string(),
        )
        .expect("encodes");
        let v: Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(v["Events"][0]["To_Account"], "quote\" 用户\n");
    }

    #[test]
    fn a_batch_keeps_its_order_and_size() {
        let events: Vec<Value> = (0..MAX_EVENTS as u64)
            .map(|i| {
                let mut e = pigeon_event();
                e["MsgId"] = json!((SEED_MSG_ID + i).to_string());
                e
            })
            .collect();
        let v: Value =
            serde_json::from_str(&body(&Value::Array(events).to_string()).expect("encodes"))
                .expect("JSON");
        let ids: Vec<String> = v["Events"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e["PushID"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(ids.len(), MAX_EVENTS);
        assert_eq!(ids[99], (SEED_MSG_ID + 99).to_string());
        assert!(v["Events"][1]["MsgKey"]
            .as_str()
            .is_some_and(|k| k.starts_with("48375_2837546_")));
    }

    #[test]
    fn what_has_no_place_is_refused_not_guessed() {
        let too_many = Value::Array(vec![pigeon_event(); MAX_EVENTS + 1]).to_string();
        for (bad, words) in [
            ("{", "not a JSON array"),
            ("[]", "0 events"),
            (too_many.as_str(), "101 events"),
            ("[1]", "not a JSON object"),
            (
                r#"[{"CallbackCommand":"Device.OnlineStatus"}]"#,
                "Device.OnlineStatus has no place",
            ),
            (
                r#"[{"CallbackCommand":"Push.Accepted","MsgId":"1"}]"#,
                "Push.Accepted has no place",
            ),
            (
                r#"[{"CallbackCommand":"Push.Event","PushStage":4}]"#,
                "PushStage 4",
            ),
            (
                r#"[{"CallbackCommand":"Push.Event","PushStage":1,"MsgId":"x"}]"#,
                "MsgId is not a msg_id",
            ),
            (
                r#"[{"CallbackCommand":"Push.Undelivered","MsgId":"1","MsgTime":-1}]"#,
                "MsgTime is not a whole number",
            ),
        ] {
            let err = body(bad).expect_err(bad);
            assert!(err.contains(words), "{bad}: {err}");
        }
        let mut no_time = pigeon_event();
        if let Some(e) = no_time.as_object_mut() {
            e.remove("MsgTime");
        }
        assert!(event(&no_time).is_err());
    }
}
