//! The rules every dialect shares for tag and alias names.

/// Longest tag or alias, in UTF-8 bytes.
pub const MAX_NAME_BYTES: usize = 40;

const NAME_SYMBOLS: &str = "_@!#$&*+=.|￥";

/// Checks a tag or alias: 1..=40 bytes of letters, digits, CJK and `_@!#$&*+=.|￥`.
/// The error says what is wrong, for the caller to put into its answer.
pub fn check_name(kind: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("{kind} must not be empty"));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "{kind} {name:?} is {} bytes, the limit is {MAX_NAME_BYTES}",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_alphanumeric() || NAME_SYMBOLS.contains(*c)))
    {
        return Err(format!("{kind} {name:?} contains the character {c:?}, which is not allowed (letters, digits, CJK and _@!#$&*+=.|￥ are)"));
    }
    Ok(())
}

/// Longest region a device may carry.
pub const MAX_REGION_BYTES: usize = 64;

/// A device's region (a province name or region code such as Getui's `11000000`): 1 to
/// [`MAX_REGION_BYTES`] bytes without control characters.
pub fn check_region(region: &str) -> Result<(), String> {
    if region.is_empty() || region.len() > MAX_REGION_BYTES {
        return Err(format!("region must be 1 to {MAX_REGION_BYTES} bytes"));
    }
    if region.chars().any(char::is_control) {
        return Err("region must not contain control characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_letters_digits_cjk_and_the_listed_symbols() {
        assert!(check_name("tag", "vip_2024").is_ok());
        assert!(check_name("tag", "北京").is_ok());
        assert!(check_name("tag", "a@b!c#d$e&f*g+h=i.j|k￥").is_ok());
    }

    #[test]
    fn refuses_empty_long_and_odd_names() {
        assert!(check_name("tag", "").unwrap_err().contains("empty"));
        assert!(check_name("tag", &"x".repeat(41))
            .unwrap_err()
            .contains("41 bytes"));
        assert!(check_name("alias", "a b").unwrap_err().contains("' '"));
        assert!(check_name("alias", "a/b").is_err());
    }
}
