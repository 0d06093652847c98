//! Criterion benchmarks of the per-push hot paths: audience algebra, the JPush push-object
//! parser, and encoding a device frame.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use pigeon_bench::audience::{build_index, registration_id};
use pigeon_core::{Audience, AudienceExpr, Platform, PlatformSet};
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

criterion_group!(benches, audience, parser, legacy_decode, frames);
criterion_main!(benches);
