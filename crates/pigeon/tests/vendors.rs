//! End to end through the vendors: a push through `/v3/push` reaches devices that are offline
//! through their vendor's (local, protocol-faithful) service with the right payload; a
//! device a vendor carried it to does not get it again over Pigeon's connection; a token the
//! vendor calls dead is removed from its device and not tried again.

mod common;

use common::{create_app, Server, BIN};
use p256::pkcs8::EncodePrivateKey;
use pigeon_device::{register, DeviceConnection, RegisterRequest};
use pigeon_vendors::fake_apns::{Account, FakeApns};
use pigeon_vendors::fake_cn::{Accounts, FakeCn};
use pigeon_vendors::fake_fcm::{FakeFcm, Project};
use pigeon_vendors::fake_huawei::FakeHuawei;
use rsa::pkcs8::DecodePrivateKey;
use serde_json::{json, Value};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const FCM_KEY: &str = include_str!("../../pigeon-vendors/tests/fixtures/fcm-test-key.pem");

fn set_vendor(server: &Server, app_key: &str, vendor: &str, credentials: &Value) {
    let out = Command::new(BIN)
        .args([
            "app",
            "vendor",
            "set",
            "--app-key",
            app_key,
            "--vendor",
            vendor,
            "--credentials",
        ])
        .arg(credentials.to_string())
        .arg("--data")
        .arg(&server.data)
        // The fakes listen on 127.0.0.1.
        .env("PIGEON_VENDORS_ALLOW_PRIVATE_NETWORKS", "true")
        .output()
        .expect("run pigeon app vendor set");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn device(
    server: &Server,
    app_key: &str,
    platform: &str,
    tokens: Value,
) -> pigeon_device::Credentials {
    let req = RegisterRequest {
        app_key: app_key.into(),
        platform: Some(platform.into()),
        push_tokens: tokens.as_object().cloned(),
        ..Default::default()
    };
    register(&reqwest::Client::new(), &server.base, &req)
        .await
        .expect("register")
}

type Events = std::sync::Arc<std::sync::Mutex<Vec<Value>>>;

/// A callback receiver: its URL, and the events it was posted.
async fn receiver() -> (String, Events) {
    let events: Events = Default::default();
    let kept = events.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let kept = kept.clone();
            async move {
                if let Ok(v) = serde_json::from_str::<Value>(&body) {
                    kept.lock()
                        .unwrap()
                        .extend(v["Events"].as_array().cloned().unwrap_or_default());
                }
                axum::Json(json!({"ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": ""}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, events)
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A fake Huawei push server, set as the app's Huawei credentials.
async fn huawei_for(server: &Server, app_key: &str) -> FakeHuawei {
    let huawei = FakeHuawei::start("10086", "10086", "hw-secret")
        .await
        .unwrap();
    set_vendor(
        server,
        app_key,
        "huawei",
        &json!({"app_id": "10086", "client_id": "10086", "client_secret": "hw-secret",
            "auth_url": huawei.auth_url, "base_url": huawei.base_url}),
    );
    huawei
}

/// A running server with an app whose FCM, APNs and OPPO credentials point at local fakes,
/// and a callback receiver for its `Push.Event` and `Push.Undelivered`.
struct Setup {
    server: Server,
    app: common::App,
    fcm: FakeFcm,
    apns: FakeApns,
    cn: FakeCn,
    events: (String, Events),
}

async fn setup() -> Setup {
    let private = rsa::RsaPrivateKey::from_pkcs8_pem(FCM_KEY).unwrap();
    let fcm = FakeFcm::start(Project {
        project_id: "demo-project".into(),
        client_email: "pigeon@demo-project.iam.gserviceaccount.com".into(),
        public_key: rsa::RsaPublicKey::from(&private),
    })
    .await
    .unwrap();
    let apns_key = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let apns = FakeApns::start(
        Account {
            key: p256::ecdsa::VerifyingKey::from(apns_key.public_key()),
            key_id: "KEY1234567".into(),
            team_id: "TEAM123456".into(),
            topic: "com.example.app".into(),
        },
        true,
    )
    .await
    .unwrap();

    let server = Server::start_with(&[
        ("PIGEON_CALLBACKS_ALLOW_PRIVATE_NETWORKS", "true"),
        ("PIGEON_VENDORS_ALLOW_PRIVATE_NETWORKS", "true"),
        ("PIGEON_CALLBACKS_BATCH_WAIT_MS", "100"),
        ("PIGEON_EXPIRED_GRACE_MS", "200"),
    ])
    .await;
    let app = create_app(&server.data, "vendors");
    let events = receiver().await;
    let out = Command::new(BIN)
        .args([
            "app",
            "callback",
            "add",
            "--app-key",
            &app.key,
            "--commands",
            "Push.Event,Push.Undelivered",
            "--url",
        ])
        .arg(&events.0)
        .arg("--data")
        .arg(&server.data)
        .env("PIGEON_CALLBACKS_ALLOW_PRIVATE_NETWORKS", "true")
        .output()
        .expect("run pigeon app callback add");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    set_vendor(
        &server,
        &app.key,
        "fcm",
        &json!({
        "type": "service_account", "project_id": "demo-project", "private_key": FCM_KEY,
        "client_email": "pigeon@demo-project.iam.gserviceaccount.com",
        "token_uri": fcm.token_uri, "base_url": fcm.base_url}),
    );
    set_vendor(
        &server,
        &app.key,
        "apns",
        &json!({
        "key_id": "KEY1234567", "team_id": "TEAM123456", "topic": "com.example.app",
        "private_key": apns_key.to_pkcs8_pem(Default::default()).unwrap().to_string(),
        "production": false, "base_url": apns.base_url, "ca_pem": apns.ca_pem}),
    );
    let cn = FakeCn::start(Accounts {
        oppo_app_key: "oppo-key".into(),
        oppo_master_secret: "oppo-master".into(),
        vivo_app_id: "1".into(),
        vivo_app_key: "k".into(),
        vivo_app_secret: "s".into(),
        meizu_app_id: "2".into(),
        meizu_app_secret: "s".into(),
    })
    .await
    .unwrap();
    set_vendor(
        &server,
        &app.key,
        "oppo",
        &json!({
        "app_key": "oppo-key", "master_secret": "oppo-master", "base_url": cn.base_url}),
    );
    tokio::time::sleep(Duration::from_millis(1500)).await; // the server reads credentials every second

    Setup {
        server,
        app,
        fcm,
        apns,
        cn,
        events,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_devices_get_pushes_through_their_vendors() {
    let Setup {
        server,
        app,
        fcm,
        apns,
        cn,
        events,
    } = setup().await;
    let android = device(&server, &app.key, "android", json!({"fcm": "tokA"})).await;
    let iphone = device(&server, &app.key, "ios", json!({"apns": "a1b2c3d4"})).await;
    let dead = device(&server, &app.key, "android", json!({"fcm": "deadX"})).await;
    // A phone maker's service comes before FCM when the device has both tokens.
    let oppo = device(
        &server,
        &app.key,
        "android",
        json!({"fcm": "tokO", "oppo": "CN_o1"}),
    )
    .await;
    let rids = [
        &android.registration_id,
        &iphone.registration_id,
        &dead.registration_id,
        &oppo.registration_id,
    ];
    let msg_id = server
        .push_ok(
            &app,
            json!({"platform": "all", "audience": {"registration_id": rids},
            "notification": {"alert": "hello",
                "android": {"title": "Hi", "extras": {"order": "7"}},
                "ios": {"badge": "+1", "extras": {"order": 7}}},
            "options": {"apns_collapse_id": "orders", "time_to_live": 600}}),
        )
        .await;

    until("the FCM message", || !fcm.stats.received.lock().is_empty()).await;
    until("the APNs notification", || {
        !apns.stats.received.lock().is_empty()
    })
    .await;
    until("the OPPO notification", || !cn.received.lock().is_empty()).await;
    let (vendor, o) = cn.received.lock()[0].clone();
    assert_eq!(
        (vendor, o["target_value"].clone()),
        ("oppo", json!("CN_o1"))
    );
    assert_eq!(
        (
            o["notification"]["title"].clone(),
            o["notification"]["content"].clone()
        ),
        (json!("Hi"), json!("hello"))
    );
    let m = fcm.stats.received.lock()[0].clone();
    assert_eq!(m["token"], "tokA");
    assert_eq!(m["notification"], json!({"title": "Hi", "body": "hello"}));
    assert_eq!(m["data"], json!({"order": "7", "msg_id": msg_id}));
    assert_eq!(m["android"]["notification"]["tag"], json!(msg_id));
    let ttl: u64 = m["android"]["ttl"]
        .as_str()
        .unwrap()
        .trim_end_matches('s')
        .parse()
        .unwrap();
    assert!((590..=600).contains(&ttl), "{ttl}");
    let n = apns.stats.received.lock()[0].clone();
    assert_eq!(n.device_token, "a1b2c3d4");
    assert_eq!(n.payload["aps"]["alert"]["body"], "hello");
    assert_eq!(n.payload["aps"]["badge"], 1);
    assert_eq!(
        (n.payload["order"].clone(), n.payload["msg_id"].clone()),
        (json!(7), json!(msg_id))
    );
    let header = |k: &str| {
        n.headers
            .iter()
            .find(|(h, _)| h == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(header("apns-collapse-id").as_deref(), Some("orders"));
    assert_eq!(header("apns-topic").as_deref(), Some("com.example.app"));
    assert_eq!(
        fcm.stats.sends.load(Ordering::Relaxed),
        2,
        "tokA and deadX were tried"
    );
    // Each vendor's delivery is reported as sent through it (PushPlatform 4 FCM, 1 APNs, 6 OPPO).
    until("the Push.Event of each", || {
        events.1.lock().unwrap().len() >= 3
    })
    .await;
    let mut sent: Vec<(String, u64, u64)> = events
        .1
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e["CallbackCommand"] == "Push.Event")
        .map(|e| {
            (
                e["RegistrationId"].as_str().unwrap_or_default().to_string(),
                e["PushPlatform"].as_u64().unwrap_or(0),
                e["PushStage"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    sent.sort();
    let mut want = vec![
        (android.registration_id.clone(), 4, 1),
        (iphone.registration_id.clone(), 1, 1),
        (oppo.registration_id.clone(), 6, 1),
    ];
    want.sort();
    assert_eq!(sent, want);

    // The vendor carried it: the device does not get it again over Pigeon's connection.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut conn = DeviceConnection::connect(&server.base, &android)
        .await
        .expect("connect");
    let got = tokio::time::timeout(Duration::from_millis(800), conn.next_push()).await;
    assert!(
        got.is_err(),
        "the push came again over the connection: {got:?}"
    );
    conn.close().await.ok();

    // The dead token was removed: a second push does not try it.
    server
        .push_ok(
            &app,
            json!({"platform": "all", "audience": {"registration_id": [&dead.registration_id]},
            "notification": {"alert": "again"}}),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        fcm.stats.sends.load(Ordering::Relaxed),
        2,
        "the dead token was tried again"
    );

    // A device whose token turns out dead and that never connects is reported undelivered
    // with ErrCode 3 when the push expires.
    let gone = device(&server, &app.key, "android", json!({"fcm": "deadY"})).await;
    server
        .push_ok(
            &app,
            json!({"platform": "all", "audience": {"registration_id": [&gone.registration_id]},
            "notification": {"alert": "soon gone"}, "options": {"time_to_live": 1}}),
        )
        .await;
    let undelivered = || {
        events
            .1
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e["CallbackCommand"] == "Push.Undelivered")
            .cloned()
            .collect::<Vec<Value>>()
    };
    until("Push.Undelivered", || !undelivered().is_empty()).await;
    let u = undelivered();
    assert_eq!(u.len(), 1, "{u:?}");
    assert_eq!(u[0]["RegistrationId"], json!(gone.registration_id));
    assert_eq!(u[0]["ErrCode"], 3);

    // A vendor that refuses the push itself (OPPO: a title over 50 characters): the device
    // never connects, so it is reported with ErrCode 4 and the vendor's reason.
    let refused = device(&server, &app.key, "android", json!({"oppo": "CN_r1"})).await;
    server
        .push_ok(
            &app,
            json!({"platform": "all", "audience": {"registration_id": [&refused.registration_id]},
            "notification": {"android": {"alert": "x", "title": "t".repeat(60)}},
            "options": {"time_to_live": 1}}),
        )
        .await;
    until("the refused device's Push.Undelivered", || {
        undelivered().len() == 2
    })
    .await;
    let u = undelivered()[1].clone();
    assert_eq!(
        (u["RegistrationId"].clone(), u["ErrCode"].clone()),
        (json!(refused.registration_id), json!(4))
    );
    let info = u["ErrInfo"].as_str().unwrap_or_default();
    assert!(
        info.contains("oppo refused the push: 41"),
        "the vendor's reason: {info}"
    );
}

/// Whether the connection gets a push within `wait`; its msg_id if so.
async fn pushed(conn: &mut DeviceConnection, wait: Duration) -> Option<String> {
    match tokio::time::timeout(wait, conn.next_push()).await {
        Ok(Ok(p)) => Some(p.msg_id),
        Ok(Err(e)) => panic!("connection failed: {e}"),
        Err(_) => None,
    }
}

/// Connected devices: iOS notifications go through APNs (a custom message through Pigeon's
/// connection); Android follows `third_party_channel.<vendor>.distribution` (`ospush` vendor
/// only, `first_ospush` vendor then the connection, `secondary_push` and the default the
/// connection, `jpush` never a vendor) and a maker's `distribution_fcm`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connected_devices_follow_the_distribution_policy() {
    let Setup {
        server,
        app,
        fcm,
        apns,
        cn,
        events: _events,
    } = setup().await;
    let push_to = |rid: &str, options: Value, extra: Value| {
        let mut body = json!({"platform": "all", "audience": {"registration_id": [rid]},
            "notification": {"alert": "policy", "android": {"title": "T"}},
            "options": options});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        body
    };
    let oppo_sends = || {
        cn.received
            .lock()
            .iter()
            .filter(|(v, _)| *v == "oppo")
            .count()
    };
    let tpc = |vendor: &str, field: &str, value: &str| json!({"third_party_channel": {vendor: {field: value}}});
    let wait = Duration::from_millis(800);

    // iOS, connected: the notification goes through APNs, not the connection.
    let iphone = device(&server, &app.key, "ios", json!({"apns": "0a0b0c"})).await;
    let mut conn = DeviceConnection::connect(&server.base, &iphone)
        .await
        .unwrap();
    let msg = server
        .push_ok(&app, push_to(&iphone.registration_id, json!({}), json!({})))
        .await;
    until("the APNs notification", || {
        apns.stats.received.lock().len() == 1
    })
    .await;
    assert_eq!(apns.stats.received.lock()[0].payload["msg_id"], json!(msg));
    assert_eq!(pushed(&mut conn, wait).await, None);
    // With a custom message, the connection carries it (and its notification).
    let msg = server
        .push_ok(
            &app,
            push_to(
                &iphone.registration_id,
                json!({}),
                json!({"message": {"msg_content": "m"}}),
            ),
        )
        .await;
    assert_eq!(pushed(&mut conn, wait).await, Some(msg));
    assert_eq!(apns.stats.received.lock().len(), 1);
    conn.close().await.ok();

    // Android, connected, default (secondary_push): the connection only.
    let phone = device(&server, &app.key, "android", json!({"oppo": "CN_p1"})).await;
    let mut conn = DeviceConnection::connect(&server.base, &phone)
        .await
        .unwrap();
    let msg = server
        .push_ok(&app, push_to(&phone.registration_id, json!({}), json!({})))
        .await;
    assert_eq!(pushed(&mut conn, wait).await, Some(msg.clone()));
    conn.ack(&[&msg]).await.unwrap();
    // ospush: the vendor only.
    let before = oppo_sends();
    server
        .push_ok(
            &app,
            push_to(
                &phone.registration_id,
                tpc("oppo", "distribution", "ospush"),
                json!({}),
            ),
        )
        .await;
    until("the OPPO notification", || oppo_sends() == before + 1).await;
    assert_eq!(pushed(&mut conn, wait).await, None);
    conn.close().await.ok();

    // first_ospush with a dead token: the vendor fails, the connection takes over at once.
    let dead = device(&server, &app.key, "android", json!({"oppo": "dead-o1"})).await;
    let mut conn = DeviceConnection::connect(&server.base, &dead)
        .await
        .unwrap();
    let msg = server
        .push_ok(
            &app,
            push_to(
                &dead.registration_id,
                tpc("oppo", "distribution", "first_ospush"),
                json!({}),
            ),
        )
        .await;
    assert_eq!(pushed(&mut conn, Duration::from_secs(5)).await, Some(msg));
    conn.close().await.ok();
    // ospush with a dead token: the device does not get it.
    let dead2 = device(&server, &app.key, "android", json!({"oppo": "dead-o2"})).await;
    let mut conn = DeviceConnection::connect(&server.base, &dead2)
        .await
        .unwrap();
    server
        .push_ok(
            &app,
            push_to(
                &dead2.registration_id,
                tpc("oppo", "distribution", "ospush"),
                json!({}),
            ),
        )
        .await;
    assert_eq!(pushed(&mut conn, Duration::from_millis(1500)).await, None);
    conn.close().await.ok();

    // jpush, device offline: no vendor; it waits for the connection.
    let away = device(&server, &app.key, "android", json!({"oppo": "CN_p2"})).await;
    let before = oppo_sends();
    let msg = server
        .push_ok(
            &app,
            push_to(
                &away.registration_id,
                tpc("oppo", "distribution", "jpush"),
                json!({}),
            ),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(oppo_sends(), before);
    let mut conn = DeviceConnection::connect(&server.base, &away)
        .await
        .unwrap();
    assert_eq!(pushed(&mut conn, wait).await, Some(msg));
    conn.close().await.ok();

    // A phone with OPPO and FCM tokens: the maker's distribution_fcm "fcm" sends by FCM.
    let both = device(
        &server,
        &app.key,
        "android",
        json!({"oppo": "CN_p3", "fcm": "tokBoth"}),
    )
    .await;
    let before = (oppo_sends(), fcm.stats.sends.load(Ordering::Relaxed));
    server
        .push_ok(
            &app,
            push_to(
                &both.registration_id,
                tpc("oppo", "distribution_fcm", "fcm"),
                json!({}),
            ),
        )
        .await;
    until("the FCM message", || {
        fcm.stats.sends.load(Ordering::Relaxed) == before.1 + 1
    })
    .await;
    assert_eq!(
        fcm.stats.received.lock().last().unwrap()["token"],
        "tokBoth"
    );
    assert_eq!(oppo_sends(), before.0);

    // A distribution Pigeon does not know is refused.
    let resp = server
        .push(
            &app,
            push_to(
                &both.registration_id,
                tpc("oppo", "distribution", "sometimes"),
                json!({}),
            ),
        )
        .await;
    assert_eq!(resp.0, 400, "{:?}", resp.1);
    assert_eq!(resp.1["error"]["code"], 1003);
}

/// Vendors that take many tokens get one request per push for a group of devices (Huawei,
/// Xiaomi), Honor devices go through Honor, a recall reaches Huawei (`messages:revoke`) and
/// Xiaomi (`regid/revoke`) with the notify id it was sent with, and an app's `rate_per_minute` spreads its FCM sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_honor_recall_and_rate_limits() {
    use pigeon_vendors::fake_honor::FakeHonor;
    use pigeon_vendors::fake_xiaomi::FakeXiaomi;
    let Setup {
        server, app, fcm, ..
    } = setup().await;
    let huawei = huawei_for(&server, &app.key).await;
    let honor = FakeHonor::start("104400", "client-1", "honor-secret")
        .await
        .unwrap();
    let xiaomi = FakeXiaomi::start("mi-secret", "com.example.app")
        .await
        .unwrap();
    set_vendor(
        &server,
        &app.key,
        "honor",
        &json!({"app_id": "104400", "client_id": "client-1", "client_secret": "honor-secret",
            "auth_url": honor.auth_url, "base_url": honor.base_url}),
    );
    set_vendor(
        &server,
        &app.key,
        "xiaomi",
        &json!({"app_secret": "mi-secret", "package_name": "com.example.app",
            "base_url": xiaomi.base_url}),
    );
    // 60 a minute: one a second after the first second's worth.
    set_vendor(
        &server,
        &app.key,
        "fcm",
        &json!({
        "type": "service_account", "project_id": "demo-project", "private_key": FCM_KEY,
        "client_email": "pigeon@demo-project.iam.gserviceaccount.com",
        "token_uri": fcm.token_uri, "base_url": fcm.base_url, "rate_per_minute": 60}),
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let mut rids = Vec::new();
    for i in 0..3 {
        let d = device(
            &server,
            &app.key,
            "android",
            json!({"huawei": format!("hw{i}")}),
        )
        .await;
        rids.push(d.registration_id);
    }
    for i in 0..2 {
        let d = device(
            &server,
            &app.key,
            "android",
            json!({"xiaomi": format!("mi{i}")}),
        )
        .await;
        rids.push(d.registration_id);
    }
    let hn = device(&server, &app.key, "android", json!({"honor": "hn0"})).await;
    rids.push(hn.registration_id);
    let msg_id = server
        .push_ok(
            &app,
            json!({"platform": ["android"], "audience": {"registration_id": rids},
            "notification": {"android": {"alert": "batched", "title": "B", "badge_add_num": 1}}}),
        )
        .await;
    until("the Huawei request", || !huawei.received.lock().is_empty()).await;
    until("the Xiaomi request", || !xiaomi.received.lock().is_empty()).await;
    until("the Honor request", || !honor.received.lock().is_empty()).await;
    let hw = huawei.received.lock().clone();
    assert_eq!(
        hw.len(),
        1,
        "one request for the three Huawei devices: {hw:?}"
    );
    let mut tokens: Vec<String> = hw[0]["token"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    tokens.sort();
    assert_eq!(tokens, ["hw0", "hw1", "hw2"]);
    let notify_id = hw[0]["android"]["notification"]["notify_id"]
        .as_i64()
        .unwrap();
    assert_eq!(hw[0]["android"]["notification"]["badge"]["set_num"], 1);
    let mi = xiaomi.received.lock().clone();
    assert_eq!(mi.len(), 1, "{mi:?}");
    assert_eq!(mi[0]["registration_id"].split(',').count(), 2);
    assert_eq!(mi[0]["notify_id"], notify_id.to_string());
    let hn_sent = honor.received.lock()[0].clone();
    assert_eq!(hn_sent["token"], json!(["hn0"]));
    assert_eq!(hn_sent["android"]["notification"]["title"], "B");
    assert_eq!(hn_sent["android"]["notification"]["notifyId"], notify_id);

    // The recall reaches Huawei for the devices it carried the push to.
    let (status, body) = server.delete(&app, &format!("/v3/push/{msg_id}")).await;
    assert_eq!(status, 200, "{body:?}");
    until("the Huawei recall", || !huawei.revoked.lock().is_empty()).await;
    let (revoked_id, mut revoked_tokens) = huawei.revoked.lock()[0].clone();
    revoked_tokens.sort();
    assert_eq!(
        (revoked_id, revoked_tokens),
        (notify_id, vec!["hw0".into(), "hw1".into(), "hw2".into()])
    );
    until("the Xiaomi recall", || !xiaomi.revoked.lock().is_empty()).await;
    let mi_recall = xiaomi.revoked.lock()[0].clone();
    assert_eq!(mi_recall["notify_id"], notify_id.to_string());
    let mut regids: Vec<&str> = mi_recall["registration_id"].split(',').collect();
    regids.sort();
    assert_eq!(regids, ["mi0", "mi1"]);
    assert!(
        honor.received.lock().len() == 1,
        "Honor publishes no recall; nothing more was sent to it"
    );

    // FCM at 60 a minute: four devices take about two seconds more than the first one.
    let mut rids = Vec::new();
    for i in 0..4 {
        let d = device(
            &server,
            &app.key,
            "android",
            json!({"fcm": format!("paced{i}")}),
        )
        .await;
        rids.push(d.registration_id);
    }
    let before = fcm.stats.sends.load(Ordering::Relaxed);
    let started = Instant::now();
    server
        .push_ok(
            &app,
            json!({"platform": ["android"], "audience": {"registration_id": rids},
            "notification": {"alert": "paced"}}),
        )
        .await;
    until("the first FCM send", || {
        fcm.stats.sends.load(Ordering::Relaxed) > before
    })
    .await;
    until("all four FCM sends", || {
        fcm.stats.sends.load(Ordering::Relaxed) == before + 4
    })
    .await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1900),
        "four sends at one a second (a second's worth at once) took only {took:?}"
    );
}

/// A push to an A/B test reaches offline devices through their vendor with their variant's
/// content: one request per variant (a batching vendor never mixes two contents in one
/// request), each listing exactly that variant's tokens; control devices get nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ab_push_reaches_vendors_with_each_variants_content() {
    use pigeon_core::abtest::{bucket_of, variant_of_bucket};
    let Setup { server, app, .. } = setup().await;
    let huawei = huawei_for(&server, &app.key).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, test) = server
        .post(
            &app,
            "/v3/abtests",
            json!({"name": "vendors", "control_weight": 20, "variants": [
                {"name": "A", "weight": 40, "notification": {"alert": "variant A"}},
                {"name": "B", "weight": 40, "notification": {"android": {"alert": "variant B", "title": "B"}}}]}),
        )
        .await;
    assert_eq!(status, 200, "{test}");
    let test_id = test["abtest_id"].as_str().unwrap().to_string();
    // Where each token should go, by the published assignment.
    let mut want: [Vec<String>; 3] = Default::default();
    let mut rids = Vec::new();
    for i in 0..24 {
        let token = format!("hw-ab-{i}");
        let d = device(
            &server,
            &app.key,
            "android",
            json!({"huawei": token.clone()}),
        )
        .await;
        let slot =
            variant_of_bucket([40, 40], bucket_of(&test_id, &d.registration_id)).unwrap_or(2);
        want[slot].push(token);
        rids.push(d.registration_id);
    }
    assert!(want.iter().all(|w| !w.is_empty()), "{want:?}");
    server
        .push_ok(
            &app,
            json!({"platform": ["android"], "audience": {"abtest": [test_id], "registration_id": rids},
            "notification": {"alert": "the push's own"}}),
        )
        .await;
    until("both variants' requests", || {
        huawei.received.lock().len() >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = huawei.received.lock().clone();
    assert_eq!(sent.len(), 2, "one request per variant: {sent:?}");
    let mut by_body: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for request in &sent {
        let body = request["android"]["notification"]["body"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let mut tokens: Vec<String> = request["token"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect();
        tokens.sort();
        by_body.insert(body, tokens);
    }
    for w in &mut want {
        w.sort();
    }
    assert_eq!(by_body.get("variant A"), Some(&want[0]), "{sent:?}");
    assert_eq!(by_body.get("variant B"), Some(&want[1]), "{sent:?}");
    let all_sent: Vec<&String> = by_body.values().flatten().collect();
    assert!(
        want[2].iter().all(|t| !all_sent.contains(&t)),
        "control devices get nothing"
    );
}

/// What a vendor carried is checkpointed with the push: after a restart, the console's page
/// of the push still splits it by channel (Huawei here), not all as Pigeon's connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_split_by_channel_outlives_a_restart() {
    let Setup {
        mut server, app, ..
    } = setup().await;
    let huawei = huawei_for(&server, &app.key).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let d = device(&server, &app.key, "android", json!({"huawei": "hw-kept"})).await;
    let msg_id = server
        .push_ok(
            &app,
            json!({"platform": ["android"], "audience": {"registration_id": [d.registration_id]},
            "notification": {"alert": "through Huawei"}}),
        )
        .await;
    until("the Huawei request", || !huawei.received.lock().is_empty()).await;
    // The next checkpoint (every 100 ms) writes it; then a crash, so nothing is written at
    // shutdown either.
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.kill9();
    server.restart().await;
    let client = reqwest::Client::new();
    let signed_in = client
        .post(format!("{}/console/api/session", server.base))
        .header("X-Pigeon-Console", "1")
        .json(&json!({"app_key": app.key, "master_secret": app.secret}))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 200);
    let cookie = signed_in
        .headers()
        .get("set-cookie")
        .and_then(|c| c.to_str().ok())
        .and_then(|c| c.split(';').next())
        .unwrap()
        .to_string();
    let page: Value = client
        .get(format!("{}/console/api/pushes/{msg_id}", server.base))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let huawei_sent = page["channels"]
        .as_array()
        .and_then(|all| all.iter().find(|c| c["channel"] == "huawei"))
        .map(|c| c["sent"].clone());
    assert_eq!(huawei_sent, Some(json!(1)), "{page}");
}
