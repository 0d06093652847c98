//! Getui names a push by a task id (`taskId`, `contentId`, `taskid`); Pigeon by its msg_id.
//! The two are one-to-one: a task id is a Getui-style prefix, `-`, and the msg_id in decimal.
//! The prefix says how the push was made (`OSS`/`OSL`/`OSA` on the legacy protocol, single /
//! list / app; `RASS`/`RASL`/`RASA` on RestAPI V2) and is ignored when a task id is read, so
//! every form of a push's id, and a bare JPush msg_id, names the same push.

/// How a push reached its audience, which picks the prefix of its task id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskKind {
    Single,
    List,
    App,
}

/// Which Getui dialect the task id is written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Door {
    Legacy,
    RestV2,
}

/// The task id of `msg_id`.
pub fn task_id(door: Door, kind: TaskKind, msg_id: u64) -> String {
    let prefix = match (door, kind) {
        (Door::Legacy, TaskKind::Single) => "OSS",
        (Door::Legacy, TaskKind::List) => "OSL",
        (Door::Legacy, TaskKind::App) => "OSA",
        (Door::RestV2, TaskKind::Single) => "RASS",
        (Door::RestV2, TaskKind::List) => "RASL",
        (Door::RestV2, TaskKind::App) => "RASA",
    };
    format!("{prefix}-{msg_id}")
}

/// The msg_id a task id (any prefix) or a bare msg_id names.
pub fn msg_id_of(task_id: &str) -> Option<u64> {
    let digits = match task_id.rsplit_once('-') {
        Some((prefix, digits))
            if !prefix.is_empty()
                && prefix
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
        {
            digits
        }
        Some(_) => return None,
        None => task_id,
    };
    if digits.is_empty() || digits.len() > 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|n| *n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_names_the_same_push() {
        let id = task_id(Door::Legacy, TaskKind::List, 42);
        assert_eq!(id, "OSL-42");
        assert_eq!(msg_id_of(&id), Some(42));
        assert_eq!(
            msg_id_of(&task_id(Door::RestV2, TaskKind::Single, 42)),
            Some(42)
        );
        assert_eq!(msg_id_of("42"), Some(42));
        for bad in [
            "",
            "OSS-",
            "-1",
            "OSS-x1",
            "OSS-0",
            "a b-1",
            "OSS-123456789012345678901",
        ] {
            assert_eq!(msg_id_of(bad), None, "{bad}");
        }
    }
}
