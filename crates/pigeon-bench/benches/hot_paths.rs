//! Criterion benchmarks of the per-push hot paths: audience algebra, the JPush push-object
//! parser, the stored form of a push, and encoding a device frame.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use pigeon_bench::audience::{build_index, registration_id};
use pigeon_core::{Audience, AudienceExpr, Platform, PlatformSet, Push};
use serde_json::json;

fn audience(c: &mut Criterion) {
    let (ix, ids) = build_index(1_000_000, |_| {});
    let expr = Audience::Expr(AudienceExpr {
        tag_and: vec!["t50".into(), "t10".into()],
        tag_not: vec!["t1".into()],
        ..Default::default()
    });
    c.bench_function(
        "resolve tag_and[50%,10%] + tag_not[1%] over 1M devices",
        |b| b.iter(|| black_box(ix.resolve(black_box(&expr), PlatformSet::all(), &ids))),
    );
    let rids = Audience::Expr(AudienceExpr {
        registration_id: (0..1000).map(|i| registration_id(i * 997)).collect(),
        ..Default::default()
    });
    c.bench_function("resolve 1000 registration ids", |b| {
        b.iter(|| black_box(ix.resolve(&rids, PlatformSet::all(), &ids)))
    });
}

fn parser(c: &mut Criterion) {
    let body = json!({
        "platform": "all",
        "audience": {"registration_id": ["1a0018970a5c1a3d0c1"]},
        "notification": {"alert": "Hello", "android": {"title": "T", "extras": {"k": "v"}},
                         "ios": {"badge": "+1", "sound": "default", "extras": {"k": "v"}}},
        "options": {"time_to_live": 60, "apns_production": false}
    });
    let text = body.to_string();
    c.bench_function(
        "parse and validate a JPush push (JSON text to core Push)",
        |b| {
            b.iter(|| {
                let v: serde_json::Value =
                    serde_json::from_str(black_box(&text)).unwrap_or_default();
                black_box(pigeon_jpush::parse_push(&v).is_ok())
            })
        },
    );
    // The two halves of it: what a typed parse (straight from text into structs) could save
    // is at most the tree, and the validation stays.
    c.bench_function("parse a JPush push: JSON text to a JSON tree", |b| {
        b.iter(|| {
            let v: serde_json::Value = serde_json::from_str(black_box(&text)).unwrap_or_default();
            black_box(v)
        })
    });
    c.bench_function("parse a JPush push: JSON tree to core Push", |b| {
        b.iter(|| black_box(pigeon_jpush::parse_push(black_box(&body)).is_ok()))
    });
}

/// The push as `insert_push` stores it (JSON, `body` of the pushes table) beside a binary
/// form (MessagePack with field names; the model holds JSON trees, so a format that needs
/// the schema to read cannot carry it), written and read back.
fn stored_push(c: &mut Criterion) {
    let push = unicast_push();
    let json = serde_json::to_string(&push).unwrap_or_default();
    let binary = rmp_serde::to_vec_named(&push).unwrap_or_default();
    eprintln!(
        "stored push: {} B as JSON, {} B as MessagePack",
        json.len(),
        binary.len()
    );
    c.bench_function("store a push: core Push to JSON", |b| {
        b.iter(|| black_box(serde_json::to_string(black_box(&push)).is_ok()))
    });
    c.bench_function("store a push: core Push to MessagePack", |b| {
        b.iter(|| black_box(rmp_serde::to_vec_named(black_box(&push)).is_ok()))
    });
    c.bench_function("load a push: JSON to core Push", |b| {
        b.iter(|| black_box(serde_json::from_str::<Push>(black_box(&json)).is_ok()))
    });
    c.bench_function("load a push: MessagePack to core Push", |b| {
        b.iter(|| black_box(rmp_serde::from_slice::<Push>(black_box(&binary)).is_ok()))
    });
}

/// The push `bench push-api` sends (one registration id, its send time in the extras), as
/// the server holds it once accepted.
fn unicast_push() -> Push {
    let v = json!({
        "platform": "all",
        "audience": {"registration_id": ["1a0018970a5c1a3d0c1"]},
        "notification": {"alert": "b", "android": {"extras": {"t": 1_795_475_749_276_123_u64}}}
    });
    let mut push = match pigeon_jpush::parse_push(&v) {
        Ok(p) => p,
        Err(e) => panic!("bench push invalid: {e:?}"),
    };
    push.msg_id = 1_795_475_749_276_000;
    push.sent_ms = 1_795_475_749_276;
    push
}

fn frames(c: &mut Criterion) {
    let v = json!({"platform": "all", "audience": "all",
                   "notification": {"alert": "Hello", "android": {"title": "T", "extras": {"k": "v"}}},
                   "message": {"msg_content": "m"}});
    let mut push = match pigeon_jpush::parse_push(&v) {
        Ok(p) => p,
        Err(e) => panic!("bench push invalid: {e:?}"),
    };
    push.msg_id = 1_795_475_749_276_000;
    push.sent_ms = 1_795_475_749_276;
    c.bench_function("encode a push frame for android", |b| {
        b.iter(|| {
            black_box(pigeon_gateway::encode_push(
                black_box(&push),
                Platform::Android,
            ))
        })
    });
}

/// A `pushMessageToSingleAction` body as `gt-push-sdk` sends it, its `clientData` the captured
/// NotificationTemplate of getui.md A.9.
fn legacy_decode(c: &mut Criterion) {
    let body = json!({
        "action": "pushMessageToSingleAction", "appkey": "AK", "version": "4.1.1.2",
        "authToken": "t", "requestId": "r1",
        "clientData": "CgASC3B1c2htZXNzYWdlGgAiAkFLKgNBSUQyADoEWAFoAUIHCAEQABiQTkKHAQiQThABGJpOogYIaWNvbi5wbmeqBgCyBgFUugYEYm9kecAGAcgGAdAGAeoXEgoLbm90aWZ5U3R5bGUSATAYAeoXFAoHY2hhbm5lbBIHRGVmYXVsdBgA6hcYCgtjaGFubmVsTmFtZRIHRGVmYXVsdBgA6hcTCgxjaGFubmVsTGV2ZWwSATMYAUIICJpOEAAYrk5CGQiuThADGGTiCADqCAYKABIAGgDwCAH4CGRCBAhkEAdKAFAA",
        "transmissionContent": "", "isOffline": true, "offlineExpireTime": 3_600_000,
        "pushNetWorkType": 0, "appId": "AK", "clientId": "1a0018970a5c1a3d0c1", "alias": "",
        "type": 2, "pushType": "NotifyMsg"
    });
    let text = body.to_string();
    c.bench_function(
        "decode a Getui legacy push (JSON text and clientData to core Push)",
        |b| {
            b.iter(|| {
                let v: serde_json::Value =
                    serde_json::from_str(black_box(&text)).unwrap_or_default();
                let ok = v
                    .as_object()
                    .is_some_and(|m| pigeon_getui::legacy::push::prepare(m).is_ok());
                black_box(ok)
            })
        },
    );
}

criterion_group!(
    benches,
    audience,
    parser,
    stored_push,
    legacy_decode,
    frames
);
criterion_main!(benches);
