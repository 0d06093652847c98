//! How a batch becomes a request, by the endpoint's format (callbacks.md §5): the one part
//! of sending that differs between formats. The outbox, batching, signing, retries and
//! dead letters are the dispatcher's and the same for every format; the dialects' encodings
//! live in their own crates (`pigeon-tencent`), and this only picks one per endpoint.

use pigeon_engine::events::COMMANDS;
use pigeon_store::CallbackFormat;

/// An encoding of batches.
pub trait Encoder: Send + Sync {
    /// Whether events of Pigeon's `command` are sent in this format at all.
    fn carries(&self, command: &str) -> bool;

    /// The `CallbackCommand` of the request's query and its body, for a batch of Pigeon's
    /// `command` whose `events` are the JSON array batched from the outbox.
    fn encode<'a>(&self, command: &'a str, events: &str) -> Result<(&'a str, String), String>;
}

/// Pigeon's own events (callbacks.md §3), as the outbox holds them.
struct Pigeon;

impl Encoder for Pigeon {
    fn carries(&self, _command: &str) -> bool {
        true
    }

    fn encode<'a>(&self, command: &'a str, events: &str) -> Result<(&'a str, String), String> {
        Ok((command, format!(r#"{{"Events":{events}}}"#)))
    }
}

/// Tencent Cloud IM's `Push.OfflinePush`.
struct Tencent;

impl Encoder for Tencent {
    fn carries(&self, command: &str) -> bool {
        pigeon_tencent::offline_push::COMMANDS.contains(&command)
    }

    fn encode<'a>(&self, command: &'a str, events: &str) -> Result<(&'a str, String), String> {
        if !self.carries(command) {
            return Err(format!(
                "{command} has no place in {}",
                pigeon_tencent::offline_push::CALLBACK_COMMAND
            ));
        }
        Ok((
            pigeon_tencent::offline_push::CALLBACK_COMMAND,
            pigeon_tencent::offline_push::body(events)?,
        ))
    }
}

/// The encoder of a format.
pub fn encoder(format: CallbackFormat) -> &'static dyn Encoder {
    match format {
        CallbackFormat::Pigeon => &Pigeon,
        CallbackFormat::Tencent => &Tencent,
    }
}

/// The format named `name`, or why not (naming the field, for the API's and the command
/// line's errors).
pub fn parse_format(name: &str) -> Result<CallbackFormat, String> {
    CallbackFormat::parse(name).ok_or_else(|| {
        let known: Vec<&str> = CallbackFormat::ALL.iter().map(|f| f.as_str()).collect();
        format!("format must be one of {}, not {name:?}", known.join(", "))
    })
}

/// The commands an endpoint of `format` is stored with: those given, each checked to have a
/// place in the format; none given means every command the format carries (kept empty,
/// "all", when that is every command).
pub fn commands_for(format: CallbackFormat, commands: Vec<String>) -> Result<Vec<String>, String> {
    let encoder = encoder(format);
    if let Some(c) = commands.iter().find(|c| !encoder.carries(c)) {
        let carried: Vec<&str> = COMMANDS
            .iter()
            .copied()
            .filter(|c| encoder.carries(c))
            .collect();
        return Err(format!(
            "commands: {c} has no place in the {} format, which carries {}",
            format.as_str(),
            carried.join(", ")
        ));
    }
    if !commands.is_empty() || COMMANDS.iter().all(|c| encoder.carries(c)) {
        return Ok(commands);
    }
    Ok(COMMANDS
        .iter()
        .filter(|c| encoder.carries(c))
        .map(|c| c.to_string())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const EVENT: &str = r#"[{"EventId":"1","CallbackCommand":"Push.Event","EventTime":10,"MsgId":"4294967297","PushID":"4294967297","MsgTime":9,"RegistrationId":"r1","To_Account":"","Platform":"android","PushPlatform":10,"PushStage":2,"ErrCode":0,"ErrInfo":""}]"#;

    #[test]
    fn pigeon_sends_the_outbox_as_it_is() {
        let (command, body) = encoder(CallbackFormat::Pigeon)
            .encode("Push.Event", EVENT)
            .expect("encodes");
        assert_eq!(command, "Push.Event");
        assert_eq!(body, format!(r#"{{"Events":{EVENT}}}"#));
        assert!(COMMANDS
            .iter()
            .all(|c| encoder(CallbackFormat::Pigeon).carries(c)));
    }

    #[test]
    fn tencent_sends_push_offline_push_and_only_push_stages() {
        let tencent = encoder(CallbackFormat::Tencent);
        let (command, body) = tencent.encode("Push.Event", EVENT).expect("encodes");
        assert_eq!(command, "Push.OfflinePush");
        let v: Value = serde_json::from_str(&body).expect("JSON");
        let e = &v["Events"][0];
        assert_eq!(
            (
                e["CallbackCommand"].as_str(),
                e["To_Account"].as_str(),
                e["PushStage"].as_u64(),
                e["PushPlatform"].as_u64(),
                e["MsgKey"].as_str()
            ),
            (
                Some("Push.OfflinePush"),
                Some("r1"),
                Some(2),
                Some(0),
                Some("1_1_9")
            )
        );
        let carried: Vec<&str> = COMMANDS
            .iter()
            .copied()
            .filter(|c| tencent.carries(c))
            .collect();
        assert_eq!(carried, ["Push.Event", "Push.Undelivered"]);
        assert!(tencent.encode("Device.OnlineStatus", "[]").is_err());
    }

    #[test]
    fn formats_and_their_commands_are_checked() {
        assert_eq!(parse_format("tencent"), Ok(CallbackFormat::Tencent));
        assert_eq!(
            parse_format("xml"),
            Err(r#"format must be one of pigeon, tencent, not "xml""#.to_string())
        );
        // None given: all for Pigeon, what Tencent carries for Tencent.
        assert_eq!(commands_for(CallbackFormat::Pigeon, vec![]), Ok(vec![]));
        assert_eq!(
            commands_for(CallbackFormat::Tencent, vec![]),
            Ok(vec!["Push.Event".into(), "Push.Undelivered".into()])
        );
        assert_eq!(
            commands_for(CallbackFormat::Tencent, vec!["Push.Undelivered".into()]),
            Ok(vec!["Push.Undelivered".into()])
        );
        let err = commands_for(
            CallbackFormat::Tencent,
            vec!["Push.Event".into(), "Device.OnlineStatus".into()],
        )
        .expect_err("no place");
        assert!(err.starts_with("commands: Device.OnlineStatus has no place in the tencent"));
    }
}
