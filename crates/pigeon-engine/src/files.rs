//! Files of targets, for every door: an app uploads a list of aliases or registration ids
//! once and pushes to it by its id. What a file may list, how long it is kept and how many an
//! app keeps are decided here; a door reads the upload and answers in its dialect, and a push
//! to a file reaches the file's values as an audience ([`Engine::file_audience`]).

use crate::app::AppState;
use crate::{now_ms, uuid_v4, Engine, EngineError};
use pigeon_core::names::check_name;
use pigeon_core::{Audience, AudienceExpr};
use std::ops::RangeInclusive;

pub use pigeon_store::FileRecord;

/// Largest file accepted.
pub const MAX_FILE_BYTES: usize = 10 * 1024 * 1024;
/// Most unexpired files an app may keep.
pub const MAX_FILES_PER_APP: usize = 20;
/// How long a file is kept when the upload does not say.
pub const DEFAULT_TTL_HOURS: u64 = 720;
/// How long a file may be kept, in hours.
pub const TTL_HOURS: RangeInclusive<u64> = 1..=720;
/// The refusal of a time to keep outside [`TTL_HOURS`].
pub const TTL_HOURS_ERROR: &str = "ttl must be 1 to 720 hours";
const MAX_REGISTRATION_ID_BYTES: usize = 64;

/// What a file lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Alias,
    RegistrationId,
}

impl FileKind {
    /// The name a file's kind is stored and shown with.
    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::Alias => "alias",
            FileKind::RegistrationId => "registration_id",
        }
    }

    /// The kind of a stored file (any kind but `alias` lists registration ids).
    pub fn of(file: &FileRecord) -> FileKind {
        match file.kind.as_str() {
            "alias" => FileKind::Alias,
            _ => FileKind::RegistrationId,
        }
    }
}

/// A file's values: one a line, UTF-8; blank lines are skipped, a bad line is refused by
/// number.
pub fn parse_values(bytes: &[u8], kind: FileKind) -> Result<Vec<String>, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "the file must be UTF-8 text")?;
    let mut values = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let v = line.trim().trim_start_matches('\u{feff}');
        if v.is_empty() {
            continue;
        }
        let ok = match kind {
            FileKind::Alias => check_name("alias", v).map_err(|m| m.to_string()),
            FileKind::RegistrationId if v.len() > MAX_REGISTRATION_ID_BYTES => {
                Err("a registration id is at most 64 bytes".into())
            }
            FileKind::RegistrationId => Ok(()),
        };
        ok.map_err(|m| format!("line {}: {m}", n + 1))?;
        values.push(v.to_string());
    }
    if values.is_empty() {
        return Err("the file lists no values".into());
    }
    Ok(values)
}

/// The audience a push to `file` reaches: every value it lists (as many as it lists; the
/// limit on ids in one push body does not apply to files).
pub fn audience(file: FileRecord) -> Audience {
    let mut expr = AudienceExpr::default();
    match FileKind::of(&file) {
        FileKind::Alias => expr.alias = file.values,
        FileKind::RegistrationId => expr.registration_id = file.values,
    }
    Audience::Expr(expr)
}

impl Engine {
    /// Stores a new file of `app` listing the values in `bytes`, kept for `ttl_hours`, and
    /// returns its id. Refused (`Invalid`) when a line is not a valid value, the file lists
    /// nothing, or the app keeps [`MAX_FILES_PER_APP`] files already.
    pub async fn create_file(
        &self,
        app: &AppState,
        kind: FileKind,
        file_name: String,
        bytes: &[u8],
        ttl_hours: u64,
    ) -> Result<String, EngineError> {
        if !TTL_HOURS.contains(&ttl_hours) {
            return Err(EngineError::Invalid(TTL_HOURS_ERROR.into()));
        }
        let values = parse_values(bytes, kind).map_err(EngineError::Invalid)?;
        let now = now_ms();
        let existing = self.store.list_files(&app.app_key, now).await?;
        if existing.len() >= MAX_FILES_PER_APP {
            return Err(EngineError::Invalid(format!(
                "an app may keep at most {MAX_FILES_PER_APP} files; delete one first"
            )));
        }
        let file_id = uuid_v4().replace('-', "");
        self.store
            .put_file(FileRecord {
                file_id: file_id.clone(),
                app_key: app.app_key.clone(),
                kind: kind.as_str().into(),
                file_name,
                created_ms: now,
                expires_ms: now + ttl_hours * 3_600_000,
                values,
            })
            .await?;
        Ok(file_id)
    }

    /// An app's files that have not expired, oldest first, without their values.
    pub async fn files(&self, app: &AppState) -> Result<Vec<FileRecord>, EngineError> {
        Ok(self.store.list_files(&app.app_key, now_ms()).await?)
    }

    /// One file of an app, with its values, unless it has expired.
    pub async fn file(
        &self,
        app: &AppState,
        file_id: &str,
    ) -> Result<Option<FileRecord>, EngineError> {
        Ok(self.store.get_file(&app.app_key, file_id, now_ms()).await?)
    }

    /// Deletes a file of an app; false if it had none of that id.
    pub async fn delete_file(&self, app: &AppState, file_id: &str) -> Result<bool, EngineError> {
        Ok(self.store.delete_file(&app.app_key, file_id).await?)
    }

    /// The audience of a push to an app's file, unless there is no such file or it expired.
    pub async fn file_audience(
        &self,
        app: &AppState,
        file_id: &str,
    ) -> Result<Option<Audience>, EngineError> {
        Ok(self.file(app, file_id).await?.map(audience))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_one_a_line_and_bad_lines_are_named() {
        let ok = parse_values(b"\xef\xbb\xbfa1\n\n  b2 \r\n", FileKind::Alias);
        assert_eq!(ok, Ok(vec!["a1".to_string(), "b2".to_string()]));
        let long = format!("r1\n{}\n", "x".repeat(65));
        assert_eq!(
            parse_values(long.as_bytes(), FileKind::RegistrationId),
            Err("line 2: a registration id is at most 64 bytes".to_string())
        );
        assert!(parse_values(b"\n \n", FileKind::Alias)
            .unwrap_err()
            .contains("no values"));
        assert!(parse_values(b"\xff", FileKind::Alias)
            .unwrap_err()
            .contains("UTF-8"));
    }

    #[test]
    fn a_file_is_an_audience_of_its_kind() {
        let file = FileRecord {
            file_id: "f".into(),
            app_key: "a".into(),
            kind: "alias".into(),
            file_name: "n".into(),
            created_ms: 0,
            expires_ms: 1,
            values: vec!["a1".into()],
        };
        let Audience::Expr(expr) = audience(file.clone()) else {
            panic!("an expression")
        };
        assert_eq!((expr.alias.len(), expr.registration_id.len()), (1, 0));
        let rids = FileRecord {
            kind: "registration_id".into(),
            ..file
        };
        let Audience::Expr(expr) = audience(rids) else {
            panic!("an expression")
        };
        assert_eq!((expr.alias.len(), expr.registration_id.len()), (0, 1));
    }
}
