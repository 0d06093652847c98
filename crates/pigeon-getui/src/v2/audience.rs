//! Audiences of the push routes (getui.md B.3): cid and alias lists, and the tag conditions
//! of `/push/tag` and `/user/count` (`phone_type`, `region`, `custom_tag`, with `and` / `or` /
//! `not`; `portrait` names a Pigeon segment).

use super::fields::At;
use super::reply::V2Error;
use pigeon_core::{Audience, AudienceExpr, Platform, PlatformSet};
use serde_json::Value;

/// Longest cid or alias in an audience.
const MAX_ID_CHARS: usize = 64;
/// Most conditions in one tag audience.
const MAX_CONDITIONS: usize = 100;
/// Most values in one condition.
const MAX_VALUES: usize = 1000;

/// `audience.<key>`: a list of `min..=max` cids or aliases.
pub fn id_list(
    audience: &At<'_>,
    key: &str,
    min: usize,
    max: usize,
) -> Result<Vec<String>, V2Error> {
    let ids = audience
        .strings(key, max, MAX_ID_CHARS)?
        .ok_or_else(|| audience.invalid(key))?;
    if ids.len() < min {
        return Err(audience.invalid(key));
    }
    Ok(dedup(ids))
}

fn dedup(ids: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    ids.into_iter().filter(|i| seen.insert(i.clone())).collect()
}

/// The body's `audience` object.
pub fn audience_of<'a>(body: &At<'a>) -> Result<At<'a>, V2Error> {
    body.obj("audience")?
        .ok_or_else(|| body.invalid("audience"))
}

/// A tag audience: platforms (`phone_type`) and an audience expression (`custom_tag`,
/// `region`), from a list of `{"key", "values", "opt_type"}` conditions that AND together.
/// A device has one region, so regions are exact: `or` conditions narrow the regions a device
/// may be in, `and` of different regions reaches nobody (as does a set of conditions no
/// platform meets: the platforms come back empty).
pub fn tag_conditions(
    conditions: Option<&Value>,
    path: &str,
) -> Result<(PlatformSet, Audience), V2Error> {
    let invalid = || V2Error::invalid(path);
    let list = conditions
        .and_then(Value::as_array)
        .filter(|l| !l.is_empty() && l.len() <= MAX_CONDITIONS)
        .ok_or_else(invalid)?;
    let mut platforms: Vec<Platform> = DEVICE_PLATFORMS.to_vec();
    let mut expr = AudienceExpr::default();
    let mut or_groups: Vec<Vec<String>> = Vec::new();
    // The regions a device may be in, once a condition names some.
    let mut regions: Option<Vec<String>> = None;
    for (i, c) in list.iter().enumerate() {
        let here = format!("{path}[{i}]");
        let obj = c.as_object().ok_or_else(|| V2Error::invalid(&here))?;
        let at = At {
            obj,
            path: here.clone(),
        };
        let key = at.req_str("key", 64)?;
        let values = at
            .strings("values", MAX_VALUES, 256)?
            .filter(|v| !v.is_empty())
            .ok_or_else(|| at.invalid("values"))?;
        let op = match at.str("opt_type", 8)?.unwrap_or("or") {
            "and" => Op::And,
            "or" => Op::Or,
            "not" => Op::Not,
            _ => return Err(at.invalid("opt_type")),
        };
        match key {
            "phone_type" => {
                let named = values
                    .iter()
                    .map(|v| phone_type(v))
                    .collect::<Option<Vec<Platform>>>()
                    .ok_or_else(|| at.invalid("values"))?;
                platforms.retain(|p| match op {
                    Op::Or => named.contains(p),
                    Op::And => named.iter().all(|n| n == p),
                    Op::Not => !named.contains(p),
                });
            }
            "custom_tag" => match op {
                Op::And => expr.tag_and.extend(values),
                Op::Not => expr.tag_not.extend(values),
                Op::Or if values.len() == 1 => expr.tag_and.extend(values),
                Op::Or => or_groups.push(values),
            },
            "region" => match op {
                Op::Not => expr.region_not.extend(values),
                Op::Or => narrow(&mut regions, values),
                Op::And => {
                    let one = dedup(values);
                    let allowed = if one.len() == 1 { one } else { Vec::new() };
                    narrow(&mut regions, allowed);
                }
            },
            // Pigeon's nearest thing to a portrait is a segment (a saved audience): one
            // segment id, which the push's other conditions AND with.
            "portrait" => {
                if op == Op::Not || values.len() != 1 || expr.segment.is_some() {
                    return Err(V2Error::invalid_msg(format!(
                        "{here} is invalid: a portrait condition names one Pigeon segment id (POST /v3/segments), with opt_type or / and, once per audience"
                    )));
                }
                expr.segment = values.into_iter().next();
            }
            _ => return Err(at.invalid("key")),
        }
    }
    match or_groups.len() {
        0 => {}
        1 => expr.tag = or_groups.remove(0),
        _ => {
            return Err(V2Error::invalid_msg(format!(
                "{path} is invalid: at most one custom_tag condition with opt_type or may list more than one tag"
            )))
        }
    }
    if let Some(regions) = regions {
        if regions.is_empty() {
            platforms.clear();
        }
        expr.region = regions;
    }
    let audience = if expr.is_empty() {
        Audience::All
    } else {
        Audience::Expr(expr)
    };
    let platforms = if platforms.len() == DEVICE_PLATFORMS.len() {
        PlatformSet::all()
    } else {
        platforms.into_iter().collect()
    };
    Ok((platforms, audience))
}

/// Narrows the regions a device may be in to those among `values`.
fn narrow(allowed: &mut Option<Vec<String>>, values: Vec<String>) {
    let values = dedup(values);
    *allowed = Some(match allowed.take() {
        None => values,
        Some(before) => before.into_iter().filter(|r| values.contains(r)).collect(),
    });
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    And,
    Or,
    Not,
}

const DEVICE_PLATFORMS: [Platform; 5] = [
    Platform::Android,
    Platform::Ios,
    Platform::Hmos,
    Platform::Quickapp,
    Platform::Web,
];

/// Getui's `phone_type` values, and Pigeon's own platform names.
fn phone_type(v: &str) -> Option<Platform> {
    match v.to_ascii_lowercase().as_str() {
        "android" => Some(Platform::Android),
        "ios" => Some(Platform::Ios),
        "harmony" | "harmonyos" | "hmos" => Some(Platform::Hmos),
        "quickapp" => Some(Platform::Quickapp),
        "web" => Some(Platform::Web),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conds(v: Value) -> Result<(PlatformSet, Audience), V2Error> {
        tag_conditions(Some(&v), "audience.tag")
    }

    #[test]
    fn conditions_and_together() {
        let (p, a) = conds(json!([
            {"key": "phone_type", "values": ["android"], "opt_type": "or"},
            {"key": "custom_tag", "values": ["a", "b"], "opt_type": "or"},
            {"key": "custom_tag", "values": ["c"], "opt_type": "and"},
            {"key": "custom_tag", "values": ["d"], "opt_type": "not"},
        ]))
        .unwrap();
        assert_eq!(p, [Platform::Android].into_iter().collect());
        let Audience::Expr(e) = a else { panic!() };
        assert_eq!(e.tag, ["a", "b"]);
        assert_eq!(e.tag_and, ["c"]);
        assert_eq!(e.tag_not, ["d"]);
        let (p, a) =
            conds(json!([{"key": "phone_type", "values": ["ios"], "opt_type": "not"}])).unwrap();
        assert!(!p.contains(Platform::Ios) && p.contains(Platform::Android));
        assert_eq!(a, Audience::All);
        let (p, _) =
            conds(json!([{"key": "phone_type", "values": ["ios", "android"], "opt_type": "and"}]))
                .unwrap();
        assert_eq!(p, PlatformSet::empty());
    }

    #[test]
    fn a_device_is_in_one_region() {
        let regions = |v: Value| match conds(v).unwrap() {
            (p, Audience::Expr(e)) => (p.is_all(), e.region, e.region_not),
            (p, Audience::All) => (p.is_all(), Vec::new(), Vec::new()),
        };
        let r = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            regions(json!([{"key": "region", "values": ["11", "33"], "opt_type": "or"}])),
            (true, r(&["11", "33"]), r(&[]))
        );
        assert_eq!(
            regions(json!([
                {"key": "region", "values": ["11", "33"], "opt_type": "or"},
                {"key": "region", "values": ["33", "44"], "opt_type": "or"},
                {"key": "region", "values": ["55"], "opt_type": "not"},
            ])),
            (true, r(&["33"]), r(&["55"]))
        );
        assert_eq!(
            regions(json!([{"key": "region", "values": ["11", "11"], "opt_type": "and"}])),
            (true, r(&["11"]), r(&[]))
        );
        // In two regions at once: nobody.
        let (p, _) =
            conds(json!([{"key": "region", "values": ["11", "33"], "opt_type": "and"}])).unwrap();
        assert_eq!(p, PlatformSet::empty());
        let (p, _) = conds(json!([
            {"key": "region", "values": ["11"]},
            {"key": "region", "values": ["33"]},
        ]))
        .unwrap();
        assert_eq!(p, PlatformSet::empty());
    }

    #[test]
    fn bad_conditions_are_named() {
        assert_eq!(conds(json!([])).unwrap_err().msg, "audience.tag is invalid");
        assert_eq!(conds(json!({})).unwrap_err().msg, "audience.tag is invalid");
        assert_eq!(
            conds(json!([{"key": "x", "values": ["a"]}]))
                .unwrap_err()
                .msg,
            "audience.tag[0].key is invalid"
        );
        assert_eq!(
            conds(json!([{"key": "custom_tag", "values": []}]))
                .unwrap_err()
                .msg,
            "audience.tag[0].values is invalid"
        );
        assert_eq!(
            conds(json!([{"key": "custom_tag", "values": ["a"], "opt_type": "xor"}]))
                .unwrap_err()
                .msg,
            "audience.tag[0].opt_type is invalid"
        );
        assert_eq!(
            conds(json!([{"key": "phone_type", "values": ["symbian"]}]))
                .unwrap_err()
                .msg,
            "audience.tag[0].values is invalid"
        );
        assert!(conds(json!([
            {"key": "custom_tag", "values": ["a", "b"], "opt_type": "or"},
            {"key": "custom_tag", "values": ["c", "d"], "opt_type": "or"},
        ]))
        .is_err());
    }
}
